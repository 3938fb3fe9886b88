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
    early_stop: {enabled: true, prune: true, min_prompts: 1, margin: 0.5}
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
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweep.catalog import (
    COMBOS,
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
    scheduler,
)
from sweep.lake_schema import BUDGET_METRICS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROMPTS = "datasets/prompts/default.txt"
DEFAULT_SPEC = "datasets/sweeps/default.yaml"
DEFAULT_JUDGE = "datasets/models/shapes-judge"
JUDGE_CONFIG = "judge.json"  # sweep.judge.CONFIG_NAME; not imported from there, which needs torch
DTYPES = ("auto", "float16", "float32", "bfloat16")

_TOP_KEYS = {
    "name", "description", "models", "schedulers", "steps", "resolutions", "batch", "dtype",
    "guidance_scale", "methods", "combos", "prompts", "seeds", "quality", "measure",
    "early_stop", "clip_model", "judge_model",
}
_MODEL_KEYS = {"model", "preset", "model_path"}
_PROMPT_KEYS = {"file", "count"}
_QUALITY_KEYS = {"metric", "budgets"}
_MEASURE_KEYS = {"screen_pairs", "confirm_pairs", "ci_target", "count_flops"}
_EARLY_KEYS = {"enabled", "prune", "min_prompts", "margin", "speculate"}
_RANGE_KEYS = {"from", "to", "step"}
# Limits that depend on the family; `expand` judges them per config, with the family's
# own range in the message.
_PER_FAMILY = {"cache_branch_id", "max_downsample"}


class SpecError(ConfigError):
    """A spec with problems; `problems` lists each one (key path: what is wrong and the fix)."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} problem(s):\n{lines}")


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
    `margin` (relative: 0.5 means 1.5x the largest budget), after `min_prompts`.
    """

    enabled: bool = True
    prune: bool = True
    min_prompts: int = 1
    margin: float = 0.5
    # Rather than idle a GPU, run a point whose less aggressive neighbours are still
    # running (pruning might have skipped it): see `sweep.pruning`.
    speculate: bool = True


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
                           "speculate": self.early_stop.speculate},
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


# ---------------------------------------------------------------------- validation


class _Problems:
    def __init__(self):
        self.items: list[str] = []

    def add(self, path: str, msg: str) -> None:
        self.items.append(f"{path}: {msg}")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _check_keys(obj: Any, allowed: set[str], path: str, probs: _Problems) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        probs.add(path, f"expected a mapping with keys {', '.join(sorted(allowed))}, got {obj!r}")
        return {}
    for key in obj:
        if key not in allowed:
            close = _closest(str(key), allowed)
            hint = f"did you mean {close!r}?" if close else f"use one of {', '.join(sorted(allowed))}"
            probs.add(f"{path}.{key}" if path else str(key), f"unknown key: {hint}")
    return dict(obj)


def _closest(word: str, options: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return match[0] if match else None


def _int(value: Any, path: str, probs: _Problems, low: int | None = None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not value.is_integer()):
        probs.add(path, f"{value!r} is not an integer")
        return None
    value = int(value)
    if low is not None and value < low:
        probs.add(path, f"{value} is too small: use at least {low}")
        return None
    return value


def _number(value: Any, path: str, probs: _Problems, low: float | None = None,
            high: float | None = None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        probs.add(path, f"{value!r} is not a number")
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        probs.add(path, f"{value} is out of range: use {low:g}–{high:g}" if high is not None
                  else f"{value} is too small: use at least {low:g}")
        return None
    return float(value)


def _expand_values(raw: Any, path: str, probs: _Problems) -> list[Any]:
    """A grid entry: one value, a list, or {from, to[, step]} (inclusive)."""
    if isinstance(raw, Mapping):
        rng = _check_keys(raw, _RANGE_KEYS, path, probs)
        if "from" not in rng or "to" not in rng:
            probs.add(path, "a range needs 'from' and 'to', e.g. {from: 2, to: 5}")
            return []
        lo, hi, step = rng["from"], rng["to"], rng.get("step", 1)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi, step)):
            probs.add(path, f"range bounds must be numbers, got {dict(rng)!r}")
            return []
        if step <= 0 or hi < lo:
            probs.add(path, f"range {dict(rng)!r} is empty: use from <= to and a positive step")
            return []
        n = int(math.floor((hi - lo) / step + 1e-9)) + 1
        values = [lo + i * step for i in range(n)]
        is_int = all(isinstance(v, int) for v in (lo, hi, step))
        return [int(v) if is_int else round(v, 6) for v in values]
    values = _as_list(raw)
    if not values:
        probs.add(path, "is empty: give at least one value")
    return values


