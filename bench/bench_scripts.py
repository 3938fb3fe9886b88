"""Benchmark: do the reference scripts that codegen writes reach the speed the lake promised?

For each chosen task of a `diffaccel codegen` output folder, the script itself is imported
and its own functions do the work: `load_pipeline` builds the baseline and (a second copy)
the pipeline that `accelerate` patches; `generate` makes the images. Their latencies are
measured in interleaved pairs with a 95% interval (`sweep.measure.measure_pairs`, as the
sweep measures), and the quality loss (1 - SSIM) is that of the accelerated image against
the baseline image of the same prompt and seed.

A pair agrees when the script's speedup is within ±10% of the lake's, and its quality loss
within the task's budget. The pipelines are the `arch` presets (real architectures,
random weights), saved once with `save_pretrained` so that the scripts load them with
`from_pretrained` like any local model.

    PYTHONPATH=. python bench/bench_scripts.py --codegen OUT/tasks --n 6 --out $OUT/scripts.json

and smoke it on a CPU (tiny presets; the speeds then mean nothing)::

    PYTHONPATH=. python bench/bench_scripts.py --codegen OUT/tasks --n 2 --device cpu --preset tiny --pairs 2 --out /tmp/s.json

`--tasks ID,ID` picks tasks; by default the first feasible task of each (family, method)
in turn, until `--n`. `--gpu-slots` runs checks in parallel, one process per GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOLERANCE = 0.10


def feasible(codegen_dir: Path) -> list[dict]:
    """Tasks that got a script, with the script's path."""
    manifest = json.loads((codegen_dir / "manifest.json").read_text())
    tasks = {}
    for line in (codegen_dir / "tasks.jsonl").read_text().splitlines():
        if line.strip():
            t = json.loads(line)
            tasks[t["task_id"]] = t
    out = []
    for entry in manifest["tasks"]:
        if entry.get("status") == "rendered" and entry.get("task_id") in tasks:
            out.append(dict(tasks[entry["task_id"]], script=str(codegen_dir / entry["script"])))
    return out


def pick(tasks: list[dict], n: int, ids: list[str] | None) -> list[dict]:
    if ids:
        chosen = [t for t in tasks if t["task_id"] in ids]
        missing = sorted(set(ids) - {t["task_id"] for t in chosen})
        if missing:
            raise SystemExit(f"no rendered script for task(s) {', '.join(missing)}: see manifest.json")
        return chosen
    # Spread over what differs: first one per (family, method), then one per config too.
    order = sorted(tasks, key=lambda t: (t.get("difficulty") != "normal", t["config"]["model"],
                                         t["config"]["method"], t["config"]["steps"], t["task_id"]))
    keys = (lambda t: (t["config"]["model"], t["config"]["method"]),
            lambda t: tuple(t["config"][k] for k in ("model", "method", "scheduler", "steps")),
            lambda t: t["task_id"])
    chosen: list[dict] = []
    for key in keys:
        for t in order:
            if len(chosen) < n and key(t) not in {key(c) for c in chosen}:
                chosen.append(t)
    return chosen


