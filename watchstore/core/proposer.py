"""The Proposer protocol: where commits go to become durable or agreed; MemoryProposer.

The store hands each transaction's actions to ``propose_value`` with a ``commit`` callback.
The proposer must call ``commit(version)`` exactly once, when the change is durable (or agreed
by a cluster), before any later change is committed, and return the same version. If it raises
instead, the outcome is unknown: the store undoes the change locally, and if it did commit after
all it arrives again through the replication path.

That is the whole of what the store needs. Everything else a proposer may bring is a
capability, declared by implementing one of the protocols below, which the store looks for
when it opens (it never asks which proposer it has):

- :class:`Lifecycle`: the state to start from (a log's restore, a cluster's listing), its
  background tasks, and its close.
- :class:`CommitsAtOnce`: commits in memory, synchronously (no coroutine per commit).
- :class:`Pipelined`: queues a commit synchronously and makes it durable in the background,
  so the next writer may begin meanwhile (group commit).
- :class:`TransactionalProposer`: checks at commit that nothing a transaction read has
  changed since (optimistic concurrency across processes).
- :class:`Compacting`: ``store.compact()`` starts a new epoch.
- :class:`Leading`: elects one leader among the processes sharing it, and fences the
  writes made under a leadership (``store.leadership``).
- :class:`Instrumented`: reports what it measures of its own work (fsyncs, groups of
  commits, compactions, etcd's requests), which ``store.statistics()`` includes.

A proposer sees the store it serves as a :class:`Host`.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from .errors import HistoryCompacted
from .model import ORIGIN, Change, StoreAction, Version, new_version

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from .schema import Schema
    from .state import Snapshot, StoreState
    from .statistics import ProposerStatistics
    from .txn import TrackingTx


class Proposer(Protocol):
    """What the store needs from a persistence or replication backend."""

    async def propose_value(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None]
    ) -> Version:
        """Make ``actions`` durable as the next version, call ``commit`` once, return it."""
        ...

    def get_version(self) -> Version:
        """The last version committed through this proposer."""
        ...

    async def changes_between(self, start: Version, end: Version) -> Sequence[Change]:
        """The committed changes with ``start < version <= end``, in order.

        Raises HistoryCompacted when part of that range is no longer kept.
        """
        ...


class Host(Protocol):
    """The store, as the proposer it opened with sees it."""

    @property
    def schema(self) -> Schema:
        """The store's schema."""
        ...

    @property
    def version(self) -> Version:
        """The version of the last committed transaction."""
        ...

    @property
    def closed(self) -> bool:
        """True once the store is closed."""
        ...

    def pin(self) -> Snapshot:
        """A snapshot of the committed state, in O(1) (close it when done)."""
        ...

    async def wait_for(self, version: Version) -> None:
        """Return once the store has committed ``version``."""
        ...

    async def apply_remote(self, build: Callable[[StoreState], Sequence[Change]]) -> None:
        """Apply the changes ``build`` makes from the committed state (committed elsewhere:
        the replication path) under the writers' lock, and publish them."""
        ...

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``await fn(*args)`` in the store's task group until it returns or the store
        closes. An exception it raises closes the store and leaves its ``async with``."""
        ...


@attrs.frozen
class Loaded:
    """The state a proposer starts the store from (see :meth:`Lifecycle.open`): the
    ``objects`` of each table (by name) at ``snapshot_version``, then ``changes`` after it.
    ``recovery`` is what ``store.recovery`` reports (None: nothing to report)."""

    snapshot_version: Version
    objects: Mapping[str, Sequence[Any]]
    changes: Sequence[Change] = ()
    recovery: Any = None

    @property
    def version(self) -> Version:
        """The last version loaded."""
        return self.changes[-1].version if self.changes else self.snapshot_version


@runtime_checkable
class Lifecycle(Protocol):
    """A proposer with state to load, background work, or resources to release.

    ``open_store`` calls ``open`` before the store exists and loads what it returns; then
    ``start`` once the store is loaded and before its ``async with`` body runs; and
    ``aclose`` once the store has closed (its background tasks cancelled), even when
    ``open`` or ``start`` failed.
    """

    async def open(self, schema: Schema) -> Loaded | None:
        """Connect or restore; return the state to start from (None: empty, at
        ``get_version()``)."""
        ...

    async def start(self, host: Host) -> None:
        """Start background work with ``host.spawn`` (and do what must be done before the
        store is used)."""
        ...

    async def aclose(self) -> None:
        """Release what ``open`` acquired."""
        ...


@runtime_checkable
class CommitsAtOnce(Protocol):
    """A proposer that commits synchronously, in memory: when ``commits_at_once()`` is
    true, the store takes each version from ``advance`` and commits at once, without
    ``propose_value``."""

    def commits_at_once(self) -> bool:
        """True if ``advance`` may stand in for ``propose_value``."""
        ...

    def advance(self, expected: Version | None = None) -> Version:
        """Take the next version; ``expected`` (the store's prediction) if it is the next."""
        ...


class Submission(Protocol):
    """A commit a :class:`Pipelined` proposer has queued."""

    finished: bool
    """True once it is committed (or failed: ``error``)."""
    error: BaseException | None
    synced_inline: bool
    """True if it was written and fsynced in the calling thread, inside ``submit``."""

    def wait(self) -> Awaitable[None]:
        """Await it: returns once it is finished; not cancellable (it will be written)."""
        ...


@runtime_checkable
class Pipelined(Protocol):
    """A proposer that queues a commit synchronously and makes it durable in the background,
    calling ``commit`` then: the store lets the next writer begin meanwhile, so concurrent
    commits share one write (group commit)."""

    def submit(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None], *, writers: int
    ) -> Submission:
        """Queue the next commit. ``writers``: the store's writers under way (this one
        included), so the proposer knows whether any other commit could share this one's
        write."""
        ...


