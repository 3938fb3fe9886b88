"""Benchmark tasks from the lake: one per config with a bound, per difficulty scale.

A config is a `lake_schema.BOUND_GROUP` (device kind, model, scheduler, steps,
resolution, method combination): a speedup holds only on the hardware it was measured
on, so every task names its device kind. The bound of a config is the highest speedup
of a valid ``ok`` point whose quality loss is within the budget. Each scale `s` gives a
task asking for ``floor(bound × s, 2 decimals)``: easy below 1, normal at 1, hard above.

The policy in `codegen.policy` then picks the reference point for each task, or marks
it infeasible with the best reachable speedup. Task statuses:

``feasible``    a point meets it; `choice` holds the parameters and measurements.
``infeasible``  no valid point within budget meets the speedup (hard tasks, usually).
``missing``     the config is not in the lake (``--strategy grid``): sweep it first.
``trivial``     the requested speedup is not above 1×, so there is nothing to accelerate.

`tasks.jsonl` holds one `Task` a line; `read_tasks` reads it back and reports each
malformed line instead of failing the batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timezone
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from codegen import texts
from codegen.parallel import ordered_map, worker_count
from codegen.policy import DEFAULT_POLICY, Point, check_policy, choose
from sweep.catalog import (
    PARAM_OWNER,
    Acceleration,
    ConfigError,
    canonical_combo,
    check_combo_family,
    family,
    stable_hash,
)
from sweep.lake_schema import BOUND_GROUP, BUDGET_METRICS, OK, PARAM_COLUMNS

FEASIBLE, INFEASIBLE, MISSING, TRIVIAL = "feasible", "infeasible", "missing", "trivial"
TASK_STATUSES = (FEASIBLE, INFEASIBLE, MISSING, TRIVIAL)
DEFAULT_SCALES = (0.8, 1.0, 1.2)
STRATEGIES = ("lake", "grid")


def difficulty(scale: float) -> str:
    return "easy" if scale < 1 else "normal" if scale == 1 else "hard"


def floor2(x: float) -> float:
    """floor to 2 decimals without binary-float surprises: 2.3 * 1.0 stays 2.30.

    The product is taken in decimal from each float's shortest repr, so it is exact for
    the numbers a person would write.
    """
    return float((Decimal(repr(float(x)))).quantize(Decimal("0.01"), rounding=ROUND_FLOOR))


def scaled_speedup(bound: float, scale: float) -> float:
    return floor2(float(Decimal(repr(float(bound))) * Decimal(repr(float(scale)))))


def parse_scales(text: str | Sequence[float]) -> tuple[float, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"scale {item!r} is not a number: pass e.g. --scales 0.8,1.0,1.2") from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"scale {item!r} must be a positive number, e.g. 0.8 (easy) or 1.2 (hard)")
        if value not in out:
            out.append(value)
    if not out:
        raise ConfigError("no scales given: pass e.g. --scales 0.8,1.0,1.2")
    return tuple(out)


# ---------------------------------------------------------------------------- the task


@dataclass
class Task:
    task_id: str
    status: str
    config: dict[str, Any]  # BOUND_GROUP columns; resolution None only for missing configs
    budget: float
    metric: str
    policy: str
    requested_speedup: float | None = None
    difficulty: str | None = None
    scale: float | None = None
    best_speedup: float | None = None  # highest valid speedup within budget on this config
    choice: dict[str, Any] | None = None
    text: str | None = None
    reason: str | None = None
    skipped_points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """'sd15_ddim_50s_512px': the config part of script names."""
        c = self.config
        res = f"{c['resolution']}px" if c.get("resolution") else "defaultpx"
        return f"{c['model']}_{c['scheduler']}_{c['steps']}s_{res}"

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: the fields already hold plain JSON data, and asdict's deep
        # copy was a fifth of the time of writing a large batch.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Read a task back, checking what codegen relies on (a clear error otherwise)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a task must be a JSON object, got {type(data).__name__}")
        names = _task_fields()
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown task field(s) {', '.join(unknown)}: known fields are "
                              f"{', '.join(sorted(names))}")
        for key in ("task_id", "status", "config", "budget", "metric"):
            if key not in data:
                raise ConfigError(f"task has no {key!r}: regenerate it with `diffaccel tasks`")
        if data["status"] not in TASK_STATUSES:
            raise ConfigError(f"task status {data['status']!r} is unknown: use one of {', '.join(TASK_STATUSES)}")
        config = data["config"]
        if not isinstance(config, Mapping) or any(k not in config for k in BOUND_GROUP):
            raise ConfigError(f"task config must hold {', '.join(BOUND_GROUP)}, got {config!r}")
        return cls(**{k: v for k, v in data.items() if k in names and k != "policy"},
                   policy=data.get("policy", DEFAULT_POLICY))

    def request(self) -> texts.Request:
        c = self.config
        return texts.Request(model=c["model"], scheduler=c["scheduler"], steps=int(c["steps"]),
                             method=c["method"], speedup=self.requested_speedup, budget=self.budget,
                             metric=self.metric, device_kind=c["device_kind"], resolution=c["resolution"])


@functools.cache
def _task_fields() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(Task))


def make_task_id(config: Mapping[str, Any], requested: float | None, budget: float, metric: str) -> str:
    """Stable: the same config and request give the same id in any run (not the policy,
    which picks a reference solution, not the task)."""
    return stable_hash({"config": {k: config.get(k) for k in BOUND_GROUP}, "speedup": requested,
                        "budget": budget, "metric": metric}, n=12)


# ------------------------------------------------------------------------- lake points


def row_params(row: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of a trial row, for its own method combination only."""
    combo = canonical_combo(row["method"])
    raw = row.get("params_json")
    if isinstance(raw, str) and raw:
        try:
            params = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"params_json {raw!r} is not valid JSON ({e}): rewrite the row") from None
        if not isinstance(params, dict):
            raise ConfigError(f"params_json {raw!r} is not an object of parameter values")
        return params
    params = {}
    for name, owner in PARAM_OWNER.items():
        if owner in combo.split("+"):
            value = row.get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise ConfigError(f"the row has no value for {name}, a {owner} parameter")
            params[name] = value.item() if hasattr(value, "item") else value
    return params


