"""The reference-script check's CPU smoke path: codegen writes scripts from a real lake,
the harness imports them and times their own baseline and accelerated calls (tiny
presets, so the speeds mean nothing; the mechanics are what is tested)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from codegen_helpers import trial_row, write_lake
from engine_helpers import STEPS, one_thread  # noqa: F401

from codegen.lake import open_lake
from codegen.scripts import write_batch
from codegen.tasks import build_tasks

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_scripts.py"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_bench_scripts_times_tgate_and_deepcache_scripts_on_cpu(tmp_path):
    rows = [trial_row(steps=STEPS, resolution=64, method="tgate", speedup=1.5, loss=0.001,
                      params={"gate_step": 2, "sp_interval": 2, "fi_interval": 1, "warm_up": 1}),
            trial_row(steps=STEPS, resolution=64, method="deepcache", speedup=2.0, loss=0.001,
                      params={"cache_interval": 2, "cache_branch_id": 0})]
    lake = write_lake(tmp_path / "lake", rows)
    tasks = build_tasks(open_lake(lake).trials(), scales=(1.0,), budget=0.02, metric="ssim")
    out = tmp_path / "codegen"
    write_batch(tasks, out, write_tasks_file=True)

    spec = importlib.util.spec_from_file_location("bench_scripts", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result_file = tmp_path / "scripts.json"
    bench.main(["--codegen", str(out), "--n", "2", "--device", "cpu", "--preset", "tiny", "--pairs", "2",
                "--cache", str(tmp_path / "presets"), "--out", str(result_file)])
    results = json.loads(result_file.read_text())["results"]
    assert sorted(r.get("method") for r in results) == ["deepcache", "tgate"], results
    for r in results:
        assert "error" not in r, r
        assert r["pairs"] >= 2 and r["script_speedup"] > 0 and r["lake_speedup"] in (1.5, 2.0)
        assert 0 <= r["script_loss"] <= 1
        assert r["speed_agrees"] == (abs(r["script_speedup"] / r["lake_speedup"] - 1) <= 0.1)
    assert "| deepcache (DC2B0) |" in result_file.with_suffix(".md").read_text()
