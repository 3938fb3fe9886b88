"""`diffaccel build`: the search loop that fills its own gaps.

    sweep -> tasks -> sweep what is missing -> tasks -> ... -> codegen

Round 1 sweeps the whole spec into the lake (stored points are skipped, so a rerun
resumes) and states the *targets*: the tasks of the spec's configs at the chosen
scales of each config's bound. Every later round re-answers those same requests from
the lake and sweeps what keeps them from being met, with the same `run_sweep` (same
Ray run, same lake) on specs cut down by `sweep.spec.restrict`:

(a) **missing**: configs of the spec with no trials at all;
(b) **confirm**: an `unconfirmed` target's best candidate not yet confirmed,
    re-measured (a one-point grid: the sweep confirms its within-budget bound point);
(c) **refine**: for an `open` target in the normal band (above the bound, up to the
    upper band edge), or an `unconfirmed` one whose candidates are all confirmed
    already (their intervals straddle it), the next points past the frontier: from each of the config's
    fastest within-budget points, one grid step further in one parameter, in the
    direction its `faster` sign gives (a larger `cache_interval`, a smaller
    `cache_branch_id`, a stronger ToMe ratio), kept only when valid for the config and
    not yet measured.

It stops when a round has nothing to sweep or adds no row, after `rounds` rounds, or
once `max_gpu_minutes` of trial time is spent (the build's, over reruns, as build.json
records it; checked between sweeps, and never before the first sweep, which resumes). Each round is
logged: what it swept and why, the rows it added, the GPU-seconds, and the targets
whose status changed. OUT then holds `tasks.jsonl` (the final lake's tasks at the
scales), the scripts and manifest of `diffaccel codegen`, `targets.jsonl` (the
targets as finally answered) and `build.json` (targets and the round log, which a
rerun with the same spec, budget and metric continues).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from codegen.policy import DEFAULT_CONFIDENCE, DEFAULT_POLICY
from codegen.tasks import (
    DEFAULT_BANDS,
    DEFAULT_SCALES,
    MISSING,
    OPEN,
    UNCONFIRMED,
    Task,
    build_tasks,
    grid_configs,
    json_text,
    read_trials,
    reanswer,
    write_tasks,
)
from sweep.atomic import write_atomic
from sweep.bounds import measured
from sweep.catalog import PARAMS, Acceleration, ConfigError
from sweep.exits import fail, interrupted
from sweep.lake_schema import BOUND_GROUP
from sweep.spec import SweepSpec, restrict

# From how many of a config's fastest within-budget points refinement steps out.
REFINE_FROM = 3
# A float parameter's step when the spec's grid has a single value.
FLOAT_STEP = 0.05


@dataclass
class Work:
    """One sub-sweep of a round: why, and the spec that runs it."""

    why: str  # missing / confirm / refine
    spec: SweepSpec
    points: int


@dataclass
class RoundLog:
    number: int
    swept: dict[str, int] = field(default_factory=dict)  # why -> points
    rows_added: int = 0
    gpu_seconds: float = 0.0
    changed: list[dict[str, Any]] = field(default_factory=list)  # task_id, request, from, to
    statuses: dict[str, int] = field(default_factory=dict)  # targets by status after the round
    stopped: str | None = None

    def line(self) -> str:
        swept = ", ".join(f"{n} {why}" for why, n in sorted(self.swept.items())) or "nothing"
        changed = "; ".join(f"{c['task_id']} {c['requested_speedup']:.2f}×: {c['from']}→{c['to']}"
                            for c in self.changed) or "none"
        status = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        return (f"[build] round {self.number}: swept {swept} point(s); +{self.rows_added} row(s), "
                f"{self.gpu_seconds:.1f} GPU-s; targets changed: {changed}; targets now: {status}")


# --------------------------------------------------------------------- what is missing


def _spec_config(spec: SweepSpec, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec's own config values for a lake config (whose resolution the run resolved)."""
    for c in spec.configs():
        if (c.model, c.scheduler, c.steps) == (config["model"], config["scheduler"], config["steps"]) and \
                (c.resolution is None or config.get("resolution") is None or c.resolution == config["resolution"]):
            return {"model": c.model, "scheduler": c.scheduler, "steps": c.steps, "resolution": c.resolution,
                    "preset": c.preset, "model_path": c.model_path}
    return None


def _grid_step(spec: SweepSpec, combo: str, name: str, kind: type) -> float:
    values = sorted({v for cg in spec.combos if cg.combo == combo for v in cg.grid.get(name, [])})
    gaps = [b - a for a, b in zip(values, values[1:], strict=False) if b > a]
    if gaps:
        return min(gaps)
    return 1 if kind is int else FLOAT_STEP


