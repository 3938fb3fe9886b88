"""Benchmark tasks from the lake: one per config with a bound, per difficulty scale.

A config is a `lake_schema.BOUND_GROUP` (device kind, model, scheduler, steps,
resolution, method combination): a speedup holds only on the hardware it was measured
on, so every task names its device kind. Among the valid ``ok`` points whose quality
loss is within the budget, `best_speedup` is the highest median speedup, and the
`bound` is the highest 95% CI low end of a confirmed one (with confidence ``ci`` and
such a point; else `best_speedup`). Each scale `s` gives a task asking for
``floor(bound × s, 2 decimals)``: easy below 1, normal at 1, hard above.

Each task also gets a `band`, where its request falls against the bound B: ``easy``
below 0.8 B, ``normal`` from 0.8 B to 1.2 B, ``hard`` above 1.2 B (the edges are
options). `difficulty` names the scale that made it (below 1 easy, 1 normal, above 1
hard), or the band for a request stated in a text.

The policy in `codegen.policy` then picks the reference point for each task, with the
confidence asked for (``ci`` by default: a confirm row whose 95% CI low end is at or
above the request). Task statuses:

``feasible``     a confident point meets it; `choice` holds the parameters and
                 measurements, and `choice.margin` = CI low end ÷ request.
``unconfirmed``  points reach the request by their median only (screen rows, or a CI
                 that straddles it); `candidates` lists them for confirmation.
``open``         the request is beyond every known point; `reference` holds the best
                 known point (its speedup and CI), and its script says how far short it is.
``infeasible``   the config has no valid point within budget at all; `reason` says why
                 (over budget, failed, metric absent from the lake, malformed points).
``missing``      the config is not in the lake (``--strategy grid``): sweep it first.
``trivial``      the requested speedup is not above 1×, so there is nothing to accelerate.

`tasks.jsonl` holds one `Task` a line; `read_tasks` reads it back and reports each
malformed line instead of failing the batch.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import gc
import json
import math
import os
import re
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
from codegen.policy import DEFAULT_CONFIDENCE, DEFAULT_POLICY, Point, check_confidence, check_policy, choose
from sweep.atomic import write_atomic
from sweep.bounds import finite, measured
from sweep.catalog import (
    PARAM_OWNER,
    Acceleration,
    ConfigError,
    canonical_combo,
    check_combo_family,
    family,
    stable_hash,
)
from sweep.lake_schema import BOUND_GROUP, BUDGET_METRICS, CONFIRM, FAILED, OK, PARAM_COLUMNS, PRUNED, STOPPED

FEASIBLE, UNCONFIRMED, OPEN = "feasible", "unconfirmed", "open"
INFEASIBLE, MISSING, TRIVIAL = "infeasible", "missing", "trivial"
TASK_STATUSES = (FEASIBLE, UNCONFIRMED, OPEN, INFEASIBLE, MISSING, TRIVIAL)
DEFAULT_SCALES = (0.8, 1.0, 1.2)
# Band edges, as multiples of the bound: easy below the first, hard above the second.
DEFAULT_BANDS = (0.8, 1.2)
BANDS = ("easy", "normal", "hard")
STRATEGIES = ("lake", "grid")
# Task ids and trial keys become parts of file names: only these characters.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# How a metric's scores come into the lake, for the "metric absent" reason.
METRIC_SOURCE = {"ssim": "sweep with quality metrics on (`quality.metrics: [ssim]`)",
                 "clip": "sweep with `quality.clip_model`",
                 "judge": "sweep with `judge_model` (the shapes judge: datasets/models/shapes-judge)"}


def difficulty(scale: float) -> str:
    return "easy" if scale < 1 else "normal" if scale == 1 else "hard"


def band(requested: float, bound: float, edges: Sequence[float] = DEFAULT_BANDS) -> str:
    """Where a request falls against the config's bound B: easy below edges[0]·B,
    normal from edges[0]·B to edges[1]·B, hard above edges[1]·B.

    Compared in decimal from each float's shortest repr, so 1.84 against 0.8 × 2.3 is
    exactly at the edge."""
    lo, hi = edges
    req, b = Decimal(repr(float(requested))), Decimal(repr(float(bound)))
    if req < b * Decimal(repr(float(lo))):
        return "easy"
    if req > b * Decimal(repr(float(hi))):
        return "hard"
    return "normal"


def parse_bands(text: str | Sequence[float]) -> tuple[float, float]:
    """'0.8,1.2' -> (0.8, 1.2): two finite positive edges, the first below the second."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(x) for x in items)
    except (TypeError, ValueError):
        raise ConfigError(f"band edges {text!r} are not numbers: pass e.g. --bands 0.8,1.2") from None
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values) or values[0] > values[1]:
        raise ConfigError(f"band edges {text!r} must be two positive numbers, low then high, e.g. --bands 0.8,1.2")
    return values


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
    # what the scales and bands refer to: with confidence "ci" the highest CI low end of a
    # valid confirmed point within budget (else best_speedup)
    bound: float | None = None
    choice: dict[str, Any] | None = None
    text: str | None = None
    reason: str | None = None
    skipped_points: list[dict[str, Any]] = field(default_factory=list)
    band: str | None = None  # easy / normal / hard against the bound (see `band`)
    confidence: str = DEFAULT_CONFIDENCE
    # open: the best known point (a choice dict, with its speedup and CI)
    reference: dict[str, Any] | None = None
    # unconfirmed: the points that reach the request by their median, to re-measure
    candidates: list[dict[str, Any]] = field(default_factory=list)

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
        tid = data["task_id"]
        if not isinstance(tid, str) or not SAFE_ID.fullmatch(tid):
            raise ConfigError(f"task_id {tid!r} is not 1-64 letters, digits, '_', '.' or '-': "
                              "regenerate it with `diffaccel tasks`")
        # NaN and ±inf never get here from a file (`read_tasks` refuses them as it parses):
        # this catches them in a dict built in memory.
        if not _from_file.get():
            check_finite(data, "task")
        if data["status"] not in TASK_STATUSES:
            raise ConfigError(f"task status {data['status']!r} is unknown: use one of {', '.join(TASK_STATUSES)}")
        config = data["config"]
        if not isinstance(config, Mapping) or any(k not in config for k in BOUND_GROUP):
            raise ConfigError(f"task config must hold {', '.join(BOUND_GROUP)}, got {config!r}")
        # A trivial task's request may floor to 0 (a bound of 0.01×): finite is all it needs.
        asked = None if data["status"] == TRIVIAL else data.get("requested_speedup")
        texts.check_request_numbers(asked, data["budget"], config["steps"], where=f"of task {tid}",
                                    error=ConfigError)
        return cls(**{k: v for k, v in data.items() if k in names and k != "policy"},
                   policy=data.get("policy", DEFAULT_POLICY))

    def request(self) -> texts.Request:
        c = self.config
        return texts.Request(model=c["model"], scheduler=c["scheduler"], steps=int(c["steps"]),
                             method=c["method"], speedup=self.requested_speedup, budget=self.budget,
                             metric=self.metric, device_kind=c["device_kind"], resolution=c["resolution"])


