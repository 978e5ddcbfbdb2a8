"""The live, mutable structures of one table: rows by id and ordered index buckets.

``TableState.write(id, old, new)`` is the only mutation: it moves one object from ``old`` to
``new`` (either may be None), first computing and checking every index key, then changing the
structures, so an error leaves nothing half-applied. Transactions, aborts (a write in reverse)
and replication are all built on it.

Layout: ``rows`` maps id to object; ``ids`` keeps ids in order; each index keeps its distinct
keys in order and, per key, the holding id (a str: always for a unique index, and for a key
with one holder) or the holders in id order. Ordered structures are ``LazySortedSet``s, so a
write is O(1) and the sorting is paid by the next ordered read. Indexes hold ids, not objects,
so re-stamping an object's metadata never touches them.

Reads go through ``TableState.ordered_ids``: a condition is a union of key ranges
(``query.key_ranges``), each bisected once in the ordered keys, then the holders of each key
in id order; so the first k matches cost O(log n + k), forwards or in reverse, from any
position ``(key, id)`` on.
"""

from __future__ import annotations

import heapq
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from .codec import LoggedActions
from .errors import InvalidObject, InvalidQuery, StoreError
from .model import ActionKind, Change, new_action, new_change
from .query import KeyRange, key_matcher, key_ranges
from .schema import IndexSpec, Table, families_agree, key_family, merge_families
from .sorted import LazySortedSet
from .writer import compile_write

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from sortedcontainers import SortedList

CREATE, UPDATE, DELETE = ActionKind.CREATE, ActionKind.UPDATE, ActionKind.DELETE


class IndexState:
    """One secondary index of a live table."""

    __slots__ = ("buckets", "family", "key_type", "keys", "spec")

    def __init__(self, spec: IndexSpec) -> None:
        self.spec = spec
        self.keys = LazySortedSet()
        self.buckets: dict[Any, Any] = {}
        self.family: Any = None
        self.key_type: type | None = None

    def check_key(self, key: Any, table: str, id: str) -> None:
        """Raise InvalidObject if ``key`` cannot be ordered with this index's keys."""
        try:
            family = key_family(key)
        except TypeError as exc:
            raise InvalidObject(f"{table} {id!r}: index {self.spec.name!r}: {exc}") from None
        if self.family is None:
            return
        if family != self.family and not families_agree(family, self.family):
            raise InvalidObject(
                f"{table} {id!r}: index {self.spec.name!r} holds keys like "
                f"{next(iter(self.buckets))!r}, which cannot be ordered with {key!r}; "
                "keep one key type per index"
            )

    def add(self, key: Any, id: str) -> None:
        buckets = self.buckets
        bucket = buckets.get(key)
        if bucket is None:
            if self.family is None:
                self.family = key_family(key)
                # The type test is a fast path for scalar keys only: tuples must always be
                # checked element by element, so they never match it.
                self.key_type = None if isinstance(key, tuple) else type(key)
            elif self.key_type is None:  # compound keys may differ in length
                self.family = merge_families(self.family, key_family(key))
            buckets[key] = id
            self.keys.add(key)
        elif type(bucket) is str:
            buckets[key] = LazySortedSet((bucket, id))
        else:
            bucket.pending[id] = None  # O(1): sorted at the next ordered read

    def remove(self, key: Any, id: str) -> None:
        buckets = self.buckets
        bucket = buckets[key]
        if type(bucket) is not str:
            bucket.remove(id)
            if len(bucket) > 1:
                return
            buckets[key] = bucket.any_member()  # back to a plain holder
            return
        del buckets[key]
        self.keys.remove(key)
        if not buckets:
            self.family = None
            self.key_type = None

    def bulk_buckets(self, rows: dict[str, Any]) -> dict[Any, Any] | None:
        """The buckets of this (empty) index over ``rows``, built in one pass; None where
        the keys need the per-object checks of ``add`` (mixed or other than plain str or
        int keys, multi-valued, or a unique key held twice): ``TableState.load`` then
        writes object by object, which checks everything and raises the precise error."""
        spec = self.spec
        if spec.multi:
            return None
        get = attrgetter(spec.plain_field) if spec.plain_field is not None else spec.extract
        keys = list(map(get, rows.values()))
        types = set(map(type, keys))
        types.discard(type(None))
        if len(types) > 1 or not types <= {str, int}:
            return None
        unique = spec.unique
        groups: dict[Any, Any] = {}
        held_by = groups.get
        for id, key in zip(rows, keys, strict=True):
            if key is None:
                if spec.required:
                    return None  # write() raises the precise error
                continue
            held = held_by(key)
            if held is None:
                groups[key] = id
            elif type(held) is str:
                if unique:
                    return None
                groups[key] = [held, id]
            else:
                held.append(id)
        for key, held in groups.items():
            if type(held) is list:
                bucket = groups[key] = LazySortedSet()
                bucket.update(held)
        return groups

    def load(self, buckets: dict[Any, Any]) -> None:
        """Install buckets made by ``bulk_buckets`` into this empty index."""
        self.buckets.update(buckets)  # the same dict: the compiled write holds it
        self.keys.update(buckets)
        if buckets:
            key = next(iter(buckets))
            self.family = key_family(key)
            self.key_type = type(key)


