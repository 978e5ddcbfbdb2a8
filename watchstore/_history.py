"""The recent commits, for ``watch_from`` (sans-I/O), kept lean for the garbage collector.

A deque of ``Change`` objects would leave, per commit, a Change, its Version and its list of
actions alive for as many commits as the history holds: long enough for CPython's cyclic
collector to promote them to its oldest generation, where every full collection walks them
again and where they make full collections come sooner. Here a commit leaves its version's
index and its number of actions (plain ints, which the collector does not track) and the
StoreActions themselves, in three deques; ``replay`` rebuilds the Change objects, which is
rare: a watcher resuming.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Any

from ._model import new_change, new_version

if TYPE_CHECKING:
    from ._model import Change, StoreAction, Version


class History:
    """The last ``limit`` commits in order; ``floor`` is the newest version *not* kept:
    every commit after it is here."""

    __slots__ = ("_actions", "_counts", "_floor", "_indexes", "limit")

    def __init__(self, floor: Version, limit: int) -> None:
        self.limit = max(limit, 0)
        self._floor = floor.index
        self._indexes: deque[int] = deque()
        self._counts: deque[int] = deque()
        self._actions: deque[StoreAction] = deque()

    @property
    def floor(self) -> Version:
        """The newest version not in the history (every later commit is)."""
        return new_version(self._floor)

    @floor.setter
    def floor(self, version: Version) -> None:
        self._floor = version.index

    def __len__(self) -> int:
        return len(self._indexes)

    def append(self, change: Change) -> None:
        """Record a commit, newer than every one recorded, dropping the oldest if full."""
        indexes = self._indexes
        if len(indexes) >= self.limit:
            if not self.limit:
                self._floor = change.version.index
                return
            self._floor = indexes.popleft()
            popleft = self._actions.popleft
            for _ in range(self._counts.popleft()):
                popleft()
        indexes.append(change.version.index)
        actions = change.actions
        self._counts.append(len(actions))
        self._actions.extend(actions)

    def replay(self, version: Version) -> list[Change] | None:
        """The commits after ``version``, in order, or None if some are no longer kept."""
        after = version.index
        if after < self._floor:
            return None
        commits = 0
        actions = 0
        for index, count in zip(reversed(self._indexes), reversed(self._counts), strict=True):
            if index <= after:
                break
            commits += 1
            actions += count
        if not commits:
            return []
        counts = _last(self._counts, commits)
        kept = _last(self._actions, actions)
        out: list[Change] = []
        at = 0
        for index, count in zip(_last(self._indexes, commits), counts, strict=True):
            out.append(new_change(new_version(index), kept[at : at + count]))
            at += count
        return out


def _last(items: deque[Any], n: int) -> list[Any]:
    """The last ``n`` items of ``items``, in order."""
    tail = list(islice(reversed(items), n))
    tail.reverse()
    return tail
