"""What the sweep driver and its Ray Tune side share, without Ray: the rows' common
columns (`SweepContext`), the progress display, the summary, and how a trial's outcome
and error are read.

`sweep.driver` (which the CLI imports for ``--help``) and `sweep.tuning` (which imports
Ray) both import this module; neither imports the other's internals, so there is no
import circle.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sweep.catalog import PipelineConfig, config_dict, trial_key
from sweep.lake import params_json
from sweep.lake_schema import FAILED, OK, PRUNED, SCREEN, STOPPED
from sweep.pruning import Outcome, SweepState, Task
from sweep.spec import SweepSpec

# ------------------------------------------------------------------------- rows


def resolved(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with its resolution filled in, as the worker keys and stores it."""
    # Cheap: sweep.pipelines imports torch and diffusers only inside its functions.
    from sweep.pipelines import resolve_resolution

    return dataclasses.replace(cfg, resolution=resolve_resolution(cfg))


@dataclass
class SweepContext:
    """What every row of this sweep shares."""

    spec: SweepSpec
    sweep_id: str  # the run id: new on every run, identical reruns included
    device: dict[str, Any]  # device columns from the probe
    versions: dict[str, str]
    dtype: str
    # What the trials measure with (`spec.trial_inputs`): part of every key.
    inputs: dict[str, Any] | None = None

    def key(self, cfg: PipelineConfig, acc) -> str:
        return trial_key(resolved(cfg), acc, self.device["device_kind"], self.versions, self.inputs)

    def base_row(self, task: Task, status: str, **extra: Any) -> dict[str, Any]:
        """A row for a trial that produced no measurement (pruned, failed)."""
        row: dict[str, Any] = {
            "trial_key": task.key, "tag": task.acc.tag, "sweep_id": self.sweep_id,
            **config_dict(resolved(task.config)), "dtype": self.dtype,
            "method": task.acc.combo, **task.acc.params, "params_json": params_json(task.acc.params),
            "status": status, "phase": task.phase, "final": False,
            **self.device, "finished_at": datetime.now(timezone.utc), "gpu_seconds": 0.0,
        }
        row.update(extra)
        return row


# A screen row's columns that a confirmation of its point reuses (`Outcome.reuse`).
REUSE_COLUMNS = {"prompt_quality_json": "prompt_quality", "pair_times_json": "pair_times"}


def outcome_of(row: Mapping[str, Any], metric: str) -> Outcome:
    reuse = None
    if row.get("status") == OK and row.get("phase") == SCREEN:
        reuse = {name: (json.loads(row[col]) if name == "pair_times" else row[col])
                 for col, name in REUSE_COLUMNS.items() if row.get(col)} or None
    return Outcome(row["status"], row.get(f"quality_loss_{metric}"), row.get("speedup"), reuse)


def error_text(err: BaseException) -> str:
    """The root cause's type and message, without Ray's wrapping."""
    cause = err
    while getattr(cause, "cause", None) is not None or getattr(cause, "__cause__", None) is not None:
        nxt = getattr(cause, "cause", None) or cause.__cause__
        if nxt is cause:
            break
        cause = nxt
    return f"{type(cause).__name__}: {cause}".strip()


class LakeWriteError(RuntimeError):
    """Rows could not be written to the lake; they are in the spool (see `sweep.spool`)."""


# ------------------------------------------------------------------------ progress


