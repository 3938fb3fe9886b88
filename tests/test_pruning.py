"""Early stopping and pruning logic, without Ray: dominance, ordering, the state machine."""

from __future__ import annotations

from pathlib import Path

import yaml

from sweep import spec as S
from sweep.catalog import Acceleration, trial_key
from sweep.lake_schema import CONFIRM, OK, PRUNED, SCREEN, STOPPED
from sweep.pruning import Outcome, SweepState, clearly_over, dominates, order_points
from sweep.spec import EarlyStop

SWEEPS = Path(__file__).resolve().parent.parent / "datasets" / "sweeps"


def acc(combo, **params):
    return Acceleration.from_params(combo, params)


def test_dominance_follows_each_parameters_faster_direction():
    gentle = acc("deepcache", cache_interval=2, cache_branch_id=2)
    assert dominates(acc("deepcache", cache_interval=3, cache_branch_id=2), gentle)
    assert dominates(acc("deepcache", cache_interval=2, cache_branch_id=1), gentle)  # smaller id = faster
    assert dominates(gentle, gentle)
    assert not dominates(acc("deepcache", cache_interval=3, cache_branch_id=3), gentle)
    assert not dominates(gentle, acc("deepcache", cache_interval=3, cache_branch_id=2))
    # T-GATE: smaller gate_step and warm_up, larger intervals are faster.
    t = acc("tgate", gate_step=10, sp_interval=5, fi_interval=1, warm_up=2)
    assert dominates(acc("tgate", gate_step=8, sp_interval=6, fi_interval=1, warm_up=1), t)
    assert not dominates(acc("tgate", gate_step=8, sp_interval=4, fi_interval=1, warm_up=1), t)
    # Different combos never dominate each other.
    assert not dominates(acc("tome", ratio=0.75), acc("deepcache+tome", ratio=0.25))


def test_order_is_least_to_most_aggressive():
    grid = {"ratio": [0.25, 0.5, 0.75], "max_downsample": [1, 2]}
    points = [acc("tome", ratio=r, max_downsample=d) for r in grid["ratio"] for d in grid["max_downsample"]]
    ordered = order_points(reversed(points), grid)
    assert ordered[0].tag == "TM25D1" and ordered[-1].tag == "TM75D2"
    # No point comes before a point it dominates.
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            assert not (dominates(a, b) and a != b)


def test_clearly_over_needs_margin_and_evidence():
    rule = EarlyStop(enabled=True, prune=True, min_prompts=1, margin=0.5)
    budgets = [0.02, 0.05]
    assert clearly_over([0.2], budgets, rule)          # 0.2 > 1.5 * 0.05
    assert not clearly_over([0.07], budgets, rule)     # over budget, not clearly
    assert not clearly_over([0.3, 0.01], budgets, rule)  # too noisy to call
    assert clearly_over([0.3, 0.28], budgets, rule)
    assert not clearly_over([0.2], budgets, EarlyStop(enabled=False))
    assert not clearly_over([0.2], budgets, EarlyStop(min_prompts=2))


def _state(prune=True, stored=None, speculate=True):
    data = yaml.safe_load((SWEEPS / "default.yaml").read_text())
    data["combos"] = ["deepcache"]
    # The lattice these tests walk: 3 intervals x 2 branches at 4 steps (pinned here, not
    # taken from the default spec, whose grid follows its model).
    data["steps"] = [4]
    data["methods"]["deepcache"] = {"cache_interval": [2, 3, 4], "cache_branch_id": [0, 1]}
    data["quality"]["budgets"] = [0.02, 0.05]
    spec = S.validate(data)
    rule = EarlyStop(enabled=True, prune=prune, min_prompts=1, margin=0.5, speculate=speculate)
    return SweepState(S.expand(spec).combos, spec.budgets, rule,
                      lambda c, a: trial_key(c, a, "cpu", {"v": "1"}), stored=stored)


def _loss(a: Acceleration) -> float:
    # Over every budget (0.05) for branch 0 with interval >= 3.
    p = a.params
    return 0.01 * p["cache_interval"] + (0.06 if p["cache_branch_id"] == 0 else 0.0)


def _drive(state: SweepState, confirmed_at: dict[str, float] | None = None):
    """Run `state` to the end, one trial at a time. `confirmed_at`: tag -> the speed a
    confirmation of that point measures (by default, its screened speed)."""
    ran = []
    while not state.finished:
        task = state.next_task()
        assert task is not None, "nothing ready while nothing runs"
        ran.append((task.phase, task.acc.tag))
        loss = _loss(task.acc)
        speed = 1.0 + task.acc.params["cache_interval"] - loss
        if task.phase == CONFIRM:
            speed = (confirmed_at or {}).get(task.acc.tag, speed)
        state.complete(task, Outcome(OK, loss, speed))
    return ran