def check_finite(value: Any, where: str) -> None:
    """Refuse NaN and ±inf anywhere in plain JSON data (JSON has no such numbers)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} holds the non-finite number {value!r}: only finite numbers are valid; "
                              "regenerate it with `diffaccel tasks`")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            check_finite(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for v in value:
            check_finite(v, where)


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
TRIAL_COLUMNS = ("status", "error", *_ROW_COLUMNS)


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
    n_ok: int = 0
    n_over: int = 0  # stopped or pruned (over every budget)
    over_loss: float | None = None  # lowest measured loss among them
    n_failed: int = 0
    first_error: str | None = None
    # (row index, why) for ok rows whose numbers are no measurement (±inf)
    nonfinite: list[tuple[int, str]] = field(default_factory=list)
    metric_in_lake: bool = True  # does any row of the lake have a score in the metric?


def _configs_from_trials(trials, budget: float, metric: str) -> dict[tuple, _Config]:
    """The configs of `trials` (sorted by BOUND_GROUP, missing values last), each with its
    ok points within budget in row order and the counts its no-bound reason needs."""
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
    tkeys, ci_lows, phases = cols.get("trial_key", none), cols.get("speedup_ci_low", none), cols.get("phase", none)
    errors = cols.get("error", none)
    configs: list[_Config | None] = [None] * (max(config) + 1)
    for i, c in enumerate(config):
        if configs[c] is None:
            key = {k: _native(cols[k][i]) if k in cols else None for k in BOUND_GROUP}
            configs[c] = _Config(key, [], rows, 0, None)
    for c, count in Counter(config).items():
        configs[c].n_trials = count
    # "Absent" only when something was measured: a lake of failed trials lacks every metric.
    # "Absent" only when something was measured: a lake of failed trials lacks every metric.
    ok_rows = [i for i, st in enumerate(status) if st == OK]
    metric_in_lake = any(q is not None and q == q for q in loss) or not ok_rows
    # Stopped, pruned and failed rows only feed the no-bound reasons (few rows, as a rule).
    for i in [i for i, st in enumerate(status) if st != OK]:
        st, cfg = status[i], configs[config[i]]
        if st == STOPPED or st == PRUNED:
            cfg.n_over += 1
            q = loss[i]
            if finite(q) and (cfg.over_loss is None or q < cfg.over_loss):
                cfg.over_loss = float(q)
        elif st == FAILED:
            cfg.n_failed += 1
            if cfg.first_error is None and errors[i]:
                cfg.first_error = str(errors[i])
    for i in ok_rows:
        cfg = configs[config[i]]
        cfg.n_ok += 1
        s, q = speedup[i], loss[i]
        # NaN or NULL counts as missing (as in pandas); ±inf is no measurement either
        # (`sweep.bounds.measured`), and says so.
        if s is None or q is None or s != s or q != q:
            continue
        if not measured(OK, s, q):
            cfg.nonfinite.append((i, f"speedup {s!r} / loss {q!r} is not a finite measurement"))
            continue
        q = float(q)
        if cfg.best_loss is None or q < cfg.best_loss:
            cfg.best_loss = q
        if q <= budget:
            tk, lo = tkeys[i], ci_lows[i]
            cfg.points.append(Point(float(s), q, "" if tk is None else str(tk), i,
                                    float(lo) if finite(lo) else None, phases[i] == CONFIRM))
    out = {}
    for cfg in configs:
        if cfg is not None:
            cfg.metric_in_lake = metric_in_lake
            out[tuple(cfg.key.values())] = cfg
    return out


def _no_bound_reason(cfg: _Config, budget: float, metric: str, malformed: bool) -> str:
    """Why a config has no valid point within budget: kept apart, since each has its own fix."""
    b = texts.format_budget(budget)
    if not cfg.metric_in_lake:
        return f"no trial in the lake has a {metric.upper()} score: {METRIC_SOURCE[metric]}"
    if malformed:
        return f"every ok point within budget {b} ({metric}) is malformed: see skipped_points"
    if cfg.best_loss is not None:
        return (f"over budget: no ok point has a {metric} quality loss within {b} (the lowest measured is "
                f"{cfg.best_loss:.4g}): raise the budget or sweep gentler parameters")
    if cfg.n_trials == 0:
        return "no trials at all: sweep this config first"
    parts = []
    if cfg.n_ok:
        parts.append(f"{cfg.n_ok} ok trial(s) have no {metric} score: {METRIC_SOURCE[metric]}")
    if cfg.n_over:
        lowest = f", lowest measured loss {cfg.over_loss:.4g}" if cfg.over_loss is not None else ""
        parts.append(f"over budget: {cfg.n_over} trial(s) stopped or pruned over every budget{lowest} "
                     f"(budget {b}): raise the budget or sweep gentler parameters")
    if cfg.n_failed:
        err = comment_line(cfg.first_error) if cfg.first_error else "no error recorded"
        parts.append(f"failed: {cfg.n_failed} trial(s) raised (first error: {err}): fix the cause and sweep "
                     "again")
    if cfg.nonfinite:
        parts.append(f"{len(cfg.nonfinite)} ok trial(s) hold non-finite numbers")
    return "; ".join(parts) or f"none of its {cfg.n_trials} trial(s) finished ok"


def comment_line(text: str, limit: int = 200) -> str:
    """One short printable line of `text` (an error message may run to a traceback)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _tasks_for_config(cfg: _Config, scales: Sequence[float], budget: float, metric: str,
                      policy: str, speedups: Sequence[float] | None = None,
                      verdicts: dict[tuple, tuple] | None = None, *,
                      confidence: str = DEFAULT_CONFIDENCE,
                      bands: Sequence[float] = DEFAULT_BANDS) -> list[Task]:
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

    def choice(p: Point, requested: float) -> dict[str, Any]:
        out = _choice(cfg.rows.for_choice(p.ref, loss_col), loss_col, *check(p.ref)[3])
        out["confirmed"] = p.confirmed
        out["metric"] = metric
        if p.ci_low is not None and requested > 0:
            out["margin"] = round(p.ci_low / requested, 4)
        return out

    def skipped() -> list[dict[str, Any]]:
        notes = _skipped(checked)
        for i, why in cfg.nonfinite:
            row = cfg.rows.for_check(i)
            notes.append({"trial_key": row.get("trial_key"), "tag": row.get("tag"), "reason": why})
        return notes

    base = dict(config=dict(cfg.key), budget=budget, metric=metric, policy=policy, confidence=confidence)
    if cfg.key.get("device_kind") is None or cfg.key.get("resolution") is None:
        # A speedup holds only on the hardware it was measured on, and a text names both.
        what = "device_kind" if cfg.key.get("device_kind") is None else "resolution"
        task = Task(task_id=make_task_id(cfg.key, None, budget, metric), status=INFEASIBLE, **base,
                    reason=f"its rows have no {what}: a task names the hardware and the image size it was "
                           f"measured at; sweep it again (sweeps record both)")
        return [task]

    # The bound: the highest valid speedup within budget (by its median).
    probe = choose(points, float("-inf"), "max-speedup", invalid)
    if probe.best_speedup is None:
        why = _no_bound_reason(cfg, budget, metric, malformed=bool(points))
        task = Task(task_id=make_task_id(cfg.key, None, budget, metric), status=INFEASIBLE, reason=why, **base)
        task.skipped_points = skipped()
        return [task]

    best = probe.best_speedup
    best_point = probe.point
    # The bound the scales and bands refer to: with confidence "ci", the highest CI low end
    # of a valid confirmed point, so a task at 1.0 × the bound has a reference it can
    # trust; with none confirmed (or "median"), the highest median.
    bound = best
    if confidence != "median":
        for p in sorted((p for p in points if p.confirmed and p.ci_low is not None),
                        key=lambda p: (-p.ci_low, p.loss, p.trial_key)):
            if invalid(p) is None:
                bound = min(p.ci_low, best)
                break
    out: list[Task] = []
    seen: set[str] = set()
    if speedups is None:
        asks = [(scaled_speedup(bound, scale), scale, difficulty(scale)) for scale in scales]
    else:  # a stated request: its difficulty is its band
        asks = [(float(x), None, band(x, bound, bands)) for x in speedups]
    for requested, scale, level in asks:
        tid = make_task_id(cfg.key, requested, budget, metric)
        if tid in seen:  # two scales floored to the same speedup: one task
            continue
        seen.add(tid)
        task = Task(task_id=tid, status=FEASIBLE, requested_speedup=requested, difficulty=level,
                    scale=scale, best_speedup=best, bound=bound, band=band(requested, bound, bands), **base)
        if requested <= 1.0:
            task.status = TRIVIAL
            task.reason = (f"{texts.format_speedup(requested)}× is no acceleration (the config's bound "
                           f"is {bound:.3g}×): ask for more than 1×")
        elif requested > best:
            task.status = OPEN
            task.reference = choice(best_point, requested)
            task.reason = (f"the target {texts.format_speedup(requested)}× is beyond every known point: "
                           f"the best reaches {best:.3f}× ({task.band}; `diffaccel build` searches past it)")
            task.text = texts.describe(task.request(), tid)
        else:
            pick = choose(points, requested, policy, invalid, best=False, confidence=confidence)
            if pick.point is not None:
                task.choice = choice(pick.point, requested)
            else:
                task.status = UNCONFIRMED
                task.candidates = [choice(p, requested) for p in pick.candidates]
                task.reason = (f"{len(pick.candidates)} point(s) reach {texts.format_speedup(requested)}× by their "
                               f"median, but none from a confirm row with a 95% CI low end at or above it: "
                               f"confirm the candidates (`diffaccel build` re-measures them)")
            task.text = texts.describe(task.request(), tid)
        out.append(task)
    notes = skipped()
    for task in out:
        task.skipped_points = notes
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
    confidence: str = DEFAULT_CONFIDENCE,
    bands: Sequence[float] = DEFAULT_BANDS,
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
    check_confidence(confidence)
    bands = parse_bands(bands)
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
                                verdicts={}, confidence=confidence, bands=bands)
        # This process takes a share too (a forked worker touching inherited memory runs
        # somewhat slower, hence a bit more than its even share).
        share = min(1.0, 1.2 / n)
        tasks: list[Task] = [t for part in ordered_map(one, selected, _CONFIG_CHUNK, workers=n - 1, main_share=share)
                             for t in part]
    for key in missing:
        tasks.append(Task(
            task_id=make_task_id(key, None, budget, metric), status=MISSING, config=dict(key), budget=budget,
            metric=metric, policy=policy, confidence=confidence,
            reason="no trials at all: the lake has no trial of this config; sweep the spec written next to "
                   "tasks.jsonl (or run `diffaccel build`)",
        ))
    return tasks


