"""The lake's IO: opening a URI, its partition folders, the safe listing and reading of
stored files, and the atomic writer. The one module that touches lake files; the sweep
(`LakeWriter`, and `LakeReader` for the keys it may skip) and the analysts
(`codegen.lake`, a DuckDB layer over `LakeReader`'s file list) both use it.

A lake is a local folder or any `pyarrow.fs` URI (``s3://bucket/prefix``,
``gs://...``). Each flush writes one new file per partition; nothing is ever rewritten
in place, so a crash loses at most the rows of the flush in flight and never leaves a
half-written file behind:

* local folders: the file is written as ``.part-<batch>.parquet.tmp`` and renamed, and
  readers only look at ``*.parquet``;
* object stores: one PUT of the finished file, which those stores make atomic.

Files a lake should not hold (truncated or corrupt Parquet, a foreign Parquet file, a
file outside the ``key=value`` partition folders) are skipped with a `LakeWarning` that
names them, or stop the reader with a `LakeError` (``on_bad_file="error"``, the CLI's
``--strict``). Resume and the analysts see exactly the same files.

A flush's files are named after its batch id (``part-<time>-<random>.parquet``). A batch
that failed to write is kept in the local spool (`sweep.spool`) under that id and later
landed under the same names, replacing any file of it that did get through: no row is
lost and none is duplicated. `LakeWriter.check_writable` probes a lake before a sweep starts.

Idempotence is by key: a resumed sweep skips the keys stored (`sweep.driver.
stored_outcomes`). A key holds a screen row and maybe a confirm row (and, after the rare
race of two drivers writing the same key, which the lake's lease `sweep.lease` prevents,
more); which of them a reader believes, and which a resumed sweep prunes from, is
defined in `sweep.bounds`. This module stores and lists rows; it picks none.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, TextIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweep.catalog import ConfigError
from sweep.lake_schema import (
    BASELINE_PARTITIONS,
    BASELINE_SCHEMA,
    BASELINES_DIR,
    SCHEMA_VERSION,
    SWEEP_PARTITIONS,
    SWEEP_SCHEMA,
    SWEEPS_DIR,
    TRIAL_PARTITIONS,
    TRIAL_SCHEMA,
    TRIALS_DIR,
    file_schema,
)

OnBadFile = Literal["warn", "error"]


class LakeError(ConfigError):
    """The lake cannot be opened or read as asked: the message names the problem and the fix.

    A `ConfigError`, so the sweep's CLI reports it as one line before any trial runs."""


class LakeWarning(UserWarning):
    """A file in the lake was skipped; the message names it."""


@contextlib.contextmanager
def lake_warnings_as_lines(stream: TextIO | None = None) -> Iterator[None]:
    """Within the block, each skipped lake file is one ``warning: PATH: why`` line on
    stderr (the CLIs' format), not Python's two-line warning with a source line."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", LakeWarning)
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, LakeWarning):
                print(f"warning: {message}", file=stream or sys.stderr)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _cause(err: BaseException) -> str:
    """An Arrow/OS error as one line (S3 errors carry curl details over several)."""
    return " ".join(str(err).split()) or type(err).__name__


def open_fs(uri: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a local folder or a pyarrow.fs URI, or a one-line
    `LakeError`. `filesystem` reads `uri` as a path on an already-built filesystem."""
    if filesystem is not None:
        return filesystem, uri.rstrip("/")
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError) as err:
        raise LakeError(f"cannot open lake URI {uri!r}: {_cause(err)}. Use a local folder or a pyarrow.fs "
                        "URI such as file:///path or s3://bucket/prefix (see docs/lake.md)") from None


def partition_values(rel: str, partitions: tuple[str, ...]) -> dict[str, str] | None:
    """{key: value} of a file's path relative to its table folder, or None when the file
    does not sit exactly in ``key=value`` folders for `partitions`."""
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


