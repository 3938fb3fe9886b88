"""Which measured point answers a request for "at least S× faster within budget B".

The original study took the first point it found that met the speedup, so a request
for 8× could return 8.9× as readily as 8.0×. Here the choice is an explicit policy:

``closest`` (default)
    the smallest speedup that meets the request; ties go to the lower loss. The
    reference solution is then as close as the lake allows to what the task asks.
``min-loss``
    among the points that meet the request, the lowest quality loss; ties go to the
    higher speedup.
``max-speedup``
    the highest speedup within budget (it must still meet the request); ties go to
    the lower loss: the order of `sweep.bounds.bound_order`, so with no request it
    picks the bound.

Remaining ties go to the smaller trial key, so the choice never depends on row order.
A request that no point meets is infeasible, and the best reachable speedup is
reported with it; it is never silently downgraded to a point that falls short.

Confidence (``confidence``): a speedup is a median over timed pairs, with a 95%
interval. With ``ci`` (default) a point meets a request only when it comes from a
``confirm`` row and its interval's low end is at or above the request, so a
benchmark's reference is not a coin flip; with ``median`` (the old behaviour) its
median alone must reach it. A request that only unconfident points reach is
answered with those points as `candidates`, to be confirmed.

Points that fail validation (a parameter out of range for the config, say) are never
chosen: each one passed over is reported with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sweep.bounds import bound_order

POLICIES = ("closest", "min-loss", "max-speedup")
DEFAULT_POLICY = "closest"
CONFIDENCES = ("ci", "median")
DEFAULT_CONFIDENCE = "ci"
MAX_CANDIDATES = 5


class Point(NamedTuple):
    """A measured point within budget: the fields a policy looks at, and a handle."""

    speedup: float
    loss: float
    trial_key: str
    ref: int  # index of the row the point came from
    ci_low: float | None = None  # low end of the speedup's 95% interval
    confirmed: bool = True  # measured in the confirm phase


@dataclass
class Choice:
    point: Point | None
    # Highest speedup among valid points within budget (None: no valid point at all).
    best_speedup: float | None
    # (point, reason) for every invalid point the policy looked at and passed over.
    passed_over: list[tuple[Point, str]] = field(default_factory=list)
    # With confidence "ci" and no confident point: the valid points whose median reaches
    # the request (best first by the policy), to be confirmed.
    candidates: list[Point] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return self.point is not None


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")
    return policy


def check_confidence(confidence: str) -> str:
    if confidence not in CONFIDENCES:
        raise ValueError(f"unknown confidence {confidence!r}: use one of {', '.join(CONFIDENCES)}")
    return confidence


def confident(p: Point, requested: float, confidence: str = DEFAULT_CONFIDENCE) -> bool:
    """Whether `p` meets `requested` under `confidence`."""
    if p.speedup < requested:
        return False
    return confidence == "median" or (p.confirmed and p.ci_low is not None and p.ci_low >= requested)


def _order(policy: str) -> Callable[[Point], tuple]:
    if policy == "closest":
        return lambda p: (p.speedup, p.loss, p.trial_key)
    if policy == "min-loss":
        return lambda p: (p.loss, -p.speedup, p.trial_key)
    return lambda p: bound_order(p.speedup, p.loss, p.trial_key)  # the bound's own order


def choose(
    points: Sequence[Point],
    requested: float,
    policy: str = DEFAULT_POLICY,
    invalid: Callable[[Point], str | None] = lambda p: None,
    *,
    best: bool = True,
    confidence: str = "median",
) -> Choice:
    """Pick the point for a request among `points` (all already within budget).

    `invalid(point)` returns why a point cannot be used, or None; it is called only on
    the points the policy reaches, since validating a whole lake would be slow.
    `best=False` skips finding the best reachable speedup (when the caller knows it).
    `confidence`: "median" (this function's default, for bounds) or "ci" (see above).
    """
    check_policy(policy)
    check_confidence(confidence)
    passed: list[tuple[Point, str]] = []
    seen: dict[int, str | None] = {}

    def why(p: Point) -> str | None:
        if p.ref not in seen:
            seen[p.ref] = invalid(p)
            if seen[p.ref] is not None:
                passed.append((p, seen[p.ref]))
        return seen[p.ref]

    chosen = None
    reaching = sorted((p for p in points if p.speedup >= requested), key=_order(policy))
    for p in reaching:
        if confident(p, requested, confidence) and why(p) is None:
            chosen = p
            break
    candidates: list[Point] = []
    if chosen is None and confidence != "median":
        for p in reaching:
            if why(p) is None:
                candidates.append(p)
                if len(candidates) == MAX_CANDIDATES:
                    break
    top = None
    for p in sorted(points, key=_order("max-speedup")) if best else ():
        if why(p) is None:
            top = p.speedup
            break
    return Choice(chosen, top, passed, candidates)


__all__ = ["CONFIDENCES", "DEFAULT_CONFIDENCE", "DEFAULT_POLICY", "MAX_CANDIDATES", "POLICIES", "Choice", "Point",
           "check_confidence", "check_policy", "choose", "confident"]