def test_state_prunes_dominating_points_and_confirms_bounds():
    state = _state()
    ran = _drive(state)
    screened = [t for p, t in ran if p == SCREEN]
    # DC2B0 (0.08) is over budget: DC3B0 and DC4B0 dominate it and are never run.
    assert "DC2B0" in screened and "DC3B0" not in screened and "DC4B0" not in screened
    pruned = {task.acc.tag: reason for task, reason in state.pruned}
    assert set(pruned) == {"DC3B0", "DC4B0"} and "DC2B0" in pruned["DC3B0"]
    assert state.counts()[PRUNED] == 2 and state.counts()["done"] == 6
    # Budgets 0.02 and 0.05: DC2B1 (0.02) and DC4B1 (0.04, faster) decide the bounds.
    assert [t for p, t in ran if p == CONFIRM] == ["DC2B1", "DC4B1"]


def test_without_pruning_everything_runs():
    state = _state(prune=False)
    ran = _drive(state)
    assert len([1 for p, _ in ran if p == SCREEN]) == 6 and not state.pruned


def test_ready_waits_for_predecessors():
    state = _state(speculate=False)
    first = state.next_task()
    assert first.acc.tag == "DC2B1"  # the gentlest point
    # Every other point is at least as aggressive as DC2B1: nothing else is ready.
    assert state.next_task() is None and not state.finished


def test_speculation_fills_idle_slots_one_step_ahead():
    state = _state()
    assert state.next_task().acc.tag == "DC2B1"
    # Nothing is ready, so the points one step past the running DC2B1 go out instead...
    ahead = {state.next_task().acc.tag, state.next_task().acc.tag}
    assert ahead == {"DC2B0", "DC3B1"}
    # ...but never two steps ahead: DC3B0 and DC4B1 wait for those.
    assert state.next_task() is None


def test_speculation_still_prunes_and_finds_the_same_bounds():
    def run(speculate):
        state, ran, running = _state(speculate=speculate), [], []
        while not state.finished:
            while len(running) < 3 and (task := state.next_task()) is not None:  # three slots
                running.append(task)
            done = running.pop(0)
            ran.append((done.phase, done.acc.tag))
            loss = _loss(done.acc)
            state.complete(done, Outcome(OK, loss, 1.0 + done.acc.params["cache_interval"] - loss))
        return state, ran

    spec_state, spec_ran = run(True)
    plain_state, plain_ran = run(False)
    assert [t for p, t in spec_ran if p == CONFIRM] == [t for p, t in plain_ran if p == CONFIRM] == ["DC2B1", "DC4B1"]
    # DC4B0 is two steps past DC2B0, which is over budget: still pruned.
    assert "DC4B0" in {task.acc.tag for task, _ in spec_state.pruned}


def test_stored_outcomes_are_skipped_and_still_prune():
    first = _state()
    keys = {lat.points[i].tag: lat.keys[i] for lat in first.lattices for i in range(len(lat.points))}
    stored = {keys["DC2B1"]: ({SCREEN}, Outcome(OK, 0.02, 2.0)),
              keys["DC2B0"]: ({SCREEN}, Outcome(STOPPED, 0.3, None))}
    state = _state(stored=stored)
    assert state.skipped == 2
    ran = _drive(state)
    screened = {t for p, t in ran if p == SCREEN}
    assert screened == {"DC3B1", "DC4B1"}
    assert {task.acc.tag for task, _ in state.pruned} == {"DC3B0", "DC4B0"}


def test_a_confirmation_that_drops_below_another_point_confirms_that_point_too():
    """Screened speeds flatter by luck: once DC4B1's confirmation comes in below DC3B1's
    screened speed, DC3B1 decides the 0.05 bound and is confirmed in turn, until each
    budget's bound is a confirmed point."""
    state = _state()
    # DC4B1 screened at 4.96 and DC3B1 at 3.97; confirmed, DC4B1 is only 2.0.
    ran = _drive(state, confirmed_at={"DC4B1": 2.0, "DC3B1": 3.5})
    confirms = [t for p, t in ran if p == CONFIRM]
    assert confirms == ["DC2B1", "DC4B1", "DC3B1"]
    c = state.counts()
    assert c["confirm_total"] == c["confirm_done"] == 3
    lat = state.lattices[0]
    bounds = [lat.points[i].tag for i in state.bound_points(lat)]
    assert bounds == ["DC2B1", "DC3B1"] and all(i in lat.confirm_done for i in state.bound_points(lat))
