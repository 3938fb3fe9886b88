"""TrialSession: cached baseline, per-prompt quality, speed, compute ratio, lake rows."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pytest
import torch
from engine_helpers import STEPS, TGATE_PARAMS, one_thread  # noqa: F401

from sweep import catalog, lake_schema, methods, quality, trial
from sweep.catalog import Acceleration, ConfigError, PipelineConfig
from sweep.lake import LakeWriter

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = PipelineConfig("sd15", "ddim", STEPS, preset="tiny")
PROMPTS = ["a red fox in the snow", "a bowl of ramen"]
DC = Acceleration.from_params("deepcache", {"cache_interval": 3, "cache_branch_id": 0})
TG = Acceleration.from_params("tgate", TGATE_PARAMS)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    clip = quality.make_tiny_clip(tmp_path_factory.mktemp("clip"))
    with trial.TrialSession(CFG, clip_model=clip) as s:
        yield s


def test_session_defaults(session):
    assert session.device == "cpu" and session.dtype == torch.float32
    assert session.cfg.resolution == 64 and CFG.resolution is None
    assert session.baseline_key == catalog.baseline_key(session.cfg, "cpu", session.versions)
    assert session.trial_key(DC) == catalog.trial_key(session.cfg, DC, "cpu", session.versions)


def test_baseline_is_computed_once(session):
    first = session.baseline_images(PROMPTS[0], 0)
    assert session.baseline_images(PROMPTS[0], 0) is first
    assert not torch.equal(session.baseline_images(PROMPTS[0], 1), first)


def test_iter_quality_reports_after_each_prompt(session):
    seen = []
    for summary in session.iter_quality(DC, PROMPTS, [0, 1]):
        seen.append((summary.n_prompts, summary.prompts[-1].prompt, summary.loss("ssim")))
    assert [(n, p) for n, p, _ in seen] == [(1, PROMPTS[0]), (2, PROMPTS[1])]
    last = summary.prompts[-1]
    assert 0 < last.ssim < 1 and last.clip_score is not None and last.clip_score_base is not None
    assert seen[-1][2] == pytest.approx(1 - summary.ssim)
    assert summary.loss("clip") == pytest.approx((summary.clip_score_base - summary.clip_score)
                                                 / summary.clip_score_base)


def test_stopping_early_leaves_the_session_usable(session):
    summary = next(session.iter_quality(TG, PROMPTS))  # a tuner gives up after one prompt
    assert summary.n_prompts == 1
    speed = session.speed(DC, prompt=PROMPTS[0], min_pairs=2, max_pairs=2)
    assert speed.n_pairs == 2 and speed.pairs_stop in ("target", "cap")


def test_tgate_point_rebuilds_the_fork_and_keeps_the_baseline_exact(session):
    base = session.baseline_images(PROMPTS[0], 0)
    session.quality(TG, PROMPTS[:1])
    fork = session._fork
    assert methods.applied_to(fork).needs_rebuild
    rebuilds = session.rebuilds
    q = session.quality(DC, PROMPTS[:1])  # the next point gets a fresh fork
    assert session.rebuilds == rebuilds + 1 and session._fork is not fork
    assert 0 < q.ssim < 1
    session.release()
    assert torch.equal(session._run_baseline(PROMPTS[0], 0).float(), base)


def test_compute_ratio(session):
    # 4 steps at interval 3: two full UNet passes of four (test_methods checks < 0.6 at 9 steps).
    ratio = session.compute_ratio(DC)
    assert ratio < 0.7
    assert session.compute_ratio(Acceleration.from_params("deepcache", {"cache_interval": 4})) < ratio
    assert session.compute_ratio(TG) < 1.0
    assert session.baseline_flops() > 0


def test_speed(session):
    seen = []
    r = session.speed(DC, min_pairs=2, max_pairs=4, target_halfwidth=0.5, on_pair=lambda s: seen.append(s.n_pairs))
    assert 2 <= r.n_pairs <= 4 and seen == list(range(1, r.n_pairs + 1))
    assert r.speedup > 1.0 and r.interval[0] <= r.interval[1]


def _check_row(row, schema):
    assert list(row) == schema.names
    table = pa.Table.from_pylist([row], schema=schema)  # types convert without loss
    assert table.num_rows == 1


def test_rows_match_the_lake_schema_and_write(session, tmp_path):
    started = trial.measure.utc_now()
    q = session.quality(DC, PROMPTS)
    speed = session.speed(DC, min_pairs=2, max_pairs=2)
    row = session.trial_row(DC, quality=q, speed=speed, compute_ratio=session.compute_ratio(DC),
                            sweep_id="t1", started_at=started)
    _check_row(row, lake_schema.TRIAL_SCHEMA)
    assert row["status"] == "ok" and row["phase"] == "screen" and row["final"] is True
    assert row["method"] == "deepcache" and row["tag"] == "DC3B0"
    assert row["cache_interval"] == 3 and row["cache_branch_id"] == 0 and row["gate_step"] is None
    assert json.loads(row["params_json"]) == {"cache_interval": 3, "cache_branch_id": 0}
    assert row["resolution"] == 64 and row["dtype"] == "float32" and row["device_kind"] == "cpu"
    assert row["n_prompts"] == 2 and row["n_pairs"] == 2 and row["quality_loss_ssim"] == pytest.approx(1 - q.ssim)
    assert row["gpu_seconds"] is None  # no GPU time spent on a CPU
    assert row["finished_at"] >= row["started_at"] and row["finished_at"].tzinfo is not None
    base = session.baseline_row(sweep_id="t1", runs=3)
    _check_row(base, lake_schema.BASELINE_SCHEMA)
    assert base["n_runs"] >= 3 and base["flops"] > 0 and base["clip_score"] is not None
    assert base["baseline_key"] == row["baseline_key"]

    lake = LakeWriter(str(tmp_path / "lake"))
    lake.write_trials([row])
    lake.write_baselines([base])
    assert lake.existing_baseline_keys() == {base["baseline_key"]}
    assert [r["trial_key"] for r in lake.trial_columns(["trial_key"])] == [row["trial_key"]]


def test_stopped_and_failed_rows(session):
    row = session.trial_row(TG, status=lake_schema.STOPPED, stop_reason="over budget")
    assert row["status"] == "stopped" and row["speedup"] is None and row["gate_step"] == 2
    _check_row(row, lake_schema.TRIAL_SCHEMA)
    with pytest.raises(ValueError, match="status='done'"):
        session.trial_row(TG, status="done")


def test_invalid_points_are_refused(session):
    with pytest.raises(ConfigError, match="gate_step=9 is out of range"):
        session.speed(Acceleration.from_params("tgate", {"gate_step": 9}))
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        next(session.iter_quality(DC, PROMPTS, [0]))


def test_run_trial_validates_before_loading():
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="cache_branch_id=12"):
        trial.run_trial(PipelineConfig("sdxl", "euler", STEPS, preset="tiny"),
                        Acceleration.from_params("deepcache", {"cache_branch_id": 12}), PROMPTS)
    with pytest.raises(ConfigError, match="unknown preset"):
        trial.run_trial(PipelineConfig("sd15", "ddim", STEPS, preset="big"), DC, PROMPTS)
    assert time.perf_counter() - t0 < 1.0  # nothing was built


def test_run_trial_on_pixart():
    lines = []
    row = trial.run_trial(PipelineConfig("pixart_sigma", "dpmpp", STEPS, preset="tiny"), TG, PROMPTS[:1],
                          min_pairs=2, max_pairs=2, progress=lines.append)
    _check_row(row, lake_schema.TRIAL_SCHEMA)
    assert row["model"] == "pixart_sigma" and row["n_pairs"] == 2 and row["compute_ratio"] < 1.0
    assert row["clip_score"] is None and row["ssim"] is not None
    assert any(line.startswith("loading") for line in lines) and any("speed" in line for line in lines)
