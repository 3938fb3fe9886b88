"""The Ray a sweep starts for itself (no ``--address``): on loopback, and cleaned up
after a driver that was killed.

Exposure. A plain ``ray.init()`` binds its GCS, raylet, object manager and workers on
every interface and its runtime-env agent on the machine's address. Ray 2.60 replaces a
``_node_ip_address`` of 127.0.0.1 with the routable address (`services.
resolve_ip_for_localhost`) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the switch
it uses on laptops to stay on loopback; with it every server binds 127.0.0.1. That
setting is read when Ray is imported, so `loopback_env` must run before ``import ray``
(the CLI does; a process that imported Ray earlier gets it patched in place). Ray's token
authentication (``RAY_AUTH_MODE=token``) stays on as well, so another local user cannot
drive the cluster either.

Orphans. A driver killed with SIGKILL runs no cleanup: agents can outlive it and its
Tune folder stays. Each embedded start records the driver's PID, the PIDs of the Ray
processes it started and its temporary folders in a small JSON file in the local state
folder; the next embedded start ends the recorded processes of every run whose driver
is gone (checking each PID's start time, so a reused PID is never hit) and removes the
folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from sweep.atomic import write_atomic
from sweep.spool import state_dir

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def loopback_env():
    """Environment for an embedded Ray that listens on loopback only (see module doc);
    restored on exit, so that a later Ray in the same process is as it would have been."""
    import sys

    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    constants = sys.modules.get("ray._private.ray_constants")
    before = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None:  # Ray was imported before: its switch is already read
        constants.ENABLE_RAY_CLUSTER = False
    _reload_ray_config()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = (not constants.IS_WINDOWS_OR_OSX) if before is None else before
        _reload_ray_config()


def _reload_ray_config() -> None:
    """Make an already imported Ray see the environment's auth mode (it caches its config;
    Ray's own `_enable_token_auth` does the same)."""
    import sys

    raylet = sys.modules.get("ray._raylet")
    if raylet is not None:
        raylet.Config.initialize("")


def runs_dir() -> Path:
    return state_dir() / "embedded-ray"


def _proc_id(pid: int) -> dict[str, Any] | None:
    import psutil

    try:
        p = psutil.Process(pid)
        return {"pid": pid, "started": p.create_time()}
    except psutil.Error:
        return None


def _alive(entry: dict[str, Any]) -> bool:
    import psutil

    try:
        p = psutil.Process(entry["pid"])
        return abs(p.create_time() - entry["started"]) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_ray(proc) -> bool:
    """Ray's own processes only (gcs_server, raylet, agents, workers), never another
    child of the driver."""
    import psutil

    try:
        return "ray" in " ".join(proc.cmdline()).lower()
    except psutil.Error:
        return False


class EmbeddedRun:
    """The record of one embedded Ray run (see module doc)."""

    def __init__(self, folders: list[str]):
        self.path = runs_dir() / f"run-{os.getpid()}-{int(time.time() * 1000)}.json"
        self.driver = _proc_id(os.getpid())
        self.folders = list(folders)
        self.procs: dict[int, dict[str, Any]] = {}
        import threading

        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.save()

    def record_children(self) -> None:
        """Add this process's descendants (the Ray processes it started) to the record."""
        import psutil

        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        changed = False
        for child in children:
            if child.pid not in self.procs and _is_ray(child):
                entry = _proc_id(child.pid)
                if entry:
                    self.procs[child.pid] = entry
                    changed = True
        if changed:
            self.save()

    def watch(self, every_s: float = 2.0) -> None:
        """Keep recording new Ray processes in the background until `close`."""
        import threading

        def loop() -> None:
            while not self._stop.wait(every_s):
                self.record_children()

        threading.Thread(target=loop, name="diffaccel-ray-record", daemon=True).start()

    def save(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return  # closed: the record is gone for good
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"driver": self.driver, "procs": list(self.procs.values()),
                                                "folders": self.folders}))

    def close(self) -> None:
        """A clean end, after Ray was shut down: remove the folders and the record."""
        self._stop.set()
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            self.path.unlink(missing_ok=True)


def clean_orphans(grace_s: float = 5.0) -> list[str]:
    """End the processes and remove the folders of embedded runs whose driver is dead;
    what was cleaned, for a line on the screen."""
    import psutil

    cleaned: list[str] = []
    folder = runs_dir()
    if not folder.is_dir():
        return cleaned
    for path in sorted(folder.glob("run-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if record.get("driver") and _alive(record["driver"]):
            continue  # a sweep still running
        victims = []
        for entry in record.get("procs", []):
            if _alive(entry):
                try:
                    p = psutil.Process(entry["pid"])
                    p.send_signal(signal.SIGTERM)
                    victims.append(p)
                except psutil.Error:
                    continue
        _, still = psutil.wait_procs(victims, timeout=grace_s)
        for p in still:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(still, timeout=grace_s)
        for tmp in record.get("folders", []):
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
                cleaned.append(tmp)
        if victims:
            cleaned.append(f"{len(victims)} Ray process(es) of driver {record['driver']['pid']}")
        path.unlink(missing_ok=True)
    return cleaned
