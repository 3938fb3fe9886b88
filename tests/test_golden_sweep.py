"""Behaviour kept: a small sweep on CPU stores the same rows as the recorded snapshot
(`tests/golden/tiny-sweep.json`), less what timing decides.

The sweep is `sweep_helpers.TINY` (the tests' spec: tiny SD1.5, 3 DDIM steps, two
prompts) with DeepCache and T-GATE points. Compared per screen row: tag, method,
parameters, status, phase, finality, prompts, stop reason and the quality columns
(rounded to 8 decimals); confirm rows: which methods have one and that each repeats
its screen row's quality. Left out: timings, speedups, pair counts, which point a
method confirms and how many (its fastest, a matter of timing on a shared CPU), ids and keys (they
hold the library versions and host), and ToMe, whose random token choice is not yet
the same run to run.

Refresh deliberately, then review and commit `git diff tests/golden/`:

    DIFFACCEL_UPDATE_GOLDEN=1 PYTHONPATH=$PWD python -m pytest -q -m slow tests/test_golden_sweep.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sweep_helpers import tiny_spec, trial_rows  # tests/ is on sys.path under pytest

from sweep.driver import run_sweep

ray = pytest.importorskip("ray")

GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny-sweep.json"
UPDATE = os.environ.get("DIFFACCEL_UPDATE_GOLDEN") == "1"
METHODS = {"deepcache": {"cache_interval": [2, 3], "cache_branch_id": [0, 1]},
           "tgate": {"gate_step": [2, 3], "sp_interval": [1], "fi_interval": [1], "warm_up": [0]}}
SAME = ("tag", "method", "params_json", "status", "phase", "final", "n_prompts", "stop_reason", "model",
        "scheduler", "steps", "resolution")
QUALITY = ("ssim", "psnr", "quality_loss_ssim", "quality_loss_clip")


def _plain(row: dict) -> dict:
    out = {k: row.get(k) for k in SAME}
    out.update({k: None if row.get(k) is None else round(row[k], 8) for k in QUALITY})
    return out


def snapshot(rows: list[dict]) -> dict:
    screen = sorted((_plain(r) for r in rows if r["phase"] == "screen"), key=lambda r: r["tag"])
    by_tag = {r["tag"]: r for r in screen}
    confirms = [_plain(r) for r in rows if r["phase"] == "confirm"]
    return {"screen": screen,
            # How many per method is timing's call (a confirmation that drops below another
            # point confirms that one too); that each method with a bound gets one is not.
            "methods_confirmed": sorted({r["method"] for r in confirms}),
            "confirms_repeat_screen_quality": all(all(c[k] == by_tag[c["tag"]][k] for k in QUALITY)
                                                  for c in confirms)}


@pytest.mark.slow
def test_a_tiny_sweep_stores_the_golden_rows(tmp_path):
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        run_sweep(tiny_spec(methods=METHODS, combos=["deepcache", "tgate"]), str(tmp_path / "lake"), progress=False)
    finally:
        ray.shutdown()
    got = snapshot(trial_rows(tmp_path / "lake"))
    assert got["screen"] and got["methods_confirmed"]
    if UPDATE:
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())
