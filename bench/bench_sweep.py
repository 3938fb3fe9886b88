"""Benchmark of the distributed sweep: the policy beside the exhaustive grid, measured in
one run, with GPU utilisation and scaling.

Run from the repository root on the GPU host (no install needed; `sweep` imports from
the checkout)::

    PYTHONPATH=. python bench/bench_sweep.py --spec datasets/sweeps/map-shapes.yaml \
        --gpus 1,2 --policy-gpus 2 --out out/bench-sweep

or on one of the built-in SD1.5 grids (`arch` weights: real size, random, no download)
instead of a spec file::

    PYTHONPATH=. python bench/bench_sweep.py --grid quick --gpus 1,2 --out out/bench-sweep

and smoke it on a CPU, where each count is a number of CPU trial slots::

    PYTHONPATH=. python bench/bench_sweep.py --grid tiny --preset tiny --gpus 1,2 --out out/bench-sweep-cpu

What one run does, in order, each into a fresh lake kept under ``OUT/lakes/<run>``
(``exhaustive-1gpu``, ``exhaustive-2gpu``, ``policy-2gpu``; ``cpu`` on a CPU):

1. **Exhaustive runs**, one per count in `--gpus`: the spec with early stopping and
   pruning off, so every point is screened and each grid's bound points confirmed.
2. **Policy run** on `--policy-gpus` (default: the largest of `--gpus`; 0 skips it): the
   spec's own ``early_stop`` section. A spec that switches both stopping and pruning off
   (an exhaustive map such as map-shapes.yaml) gets them switched on, as `bench/replay.py`
   does, and the output says so: otherwise both sides would be the same grid.

The figures (``bench_sweep.md``, every one also in ``bench_sweep.json``):

* **utilisation**: seconds inside pipeline calls (quality images, FLOP count, warm-up,
  timed pairs; the trials' ``pipeline_seconds``) over GPUs x the wall-clock time Tune
  ran (``fit_wall_s``), per GPU (issue 15 item 4 targets >= 0.85 on 2 GPUs). **busy**:
  the trials' seconds after their pipeline was loaded (adds metrics, patching and
  bookkeeping), on the same scale. **pipeline loads**: how many trials had to load a
  pipeline, and their load seconds.
* **trials/h** and **scaling**: trials run per hour in Tune, and that rate over the
  exhaustive run's with the fewest GPUs (``scaling_base``; ``--gpus 2,1`` runs 2 first).
  The runs screen the same points, but how many points each confirms depends on its
  screens' noise (a confirmation that drops below another point's screen
  confirms that one too), so their trials need not be the same. **work scaling** does not
  depend on that: pipeline-seconds per second of Tune's wall-clock, over that same run's
  (GPUs x utilisation over its utilisation).
* **same trials' pipeline s**: the pipeline-seconds of the trials both runs ran, this
  run's over the base run's (and how many). Above 1, the same trials ran slower here, and
  utilisation and work scaling count the extra seconds as work; trials/h does not.
* **device-seconds** ("GPU-s"): the sum of the lake rows' ``gpu_seconds`` (a trial's wall
  time on its GPU), per config and in total. On a CPU rows carry no ``gpu_seconds``; the
  same wall time, ``finished_at - started_at``, is used (CPU slot seconds).
* **trial counts** from the lake rows: screens run to the end (ok), stopped early,
  pruned (never run), failed, and confirmations.
* **side by side**: the policy run against the exhaustive run of the same count (else
  the largest). For every (config, combo, budget) and every (config, budget) over all
  combos, the bound each found, computed from each lake's rows by `sweep.bounds` (the row
  to believe, then `best_point`, on the spec's metric), and whether they agree by
  `bench/replay.py`'s rule: same point, or both 95% speedup CIs overlap, or neither found
  a point. Then each side's device-seconds and the ratio policy / exhaustive (issue 15
  item 3 targets <= 50% with every bound agreeing).

``bench_sweep.json`` is rewritten after every run (atomically), so a run cut short keeps
the figures of the runs that finished; it also holds the command line and the UTC date.
Every number comes from the run itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.replay import CONFIG_COLS, Bound, agree, config_name  # noqa: E402
from sweep.atomic import write_atomic  # noqa: E402
from sweep.bounds import believed, best_point  # noqa: E402

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
DEFAULT_GRID = "small"
ROW_COLS = ["trial_key", *CONFIG_COLS, "tag", "method", "phase", "status", "gpu_seconds", "speedup",
            "speedup_ci_low", "speedup_ci_high", "started_at", "finished_at"]


class BenchError(ValueError):
    """Bad input to the benchmark, found before anything starts."""


# ------------------------------------------------------------------------- input


def add_scaling(runs: Mapping[str, dict[str, Any]]) -> None:
    """Set each exhaustive run's ``scaling`` and ``work_scaling`` over the exhaustive run
    with the fewest GPUs so far (the first of those), whatever order ``--gpus`` ran them
    in: ``--gpus 2,1`` runs the 2-GPU target first, so that a time limit cuts the 1-GPU
    run, not it, and is still scaled over 1 GPU once that has run."""
    ex = [r for r in runs.values() if r["kind"] == "exhaustive"]
    if not ex:
        return
    base = min(ex, key=lambda r: r["slots"])
    for r in ex:
        rate, work = base["trials_per_hour"], base.get("work_per_s")
        r["scaling"] = r["trials_per_hour"] / rate if rate and r["trials_per_hour"] else None
        r["work_scaling"] = r["work_per_s"] / work if work and r.get("work_per_s") else None
        r["scaling_base"] = base["slots"]
        r["trial_time_ratio"], r["common_trials"] = trial_time_ratio(r, base)


def trial_time_ratio(run: Mapping[str, Any], base: Mapping[str, Any]) -> tuple[float | None, int]:
    """Pipeline-seconds of the trials both runs ran (same key and phase), this run's over
    `base`'s, and how many there were. 1 means the same trials ran as fast; above 1, this
    run's ran slower, and utilisation and work scaling count those extra seconds as work.
    On 2026-11-30 the run that came first on a freshly started host was the slow one
    (1.24 with `--gpus 2,1`, 0.87 with `--gpus 1,2`), so read scaling beside it."""
    def by_key(r):
        return {(t.get("key"), t.get("phase")): t["pipeline_seconds"] for t in r.get("trials") or ()
                if t.get("pipeline_seconds") and t.get("trial_seconds")}
    mine, theirs = by_key(run), by_key(base)
    common = set(mine) & set(theirs)
    below = sum(theirs[k] for k in common)
    return (sum(mine[k] for k in common) / below if below else None), len(common)


def _same_trials(run: Mapping[str, Any]) -> str:
    ratio = run.get("trial_time_ratio")
    return "" if ratio is None else f"{ratio:.2f}x ({run['common_trials']})"


def parse_counts(text: str, flag: str = "--gpus", allow_zero: bool = False, example: str = "1,2") -> list[int]:
    """'1,2' -> [1, 2]; a clear error for anything but whole numbers >= 1 (or 0 where allowed)."""
    low = 0 if allow_zero else 1
    try:
        counts = [int(p.strip()) for p in str(text).split(",")]
    except ValueError:
        raise BenchError(f"{flag} {text!r}: give whole numbers separated by commas, e.g. {flag} {example}") from None
    if any(c < low for c in counts):
        raise BenchError(f"{flag} {text!r}: every count must be at least {low}, e.g. {flag} {example}")
    return counts


def bench_spec(args) -> dict:
    """A built-in SD1.5 grid (`--grid`) as a spec dict."""
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


def load_spec(args):
    """The spec the runs sweep (`--spec` file or `--grid`), validated."""
    from sweep.spec import load, validate

    if args.spec is not None:
        if not Path(args.spec).is_file():
            raise BenchError(f"--spec {args.spec}: no such file; pass a sweep spec such as "
                             "datasets/sweeps/map-shapes.yaml")
        return load(args.spec)
    return validate(bench_spec(args), base_dir=str(ROOT))


def sides(spec) -> tuple[Any, Any, str | None]:
    """(exhaustive spec, policy spec, a note when the policy's early_stop was switched on)."""
    es = spec.early_stop
    exhaustive = replace(spec, early_stop=replace(es, enabled=False, prune=False))
    if es.enabled or es.prune:
        return exhaustive, spec, None
    # An exhaustive spec as written would make both sides the same grid; replay.py
    # switches the section on for the same reason, so the two benches compare alike.
    policy = replace(spec, early_stop=replace(es, enabled=True, prune=True))
    return exhaustive, policy, ("the spec's early_stop has stopping and pruning off: the policy run "
                                "switches both on (its other early_stop settings as written)")


# ---------------------------------------------------------------------- measuring


def device_seconds(row: Mapping[str, Any]) -> float:
    """A row's seconds on its device: ``gpu_seconds``, else (CPU rows, which carry none)
    the same wall time that column holds on a GPU, ``finished_at - started_at``."""
    if row.get("gpu_seconds") is not None:
        return float(row["gpu_seconds"])
    start, end = row.get("started_at"), row.get("finished_at")
    if start is None or end is None:
        return 0.0  # pruned and failed rows: nothing ran (or nothing was timed)
    return (end - start).total_seconds()


def config_of(row: Mapping[str, Any]) -> str:
    return config_name(tuple(row[k] for k in CONFIG_COLS))


def row_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """'screen_ok', 'screen_stopped', 'screen_pruned', 'confirm_ok', ... -> rows."""
    out: dict[str, int] = {}
    for r in rows:
        k = f"{r['phase']}_{r['status']}"
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def lake_bounds(rows: list[Mapping[str, Any]], metric: str, budgets: Sequence[float]) -> dict[str, Any]:
    """config -> {"all": [Bound per budget], "combos": {combo: [Bound per budget]}}, from
    the rows `sweep.bounds` believes (a confirm row over its screen row), bound by
    `sweep.bounds.best_point` on `metric`."""
    loss_col = f"quality_loss_{metric}"

    def fields(r):
        return r["status"], r["speedup"], r.get(loss_col), r["trial_key"]

    def bound(b: float, items: list[Mapping[str, Any]]) -> Bound:
        r = best_point(items, b, fields)
        if r is None:
            return Bound(b, None)
        ci = (r["speedup_ci_low"], r["speedup_ci_high"])
        return Bound(b, r["tag"], float(r[loss_col]), float(r["speedup"]), None if None in ci else ci)

    by_config: dict[str, list[Mapping[str, Any]]] = {}
    for r in believed(rows).values():
        by_config.setdefault(config_of(r), []).append(r)
    out = {}
    for cfg, items in sorted(by_config.items()):
        combos = sorted({r["method"] for r in items})
        out[cfg] = {"all": [bound(b, items) for b in budgets],
                    "combos": {c: [bound(b, [r for r in items if r["method"] == c]) for b in budgets]
                               for c in combos}}
    return out


def read_rows(lake: str, metric: str) -> list[dict[str, Any]]:
    from sweep.lake import LakeReader

    return LakeReader(lake).trial_columns([*ROW_COLS, f"quality_loss_{metric}"])


def lake_record(lake: str, metric: str, budgets: Sequence[float]) -> dict[str, Any]:
    """What a lake's rows say about the run(s) that wrote it: counts, device-seconds per
    config, bounds."""
    rows = read_rows(lake, metric)
    per_config: dict[str, float] = {}
    for r in rows:
        per_config[config_of(r)] = per_config.get(config_of(r), 0.0) + device_seconds(r)
    return {"lake": lake, "row_counts": row_counts(rows), "device_seconds": sum(per_config.values()),
            "device_seconds_per_config": dict(sorted(per_config.items())),
            "bounds": lake_bounds(rows, metric, budgets)}


def run_record(summary, wall: float, lake: str, n: int, kind: str, metric: str,
               budgets: Sequence[float]) -> dict[str, Any]:
    """Everything one run measured: from its summary (Tune's view) and its lake (the rows)."""
    executed = [t for t in summary.trial_seconds if t.get("trial_seconds")]
    pipeline_s = sum(t.get("pipeline_seconds") or 0.0 for t in executed)
    fit = summary.fit_wall_s
    from_rows = lake_record(lake, metric, budgets)
    return {
        "kind": kind, "slots": n, "lake": lake, "wall_s": wall, "fit_wall_s": fit, "counts": summary.counts,
        "trials_run": len(executed),
        "trials_per_hour": len(executed) / fit * 3600 if fit else None,
        "utilisation": pipeline_s / (n * fit) if fit else None,
        "work_per_s": pipeline_s / fit if fit else None,
        "busy": sum(t.get("inference_seconds") or 0.0 for t in executed) / (n * fit) if fit else None,
        "loads": sum(1 for t in executed if t.get("loaded_pipeline")),
        "load_s": sum(t.get("load_seconds") or 0.0 for t in executed),
        **from_rows,
        "trials": summary.trial_seconds,
    }


def side_by_side(policy: Mapping[str, Any], exhaustive: Mapping[str, Any],
                 budgets: Sequence[float]) -> dict[str, Any]:
    """Bounds and device-seconds of the two runs, config by config."""
    configs = []
    for cfg in sorted(set(policy["bounds"]) | set(exhaustive["bounds"])):
        none = {"all": [Bound(b, None) for b in budgets], "combos": {}}
        pb, eb = policy["bounds"].get(cfg, none), exhaustive["bounds"].get(cfg, none)
        combos = {}
        for c in sorted(set(pb["combos"]) | set(eb["combos"])):
            p = pb["combos"].get(c, none["all"])
            e = eb["combos"].get(c, none["all"])
            combos[c] = {"exhaustive": e, "policy": p,
                         "agree": [agree(x, y) for x, y in zip(p, e, strict=True)]}
        ps = policy["device_seconds_per_config"].get(cfg, 0.0)
        es = exhaustive["device_seconds_per_config"].get(cfg, 0.0)
        configs.append({"config": cfg, "exhaustive": eb["all"], "policy": pb["all"],
                        "agree": [agree(x, y) for x, y in zip(pb["all"], eb["all"], strict=True)],
                        "combos": combos, "exhaustive_seconds": es, "policy_seconds": ps,
                        "ratio": ps / es if es else None})
    ps, es = policy["device_seconds"], exhaustive["device_seconds"]
    n_all = [a for c in configs for a in c["agree"]]
    n_combo = [a for c in configs for v in c["combos"].values() for a in v["agree"]]
    return {"configs": configs, "exhaustive_seconds": es, "policy_seconds": ps,
            "ratio": ps / es if es else None,
            "bounds_agree": sum(n_all), "bounds_total": len(n_all),
            "combo_bounds_agree": sum(n_combo), "combo_bounds_total": len(n_combo),
            "all_agree": all(n_all) and all(n_combo)}


# ------------------------------------------------------------------------ output


def _bound_text(b: Bound) -> str:
    if b.tag is None:
        return "none"
    ci = f" [{b.ci[0]:.2f}, {b.ci[1]:.2f}]" if b.ci else ""
    return f"{b.tag} {b.speedup:.2f}x{ci} (loss {b.loss:.4f})"


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def compare(spec_path: str, exhaustive_lake: str, policy_lake: str) -> str:
    """The side-by-side table of two lakes already written (say, a policy run resumed
    after a time limit), by the spec's metric and budgets: no run is started."""
    from sweep.lake import LakeReader
    from sweep.spec import expand, load

    spec = load(spec_path)
    ex = lake_record(exhaustive_lake, spec.metric, spec.budgets)
    pol = lake_record(policy_lake, spec.metric, spec.budgets)
    devices = sorted({r["device"] for lake in (exhaustive_lake, policy_lake)
                      for r in LakeReader(lake).trial_columns(["device"]) if r["device"]})
    results = {"is_gpu": devices != ["cpu"], "device": " / ".join(devices) or "no device recorded",
               "spec_name": spec.name, "points": expand(spec).size,
               "metric": spec.metric, "budgets": list(spec.budgets),
               "command": shlex.join(["bench/bench_sweep.py", "--spec", spec_path, "--compare", exhaustive_lake,
                                      policy_lake]),
               "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "notes": [], "runs": {},
               "side_by_side": {"policy_run": policy_lake, "exhaustive_run": exhaustive_lake,
                                **side_by_side(pol, ex, spec.budgets)}}
    counts = [f"- {name}: " + ", ".join(f"{k} {v}" for k, v in rec["row_counts"].items())
              for name, rec in (("exhaustive", ex), ("policy", pol))]
    return markdown(results) + "\nRows:\n\n" + "\n".join(counts) + "\n"


def markdown(results: Mapping[str, Any]) -> str:
    unit = "GPU" if results["is_gpu"] else "CPU slot"
    su = "GPU-s" if results["is_gpu"] else "slot-s"
    lines = [f"# bench_sweep: {results['device']}, spec {results['spec_name']}, {results['points']} points, "
             f"metric {results['metric']}, budgets {', '.join(f'{b:g}' for b in results['budgets'])}", "",
             f"`{results['command']}` ({results['date_utc']})", ""]
    lines += [f"Note: {n}." for n in results["notes"]]
    if results["notes"]:
        lines.append("")
    runs = results["runs"]
    if runs:
        lines += [f"| run | {unit}s | trials run | screen ok | stopped | pruned | confirm | failed | "
                  f"wall in Tune (s) | trials/h | scaling | work scaling | same trials' pipeline s | utilisation | busy | "
                  f"pipeline loads (s) | {su} (rows) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        c = r["row_counts"]
        confirm = sum(v for k, v in c.items() if k.startswith("confirm_"))
        failed = sum(v for k, v in c.items() if k.endswith("_failed"))
        scaling, work = r.get("scaling"), r.get("work_scaling")
        lines.append(
            f"| {name} | {r['slots']} | {r['trials_run']} | {c.get('screen_ok', 0)} | {c.get('screen_stopped', 0)} | "
            f"{c.get('screen_pruned', 0)} | {confirm} | {failed} | {r['fit_wall_s']:.1f} | "
            f"{_num(r['trials_per_hour'], '.0f')} | {'' if scaling is None else f'{scaling:.2f}x'} | "
            f"{'' if work is None else f'{work:.2f}x'} | {_same_trials(r)} | "
            f"{_num(r['utilisation'], '.2f')} | {_num(r['busy'], '.2f')} | {r['loads']} ({r['load_s']:.0f}) | "
            f"{r['device_seconds']:.1f} |")
    sbs = results.get("side_by_side")
    if sbs:
        ratio = _num(None if sbs["ratio"] is None else 100 * sbs["ratio"], ".0f")
        lines += ["", f"## {sbs['policy_run']} against {sbs['exhaustive_run']}", "",
                  f"{su}: policy {sbs['policy_seconds']:.1f} of exhaustive {sbs['exhaustive_seconds']:.1f} "
                  f"({ratio}%). Bounds agree: {sbs['bounds_agree']}/{sbs['bounds_total']} per config and budget, "
                  f"{sbs['combo_bounds_agree']}/{sbs['combo_bounds_total']} per config, combo and budget.", "",
                  f"| config | budget | exhaustive bound | policy bound | agree | exhaustive {su} | policy {su} | "
                  "policy/exh. |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in sbs["configs"]:
            for i, (e, p) in enumerate(zip(c["exhaustive"], c["policy"], strict=True)):
                tail = (f" {c['exhaustive_seconds']:.1f} | {c['policy_seconds']:.1f} | "
                        f"{_num(None if c['ratio'] is None else 100 * c['ratio'], '.0f')}% |") if i == 0 else " | | |"
                lines.append(f"| {c['config'] if i == 0 else ''} | {e.budget:g} | {_bound_text(e)} | "
                             f"{_bound_text(p)} | {'yes' if c['agree'][i] else '**no**'} |" + tail)
        lines += ["", "| config | combo | budget | exhaustive bound | policy bound | agree |",
                  "|---|---|---|---|---|---|"]
        for c in sbs["configs"]:
            for combo, v in c["combos"].items():
                for i, (e, p) in enumerate(zip(v["exhaustive"], v["policy"], strict=True)):
                    lines.append(f"| {c['config']} | {combo} | {e.budget:g} | {_bound_text(e)} | {_bound_text(p)} | "
                                 f"{'yes' if v['agree'][i] else '**no**'} |")
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Bound):
        return asdict(obj)
    return str(obj)


# -------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", help="sweep spec YAML to bench, e.g. datasets/sweeps/map-shapes.yaml "
                    "(or --grid; not both)")
    ap.add_argument("--grid", choices=sorted(GRIDS),
                    help=f"a built-in SD1.5 grid instead of --spec (default {DEFAULT_GRID}; small ~20 GPU-min on H100)")
    ap.add_argument("--gpus", default="1,2", help="GPU counts of the exhaustive runs, in order, e.g. 1,2 or 2 "
                    "(CPU: trial slots)")
    ap.add_argument("--policy-gpus", help="GPUs of the policy run (default: the largest of --gpus; 0: skip it)")
    ap.add_argument("--out", type=Path, default=Path("out/bench-sweep"))
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    ap.add_argument("--compare", nargs=2, metavar=("EXHAUSTIVE_LAKE", "POLICY_LAKE"),
                    help="start nothing: print the side-by-side table of two lakes already written (needs --spec)")
    grid = ap.add_argument_group("built-in grids (--grid only)")
    grid.add_argument("--preset", choices=["arch", "tiny"], default="arch")
    grid.add_argument("--steps", type=int, default=25)
    grid.add_argument("--prompts", type=int, default=4)
    grid.add_argument("--pairs", type=int, default=3, help="timing pairs when screening")
    # Random weights drift little (1 - SSIM of 0.0001-0.01 on SD1.5 arch), so budgets in
    # that range are what make stopping and pruning bite, as real budgets do on real weights.
    grid.add_argument("--budgets", type=float, nargs="+", default=[0.001, 0.002])
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command = shlex.join([sys.argv[0] if argv is None else "bench/bench_sweep.py",
                          *(sys.argv[1:] if argv is None else argv)])
    from sweep.bookkeeping import LakeWriteError
    from sweep.catalog import ConfigError

    if args.compare:
        if args.spec is None:
            print("error: --compare needs --spec (its metric and budgets judge the bounds)", file=sys.stderr)
            return 2
        try:
            print(compare(args.spec, *args.compare))
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    # Every check before anything starts: a bad flag costs no GPU time.
    try:
        if args.spec is not None and args.grid is not None:
            raise BenchError("--spec and --grid are mutually exclusive: bench a spec file or a built-in grid")
        if args.spec is None and args.grid is None:
            args.grid = DEFAULT_GRID
        counts = parse_counts(args.gpus)
        policy_n = max(counts)
        if args.policy_gpus is not None:
            given = parse_counts(args.policy_gpus, "--policy-gpus", allow_zero=True, example="2 (0 skips it)")
            if len(given) != 1:
                raise BenchError(f"--policy-gpus {args.policy_gpus!r}: give one count, e.g. --policy-gpus 2")
            policy_n = given[0]
        spec = load_spec(args)
        import torch

        is_gpu = torch.cuda.is_available()
        if is_gpu and max(counts + [policy_n]) > torch.cuda.device_count():
            raise BenchError(f"--gpus {args.gpus} / --policy-gpus {policy_n}: this host has "
                             f"{torch.cuda.device_count()} GPU(s); ask for at most that many")
        unit = "gpu" if is_gpu else "cpu"
        plan = [(f"exhaustive-{n}{unit}", "exhaustive", n) for n in dict.fromkeys(counts)]
        if policy_n:
            plan.append((f"policy-{policy_n}{unit}", "policy", policy_n))
        lakes = args.out / "lakes"
        taken = [name for name, _, _ in plan if (lakes / name).exists() and any((lakes / name).iterdir())]
        if taken:
            raise BenchError(f"{lakes} already holds {', '.join(taken)}: every run needs a fresh lake; "
                             "pass a new --out (nothing there is deleted)")
    except (BenchError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from sweep.spec import expand

    exhaustive_spec, policy_spec, note = sides(spec)
    device = torch.cuda.get_device_name(0) if is_gpu else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": command, "argv": list(sys.argv if argv is None else argv),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "device": device, "is_gpu": is_gpu, "spec_name": spec.name, "spec": spec.to_dict(),
        "points": expand(spec).size, "metric": spec.metric, "budgets": list(spec.budgets),
        "policy_early_stop": asdict(policy_spec.early_stop), "notes": [note] if note else [], "runs": {},
    }

    def save():  # after every run, so a run cut short still leaves its figures
        write_atomic(args.out / "bench_sweep.json", json.dumps(results, indent=2, default=_jsonable))

    def say(text: str) -> None:
        if not args.quiet:
            print(f"[bench] {text}", file=sys.stderr, flush=True)

    from sweep.driver import run_sweep

    for name, kind, n in plan:
        lake = str(lakes / name)
        say(f"{name}: {n} {'GPU' if is_gpu else 'CPU slot'}(s), lake {lake}")
        kwargs: dict[str, Any] = {"max_concurrent": n, "progress": not args.quiet}
        # A local Ray sees exactly n devices: n GPUs (checked above to exist), or on a CPU
        # n CPUs, one per trial, standing in for n GPUs.
        if is_gpu:
            kwargs["num_gpus"] = n
        else:
            kwargs["num_cpus"] = n
        t0 = time.monotonic()
        try:
            summary = run_sweep(exhaustive_spec if kind == "exhaustive" else policy_spec, lake, **kwargs)
        except ConfigError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        except LakeWriteError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 1
        results["runs"][name] = run_record(summary, time.monotonic() - t0, lake, n, kind, spec.metric,
                                           spec.budgets)
        add_scaling(results["runs"])
        save()

    ex_runs = {name: n for name, kind, n in plan if kind == "exhaustive"}
    if policy_n:
        ex_name = next((name for name, n in ex_runs.items() if n == policy_n), None) or \
            max(ex_runs, key=ex_runs.get)
        pol_name = plan[-1][0]
        results["side_by_side"] = {"policy_run": pol_name, "exhaustive_run": ex_name,
                                   **side_by_side(results["runs"][pol_name], results["runs"][ex_name],
                                                  spec.budgets)}
    md = markdown(results)
    write_atomic(args.out / "bench_sweep.md", md)
    save()
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
