"""The replay's wall-clock (bench/replay.py, `WallCosts`): a hand-built case whose
schedule is worked out by hand, the bounds any schedule obeys on the shipped lakes, the
measured scaling and utilisation runs replayed against their own walls, and the CLI's
flags."""

from __future__ import annotations

import itertools
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from bench.replay import Oracle, ReplayError, WallCosts, config_id, main, replay, utilisation, wall_markdown
from sweep import spec as S
from sweep.spec import load

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ROOT / "datasets" / "sweeps"
SCALE = ROOT / "bench" / "results" / "scale-shapes-h200x2-2026-11-30"
UTIL = ROOT / "bench" / "results" / "util-shapes-h200x2-2026-11-30"
SEARCH_LAKE = ROOT / "datasets" / "search-shapes" / "exhaustive-lake"


# ------------------------------------------------------------- a hand-built schedule


def _tiny_spec():
    """scale-shapes cut to T-GATE (gate_step 20, then 10: two points) and ToMe (one)."""
    data = yaml.safe_load((SWEEPS / "scale-shapes.yaml").read_text())
    data["combos"] = ["tgate", "tome"]
    return S.validate(data, base_dir=str(ROOT))


def _row(cid, tag, phase, seconds, speedup, pairs_reused=0):
    return dict(zip(("model", "scheduler", "steps", "resolution", "batch"), cid, strict=True),
                tag=tag, method=None, phase=phase, status="ok", gpu_seconds=seconds, n_prompts=2,
                n_pairs=6 if phase == "confirm" else 2, speedup=speedup, speedup_ci_low=speedup - 0.01,
                speedup_ci_high=speedup + 0.01, finished_at=None, quality_loss_ssim=0.001,
                quality_loss_clip=None, quality_loss_judge=None, quality_seconds=seconds / 2,
                timing_seconds=seconds / 2, prompt_losses_json=None, pairs_reused=pairs_reused)


@pytest.fixture(scope="module")
def tiny():
    spec = _tiny_spec()
    cid = config_id(S.expand(spec).combos[0].config)
    # Screens 10, 6, 4 s; every point within every budget, so each lattice's bound is its
    # fastest point (TG20, TM30), confirmed once (a confirm row that topped up its screen
    # costs its own seconds: 20 and 8), and the confirmed speeds change no bound.
    rows = [_row(cid, "TG20S5F1W2", "screen", 10.0, 1.5), _row(cid, "TG10S5F1W2", "screen", 6.0, 1.2),
            _row(cid, "TM30D1", "screen", 4.0, 1.3),
            _row(cid, "TG20S5F1W2", "confirm", 20.0, 1.45, pairs_reused=2),
            _row(cid, "TM30D1", "confirm", 8.0, 1.28, pairs_reused=2)]
    return spec, Oracle.from_rows(rows)


def test_a_hand_built_schedule_has_the_makespan_worked_out_by_hand(tiny):
    spec, oracle = tiny
    costs = WallCosts(load_s=12.0, start_s=2.0, stop_s=3.0)
    two = replay(spec, "unused", oracle=oracle, workers=2, costs=costs)
    (res,) = two.results
    e = res.exhaustive
    # Device 0: load, TG20 (12-22), TG20's confirm (22-42). Device 1: load, TG10 (12-18),
    # TM30 (18-22), TM30's confirm (22-30). At 22 both screens end; TG20 first (task order).
    starts = {(t.phase, t.tag): (t.device, t.start) for t in e.trials}
    assert starts == {("screen", "TG20S5F1W2"): (0, 12.0), ("screen", "TG10S5F1W2"): (1, 12.0),
                      ("screen", "TM30D1"): (1, 18.0), ("confirm", "TG20S5F1W2"): (0, 22.0),
                      ("confirm", "TM30D1"): (1, 22.0)}
    assert e.seconds == pytest.approx(48.0) and e.wall == pytest.approx(42.0) and e.loads == 2
    assert e.utilisation == pytest.approx(48.0 / (2 * 42.0))
    # The run: Tune's start, the config, the stop.
    assert two.run("ssim", "exhaustive") == (pytest.approx(48.0), pytest.approx(2.0 + 42.0 + 3.0))
    assert two.to_dict()["runs"]["ssim"]["exhaustive"]["utilisation"] == pytest.approx(48.0 / (2 * 47.0))
    one = replay(spec, "unused", oracle=oracle, workers=1, costs=costs)
    assert one.results[0].exhaustive.wall == pytest.approx(12.0 + 48.0) and one.results[0].exhaustive.loads == 1
    table = wall_markdown([one, two])
    assert "| 2 | ssim | **run** (start + configs + stop) |" in table
    assert f"{(2 + 60 + 3) / 47:.2f}x" in table  # the exhaustive run's scaling, 1 device over 2
    # Three devices: each takes a screen at once; TG20's confirm still ends the run.
    three = replay(spec, "unused", oracle=oracle, workers=3, costs=costs).results[0].exhaustive
    assert three.loads == 3 and three.wall == pytest.approx(12.0 + 10.0 + 20.0)


