"""bench/bench_sweep.py on a CPU: the exhaustive run and the policy run of a tiny spec on
the trained `shapes` model, side by side, from the real script and real lakes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "bench_sweep.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

# datasets/sweeps/default.yaml's model, prompts and measurement, on six points. 1 - SSIM
# at 10 steps: DeepCache interval 2 about 0.01-0.02, 3 about 0.04 (over both budgets), so
# the policy prunes intervals 4 and 5 (more aggressive than an over-budget point) that
# the exhaustive run screens. ToMe is a second combo, so a combo's bound and the
# config's bound over all combos differ. ci_target 1.0 lets every confirmation stop at
# its confirm_pairs on both sides, so their device-seconds differ by the policy alone: at
# 0.1 a shared 2-core CPU's timing noise drew one confirmation out to its cap (9 pairs,
# against 3 on the exhaustive side), which cost more than the screens the policy saved.
SPEC = {
    "name": "bench-sweep-test",
    "models": [{"model": "shapes"}],
    "schedulers": ["ddim"], "steps": [10], "resolutions": [None], "batch": 1, "dtype": "auto",
    "methods": {"deepcache": {"cache_interval": [2, 3, 4, 5, 6], "cache_branch_id": [0]},
                "tome": {"ratio": [0.5], "max_downsample": [1]}},
    "combos": ["deepcache", "tome"],
    "prompts": {"file": "datasets/prompts/shapes.txt", "count": 2},
    "seeds": [0],
    "quality": {"metric": "ssim", "budgets": [0.02, 0.03]},
    "measure": {"screen_pairs": 2, "confirm_pairs": 3, "ci_target": 1.0},
    "early_stop": {"enabled": True, "prune": True, "min_prompts": 1, "margin": 0.5},
}
POINTS = 6


def load_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_sweep", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One real run of the script: exhaustive and policy on one CPU slot each (~1.5 min)."""
    tmp = tmp_path_factory.mktemp("bench")
    spec = tmp / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--spec", str(spec), "--gpus", "1", "--policy-gpus", "1",
                           "--out", str(out)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return out, proc.stdout, json.loads((out / "bench_sweep.json").read_text())


@pytest.mark.slow
def test_policy_beside_exhaustive(bench):
    out, stdout, res = bench
    assert set(res["runs"]) == {"exhaustive-1cpu", "policy-1cpu"}
    ex, pol = res["runs"]["exhaustive-1cpu"], res["runs"]["policy-1cpu"]
    assert res["points"] == POINTS and res["metric"] == "ssim" and res["budgets"] == [0.02, 0.03]
    assert "--policy-gpus 1" in res["command"] and res["date_utc"].endswith("UTC")

    # The exhaustive run screens every point and stops or prunes none; the policy prunes.
    assert ex["row_counts"].get("screen_ok") == POINTS, ex["row_counts"]
    assert not ex["row_counts"].get("screen_pruned") and not ex["row_counts"].get("screen_stopped")
    assert pol["row_counts"].get("screen_pruned", 0) + pol["row_counts"].get("screen_stopped", 0) >= 2
    assert ex["row_counts"].get("confirm_ok", 0) >= 1 and pol["row_counts"].get("confirm_ok", 0) >= 1
    for r in (ex, pol):
        assert r["device_seconds"] > 0 and r["fit_wall_s"] > 0 and r["trials_run"] > 0
        assert 0 < r["utilisation"] <= 1 and r["loads"] >= 1
        assert Path(r["lake"]).is_dir() and Path(r["lake"]).parent == out / "lakes"
    assert ex["scaling"] == pytest.approx(1.0) and ex["work_scaling"] == pytest.approx(1.0)
    # Work scaling's rate is pipeline-seconds per wall-second: GPUs x utilisation.
    assert ex["work_per_s"] == pytest.approx(ex["slots"] * ex["utilisation"])

    sbs = res["side_by_side"]
    assert (sbs["policy_run"], sbs["exhaustive_run"]) == ("policy-1cpu", "exhaustive-1cpu")
    assert sbs["exhaustive_seconds"] == pytest.approx(ex["device_seconds"])
    assert 0 < sbs["policy_seconds"] < sbs["exhaustive_seconds"], sbs
    assert sbs["ratio"] == pytest.approx(sbs["policy_seconds"] / sbs["exhaustive_seconds"])
    assert sbs["all_agree"] and sbs["bounds_agree"] == sbs["bounds_total"] == 2
    assert sbs["combo_bounds_agree"] == sbs["combo_bounds_total"] == 4
    (cfg,) = sbs["configs"]
    assert set(cfg["combos"]) == {"deepcache", "tome"}
    for side in ("exhaustive", "policy"):
        for i, b in enumerate(cfg[side]):
            assert b["tag"] is not None and b["loss"] <= b["budget"], cfg
            # The bound over all combos is the fastest of the combos' bounds.
            assert b["speedup"] == max(v[side][i]["speedup"] for v in cfg["combos"].values()), cfg


