"""bench/bench_load.py: a fresh process per run, each stage of a worker's first load timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/bench_load.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_every_stage_is_timed_and_written(tmp_path):
    out = tmp_path / "sub" / "load.json"
    proc = _run("--model", "shapes", "--steps", "2", "--runs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["date_utc"].endswith("UTC") and "--runs" in res["argv"]
    (run,) = res["runs"]
    want = ["import torch", "import diffusers, transformers", "import sweep", "pipelines.load", "device_info",
            "judge load", "baseline image 1", "baseline image 2", "baseline image 3", "process wall"]
    assert [k for k in run if k != "CUDA context"] == want  # in the order they ran
    assert all(v >= 0 for v in run.values())
    # The process's wall-clock holds every stage (and Python's own start).
    assert run["process wall"] >= sum(v for k, v in run.items() if k != "process wall")
    assert "run 1: import torch" in proc.stdout
    assert not list(out.parent.glob("*.tmp"))


def test_a_failing_load_says_why_and_writes_nothing(tmp_path):
    out = tmp_path / "load.json"
    proc = _run("--model", "no-such-model", "--runs", "1", "--out", str(out))
    assert proc.returncode != 0
    assert "bench_load: the child failed" in proc.stderr and "no-such-model" in proc.stderr
    assert not out.exists()