def test_a_load_is_paid_once_per_device_and_only_by_devices_that_run(tiny):
    spec, oracle = tiny
    free = replay(spec, "unused", oracle=oracle, workers=2, costs=WallCosts(0, 0, 0)).results[0].exhaustive
    assert free.wall == pytest.approx(30.0)  # the same schedule, 12 s earlier
    eight = replay(spec, "unused", oracle=oracle, workers=8, costs=WallCosts(5, 0, 0)).results[0].exhaustive
    assert eight.loads == 3  # three screens ready at once; confirms reuse a loaded device
    assert eight.wall == pytest.approx(5.0 + 10.0 + 20.0)


def test_a_repeated_grid_is_scheduled_copy_after_copy(tiny):
    """`repeat`: the grids twice over, answered by the same rows. Worked by hand (load 12):
    the first copy as above until 22; then device 1: TM30's confirm (22-30), the second
    TG20 (30-40), TG10 (40-46), the second TG20's confirm (46-66); device 0: the first
    TG20's confirm (22-42), the second TM30 (42-46) and its confirm (46-54)."""
    spec, oracle = tiny
    one = replay(spec, "unused", oracle=oracle, workers=2, costs=WallCosts(12, 0, 0))
    two = replay(spec, "unused", oracle=oracle, workers=2, costs=WallCosts(12, 0, 0), repeat=2)
    e = two.results[0].exhaustive
    assert e.seconds == pytest.approx(2 * 48.0) and e.wall == pytest.approx(66.0) and e.loads == 2
    assert [b.tag for b in e.bounds] == [b.tag for b in one.results[0].exhaustive.bounds]
    assert e.counts == {"screen_ok": 6, "confirm_ok": 4} and two.to_dict()["repeat"] == 2
    with pytest.raises(ReplayError, match="--repeat"):
        replay(spec, "unused", oracle=oracle, repeat=0)


def test_fixed_costs_must_be_seconds():
    with pytest.raises(ReplayError, match="--load-s"):
        WallCosts(load_s=-1.0)
    with pytest.raises(ReplayError, match="--stop-s"):
        WallCosts(stop_s=float("inf"))


# ---------------------------------------------------- the shipped lakes: any schedule


def _check_schedule(side, workers: int, load_s: float):
    """What any schedule of `side` on `workers` devices obeys, read from its trials."""
    ran = [t for t in side.trials if t.start is not None]
    assert len(ran) == sum(1 for t in side.trials if t.status != "pruned")
    assert side.wall == pytest.approx(max(t.start + t.seconds for t in ran))
    by_device: dict[int, list] = {}
    for t in ran:
        by_device.setdefault(t.device, []).append(t)
    assert len(by_device) == side.loads <= workers and set(by_device) <= set(range(workers))
    for ts in by_device.values():
        ts.sort(key=lambda t: t.start)
        assert ts[0].start >= load_s - 1e-9  # a device's first trial waits for its load
        for a, b in zip(ts, ts[1:], strict=False):
            assert b.start >= a.start + a.seconds - 1e-9  # one trial at a time per device
    busy = side.seconds + side.loads * load_s
    assert busy / workers - 1e-6 <= side.wall <= busy + 1e-6
    assert side.wall >= max(t.seconds for t in ran) + load_s - 1e-9