@pytest.mark.slow
def test_bounds_match_the_lakes_sql(bench):
    """Each side's per-combo bounds are what the lake's own SQL (`codegen.lake`) reads."""
    from codegen.lake import open_lake

    _, _, res = bench
    for r in res["runs"].values():
        lk = open_lake(r["lake"])
        (cfg,) = r["bounds"].values()
        for i, budget in enumerate(res["budgets"]):
            sql = {row["method"]: row["tag"] for row in lk.bounds(budget, "ssim").to_dict("records")}
            ours = {combo: bs[i]["tag"] for combo, bs in cfg["combos"].items() if bs[i]["tag"] is not None}
            assert ours == sql, (budget, ours, sql)


@pytest.mark.slow
def test_markdown_holds_the_tables(bench):
    out, stdout, res = bench
    md = (out / "bench_sweep.md").read_text()
    assert md in stdout
    head = md.splitlines()[0]
    assert all(s in head for s in ("cpu", "bench-sweep-test", f"{POINTS} points", "ssim", "0.02, 0.03"))
    assert res["command"] in md
    assert "| exhaustive-1cpu | 1 |" in md and "| policy-1cpu | 1 |" in md
    header = next(ln for ln in md.splitlines() if ln.startswith("| run |")).split(" | ")
    ex_row = next(ln for ln in md.splitlines() if ln.startswith("| exhaustive-1cpu |")).split(" | ")
    assert len(header) == len(ex_row) and ex_row[header.index("work scaling")] == "1.00x"
    # A run is its own base: every trial in common, at the same speed.
    assert ex_row[header.index("same trials' pipeline s")] == f"1.00x ({res['runs']['exhaustive-1cpu']['trials_run']})"
    rows = [ln for ln in md.splitlines() if ln.startswith("| shapes ddim 10 steps 128px b1 | deepcache |")
            or ln.startswith("| shapes ddim 10 steps 128px b1 | tome |")]
    assert len(rows) == 4 and all(ln.endswith("| yes |") for ln in rows), md
    assert "**no**" not in md


