"""Small specs and lake readers shared by the sweep tests (tiny pipelines on CPU)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import yaml

from sweep import spec as S

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent

# Four DeepCache points on a 3-step tiny SD1.5, two prompts, the fewest pairs.
TINY = {
    "name": "tiny-test",
    "models": [{"model": "sd15", "preset": "tiny"}],
    "schedulers": ["ddim"], "steps": [3],
    "methods": {"deepcache": {"cache_interval": [2, 3], "cache_branch_id": [0, 1]}},
    "combos": ["deepcache"],
    "prompts": {"file": "datasets/prompts/default.txt", "count": 2},
    "seeds": [0],
    "quality": {"metric": "ssim", "budgets": [0.05]},
    "measure": {"screen_pairs": 2, "confirm_pairs": 2, "ci_target": 0.5},
    "early_stop": {"enabled": True, "prune": True, "min_prompts": 1, "margin": 0.5},
}


def tiny(**overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(TINY)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def tiny_spec(**overrides: Any) -> S.SweepSpec:
    return S.validate(tiny(**overrides), base_dir=str(ROOT))


def write_spec(path: Path, **overrides: Any) -> Path:
    path.write_text(yaml.safe_dump(tiny(**overrides)))
    return path


def trial_rows(lake: str | Path) -> list[dict[str, Any]]:
    root = Path(str(lake).removeprefix("file://")) / "trials"
    if not root.exists():
        return []
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pylist()


def baseline_rows(lake: str | Path) -> list[dict[str, Any]]:
    root = Path(str(lake).removeprefix("file://")) / "baselines"
    if not root.exists():
        return []
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pylist()


def expected_keys(spec: S.SweepSpec) -> set[str]:
    """Trial keys of every point, for this machine's CPU and library versions."""
    from sweep.catalog import trial_key
    from sweep.driver import resolved
    from sweep.measure import library_versions

    dtype = "float32" if spec.dtype == "auto" else spec.dtype
    inputs = S.trial_inputs(prompts=spec.prompts(), seeds=spec.seeds, measure=spec.measure, dtype=dtype,
                            clip_model=spec.clip_model)
    return {trial_key(resolved(cp.config), acc, "cpu", library_versions(), inputs)
            for cp in S.expand(spec).combos for acc in cp.points()}


def ray_children() -> list[str]:
    """Command lines of this process's Ray children (raylet, GCS) still alive."""
    import psutil

    names = []
    for p in psutil.Process().children(recursive=True):
        try:
            names.append(" ".join(p.cmdline()))
        except psutil.Error:
            continue
    return [n for n in names if "raylet" in n or "gcs_server" in n]


def reap(proc: subprocess.Popen) -> None:
    """End a driver started with ``start_new_session=True`` and whatever it started that
    is still alive: its process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
