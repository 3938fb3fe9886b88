"""One sweep at a time per lake: a lease object in the lake, renewed by a heartbeat.

Two sweeps into one lake would each read the same stored keys and measure every missing
point twice. So a sweep takes ``LAKE/_lease.json`` (owner run id, host, pid, heartbeat
time) before it reads what the lake holds, and a second sweep **waits** until the lease
is released or goes stale, then resumes: it reads the keys the first one stored and
skips them. Waiting was chosen over splitting the keys between the two sweeps because
a sweep's pruning and confirmation decisions depend on every result of a grid; two
drivers sharing a grid would each decide on half the evidence.

A lease is stale when its heartbeat is older than `ttl_s` (a driver that died on another
host), or at once when its holder ran on this host and its PID is gone (a driver killed
here). Taking a lease: on a local folder an exclusive create (``O_EXCL``); on an object
store (through `pyarrow.fs`, which has no conditional PUT) a write, a pause and a
read-back that must show our own token, which settles all but simultaneous starts.

Readers ignore the file: it is outside ``trials/`` and ``baselines/``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from sweep.atomic import write_atomic

LEASE_FILE = "_lease.json"


def _read(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.readall().decode())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # A lease being written, or garbage: treat it as held but let it go stale.
        return {"owner": "?", "host": "?", "pid": -1, "heartbeat": 0.0, "token": "?"}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Lease:
    fs: pafs.FileSystem
    root: str
    owner: str
    ttl_s: float = 60.0
    heartbeat_s: float = 10.0
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return f"{self.root}/{LEASE_FILE}"

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "heartbeat": time.time(), "token": self.token}).encode()

    def _write(self) -> None:
        if isinstance(self.fs, pafs.LocalFileSystem):  # atomic, so a reader never sees half
            write_atomic(self.path, self._body())
            return
        with self.fs.open_output_stream(self.path) as out:  # one PUT: atomic on object stores
            out.write(self._body())

    def stale(self, held: dict[str, Any]) -> bool:
        if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int) \
                and held["pid"] > 0 and not _pid_alive(held["pid"]):
            return True
        return time.time() - float(held.get("heartbeat", 0.0)) > self.ttl_s

    def _try_take(self) -> dict[str, Any] | None:
        """None when taken, else the holder's record."""
        held = _read(self.fs, self.path)
        if held is not None and not self.stale(held):
            return held
        if isinstance(self.fs, pafs.LocalFileSystem):
            if held is not None:  # stale: remove it, then race for an exclusive create
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return _read(self.fs, self.path) or {"owner": "?"}
            with os.fdopen(fd, "wb") as out:
                out.write(self._body())
            return None
        self._write()
        time.sleep(1.0)  # let a concurrent writer's PUT land before the read-back
        now = _read(self.fs, self.path)
        return None if now and now.get("token") == self.token else (now or {"owner": "?"})

    def acquire(self, on_wait: Callable[[dict[str, Any]], None] | None = None,
                poll_s: float = 2.0) -> None:
        """Take the lease, waiting while another live sweep holds it; then keep it fresh."""
        told = False
        while True:
            held = self._try_take()
            if held is None:
                break
            if not told and on_wait is not None:
                on_wait(held)
                told = True
            time.sleep(poll_s)
        self._thread = threading.Thread(target=self._beat, name="diffaccel-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                held = _read(self.fs, self.path)
                if held is None or held.get("token") == self.token:
                    self._write()
            except OSError:
                pass  # the next beat tries again; a lake write failure stops the sweep anyway

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            held = _read(self.fs, self.path)
            if held is not None and held.get("token") == self.token:
                self.fs.delete_file(self.path)
        except OSError:
            pass  # left behind: it goes stale, and this host sees our PID gone
