"""`diffaccel query`: SQL over the lake, through the views `codegen.lake` sets up.

    diffaccel query --lake lake "SELECT method, max(speedup) FROM bounds GROUP BY method"
    diffaccel query --lake lake --format csv --budget 0.05 --metric clip "SELECT * FROM bounds"

Views: trials, trials_all, baselines, baselines_all, bounds, pareto; table macros
bounds_at(budget, metric) and pareto_at(metric). See docs/lake.md.

The SQL runs on a sandboxed copy of the lake: DuckDB's file access is turned off (and
locked) once the views are built, so a query can neither write into the lake nor read
files beside it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from sweep.bounds import DEFAULT_BUDGET, DEFAULT_METRIC
from sweep.exits import fail

if TYPE_CHECKING:  # the frames come from DuckDB, which imports pandas itself
    import pandas as pd

# Output formats of the commands that print tables (query, bounds).
FORMATS = ("table", "csv", "json")


def write_frame(df: pd.DataFrame, fmt: str, out=None) -> None:
    """A query result as an aligned table, CSV or JSON records (ISO times, null for NaN)."""
    out = out or sys.stdout
    if fmt == "csv":
        out.write(df.to_csv(index=False))
    elif fmt == "json":
        out.write(df.to_json(orient="records", date_format="iso", indent=2) + "\n")
    elif df.empty:
        out.write(f"(no rows; columns: {', '.join(map(str, df.columns))})\n")
    else:
        out.write(df.to_string(index=False, max_colwidth=60, float_format=lambda x: f"{x:.4g}") + "\n")
        out.write(f"({len(df)} row{'s' if len(df) != 1 else ''})\n")


def query_cmd(
    sql: str = typer.Argument(..., help="DuckDB SQL over the views trials, baselines, bounds, pareto, ..."),
    lake: str = typer.Option(..., "--lake", help="lake folder or pyarrow.fs URI (file://, s3://, ...)"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
    budget: float = typer.Option(DEFAULT_BUDGET, help="quality budget of the `bounds` view"),
    metric: str = typer.Option(DEFAULT_METRIC, help="quality metric of the `bounds` and `pareto` views: ssim, clip or judge"),
    strict: bool = typer.Option(False, help="fail on a file the lake should not hold instead of skipping it"),
) -> None:
    """Run SQL over the lake (views trials, trials_all, baselines, bounds, pareto)."""
    import warnings

    import duckdb

    from codegen.lake import LakeError, LakeWarning, open_lake

    if fmt not in FORMATS:
        raise fail(f"--format {fmt!r} is unknown: use one of {', '.join(FORMATS)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LakeWarning)
        try:
            # sandbox: the SQL is the user's; it may read the lake and nothing else
            con = open_lake(lake, on_bad_file="error" if strict else "warn", sandbox=True).connect(
                budget=budget, metric=metric)
        except LakeError as err:
            raise fail(str(err)) from None
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    try:
        df = con.execute(sql).df()
    except duckdb.PermissionException as err:
        raise fail(f"query only reads the lake: it cannot write files (COPY ... TO, EXPORT, ATTACH) or read "
                   f"files outside the lake ({' '.join(str(err).split())}). To save a result, use --format "
                   "csv or json and redirect the output") from None
    except duckdb.Error as err:
        raise fail(f"the query failed: {err}\nViews: trials, trials_all, baselines, baselines_all, bounds, "
                   "pareto; macros bounds_at(budget, metric), pareto_at(metric). See docs/lake.md.") from None
    write_frame(df, fmt)
