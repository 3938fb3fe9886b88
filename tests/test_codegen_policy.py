"""Choosing parameters: each policy picks what its documentation says, never the first row."""

import pytest

from codegen.policy import POLICIES, Point, choose


def pts(*triples):
    return [Point(s, loss, k, i) for i, (s, loss, k) in enumerate(triples)]


# Listed out of order on purpose: the first-listed point meets 8× but is not the closest.
EIGHT = pts((9.1, 0.010, "c"), (8.3, 0.015, "b"), (8.0, 0.018, "a"), (7.9, 0.001, "d"))


def test_closest_takes_the_smallest_speedup_that_meets_the_request_not_the_first_row():
    pick = choose(EIGHT, 8.0, "closest")
    assert pick.point.speedup == 8.0 and pick.point.trial_key == "a"
    assert pick.best_speedup == 9.1


def test_min_loss_and_max_speedup():
    assert choose(EIGHT, 8.0, "min-loss").point.trial_key == "c"  # 7.9 has less loss but misses 8×
    assert choose(EIGHT, 8.0, "max-speedup").point.speedup == 9.1
    assert choose(EIGHT, 8.2, "closest").point.speedup == 8.3


def test_ties_go_to_the_lower_loss_then_the_smaller_key():
    tied = pts((8.0, 0.02, "z"), (8.0, 0.01, "y"), (8.0, 0.01, "x"), (9.0, 0.01, "w"))
    assert choose(tied, 8.0, "closest").point.trial_key == "x"
    same_loss = pts((8.5, 0.01, "b"), (9.0, 0.01, "a"), (8.2, 0.01, "c"))
    assert choose(same_loss, 8.0, "min-loss").point.trial_key == "a"  # ties on loss: higher speedup
    top = pts((9.0, 0.02, "b"), (9.0, 0.01, "c"), (9.0, 0.01, "a"))
    assert choose(top, 1.0, "max-speedup").point.trial_key == "a"


@pytest.mark.parametrize("policy", POLICIES)
def test_a_request_beyond_every_point_is_infeasible_with_the_best_reachable(policy):
    pick = choose(EIGHT, 9.2, policy)
    assert not pick.feasible and pick.point is None
    assert pick.best_speedup == 9.1


def test_invalid_points_are_passed_over_with_their_reason():
    bad = {"a": "cache_interval=60 is out of range"}
    pick = choose(EIGHT, 8.0, "closest", invalid=lambda p: bad.get(p.trial_key))
    assert pick.point.trial_key == "b"
    assert [(p.trial_key, why) for p, why in pick.passed_over] == [("a", bad["a"])]
    only_bad = choose(pts((9.0, 0.01, "a")), 1.0, "closest", invalid=lambda p: "broken")
    assert only_bad.point is None and only_bad.best_speedup is None


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="use one of closest, min-loss, max-speedup"):
        choose(EIGHT, 8.0, "first")


def test_ci_confidence_needs_a_confirm_row_whose_interval_clears_the_request():
    # A: screen-only, wide CI (the DC5B2: 2.15× median, CI 1.48–2.88).
    # B: confirmed but its CI straddles 2.0×. C: confirmed, CI low 2.05 ≥ 2.0.
    points = [Point(2.15, 0.010, "a", 0, ci_low=1.48, confirmed=False),
              Point(2.10, 0.012, "b", 1, ci_low=1.95, confirmed=True),
              Point(2.40, 0.015, "c", 2, ci_low=2.05, confirmed=True)]
    assert choose(points, 2.0, "closest").point.trial_key == "b"  # median: the old behaviour
    pick = choose(points, 2.0, "closest", confidence="ci")
    assert pick.point.trial_key == "c"
    # Without C, nothing is confident: the points that reach 2.0× by their median are candidates.
    pick = choose(points[:2], 2.0, "closest", confidence="ci")
    assert pick.point is None and [p.trial_key for p in pick.candidates] == ["b", "a"]
    assert choose(points, 2.0, "closest", confidence="median").candidates == []
    with pytest.raises(ValueError, match="unknown confidence"):
        choose(points, 2.0, "closest", confidence="p90")
