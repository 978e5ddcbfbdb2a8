"""An ordered set whose inserts are O(1): new members wait until the next ordered read.

Index maintenance is on the write path of every commit, while ordered reads (scans, ``all``)
are rarer and usually touch many members anyway; deferring the sort moves the cost to them and
lets a read merge many inserts at once (``SortedList.update``).

Waiting members sit in a dict (member -> None) rather than a set: CPython's cyclic garbage
collector never tracks a dict whose keys and values are all atomic (ids are str, keys str or
int), so the members cost its full collections nothing, while a set is walked member by member
at every one of them. A store of 100k objects keeps three such collections of ids.
"""

from __future__ import annotations

from typing import Any

from sortedcontainers import SortedList


class LazySortedSet:
    """Distinct, mutually orderable members; iterate or bisect via :meth:`ordered`.

    The SortedList itself is made at the first ordered read: building one costs about a
    microsecond, and most index buckets (a key held by a few ids) are written far more
    often than they are read in order.
    """

    __slots__ = ("_sorted", "pending")

    def __init__(self, members: Any = ()) -> None:
        self._sorted: SortedList[Any] | None = None
        self.pending: dict[Any, None] = dict.fromkeys(members)
        """Members not sorted yet (always the same dict). ``pending[member] = None`` adds a
        member that is not present, as :meth:`add` does, without a call: the write path
        does it for every object it stores."""

    def add(self, member: Any) -> None:
        """Add a member that is not present."""
        self.pending[member] = None

    def update(self, members: Any) -> None:
        """Add members none of which is present (in bulk: O(n), sorted at the next read)."""
        self.pending.update(dict.fromkeys(members))

    def remove(self, member: Any) -> None:
        """Remove a present member."""
        pending = self.pending
        if member in pending:
            del pending[member]
        else:
            assert self._sorted is not None  # a present member not pending was sorted
            self._sorted.remove(member)

    def ordered(self) -> SortedList[Any]:
        """The members as a SortedList (valid until the next add or remove)."""
        ordered = self._sorted
        if ordered is None:
            ordered = self._sorted = SortedList()
        pending = self.pending
        if pending:
            ordered.update(pending)
            pending.clear()
        return ordered

    def __len__(self) -> int:
        ordered = self._sorted
        return len(self.pending) + (0 if ordered is None else len(ordered))

    def any_member(self) -> Any:
        """One member (without sorting): for a set known to hold exactly one."""
        if self.pending:
            return next(iter(self.pending))
        assert self._sorted is not None
        return self._sorted[0]
