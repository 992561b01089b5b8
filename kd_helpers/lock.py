"""A lock per run directory that works on a shared filesystem: two workers (local processes,
SLURM tasks on other nodes, two notebooks) asked for the same run never train it twice.

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on NFSv3+,
unlike ``flock``), holding who owns it. The owner refreshes its mtime every ``HEARTBEAT_S`` from a
daemon thread. A lock is stale, and is broken, when its owner is on this host and its process is
gone (a SIGKILLed worker), or when its heartbeat is older than ``KD_LOCK_STALE_S`` (default 300 s:
a node that died). Breaking renames the file first, so two breakers cannot both win.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

HEARTBEAT_S = 20.0


class Busy(RuntimeError):
    """Another live worker holds the lock."""

    def __init__(self, path: Path, owner: dict):
        self.path, self.owner = Path(path), owner
        super().__init__(f"{path} is held by {owner.get('host')}:{owner.get('pid')} since {owner.get('since')}")


def stale_after() -> float:
    return float(os.environ.get("KD_LOCK_STALE_S", 300))


def _owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (ValueError, OSError):   # being written this very moment, or garbage: judge by its age
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(path: Path, owner: dict) -> bool:
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
        return True
    try:
        return time.time() - path.stat().st_mtime > stale_after()
    except FileNotFoundError:
        return True


class RunLock:
    """``with RunLock(path, wait=True):`` holds ``path`` (a ``.lock`` file) for the block.

    ``wait=False`` raises ``Busy`` at once if a live owner holds it; ``wait=True`` polls until
    the owner releases it or goes stale."""

    def __init__(self, path, wait: bool = True, poll_s: float = 1.0):
        self.path, self.wait, self.poll_s = Path(path), wait, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        return True

    def _live_owner(self) -> dict | None:
        """Who holds the lock, or None once it is released or broken (a stale one is broken)."""
        owner = _owner(self.path)
        if owner is None:
            return None
        if is_stale(self.path, owner):
            grave = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(self.path, grave)
                grave.unlink(missing_ok=True)
            except FileNotFoundError:
                pass   # another breaker was first
            return None
        return owner

    def acquire(self) -> "RunLock":
        while not self._try():
            owner = self._live_owner()   # {} while its owner is still writing it: held all the same
            if owner is not None and not self.wait:
                raise Busy(self.path, owner)
            if owner is not None:
                time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def held(path) -> dict | None:
    """The owner of a live lock at ``path``, else None (for progress reports)."""
    path = Path(path)
    owner = _owner(path)
    return owner if owner is not None and not is_stale(path, owner) else None
