"""Issue #10 §2 and §8, for real: the embedded Ray listens on loopback only, a SIGKILLed
driver's leftovers are cleaned by the next start, and two sweeps into one lake measure
every key once (the second waits for the first's lease).

Sweeps run as `python -m diffaccel.cli sweep` subprocesses, each in a session of its own so
teardown ends exactly what the test started (by process group).
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.fs as pafs
import pytest
from sweep_helpers import ROOT, expected_keys, reap, tiny_spec, trial_rows, write_spec

from sweep.lake_schema import SCREEN
from sweep.lease import LEASE_FILE, Lease

FOUR_POINTS = {"early_stop": {"enabled": False, "prune": False}}
SIX_POINTS = {"methods": {"deepcache": {"cache_interval": [2, 3], "cache_branch_id": [0, 1, 2]}},
              "early_stop": {"enabled": False, "prune": False}}


def _env(state: Path) -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), DIFFACCEL_STATE_DIR=str(state))


def _start(spec: Path, lake: Path, state: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "diffaccel.cli", "sweep", str(spec), "--lake", str(lake), *extra],
                            cwd=ROOT, env=_env(state), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)



def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _listeners(procs: list[psutil.Process]) -> list[tuple[str, str, int]]:
    out = []
    for p in procs:
        try:
            name = p.name()
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.append((name, c.laddr.ip, c.laddr.port))
        except psutil.Error:
            continue
    return out


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _alive(entry: dict) -> bool:
    try:
        return abs(psutil.Process(entry["pid"]).create_time() - entry["started"]) < 0.01
    except psutil.Error:
        return False


def _trial_running(proc: subprocess.Popen) -> bool:
    for p in _tree(proc.pid):
        try:
            if "ImplicitFunc" in " ".join(p.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_and_a_killed_drivers_leftovers_are_cleaned(tmp_path):
    state = tmp_path / "state"
    spec = write_spec(tmp_path / "spec.yaml", **SIX_POINTS)
    lake = tmp_path / "lake"
    first = _start(spec, lake, state, "--quiet")
    record: dict = {"procs": []}
    try:
        _wait(lambda: _trial_running(first), 240, "a running trial", first)
        time.sleep(1.0)
        procs = _tree(first.pid)
        listening = _listeners(procs)
        names = {n for n, _, _ in listening}
        # The driver, the GCS, the raylet and a worker at least: the test sees them all.
        assert len(listening) >= 4 and {"gcs_server", "raylet"} <= names, listening
        exposed = [x for x in listening if not _loopback(x[1])]
        assert not exposed, f"listening beyond loopback: {exposed}"
        gcs = next(p for p in procs if p.name() == "gcs_server")
        assert gcs.environ().get("RAY_AUTH_MODE") == "token"

        records = list((state / "embedded-ray").glob("run-*.json"))
        assert len(records) == 1
        record = json.loads(records[0].read_text())
        tune_dir = Path(record["folders"][0])
        assert tune_dir.name.startswith("diffaccel-tune-") and tune_dir.is_dir()
        assert record["driver"]["pid"] == first.pid and len(record["procs"]) >= 3
        first.send_signal(signal.SIGKILL)  # the driver only: its Ray is left to fend for itself
        first.wait(timeout=30)

        second = subprocess.run([sys.executable, "-m", "diffaccel.cli", "sweep", str(spec), "--lake", str(lake)],
                                cwd=ROOT, env=_env(state), capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "cleaned up after a killed sweep" in second.stderr
        survivors = [e for e in record["procs"] if _alive(e)]
        assert not survivors, survivors
        assert not tune_dir.exists()
        assert not list((state / "embedded-ray").glob("run-*.json")), "the second run left its record"
        keys = collections.Counter(r["trial_key"] for r in trial_rows(lake) if r["phase"] == SCREEN)
        assert set(keys) == expected_keys(tiny_spec(**SIX_POINTS)) and set(keys.values()) == {1}
    finally:
        reap(first)
        for e in record["procs"]:
            if _alive(e):
                psutil.Process(e["pid"]).kill()


@pytest.mark.slow
def test_two_sweeps_into_one_lake_measure_every_key_once(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", **FOUR_POINTS)
    lake = tmp_path / "lake"
    first = _start(spec, lake, tmp_path / "state-a", "--quiet")
    second = None
    try:
        _wait(lambda: (lake / LEASE_FILE).exists(), 120, "the first sweep's lease", first)
        second = _start(spec, lake, tmp_path / "state-b")
        out_a, err_a = first.communicate(timeout=600)
        out_b, err_b = second.communicate(timeout=600)
        assert first.returncode == 0, err_a[-3000:]
        assert second.returncode == 0, err_b[-3000:]
    finally:
        reap(first)
        if second is not None:
            reap(second)
    assert "waiting: run" in err_b and "is sweeping into this lake" in err_b
    assert "4 already stored" in out_b and "0 row(s) written" in out_b
    keys = collections.Counter(r["trial_key"] for r in trial_rows(lake) if r["phase"] == SCREEN)
    assert set(keys) == expected_keys(tiny_spec(**FOUR_POINTS)) and set(keys.values()) == {1}, keys
    assert not (lake / LEASE_FILE).exists()


# ------------------------------------------------------------------ the lease alone


def _local(tmp_path: Path) -> tuple[pafs.FileSystem, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return pafs.LocalFileSystem(), str(tmp_path)


def test_a_lease_left_by_a_dead_driver_on_this_host_is_taken_at_once(tmp_path):
    fs, root = _local(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LEASE_FILE).write_text(json.dumps({"owner": "old", "host": socket.gethostname(),
                                                   "pid": dead.pid, "heartbeat": time.time(), "token": "t"}))
    lease = Lease(fs, root, owner="new")
    waited = []
    lease.acquire(on_wait=waited.append, poll_s=0.05)
    try:
        assert not waited
        assert json.loads((tmp_path / LEASE_FILE).read_text())["owner"] == "new"
    finally:
        lease.release()
    assert not (tmp_path / LEASE_FILE).exists()


def test_a_live_lease_makes_the_second_sweep_wait_until_it_goes_stale(tmp_path):
    fs, root = _local(tmp_path)
    (tmp_path / LEASE_FILE).write_text(json.dumps({"owner": "other", "host": "elsewhere", "pid": 1,
                                                   "heartbeat": time.time(), "token": "t"}))
    lease = Lease(fs, root, owner="me", ttl_s=1.5)
    waited = []
    t0 = time.monotonic()
    lease.acquire(on_wait=waited.append, poll_s=0.1)
    try:
        assert time.monotonic() - t0 >= 1.0
        assert [w["owner"] for w in waited] == ["other"]
    finally:
        lease.release()


def test_a_held_lease_is_renewed_and_only_its_holder_releases_it(tmp_path):
    fs, root = _local(tmp_path)
    holder = Lease(fs, root, owner="a", heartbeat_s=0.1)
    holder.acquire()
    try:
        first = json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat"]
        time.sleep(0.5)
        assert json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat"] > first
        other = Lease(fs, root, owner="b")
        done = threading.Event()
        threading.Thread(target=lambda: (other.acquire(poll_s=0.05), done.set()), daemon=True).start()
        time.sleep(0.5)
        assert not done.is_set(), "a second lease was granted while the first is fresh"
        other_release_before = (tmp_path / LEASE_FILE).exists()
    finally:
        holder.release()
    assert other_release_before
    assert done.wait(5), "the waiting sweep did not get the lease once it was released"
    assert json.loads((tmp_path / LEASE_FILE).read_text())["owner"] == "b"
    holder.release()  # not the holder any more: must leave b's lease alone
    assert (tmp_path / LEASE_FILE).exists()
    other.release()
    assert not (tmp_path / LEASE_FILE).exists()
