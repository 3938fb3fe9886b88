"""Benchmark of the trial engine on one GPU: SD 1.5 (arch), 512 px, 50 DDIM steps, fp16.

Points: DeepCache (3, 0) and (5, 0); ToMe 0.5; T-GATE with its defaults; DeepCache+T-GATE.
Every point is measured twice, independently (each with its own warm-up, interleaved
pairs and confidence interval), to show how repeatable a measurement is. The baseline
is loaded once and shared, as in a sweep.

    python bench/bench_trial.py --out $OUT/trial.json            # GPU (under 5 minutes on an H100)
    python bench/bench_trial.py --preset tiny --steps 4 --out /tmp/trial.json   # CPU smoke run

Prints a markdown table and writes everything as JSON to --out. On short smoke runs the
step-dependent parameters (T-GATE's gate, DeepCache's interval) are scaled to fit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere, with the bundle on PYTHONPATH

from sweep.catalog import Acceleration, PipelineConfig  # noqa: E402


def points(steps: int) -> list[tuple[str, Acceleration]]:
    """The benchmark's parameter points, scaled down when `steps` is below 50."""
    gate = 10 if steps >= 50 else max(2, steps // 2)
    tg = {"gate_step": gate, "sp_interval": min(5, steps), "fi_interval": 1, "warm_up": min(2, gate - 1)}
    return [
        ("DeepCache (3, 0)", Acceleration.from_params("deepcache", {"cache_interval": min(3, steps),
                                                                   "cache_branch_id": 0})),
        ("DeepCache (5, 0)", Acceleration.from_params("deepcache", {"cache_interval": min(5, steps),
                                                                   "cache_branch_id": 0})),
        ("ToMe 0.5", Acceleration.from_params("tome", {"ratio": 0.5, "max_downsample": 1})),
        ("T-GATE (defaults)", Acceleration.from_params("tgate", tg)),
        ("DeepCache+T-GATE", Acceleration.from_params("deepcache+tgate", {"cache_interval": min(3, steps),
                                                                          "cache_branch_id": 0, **tg})),
    ]


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


def _gib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**30:.2f}"


def _num(x: float | None, spec: str) -> str:
    if x is None:
        return "–"
    return "inf" if math.isinf(x) else format(x, spec)


