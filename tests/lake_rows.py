"""Trial and baseline rows for the lake-reading tests, written with the real lake writer."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from sweep.catalog import Acceleration, PipelineConfig, trial_key

VERSIONS = {"torch": "2.13.0", "diffusers": "0.42.1"}
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def trial(method: str = "deepcache", params: dict[str, Any] | None = None, *, model: str = "sd15",
          scheduler: str = "ddim", steps: int = 20, resolution: int = 512, device_kind: str = "H100",
          speedup: float = 2.0, loss: float = 0.01, clip_loss: float | None = None, status: str = "ok",
          phase: str = "screen", minute: int = 0, key: str | None = None, preset: str = "hub",
          sweep_id: str = "s1", **extra: Any) -> dict[str, Any]:
    """One trial row; `key` defaults to the real trial key of the config and point."""
    acc = Acceleration.from_params(method, params or {})
    cfg = PipelineConfig(model=model, scheduler=scheduler, steps=steps, preset=preset, resolution=resolution)
    row: dict[str, Any] = {
        "trial_key": key or trial_key(cfg, acc, device_kind, VERSIONS),
        "baseline_key": f"b-{model}-{scheduler}-{steps}-{device_kind}",
        "tag": acc.tag, "sweep_id": sweep_id,
        "model": model, "preset": preset, "scheduler": scheduler, "steps": steps,
        "resolution": resolution, "batch": 1, "dtype": "float16", "guidance_scale": 7.5,
        "method": acc.combo, **acc.params, "params_json": json.dumps(acc.params, sort_keys=True),
        "status": status, "phase": phase, "final": phase == "confirm",
        "baseline_latency_s": 1.0, "accel_latency_s": None if speedup is None else 1.0 / speedup,
        "speedup": speedup if status == "ok" else None,
        "speedup_ci_low": None if speedup is None else speedup * 0.97,
        "speedup_ci_high": None if speedup is None else speedup * 1.03,
        "n_pairs": 8,
        "quality_loss_ssim": loss if status == "ok" else None,
        "quality_loss_clip": (loss / 2 if clip_loss is None else clip_loss) if status == "ok" else None,
        "ssim": None if loss is None else 1 - loss,
        "device": f"NVIDIA {device_kind}", "device_kind": device_kind,
        "versions_json": json.dumps(VERSIONS), "torch_version": VERSIONS["torch"],
        "diffusers_version": VERSIONS["diffusers"],
        "started_at": T0 + timedelta(minutes=minute), "finished_at": T0 + timedelta(minutes=minute, seconds=30),
    }
    if status != "ok":
        row["error" if status == "failed" else "stop_reason"] = f"{status} for a reason"
    row.update(extra)
    return row


def baseline(model: str = "sd15", scheduler: str = "ddim", steps: int = 20, device_kind: str = "H100",
             minute: int = 0, latency: float = 1.0) -> dict[str, Any]:
    return {
        "baseline_key": f"b-{model}-{scheduler}-{steps}-{device_kind}", "sweep_id": "s1",
        "model": model, "preset": "hub", "scheduler": scheduler, "steps": steps, "resolution": 512,
        "batch": 1, "dtype": "float16", "guidance_scale": 7.5, "latency_s": latency, "n_runs": 5,
        "device": f"NVIDIA {device_kind}", "device_kind": device_kind,
        "versions_json": json.dumps(VERSIONS), "torch_version": VERSIONS["torch"],
        "diffusers_version": VERSIONS["diffusers"], "created_at": T0 + timedelta(minutes=minute),
    }
