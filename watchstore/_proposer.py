"""The Proposer protocol: where commits go to become durable or agreed, and MemoryProposer.

The store hands each transaction's actions to ``propose_value`` with a ``commit`` callback.
The proposer must call ``commit(version)`` exactly once, when the change is durable (or agreed
by a cluster), before any later change is committed, and return the same version. If it raises
instead, the outcome is unknown: the store undoes the change locally, and if it did commit after
all it arrives again through the replication path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ._errors import HistoryCompacted
from ._model import ORIGIN, Change, StoreAction, Version, new_version

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


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


class MemoryProposer:
    """Commits at once, in memory: versions count up from ``start``; nothing is kept.

    The default proposer of a store opened without a path. ``propose_value`` never suspends,
    so a commit costs no scheduling round trip.
    """

    def __init__(self, start: Version = ORIGIN) -> None:
        self._version = start

    async def propose_value(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None]
    ) -> Version:
        """Commit ``actions`` as the next version (see :class:`Proposer`)."""
        version = new_version(self._version.index + 1)
        self._version = version
        commit(version)
        return version

    def get_version(self) -> Version:
        """The last version committed through this proposer."""
        return self._version

    async def changes_between(self, start: Version, end: Version) -> Sequence[Change]:
        """The committed changes after ``start`` up to ``end`` (see :class:`Proposer`)."""
        if start >= end:
            return ()
        raise HistoryCompacted(self._version, self._version)
