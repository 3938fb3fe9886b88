"""Atomic file writes: a reader sees the old file or the whole new one, never half.

Every small file the tool writes in place (specs, tasks, reports, bench records, build
state, the lease and the embedded Ray record) goes through `write_atomic`, so that there
is one place that says how: the data is written to a temporary file beside the target (the
same folder, so the rename stays on one file system), then renamed over it. The temporary
name is unique per call, so two writers never share one; a write that fails removes its
temporary file and raises, and the target is left as it was. Lake batches (Parquet, local
or object store) are written by `sweep.lake`; whole folders are swapped by their writers.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write `data` (text is encoded with `encoding`) to `path` through a temporary file
    in the same folder, renamed over `path`. The folder must exist. Returns `path`."""
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["write_atomic"]
