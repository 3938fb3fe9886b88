"""Share a batch's pure-Python work among forked worker processes, results in order.

`tasks` and `codegen` spend their time in Python (checking points, building tasks,
rendering templates), which runs on one core per process. `ordered_map` forks workers
that inherit the items (nothing is pickled on the way in; results are pickled back),
and yields the results in the items' order as they arrive, so the caller can write
them out while the workers go on.

Forking is only done on Linux, and only where the caller asks for it: the CLI does, for
batches large enough to repay it. A caller that forks should hold no DuckDB connection
(`codegen.lake.LakeDB.close`), whose worker threads a forked child would not have. If
workers cannot be started or one dies, the remaining items are done in this process,
so the results are the same either way.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

# What forked workers work on, by index: set just before the fork, cleared after.
_ITEMS: Sequence[Any] = ()
_FN: Callable[[Any], Any] | None = None


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(n_items: int, workers: int | None, *, min_items: int, chunk: int) -> int:
    """Processes to use, this one included: `workers` (None: one per available CPU when
    there are at least `min_items` items, else 1), at most one per chunk, and 1 where
    forking is not done."""
    if workers is None:
        workers = available_cpus() if n_items >= min_items else 1
    if workers > 1 and not sys.platform.startswith("linux"):
        return 1  # workers are forked, which only Linux does safely
    return max(1, min(workers, -(-n_items // chunk)))


def _run_span(span: tuple[int, int]) -> list[Any]:
    assert _FN is not None
    return [_FN(x) for x in _ITEMS[span[0]:span[1]]]


def ordered_map(fn: Callable[[Any], Any], items: Sequence[Any], chunk: int, *, workers: int = 0,
                main_share: float = 0.0) -> Iterator[Any]:
    """`fn(item)` for each item, in order. `workers` forked processes (none: all here)
    take chunks of `chunk` items; this process does the first `main_share` of the items
    itself meanwhile, when it has nothing else to do. `fn` must catch the errors it
    expects; any other exception propagates, as it would without workers."""
    done = 0
    mine = round(len(items) * main_share) if workers > 0 else len(items)
    if mine < len(items):
        global _ITEMS, _FN
        _ITEMS, _FN = items, fn
        spans = [(i, min(i + chunk, len(items))) for i in range(mine, len(items), chunk)]
        pool = None
        try:
            pool = ProcessPoolExecutor(min(workers, len(spans)), mp_context=multiprocessing.get_context("fork"))
            theirs = pool.map(_run_span, spans)  # submits every span now
            for x in items[:mine]:
                yield fn(x)
                done += 1
            for results in theirs:
                for r in results:
                    yield r
                    done += 1
        except (BrokenProcessPool, OSError):
            pass  # no semaphores here, say, or a worker was killed: do the rest below
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            _ITEMS, _FN = (), None
    for x in items[done:]:
        yield fn(x)


__all__ = ["available_cpus", "ordered_map", "worker_count"]
