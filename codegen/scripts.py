"""Reference scripts: one runnable, readable Python file per feasible task.

Scripts come from one Jinja2 template (`templates/script.py.j2`) with a small block per
method, so every family × method combination the engine supports
(`catalog.compatibility_matrix`) is the same code path, applied the way the engine
(`sweep.methods.apply`) applies it: T-GATE's loader (the DeepCache variant when both are
on) or DeepCache's helper first, then ToMe's patch.

Safety: every value from a task or the lake reaches the source through the `py` filter
(a Python literal via `repr`, for plain data only) or `comment` (one printable line);
identifiers come from the catalog alone. A hostile model id stays a string.

A batch never stops at a bad task: each one is recorded in `manifest.json` with its
status and reason, and the caller decides (``--strict``) whether that is an error.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from codegen import texts
from codegen.parallel import ordered_map, worker_count
from codegen.tasks import FEASIBLE, OPEN, BadLine, Task, encode_jsonl, json_text
from sweep.atomic import write_atomic
from sweep.catalog import (
    FAMILIES,
    METHOD_ORDER,
    METHODS,
    SCHEDULERS,
    Acceleration,
    ConfigError,
    Methods,
    family,
    scheduler,
)

# Manifest statuses: the task statuses, plus what codegen itself found.
RENDERED = "rendered"
MALFORMED = "malformed"
# Presets whose weights are random: their speedups hold for the architecture, their losses
# are not those of a trained model.
RANDOM_WEIGHT_PRESETS = ("arch", "tiny")
# What a script file name may hold.
SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.py")
DTYPES = ("float16", "bfloat16", "float32")
DEFAULT_DTYPE = "float16"


# ------------------------------------------------------------------------ filters


def py_literal(value: Any) -> str:
    """A Python literal for plain data (str, int, float, bool, None, and lists/dicts of
    them). Anything else is refused rather than embedded."""
    if isinstance(value, str):
        text = repr(value)
        # Double quotes read like the rest of the script; only when no quote needs escaping.
        if "'" not in value and '"' not in value:
            text = '"' + text[1:-1] + '"'
        return text
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{value!r} cannot be embedded in a script: use a finite number")
        return repr(value)
    if isinstance(value, list | tuple):
        inner = ", ".join(py_literal(v) for v in value)
        return f"({inner},)" if isinstance(value, tuple) and len(value) == 1 else (
            f"({inner})" if isinstance(value, tuple) else f"[{inner}]")
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot embed a {type(value).__name__} in a script: only plain data")


def comment_text(value: Any) -> str:
    """One printable line: a comment cannot be ended early, so it cannot carry code."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else " " for ch in text)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("codegen", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # Python source, not HTML: values are escaped by `py`/`comment`
    )
    env.filters["py"] = py_literal
    env.filters["comment"] = comment_text
    return env


_TEMPLATE: jinja2.Template | None = None


def _template() -> jinja2.Template:
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = environment().get_template("script.py.j2")
    return _TEMPLATE


# ------------------------------------------------------------------------ context


def _isort_key(name: str) -> tuple:
    # The order ruff's isort wants for imported names: constants, classes, functions,
    # each case-insensitively.
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return (kind, name.lower())


def imports_for(fam, sched, acc: Acceleration) -> list[str]:
    """Import lines, sorted as ruff's isort sorts them (stdlib, then third party)."""
    straight = {"torch"}
    froms: dict[str, set[str]] = {"diffusers": {fam.pipeline_class, sched.class_name}}
    if acc.tgate is not None:
        loader = fam.tgate_deepcache_loader if acc.deepcache is not None else fam.tgate_loader
        froms["tgate"] = {loader}
    elif acc.deepcache is not None:
        froms["DeepCache"] = {"DeepCacheSDHelper"}
    if acc.tome is not None:
        straight.add("tomesd")
    lines = ["import argparse", "import math", "import time", ""]
    lines += [f"import {m}" for m in sorted(straight, key=str.lower)]
    for mod in sorted(froms, key=str.lower):
        lines.append(f"from {mod} import {', '.join(sorted(froms[mod], key=_isort_key))}")
    return lines


