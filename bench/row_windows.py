"""How fast a sweep got through its first k trials, read from its lake's rows alone.

For runs that a time limit cut short (so that Tune never reported a wall-clock time),
this is the like-for-like way to compare them with a complete run of the same grid: the
seconds from the first trial's start to the k-th trial's end, and how busy the devices
were in that window (the rows' ``gpu_seconds`` over devices x window). Pipeline loads and
Tune's start-up come before the first trial starts, so they are outside the window.

    PYTHONPATH=. python bench/row_windows.py --first 15,18 LAKE:1 LAKE:2

Each argument is a lake and the number of devices its run had.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sweep.lake import LakeReader  # noqa: E402


def windows(lake: str, devices: int, firsts: list[int]) -> list[dict]:
    rows = [r for r in LakeReader(lake).trial_columns(["phase", "gpu_seconds", "started_at", "finished_at"])
            if r["started_at"] is not None and r["finished_at"] is not None]
    rows.sort(key=lambda r: r["finished_at"])
    if not rows:
        raise ValueError(f"{lake} holds no trial that ran: nothing to time")
    t0 = min(r["started_at"] for r in rows)
    out = []
    for k in sorted({k for k in firsts if 0 < k <= len(rows)} | {len(rows)}):
        seconds = (rows[k - 1]["finished_at"] - t0).total_seconds()
        busy = sum(r["gpu_seconds"] or 0.0 for r in rows[:k])
        out.append({"first": k, "confirms": sum(r["phase"] == "confirm" for r in rows[:k]),
                    "window_s": seconds, "busy": busy / (devices * seconds) if seconds else None})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lakes", nargs="+", help="LAKE:DEVICES, e.g. out/lakes/exhaustive-2gpu:2")
    ap.add_argument("--first", default="", help="trial counts to report, e.g. 15,18 (the total is always added)")
    args = ap.parse_args(argv)
    try:
        firsts = [int(x) for x in args.first.split(",") if x.strip()]
        specs = []
        for item in args.lakes:
            lake, _, n = item.rpartition(":")
            if not lake or not n.isdigit() or int(n) < 1:
                raise ValueError(f"{item!r}: write LAKE:DEVICES, e.g. out/lakes/exhaustive-2gpu:2")
            specs.append((lake, int(n)))
        print("| lake | devices | first k trials | of which confirmations | window (s) | busy |")
        print("|---|---|---|---|---|---|")
        for lake, n in specs:
            for w in windows(lake, n, firsts):
                print(f"| {lake} | {n} | {w['first']} | {w['confirms']} | {w['window_s']:.1f} | {w['busy']:.2f} |")
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
