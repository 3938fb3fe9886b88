"""Reading the lake: DuckDB views and pandas frames, and the one definition of bounds
and Pareto fronts that everything else (query, report, tasks) uses.

    from codegen.lake import open_lake
    lk = open_lake("lake")             # a folder, file://..., s3://... (any pyarrow.fs URI)
    lk.trials()                        # one row per trial_key
    lk.bounds(budget=0.02, metric="ssim")
    lk.pareto(metric="ssim")
    con = lk.connect()                 # DuckDB with views trials, trials_all, baselines,
                                       # bounds, pareto and macros bounds_at, pareto_at

Views (all columns of `sweep.lake_schema`, in its order, then any extra columns a file
holds, such as a column only one method writes):

``trials_all``
    every stored trial row, re-measurements included.
``trials``
    one row per ``trial_key``: a ``confirm`` row beats a ``screen`` row, then the latest
    ``finished_at`` wins (the rare race of two drivers writing the same key).
``baselines``
    one row per ``baseline_key``, latest ``created_at`` wins.
``bounds`` / ``bounds_at(budget, metric)``
    per `BOUND_GROUP` (device_kind, model, scheduler, steps, resolution, method): the
    ``status='ok'`` trial with the highest ``speedup`` whose loss in `metric` is at most
    `budget`; ties on speedup go to the lower loss, then the smaller trial_key. The row
    is the whole winning trial, plus ``metric``, ``budget``, ``quality_loss`` (the loss in
    `metric`), ``n_ok`` (ok trials of the config with a loss in `metric`) and
    ``n_in_budget``. A config with no ok point within budget is ABSENT from bounds
    (compare with ``SELECT DISTINCT ... FROM trials`` to list those).
    ``bounds`` is ``bounds_at(0.02, 'ssim')``.
``pareto`` / ``pareto_at(metric)``
    per BOUND_GROUP, the ok trials no other ok trial beats on both axes (speedup at least
    as high and loss at least as low, one strictly). Identical (speedup, loss) points
    are listed once, the smaller trial_key standing for them. Sorted by group, then by
    rising loss (and so rising speedup). Plus ``metric`` and ``quality_loss``.
    ``pareto`` is ``pareto_at('ssim')``.

Files the lake should not hold are skipped with a `LakeWarning` that names them (or
raise `LakeError` with ``on_bad_file="error"``): unreadable or corrupt Parquet, Parquet
files with no ``trial_key`` / ``baseline_key`` or a known column of the wrong kind, and
Parquet outside ``key=value`` partition folders. Reading never writes into the lake.

Local lakes are read by DuckDB straight from the files. Other filesystems are read
through pyarrow into Arrow and handed to DuckDB; the SQL over them is the same.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Literal

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweep.lake_schema import (
    BASELINE_PARTITIONS,
    BASELINE_SCHEMA,
    BASELINES_DIR,
    BOUND_GROUP,
    BUDGET_METRICS,
    OK,
    TRIAL_PARTITIONS,
    TRIAL_SCHEMA,
    TRIALS_DIR,
)

DEFAULT_BUDGET = 0.02
DEFAULT_METRIC = "ssim"


class LakeError(ValueError):
    """The lake cannot be read as asked: the message names the problem and the fix."""


class LakeWarning(UserWarning):
    """A file in the lake was skipped; the message names it."""


# ----------------------------------------------------------------------------- SQL

def _ident(name: str) -> str:
    """A SQL identifier, quoted so any column name a file carries is safe."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    raise TypeError(f"no DuckDB type for {t}")  # the schema only uses the kinds above


