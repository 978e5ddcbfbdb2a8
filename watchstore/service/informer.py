"""The informer: a watch for consumers that lists, follows, and recovers by itself.

A plain watch that falls behind raises ``WatchOverflow``; its consumer resumes with
``watch_from``, which raises ``HistoryCompacted`` once the history is gone, and then lists
again with ``view_and_watch``. The informer climbs that ladder itself, in the consumer's own
task, as Kubernetes' informers do for a client of the API server: it lists the selected
objects, yields each change, resumes from history after an overflow (``resumes`` counts it:
no event, nothing was missed), and when history no longer reaches back, lists again and
yields one ``Resynced`` with the whole current selection (``resyncs`` counts it).

It keeps ``objects``, the selection as the consumer's events have told it, and ``version``,
the last commit the consumer is done with: it moves when the consumer, having received a
commit's last event, asks for the next one. So ``wait_for(version)`` (and
``watchstore.testing.settled``) returns once the consumer has handled that commit.
"""

from __future__ import annotations

import heapq
from contextlib import AsyncExitStack, asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic

import anyio
import anyio.lowlevel
import attrs
from typing_extensions import TypeVar

from ..core.errors import HistoryCompacted, StoreClosed, WatchOverflow
from ..core.events import Committed, Created, Deleted, Updated, on, on_commit
from .watch import DEFAULT_QUEUE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from ..core.events import Event, Spec, Where
    from ..core.model import Version
    from ..core.txn import ReadTx
    from .store import Store
    from .watch import Watch

T = TypeVar("T", default=Any)


@attrs.frozen
class Resynced(Generic[T]):
    """The informer listed again at ``version`` (its history no longer reached back to
    where it fell behind): ``objects`` (id -> object) is the whole selection there. Replace
    what was derived from earlier events; the events after it follow from ``version``."""

    objects: Mapping[str, T]
    version: Version


InformerEvent = Created[T] | Updated[T] | Deleted[T] | Resynced[T]
"""What an informer yields: each change of its selection, or a new list of it."""


