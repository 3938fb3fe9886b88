"""Faults, for real: a trial's worker killed mid-trial, the driver interrupted mid-sweep.

Each sweep runs as `python -m diffaccel.cli sweep` in a subprocess with its own local Ray, so
the test can kill processes the way an operator or the OOM killer would. Processes are
ended by PID, the driver's own descendants only.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sweep_helpers import ROOT, expected_keys, reap, tiny_spec, trial_rows, write_spec

from sweep.lake_schema import FAILED, OK, SCREEN

SIX_POINTS = {"methods": {"deepcache": {"cache_interval": [2, 3], "cache_branch_id": [0, 1, 2]}},
              "early_stop": {"enabled": False, "prune": False}}
FOUR_POINTS = {"early_stop": {"enabled": False, "prune": False}}


def _start(spec: Path, lake: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    # A session of its own: the driver and the Ray processes it starts share its process
    # group, so teardown can end exactly them.
    return subprocess.Popen([sys.executable, "-m", "diffaccel.cli", "sweep", str(spec), "--lake", str(lake), "--quiet"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _trial_actor(proc: subprocess.Popen) -> psutil.Process | None:
    for p in _descendants(proc):
        try:
            if "ImplicitFunc" in " ".join(p.cmdline()):
                return p
        except psutil.Error:
            continue
    return None


def _wait(proc: subprocess.Popen, cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")



def _screen_keys(lake: Path) -> collections.Counter:
    return collections.Counter(r["trial_key"] for r in trial_rows(lake) if r["phase"] == SCREEN)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_retried_and_the_sweep_completes(tmp_path):
    spec_path = write_spec(tmp_path / "spec.yaml", **FOUR_POINTS)
    lake = tmp_path / "lake"
    proc = _start(spec_path, lake)
    try:
        actor = _wait(proc, lambda: _trial_actor(proc), 180, "a trial actor")
        time.sleep(1.0)  # inside its first trial (loading the pipeline or measuring)
        assert not trial_rows(lake), "the first trial finished before it could be killed"
        actor.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=420)
        assert proc.returncode == 0, err[-3000:]
    finally:
        reap(proc)
    rows = trial_rows(lake)
    keys = _screen_keys(lake)
    assert set(keys) == expected_keys(tiny_spec(**FOUR_POINTS)) and set(keys.values()) == {1}
    assert all(r["status"] == OK for r in rows), [(r["tag"], r["status"], r["error"]) for r in rows]


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_with_every_key_once(tmp_path):
    spec_path = write_spec(tmp_path / "spec.yaml", **SIX_POINTS)
    lake = tmp_path / "lake"
    proc = _start(spec_path, lake)
    try:
        _wait(proc, lambda: len(trial_rows(lake)) >= 2, 300, "two rows in the lake")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=120)
    finally:
        reap(proc)
    landed = _screen_keys(lake)
    expected = expected_keys(tiny_spec(**SIX_POINTS))
    assert 2 <= sum(landed.values()) < len(expected), "the sweep was not interrupted mid-way"

    done = subprocess.run([sys.executable, "-m", "diffaccel.cli", "sweep", str(spec_path), "--lake", str(lake)],
                          cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{sum(landed.values())} already stored" in done.stdout
    keys = _screen_keys(lake)
    assert set(keys) == expected and set(keys.values()) == {1}, keys
    assert not [r for r in trial_rows(lake) if r["status"] == FAILED]
