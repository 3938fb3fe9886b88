"""Early stopping and pruning: which trials a sweep can skip or cut, and in what order
to run the rest so that skipping bites. Pure Python; Ray only wraps `SweepState`.

Two mechanisms, both driven by the largest quality budget (a point over it can decide
no bound):

* **Stopping** (`clearly_over`): a trial evaluates its prompts one at a time; once the
  running quality loss is clearly over the largest budget, or its loss over all prompts
  is over it at all, it ends before its speed is measured and lands as a ``stopped``
  row.
* **Pruning** (`dominates`): `catalog.ParamSpec.faster` says in which direction each
  parameter gets faster and lossier. A point at least as aggressive in every parameter
  as a point already over budget is assumed over budget too; it is never run and lands
  as a ``pruned`` row whose stop_reason names the point that pruned it.

Order: within a config×combo grid (a *lattice*), points run from least to most
aggressive, and a point becomes ready only once its immediate predecessors (one grid
step less aggressive in one parameter) are done. That is what makes pruning exact: no
point runs before the evidence that could prune it exists. Parallelism comes from the
lattice's width and from the several combos of a config, which share one pipeline.
Configs are worked through in order, so trials sharing a pipeline run together. When a
config has nothing ready and a slot would idle, a point whose predecessors are still
running is handed out speculatively (`EarlyStop.speculate`): it may turn out to be one
that pruning would have skipped, but it costs a slot that had nothing else to do, and it
keeps workers on the pipeline they hold. Only then does a worker move on to the next
config (and load its pipeline).

Once a lattice is done, its bound-deciding points (for each budget, the fastest point
within it) are queued for confirmation with more timing pairs. A confirmation replaces
its point's screened speed; if that drops it below another point within the budget (a
screen's few pairs flatter as often as not), that point is confirmed next, until every
budget's bound is a confirmed point. A confirmation tops up its screen (`Task.reuse`):
the screen's pairs count towards its own, and its quality is the screen's once one
prompt, measured again, agrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sweep.bounds import best_point
from sweep.catalog import PARAMS, Acceleration, PipelineConfig
from sweep.lake_schema import CONFIRM, FAILED, OK, PRUNED, SCREEN, STOPPED
from sweep.spec import ComboPlan, EarlyStop

# ------------------------------------------------------------------------ stopping


def clearly_over(losses: list[float], budgets: Iterable[float], rule: EarlyStop, total: int | None = None) -> bool:
    """True once the quality loss so far is clearly over every budget.

    "Clearly": the running mean minus two standard errors (the mean alone after one
    prompt) exceeds the largest budget by the relative `rule.margin`. Prompts differ a
    lot in how much an acceleration hurts them, so one bad prompt alone must be far
    over budget to end a trial.

    Once all `total` prompts are in, the mean is the point's loss itself, not an
    estimate: over the largest budget, the point can be no bound, and timing it would
    only draw it on the Pareto front, so it stops unless `rule.time_over_budget`.
    """
    if not rule.enabled or not losses:
        return False
    n = len(losses)
    mean = sum(losses) / n
    if total is not None and n >= total and not rule.time_over_budget:
        return mean > max(budgets)
    if n < rule.min_prompts:
        return False
    limit = max(budgets) * (1.0 + rule.margin)
    if n == 1:
        return mean > limit
    var = sum((x - mean) ** 2 for x in losses) / (n - 1)
    return mean - 2.0 * math.sqrt(var / n) > limit


# ------------------------------------------------------------------------ dominance


def _monotone_params(combo: str) -> list[tuple[str, int]]:
    return [(p, spec.faster) for m in combo.split("+") for p, spec in PARAMS[m].items()]


def dominates(a: Acceleration, b: Acceleration) -> bool:
    """True when `a` is at least as aggressive as `b` in every parameter (same combo).

    Parameters without a monotone direction (faster == 0) must be equal.
    """
    if a.combo != b.combo:
        return False
    pa, pb = a.params, b.params
    for name, faster in _monotone_params(a.combo):
        if faster == 0:
            if pa[name] != pb[name]:
                return False
        elif (pa[name] - pb[name]) * faster < 0:
            return False
    return True


def aggressiveness(acc: Acceleration, grid: Mapping[str, list[Any]]) -> float:
    """0 for the gentlest point of `grid`, 1 for the most aggressive: the mean over
    parameters of the value's rank in its faster direction."""
    ranks = []
    for name, faster in _monotone_params(acc.combo):
        values = sorted(grid[name])
        if len(values) < 2 or faster == 0:
            continue
        i = values.index(acc.params[name])
        ranks.append((i if faster > 0 else len(values) - 1 - i) / (len(values) - 1))
    return sum(ranks) / len(ranks) if ranks else 0.0


