"""Behaviour kept: `tasks` + `codegen` on the shipped example lake write the same bytes
as the recorded snapshot in `tests/golden/`.

The snapshot holds the full `tasks.jsonl` (so a change shows as a readable diff) and
the SHA-256 of every file the two commands write (manifest, search params, each script).
A change that is meant to alter the output refreshes it deliberately:

    DIFFACCEL_UPDATE_GOLDEN=1 PYTHONPATH=$PWD python -m pytest -q tests/test_golden.py

then review `git diff tests/golden/` and commit it with the change that explains it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path

from typer.testing import CliRunner

from diffaccel.cli import app

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "example-lake"
UPDATE = os.environ.get("DIFFACCEL_UPDATE_GOLDEN") == "1"


def _run(*args: str) -> None:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output


def _hashes(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_tasks_and_codegen_on_the_example_lake_match_the_golden_snapshot(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the lake path is relative, as a user runs it
    out = tmp_path / "out"
    _run("tasks", "--lake", "datasets/example-lake", "--out", str(out))
    _run("codegen", "--tasks", str(out / "tasks.jsonl"), "--out", str(out))
    tasks_text = (out / "tasks.jsonl").read_text()
    hashes = _hashes(out)
    assert len(hashes) > 3 and any(p.startswith("scripts/") for p in hashes)
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / "tasks.jsonl").write_text(tasks_text)
        (GOLDEN / "sha256.json").write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    want_tasks = (GOLDEN / "tasks.jsonl").read_text()
    if tasks_text != want_tasks:
        diff = "".join(difflib.unified_diff(want_tasks.splitlines(True), tasks_text.splitlines(True),
                                            "golden/tasks.jsonl", "now/tasks.jsonl", n=0))
        raise AssertionError(f"tasks.jsonl differs from the golden snapshot (refresh: see the module):\n{diff[:4000]}")
    want = json.loads((GOLDEN / "sha256.json").read_text())
    changed = sorted(p for p in set(want) | set(hashes) if want.get(p) != hashes.get(p))
    assert not changed, f"these outputs differ from the golden snapshot: {changed}"
