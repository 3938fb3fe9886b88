"""`sweep.bounds` is the one definition of a bound and of the row to believe; the SQL
views, the task writer, the sweep's pruning and resume must agree with it.

Random lakes (ties on speedup and loss, NaN, ±inf, failed and stopped rows, keys with
only a screen row and keys with a confirm row) are written with the real lake writer
and read back through DuckDB; the expected answers are worked out here from the rule
as the module's docstring states it, not from the module.
"""

from __future__ import annotations

import json
import math
import random
from datetime import timedelta
from types import SimpleNamespace

import pytest
from lake_rows import T0, trial  # tests/ is on sys.path under pytest
from typer.testing import CliRunner

from codegen.lake import open_lake
from codegen.report import bounds_table
from codegen.tasks import build_tasks, read_trials
from diffaccel.cli import app
from sweep import bounds
from sweep.driver import stored_outcomes
from sweep.lake import LakeReader, LakeWriter
from sweep.lake_schema import BOUND_GROUP, CONFIRM, OK, SCREEN
from sweep.pruning import Outcome, SweepState

SPEEDUPS = [1.5, 2.0, 2.0, 3.0, math.inf, -math.inf, math.nan, None]
LOSSES = [0.0, 0.01, 0.02, 0.02, 0.03, math.inf, math.nan, None]
CONFIGS = [("deepcache", "H100"), ("deepcache", "A100"), ("tgate", "H100")]


def test_constants_match_the_schema():
    assert (bounds.OK, bounds.SCREEN, bounds.CONFIRM) == (OK, SCREEN, CONFIRM)


def random_rows(rng: random.Random) -> list[dict]:
    rows, minute = [], 0
    for k in range(rng.randint(1, 14)):
        method, kind = rng.choice(CONFIGS)
        key = f"k{k:02d}"
        phases = rng.choice([[SCREEN], [SCREEN], [SCREEN, CONFIRM], [CONFIRM]])
        for phase in phases:
            minute += rng.choice([1, 2])
            status = rng.choice([OK, OK, OK, OK, "failed", "stopped"])
            row = trial(method, device_kind=kind, status=status, phase=phase, key=key, minute=minute)
            # `trial` leaves speedup and loss empty on rows that are not ok; set them
            # anyway sometimes: a failed row's numbers are never a bound.
            if status == OK or rng.random() < 0.5:
                row["speedup"] = rng.choice(SPEEDUPS)
                row["quality_loss_ssim"] = rng.choice(LOSSES)
            rows.append(row)
    return rows


def expected_bound(rows: list[dict], budget: float) -> dict[tuple, str]:
    """Group -> trial key of the bound, by the rule as stated, from first principles."""
    latest = {}
    for r in rows:  # readers: confirm over screen (rows of one phase are unique per key here)
        cur = latest.get(r["trial_key"])
        if cur is None or (r["phase"] == CONFIRM and cur["phase"] != CONFIRM):
            latest[r["trial_key"]] = r
    groups: dict[tuple, list] = {}
    for r in latest.values():
        s, q = r["speedup"], r["quality_loss_ssim"]
        if r["status"] == OK and s is not None and q is not None and math.isfinite(s) and math.isfinite(q) \
                and q <= budget:
            groups.setdefault(tuple(r[c] for c in BOUND_GROUP), []).append(r)
    return {g: min(rs, key=lambda r: (-r["speedup"], r["quality_loss_ssim"], r["trial_key"]))["trial_key"]
            for g, rs in groups.items()}


@pytest.mark.parametrize("seed", range(25))
def test_sql_tasks_pruning_and_the_module_agree_on_random_lakes(tmp_path, seed):
    rng = random.Random(seed)
    rows = random_rows(rng)
    budget = rng.choice([0.01, 0.02, 0.025])
    LakeWriter(str(tmp_path / "lake")).write_trials(rows)
    want = expected_bound(rows, budget)
    lk = open_lake(str(tmp_path / "lake"))

    # The row to believe: the `trials` view and `bounds.believed` pick the same rows.
    view = {r["trial_key"]: r["phase"] for r in lk.sql("SELECT trial_key, phase FROM trials").to_dict("records")}
    believed = bounds.believed(rows)
    assert view == {k: r["phase"] for k, r in believed.items()}
    assert all(r["phase"] == CONFIRM for r in believed.values()
               if any(x["trial_key"] == r["trial_key"] and x["phase"] == CONFIRM for x in rows))

    # SQL bounds_at.
    sql = {tuple(r[c] for c in BOUND_GROUP): r["trial_key"] for r in lk.bounds(budget=budget).to_dict("records")}
    assert sql == want

    # The module over the believed rows.
    by_group: dict[tuple, list] = {}
    for r in believed.values():
        by_group.setdefault(tuple(r[c] for c in BOUND_GROUP), []).append(r)
    mod = {g: p["trial_key"] for g, rs in by_group.items()
           if (p := bounds.best_point(rs, budget, lambda r: (r["status"], r["speedup"], r["quality_loss_ssim"],
                                                             r["trial_key"]))) is not None}
    assert mod == want

    # Tasks: best_speedup (and the median bound) is the bound's speedup; configs without one are infeasible.
    tasks = build_tasks(read_trials(lk), budget=budget, confidence="median")
    speed = {k: r["speedup"] for k, r in believed.items()}
    for t in tasks:
        g = tuple(t.config[c] for c in BOUND_GROUP)
        if g in want:
            assert t.best_speedup == speed[want[g]] and t.bound == speed[want[g]], (g, t)
        else:
            assert t.best_speedup is None and t.status == "infeasible", (g, t)
    assert {tuple(t.config[c] for c in BOUND_GROUP) for t in tasks if t.best_speedup is not None} == set(want)

    # Pruning: `SweepState.bound_points` over one lattice per group picks the same key.
    for g, rs in by_group.items():
        lat = SimpleNamespace(keys=[r["trial_key"] for r in rs],
                              outcomes={i: Outcome(r["status"], r["quality_loss_ssim"], r["speedup"])
                                        for i, r in enumerate(rs)})
        picked = SweepState.bound_points(SimpleNamespace(budgets=[budget]), lat)
        assert [lat.keys[i] for i in picked] == ([want[g]] if g in want else [])