def _kind(t: pa.DataType) -> str:
    """Coarse kind of a column, to tell a foreign file from an older or newer one."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "time"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def _loss_expr(metric_param: str) -> str:
    """`quality_loss_<metric>` for a metric given as a SQL value, or a clear error."""
    whens = " ".join(f"WHEN {_literal(m)} THEN {_ident('quality_loss_' + m)}" for m in BUDGET_METRICS)
    allowed = ", ".join(BUDGET_METRICS)
    return (f"CASE {metric_param} {whens} ELSE error('unknown metric ' || {metric_param} || "
            f"': use one of {allowed}') END")


_GROUP = ", ".join(_ident(c) for c in BOUND_GROUP)

# The single definition of bounds and Pareto fronts. Group columns may be NULL (an old
# row without device_kind, say); window partitions treat NULLs as one group, as wanted.
_MACROS = f"""
CREATE OR REPLACE MACRO bounds_at(budget, metric) AS TABLE
SELECT * EXCLUDE (_rank) FROM (
    SELECT *,
           row_number() OVER (PARTITION BY {_GROUP}
                              ORDER BY speedup DESC, quality_loss ASC, trial_key ASC) AS _rank,
           count(*) FILTER (WHERE quality_loss <= budget) OVER (PARTITION BY {_GROUP}) AS n_in_budget
    FROM (
        SELECT *, metric AS metric, CAST(budget AS DOUBLE) AS budget,
               {_loss_expr('metric')} AS quality_loss,
               count(*) OVER (PARTITION BY {_GROUP}) AS n_ok
        FROM trials
        WHERE status = '{OK}' AND speedup IS NOT NULL AND {_loss_expr('metric')} IS NOT NULL
    )
    WHERE quality_loss <= budget
)
WHERE _rank = 1
ORDER BY {_GROUP};