_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def safe_part(value: Any, default: str = "x") -> str:
    """A file-name part of ASCII letters, digits and '-' only (no '/', newline or surrogate)."""
    text = "".join(ch if ch in _SAFE_CHARS else "-" for ch in str(value).lower())
    text = re.sub("-+", "-", text).strip("-")
    return text or default


def device_kind_slug(kind: str | None) -> str:
    return safe_part(kind or "any", "any")


@dataclass
class Script:
    name: str  # file name, e.g. sd15_ddim_50s_512px_DC3B0_h100.py
    source: str
    acc: Acceleration
    model_id: str = ""


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ConfigError(f"{what}={value!r} is not an integer")
    return int(value)


def point_of(task: Task) -> Any:
    """The measured point a task's script is made from: a feasible task's choice, an open
    task's best known point (its reference); None for any other task."""
    if task.status == FEASIBLE:
        return task.choice
    if task.status == OPEN:
        return task.reference
    return None


def model_id_of(task: Task) -> Any:
    """The checkpoint a task's script loads: the family's hub id, the folder a `hub` preset
    was measured from, or an explicit `model_id` in the point."""
    ch = point_of(task) or {}
    model_id = FAMILIES[task.config["model"]].hub_id if task.config.get("model") in FAMILIES else None
    if isinstance(ch, Mapping):
        if ch.get("preset") == "hub" and isinstance(ch.get("model_path"), str) and ch["model_path"]:
            model_id = ch["model_path"]
        if "model_id" in ch:  # an explicit override, e.g. a mirror of the checkpoint
            model_id = ch["model_id"]
    return model_id


def _task_lines(t: Task, ch: Mapping[str, Any]) -> list[str]:
    """What the header says of one task the script serves."""
    want = t.requested_speedup
    speedup = ch.get("speedup")
    head = f"Task {t.task_id} ({t.status}" + (f", {t.band}" if t.band else "") + ")"
    lines = [f"{head}: {t.text}" if t.text else head]
    if want is None or speedup is None:
        return lines
    if t.status == OPEN:
        lines.append(f"  OPEN: this point reaches {speedup:.2f}×, short of the target {want:.2f}×: the target is "
                     "beyond every known point; this is the best known, not a solution.")
    elif ch.get("speedup_ci_low") is not None:
        lines.append(f"  asks at least {want:.2f}×; this point's 95% CI low end {ch['speedup_ci_low']:.2f}× "
                     f"clears it (margin {ch['speedup_ci_low'] / want:.3f}).")
    return lines