def order_points(points: Iterable[Acceleration], grid: Mapping[str, list[Any]]) -> list[Acceleration]:
    """Least to most aggressive; ties broken by tag so the order is stable."""
    return sorted(points, key=lambda a: (aggressiveness(a, grid), a.tag))


# ------------------------------------------------------------------------- lattice


@dataclass
class Task:
    """One trial to run: a point of a lattice in a phase."""

    id: int
    phase: str
    config: PipelineConfig
    acc: Acceleration
    key: str
    lattice: int
    # A confirmation's: what its screen measured, which it tops up (`Outcome.reuse`).
    reuse: dict[str, Any] | None = None


@dataclass
class Outcome:
    """What the sweep needs to know about a finished point."""

    status: str
    loss: float | None = None
    speedup: float | None = None
    # The screen's per-prompt quality and timed pairs (the row's ``prompt_quality_json``
    # and ``pair_times_json``), which a confirmation of the point reuses.
    reuse: dict[str, Any] | None = None


@dataclass
class Lattice:
    index: int
    config_index: int
    config: PipelineConfig
    combo: str
    points: list[Acceleration]
    keys: list[str]
    preds: list[list[int]]
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    running: set[int] = field(default_factory=set)
    speculative: set[int] = field(default_factory=set)  # running before their evidence was in
    over: list[int] = field(default_factory=list)
    confirm_queue: list[int] = field(default_factory=list)
    confirm_done: set[int] = field(default_factory=set)
    confirm_running: set[int] = field(default_factory=set)
    confirm_planned: bool = False
    where: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.where = {k: i for i, k in enumerate(self.keys)}

    @property
    def screen_done(self) -> bool:
        return len(self.outcomes) == len(self.points)


def _predecessors(points: list[Acceleration], grid: Mapping[str, list[Any]]) -> list[list[int]]:
    """For each point, the points one grid step less aggressive in one parameter."""
    where = {a.tag: i for i, a in enumerate(points)}
    out: list[list[int]] = []
    for a in points:
        preds = []
        params = a.params
        for name, faster in _monotone_params(a.combo):
            if faster == 0:
                continue
            values = sorted(grid[name], reverse=faster < 0)  # gentle -> aggressive
            i = values.index(params[name])
            if i == 0:
                continue
            moved = dict(params, **{name: values[i - 1]})
            tag = Acceleration.from_params(a.combo, moved).tag
            if tag in where:
                preds.append(where[tag])
        out.append(preds)
    return out


# --------------------------------------------------------------------------- state


