"""The single-writer lock of a store directory: flock on ``LOCK`` plus ``LOCK.json``.

flock is released by the kernel when its holder dies, so a dead holder never blocks the next
opener; ``LOCK.json`` says who holds (or held) the lock, carries a token so a holder only
ever removes its own entry, and is what ``lock_status`` inspects and ``unlock`` clears.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

from ._errors import StoreLocked


class DirectoryLock:
    """flock on ``LOCK`` plus ``LOCK.json`` naming the holder (pid, host, start time).

    flock is released by the kernel when the holder dies, so a dead holder never blocks; its
    ``LOCK.json`` is simply replaced.
    """

    def __init__(self, path: Path, *, record: bool = True) -> None:
        self.path = path
        self._fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreLocked(str(path), self.holder(path)) from None
            raise
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": time.time(),
            "token": uuid.uuid4().hex,
        }
        self.token = info["token"]
        if record:
            write_atomically(path / "LOCK.json", json.dumps(info).encode())

    @staticmethod
    def holder(path: Path) -> dict[str, Any]:
        """The holder recorded in ``LOCK.json`` (empty if unreadable)."""
        try:
            info = json.loads((path / "LOCK.json").read_text())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def release(self) -> None:
        """Remove our ``LOCK.json`` (if still ours) and release the flock."""
        if self.holder(self.path).get("token") == self.token:
            (self.path / "LOCK.json").unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


@attrs.frozen
class LockStatus:
    """Who holds a store directory's lock.

    ``held``: a process holds the flock now. ``holder``: what ``LOCK.json`` says (pid, host,
    started_at). ``stale``: ``LOCK.json`` names a holder that no longer holds the lock (it
    died or was killed: the system released its flock).
    """

    held: bool
    holder: dict[str, Any]
    stale: bool


def lock_status(directory: str | os.PathLike[str]) -> LockStatus:
    """Inspect a store directory's lock without taking it for long."""
    path = Path(directory)
    holder = DirectoryLock.holder(path)
    try:
        lock = DirectoryLock(path, record=False)
    except StoreLocked:
        return LockStatus(True, holder, False)
    lock.release()
    return LockStatus(False, holder, bool(holder))


def unlock(directory: str | os.PathLike[str], *, force: bool = False) -> LockStatus:
    """Clear a store directory's lock; returns what it was.

    A stale lock (its holder died) is cleared by removing ``LOCK.json``. A lock held by a
    live process is refused with StoreLocked unless ``force``: then ``LOCK`` and
    ``LOCK.json`` are removed, so the next opener gets a new lock while the old holder may
    still write. Use it only for a holder you know is stuck for good (e.g. on another host
    that is gone), never for one that may resume.
    """
    path = Path(directory)
    status = lock_status(path)
    if status.held and not force:
        raise StoreLocked(str(path), status.holder)
    if status.held:
        (path / "LOCK").unlink(missing_ok=True)
    (path / "LOCK.json").unlink(missing_ok=True)
    fsync_dir(path)
    return status


def write_atomically(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data``: temporary file, fsync, rename, fsync directory."""
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fsync_dir(target.parent)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
