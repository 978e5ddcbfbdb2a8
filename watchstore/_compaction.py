"""Writing a compaction's snapshot file: in a forked child process, or chunk by chunk.

Both start from a pinned (O(1)) snapshot and hand the log a prepared epoch for the group
committer to switch to. The default forks (as Redis's BGSAVE does): the child has the pinned
snapshot in its copy-on-write image and encodes and writes on another core, so compaction
takes no CPU from the store's process. Where fork is missing, the snapshot is read and
encoded in small chunks with a checkpoint after each, so commits interleave.
"""

from __future__ import annotations

import gc
import os
from typing import TYPE_CHECKING, Final

import trio

from ._errors import StoreError
from ._log import EpochLog, PreparedEpoch, encode_piece, snapshot_body_of_pieces

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._schema import Schema
    from ._state import Snapshot

COMPACT_CHUNK: Final = 200
"""Objects read and encoded between two checkpoints (the in-process path)."""


def _snapshot_pieces(snapshot: Snapshot, schema: Schema) -> Iterator[tuple[str, bytes]]:
    """(table name, encoded piece) for every chunk of the snapshot's objects."""
    for table in schema.tables:
        ids = snapshot.ids(table.cls)
        for start in range(0, len(ids), COMPACT_CHUNK):
            chunk = ids[start : start + COMPACT_CHUNK]
            yield table.name, encode_piece([snapshot.get(table.cls, id) for id in chunk])


async def write_epoch_inline(snapshot: Snapshot, schema: Schema, log: EpochLog) -> PreparedEpoch:
    """Encode the snapshot in this process, a chunk at a time with a checkpoint after each
    (commits interleave), then write the file in a worker thread."""
    tables: dict[str, list[bytes]] = {t.name: [] for t in schema.tables}
    for name, piece in _snapshot_pieces(snapshot, schema):
        tables[name].append(piece)
        await trio.lowlevel.checkpoint()
    return await trio.to_thread.run_sync(log.write_epoch, snapshot.version, tables)


async def write_epoch_in_child(snapshot: Snapshot, schema: Schema, log: EpochLog) -> PreparedEpoch:
    """Encode and write the snapshot in a forked child process (as Redis's BGSAVE does).

    The child starts with a copy-on-write image of this process, so the pinned snapshot is
    there at no cost; it encodes and writes on another core and exits, while this process
    goes on committing. It runs plain synchronous code and leaves with ``os._exit``.
    """
    header = log.next_header()
    pid = os.fork()
    if pid == 0:  # the child: no trio, no cleanup handlers, just the file
        status = 1
        try:
            gc.disable()  # a collection would touch (and so copy) every page
            tables: dict[str, list[bytes]] = {t.name: [] for t in schema.tables}
            for name, piece in _snapshot_pieces(snapshot, schema):
                tables[name].append(piece)
            log.write_epoch_file(header, snapshot_body_of_pieces(snapshot.version, tables))
            status = 0
        finally:
            os._exit(status)
    _pid, status = await trio.to_thread.run_sync(os.waitpid, pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        tmp, _final = log.epoch_paths(header)
        tmp.unlink(missing_ok=True)
        raise StoreError(
            f"the compaction process failed (wait status {status}); the store "
            "goes on with its current epoch"
        )
    tmp, _final = log.epoch_paths(header)
    return log.prepared(snapshot.version, header, tmp.stat().st_size)
