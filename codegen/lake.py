"""Reading the lake: DuckDB views and pandas frames, and the SQL of bounds and Pareto
fronts that query, report and bounds use. What a bound is and which row of a trial key
to believe are defined once, in `sweep.bounds`; the SQL here is written from it.

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
    one row per ``trial_key``, the row to believe (`sweep.bounds`): a ``confirm`` row
    beats a ``screen`` row, then the latest ``finished_at``, then ``started_at`` wins
    (the rare race of two drivers writing the same key).
``baselines``
    one row per ``baseline_key``, latest ``created_at`` wins.
``bounds`` / ``bounds_at(budget, metric)``
    per `BOUND_GROUP` (device_kind, model, scheduler, steps, resolution, method): the
    ``status='ok'`` trial with a finite speedup and loss (`sweep.bounds.measured`), the
    highest ``speedup`` and a loss in `metric` at most `budget`; ties on speedup go to
    the lower loss, then the smaller trial_key. The row is the whole winning trial, plus
    ``metric``, ``budget``, ``quality_loss`` (the loss in `metric`), ``n_ok`` (measured
    ok trials of the config, i.e. with a finite speedup and loss in `metric`) and
    ``n_in_budget``. A config with no ok point within budget is ABSENT from bounds
    (compare with ``SELECT DISTINCT ... FROM trials`` to list those).
    ``bounds`` is ``bounds_at(0.02, 'ssim')``.
``pareto`` / ``pareto_at(metric)``
    per BOUND_GROUP, the measured ok trials no other such trial beats on both axes (speedup at least
    as high and loss at least as low, one strictly). Identical (speedup, loss) points
    are listed once, the smaller trial_key standing for them. Sorted by group, then by
    rising loss (and so rising speedup). Plus ``metric`` and ``quality_loss``.
    ``pareto`` is ``pareto_at('ssim')``.

The files are listed by `sweep.lake.LakeReader`, the one reader of stored files that a
resumed sweep uses too: files the lake should not hold are skipped with a `LakeWarning`
that names them (or raise `LakeError` with ``on_bad_file="error"``). Reading never writes
into the lake; ``open_lake(..., sandbox=True)`` (what `diffaccel query` uses) also makes
the DuckDB database unable to touch any file once it holds the lake.

Local lakes are read by DuckDB straight from the files. Other filesystems are read
through pyarrow into Arrow and handed to DuckDB; the SQL over them is the same.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

from sweep.bounds import BELIEVE_SQL, BOUND_SQL_FILTER, DEFAULT_BUDGET, DEFAULT_METRIC
from sweep.lake import LakeError, LakeReader, LakeTable, LakeWarning
from sweep.lake_schema import (
    BASELINE_PARTITIONS,
    BASELINE_SCHEMA,
    BASELINES_DIR,
    BOUND_GROUP,
    BUDGET_METRICS,
    OK,
    SWEEP_SCHEMA,
    TRIAL_PARTITIONS,
    TRIAL_SCHEMA,
    TRIALS_DIR,
)

if TYPE_CHECKING:  # DuckDB imports pandas itself when a frame is asked for
    import pandas as pd



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


def _loss_expr(metric_param: str) -> str:
    """`quality_loss_<metric>` for a metric given as a SQL value, or a clear error."""
    whens = " ".join(f"WHEN {_literal(m)} THEN {_ident('quality_loss_' + m)}" for m in BUDGET_METRICS)
    allowed = ", ".join(BUDGET_METRICS)
    return (f"CASE {metric_param} {whens} ELSE error('unknown metric ' || {metric_param} || "
            f"': use one of {allowed}') END")


_GROUP = ", ".join(_ident(c) for c in BOUND_GROUP)

# The single definition of bounds and Pareto fronts. Both work on `_trials_keys` (the
# deduplicated rows, few columns, built once per opened lake) and fetch whole rows only
# for the winners: carrying all ~80 columns through a sort is what makes a million rows
# slow. Group columns may be NULL (an old row without device_kind, say); GROUP BY and
# window partitions treat NULLs as one group, as wanted.
_POINTS = f"""
    SELECT _file, _row, {_GROUP}, trial_key, speedup, quality_loss FROM (
        SELECT *, {_loss_expr('metric')} AS quality_loss
        FROM _trials_keys
        WHERE status = '{OK}'
    ) WHERE {BOUND_SQL_FILTER}"""

_T_GROUP = ", ".join("t." + _ident(c) for c in BOUND_GROUP)
_ON = " AND ".join(f"p.{_ident(c)} IS NOT DISTINCT FROM b.{_ident(c)}" for c in BOUND_GROUP)
# Loss buckets per unit of loss for the Pareto pre-filter (any width is exact; this one
# suits losses in [0, 1]).
_BUCKETS = 1000

_MACROS = f"""
CREATE OR REPLACE MACRO bounds_at(budget, metric) AS TABLE
WITH per_config AS (
    SELECT {_GROUP},
           -- the fastest point within budget; ties: lower loss, then smaller trial_key
           -- (`sweep.bounds.bound_order`; tests/test_bounds.py proves the two agree)
           arg_min({{'_file': _file, '_row': _row, 'loss': quality_loss}},
                   {{'s': -speedup, 'l': quality_loss, 'k': trial_key}})
               FILTER (WHERE quality_loss <= budget) AS _win,
           count(*) AS n_ok,
           count(*) FILTER (WHERE quality_loss <= budget) AS n_in_budget
    FROM ({_POINTS})
    GROUP BY {_GROUP}
)
SELECT t.* EXCLUDE (_file, _row), metric AS metric, CAST(budget AS DOUBLE) AS budget,
       c._win.loss AS quality_loss, c.n_ok, c.n_in_budget
