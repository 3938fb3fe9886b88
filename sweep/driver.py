"""`diffaccel sweep`: fan a spec's config × parameter grid over a Ray cluster's GPUs and
land every trial in the Parquet lake.

How the pieces fit:

* The spec is validated and expanded before Ray starts (`sweep.spec`), so a typo costs
  no GPU time. A lake that cannot be created fails just as early.
* A probe task on a worker (with a trial's own resources) reports the device kind and
  library versions; with them the driver computes every trial key, skips keys the lake
  already holds (resume, rerun) and still prunes from their stored outcomes. A cluster
  is assumed to be homogeneous: rows always carry the key their worker measured under.
* Ray Tune runs the trials: a `Searcher` hands out the points `pruning.SweepState`
  deems ready (least aggressive first, pruning as results arrive, confirmation once a
  config×combo grid is done), one GPU per trial (or CPUs where the cluster has no GPU),
  with actors reused so a worker keeps its pipeline between trials (`sweep.worker`).
* Early stopping happens inside the trial rather than through a Tune `Stopper`: Tune's
  stop decision arrives asynchronously, after the function has already started on the
  next prompt, and a trial thread still busy when the actor is reset makes Tune discard
  the actor, and the pipeline with it. The rule is the same pure function either way
  (`pruning.clearly_over`).
* A Tune callback turns each finished, stopped or failed trial into a lake row and
  writes it at once, together with the points its result pruned, so an interrupted
  sweep loses only the trials in flight. `FailureConfig` retries a trial whose worker
  died; a trial that still fails lands as a ``failed`` row and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from sweep.bookkeeping import (
    REUSE_COLUMNS,
    LakeWriteError,
    Progress,
    SweepContext,
    SweepSummary,
    error_text,
    outcome_of,
    resolved,
)
from sweep.bounds import believe_order, screen_first
from sweep.catalog import ConfigError
from sweep.exits import fail, interrupted, terminated
from sweep.lake import LakeError, LakeReader, LakeWriter, lake_warnings_as_lines
from sweep.lake_schema import CONFIRM, FAILED, OK, PRUNED, STOPPED
from sweep.pruning import Outcome, SweepState
from sweep.spec import DEFAULT_MAX_POINTS, Plan, SweepSpec, expand, load, only, trial_inputs

log = logging.getLogger("diffaccel.sweep")


# Re-exported: the tests and the bench import them from here.
__all__ = ["Progress", "SweepContext", "SweepSummary", "LakeWriteError", "resolved", "outcome_of",
           "error_text", "run_sweep", "stored_outcomes", "trial_resources", "sweep_cmd"]


def stored_outcomes(lake: LakeReader, metric: str, retry_failed: bool = True,
                    failed: set[str] | None = None) -> dict[str, tuple[set[str], Outcome]]:
    """trial_key -> (phases stored, outcome of the row `bounds.screen_first` picks: its
    screen row, on which the interrupted run made its pruning decisions) for a resumed sweep.

    With `retry_failed`, ``failed`` rows are no verdict: they are left out, so their
    keys (and failed confirmations) run again; `failed`, when given, collects the keys
    of those rows."""
    cols = ["trial_key", "phase", "status", f"quality_loss_{metric}", "speedup", "finished_at", "started_at",
            *REUSE_COLUMNS]
    phases: dict[str, set[str]] = {}
    picked: dict[str, dict[str, Any]] = {}
    confirmed: dict[str, dict[str, Any]] = {}  # the latest measured confirm row of a key
    for row in lake.trial_columns(cols):
        if retry_failed and row["status"] == FAILED:
            if failed is not None:
                failed.add(row["trial_key"])
            continue
        key = row["trial_key"]
        phases.setdefault(key, set()).add(row["phase"])
        if screen_first(picked.get(key), row):
            picked[key] = row
        if row["phase"] == CONFIRM and row["status"] == OK and row.get("speedup") is not None \
                and (key not in confirmed or believe_order(row) < believe_order(confirmed[key])):
            confirmed[key] = row
    out = {}
    for key, row in picked.items():
        outcome = outcome_of(row, metric)
        if key in confirmed:  # the speed readers believe, which decides what else to confirm
            outcome = dataclasses.replace(outcome, speedup=confirmed[key]["speedup"])
        out[key] = (phases[key], outcome)
    return out


# ------------------------------------------------------------------------- Ray side


def _quiet_ray() -> None:
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    for name in ("ray", "ray.train", "ray.air", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Tune logs every failed attempt with its traceback; the sweep reports failures
    # itself (a line, and the error in the row).
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)


# How long `--address HOST:PORT` may stay silent before the sweep gives up (ray.init
# itself retries for about 9 minutes without a word).
CONNECT_TIMEOUT_S = 30.0


def check_address(address: str, timeout_s: float | None = None) -> None:
    """Fail within `timeout_s` with a clear error where nothing answers at `address`
    (``HOST:PORT``; ``auto`` and ``ray://`` addresses are left to Ray)."""
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.strip("[]"), int(port)),
                                          timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
                return
        except OSError as e:
            last = e
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    raise ConfigError(f"no Ray cluster at {address}: nothing answered within {timeout_s:.0f} s ({last}); "
                      "start one with `ray start --head` there, or leave out --address to run a local Ray")


