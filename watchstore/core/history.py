"""The recent commits, for ``watch_from`` (sans-I/O), kept lean for the garbage collector.

A deque of ``Change`` objects would leave, per commit, a Change, its Version, its list and
its StoreActions alive for as many commits as the history holds: long enough for CPython's
cyclic collector to walk them in every young collection, promote them to its oldest
generation, and make full collections come sooner. Even one such object per commit costs
about 0.7 us per single-object commit (``python -m benchmarks core``). So a commit leaves
only references to what exists anyway: its version's index (a plain int, which the
collector does not track) and, in a flat deque, the kind, table, object and old object of
its one action (or, for a commit of several, a marker and its list of actions). ``replay``
rebuilds the Change objects, which is rare: a watcher resuming.

The history is bounded by bytes as well as by commits: each commit counts the size of the
objects it wrote (an estimate: ``object_size``), and the oldest commits drop out while the
total exceeds ``max_bytes`` (300 updates of one 2 MB object would otherwise hold 600 MB).
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Any

from .fieldtypes import object_size
from .model import action_fields, new_action, new_change, new_version

if TYPE_CHECKING:
    from .model import Change, Version


FIELDS = 4  # entries per commit in History._entries
DEFAULT_HISTORY_BYTES = 64 << 20
"""Default bound of the objects the history holds (64 MiB, estimated)."""


class History:
    """The last ``limit`` commits in order, at most ``max_bytes`` of objects; ``floor`` is
    the newest version *not* kept: every commit after it is here."""

    __slots__ = ("_bytes", "_entries", "_floor", "_indexes", "_sizes", "limit", "max_bytes")

    def __init__(self, floor: Version, limit: int, max_bytes: int = DEFAULT_HISTORY_BYTES) -> None:
        self.limit = limit = max(limit, 0)
        self.max_bytes = max_bytes
        self._floor = floor.index
        self._indexes: deque[int] = deque(maxlen=limit)
        # FIELDS entries per commit: kind, table, obj, old of its one action, or
        # None, None, its actions, None. The maxlen drops the oldest commit's.
        self._entries: deque[Any] = deque(maxlen=FIELDS * limit)
        self._sizes: deque[int] = deque(maxlen=limit)  # each commit's objects, in bytes
        self._bytes = 0

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
            self._bytes -= self._sizes[0] if self._sizes else 0
        indexes.append(change.version.index)
        actions = change.actions
        if len(actions) == 1:
            action = actions[0]
            self._entries.extend((action.kind, action.table, action.obj, action.old))
        else:
            self._entries.extend((None, None, actions, None))
        size = getattr(actions, "size", 0)  # read from the log: its record's size
        self._count(size or sum(object_size(a.obj) for a in actions))

    def append_one(self, index: int, table: str, old: Any, new: Any) -> None:
        """``append`` for commit ``index`` that changed one object of ``table`` from ``old``
        to ``new`` (None: absent), without building its Change."""
        indexes = self._indexes
        if len(indexes) == self.limit:
            self._floor = indexes[0] if indexes else index
            self._bytes -= self._sizes[0] if self._sizes else 0
        indexes.append(index)
        self._entries.extend(action_fields(table, old, new))
        self._count(object_size(new if new is not None else old))

    def _count(self, size: int) -> None:
        """Count the newest commit's ``size``; drop the oldest commits while over
        ``max_bytes`` (the newest always stays)."""
        if not self.limit:
            return
        self._sizes.append(size)
        self._bytes += size
        indexes, entries, sizes = self._indexes, self._entries, self._sizes
        while self._bytes > self.max_bytes and len(indexes) > 1:
            self._floor = indexes.popleft()
            self._bytes -= sizes.popleft()
            for _ in range(FIELDS):
                entries.popleft()

    def replay(self, version: Version) -> list[Change] | None:
        """The commits after ``version``, in order, or None if some are no longer kept."""
        after = version.index
        if after < self._floor:
            return None
        indexes: list[int] = []
        for index in reversed(self._indexes):
            if index <= after:
                break
            indexes.append(index)
        indexes.reverse()
        entries = list(islice(reversed(self._entries), FIELDS * len(indexes)))
        entries.reverse()
        out: list[Change] = []
        for at, index in zip(range(0, len(entries), FIELDS), indexes, strict=True):
            kind, table, obj, old = entries[at : at + FIELDS]
            actions = list(obj) if kind is None else [new_action(kind, table, obj, old)]
            out.append(new_change(new_version(index), actions))
        return out
