"""The single-writer lock of a store directory: a record lock on ``LOCK`` plus ``LOCK.json``.

The lock is a POSIX record lock (``fcntl`` ``F_SETLK``, write, whole file) on ``LOCK``. The
kernel releases it when its holder dies, so a dead holder never blocks the next opener; and,
unlike ``flock``, a record lock belongs to a process, not to an open file, so a process
forked from the holder (a compaction's child) never holds it, not even for the moment
between the fork and its first instruction, and a store killed while compacting opens again
at once. A record lock is also released when its process closes *any* descriptor of the
file: so this process opens ``LOCK`` only to take the lock, and a registry of the locks it
holds answers a second opener (StoreLocked) and ``lock_status`` without opening it again.

``LOCK.json`` says who holds (or held) the lock, carries a token so a holder only ever
removes its own entry, and is what ``lock_status`` reports and ``unlock`` clears.
``lock_status`` takes no lock: it asks the kernel (``/proc/locks``) whether ``LOCK`` is held,
so a monitor polling it never makes an opener fail. A ``flock`` on ``LOCK`` (what watchstore
took before format 2) also counts as held. Every failure after the lock is taken releases it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..core.errors import StorageError, StoreLocked
from .files import FILE_MODE, fsync_dir, reason, write_file_atomically

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_LOCK_INFO: Final = 4096
"""Bytes of ``LOCK.json`` read at most: it is a few dozen; anything longer is not ours."""

_held: dict[tuple[int, int], DirectoryLock] = {}
"""The locks this process holds, by the (device, inode) of their ``LOCK``."""
_registry = threading.RLock()
"""Held while a lock is taken or released: openers run in worker threads."""


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


class DirectoryLock:
    """The record lock on ``LOCK`` plus ``LOCK.json`` naming the holder (pid, host, start).

    StoreLocked if another process (or another opener in this one) holds it; StorageError
    if the lock cannot be taken or recorded (a full disk, say), with nothing left held.
    """

    def __init__(self, path: Path, *, record: bool = True) -> None:
        self.path = path
        self.token = uuid.uuid4().hex
        with _registry:
            self.fd = self._take(path)
        if not record:
            return
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": time.time(),
            "token": self.token,
        }
        try:
            write_file_atomically(path / "LOCK.json", json.dumps(info).encode())
        except BaseException as exc:
            self._unlock()
            if isinstance(exc, OSError):
                raise _storage_error("recording the lock holder of", path, exc) from exc
            raise

    def _take(self, path: Path) -> int:
        """Open ``LOCK`` and lock it; the descriptor. Called with the registry held."""
        file = path / "LOCK"
        with contextlib.suppress(OSError):
            if _identity(os.stat(file)) in _held:  # ours: opening it again would free it
                raise StoreLocked(str(path), _holder_of(path))
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
        try:
            fd = os.open(file, flags, FILE_MODE)
        except OSError as exc:
            raise _storage_error("opening the lock file of", path, exc) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                raise StorageError(
                    f"{file} is not a regular file; remove it (the store recreates it)",
                    file=str(file),
                )
            identity = _identity(info)
            if identity in _held:  # replaced meanwhile by one of ours: keep its lock
                _held[identity].spare.append(fd)
                raise StoreLocked(str(path), _holder_of(path))
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (StoreLocked, StorageError):
            raise
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise StoreLocked(str(path), _holder_of(path)) from None
            raise _storage_error("locking", path, exc) from exc
        if lock_holder(file, kinds=("FLOCK",)) is not None:  # an older watchstore's
            os.close(fd)
            raise StoreLocked(str(path), _holder_of(path))
        self.spare: list[int] = []
        _held[identity] = self
        self.identity = identity
        return fd

    @staticmethod
    def holder(path: Path) -> dict[str, Any]:
        """The holder recorded in ``LOCK.json`` (empty if missing or unreadable)."""
        return read_lock_info(path / "LOCK.json")

    def release(self) -> None:
        """Remove our ``LOCK.json`` (if still ours) and release the lock."""
        try:
            if self.holder(self.path).get("token") == self.token:
                (self.path / "LOCK.json").unlink(missing_ok=True)
        finally:
            self._unlock()

    def _unlock(self) -> None:
        with _registry:
            if _held.get(self.identity) is self:
                del _held[self.identity]
            for fd in [self.fd, *self.spare]:
                with contextlib.suppress(OSError):
                    os.close(fd)  # closing releases the record lock


def _storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"{action} store {str(path)!r} failed: {reason(exc)}; fix that (free space, "
        "permissions) and open it again",
        errno=exc.errno,
        file=str(path / "LOCK"),
    )


def read_lock_info(file: Path) -> dict[str, Any]:
    """What a ``LOCK.json`` says, checked: ``pid`` (int), ``host`` (str), ``started_at`` (a
    finite number) and ``token`` (str), each only if valid; empty if the file is missing,
    not a regular file, too long or not such an object."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        data = os.read(fd, MAX_LOCK_INFO + 1)
    except OSError:
        return {}
    finally:
        os.close(fd)
    if len(data) > MAX_LOCK_INFO:
        return {}
    try:
        info = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(info, dict):
        return {}
    return {key: info[key] for key, valid in _LOCK_INFO.items() if key in info and valid(info[key])}


