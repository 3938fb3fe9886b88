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

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from sweep.catalog import ConfigError, PipelineConfig, config_dict, trial_key
from sweep.lake import Lake, params_json
from sweep.lake_schema import FAILED, OK, PRUNED, SCREEN, STOPPED
from sweep.pruning import Outcome, SweepState, Task
from sweep.spec import Plan, SweepSpec, expand, load

log = logging.getLogger("diffaccel.sweep")


# ----------------------------------------------------------------------- progress


class Progress:
    """One concise line on stderr per event: done/total, statuses, confirmations, ETA."""

    def __init__(self, state: SweepState, enabled: bool = True, stream=None):
        self.state = state
        self.enabled = enabled
        # Looked up at each write: Tune pickles its callbacks, and a stream cannot be.
        self._stream = stream
        self.start = time.monotonic()
        self.executed_at_start = self._executed()

    @property
    def stream(self):
        return self._stream or sys.stderr

    def _executed(self) -> int:
        c = self.state.counts()
        return c[OK] + c[STOPPED] + c[FAILED] + c["confirm_done"]

    def line(self) -> str:
        c = self.state.counts()
        total = self.state.total
        elapsed = time.monotonic() - self.start
        ran = self._executed() - self.executed_at_start
        remaining = (total - c["done"]) + (c["confirm_total"] - c["confirm_done"])
        eta = "?"
        if ran > 0:
            secs = elapsed / ran * remaining
            eta = f"{int(secs // 60)}m{int(secs % 60):02d}s"
        return (f"[sweep] {c['done']}/{total} done · ok {c[OK]} · stopped {c[STOPPED]} · "
                f"pruned {c[PRUNED]} · failed {c[FAILED]} · confirmed {c['confirm_done']}/"
                f"{c['confirm_total']} · running {c['running']} · ETA ≤{eta}")

    def update(self, final: bool = False) -> None:
        if not self.enabled:
            return
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        end = "\n" if final or not tty else "\r"
        self.stream.write(self.line() + end)
        self.stream.flush()


# ------------------------------------------------------------------------- rows


@dataclass
class SweepContext:
    """What every row of this sweep shares."""

    spec: SweepSpec
    sweep_id: str
    device: dict[str, Any]  # device columns from the probe
    versions: dict[str, str]
    dtype: str

    def key(self, cfg: PipelineConfig, acc) -> str:
        return trial_key(resolved(cfg), acc, self.device["device_kind"], self.versions)

    def base_row(self, task: Task, status: str, **extra: Any) -> dict[str, Any]:
        """A row for a trial that produced no measurement (pruned, failed)."""
        from datetime import datetime, timezone

        row: dict[str, Any] = {
            "trial_key": task.key, "tag": task.acc.tag, "sweep_id": self.sweep_id,
            **config_dict(resolved(task.config)), "dtype": self.dtype,
            "method": task.acc.combo, **task.acc.params, "params_json": params_json(task.acc.params),
            "status": status, "phase": task.phase, "final": False,
            **self.device, "finished_at": datetime.now(timezone.utc), "gpu_seconds": 0.0,
        }
        row.update(extra)
        return row


