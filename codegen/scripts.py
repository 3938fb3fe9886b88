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

import json
import math
import os
import shutil
import stat
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from codegen import texts
from codegen.parallel import ordered_map, worker_count
from codegen.tasks import FEASIBLE, BadLine, Task, write_jsonl
from sweep.catalog import (
    FAMILIES,
    SCHEDULERS,
    Acceleration,
    ConfigError,
    family,
    scheduler,
)

# Manifest statuses: the task statuses, plus what codegen itself found.
RENDERED = "rendered"
MALFORMED = "malformed"
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
    lines = ["import argparse", ""]
    lines += [f"import {m}" for m in sorted(straight, key=str.lower)]
    for mod in sorted(froms, key=str.lower):
        lines.append(f"from {mod} import {', '.join(sorted(froms[mod], key=_isort_key))}")
    return lines


def device_kind_slug(kind: str | None) -> str:
    text = "".join(ch.lower() if ch.isalnum() else "-" for ch in str(kind or "any"))
    return text.strip("-") or "any"


@dataclass
class Script:
    name: str  # file name, e.g. sd15_ddim_50s_512px_DC3B0_h100.py
    source: str
    acc: Acceleration


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ConfigError(f"{what}={value!r} is not an integer")
    return int(value)


def render(task: Task) -> Script:
    """The script for a feasible task. Raises ConfigError naming what is wrong."""
    if task.status != FEASIBLE or not task.choice:
        raise ConfigError(f"task {task.task_id} is {task.status}, not feasible: there is no point to render")
    if not isinstance(task.choice, Mapping):
        raise ConfigError(f"task {task.task_id}: choice must be an object, got {type(task.choice).__name__}")
    c, ch = task.config, task.choice
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
                                   steps=steps)
    if acc.combo != c.get("method"):
        raise ConfigError(f"choice method {acc.combo!r} differs from the task's {c.get('method')!r}")
    if ch.get("tag") and ch["tag"] != acc.tag:
        raise ConfigError(f"choice tag {ch['tag']!r} does not match its parameters ({acc.tag})")
    dtype = ch.get("dtype") if ch.get("dtype") in DTYPES else DEFAULT_DTYPE
    guidance = ch.get("guidance_scale")
    guidance = 7.5 if guidance is None else float(guidance)
    model_id = fam.hub_id
    if ch.get("preset") == "hub" and isinstance(ch.get("model_path"), str) and ch["model_path"]:
        model_id = ch["model_path"]
    if "model_id" in ch:  # an explicit override, e.g. a mirror of the checkpoint
        model_id = ch["model_id"]
    if not isinstance(model_id, str):
        raise ConfigError(f"model id {model_id!r} must be a string (a hub id or a local folder)")

    name = f"{task.label}_{acc.tag}_{device_kind_slug(c.get('device_kind'))}.py"
    methods = texts.methods_phrase(acc.combo)
    what = (f"{fam.display} with the {sched.display} scheduler, {steps} steps, {resolution}×{resolution}, "
            f"accelerated by {methods}")
    header = [what + ".", ""]
    if task.text:
        header += [f"Task {task.task_id}: {task.text}", ""]
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
        f"The speedup holds on {kind} hardware; on other hardware, measure it again.",
    ]
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
        "deepcache": acc.deepcache and {"cache_interval": acc.deepcache.cache_interval,
                                        "cache_branch_id": acc.deepcache.cache_branch_id},
        "tgate": acc.tgate and {"gate_step": acc.tgate.gate_step, "sp_interval": acc.tgate.sp_interval,
                                "fi_interval": acc.tgate.fi_interval, "warm_up": acc.tgate.warm_up},
        "tome": acc.tome and {"ratio": acc.tome.ratio, "max_downsample": acc.tome.max_downsample},
        "description": f"{what}.",
        "output": name[:-3] + ".png",
        "family": fam,
        "scheduler": sched,
        "scheduler_kwargs": [(k, v) for k, v in sched.kwargs if k.isidentifier()],
        "denoiser": "unet" if fam.has_unet else "transformer",
    }
    return Script(name=name, source=_template().render(**ctx), acc=acc)


def _wrap(line: str, width: int = 100) -> list[str]:
    """Greedy word wrap for comment lines (textwrap was a third of the render time)."""
    line = line.rstrip()
    if len(line) <= width:
        return [line]
    out, current = [], ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = "  " + word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return [x.rstrip() for x in out]


# ----------------------------------------------------------------------- batches


def search_params_key(task: Task) -> str:
    """The original tooling's key: str((pipe_class, scheduler_class, steps, speedup, loss, methods))."""
    fam = FAMILIES[task.config["model"]]
    sched = SCHEDULERS[task.config["scheduler"]]
    return str((fam.pipeline_class, sched.class_name, int(task.config["steps"]), task.requested_speedup,
                task.budget, sorted(task.config["method"].split("+"))))


@dataclass
class BatchResult:
    entries: list[dict[str, Any]]
    counts: Counter
    out: Path

    def summary(self) -> str:
        parts = [f"{n} {status}" for status, n in sorted(self.counts.items())]
        return f"{sum(self.counts.values())} task(s): {', '.join(parts) or 'none'} -> {self.out}"

    def failed(self) -> bool:
        """What --strict rejects: a malformed or missing task, or an easy/normal task the
        lake cannot meet. A hard task beyond the lake's bound is infeasible by design."""
        return any(e["status"] in (MALFORMED, "missing")
                   or (e["status"] == "infeasible" and e.get("difficulty") != "hard")
                   for e in self.entries)