def task_for_request(trials, req: texts.Request, *, policy: str = DEFAULT_POLICY,
                     default_metric: str = "ssim", confidence: str = DEFAULT_CONFIDENCE,
                     bands: Sequence[float] = DEFAULT_BANDS) -> Task:
    """The task a parsed text asks for, answered from `trials`.

    The text must pin down one config of the lake: when it leaves the hardware or the
    resolution out and the lake holds several, the error lists them.
    """
    from codegen.lake import check_budget, check_metric

    check_policy(policy)
    check_confidence(confidence)
    bands = parse_bands(bands)
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
    task = _tasks_for_config(hits[0], (), budget, metric, policy, speedups=[req.speedup], confidence=confidence,
                             bands=bands)[0]
    task.requested_speedup = req.speedup  # also when the config has no bound at all
    return task


def reanswer(trials, tasks: Sequence[Task], *, scales: Sequence[float] = DEFAULT_SCALES,
             policy: str = DEFAULT_POLICY, confidence: str = DEFAULT_CONFIDENCE,
             bands: Sequence[float] = DEFAULT_BANDS) -> list[Task]:
    """The same requests as `tasks`, answered again from `trials` (a lake that has grown):
    each keeps its id, and its status, reference and band follow the new lake.

    A task without a request (a missing config, or one with no point within budget)
    becomes its config's tasks at `scales` once the lake can answer them; a missing
    config (whose device kind or resolution the sweep had yet to resolve: None) matches
    the lake's configs that agree on the rest. A task the lake still cannot answer stays.
    """
    check_policy(policy)
    check_confidence(confidence)
    bands = parse_bands(bands)
    scales = parse_scales(scales)
    by_setting: dict[tuple, dict[tuple, _Config]] = {}
    out: list[Task] = []
    seen: set[str] = set()
    verdicts: dict[tuple, tuple] = {}
    for t in tasks:
        configs = by_setting.get((t.budget, t.metric))
        if configs is None:
            configs = by_setting[(t.budget, t.metric)] = _configs_from_trials(trials, t.budget, t.metric)
        hits = [cfg for cfg in configs.values()
                if all(t.config.get(k) is None or cfg.key[k] == t.config.get(k) for k in BOUND_GROUP)]
        if t.requested_speedup is not None:
            hits = [cfg for cfg in hits if all(cfg.key[k] == t.config.get(k) for k in BOUND_GROUP)]
        new: list[Task] = []
        for cfg in hits:
            if t.requested_speedup is not None:
                one = _tasks_for_config(cfg, (), t.budget, t.metric, policy, speedups=[t.requested_speedup],
                                        verdicts=verdicts, confidence=confidence, bands=bands)[0]
                one.scale, one.difficulty = t.scale, t.difficulty or one.difficulty
                new.append(one)
            else:
                new += _tasks_for_config(cfg, scales, t.budget, t.metric, policy, verdicts=verdicts,
                                         confidence=confidence, bands=bands)
        for task in new or [t]:
            if task.task_id not in seen:
                seen.add(task.task_id)
                out.append(task)
    return out


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
    from sweep.spec import ModelEntry, restrict

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
        sub = restrict(
            spec, name=f"{spec.name}-missing{'' if len(stage3) == 1 else f'-{i + 1}'}",
            models=models, schedulers=ss, steps=ns, resolutions=rs, combos=combos,
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
    # Encoded in full first: a record that cannot be written (a non-finite number, a lone
    # surrogate) is an error before anything is touched.
    data = encode_jsonl(records)
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"{path.parent} is a file, not a folder: pass --out a folder (new or existing)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: remove it or pass another --out")
    return write_atomic(path, data)