def refinement_points(spec: SweepSpec, config: Mapping[str, Any], combo: str,
                      params_list: Iterable[Mapping[str, Any]], measured: set[str]) -> list[dict[str, Any]]:
    """Points one grid step past each of `params_list` in one parameter, in its `faster`
    direction, valid for the config and not among the `measured` tags."""
    out: dict[str, dict[str, Any]] = {}
    for params in params_list:
        for method in combo.split("+"):
            for name, ps in PARAMS[method].items():
                if not ps.faster or name not in params:
                    continue
                value = params[name]
                if ps.choices:
                    options = sorted(ps.choices)
                    i = options.index(value) + ps.faster if value in options else -1
                    if not 0 <= i < len(options):
                        continue
                    new = options[i]
                else:
                    new = value + ps.faster * _grid_step(spec, combo, name, ps.type)
                    new = int(new) if ps.type is int else round(float(new), 6)
                    if (ps.low is not None and new < ps.low) or (ps.high is not None and new > ps.high):
                        continue
                try:
                    acc = Acceleration.from_params(combo, {**params, name: new}, model=config["model"],
                                                   steps=int(config["steps"]))
                except (ConfigError, TypeError, ValueError):
                    continue  # past the parameter's valid range for this config
                if acc.tag not in measured and acc.tag not in out:
                    out[acc.tag] = dict(acc.params)
    return list(out.values())


def missing_work(spec: SweepSpec, targets: Sequence[Task], trials: Mapping[str, list],
                 bands: Sequence[float] = DEFAULT_BANDS) -> list[Work]:
    """The sub-sweeps that (a) sweep configs with no trials, (b) confirm unconfirmed
    targets' best candidates, (c) refine past the frontier for open normal targets."""
    measured: dict[tuple, set[str]] = {}
    for i, tag in enumerate(trials.get("tag", [])):
        key = tuple(trials[k][i] for k in BOUND_GROUP)
        measured.setdefault(key, set()).add(tag)
    work: list[Work] = []
    done: set[tuple] = set()
    spec_configs: dict[tuple, dict[str, Any]] = {}
    confirm: dict[tuple, list[tuple[str, dict]]] = {}
    refine: dict[tuple, list[tuple[str, dict]]] = {}
    for t in targets:
        sc = _spec_config(spec, t.config)
        if sc is None:
            continue
        ckey = tuple(sorted((k, str(v)) for k, v in sc.items()))
        spec_configs[ckey] = sc
        if t.status == MISSING and (ckey, t.config["method"]) not in done:
            done.add((ckey, t.config["method"]))
            work.append(Work("missing", restrict(spec, config=sc, combos=[t.config["method"]],
                                                 name=f"{spec.name}-missing"), 0))
        elif t.status == UNCONFIRMED and any(not c.get("confirmed") for c in t.candidates):
            best = next(c for c in t.candidates if not c.get("confirmed"))
            confirm.setdefault(ckey, []).append((t.config["method"], best["params"]))
        elif (t.status == OPEN and t.band == "normal") or t.status == UNCONFIRMED:
            # Open in the normal band, or reached only by confirmed points whose interval
            # straddles it: a faster point is what can meet it.
            key = tuple(t.config[k] for k in BOUND_GROUP)
            front = [t.reference["params"]] if t.reference else []
            front += _fastest_within(trials, key, t.budget, t.metric, REFINE_FROM)
            pts = refinement_points(spec, t.config, t.config["method"], front, measured.get(key, set()))
            refine.setdefault(ckey, []).extend((t.config["method"], p) for p in pts)
    for why, groups in (("confirm", confirm), ("refine", refine)):
        for ckey, pts in groups.items():
            unique = list({json.dumps([c, p], sort_keys=True): (c, p) for c, p in pts}.values())
            if unique:
                work.append(Work(why, restrict(spec, config=spec_configs[ckey], points=unique,
                                               name=f"{spec.name}-{why}"), len(unique)))
    return work


def _fastest_within(trials: Mapping[str, list], key: tuple, budget: float, metric: str, n: int) -> list[dict]:
    loss = trials.get(f"quality_loss_{metric}", [])
    rows = []
    for i in range(len(trials.get("tag", []))):
        if tuple(trials[k][i] for k in BOUND_GROUP) != key:
            continue
        s, q = trials["speedup"][i], loss[i]
        if not measured(trials["status"][i], s, q) or q > budget:  # sweep.bounds: what counts
            continue
        raw = trials["params_json"][i]
        if raw:
            rows.append((s, json.loads(raw)))
    return [p for _, p in sorted(rows, key=lambda r: -r[0])[:n]]


# ------------------------------------------------------------------------- the loop