@pytest.mark.parametrize("seed", range(10))
def test_resume_reads_the_screen_row_and_retries_failed_ones(tmp_path, seed):
    rng = random.Random(100 + seed)
    rows = random_rows(rng)
    LakeWriter(str(tmp_path / "lake")).write_trials(rows)
    stored = stored_outcomes(LakeReader(str(tmp_path / "lake")), "ssim")
    kept = [r for r in rows if r["status"] != "failed"]
    assert set(stored) == {r["trial_key"] for r in kept}
    for key, (phases, outcome) in stored.items():
        mine = [r for r in kept if r["trial_key"] == key]
        assert phases == {r["phase"] for r in mine}
        screen = [r for r in mine if r["phase"] == SCREEN]
        row = screen[0] if screen else mine[0]
        # Its speed is the one readers believe: the latest measured confirmation's, if any
        # (which decides what else a resumed sweep confirms); its status and loss the screen's.
        confirmed = sorted((r for r in mine if r["phase"] == CONFIRM and r["status"] == "ok"
                            and r["speedup"] is not None), key=bounds.believe_order)
        want = Outcome(row["status"], row["quality_loss_ssim"],
                       confirmed[0]["speedup"] if confirmed else row["speedup"])
        assert (outcome.status, outcome.loss, outcome.speedup) == pytest.approx(
            (want.status, want.loss, want.speedup), nan_ok=True)


def test_ties_go_to_lower_loss_then_smaller_key_whatever_the_row_order():
    pts = [("ok", 2.0, 0.01, "b"), ("ok", 2.0, 0.01, "a"), ("ok", 2.0, 0.005, "z"), ("ok", 3.0, 0.03, "c")]
    for _ in range(10):
        random.shuffle(pts)
        assert bounds.best_point(pts, 0.02, lambda p: p)[3] == "z"
        assert bounds.best_point([p for p in pts if p[3] != "z"], 0.02, lambda p: p)[3] == "a"
    assert bounds.best_point([("ok", math.inf, 0.0, "a"), ("failed", 9.0, 0.0, "b")], 0.02, lambda p: p) is None


def test_believe_order_breaks_ties_on_finished_then_started():
    early, late = T0, T0 + timedelta(minutes=1)
    a = {"trial_key": "k", "phase": SCREEN, "finished_at": late, "started_at": early}
    b = {"trial_key": "k", "phase": SCREEN, "finished_at": early, "started_at": late}
    c = {"trial_key": "k", "phase": SCREEN, "finished_at": late, "started_at": late}
    assert bounds.believed([a, b, c])["k"] is c and bounds.believed([c, b, a])["k"] is c
    d = {"trial_key": "k", "phase": CONFIRM, "finished_at": None, "started_at": None}
    assert bounds.believed([a, d])["k"] is d
    # resume prefers the screen row, then the same order
    assert not bounds.screen_first(a, d) and bounds.screen_first(d, a) and bounds.screen_first(a, c)


# ------------------------------------------------------------- the shipped example lake

EXAMPLE = "datasets/example-lake"


def test_bounds_report_and_tasks_agree_on_the_example_lake():
    lk = open_lake(EXAMPLE)
    res = CliRunner().invoke(app, ["bounds", "--lake", EXAMPLE, "--format", "json"])
    assert res.exit_code == 0, res.output
    cli = {tuple(r[c] for c in BOUND_GROUP): r for r in json.loads(res.stdout)}
    assert cli, "the example lake has bounds"
    sql = lk.bounds()
    assert {tuple(r[c] for c in BOUND_GROUP): r["trial_key"] for r in sql.to_dict("records")} == \
        {g: r["trial_key"] for g, r in cli.items()}
    # The module over every stored row picks the same points.
    rows = lk.sql("SELECT * FROM trials_all").to_dict("records")
    believed = bounds.believed(rows)
    by_group: dict[tuple, list] = {}
    for r in believed.values():
        by_group.setdefault(tuple(r[c] for c in BOUND_GROUP), []).append(r)
    mod = {g: p["trial_key"] for g, rs in by_group.items()
           if (p := bounds.best_point(rs, 0.02, lambda r: (r["status"], r["speedup"], r["quality_loss_ssim"],
                                                           r["trial_key"]))) is not None}
    assert mod == {g: r["trial_key"] for g, r in cli.items()}
    # Tasks: every config with a bound has it as best_speedup; the others have none.
    tasks = build_tasks(read_trials(lk), confidence="median")
    best = {tuple(t.config[c] for c in BOUND_GROUP): t.best_speedup for t in tasks}
    speed = {tuple(r[c] for c in BOUND_GROUP): r["speedup"] for r in sql.to_dict("records")}
    assert {g: s for g, s in best.items() if s is not None} == speed
    assert all(cli[g]["speedup"] == pytest.approx(s, rel=1e-9) for g, s in speed.items())  # JSON rounds
    # Report: its bounds table shows each bound's speedup in its cell.
    _, table = bounds_table(sql)
    shown = sorted(c.text for _, _, cells in table for c in cells if c.text != "—")
    assert shown == sorted(f"{s:.2f}×" + (" slower" if s < 1 else "") for s in speed.values())