CREATE OR REPLACE MACRO pareto_at(metric) AS TABLE
SELECT * EXCLUDE (_before, _best_here, _best_before, _first_here) FROM (
    SELECT *,
           -- best speedup at strictly lower loss: the running maximum seen just before
           -- the first (fastest) point at this loss
           first_value(_before) OVER (PARTITION BY {_GROUP}, quality_loss
                                      ORDER BY speedup DESC, trial_key ASC) AS _best_before
    FROM (
        SELECT *,
               max(speedup) OVER (PARTITION BY {_GROUP} ORDER BY quality_loss ASC, speedup DESC, trial_key ASC
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS _before,
               max(speedup) OVER (PARTITION BY {_GROUP}, quality_loss) AS _best_here,
               row_number() OVER (PARTITION BY {_GROUP}, quality_loss, speedup ORDER BY trial_key) AS _first_here
        FROM (
            SELECT *, metric AS metric, {_loss_expr('metric')} AS quality_loss
            FROM trials
            WHERE status = '{OK}' AND speedup IS NOT NULL AND {_loss_expr('metric')} IS NOT NULL
        )
    )
)
WHERE speedup = _best_here AND _first_here = 1 AND (_best_before IS NULL OR speedup > _best_before)
ORDER BY {_GROUP}, quality_loss ASC, speedup ASC;

CREATE OR REPLACE VIEW bounds AS SELECT * FROM bounds_at({DEFAULT_BUDGET}, {_literal(DEFAULT_METRIC)});
CREATE OR REPLACE VIEW pareto AS SELECT * FROM pareto_at({_literal(DEFAULT_METRIC)});
"""


def check_metric(metric: str) -> str:
    if metric not in BUDGET_METRICS:
        raise LakeError(f"unknown quality metric {metric!r}: use one of {', '.join(BUDGET_METRICS)} "
                        f"(the lake's quality_loss_<metric> columns)")
    return metric


def check_budget(budget: float) -> float:
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise LakeError(f"budget={budget!r} is not a number: pass a quality loss such as 0.02") from None
    if not math.isfinite(value) or value < 0:
        raise LakeError(f"budget={budget!r} must be a finite quality loss >= 0, such as 0.02")
    return value


# --------------------------------------------------------------------------- files

@dataclass
class _Table:
    """What we know of one of the lake's tables (trials or baselines) after listing it."""

    name: str
    schema: pa.Schema
    partitions: tuple[str, ...]
    key: str
    files: list[str] = field(default_factory=list)
    # union of the file columns (name -> arrow type of the first file that has it)
    columns: dict[str, pa.DataType] = field(default_factory=dict)


def _partition_values(rel: str, partitions: tuple[str, ...]) -> dict[str, str] | None:
    parts = rel.split("/")[:-1]
    if len(parts) != len(partitions):
        return None
    values = {}
    for part, key in zip(parts, partitions, strict=True):
        k, sep, v = part.partition("=")
        if not sep or k != key or not v:
            return None
        values[k] = v
    return values


class Lake:
    """A lake opened for reading. Build with `open_lake`."""

    def __init__(self, uri: str, *, filesystem: pafs.FileSystem | None = None,
                 on_bad_file: Literal["warn", "error"] = "warn"):
        if on_bad_file not in ("warn", "error"):
            raise LakeError(f"on_bad_file={on_bad_file!r}: use 'warn' (skip and warn) or 'error'")
        self.uri = uri
        self.on_bad_file = on_bad_file
        if filesystem is not None:
            self.fs, self.root = filesystem, uri.rstrip("/") or "/"
        elif "://" in uri:
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(uri)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
                raise LakeError(f"cannot open lake URI {uri!r}: {err}. Use a local folder or a "
                                "pyarrow.fs URI such as file:///path or s3://bucket/prefix") from None
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            raise LakeError(f"no lake at {uri!r}: the folder does not exist. Check the path, or write "
                            "one with `diffaccel sweep SPEC --lake PATH`")
        if info.type != pafs.FileType.Directory:
            raise LakeError(f"{uri!r} is a file, not a lake folder: pass the folder that holds "
                            f"{TRIALS_DIR}/ and {BASELINES_DIR}/")
        self.trials_table = self._scan(TRIALS_DIR, TRIAL_SCHEMA, TRIAL_PARTITIONS, "trial_key")
        self.baselines_table = self._scan(BASELINES_DIR, BASELINE_SCHEMA, BASELINE_PARTITIONS, "baseline_key")
        if self.trials_table is None and self.baselines_table is None:
            raise LakeError(f"{uri!r} holds no {TRIALS_DIR}/ or {BASELINES_DIR}/ folder, so it is not a "
                            "diffaccel lake: pass the folder given to `diffaccel sweep --lake`")
        self._con: duckdb.DuckDBPyConnection | None = None

    # ------------------------------------------------------------------ listing
    def _bad(self, path: str, why: str) -> None:
        msg = f"{path}: {why}"
        if self.on_bad_file == "error":
            raise LakeError(f"cannot read the lake: {msg}")
        warnings.warn(f"skipping {msg}", LakeWarning, stacklevel=4)

    def _scan(self, subdir: str, schema: pa.Schema, partitions: tuple[str, ...], key: str) -> _Table | None:
        base = f"{self.root.rstrip('/')}/{subdir}"
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return None
        table = _Table(subdir, schema, partitions, key)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        known = {f.name: f.type for f in schema}
        for info in sorted(infos, key=lambda i: i.path):
            rel = info.path[len(base) + 1:]
            # Writers stage files as hidden .tmp files; folders and non-Parquet files are not data.
            if info.type != pafs.FileType.File or not rel.endswith(".parquet"):
                continue
            if any(part.startswith((".", "_")) for part in rel.split("/")):
                continue
            if _partition_values(rel, partitions) is None:
                want = "/".join(f"{p}=..." for p in partitions)
                self._bad(info.path, f"Parquet file outside the {subdir}/{want}/ partition folders; "
                                     "move it into its partition or out of the lake")
                continue
            try:
                with self.fs.open_input_file(info.path) as f:
                    fschema = pq.read_schema(f)
            except (pa.ArrowException, OSError) as err:
                self._bad(info.path, f"not a readable Parquet file ({err}); delete it or move it out "
                                     "of the lake")
                continue
            if key not in fschema.names:
                self._bad(info.path, f"a Parquet file with no {key!r} column, so not a {subdir} file of "
                                     "this lake; move it out of the lake")
                continue
            clash = [f"{f.name} is {f.type}, expected {known[f.name]}" for f in fschema
                     if f.name in known and _kind(f.type) not in (_kind(known[f.name]), "null")]
            if clash:
                self._bad(info.path, "columns of the wrong kind (" + "; ".join(clash) +
                          "), so not a file of this lake; move it out of the lake")
                continue
            table.files.append(info.path)
            for f in fschema:
                table.columns.setdefault(f.name, f.type)
        return table

    # ------------------------------------------------------------------ DuckDB
    def _projection(self, table: _Table) -> str:
        """Every schema column in schema order (NULL where no file has it), then extras."""
        cols = []
        for f in table.schema:
            typ = _duck_type(f.type)
            if f.name in table.columns or (f.name in table.partitions and table.files):
                cols.append(f"CAST({_ident(f.name)} AS {typ}) AS {_ident(f.name)}")
            else:
                cols.append(f"CAST(NULL AS {typ}) AS {_ident(f.name)}")
        cols += [_ident(n) for n in table.columns if n not in table.schema.names and n not in table.partitions]
        return ",\n       ".join(cols)

    def _raw_source(self, con: duckdb.DuckDBPyConnection, table: _Table) -> str:
        """A FROM clause over every accepted file of `table`."""
        if not table.files:
            return "(SELECT 1) AS empty WHERE false"
        if self.local:
            files = ", ".join(_literal(p) for p in table.files)
            hive_types = ", ".join(f"{_literal(p)}: 'VARCHAR'" for p in table.partitions)
            return (f"read_parquet([{files}], hive_partitioning = true, union_by_name = true, "
                    f"hive_types = {{{hive_types}}}, hive_types_autocast = false)")
        name = f"_{table.name}_arrow"
        con.register(name, self._arrow(table))
        return name

    def _arrow(self, table: _Table) -> pa.Table:
        base = f"{self.root.rstrip('/')}/{table.name}"
        parts = []
        for path in table.files:
            t = pq.read_table(path, filesystem=self.fs)
            for k, v in _partition_values(path[len(base) + 1:], table.partitions).items():
                if k not in t.column_names:
                    t = t.append_column(k, pa.array([v] * t.num_rows, pa.string()))
            parts.append(t)
        return pa.concat_tables(parts, promote_options="permissive")

    def _setup(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        # Timestamps in the lake are UTC; show them so whatever the host's zone.
        con.execute("SET TimeZone = 'UTC'")
        for table, latest in ((self.trials_table, "(phase = 'confirm') DESC NULLS LAST, "
                                                  "finished_at DESC NULLS LAST, started_at DESC NULLS LAST"),
                              (self.baselines_table, "created_at DESC NULLS LAST")):
            if table is None:  # a lake with baselines only, or trials only
                schema, parts, subdir, key = ((TRIAL_SCHEMA, TRIAL_PARTITIONS, TRIALS_DIR, "trial_key")
                                              if latest.startswith("(phase") else
                                              (BASELINE_SCHEMA, BASELINE_PARTITIONS, BASELINES_DIR, "baseline_key"))
                table = _Table(subdir, schema, parts, key)
            all_view = "trials_all" if table.name == TRIALS_DIR else "baselines_all"
            con.execute(f"CREATE OR REPLACE VIEW {all_view} AS\nSELECT {self._projection(table)}\n"
                        f"FROM {self._raw_source(con, table)}")
            con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM {all_view} "
                        f"QUALIFY row_number() OVER (PARTITION BY {_ident(table.key)} ORDER BY {latest}) = 1")
        con.execute(_MACROS)
        return con

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new in-memory DuckDB connection with the lake's views and macros."""
        return self._setup(duckdb.connect())

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = self.connect()
        return self._con

    # ------------------------------------------------------------------ pandas
    def sql(self, query: str, params: list | None = None) -> pd.DataFrame:
        return self.con.execute(query, params or []).df()

    def trials(self) -> pd.DataFrame:
        """One row per trial_key (confirm over screen, then latest finished_at)."""
        return self.sql("SELECT * FROM trials ORDER BY trial_key")

    def trials_all(self) -> pd.DataFrame:
        return self.sql("SELECT * FROM trials_all")

    def baselines(self) -> pd.DataFrame:
        return self.sql("SELECT * FROM baselines ORDER BY baseline_key")

    def bounds(self, budget: float = DEFAULT_BUDGET, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
        """Max speedup within `budget` per BOUND_GROUP (configs with none are absent)."""
        return self.sql("SELECT * FROM bounds_at(?, ?)", [check_budget(budget), check_metric(metric)])

    def pareto(self, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
        """Non-dominated ok trials per BOUND_GROUP, by rising loss."""
        return self.sql("SELECT * FROM pareto_at(?)", [check_metric(metric)])

    @property
    def files(self) -> list[str]:
        """The Parquet files the views read (after skipping bad ones)."""
        return [p for t in (self.trials_table, self.baselines_table) if t for p in t.files]


def open_lake(uri: str, *, filesystem: pafs.FileSystem | None = None,
              on_bad_file: Literal["warn", "error"] = "warn") -> Lake:
    """Open a lake for reading: a local folder or a pyarrow.fs URI (file://, s3://, gs://).

    `filesystem` reads `uri` as a path on an already-built pyarrow filesystem. Bad files
    are skipped with a `LakeWarning` naming them, or raise `LakeError` with
    ``on_bad_file="error"``. A missing lake raises `LakeError`.
    """
    return Lake(uri, filesystem=filesystem, on_bad_file=on_bad_file)


__all__ = ["DEFAULT_BUDGET", "DEFAULT_METRIC", "Lake", "LakeError", "LakeWarning", "check_budget",
           "check_metric", "open_lake"]