def render(task: Task, served: list[Task] | None = None, methods: Methods = METHODS) -> Script:
    """The script for a feasible task (or an open task's best known point); its header
    describes every task in `served` (default: just `task`), all answered by this point.
    `methods` is the registry of method configs the point is read with. Raises
    ConfigError naming what is wrong."""
    ch = point_of(task)
    if not ch:
        raise ConfigError(f"task {task.task_id} is {task.status}, not feasible: there is no point to render")
    if not isinstance(ch, Mapping):
        what = "choice" if task.status == FEASIBLE else "reference"
        raise ConfigError(f"task {task.task_id}: {what} must be an object, got {type(ch).__name__}")
    c = task.config
    fam = family(str(c.get("model")))
    sched = scheduler(str(c.get("scheduler")))
    steps = _int(c.get("steps"), "steps")
    resolution = _int(c.get("resolution"), "resolution")
    if steps < 1 or resolution < 8 or resolution % 8:
        raise ConfigError(f"steps={steps}, resolution={resolution}: need steps ≥ 1 and a resolution "
                          "that is a positive multiple of 8")
    if not isinstance(ch.get("params"), Mapping):
        raise ConfigError(f"choice params {ch.get('params')!r} must be an object of parameter values")
    acc = Acceleration.from_params(ch.get("method") or c.get("method"), ch["params"], model=fam.name,
                                   steps=steps, registry=methods)
    if acc.combo != c.get("method"):
        raise ConfigError(f"choice method {acc.combo!r} differs from the task's {c.get('method')!r}")
    if ch.get("tag") and ch["tag"] != acc.tag:
        raise ConfigError(f"choice tag {ch['tag']!r} does not match its parameters ({acc.tag})")
    dtype = ch.get("dtype") if ch.get("dtype") in DTYPES else DEFAULT_DTYPE
    guidance = ch.get("guidance_scale")
    guidance = 7.5 if guidance is None else float(guidance)
    model_id = model_id_of(task)
    if not isinstance(model_id, str):
        raise ConfigError(f"model id {model_id!r} must be a string (a hub id or a local folder)")

    # Every part from the catalog or a validated integer, but the device kind: made safe too.
    name = f"{fam.name}_{sched.name}_{steps}s_{resolution}px_{acc.tag}_{device_kind_slug(c.get('device_kind'))}.py"
    methods = texts.methods_phrase(acc.combo)
    what = (f"{fam.display} with the {sched.display} scheduler, {steps} steps, {resolution}×{resolution}, "
            f"accelerated by {methods}")
    header = [what + ".", ""]
    served = served or [task]
    if len(served) > 1:
        header += [f"This point serves {len(served)} tasks:"]
    for t in served:
        header += _task_lines(t, ch)
    header += [""]
    speedup = ch.get("speedup")
    loss = ch.get("quality_loss")
    metric = texts.METRIC_TEXT.get(task.metric, task.metric)
    ci = ""
    if ch.get("speedup_ci_low") is not None and ch.get("speedup_ci_high") is not None:
        ci = f" (95% CI {ch['speedup_ci_low']:.2f}–{ch['speedup_ci_high']:.2f})"
    kind = c.get("device_kind")
    header += [
        f"Measured by diffaccel on {ch.get('device') or kind} ({kind}), {ch.get('measured_at') or 'date unknown'}:",
        f"  speedup {speedup:.2f}×{ci} over the unaccelerated pipeline," if speedup is not None
        else "  speedup not recorded,",
        f"  quality loss {loss:.4g} ({metric}) against a budget of {texts.format_budget(task.budget)};"
        if loss is not None else "  quality loss not recorded;",
        f"  trial key {ch.get('trial_key')}, tag {acc.tag}, preset {ch.get('preset')}.",
        f"The speedup holds on {kind} hardware; on other hardware, measure it again (--time).",
    ]
    if ch.get("preset") in RANDOM_WEIGHT_PRESETS:
        header += [f"RANDOM WEIGHTS: these numbers come from preset {ch.get('preset')!r}, randomly initialised "
                   "weights of the real architecture. The speedup is the architecture's; the quality loss "
                   "is not that of the trained model. Measure again with trained weights."]
    lines = []
    for line in header:
        lines += _wrap(comment_text(line))
    ctx = {
        "header": lines,
        "imports": imports_for(fam, sched, acc),
        "model_id": model_id,
        "steps": steps,
        "resolution": resolution,
        "guidance_scale": guidance,
        "dtype": dtype,
        "policy": task.policy,
        "lake_speedup": speedup if isinstance(speedup, int | float) else None,
        # Each method's point as its library's keyword arguments (DEEPCACHE, TGATE, TOME).
        **{m: cfg and cfg.kwargs() for m in METHOD_ORDER for cfg in [getattr(acc, m)]},
        "description": f"{what}.",
        "output": name[:-3] + ".png",
        "family": fam,
        "scheduler": sched,
        "scheduler_kwargs": [(k, v) for k, v in sched.kwargs if k.isidentifier()],
        "denoiser": "unet" if fam.has_unet else "transformer",
    }
    if not SAFE_FILE.fullmatch(name):  # cannot happen: every part is from the safe alphabet
        raise ConfigError(f"script name {name!r} is not from the safe alphabet")
    return Script(name=name, source=_template().render(**ctx), acc=acc, model_id=model_id)


