"""An ordered set whose inserts are O(1): new members wait in a set until the next ordered read.

Index maintenance is on the write path of every commit, while ordered reads (scans, ``all``)
are rarer and usually touch many members anyway; deferring the sort moves the cost to them and
lets a read merge many inserts at once (``SortedList.update``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sortedcontainers import SortedList

if TYPE_CHECKING:
    from collections.abc import Iterator


class LazySortedSet:
    """Distinct, mutually orderable members; iterate or bisect via :meth:`ordered`."""

    __slots__ = ("_pending", "_sorted")

    def __init__(self, members: Any = ()) -> None:
        self._sorted: SortedList[Any] = SortedList(members)
        self._pending: set[Any] = set()

    def add(self, member: Any) -> None:
        """Add a member that is not present."""
        self._pending.add(member)

    def remove(self, member: Any) -> None:
        """Remove a present member."""
        pending = self._pending
        if member in pending:
            pending.remove(member)
        else:
            self._sorted.remove(member)

    def ordered(self) -> SortedList[Any]:
        """The members as a SortedList (valid until the next add or remove)."""
        pending = self._pending
        if pending:
            self._sorted.update(pending)
            pending.clear()
        return self._sorted

    def __iter__(self) -> Iterator[Any]:
        return iter(self.ordered())

    def __len__(self) -> int:
        return len(self._sorted) + len(self._pending)

    def __bool__(self) -> bool:
        return bool(self._pending) or bool(self._sorted)

    def __contains__(self, member: object) -> bool:
        return member in self._pending or member in self._sorted