def _ray_init(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Start or join Ray; True when this call started it (and so must shut it down).

    An embedded Ray (no `address`) listens on loopback only: the caller holds
    `embedded.loopback_env()` around it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  logging_level=logging.ERROR, configure_logging=True)
    runtime_env = _runtime_env()
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if address:
        ray.init(address=address, **{k: v for k, v in kwargs.items() if k != "include_dashboard"})
    else:
        from sweep.embedded import LOOPBACK

        # "local" starts a fresh Ray even where another cluster runs on this machine.
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address=LOOPBACK, **kwargs)
    return True


def trial_resources(cluster: Mapping[str, float], cpus_per_trial: int,
                    extra: Mapping[str, float] | None = None) -> tuple[dict[str, float], int, str]:
    """(resources per trial, how many fit at once, a note for the user)."""
    gpus = int(cluster.get("GPU", 0))
    cpus = int(cluster.get("CPU", 0))
    res: dict[str, float] = dict(extra or {})
    if gpus >= 1:
        res.update({"GPU": 1, "CPU": 1})
        return res, gpus, f"{gpus} GPU(s): one trial per GPU"
    if cpus < cpus_per_trial:
        raise ConfigError(f"the Ray cluster has {cpus} CPU(s) and no GPU, but a trial needs {cpus_per_trial} "
                          "CPU(s): lower --cpus-per-trial or add nodes")
    res["CPU"] = cpus_per_trial
    return res, max(1, cpus // cpus_per_trial), (
        f"no GPU in the Ray cluster: trials run on CPU, {max(1, cpus // cpus_per_trial)} at a time "
        f"({cpus_per_trial} CPU(s) each)")


def _probe(resources: Mapping[str, float]) -> dict[str, Any]:
    """Device columns and library versions as a trial's worker sees them."""
    import ray

    from sweep.worker import probe

    opts: dict[str, Any] = {"num_cpus": resources.get("CPU", 1), "num_gpus": resources.get("GPU", 0)}
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    if custom:
        opts["resources"] = custom
    ref = ray.remote(probe).options(**opts).remote()
    try:
        return ray.get(ref, timeout=600)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise ConfigError("no worker could take a trial's resources "
                          f"{dict(resources)} within 10 minutes: check `ray status`") from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, a batch scheduler, `kill`): a sweep ends as on Ctrl-C, with its
    lease released and Ray shut down, instead of dying inside Ray's own handlers."""


_sigterm_seen = threading.Event()