FROM per_config AS c JOIN _trials_wide AS t ON t._file = c._win._file AND t._row = c._win._row
ORDER BY {_T_GROUP};

CREATE OR REPLACE MACRO pareto_at(metric) AS TABLE
WITH points AS (
    SELECT *, floor(quality_loss * {_BUCKETS}) AS _bucket FROM ({_POINTS})
), buckets AS (
    -- Sorting every point is the slow part, so first drop the points a coarser look
    -- already rules out: one slower than the fastest point of a lower loss bucket
    -- (whose losses are all strictly lower) is dominated. What is left is exact below.
    SELECT {_GROUP}, _bucket,
           max(max(speedup)) OVER (PARTITION BY {_GROUP} ORDER BY _bucket
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS _lower_best
    FROM points GROUP BY {_GROUP}, _bucket
), candidates AS (
    SELECT p.* FROM points AS p JOIN buckets AS b ON {_ON} AND p._bucket = b._bucket
    WHERE b._lower_best IS NULL OR p.speedup > b._lower_best
), ordered AS (
    SELECT _file, _row, quality_loss, speedup,
           -- In the order (loss up, speedup down, key up), a point is on the front when it
           -- is faster than every point before it: those have a lower loss, or the same
           -- loss and at least its speed (identical points: the smaller key stands for them).
           max(speedup) OVER (PARTITION BY {_GROUP} ORDER BY quality_loss ASC, speedup DESC, trial_key ASC
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS _before
    FROM candidates
)
SELECT t.* EXCLUDE (_file, _row), metric AS metric, o.quality_loss
FROM ordered AS o JOIN _trials_wide AS t ON t._file = o._file AND t._row = o._row
WHERE o._before IS NULL OR o.speedup > o._before
ORDER BY {_T_GROUP}, o.quality_loss ASC, o.speedup ASC;

CREATE OR REPLACE VIEW bounds AS SELECT * FROM bounds_at({DEFAULT_BUDGET}, {_literal(DEFAULT_METRIC)});
CREATE OR REPLACE VIEW pareto AS SELECT * FROM pareto_at({_literal(DEFAULT_METRIC)});
"""


# Of several rows for one key, the one to believe.
_TRIAL_LATEST = BELIEVE_SQL  # the row to believe of a trial key: `sweep.bounds`
# Columns the reader adds to find a row again; never shown.
_HIDDEN = ("_file", "file_row_number", "_row")


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


class LakeDB:
    """A lake opened for analysis in DuckDB. Build with `open_lake`.

    The files are listed once, at opening, by `sweep.lake.LakeReader` (the same safe
    listing a resumed sweep uses); the views read those files.
    """

    def __init__(self, uri: str, *, filesystem: pafs.FileSystem | None = None,
                 on_bad_file: Literal["warn", "error"] = "warn", sandbox: bool = False):
        self.reader = LakeReader(uri, filesystem=filesystem, on_bad_file=on_bad_file)
        self.uri, self.fs, self.root, self.local = uri, self.reader.fs, self.reader.root, self.reader.local
        self.sandbox = sandbox
        kind = self.reader.root_type()
        if kind == pafs.FileType.NotFound:
            raise LakeError(f"no lake at {uri!r}: the folder does not exist. Check the path, or write "
                            "one with `diffaccel sweep SPEC --lake PATH`")
        if kind != pafs.FileType.Directory:
            raise LakeError(f"{uri!r} is a file, not a lake folder: pass the folder that holds "
                            f"{TRIALS_DIR}/ and {BASELINES_DIR}/")
        self.trials_table = self.reader.scan(TRIALS_DIR)
        self.baselines_table = self.reader.scan(BASELINES_DIR)
        if self.trials_table is None and self.baselines_table is None:
            raise LakeError(f"{uri!r} holds no {TRIALS_DIR}/ or {BASELINES_DIR}/ folder, so it is not a "
                            "diffaccel lake: pass the folder given to `diffaccel sweep --lake`")
        self._db: duckdb.DuckDBPyConnection | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    # ------------------------------------------------------------------ DuckDB
    def _projection(self, table: LakeTable, only: tuple[str, ...] | None = None) -> str:
        """Every schema column in schema order (NULL where no file has it), then extras."""
        cols = []
        for f in table.schema:
            if only is not None and f.name not in only:
                continue
            typ = _duck_type(f.type)
            if f.name in table.columns or (f.name in table.partitions and table.files):
                cols.append(f"CAST({_ident(f.name)} AS {typ}) AS {_ident(f.name)}")
            else:
                cols.append(f"CAST(NULL AS {typ}) AS {_ident(f.name)}")
        if only is None:
            cols += [_ident(n) for n in table.columns
                     if n not in table.schema.names and n not in table.partitions and n not in _HIDDEN]
        return ", ".join(cols)

    def _raw_source(self, con: duckdb.DuckDBPyConnection, table: LakeTable) -> str:
        """A FROM clause over every accepted file of `table`, with each row's file and
        row number (`_file`, `file_row_number`) so a row can be found again cheaply."""
        if not table.files:
            return ("(SELECT CAST(NULL AS VARCHAR) AS _file, CAST(NULL AS BIGINT) AS file_row_number) "
                    "AS empty WHERE false")
        name = f"_{table.name}_copy"
        if self.local:
            files = ", ".join(_literal(p) for p in table.files)
            hive_types = ", ".join(f"{_literal(p)}: 'VARCHAR'" for p in table.partitions)
            scan = (f"read_parquet([{files}], hive_partitioning = true, union_by_name = true, "
                    f"hive_types = {{{hive_types}}}, hive_types_autocast = false, "
                    f"filename = '_file', file_row_number = true)")
            if not self.sandbox:
                return scan
            # A sandboxed database may touch no file once set up, so it keeps a copy.
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {scan}")
            return name
        # Not local: read through pyarrow and keep a copy in the database, which every
        # connection of this lake shares (a registered Arrow object would be one's only).
        con.register("_arrow_in", self._arrow(table))
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _arrow_in")
        con.unregister("_arrow_in")
        return name

    def _arrow(self, table: LakeTable) -> pa.Table:
        parts = []
        for path in table.files:
            t = self.reader.read_file(table, path)
            if t is None:  # its footer read but its data does not; skipped and named
                continue
            t = t.append_column("_file", pa.array([path] * t.num_rows, pa.string()))
            t = t.append_column("file_row_number", pa.array(range(t.num_rows), pa.int64()))
            parts.append(t)
        if not parts:
            return pa.table({"_file": pa.array([], pa.string()), "file_row_number": pa.array([], pa.int64())})
        return pa.concat_tables(parts, promote_options="permissive")

    def _setup(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        con.execute("SET TimeZone = 'UTC'")
        specs = (
            (self.trials_table, TRIALS_DIR, TRIAL_SCHEMA, TRIAL_PARTITIONS, "trial_key", _TRIAL_LATEST,
             ("trial_key", "status", "speedup", *BOUND_GROUP, *(f"quality_loss_{m}" for m in BUDGET_METRICS),
              "phase", "finished_at", "started_at")),
            (self.baselines_table, BASELINES_DIR, BASELINE_SCHEMA, BASELINE_PARTITIONS, "baseline_key",
             "created_at DESC NULLS LAST", ("baseline_key", "created_at")),
        )
        for table, name, schema, parts, key, latest, narrow in specs:
            if table is None:  # a lake with baselines only, or trials only
                table = LakeTable(name, schema, parts, key)
            raw = self._raw_source(con, table)
            con.execute(f"CREATE OR REPLACE VIEW _{name}_wide AS SELECT _file, file_row_number AS _row, "
                        f"{self._projection(table)} FROM {raw}")
            # A table, not a view: the lake is read as of opening (the file list is fixed
            # then), and every later query reuses this narrow index instead of sorting again.
            # Most keys are stored once; only the re-measured ones need sorting.
            con.execute(f"""
                CREATE OR REPLACE TABLE _{name}_keys AS
                WITH rows AS (SELECT _file, file_row_number AS _row, {self._projection(table, narrow)} FROM {raw}),
                     again AS (SELECT {_ident(key)} FROM rows GROUP BY {_ident(key)} HAVING count(*) > 1)
                SELECT * FROM rows ANTI JOIN again USING ({_ident(key)})
                UNION ALL
                SELECT * FROM (SELECT * FROM rows SEMI JOIN again USING ({_ident(key)}))
                QUALIFY row_number() OVER (PARTITION BY {_ident(key)} ORDER BY {latest}) = 1""")
            con.execute(f"CREATE OR REPLACE VIEW {name}_all AS SELECT * EXCLUDE (_file, _row) FROM _{name}_wide")
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * EXCLUDE (_file, _row) FROM _{name}_wide "
                        f"WHERE (_file, _row) IN (SELECT (_file, _row) FROM _{name}_keys)")
        con.execute(_MACROS)
        if self.sandbox:
            # Arbitrary SQL (`diffaccel query`) runs here: no COPY ... TO, no ATTACH, no
            # reading files beyond the lake's copy above, and no way to undo that.
            # Settings lock too, so connections made later inherit UTC from here.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        return con

    def connect(self, budget: float = DEFAULT_BUDGET, metric: str = DEFAULT_METRIC) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection with the lake's views and macros; its `bounds` and
        `pareto` views use `budget` and `metric`.

        Connections share one in-memory database per opened lake, so the views and the
        deduplicated index are built once.
        """
        budget, metric = check_budget(budget), check_metric(metric)
        if self._db is None:
            self._db = self._setup(duckdb.connect())
        cur = self._db.cursor()
        # Timestamps in the lake are UTC; show them so whatever the host's zone.
        if not self.sandbox:  # a sandbox's settings are locked, UTC among them
            cur.execute("SET TimeZone = 'UTC'")
        if (budget, metric) != (DEFAULT_BUDGET, DEFAULT_METRIC):
            # Temporary views belong to this connection alone and shadow the shared ones.
            # Both values are checked above, so writing them into SQL is safe.
            cur.execute(f"CREATE TEMP VIEW bounds AS SELECT * FROM bounds_at({budget!r}, {_literal(metric)})")
            cur.execute(f"CREATE TEMP VIEW pareto AS SELECT * FROM pareto_at({_literal(metric)})")
        return cur

    def close(self) -> None:
        """Close the lake's DuckDB database (and with it every connection from `connect`,
        and DuckDB's worker threads). Querying again opens it anew."""
        for con in (self._con, self._db):
            if con is not None:
                con.close()
        self._con = self._db = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = self.connect()
        return self._con

    # ------------------------------------------------------------------ pandas
    def sql(self, query: str, params: list | None = None) -> pd.DataFrame:
        return self.con.execute(query, params or []).df()

    def trials(self) -> pd.DataFrame:
        """One row per trial_key: the row to believe (`sweep.bounds`)."""
        return self.sql("SELECT * FROM trials ORDER BY trial_key")

    def trials_all(self) -> pd.DataFrame:
        return self.sql("SELECT * FROM trials_all")

    def baselines(self) -> pd.DataFrame:
        return self.sql("SELECT * FROM baselines ORDER BY baseline_key")

    def sweeps(self) -> pd.DataFrame:
        """One row per recorded sweep run (`lake_schema.SWEEP_SCHEMA`), oldest first."""
        import pandas as pd

        return pd.DataFrame(self.reader.sweeps(), columns=SWEEP_SCHEMA.names)

    def unbounded(self, budget: float = DEFAULT_BUDGET, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
        """The configs (`BOUND_GROUP`) with trials but no ok point within `budget`: the
        complement of `bounds` among ``SELECT DISTINCT BOUND_GROUP FROM trials``, the
        definition `diffaccel bounds` counts by."""
        group = ", ".join(_ident(c) for c in BOUND_GROUP)
        return self.sql(f"SELECT DISTINCT {group} FROM trials EXCEPT SELECT {group} FROM bounds_at(?, ?) "
                        f"ORDER BY {group}", [check_budget(budget), check_metric(metric)])

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
              on_bad_file: Literal["warn", "error"] = "warn", sandbox: bool = False) -> LakeDB:
    """Open a lake for reading: a local folder or a pyarrow.fs URI (file://, s3://, gs://).

    `filesystem` reads `uri` as a path on an already-built pyarrow filesystem. Bad files
    are skipped with a `LakeWarning` naming them, or raise `LakeError` with
    ``on_bad_file="error"``. A missing or unreachable lake raises `LakeError`.
    `sandbox` copies the lake into DuckDB and then forbids every file access, so SQL
    from a user can neither write files nor read beyond the lake.
    """
    return LakeDB(uri, filesystem=filesystem, on_bad_file=on_bad_file, sandbox=sandbox)


__all__ = ["DEFAULT_BUDGET", "DEFAULT_METRIC", "LakeDB", "LakeError", "LakeWarning", "check_budget",
           "check_metric", "open_lake"]
