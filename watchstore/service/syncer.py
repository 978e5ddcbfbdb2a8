"""A Calico-style Syncer: status callbacks and batched New/Updated/Deleted updates.

For consumers that keep their own cache or derived state. ``run()`` lists the selected tables
and watches them atomically (``view_and_watch``), reports ``RESYNC_IN_PROGRESS``, sends the
difference from what it sent before, reports ``IN_SYNC``, then sends every change in batches.
If it falls behind (the watch overflows) it resyncs the same way and reports it again: every
resync is reported, not only the first (Calico's watchersyncer reports only the first).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import attrs

from ..core.errors import WatchOverflow
from ..core.events import Created, Deleted, Updated, on
from .watch import DEFAULT_QUEUE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core.events import Event
    from ..core.txn import ReadTx
    from .store import Store
    from .watch import Watch


class SyncStatus(enum.Enum):
    """Where a :class:`Syncer` is: before its first list, listing, or following changes."""

    WAIT_FOR_DATASTORE = "wait-for-datastore"
    RESYNC_IN_PROGRESS = "resync-in-progress"
    IN_SYNC = "in-sync"


class UpdateKind(enum.Enum):
    """What a :class:`SyncUpdate` tells the consumer."""

    NEW = "new"
    UPDATED = "updated"
    DELETED = "deleted"


@attrs.frozen
class SyncUpdate:
    """One object the consumer must add (NEW), replace (UPDATED) or drop (DELETED)."""

    kind: UpdateKind
    obj: Any


BATCH: Final = 1000
"""Default most updates per ``on_updates`` call."""


class Syncer:
    """Feeds ``on_status`` and ``on_updates`` from a store; run it with ``await run()``.

    ``tables`` selects what to sync (default: every table of the schema). Callbacks run
    synchronously in the syncer's task; ``resyncs`` counts the resyncs after the first list.
    """

    def __init__(
        self,
        store: Store,
        *,
        on_status: Callable[[SyncStatus], None],
        on_updates: Callable[[list[SyncUpdate]], None],
        tables: Sequence[type] | None = None,
        batch: int = BATCH,
        queue: int = DEFAULT_QUEUE,
    ) -> None:
        self._store = store
        self._on_status = on_status
        self._on_updates = on_updates
        self._tables = (
            tuple(tables) if tables is not None else tuple(t.cls for t in store.schema.tables)
        )
        self._batch = batch
        self._queue = queue
        self._sent: dict[tuple[type, str], Any] = {}
        self.resyncs = 0
        self.status = SyncStatus.WAIT_FOR_DATASTORE

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """List, then follow changes until cancelled; ``task_status`` is started when the
        first list has been delivered (status IN_SYNC)."""
        self._set_status(SyncStatus.WAIT_FOR_DATASTORE)
        started = False
        specs = [on(cls) for cls in self._tables]
        while True:
            self._set_status(SyncStatus.RESYNC_IN_PROGRESS)
            async with self._store.view_and_watch(self._list, *specs, queue=self._queue) as (
                listed,
                events,
            ):
                self._send(self._difference(listed))
                self._set_status(SyncStatus.IN_SYNC)
                if not started:
                    started = True
                    task_status.started()
                try:
                    await self._follow(events)
                except WatchOverflow:
                    self.resyncs += 1

    def _list(self, tx: ReadTx) -> dict[tuple[type, str], Any]:
        listed: dict[tuple[type, str], Any] = {}
        for cls in self._tables:
            objs: list[Any] = tx.all(cls)
            for obj in objs:
                listed[cls, obj.id] = obj
        return listed

    def _difference(self, listed: dict[tuple[type, str], Any]) -> list[SyncUpdate]:
        sent = self._sent
        out = [
            SyncUpdate(UpdateKind.DELETED, obj) for key, obj in sent.items() if key not in listed
        ]
        for key, obj in listed.items():
            before = sent.get(key)
            if before is None:
                out.append(SyncUpdate(UpdateKind.NEW, obj))
            elif before is not obj:
                out.append(SyncUpdate(UpdateKind.UPDATED, obj))
        return out

    async def _follow(self, events: Watch[Event]) -> None:
        while True:
            batch = [await events.receive()]
            while len(batch) < self._batch:
                try:
                    batch.append(events.receive_nowait())
                except anyio.WouldBlock:
                    break
            updates: list[SyncUpdate] = []
            for event in batch:
                if isinstance(event, Created):
                    updates.append(SyncUpdate(UpdateKind.NEW, event.obj))
                elif isinstance(event, Updated):
                    updates.append(SyncUpdate(UpdateKind.UPDATED, event.obj))
                elif isinstance(event, Deleted):
                    updates.append(SyncUpdate(UpdateKind.DELETED, event.obj))
            self._send(updates)

    def _send(self, updates: list[SyncUpdate]) -> None:
        sent = self._sent
        for update in updates:
            key = (type(update.obj), update.obj.id)
            if update.kind is UpdateKind.DELETED:
                sent.pop(key, None)
            else:
                sent[key] = update.obj
        for start in range(0, len(updates), self._batch):
            self._on_updates(updates[start : start + self._batch])

    def _set_status(self, status: SyncStatus) -> None:
        self.status = status
        self._on_status(status)