def _on_sigterm(signum, frame) -> None:
    # A second SIGTERM during the cleanup kills at once, as the sender expects.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _sigterm_seen.set()  # Tune may re-raise an interrupt as a plain KeyboardInterrupt
    raise Terminated()


def _catch_sigterm(stack: contextlib.ExitStack | None) -> None:
    """Turn SIGTERM into `Terminated` (until `stack` closes, when given). Called again,
    without a stack, after Ray starts: `ray.init` installs its own SIGTERM handlers (a
    bare `sys.exit`, then the core worker's absl handler, which prints a long stack), the
    last one set wins, and Ray's must not come back while Ray shuts down."""
    if threading.current_thread() is not threading.main_thread():
        return  # Python delivers signals to the main thread only
    before = signal.signal(signal.SIGTERM, _on_sigterm)
    if stack is not None:
        stack.callback(_restore_sigterm, before)


def _restore_sigterm(handler) -> None:
    with contextlib.suppress(ValueError, TypeError):
        signal.signal(signal.SIGTERM, handler if handler is not None else signal.SIG_DFL)


def run_sweep(spec: SweepSpec, lake_uri: str, *, address: str | None = None,
              max_concurrent: int | None = None, cpus_per_trial: int = 1, max_failures: int = 2,
              progress: bool = True, num_cpus: int | None = None, num_gpus: int | None = None,
              trial_extra_resources: Mapping[str, float] | None = None,
              sweep_id: str | None = None, retry_failed: bool = True, strict: bool = False,
              lease_ttl_s: float = 60.0) -> SweepSummary:
    """Run (or resume) a sweep into `lake_uri` and return what happened.

    In order: check the options and the lake (before Ray starts), take the lake's lease,
    land rows spooled by an earlier failed write, start or join Ray, skip what the lake
    holds, run the rest on Tune. Raises `ConfigError` for bad input and `LakeWriteError`
    when rows could not be written (they are spooled; a rerun lands them). `strict`: a file
    the lake should not hold stops the sweep instead of being skipped."""
    import uuid

    from sweep.lease import Lease

    started = time.monotonic()
    if cpus_per_trial < 1:
        raise ConfigError(f"--cpus-per-trial must be at least 1, got {cpus_per_trial}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be at least 1, got {max_concurrent}")
    plan = expand(spec)
    lake = _open_lake(lake_uri, strict)
    if address:
        check_address(address)
    prompts = spec.prompts()  # read before Ray starts: a bad prompt file costs nothing
    run_id = sweep_id or uuid.uuid4().hex[:12]

    def say(text: str) -> None:
        if progress:
            print(f"[sweep] {text}", file=sys.stderr, flush=True)

    _sigterm_seen.clear()
    with contextlib.ExitStack() as stack:
        _catch_sigterm(stack)
        lease = Lease(lake.fs, lake.root, owner=run_id, ttl_s=lease_ttl_s)
        lease.acquire(on_wait=lambda held: say(
            f"waiting: run {held.get('owner')} (host {held.get('host')}, pid {held.get('pid')}) is sweeping "
            "into this lake; this sweep resumes after it and skips what it stored"))
        stack.callback(lease.release)
        landed = _land_spool(lake, say)
        # Read what is stored once, under the lease (no other sweep writes now) and before
        # Ray starts: an unreachable lake or (with --strict) a bad file costs no Ray start.
        failed_before: set[str] = set()
        stored = stored_outcomes(lake, spec.metric, retry_failed=retry_failed, failed=failed_before)
        tune_dir = _start_ray(stack, address, num_cpus, num_gpus, say)
        _catch_sigterm(None)  # again: Ray replaced the handler (see there)
        import ray

        resources, fits, note = trial_resources(ray.cluster_resources(), cpus_per_trial, trial_extra_resources)
        concurrency = max(1, min(max_concurrent or fits, fits))
        say(note + (f"; --max-concurrent {concurrency}" if concurrency < fits else ""))
        device = _probe(resources)
        dtype = spec.dtype if spec.dtype != "auto" else ("float32" if device["device_kind"] == "cpu" else "float16")
        ctx = SweepContext(spec, run_id, device, json.loads(device["versions_json"]), dtype,
                           inputs=trial_inputs(prompts=prompts, seeds=spec.seeds, measure=spec.measure,
                                               dtype=dtype, clip_model=spec.clip_model,
                                               judge_model=spec.judge_model))
        state = SweepState(plan.combos, spec.budgets, spec.early_stop, ctx.key, stored=stored)
        if state.pruned or not state.finished:  # a run that will write rows: name it for the report
            try:
                lake.write_sweep(spec, ctx.sweep_id, device["device_kind"])
            except LakeError as e:  # after Ray started (and maybe a spool landed): not bad input
                raise LakeWriteError(str(e)) from None
        summary = SweepSummary(ctx.sweep_id, state.total, {}, state.skipped, 0, 0, 0.0,
                               device["device_kind"], dict(resources), notes=list(plan.notes),
                               concurrency=concurrency, landed_from_spool=landed)
        summary.cluster_nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n.get("Alive")}
        if retry_failed:
            summary.retried_failed = len((failed_before - set(stored)) & set(_plan_keys(state)))
            if summary.retried_failed:
                say(f"{summary.retried_failed} key(s) that failed before run again (--no-retry-failed: keep them)")
        if state.skipped:
            say(f"{state.skipped} of {state.total} point(s) already in the lake: skipped")
        prog = Progress(state, enabled=progress)
        stack.callback(prog.close)
        sink = _run_tune(spec, prompts, lake, ctx, state, prog, summary, resources=resources,
                         concurrency=concurrency, max_failures=max_failures, tune_dir=tune_dir)
        if sink.failure is not None:
            prog.close()
            raise LakeWriteError(_write_failure_text(lake.uri, sink))
        prog.update(final=True)
        summary.counts = state.counts()
        summary.wall_s = time.monotonic() - started
        return summary


