"""Where a sweep worker's first pipeline load goes, stage by stage.

A sweep pays this once per worker and per config switch, inside Tune's wall-clock, so it
is the fixed cost that keeps GPU utilisation under 1 on a small grid (BENCHMARKS.md,
"Utilisation and scaling"). Each run is a fresh Python process that does what a worker's
first trial does (`sweep.worker.session_for`, then one baseline image), timing every
stage; the second and later runs find the operating system's file cache warm, as a
second worker does.

    PYTHONPATH=. python bench/bench_load.py --model shapes --runs 2 --out out/bench-load.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

_CHILD = r"""
import json, sys, time
stages, t = {}, time.perf_counter()
def mark(name):
    global t
    now = time.perf_counter(); stages[name] = round(now - t, 3); t = now
import torch; mark("import torch")
import diffusers, transformers; mark("import diffusers, transformers")
import sweep.worker, sweep.trial, sweep.methods; mark("import sweep")
if torch.cuda.is_available():
    torch.zeros(1, device="cuda"); torch.cuda.synchronize(); mark("CUDA context")
from sweep import measure, methods, pipelines
from sweep.catalog import PipelineConfig
from sweep.quality import JudgeScorer
from sweep.trial import default_device, resolve_config
a = json.loads(sys.argv[1])
device = default_device()
dtype = torch.float16 if device.startswith("cuda") else torch.float32
cfg = resolve_config(PipelineConfig(model=a["model"], preset=a["preset"], scheduler=a["scheduler"], steps=a["steps"]))
pipe = pipelines.load(cfg, device=device, dtype=dtype); mark("pipelines.load")
measure.device_info(device); mark("device_info")
if a["judge"]:
    JudgeScorer(a["judge"], device=device); mark("judge load")
kw = dict(num_inference_steps=cfg.steps, **pipelines.call_kwargs(cfg.model, cfg.preset))
if cfg.resolution:
    kw.update(height=cfg.resolution, width=cfg.resolution)
for i in range(3):
    methods.generate(pipe, "a red circle", seed=0, **kw); measure.synchronize(device); mark(f"baseline image {i + 1}")
print("STAGES " + json.dumps(stages))
"""


def run_once(args: argparse.Namespace) -> dict[str, float]:
    spec = {"model": args.model, "preset": args.preset, "scheduler": args.scheduler, "steps": args.steps,
            "judge": args.judge}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(),
                                                                                        os.environ.get("PYTHONPATH")]))})
    wall = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("STAGES ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"bench_load: the child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    stages = json.loads(line[len("STAGES "):])
    stages["process wall"] = round(wall, 3)
    return stages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--preset", default="hub")
    ap.add_argument("--scheduler", default="euler")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--judge", default="datasets/models/shapes-judge", help="judge model to load ('' for none)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", help="write the stages as JSON here")
    args = ap.parse_args(argv)
    runs = []
    for i in range(args.runs):
        runs.append(run_once(args))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[-1].items()), flush=True)
    if args.out:
        from sweep.atomic import write_atomic

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps({"argv": sys.argv, "runs": runs,
                                      "date_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