def load_script(path: str):
    spec = importlib.util.spec_from_file_location(f"script_{abs(hash(path))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def preset_folder(model: str, cache: Path, preset: str = "arch", device: str = "cuda") -> Path:
    """The offline `preset` of `model`, saved once (fp16 when built on a GPU: seconds)."""
    import torch

    from sweep import pipelines

    path = cache / f"{model}-{preset}"
    if not (path / "model_index.json").exists():
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        pipe = pipelines.build(model, preset, device=device, dtype=dtype)
        tmp = Path(tempfile.mkdtemp(prefix=f".{model}-", dir=cache))
        pipe.save_pretrained(tmp, safe_serialization=True)
        del pipe
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        os.replace(tmp, path)
    return path


def pil_to_tensor(image):
    import numpy as np
    import torch

    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def check(task: dict, cache: Path, pairs: int, device: str = "cuda", preset: str = "arch") -> dict:
    import torch

    from sweep import measure
    from sweep.quality import ssim_psnr

    c, choice = task["config"], task["choice"]
    model_dir = preset_folder(c["model"], cache, preset, device)
    mod = load_script(task["script"])
    out_png = str(cache / f"{task['task_id']}.png")
    argv = sys.argv
    try:
        sys.argv = [task["script"], "--model", str(model_dir), "--device", device, "--output", out_png]
        args = mod.parse_args()
    finally:
        sys.argv = argv
    t0 = time.monotonic()
    base = mod.load_pipeline(args.model, args.device)
    accel, _helper = mod.accelerate(mod.load_pipeline(args.model, args.device))
    load_s = time.monotonic() - t0
    # The script's own baseline mode: the same call without the acceleration (T-GATE's
    # scripts call pipe.tgate(...), which an unpatched pipeline does not have).
    def run_base():
        return mod.generate(base, args, accelerated=False)

    def run_accel():
        return mod.generate(accel, args)

    base_img = pil_to_tensor(run_base()).float().div(255).unsqueeze(0)
    accel_img = pil_to_tensor(run_accel()).float().div(255).unsqueeze(0)
    ssim, psnr = ssim_psnr(accel_img, base_img)
    speed = measure.measure_pairs(run_base, run_accel, device=device, min_pairs=pairs, max_pairs=2 * pairs,
                                  target_halfwidth=0.03)
    lo, hi = speed.interval
    lake = choice["speedup"]
    loss = 1.0 - ssim
    result = {
        "task_id": task["task_id"], "script": os.path.relpath(task["script"], ROOT),
        "config": f"{c['model']} {c['scheduler']} {c['steps']} steps {c['resolution']}px",
        "method": c["method"], "tag": choice["tag"], "budget": task["budget"],
        "lake_speedup": lake, "lake_ci": [choice.get("speedup_ci_low"), choice.get("speedup_ci_high")],
        "lake_loss": choice.get("quality_loss"), "lake_device": choice.get("device"),
        "script_speedup": speed.speedup, "script_ci": [lo, hi], "pairs": speed.n_pairs,
        "baseline_ms": 1000 * sorted(speed.baseline_times)[len(speed.baseline_times) // 2],
        "script_loss": loss, "script_psnr": psnr,
        "speed_agrees": abs(speed.speedup / lake - 1) <= TOLERANCE,
        "loss_within_budget": loss <= task["budget"],
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu", "load_s": load_s,
    }
    result["gpu_seconds"] = time.monotonic() - t0
    base = accel = None  # free both pipelines before the next task
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def table(results: list[dict]) -> str:
    lines = ["| task | config | method (point) | lake speedup [CI] | script speedup [CI] | Δ | "
             "loss (script / budget) | agrees |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['task_id']} | | | | error: {r['error']} | | | no |")
            continue
        lci = r["lake_ci"]
        lake_ci = f" [{lci[0]:.2f}, {lci[1]:.2f}]" if None not in lci else ""
        delta = r["script_speedup"] / r["lake_speedup"] - 1
        ok = "yes" if r["speed_agrees"] and r["loss_within_budget"] else "no"
        lines.append(f"| {r['task_id']} | {r['config']} | {r['method']} ({r['tag']}) | "
                     f"{r['lake_speedup']:.2f}×{lake_ci} | {r['script_speedup']:.2f}× "
                     f"[{r['script_ci'][0]:.2f}, {r['script_ci'][1]:.2f}] | {delta:+.1%} | "
                     f"{r['script_loss']:.4f} / {r['budget']:g} | {ok} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--codegen", type=Path, required=True, help="a `diffaccel codegen` output folder")
    ap.add_argument("--n", type=int, default=6, help="how many tasks to check")
    ap.add_argument("--tasks", default=None, help="comma-separated task ids (default: spread over "
                    "families and methods)")
    ap.add_argument("--pairs", type=int, default=8, help="interleaved pairs per script (at least)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "diffaccel-presets")
    ap.add_argument("--gpu-slots", type=int, default=1, help="check this many tasks at once, one per GPU")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run with --preset tiny")
    ap.add_argument("--preset", choices=["arch", "tiny"], default="arch",
                    help="the offline preset the scripts load (arch: real size, random weights)")
    ap.add_argument("--out", type=Path, required=True, help="JSON results; a .md table is written beside")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.cache.mkdir(parents=True, exist_ok=True)
    tasks = feasible(args.codegen)
    chosen = pick(tasks, args.n, args.tasks.split(",") if args.tasks else None)
    if not chosen:
        raise SystemExit(f"no rendered task in {args.codegen}: run `diffaccel tasks` and `diffaccel codegen`")

    if args.worker or args.gpu_slots <= 1:
        results = []
        for task in chosen:
            try:
                results.append(check(task, args.cache, args.pairs, args.device, args.preset))
            except Exception as e:  # noqa: BLE001 - one broken script must not hide the others
                results.append({"task_id": task["task_id"], "error": f"{type(e).__name__}: {e}"[-500:]})
            print(json.dumps(results[-1], default=str), flush=True)
    else:
        # One process per GPU, each checking every slots-th task; presets are saved first,
        # once, so that the processes never write the same folder.
        for model in sorted({t["config"]["model"] for t in chosen}):
            subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                            f"from bench.bench_scripts import preset_folder; from pathlib import Path; "
                            f"preset_folder({model!r}, Path({str(args.cache)!r}), {args.preset!r})"], check=True)
        procs = []
        for slot in range(args.gpu_slots):
            ids = [t["task_id"] for t in chosen[slot::args.gpu_slots]]
            if not ids:
                continue
            part = args.out.with_suffix(f".part{slot}.json")
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(slot))
            procs.append((part, subprocess.Popen(
                [sys.executable, __file__, "--codegen", str(args.codegen), "--tasks", ",".join(ids),
                 "--pairs", str(args.pairs), "--cache", str(args.cache), "--out", str(part), "--worker",
                 "--preset", args.preset],
                env=env)))
        results = []
        for part, proc in procs:
            proc.wait()
            results += json.loads(part.read_text())["results"] if part.exists() else []
            part.unlink(missing_ok=True)
            part.with_suffix(".md").unlink(missing_ok=True)
    doc = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tolerance": TOLERANCE,
           "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str))
    args.out.with_suffix(".md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