def _wrap(line: str, width: int = 100) -> list[str]:
    """Greedy word wrap for comment lines (textwrap was a third of the render time); a
    line keeps its own indent, its continuations go two further."""
    line = line.rstrip()
    if len(line) <= width:
        return [line]
    body = line.lstrip(" ")
    indent = line[: len(line) - len(body)]
    words = body.split(" ")
    out, current = [], indent + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) > width:
            out.append(current.rstrip())
            current = indent + "  " + word
        else:
            current += " " + word
    out.append(current.rstrip())
    return out


# ----------------------------------------------------------------------- batches


def search_params_key(task: Task, model_id: str | None = None) -> str:
    """The key of a task's entry in search_params.json: the original tool chain's tuple
    ``(pipeline class, scheduler class, steps, speedup, loss, methods)`` plus the model id
    the script loads, as ``str(tuple)``. Without the model id, an SD 1.5 task and a
    fine-tune's task with the same request would share one entry."""
    fam = FAMILIES[task.config["model"]]
    sched = SCHEDULERS[task.config["scheduler"]]
    model_id = model_id if model_id is not None else model_id_of(task)
    return str((fam.pipeline_class, sched.class_name, int(task.config["steps"]), task.requested_speedup,
                task.budget, sorted(task.config["method"].split("+")), model_id))


def search_params_value(task: Task) -> dict[str, Any]:
    """An entry of search_params.json: the parameters and what was measured with them."""
    ch = task.choice
    return {"params": dict(ch["params"]), "speedup": ch.get("speedup"),
            "speedup_ci": [ch.get("speedup_ci_low"), ch.get("speedup_ci_high")],
            "quality_loss": ch.get("quality_loss"), "metric": task.metric, "trial_key": ch.get("trial_key"),
            "device_kind": ch.get("device_kind") or task.config.get("device_kind"), "task_id": task.task_id}


def lookup_search_params(search: Mapping[str, Any], pipeline_class: str, scheduler_class: str, steps: int | str,
                         speedup: float, loss: float, methods, model_id: str | None = None) -> Any:
    """The entry of `search` (search_params.json, read as a dict) for a request, or None.

    Finds entries written with this key (the model id last), and entries in the original
    tool chain's form: no model id, and steps as a string ("50") or a number. Keys are
    compared as tuples, so spacing and quoting do not matter.
    """
    methods = sorted(methods.split("+") if isinstance(methods, str) else methods)
    wanted_steps = str(steps).strip()
    for key, value in search.items():
        try:
            parts = ast.literal_eval(key)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if not isinstance(parts, tuple) or len(parts) not in (6, 7):
            continue
        p, sc, st, sp, lo, ms = parts[:6]
        if (p, sc) != (pipeline_class, scheduler_class) or str(st).strip() != wanted_steps:
            continue
        try:
            if float(sp) != float(speedup) or float(lo) != float(loss) or sorted(ms) != methods:
                continue
        except (TypeError, ValueError):
            continue
        if len(parts) == 7 and model_id is not None and parts[6] != model_id:
            continue
        return value
    return None


# Statuses whose tasks get a script: feasible (its point) and open (its best known point).
_SCRIPTED = (FEASIBLE, OPEN)


@dataclass
class BatchResult:
    entries: list[dict[str, Any]]
    counts: Counter
    out: Path

    def summary(self) -> str:
        parts = [f"{n} {status}" for status, n in sorted(self.counts.items())]
        return f"{sum(self.counts.values())} task(s): {', '.join(parts) or 'none'} -> {self.out}"

    def failed(self) -> bool:
        """What --strict rejects: a task that is malformed or missing, that has no point
        within budget at all (infeasible), or whose points are not confirmed. An open
        task, beyond every known point, is expected."""
        return any(e["status"] in (MALFORMED, "missing", "infeasible", "unconfirmed") for e in self.entries)


