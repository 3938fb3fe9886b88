"""The training script, end to end at tiny widths on the CPU: trains, saves a pipeline
that loads with from_pretrained, and resumes from its saved weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def train(*args):
    proc = subprocess.run([sys.executable, str(REPO / "training" / "train_shapes.py"), "--smoke", *args],
                          cwd=REPO, env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                                         "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_smoke_training_saves_loads_and_resumes(tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    train("--out", str(tmp_path / "a"))
    log = json.loads((tmp_path / "a" / "train_log.json").read_text())
    assert log["unet_steps_done"] == 4 and len(log["vae_loss"]) == 3 and log["distinct_captions"] > 1
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "a" / "shapes")
    assert pipe.tokenizer.tokenize("a small red circle") == ["a</w>", "small</w>", "red</w>", "circle</w>"]
    assert pipe.vae.config.scaling_factor == pytest.approx(log["scaling_factor"])
    img = pipe("a small red circle on a grey background", num_inference_steps=2, height=128, width=128,
               output_type="pt").images
    assert img.shape == (1, 3, 128, 128) and torch.isfinite(img).all()

    train("--out", str(tmp_path / "b"), "--resume", str(tmp_path / "a"), "--unet-steps", "6")
    again = json.loads((tmp_path / "b" / "train_log.json").read_text())
    assert again["resumed_from_step"] == 4 and again["unet_steps_done"] == 6
    assert [s for s, _ in again["unet_loss"]] == [0, 1, 2, 3, 4, 5]