def _open_lake(lake_uri: str, strict: bool = False) -> LakeWriter:
    """The lake, created if new and probed for writability (before any GPU time)."""
    from sweep.spool import Spool

    lake = LakeWriter(lake_uri, on_bad_file="error" if strict else "warn")
    try:
        lake.fs.create_dir(lake.root, recursive=True)
    except OSError as e:
        raise ConfigError(f"cannot create the lake at {lake_uri!r}: {e}: pass a writable folder or URI") from None
    try:
        lake.check_writable()
    except OSError as e:
        pending = Spool(lake_uri).rows()
        kept = f"; {pending} row(s) of an earlier failed write wait in the spool" if pending else ""
        raise ConfigError(f"the lake at {lake_uri!r} cannot be written ({e}){kept}: fix its permissions or "
                          "free space, or pass another --lake") from None
    return lake


def _land_spool(lake: LakeWriter, say) -> int:
    """Land the rows an earlier failed write kept (`sweep.spool`); how many."""
    from sweep.spool import Spool

    spool = Spool(lake.uri)
    if not spool.pending():
        return 0
    try:
        landed = spool.land(lake)
    except OSError as e:
        raise LakeWriteError(f"cannot land the {spool.rows()} row(s) kept from an earlier failed write in "
                             f"{lake.uri}: {e}; they stay in {spool.folder}: fix the lake and rerun") from None
    say(f"landed {landed} row(s) kept from an earlier failed write")
    return landed


