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


def demo_rows(seed: int = 0, preset: str = "hub") -> list[dict[str, Any]]:
    """A small sweep's worth of rows: two GPUs, two models, two schedulers, two step counts,
    three method combinations over a parameter grid, with some stopped, pruned and failed."""
    import random

    rng = random.Random(seed)
    rows = []
    minute = 0
    grids = {
        "deepcache": [{"cache_interval": i, "cache_branch_id": b} for i in (2, 3, 4, 5, 6) for b in (0, 2)],
        "tgate": [{"gate_step": g, "sp_interval": s} for g in (4, 6, 8, 10) for s in (1, 3)],
        "deepcache+tgate": [{"cache_interval": i, "gate_step": g} for i in (2, 3, 4) for g in (6, 10)],
    }
    for device_kind, speed in (("H100", 1.0), ("H200", 1.08)):
        for model in ("sd15", "sdxl"):
            for scheduler in ("ddim", "dpmpp"):
                for steps in (20, 50):
                    for method, points in grids.items():
                        for params in points:
                            aggr = sum(v for k, v in params.items() if k in ("cache_interval", "sp_interval"))
                            aggr += sum(12 - v for k, v in params.items() if k in ("gate_step",))
                            aggr -= params.get("cache_branch_id", 0)
                            su = speed * (1 + 0.18 * aggr * (steps / 35) ** 0.3) * rng.uniform(0.95, 1.05)
                            loss = max(0.0, 0.0035 * aggr * (20 / steps) ** 0.5 * rng.uniform(0.7, 1.3))
                            status = rng.choices(["ok", "stopped", "pruned", "failed"], [85, 6, 6, 3])[0]
                            minute += 1
                            rows.append(trial(method, params, model=model, scheduler=scheduler, steps=steps,
                                              resolution=512 if model == "sd15" else 1024,
                                              device_kind=device_kind, speedup=round(su, 3),
                                              loss=round(loss, 4), status=status, minute=minute,
                                              preset=preset, sweep_id="demo"))
    return rows