# A batch with this many scripts to render is shared among worker processes when the
# caller allows it (`write_batch(workers=None)`, as `diffaccel codegen` does).
PARALLEL_MIN_RENDERS = 1000
_CHUNK = 250
_RENDER_ERRORS = (ConfigError, jinja2.TemplateError, TypeError, ValueError, KeyError)


def _rendered(group: list[Task]) -> tuple[str, str, str] | str:
    """(file name, tag, source) of the script for tasks answered by one point, or why it
    cannot be rendered."""
    try:
        script = render(group[0], group)
    except _RENDER_ERRORS as e:
        return str(e)
    return script.name, script.acc.tag, script.source


# Every field of a point that reaches a script: tasks share a script only when all match.
_POINT_FIELDS = ("trial_key", "method", "params", "tag", "preset", "model_path", "model_id", "dtype",
                 "guidance_scale", "device", "device_kind", "speedup", "speedup_ci_low", "speedup_ci_high",
                 "quality_loss", "measured_at")


def _same_point(item: Task) -> str:
    """Tasks share a script only when the config and every field of the point that reaches
    the script (model id included) match, and the metric and budget its loss is quoted in."""
    ch = point_of(item)
    if not isinstance(ch, Mapping):  # no usable point: render says what is wrong
        return json.dumps([item.task_id, item.config, ch], sort_keys=True, default=str)
    return json.dumps([item.config, item.metric, item.budget, item.policy, str(model_id_of(item)),
                       [ch.get(f) for f in _POINT_FIELDS]], sort_keys=True, default=str)


def _candidate_note(ch: Any) -> Any:
    if not isinstance(ch, Mapping):
        return ch
    return {k: ch.get(k) for k in ("trial_key", "tag", "params", "speedup", "speedup_ci_low", "speedup_ci_high",
                                    "quality_loss", "phase", "confirmed", "margin")}


def write_batch(tasks: Iterable[Task | BadLine], out: str | os.PathLike, *,
                write_tasks_file: bool = False, workers: int | None = 1) -> BatchResult:
    """Render one script per point that answers a feasible task (and per best known point
    of an open task) into OUT/scripts, and write OUT/manifest.json and
    OUT/search_params.json (and OUT/tasks.jsonl when `write_tasks_file`).

    Scripts are written into a fresh folder; the manifest and search params are encoded
    in full (a value JSON cannot hold is an error here, before anything changes); then
    the folder replaces OUT/scripts in one rename and the two files follow, each atomic.
    A script whose bytes equal the file of that name in the OUT/scripts being replaced
    is that file, hard-linked into the new folder rather than written again.

    `workers`: processes to render in; None for one per available core when the batch
    has `PARALLEL_MIN_RENDERS` scripts or more (see `codegen.parallel`). The result is
    the same either way.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: pass a folder (new or existing)")
    out.mkdir(parents=True, exist_ok=True)
    items = list(tasks)
    same_of, todo = _points_to_render(items)
    staging = Path(tempfile.mkdtemp(prefix=".scripts-", dir=out))
    batch = _Batch(_Files(staging, out / "scripts"))
    results = None
    try:
        n = worker_count(len(todo), workers, min_items=PARALLEL_MIN_RENDERS, chunk=_CHUNK)
        if n > 1:
            _template()  # compile it once, before the workers fork
        # This process writes the files out as the workers render them, in task order.
        results = ordered_map(_rendered, list(todo.values()), _CHUNK, workers=n if n > 1 else 0)
        for i, item in enumerate(items):
            batch.add(item, same_of.get(i), results)
        results.close()  # shut the workers down now, before the swap
        counts = Counter(e["status"] for e in batch.entries)
        # Everything JSON is encoded before the swap: a value it cannot hold fails here,
        # leaving OUT as it was.
        manifest = _manifest_bytes(counts, batch.entries)
        search_text = _search_params_text(batch.search)
        tasks_data = encode_jsonl(t.to_dict() for t in batch.kept) if write_tasks_file else None
        _swap_folder(staging, out / "scripts")
    finally:
        if results is not None:
            results.close()
        shutil.rmtree(staging, ignore_errors=True)
    if tasks_data is not None:
        write_atomic(out / "tasks.jsonl", tasks_data)
    write_atomic(out / "manifest.json", manifest)
    write_atomic(out / "search_params.json", search_text)
    return BatchResult(batch.entries, counts, out)


def _points_to_render(items: Sequence[Task | BadLine]) -> tuple[dict[int, str], dict[str, list[Task]]]:
    """Each distinct point to render once, in the order of its first task, with every task
    it serves: ({item index: point}, {point: its tasks})."""
    same_of: dict[int, str] = {}
    todo: dict[str, list[Task]] = {}
    for i, item in enumerate(items):
        # A feasible task without a usable choice goes to render too, which says what is wrong.
        if isinstance(item, Task) and item.status in _SCRIPTED and (
                item.status == FEASIBLE or point_of(item) is not None):
            same_of[i] = same = _same_point(item)
            todo.setdefault(same, []).append(item)
    return same_of, todo


def _task_entry(item: Task) -> dict[str, Any]:
    """A task's manifest entry before its script (if any) is known."""
    entry: dict[str, Any] = {"task_id": item.task_id, "status": item.status, "difficulty": item.difficulty,
                             "band": item.band, "config": item.config, "requested_speedup": item.requested_speedup}
    if item.skipped_points:
        entry["skipped_points"] = item.skipped_points
    if item.candidates:
        entry["candidates"] = [_candidate_note(c) for c in item.candidates]
    return entry