@dataclass
class Counts:
    """One consistent snapshot of a sweep's progress.

    Invariants (tested): ``done + running + waiting == total``; ``confirmed <=
    confirm_total``; every number is >= 0.
    """

    total: int
    done: int
    ok: int
    stopped: int
    pruned: int
    failed: int
    running: int
    waiting: int
    confirmed: int
    confirm_total: int
    confirm_running: int

    @classmethod
    def of(cls, state: SweepState) -> Counts:
        c = state.counts()
        running = sum(len(lat.running) for lat in state.lattices)
        total = state.total
        done = c["done"]
        return cls(total=total, done=done, ok=c[OK], stopped=c[STOPPED], pruned=c[PRUNED],
                   failed=c[FAILED], running=running, waiting=max(0, total - done - running),
                   confirmed=min(c["confirm_done"], c["confirm_total"]), confirm_total=c["confirm_total"],
                   confirm_running=sum(len(lat.confirm_running) for lat in state.lattices))

    @property
    def remaining(self) -> int:
        """Trials still to finish: screen points not done, confirmations not done."""
        return (self.total - self.done) + (self.confirm_total - self.confirmed)

    def statuses(self) -> str:
        return (f"ok {self.ok} · stopped {self.stopped} · pruned {self.pruned} · failed {self.failed} · "
                f"confirmed {self.confirmed}/{self.confirm_total}")


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """The sweep's progress on stderr: a live rich display on a terminal, else one plain
    line each time a trial finishes (never the same counts twice)."""

    def __init__(self, state: SweepState, enabled: bool = True, stream=None, live: bool | None = None):
        self.state = state
        self.enabled = enabled
        # Looked up at each write: Tune pickles its callbacks, and a stream cannot be.
        self._stream = stream
        self._live_wanted = live
        self._rich = None
        self._last = ""
        self.start = time.monotonic()
        start = Counts.of(state)
        self.remaining_at_start = start.remaining
        self.lines: list[str] = []  # every plain line written (for tests and summaries)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_rich"] = None
        d["_stream"] = None
        return d

    @property
    def stream(self):
        return self._stream or sys.stderr

    def counts(self) -> Counts:
        return Counts.of(self.state)

    def eta_seconds(self, c: Counts) -> float | None:
        finished = self.remaining_at_start - c.remaining
        if finished <= 0 or c.remaining <= 0:
            return None if c.remaining > 0 else 0.0
        return (time.monotonic() - self.start) / finished * c.remaining

    def line(self, final: bool = False) -> str:
        c = self.counts()
        head = f"[sweep] {c.done}/{c.total} done · {c.statuses()}"
        if final:
            return head
        return f"{head} · running {c.running + c.confirm_running} · ETA {format_eta(self.eta_seconds(c))}"

    def _is_tty(self) -> bool:
        if self._live_wanted is not None:
            return self._live_wanted
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, final: bool = False) -> None:
        if not self.enabled:
            return
        if self._is_tty():
            self._update_rich(final)
            return
        # One line per finished trial (or status change): trial starts alone would print
        # the same counts again with "running" one higher, which read as every line twice.
        key = self.line(final=True) + (" final" if final else "")
        if key == self._last:
            return
        self._last = key
        text = self.line(final)
        self.lines.append(text)
        self.stream.write(text + "\n")
        self.stream.flush()

    def _update_rich(self, final: bool) -> None:
        # Two short lines (bar, then statuses) so that an 80-column terminal shows all.
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        c = self.counts()
        steps, finished = c.total + c.confirm_total, c.done + c.confirmed
        grid = Table.grid(padding=(0, 1))
        tail = "" if final else f"running {c.running + c.confirm_running} · ETA {format_eta(self.eta_seconds(c))}"
        grid.add_row(Text("sweep", style="bold"), ProgressBar(total=max(1, steps), completed=finished, width=30),
                     f"{finished}/{steps}", tail)
        view = Group(grid, Text(c.statuses()))
        if self._rich is None:
            self._rich = Live(view, console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self._rich.start()
        else:
            self._rich.update(view, refresh=True)
        if final:
            self.close()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


# ------------------------------------------------------------------------ summary


@dataclass
class SweepSummary:
    sweep_id: str  # the run id
    total: int
    counts: dict[str, int]
    skipped: int  # already in the lake
    rows_written: int
    baselines_written: int
    wall_s: float
    device_kind: str
    resources: dict[str, Any]
    # trial key -> node id that ran it, and the timed seconds per trial (for the bench)
    nodes: dict[str, str] = field(default_factory=dict)
    cluster_nodes: dict[str, dict[str, float]] = field(default_factory=dict)  # node id -> resources
    trial_seconds: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fit_wall_s: float = 0.0  # time inside Tune (the trials), without Ray start-up and the probe
    concurrency: int = 0
    landed_from_spool: int = 0  # rows of an earlier failed write, landed before this sweep
    retried_failed: int = 0  # failed keys measured again

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, default=str)