class TableState:
    """The live objects of one table and their indexes."""

    __slots__ = ("ids", "indexes", "name", "rows", "table", "write")

    def __init__(self, table: Table) -> None:
        self.table = table
        self.name = table.name
        self.rows: dict[str, Any] = {}
        self.ids = LazySortedSet()
        self.indexes: dict[str, IndexState] = {
            name: IndexState(spec) for name, spec in table.index_specs.items()
        }
        self.write: Callable[[str, Any, Any], None] = compile_write(self)
        """``write(id, old, new)``: replace ``old`` (None = absent) by ``new`` (None = delete).

        Every key of ``new`` is checked (orderable, unique) before anything changes, so on an
        exception the table is exactly as it was. See ``core/writer.py``.
        """

    def load(self, rows: dict[str, Any]) -> None:
        """Fill this empty table with ``rows`` (id -> object) at once: the indexes are built
        in one pass each and sorted lazily, as writes leave them. Where an index needs the
        per-object checks, every object goes through ``write`` instead (nothing is changed
        before that choice), which raises what an invalid object would raise there."""
        if self.rows:
            raise StoreError(f"table {self.name} is not empty: it cannot be loaded in bulk")
        built = {}
        for name, index in self.indexes.items():
            buckets = index.bulk_buckets(rows)
            if buckets is None:
                write = self.write
                for id, obj in rows.items():
                    write(id, None, obj)
                return
            built[name] = buckets
        self.rows.update(rows)  # the same dict: the compiled write holds it
        self.ids.update(rows)
        for name, buckets in built.items():
            self.indexes[name].load(buckets)

    def index(self, name: str) -> IndexState:
        """Return the index called ``name`` or raise InvalidQuery."""
        index = self.indexes.get(name)
        if index is None:
            raise InvalidQuery(
                f"{self.name} has no index {name!r}; its indexes are "
                f"{', '.join(['id', *self.indexes])}"
            )
        return index

    def ordered_ids(
        self,
        index_name: str,
        condition: Any,
        *,
        reverse: bool = False,
        start: tuple[Any, str] | None = None,
    ) -> Iterator[str]:
        """Yield the ids matching a normalised condition on an index, in index order (by
        key, then id; descending if ``reverse``), lazily: the first k cost O(log n + k).

        ``start`` is a position ``(key, id)``: only entries after it (before it, if
        ``reverse``) are yielded. A multi-valued index yields each id once, at its smallest
        matching key (``position``). Valid until the table is next written.
        """
        if index_name == "id":
            keys = self.ids.ordered()
            buckets: dict[Any, Any] | None = None
            present: Any = self.rows
        else:
            index = self.index(index_name)
            keys = index.keys.ordered()
            buckets = present = index.buckets
        ranges = key_ranges(condition)
        start_key = start_id = None
        if start is not None:
            start_key, start_id = start
            ranges = [r for r in map(_bounded(start_key, reverse), ranges) if r is not None]
        if len(ranges) == 1:
            found = _keys_in(keys, present, ranges[0], reverse)
        else:
            found = _distinct(
                heapq.merge(*(_keys_in(keys, present, r, reverse) for r in ranges), reverse=reverse)
            )
        if buckets is None:  # the id index: each key is an id
            if start is None:
                yield from found
            else:
                for id in found:
                    if id != start_id:
                        yield id
            return
        if self.indexes[index_name].spec.multi:
            # Each object once, at its position (its smallest matching key), in whichever
            # direction the entries come.
            locate = locator(self, index_name, condition)
            rows = self.rows
            for key, id in _entries_of_keys(found, buckets, reverse, start_key, start_id):
                if key == locate(rows[id]):
                    yield id
            return
        if start_id is not None:
            for _key, id in _entries_of_keys(found, buckets, reverse, start_key, start_id):
                yield id
            return
        for key in found:
            bucket = buckets[key]
            if type(bucket) is str:
                yield bucket
            elif reverse:
                yield from reversed(bucket.ordered())
            else:
                yield from bucket.ordered()


def position(table: Table | TableState, index_name: str, condition: Any, obj: Any) -> Any:
    """The key ``obj`` is ordered by in a scan of ``index_name`` with ``condition``: its id
    for the id index, its key, or (multi-valued) its smallest key matching the condition;
    None if it has none."""
    return locator(table, index_name, condition)(obj)


def locator(table: Table | TableState, index_name: str, condition: Any) -> Callable[[Any], Any]:
    """``position`` for one scan, as a function of the object alone."""
    if index_name == "id":
        return attrgetter("id")
    specs = table.table.index_specs if isinstance(table, TableState) else table.index_specs
    spec = specs[index_name]
    if not spec.multi:
        return spec.extract
    extract = spec.extract
    matches = key_matcher(condition)

    def smallest(obj: Any) -> Any:
        return min((k for k in extract(obj) if matches(k)), default=None)

    return smallest


