"""Replay the sweep's scheduler against an exhaustive lake: what the policy would spend,
and which bounds it would find, without a GPU.

Run from the repository root (no install needed)::

    PYTHONPATH=. python bench/replay.py datasets/sweeps/map-shapes.yaml --lake datasets/example-lake \
        --metric ssim --metric judge --budgets 0.01,0.02,0.05
    PYTHONPATH=. python bench/replay.py datasets/sweeps/search-shapes.yaml \
        --lake datasets/search-shapes/exhaustive-lake --metric ssim --before
    PYTHONPATH=. python bench/replay.py datasets/sweeps/search-shapes.yaml \
        --lake datasets/search-shapes/exhaustive-lake --workers 1,2,4 --load-s 12

``--before`` replays the policy as it was before issue 15 (over-budget points timed,
confirmations measured afresh and made once); ``--time-over-budget``, ``--fresh-confirm``
and ``--confirm-once`` each bring back one of those.

The policy is `sweep.pruning.SweepState` itself (never a copy): the replay builds it from
the spec's plan exactly as `sweep.driver.run_sweep` does, hands its tasks to `--workers`
simulated devices, and answers each task from the lake (the oracle) instead of a GPU.
Only configs whose every planned point has a screen row in the lake are replayed; the
others are listed as incomplete.

Cost model. Rows written since the lake gained ``quality_seconds``, ``timing_seconds``
and ``prompt_losses_json`` say how a trial's seconds split and what each prompt lost; the
shipped shapes map predates them, so for its rows both are modelled (and the model is
stated in the output):

* A screen trial that runs to the end costs its screen row's ``gpu_seconds``.
* Early stopping: `sweep.pruning.clearly_over` is asked after each prompt, as the trial
  does, on the row's per-prompt losses, or, where they are not stored, on the row's
  mean loss repeated (no spread between prompts: optimistic, since spread delays a
  stop). A trial stopped after k of n prompts costs k/n of its quality seconds and no
  timing. Quality seconds: the row's ``quality_seconds``, else its ``gpu_seconds`` times
  a quality share estimated from rows: for points with a screen and a confirm row, both
  are ``Q + pairs * t`` (``n_pairs`` is stored), which gives Q / screen seconds; the
  median over those points is used.
* A screen whose loss over all its prompts is over the largest budget stops there,
  untimed (unless ``early_stop.time_over_budget``): it costs its quality seconds.
* A confirmation costs the point's confirm row's ``gpu_seconds`` when the lake has one,
  else its screen seconds times the median confirm/screen ratio (counted as estimated).
  The sweep's confirmation tops up its screen (its pairs pooled, one prompt measured
  again): a confirm row measured afresh (``pairs_reused`` 0 or null, as every row of the
  shipped map) is charged that less the screen's pairs (screen timing seconds) and all
  but one of its prompts (screen quality seconds times (n-1)/n), and at least one
  screen pair's seconds. ``--fresh-confirm`` replays the earlier policy: every
  confirmation re-measures everything, and a row that did top up is charged that back.
* Pipeline loads and idle slots are not in a side's device-seconds (trials only); they
  are in its wall-clock, below.

Wall-clock (`WallCosts`, each a flag with its default stated there). The simulated
devices run the tasks as the sweep hands them out (`SweepState.next_task`: configs in
order, a worker kept on the config it holds); a task starts on a free device at once,
after `load_s` when that device has not run a trial of the task's config yet (a worker
holds one pipeline, `sweep.worker`, and loads it on its first trial, not before), and
a device with no task idles. A config's wall is its makespan: from its first hand-out
to its last trial's end, loads included. A run's wall is `start_s` (Tune's start
before any trial) plus its configs' walls one after another plus `stop_s` (after the
last trial): the overlap of one config's tail with the next one's loads is not
modelled, so for a spec of several configs the total is an upper bound (one config, as
the scaling grids, is exact in the model). Utilisation = trial seconds / (workers *
wall), as the bench reports it from rows. Both sides run on the same number of
devices. Which trials the exhaustive side runs does not depend on that number (so
neither do its device-seconds), unless two confirmations of one grid finishing in
another order hand a bound on differently (never on the shipped lakes: tested).
``--workers 1,2,4`` replays each count and reports the scaling, wall on 1 device over
wall on N. ``--repeat K`` replays each grid K times over, every copy answered by the
same rows: the wall of a grid K times the size, of the same kind of points (how large a
grid keeps N devices busy). Not modelled: the seconds between one trial's end and the
next one's start (about 20 ms on an H200, but about 3 s after each device's first
trial in the 2026-11-30 runs), and devices slowing each other (a trial's seconds are
its row's, whatever ran beside it).

The exhaustive side is costed by the same model: every point screened, then its own bound
points confirmed. A bound (per config and budget) is the fastest point of any combo whose
screen loss is within the budget; its speed is the confirm row's when the point was
confirmed, else the screen row's. Policy and exhaustive bounds agree when they are the
same point, or both speedup CIs overlap, or neither finds a point.
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sweep.bookkeeping import resolved  # noqa: E402
from sweep.catalog import PipelineConfig  # noqa: E402
from sweep.lake import LakeReader  # noqa: E402
from sweep.lake_schema import CONFIRM, FAILED, OK, PRUNED, SCREEN, STOPPED  # noqa: E402
from sweep.pruning import Outcome, SweepState, clearly_over, dominates  # noqa: E402
from sweep.spec import ComboPlan, EarlyStop, SweepSpec, expand  # noqa: E402

CONFIG_COLS = ("model", "scheduler", "steps", "resolution", "batch")
ROW_COLS = [*CONFIG_COLS, "tag", "method", "phase", "status", "gpu_seconds", "n_prompts", "n_pairs",
            "speedup", "speedup_ci_low", "speedup_ci_high", "finished_at",
            "quality_loss_ssim", "quality_loss_clip", "quality_loss_judge",
            "quality_seconds", "timing_seconds", "prompt_losses_json", "pairs_reused"]
DEFAULT_BUDGETS = (0.01, 0.02, 0.05)


class ReplayError(ValueError):
    """The lake cannot answer the replay (nothing complete, a metric not stored)."""


@dataclass(frozen=True)
class WallCosts:
    """A run's fixed costs outside its trials, in seconds (the wall-clock model; the
    defaults are the 2026-11-30 H200 runs of scale-shapes, BENCHMARKS.md)."""

    # A worker's first trial of a config loads its pipeline first: 12-13 s measured, mostly
    # Python imports (`bench/bench_load.py`). Not stored in the lake, hence a flag.
    load_s: float = 12.0
    start_s: float = 2.0  # Tune's start, before any worker loads
    stop_s: float = 2.0  # after the last trial ends

    def __post_init__(self):
        for name in ("load_s", "start_s", "stop_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v >= 0 and v != float("inf")):
                raise ReplayError(f"--{name.replace('_', '-')} must be a finite number of seconds >= 0, got {v!r}")


def config_id(cfg: PipelineConfig) -> tuple:
    c = resolved(cfg)
    return tuple(getattr(c, k) for k in CONFIG_COLS)


def config_name(cid: tuple) -> str:
    model, scheduler, steps, resolution, batch = cid
    return f"{model} {scheduler} {steps} steps {resolution}px b{batch}"


# ----------------------------------------------------------------------- the oracle


@dataclass
class Oracle:
    """The lake's answers: per (config, tag) the screen row and the confirm row, and the
    failed screen rows of points that never measured (a library error is an outcome the
    policy meets too)."""

    screen: dict[tuple, dict[str, Any]]
    confirm: dict[tuple, dict[str, Any]]
    quality_share: float  # of a screen trial's seconds: its quality prompts
    confirm_ratio: float  # confirm seconds / screen seconds, for points never confirmed
    failed: dict[tuple, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Oracle:
        screen: dict[tuple, dict[str, Any]] = {}
        confirm: dict[tuple, dict[str, Any]] = {}
        failed: dict[tuple, dict[str, Any]] = {}
        for r in sorted(rows, key=lambda r: (r["finished_at"] is None, r["finished_at"] or 0)):
            if r["status"] == FAILED and r["phase"] == SCREEN:
                failed[(tuple(r[k] for k in CONFIG_COLS), r["tag"])] = dict(r)
                continue
            if r["status"] != OK or r["gpu_seconds"] is None:
                continue  # only measured rows answer a replay; the latest of a key wins
            key = (tuple(r[k] for k in CONFIG_COLS), r["tag"])
            (screen if r["phase"] == SCREEN else confirm)[key] = dict(r)
        shares, ratios = [], []
        for key, s in screen.items():
            c = confirm.get(key)
            if c is None:
                continue
            ratios.append(c["gpu_seconds"] / s["gpu_seconds"])
            ps, pc = s.get("n_pairs"), c.get("n_pairs")
            if s.get("quality_seconds") is not None:
                continue  # measured: `_screen_outcome` reads it, no estimate needed
            if ps and pc and pc > ps:
                per_pair = (c["gpu_seconds"] - s["gpu_seconds"]) / (pc - ps)
                q = s["gpu_seconds"] - ps * per_pair
                shares.append(min(1.0, max(0.0, q / s["gpu_seconds"])))
        # Without any pair of rows to estimate from, assume half (stated in the output).
        failed = {k: v for k, v in failed.items() if k not in screen}  # a later retry measured it
        return cls(screen, confirm, statistics.median(shares) if shares else 0.5,
                   statistics.median(ratios) if ratios else 2.0, failed)


def read_oracle(lake_uri: str, model: str | None = None) -> Oracle:
    rows = LakeReader(lake_uri).trial_columns(ROW_COLS)
    if model is not None:
        rows = [r for r in rows if r["model"] == model]
    if not rows:
        raise ReplayError(f"the lake {lake_uri} holds no trial rows{f' of model {model}' if model else ''}: "
                          "point --lake at the lake an exhaustive sweep of this spec wrote")
    return Oracle.from_rows(rows)


# ---------------------------------------------------------------------- simulation


@dataclass
class Trial:
    tag: str
    combo: str
    phase: str
    status: str
    seconds: float
    estimated: bool = False  # cost not read from a row (a confirmation the lake lacks)
    device: int | None = None  # the simulated device it ran on, and when it started there
    start: float | None = None  # (after the device's load), seconds from the config's first hand-out


@dataclass
class Bound:
    budget: float
    tag: str | None
    loss: float | None = None
    speedup: float | None = None
    ci: tuple[float, float] | None = None


@dataclass
class Side:
    """What one policy (the sweep's, or the exhaustive grid) spends and finds."""

    seconds: float
    trials: list[Trial]
    bounds: list[Bound]  # per budget, over the config's combos
    combo_bounds: dict[str, list[Bound]]  # per combo (the lake's bound group), per budget
    counts: dict[str, int] = field(default_factory=dict)
    workers: int = 1
    wall: float = 0.0  # makespan on `workers` devices: first hand-out to last trial end, loads in
    loads: int = 0  # pipeline loads (devices that ran a trial of the config)

    @property
    def utilisation(self) -> float:
        """Trial seconds over the devices' wall (this config's; without Tune's start and stop)."""
        return utilisation(self.seconds, self.workers, self.wall)


def utilisation(seconds: float, workers: int, wall: float) -> float:
    """Trial seconds / (workers * wall), as the bench reports it."""
    return seconds / (workers * wall) if wall > 0 else float("nan")


def _loss(row: Mapping[str, Any], metric: str) -> float:
    v = row.get(f"quality_loss_{metric}")
    if v is None:
        raise ReplayError(f"row {row['tag']} has no quality_loss_{metric}: replay a metric the lake "
                          "stores (ssim, judge or clip as measured)")
    return float(v)


def _screen_outcome(row: Mapping[str, Any], metric: str, budgets: Sequence[float], rule: EarlyStop,
                    share: float) -> tuple[Outcome, float]:
    """The outcome the sweep would have recorded for a screen trial, and its cost."""
    loss = _loss(row, metric)
    losses = json.loads(row["prompt_losses_json"]).get(metric) if row.get("prompt_losses_json") else None
    if not losses or None in losses:
        losses = [loss] * int(row.get("n_prompts") or 1)  # per-prompt losses not stored: no spread
    n = len(losses)
    quality_s, _ = _split(row, share)
    for k in range(1, n + 1):
        if clearly_over(losses[:k], budgets, rule, total=n):  # the trial asks after each prompt
            return Outcome(STOPPED, statistics.fmean(losses[:k]), None), quality_s * k / n
    return Outcome(OK, loss, row["speedup"]), row["gpu_seconds"]


def _split(row: Mapping[str, Any], share: float) -> tuple[float, float]:
    """(quality seconds, timing seconds) of a screen row: measured, else modelled."""
    q = row.get("quality_seconds")
    if q is None:
        q = row["gpu_seconds"] * share
    t = row.get("timing_seconds")
    if t is None:
        t = max(0.0, row["gpu_seconds"] - q)
    return q, t


def _confirm_cost(oracle: Oracle, key: tuple, fresh: bool = False) -> tuple[float, bool]:
    """(seconds, estimated) of confirming a point, topping up its screen unless `fresh`."""
    screen = oracle.screen[key]
    row = oracle.confirm.get(key)
    seconds = row["gpu_seconds"] if row is not None else screen["gpu_seconds"] * oracle.confirm_ratio
    q, t = _split(screen, oracle.quality_share)
    n = int(screen.get("n_prompts") or 1)
    ps = int(screen.get("n_pairs") or 0)
    per_pair = t / ps if ps else 0.0
    reused = int((row or {}).get("pairs_reused") or 0)
    saved = q * (n - 1) / n + ps * per_pair  # what topping up saves over measuring afresh
    if fresh:
        return seconds + (saved if reused else 0.0), row is None
    if reused:
        return seconds, row is None
    return max(per_pair, seconds - saved), row is None


def _bounds(measured: Mapping[str, tuple[float, Mapping[str, Any]]], confirmed: Mapping[str, Mapping[str, Any]],
            budgets: Sequence[float], metric: str) -> list[Bound]:
    """Per budget, the fastest point within it, judged by the row readers believe
    (`sweep.bounds`: a confirm row over its screen row), as `diffaccel bounds` judges it."""
    out = []
    for b in budgets:
        best: Bound = Bound(b, None)
        for tag in sorted(measured):
            loss, row = measured[tag]
            speed_row = confirmed.get(tag, row)
            if speed_row is not row:
                loss = _loss(speed_row, metric)
            if loss > b:
                continue
            if speed_row["speedup"] is None:
                continue
            if best.speedup is None or speed_row["speedup"] > best.speedup:
                ci = (speed_row["speedup_ci_low"], speed_row["speedup_ci_high"])
                best = Bound(b, tag, loss, speed_row["speedup"], ci if None not in ci else None)
        out.append(best)
    return out


def replay_config(plans: list[ComboPlan], oracle: Oracle, metric: str, budgets: Sequence[float],
                  rule: EarlyStop, workers: int = 2, state_cls: type[SweepState] = SweepState,
                  fresh_confirm: bool = False, load_s: float = 0.0) -> Side:
    """Run `state_cls` (the sweep's `SweepState`) over one config's plans on `workers`
    simulated devices, every trial answered by the lake. Deterministic: equal finish
    times complete in task order, and a task goes to the free device with the lowest
    number among those holding the pipeline, else among the rest. `fresh_confirm`:
    confirmations measure afresh (the policy before they topped up their screens).
    `load_s`: what a device's first trial of the config waits for its pipeline."""
    cid = config_id(plans[0].config)
    state = state_cls(plans, budgets, rule, lambda cfg, acc: f"{acc.combo}|{acc.tag}")
    running: list[tuple[float, int, int, Any, Outcome | None]] = []
    free, loaded = list(range(workers)), set()
    now, trials, measured, confirmed = 0.0, [], {}, {}

    def drain_pruned():
        for task, _ in state.pruned:
            trials.append(Trial(task.acc.tag, task.acc.combo, SCREEN, PRUNED, 0.0))
        state.pruned.clear()

    while True:
        while free:
            task = state.next_task()
            drain_pruned()
            if task is None:
                break
            key = (cid, task.acc.tag)
            if task.phase == CONFIRM:
                cost, est = _confirm_cost(oracle, key, fresh_confirm)
                confirmed[task.acc.tag] = oracle.confirm.get(key, oracle.screen[key])
                # Never confirmed in the lake: its screen's speed stands in (no new evidence).
                outcome = Outcome(OK, None, confirmed[task.acc.tag]["speedup"])
                trials.append(Trial(task.acc.tag, task.acc.combo, CONFIRM, OK, cost, est))
            elif key in oracle.failed:
                outcome, cost = Outcome(FAILED), float(oracle.failed[key]["gpu_seconds"] or 0.0)
                trials.append(Trial(task.acc.tag, task.acc.combo, SCREEN, FAILED, cost))
            else:
                row = oracle.screen[key]
                outcome, cost = _screen_outcome(row, metric, budgets, rule, oracle.quality_share)
                if outcome.status == OK:
                    measured[task.acc.tag] = (outcome.loss, row)
                trials.append(Trial(task.acc.tag, task.acc.combo, SCREEN, outcome.status, cost))
            device = min(free, key=lambda d: (d not in loaded, d))  # Tune reuses the actor that holds it
            free.remove(device)
            start = now if device in loaded else now + load_s
            loaded.add(device)
            trials[-1].device, trials[-1].start = device, start
            heapq.heappush(running, (start + cost, task.id, device, task, outcome))
        if not running:
            break
        now, _, device, task, outcome = heapq.heappop(running)
        free.append(device)
        state.complete(task, outcome if outcome is not None else Outcome(OK))
    if not state.finished:
        raise ReplayError(f"{config_name(cid)}: the policy stopped handing out tasks before it finished "
                          f"({state.counts()}); a scheduler bug, not a lake problem")
    counts: dict[str, int] = {}
    for t in trials:
        counts[f"{t.phase}_{t.status}"] = counts.get(f"{t.phase}_{t.status}", 0) + 1
    combos = {}
    for p in plans:
        tags = {a.tag for a in p.points()}
        combos[p.combo] = _bounds({t: v for t, v in measured.items() if t in tags}, confirmed, budgets, metric)
    return Side(sum(t.seconds for t in trials), trials, _bounds(measured, confirmed, budgets, metric), combos,
                counts, workers, now, len(loaded))


def exhaustive_config(plans: list[ComboPlan], oracle: Oracle, metric: str, budgets: Sequence[float],
                      fresh_confirm: bool = False, state_cls: type[SweepState] = SweepState,
                      workers: int = 1, load_s: float = 0.0) -> Side:
    """Every point screened, then each combo's bound points confirmed (what the sweep
    does with early stopping and pruning off), costed by the same model, on `workers`
    devices (which trials run does not depend on it: only the wall does)."""
    off = EarlyStop(enabled=False, prune=False, speculate=False)
    return replay_config(plans, oracle, metric, budgets, off, workers=workers, state_cls=state_cls,
                         fresh_confirm=fresh_confirm, load_s=load_s)


class ConfirmOnce(SweepState):
    """The scheduler before a confirmation could hand a bound on to another point: each
    grid's bound points, picked at their screened speeds, are confirmed once."""

    def _confirm_new_bounds(self, lat) -> None:
        pass


def pruning_floor(plans: list[ComboPlan], oracle: Oracle, metric: str, budgets: Sequence[float],
                  exhaustive: Side, rule: EarlyStop) -> float:
    """What a clairvoyant pruner would spend: every point screened except those over the
    largest budget that dominate another such point (a correct pruner must measure the
    points within budget and the least aggressive over-budget ones, the latter untimed
    unless `rule.time_over_budget`), plus the exhaustive side's confirmations. Early
    stopping before the last prompt is not in it."""
    cid = config_id(plans[0].config)
    limit = max(budgets)
    untimed = rule.enabled and not rule.time_over_budget
    seconds = sum(t.seconds for t in exhaustive.trials if t.phase == CONFIRM)
    for p in plans:
        pts = [a for a in p.points() if (cid, a.tag) in oracle.screen]  # failed points cost nothing
        over = [a for a in pts if _loss(oracle.screen[(cid, a.tag)], metric) > limit]
        for a in pts:
            row = oracle.screen[(cid, a.tag)]
            if a not in over:
                seconds += row["gpu_seconds"]
            elif not any(b.tag != a.tag and dominates(a, b) for b in over):
                seconds += _split(row, oracle.quality_share)[0] if untimed else row["gpu_seconds"]
    return seconds


def agree(a: Bound, b: Bound) -> bool:
    if a.tag == b.tag:
        return True
    if a.ci is None or b.ci is None:
        return False
    return a.ci[0] <= b.ci[1] and b.ci[0] <= a.ci[1]


# -------------------------------------------------------------------------- report


@dataclass
class ConfigResult:
    config: str
    metric: str
    policy: Side
    exhaustive: Side
    agreement: list[bool]  # per budget: the config's bound
    combo_agreement: dict[str, list[bool]]  # per combo, per budget
    floor: float  # device-seconds of a clairvoyant pruner (`pruning_floor`)

    @property
    def ratio(self) -> float:
        return self.policy.seconds / self.exhaustive.seconds if self.exhaustive.seconds else float("nan")


@dataclass
class Replay:
    results: list[ConfigResult]
    incomplete: list[str]  # configs the lake cannot answer for
    quality_share: float
    confirm_ratio: float
    workers: int
    rule: EarlyStop
    fresh_confirm: bool = False  # confirmations measured afresh (the policy before topping up)
    costs: WallCosts = field(default_factory=WallCosts)
    repeat: int = 1  # each grid this many times over (`replay`)

    def run(self, metric: str, side: str) -> tuple[float, float]:
        """(trial seconds, wall) of one side's whole run under `metric`: Tune's start, each
        config's makespan in turn, the stop (`WallCosts`)."""
        sides = [getattr(r, side) for r in self.results if r.metric == metric]
        return (sum(x.seconds for x in sides),
                self.costs.start_s + sum(x.wall for x in sides) + self.costs.stop_s)

    def to_dict(self) -> dict[str, Any]:
        runs: dict[str, dict[str, dict[str, float]]] = {}
        for metric in dict.fromkeys(r.metric for r in self.results):
            for side in ("policy", "exhaustive"):
                seconds, wall = self.run(metric, side)
                runs.setdefault(metric, {})[side] = {"seconds": seconds, "wall": wall,
                                                     "utilisation": utilisation(seconds, self.workers, wall)}
        return {"workers": self.workers, "rule": asdict(self.rule), "fresh_confirm": self.fresh_confirm,
                "costs": asdict(self.costs), "repeat": self.repeat, "runs": runs,
                "quality_share": self.quality_share,
                "confirm_ratio": self.confirm_ratio, "incomplete": self.incomplete,
                "results": [{"config": r.config, "metric": r.metric, "ratio": r.ratio, "floor": r.floor,
                             "agreement": r.agreement, "combo_agreement": r.combo_agreement,
                             "policy": asdict(r.policy),
                             "exhaustive": asdict(r.exhaustive)} for r in self.results]}


def oracle_for(spec: SweepSpec, lake_uri: str) -> Oracle:
    """The lake's answers for `spec` (its rows of the spec's model when it has one)."""
    models = {p.config.model for p in expand(spec).combos}
    return read_oracle(lake_uri, model=next(iter(models)) if len(models) == 1 else None)


def replay(spec: SweepSpec, lake_uri: str, *, metrics: Sequence[str] = ("ssim",),
           budgets: Sequence[float] = DEFAULT_BUDGETS, workers: int = 2, rule: EarlyStop | None = None,
           state_cls: type[SweepState] = SweepState, oracle: Oracle | None = None,
           fresh_confirm: bool = False, costs: WallCosts | None = None, repeat: int = 1) -> Replay:
    """Replay `spec`'s sweep policy (its `early_stop` section, or `rule`; early stopping
    and pruning switched on when the spec, being exhaustive, had them off) against the
    exhaustive lake at `lake_uri`, both sides on `workers` devices with the fixed costs
    `costs` (`WallCosts()` when None).

    `repeat`: each config's combo grids `repeat` times over, every copy answered by the
    same rows (and confirming its own bound points): what a grid `repeat` times the size,
    of the same kind of points, would cost on the devices. The copies find the same
    bounds; the seconds, walls and the floor grow."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ReplayError(f"--workers must be a whole number at least 1, got {workers!r}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ReplayError(f"--repeat must be a whole number at least 1, got {repeat!r}")
    costs = costs or WallCosts()
    if not budgets:
        raise ReplayError("no budgets: give at least one, e.g. --budgets 0.01,0.02,0.05")
    if rule is None:
        rule = replace(spec.early_stop, enabled=True, prune=True)
    plan = expand(spec)
    oracle = oracle or oracle_for(spec, lake_uri)
    by_config: dict[tuple, list[ComboPlan]] = {}
    for p in plan.combos:
        by_config.setdefault(config_id(p.config), []).append(p)
    results, incomplete = [], []
    for cid, plans in by_config.items():
        missing = [a.tag for p in plans for a in p.points()
                   if (cid, a.tag) not in oracle.screen and (cid, a.tag) not in oracle.failed]
        if missing:
            incomplete.append(f"{config_name(cid)}: {len(missing)} of "
                              f"{sum(len(list(p.points())) for p in plans)} points have no screen row")
            continue
        plans = plans * repeat
        for metric in metrics:
            pol = replay_config(plans, oracle, metric, sorted(budgets), rule, workers, state_cls, fresh_confirm,
                                costs.load_s)
            exh = exhaustive_config(plans, oracle, metric, sorted(budgets), fresh_confirm, state_cls, workers,
                                    costs.load_s)
            combo_agreement = {c: [agree(a, b) for a, b in zip(pol.combo_bounds[c], bs, strict=True)]
                               for c, bs in exh.combo_bounds.items()}
            results.append(ConfigResult(config_name(cid), metric, pol, exh,
                                        [agree(a, b) for a, b in zip(pol.bounds, exh.bounds, strict=True)],
                                        combo_agreement, pruning_floor(plans, oracle, metric, budgets, exh, rule)))
    if not results:
        raise ReplayError(f"no config of {spec.name} is complete in {lake_uri} ({'; '.join(incomplete)}): "
                          "replay needs an exhaustive lake (early_stop: {enabled: false, prune: false})")
    return Replay(results, incomplete, oracle.quality_share, oracle.confirm_ratio, workers, rule, fresh_confirm,
                  costs, repeat)


def _bound_text(b: Bound) -> str:
    if b.tag is None:
        return "none"
    ci = f" [{b.ci[0]:.2f}, {b.ci[1]:.2f}]" if b.ci else ""
    return f"{b.tag} {b.speedup:.2f}x{ci}"


def markdown(r: Replay) -> str:
    rule = ", ".join(f"{k}={v}" for k, v in asdict(r.rule).items())
    confirm = "measured afresh" if r.fresh_confirm else "topping up their screens"
    lines = [f"Policy: `SweepState` on {r.workers} simulated device(s), early_stop: {rule}; "
             f"confirmations {confirm} (both sides). "
             f"Quality share of a screen trial's seconds (estimated from rows): {r.quality_share:.2f}; "
             f"confirm/screen seconds, for points the lake never confirmed: {r.confirm_ratio:.2f}.", "",
             "| config | metric | budget | exhaustive bound | policy bound | agree | per-combo bounds agree |"
             " exhaustive s | policy s | policy/exh. | floor s (floor/exh.) | policy trials |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in r.results:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(res.policy.counts.items()))
        est = sum(t.estimated for t in res.policy.trials)
        if est:
            counts += f" ({est} confirm cost(s) estimated)"
        for i, (pb, eb) in enumerate(zip(res.policy.bounds, res.exhaustive.bounds, strict=True)):
            combo_ok = [v[i] for v in res.combo_agreement.values()]
            head = f"| {res.config} | {res.metric} |" if i == 0 else "| | |"
            conf = sum(t.seconds for t in res.exhaustive.trials if t.phase == CONFIRM)
            tail = (f" {res.exhaustive.seconds:.1f} ({conf:.1f} confirm) | {res.policy.seconds:.1f} | {res.ratio:.0%} | "
                    f"{res.floor:.1f} ({res.floor / res.exhaustive.seconds:.0%}) | {counts} |") if i == 0 else " | | | | |"
            lines.append(f"{head} {pb.budget:g} | {_bound_text(eb)} | {_bound_text(pb)} | "
                         f"{'yes' if res.agreement[i] else '**no**'} | {sum(combo_ok)}/{len(combo_ok)} |" + tail)
    if r.incomplete:
        lines += ["", "Not replayed (incomplete in the lake): " + "; ".join(r.incomplete) + "."]
    return "\n".join(lines)


def wall_markdown(runs: Sequence[Replay], one: Replay | None = None) -> str:
    """Per worker count, metric and config: each side's device-seconds, wall and
    utilisation, and the scaling (wall on 1 device over wall on N) against `one`, a
    1-device replay (else the one in `runs`, if any); then the whole run's, with Tune's
    start and stop."""
    c = runs[0].costs
    one = one or next((r for r in runs if r.workers == 1), None)
    lines = [f"Wall-clock, simulated: a pipeline load of {c.load_s:g} s on each device's first trial of a config, "
             f"Tune's start {c.start_s:g} s, stop {c.stop_s:g} s; configs one after another (`WallCosts`). "
             "Utilisation = trial seconds / (devices x wall); scaling = wall on 1 device / wall on N."
             + (f" Each grid {runs[0].repeat} times over (`--repeat`)." if runs[0].repeat > 1 else ""), "",
             "| devices | metric | config | policy s | policy wall s | policy util. | policy scaling | "
             "exhaustive s | exhaustive wall s | exh. util. | exh. scaling | loads (policy/exh.) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def scaling(wall_1: float | None, wall: float) -> str:
        return f"{wall_1 / wall:.2f}x" if wall_1 is not None and wall > 0 else "-"

    for r in runs:
        for metric in dict.fromkeys(x.metric for x in r.results):
            ref = {x.config: x for x in one.results if x.metric == metric} if one else {}
            for res in (x for x in r.results if x.metric == metric):
                p, e, base = res.policy, res.exhaustive, ref.get(res.config)
                lines.append(f"| {r.workers} | {metric} | {res.config} | {p.seconds:.1f} | {p.wall:.1f} | "
                             f"{p.utilisation:.2f} | {scaling(base and base.policy.wall, p.wall)} | "
                             f"{e.seconds:.1f} | {e.wall:.1f} | {e.utilisation:.2f} | "
                             f"{scaling(base and base.exhaustive.wall, e.wall)} | {p.loads}/{e.loads} |")
            (ps, pw), (es, ew) = r.run(metric, "policy"), r.run(metric, "exhaustive")
            pw1 = one.run(metric, "policy")[1] if one else None
            ew1 = one.run(metric, "exhaustive")[1] if one else None
            lines.append(f"| {r.workers} | {metric} | **run** (start + configs + stop) | {ps:.1f} | {pw:.1f} | "
                         f"{utilisation(ps, r.workers, pw):.2f} | {scaling(pw1, pw)} | {es:.1f} | {ew:.1f} | "
                         f"{utilisation(es, r.workers, ew):.2f} | {scaling(ew1, ew)} | |")
    return "\n".join(lines)


def _workers(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or any(n < 1 for n in counts):
        raise ReplayError(f"--workers {text!r}: give whole numbers of at least 1 separated by commas, e.g. 1,2,4")
    return list(dict.fromkeys(counts))


def _seconds(flag: str, text: str) -> float:
    """A flag's number; its range is `WallCosts`' to check."""
    try:
        return float(text)
    except ValueError:
        raise ReplayError(f"{flag} {text!r}: give a finite number of seconds >= 0, e.g. {flag} 12") from None


def _budgets(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budgets {text!r}: give numbers separated by commas, "
                                         "e.g. 0.01,0.02,0.05") from None
    return vals


def main(argv: Sequence[str] | None = None) -> int:
    from sweep.spec import SpecError, load

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="the sweep spec whose policy to replay (its plan and early_stop section)")
    ap.add_argument("--lake", required=True, help="an exhaustive lake of that spec (the oracle)")
    ap.add_argument("--metric", action="append", choices=["ssim", "clip", "judge"],
                    help="quality metric the budgets are in (repeatable; default ssim)")
    ap.add_argument("--budgets", type=_budgets, default=list(DEFAULT_BUDGETS))
    ap.add_argument("--workers", default="2",
                    help="simulated devices, or several counts separated by commas (e.g. 1,2,4: one replay "
                         "each, and the scaling against 1 device); default 2")
    d = WallCosts()
    ap.add_argument("--load-s", default=str(d.load_s),
                    help=f"seconds a device's first trial of a config waits for its pipeline (default {d.load_s:g})")
    ap.add_argument("--start-s", default=str(d.start_s),
                    help=f"seconds of Tune's start before any trial (default {d.start_s:g})")
    ap.add_argument("--stop-s", default=str(d.stop_s),
                    help=f"seconds after the last trial (default {d.stop_s:g})")
    ap.add_argument("--margin", type=float, help="override early_stop.margin (relative, over the largest budget)")
    ap.add_argument("--min-prompts", type=int, help="override early_stop.min_prompts")
    ap.add_argument("--no-stop", action="store_true", help="replay without early stopping")
    ap.add_argument("--no-prune", action="store_true", help="replay without pruning")
    ap.add_argument("--no-speculate", action="store_true", help="replay without speculation")
    ap.add_argument("--time-over-budget", action="store_true",
                    help="time points whose loss is over every budget (the policy before issue 15)")
    ap.add_argument("--fresh-confirm", action="store_true",
                    help="confirmations measure everything afresh (the policy before issue 15)")
    ap.add_argument("--confirm-once", action="store_true",
                    help="confirm each grid's screened bound points once, even if a confirmation drops below "
                         "another point (the policy before issue 15)")
    ap.add_argument("--before", action="store_true",
                    help="the policy before issue 15: --time-over-budget --fresh-confirm --confirm-once")
    ap.add_argument("--repeat", default="1",
                    help="replay each grid this many times over, the copies answered by the same rows: the "
                         "wall of a grid that many times the size, of the same kind of points (default 1)")
    ap.add_argument("--json", help="also write the full result here (several --workers: {\"runs\": [...]}, "
                                   "one per count)")
    args = ap.parse_args(argv)
    try:
        spec = load(args.spec)
        # The spec's early_stop section, switched on (an exhaustive map has it off),
        # then any override from the command line.
        rule = replace(spec.early_stop, enabled=not args.no_stop, prune=not args.no_prune)
        if args.no_speculate:
            rule = replace(rule, speculate=False)
        if args.time_over_budget or args.before:
            rule = replace(rule, time_over_budget=True)
        if args.margin is not None:
            rule = replace(rule, margin=args.margin)
        if args.min_prompts is not None:
            rule = replace(rule, min_prompts=args.min_prompts)
        counts = _workers(args.workers)
        costs = WallCosts(_seconds("--load-s", args.load_s), _seconds("--start-s", args.start_s),
                          _seconds("--stop-s", args.stop_s))
        try:
            repeat = int(args.repeat)  # its range is `replay`'s to check
        except ValueError:
            raise ReplayError(f"--repeat {args.repeat!r}: give a whole number of at least 1, e.g. --repeat 4") \
                from None
        oracle = oracle_for(spec, args.lake)
        runs = {n: replay(spec, args.lake, metrics=args.metric or ["ssim"], budgets=args.budgets, workers=n,
                          rule=rule, fresh_confirm=args.fresh_confirm or args.before,
                          state_cls=ConfirmOnce if args.confirm_once or args.before else SweepState,
                          oracle=oracle, costs=costs, repeat=repeat)
                # The scaling needs a 1-device replay: run (not shown) when several counts lack it.
                for n in ([1] if 1 not in counts and len(counts) > 1 else []) + counts}
    except (ReplayError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shown = [runs[n] for n in counts]
    for r in shown:
        print(markdown(r) + "\n")
    print(wall_markdown(shown, runs.get(1)))
    if args.json:
        out = shown[0].to_dict() if len(shown) == 1 else {"runs": [r.to_dict() for r in shown]}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
