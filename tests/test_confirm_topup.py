"""A confirmation tops up its screen: the screen's timed pairs count towards its own,
and its quality is the screen's once one prompt, measured again, agrees. And a screen
whose loss over all its prompts is over every budget is not timed."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from engine_helpers import STEPS, one_thread  # noqa: F401 - a fixture

from sweep import measure
from sweep.bookkeeping import outcome_of
from sweep.pruning import clearly_over
from sweep.spec import EarlyStop, Measure


def test_clearly_over_after_the_last_prompt_is_the_loss_itself():
    rule = EarlyStop(enabled=True, min_prompts=1, margin=0.5)
    budgets = [0.02, 0.05]
    assert not clearly_over([0.06], budgets, rule, total=2)            # one of two: not clearly
    assert clearly_over([0.06, 0.06], budgets, rule, total=2)          # all in: over the largest budget
    assert not clearly_over([0.05, 0.05], budgets, rule, total=2)      # at the budget is within
    assert not clearly_over([0.06, 0.06], budgets, EarlyStop(time_over_budget=True), total=2)
    assert not clearly_over([0.06, 0.06], budgets, EarlyStop(enabled=False), total=2)
    # min_prompts guards estimates, not the measured loss.
    assert clearly_over([0.06], budgets, EarlyStop(min_prompts=3), total=1)


def test_measure_pairs_tops_up_prior_pairs():
    calls = {"b": 0, "a": 0}

    def run(side):
        def fn():
            calls[side] += 1
        return fn

    prior = {"baseline": [2.0, 2.1, 1.9], "accel": [1.0, 1.0, 1.0]}
    r = measure.measure_pairs(run("b"), run("a"), device="cpu", min_pairs=6, max_pairs=6, warmup=1,
                              target_halfwidth=1e-9, prior=prior)
    assert r.reused == 3 and r.n_pairs == 6
    assert r.baseline_times[:3] == prior["baseline"] and r.accel_times[:3] == prior["accel"]
    assert calls == {"b": 1 + 3, "a": 1 + 3}  # one warm-up pair, then only the missing three
    row = r.row()
    assert row["pairs_reused"] == 3 and json.loads(row["pair_times_json"])["baseline"][:3] == prior["baseline"]
    with pytest.raises(ValueError, match="as many"):
        measure.measure_pairs(run("b"), run("a"), device="cpu", prior={"baseline": [1.0], "accel": []})


@pytest.mark.usefixtures("one_thread")
def test_confirm_reuses_its_screen(monkeypatch):
    from sweep import trial
    from sweep.catalog import Acceleration, PipelineConfig

    cfg = PipelineConfig("sd15", "ddim", STEPS, preset="tiny")
    acc = Acceleration.from_params("deepcache", {"cache_interval": 3, "cache_branch_id": 0})
    prompts, seeds = ["a red circle", "a blue square", "a green star"], [0, 0, 0]
    settings = asdict(Measure(screen_pairs=2, confirm_pairs=4, ci_target=1e-9, count_flops="never"))
    kw = dict(metric="ssim", budgets=[0.5], clearly_over=lambda losses: False, settings=settings)
    with trial.TrialSession(cfg) as session:
        screen, _ = session.sweep_trial(acc, prompts, seeds, phase="screen", **kw)
        reuse = outcome_of(screen, "ssim").reuse
        assert set(reuse) == {"prompt_quality", "pair_times"}

        measured = []
        real = session.prompt_quality
        monkeypatch.setattr(session, "prompt_quality", lambda *a: measured.append(a[1]) or real(*a))
        confirm, _ = session.sweep_trial(acc, prompts, seeds, phase="confirm", reuse=reuse, **kw)
        assert measured == prompts[:1]  # only the first prompt ran again
        assert confirm["pairs_reused"] == screen["n_pairs"] == 2 and confirm["n_pairs"] == 3 * 4
        times = json.loads(confirm["pair_times_json"])
        assert times["baseline"][:2] == json.loads(screen["pair_times_json"])["baseline"]
        assert json.loads(confirm["prompt_quality_json"])[1:] == json.loads(screen["prompt_quality_json"])[1:]
        assert confirm["quality_loss_ssim"] == pytest.approx(screen["quality_loss_ssim"], abs=1e-4)

        # A first prompt that disagrees with the screen: every prompt is measured again.
        bad = json.loads(reuse["prompt_quality"])
        bad[0]["ssim"] -= 0.1
        measured.clear()
        session.sweep_trial(acc, prompts, seeds, phase="confirm", reuse=dict(reuse, prompt_quality=json.dumps(bad)),
                            **kw)
        assert measured == prompts

        # Stopped screens hand nothing on; nor do confirm rows.
        assert outcome_of(dict(screen, status="stopped"), "ssim").reuse is None
        assert outcome_of(confirm, "ssim").reuse is None
