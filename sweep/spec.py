"""Sweep specs: the YAML file that says which configs and parameter grids a sweep covers.

A spec is read, validated completely and expanded here, in pure Python (yaml + the
catalog), so a bad spec fails before Ray or a GPU is touched, and codegen can write a
spec for the configs it is missing (`dump`) that `diffaccel sweep` then runs.

Shape (every key but `models` and `methods` has a default; unknown keys are errors)::

    name: default
    models:                        # a family name, or a mapping
      - {model: sd15, preset: tiny}
    schedulers: [ddim]
    steps: [4]
    resolutions: [null]            # null: the preset's own resolution
    batch: 1
    dtype: auto                    # auto: float16 on GPU, float32 on CPU
    guidance_scale: 7.5
    methods:                       # a grid per method: a list, one value, or a range
      deepcache: {cache_interval: [2, 3], cache_branch_id: 0}
      tome: {ratio: {from: 0.25, to: 0.75, step: 0.25}}
    combos: [deepcache, tome]      # default: each method alone; a mapping entry
                                   # {combo: deepcache+tome, grid: {...}} overrides grids
    prompts: {file: datasets/prompts/default.txt, count: 2}
    seeds: [0]
    quality: {metric: ssim, budgets: [0.02, 0.05]}
    measure: {screen_pairs: 2, confirm_pairs: 6, ci_target: 0.05}
    early_stop: {enabled: true, prune: true, min_prompts: 1, margin: 0.5, speculate: true,
                 time_over_budget: false}   # see `EarlyStop`
    clip_model: null
    judge_model: null              # a judge folder (datasets/models/shapes-judge) for metric: judge

Validity of grid values is judged per config, because the limits depend on it
(gate_step <= steps, cache_branch_id < the family's skip branches, max_downsample=1
has no attention to patch on SDXL):

* a value that no config of the spec can use is an error, naming the key and the fix;
* a value that only some configs can use is dropped from the others' grids, and the
  plan counts what was dropped (the study grid relies on this).

Combinations work the same way at the family level: a combo that applies to none of
the spec's families (DeepCache on a PixArt-only spec) is an error; one that applies to
some of them is skipped for the others, with a note in the plan.

A spec is bounded and finite, or an error: no empty list (models, schedulers, steps,
resolutions, combos, seeds: each would run nothing, or fail every trial); steps at most
1000, resolutions a multiple of 8 up to 4096, batch up to 64 (`catalog.MAX_*`, shared
with `diffaccel trial`); every number finite (a NaN budget or margin would silently turn
off stopping, pruning and confirmation). Its size is counted before anything is
enumerated: a range is counted before its values are made, and a spec of more than
`max_points` points (`diffaccel sweep --max-points`, default 100,000) is refused with the
number it would run. Planning costs one check per method configuration of a grid, so it
grows with the points run, not with their product.

Each section has its parser (`_parse_models`, `_parse_measure`, ...) that returns the
section's dataclass, a key left out taking the dataclass's default; each problem is a
`SpecError` (key path, message), and `validate` raises them all at once as an
`InvalidSpec`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sweep.atomic import write_atomic
from sweep.catalog import (
    COMBOS,
    MAX_BATCH,
    MAX_RESOLUTION,
    MAX_STEPS,
    METHOD_CONFIGS,
    METHOD_ORDER,
    PARAM_OWNER,
    PARAMS,
    PRESETS,
    Acceleration,
    ConfigError,
    PipelineConfig,
    canonical_combo,
    check_combo_family,
    default_preset,
    family,
    measurement_inputs,
    scheduler,
)
from sweep.lake_schema import BUDGET_METRICS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROMPTS = "datasets/prompts/default.txt"
DEFAULT_SPEC = "datasets/sweeps/default.yaml"
DEFAULT_JUDGE = "datasets/models/shapes-judge"
JUDGE_CONFIG = "judge.json"  # sweep.judge.CONFIG_NAME; not imported from there, which needs torch
DTYPES = ("auto", "float16", "float32", "bfloat16")
# A sweep refuses to plan more points than this unless told otherwise (`--max-points`):
# a float range with a tiny step, or one axis too many, is likelier a mistake than a plan,
# and finding out costs nothing before Ray starts.
DEFAULT_MAX_POINTS = 100_000

_RANGE_KEYS = {"from", "to", "step"}


class SpecError(ConfigError):
    """One problem of a spec: `path` is the key it is about (``measure.ci_target``,
    ``models[1].preset``; empty for the spec as a whole) and `message` says what is wrong
    and the fix."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class InvalidSpec(SpecError):
    """Every problem of a spec at once: `errors` (each a `SpecError`), `problems` (their
    texts) and `source` (the file or name the spec came from)."""

    def __init__(self, errors: list[SpecError], source: str = "spec"):
        self.errors = list(errors)
        self.problems = [str(e) for e in self.errors]
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__("", f"{source} has {len(self.problems)} problem(s):\n{lines}")
# Expanding checks each method configuration of a grid once (tens of microseconds each):
# up to this many, a spec over --max-points is expanded to say exactly how many points it
# would run; beyond, the count from the grid lengths is all the error gives.
_MAX_CHECKS = 200_000
# Grid values no config can use: how many of one key's are named (a range that overshoots
# gives one per value; a few say enough, the rest are counted).
_UNUSABLE_SHOWN = 5
# The spec's top-level keys are SweepSpec's fields, less those a section fills, plus the
# section names.
_FLAT_FIELDS = {"prompts_file", "prompt_count", "metric", "budgets", "base_dir"}
_SECTION_KEYS = {"prompts", "quality"}


# ------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class ModelEntry:
    model: str
    preset: str = "arch"
    model_path: str | None = None