class SweepState:
    """Which points are done, running, ready, pruned; what to confirm. Pure Python.

    `key_of(config, acc)` gives the trial key (it depends on the device kind and library
    versions, which the driver learns from a probe on a worker). `stored` maps trial keys
    already in the lake to their phases and outcome, so a resumed sweep skips them and
    still prunes from them.
    """

    def __init__(self, plans: list[ComboPlan], budgets: Iterable[float], rule: EarlyStop,
                 key_of: Callable[[PipelineConfig, Acceleration], str],
                 stored: Mapping[str, tuple[set[str], Outcome]] | None = None):
        self.budgets = sorted(budgets)
        self.rule = rule
        self.lattices: list[Lattice] = []
        self.tasks: dict[int, Task] = {}
        self.pruned: list[tuple[Task, str]] = []  # (task, reason) waiting to be written
        self.skipped = 0  # points already stored in the lake
        self.confirm_total = 0
        self._next_id = 0
        stored = stored or {}
        config_order: dict[PipelineConfig, int] = {}
        for plan in plans:
            ci = config_order.setdefault(plan.config, len(config_order))
            grid = _plan_grid(plan)
            points = order_points(plan.points(), grid)
            keys = [key_of(plan.config, a) for a in points]
            lat = Lattice(len(self.lattices), ci, plan.config, plan.combo, points, keys,
                          _predecessors(points, grid))
            for i, key in enumerate(keys):
                if key in stored:
                    phases, outcome = stored[key]
                    self.skipped += 1
                    self._record(lat, i, outcome)
                    if CONFIRM in phases:
                        lat.confirm_done.add(i)
            self.lattices.append(lat)
        self.lattices.sort(key=lambda lat: (lat.config_index, lat.index))
        self._by_index = {lat.index: lat for lat in self.lattices}
        groups: dict[int, list[Lattice]] = {}
        for lat in self.lattices:
            groups.setdefault(lat.config_index, []).append(lat)
        self._config_groups = list(groups.values())  # lattices per config, configs in order
        for lat in self.lattices:
            self._maybe_plan_confirm(lat)

    # ------------------------------------------------------------------ counts
    @property
    def total(self) -> int:
        return sum(len(lat.points) for lat in self.lattices)

    def counts(self) -> dict[str, int]:
        c = {OK: 0, STOPPED: 0, PRUNED: 0, FAILED: 0}
        for lat in self.lattices:
            for o in lat.outcomes.values():
                c[o.status] = c.get(o.status, 0) + 1
        c["done"] = sum(len(lat.outcomes) for lat in self.lattices)
        c["running"] = sum(len(lat.running) + len(lat.confirm_running) for lat in self.lattices)
        c["confirm_done"] = sum(len(lat.confirm_done) for lat in self.lattices)
        c["confirm_total"] = self.confirm_total
        return c

    @property
    def finished(self) -> bool:
        return all(lat.screen_done and lat.confirm_planned and not lat.confirm_queue
                   and not lat.confirm_running for lat in self.lattices)

    # ------------------------------------------------------------------ picking
    def _over(self, outcome: Outcome) -> bool:
        if outcome.status in (STOPPED, PRUNED):
            return True
        return outcome.status == OK and outcome.loss is not None and outcome.loss > self.budgets[-1]

    def _record(self, lat: Lattice, i: int, outcome: Outcome) -> None:
        lat.outcomes[i] = outcome
        if self.rule.prune and self._over(outcome):
            lat.over.append(i)

    def _ready(self, lat: Lattice, i: int) -> bool:
        if not self.rule.prune:
            return True
        return all(p in lat.outcomes for p in lat.preds[i])

    def _dominated_by(self, lat: Lattice, i: int) -> int | None:
        for f in lat.over:
            if dominates(lat.points[i], lat.points[f]):
                return f
        return None

    def _task(self, lat: Lattice, i: int, phase: str) -> Task:
        reuse = lat.outcomes[i].reuse if phase == CONFIRM and i in lat.outcomes else None
        task = Task(self._next_id, phase, lat.config, lat.points[i], lat.keys[i], lat.index, reuse)
        self._next_id += 1
        self.tasks[task.id] = task
        return task

    def next_task(self) -> Task | None:
        """The next trial to start, or None when nothing is ready now (or ever: see
        `finished`). Points found pruned on the way are queued in `self.pruned`.

        Configs go in order. Within the current config: a confirmation, else a ready
        point, else (with `rule.speculate`) a point one step ahead of those running;
        only then the next config, whose pipeline a worker must load first.
        """
        pruned_any = True
        while pruned_any:  # pruning can finish a grid and queue its confirmations
            pruned_any = False
            for group in self._config_groups:
                for speculative in (False, True) if self.rule.speculate else (False,):
                    for lat in group:
                        if lat.confirm_queue and not speculative:
                            i = lat.confirm_queue.pop(0)
                            lat.confirm_running.add(i)
                            return self._task(lat, i, CONFIRM)
                        for i in range(len(lat.points)):
                            if i in lat.outcomes or i in lat.running:
                                continue
                            if not (self._ahead(lat, i) if speculative else self._ready(lat, i)):
                                continue
                            by = self._dominated_by(lat, i) if self.rule.prune else None
                            if by is not None:
                                self._prune(lat, i, by)
                                pruned_any = True
                                continue
                            lat.running.add(i)
                            if speculative:
                                lat.speculative.add(i)
                            return self._task(lat, i, SCREEN)
        return None

    def _ahead(self, lat: Lattice, i: int) -> bool:
        """One step past the evidence: every predecessor is done, or running on its own
        evidence (never on speculation). Run on a slot that would otherwise idle;
        pruning may later show it was not needed."""
        return all(p in lat.outcomes or (p in lat.running and p not in lat.speculative) for p in lat.preds[i])

    def _prune(self, lat: Lattice, i: int, by: int) -> None:
        root = lat.points[by].tag
        self._record(lat, i, Outcome(PRUNED))
        reason = f"dominated by {root}, which is over every budget (max {self.budgets[-1]:g})"
        self.pruned.append((self._task(lat, i, SCREEN), reason))
        self._maybe_plan_confirm(lat)

    def complete(self, task: Task, outcome: Outcome) -> None:
        lat = self._by_index[task.lattice]
        i = lat.where[task.key]
        if task.phase == CONFIRM:
            lat.confirm_running.discard(i)
            lat.confirm_done.add(i)
            if outcome.status == OK and outcome.speedup is not None and i in lat.outcomes:
                # The confirmed speed is the one readers believe; a point screened faster
                # by luck may drop below another, which then decides the bound instead.
                lat.outcomes[i] = replace(lat.outcomes[i], speedup=outcome.speedup)
                self._confirm_new_bounds(lat)
            return
        lat.running.discard(i)
        lat.speculative.discard(i)
        self._record(lat, i, outcome)
        if self.rule.prune and self._over(outcome):
            # Prune eagerly, so progress counts are right and nothing queued runs.
            for j in range(len(lat.points)):
                if j not in lat.outcomes and j not in lat.running and dominates(lat.points[j], lat.points[i]):
                    self._prune(lat, j, i)
        self._maybe_plan_confirm(lat)

    def _maybe_plan_confirm(self, lat: Lattice) -> None:
        if lat.confirm_planned or not lat.screen_done:
            return
        lat.confirm_planned = True
        for i in self.bound_points(lat):
            self.confirm_total += 1
            if i not in lat.confirm_done:
                lat.confirm_queue.append(i)

    def _confirm_new_bounds(self, lat: Lattice) -> None:
        """Queue every bound point not yet confirmed or queued: until each budget's bound
        is a confirmed point (each point is confirmed once, so this ends)."""
        if not lat.confirm_planned:
            return
        for i in self.bound_points(lat):
            if i not in lat.confirm_done and i not in lat.confirm_queue and i not in lat.confirm_running:
                self.confirm_total += 1
                lat.confirm_queue.append(i)

    def bound_points(self, lat: Lattice) -> list[int]:
        """Per budget, the bound among the measured points (`bounds.best_point`: ties go
        to the lower loss, then the smaller trial key), each point once."""
        chosen: list[int] = []
        for budget in self.budgets:
            best = best_point(lat.outcomes.items(), budget,
                              lambda item: (item[1].status, item[1].speedup, item[1].loss, lat.keys[item[0]]))
            if best is not None and best[0] not in chosen:
                chosen.append(best[0])
        return chosen


def _plan_grid(plan: ComboPlan) -> dict[str, list[Any]]:
    """The grid values actually present in a plan's valid points, per parameter."""
    grid: dict[str, list[Any]] = {}
    for m, cfgs in plan.method_points.items():
        for name in PARAMS[m]:
            grid[name] = sorted({getattr(c, name) for c in cfgs})
    return grid