def _param_grid(raw: Any, method_names: list[str], path: str, probs: _Problems,
                require_known_method: str | None = None) -> dict[str, list[Any]]:
    """Parameter grid entries: coerced per ParamSpec, global ranges checked, deduplicated."""
    out: dict[str, list[Any]] = {}
    if raw is None:
        return out
    if not isinstance(raw, Mapping):
        probs.add(path, f"expected a mapping of parameter -> values, got {raw!r}")
        return out
    for pname, praw in raw.items():
        ppath = f"{path}.{pname}"
        owner = PARAM_OWNER.get(pname)
        allowed = [p for m in method_names for p in PARAMS[m]]
        if owner is None or owner not in method_names:
            close = _closest(str(pname), set(allowed))
            hint = f"did you mean {close!r}?" if close else f"use one of {', '.join(allowed)}"
            probs.add(ppath, f"unknown parameter for {'+'.join(method_names)}: {hint}")
            continue
        spec = PARAMS[owner][pname]
        values = []
        for v in _expand_values(praw, ppath, probs):
            try:
                cv = spec.coerce(v)
            except ConfigError as e:
                probs.add(ppath, str(e))
                continue
            # Config-independent limits; config-dependent ones are judged in `expand`.
            bad = None
            if spec.low is not None and cv < spec.low:
                bad = f"{cv} is too small: use at least {spec.low:g}"
            elif spec.high is not None and cv > spec.high and pname not in _PER_FAMILY:
                bad = f"{cv} is out of range: use {spec.low:g}–{spec.high:g}"
            elif spec.choices is not None and cv not in spec.choices and pname not in _PER_FAMILY:
                bad = f"{cv} is not valid: use one of {', '.join(map(str, spec.choices))}"
            elif pname == "ratio" and cv <= 0:
                bad = f"{cv} merges nothing: use a ratio in (0, 0.75]"
            if bad:
                probs.add(ppath, bad)
                continue
            if cv not in values:
                values.append(cv)
        out[pname] = values
    return out


