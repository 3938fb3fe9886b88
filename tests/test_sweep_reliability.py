"""Issue #10: nothing measured is lost, a failed row is no verdict, bad sweep options fail
early, and the progress counters add up. Sweeps run on a real local Ray; the lake is
real Parquet on disk.

Ray's own exposure (loopback, orphans) and two concurrent sweeps are in
`test_sweep_isolation.py`: they need processes of their own.
"""

from __future__ import annotations

import collections
import os
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sweep_helpers import expected_keys, ray_children, tiny_spec, trial_rows, write_spec
from typer.testing import CliRunner

from diffaccel.cli import app
from sweep import driver
from sweep.bookkeeping import Counts, Progress, format_eta
from sweep.lake import LakeWriter
from sweep.lake_schema import FAILED, OK, SCREEN
from sweep.pruning import Outcome, SweepState
from sweep.spec import expand
from sweep.spool import Spool

FOUR_POINTS = {"early_stop": {"enabled": False, "prune": False}}


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """The spool and Ray records of this test only."""
    folder = tmp_path / "state"
    monkeypatch.setenv("DIFFACCEL_STATE_DIR", str(folder))
    return folder


@pytest.fixture
def local_ray():
    """A Ray for one test (not the module: other tests check that no Ray runs)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()



def _screen_keys(lake) -> collections.Counter:
    return collections.Counter(r["trial_key"] for r in trial_rows(lake) if r["phase"] == SCREEN)


# ------------------------------------------------------------------ §1 writability


def test_a_lake_whose_trials_folder_is_a_file_fails_before_ray_starts(tmp_path):
    import ray

    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "trials").write_text("not a folder")
    spec = write_spec(tmp_path / "spec.yaml")
    result = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(lake)])
    assert result.exit_code == 2, result.output
    assert f"the lake at '{lake}' cannot be written" in result.output
    assert "trials is a file, not a folder" in result.output
    assert not ray.is_initialized() and not ray_children()


def _make_read_only(folder: Path) -> None:
    """Read-only for real, root included (CI runs as root, and root ignores chmod):
    the immutable attribute where the filesystem has it, else chmod for a normal user."""
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return
    if os.geteuid() == 0:
        pytest.skip("no way to make a folder read-only for root on this filesystem")
    folder.chmod(0o555)


def test_a_read_only_lake_fails_before_ray_starts(tmp_path):
    import ray

    lake = tmp_path / "lake"
    (lake / "trials").mkdir(parents=True)
    _make_read_only(lake / "trials")
    try:
        spec = write_spec(tmp_path / "spec.yaml")
        result = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(lake)])
    finally:
        subprocess.run(["chattr", "-i", str(lake / "trials")], capture_output=True)
        (lake / "trials").chmod(0o755)
    assert result.exit_code == 2, result.output
    assert f"cannot write into {lake}/trials" in result.output
    assert not ray.is_initialized() and not ray_children()


def test_a_read_only_sweeps_folder_fails_the_write_probe(tmp_path):
    # Each run records itself in `sweeps/` (lake.write_sweep): the probe must reach it too.
    lake = tmp_path / "lake"
    for sub in ("trials", "baselines", "sweeps"):
        (lake / sub).mkdir(parents=True)
    _make_read_only(lake / "sweeps")
    try:
        with pytest.raises(OSError, match=f"cannot write into {lake}/sweeps"):
            LakeWriter(str(lake)).check_writable()
    finally:
        subprocess.run(["chattr", "-i", str(lake / "sweeps")], capture_output=True)
        (lake / "sweeps").chmod(0o755)
    LakeWriter(str(lake)).check_writable()  # writable again: no error


# ------------------------------------------------------------------ §1 failure mid-sweep


def _break_lake_writes_after(monkeypatch, good_writes: int) -> list[int]:
    """Every write of trial rows after the first `good_writes` fails as a full disk would
    (in the driver process, where the rows are written)."""
    real = LakeWriter._write
    calls = [0]

    def write(self, rows, subdir, *args, **kwargs):
        if subdir == "trials":
            calls[0] += 1
            if calls[0] > good_writes:
                raise OSError(28, "No space left on device")
        return real(self, rows, subdir, *args, **kwargs)

    monkeypatch.setattr(LakeWriter, "_write", write)
    return calls


@pytest.mark.slow
def test_a_write_that_fails_mid_sweep_stops_it_and_a_rerun_lands_the_rows_once(local_ray, tmp_path,
                                                                               monkeypatch, state_dir):
    spec_path = write_spec(tmp_path / "spec.yaml", **FOUR_POINTS)
    lake = tmp_path / "lake"
    calls = _break_lake_writes_after(monkeypatch, good_writes=1)
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--lake", str(lake), "--quiet"])
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "rerun the same command" in errors[0]
    assert "Traceback" not in result.output
    assert calls[0] >= 2
    in_lake = _screen_keys(lake)
    assert sum(in_lake.values()) == 1  # the one write that worked
    spool = Spool(str(lake))
    spooled = spool.rows()
    assert spooled >= 1 and spool.folder.is_relative_to(state_dir)

    monkeypatch.undo()
    monkeypatch.setenv("DIFFACCEL_STATE_DIR", str(state_dir))
    summary = driver.run_sweep(tiny_spec(**FOUR_POINTS), str(lake), progress=False)
    assert summary.landed_from_spool == spooled
    assert not spool.pending()
    keys = _screen_keys(lake)
    assert set(keys) == expected_keys(tiny_spec(**FOUR_POINTS)) and set(keys.values()) == {1}, keys
    # Only what neither the lake nor the spool held was measured again.
    measured = [r for r in trial_rows(lake) if r["sweep_id"] == summary.sweep_id and r["phase"] == SCREEN]
    assert len(measured) == 4 - 1 - spooled


def test_a_spooled_batch_lands_once_even_when_landed_twice(tmp_path, state_dir):
    """A crash between landing a batch and forgetting it: the next landing replaces
    the batch's files instead of adding rows."""
    rows = _ok_rows(n=3)
    spool = Spool(str(tmp_path / "lake"))
    spool.keep("trials", rows, "20260101T000000-abc")
    lake = LakeWriter(str(tmp_path / "lake"))
    kept = list(spool.pending())
    assert spool.land(lake) == 3
    # Put the batch back, as if the process had died before deleting it.
    spool.keep("trials", rows, "20260101T000000-abc")
    assert spool.land(lake) == 3
    assert len(trial_rows(tmp_path / "lake")) == 3
    assert len(kept) == 1 and not spool.pending()