class _Batch:
    """The manifest entries, search params and scripts of a batch, built task by task."""

    def __init__(self, files: _Files):
        self.files = files
        self.entries: list[dict[str, Any]] = []
        self.search: dict[str, dict[str, Any]] = {}
        self.kept: list[Task] = []
        self.names: dict[str, str] = {}  # file name -> the point it was rendered for
        self.by_key: dict[str, tuple[str, str] | str] = {}  # rendered point -> (file name, tag), or why not

    def add(self, item: Task | BadLine, same: str | None, results: Iterator) -> None:
        """Record `item`; `same` is the point it renders (None: no script), whose rendering
        is the next of `results` the first time the point comes up."""
        if isinstance(item, BadLine):
            self.entries.append({"task_id": item.task_id, "line": item.line, "status": MALFORMED,
                                 "reason": item.reason})
            return
        self.kept.append(item)
        entry = _task_entry(item)
        self.entries.append(entry)
        if same is None:
            entry["reason"] = item.reason
            return
        if same not in self.by_key:
            self.by_key[same] = self._store(next(results), item, same)
        done = self.by_key[same]
        if isinstance(done, str):  # could not be rendered
            entry.update(status=MALFORMED, reason=done)
            return
        name, tag = done
        ch = point_of(item)
        entry.update(script=f"scripts/{name}", tag=tag, speedup=ch.get("speedup"),
                     speedup_ci=[ch.get("speedup_ci_low"), ch.get("speedup_ci_high")],
                     quality_loss=ch.get("quality_loss"))
        if item.status == OPEN:
            entry["reason"] = item.reason
            return
        entry["status"] = RENDERED
        if ch.get("margin") is not None:
            entry["margin"] = ch["margin"]
        self._search_params(entry, item)

    def _store(self, result: tuple[str, str, str] | str, item: Task, same: str) -> tuple[str, str] | str:
        """Write a rendered script under a name no other point has; (name, tag), or why
        it could not be rendered."""
        if isinstance(result, str):
            return result
        name, tag, source = result
        if name in self.names:  # same tag and config, another point: another measurement or model
            stem = name[:-3]
            name = f"{stem}_{safe_part(point_of(item).get('trial_key'))[:8]}.py"
            if name in self.names:  # the same measurement for another model id, say
                name = f"{stem}_{hashlib.sha256(same.encode()).hexdigest()[:8]}.py"
        self.files.put(name, source)
        self.names[name] = same
        return name, tag

    def _search_params(self, entry: dict[str, Any], item: Task) -> None:
        key = search_params_key(item)
        value = search_params_value(item)
        held = self.search.setdefault(key, value)
        if held is not value and {**held, "task_id": None} != {**value, "task_id": None}:
            # Same request and model on another device kind: the first keeps the key; say so.
            entry["search_params_note"] = (f"search_params key already holds task {held['task_id']} "
                                           f"({held['device_kind']}): this task's entry is in the manifest")
            entry["search_params"] = value
        entry["search_params_key"] = key