@dataclass
class LakeTable:
    """One of the lake's tables (trials or baselines) after listing it: the files that
    passed the checks, and the union of their columns."""

    name: str
    schema: pa.Schema
    partitions: tuple[str, ...]
    key: str
    files: list[str] = field(default_factory=list)
    # union of the file columns (name -> arrow type of the first file that has it)
    columns: dict[str, pa.DataType] = field(default_factory=dict)


TABLES = {
    TRIALS_DIR: (TRIAL_SCHEMA, TRIAL_PARTITIONS, "trial_key"),
    BASELINES_DIR: (BASELINE_SCHEMA, BASELINE_PARTITIONS, "baseline_key"),
    SWEEPS_DIR: (SWEEP_SCHEMA, SWEEP_PARTITIONS, "sweep_id"),
}


class LakeReader:
    """The stored files of a lake, listed and read safely.

    Every call lists the lake anew (a sweep reads after it wrote). A lake that does not
    exist yet reads as empty; an unreachable one is a one-line `LakeError`.
    """

    def __init__(self, uri: str, *, filesystem: pafs.FileSystem | None = None,
                 on_bad_file: OnBadFile = "warn"):
        if on_bad_file not in ("warn", "error"):
            raise LakeError(f"on_bad_file={on_bad_file!r}: use 'warn' (skip and warn) or 'error'")
        self.uri = uri
        self.on_bad_file = on_bad_file
        self.fs, self.root = open_fs(uri, filesystem)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        # Skipped files already warned about: a sweep reads each table more than once
        # (before Ray starts, after the lease, for the sink), which warned twice per file.
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ paths
    def path(self, subdir: str) -> str:
        root = self.root.rstrip("/")
        return f"{root}/{subdir}" if root else subdir

    def info(self, path: str) -> pafs.FileInfo:
        """`fs.get_file_info`, with an unreachable store as one line naming the URI."""
        try:
            return self.fs.get_file_info(path)
        except (pa.ArrowException, OSError) as err:
            raise LakeError(f"cannot reach the lake {self.uri!r}: {_cause(err)}. Check the URI, the "
                            "endpoint and the credentials (docs/lake.md, 'Object stores')") from None

    def root_type(self) -> pafs.FileType:
        return self.info(self.root or "/").type

    # ------------------------------------------------------------------ listing
    def bad(self, path: str, why: str) -> None:
        """Skip `path` with a `LakeWarning`, or stop with a `LakeError` when strict."""
        msg = f"{path}: {why}"
        if self.on_bad_file == "error":
            raise LakeError(f"cannot read the lake: {msg} (without --strict it is skipped with a warning)")
        if msg in self._warned:
            return
        self._warned.add(msg)
        warnings.warn(f"skipping {msg}", LakeWarning, stacklevel=3)

    def scan(self, subdir: str) -> LakeTable | None:
        """The readable files of `subdir` (trials or baselines), or None without the folder."""
        schema, partitions, key = TABLES[subdir]
        base = self.path(subdir)
        if self.info(base).type != pafs.FileType.Directory:
            return None
        table = LakeTable(subdir, schema, partitions, key)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        except (pa.ArrowException, OSError) as err:
            raise LakeError(f"cannot list {base!r} in the lake {self.uri!r}: {_cause(err)}") from None
        known = {f.name: f.type for f in schema}
        for info in sorted(infos, key=lambda i: i.path):
            rel = info.path[len(base) + 1:]
            # Writers stage files as hidden .tmp files; folders (an empty partition folder
            # included: a kill between mkdir and the write leaves one) and non-Parquet
            # files are not data.
            if info.type != pafs.FileType.File or not rel.endswith(".parquet"):
                continue
            if any(part.startswith((".", "_")) for part in rel.split("/")):
                continue
            if partition_values(rel, partitions) is None:
                want = "/".join(f"{p}=..." for p in partitions)
                self.bad(info.path, f"Parquet file outside the {subdir}/{want}/ partition folders; "
                                    "move it into its partition or out of the lake")
                continue
            try:
                with self.fs.open_input_file(info.path) as f:
                    fschema = pq.read_schema(f)
            except (pa.ArrowException, OSError) as err:
                self.bad(info.path, f"not a readable Parquet file ({_cause(err)}); delete it or move it "
                                    "out of the lake")
                continue
            if key not in fschema.names:
                self.bad(info.path, f"a Parquet file with no {key!r} column, so not a {subdir} file of "
                                    "this lake; move it out of the lake")
                continue
            clash = [f"{f.name} is {f.type}, expected {known[f.name]}" for f in fschema
                     if f.name in known and _kind(f.type) not in (_kind(known[f.name]), "null")]
            if clash:
                self.bad(info.path, "columns of the wrong kind (" + "; ".join(clash) +
                         "), so not a file of this lake; move it out of the lake")
                continue
            table.files.append(info.path)
            for f in fschema:
                table.columns.setdefault(f.name, f.type)
        return table

    # ------------------------------------------------------------------ reading
    def read_file(self, table: LakeTable, path: str, columns: list[str] | None = None) -> pa.Table | None:
        """One accepted file as Arrow, partition columns added as strings and columns the
        file predates as nulls; None (after `bad`) when its data cannot be read although
        its footer could (a file damaged in the middle)."""
        base = self.path(table.name)
        parts = partition_values(path[len(base) + 1:], table.partitions) or {}
        want = None if columns is None else [c for c in columns if c not in parts]
        present = None if want is None else [c for c in want if c in table.columns]
        try:
            with self.fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                if present is not None:
                    present = [c for c in present if c in pf.schema_arrow.names]
                t = pf.read(columns=present)
        except (pa.ArrowException, OSError) as err:
            self.bad(path, f"not a readable Parquet file ({_cause(err)}); delete it or move it out of the lake")
            return None
        for k, v in parts.items():
            if (columns is None or k in columns) and k not in t.column_names:
                t = t.append_column(k, pa.array([v] * t.num_rows, pa.string()))
        for c in columns or ():
            if c not in t.column_names:
                typ = table.schema.field(c).type if c in table.schema.names else pa.null()
                t = t.append_column(c, pa.nulls(t.num_rows, typ))
        return t

    def read(self, subdir: str, columns: list[str]) -> list[dict[str, Any]]:
        """`columns` of every stored row of `subdir`, from the files that pass the checks."""
        table = self.scan(subdir)
        if table is None:
            return []
        rows: list[dict[str, Any]] = []
        for path in table.files:
            t = self.read_file(table, path, columns)
            if t is not None:
                rows.extend(t.select(columns).to_pylist())
        return rows

    def trial_columns(self, columns: list[str]) -> list[dict[str, Any]]:
        """`columns` of every stored trial row (what a resumed sweep needs to prune from)."""
        return self.read(TRIALS_DIR, columns)

    def sweeps(self) -> list[dict[str, Any]]:
        """One record per sweep run (spec name, budgets, start), oldest first."""
        rows = self.read(SWEEPS_DIR, SWEEP_SCHEMA.names)
        return sorted(rows, key=lambda r: (r["started_at"] is None, r["started_at"] or 0, r["sweep_id"]))

    def existing_baseline_keys(self) -> set[str]:
        return {r["baseline_key"] for r in self.read(BASELINES_DIR, ["baseline_key"])}


