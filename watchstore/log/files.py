"""Durable file operations for the epoch log: whole writes, exclusive creation, synced names.

What every storage path relies on (see ``docs/format.md``, "Faults"):

- ``write(2)`` may write fewer bytes than asked without an error (a full disk shows its
  ENOSPC only on the next call; Linux caps one call at about 2 GiB): ``pwrite_all`` and
  ``write_all`` go on until everything is written or an errno comes back, in bounded pieces.
- A new name (a created file, a rename, an unlink, a new directory) is durable only once its
  directory is fsynced, and a new directory only once its parent is.
- Files are created exclusively, without following a symlink planted at their name, mode
  0600 (directories 0700) whatever the umask: they hold a cluster's whole state.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

PIECE: Final = 64 << 20
"""Most bytes handed to one write call: a snapshot of many GiB is written in pieces."""

FILE_MODE: Final = 0o600
DIRECTORY_MODE: Final = 0o700
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``: short writes are continued; OSError if a call
    fails (its errno, e.g. ENOSPC, is the cause)."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        written = os.pwrite(fd, view[done : done + PIECE], offset + done)
        if written <= 0:  # not for a regular file, but never loop on it
            raise OSError(errno.EIO, f"write made no progress at offset {offset + done}")
        done += written


def pwrite_some(fd: int, data: bytes, offset: int, needed: int) -> int:
    """Write ``data`` at ``offset`` until at least its first ``needed`` bytes are written;
    return how many were. The rest is optional: a failure after ``needed`` bytes (a full
    disk, say) ends the writing without an error."""
    done = 0
    view = memoryview(data)
    while done < len(view):
        try:
            written = os.pwrite(fd, view[done : done + PIECE], offset + done)
        except OSError:
            if done >= needed:
                return done
            raise
        if written <= 0:
            if done >= needed:
                return done
            raise OSError(errno.EIO, f"write made no progress at offset {offset + done}")
        done += written
    return done


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` at the file's position (see ``pwrite_all``)."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        written = os.write(fd, view[done : done + PIECE])
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        done += written


def create_exclusive(path: Path) -> int:
    """Create ``path`` for writing, mode 0600: never an existing file, never through a
    symlink (FileExistsError, or OSError ELOOP)."""
    fd = os.open(path, _CREATE, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask cannot have widened it, but it may have cut it
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_replacing(path: Path) -> int:
    """Create ``path`` as ``create_exclusive`` does, after removing whatever has that name
    (a leftover of a crash; ``unlink`` removes a planted symlink, not its target)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return create_exclusive(path)


def write_file_atomically(target: Path, data: bytes | Iterable[bytes]) -> None:
    """Replace ``target`` with a file holding ``data`` (bytes, or chunks of them): a
    temporary file (created exclusively), written, fsynced, renamed over ``target``, and
    the directory fsynced."""
    tmp = target.with_name(f".{target.name}.tmp")
    fd = create_replacing(tmp)
    try:
        for chunk in [data] if isinstance(data, bytes) else data:
            write_all(fd, chunk)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a name created, renamed or removed in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directory(path: Path) -> None:
    """Create ``path`` (and missing parents) mode 0700, each new level made durable by an
    fsync of its parent. An existing directory is left as it is."""
    missing = []
    at = path.absolute()
    while not at.exists():
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIRECTORY_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        os.chmod(directory, DIRECTORY_MODE)
        fsync_dir(directory)
        fsync_dir(directory.parent)


def reason(exc: BaseException) -> str:
    """What went wrong in words: an OSError's text without its file name
    ("No space left on device"), else the exception's own message."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.strerror or os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