def point_check(row: Mapping[str, Any]) -> tuple[Acceleration | None, str | None]:
    """(the point, None) for a row that can be a reference solution, else (None, why)."""
    try:
        acc = Acceleration.from_params(row["method"], row_params(row), model=row["model"],
                                       steps=int(row["steps"]))
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        return None, str(e)
    if row.get("tag") and row["tag"] != acc.tag:
        return None, f"stored tag {row['tag']!r} does not match its parameters ({acc.tag})"
    return acc, None


def _native(value: Any) -> Any:
    """A plain Python value (None for any missing value) from what pandas hands out."""
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        return value
    if kind is float:
        return None if value != value else value
    if value is None:
        return None
    pd = sys.modules.get("pandas")  # a value from a DataFrame; pandas is loaded then
    if pd is not None and (value is pd.NA or value is pd.NaT):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def choice_of(row: Mapping[str, Any], loss_col: str, acc: Acceleration | None = None) -> dict[str, Any]:
    acc = acc or Acceleration.from_params(row["method"], row_params(row))
    plain = {c: _native(row.get(c)) for c in (*_CHOICE_COLUMNS, loss_col)}
    return _choice(plain, loss_col, acc.combo, acc.params, acc.tag)


def _choice(row: Mapping[str, Any], loss_col: str, combo: str, params: Mapping[str, Any], tag: str) -> dict[str, Any]:
    """`choice_of` for a row of plain values, with the point's combination, parameters
    and tag already worked out."""
    get = row.get
    return {
        "method": combo,
        "params": dict(params),
        "tag": tag,
        "speedup": get("speedup"),
        "speedup_ci_low": get("speedup_ci_low"),
        "speedup_ci_high": get("speedup_ci_high"),
        "quality_loss": get(loss_col),
        "trial_key": get("trial_key"),
        "device": get("device"),
        "device_kind": get("device_kind"),
        "preset": get("preset"),
        "model_path": get("model_path"),
        "dtype": get("dtype"),
        "guidance_scale": get("guidance_scale"),
        "phase": get("phase"),
        "n_prompts": get("n_prompts"),
        "measured_at": get("finished_at"),
    }


# ------------------------------------------------------------------------ building


# The columns a task reads from a trial row; the rest of the lake's columns stay in the lake.
_ROW_COLUMNS = (*BOUND_GROUP, "trial_key", "tag", "speedup", "speedup_ci_low", "speedup_ci_high",
                *(f"quality_loss_{m}" for m in BUDGET_METRICS), "device", "preset", "model_path", "dtype",
                "guidance_scale", "phase", "n_prompts", "finished_at", "params_json", *PARAM_COLUMNS)


