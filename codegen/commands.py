"""The codegen commands of the `diffaccel` CLI: bounds, tasks, codegen.

Registered in `diffaccel.cli`; everything here reads the lake alone and imports no torch,
Ray or diffusers. Bad input ends with exit status 2 and a message that names the
problem and the fix, before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import typer

from codegen.policy import CONFIDENCES, DEFAULT_CONFIDENCE, DEFAULT_POLICY, POLICIES
from codegen.tasks import DEFAULT_BANDS, DEFAULT_SCALES, STRATEGIES
from sweep.bounds import DEFAULT_BUDGET, DEFAULT_METRIC, OK
from sweep.exits import fail


def _choice(value: str, options: tuple[str, ...], option: str) -> str:
    if value not in options:
        raise fail(f"{option} {value!r} is unknown: use one of {', '.join(options)}")
    return value


def _out_folder(out: Path, option: str = "--out") -> Path:
    """A folder to write into: refuse a file before anything is computed or written."""
    if out.exists() and not out.is_dir():
        raise fail(f"{option} {out} is a file: pass a folder (new or existing)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise fail(f"{option} {out}: {parent} is a file, not a folder: pass another path")
            break
    return out


_BANDS_HELP = ("band edges as multiples of the bound: easy below the first, hard above the second "
               "(normal between, inclusive)")
_CONFIDENCE_HELP = ("ci: a reference must come from a confirm row whose 95% CI low end is at or above the "
                    "request (else the task is unconfirmed); median: its median alone must reach it")


def _open(lake: str):
    from codegen.lake import LakeError, open_lake

    try:
        return open_lake(lake)
    except LakeError as e:
        raise fail(str(e)) from None


# `bounds` shows these by default (config, method, speedup [CI], loss, tag); --wide shows _BOUND_COLUMNS.
_COMPACT = ("config", "method", "speedup [95% CI]", "loss", "tag")
_BOUND_COLUMNS = ("device_kind", "device", "model", "scheduler", "steps", "resolution", "method", "speedup",
                  "speedup_ci_low", "speedup_ci_high", "quality_loss", "tag", "trial_key", "n_ok", "n_in_budget")
_PARETO_COLUMNS = ("device_kind", "model", "scheduler", "steps", "resolution", "method", "speedup",
                   "quality_loss", "tag", "trial_key")


def _config_name(row) -> str:
    """'H200 sd15 ddim 50s 512px': one config, short enough for a terminal column."""
    res = f"{int(row['resolution'])}px" if row.get("resolution") == row.get("resolution") and \
        row.get("resolution") is not None else "?px"
    return f"{row.get('device_kind') or '?'} {row['model']} {row['scheduler']} {int(row['steps'])}s {res}"


def _config_key(row) -> tuple:
    """A config's columns, NaN (pandas' missing value) read as None so that it equals itself."""
    return tuple(None if isinstance(v, float) and v != v else v
                 for v in (row.get(c) for c in ("device_kind", "model", "scheduler", "steps", "resolution", "method")))


def _compact(df):
    import pandas as pd

    def ci(r) -> str:
        lo, hi = r.get("speedup_ci_low"), r.get("speedup_ci_high")
        if lo is None or hi is None or lo != lo or hi != hi:
            return f"{r['speedup']:.2f}×"
        return f"{r['speedup']:.2f}× [{lo:.2f}–{hi:.2f}]"

    records = [{"config": _config_name(r), "method": r["method"], "speedup [95% CI]": ci(r),
                "loss": f"{r['quality_loss']:.4g}", "tag": r["tag"]} for r in df.to_dict("records")]
    return pd.DataFrame(records, columns=list(_COMPACT))


def _emit(df, fmt: str) -> None:
    from codegen.query import write_frame  # loaded by the commands that print tables only

    if fmt != "table":
        write_frame(df, fmt)
    elif df.empty:
        typer.echo("(none)")
    else:
        typer.echo(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def bounds_cmd(
    lake: str = typer.Option(..., "--lake", help="lake folder or pyarrow.fs URI"),
    budget: float = typer.Option(DEFAULT_BUDGET, help="largest quality loss allowed"),
    metric: str = typer.Option(DEFAULT_METRIC, help="quality metric of the budget: ssim, clip or judge"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
    pareto: bool = typer.Option(False, "--pareto", help="print the Pareto front of each config instead"),
    wide: bool = typer.Option(False, "--wide", help="every column (the table shows config, method, "
                                                      "speedup [CI], loss and tag; csv/json always show all)"),
) -> None:
    """The highest speedup within a quality budget per config and GPU kind (or the Pareto fronts)."""
    from codegen.lake import LakeError
    from codegen.query import FORMATS

    _choice(fmt, FORMATS, "--format")
    lk = _open(lake)
    try:
        df = lk.pareto(metric=metric) if pareto else lk.bounds(budget=budget, metric=metric)
    except LakeError as e:
        raise fail(str(e)) from None
    cols = [c for c in (_PARETO_COLUMNS if pareto else _BOUND_COLUMNS) if c in df.columns]
    if fmt == "table" and not wide:
        _emit(_compact(df), fmt)
    else:
        _emit(df[cols], fmt)
    # A non-finite speedup or loss is no measurement (an overflowed row): `sweep.bounds`
    # leaves it out of every bound, and it is named here so it can be swept again.
    for r in lk.sql(f"SELECT * FROM trials WHERE status = '{OK}' AND NOT (isfinite(speedup) AND "
                    f"isfinite(quality_loss_{metric})) ORDER BY trial_key").to_dict("records"):
        typer.echo(f"{_config_name(r)} {r['method']}: point {r.get('trial_key')} holds a non-finite speedup or "
                   f"loss ({r['speedup']!r}, {r[f'quality_loss_{metric}']!r}), not a measurement: "
                   "sweep it again", err=True)
    if not pareto:
        every = lk.sql("SELECT DISTINCT device_kind, model, scheduler, steps, resolution, method FROM trials "
                       "ORDER BY ALL")
        have = {_config_key(r) for r in df.to_dict("records")}
        none = [r for r in every.to_dict("records") if _config_key(r) not in have]
        if none:
            typer.echo(f"{len(none)} of {len(every)} config(s) have no ok point within {budget:g} ({metric}); "
                       "see --pareto for what they reach:", err=True)
            for r in none:
                typer.echo(f"  {_config_name(r)} {r['method']}", err=True)


def tasks_cmd(
    lake: str = typer.Option(..., "--lake", help="lake folder or pyarrow.fs URI"),
    out: Path = typer.Option(..., "--out", help="folder for tasks.jsonl (and missing-spec*.yaml)"),
    budget: float = typer.Option(DEFAULT_BUDGET, help="largest quality loss allowed"),
    metric: str = typer.Option(DEFAULT_METRIC, help="quality metric of the budget: ssim, clip or judge"),
    scales: str = typer.Option(",".join(map(str, DEFAULT_SCALES)),
                               help="multiples of each config's bound: <1 easy, 1 normal, >1 hard"),
    strategy: str = typer.Option("lake", help="lake: the configs the lake holds; grid: every config of --spec"),
    spec: Path = typer.Option(None, "--spec", help="sweep spec whose axes --strategy grid covers"),
    policy: str = typer.Option(DEFAULT_POLICY, help="closest, min-loss or max-speedup (see codegen.policy)"),
    confidence: str = typer.Option(DEFAULT_CONFIDENCE, help=_CONFIDENCE_HELP),
    bands: str = typer.Option(",".join(map(str, DEFAULT_BANDS)), help=_BANDS_HELP),
) -> None:
    """Benchmark tasks from the lake's bounds: one per config and scale, with reference parameters."""
    from codegen.lake import LakeError
    from codegen.tasks import (
        build_tasks,
        grid_configs,
        missing_specs,
        parse_bands,
        parse_scales,
        read_trials,
        write_tasks,
    )
    from sweep.catalog import ConfigError

    _choice(strategy, STRATEGIES, "--strategy")
    _choice(policy, POLICIES, "--policy")
    _choice(confidence, CONFIDENCES, "--confidence")
    _out_folder(out)
    grid = sweep_spec = None
    try:
        scale_values = parse_scales(scales)
        band_edges = parse_bands(bands)
        if strategy == "grid":
            if spec is None:
                raise fail("--strategy grid needs --spec SPEC: the sweep spec whose axes to cover")
            from sweep.spec import load

            sweep_spec = load(spec)
            grid = grid_configs(sweep_spec)
        elif spec is not None:
            raise fail("--spec is only read by --strategy grid: add --strategy grid or drop --spec")
        lk = _open(lake)
        trials = read_trials(lk)
        lk.close()  # before build_tasks forks its workers: a forked child would lack DuckDB's threads
        tasks = build_tasks(trials, budget=budget, metric=metric, scales=scale_values, policy=policy,
                            grid=grid, workers=None, confidence=confidence, bands=band_edges)
        path = write_tasks(out / "tasks.jsonl", tasks)
    except (ConfigError, LakeError) as e:
        raise fail(str(e)) from None
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
            typer.echo(f"configs the lake lacks -> {out / name} "
                       f"(run: diffaccel sweep {out / name} --lake {lake})")


