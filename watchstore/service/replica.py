"""In-process read replicas (``store.fork()``) that follow a store through its changes.

A replica is a read-only :class:`Store` with tables of its own. It starts from an O(1)
snapshot pinned in the same synchronous step as subscribing to the source's changes, so it
neither misses nor doubles a commit; it loads the snapshot in chunks, yielding to other tasks,
then applies each change through the replication path, which publishes it to the replica's
own watchers. If it falls behind (its queue overflows) it re-pins, and applies the difference
between its state and the new snapshot as one change. Objects are shared, never copied: they
are frozen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeVar

import trio

from ..core.errors import HistoryCompacted, StoreClosed, StoreError, WatchOverflow
from ..core.model import ORIGIN, Change, StoreAction, Version
from ..core.state import difference
from .store import Store
from .watch import Watch

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ..core.state import Snapshot
    from ..core.txn import Tx
    from .store import Batch

R = TypeVar("R")

LOAD_CHUNK: Final = 5_000
"""Objects loaded between two checkpoints while a replica starts."""


class _NoProposer:
    """A replica commits only what its source committed: it proposes nothing."""

    def __init__(self) -> None:
        self._version = ORIGIN

    async def propose_value(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None]
    ) -> Version:
        raise StoreError("a replica is read-only; write to the store it was forked from")

    def get_version(self) -> Version:
        return self._version

    async def changes_between(self, start: Version, end: Version) -> Sequence[Change]:
        raise HistoryCompacted(end, end)


class Replica(Store):
    """A read-only, in-process copy of a store, kept in sync; from ``store.fork()``.

    ``view``, ``snapshot``, ``watch``, ``view_and_watch``, ``watch_from`` and
    ``wait_for(version)`` work as on the source; versions are the source's. ``resyncs``
    counts how often it fell behind and caught up from a new snapshot.
    """

    resyncs: int = 0

    async def update(self, fn: Callable[[Tx], R]) -> R:
        """Replicas are read-only: raises StoreError."""
        raise StoreError("a replica is read-only; write to the store it was forked from")

    async def batch(
        self, fn: Callable[[Batch], Awaitable[R]], *, max_changes: int = 0, max_bytes: int = 0
    ) -> R:
        """Replicas are read-only: raises StoreError."""
        raise StoreError("a replica is read-only; write to the store it was forked from")

    async def _load(self, snapshot: Snapshot) -> None:
        state = self._state
        count = 0
        for table in self.schema.tables:
            live = state.tables[table.cls]
            for obj in snapshot.all(table.cls):
                live.write(obj.id, None, obj)
                count += 1
                if count % LOAD_CHUNK == 0:
                    await trio.lowlevel.checkpoint()
        state.version = snapshot.version
        self._hub.floor = snapshot.version
        snapshot.close()

    async def _follow(self, source: Store, watch: Watch[Change], queue: int) -> None:
        try:
            while True:
                try:
                    change = await watch.receive()
                except WatchOverflow:
                    self.resyncs += 1
                    source._hub.unsubscribe(watch)
                    watch = Watch(source._hub, queue)
                    with source._state.pin() as snapshot:
                        source._hub.subscribe(watch, (), changes=True)  # same step as pin
                        self._resync(snapshot)
                    continue
                except StoreClosed:
                    await self.aclose()
                    return
                self._apply_replicated(change)
        finally:
            source._hub.unsubscribe(watch)

    def _resync(self, snapshot: Snapshot) -> None:
        theirs = {t.name: {obj.id: obj for obj in snapshot.all(t.cls)} for t in self.schema.tables}
        actions = difference(self._state, theirs)
        if snapshot.version > self.version:
            self._apply_replicated(Change(snapshot.version, actions))
