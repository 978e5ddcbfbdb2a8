"""The Proposer protocol: where commits go to become durable or agreed, and MemoryProposer.

The store hands each transaction's actions to ``propose_value`` with a ``commit`` callback.
The proposer must call ``commit(version)`` exactly once, when the change is durable (or agreed
by a cluster), before any later change is committed, and return the same version. If it raises
instead, the outcome is unknown: the store undoes the change locally, and if it did commit after
all it arrives again through the replication path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import HistoryCompacted
from .model import ORIGIN, Change, StoreAction, Version, new_version

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..service.store import Store
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
    through the replication path. On Conflict it waits for ``catch_up`` and runs the
    function again, at most ``max_retries`` times."""

    max_retries: int

    def prepare(self, tx: TrackingTx, base: Version) -> Any:
        """Turn a finished transaction (run on ``base``) into a request; raises
        TransactionTooLarge if it cannot be one."""
        ...

    async def commit_prepared(self, prepared: Any) -> Version:
        """Commit a prepared request; return its version or raise Conflict."""
        ...

    async def catch_up(self, store: Store, conflict: Conflict, attempt: int) -> None:
        """Return once ``store``'s replica has what the conflict saw (or gave up waiting),
        backing off more with each ``attempt``."""
        ...


class MemoryProposer:
    """Commits at once, in memory: versions count up from ``start``; nothing is kept.

    The default proposer of a store opened without a path. ``propose_value`` never suspends,
    so a commit costs no scheduling round trip. A store given a MemoryProposer itself (not a
    subclass, which may override ``propose_value``) calls ``advance`` instead and commits at
    once: no coroutine, and no actions built for a proposer that keeps nothing.
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