def _ok_rows(n: int) -> list[dict]:
    from datetime import datetime, timezone

    return [{"trial_key": f"k{i}", "tag": f"deepcache(i={i})", "sweep_id": "r", "model": "sd15", "preset": "tiny",
             "scheduler": "ddim", "steps": 3, "resolution": 64, "batch": 1, "dtype": "float32",
             "method": "deepcache", "status": OK, "phase": SCREEN, "final": False, "device_kind": "cpu",
             "finished_at": datetime.now(timezone.utc)} for i in range(n)]


# ------------------------------------------------------------------ §4 failed rows


@pytest.mark.slow
def test_failed_keys_run_again_by_default_and_not_with_no_retry_failed(local_ray, tmp_path):
    spec = tiny_spec(**FOUR_POINTS)
    first = tmp_path / "first"
    driver.run_sweep(spec, str(first), progress=False)
    rows = trial_rows(first)
    screen = [r for r in rows if r["phase"] == SCREEN]
    assert len(screen) == 4 and {r["status"] for r in rows} == {OK}
    confirmed = {r["trial_key"] for r in rows if r["phase"] != SCREEN}
    # A lake where one key failed (a worker that died, say): a key with no confirmation.
    victim = next(r for r in screen if r["trial_key"] not in confirmed)
    lake = tmp_path / "lake"
    broken = dict(victim, status=FAILED, error="RuntimeError: CUDA error", speedup=None, sweep_id="old")
    LakeWriter(str(lake)).write_trials([broken, *(r for r in rows if r is not victim)])

    kept = driver.run_sweep(spec, str(lake), progress=False, retry_failed=False)
    assert kept.rows_written == 0 and kept.skipped == 4

    retried = driver.run_sweep(spec, str(lake), progress=False)
    assert retried.retried_failed == 1
    rerun = [r for r in trial_rows(lake) if r["sweep_id"] == retried.sweep_id and r["phase"] == SCREEN]
    assert [(r["trial_key"], r["status"]) for r in rerun] == [(victim["trial_key"], OK)]

    again = driver.run_sweep(spec, str(lake), progress=False)
    assert again.rows_written == 0 and again.retried_failed == 0