class Informer(Generic[T]):
    """The objects of one class that a selection holds, and their changes; from
    :func:`informer`. ``async for event in informer`` (or ``await informer.receive()``)
    yields ``Created``, ``Updated`` and ``Deleted`` events in commit order, and a
    :class:`Resynced` after each re-list. An ``Updated`` whose new object no longer matches
    took it out of the selection (it is no longer in ``objects``).
    """

    def __init__(self, store: Store, spec: Spec[T], queue: int) -> None:
        self._store = store
        self._spec = spec
        self._specs = (spec, on_commit())
        self._queue = queue
        self._objects: dict[str, T] = {}
        self.objects: Mapping[str, T] = MappingProxyType(self._objects)
        """The selected objects (id -> object), read-only, as the events received so far
        (and the last list) tell it: the state at ``version`` once the consumer is done
        with a commit."""
        self.version: Version = store.version
        """The last commit the consumer is done with: it received the commit's last event
        and asked for the next (or the version of the last list). Commits that select
        nothing move it while the consumer waits in ``receive``."""
        self.resyncs = 0
        """How often it listed again after the first list (each one yielded a Resynced)."""
        self.resumes = 0
        """How often it fell behind and resumed from history, missing nothing."""
        self._stack = AsyncExitStack()
        self._watch: Watch[Event[T]] | None = None
        self._ahead: Event[T] | None = None  # received from the watch, not yet yielded
        self._completed: Version | None = None  # the commit the last event yielded ended
        self._waiters: list[tuple[int, int, anyio.Event]] = []
        self._closed = False

    def __aiter__(self) -> Informer[T]:
        return self

    async def __anext__(self) -> InformerEvent[T]:
        return await self.receive()

    async def receive(self) -> InformerEvent[T]:
        """Wait for and return the next event, resuming or listing again first if the
        informer fell behind. Raises StoreClosed once the store closes, WatcherFailed if a
        ``where=`` predicate raised. Cancelling it loses nothing: a recovery cut short is
        done again by the next call."""
        if self._completed is not None:  # the consumer is back: it is done with that commit
            self._advance(self._completed)
            self._completed = None
        while True:
            watch = self._watch
            if watch is None:
                resynced = await self._recover()
                if resynced is not None:
                    return resynced
                continue
            event, self._ahead = self._ahead, None
            if event is None:
                try:
                    event = await watch.receive()
                except WatchOverflow:
                    # Everything up to self.version was received: resume right after it.
                    await self._drop_watch()
                    continue
            if isinstance(event, Committed):
                self._advance(event.version)
                continue
            self._apply(event)
            # A commit's events reach the queue together, its Committed last: if that is
            # next, this event completes its commit, and version moves as soon as the
            # consumer asks for more (done with it), not when another commit comes.
            if watch.pending():
                following = watch.receive_nowait()
                if isinstance(following, Committed):
                    self._completed = following.version
                else:
                    self._ahead = following
            return event

    async def wait_for(self, version: Version) -> None:
        """Return once the consumer is done with ``version`` (``self.version`` reached it;
        at once if it has): some task must be receiving. StoreClosed if the informer
        closes first."""
        if self.version < version:
            if self._closed:
                raise StoreClosed(f"the informer is closed: it will not deliver {version!r}")
            event = anyio.Event()
            heapq.heappush(self._waiters, (version.index, id(event), event))
            await event.wait()
            if self.version < version:
                raise StoreClosed(f"the informer closed before it delivered {version!r}")
        else:
            await anyio.lowlevel.checkpoint()

    # -- the ladder --------------------------------------------------------------------------

    async def _list(self) -> Resynced[T]:
        """List the selection and watch every commit after the list, atomically."""
        stack = AsyncExitStack()
        try:
            (version, listed), watch = await stack.enter_async_context(
                self._store.view_and_watch(self._listing, *self._specs, queue=self._queue)
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._watch = stack, watch
        self._objects.clear()
        self._objects.update(listed)
        self._advance(version)
        return Resynced(MappingProxyType(listed), version)

    async def _recover(self) -> Resynced[T] | None:
        """Resume after ``version`` from history, else list again (a Resynced)."""
        stack = AsyncExitStack()
        try:
            watch = await stack.enter_async_context(
                self._store.watch_from(self.version, *self._specs, queue=self._queue)
            )
        except HistoryCompacted:
            await stack.aclose()
            resynced = await self._list()
            self.resyncs += 1
            return resynced
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._watch = stack, watch
        self.resumes += 1
        return None

    def _listing(self, tx: ReadTx) -> tuple[Version, dict[str, T]]:
        spec = self._spec
        cls = spec.cls
        assert cls is not None  # an informer's spec always names its class
        matches = spec.matches_object
        return tx.version, {obj.id: obj for obj in tx.all(cls) if matches(obj)}  # type: ignore[attr-defined]

    def _apply(self, event: Created[T] | Updated[T] | Deleted[T]) -> None:
        obj = event.obj
        key: str = obj.id  # type: ignore[attr-defined]
        if isinstance(event, Deleted) or not self._spec.matches_object(obj):
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj

    def _advance(self, version: Version) -> None:
        self.version = version
        waiters = self._waiters
        while waiters and waiters[0][0] <= version.index:
            heapq.heappop(waiters)[2].set()

    async def _drop_watch(self) -> None:
        self._watch = self._ahead = None
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()

    async def _close(self) -> None:
        self._closed = True
        for _index, _id, event in self._waiters:
            event.set()
        self._waiters.clear()
        await self._drop_watch()


@asynccontextmanager
async def informer(
    store: Store,
    cls: type[T],
    *,
    where: Where[T] = None,
    queue: int = DEFAULT_QUEUE,
    **fields: Any,
) -> AsyncIterator[Informer[T]]:
    """List the ``cls`` objects with these field values (and ``where``) and follow their
    changes, recovering by itself when it falls behind; the selection is as ``ws.on``'s.

    ``async with ws.informer(store, Task, node_id="n1") as tasks:`` lists before the block
    starts (``tasks.objects``), then ``async for event in tasks:`` yields every change after
    the list. At most ``queue`` events wait; when a commit does not fit (a slow consumer, a
    huge commit), the informer resumes from history (``watch_from``; ``tasks.resumes``),
    or, when that is gone (``HistoryCompacted``: the store's memory and its proposer's
    history, e.g. a compacted etcd, no longer reach back), lists again and yields a
    :class:`Resynced` (``tasks.resyncs``). InvalidQuery if no table holds ``cls`` or it has
    no such field.
    """
    watching = Informer(store, on(cls, where=where, **fields), queue)
    try:
        await watching._list()
        yield watching
    finally:
        await watching._close()
