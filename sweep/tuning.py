"""The Ray Tune side of a sweep: a searcher that hands out the points `SweepState` deems
ready, and a callback that lands every trial event in the lake at once.

Kept apart from `sweep.driver` so that importing the driver (the CLI does, for
`--help`) never imports Ray; what both need lives in `sweep.bookkeeping`.

A failed lake write must stop the sweep, but Tune swallows exceptions raised in
callbacks. So `LakeSink` keeps the rows it could not write in the spool
(`sweep.spool`), records the failure, and from then on spools every row; `PlanSearcher`
hands out no more trials and `StopOnWriteFailure` stops the running ones. The driver
raises `LakeWriteError` once `fit()` returns.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from sweep.bookkeeping import Progress, SweepContext, SweepSummary, error_text, outcome_of
from sweep.catalog import config_dict
from sweep.lake import LakeWriter, new_batch_id
from sweep.lake_schema import BASELINES_DIR, FAILED, PRUNED, TRIALS_DIR
from sweep.pruning import Outcome, SweepState, Task
from sweep.spool import Spool

log = logging.getLogger("diffaccel.sweep")


class PlanSearcher(Searcher):
    """Hands Tune the points `SweepState` says are ready; results come via `LakeSink`."""

    def __init__(self, state: SweepState, sink: LakeSink):
        super().__init__(metric=None, mode=None)
        self.state = state
        self.sink = sink

    def suggest(self, trial_id: str):
        if self.sink.failure is not None:
            return self.FINISHED  # the lake cannot take rows: start nothing more
        task = self.state.next_task()
        self.sink.flush_pruned()
        # The slot a finished trial freed is refilled (or cannot be) only now: the line
        # that finish owes is written here, so "running" counts the trial just handed out.
        self.sink.show_progress()
        if task is None:
            return self.FINISHED if self.state.finished else None
        self.sink.tasks[trial_id] = task
        return {"task_id": task.id, "phase": task.phase, "config": config_dict(task.config),
                "combo": task.acc.combo, "params": task.acc.params, "key": task.key, "reuse": task.reuse}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        # Bookkeeping happens in `LakeSink`, which also sees the trial's error.
        pass


class StopOnWriteFailure(Stopper):
    """Stops every running trial once the sink could not write to the lake."""

    def __init__(self, sink: LakeSink):
        self.sink = sink

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.sink.failure is not None

    def stop_all(self) -> bool:
        return self.sink.failure is not None


class LakeSink(Callback):
    """Turns Tune's trial events into lake rows, written at once."""

    def __init__(self, lake: LakeWriter, ctx: SweepContext, state: SweepState, progress: Progress,
                 summary: SweepSummary, spool: Spool | None = None):
        self.lake = lake
        self.spool = spool or Spool(lake.uri)
        self.failure: str | None = None  # the first failed write, in words
        self.spooled = 0  # rows kept in the spool
        self.unspooled: list[tuple[str, list[dict[str, Any]]]] = []  # rows not even the spool took
        self.spool_failure: str | None = None
        self.ctx = ctx
        self.state = state
        self.progress = progress
        self.summary = summary
        self.tasks: dict[str, Task] = {}
        self.baselines = lake.existing_baseline_keys()
        self.handled: set[str] = set()
        # Steps ended since a progress line fell due (None: none is due). A trial ends
        # while its slot is momentarily free, so its line waits for the searcher to
        # refill the slot (`show_progress`); `on_step_end` writes it after a step in which
        # Tune did not ask (no slot to fill, or the searcher is finished).
        self._line_due: int | None = None

    def _write(self, rows: list[dict[str, Any]]) -> None:
        pruned = self._take_pruned()
        if rows or pruned:
            if self._store(TRIALS_DIR, rows + pruned):
                self.summary.rows_written += len(rows) + len(pruned)
        if self._line_due is None:
            self._line_due = 0

    def show_progress(self) -> None:
        """Write the progress line a finished trial owes, if any."""
        if self._line_due is not None:
            self._line_due = None
            self.progress.update()

    def _store(self, table: str, rows: list[dict[str, Any]]) -> bool:
        """Write rows to the lake, or keep them in the spool once a write has failed;
        True when they reached the lake. Never raises for a lake error: Tune would
        swallow it (see module doc)."""
        batch = new_batch_id()
        if self.failure is None:
            try:
                if table == TRIALS_DIR:
                    self.lake.write_trials(rows, batch=batch)
                else:
                    self.lake.write_baselines(rows, batch=batch)
                return True
            except Exception as e:  # noqa: BLE001 - any failure to write must stop the sweep
                self.failure = f"{type(e).__name__}: {e}"
        # Kept under the same batch name: files of the batch that did reach the lake
        # are replaced when it lands, not duplicated.
        try:
            self.spool.keep(table, rows, batch)
            self.spooled += len(rows)
        except Exception as e:  # noqa: BLE001 - kept in memory; the driver dumps them
            self.unspooled.append((table, rows))
            self.spool_failure = f"{type(e).__name__}: {e}"
        return False

    def _take_pruned(self) -> list[dict[str, Any]]:
        rows = [self.ctx.base_row(task, PRUNED, stop_reason=reason) for task, reason in self.state.pruned]
        self.state.pruned.clear()
        return rows

    def flush_pruned(self) -> None:
        if self.state.pruned:
            self._write([])

    def on_trial_complete(self, iteration, trials, trial, **info):
        task = self.tasks.get(trial.trial_id)
        if task is None or trial.trial_id in self.handled:
            return
        self.handled.add(trial.trial_id)
        result = trial.last_result or {}
        if "row_json" not in result:
            if self.failure is not None:
                return  # stopped because the lake failed: no verdict; a rerun runs it
            if trial.status == "ERROR":
                self._fail(task, self._error_of(trial))
                return
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
                if self._store(BASELINES_DIR, [brow]):
                    self.summary.baselines_written += 1
                self.baselines.add(brow["baseline_key"])
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
        self._fail(task, self._error_of(trial))

    def on_step_end(self, iteration, trials, **info):
        # Tune ends some trials in ERROR without calling `on_trial_error` (an actor that
        # could not be reset for reuse): catch them here, so no point stays "running".
        for trial in trials:
            if trial.trial_id in self.tasks and trial.trial_id not in self.handled \
                    and trial.status in ("ERROR", "TERMINATED"):
                self.on_trial_complete(iteration, trials, trial)
        if self._line_due is not None:
            self._line_due += 1
            if self._line_due >= 2:  # a whole step went by without the searcher refilling
                self.show_progress()

    @staticmethod
    def _error_of(trial) -> str:
        """The trial's real error. Tune pickles only Ray task and actor errors; any other
        (a failed actor reset, a Tune error) is kept only as text in its error file,
        which is where "no error recorded" came from."""
        try:
            err = trial.get_pickled_error()
        except Exception:  # noqa: BLE001 - an unreadable error file must not hide the text one
            err = None
        if err is not None:
            return error_text(err)
        try:
            text = trial.get_error()
        except Exception:  # noqa: BLE001
            text = None
        if text:
            lines = [ln for ln in str(text).strip().splitlines() if ln.strip() and not ln.startswith("Failure #")]
            if lines:
                return " | ".join(lines[-5:])
        return (f"Ray Tune ended the trial ({trial.status}) after {trial.num_failures} failure(s) "
                "and kept no error text: its worker process probably died (out of memory?)")

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