_LOCK_INFO: Final[dict[str, Callable[[Any], bool]]] = {
    "pid": lambda v: type(v) is int and v > 0,
    "host": lambda v: isinstance(v, str),
    "started_at": lambda v: type(v) in (int, float) and 0 <= v < 1e11,  # until year 5138
    "token": lambda v: isinstance(v, str),
}
"""The fields of ``LOCK.json`` and what makes each valid."""


@attrs.frozen
class LockStatus:
    """Who holds a store directory's lock.

    ``held``: a process holds the flock now. ``holder``: what ``LOCK.json`` says (pid, host,
    started_at), or, while held without one, the holding pid the kernel reports. ``stale``:
    ``LOCK.json`` names a holder that no longer holds the lock (it died or was killed: the
    system released its flock).
    """

    held: bool
    holder: dict[str, Any]
    stale: bool


def lock_status(directory: str | os.PathLike[str]) -> LockStatus:
    """Inspect a store directory's lock without taking it: the kernel's table of locks
    (``/proc/locks``) says whether ``LOCK`` is held; needs only read access."""
    path = Path(directory)
    holder = DirectoryLock.holder(path)
    pid = lock_holder(path / "LOCK")
    if pid is None:
        return LockStatus(False, holder, bool(holder))
    if "pid" not in holder and pid > 0:
        holder = {"pid": pid}
    return LockStatus(True, holder, False)


def _holder_of(path: Path) -> dict[str, Any]:
    """The holder to name in StoreLocked: ``LOCK.json``'s, else the kernel's pid."""
    holder = DirectoryLock.holder(path)
    if "pid" not in holder:
        pid = lock_holder(path / "LOCK")
        if pid is not None and pid > 0:
            return {"pid": pid}
    return holder


def lock_holder(file: Path, kinds: tuple[str, ...] = ("POSIX", "FLOCK")) -> int | None:
    """The pid holding a lock of ``kinds`` on ``file`` (0 if the kernel does not say), None
    if it is not locked. Reads ``/proc/locks``; where that is missing (not Linux), takes and
    releases the lock to find out, the only other way (and needs write access)."""
    try:
        info = os.stat(file)
    except OSError:
        return None
    with _registry:
        if _identity(info) in _held:
            return os.getpid()
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.readlines()
    except OSError:
        return _probe(file)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    same_inode = None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] not in kinds:  # a waiter's line has "->" there
            continue
        pid = int(fields[4]) if fields[4].lstrip("-").isdigit() else 0
        if fields[5] == device:
            return max(pid, 0)
        if fields[5].rsplit(":", 1)[-1] == str(info.st_ino):
            same_inode = max(pid, 0)  # a file system whose stat device differs (btrfs)
    return same_inode


def _probe(file: Path) -> int | None:
    try:
        fd = os.open(file, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0
    finally:
        os.close(fd)
    return None


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
    elif not (path / "LOCK").exists():
        (path / "LOCK.json").unlink(missing_ok=True)
    else:
        # Held while clearing, so that an opener starting meanwhile keeps its LOCK.json.
        with contextlib.suppress(StoreLocked):
            lock = DirectoryLock(path, record=False)
            try:
                (path / "LOCK.json").unlink(missing_ok=True)
            finally:
                lock._unlock()
    fsync_dir(path)
    return status
