"""Watches: bounded per-watcher queues fed by the commit path (through ``core.hub.Hub``).

A watch's queue takes a whole transaction's events at a time, synchronously, from the commit
path; nothing there waits, so a watcher that does not read never slows a writer or another
watcher: when a transaction would not fit in its queue, the watcher is dropped and, after the
events it already has, raises ``WatchOverflow(last_version)`` naming the last commit it saw in
full; ``watch_from(last_version)`` resumes exactly there.

History replayed by ``watch_from`` is kept apart from the live queue, so a resume is never
refused for being long: only the live backlog is bounded.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import anyio
import trio

from ..core.errors import WatchOverflow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._runtime import Runtime
    from ..core.hub import Hub
    from ..core.model import Version

T = TypeVar("T")

DEFAULT_QUEUE: Final = 10_000
"""Default most events (or changes) a watcher may have waiting before it overflows."""


class WouldBlock(anyio.WouldBlock, trio.WouldBlock):
    """Raised by ``Watch.receive_nowait`` when nothing is waiting. It is both AnyIO's and
    trio's ``WouldBlock``, so either ``except`` clause catches it, on either backend."""


class Watch(Generic[T]):
    """The events of a watch, in commit order: ``async for event in watch``.

    Iteration ends only by leaving the ``async with`` block. If the watcher fell behind, it
    yields what it has and then raises :class:`WatchOverflow`; if the store closes, it raises
    :class:`StoreClosed`.
    """

    __slots__ = ("__weakref__", "_error", "_hub", "_limit", "_lot", "_queue", "_replay", "_rt")

    def __init__(self, hub: Hub, limit: int, runtime: Runtime) -> None:
        if limit < 1:
            raise ValueError("a watch queue needs room for at least one item")
        self._hub = hub
        self._replay: deque[T] = deque()
        self._queue: deque[T] = deque()
        self._limit = limit
        self._rt = runtime
        self._lot = runtime.lot()
        self._error: BaseException | None = None

    def __aiter__(self) -> Watch[T]:
        return self

    async def __anext__(self) -> T:
        return await self.receive()

    async def receive(self) -> T:
        """Wait for and return the next item."""
        await self._rt.checkpoint_if_cancelled()
        while not (self._replay or self._queue):
            if self._error is not None:
                raise self._error
            await self._lot.park()
        item = self._replay.popleft() if self._replay else self._queue.popleft()
        await self._rt.cancel_shielded_checkpoint()
        return item

    def receive_nowait(self) -> T:
        """Return the next item if one is waiting, else raise :class:`WouldBlock`."""
        if self._replay:
            return self._replay.popleft()
        if self._queue:
            return self._queue.popleft()
        if self._error is not None:
            raise self._error
        raise WouldBlock

    def pending(self) -> int:
        """How many items are waiting to be received."""
        return len(self._replay) + len(self._queue)

    # -- fed by the hub, synchronously, from the commit path --------------------------------

    def _deliver(self, items: Sequence[T], previous: Version) -> None:
        queue = self._queue
        if len(queue) + len(items) > self._limit:
            # Drop the whole transaction: everything up to the commit before it (``previous``:
            # a real commit, whatever the versions' step) was delivered in full.
            self._hub.overflows += 1
            self._fail(WatchOverflow(previous))
            return
        queue.extend(items)
        if self._lot:
            self._lot.unpark_all()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            self._hub.unsubscribe(self)
        self._lot.unpark_all()
