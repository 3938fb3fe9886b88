"""The sweep on a real local Ray (shared by the module): rows, reruns, early stopping."""

from __future__ import annotations

import collections
import json

import pytest
from sweep_helpers import baseline_rows, expected_keys, tiny_spec, trial_rows

from sweep.driver import run_sweep, trial_resources
from sweep.lake_schema import CONFIRM, OK, PRUNED, SCREEN, STOPPED

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_tiny_sweep_writes_expected_rows_and_a_rerun_writes_none(local_ray, tmp_path):
    spec = tiny_spec()
    lake = tmp_path / "lake"
    summary = run_sweep(spec, str(lake), progress=False)
    rows = trial_rows(lake)
    screen = [r for r in rows if r["phase"] == SCREEN]
    confirm = [r for r in rows if r["phase"] == CONFIRM]
    # Generous budget: every point passes, one screen row per point, keys as computed.
    assert {r["trial_key"] for r in screen} == expected_keys(spec)
    assert len(screen) == 4 and all(r["status"] == OK and r["final"] is False for r in screen)
    assert all(r["speedup"] > 0 and r["n_pairs"] == 2 and r["n_prompts"] == 2 for r in screen)
    # The bound-deciding point is confirmed under the same key, final, with more pairs
    # allowed; if its confirmed speed drops below another point's screened one, that point
    # is confirmed too (timing noise decides whether it does), so the bound ends confirmed.
    assert 1 <= len(confirm) <= 4 and all(r["final"] is True for r in confirm)
    assert len({r["trial_key"] for r in confirm}) == len(confirm)
    assert {r["trial_key"] for r in confirm} <= {r["trial_key"] for r in screen}
    believed = {r["trial_key"]: r for r in screen} | {r["trial_key"]: r for r in confirm}
    fastest = max(believed.values(), key=lambda r: r["speedup"])
    assert fastest["phase"] == CONFIRM, "the bound is a screened point nobody confirmed"
    for c in confirm:
        # It tops up its screen: the screen's two pairs are its first two, its quality the screen's.
        first = next(r for r in screen if r["trial_key"] == c["trial_key"])
        assert c["pairs_reused"] == 2 and c["n_pairs"] >= 3
        assert json.loads(c["pair_times_json"])["accel"][:2] == json.loads(first["pair_times_json"])["accel"]
        assert c["quality_loss_ssim"] == pytest.approx(first["quality_loss_ssim"], abs=1e-4)
        # FLOPs are counted for confirmed points only (measure.count_flops: confirm).
        assert 0 < c["compute_ratio"] < 1.5
    assert all(r["compute_ratio"] is None for r in screen)
    assert summary.rows_written == len(rows) == 4 + len(confirm)
    # Pipelines stay resident: at most one load per worker (two run at once), not one per trial.
    loads = [t["loaded_pipeline"] for t in summary.trial_seconds]
    assert len(loads) == 4 + len(confirm) and 1 <= sum(loads) <= 2, loads
    base = baseline_rows(lake)
    assert len(base) == 1 and base[0]["baseline_key"] == screen[0]["baseline_key"]

    files = sorted(p.name for p in lake.rglob("*.parquet"))
    again = run_sweep(spec, f"file://{lake}", progress=False)  # the same lake as a URI
    assert again.rows_written == 0 and again.skipped == 4
    assert sorted(p.name for p in lake.rglob("*.parquet")) == files


@pytest.mark.slow
def test_early_stopping_and_pruning_cut_the_work(local_ray, tmp_path):
    # A budget below what any DeepCache point reaches on the tiny model: the gentlest
    # point stops after one prompt and prunes every other point.
    budget = {"quality": {"metric": "ssim", "budgets": [0.00002]}}
    pruned = run_sweep(tiny_spec(**budget), str(tmp_path / "pruned"), progress=False)
    exhaustive = run_sweep(tiny_spec(**budget, early_stop={"enabled": False, "prune": False}),
                           str(tmp_path / "exhaustive"), progress=False)

    p_rows, e_rows = trial_rows(tmp_path / "pruned"), trial_rows(tmp_path / "exhaustive")
    statuses = collections.Counter(r["status"] for r in p_rows)
    assert statuses[STOPPED] > 0 and statuses[PRUNED] > 0, statuses
    assert {r["trial_key"] for r in p_rows} == {r["trial_key"] for r in e_rows}  # every point has a row
    assert all(r["status"] == OK for r in e_rows)
    for r in p_rows:
        if r["status"] == PRUNED:
            assert r["stop_reason"].startswith("dominated by DC") and r["n_prompts"] is None
        if r["status"] == STOPPED:
            assert r["speedup"] is None and r["n_pairs"] is None and r["n_prompts"] < 2

    def work(summary):
        prompts = sum(t.get("prompts_done") or 0 for t in summary.trial_seconds)
        timed = sum(1 for t in summary.trial_seconds if t.get("timed_seconds"))
        return prompts, timed

    p_prompts, p_timed = work(pruned)
    e_prompts, e_timed = work(exhaustive)
    assert p_prompts < e_prompts and p_timed < e_timed, (p_prompts, e_prompts, p_timed, e_timed)


def test_trial_resources_use_one_gpu_each_or_cpus():
    res, fits, note = trial_resources({"CPU": 16, "GPU": 4}, cpus_per_trial=2)
    assert res == {"GPU": 1, "CPU": 1} and fits == 4
    res, fits, note = trial_resources({"CPU": 4}, cpus_per_trial=2)
    assert res == {"CPU": 2} and fits == 2 and "no GPU" in note
    with pytest.raises(ValueError, match="lower --cpus-per-trial"):
        trial_resources({"CPU": 1}, cpus_per_trial=2)


def test_a_worker_keeps_one_resident_pipeline_and_evicts_on_config_change():
    from sweep import worker
    from sweep.catalog import Acceleration, PipelineConfig

    a = PipelineConfig("sd15", "ddim", 3, preset="tiny")
    b = PipelineConfig("sd15", "ddim", 2, preset="tiny")
    first, loaded = worker.session_for(a, "float32", None)
    assert loaded
    again, loaded = worker.session_for(a, "float32", None)
    assert again is first and not loaded  # the same pipeline, no reload
    first.accelerate(Acceleration.from_params("deepcache", {"cache_interval": 2}))
    other, loaded = worker.session_for(b, "float32", None)
    assert loaded and other is not first and worker._SESSION["session"] is other
    assert first._applied is None  # the evicted session was closed, its patch removed
    other.close()
    worker._SESSION.update(key=None, session=None, baseline_sent=False)