def _bounded(start: Any, reverse: bool) -> Callable[[KeyRange], KeyRange | None]:
    """Narrow a key range to the keys at or after ``start`` (at or before, if ``reverse``);
    None if nothing is left."""

    def narrow(r: KeyRange) -> KeyRange | None:
        low, high, low_in, high_in = r
        if reverse:
            if high is None or start < high:
                high, high_in = start, True
        elif low is None or start > low:
            low, low_in = start, True
        if (
            low is not None
            and high is not None
            and (low > high or (low == high and not (low_in and high_in)))
        ):
            return None
        return low, high, low_in, high_in

    return narrow


def _keys_in(keys: SortedList[Any], present: Any, r: KeyRange, reverse: bool) -> Iterator[Any]:
    """The keys of the SortedList ``keys`` in range ``r``; an equality range is looked up in
    ``present`` (a dict holding the same keys) instead."""
    low, high, low_in, high_in = r
    if low is not None and low_in and high_in and low is high:
        return iter((low,) if low in present else ())
    if (
        low is not None
        and high is not None
        and (low > high or (low == high and not (low_in and high_in)))
    ):
        return iter(())
    return keys.irange(low, high, (low_in, high_in), reverse=reverse)


def _entries_of_keys(
    keys: Iterator[Any],
    buckets: dict[Any, Any],
    reverse: bool,
    start_key: Any,
    start_id: str | None,
) -> Iterator[tuple[Any, str]]:
    """(key, id) of the holders of ``keys`` in order; past ``start_id`` at ``start_key``."""
    for key in keys:
        bucket = buckets[key]
        if type(bucket) is str:
            if (
                start_id is None
                or key != start_key
                or (bucket < start_id if reverse else bucket > start_id)
            ):
                yield key, bucket
            continue
        ordered = bucket.ordered()
        if start_id is not None and key == start_key:
            if reverse:
                ids = ordered.irange(None, start_id, (True, False), reverse=True)
            else:
                ids = ordered.irange(start_id, None, (False, True))
        else:
            ids = reversed(ordered) if reverse else iter(ordered)
        for id in ids:
            yield key, id


def _distinct(keys: Iterator[Any]) -> Iterator[Any]:
    """``keys`` (ordered) without repeats: overlapping ranges of an any_of meet."""
    last: Any = _distinct
    for key in keys:
        if key != last:
            last = key
            yield key


def restore_tables(
    tables: Mapping[str, TableState],
    objects: Mapping[str, Sequence[Any]],
    changes: Sequence[Change],
) -> list[Change]:
    """Load a snapshot's ``objects``, then ``changes`` after it, into empty ``tables``.

    The changes are folded into the rows first and every table is then loaded once
    (``TableState.load``): replaying them one transaction at a time would maintain the
    indexes object by object. Returns the changes as committing them here gives them (what
    ``StoreState.apply`` returns): an UPDATE carries the object it replaced, a DELETE the
    object it removed, and an action's kind follows the state. A decoded change that only
    creates new objects is returned as it is.
    """
    rows_of: dict[str, dict[str, Any]] = {name: {} for name in tables}
    for name, objs in objects.items():
        rows_of[name].update(zip(map(attrgetter("id"), objs), objs, strict=True))
    committed: list[Change] = []
    for change in changes:
        actions = change.actions
        if type(actions) is LoggedActions and _only_creates(actions, rows_of):
            committed.append(change)  # as decoded: each action a CREATE of a new object
            continue
        # Action by action, as StoreState.apply does: the net effect per object, in the
        # order objects first appear (an UPDATE with the object it replaced).
        net: dict[tuple[str, str], list[Any]] = {}
        for action in actions:
            name = action.table
            rows = rows_of[name]
            id = action.obj.id
            current = rows.get(id)
            if action.kind is DELETE:
                if current is None:
                    raise StoreError(
                        f"version {change.version.index} deletes {name} {id!r}, which does "
                        "not exist at that point of the log"
                    )
                del rows[id]
                new = None
            else:
                new = rows[id] = action.obj
            entry = net.get((name, id))
            if entry is None:
                net[name, id] = [current, new]
            else:
                entry[1] = new
        out = []
        for (name, _id), (old, new) in net.items():
            if old is new:
                continue
            if old is None:
                out.append(new_action(CREATE, name, new, None))
            elif new is None:
                out.append(new_action(DELETE, name, old, None))
            else:
                out.append(new_action(UPDATE, name, new, old))
        committed.append(new_change(change.version, out))
    for name, table in tables.items():
        table.load(rows_of[name])
    return committed


def _only_creates(actions: LoggedActions, rows_of: dict[str, dict[str, Any]]) -> bool:
    """If every action of a decoded change creates an object whose id is new (the common
    case: a batch of creates), add them to the rows and return True; else change nothing
    and return False (the caller then goes action by action)."""
    kinds, tables = actions.kinds, actions.tables
    if not tables:
        return True
    name = tables[0]
    if kinds.count(CREATE) != len(kinds) or tables.count(name) != len(tables):
        return False
    rows = rows_of[name]
    ids = [obj.id for obj in actions.objs]
    if len(set(ids)) != len(ids) or not rows.keys().isdisjoint(ids):
        return False
    rows.update(zip(ids, actions.objs, strict=True))
    return True