def codegen_cmd(
    tasks: Path = typer.Option(None, "--tasks", help="tasks.jsonl written by `diffaccel tasks`"),
    task: str = typer.Option(None, "--task", help="one task in plain English (needs --lake)"),
    lake: str = typer.Option(None, "--lake", help="lake to answer --task from"),
    out: Path = typer.Option(..., "--out", help="folder for scripts/, manifest.json, search_params.json"),
    policy: str = typer.Option(DEFAULT_POLICY, help="for --task: closest, min-loss or max-speedup"),
    confidence: str = typer.Option(DEFAULT_CONFIDENCE, help="for --task: " + _CONFIDENCE_HELP),
    bands: str = typer.Option(",".join(map(str, DEFAULT_BANDS)), help="for --task: " + _BANDS_HELP),
    strict: bool = typer.Option(False, "--strict",
                                help="exit 1 when a task is malformed, missing, unconfirmed or infeasible "
                                     "(open tasks, beyond every known point, are expected)"),
) -> None:
    """Render one runnable script per feasible task; record every other task with its reason."""
    from codegen.scripts import write_batch
    from codegen.tasks import read_tasks, read_trials, task_for_request
    from codegen.texts import parse
    from sweep.catalog import ConfigError

    _choice(policy, POLICIES, "--policy")
    _choice(confidence, CONFIDENCES, "--confidence")
    _out_folder(out)
    if (tasks is None) == (task is None):
        raise fail("pass either --tasks FILE or --task TEXT (with --lake)")
    try:
        if task is not None:
            if lake is None:
                raise fail("--task needs --lake L: the lake to find the parameters in")
            from codegen.lake import LakeError  # only --task reads a lake (and needs DuckDB)
            from codegen.tasks import parse_bands

            req = parse(task)
            try:
                items = [task_for_request(read_trials(_open(lake)), req, policy=policy, confidence=confidence,
                                          bands=parse_bands(bands))]
            except LakeError as e:
                raise fail(str(e)) from None
            t = items[0]
            if t.band is not None:
                edges = parse_bands(bands)
                typer.echo(f"band: {t.band} ({t.requested_speedup:.2f}× against the bound {t.bound:.3f}×: easy "
                           f"below {edges[0]:g}×, hard above {edges[1]:g}× the bound); status: {t.status}")
        else:
            if lake is not None:
                raise fail("--lake is only read with --task; a tasks file already holds its answers")
            items = list(read_tasks(tasks))
    except ConfigError as e:
        raise fail(str(e)) from None
    try:
        result = write_batch(items, out, write_tasks_file=task is not None, workers=None)
    except ConfigError as e:
        raise fail(str(e)) from None
    typer.echo(result.summary())
    for e in result.entries:
        if e["status"] == "malformed":
            typer.echo(f"  malformed {e.get('task_id') or 'line ' + str(e.get('line'))}: {e['reason']}", err=True)
    if strict and result.failed():
        raise typer.Exit(1)


__all__ = ["bounds_cmd", "codegen_cmd", "tasks_cmd"]