@runtime_checkable
class Compacting(Protocol):
    """A proposer that can start a new epoch from a snapshot (``store.compact()``)."""

    async def compact(self, host: Host, keep: int | None = None) -> Version:
        """Write ``host``'s current state as a new epoch, keeping ``keep`` epochs (None: the
        proposer's default); return the snapshot's version once it is complete."""
        ...


class Conflict(Exception):
    """Raised by a :class:`TransactionalProposer` when another writer changed what the
    transaction read or wrote: the replica must reach ``revision`` (and lose the objects in
    ``gone``) before the transaction function is run again."""

    def __init__(
        self, revision: int = 0, gone: Sequence[tuple[str, str]] = (), *, local: bool = False
    ) -> None:
        super().__init__(f"conflict; catch up to revision {revision}")
        self.revision = revision
        self.gone = gone
        self.local = local
        """True when the transaction was not sent: another task of this process was
        committing a key it needs (such waits do not count as retries)."""


@runtime_checkable
class TransactionalProposer(Proposer, Protocol):
    """A proposer that checks, at commit, that nothing a transaction read has changed since
    (etcd). The store runs the function on its replica, hands the transaction over with
    ``prepare``, undoes it locally and awaits ``commit_prepared``; the change comes back
    through the replication path. On Conflict (unless ``local``) it always awaits
    ``catch_up`` and runs the function again, at most ``max_retries`` times."""

    max_retries: int

    def prepare(self, tx: TrackingTx, base: Version) -> Any:
        """Turn a finished transaction (run on ``base``) into a request; raises
        TransactionTooLarge if it cannot be one."""
        ...

    async def commit_prepared(self, prepared: Any) -> Version:
        """Commit a prepared request; return its version or raise Conflict."""
        ...

    async def catch_up(self, host: Host, conflict: Conflict, attempt: int) -> None:
        """Return once ``host``'s replica has what the conflict saw (or gave up waiting),
        backing off more with each ``attempt`` (0: no run follows)."""
        ...


class Fence(Protocol):
    """A leadership as held: what the writes made under it are fenced by."""

    @property
    def lost(self) -> bool:
        """True once the leadership is lost (its lease expired, say)."""
        ...

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the leadership is lost."""
        ...


FENCE: ContextVar[Fence | None] = ContextVar("watchstore_fence", default=None)
"""The fence of the leadership the current task writes under (``Lead.update`` sets it): a
:class:`Leading` proposer makes the transaction commit only while it still holds."""


@runtime_checkable
class Leading(Protocol):
    """A proposer shared by several processes that elects one leader per name."""

    def leadership(
        self, host: Host, name: str, identity: str, ttl: float
    ) -> AbstractAsyncContextManager[Fence]:
        """Campaign for ``name`` as ``identity``; enter once this process leads. Keeps the
        leadership alive (``ttl``: seconds it outlives this process's silence) until exit,
        then gives it up."""
        ...

    async def leader(self, name: str) -> str | None:
        """The identity of the current leader of ``name`` (None: nobody leads)."""
        ...


@runtime_checkable
class Instrumented(Protocol):
    """A proposer that measures its own work: ``store.statistics()`` includes what
    ``statistics()`` returns. It is called when someone reads the statistics, never on the
    commit path, so it should only read counters (and summarise ``statistics.Recent``
    rings)."""

    def statistics(self) -> ProposerStatistics:
        """The proposer's counters and recent samples, now."""
        ...


class MemoryProposer:
    """Commits at once, in memory: versions count up from ``start``; nothing is kept.

    The default proposer of a store opened without a path. ``propose_value`` never suspends,
    and the store calls ``advance`` instead (see :class:`CommitsAtOnce`): a commit costs no
    coroutine and no scheduling round trip, and no actions are built for a proposer that
    keeps nothing. A subclass that overrides ``propose_value`` (to slow commits down in a
    test, say) is called through it.
    """

    def __init__(self, start: Version = ORIGIN) -> None:
        self._version = start

    async def propose_value(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None]
    ) -> Version:
        """Commit ``actions`` as the next version (see :class:`Proposer`)."""
        version = self.advance()
        commit(version)
        return version

    def commits_at_once(self) -> bool:
        """True unless a subclass overrides ``propose_value``."""
        return type(self).propose_value is MemoryProposer.propose_value

    def advance(self, expected: Version | None = None) -> Version:
        """Take the next version and return it: the caller commits as it at once.
        ``expected`` is the version the caller predicted; it is returned, rather than a new
        equal one, if it is the next."""
        index = self._version.index + 1
        if expected is None or expected.index != index:
            expected = new_version(index)
        self._version = expected
        return expected

    def get_version(self) -> Version:
        """The last version committed through this proposer."""
        return self._version

    async def changes_between(self, start: Version, end: Version) -> Sequence[Change]:
        """The committed changes after ``start`` up to ``end`` (see :class:`Proposer`)."""
        if start >= end:
            return ()
        raise HistoryCompacted(self._version, self._version)
