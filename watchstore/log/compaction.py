"""Writing a compaction's snapshot file: in a forked child process, or chunk by chunk.

Both start from a pinned (O(1)) snapshot and hand the log a prepared epoch for the group
committer to switch to. The default forks (as Redis's BGSAVE does): the child has the pinned
snapshot in its copy-on-write image and encodes and writes on another core, so compaction
takes no CPU from the store's process. Where fork is missing, the snapshot is read and
encoded in small chunks with a checkpoint after each, so commits interleave.

The child never holds the store's lock (a record lock is not inherited by a fork), closes
every file descriptor it inherited but its report pipe (sockets and all), and on Linux is
killed when its parent dies (``PR_SET_PDEATHSIG``), so a killed store leaves no orphan
writing behind it. It reports its outcome on the pipe: the cause of a failure, in words.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel

from ..core.errors import CompactionFailed
from .bodies import Format2
from .files import reason, write_all

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..core.schema import Schema
    from ..core.state import Snapshot
    from .epochlog import EpochLog, PreparedEpoch
    from .records import SegmentHeader

COMPACT_CHUNK: Final = 200
"""Objects read and encoded between two checkpoints (the in-process path)."""
PR_SET_PDEATHSIG: Final = 1
DONE: Final = b"done"
"""What a compaction child reports when its file is written and fsynced."""


Tables = list[tuple[str, int, list[bytes]]]
"""Each table's name, object count and encoded pieces (``Format2.snapshot``)."""


def _snapshot_pieces(snapshot: Snapshot, schema: Schema, tables: Tables) -> Iterator[None]:
    """Encode the snapshot's objects into ``tables`` (format 2), yielding after every chunk
    of ``COMPACT_CHUNK`` objects."""
    bodies = Format2(schema)
    for table in schema.tables:
        ids = snapshot.ids(table.cls)
        pieces: list[bytes] = []
        tables.append((table.name, len(ids), pieces))
        for start in range(0, len(ids), COMPACT_CHUNK):
            chunk = ids[start : start + COMPACT_CHUNK]
            pieces.append(bodies.piece(table.name, [snapshot.get(table.cls, id) for id in chunk]))
            yield


def _failed(exc: BaseException) -> CompactionFailed:
    return CompactionFailed(
        f"writing the new epoch failed: {reason(exc)}; the store goes on with its current "
        "epoch (nothing is lost) and compacts again later"
    )


async def write_epoch_inline(snapshot: Snapshot, log: EpochLog, schema: Schema) -> PreparedEpoch:
    """Encode the snapshot in this process, a chunk at a time with a checkpoint after each
    (commits interleave), then write the file in a worker thread."""
    tables: Tables = []
    for _chunk in _snapshot_pieces(snapshot, schema, tables):
        await anyio.lowlevel.checkpoint()
    try:
        return await anyio.to_thread.run_sync(log.write_epoch, snapshot.version, tables)
    except OSError as exc:
        raise _failed(exc) from exc


_prctl: Any = None


def _resolve_prctl() -> Any:
    """libc's prctl, looked up before forking (the child must not load libraries)."""
    global _prctl
    if _prctl is None and sys.platform == "linux":
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    return _prctl


async def write_epoch_in_child(snapshot: Snapshot, log: EpochLog, schema: Schema) -> PreparedEpoch:
    """Encode and write the snapshot in a forked child process (as Redis's BGSAVE does).

    The child starts with a copy-on-write image of this process, so the pinned snapshot is
    there at no cost; it encodes and writes on another core and exits, while this process
    goes on committing. It runs plain synchronous code and leaves with ``os._exit``.
    CompactionFailed names the child's cause; if this task is cancelled, the child is
    killed and its file removed.
    """
    header = log.next_header()
    tmp, _final = log.epoch_paths(header)
    prctl = _resolve_prctl()
    parent = os.getpid()
    report_fd, child_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no event loop, no cleanup handlers, just the file
        _child(child_fd, parent, prctl, snapshot, schema, log, header)
    os.close(child_fd)
    report = b""
    try:
        while chunk := await _read_some(report_fd):
            report += chunk
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(report_fd)
        with anyio.CancelScope(shield=True):  # it has closed its pipe: it is exiting
            _pid, status = await anyio.to_thread.run_sync(os.waitpid, pid, 0)
        if report != DONE or status != 0:
            tmp.unlink(missing_ok=True)
    if report != DONE or status != 0:
        if report:
            cause = report.decode(errors="replace")
        elif os.WIFSIGNALED(status):
            cause = f"the compaction process was killed by signal {os.WTERMSIG(status)}"
        else:
            cause = f"the compaction process exited with status {os.waitstatus_to_exitcode(status)}"
        raise CompactionFailed(
            f"writing the new epoch failed: {cause}; the store goes on with its current "
            "epoch (nothing is lost) and compacts again later"
        )
    return log.prepared(snapshot.version, header, tmp.stat().st_size)


async def _read_some(fd: int) -> bytes:
    await anyio.wait_readable(fd)
    return os.read(fd, 4096)


def _child(
    report: int,
    parent: int,
    prctl: Any,
    snapshot: Snapshot,
    schema: Schema,
    log: EpochLog,
    header: SegmentHeader,
) -> None:
    """The compaction child: write the epoch file, report, exit. Never returns."""
    status, message = 1, b"the compaction process failed"
    try:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
        os.closerange(3, report)  # the lock's file among them: never hold the lock
        os.closerange(report + 1, os.sysconf("SC_OPEN_MAX"))
        gc.disable()  # a collection would touch (and so copy) every page
        tables: Tables = []
        for _chunk in _snapshot_pieces(snapshot, schema, tables):
            pass
        log.write_epoch_file(header, Format2(schema).snapshot(snapshot.version, tables))
        status, message = 0, DONE
    except BaseException as exc:
        message = reason(exc).encode(errors="replace")
    finally:
        with contextlib.suppress(OSError):
            write_all(report, message)
        os._exit(status)