def _start_ray(stack: contextlib.ExitStack, address: str | None, num_cpus: int | None,
               num_gpus: int | None, say) -> str:
    """Join `address` or start an embedded Ray on loopback (cleaning up after a killed
    sweep first); the Tune folder. Everything started is undone by `stack`."""
    import shutil

    _quiet_ray()
    record = None
    if not address:
        from sweep.embedded import EmbeddedRun, clean_orphans, loopback_env

        for what in clean_orphans():
            say(f"cleaned up after a killed sweep: {what}")
        stack.enter_context(loopback_env())  # before `import ray`: see sweep.embedded
    import ray

    tune_dir = tempfile.mkdtemp(prefix="diffaccel-tune-")
    if not address and not ray.is_initialized():
        record = EmbeddedRun([tune_dir])
        stack.callback(record.close)
    else:
        stack.callback(shutil.rmtree, tune_dir, ignore_errors=True)
    if _ray_init(address, num_cpus=num_cpus, num_gpus=num_gpus):
        stack.callback(ray.shutdown)
    if record is not None:
        record.record_children()
        record.watch()  # workers and agents keep starting while the sweep runs
    return tune_dir


def _run_tune(spec: SweepSpec, prompts: list[str], lake: LakeWriter, ctx: SweepContext, state: SweepState, prog: Progress,
              summary: SweepSummary, *, resources: dict[str, float], concurrency: int, max_failures: int,
              tune_dir: str):
    """Run the points `state` holds on Ray Tune; the sink, which knows whether a write failed."""
    from ray import tune

    from sweep.spool import Spool
    from sweep.tuning import LakeSink, PlanSearcher, StopOnWriteFailure
    from sweep.worker import run_trial

    sink = LakeSink(lake, ctx, state, prog, summary, spool=Spool(lake.uri))
    sink.flush_pruned()
    if not state.finished and sink.failure is None:
        settings = {"prompts": prompts, "seeds": list(spec.seeds), "metric": spec.metric,
                    "budgets": list(spec.budgets), "measure": spec.measure.__dict__,
                    "early_stop": spec.early_stop.__dict__, "dtype": ctx.dtype,
                    "clip_model": spec.clip_model, "judge_model": spec.judge_model_path(),
                    "key_inputs": ctx.inputs, "sweep_id": ctx.sweep_id,
                    "known_baselines": sorted(sink.baselines)}
        trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings), resources)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=PlanSearcher(state, sink), num_samples=-1,
                                        max_concurrent_trials=concurrency, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"sweep-{ctx.sweep_id}", storage_path=tune_dir, verbose=0,
                callbacks=[sink], failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                stop=StopOnWriteFailure(sink),
            ),
        )
        fit_start = time.monotonic()
        try:
            tuner.fit()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: store the verdicts finished trials gave
            sink.flush_pruned()
            raise
        summary.fit_wall_s = time.monotonic() - fit_start
    sink.flush_pruned()
    return sink


def _plan_keys(state: SweepState) -> list[str]:
    return [k for lat in state.lattices for k in lat.keys]


def _write_failure_text(lake_uri: str, sink) -> str:
    text = (f"writing to the lake {lake_uri} failed ({sink.failure}); the sweep stopped. "
            f"{sink.spooled} row(s) are kept in {sink.spool.folder}: fix the lake and rerun the same "
            "command, which lands them first")
    if sink.unspooled:
        rows = [r for _, batch in sink.unspooled for r in batch]
        text += (f". {len(rows)} row(s) could not be spooled either ({sink.spool_failure}): "
                 + json.dumps(rows, default=str)[:20000])
    return text


def _runtime_env() -> dict[str, Any] | None:
    """Workers import `sweep` from this checkout when it is not installed (a GPU host that
    runs from a checkout with PYTHONPATH); every node needs the checkout at this path."""
    import importlib.util

    root = str(Path(__file__).resolve().parent.parent)
    spec = importlib.util.find_spec("sweep")
    installed = spec is not None and spec.origin and "site-packages" in spec.origin
    if installed:
        return None
    py_path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": py_path}}


# ----------------------------------------------------------------------------- CLI


def describe_plan(plan: Plan) -> str:
    lines = [plan.summary()]
    for cp in plan.combos:
        drop = f" ({cp.dropped} dropped)" if cp.dropped else ""
        lines.append(f"  {resolved(cp.config).label():32s} {cp.config.preset:5s} {cp.combo:22s} "
                     f"{cp.size:6d} point(s){drop}")
    return "\n".join(lines)