@pytest.mark.parametrize("argv, needle", [
    (["--gpus", "1,x"], "--gpus '1,x': give whole numbers"),
    (["--gpus", "0"], "--gpus '0': every count must be at least 1"),
    (["--gpus", "2,-1"], "at least 1"),
    (["--gpus", "1", "--policy-gpus", "two"], "--policy-gpus 'two'"),
    (["--spec", "no/such.yaml"], "--spec no/such.yaml: no such file"),
    (["--spec", "datasets/sweeps/default.yaml", "--grid", "tiny"], "mutually exclusive"),
])
def test_bad_input_is_one_line_before_anything_starts(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    assert load_bench().main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not out.exists()  # nothing started, nothing written


def test_a_used_lake_is_refused_and_kept(tmp_path, capsys):
    """Every run needs a fresh lake; one already there is an error, never overwritten."""
    held = []
    for unit in ("cpu", "gpu"):  # the run's name says which device the counts are
        held.append(tmp_path / "out" / "lakes" / f"exhaustive-1{unit}" / "trials" / "keep.parquet")
        held[-1].parent.mkdir(parents=True)
        held[-1].write_bytes(b"stored")
    assert load_bench().main(["--grid", "tiny", "--preset", "tiny", "--gpus", "1",
                              "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "exhaustive-1" in err and "fresh lake" in err and len(err.strip().splitlines()) == 1, err
    assert all(h.read_bytes() == b"stored" for h in held)
    assert not (tmp_path / "out" / "bench_sweep.json").exists()


def test_scaling_is_over_the_fewest_gpus_whatever_the_order():
    """`--gpus 2,1` runs the 2-GPU target first; its scaling is still over the 1-GPU run
    once that has run (and over itself until then), and a policy run is never a base."""
    add_scaling = load_bench().add_scaling

    def run(kind, slots, per_h, util, trials):
        return {"kind": kind, "slots": slots, "trials_per_hour": per_h, "work_per_s": slots * util,
                "trials": [{"key": k, "phase": ph, "pipeline_seconds": sec, "trial_seconds": sec + 1.0}
                           for k, ph, sec in trials]}

    # The 2-GPU run's screens ran 1.25x slower; only it ran the confirmation of "b"; a
    # trial that never started (no trial_seconds) counts for neither side.
    runs = {"exhaustive-2gpu": run("exhaustive", 2, 600.0, 0.86,
                                   [("a", "screen", 5.0), ("b", "screen", 10.0), ("b", "confirm", 40.0)])}
    add_scaling(runs)
    assert runs["exhaustive-2gpu"]["scaling"] == pytest.approx(1.0)
    assert runs["exhaustive-2gpu"]["scaling_base"] == 2
    assert runs["exhaustive-2gpu"]["trial_time_ratio"] == pytest.approx(1.0)
    runs["exhaustive-1gpu"] = run("exhaustive", 1, 300.0, 0.94,
                                  [("a", "screen", 4.0), ("b", "screen", 8.0), ("c", "screen", 6.0)])
    runs["exhaustive-1gpu"]["trials"].append({"key": "b", "phase": "confirm", "pipeline_seconds": None})
    runs["policy-1gpu"] = run("policy", 1, 100.0, 0.5, [("a", "screen", 1.0)])
    add_scaling(runs)
    two, one = runs["exhaustive-2gpu"], runs["exhaustive-1gpu"]
    assert one["scaling"] == pytest.approx(1.0) and one["work_scaling"] == pytest.approx(1.0)
    assert two["scaling"] == pytest.approx(2.0) and two["scaling_base"] == 1
    assert two["work_scaling"] == pytest.approx(2 * 0.86 / 0.94)
    assert (two["trial_time_ratio"], two["common_trials"]) == (pytest.approx(15.0 / 12.0), 2)
    assert (one["trial_time_ratio"], one["common_trials"]) == (pytest.approx(1.0), 3)
    assert "scaling" not in runs["policy-1gpu"]


def test_policy_side_of_an_exhaustive_map_switches_early_stop_on():
    """map-shapes.yaml has stopping and pruning off: run as written, the policy run would
    be the exhaustive grid again, so the bench switches both on and says so."""
    from sweep.spec import load

    sides = load_bench().sides
    ex, pol, note = sides(load(REPO / "datasets" / "sweeps" / "map-shapes.yaml"))
    assert (ex.early_stop.enabled, ex.early_stop.prune) == (False, False)
    assert (pol.early_stop.enabled, pol.early_stop.prune) == (True, True) and "switches both on" in note
    default = load(REPO / "datasets" / "sweeps" / "default.yaml")
    ex, pol, note = sides(default)
    assert pol is default and note is None and not ex.early_stop.enabled and not ex.early_stop.prune
    assert ex.early_stop.margin == default.early_stop.margin and ex.combos == default.combos


def test_compare_reads_two_shipped_lakes_side_by_side(capsys):
    """`--compare` on the measured search-cost run (2x H200, 2026-11-30): the policy lake
    against the exhaustive lake, bounds by `sweep.bounds`, seconds from the rows."""
    from bench.bench_sweep import main

    root = Path(__file__).resolve().parent.parent
    lakes = root / "datasets" / "search-shapes"
    assert main(["--spec", str(root / "datasets" / "sweeps" / "search-shapes.yaml"), "--compare",
                 str(lakes / "exhaustive-lake"), str(lakes / "policy-lake")]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H200" in out and "66 points" in out
    assert "Bounds agree: 3/3 per config and budget, 21/21 per config, combo and budget" in out
    head = next(line for line in out.splitlines() if line.startswith("GPU-s: policy"))
    policy, exhaustive = (float(x) for x in re.findall(r"(\d+\.\d) of exhaustive (\d+\.\d)", head)[0])
    assert 0 < policy < exhaustive
    assert "**no**" not in out
    assert main(["--compare", str(lakes / "exhaustive-lake"), str(lakes / "policy-lake")]) == 2
    assert "--compare needs --spec" in capsys.readouterr().err


def test_row_windows_time_the_first_trials_from_the_rows(capsys):
    from bench.row_windows import main, windows

    lake = str(Path(__file__).resolve().parent.parent / "datasets" / "search-shapes" / "exhaustive-lake")
    got = windows(lake, 2, [15, 18, 1000])
    assert [w["first"] for w in got] == [15, 18, 68]  # 65 screens, 1 failed (never ran: no row), 3 confirms
    assert got[0]["window_s"] < got[1]["window_s"] < got[2]["window_s"]
    assert all(0.5 < w["busy"] <= 1.0 for w in got) and got[-1]["confirms"] == 3
    assert main(["--first", "15", f"{lake}:2"]) == 0 and "| 15 | 0 |" in capsys.readouterr().out
    assert main([f"{lake}:zero"]) == 2 and "LAKE:DEVICES" in capsys.readouterr().err