def resolved(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with its resolution filled in, as the worker keys and stores it."""
    import dataclasses

    # Cheap: sweep.pipelines imports torch and diffusers only inside its functions.
    from sweep.pipelines import resolve_resolution

    return dataclasses.replace(cfg, resolution=resolve_resolution(cfg))


def outcome_of(row: Mapping[str, Any], metric: str) -> Outcome:
    return Outcome(row["status"], row.get(f"quality_loss_{metric}"), row.get("speedup"))


def stored_outcomes(lake: Lake, metric: str) -> dict[str, tuple[set[str], Outcome]]:
    """trial_key -> (phases stored, outcome of its screen row) for a resumed sweep."""
    cols = ["trial_key", "phase", "status", f"quality_loss_{metric}", "speedup"]
    out: dict[str, tuple[set[str], Outcome]] = {}
    for row in lake.trial_columns(cols):
        phases, outcome = out.get(row["trial_key"], (set(), None))
        phases.add(row["phase"])
        if row["phase"] == SCREEN or outcome is None:
            outcome = outcome_of(row, metric)
        out[row["trial_key"]] = (phases, outcome)
    return out


# ------------------------------------------------------------------------ summary


@dataclass
class SweepSummary:
    sweep_id: str
    total: int
    counts: dict[str, int]
    skipped: int  # already in the lake
    rows_written: int
    baselines_written: int
    wall_s: float
    device_kind: str
    resources: dict[str, Any]
    # trial key -> node id that ran it, and the timed seconds per trial (for the bench)
    nodes: dict[str, str] = field(default_factory=dict)
    cluster_nodes: dict[str, dict[str, float]] = field(default_factory=dict)  # node id -> resources
    trial_seconds: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fit_wall_s: float = 0.0  # time inside Tune (the trials), without Ray start-up and the probe
    concurrency: int = 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, default=str)


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


def _ray_init(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Start or join Ray; True when this call started it (and so must shut it down)."""
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
        # "local" starts a fresh Ray even where another cluster runs on this machine.
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
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


def run_sweep(spec: SweepSpec, lake_uri: str, *, address: str | None = None,
              max_concurrent: int | None = None, cpus_per_trial: int = 1, max_failures: int = 2,
              progress: bool = True, num_cpus: int | None = None, num_gpus: int | None = None,
              trial_extra_resources: Mapping[str, float] | None = None,
              sweep_id: str | None = None) -> SweepSummary:
    """Run (or resume) a sweep into `lake_uri` and return what happened."""
    import uuid

    started = time.monotonic()
    plan = expand(spec)
    lake = Lake(lake_uri)
    try:
        lake.fs.create_dir(lake.root, recursive=True)
    except OSError as e:
        raise ConfigError(f"cannot create the lake at {lake_uri!r}: {e}: pass a writable folder or URI") from None
    prompts = spec.prompts()
    _quiet_ray()
    import ray
    from ray import tune

    from sweep.tuning import LakeSink, PlanSearcher
    from sweep.worker import run_trial

    owns_ray = _ray_init(address, num_cpus=num_cpus, num_gpus=num_gpus)
    tune_dir = tempfile.mkdtemp(prefix="diffaccel-tune-")
    try:
        resources, fits, note = trial_resources(ray.cluster_resources(), cpus_per_trial, trial_extra_resources)
        concurrency = max(1, min(max_concurrent or fits, fits))
        if progress:
            print(f"[sweep] {note}" + (f"; --max-concurrent {concurrency}" if concurrency < fits else ""),
                  file=sys.stderr)
        device = _probe(resources)
        versions = json.loads(device["versions_json"])
        dtype = spec.dtype if spec.dtype != "auto" else ("float32" if device["device_kind"] == "cpu" else "float16")
        ctx = SweepContext(spec, sweep_id or uuid.uuid4().hex[:12], device, versions, dtype)
        state = SweepState(plan.combos, spec.budgets, spec.early_stop, ctx.key,
                           stored=stored_outcomes(lake, spec.metric))
        summary = SweepSummary(ctx.sweep_id, state.total, {}, state.skipped, 0, 0, 0.0,
                               device["device_kind"], dict(resources), notes=list(plan.notes))
        summary.concurrency = concurrency
        summary.cluster_nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n.get("Alive")}
        prog = Progress(state, enabled=progress)
        sink = LakeSink(lake, ctx, state, prog, summary)
        if progress and state.skipped:
            print(f"[sweep] {state.skipped} of {state.total} point(s) already in the lake: skipped",
                  file=sys.stderr)
        sink.flush_pruned()
        if not state.finished:
            settings = {"prompts": prompts, "seeds": list(spec.seeds), "metric": spec.metric,
                        "budgets": list(spec.budgets), "measure": spec.measure.__dict__,
                        "early_stop": spec.early_stop.__dict__, "dtype": dtype,
                        "clip_model": spec.clip_model, "judge_model": spec.judge_model_path(),
                        "sweep_id": ctx.sweep_id,
                        "known_baselines": sorted(lake.existing_baseline_keys())}
            trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings), resources)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=PlanSearcher(state, sink), num_samples=-1,
                                            max_concurrent_trials=concurrency, reuse_actors=True),
                run_config=tune.RunConfig(
                    name=f"sweep-{ctx.sweep_id}", storage_path=tune_dir, verbose=0,
                    callbacks=[sink], failure_config=tune.FailureConfig(max_failures=max_failures),
                    checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                ),
            )
            fit_start = time.monotonic()
            tuner.fit()
            summary.fit_wall_s = time.monotonic() - fit_start
        sink.flush_pruned()
        prog.update(final=True)
        summary.counts = state.counts()
        summary.wall_s = time.monotonic() - started
        return summary
    finally:
        shutil.rmtree(tune_dir, ignore_errors=True)
        if owns_ray:
            ray.shutdown()


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


def error_text(err: BaseException) -> str:
    """The root cause's type and message, without Ray's wrapping."""
    cause = err
    while getattr(cause, "cause", None) is not None or getattr(cause, "__cause__", None) is not None:
        nxt = getattr(cause, "cause", None) or cause.__cause__
        if nxt is cause:
            break
        cause = nxt
    return f"{type(cause).__name__}: {cause}".strip()


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
                                "default: start a local Ray"),
    max_concurrent: int = typer.Option(None, "--max-concurrent", help="trials at once (default: one per GPU)"),
    cpus_per_trial: int = typer.Option(1, "--cpus-per-trial", help="CPUs per trial where there is no GPU"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and show the plan; start nothing"),
    summary: Path = typer.Option(None, "--summary", help="write a JSON summary of the sweep here"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress lines"),
) -> None:
    """Run a sweep spec on Ray Tune into the lake (resumable: stored trials are skipped)."""
    try:
        spec = load(spec_path)
        plan = expand(spec)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if dry_run:
        typer.echo(describe_plan(plan))
        return
    if not quiet:
        typer.echo(plan.summary(), err=True)
    try:
        result = run_sweep(spec, lake, address=address, max_concurrent=max_concurrent,
                           cpus_per_trial=cpus_per_trial, progress=not quiet)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: finished trials are in the lake; rerun the same command to resume",
                   err=True)
        raise typer.Exit(130) from None
    if summary:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(result.to_json())
    c = result.counts
    typer.echo(f"sweep {result.sweep_id}: {c.get('done', 0)}/{result.total} point(s) · ok {c.get(OK, 0)} · "
               f"stopped {c.get(STOPPED, 0)} · pruned {c.get(PRUNED, 0)} · failed {c.get(FAILED, 0)} · "
               f"{result.skipped} already stored · {result.rows_written} row(s) written to {lake} "
               f"in {result.wall_s:.0f}s")


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(sweep_cmd)
    app()


if __name__ == "__main__":
    main()
