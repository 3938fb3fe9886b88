"""Is a baseline image slower when both GPUs run one? One process per GPU, each timing
`n` baseline images (shapes, DDIM 25) over the same wall-clock window: after loading and
3 warm-up images it waits for the shared start time. Run by probe.sh, from the
repository root; prints one JSON line. (The 2026-11-30 11:31 run, tidied for lint with
the same behaviour.)

    python probe.py GPU N START_EPOCH     # PROBE_THREADS=1 sets torch's thread count
"""

import json
import os
import sys
import time

import torch

from sweep import pipelines
from sweep.catalog import PipelineConfig

gpu, n, start = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
if os.environ.get("PROBE_THREADS"):
    torch.set_num_threads(int(os.environ["PROBE_THREADS"]))
dev = f"cuda:{gpu}" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if dev != "cpu":
        torch.cuda.synchronize(dev)


pipe = pipelines.load(PipelineConfig("shapes", "ddim", 25, preset="hub"), device=dev,
                      dtype=torch.float16 if dev != "cpu" else torch.float32)
kw = dict(prompt="a red circle above a blue square", num_inference_steps=25, output_type="pil",
          **pipelines.call_kwargs("shapes", "hub"))
for _ in range(3):
    pipe(**kw)
sync()
late = time.time() - start
while time.time() < start:
    time.sleep(0.01)
ts = []
for _ in range(n):
    t = time.perf_counter()
    pipe(**kw)
    sync()
    ts.append(time.perf_counter() - t)
ts.sort()
print(json.dumps({"gpu": gpu, "median_ms": round(1000 * ts[len(ts) // 2], 1), "min_ms": round(1000 * ts[0], 1),
                  "late_s": round(late, 1), "threads": torch.get_num_threads(),
                  "omp": os.environ.get("OMP_NUM_THREADS"), "affinity": len(os.sched_getaffinity(0)),
                  "tag": os.environ.get("PROBE_TAG")}), flush=True)