@dataclass(frozen=True)
class Measure:
    screen_pairs: int = 2
    confirm_pairs: int = 6
    ci_target: float = 0.05
    # FLOP counting runs the pipeline under torch's FlopCounterMode, which dispatches every
    # op through Python (2.6x a plain call on the tiny CPU preset; not timed on a GPU); by
    # default only confirmed points pay for it.
    count_flops: str = "confirm"


FLOP_COUNTING = ("always", "confirm", "never")


@dataclass(frozen=True)
class EarlyStop:
    """When a trial may end before its last prompt, and whether failures prune.

    A trial stops once the lower end of its running quality loss (mean minus two
    standard errors; the mean alone after one prompt) exceeds the largest budget by
    `margin` (relative: 0.5 means 1.5x the largest budget), after `min_prompts`. After
    its last prompt the loss is no estimate but the measurement, so it stops (untimed)
    whenever that is over the largest budget, unless `time_over_budget`.
    """

    enabled: bool = True
    prune: bool = True
    min_prompts: int = 1
    margin: float = 0.5
    # Rather than idle a GPU, run a point whose less aggressive neighbours are still
    # running (pruning might have skipped it): see `sweep.pruning`.
    speculate: bool = True
    # A point whose loss, over all its prompts, is over the largest budget can be no
    # bound, so by default it is not timed (a `stopped` row). True times it anyway: its
    # speed then shows on the Pareto front, at the cost of the timing pairs.
    time_over_budget: bool = False


@dataclass(frozen=True)
class Workload:
    """The top-level keys that, with the models, make the pipeline configs; each default
    is what a spec that leaves the key out sweeps."""

    schedulers: tuple[str, ...] = ("ddim",)
    steps: tuple[int, ...] = (25,)
    resolutions: tuple[int | None, ...] = (None,)  # None: the preset's own resolution
    batch: int = 1
    dtype: str = "auto"  # auto: float16 on GPU, float32 on CPU
    guidance_scale: float = 7.5


@dataclass(frozen=True)
class PromptSet:
    """`prompts:` the first `count` prompts of `file` (resolved from the spec's folder)."""

    file: str = DEFAULT_PROMPTS
    count: int = 4


@dataclass(frozen=True)
class Quality:
    """`quality:` the loss metric budgets are stated in, and the budgets."""

    metric: str = "ssim"
    budgets: tuple[float, ...] = (0.02, 0.05)


@dataclass(frozen=True)
class ComboGrid:
    combo: str
    grid: dict[str, list[Any]]  # every parameter of every method in the combo


@dataclass(frozen=True)
class SweepSpec:
    name: str
    models: tuple[ModelEntry, ...]
    schedulers: tuple[str, ...]
    steps: tuple[int, ...]
    resolutions: tuple[int | None, ...]
    batch: int
    dtype: str
    guidance_scale: float
    methods: dict[str, dict[str, list[Any]]]
    combos: tuple[ComboGrid, ...]
    prompts_file: str
    prompt_count: int
    seeds: tuple[int, ...]
    metric: str
    budgets: tuple[float, ...]
    measure: Measure = field(default_factory=Measure)
    early_stop: EarlyStop = field(default_factory=EarlyStop)
    clip_model: str | None = None
    judge_model: str | None = None
    description: str = ""
    # Where relative paths (the prompts file) are resolved from.
    base_dir: str = "."

    def configs(self) -> list[PipelineConfig]:
        """Every pipeline config, ordered so configs sharing weights are adjacent, and
        within a model the spec's first step count for every scheduler before the next
        (the cheaper configs first, when it lists fewer steps first)."""
        out = []
        for m, steps, sched, res in itertools.product(self.models, self.steps, self.schedulers,
                                                      self.resolutions):
            out.append(PipelineConfig(model=m.model, scheduler=sched, steps=steps, preset=m.preset,
                                      resolution=res, batch=self.batch, model_path=m.model_path,
                                      guidance_scale=self.guidance_scale))
        return out

    def prompts(self) -> list[str]:
        from sweep.prompts import load_prompts

        return load_prompts(resolve_path(self.prompts_file, self.base_dir), self.prompt_count)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that `validate` reads back to an equal spec."""
        models = []
        for m in self.models:
            entry: dict[str, Any] = {"model": m.model, "preset": m.preset}
            if m.model_path:
                entry["model_path"] = m.model_path
            models.append(entry)
        combos: list[Any] = []
        for cg in self.combos:
            override = {p: v for p, v in cg.grid.items() if self.methods.get(PARAM_OWNER[p], {}).get(p) != v}
            combos.append({"combo": cg.combo, "grid": override} if override else cg.combo)
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update({
            "models": models, "schedulers": list(self.schedulers), "steps": list(self.steps),
            "resolutions": list(self.resolutions), "batch": self.batch, "dtype": self.dtype,
            "guidance_scale": self.guidance_scale,
            "methods": {m: {p: list(v) for p, v in g.items()} for m, g in self.methods.items()},
            "combos": combos,
            "prompts": {"file": self.prompts_file, "count": self.prompt_count},
            "seeds": list(self.seeds),
            "quality": {"metric": self.metric, "budgets": list(self.budgets)},
            "measure": {"screen_pairs": self.measure.screen_pairs,
                        "confirm_pairs": self.measure.confirm_pairs,
                        "ci_target": self.measure.ci_target, "count_flops": self.measure.count_flops},
            "early_stop": {"enabled": self.early_stop.enabled, "prune": self.early_stop.prune,
                           "min_prompts": self.early_stop.min_prompts, "margin": self.early_stop.margin,
                           "speculate": self.early_stop.speculate,
                           "time_over_budget": self.early_stop.time_over_budget},
            "clip_model": self.clip_model,
            "judge_model": self.judge_model,
        })
        return out

    def judge_model_path(self) -> str | None:
        """The judge folder resolved like the prompts file (workers may run elsewhere)."""
        return None if self.judge_model is None else resolve_path(self.judge_model, self.base_dir)


def resolve_path(path: str, base_dir: str = ".") -> str:
    """A relative path is tried against the spec's folder, the working folder, then the repo."""
    p = Path(os.path.expanduser(path))
    if p.is_absolute():
        return str(p)
    for root in (Path(base_dir), Path.cwd(), REPO_ROOT):
        if (root / p).exists():
            return str(root / p)
    return str(REPO_ROOT / p)


