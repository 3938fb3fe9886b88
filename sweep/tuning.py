"""The Ray Tune side of a sweep: a searcher that hands out the points `SweepState` deems
ready, and a callback that lands every trial event in the lake at once.

Kept apart from `sweep.driver` so that importing the driver (the CLI does, for
`--help`) never imports Ray.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher

from sweep.catalog import config_dict
from sweep.driver import Progress, SweepContext, SweepSummary, error_text, outcome_of
from sweep.lake import Lake
from sweep.lake_schema import FAILED, PRUNED
from sweep.pruning import Outcome, SweepState, Task

log = logging.getLogger("diffaccel.sweep")


class PlanSearcher(Searcher):
    """Hands Tune the points `SweepState` says are ready; results come via `LakeSink`."""

    def __init__(self, state: SweepState, sink: LakeSink):
        super().__init__(metric=None, mode=None)
        self.state = state
        self.sink = sink

    def suggest(self, trial_id: str):
        task = self.state.next_task()
        self.sink.flush_pruned()
        if task is None:
            return self.FINISHED if self.state.finished else None
        self.sink.tasks[trial_id] = task
        return {"task_id": task.id, "phase": task.phase, "config": config_dict(task.config),
                "combo": task.acc.combo, "params": task.acc.params, "key": task.key}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        # Bookkeeping happens in `LakeSink`, which also sees the trial's error.
        pass


class LakeSink(Callback):
    """Turns Tune's trial events into lake rows, written at once."""

    def __init__(self, lake: Lake, ctx: SweepContext, state: SweepState, progress: Progress,
                 summary: SweepSummary):
        self.lake = lake
        self.ctx = ctx
        self.state = state
        self.progress = progress
        self.summary = summary
        self.tasks: dict[str, Task] = {}
        self.baselines = lake.existing_baseline_keys()
        self.handled: set[str] = set()

    def _write(self, rows: list[dict[str, Any]]) -> None:
        pruned = self._take_pruned()
        if rows or pruned:
            self.lake.write_trials(rows + pruned)
            self.summary.rows_written += len(rows) + len(pruned)
        self.progress.update()

    def _take_pruned(self) -> list[dict[str, Any]]:
        rows = [self.ctx.base_row(task, PRUNED, stop_reason=reason) for task, reason in self.state.pruned]
        self.state.pruned.clear()
        return rows

    def flush_pruned(self) -> None:
        if self.state.pruned:
            self._write([])

    def on_trial_start(self, iteration, trials, trial, **info):
        # Without this the line is written only as a trial ends, when one slot is
        # always momentarily free, and "running" reads one low.
        if trial.trial_id in self.tasks:
            self.progress.update()

    def on_trial_complete(self, iteration, trials, trial, **info):
        task = self.tasks.get(trial.trial_id)
        if task is None or trial.trial_id in self.handled:
            return
        self.handled.add(trial.trial_id)
        result = trial.last_result or {}
        if "row_json" not in result:
            # The function ended without a row: treat it as a failure, never as silence.
            self._fail(task, "the trial ended without reporting a result row")
            return
        row = json.loads(result["row_json"])
        self._restore_types(row)
        base = result.get("baseline_json")
        if base:
            brow = json.loads(base)
            if brow.get("baseline_key") not in self.baselines:
                self._restore_types(brow)
                self.lake.write_baselines([brow])
                self.baselines.add(brow["baseline_key"])
                self.summary.baselines_written += 1
        if row.get("trial_key") != task.key:
            log.warning("worker measured %s under key %s, the driver expected %s (a heterogeneous "
                        "cluster?); the row keeps the worker's key", task.acc.tag, row.get("trial_key"), task.key)
        self.summary.nodes[row.get("trial_key", task.key)] = result.get("node_id", "")
        self.summary.trial_seconds.append({"key": task.key, "phase": task.phase, "status": row["status"],
                                           "gpu_seconds": row.get("gpu_seconds"),
                                           "timed_seconds": result.get("timed_seconds"),
                                           "prompts_done": result.get("prompts_done"),
                                           "trial_seconds": result.get("trial_seconds"),
                                           "load_seconds": result.get("load_seconds"),
                                           "loaded_pipeline": result.get("loaded_pipeline"),
                                           "inference_seconds": result.get("inference_seconds"),
                                           "pipeline_seconds": result.get("pipeline_seconds"),
                                           "gpu_ids": result.get("gpu_ids"), "node_id": result.get("node_id")})
        self.state.complete(task, outcome_of(row, self.ctx.spec.metric))
        self._write([row])

    def on_trial_error(self, iteration, trials, trial, **info):
        task = self.tasks.get(trial.trial_id)
        if task is None or trial.trial_id in self.handled:
            return
        self.handled.add(trial.trial_id)
        err = trial.get_pickled_error() if hasattr(trial, "get_pickled_error") else None
        text = error_text(err) if err is not None else "the trial failed (no error recorded)"
        self._fail(task, text)

    def _fail(self, task: Task, text: str) -> None:
        row = self.ctx.base_row(task, FAILED, error=text[-2000:])
        self.summary.trial_seconds.append({"key": task.key, "phase": task.phase, "status": FAILED})
        self.state.complete(task, Outcome(FAILED))
        self._write([row])

    @staticmethod
    def _restore_types(row: dict[str, Any]) -> None:
        from datetime import datetime

        for k in ("started_at", "finished_at", "created_at"):
            if isinstance(row.get(k), str):
                row[k] = datetime.fromisoformat(row[k])