def json_text(value: Any, **kwargs) -> str:
    """json.dumps that refuses NaN/±inf (not JSON) and text that is not valid Unicode,
    with an error that names them."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, **kwargs)
        text.encode("utf-8")
    except ValueError as e:  # UnicodeEncodeError is a ValueError too
        raise ConfigError(f"cannot write {str(value)[:120]!r} as JSON ({e}): only finite numbers and valid "
                          "Unicode text are written") from None
    return text


def encode_jsonl(records: Iterable[Mapping[str, Any]]) -> bytes:
    """One JSON object a line, UTF-8; ConfigError for NaN/±inf or text that is not valid
    Unicode (checked once, on the whole text)."""
    try:
        return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records).encode("utf-8")
    except ValueError as e:  # UnicodeEncodeError is a ValueError too
        raise ConfigError(f"cannot write the records as JSON lines ({e}): only finite numbers and valid "
                          "Unicode text are written") from None


def write_tasks(path: str | os.PathLike, tasks: Iterable[Task]) -> Path:
    return write_jsonl(path, (t.to_dict() for t in tasks))


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows: only finite numbers are valid")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{text[:40]} overflows to infinity: only finite numbers are valid")
    return value


# Set while `read_tasks` builds a Task from a line it parsed (numbers already checked).
_from_file: contextvars.ContextVar[bool] = contextvars.ContextVar("_from_file", default=False)


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
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadLine(n, f"not UTF-8 text (byte {e.start + 1}): write tasks.jsonl as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                data = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
                if "\\u" in line:  # an escape may hold a lone surrogate, which cannot be written back
                    json_text(data)
            except json.JSONDecodeError as e:
                yield BadLine(n, f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            except (ValueError, ConfigError) as e:
                yield BadLine(n, str(e))
                continue
            token = _from_file.set(True)
            try:
                task = Task.from_dict(data)
            except (ConfigError, TypeError) as e:
                tid = data.get("task_id") if isinstance(data, dict) else None
                # Only a safe id is repeated in the manifest (a lone surrogate cannot be written).
                yield BadLine(n, str(e), tid if isinstance(tid, str) and SAFE_ID.fullmatch(tid) else None)
                continue
            finally:
                _from_file.reset(token)
            yield task


__all__ = [
    "BANDS", "DEFAULT_BANDS", "OPEN", "SAFE_ID", "UNCONFIRMED", "band", "check_finite", "comment_line",
    "encode_jsonl", "json_text", "parse_bands", "reanswer",
    "DEFAULT_SCALES", "FEASIBLE", "TRIAL_COLUMNS", "read_trials", "INFEASIBLE", "MISSING", "STRATEGIES", "TASK_STATUSES", "TRIVIAL",
    "BadLine", "Task", "build_tasks", "choice_of", "difficulty", "floor2",
    "grid_configs", "make_task_id", "missing_specs", "parse_scales", "point_check", "read_tasks",
    "row_params", "scaled_speedup", "task_for_request", "write_jsonl", "write_tasks",
]
