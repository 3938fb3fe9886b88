"""The main job on the trained `shapes` model, end to end and for real: the default sweep
(`make sweep`'s spec) on a local Ray, its bounds (the budget cuts), tasks, codegen, and
the generated scripts run on the CPU as users run them, within the budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO / "datasets" / "sweeps" / "default.yaml"
BUDGET = 0.02
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def cli(*args, timeout=1200):
    proc = subprocess.run([sys.executable, "-m", "diffaccel.cli", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The default spec as shipped, into a fresh lake (about 5 minutes on a busy 2-core box)."""
    lake = tmp_path_factory.mktemp("lake") / "lake"
    cli("sweep", str(DEFAULT_SPEC), "--lake", str(lake))
    return lake


@pytest.mark.slow
def test_default_sweep_budget_cuts_and_scripts_run_within_it(swept, tmp_path):
    from PIL import Image

    from sweep.catalog import PARAMS, parse_tag

    rows = json.loads(cli("query", "--lake", str(swept), "--format", "json",
                          "select method, tag, status, speedup, quality_loss_ssim from trials"))
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    assert {r["method"] for r in rows} == set(spec["combos"])
    # A point whose loss over all its prompts is over every budget can be no bound, so it
    # lands stopped and untimed (early_stop.time_over_budget is off); every other row is ok,
    # within the largest budget.
    top = max(spec["quality"]["budgets"])
    assert {r["status"] for r in rows} <= {"ok", "stopped"}, rows
    assert all(r["quality_loss_ssim"] <= top for r in rows if r["status"] == "ok"), rows
    assert all(r["quality_loss_ssim"] > top and r["speedup"] is None for r in rows if r["status"] == "stopped"), rows

    # Budgets cut: under 0.02 (ssim), at least one method's bound is not its most
    # aggressive point (the grid's extreme in each parameter's "faster" direction).
    bounds = json.loads(cli("bounds", "--lake", str(swept), "--budget", str(BUDGET), "--format", "json"))
    cut = []
    for b in bounds:
        grid = spec["methods"][b["method"]]
        extreme = {p: (max if PARAMS[b["method"]][p].faster >= 0 else min)(v) for p, v in grid.items()}
        point = getattr(parse_tag(b["tag"]), b["method"])
        if any(getattr(point, p) != v for p, v in extreme.items()):
            cut.append(b["method"])
        assert b["quality_loss"] <= BUDGET
    assert cut, bounds
    over = [r for r in rows if r["quality_loss_ssim"] > BUDGET]
    assert over, "some point must exceed the budget for it to cut"

    # Tasks and scripts.
    out = tmp_path / "tasks"
    cli("tasks", "--lake", str(swept), "--out", str(out), "--budget", str(BUDGET))
    cli("codegen", "--tasks", str(out / "tasks.jsonl"), "--out", str(out))
    scripts = sorted((out / "scripts").glob("shapes_*.py"))
    assert scripts, list(out.rglob("*"))
    # One script per method, run as users run them: from the repository root, the model
    # by its default (the shipped folder), once accelerated and once with --baseline, on
    # the sweep's first prompt and seed.
    from sweep.prompts import load_prompts
    from sweep.quality import ssim_psnr

    prompt = load_prompts(REPO / spec["prompts"]["file"], 1)[0]
    import numpy as np
    import torch

    def tensor(path):
        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]

    losses = {}
    for script in scripts:
        pngs = []
        for extra in ([], ["--baseline"]):
            png = tmp_path / f"{script.stem}{'_base' if extra else ''}.png"
            proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--prompt", prompt, "--seed", "0",
                                   "--output", str(png), *extra], cwd=REPO, env=ENV, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, (script.name, proc.stderr[-3000:])
            pngs.append(png)
        losses[script.stem] = 1 - ssim_psnr(tensor(pngs[0]), tensor(pngs[1]))[0]
    print(losses)
    assert all(v <= BUDGET for v in losses.values()), losses
