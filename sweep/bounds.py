"""The one definition of a bound, and of which stored row of a trial key to believe.

Pure Python (no pyarrow, DuckDB, torch or Ray), so the sweep's pruning, the task
writer and the lake's SQL views all take their rules from here:

* `pruning.Pruner.bound_points` (which points a sweep confirms) calls `best_point`;
* `codegen.tasks` (a config's bound and `best_speedup`) filters with `measured` and
  orders with `bound_order` through `codegen.policy`;
* `codegen.lake`'s SQL macro ``bounds_at`` and its ``trials`` view cannot call Python:
  they are written from `BOUND_SQL_FILTER` and `BELIEVE_SQL`, and
  ``tests/test_bounds.py`` proves on random lakes (ties, NaN, ±inf, failed rows,
  screen-only and confirmed keys) that the SQL and this module agree.

**A point** counts toward a bound when its row has status ``ok`` and a finite speedup
and a finite loss in the budget's metric (NaN and ±inf are no measurement: a speedup of
inf comes from a zero latency, never from a real run). **The bound** of a config at a
budget is such a point with loss at most the budget and the highest speedup; ties go to
the lower loss, then to the smaller trial key, so the answer never depends on row order.

**The row to believe** of a trial key, for readers (bounds, tasks, report, query): a
``confirm`` row beats a ``screen`` row (it is the re-measurement with more pairs, taken
because the screen row looked like a bound), then the latest ``finished_at``, then the
latest ``started_at`` (two drivers that raced on one key).

**Resume reads the screen row instead** (`screen_first`): a resumed sweep replays the
pruning decisions of the run it continues, and those were made on screen outcomes (a
confirm row exists only because its screen row was a bound). Reading the confirm row
there would let a re-measurement move the pruning frontier of a sweep that is already
half done, so a resumed sweep would skip or run different points than one uninterrupted
run. The two rules differ on purpose; both are stated and tested here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

# Plain strings, equal to `lake_schema`'s constants (which import pyarrow); a test checks.
OK = "ok"
SCREEN = "screen"
CONFIRM = "confirm"

T = TypeVar("T")

# The budget and metric a bound is asked at when none is given (`diffaccel bounds`,
# `tasks`, `query`; `codegen.lake.bounds`): the first of a spec's default budgets.
DEFAULT_BUDGET = 0.02
DEFAULT_METRIC = "ssim"


def finite(x: Any) -> bool:
    """A real number: not None, NaN or ±inf."""
    return x is not None and math.isfinite(x)


def measured(status: Any, speedup: Any, loss: Any) -> bool:
    """Whether a row is a point a bound may be made of (see the module's docstring)."""
    return status == OK and finite(speedup) and finite(loss)


def bound_order(speedup: float, loss: float, trial_key: str) -> tuple:
    """Sort key putting the bound first: highest speedup, then lower loss, then smaller key."""
    return (-speedup, loss, trial_key)


def best_point(items: Iterable[T], budget: float,
               fields: Callable[[T], tuple[Any, Any, Any, str]]) -> T | None:
    """The bound among `items` at `budget`: `fields(item)` gives (status, speedup, loss,
    trial_key). None when no measured point is within budget."""
    best, best_key = None, None
    for item in items:
        status, s, q, key = fields(item)
        if measured(status, s, q) and q <= budget:
            k = bound_order(float(s), float(q), key)
            if best_key is None or k < best_key:
                best, best_key = item, k
    return best


# The SQL side of the same rules, for `codegen.lake` (columns `status`, `speedup` and the
# metric's loss as `quality_loss`; DuckDB's isfinite is false for NaN and ±inf).
BOUND_SQL_FILTER = f"status = '{OK}' AND isfinite(speedup) AND isfinite(quality_loss)"
# ORDER BY of a trial key's rows, the row to believe first.
BELIEVE_SQL = (f"(phase = '{CONFIRM}') DESC NULLS LAST, finished_at DESC NULLS LAST, "
               "started_at DESC NULLS LAST")


def _desc(value: Any) -> tuple:
    """Descending with missing values last, as `BELIEVE_SQL` sorts."""
    return (value is None, _Neg(value) if value is not None else 0)


class _Neg:
    """Reverses the order of any comparable value (a datetime, say)."""

    __slots__ = ("v",)

    def __init__(self, v: Any):
        self.v = v

    def __lt__(self, other: _Neg) -> bool:
        return other.v < self.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Neg) and other.v == self.v


def believe_order(row: Mapping[str, Any]) -> tuple:
    """Sort key of a trial key's rows for readers, the row to believe first."""
    phase = row.get("phase")
    return (_desc(None if phase is None else phase == CONFIRM), _desc(row.get("finished_at")),
            _desc(row.get("started_at")))


def believed(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """trial_key -> the row readers believe (see the module's docstring)."""
    out: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        key = row["trial_key"]
        if key not in out or believe_order(row) < believe_order(out[key]):
            out[key] = row
    return out


def resume_order(row: Mapping[str, Any]) -> tuple:
    """Sort key of a trial key's rows for a resumed sweep: its screen row first (see the
    module's docstring for why), then as readers order them."""
    return (row.get("phase") != SCREEN, *believe_order(row)[1:])


def screen_first(current: Mapping[str, Any] | None, row: Mapping[str, Any]) -> bool:
    """Whether a resumed sweep takes `row` over the `current` row of its trial key."""
    return current is None or resume_order(row) < resume_order(current)


__all__ = ["BELIEVE_SQL", "BOUND_SQL_FILTER", "CONFIRM", "DEFAULT_BUDGET", "DEFAULT_METRIC", "OK", "SCREEN", "best_point", "believe_order",
           "believed", "bound_order", "finite", "measured", "resume_order",
           "screen_first"]