_CHECK_COLUMNS = ("method", "model", "steps", "tag", "trial_key", "params_json", *PARAM_COLUMNS)
# What `build_tasks` and `task_for_request` read: select these from the lake's trials view.
TRIAL_COLUMNS = ("status", *_ROW_COLUMNS)


# What `choice_of` reads of a row, besides the loss column of the metric.
_CHOICE_COLUMNS = ("speedup", "speedup_ci_low", "speedup_ci_high", "trial_key", "device", "device_kind", "preset",
                   "model_path", "dtype", "guidance_scale", "phase", "n_prompts", "finished_at")


class _TrialColumns(dict):
    """{column: list} whose values are plain already (what `read_trials` returns)."""


def read_trials(lake) -> dict[str, list]:
    """The trials (one row per trial key, by trial key) of an open `codegen.lake` lake, as
    columns of plain Python values (missing values and NaN are None; times are naive
    datetimes in UTC, as DuckDB hands TIMESTAMPTZ to NumPy), only the columns tasks
    read: a lake row holds some eighty columns, most of them not needed here.

    Fetched from DuckDB as NumPy arrays, several times faster than a DataFrame and with
    no pandas. Column `_config` numbers each row's config (`BOUND_GROUP`) in the order
    configs sort in, missing values last. `build_tasks` takes this or a DataFrame.
    """
    cols = ", ".join(f'"{c}"' for c in TRIAL_COLUMNS)
    order = ", ".join(f'"{c}" NULLS LAST' for c in BOUND_GROUP)
    arrays = lake.con.execute(f"SELECT {cols}, dense_rank() OVER (ORDER BY {order}) - 1 AS _config "
                              "FROM trials ORDER BY trial_key").fetchnumpy()
    import numpy as np  # DuckDB's fetchnumpy has loaded it

    out = _TrialColumns()
    for c, a in arrays.items():
        values = a.tolist()  # NULL is None (a masked array)
        if a.dtype.kind == "f" and np.isnan(np.ma.getdata(a)).any():
            values = [None if v != v else v for v in values]
        out[c] = values
    return out


def _none_last(key: tuple) -> tuple:
    return tuple((v is None, v if v is not None else 0) for v in key)


def _trial_columns(trials) -> dict[str, list]:
    """{column: list of plain values} of `trials` (`read_trials` columns or a DataFrame's
    `TRIAL_COLUMNS`, missing values None; times may stay datetimes), with `_config` as
    `read_trials` numbers it."""
    wanted = (*TRIAL_COLUMNS, "_config")
    if isinstance(trials, _TrialColumns):
        cols = {c: v for c, v in trials.items() if c in wanted}
    elif isinstance(trials, Mapping):
        cols = {c: [_native(x) for x in v] for c, v in trials.items() if c in wanted}
    else:
        cols = {c: [_native(v) for v in trials[c].tolist()] for c in TRIAL_COLUMNS if c in trials.columns}
    n = len(next(iter(cols.values()), ()))
    if "_config" not in cols:
        none = [None] * n
        keys = list(zip(*(cols.get(c, none) for c in BOUND_GROUP), strict=True))
        number = {k: i for i, k in enumerate(sorted(set(keys), key=_none_last))}
        cols["_config"] = [number[k] for k in keys]
    return cols


class _Rows:
    """Trial rows held as columns of plain values; a row becomes a dict only when asked
    for, and only with the columns asked for (a lake holds far more points than a task
    batch ever looks at)."""

    def __init__(self, cols: Mapping[str, list]):
        self.cols = {c: cols[c] for c in _ROW_COLUMNS if c in cols}
        self._picks: dict[tuple[str, ...], list[tuple[str, list]]] = {}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {c: _native(v[i]) for c, v in self.cols.items()}

    def _some(self, i: int, names: tuple[str, ...]) -> dict[str, Any]:
        pick = self._picks.get(names)
        if pick is None:
            pick = self._picks[names] = [(c, self.cols[c]) for c in names if c in self.cols]
        row = {c: v[i] for c, v in pick}
        when = row.get("finished_at")
        if when is not None and not isinstance(when, str):  # ISO text, for the few rows that get here
            if getattr(when, "tzinfo", False) is None:  # naive: UTC, as the lake stores it
                when = when.replace(tzinfo=timezone.utc)
            row["finished_at"] = _native(when)
        return row

    def for_check(self, i: int) -> dict[str, Any]:
        """Only what `point_check` and the skipped-point notes read."""
        return self._some(i, _CHECK_COLUMNS)

    def for_choice(self, i: int, loss_col: str) -> dict[str, Any]:
        """Only what `choice_of` reads, given the point's `Acceleration`."""
        return self._some(i, (*_CHOICE_COLUMNS, loss_col))


