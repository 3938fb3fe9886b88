"""The codegen commands of the `diffaccel` CLI: bounds, tasks, codegen.

Registered in `sweep.cli`; everything here reads the lake alone and imports no torch,
Ray or diffusers. Bad input ends with exit status 2 and a message that names the
problem and the fix, before anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from codegen.policy import DEFAULT_POLICY, POLICIES
from codegen.tasks import DEFAULT_SCALES, STRATEGIES

_FORMATS = ("table", "csv", "json")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _choice(value: str, options: tuple[str, ...], option: str) -> str:
    if value not in options:
        raise _fail(f"{option} {value!r} is unknown: use one of {', '.join(options)}")
    return value


def _open(lake: str):
    from codegen.lake import LakeError, open_lake

    try:
        return open_lake(lake)
    except LakeError as e:
        raise _fail(str(e)) from None


_BOUND_COLUMNS = ("device_kind", "device", "model", "scheduler", "steps", "resolution", "method", "speedup",
                  "speedup_ci_low", "speedup_ci_high", "quality_loss", "tag", "trial_key", "n_ok", "n_in_budget")
_PARETO_COLUMNS = ("device_kind", "model", "scheduler", "steps", "resolution", "method", "speedup",
                   "quality_loss", "tag", "trial_key")


def _emit(df, fmt: str) -> None:
    if fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(df.to_json(orient="records", date_format="iso", indent=2) + "\n")
    elif df.empty:
        typer.echo("(none)")
    else:
        typer.echo(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def bounds_cmd(
    lake: str = typer.Option(..., "--lake", help="lake folder or pyarrow.fs URI"),
    budget: float = typer.Option(0.02, help="largest quality loss allowed"),
    metric: str = typer.Option("ssim", help="quality metric of the budget: ssim, clip or judge"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
    pareto: bool = typer.Option(False, "--pareto", help="print the Pareto front of each config instead"),
) -> None:
    """The highest speedup within a quality budget per config and GPU kind (or the Pareto fronts)."""
    from codegen.lake import LakeError

    _choice(fmt, _FORMATS, "--format")
    lk = _open(lake)
    try:
        df = lk.pareto(metric=metric) if pareto else lk.bounds(budget=budget, metric=metric)
    except LakeError as e:
        raise _fail(str(e)) from None
    cols = [c for c in (_PARETO_COLUMNS if pareto else _BOUND_COLUMNS) if c in df.columns]
    _emit(df[cols], fmt)
    if not pareto:
        n_configs = len(lk.sql("SELECT DISTINCT device_kind, model, scheduler, steps, resolution, method "
                               "FROM trials"))
        if n_configs > len(df):
            typer.echo(f"{n_configs - len(df)} of {n_configs} config(s) have no ok point within "
                       f"{budget:g} ({metric}); see --pareto for what they reach", err=True)


def tasks_cmd(
    lake: str = typer.Option(..., "--lake", help="lake folder or pyarrow.fs URI"),
    out: Path = typer.Option(..., "--out", help="folder for tasks.jsonl (and missing-spec*.yaml)"),
    budget: float = typer.Option(0.02, help="largest quality loss allowed"),
    metric: str = typer.Option("ssim", help="quality metric of the budget: ssim, clip or judge"),
    scales: str = typer.Option(",".join(map(str, DEFAULT_SCALES)),
                               help="multiples of each config's bound: <1 easy, 1 normal, >1 hard"),
    strategy: str = typer.Option("lake", help="lake: the configs the lake holds; grid: every config of --spec"),
    spec: Path = typer.Option(None, "--spec", help="sweep spec whose axes --strategy grid covers"),
    policy: str = typer.Option(DEFAULT_POLICY, help="closest, min-loss or max-speedup (see codegen.policy)"),
) -> None:
    """Benchmark tasks from the lake's bounds: one per config and scale, with reference parameters."""
    from codegen.lake import LakeError
    from codegen.tasks import build_tasks, grid_configs, missing_specs, parse_scales, read_trials, write_tasks
    from sweep.catalog import ConfigError

    _choice(strategy, STRATEGIES, "--strategy")
    _choice(policy, POLICIES, "--policy")
    grid = sweep_spec = None
    try:
        scale_values = parse_scales(scales)
        if strategy == "grid":
            if spec is None:
                raise _fail("--strategy grid needs --spec SPEC: the sweep spec whose axes to cover")
            from sweep.spec import load

            sweep_spec = load(spec)
            grid = grid_configs(sweep_spec)
        elif spec is not None:
            raise _fail("--spec is only read by --strategy grid: add --strategy grid or drop --spec")
        lk = _open(lake)
        trials = read_trials(lk)
        lk.close()  # before build_tasks forks its workers: a forked child would lack DuckDB's threads
        tasks = build_tasks(trials, budget=budget, metric=metric, scales=scale_values, policy=policy,
                            grid=grid, workers=None)
    except (ConfigError, LakeError) as e:
        raise _fail(str(e)) from None
    path = write_tasks(out / "tasks.jsonl", tasks)
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.status] = counts.get(t.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    typer.echo(f"{len(tasks)} task(s): {summary} -> {path}")
    if sweep_spec is not None and counts.get("missing"):
        from sweep.spec import dump

        specs = missing_specs(sweep_spec, tasks)
        for i, sub in enumerate(specs):
            name = "missing-spec.yaml" if len(specs) == 1 else f"missing-spec-{i + 1}.yaml"
            dump(sub, out / name)
            typer.echo(f"configs the lake lacks -> {out / name} (run: diffaccel sweep {out / name})")


def codegen_cmd(
    tasks: Path = typer.Option(None, "--tasks", help="tasks.jsonl written by `diffaccel tasks`"),
    task: str = typer.Option(None, "--task", help="one task in plain English (needs --lake)"),
    lake: str = typer.Option(None, "--lake", help="lake to answer --task from"),
    out: Path = typer.Option(..., "--out", help="folder for scripts/, manifest.json, search_params.json"),
    policy: str = typer.Option(DEFAULT_POLICY, help="for --task: closest, min-loss or max-speedup"),
    strict: bool = typer.Option(False, "--strict",
                                help="exit 1 when a task is malformed or missing, or an easy/normal task "
                                     "is infeasible (hard tasks beyond the bound are expected to be)"),
) -> None:
    """Render one runnable script per feasible task; record every other task with its reason."""
    from codegen.scripts import write_batch
    from codegen.tasks import read_tasks, read_trials, task_for_request
    from codegen.texts import parse
    from sweep.catalog import ConfigError

    _choice(policy, POLICIES, "--policy")
    if (tasks is None) == (task is None):
        raise _fail("pass either --tasks FILE or --task TEXT (with --lake)")
    try:
        if task is not None:
            if lake is None:
                raise _fail("--task needs --lake L: the lake to find the parameters in")
            from codegen.lake import LakeError  # only --task reads a lake (and needs DuckDB)

            req = parse(task)
            try:
                items = [task_for_request(read_trials(_open(lake)), req, policy=policy)]
            except LakeError as e:
                raise _fail(str(e)) from None
        else:
            if lake is not None:
                raise _fail("--lake is only read with --task; a tasks file already holds its answers")
            items = list(read_tasks(tasks))
    except ConfigError as e:
        raise _fail(str(e)) from None
    result = write_batch(items, out, write_tasks_file=task is not None, workers=None)
    typer.echo(result.summary())
    for e in result.entries:
        if e["status"] == "malformed":
            typer.echo(f"  malformed {e.get('task_id') or 'line ' + str(e.get('line'))}: {e['reason']}", err=True)
    if strict and result.failed():
        raise typer.Exit(1)


__all__ = ["bounds_cmd", "codegen_cmd", "tasks_cmd"]
