"""Metric `judge`: a real tiny trial puts the judge's columns in the lake, codegen reads
its budget, and specs / the CLI refuse a judge metric they cannot measure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from engine_helpers import STEPS, one_thread  # noqa: F401
from sweep_helpers import ROOT, tiny, trial_rows
from typer.testing import CliRunner

from codegen import texts
from codegen.lake import open_lake
from diffaccel.cli import app
from sweep import judge, lake_schema, quality, shapes, trial
from sweep import spec as S
from sweep.catalog import Acceleration, PipelineConfig
from sweep.lake import LakeWriter

JUDGE_DIR = "datasets/models/shapes-judge"
CFG = PipelineConfig("sd15", "ddim", STEPS, preset="tiny")
DC = Acceleration.from_params("deepcache", {"cache_interval": 3, "cache_branch_id": 0})
PROMPTS = [s.caption() for _, s in shapes.samples(5, 2)]


def test_relative_drop_is_one_implementation_for_clip_and_judge():
    assert "judge" in lake_schema.BUDGET_METRICS
    for metric, kw in (("clip", "clip_score"), ("judge", "judge_score")):
        assert quality.loss(metric, **{kw: 0.6, f"{kw}_base": 0.8}) == pytest.approx(0.25)
        assert quality.loss(metric, **{kw: 0.9, f"{kw}_base": 0.8}) == pytest.approx(-0.125)
        assert quality.loss(metric, **{kw: 0.5, f"{kw}_base": 0.0}) is None
        assert quality.loss(metric, **{kw: None, f"{kw}_base": 0.8}) is None
    # Each metric reads its own columns only.
    assert quality.loss("judge", clip_score=0.1, clip_score_base=0.8) is None


@pytest.mark.usefixtures("one_thread")
def test_tiny_trial_puts_the_judge_in_the_lake(tmp_path):
    with trial.TrialSession(CFG, judge_model=ROOT / JUDGE_DIR) as session:
        assert session.judge_model == JUDGE_DIR  # repo-relative, not this machine's path
        q = session.quality(DC, PROMPTS, [0, 1])
        speed = session.speed(DC, prompt=PROMPTS[0], min_pairs=2, max_pairs=2)  # bounds rank by speedup
        row = session.trial_row(DC, quality=q, speed=speed, compute_ratio=0.7)
        base = session.baseline_row(runs=1)
        # The session's figures are the judge's own reading of the same images.
        images = session.baseline_images(PROMPTS[0], 0)
    direct = judge.judge_score(images, [PROMPTS[0]] * len(images))
    assert q.prompts[0].judge_score_base == pytest.approx(sum(direct) / len(direct))
    assert list(row) == lake_schema.TRIAL_SCHEMA.names
    assert row["judge_model"] == JUDGE_DIR and row["clip_model"] is None
    assert 0 <= row["judge_score"] <= 1 and 0 < row["judge_score_base"] <= 1
    assert row["quality_loss_judge"] == pytest.approx(
        (row["judge_score_base"] - row["judge_score"]) / row["judge_score_base"])
    assert base["judge_score"] == pytest.approx(row["judge_score_base"])

    lake = LakeWriter(str(tmp_path / "lake"))
    lake.write_trials([row])
    lake.write_baselines([base])
    lk = open_lake(str(tmp_path / "lake"), on_bad_file="error")
    got = lk.trials().iloc[0]
    assert got["judge_model"] == JUDGE_DIR
    assert got["quality_loss_judge"] == pytest.approx(row["quality_loss_judge"])
    budget = max(row["quality_loss_judge"], 0.0) + 0.01
    bounds = lk.bounds(budget=budget, metric="judge")
    assert list(bounds["trial_key"]) == [row["trial_key"]]
    assert bounds["quality_loss"].iloc[0] == pytest.approx(row["quality_loss_judge"])
    if row["quality_loss_judge"] > 0:  # a budget under the loss leaves the config out
        assert lk.bounds(budget=row["quality_loss_judge"] / 2, metric="judge").empty
    assert lk.baselines()["judge_score"].iloc[0] == pytest.approx(base["judge_score"])


@pytest.mark.usefixtures("one_thread")
def test_cli_trial_with_judge_model(tmp_path):
    prompts = tmp_path / "shapes.txt"
    prompts.write_text("\n".join(PROMPTS[:1]) + "\n")
    args = ["trial", "--model", "sd15", "--preset", "tiny", "--scheduler", "ddim", "--steps", str(STEPS),
            "--method", "deepcache", "--param", "cache_interval=2", "--prompts", str(prompts),
            "--n-prompts", "1", "--no-speed", "--judge-model", str(ROOT / JUDGE_DIR), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.stderr + repr(r.exception)
    row = json.loads(r.stdout)
    assert row["judge_model"] == JUDGE_DIR and row["judge_score_base"] is not None
    assert row["quality_loss_judge"] is not None or row["judge_score_base"] == 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--judge-model", "/no/such/judge"], "is not a judge folder"),
    (["--judge-model", JUDGE_DIR], "reads shapes captions only"),  # the default SD prompts
])
def test_cli_refuses_a_judge_it_cannot_use(extra, message):
    args = ["trial", "--model", "sd15", "--scheduler", "ddim", "--steps", "50", "--method", "deepcache", *extra]
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and message in r.stderr


def _shapes_prompts(tmp_path):
    path = tmp_path / "shapes.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return {"file": str(path), "count": 2}


def test_spec_judge_metric_needs_a_judge_model(tmp_path):
    with pytest.raises(S.SpecError, match="quality.metric is 'judge' but no judge model is given"):
        S.validate(tiny(quality={"metric": "judge"}, prompts=_shapes_prompts(tmp_path)), base_dir=str(ROOT))
    with pytest.raises(S.SpecError, match="is not a judge folder"):
        S.validate(tiny(quality={"metric": "judge"}, judge_model="datasets/models/nothing-here",
                        prompts=_shapes_prompts(tmp_path)), base_dir=str(ROOT))
    with pytest.raises(S.SpecError, match="prompt 1 cannot be judged"):
        S.validate(tiny(quality={"metric": "judge"}, judge_model=JUDGE_DIR), base_dir=str(ROOT))
    spec = S.validate(tiny(quality={"metric": "judge"}, judge_model=JUDGE_DIR, prompts=_shapes_prompts(tmp_path)),
                      base_dir=str(tmp_path))
    assert spec.metric == "judge" and spec.judge_model == JUDGE_DIR
    assert spec.judge_model_path() == str(ROOT / JUDGE_DIR)  # found from the repo, not the spec's folder
    assert S.validate(spec.to_dict(), base_dir=str(tmp_path)) == spec


def test_task_texts_name_the_judge_metric_and_read_it_back():
    assert "judge" in texts.METRIC_TEXT["judge"]
    req = texts.Request(model="sd15", scheduler="ddim", steps=25, method="deepcache", speedup=1.5,
                        budget=0.02, metric="judge", device_kind="H200", resolution=128)
    for i in range(len(texts.PHRASINGS)):
        task_id = f"{i:08x}abcd"
        assert texts.phrasing_index(task_id) == i
        text = texts.describe(req, task_id)
        assert texts.parse(text).metric == "judge", text


def test_judge_loss_rises_when_images_lose_their_content():
    """The budget metric on real judge scores: generator images against themselves lose
    nothing; the same images blurred to mush lose a large share."""
    pairs = list(shapes.samples(77, 8))
    captions = [s.caption() for _, s in pairs]
    images = judge.pil_to_tensor([im for im, _ in pairs])
    j = judge.load_judge()
    base = float(np.mean(j.score(images, captions)))
    mush = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    assert quality.loss("judge", judge_score=base, judge_score_base=base) == 0
    assert quality.loss("judge", judge_score=float(np.mean(j.score(mush, captions))), judge_score_base=base) > 0.3


def test_resuming_a_judge_sweep_reads_lakes_older_than_the_judge_columns(tmp_path):
    """A lake with files written before the judge columns existed still resumes under
    metric judge: those rows read as unmeasured instead of failing the sweep."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweep.driver import stored_outcomes

    part = tmp_path / "lake" / "trials" / "model=sd15" / "method=deepcache"
    part.mkdir(parents=True)
    old = {"trial_key": ["old"], "phase": ["screen"], "status": ["ok"], "speedup": [1.5]}
    pq.write_table(pa.table(old), part / "part-0.parquet")  # sorts first: the schema pyarrow would infer
    pq.write_table(pa.table({**old, "trial_key": ["new"], "quality_loss_judge": [0.25]}), part / "part-1.parquet")
    got = stored_outcomes(LakeWriter(str(tmp_path / "lake")), "judge")
    assert got["old"][1].loss is None and got["new"][1].loss == 0.25
    assert got["new"][1].speedup == 1.5 and got["old"][0] == {"screen"}


@pytest.mark.slow
def test_tiny_sweep_under_metric_judge_on_real_ray(tmp_path):
    """driver -> Ray worker -> lake: the judge travels to the worker, its loss decides,
    and a rerun under metric judge skips every stored point."""
    ray = pytest.importorskip("ray")
    from sweep.driver import run_sweep

    spec = S.validate(tiny(quality={"metric": "judge", "budgets": [1.0]}, judge_model=JUDGE_DIR,
                           prompts=_shapes_prompts(tmp_path),
                           methods={"deepcache": {"cache_interval": [2, 3], "cache_branch_id": 0}}),
                      base_dir=str(tmp_path))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        lake = tmp_path / "lake"
        run_sweep(spec, str(lake), progress=False)
        rows = trial_rows(lake)
        again = run_sweep(spec, str(lake), progress=False)
    finally:
        ray.shutdown()
    assert rows and all(r["judge_model"] == JUDGE_DIR and r["judge_score_base"] is not None for r in rows)
    for r in rows:
        if r["judge_score_base"] > 0:
            assert r["quality_loss_judge"] == pytest.approx(
                (r["judge_score_base"] - r["judge_score"]) / r["judge_score_base"])
    assert again.rows_written == 0 and again.skipped == 2
