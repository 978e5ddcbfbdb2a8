"""The recent commits, for ``watch_from`` (sans-I/O), kept lean for the garbage collector.

A deque of ``Change`` objects would leave, per commit, a Change, its Version and its list of
actions alive for as many commits as the history holds: long enough for CPython's cyclic
collector to promote them to its oldest generation, where every full collection walks them
again and where they make full collections come sooner. Here a commit leaves its version's
index (a plain int, which the collector does not track) and its StoreAction (or, for a
commit of several objects, its sequence of them), in two deques; ``replay`` rebuilds the
Change objects, which is rare: a watcher resuming.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ._model import StoreAction, new_change, new_version

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._model import Change, Version


class History:
    """The last ``limit`` commits in order; ``floor`` is the newest version *not* kept:
    every commit after it is here."""

    __slots__ = ("_actions", "_floor", "_indexes", "limit")

    def __init__(self, floor: Version, limit: int) -> None:
        self.limit = limit = max(limit, 0)
        self._floor = floor.index
        self._indexes: deque[int] = deque(maxlen=limit)
        # Per commit: its one StoreAction, or its sequence of them (none, or several).
        self._actions: deque[StoreAction | Sequence[StoreAction]] = deque(maxlen=limit)

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
        if len(indexes) == self.limit:  # the oldest drops out (the deques have maxlen)
            self._floor = indexes[0] if indexes else change.version.index
        indexes.append(change.version.index)
        actions = change.actions
        self._actions.append(actions[0] if len(actions) == 1 else actions)

    def replay(self, version: Version) -> list[Change] | None:
        """The commits after ``version``, in order, or None if some are no longer kept."""
        after = version.index
        if after < self._floor:
            return None
        out: list[Change] = []
        for index, actions in zip(reversed(self._indexes), reversed(self._actions), strict=True):
            if index <= after:
                break
            kept = [actions] if isinstance(actions, StoreAction) else list(actions)
            out.append(new_change(new_version(index), kept))
        out.reverse()
        return out
