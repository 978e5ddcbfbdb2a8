"""An ordered set whose inserts are O(1): new members wait in a set until the next ordered read.

Index maintenance is on the write path of every commit, while ordered reads (scans, ``all``)
are rarer and usually touch many members anyway; deferring the sort moves the cost to them and
lets a read merge many inserts at once (``SortedList.update``).
"""

from __future__ import annotations

from typing import Any

from sortedcontainers import SortedList


class LazySortedSet:
    """Distinct, mutually orderable members; iterate or bisect via :meth:`ordered`."""

    __slots__ = ("_pending", "_sorted")

    def __init__(self, members: Any = ()) -> None:
        self._sorted: SortedList[Any] = SortedList(members)
        self._pending: set[Any] = set()

    def add(self, member: Any) -> None:
        """Add a member that is not present."""
        self._pending.add(member)

    def update(self, members: Any) -> None:
        """Add members none of which is present (in bulk: O(n), sorted at the next read)."""
        self._pending.update(members)

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

    def __len__(self) -> int:
        return len(self._sorted) + len(self._pending)

    def any_member(self) -> Any:
        """One member (without sorting): for a set known to hold exactly one."""
        return next(iter(self._pending)) if self._pending else self._sorted[0]
