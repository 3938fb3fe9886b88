"""Test lakes for the codegen tests: real Parquet written through `sweep.lake.LakeWriter`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sweep.catalog import Acceleration, PipelineConfig, trial_key
from sweep.lake import LakeWriter

VERSIONS = {"torch": "2.13.0", "diffusers": "0.42.1"}


def trial_row(model="sd15", scheduler="ddim", steps=50, resolution=512, method="deepcache", params=None,
              speedup=2.0, loss=0.01, status="ok", device_kind="H100", device="NVIDIA H100 80GB HBM3",
              validate=True, **extra: Any) -> dict[str, Any]:
    """One trial row. `validate=False` stores parameters the catalog would reject."""
    params = dict(params or {})
    acc = Acceleration.from_params(method, params, model=model if validate else None,
                                   steps=steps if validate else None)
    cfg = PipelineConfig(model=model, scheduler=scheduler, steps=steps, preset="arch", resolution=resolution)
    row = {
        "trial_key": trial_key(cfg, acc, device_kind, VERSIONS), "tag": acc.tag, "sweep_id": "test",
        "model": model, "preset": "arch", "scheduler": scheduler, "steps": steps, "resolution": resolution,
        "batch": 1, "dtype": "float16", "guidance_scale": 7.5, "method": acc.combo,
        **acc.params, "params_json": json.dumps(acc.params, sort_keys=True),
        "status": status, "phase": "confirm", "final": True,
        "speedup": speedup,
        "speedup_ci_low": None if speedup is None else speedup * 0.97,
        "speedup_ci_high": None if speedup is None else speedup * 1.03,
        "quality_loss_ssim": loss, "quality_loss_clip": None if loss is None else loss / 2, "n_prompts": 8,
        "device": device, "device_kind": device_kind, "versions_json": json.dumps(VERSIONS),
        "finished_at": datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc),
    }
    row.update(extra)
    return row


def write_lake(path, rows) -> str:
    LakeWriter(str(path)).write_trials(rows)
    return str(path)
