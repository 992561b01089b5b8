"""A lock per run directory that works on a shared filesystem: two workers (local processes,
SLURM tasks on other nodes, two notebooks) asked for the same run never train it twice.

The lock is written completely to a temp file, then hard-linked to its name (``link`` fails if the
name exists: atomic on local filesystems and on NFS, unlike ``flock``), so it is whole or absent
even on a full disk. It holds who owns it: host, PID, the process's start time and a token. The
owner refreshes its mtime every ``HEARTBEAT_S`` from a daemon thread. A lock is stale, and is
broken, when
- its owner is on this host and that process is gone (a SIGKILLed worker; a PID reused by another
  process is told apart by its start time). A live owner keeps its lock however long it is paused;
- its owner is on another host and its heartbeat is older than ``KD_LOCK_STALE_S`` (default 300 s:
  a node that died). A heartbeat in the future (that host's clock runs ahead) is skew: such a lock
  goes stale ``KD_LOCK_STALE_S`` after this process first saw that heartbeat.
Breaking renames the file first, so two breakers cannot both win. An owner whose lock was broken
or replaced notices (``RunLock.check``) and stops instead of writing over the new owner's work.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from .util import DiskFull, pid_alive

HEARTBEAT_S = 20.0


class LockLost(RuntimeError):
    """This process's lock was broken (judged stale) or replaced: another owner may be writing."""

    def __init__(self, path: Path, owner: dict):
        self.path = Path(path)
        super().__init__(f"The lock {path} is no longer this process's (now {owner.get('host', 'nobody')}:"
                         f"{owner.get('pid', '-')}): it was judged stale and another worker may have taken the run "
                         f"over, so this one stops without writing. Raise KD_LOCK_STALE_S if workers pause longer.")


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


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc), or None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


_FIRST_SEEN: dict[tuple[str, float], float] = {}   # (lock, future heartbeat) -> when this process saw it


def stale_in(path: Path, owner: dict) -> float | None:
    """Seconds until the lock at ``path`` goes stale (<= 0: stale now); None while its same-host
    owner lives (it never goes stale by age)."""
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        pid = owner["pid"]
        alive = pid_alive(pid) and (owner.get("started") is None or _started(pid) in (None, owner["started"]))
        return None if alive else 0.0
    try:
        beat = path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
    now = time.time()
    if beat > now + 1:   # another host's clock runs ahead: count from when the heartbeat was first seen here
        seen = _FIRST_SEEN.setdefault((str(path), beat), time.monotonic())
        return stale_after() - (time.monotonic() - seen)
    return stale_after() - (now - beat)


def is_stale(path: Path, owner: dict) -> bool:
    left = stale_in(path, owner)
    return left is not None and left <= 0


class RunLock:
    """``with RunLock(path, wait=True):`` holds ``path`` (a ``.lock`` file) for the block.

    ``wait=False`` raises ``Busy`` at once if a live owner holds it; ``wait=True`` polls until
    the owner releases it or goes stale."""

    def __init__(self, path, wait: bool = True, poll_s: float = 1.0):
        self.path, self.wait, self.poll_s = Path(path), wait, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.token = uuid.uuid4().hex

    def _try(self) -> bool:
        """Write the whole lock to a temp file, then link it to the lock's name (fails if taken)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{self.token}")
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid()),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": self.token}
        try:
            with open(tmp, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DiskFull(errno.ENOSPC, f"No space left on device for the lock {self.path}: free space on "
                                             f"that file system (or point KD_RESULTS_DIR elsewhere) and rerun; "
                                             f"nothing was left behind") from None
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def check(self) -> None:
        """Raise ``LockLost`` if this lock was broken or taken over (this owner must stop writing)."""
        owner = _owner(self.path)
        if not owner or owner.get("token") != self.token:
            raise LockLost(self.path, owner or {})

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
        told = False
        while not self._try():
            owner = self._live_owner()   # {} for a lock written before locks were whole: judged by age
            if owner is not None and not self.wait:
                raise Busy(self.path, owner)
            if owner is not None:
                if not told:   # a wait that says nothing looks like a hang
                    left = stale_in(self.path, owner)
                    print(f"waiting for {self.path}: held by {owner.get('host', '?')}:{owner.get('pid', '?')} since "
                          f"{owner.get('since', '?')}; " + ("it is released when that process ends" if left is None
                          else f"it turns stale in {max(left, 0):.0f} s unless its owner's heartbeat goes on"),
                          file=sys.stderr, flush=True)
                    told = True
                time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            if (_owner(self.path) or {}).get("token") != self.token:
                return   # broken or taken over: never keep another owner's lock alive
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        owner = _owner(self.path)
        if owner is not None and owner.get("token") in (self.token, None):
            self.path.unlink(missing_ok=True)   # never another owner's lock (this one was broken)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def held(path) -> dict | None:
    """The owner of a live lock at ``path``, else None (for progress reports)."""
    path = Path(path)
    owner = _owner(path)
    return owner if owner is not None and not is_stale(path, owner) else None