@pytest.mark.parametrize("spec_name,lake", [("search-shapes.yaml", "datasets/search-shapes/exhaustive-lake"),
                                            ("map-shapes.yaml", "datasets/example-lake")])
def test_walls_on_the_shipped_lakes_obey_every_schedule_bound(spec_name, lake):
    spec = load(SWEEPS / spec_name)
    costs = WallCosts(load_s=12.0, start_s=2.0, stop_s=2.0)
    runs = {n: replay(spec, str(ROOT / lake), metrics=("ssim",), workers=n, costs=costs) for n in (1, 2, 4)}
    for n, r in runs.items():
        for res in r.results:
            for side in (res.policy, res.exhaustive):
                _check_schedule(side, n, costs.load_s)
            # The exhaustive grid runs the same trials on any number of devices.
            alone = next(x for x in runs[1].results if x.config == res.config).exhaustive
            assert res.exhaustive.seconds == pytest.approx(alone.seconds) and res.exhaustive.counts == alone.counts
        for side in ("policy", "exhaustive"):
            seconds, wall = r.run("ssim", side)
            assert wall == pytest.approx(4.0 + sum(getattr(x, side).wall for x in r.results))
            assert r.to_dict()["runs"]["ssim"][side]["utilisation"] == pytest.approx(utilisation(seconds, n, wall))
            assert 0 < seconds / (n * wall) < 1
    # Four devices finish the exhaustive grid sooner than one, and sooner than two.
    walls = [runs[n].run("ssim", "exhaustive")[1] for n in (1, 2, 4)]
    assert walls[0] > walls[1] > walls[2]


# -------------------------------------------- the measured 2-GPU run, replayed on itself


def _lakes(tmp_path_factory, tgz: Path) -> Path:
    """A measured run's lakes, shipped as a tarball beside its bench JSON, unpacked."""
    out = tmp_path_factory.mktemp(tgz.parent.name)
    with tarfile.open(tgz) as tar:
        tar.extractall(out, filter="data")
    return out / "lakes"


@pytest.fixture(scope="module")
def scale_lakes(tmp_path_factory):
    return _lakes(tmp_path_factory, SCALE / "complete-lakes.tgz")


def test_the_two_gpu_run_replays_in_its_measured_order_and_wall(scale_lakes):
    """The complete 2-GPU run of scale-shapes (2026-11-30, H200 x2), its lake as the oracle,
    on 2 simulated devices: the trials start in the order they started on the GPUs, and
    the wall is within 5% of the 126.8 s Tune measured (complete-bench_sweep.json)."""
    from sweep.lake import LakeReader

    lake = scale_lakes / "exhaustive-2gpu"
    measured = json.loads((SCALE / "complete-bench_sweep.json").read_text())["runs"]["exhaustive-2gpu"]
    assert measured["slots"] == 2 and measured["fit_wall_s"] == pytest.approx(126.8, abs=0.05)
    r = replay(load(SWEEPS / "scale-shapes.yaml"), str(lake), metrics=("ssim",), workers=2)
    (res,) = r.results
    rows = sorted(LakeReader(str(lake)).trial_columns(["tag", "phase", "started_at"]), key=lambda x: x["started_at"])
    simulated = sorted(res.exhaustive.trials, key=lambda t: t.start)
    i = 0
    for _, same in itertools.groupby(simulated, key=lambda t: round(t.start, 6)):
        same = list(same)  # started together in the model (the two first screens): any order
        assert {(t.phase, t.tag) for t in same} == {(x["phase"], x["tag"]) for x in rows[i:i + len(same)]}, i
        i += len(same)
    assert i == len(rows) == 22
    seconds, wall = r.run("ssim", "exhaustive")
    assert seconds == pytest.approx(measured["device_seconds"])
    assert wall == pytest.approx(measured["fit_wall_s"], rel=0.05)


# ------------------------------------------------ the utilisation grid (util-shapes.yaml)