# A batch with this many scripts to render is shared among worker processes when the
# caller allows it (`write_batch(workers=None)`, as `diffaccel codegen` does).
PARALLEL_MIN_RENDERS = 1000
_CHUNK = 250
_RENDER_ERRORS = (ConfigError, jinja2.TemplateError, TypeError, ValueError, KeyError)


def _rendered(task: Task) -> tuple[str, str, str] | str:
    """(file name, tag, source) of a task's script, or why it cannot be rendered."""
    try:
        script = render(task)
    except _RENDER_ERRORS as e:
        return str(e)
    return script.name, script.acc.tag, script.source


def _same_point(item: Task) -> str:
    """Tasks answered by the same point share its script; what render checks must match too."""
    ch = item.choice
    if not isinstance(ch, Mapping):  # no usable choice: render says what is wrong
        return json.dumps([item.config, ch], sort_keys=True, default=str)
    return json.dumps([str(ch.get("trial_key")), item.config, ch.get("method"), ch.get("params"), ch.get("tag")],
                      sort_keys=True, default=str)


def write_batch(tasks: Iterable[Task | BadLine], out: str | os.PathLike, *,
                write_tasks_file: bool = False, workers: int | None = 1) -> BatchResult:
    """Render every feasible task into OUT/scripts and write OUT/manifest.json and
    OUT/search_params.json (and OUT/tasks.jsonl when `write_tasks_file`).

    Scripts are written into a fresh folder that then replaces OUT/scripts in one
    rename, so OUT/scripts always matches one whole batch and its manifest. A script
    whose bytes equal the file of that name in the OUT/scripts being replaced is that
    file, hard-linked into the new folder rather than written again.

    `workers`: processes to render in; None for one per available core when the batch
    has `PARALLEL_MIN_RENDERS` scripts or more (see `codegen.parallel`). The result is
    the same either way.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = list(tasks)
    # Each distinct point to render once, in the order of its first task.
    same_of: dict[int, str] = {}
    todo: dict[str, Task] = {}
    for i, item in enumerate(items):
        if isinstance(item, Task) and item.status == FEASIBLE:
            same_of[i] = same = _same_point(item)
            todo.setdefault(same, item)
    staging = Path(tempfile.mkdtemp(prefix=".scripts-", dir=out))
    entries: list[dict[str, Any]] = []
    encoded: list[str] = []  # each entry's manifest line, written as it is final (the workers render meanwhile)

    def add(entry: dict[str, Any]) -> None:
        entries.append(entry)
        encoded.append("    " + json.dumps(entry, ensure_ascii=False))

    search: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}  # file name -> trial key it was rendered for
    by_key: dict[str, tuple[str, str] | str] = {}  # rendered point -> (file name, tag), or why not
    kept: list[Task] = []
    files = _Files(staging, out / "scripts")
    results = None
    try:
        n = worker_count(len(todo), workers, min_items=PARALLEL_MIN_RENDERS, chunk=_CHUNK)
        if n > 1:
            _template()  # compile it once, before the workers fork
        # This process writes the files out as the workers render them.
        results = ordered_map(_rendered, list(todo.values()), _CHUNK, workers=n if n > 1 else 0)
        for i, item in enumerate(items):
            if isinstance(item, BadLine):
                add({"task_id": item.task_id, "line": item.line, "status": MALFORMED, "reason": item.reason})
                continue
            kept.append(item)
            entry: dict[str, Any] = {"task_id": item.task_id, "status": item.status,
                                     "difficulty": item.difficulty, "config": item.config,
                                     "requested_speedup": item.requested_speedup}
            if item.skipped_points:
                entry["skipped_points"] = item.skipped_points
            if item.status != FEASIBLE:
                entry["reason"] = item.reason
                add(entry)
                continue
            same = same_of[i]
            if same not in by_key:
                result = next(results)
                if isinstance(result, str):
                    by_key[same] = result
                else:
                    name, tag, source = result
                    key = str((item.choice or {}).get("trial_key"))
                    if names.get(name, key) != key:  # same tag and config, another measurement
                        name = f"{name[:-3]}_{key[:8]}.py"
                    if name not in names:
                        files.put(name, source)
                        names[name] = key
                    by_key[same] = (name, tag)
            done = by_key[same]
            if isinstance(done, str):  # could not be rendered
                entry.update(status=MALFORMED, reason=done)
                add(entry)
                continue
            name, tag = done
            # First task wins: the key has no device kind or resolution, so tasks on
            # several GPU kinds can share one.
            search.setdefault(search_params_key(item), dict(item.choice["params"]))
            entry.update(status=RENDERED, script=f"scripts/{name}", tag=tag,
                         speedup=item.choice.get("speedup"), quality_loss=item.choice.get("quality_loss"))
            add(entry)
        results.close()  # shut the workers down now, before the swap
        _swap_folder(staging, out / "scripts")
    finally:
        if results is not None:
            results.close()
        shutil.rmtree(staging, ignore_errors=True)
    counts = Counter(e["status"] for e in entries)
    if write_tasks_file:
        write_jsonl(out / "tasks.jsonl", (t.to_dict() for t in kept))
    # One task a line: readable, diffable, and written by json's C encoder.
    lines = ",\n".join(encoded)
    _write_text(out / "manifest.json", f'{{\n  "counts": {json.dumps(dict(sorted(counts.items())))},\n'
                f'  "tasks": [\n{lines}\n  ]\n}}\n')
    _write_text(out / "search_params.json", json.dumps(search, indent=2) + "\n")
    return BatchResult(entries, counts, out)


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


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["MALFORMED", "RENDERED", "BatchResult", "Script", "comment_text", "environment", "imports_for",
           "py_literal", "render", "search_params_key", "write_batch"]