@dataclass
class _Config:
    key: dict[str, Any]
    points: list[Point]  # ok points within budget (any validity); ref indexes `rows`
    rows: _Rows | None
    n_trials: int
    best_loss: float | None  # lowest loss among ok rows (for the no-bound reason)


def _configs_from_trials(trials, budget: float, metric: str) -> dict[tuple, _Config]:
    """The configs of `trials` (sorted by BOUND_GROUP, missing values last), each with its
    ok points within budget in row order."""
    loss_col = f"quality_loss_{metric}"
    if trials is None or len(trials) == 0:
        return {}
    cols = _trial_columns(trials)
    config = cols["_config"]
    n = len(config)
    if n == 0:
        return {}
    rows = _Rows(cols)
    none = [None] * n
    status, speedup, loss = cols.get("status", none), cols.get("speedup", none), cols.get(loss_col, none)
    tkeys = cols.get("trial_key", none)
    configs: list[_Config | None] = [None] * (max(config) + 1)
    for i, c in enumerate(config):
        if configs[c] is None:
            key = {k: _native(cols[k][i]) if k in cols else None for k in BOUND_GROUP}
            configs[c] = _Config(key, [], rows, 0, None)
    for c, count in Counter(config).items():
        configs[c].n_trials = count
    # ok, with a speedup and a loss (NaN counts as missing, as in pandas)
    for i in [i for i, (st, s, q) in enumerate(zip(status, speedup, loss, strict=True))
              if st == OK and s is not None and q is not None and s == s and q == q]:
        cfg, q = configs[config[i]], float(loss[i])
        if cfg.best_loss is None or q < cfg.best_loss:
            cfg.best_loss = q
        if q <= budget:
            tk = tkeys[i]
            cfg.points.append(Point(float(speedup[i]), q, "" if tk is None else str(tk), i))
    return {tuple(cfg.key.values()): cfg for cfg in configs if cfg is not None}


def _tasks_for_config(cfg: _Config, scales: Sequence[float], budget: float, metric: str,
                      policy: str, speedups: Sequence[float] | None = None,
                      verdicts: dict[tuple, tuple] | None = None) -> list[Task]:
    """Tasks at `scales` × the config's bound, or (with `speedups`) at those speedups.

    `verdicts` memoises `point_check` over the configs of a batch: the same parameter
    point of the same model and steps (measured on another GPU or scheduler, say) is
    checked once. Its `Acceleration` is immutable, so sharing it is safe.
    """
    loss_col = f"quality_loss_{metric}"
    points = cfg.points
    # ref -> (row, its Acceleration or None, why it is invalid or None, (combo, params, tag) or None)
    checked: dict[int, tuple[dict[str, Any], Acceleration | None, str | None, tuple | None]] = {}
    if verdicts is None:
        verdicts = {}

    def check(ref: int):
        if ref not in checked:
            row = cfg.rows.for_check(ref)
            # Everything point_check reads but the trial key (which it does not read).
            what = tuple(v for c, v in row.items() if c != "trial_key")
            verdict = verdicts.get(what)
            if verdict is None:
                acc, why = point_check(row)
                verdict = verdicts[what] = (acc, why, acc and (acc.combo, acc.params, acc.tag))
            checked[ref] = (row, *verdict)
        return checked[ref]

    def invalid(p: Point) -> str | None:
        return check(p.ref)[2]

    # The bound: the highest valid speedup within budget.
    probe = choose(points, float("-inf"), "max-speedup", invalid)
    base = dict(config=dict(cfg.key), budget=budget, metric=metric, policy=policy)
    if probe.best_speedup is None:
        if points:
            why = f"every ok point within budget {texts.format_budget(budget)} ({metric}) is malformed"
        elif cfg.best_loss is not None:
            why = (f"no ok point has a {metric} quality loss within {texts.format_budget(budget)} "
                   f"(the lowest measured is {cfg.best_loss:.4g}): raise the budget or sweep gentler parameters")
        else:
            why = f"none of its {cfg.n_trials} trial(s) finished ok: see their `error` column"
        task = Task(task_id=make_task_id(cfg.key, None, budget, metric), status=INFEASIBLE, reason=why, **base)
        task.skipped_points = _skipped(checked)
        return [task]

    bound = probe.best_speedup
    out: list[Task] = []
    seen: set[str] = set()
    if speedups is None:
        asks = [(scaled_speedup(bound, scale), scale, difficulty(scale)) for scale in scales]
    else:  # a stated request: its difficulty is where it falls against the bound
        asks = [(float(x), None, "easy" if x < floor2(bound) else "normal" if x == floor2(bound) else "hard")
                for x in speedups]
    for requested, scale, level in asks:
        tid = make_task_id(cfg.key, requested, budget, metric)
        if tid in seen:  # two scales floored to the same speedup: one task
            continue
        seen.add(tid)
        task = Task(task_id=tid, status=FEASIBLE, requested_speedup=requested, difficulty=level,
                    scale=scale, best_speedup=bound, **base)
        if requested <= 1.0:
            task.status = TRIVIAL
            task.reason = (f"{texts.format_speedup(requested)}× is no acceleration (the config's bound "
                           f"is {bound:.3g}×): ask for more than 1×")
        else:
            pick = choose(points, requested, policy, invalid, best=False)  # the bound is the best
            if pick.point is None:
                task.status = INFEASIBLE
                task.reason = (f"no valid point within budget reaches {texts.format_speedup(requested)}×; "
                               f"the best reachable is {bound:.3f}×")
            else:
                task.choice = _choice(cfg.rows.for_choice(pick.point.ref, loss_col), loss_col,
                                      *check(pick.point.ref)[3])
            task.text = texts.describe(task.request(), tid)
        out.append(task)
    skipped = _skipped(checked)
    for task in out:
        task.skipped_points = skipped
    return out