# ------------------------------------------------------------------------ writing

def _table(rows: list[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    cols = {}
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        if f.name == "schema_version":
            vals = [SCHEMA_VERSION if v is None else v for v in vals]
        cols[f.name] = pa.array(vals, type=f.type)
    return pa.table(cols, schema=schema)


def _partition_path(row: Mapping[str, Any], partitions: tuple[str, ...]) -> str:
    parts = []
    for key in partitions:
        value = row.get(key)
        if value in (None, ""):
            raise ValueError(f"row has no value for partition column {key!r}: {dict(row)!r:.200}")
        text = str(value)
        if "/" in text or text.startswith("."):
            raise ValueError(f"partition value {key}={text!r} cannot be a path component")
        parts.append(f"{key}={text}")
    return "/".join(parts)


class LakeWriter(LakeReader):
    """A lake to write into. It reads too, through `LakeReader`, because a writer must know
    what is stored to never duplicate it (the keys a resumed sweep skips)."""

    def _write(self, rows: Iterable[Mapping[str, Any]], subdir: str, schema: pa.Schema,
               partitions: tuple[str, ...], batch: str | None = None) -> list[str]:
        """Write `rows` as one file per partition, named after `batch`.

        The names depend on `batch` only, so writing a batch again (a spooled batch
        landed after a failure, or after a crash between landing and forgetting it)
        replaces its files instead of duplicating its rows.
        """
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            groups.setdefault(_partition_path(row, partitions), []).append(row)
        written = []
        fschema = file_schema(schema, partitions)
        name = f"part-{batch or new_batch_id()}.parquet"
        for part, group in groups.items():
            folder = f"{self.root}/{subdir}/{part}" if part else f"{self.root}/{subdir}"
            self.fs.create_dir(folder, recursive=True)
            table = _table(group, fschema)
            final = f"{folder}/{name}"
            if isinstance(self.fs, pafs.LocalFileSystem):
                tmp = f"{folder}/.{name}.tmp"
                pq.write_table(table, tmp, filesystem=self.fs)
                self.fs.move(tmp, final)
            else:
                pq.write_table(table, final, filesystem=self.fs)
            written.append(final)
        return written

    def write_trials(self, rows: Iterable[Mapping[str, Any]], batch: str | None = None) -> list[str]:
        return self._write(rows, TRIALS_DIR, TRIAL_SCHEMA, TRIAL_PARTITIONS, batch)

    def write_baselines(self, rows: Iterable[Mapping[str, Any]], batch: str | None = None) -> list[str]:
        return self._write(rows, BASELINES_DIR, BASELINE_SCHEMA, BASELINE_PARTITIONS, batch)

    def check_writable(self) -> None:
        """Write and delete a small probe object in the lake and in each of its existing
        table folders; raise `OSError` naming the place and the cause where that fails.

        Run before Ray starts, so a lake that cannot take rows costs no GPU time.
        """
        places = [self.root]
        # `sweeps/` too: every run records itself there before its first trial row.
        for subdir in (TRIALS_DIR, BASELINES_DIR, SWEEPS_DIR):
            path = f"{self.root}/{subdir}"
            kind = self.fs.get_file_info(path).type
            if kind == pafs.FileType.Directory:
                places.append(path)
            elif kind != pafs.FileType.NotFound:
                raise OSError(f"{path} is a file, not a folder")
        for place in places:
            probe = f"{place}/.write-probe-{uuid.uuid4().hex[:12]}"
            try:
                with self.fs.open_output_stream(probe) as out:
                    out.write(b"diffaccel write probe\n")
                self.fs.delete_file(probe)
            except OSError as e:
                raise OSError(f"cannot write into {place}: {e}") from None

    def write_sweep(self, spec: Any, sweep_id: str, device_kind: str | None = None) -> list[str]:
        """Record a sweep run: its spec's name, metric and budgets, so readers can name the
        run and show the budgets it was made for. `spec` is a `sweep.spec.SweepSpec`."""
        row = {"sweep_id": sweep_id, "spec_name": spec.name, "metric": spec.metric,
               "budgets_json": json.dumps(list(spec.budgets)),
               "spec_json": json.dumps(spec.to_dict(), sort_keys=True, default=str),
               "device_kind": device_kind, "started_at": datetime.now(timezone.utc)}
        try:
            return self._write([row], SWEEPS_DIR, SWEEP_SCHEMA, SWEEP_PARTITIONS)
        except (pa.ArrowException, OSError) as err:
            raise LakeError(f"cannot write to the lake {self.uri!r}: {_cause(err)}; pass a writable folder "
                            "or URI") from None


def new_batch_id() -> str:
    """A write batch's name: sortable by time, unique by its random tail."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


def params_json(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True)
