"""Watches on trio: bounded per-watcher queues fed by the commit path, and the commit history.

The commit callback calls ``Hub.publish(change)`` synchronously: it records the change in the
history ring, routes its events (``core.events.Router``) and appends each watcher's share to that
watcher's queue, a whole transaction at a time. Nothing there waits, so a watcher that does not
read never slows a writer or another watcher: when a transaction would not fit in its queue, the
watcher is dropped and, after the events it already has, raises ``WatchOverflow(last_version)``
naming the last commit it saw in full; ``watch_from(last_version)`` resumes exactly there.

History replayed by ``watch_from`` is kept apart from the live queue, so a resume is never
refused for being long: only the live backlog is bounded.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import anyio
import trio

from ..core.errors import WatcherFailed, WatchOverflow
from ..core.events import Router, Spec
from ..core.history import DEFAULT_HISTORY_BYTES, History
from ..core.model import Change, Version, action_fields, new_action, new_change

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

T = TypeVar("T")

DEFAULT_QUEUE: Final = 10_000
"""Default most events (or changes) a watcher may have waiting before it overflows."""
DEFAULT_HISTORY: Final = 10_000
"""Default number of recent commits kept in memory for ``watch_from``."""


class WouldBlock(anyio.WouldBlock, trio.WouldBlock):
    """Raised by ``Watch.receive_nowait`` when nothing is waiting. It is both AnyIO's and
    trio's ``WouldBlock``, so either ``except`` clause catches it, on either backend."""


class Watch(Generic[T]):
    """The events of a watch, in commit order: ``async for event in watch``.

    Iteration ends only by leaving the ``async with`` block. If the watcher fell behind, it
    yields what it has and then raises :class:`WatchOverflow`; if the store closes, it raises
    :class:`StoreClosed`.
    """

    __slots__ = ("__weakref__", "_error", "_hub", "_limit", "_lot", "_queue", "_replay")

    def __init__(self, hub: Hub, limit: int) -> None:
        if limit < 1:
            raise ValueError("a watch queue needs room for at least one item")
        self._hub = hub
        self._replay: deque[T] = deque()
        self._queue: deque[T] = deque()
        self._limit = limit
        self._lot = trio.lowlevel.ParkingLot()
        self._error: BaseException | None = None

    def __aiter__(self) -> Watch[T]:
        return self

    async def __anext__(self) -> T:
        return await self.receive()

    async def receive(self) -> T:
        """Wait for and return the next item."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not (self._replay or self._queue):
            if self._error is not None:
                raise self._error
            await self._lot.park()
        item = self._replay.popleft() if self._replay else self._queue.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
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


class Hub:
    """Routes every commit to the watchers that selected it, and keeps recent history.

    ``floor`` is the newest version *not* in the history: every commit after it is there.
    """

    def __init__(
        self,
        start: Version,
        history: int = DEFAULT_HISTORY,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
    ) -> None:
        self.router = Router()
        self._routed = self.router._specs  # a plain dict: testing it costs no Python call
        self.change_watchers: dict[Watch[Change], None] = {}
        self.history = History(start, history, history_bytes)
        self.head = start
        """The last version published (what a watcher dropped at the next one saw last)."""
        self._record = self.history.append
        self._record_one = self.history.append_one

    @property
    def floor(self) -> Version:
        """The newest version not in the history: every commit after it is there."""
        return self.history.floor

    @floor.setter
    def floor(self, version: Version) -> None:
        self.history.floor = version
        self.head = max(self.head, version)

    def subscribe(self, watch: Watch[Any], specs: Sequence[Spec], *, changes: bool) -> None:
        """Start delivering to ``watch``: whole Changes if ``changes``, else routed events."""
        if changes:
            self.change_watchers[watch] = None
        else:
            self.router.subscribe(watch, specs)

    def unsubscribe(self, watch: Watch[Any]) -> None:
        """Stop delivering to ``watch`` (idempotent)."""
        if watch in self.change_watchers:
            del self.change_watchers[watch]
        elif watch in self.router:
            self.router.unsubscribe(watch)

    def publish(self, change: Change) -> None:
        """Deliver one committed change. Runs in the commit path: never waits."""
        self._record(change)
        if self._routed or self.change_watchers:
            self._route(change)
        self.head = change.version

    def publish_one(self, version: Version, table: str, old: Any, new: Any) -> None:
        """``publish`` for a commit that changed one object of ``table`` from ``old`` to
        ``new`` (None: absent): its Change is only built if a watcher is there to take it."""
        self._record_one(version.index, table, old, new)
        if self._routed or self.change_watchers:
            self._route(new_change(version, [new_action(*action_fields(table, old, new))]))
        self.head = version

    def _route(self, change: Change) -> None:
        previous = self.head
        if self._routed:
            failed: dict[Any, Exception] = {}
            for watch, events in self.router.route(change, failed).items():
                if watch not in failed:
                    watch._deliver(events, previous)
            for watch, error in failed.items():
                watch._fail(_watcher_failed(error, change.version))
        if self.change_watchers:
            for watch in list(self.change_watchers):
                watch._deliver((change,), previous)

    def close(self, error: BaseException) -> None:
        """Fail every watcher with ``error`` (the store closed)."""
        for watch in [*self.router.keys(), *self.change_watchers]:
            watch._fail(error)

    def replay_from(self, version: Version) -> list[Change] | None:
        """The commits after ``version`` (in order), or None if some are not in memory."""
        return self.history.replay(version)


def _watcher_failed(error: Exception, version: Version) -> WatcherFailed:
    failed = WatcherFailed(
        f"a where= predicate of this watch (or a field it compares) raised {error!r} for an "
        f"object of {version!r}; the watch is closed (the commit and other watchers are not "
        "affected): fix the predicate, then watch_from the last version received"
    )
    failed.__cause__ = error
    return failed


def replay_items(
    changes: Iterable[Change], specs: Sequence[Spec], *, as_changes: bool
) -> tuple[list[Any], WatcherFailed | None]:
    """What a watcher with ``specs`` would have received for ``changes``: the items, up to
    the commit where one of its predicates raised, and then that failure (else None)."""
    if as_changes:
        return list(changes), None
    router = Router()
    router.subscribe("replay", specs)
    out: list[Any] = []
    failed: dict[Any, Exception] = {}
    for change in changes:
        routed = router.route(change, failed)
        if failed:
            return out, _watcher_failed(failed["replay"], change.version)
        out.extend(routed.get("replay", ()))
    return out, None