def trial_inputs(*, prompts: Sequence[str], seeds: Sequence[int], measure: Measure, dtype: str,
                 clip_model: str | None, judge_model: str | None = None) -> dict[str, Any]:
    """The measurement inputs a sweep's trial keys cover (`catalog.measurement_inputs`).

    The driver (from the spec) and the worker (from the settings the driver sends it)
    both call this, so the key a resumed sweep looks for is the key a row carries. The
    pairs policy is screen_pairs, confirm_pairs and ci_target; `count_flops` is not in
    it, since it decides whether a compute ratio is counted, not what is measured.
    """
    pairs = {"screen_pairs": measure.screen_pairs, "confirm_pairs": measure.confirm_pairs,
             "ci_target": measure.ci_target}
    return measurement_inputs(dtype=dtype, prompts=prompts, seeds=seeds, pairs=pairs, clip_model=clip_model,
                              judge_model=judge_model)


# ---------------------------------------------------------------------- validation
#
# One parser per section of the spec, each returning its dataclass; a key the spec
# leaves out takes the dataclass's default. Parsers never raise: they add a `SpecError`
# (key path, message) to `errs` for each problem and go on with the default, so one run
# reports every problem of the spec.


class _Errors(list):
    def add(self, path: str, msg: str) -> None:
        self.append(SpecError(path, msg))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _keys_of(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def _check_keys(obj: Any, allowed: set[str], path: str, errs: _Errors) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        errs.add(path, f"expected a mapping with keys {', '.join(sorted(allowed))}, got {obj!r}")
        return {}
    for key in obj:
        if key not in allowed:
            close = _closest(str(key), allowed)
            hint = f"did you mean {close!r}?" if close else f"use one of {', '.join(sorted(allowed))}"
            errs.add(f"{path}.{key}" if path else str(key), f"unknown key: {hint}")
    return dict(obj)


def _closest(word: str, options: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return match[0] if match else None


def _int(value: Any, path: str, errs: _Errors, low: int | None = None, high: int | None = None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not value.is_integer()):
        errs.add(path, f"{value!r} is not an integer")
        return None
    value = int(value)
    if low is not None and value < low:
        errs.add(path, f"{value} is too small: use at least {low}")
        return None
    if high is not None and value > high:
        errs.add(path, f"{value} is too large: use at most {high}")
        return None
    return value


def _number(value: Any, path: str, errs: _Errors, low: float | None = None,
            high: float | None = None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        errs.add(path, f"{value!r} is not a number")
        return None
    if not math.isfinite(value):
        # NaN passes every comparison below, and a NaN budget or margin silently turns
        # off stopping, pruning and confirmation.
        errs.add(path, f"{value!r} is not a finite number: give a plain number")
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        errs.add(path, f"{value} is out of range: use {low:g}–{high:g}" if high is not None
                 else f"{value} is too small: use at least {low:g}")
        return None
    return float(value)


def _nonempty(values: list[Any], raw: Any, path: str, example: str, errs: _Errors) -> None:
    """An empty list runs no point (or, for seeds, fails every trial): say so."""
    if not values and isinstance(raw, list | tuple) and not raw:
        errs.add(path, f"is empty: give at least one, e.g. {example}")


def _expand_values(raw: Any, path: str, errs: _Errors, max_values: int) -> list[Any]:
    """A grid entry: one value, a list, or {from, to[, step]} (inclusive). A range is
    counted before it is enumerated and refused above `max_values`."""
    if isinstance(raw, Mapping):
        rng = _check_keys(raw, _RANGE_KEYS, path, errs)
        if "from" not in rng or "to" not in rng:
            errs.add(path, "a range needs 'from' and 'to', e.g. {from: 2, to: 5}")
            return []
        lo, hi, step = rng["from"], rng["to"], rng.get("step", 1)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                   for v in (lo, hi, step)):
            errs.add(path, f"range bounds must be finite numbers, got {dict(rng)!r}")
            return []
        if step <= 0 or hi < lo:
            errs.add(path, f"range {dict(rng)!r} is empty: use from <= to and a positive step")
            return []
        n = int(math.floor((hi - lo) / step + 1e-9)) + 1
        if n > max_values:
            errs.add(path, f"range {dict(rng)!r} has {n:,} values, more than the {max_values:,} points a "
                     "sweep may run (--max-points): use a larger step or a narrower range")
            return []
        is_int = all(isinstance(v, int) for v in (lo, hi, step))
        return [lo + i * step if is_int else round(lo + i * step, 6) for i in range(n)]
    values = _as_list(raw)
    if not values:
        errs.add(path, "is empty: give at least one value")
    return values


def _param_grid(raw: Any, method_names: list[str], path: str, errs: _Errors,
                max_values: int) -> dict[str, list[Any]]:
    """Parameter grid entries: coerced per ParamSpec, global ranges checked, deduplicated."""
    out: dict[str, list[Any]] = {}
    if raw is None:
        return out
    if not isinstance(raw, Mapping):
        errs.add(path, f"expected a mapping of parameter -> values, got {raw!r}")
        return out
    for pname, praw in raw.items():
        ppath = f"{path}.{pname}"
        owner = PARAM_OWNER.get(pname)
        allowed = [p for m in method_names for p in PARAMS[m]]
        if owner is None or owner not in method_names:
            close = _closest(str(pname), set(allowed))
            hint = f"did you mean {close!r}?" if close else f"use one of {', '.join(allowed)}"
            errs.add(ppath, f"unknown parameter for {'+'.join(method_names)}: {hint}")
            continue
        spec = PARAMS[owner][pname]
        values: dict[Any, None] = {}  # ordered and deduplicated in linear time
        for v in _expand_values(praw, ppath, errs, max_values):
            try:
                cv = spec.coerce(v)
            except ConfigError as e:
                errs.add(ppath, str(e))
                continue
            # Config-independent limits; config-dependent ones (`per_family` limits, which
            # the family narrows) are judged in `expand`, with the family's own range.
            bad = None
            if spec.low is not None and cv < spec.low:
                bad = f"{cv} is too small: use at least {spec.low:g}"
            elif spec.high is not None and cv > spec.high and not spec.per_family:
                bad = f"{cv} is out of range: use {spec.low:g}–{spec.high:g}"
            elif spec.choices is not None and cv not in spec.choices and not spec.per_family:
                bad = f"{cv} is not valid: use one of {', '.join(map(str, spec.choices))}"
            else:
                bad = spec.open_range_error(cv)
            if bad:
                errs.add(ppath, bad)
                continue
            values[cv] = None
        out[pname] = list(values)
    return out


def _parse_models(top: Mapping[str, Any], errs: _Errors) -> tuple[ModelEntry, ...]:
    if "models" not in top:
        errs.add("models", "missing: list at least one model, e.g. [{model: sd15, preset: tiny}]")
        return ()
    raw_models = [] if top["models"] is None else _as_list(top["models"])
    if not raw_models:
        errs.add("models", "is empty: list at least one model, e.g. [{model: sd15, preset: tiny}]")
    d = ModelEntry("")
    models = []
    for i, raw in enumerate(raw_models):
        mpath = f"models[{i}]"
        entry = {"model": raw} if isinstance(raw, str) else _check_keys(raw, _keys_of(ModelEntry), mpath, errs)
        if not entry:
            continue
        try:
            family(str(entry.get("model")))
        except ConfigError as e:
            errs.add(f"{mpath}.model", str(e))
            continue
        preset = entry.get("preset", default_preset(str(entry["model"])))
        if preset not in PRESETS:
            errs.add(f"{mpath}.preset", f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
            continue
        mp = entry.get("model_path", d.model_path)
        if mp is not None and preset != "hub":
            errs.add(f"{mpath}.model_path", f"only the 'hub' preset uses model_path, not {preset!r}: "
                     "drop it or set preset: hub")
            continue
        models.append(ModelEntry(str(entry["model"]), preset, None if mp is None else str(mp)))
    return tuple(models)


def _parse_workload(top: Mapping[str, Any], errs: _Errors) -> Workload:
    d = Workload()
    raw = top.get("schedulers", list(d.schedulers))
    schedulers: list[str] = []
    for i, s in enumerate(_as_list(raw)):
        try:
            schedulers.append(scheduler(str(s)).name)
        except ConfigError as e:
            errs.add(f"schedulers[{i}]", str(e))
    _nonempty(schedulers, raw, "schedulers", "[ddim]", errs)
    raw = top.get("steps", list(d.steps))
    steps = [v for i, s in enumerate(_as_list(raw))
             if (v := _int(s, f"steps[{i}]", errs, low=1, high=MAX_STEPS)) is not None]
    _nonempty(steps, raw, "steps", "[25]", errs)
    raw = top.get("resolutions", list(d.resolutions))
    resolutions: list[int | None] = []
    for i, r in enumerate(_as_list(raw)):
        if r is None:
            resolutions.append(None)
        elif (v := _int(r, f"resolutions[{i}]", errs, low=8, high=MAX_RESOLUTION)) is not None:
            if v % 8:
                errs.add(f"resolutions[{i}]", f"{v} is not a multiple of 8: use e.g. {v - v % 8 or 8}")
            else:
                resolutions.append(v)
    _nonempty(resolutions, raw, "resolutions", "[null] (the preset's own)", errs)
    batch = _int(top.get("batch", d.batch), "batch", errs, low=1, high=MAX_BATCH) or d.batch
    dtype = str(top.get("dtype", d.dtype))
    if dtype not in DTYPES:
        errs.add("dtype", f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    guidance = _number(top.get("guidance_scale", d.guidance_scale), "guidance_scale", errs, low=0.0)
    return Workload(tuple(schedulers), tuple(steps), tuple(resolutions), batch, dtype,
                    d.guidance_scale if guidance is None else guidance)


def _parse_methods(top: Mapping[str, Any], errs: _Errors, max_values: int) -> dict[str, dict[str, list[Any]]]:
    methods: dict[str, dict[str, list[Any]]] = {}
    raw_methods = top.get("methods")
    if not raw_methods:
        errs.add("methods", "missing: give a grid for at least one of " + ", ".join(METHOD_ORDER))
        return methods
    if not isinstance(raw_methods, Mapping):
        errs.add("methods", f"expected a mapping method -> parameter grid, got {raw_methods!r}")
        return methods
    for mname, grid in raw_methods.items():
        if mname not in METHOD_CONFIGS:
            close = _closest(str(mname), set(METHOD_CONFIGS))
            hint = f"did you mean {close!r}?" if close else f"use one of {', '.join(METHOD_ORDER)}"
            errs.add(f"methods.{mname}", f"unknown method: {hint}")
            continue
        g = _param_grid(grid or {}, [mname], f"methods.{mname}", errs, max_values)
        # Parameters left out sweep only their default.
        methods[mname] = {p: g.get(p, [spec.default]) for p, spec in PARAMS[mname].items()}
    return methods


def _parse_combos(top: Mapping[str, Any], methods: dict[str, dict[str, list[Any]]],
                  models: tuple[ModelEntry, ...], errs: _Errors, max_values: int) -> tuple[ComboGrid, ...]:
    raw_combos = top.get("combos")
    if raw_combos is None:  # default: each method of `methods` alone
        raw_combos = [m for m in METHOD_ORDER if m in methods]
    elif isinstance(raw_combos, list | tuple) and not raw_combos:
        errs.add("combos", "is empty: list at least one combination, e.g. [deepcache], or leave combos out "
                 "to run each method alone")
    combos: list[ComboGrid] = []
    seen: set[str] = set()
    for i, raw in enumerate(_as_list(raw_combos)):
        cpath = f"combos[{i}]"
        if isinstance(raw, Mapping):
            entry = _check_keys(raw, {"combo", "grid"}, cpath, errs)
            cname, override = entry.get("combo"), entry.get("grid")
        else:
            cname, override = raw, None
        try:
            combo = canonical_combo(str(cname))
        except ConfigError as e:
            errs.add(cpath, f"{e} (supported: {', '.join(COMBOS)})")
            continue
        if combo in seen:
            errs.add(cpath, f"{combo!r} is listed twice: keep one entry")
            continue
        seen.add(combo)
        parts = combo.split("+")
        missing = [m for m in parts if m not in methods and not (override and any(
            PARAM_OWNER.get(p) == m for p in override))]
        grid: dict[str, list[Any]] = {}
        for m in parts:
            grid.update(methods.get(m) or {p: [s.default] for p, s in PARAMS[m].items()})
        if missing and override is None:
            errs.add(cpath, f"{combo!r} uses {', '.join(missing)} but methods has no grid for it: "
                     f"add methods.{missing[0]} or give the combo its own grid")
            continue
        grid.update(_param_grid(override, parts, f"{cpath}.grid", errs, max_values))
        combos.append(ComboGrid(combo, grid))
    _check_combo_families(combos, models, errs)
    return tuple(combos)


def _check_combo_families(combos: list[ComboGrid], models: tuple[ModelEntry, ...], errs: _Errors) -> None:
    """A combo that applies to none of the spec's families is an error; one that applies
    to some is skipped on the others, with a note in the plan."""
    fams = sorted({m.model for m in models})
    for i, cg in enumerate(combos):
        if fams and not any(_combo_applies(cg.combo, f) for f in fams):
            try:
                check_combo_family(cg.combo, family(fams[0]))
            except ConfigError as e:
                errs.add(f"combos[{i}]", f"{cg.combo!r} applies to none of the spec's models: {e}")


def _parse_prompts(top: Mapping[str, Any], base_dir: str, errs: _Errors) -> PromptSet:
    d = PromptSet()
    pr = _check_keys(top.get("prompts", {}), _keys_of(PromptSet), "prompts", errs)
    out = PromptSet(file=str(pr.get("file", d.file)),
                    count=_int(pr.get("count", d.count), "prompts.count", errs, low=1) or d.count)
    if not Path(resolve_path(out.file, base_dir)).is_file():
        errs.add("prompts.file", f"{out.file!r} does not exist: point it at a prompt file (.txt with "
                 f"one prompt a line, .jsonl or .csv; the shipped one is {DEFAULT_PROMPTS})")
    return out


def _parse_seeds(top: Mapping[str, Any], errs: _Errors) -> tuple[int, ...]:
    raw = top.get("seeds", [0])
    seeds = [v for i, s in enumerate(_as_list(raw)) if (v := _int(s, f"seeds[{i}]", errs, low=0)) is not None]
    if not seeds and isinstance(raw, list | tuple) and not raw:
        errs.add("seeds", "is empty: every trial needs at least one seed, e.g. [0]")
    return tuple(seeds)


def _parse_quality(top: Mapping[str, Any], errs: _Errors) -> Quality:
    d = Quality()
    q = _check_keys(top.get("quality", {}), _keys_of(Quality), "quality", errs)
    metric = str(q.get("metric", d.metric))
    if metric not in BUDGET_METRICS:
        errs.add("quality.metric", f"unknown metric {metric!r}: use one of {', '.join(BUDGET_METRICS)}")
    budgets = [v for i, b in enumerate(_as_list(q.get("budgets", list(d.budgets))))
               if (v := _number(b, f"quality.budgets[{i}]", errs, low=0.0, high=1.0)) is not None]
    if not budgets and "budgets" in q and not _as_list(q["budgets"]):
        errs.add("quality.budgets", "is empty: give at least one budget, e.g. [0.02, 0.05]")
    return Quality(metric, tuple(sorted(budgets)))


def _parse_measure(top: Mapping[str, Any], errs: _Errors) -> Measure:
    d = Measure()
    ms = _check_keys(top.get("measure", {}), _keys_of(Measure), "measure", errs)
    measure = Measure(
        screen_pairs=_int(ms.get("screen_pairs", d.screen_pairs), "measure.screen_pairs", errs, low=2)
        or d.screen_pairs,
        confirm_pairs=_int(ms.get("confirm_pairs", d.confirm_pairs), "measure.confirm_pairs", errs, low=2)
        or d.confirm_pairs,
        ci_target=_number(ms.get("ci_target", d.ci_target), "measure.ci_target", errs, low=0.0, high=1.0)
        or d.ci_target,
        count_flops=str(ms.get("count_flops", d.count_flops)),
    )
    if measure.count_flops not in FLOP_COUNTING:
        errs.add("measure.count_flops", f"{measure.count_flops!r} is not one of {', '.join(FLOP_COUNTING)}: "
                 "'confirm' counts FLOPs for confirmed points only")
    if measure.confirm_pairs < measure.screen_pairs:
        errs.add("measure.confirm_pairs", f"{measure.confirm_pairs} is below screen_pairs "
                 f"({measure.screen_pairs}): confirmation must measure at least as many pairs")
    return measure


def _parse_early_stop(top: Mapping[str, Any], errs: _Errors) -> EarlyStop:
    d = EarlyStop()
    es = _check_keys(top.get("early_stop", {}), _keys_of(EarlyStop), "early_stop", errs)
    for flag in ("enabled", "prune", "speculate", "time_over_budget"):
        if flag in es and not isinstance(es[flag], bool):
            errs.add(f"early_stop.{flag}", f"{es[flag]!r} is not true/false")
    margin = _number(es.get("margin", d.margin), "early_stop.margin", errs, low=0.0)
    return EarlyStop(
        enabled=bool(es.get("enabled", d.enabled)), prune=bool(es.get("prune", d.prune)),
        min_prompts=_int(es.get("min_prompts", d.min_prompts), "early_stop.min_prompts", errs, low=1)
        or d.min_prompts,
        margin=d.margin if margin is None else margin,
        speculate=bool(es.get("speculate", d.speculate)),
        time_over_budget=bool(es.get("time_over_budget", d.time_over_budget)),
    )


def _grid_bounds(spec: SweepSpec) -> tuple[int, int]:
    """(points at most, method configurations `expand` checks), counted without
    enumerating: per config and applicable combo, the product of its grid's lengths, and
    the sum over its methods of the product of each method's lengths."""
    n_points = n_checks = 0
    for cfg in spec.configs():
        for cg in spec.combos:
            if not _combo_applies(cg.combo, cfg.model):
                continue
            per_method = [math.prod(len(cg.grid[p]) for p in PARAMS[m]) for m in cg.combo.split("+")]
            n_points += math.prod(per_method)
            n_checks += sum(per_method)
    return n_points, n_checks


def check_size(plan: Plan, max_points: int = DEFAULT_MAX_POINTS) -> None:
    """Refuse a plan of more than `max_points` points (a `SpecError` that says how many)."""
    if plan.size > max_points:
        raise SpecError("", f"the spec would run {plan.size:,} points, more than --max-points "
                        f"{max_points:,}: narrow its grids (fewer values, coarser range steps) or "
                        "raise --max-points")


def validate(data: Any, source: str = "spec", base_dir: str = ".", *,
             max_points: int = DEFAULT_MAX_POINTS) -> SweepSpec:
    """Check a whole spec (parsed YAML) and return it; every problem is reported at once
    (an `InvalidSpec` listing each `SpecError`). A spec of more than `max_points` points
    is refused, counted before any grid is enumerated."""
    errs = _Errors()
    top = _check_keys(data, _keys_of(SweepSpec) - _FLAT_FIELDS | _SECTION_KEYS, "", errs)
    if data is None or not isinstance(data, Mapping):
        raise InvalidSpec(errs or [SpecError("", "the spec is empty: start from datasets/sweeps/default.yaml")],
                          source)
    models = _parse_models(top, errs)
    work = _parse_workload(top, errs)
    methods = _parse_methods(top, errs, max_points)
    combos = _parse_combos(top, methods, models, errs, max_points)
    prompts = _parse_prompts(top, base_dir, errs)
    seeds = _parse_seeds(top, errs)
    quality = _parse_quality(top, errs)
    measure = _parse_measure(top, errs)
    early = _parse_early_stop(top, errs)
    clip_model = top.get("clip_model")
    if quality.metric == "clip" and not clip_model:
        errs.add("clip_model", "quality.metric is 'clip' but no CLIP model is given: set clip_model to a "
                 "hub id (e.g. openai/clip-vit-large-patch14) or a local folder, or use metric: ssim")
    judge_model = top.get("judge_model")
    if quality.metric == "judge" and not judge_model:
        errs.add("judge_model", "quality.metric is 'judge' but no judge model is given: set judge_model to "
                 f"a judge folder (the shipped one is {DEFAULT_JUDGE}), or use metric: ssim")
    elif judge_model and not (Path(resolve_path(str(judge_model), base_dir)) / JUDGE_CONFIG).is_file():
        errs.add("judge_model", f"{judge_model!r} is not a judge folder (no {JUDGE_CONFIG} in it): point it "
                 f"at one written by training/train_judge.py, such as {DEFAULT_JUDGE}")
    spec = SweepSpec(
        name=str(top.get("name") or Path(source).stem or "sweep"), models=models,
        schedulers=work.schedulers, steps=work.steps, resolutions=work.resolutions, batch=work.batch,
        dtype=work.dtype, guidance_scale=work.guidance_scale, methods=methods, combos=combos,
        prompts_file=prompts.file, prompt_count=prompts.count, seeds=seeds, metric=quality.metric,
        budgets=quality.budgets, measure=measure, early_stop=early,
        clip_model=None if clip_model is None else str(clip_model),
        judge_model=None if judge_model is None else str(judge_model),
        description=str(top.get("description", "")), base_dir=base_dir,
    )
    if Path(resolve_path(spec.prompts_file, base_dir)).is_file():
        from sweep.prompts import PromptFileError

        try:
            prompt_texts = spec.prompts()
        except PromptFileError as e:
            errs.add("prompts", str(e))
        else:
            if spec.judge_model:
                _check_judge_prompts(prompt_texts, errs)
    # Grid values no config can use are errors; judging them needs the configs, so this
    # runs whenever models and combos parsed, alongside the other problems. The grid is
    # counted first: expanding is linear in the method configurations it checks, and a
    # grid too large to run is refused before it is enumerated.
    if models and combos and work.steps and work.schedulers and work.resolutions:
        n_points, n_checks = _grid_bounds(spec)
        if n_points > max_points and n_checks > max(max_points, _MAX_CHECKS):
            errs.add("", f"the spec's grids hold up to {n_points:,} points ({n_checks:,} method "
                     f"configurations to check), more than --max-points {max_points:,}: narrow its grids "
                     "(fewer values, coarser range steps) or raise --max-points")
        else:
            plan = expand(spec)
            errs.extend(plan.unusable)
            if not plan.combos and not plan.unusable:
                errs.add("methods", "no grid point is valid on any config: " + "; ".join(plan.notes))
            try:
                check_size(plan, max_points)
            except SpecError as e:
                errs.append(e)
    if errs:
        raise InvalidSpec(errs, source)
    return spec


def _check_judge_prompts(prompts: list[str], errs: _Errors) -> None:
    """The judge reads shapes captions only: a prompt it cannot parse fails here, not on a GPU."""
    from sweep.shapes import parse_caption

    for i, prompt in enumerate(prompts):
        try:
            parse_caption(prompt)
        except ValueError as e:
            errs.add("prompts", f"prompt {i + 1} cannot be judged ({e}): with a judge_model, use prompts "
                      "written as shapes captions")
            return


def _combo_applies(combo: str, fam_name: str) -> bool:
    try:
        check_combo_family(combo, family(fam_name))
    except ConfigError:
        return False
    return True


def load(path: str | os.PathLike, *, max_points: int = DEFAULT_MAX_POINTS) -> SweepSpec:
    """Read and validate a spec file."""
    p = Path(path)
    if not p.is_file():
        raise InvalidSpec([SpecError(str(path), f"no such spec file: pass a YAML file such as {DEFAULT_SPEC}")],
                          str(path))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InvalidSpec([SpecError("", f"not valid YAML: {e}")], str(path)) from None
    return validate(data, source=str(path), base_dir=str(p.resolve().parent), max_points=max_points)


def loads(text: str, source: str = "spec", base_dir: str = ".", *,
          max_points: int = DEFAULT_MAX_POINTS) -> SweepSpec:
    return validate(yaml.safe_load(text), source=source, base_dir=base_dir, max_points=max_points)


def dump(spec: SweepSpec | Mapping[str, Any], path: str | os.PathLike | None = None) -> str:
    """YAML for a spec (a SweepSpec or the same plain data); written to `path` if given.

    Plain data is validated first, so a written spec always loads.
    """
    data = spec.to_dict() if isinstance(spec, SweepSpec) else dict(spec)
    if not isinstance(spec, SweepSpec):
        validate(data, source="spec to dump")
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    if path is not None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, text)
    return text


# ----------------------------------------------------------------------- expansion


@dataclass
class ComboPlan:
    """The valid points of one combo on one config, kept per method (a product)."""

    config: PipelineConfig
    combo: str
    method_points: dict[str, list[Any]]  # method -> valid method configs
    dropped: int  # grid points invalid on this config

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.method_points.values())

    def points(self) -> Iterator[Acceleration]:
        methods = list(self.method_points)
        for combo_cfgs in itertools.product(*(self.method_points[m] for m in methods)):
            yield Acceleration(**dict(zip(methods, combo_cfgs, strict=True)))


@dataclass
class Plan:
    """What a sweep runs: per config, per combo, the valid points; plus notes."""

    spec: SweepSpec
    combos: list[ComboPlan]
    notes: list[str]
    unusable: list[SpecError]  # grid values no config can use

    @property
    def size(self) -> int:
        return sum(c.size for c in self.combos)

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.combos)

    def summary(self) -> str:
        configs = {c.config for c in self.combos}
        lines = [f"sweep {self.spec.name!r}: {len(configs)} config(s), {len(self.combos)} config×combo "
                 f"grid(s), {self.size} point(s)"
                 + (f"; {self.dropped} grid point(s) dropped as invalid for their config" if self.dropped else "")]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _valid_method_configs(method: str, grid: Mapping[str, list[Any]], fam, steps: int, ci: int,
                          failures: dict[tuple[int, str, Any], str], used: set[tuple[int, str, Any]]) -> list[Any]:
    """The configs of one method's grid valid for `fam` and `steps`; records in `failures`
    why a value failed, blaming only the parameter the error names (warm_up=3 fails
    because of gate_step=2, not because 3 is a bad warm-up), and in `used` the values
    that worked."""
    names = list(PARAMS[method])
    valid = []
    for values in itertools.product(*(grid[n] for n in names)):
        mc = METHOD_CONFIGS[method](**dict(zip(names, values, strict=True)))
        try:
            mc.validate(fam, steps)
        except ConfigError as e:
            if e.param in names:
                failures.setdefault((ci, e.param, values[names.index(e.param)]), str(e).removeprefix(f"{e.param}="))
            continue
        valid.append(mc)
        used.update((ci, n, v) for n, v in zip(names, values, strict=True))
    return valid


def expand(spec: SweepSpec) -> Plan:
    """Per config and combo, the grid points valid there (a method at a time, so the
    study's large combo grids are counted without being enumerated)."""
    plans: list[ComboPlan] = []
    notes: list[str] = []
    # (combo, param, value) -> first reason it failed; and the set that worked somewhere.
    failures: dict[tuple[int, str, Any], str] = {}
    used: set[tuple[int, str, Any]] = set()
    skipped: dict[str, list[str]] = {}
    for cfg in spec.configs():
        for ci, cg in enumerate(spec.combos):
            fam = family(cfg.model)
            if not _combo_applies(cg.combo, cfg.model):
                skipped.setdefault(cg.combo, [])
                if fam.display not in skipped[cg.combo]:
                    skipped[cg.combo].append(fam.display)
                continue
            method_points = {m: _valid_method_configs(m, cg.grid, fam, cfg.steps, ci, failures, used)
                             for m in cg.combo.split("+")}
            full = math.prod(math.prod(len(cg.grid[n]) for n in PARAMS[m]) for m in cg.combo.split("+"))
            cp = ComboPlan(cfg, cg.combo, method_points, dropped=0)
            cp.dropped = full - cp.size
            if cp.size == 0:
                notes.append(f"{cg.combo} has no valid point on {cfg.label()}: all {full} dropped")
                continue
            plans.append(cp)
    for combo, fams in skipped.items():
        notes.append(f"{combo} skipped on {', '.join(fams)}: it does not apply there")
    by_path: dict[str, dict[str, None]] = {}
    for (ci, n, v), why in failures.items():
        if (ci, n, v) in used:
            continue
        cg = spec.combos[ci]
        owner = PARAM_OWNER[n]
        in_method = spec.methods.get(owner, {}).get(n) == cg.grid[n]
        by_path.setdefault(f"methods.{owner}.{n}" if in_method else f"combos[{ci}].grid.{n}", {})[why] = None
    unusable: list[SpecError] = []
    for path, whys in by_path.items():
        shown = list(itertools.islice(whys, _UNUSABLE_SHOWN))
        unusable += [SpecError(path, why) for why in shown]
        if len(whys) > len(shown):
            unusable.append(SpecError(path, f"and {len(whys) - len(shown):,} more value(s) no config can use: "
                                      "narrow the range"))
    return Plan(spec, plans, notes, unusable)


# ----------------------------------------------------------------------- restriction


def only(spec: SweepSpec, *, models: Sequence[str] = (), schedulers: Sequence[str] = (),
         steps: Sequence[int] = (), combos: Sequence[str] = ()) -> SweepSpec:
    """Part of `spec` by the values of its axes (`diffaccel sweep --model/--scheduler/
    --steps/--combo`), say one config of a map, so that it can be run or resumed on its
    own. Its rows are the spec's own (same keys), so running the whole spec later skips
    them. An empty selection keeps the axis; a value the spec does not have is an error
    that lists the values it has.
    """
    have = {"--model": [m.model for m in spec.models], "--scheduler": list(spec.schedulers),
            "--steps": [int(x) for x in spec.steps], "--combo": [cg.combo for cg in spec.combos]}
    asked = {"--model": list(models), "--scheduler": list(schedulers), "--steps": [int(x) for x in steps],
             "--combo": [canonical_combo(c) for c in combos]}
    for flag, values in asked.items():
        unknown = [v for v in values if v not in have[flag]]
        if unknown:
            raise ConfigError(f"{flag} {', '.join(map(str, unknown))}: spec {spec.name!r} has "
                              f"{', '.join(map(str, dict.fromkeys(have[flag])))}; pick among those")
    return restrict(spec, models=asked["--model"] or None, schedulers=asked["--scheduler"] or None,
                    steps=asked["--steps"] or None, combos=asked["--combo"] or None)


def restrict(spec: SweepSpec, *, config: Mapping[str, Any] | None = None,
             models: Any = None, schedulers: Any = None, steps: Any = None, resolutions: Any = None,
             combos: Any = None, points: Any = None, name: str | None = None,
             prompts_file: str | None = None) -> SweepSpec:
    """A spec that sweeps part of `spec`, with everything else (prompts, budgets,
    measurement, early stopping) unchanged, so its rows land in a lake as the spec's own.

    `config`: a mapping with model, scheduler, steps and resolution (optionally preset
    and model_path; by default the spec's entry for that model): just that config.
    `models` (ModelEntry values or model names of the spec), `schedulers`, `steps`,
    `resolutions`: the axes to keep; `combos`: the combination names to keep, with
    their grids. `points`: (combo, {param: value}) pairs, each its own one-point grid,
    so the sweep measures exactly those (and, as for every grid, confirms the fastest
    one within budget). `prompts_file`: where the prompts are, for a spec written to
    another folder. Used by `codegen.tasks.missing_specs` and `diffaccel build`.
    """
    import dataclasses

    changes: dict[str, Any] = {}
    if config is not None:
        entry = next((m for m in spec.models if m.model == config["model"]), None)
        if entry is None or config.get("preset"):
            entry = ModelEntry(config["model"],
                               config.get("preset") or (entry.preset if entry else default_preset(config["model"])),
                               config.get("model_path", entry.model_path if entry else None))
        models, schedulers, steps = (entry,), (config["scheduler"],), (int(config["steps"]),)
        resolutions = (config.get("resolution"),)
    if models is not None:
        changes["models"] = tuple(m if isinstance(m, ModelEntry) else
                                  next(e for e in spec.models if e.model == m) for m in models)
    for key, values in (("schedulers", schedulers), ("steps", steps), ("resolutions", resolutions)):
        if values is not None:
            changes[key] = tuple(values)
    if combos is not None:
        keep = {canonical_combo(c) for c in combos}
        changes["combos"] = tuple(cg for cg in spec.combos if cg.combo in keep)
    if points is not None:
        grids = []
        for combo, params in points:
            combo = canonical_combo(combo)
            grid = {p: [v] for p, v in params.items()}
            missing = [p for m in combo.split("+") for p in PARAMS[m] if p not in grid]
            if missing:
                raise ConfigError(f"point {dict(params)} of {combo} lacks {', '.join(missing)}: give every "
                                  "parameter of the combination")
            grids.append(ComboGrid(combo, grid))
        changes["combos"] = tuple(grids)
        changes["methods"] = {m: {p: sorted({v for cg in grids if p in cg.grid for v in cg.grid[p]}, key=repr)
                                  for p in PARAMS[m]}
                              for m in {m for cg in grids for m in cg.combo.split("+")}}
    if name is not None:
        changes["name"] = name
    if prompts_file is not None:
        changes["prompts_file"] = prompts_file
    return dataclasses.replace(spec, **changes)