def test_a_failed_trial_keeps_tunes_text_error_when_no_exception_was_pickled():
    """Tune pickles only Ray task/actor errors; an actor that could not be reset leaves
    its error as text only, which the sink used to lose ("no error recorded")."""
    from sweep.tuning import LakeSink

    class TextOnlyTrial:  # the two lookups `ray.tune.experiment.Trial` offers
        status = "ERROR"
        num_failures = 1

        def get_pickled_error(self):
            return None

        def get_error(self):
            return ("Failure # 1 (occurred at 2026-01-01_00-00-00)\n"
                    "Trainable runner reuse requires reset_config() to be implemented and return True.\n")

    class NothingTrial(TextOnlyTrial):
        def get_error(self):
            return None

    assert LakeSink._error_of(TextOnlyTrial()) == \
        "Trainable runner reuse requires reset_config() to be implemented and return True."
    text = LakeSink._error_of(NothingTrial())
    assert "no error recorded" not in text and "ERROR" in text and "worker" in text


# ------------------------------------------------------------------ §6 options


@pytest.mark.parametrize("value", ["0", "-1"])
def test_cpus_per_trial_below_one_fails_before_ray_starts(tmp_path, value):
    import ray

    spec = write_spec(tmp_path / "spec.yaml")
    result = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(tmp_path / "lake"),
                                      "--cpus-per-trial", value])
    assert result.exit_code == 2, result.output
    assert f"--cpus-per-trial must be at least 1, got {value}" in result.output
    assert not ray.is_initialized() and not ray_children()


def test_an_address_where_no_cluster_answers_fails_within_the_timeout(tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(driver, "CONNECT_TIMEOUT_S", 3.0)
    spec = write_spec(tmp_path / "spec.yaml")
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(tmp_path / "lake"),
                                      "--address", "127.0.0.1:1"])
    elapsed = time.monotonic() - t0
    assert result.exit_code == 2, result.output
    assert "no Ray cluster at 127.0.0.1:1" in result.output
    assert 2.5 <= elapsed < 15
    assert not ray.is_initialized()


def test_the_default_connect_timeout_is_about_30_seconds():
    assert driver.CONNECT_TIMEOUT_S == 30.0


# ------------------------------------------------------------------ progress


def _state(spec):
    plan = expand(spec)
    return SweepState(plan.combos, spec.budgets, spec.early_stop, lambda cfg, acc: f"{cfg.label()}|{acc.tag}")


def _check(c: Counts) -> None:
    assert c.done + c.running + c.waiting == c.total
    assert 0 <= c.confirmed <= c.confirm_total
    assert min(c.__dict__.values()) >= 0
    assert c.ok + c.stopped + c.pruned + c.failed == c.done