def validate(data: Any, source: str = "spec", base_dir: str = ".") -> SweepSpec:
    """Check a whole spec (parsed YAML) and return it; every problem is reported at once."""
    probs = _Problems()
    top = _check_keys(data, _TOP_KEYS, "", probs)
    if data is None or not isinstance(data, Mapping):
        raise SpecError(probs.items or ["the spec is empty: start from datasets/sweeps/default.yaml"], source)

    name = str(top.get("name") or Path(source).stem or "sweep")

    # models
    models: list[ModelEntry] = []
    if "models" not in top:
        probs.add("models", "missing: list at least one model, e.g. [{model: sd15, preset: tiny}]")
    for i, raw in enumerate(_as_list(top.get("models", []))):
        mpath = f"models[{i}]"
        entry = {"model": raw} if isinstance(raw, str) else _check_keys(raw, _MODEL_KEYS, mpath, probs)
        if not entry:
            continue
        try:
            family(str(entry.get("model")))
        except ConfigError as e:
            probs.add(f"{mpath}.model", str(e))
            continue
        preset = entry.get("preset", default_preset(str(entry["model"])))
        if preset not in PRESETS:
            probs.add(f"{mpath}.preset", f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
            continue
        mp = entry.get("model_path")
        if mp is not None and preset != "hub":
            probs.add(f"{mpath}.model_path", f"only the 'hub' preset uses model_path, not {preset!r}: "
                      "drop it or set preset: hub")
            continue
        models.append(ModelEntry(str(entry["model"]), preset, None if mp is None else str(mp)))

    schedulers: list[str] = []
    for i, s in enumerate(_as_list(top.get("schedulers", ["ddim"]))):
        try:
            schedulers.append(scheduler(str(s)).name)
        except ConfigError as e:
            probs.add(f"schedulers[{i}]", str(e))
    steps = [v for i, s in enumerate(_as_list(top.get("steps", [25])))
             if (v := _int(s, f"steps[{i}]", probs, low=1)) is not None]
    resolutions: list[int | None] = []
    for i, r in enumerate(_as_list(top.get("resolutions", [None]))):
        if r is None:
            resolutions.append(None)
        elif (v := _int(r, f"resolutions[{i}]", probs, low=8)) is not None:
            if v % 8:
                probs.add(f"resolutions[{i}]", f"{v} is not a multiple of 8: use e.g. {v - v % 8 or 8}")
            else:
                resolutions.append(v)
    batch = _int(top.get("batch", 1), "batch", probs, low=1) or 1
    dtype = str(top.get("dtype", "auto"))
    if dtype not in DTYPES:
        probs.add("dtype", f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    guidance = _number(top.get("guidance_scale", 7.5), "guidance_scale", probs, low=0.0) or 7.5

    # methods: grids per method
    methods: dict[str, dict[str, list[Any]]] = {}
    raw_methods = top.get("methods")
    if not raw_methods:
        probs.add("methods", "missing: give a grid for at least one of " + ", ".join(METHOD_ORDER))
        raw_methods = {}
    elif not isinstance(raw_methods, Mapping):
        probs.add("methods", f"expected a mapping method -> parameter grid, got {raw_methods!r}")
        raw_methods = {}
    for mname, grid in raw_methods.items():
        if mname not in METHOD_CONFIGS:
            close = _closest(str(mname), set(METHOD_CONFIGS))
            probs.add(f"methods.{mname}", f"unknown method: {'did you mean ' + repr(close) + '?' if close else 'use one of ' + ', '.join(METHOD_ORDER)}")
            continue
        g = _param_grid(grid or {}, [mname], f"methods.{mname}", probs)
        # Parameters left out sweep only their default.
        methods[mname] = {p: g.get(p, [spec.default]) for p, spec in PARAMS[mname].items()}

    # combos
    combos: list[ComboGrid] = []
    raw_combos = top.get("combos")
    if raw_combos is None:
        raw_combos = [m for m in METHOD_ORDER if m in methods]
    seen_combos: set[str] = set()
    for i, raw in enumerate(_as_list(raw_combos)):
        cpath = f"combos[{i}]"
        if isinstance(raw, Mapping):
            entry = _check_keys(raw, {"combo", "grid"}, cpath, probs)
            cname, override = entry.get("combo"), entry.get("grid")
        else:
            cname, override = raw, None
        try:
            combo = canonical_combo(str(cname))
        except ConfigError as e:
            probs.add(cpath, f"{e} (supported: {', '.join(COMBOS)})")
            continue
        if combo in seen_combos:
            probs.add(cpath, f"{combo!r} is listed twice: keep one entry")
            continue
        seen_combos.add(combo)
        parts = combo.split("+")
        missing = [m for m in parts if m not in methods and not (override and any(
            PARAM_OWNER.get(p) == m for p in override))]
        grid: dict[str, list[Any]] = {}
        for m in parts:
            grid.update(methods.get(m) or {p: [s.default] for p, s in PARAMS[m].items()})
        if missing and override is None:
            probs.add(cpath, f"{combo!r} uses {', '.join(missing)} but methods has no grid for it: "
                      f"add methods.{missing[0]} or give the combo its own grid")
            continue
        grid.update(_param_grid(override, parts, f"{cpath}.grid", probs))
        combos.append(ComboGrid(combo, grid))

    # Combos against families: none applies -> error; some -> skipped with a note in the plan.
    fams = sorted({m.model for m in models})
    for i, cg in enumerate(combos):
        if fams and not any(_combo_applies(cg.combo, f) for f in fams):
            try:
                check_combo_family(cg.combo, family(fams[0]))
            except ConfigError as e:
                probs.add(f"combos[{i}]", f"{cg.combo!r} applies to none of the spec's models: {e}")

    # prompts, seeds, quality, measure, early stop
    pr = _check_keys(top.get("prompts", {}), _PROMPT_KEYS, "prompts", probs)
    prompts_file = str(pr.get("file", DEFAULT_PROMPTS))
    prompt_count = _int(pr.get("count", 4), "prompts.count", probs, low=1) or 1
    resolved = resolve_path(prompts_file, base_dir)
    if not Path(resolved).is_file():
        probs.add("prompts.file", f"{prompts_file!r} does not exist: point it at a prompt file (.txt with "
                  f"one prompt a line, .jsonl or .csv; the shipped one is {DEFAULT_PROMPTS})")
    seeds = [v for i, s in enumerate(_as_list(top.get("seeds", [0])))
             if (v := _int(s, f"seeds[{i}]", probs, low=0)) is not None]

    q = _check_keys(top.get("quality", {}), _QUALITY_KEYS, "quality", probs)
    metric = str(q.get("metric", "ssim"))
    if metric not in BUDGET_METRICS:
        probs.add("quality.metric", f"unknown metric {metric!r}: use one of {', '.join(BUDGET_METRICS)}")
    budgets = [v for i, b in enumerate(_as_list(q.get("budgets", [0.02, 0.05])))
               if (v := _number(b, f"quality.budgets[{i}]", probs, low=0.0, high=1.0)) is not None]
    if not budgets and "budgets" in q:
        probs.add("quality.budgets", "is empty: give at least one budget, e.g. [0.02, 0.05]")

    ms = _check_keys(top.get("measure", {}), _MEASURE_KEYS, "measure", probs)
    measure = Measure(
        screen_pairs=_int(ms.get("screen_pairs", 2), "measure.screen_pairs", probs, low=2) or 2,
        confirm_pairs=_int(ms.get("confirm_pairs", 6), "measure.confirm_pairs", probs, low=2) or 6,
        ci_target=_number(ms.get("ci_target", 0.05), "measure.ci_target", probs, low=0.0, high=1.0) or 0.05,
        count_flops=str(ms.get("count_flops", "confirm")),
    )
    if measure.count_flops not in FLOP_COUNTING:
        probs.add("measure.count_flops", f"{measure.count_flops!r} is not one of {', '.join(FLOP_COUNTING)}: "
                  "'confirm' counts FLOPs for confirmed points only")
    if measure.confirm_pairs < measure.screen_pairs:
        probs.add("measure.confirm_pairs", f"{measure.confirm_pairs} is below screen_pairs "
                  f"({measure.screen_pairs}): confirmation must measure at least as many pairs")
    es = _check_keys(top.get("early_stop", {}), _EARLY_KEYS, "early_stop", probs)
    for flag in ("enabled", "prune", "speculate"):
        if flag in es and not isinstance(es[flag], bool):
            probs.add(f"early_stop.{flag}", f"{es[flag]!r} is not true/false")
    early = EarlyStop(
        enabled=bool(es.get("enabled", True)), prune=bool(es.get("prune", True)),
        min_prompts=_int(es.get("min_prompts", 1), "early_stop.min_prompts", probs, low=1) or 1,
        margin=_number(es.get("margin", 0.5), "early_stop.margin", probs, low=0.0) or 0.0,
        speculate=bool(es.get("speculate", True)),
    )
    clip_model = top.get("clip_model")
    if metric == "clip" and not clip_model:
        probs.add("clip_model", "quality.metric is 'clip' but no CLIP model is given: set clip_model to a "
                  "hub id (e.g. openai/clip-vit-large-patch14) or a local folder, or use metric: ssim")
    judge_model = top.get("judge_model")
    if metric == "judge" and not judge_model:
        probs.add("judge_model", "quality.metric is 'judge' but no judge model is given: set judge_model to "
                  f"a judge folder (the shipped one is {DEFAULT_JUDGE}), or use metric: ssim")
    elif judge_model and not (Path(resolve_path(str(judge_model), base_dir)) / JUDGE_CONFIG).is_file():
        probs.add("judge_model", f"{judge_model!r} is not a judge folder (no {JUDGE_CONFIG} in it): point it "
                  f"at one written by training/train_judge.py, such as {DEFAULT_JUDGE}")
    spec = SweepSpec(
        name=name, models=tuple(models), schedulers=tuple(schedulers), steps=tuple(steps),
        resolutions=tuple(resolutions), batch=batch, dtype=dtype, guidance_scale=guidance,
        methods=methods, combos=tuple(combos), prompts_file=prompts_file,
        prompt_count=prompt_count, seeds=tuple(seeds), metric=metric, budgets=tuple(sorted(budgets)),
        measure=measure, early_stop=early, clip_model=None if clip_model is None else str(clip_model),
        judge_model=None if judge_model is None else str(judge_model),
        description=str(top.get("description", "")), base_dir=base_dir,
    )
    if Path(resolved).is_file():
        from sweep.prompts import PromptFileError

        try:
            prompts = spec.prompts()
        except PromptFileError as e:
            probs.add("prompts", str(e))
        else:
            if spec.judge_model:
                _check_judge_prompts(prompts, probs)
    # Grid values no config can use are errors; judging them needs the configs, so this
    # runs whenever models and combos parsed, alongside the other problems.
    if models and combos and steps and schedulers:
        plan = expand(spec)
        probs.items.extend(plan.unusable)
        if not plan.combos and not plan.unusable:
            probs.add("methods", "no grid point is valid on any config: " + "; ".join(plan.notes))
    if probs.items:
        raise SpecError(probs.items, source)
    return spec


def _check_judge_prompts(prompts: list[str], probs) -> None:
    """The judge reads shapes captions only: a prompt it cannot parse fails here, not on a GPU."""
    from sweep.shapes import parse_caption

    for i, prompt in enumerate(prompts):
        try:
            parse_caption(prompt)
        except ValueError as e:
            probs.add("prompts", f"prompt {i + 1} cannot be judged ({e}): with a judge_model, use prompts "
                      "written as shapes captions")
            return


def _combo_applies(combo: str, fam_name: str) -> bool:
    try:
        check_combo_family(combo, family(fam_name))
    except ConfigError:
        return False
    return True


def load(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a spec file."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([f"{path}: no such spec file: pass a YAML file such as {DEFAULT_SPEC}"], str(path))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SpecError([f"not valid YAML: {e}"], str(path)) from None
    return validate(data, source=str(path), base_dir=str(p.resolve().parent))


def loads(text: str, source: str = "spec", base_dir: str = ".") -> SweepSpec:
    return validate(yaml.safe_load(text), source=source, base_dir=base_dir)


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
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
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
    unusable: list[str]  # grid values no config can use (errors)

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
            method_points: dict[str, list[Any]] = {}
            for m in cg.combo.split("+"):
                names = list(PARAMS[m])
                valid = []
                for values in itertools.product(*(cg.grid[n] for n in names)):
                    mc = METHOD_CONFIGS[m](**dict(zip(names, values, strict=True)))
                    try:
                        mc.validate(fam, cfg.steps)
                    except ConfigError as e:
                        # Blame only the parameter the message names (warm_up=3 fails
                        # because of gate_step=2, not because 3 is a bad warm-up).
                        for n, v in zip(names, values, strict=True):
                            if str(e).startswith(f"{n}="):
                                failures.setdefault((ci, n, v), str(e))
                        continue
                    valid.append(mc)
                    for n, v in zip(names, values, strict=True):
                        used.add((ci, n, v))
                method_points[m] = valid
            full = math.prod(math.prod(len(cg.grid[n]) for n in PARAMS[m]) for m in cg.combo.split("+"))
            cp = ComboPlan(cfg, cg.combo, method_points, dropped=0)
            cp.dropped = full - cp.size
            if cp.size == 0:
                notes.append(f"{cg.combo} has no valid point on {cfg.label()}: all {full} dropped")
                continue
            plans.append(cp)
    for combo, fams in skipped.items():
        notes.append(f"{combo} skipped on {', '.join(fams)}: it does not apply there")
    unusable = []
    for (ci, n, v), why in failures.items():
        if (ci, n, v) in used:
            continue
        cg = spec.combos[ci]
        owner = PARAM_OWNER[n]
        in_method = spec.methods.get(owner, {}).get(n) == cg.grid[n]
        path = f"methods.{owner}.{n}" if in_method else f"combos[{ci}].grid.{n}"
        text = f"{path}: {why[len(n) + 1:]}"
        if text not in unusable:
            unusable.append(text)
    return Plan(spec, plans, notes, unusable)
