"""A real two-node Ray cluster on one machine, and fake-GPU placement.

The nodes are `ray start --block` processes, each in a session of its own, so teardown
ends exactly the processes this test started (their process groups) instead of
`ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import ROOT, expected_keys, tiny_spec, trial_rows, write_spec

from sweep.lake_schema import OK, SCREEN

ray = pytest.importorskip("ray")
RAY = str(Path(sys.executable).with_name("ray"))
ALL_READY = {"early_stop": {"enabled": False, "prune": False}}  # four trials ready at once


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def two_nodes(tmp_path):
    port = _free_port()
    # `ray start` turns on token authentication by default; the drivers of this test
    # would need the token, so this throwaway local cluster runs without it.
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled")
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    head = subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                             "--resources", json.dumps({"node_head": 1}), *common],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [head]
    try:
        address = f"127.0.0.1:{port}"
        _wait_for_nodes(address, 1, head)
        worker = subprocess.Popen([RAY, "start", "--address", address,
                                   "--resources", json.dumps({"node_worker": 1}), *common],
                                  env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        procs.append(worker)
        _wait_for_nodes(address, 2, worker)
        yield address, env
    finally:
        for p in reversed(procs):
            _stop(p)


def _wait_for_nodes(address: str, n: int, proc: subprocess.Popen) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(1 for x in ray.nodes() if x['Alive']))")
    end = time.monotonic() + 120
    while time.monotonic() < end:
        assert proc.poll() is None, "ray start exited"
        out = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, RAY_AUTH_MODE="disabled"))
        if out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout.strip()) >= n:
            return
        time.sleep(1)
    pytest.fail(f"{n} Ray node(s) did not come up at {address}")


@pytest.mark.slow
def test_sweep_runs_across_two_nodes(two_nodes, tmp_path):
    address, env = two_nodes
    spec_path = write_spec(tmp_path / "spec.yaml", **ALL_READY)
    lake, summary_path = tmp_path / "lake", tmp_path / "summary.json"
    done = subprocess.run([sys.executable, "-m", "diffaccel.cli", "sweep", str(spec_path), "--lake", str(lake),
                           "--address", address, "--summary", str(summary_path), "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = trial_rows(lake)
    screen = [r for r in rows if r["phase"] == SCREEN]
    assert sorted(r["trial_key"] for r in screen) == sorted(expected_keys(tiny_spec(**ALL_READY)))
    assert all(r["status"] == OK for r in rows)
    summary = json.loads(summary_path.read_text())
    ran_on = {summary["cluster_nodes"][node].get("node_head") and "head" or "worker"
              for node in summary["nodes"].values()}
    assert ran_on == {"head", "worker"}, summary["nodes"]


@pytest.mark.slow
def test_fake_gpus_get_one_trial_each(tmp_path):
    from sweep.driver import run_sweep

    assert not ray.is_initialized()
    summary = run_sweep(tiny_spec(**ALL_READY), str(tmp_path / "lake"), num_cpus=2, num_gpus=2, progress=False)
    assert summary.resources == {"GPU": 1, "CPU": 1}
    gpu_ids = [t["gpu_ids"] for t in summary.trial_seconds if t.get("gpu_ids") is not None]
    assert len(gpu_ids) == len(summary.trial_seconds) >= 4
    assert all(len(ids) == 1 for ids in gpu_ids)
    assert {ids[0] for ids in gpu_ids} == {"0", "1"}
    assert not ray.is_initialized()  # the sweep shut down the Ray it started