def _search_params_text(search: Mapping[str, Any]) -> str:
    """search_params.json: one entry a line (json's C encoder; `indent` would use the slow
    Python one); ConfigError for what JSON cannot hold."""
    if not search:
        return "{}\n"
    lines = ",\n".join(f"  {json_text(k)}: {json_text(v)}" for k, v in search.items())
    return "{\n" + lines + "\n}\n"


def _manifest_bytes(counts: Counter, entries: list[dict[str, Any]]) -> bytes:
    """manifest.json: one task a line (readable, diffable, written by json's C encoder);
    ConfigError for NaN/±inf or text that is not valid Unicode, checked once."""
    try:
        lines = ",\n".join("    " + json.dumps(e, ensure_ascii=False, allow_nan=False) for e in entries)
        return (f'{{\n  "counts": {json.dumps(dict(sorted(counts.items())))},\n'
                f'  "tasks": [\n{lines}\n  ]\n}}\n').encode()
    except ValueError as e:  # UnicodeEncodeError is a ValueError too
        raise ConfigError(f"cannot write manifest.json ({e}): only finite numbers and valid Unicode text "
                          "are written") from None


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class _Files:
    """Writes scripts into the staging folder. A script whose bytes equal the file of the
    same name in the folder being replaced is hard-linked from it instead: no new file,
    and none freed when the old folder goes. (On ext4 without a journal, as on the CI
    machine, each file created within minutes of freeing thousands scans past them:
    rewriting every script of a rerun took seconds.)"""

    def __init__(self, staging: Path, previous: Path):
        self.staging = str(staging)
        self.previous = str(previous) if previous.is_dir() and not previous.is_symlink() else None

    def put(self, name: str, source: str) -> None:
        # The bytes Path.write_text would write (text mode turns "\n" into os.linesep).
        data = (source if os.linesep == "\n" else source.replace("\n", os.linesep)).encode("utf-8")
        if self.previous is not None and self._link(name, data):
            return
        # os.open/os.write: half the system calls of open(), and a batch writes thousands.
        fd = os.open(os.path.join(self.staging, name), _CREATE, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def _link(self, name: str, data: bytes) -> bool:
        old = os.path.join(self.previous, name)
        try:
            st = os.lstat(old)
            # Only a plain file of ours: not a link, not shared with another name.
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != len(data):
                return False
            with open(old, "rb") as f:
                if f.read(len(data) + 1) != data:
                    return False
            os.link(old, os.path.join(self.staging, name), follow_symlinks=False)
        except (OSError, NotImplementedError):  # no hard links here: write it
            return False
        return True


def _swap_folder(new: Path, final: Path) -> None:
    """Put `new` in the place of `final` (two renames; the old folder is then removed)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}-old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["MALFORMED", "RANDOM_WEIGHT_PRESETS", "RENDERED", "BatchResult", "Script", "comment_text", "environment",
           "imports_for", "lookup_search_params", "model_id_of", "point_of", "py_literal", "render", "safe_part",
           "search_params_key", "search_params_value", "write_batch"]