def sweep_cmd(
    spec_path: Path = typer.Argument(..., help="sweep spec YAML, e.g. datasets/sweeps/default.yaml"),
    lake: str = typer.Option(..., "--lake", help="lake folder or pyarrow URI (s3://, gs://, file://)"),
    address: str = typer.Option(None, "--address", help="Ray cluster to join (e.g. auto or host:6379); "
                                "default: start a local Ray on 127.0.0.1"),
    max_concurrent: int = typer.Option(None, "--max-concurrent", help="trials at once (default: one per GPU)"),
    cpus_per_trial: int = typer.Option(1, "--cpus-per-trial", help="CPUs per trial where there is no GPU"),
    retry_failed: bool = typer.Option(True, "--retry-failed/--no-retry-failed",
                                      help="run again the keys whose stored row is `failed` (default)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and show the plan; start nothing"),
    summary: Path = typer.Option(None, "--summary", help="write a JSON summary of the sweep here"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress lines"),
    max_points: int = typer.Option(DEFAULT_MAX_POINTS, "--max-points", min=1,
                                   help="refuse a spec of more points than this (counted before Ray starts)"),
    strict: bool = typer.Option(False, "--strict", help="stop on a file the lake should not hold "
                                "instead of skipping it with a warning"),
    models: list[str] = typer.Option(None, "--model", help="only this model of the spec (repeatable)"),
    schedulers: list[str] = typer.Option(None, "--scheduler", help="only this scheduler (repeatable)"),
    steps: list[int] = typer.Option(None, "--steps", help="only this step count (repeatable)"),
    combos: list[str] = typer.Option(None, "--combo", help="only this combination, e.g. deepcache+tome "
                                     "(repeatable)"),
) -> None:
    """Run a sweep spec on Ray Tune into the lake (resumable: stored trials are skipped).
    --model/--scheduler/--steps/--combo run part of it, with the spec's own keys."""
    try:
        spec = only(load(spec_path, max_points=max_points), models=models or (), schedulers=schedulers or (),
                    steps=steps or (), combos=combos or ())
        plan = expand(spec)
    except ConfigError as e:
        raise fail(str(e)) from None
    if dry_run:
        typer.echo(describe_plan(plan))
        return
    if not quiet:
        typer.echo(plan.summary(), err=True)
    try:
        with lake_warnings_as_lines():
            result = run_sweep(spec, lake, address=address, max_concurrent=max_concurrent,
                               cpus_per_trial=cpus_per_trial, progress=not quiet, strict=strict,
                               retry_failed=retry_failed)
    except ConfigError as e:
        raise fail(str(e)) from None
    except LakeWriteError as e:
        raise fail(str(e), code=1) from None
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated) or _sigterm_seen.is_set():
            raise terminated() from None
        raise interrupted() from None
    if summary:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(result.to_json())
    typer.echo(finish_text(result, lake))


def finish_text(result: SweepSummary, lake: str) -> str:
    """The sweep's last words: what happened, where the rows are, what to run next."""
    c = result.counts
    where = lake if "://" in lake and not lake.startswith("file://") else \
        os.path.abspath(lake.removeprefix("file://"))
    lines = [f"run {result.sweep_id}: {c.get('done', 0)}/{result.total} point(s) · ok {c.get(OK, 0)} · "
             f"stopped {c.get(STOPPED, 0)} · pruned {c.get(PRUNED, 0)} · failed {c.get(FAILED, 0)} · "
             f"{result.skipped} already stored · {result.rows_written} row(s) written in {result.wall_s:.0f}s",
             f"lake: {where}",
             "next:",
             f"  diffaccel bounds --lake {_quote(where)}",
             f"  diffaccel report --lake {_quote(where)} --out out/report",
             f"  diffaccel tasks --lake {_quote(where)} --out out/tasks"]
    return "\n".join(lines)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(sweep_cmd)
    app()


if __name__ == "__main__":
    main()
