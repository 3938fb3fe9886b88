"""Benchmark of the distributed sweep: GPU utilisation, scaling, and what pruning saves.

Run from the repository root on the GPU host (no install needed; `sweep` imports from
the checkout)::

    PYTHONPATH=. python bench/bench_sweep.py --gpus 1,4 --grid small --out out/bench-sweep

and smoke it on a CPU with the tiny preset::

    PYTHONPATH=. python bench/bench_sweep.py --preset tiny --gpus 1,2 --grid tiny --out out/bench-sweep-cpu

What it measures, on SD1.5 (`arch`: real size, random weights, no download):

1. Utilisation: seconds spent inside pipeline calls (quality prompts, FLOP count,
   warm-up, timing pairs) over the wall-clock time Tune ran, per GPU (target >= 0.85).
   Also "busy": the trials' time after their pipeline was loaded (adds metrics,
   patching and bookkeeping), and how many trials had to load a pipeline, for how long.
2. Scaling: trials per hour with each `--gpus` count (a fresh lake each), against the
   first count.
3. Pruning: the sweep with early stopping and pruning against the exhaustive grid (both
   on the largest GPU count): trial-seconds spent (GPU-seconds on GPUs), and for each
   config, combo and budget the fastest point within budget, found by each.

Writes ``bench_sweep.json`` and ``bench_sweep.md`` to `--out` and prints the table.
Every number comes from the run itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GRIDS = {
    # name: (deepcache, tgate, tome) grids
    "tiny": ({"cache_interval": [2, 3], "cache_branch_id": [0, 1]},
             None,
             {"ratio": [0.25, 0.5], "max_downsample": [1]}),
    "quick": ({"cache_interval": [2, 3, 4, 5], "cache_branch_id": [0, 1]},
              {"gate_step": [10, 15], "sp_interval": [5], "fi_interval": [1, 3], "warm_up": [2]},
              {"ratio": [0.3, 0.5], "max_downsample": [1, 2]}),
    "small": ({"cache_interval": [2, 3, 4, 5], "cache_branch_id": [0, 1, 2, 3]},
              {"gate_step": [10, 15, 20], "sp_interval": [5], "fi_interval": [1, 3], "warm_up": [2]},
              {"ratio": [0.3, 0.5, 0.7], "max_downsample": [1, 2]}),
    "medium": ({"cache_interval": [2, 3, 4, 5], "cache_branch_id": [0, 1, 2, 3, 5, 8]},
               {"gate_step": [8, 10, 12, 15, 20], "sp_interval": [3, 5], "fi_interval": [1, 3], "warm_up": [2]},
               {"ratio": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "max_downsample": [1, 2, 4]}),
}


def bench_spec(args) -> dict:
    dc, tg, tm = GRIDS[args.grid]
    methods = {"deepcache": dc, "tome": tm}
    if tg is not None:
        methods["tgate"] = tg
    return {
        "name": f"bench-{args.grid}",
        "models": [{"model": "sd15", "preset": args.preset}],
        "schedulers": ["ddim"], "steps": [args.steps],
        "methods": methods, "combos": list(methods),
        "prompts": {"file": "datasets/prompts/default.txt", "count": args.prompts},
        "seeds": [0],
        "quality": {"metric": "ssim", "budgets": args.budgets},
        "measure": {"screen_pairs": args.pairs, "confirm_pairs": 2 * args.pairs, "ci_target": 0.03},
        "early_stop": {"enabled": True, "prune": True, "min_prompts": 1, "margin": 0.5},
    }


def run(spec, lake: str, gpus: int, is_gpu: bool):
    from sweep.driver import run_sweep

    kwargs = {"max_concurrent": gpus, "progress": True}
    if not is_gpu:
        kwargs.update(num_cpus=gpus)  # one CPU per trial stands in for one GPU
    t0 = time.monotonic()
    summary = run_sweep(spec, lake, **kwargs)
    return summary, time.monotonic() - t0


def trial_rows(lake: str):
    import pyarrow.dataset as ds

    return ds.dataset(f"{lake}/trials", format="parquet", partitioning="hive").to_table().to_pylist()


def bounds(rows, budgets) -> dict[str, dict]:
    """(config, combo, budget) -> fastest point within budget; confirm rows win over screen."""
    best_row = {}
    for r in sorted(rows, key=lambda r: r["phase"] == "confirm"):
        best_row[r["trial_key"]] = r
    out = {}
    for r in best_row.values():
        if r["status"] != "ok" or r["quality_loss_ssim"] is None or r["speedup"] is None:
            continue
        for b in budgets:
            if r["quality_loss_ssim"] <= b:
                k = f"{r['model']}-{r['scheduler']}-{r['steps']}s|{r['method']}|{b:g}"
                if k not in out or r["speedup"] > out[k]["speedup"]:
                    out[k] = {"tag": r["tag"], "speedup": r["speedup"], "loss": r["quality_loss_ssim"]}
    return out


def spent(summary) -> float:
    """Seconds the trials held their GPU (or CPU slot): loading, quality, timing."""
    return sum((t.get("trial_seconds") or 0.0) for t in summary.trial_seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", default="1,4", help="GPU counts to compare, e.g. 1,4 (CPU: trial slots)")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="small", help="grid size (small ~20 GPU-min on H100)")
    ap.add_argument("--preset", choices=["arch", "tiny"], default="arch")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=3, help="timing pairs when screening")
    # Random weights drift little (1 - SSIM of 0.0001-0.01 on SD1.5 arch), so budgets in
    # that range are what make stopping and pruning bite, as real budgets do on real weights.
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.001, 0.002])
    ap.add_argument("--no-exhaustive", action="store_true", help="skip the exhaustive comparison")
    ap.add_argument("--out", type=Path, default=Path("out/bench-sweep"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from sweep.spec import expand, validate

    is_gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if is_gpu else "cpu"
    counts = [int(x) for x in args.gpus.split(",")]
    spec = validate(bench_spec(args), base_dir=str(ROOT))
    args.out.mkdir(parents=True, exist_ok=True)

    def write(results):  # after every run, so a run cut short still leaves its figures
        (args.out / "bench_sweep.json").write_text(json.dumps(results, indent=2, default=str))

    work = Path(tempfile.mkdtemp(prefix="bench-sweep-", dir=args.out))
    results = {"device": device, "grid": args.grid, "preset": args.preset, "steps": args.steps,
               "prompts": args.prompts, "budgets": args.budgets, "runs": {}}

    def record(summary, wall, lake, n):
        executed = [t for t in summary.trial_seconds if t.get("trial_seconds")]
        return {
            "slots": n, "wall_s": wall, "fit_wall_s": summary.fit_wall_s, "counts": summary.counts,
            "trials_run": len(executed), "trials_per_hour": len(executed) / summary.fit_wall_s * 3600,
            "utilisation": sum(t.get("pipeline_seconds") or 0.0 for t in executed) / (n * summary.fit_wall_s),
            "busy": sum(t.get("inference_seconds") or 0.0 for t in executed) / (n * summary.fit_wall_s),
            "loads": sum(1 for t in executed if t.get("loaded_pipeline")),
            "load_s": sum(t.get("load_seconds") or 0.0 for t in executed),
            "trial_seconds_spent": spent(summary), "bounds": bounds(trial_rows(lake), args.budgets),
            "trials": summary.trial_seconds,
        }

    for n in counts:
        lake = str(work / f"lake-pruned-{n}")
        summary, wall = run(spec, lake, n, is_gpu)
        results["runs"][f"pruned-{n}"] = record(summary, wall, lake, n)
        write(results)
    if not args.no_exhaustive:
        n = max(counts)
        ex_spec = validate(dict(bench_spec(args), early_stop={"enabled": False, "prune": False}), base_dir=str(ROOT))
        lake = str(work / "lake-exhaustive")
        summary, wall = run(ex_spec, lake, n, is_gpu)
        results["runs"]["exhaustive"] = record(summary, wall, lake, n)
        write(results)

    runs = results["runs"]
    base = runs[f"pruned-{counts[0]}"]
    unit = "GPU" if is_gpu else "CPU slot"
    lines = [f"# bench_sweep: {device}, SD1.5 {args.preset}, {args.steps} steps, grid {args.grid} "
             f"({expand(spec).size} points)", "",
             f"| run | {unit}s | trials run | pruned | stopped | wall in Tune (s) | trials/h | scaling | "
             f"utilisation | busy | pipeline loads (s) | trial-s spent |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        scaling = r["trials_per_hour"] / base["trials_per_hour"] if name.startswith("pruned") else None
        lines.append(f"| {name} | {r['slots']} | {r['trials_run']} | {r['counts'].get('pruned', 0)} | "
                     f"{r['counts'].get('stopped', 0)} | {r['fit_wall_s']:.0f} | {r['trials_per_hour']:.0f} | "
                     f"{'' if scaling is None else f'{scaling:.2f}x'} | {r['utilisation']:.2f} | {r['busy']:.2f} | "
                     f"{r['loads']} ({r['load_s']:.0f}) | {r['trial_seconds_spent']:.0f} |")
    if "exhaustive" in runs:
        pr, ex = runs[f"pruned-{max(counts)}"], runs["exhaustive"]
        same = [k for k in ex["bounds"] if pr["bounds"].get(k, {}).get("tag") == ex["bounds"][k]["tag"]]
        results["pruning"] = {
            "time_fraction": pr["trial_seconds_spent"] / ex["trial_seconds_spent"],
            "bounds_total": len(ex["bounds"]), "bounds_same_point": len(same),
            "bounds_missing": sorted(set(ex["bounds"]) - set(pr["bounds"])),
        }
        p = results["pruning"]
        lines += ["", f"Pruning: {p['time_fraction']:.2f} of the exhaustive trial-seconds; "
                      f"{p['bounds_same_point']}/{p['bounds_total']} bounds found at the same point "
                      f"(missing: {', '.join(p['bounds_missing']) or 'none'}).", "",
                  "| config · combo · budget | exhaustive: point, speedup | pruned: point, speedup |",
                  "|---|---|---|"]
        for k in sorted(ex["bounds"]):
            e, q = ex["bounds"][k], pr["bounds"].get(k)
            found = "—" if q is None else f"{q['tag']}, {q['speedup']:.2f}x"
            lines.append(f"| {k.replace('|', ' · ')} | {e['tag']}, {e['speedup']:.2f}x | {found} |")
    md = "\n".join(lines) + "\n"
    (args.out / "bench_sweep.md").write_text(md)
    write(results)
    print(md)


if __name__ == "__main__":
    main()