# A lake with this many configs has its tasks built in worker processes when the caller
# allows it (`build_tasks(workers=None)`, as `diffaccel tasks` does).
PARALLEL_MIN_CONFIGS = 500
_CONFIG_CHUNK = 200


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection for a while. Building tasks makes no reference cycles,
    but its allocations would trigger collections, the full ones walking every object of
    the batch and of the trials: a tenth or more of `build_tasks` on a large lake."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _skipped(checked: Mapping[int, tuple]) -> list[dict[str, Any]]:
    return [{"trial_key": row.get("trial_key"), "tag": row.get("tag"), "reason": why}
            for _, (row, _acc, why, _) in sorted(checked.items()) if why is not None]


def build_tasks(
    trials,
    *,
    budget: float = 0.02,
    metric: str = "ssim",
    scales: Sequence[float] = DEFAULT_SCALES,
    policy: str = DEFAULT_POLICY,
    grid: Iterable[Mapping[str, Any]] | None = None,
    workers: int | None = 1,
) -> list[Task]:
    """Tasks for every config of `trials`: one row per trial key with lake_schema trial
    columns, as the columns `read_trials(lake)` gives or a DataFrame such as
    `codegen.lake.open_lake(uri).trials()`.

    With `grid` (the configs a sweep spec allows, see `grid_configs`), the tasks cover
    exactly those configs, and the ones the lake lacks come out as `missing`.

    `workers`: processes to build the tasks in; None for one per available core when
    there are `PARALLEL_MIN_CONFIGS` configs or more (see `codegen.parallel`: fork only
    with no DuckDB connection open). The tasks are the same either way.
    """
    from codegen.lake import check_budget, check_metric

    check_policy(policy)
    check_metric(metric)
    check_budget(budget)
    scales = parse_scales(scales)
    with _gc_paused():
        configs = _configs_from_trials(trials, budget, metric)
        if grid is None:
            selected = list(configs.values())
            missing: list[dict[str, Any]] = []
        else:
            selected, missing = _match_grid(configs, grid)
        n = worker_count(len(selected), workers, min_items=PARALLEL_MIN_CONFIGS, chunk=_CONFIG_CHUNK)
        one = functools.partial(_tasks_for_config, scales=scales, budget=budget, metric=metric, policy=policy,
                                verdicts={})
        # This process takes a share too (a forked worker touching inherited memory runs
        # somewhat slower, hence a bit more than its even share).
        share = min(1.0, 1.2 / n)
        tasks: list[Task] = [t for part in ordered_map(one, selected, _CONFIG_CHUNK, workers=n - 1, main_share=share)
                             for t in part]
    for key in missing:
        tasks.append(Task(
            task_id=make_task_id(key, None, budget, metric), status=MISSING, config=dict(key), budget=budget,
            metric=metric, policy=policy,
            reason="the lake has no trial of this config: sweep the spec written next to tasks.jsonl",
        ))
    return tasks


