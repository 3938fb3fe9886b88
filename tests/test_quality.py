"""Quality metrics: SSIM/PSNR, CLIP score with a tiny offline CLIP, losses, summaries."""

from __future__ import annotations

import math

import pytest
import torch
from engine_helpers import one_thread  # noqa: F401

from sweep import quality
from sweep.lake_schema import TRIAL_SCHEMA


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=g)


def test_identical_images():
    img = _images()
    ssim, psnr = quality.ssim_psnr(img, img.clone())
    assert ssim == pytest.approx(1.0) and math.isinf(psnr)


def test_more_noise_scores_lower():
    base = _images()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(base.shape, generator=g)
    little = quality.ssim_psnr(base + 0.01 * noise, base)
    more = quality.ssim_psnr(base + 0.1 * noise, base)
    assert 1.0 > little[0] > more[0]
    assert little[1] > more[1] > 0
    assert little[1] == pytest.approx(40.0, abs=0.5)  # sigma 0.01 on range 1 -> 40 dB


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        quality.ssim_psnr(_images(1), _images(2))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return quality.make_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_score_offline(clip_dir, one_thread, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scorer = quality.ClipScorer(clip_dir)
    imgs = _images(2)
    scores = scorer.score(imgs, ["a red fox in the snow", "a bowl of ramen"])
    assert len(scores) == 2 and all(0 <= s <= 100 for s in scores)
    assert scorer.score(imgs, ["a red fox in the snow", "a bowl of ramen"]) == scores
    assert scorer.score(imgs, ["a bowl of ramen", "a red fox in the snow"]) != scores
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorer.score(imgs, ["a cat"])


def test_missing_clip_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="cannot load a CLIP model"):
        quality.ClipScorer(tmp_path / "nope")


def test_losses():
    assert quality.loss("ssim", ssim=0.9) == pytest.approx(0.1)
    assert quality.loss("clip", clip_score=27.0, clip_score_base=30.0) == pytest.approx(0.1)
    assert quality.loss("clip", clip_score=33.0, clip_score_base=30.0) == pytest.approx(-0.1)
    assert quality.loss("clip", clip_score=None, clip_score_base=30.0) is None
    with pytest.raises(ValueError, match="unknown quality metric"):
        quality.loss("lpips", ssim=0.9)


def test_summary_averages_prompts_and_fills_the_quality_columns():
    s = quality.QualitySummary(clip_model="tiny")
    s.prompts.append(quality.PromptQuality("a", 0, ssim=0.9, psnr=30.0, clip_score=20.0, clip_score_base=25.0))
    s.prompts.append(quality.PromptQuality("b", 1, ssim=0.7, psnr=20.0, clip_score=30.0, clip_score_base=25.0))
    row = s.row()
    assert set(row) <= set(TRIAL_SCHEMA.names)
    assert row["ssim"] == pytest.approx(0.8) and row["psnr"] == pytest.approx(25.0)
    assert row["quality_loss_ssim"] == pytest.approx(0.2)
    assert row["quality_loss_clip"] == pytest.approx(0.0)
    assert row["n_prompts"] == 2 and row["clip_model"] == "tiny"
    assert [p["prompt"] for p in s.to_dict()["per_prompt"]] == ["a", "b"]
    assert quality.QualitySummary().row()["ssim"] is None
