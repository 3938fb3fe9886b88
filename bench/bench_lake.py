"""How fast bounds and Pareto fronts come out of a large lake.

Writes a seeded synthetic lake of N trial rows (default 1,000,000) in the real layout
(trials/model=.../method=.../part-*.parquet, one file per partition), then times, from
an opened lake, `bounds()` and `pareto()` (both through the DuckDB views, fetched into
pandas) with a few repeats, and prints the median and all runs. Lake generation is not
timed. Target: each <= 2 s on the 2-core CI machine.

    .venv/bin/python bench/bench_lake.py [--rows 1000000] [--repeats 5] [--lake DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codegen.lake import open_lake  # noqa: E402
from sweep.lake_schema import TRIAL_PARTITIONS, TRIAL_SCHEMA, file_schema  # noqa: E402

# (model, resolution, methods) as a sweep over UNet and transformer families would make.
PARTITIONS = [
    ("sd15", 512, ["deepcache", "tgate", "tome", "deepcache+tgate", "deepcache+tome"]),
    ("sdxl", 1024, ["deepcache", "tgate", "tome", "deepcache+tgate+tome"]),
    ("pixart_alpha", 1024, ["tgate"]),
]
SCHEDULERS = ["ddim", "dpmpp", "unipc", "euler", "pndm"]
STEPS = [20, 25, 50]
DEVICES = ["H100", "H200"]


def _partition_table(rng: np.random.Generator, n: int, model: str, res: int, method: str) -> pa.Table:
    fields = {f.name: f.type for f in file_schema(TRIAL_SCHEMA, TRIAL_PARTITIONS)}
    cols: dict[str, pa.Array] = {}
    keys = np.char.mod("%016x", rng.integers(0, 2**63, n))
    # about 5% of the rows re-measure a key (screen then confirm), as a real sweep does
    dup = rng.random(n) < 0.05
    keys[dup] = keys[rng.integers(0, n, dup.sum())]
    status = rng.choice(["ok", "stopped", "pruned", "failed"], n, p=[0.85, 0.05, 0.07, 0.03])
    ok = status == "ok"
    speedup = 1 + rng.gamma(2.0, 0.8, n)
    loss = np.clip((speedup - 1) * 0.01 * rng.lognormal(0, 0.5, n), 0, 1)
    cols["trial_key"] = pa.array(keys)
    cols["tag"] = pa.array(np.char.add("DC", rng.integers(1, 10, n).astype(str)))
    cols["sweep_id"] = pa.array(np.full(n, "bench"))
    cols["preset"] = pa.array(np.full(n, "hub"))
    cols["scheduler"] = pa.array(rng.choice(SCHEDULERS, n))
    cols["steps"] = pa.array(rng.choice(STEPS, n).astype(np.int32))
    cols["resolution"] = pa.array(np.full(n, res, np.int32))
    cols["batch"] = pa.array(np.ones(n, np.int32))
    cols["device_kind"] = pa.array(rng.choice(DEVICES, n))
    cols["status"] = pa.array(status)
    phase = np.where(dup, "confirm", "screen")
    cols["phase"] = pa.array(phase)
    cols["final"] = pa.array(phase == "confirm")
    cols["speedup"] = pa.array(np.where(ok, speedup, np.nan), from_pandas=True)
    cols["speedup_ci_low"] = pa.array(np.where(ok, speedup * 0.97, np.nan), from_pandas=True)
    cols["speedup_ci_high"] = pa.array(np.where(ok, speedup * 1.03, np.nan), from_pandas=True)
    cols["quality_loss_ssim"] = pa.array(np.where(ok, loss, np.nan), from_pandas=True)
    cols["quality_loss_clip"] = pa.array(np.where(ok, loss * 0.5, np.nan), from_pandas=True)
    cols["params_json"] = pa.array(np.full(n, json.dumps({"cache_interval": 3})))
    t0 = np.datetime64("2025-01-01T00:00:00", "us")
    cols["finished_at"] = pa.array(t0 + rng.integers(0, 10**12, n).astype("timedelta64[us]"),
                                   pa.timestamp("us", tz="UTC"))
    cols["schema_version"] = pa.array(np.ones(n, np.int32))
    arrays = [cols[name].cast(typ) if name in cols else pa.nulls(n, typ) for name, typ in fields.items()]
    return pa.table(arrays, schema=pa.schema([pa.field(k, v) for k, v in fields.items()]))


def write_lake(root: Path, rows: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    parts = [(m, r, meth) for m, r, methods in PARTITIONS for meth in methods]
    per = rows // len(parts)
    files = 0
    for i, (model, res, method) in enumerate(parts):
        n = per + (rows - per * len(parts) if i == 0 else 0)
        folder = root / "trials" / f"model={model}" / f"method={method}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(_partition_table(rng, n, model, res, method), folder / f"part-{uuid.uuid4().hex[:12]}.parquet")
        files += 1
    return files


def _time(fn, repeats: int) -> tuple[float, list[float], int]:
    runs, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = len(fn())
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), runs, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lake", type=Path, help="reuse or create the synthetic lake here (default: a temp dir)")
    args = ap.parse_args()
    tmp = None
    if args.lake is None:
        tmp = tempfile.TemporaryDirectory()
        args.lake = Path(tmp.name)
    if not (args.lake / "trials").exists():
        t = time.perf_counter()
        files = write_lake(args.lake, args.rows)
        print(f"wrote {args.rows:,} trial rows in {files} Parquet files in {time.perf_counter() - t:.1f} s "
              f"(not timed below)")
    # Other work on the machine slows every figure below; say how busy it was.
    print(f"cpu cores: {os.cpu_count()}; load average (1, 5, 15 min): "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    t = time.perf_counter()
    lk = open_lake(str(args.lake))
    con = lk.con  # the first connection builds the views and the deduplicated key index
    print(f"open_lake + first connect (list files, build views and key index): {time.perf_counter() - t:.3f} s")
    n_trials = con.execute("SELECT count(*) FROM trials").fetchone()[0]
    n_all = con.execute("SELECT count(*) FROM trials_all").fetchone()[0]
    print(f"rows stored: {n_all:,}; distinct trials: {n_trials:,}")
    for name, fn, repeats in (("bounds", lk.bounds, args.repeats), ("pareto", lk.pareto, args.repeats),
                              # every column of every trial into pandas: for scale, not a target
                              ("trials", lk.trials, 1)):
        med, runs, n = _time(fn, repeats)
        print(f"{name:8s} median {med:.3f} s over {repeats} run(s) "
              f"({', '.join(f'{r:.3f}' for r in runs)}); {n:,} rows out")
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