def task_for_request(trials, req: texts.Request, *, policy: str = DEFAULT_POLICY,
                     default_metric: str = "ssim") -> Task:
    """The task a parsed text asks for, answered from `trials`.

    The text must pin down one config of the lake: when it leaves the hardware or the
    resolution out and the lake holds several, the error lists them.
    """
    from codegen.lake import check_budget, check_metric

    check_policy(policy)
    metric = check_metric(req.metric or default_metric)
    budget = check_budget(req.budget)
    configs = _configs_from_trials(trials, budget, metric)
    wanted = {"model": req.model, "scheduler": req.scheduler, "steps": req.steps, "method": req.method,
              "device_kind": req.device_kind, "resolution": req.resolution}
    hits = [c for c in configs.values()
            if all(v is None or c.key[k] == v for k, v in wanted.items())]
    if not hits:
        named = ", ".join(f"{k}={v}" for k, v in wanted.items() if v is not None)
        raise ConfigError(f"the lake has no trial of {named}: sweep it first, or ask for a config the "
                          f"lake holds (see `diffaccel bounds`)")
    if len(hits) > 1:
        options = "; ".join(f"{c.key['device_kind']} at {c.key['resolution']}px" for c in hits)
        raise ConfigError(f"the text matches {len(hits)} configs of the lake ({options}): name the "
                          f"hardware ('on an H100') and the resolution ('512×512')")
    task = _tasks_for_config(hits[0], (), budget, metric, policy, speedups=[req.speedup])[0]
    task.requested_speedup = req.speedup  # also when the config has no bound at all
    return task


# ----------------------------------------------------------------------- grid strategy


def grid_configs(spec) -> list[dict[str, Any]]:
    """Every (config, combo) a sweep spec allows, as BOUND_GROUP dicts plus `preset`.

    `device_kind` is None (a spec does not say where it runs); `resolution` None means
    the preset's default, which only a run resolves.
    """
    out = []
    for cfg in spec.configs():
        fam = family(cfg.model)
        for cg in spec.combos:
            try:
                check_combo_family(cg.combo, fam)
            except ConfigError:
                continue
            out.append({"device_kind": None, "model": cfg.model, "scheduler": cfg.scheduler,
                        "steps": cfg.steps, "resolution": cfg.resolution, "method": cg.combo,
                        "preset": cfg.preset, "model_path": cfg.model_path})
    return out


def _match_grid(configs: Mapping[tuple, _Config], grid: Iterable[Mapping[str, Any]]):
    """Lake configs the grid names (on every device kind in the lake), and the grid
    entries the lake lacks on some device kind."""
    kinds = sorted({c.key["device_kind"] for c in configs.values() if c.key["device_kind"]}) or [None]
    selected: dict[tuple, _Config] = {}
    missing: list[dict[str, Any]] = []
    for entry in grid:
        for kind in kinds:
            hits = [k for k, c in configs.items()
                    if c.key["device_kind"] == kind and all(
                        c.key[f] == entry[f] for f in ("model", "scheduler", "steps", "method"))
                    and (entry["resolution"] is None or c.key["resolution"] == entry["resolution"])]
            if hits:
                for k in hits:
                    selected[k] = configs[k]
            else:
                missing.append({**{f: entry[f] for f in BOUND_GROUP if f != "device_kind"},
                                "device_kind": kind, "preset": entry.get("preset"),
                                "model_path": entry.get("model_path")})
    return list(selected.values()), missing