def test_progress_counters_add_up_through_a_whole_sweep(monkeypatch):
    import io

    spec = tiny_spec(steps=[5], methods={"deepcache": {"cache_interval": [2, 3, 4], "cache_branch_id": [0, 1, 2]}},
                     quality={"metric": "ssim", "budgets": [0.05, 0.1]})
    state = _state(spec)
    out = io.StringIO()
    prog = Progress(state, stream=out, live=False)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    prog.start = clock[0]
    running = []
    step = 0
    while not state.finished:
        while len(running) < 2 and (task := state.next_task()) is not None:
            running.append(task)
            prog.update()
            _check(prog.counts())
        state.pruned.clear()
        if not running:
            break
        task = running.pop(0)
        step += 1
        clock[0] += 7.0
        # Loss grows with aggressiveness: some points over budget (pruning), one failure.
        loss = 0.02 * (task.acc.params["cache_interval"] - 1) + 0.01 * task.acc.params["cache_branch_id"]
        outcome = Outcome(FAILED) if step == 2 else Outcome(OK, loss, 1.0 + loss * 10)
        state.complete(task, outcome)
        prog.update()
        _check(prog.counts())
    prog.update(final=True)
    c = prog.counts()
    assert c.done == c.total and c.running == 0 and c.confirm_total >= 1 and c.confirmed == c.confirm_total
    lines = out.getvalue().splitlines()
    assert len(lines) == len(set(lines)), "a line was printed twice"
    assert all("ETA -" not in ln and "≤-" not in ln for ln in lines)
    assert "running" not in lines[-1] and lines[-1].startswith(f"[sweep] {c.total}/{c.total} done")


def test_stored_confirmations_beyond_the_plan_never_read_as_more_than_planned():
    """`confirmed 4/3`: confirm rows stored for points that are no longer bound points."""
    spec = tiny_spec(**FOUR_POINTS)
    plan = expand(spec)
    key_of = lambda cfg, acc: f"{cfg.label()}|{acc.tag}"  # noqa: E731
    stored = {key_of(cp.config, acc): ({SCREEN, "confirm"}, Outcome(OK, 0.01, 1.5))
              for cp in plan.combos for acc in cp.points()}
    state = SweepState(plan.combos, spec.budgets, spec.early_stop, key_of, stored=stored)
    c = Counts.of(state)
    _check(c)
    assert c.confirmed == c.confirm_total == 1
    assert Progress(state, live=False).eta_seconds(c) == 0.0


def test_eta_is_never_negative():
    assert format_eta(-108) == "0m00s" and format_eta(None) == "?" and format_eta(125) == "2m05s"


def test_a_finished_sweep_names_the_full_lake_path_and_the_next_commands(tmp_path):
    from sweep.bookkeeping import SweepSummary

    summary = SweepSummary("abc123", 4, {"done": 4, OK: 4}, 0, 4, 1, 12.0, "cpu", {})
    text = driver.finish_text(summary, "rel/lake dir")
    full = os.path.abspath("rel/lake dir")
    assert text.splitlines()[0].startswith("run abc123: 4/4 point(s)")
    assert f"lake: {full}" in text
    assert f"diffaccel report --lake '{full}' --out out/report" in text
    assert f"diffaccel tasks --lake '{full}' --out out/tasks" in text
    assert "s3://b/l" in driver.finish_text(summary, "s3://b/l")


def test_spool_files_are_real_parquet_with_the_lake_schema(tmp_path, state_dir):
    path = Spool(str(tmp_path / "lake")).keep("trials", _ok_rows(2), "b1")
    table = pq.read_table(path)
    assert table.num_rows == 2 and "trial_key" in table.column_names and "speedup" in table.column_names
    assert path.is_relative_to(state_dir)


def test_the_live_display_renders_the_same_counts(monkeypatch):
    """On a terminal the progress is rich's live display; it shows the counters above."""
    import io

    spec = tiny_spec(**FOUR_POINTS)
    state = _state(spec)
    out = io.StringIO()
    prog = Progress(state, stream=out, live=True)
    tasks = [state.next_task() for _ in range(4)]
    prog.update()
    for task in tasks:
        state.complete(task, Outcome(OK, 0.01, 1.5))
        prog.update()
    prog.update(final=True)
    text = out.getvalue()
    assert prog._rich is None  # stopped: the terminal is left clean
    c = prog.counts()
    assert f"{c.done + c.confirmed}/{c.total + c.confirm_total}" in text
    assert "ok 4 · stopped 0 · pruned 0 · failed 0 · confirmed 0/1" in text
    assert "[sweep]" not in text  # no plain lines mixed in
