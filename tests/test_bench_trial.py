"""The GPU benchmark script's CPU smoke path: tiny preset, few steps, two pairs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from engine_helpers import STEPS, one_thread  # noqa: F401

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_trial.py"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_bench_trial_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_trial", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "trial.json"
    bench.main(["--preset", "tiny", "--steps", str(STEPS), "--min-pairs", "2", "--max-pairs", "2",
                "--out", str(out)])
    result = json.loads(out.read_text())  # strict JSON: no Infinity/NaN
    names = [p["name"] for p in result["points"]]
    assert names == ["DeepCache (3, 0)", "DeepCache (5, 0)", "ToMe 0.5", "T-GATE (defaults)", "DeepCache+T-GATE"]
    for p in result["points"]:
        assert len(p["reps"]) == 2 and all(r["n_pairs"] == 2 for r in p["reps"])
        assert p["reps"][0]["compute_ratio"] == p["reps"][1]["compute_ratio"] < 1
    assert result["baseline"]["fork_rebuilds"] == 2  # the two T-GATE points
    printed = capsys.readouterr().out
    assert "| DeepCache (5, 0) | 2 |" in printed and "CIs overlap" in printed
