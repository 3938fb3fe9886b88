"""Benchmark: `tasks` and `codegen` end to end on a synthetic lake of 100,000 trial rows.

Target (README): rendering 10,000 tasks from a lake of 100,000 rows takes <= 10 s on the
2-core CI machine. The lake is real Parquet written through `sweep.lake.LakeWriter` from a
seeded generator: 3,680 configs (4 GPU kinds × 5 families × 5 schedulers × 8 step
counts × every supported method combination) of about 27 points each. Each command
runs as its own process (`python -m diffaccel.cli`, what `diffaccel` runs), and is timed from start to exit.

    .venv/bin/python bench/bench_codegen.py [--rows 100000] [--scales 0.7,0.85,1.0] [--repeat 3] [--keep DIR]

Scales below 1 keep every task feasible, so every task is rendered; the default CLI
scales (0.8,1.0,1.2) are timed as well. Runs after the first of each scale write into
the same folder, as a rerun of `codegen` does.

Timing on the CI machine: its root filesystem is ext4 without a journal, where creating
files within a few minutes of deleting thousands is slow (each new inode skips past the
recently freed ones): a first `codegen` into a fresh folder then takes seconds longer.
The cleanup at the end of this script deletes some 18,000 files, so leave five minutes
between runs (or use --keep and delete the folder later); the per-run times show such
outliers. The machine's speed also varies over time: compare builds in the same window.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sweep.catalog import (  # noqa: E402
    FAMILIES,
    SCHEDULERS,
    Acceleration,
    DeepCacheConfig,
    TGateConfig,
    ToMeConfig,
    compatibility_matrix,
    stable_hash,
)
from sweep.lake import LakeWriter  # noqa: E402

KINDS = {"H100": "NVIDIA H100 80GB HBM3", "A100": "NVIDIA A100-SXM4-80GB", "H200": "NVIDIA H200",
         "L4": "NVIDIA L4"}
STEPS = (10, 15, 20, 25, 30, 40, 50, 60)



def random_point(rng: random.Random, combo: str, fam, steps: int) -> Acceleration:
    parts = combo.split("+")
    kw = {}
    if "deepcache" in parts:
        kw["deepcache"] = DeepCacheConfig(rng.randint(2, min(steps, 10)), rng.randrange(fam.deepcache_branches))
    if "tgate" in parts:
        gate = rng.randint(1, steps)
        kw["tgate"] = TGateConfig(gate, rng.randint(1, min(5, steps)), rng.randint(1, min(3, steps)),
                                  rng.randint(0, min(gate - 1, 3)))
    if "tome" in parts:
        kw["tome"] = ToMeConfig(rng.choice((0.25, 0.5, 0.75)), rng.choice(fam.tome_levels))
    return Acceleration(**kw)


def synthetic_rows(n_rows: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    matrix = compatibility_matrix()
    configs = [(kind, model, sched, steps, combo)
               for kind in KINDS for model in FAMILIES for sched in SCHEDULERS for steps in STEPS
               for combo in matrix if matrix[combo][model]]
    when = datetime(2025, 5, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(n_rows):
        kind, model, sched, steps, combo = configs[i % len(configs)]
        fam = FAMILIES[model]
        acc = random_point(rng, combo, fam, steps)
        speedup = round(rng.uniform(1.05, 6.0), 4)
        # Faster points lose more quality, with noise: a realistic spread around the budget.
        loss = round(max(0.0005, 0.004 * speedup + rng.gauss(0, 0.006)), 5)
        rows.append({
            "trial_key": stable_hash({"bench": i, "seed": seed}), "tag": acc.tag, "sweep_id": "bench",
            "model": model, "preset": "hub", "scheduler": sched, "steps": steps,
            "resolution": fam.default_resolution, "batch": 1, "dtype": "float16", "guidance_scale": 7.5,
            "method": acc.combo, **acc.params, "params_json": json.dumps(acc.params, sort_keys=True),
            "status": "ok", "phase": "confirm", "final": True, "speedup": speedup,
            "speedup_ci_low": speedup * 0.97, "speedup_ci_high": speedup * 1.03,
            "quality_loss_ssim": loss, "quality_loss_clip": loss / 2, "n_prompts": 16,
            "device": KINDS[kind], "device_kind": kind, "finished_at": when,
        })
    return rows


def timed(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one command in its own process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "diffaccel.cli", *args], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout.strip()


def fmt(runs: list[tuple[float, float, str]]) -> str:
    walls = sorted(r[0] for r in runs)
    cpus = sorted(r[1] for r in runs)
    each = ", ".join(f"{r[0]:.2f}" for r in runs)
    return (f"wall min {walls[0]:6.2f} s, median {statistics.median(walls):6.2f} s; "
            f"CPU min {cpus[0]:6.2f} s  ({len(runs)} runs: {each} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--scales", default="0.7,0.85,1.0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command (min and median reported)")
    ap.add_argument("--keep", help="keep the lake and outputs in this folder")
    args = ap.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_codegen_"))
    try:
        lake = work / "lake"
        if lake.exists():
            shutil.rmtree(lake)
        t0 = time.perf_counter()
        rows = synthetic_rows(args.rows, args.seed)
        LakeWriter(str(lake)).write_trials(rows)
        print(f"lake: {len(rows):,} rows, {sum(1 for _ in lake.rglob('*.parquet'))} Parquet files, "
              f"written in {time.perf_counter() - t0:.1f} s (not timed below)")
        print(f"load average before timing: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} CPUs")
        for scales in (args.scales, "0.8,1.0,1.2"):
            out = work / f"out-{scales}"
            shutil.rmtree(out, ignore_errors=True)
            t_runs, c_runs = [], []
            for _ in range(args.repeat):
                t_runs.append(timed(["tasks", "--lake", str(lake), "--out", str(out), "--scales", scales]))
                c_runs.append(timed(["codegen", "--tasks", str(out / "tasks.jsonl"), "--out", str(out)]))
            n_files = sum(1 for _ in (out / "scripts").glob("*.py"))
            total = sorted(t[0] + c[0] for t, c in zip(t_runs, c_runs, strict=True))
            print(f"\nscales {scales}: {t_runs[0][2]}")
            print(f"  tasks:   {fmt(t_runs)}")
            print(f"  codegen: {fmt(c_runs)}")
            print(f"           {c_runs[0][2].splitlines()[0]}; {n_files:,} distinct script files")
            print(f"  tasks + codegen: wall min {total[0]:.2f} s, median {statistics.median(total):.2f} s "
                  f"(target <= 10 s for 10,000 tasks)")
        print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
