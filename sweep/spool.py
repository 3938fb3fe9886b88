"""Rows that could not reach the lake, kept on this machine until a rerun lands them.

A sweep that fails to write a batch of rows (a full disk, a revoked bucket, a folder
made read-only) must not lose what the GPUs measured. The batch goes to a spool: one
Parquet file per batch under the local state folder, in a folder named after the
lake's URI. The next sweep into the same lake lands every spooled batch first, under
the batch's own file names (`LakeWriter.write_trials(batch=...)`), then deletes it: landing a
batch twice (a crash between landing and deleting) replaces its files, so a row is
never duplicated.

Plain Python and pyarrow; no Ray.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from sweep.lake import LakeWriter, _table
from sweep.lake_schema import BASELINE_SCHEMA, BASELINES_DIR, TRIAL_SCHEMA, TRIALS_DIR

TABLES = {TRIALS_DIR: TRIAL_SCHEMA, BASELINES_DIR: BASELINE_SCHEMA}


def state_dir() -> Path:
    """Where diffaccel keeps local state (spooled rows, embedded Ray runs):
    ``$DIFFACCEL_STATE_DIR``, else ``$XDG_STATE_HOME/diffaccel``, else
    ``~/.local/state/diffaccel``."""
    env = os.environ.get("DIFFACCEL_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "diffaccel"


def lake_id(uri: str) -> str:
    """One name per lake, whichever way its URI is spelled (``./lake``, ``file:///abs/lake``)."""
    text = uri.removeprefix("file://") if uri.startswith("file://") else uri
    if "://" not in text:
        text = os.path.abspath(text)
    return hashlib.sha256(text.rstrip("/").encode()).hexdigest()[:16]


@dataclass
class Spool:
    """The pending batches of one lake."""

    uri: str

    @property
    def folder(self) -> Path:
        return state_dir() / "spool" / lake_id(self.uri)

    def keep(self, table: str, rows: list[Mapping[str, Any]], batch: str) -> Path:
        """Store a batch that could not be written (atomically: temp file, rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "LAKE").write_text(self.uri + "\n")
        final = self.folder / f"{table}--{batch}.parquet"
        tmp = final.with_name(f".{final.name}.tmp")
        pq.write_table(_table(list(rows), TABLES[table]), tmp)
        os.replace(tmp, final)
        return final

    def pending(self) -> list[tuple[str, str, Path]]:
        """(table, batch, file) of every spooled batch, oldest first."""
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob("*--*.parquet")):
            table, batch = path.stem.split("--", 1)
            if table in TABLES:
                out.append((table, batch, path))
        return out

    def rows(self) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for _, _, p in self.pending())

    def land(self, lake: LakeWriter) -> int:
        """Write every spooled batch into `lake`, forgetting each once written; the
        number of rows landed. A failure propagates with the rest still spooled."""
        landed = 0
        for table, batch, path in self.pending():
            rows = pq.read_table(path).to_pylist()
            if table == TRIALS_DIR:
                lake.write_trials(rows, batch=batch)
            else:
                lake.write_baselines(rows, batch=batch)
            path.unlink()
            landed += len(rows)
        return landed