@dataclass
class BuildResult:
    rounds: list[RoundLog]
    targets: list[Task]
    tasks: list[Task]
    out: Path

    def summary(self) -> str:
        t = Counter(x.status for x in self.targets)
        k = Counter(x.status for x in self.tasks)
        fmt = lambda c: ", ".join(f"{n} {s}" for s, n in sorted(c.items())) or "none"  # noqa: E731
        rows = sum(r.rows_added for r in self.rounds)
        gpu = sum(r.gpu_seconds for r in self.rounds)
        return (f"[build] {len(self.rounds)} round(s), +{rows} row(s), {gpu:.1f} GPU-s; targets: {fmt(t)}; "
                f"tasks: {fmt(k)} -> {self.out}")


def _read_trials(lake: str) -> dict[str, list]:
    from codegen.lake import open_lake

    lk = open_lake(lake)
    try:
        return read_trials(lk)
    finally:
        lk.close()


def _gpu_seconds(summary) -> float:
    total = 0.0
    for t in summary.trial_seconds:
        v = t.get("gpu_seconds") or t.get("trial_seconds") or 0.0
        total += float(v) if isinstance(v, int | float) and math.isfinite(v) else 0.0
    return total


def build(spec_path: str | Path, lake: str, out: str | Path, *, rounds: int = 3,
          max_gpu_minutes: float | None = None, budget: float | None = None, scales: Sequence[float] = DEFAULT_SCALES,
          policy: str = DEFAULT_POLICY, confidence: str = DEFAULT_CONFIDENCE,
          bands: Sequence[float] = DEFAULT_BANDS, cpus_per_trial: int = 1, address: str | None = None,
          max_concurrent: int | None = None, progress: bool = False,
          log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> BuildResult:
    """Run the loop (see the module doc). Raises ConfigError on bad input, before any sweep."""
    from codegen.scripts import write_batch
    from sweep.driver import _quiet_ray, _ray_init, run_sweep
    from sweep.spec import expand, load

    if rounds < 1:
        raise ConfigError(f"--rounds {rounds}: give at least 1 (the first sweep)")
    if max_gpu_minutes is not None and not (math.isfinite(max_gpu_minutes) and max_gpu_minutes > 0):
        raise ConfigError(f"--max-gpu-minutes {max_gpu_minutes}: give a positive number of minutes")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: pass a folder (new or existing)")
    spec = load(spec_path)
    expand(spec)  # validates the grid before Ray starts
    metric = spec.metric
    budget = max(spec.budgets) if budget is None else float(budget)
    grid = grid_configs(spec)
    state_path = out / "build.json"
    state = _load_state(state_path, spec.name, budget, metric)
    logs = [RoundLog(**r) for r in state.get("rounds", [])]
    spent = sum(r.gpu_seconds for r in logs)
    limit = None if max_gpu_minutes is None else max_gpu_minutes * 60.0
    out.mkdir(parents=True, exist_ok=True)

    def tasks_now(trials) -> list[Task]:
        return build_tasks(trials, budget=budget, metric=metric, scales=scales, policy=policy, grid=grid,
                           confidence=confidence, bands=bands)

    def sweep(sub: SweepSpec) -> tuple[int, float]:
        s = run_sweep(sub, lake, address=address, max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial,
                      progress=progress)
        return s.rows_written, _gpu_seconds(s)

    _quiet_ray()
    owns_ray = _ray_init(address)  # one Ray for every sweep of the loop
    try:
        first = RoundLog(len(logs) + 1, swept={"spec": sum(cp.size for cp in expand(spec).combos)})
        started = time.monotonic()
        first.rows_added, first.gpu_seconds = sweep(spec)
        trials = _read_trials(lake)
        if state.get("targets"):
            targets = reanswer(trials, [Task.from_dict(t) for t in state["targets"]], scales=scales,
                               policy=policy, confidence=confidence, bands=bands)
        else:
            targets = tasks_now(trials)
        first.statuses = dict(Counter(t.status for t in targets))
        logs.append(first)
        spent += first.gpu_seconds
        log(first.line() + f" ({time.monotonic() - started:.0f}s)")
        for _ in range(rounds - 1):
            if limit is not None and spent >= limit:
                logs[-1].stopped = f"GPU budget spent ({spent / 60:.1f} of {max_gpu_minutes:g} min)"
                break
            work = missing_work(spec, targets, trials, bands)
            if not work:
                logs[-1].stopped = "nothing left to sweep: every target is met, over budget, or past the valid range"
                break
            r = RoundLog(len(logs) + 1)
            started = time.monotonic()
            for w in work:
                if limit is not None and spent >= limit:
                    r.stopped = f"GPU budget spent ({spent / 60:.1f} of {max_gpu_minutes:g} min)"
                    break
                added, gpu = sweep(w.spec)
                r.swept[w.why] = r.swept.get(w.why, 0) + (w.points or sum(cp.size for cp in expand(w.spec).combos))
                r.rows_added += added
                r.gpu_seconds += gpu
                spent += gpu
            trials = _read_trials(lake)
            before = {t.task_id: t.status for t in targets}
            targets = reanswer(trials, targets, scales=scales, policy=policy, confidence=confidence, bands=bands)
            # A target new this round (a missing config's tasks, now stated) changed from "missing".
            r.changed = [{"task_id": t.task_id, "requested_speedup": t.requested_speedup or 0.0,
                          "from": before.get(t.task_id, MISSING), "to": t.status}
                         for t in targets if before.get(t.task_id, MISSING) != t.status]
            r.statuses = dict(Counter(t.status for t in targets))
            logs.append(r)
            log(r.line() + f" ({time.monotonic() - started:.0f}s)")
            if r.stopped:
                break
            if r.rows_added == 0:
                r.stopped = "the round added no row"
                break
        else:
            logs[-1].stopped = f"{rounds} round(s) done (--rounds {rounds})"
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    tasks = tasks_now(trials)
    write_tasks(out / "tasks.jsonl", tasks)
    write_tasks(out / "targets.jsonl", targets)
    write_batch(tasks, out)
    _save_state(state_path, {"spec": spec.name, "budget": budget, "metric": metric,
                             "targets": [t.to_dict() for t in targets],
                             "rounds": [r.__dict__ for r in logs]})
    result = BuildResult(logs, targets, tasks, out)
    if logs[-1].stopped:
        log(f"[build] stopped: {logs[-1].stopped}")
    log(result.summary())
    return result


def _load_state(path: Path, name: str, budget: float, metric: str) -> dict[str, Any]:
    """A previous run's targets and rounds, when it built the same spec, budget and metric."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read ({e}): remove it to start the build afresh") from None
    if not isinstance(data, dict) or (data.get("spec"), data.get("budget"), data.get("metric")) != (name, budget, metric):
        return {}
    return data


def _save_state(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json_text(data, indent=2) + "\n")


def build_cmd(
    spec_path: Path = typer.Argument(..., help="sweep spec YAML, e.g. datasets/sweeps/default.yaml"),
    lake: str = typer.Option(..., "--lake", help="lake folder or pyarrow URI to sweep into and read"),
    out: Path = typer.Option(..., "--out", help="folder for tasks.jsonl, scripts/, manifest.json, build.json"),
    rounds: int = typer.Option(3, "--rounds", help="rounds in all, the first sweep of the whole spec included"),
    max_gpu_minutes: float = typer.Option(None, "--max-gpu-minutes",
                                          help="stop once the trials have used this much device time"),
    budget: float = typer.Option(None, "--budget", help="quality budget of the tasks (default: the spec's largest)"),
    scales: str = typer.Option(",".join(map(str, DEFAULT_SCALES)), help="multiples of each config's bound"),
    bands: str = typer.Option(",".join(map(str, DEFAULT_BANDS)), help="band edges, as multiples of the bound"),
    policy: str = typer.Option(DEFAULT_POLICY, help="closest, min-loss or max-speedup"),
    confidence: str = typer.Option(DEFAULT_CONFIDENCE, help="ci or median (see `diffaccel tasks --help`)"),
    cpus_per_trial: int = typer.Option(1, "--cpus-per-trial", help="CPUs per trial where there is no GPU"),
    address: str = typer.Option(None, "--address", help="Ray cluster to join; default: start a local Ray"),
    quiet: bool = typer.Option(False, "--quiet", help="only the round lines and the summary"),
) -> None:
    """Sweep, write tasks, sweep what keeps them from being met, repeat; then write the scripts."""
    from codegen.lake import LakeError
    from codegen.policy import check_confidence, check_policy
    from codegen.tasks import parse_bands, parse_scales

    try:
        check_policy(policy)
        check_confidence(confidence)
        result = build(spec_path, lake, out, rounds=rounds, max_gpu_minutes=max_gpu_minutes, budget=budget,
                       scales=parse_scales(scales), bands=parse_bands(bands), policy=policy, confidence=confidence,
                       cpus_per_trial=cpus_per_trial, address=address, progress=not quiet)
    except (ConfigError, LakeError, ValueError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise interrupted() from None
    typer.echo(f"{len(result.tasks)} task(s) -> {result.out / 'tasks.jsonl'}; scripts -> {result.out / 'scripts'}")


__all__ = ["BuildResult", "RoundLog", "Work", "build", "build_cmd", "missing_work", "refinement_points"]