def test_the_utilisation_grid_is_priced_on_the_search_lake_and_its_order_pays():
    """util-shapes.yaml is a subset of the search grid, so the shipped search lake prices
    it before any GPU time; listing its combos smallest first (ToMe's and T-GATE's long
    confirmations beside DeepCache's screens) is what its comment says it buys."""
    costs = WallCosts(load_s=12.0, start_s=2.0, stop_s=2.0)
    data = yaml.safe_load((SWEEPS / "util-shapes.yaml").read_text())
    as_written = S.validate(data, base_dir=str(ROOT))
    reversed_ = S.validate({**data, "combos": list(reversed(data["combos"]))}, base_dir=str(ROOT))
    runs = {}
    for name, spec in (("written", as_written), ("reversed", reversed_)):
        r = replay(spec, str(SEARCH_LAKE), metrics=("ssim",), workers=2, costs=costs)
        assert not r.incomplete and len(r.results) == 1, r.incomplete  # every point has a row
        runs[name] = r.run("ssim", "exhaustive")
    (s1, w1), (s2, w2) = runs["written"], runs["reversed"]
    assert s1 == pytest.approx(s2)  # the same trials, only in another order
    u1, u2 = utilisation(s1, 2, w1), utilisation(s2, 2, w2)
    assert u1 >= 0.85 and u1 > u2 + 0.03 and w1 < w2, (u1, u2)  # 0.90 against 0.85 when written


@pytest.fixture(scope="module")
def util_lakes(tmp_path_factory):
    return _lakes(tmp_path_factory, UTIL / "lakes.tgz")


@pytest.mark.parametrize("run,workers", [("exhaustive-1gpu", 1), ("exhaustive-2gpu", 2)])
def test_the_utilisation_runs_replay_their_own_walls(util_lakes, run, workers):
    """The 2026-11-30 11:08 run (H200 x2, bench_sweep.json beside the lakes): each run's
    rows, replayed on its own device count, come within 5% of the wall Tune measured, and
    both runs ran the same 33 trials (so their trials/h scaling compares like with like)."""
    measured = json.loads((UTIL / "bench_sweep.json").read_text())["runs"][run]
    assert measured["slots"] == workers and measured["trials_run"] == 33
    r = replay(load(SWEEPS / "util-shapes.yaml"), str(util_lakes / run), metrics=("ssim",), workers=workers)
    (res,) = r.results
    assert len(res.exhaustive.trials) == 33
    seconds, wall = r.run("ssim", "exhaustive")
    assert seconds == pytest.approx(measured["device_seconds"])
    assert wall == pytest.approx(measured["fit_wall_s"], rel=0.05)


# ------------------------------------------------------------------------------- CLI


def test_cli_reports_each_worker_count_and_the_scaling(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main([str(SWEEPS / "search-shapes.yaml"), "--lake", str(ROOT / "datasets/search-shapes/exhaustive-lake"),
               "--workers", "2,4", "--load-s", "5", "--start-s", "1", "--stop-s", "0", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if "**run**" in ln]
    assert [ln.split("|")[1].strip() for ln in rows] == ["2", "4"]  # the 1-device reference is not a row
    assert all(ln.split("|")[7].strip().endswith("x") for ln in rows)  # but scales them
    assert "a pipeline load of 5 s" in text and "start 1 s, stop 0 s" in text
    data = json.loads(out.read_text())
    assert [x["workers"] for x in data["runs"]] == [2, 4] and data["runs"][0]["costs"]["load_s"] == 5.0


@pytest.mark.parametrize("flag,value", [("--workers", "0"), ("--workers", "two"), ("--workers", ","),
                                        ("--load-s", "-1"), ("--start-s", "soon"), ("--stop-s", "nan"),
                                        ("--repeat", "0"), ("--repeat", "2.5")])
def test_bad_wall_flags_are_one_line_errors(flag, value, capsys):
    rc = main([str(SWEEPS / "search-shapes.yaml"), "--lake", str(ROOT / "datasets/search-shapes/exhaustive-lake"),
               flag, value])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"error: {flag}") and "\n" not in err