def _strict(obj):
    """JSON without Infinity/NaN (PSNR of identical images is infinite): those become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strict(v) for v in obj]
    return obj


def table(result: dict) -> str:
    head = ("| point | rep | speedup | 95% CI | ±CI | pairs | stop | base ms | accel ms | FLOPs ratio "
            "| mem base GiB | mem accel GiB | SSIM | PSNR dB | s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in result["points"]:
        for i, r in enumerate(p["reps"], 1):
            lines.append(
                f"| {p['name']} | {i} | {r['speedup']:.3f} | [{r['speedup_ci_low']:.3f}, "
                f"{r['speedup_ci_high']:.3f}] | {r['speedup_ci_halfwidth']:.1%} | {r['n_pairs']} | "
                f"{r['pairs_stop']} | {_ms(r['baseline_latency_s'])} | {_ms(r['accel_latency_s'])} | "
                f"{r['compute_ratio']:.3f} | {_gib(r['baseline_peak_mem_bytes'])} | "
                f"{_gib(r['accel_peak_mem_bytes'])} | {_num(r['ssim'], '.4f')} | {_num(r['psnr'], '.2f')} | "
                f"{r['seconds']:.0f} |")
    lines.append("")
    lines.append("| point | speedup rep 1 | speedup rep 2 | difference | CIs overlap |")
    lines.append("|---|---|---|---|---|")
    for p in result["points"]:
        a, b = p["reps"]
        lines.append(f"| {p['name']} | {a['speedup']:.3f} | {b['speedup']:.3f} | {p['repeat_diff']:.1%} | "
                     f"{'yes' if p['cis_overlap'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    ap.add_argument("--preset", default="arch", choices=("arch", "tiny", "hub"))
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--resolution", type=int, default=None, help="default: 512 (arch/hub), 64 (tiny)")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--min-pairs", type=int, default=4)
    ap.add_argument("--max-pairs", type=int, default=10)
    ap.add_argument("--target-halfwidth", type=float, default=0.03)
    ap.add_argument("--prompt-seed", type=int, default=0)
    args = ap.parse_args(argv)

    from sweep import prompts as prompt_sets
    from sweep import trial
    from sweep.pipelines import quiet_libraries

    quiet_libraries()
    t_start = time.perf_counter()
    cfg = PipelineConfig(args.model, "ddim", args.steps, preset=args.preset, resolution=args.resolution)
    todo = points(args.steps)
    for _, acc in todo:  # fail on a bad point before the model loads
        acc.validate(cfg.family, cfg.steps)
    prompt = prompt_sets.load_prompts(n=1)[0]
    seed = args.prompt_seed

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    session = trial.TrialSession(cfg, device=args.device, progress=None)
    log(f"loaded {session.cfg.label()} ({args.preset}) on {session.device_columns['device']}, "
        f"{str(session.dtype).replace('torch.', '')}")
    result: dict = {"config": {**session.config_columns(), "prompt": prompt, "seed": seed},
                    "device": session.device_columns, "measure": {
                        "min_pairs": args.min_pairs, "max_pairs": args.max_pairs,
                        "target_halfwidth": args.target_halfwidth,
                        "interval": "95% Student-t interval on log pair ratios"},
                    "points": []}
    for name, acc in todo:
        reps = []
        q = session.quality(acc, [prompt], [seed])
        ratio = session.compute_ratio(acc, prompt=prompt, seed=seed)
        if q.ssim is None or not math.isfinite(q.ssim):
            log(f"warning: {name}: SSIM is {q.ssim} (non-finite images; fp16 overflow with random weights?)")
        for rep in (1, 2):
            t0 = time.perf_counter()
            speed = session.speed(acc, prompt=prompt, seed=seed, min_pairs=args.min_pairs,
                                  max_pairs=args.max_pairs, target_halfwidth=args.target_halfwidth)
            row = session.trial_row(acc, quality=q, speed=speed, compute_ratio=ratio, phase="confirm")
            row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            row["seconds"] = time.perf_counter() - t0
            row["baseline_times"] = speed.baseline_times
            row["accel_times"] = speed.accel_times
            reps.append(row)
            log(f"{name} rep {rep}: speedup {speed.speedup:.3f} ±{speed.halfwidth:.1%} "
                f"({speed.n_pairs} pairs, {speed.pairs_stop})")
        a, b = reps
        result["points"].append({
            "name": name, "tag": acc.tag, "method": acc.combo, "params": acc.params, "reps": reps,
            "repeat_diff": abs(a["speedup"] - b["speedup"]) / ((a["speedup"] + b["speedup"]) / 2),
            "cis_overlap": a["speedup_ci_low"] <= b["speedup_ci_high"] and b["speedup_ci_low"] <= a["speedup_ci_high"],
        })
    session.release()
    base = session.baseline_row(runs=3)
    result["baseline"] = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in base.items()}
    result["baseline"]["fork_rebuilds"] = session.rebuilds
    result["elapsed_s"] = time.perf_counter() - t_start

    print(f"## Trial engine: {session.cfg.label()} ({args.preset}), {result['device']['device']}, "
          f"{result['config']['dtype']}\n")
    print(f"Baseline: median {_ms(base['latency_s'])} ms (IQR {_ms(base['latency_spread_s'])} ms) over "
          f"{base['n_runs']} runs, peak {_gib(base['peak_mem_bytes'])} GiB, {base['flops'] / 1e9:,.1f} GFLOPs "
          f"per call.\n")
    print(table(result))
    print(f"\nTotal {result['elapsed_s']:.0f} s. Versions: {result['device']['versions_json']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_strict(result), indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