def missing_specs(spec, tasks: Iterable[Task]) -> list:
    """Sweep specs (SweepSpec values) covering exactly the missing configs of `tasks`.

    A spec is a product of models × schedulers × steps × resolutions with a list of
    combos, so the missing configs are grouped into as few exact products as a simple
    merge finds; grids keep the original spec's values that are valid there.
    """
    from sweep.spec import ModelEntry

    wanted: dict[tuple, set[str]] = {}
    for t in tasks:
        if t.status != MISSING:
            continue
        c = t.config
        entry = ModelEntry(c["model"], c.get("preset") or "arch", c.get("model_path"))
        wanted.setdefault((entry, c["scheduler"], c["steps"], c["resolution"]), set()).add(c["method"])
    # Merge one axis at a time: resolutions, then steps, then schedulers, then models.
    groups: dict[tuple, list] = {}
    for (m, s, n, r), combos in wanted.items():
        groups.setdefault((m, s, n, frozenset(combos)), []).append(r)
    stage: dict[tuple, list] = {}
    for (m, s, n, combos), rs in groups.items():
        stage.setdefault((m, s, tuple(_sorted(rs)), combos), []).append(n)
    stage2: dict[tuple, list] = {}
    for (m, s, rs, combos), ns in stage.items():
        stage2.setdefault((m, tuple(sorted(ns)), rs, combos), []).append(s)
    stage3: dict[tuple, list] = {}
    for (m, ns, rs, combos), ss in stage2.items():
        stage3.setdefault((tuple(sorted(ss)), ns, rs, combos), []).append(m)
    out = []
    for i, ((ss, ns, rs, combos), models) in enumerate(sorted(stage3.items(), key=lambda kv: repr(kv[0]))):
        sub = dataclasses.replace(
            spec, name=f"{spec.name}-missing{'' if len(stage3) == 1 else f'-{i + 1}'}",
            models=tuple(models), schedulers=ss, steps=ns, resolutions=rs,
            combos=tuple(cg for cg in spec.combos if cg.combo in combos),
            prompts_file=_portable_path(spec.prompts_file, spec.base_dir),
        )
        out.append(_trim_grids(sub))
    return out


def _sorted(values):
    return sorted(values, key=lambda v: (v is not None, v or 0))


def _portable_path(path: str, base_dir: str) -> str:
    """Keep a repo-relative path as it is; anything else becomes absolute, since the
    written spec lives in another folder."""
    from sweep.spec import REPO_ROOT, resolve_path

    if not os.path.isabs(path) and (REPO_ROOT / path).exists():
        return path
    return str(Path(resolve_path(path, base_dir)).resolve())


def _trim_grids(sub):
    """Drop grid values no config of `sub` can use, so the smaller spec still validates."""
    from sweep.spec import ComboGrid, expand

    plan = expand(sub)
    used: dict[str, dict[str, set]] = {}
    for cp in plan.combos:
        for configs in cp.method_points.values():
            for mc in configs:
                for p, v in dataclasses.asdict(mc).items():
                    used.setdefault(cp.combo, {}).setdefault(p, set()).add(v)
    combos = []
    for cg in sub.combos:
        u = used.get(cg.combo, {})
        grid = {p: [v for v in vals if v in u.get(p, set())] for p, vals in cg.grid.items()}
        if all(grid.values()):
            combos.append(ComboGrid(cg.combo, grid))
    methods = {}
    for m, g in sub.methods.items():
        methods[m] = {p: [v for v in vals if any(v in used.get(c.combo, {}).get(p, set()) for c in combos)]
                      or vals for p, vals in g.items()}
    return dataclasses.replace(sub, combos=tuple(combos), methods=methods)


# ------------------------------------------------------------------------------ files


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """Atomic: a reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def write_tasks(path: str | os.PathLike, tasks: Iterable[Task]) -> Path:
    return write_jsonl(path, (t.to_dict() for t in tasks))


@dataclass
class BadLine:
    line: int
    reason: str
    task_id: str | None = None


def read_tasks(path: str | os.PathLike) -> Iterator[Task | BadLine]:
    """Each line as a Task, or a BadLine saying why it could not be read."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such tasks file: write one with `diffaccel tasks --lake L --out DIR`")
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                yield BadLine(n, f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            try:
                yield Task.from_dict(data)
            except (ConfigError, TypeError) as e:
                tid = data.get("task_id") if isinstance(data, dict) else None
                yield BadLine(n, str(e), tid if isinstance(tid, str) else None)


__all__ = [
    "DEFAULT_SCALES", "FEASIBLE", "TRIAL_COLUMNS", "read_trials", "INFEASIBLE", "MISSING", "STRATEGIES", "TASK_STATUSES", "TRIVIAL",
    "BadLine", "Task", "build_tasks", "choice_of", "difficulty", "floor2",
    "grid_configs", "make_task_id", "missing_specs", "parse_scales", "point_check", "read_tasks",
    "row_params", "scaled_speedup", "task_for_request", "write_jsonl", "write_tasks",
]
