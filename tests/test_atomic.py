"""`sweep.atomic.write_atomic`: the one way the tool writes a small file in place. A
reader sees the old file or the whole new one; a failed write raises, leaves the target
as it was and no temporary file behind; and the modules that write such files call it
rather than renaming files themselves."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from sweep.atomic import write_atomic

ROOT = Path(__file__).resolve().parent.parent


def test_text_and_bytes_replace_the_file_whole(tmp_path):
    target = tmp_path / "state.json"
    assert write_atomic(target, "first ünïcode\n") == target
    assert target.read_bytes() == "first ünïcode\n".encode()
    write_atomic(target, b"\x00second")
    assert target.read_bytes() == b"\x00second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary left


@pytest.mark.parametrize("case", ["unencodable", "target is a folder", "no folder"])
def test_a_failed_write_raises_and_leaves_everything_as_it_was(tmp_path, case):
    kept = tmp_path / "kept.txt"
    kept.write_text("stored")
    if case == "unencodable":  # a lone surrogate: fails before anything is written
        with pytest.raises(UnicodeEncodeError):
            write_atomic(kept, "bad \udc80")
    elif case == "target is a folder":  # the rename itself fails
        folder = tmp_path / "out"
        (folder / "inside").mkdir(parents=True)
        with pytest.raises(OSError):
            write_atomic(folder, "text")
        assert (folder / "inside").is_dir()
    else:
        with pytest.raises(FileNotFoundError):
            write_atomic(tmp_path / "missing" / "x.txt", "text")
        assert not (tmp_path / "missing").exists()
    assert kept.read_text() == "stored"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    """Each call has its own temporary name, so writers racing on one target each land a
    whole file: the survivor is one writer's payload, never a mix."""
    target = tmp_path / "record.json"
    payloads = [bytes([65 + i]) * 200_000 for i in range(8)]
    errors = []

    def write(data):
        try:
            for _ in range(5):
                write_atomic(target, data)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert target.read_bytes() in payloads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


# Renames left where they are, and why: lake batches (Parquet, local or object store,
# `sweep.lake`), the spool's batches and rekey's verified rewrite (Parquet written by
# pyarrow), the judge's weights (safetensors writes its own file), and whole folders
# (codegen's script batch and the bench's cached pipelines).
RENAMES_ALLOWED = {"sweep/lake.py", "sweep/spool.py", "sweep/rekey.py", "sweep/judge.py", "sweep/atomic.py",
                   "codegen/scripts.py", "bench/bench_scripts.py"}


def _renames(path: Path) -> bool:
    """Does `path` rename a file: os.replace / os.rename, or `.replace(...)` / `.rename(...)`
    on a name that holds a temporary path (``tmp``, ``tmp_path``: how every copy was written)?"""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("replace", "rename") and isinstance(node.func.value, ast.Name) \
                and (node.func.value.id == "os" or "tmp" in node.func.value.id):
            return True
    return False


def test_files_are_written_in_place_only_through_write_atomic():
    found = {str(p.relative_to(ROOT)) for pkg in ("sweep", "codegen", "diffaccel", "bench")
             for p in sorted((ROOT / pkg).glob("*.py")) if _renames(p)}
    assert found <= RENAMES_ALLOWED, sorted(found - RENAMES_ALLOWED)
    # And the ones converted to it use it.
    for rel in ("sweep/spec.py", "sweep/embedded.py", "sweep/lease.py", "codegen/report.py", "codegen/tasks.py",
                "diffaccel/build.py", "bench/bench_sweep.py"):
        assert "write_atomic(" in (ROOT / rel).read_text(), rel
