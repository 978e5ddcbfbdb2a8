"""Read and write transactions over the live tables.

A ``Tx`` applies each write to the live tables at once (the *tip*) and remembers what it
replaced, so reads inside it see its own writes through the real indexes, aborting replays the
writes in reverse, and a savepoint is a position in that undo list. Other readers never see an
unfinished transaction: while one is open or awaiting its proposer, readers of the committed
state (``view`` and snapshots) look through an *overlay* of the replaced objects (see
``core/state.py``), so the hot path of a quiet store stays a plain dict lookup.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .errors import (
    InvalidObject,
    InvalidQuery,
    ObjectExists,
    ObjectNotFound,
    SequenceConflict,
    StoreError,
)
from .model import Meta, StoreAction, Version, action_fields, new_action, new_meta
from .query import AnyOf, Between, Prefix
from .schema import IndexSpec, key_family
from .tables import TableState

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .state import StoreState


T = TypeVar("T")

# (table name, id) -> [value before the transaction, value now]; None means absent.
Changes = dict[tuple[str, str], list[Any]]


class _Ended(dict[type, TableState]):
    """Stands in for the table map of a transaction that has ended: every read raises.

    Swapping the map costs nothing on the read path, unlike an "ended" flag checked per read.
    """

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def __getitem__(self, key: type) -> TableState:
        raise StoreError(self.message)


VIEW_ENDED: Final = _Ended(
    "this ReadTx ended when its view() returned; use store.snapshot() to read across awaits"
)
TX_ENDED: Final = _Ended(
    "this transaction has ended; read the store with store.view() or store.snapshot()"
)
SNAPSHOT_CLOSED: Final = _Ended("this snapshot was closed; take a new one with store.snapshot()")


class ReadTx:
    """A consistent, read-only view of the store at one version.

    Objects returned are the stored frozen objects themselves: no copies, and no way to change
    them. Results of ``find`` come in index order (by key, then by id).
    """

    __slots__ = ("_tables", "version")

    def __init__(self, tables: dict[type, TableState], version: Version) -> None:
        self._tables = tables
        self.version = version
        """The version this transaction reads at (the last commit it sees)."""

    def _table(self, cls: type, error: type[StoreError] = InvalidQuery) -> TableState:
        try:
            return self._tables[cls]
        except (KeyError, TypeError):
            given: object = cls  # checked at run time: a slip is common
            if isinstance(given, str):
                named = [t for t in self._tables.values() if t.name == given]
                which = named[0].table.cls.__name__ if named else "the class"
                raise error(
                    f"pass the class {which}, not the name {given!r}: tx.get({which}, id)"
                ) from None
            raise error(
                f"no table holds {getattr(cls, '__name__', cls)} objects; the schema has "
                f"{', '.join(t.name for t in self._tables.values())}"
            ) from None

    def get(self, cls: type[T], id: str) -> T | None:
        """Return the object of type ``cls`` with ``id``, or None."""
        try:
            return self._tables[cls].rows.get(id)
        except KeyError:
            self._table(cls)
            raise

    def find(self, cls: type[T], **condition: Any) -> list[T]:
        """Return the objects matching one index condition, in index order.

        ``find(Task, node_id="n1")`` (equality), ``prefix(...)``, ``between(...)`` and
        ``any_of(...)`` conditions; ``id=`` uses the primary index. With no condition, all
        objects in id order.
        """
        table = self._table(cls)
        index_name, normalized = parse_condition(table, condition)
        rows = table.rows
        return [rows[id] for id in table.scan(index_name, normalized)]

    def first(self, cls: type[T], **condition: Any) -> T | None:
        """Return the first object ``find`` would return, or None."""
        table = self._table(cls)
        index_name, normalized = parse_condition(table, condition)
        for id in table.scan(index_name, normalized):
            return table.rows[id]  # type: ignore[no-any-return]
        return None

    def count(self, cls: type, **condition: Any) -> int:
        """Return how many objects ``find`` would return."""
        table = self._table(cls)
        if not condition:
            return len(table.rows)
        index_name, normalized = parse_condition(table, condition)
        return sum(1 for _ in table.scan(index_name, normalized))

    def all(self, cls: type[T]) -> list[T]:
        """Return every object of type ``cls``, in id order."""
        table = self._table(cls)
        rows = table.rows
        return [rows[id] for id in table.ids.ordered()]

    def _end(self, ended: _Ended) -> None:
        self._tables = ended


def parse_condition(table: TableState, condition: dict[str, Any]) -> tuple[str, Any]:
    """Split ``find`` keywords into an index name and a normalised condition."""
    if not condition:
        return "id", None
    if len(condition) != 1:
        raise InvalidQuery(
            f"find takes one index condition, got {', '.join(condition)}; "
            "filter the rest in Python or declare a compound Index(key=...)"
        )
    ((name, value),) = condition.items()
    if name == "id":
        return name, _id_condition(table.name, value)
    index = table.index(name)
    normalized = _normalize_condition(index.spec, value)
    if index.family is not None:
        for key, is_prefix in _condition_keys(normalized):
            if not _comparable(key, index.family, is_prefix):
                raise InvalidQuery(
                    f"{table.name}.{name} holds keys like {next(iter(index.buckets))!r}; "
                    f"{key!r} cannot be compared with them"
                )
    return name, normalized


def _id_condition(table: str, value: Any) -> Any:
    """An ``id=`` condition, checked as other indexes' are: ids are non-empty strs."""
    if value is None:
        raise InvalidQuery(
            f"{table}.id is never None (ids are non-empty strs): find(id=None) would match "
            "nothing; drop the condition to read every object"
        )
    for key, _is_prefix in _condition_keys(value):
        if type(key) is not str:
            raise InvalidQuery(
                f"{table}.id holds str ids; {key!r} ({type(key).__name__}) cannot be compared "
                "with them"
            )
    return value


def _comparable(key: Any, family: Any, is_prefix: bool) -> bool:
    try:
        key_fam = key_family(key)
    except TypeError:
        return False
    if key_fam == family:
        return True
    # A tuple prefix of a compound key has a prefix of its family.
    return (
        is_prefix
        and isinstance(key_fam, tuple)
        and isinstance(family, tuple)
        and (key_fam == family[: len(key_fam)])
    )


def _normalize_condition(spec: IndexSpec, value: Any) -> Any:
    norm = spec.normalize_query
    if isinstance(value, Prefix):
        return Prefix(norm(value.value))
    if isinstance(value, Between):
        low = None if value.low is None else norm(value.low)
        high = None if value.high is None else norm(value.high)
        return Between(low, high, value.inclusive)
    if isinstance(value, AnyOf):
        return AnyOf(tuple(norm(v) for v in value.values))
    if value is None:
        raise InvalidQuery(
            f"index {spec.name!r} does not hold None: objects whose key is None are not "
            "indexed; use find() with no condition and filter"
        )
    return norm(value)


def _condition_keys(condition: Any) -> Iterable[tuple[Any, bool]]:
    """The keys a condition compares with, each flagged if it is a prefix."""
    if isinstance(condition, Prefix):
        return ((condition.value, True),)
    if isinstance(condition, Between):
        return [(v, False) for v in (condition.low, condition.high) if v is not None]
    if isinstance(condition, AnyOf):
        return [(v, False) for v in condition.values]
    return ((condition, False),)


class Tx(ReadTx):
    """A write transaction: a :class:`ReadTx` that also creates, updates and deletes.

    Writes are visible to this transaction's own reads at once. If the function given to
    ``store.update`` raises, every write is undone and nothing is committed. Objects written
    get ``meta.version`` of the commit, ``created_at`` when first created and ``updated_at``
    at every write.
    """

    __slots__ = (
        "_meta_create",
        "_now",
        "_state",
        "_undo",
        "changes",
        "committed",
        "proposed",
        "restamped",
    )

    def __init__(self, state: StoreState, version: Version) -> None:
        self._tables = state.tables
        self.version = version
        self._state = state
        self.changes: Changes = {}
        # Undo list: (table, id, value before this write, whether the write opened the entry)
        self._undo: list[tuple[TableState, str, Any, bool]] = []
        self._now = 0.0  # read from the clock at the first write; reads need no time
        self.proposed: list[StoreAction] | None = None  # the actions handed to the proposer
        self.restamped: dict[int, tuple[Any, Any]] | None = None
        """If the proposer committed at another version than predicted: ``id()`` of each
        object the transaction wrote -> (that object, it stamped with the committed
        version)."""
        self.committed = False
        self._meta_create: Meta | None = None  # shared by every create of this transaction

    # -- writes ---------------------------------------------------------------------------

    def _apply(self, table: TableState, id: str, old: Any, new: Any) -> None:
        table.write(id, old, new)
        key = (table.name, id)
        entry = self.changes.get(key)
        if entry is None:
            self.changes[key] = [old, new]
            self._undo.append((table, id, old, True))
        else:
            entry[1] = new
            self._undo.append((table, id, old, False))

    def create(self, obj: T) -> T:
        """Store a new object; ObjectExists if its id is taken. Returns the stored object."""
        try:
            table = self._tables[type(obj)]
        except KeyError:
            table = self._table(type(obj), InvalidObject)  # raises the precise error
        id = table.table.check(obj)
        current = table.rows.get(id)
        if current is not None:
            raise ObjectExists(current)
        new = table.table.restamp(obj, self._meta_create or self._first_meta())
        self._apply(table, id, None, new)
        return new  # type: ignore[no-any-return]

    def _first_meta(self) -> Meta:
        now = self._now
        if not now:
            now = self._now = time.time()  # self._clock(), without the call
        meta = self._meta_create = new_meta(self.version, now, now)
        return meta

    def _clock(self) -> float:
        self._now = now = time.time()
        return now

    def update(self, obj: T) -> T:
        """Replace a stored object; ``obj.meta.version`` must be the stored one.

        ObjectNotFound if absent, SequenceConflict (carrying the current object) if ``obj`` was
        made from an older copy. Returns the stored object.
        """
        table = self._table(type(obj), InvalidObject)
        id = table.table.check(obj)
        current = table.rows.get(id)
        if current is None:
            raise ObjectNotFound(table.name, id)
        given = obj.meta.version  # type: ignore[attr-defined]
        if given != current.meta.version:
            raise SequenceConflict(current, given)
        return self._replace(table, id, current, obj)  # type: ignore[no-any-return]

    def upsert(self, obj: T) -> T:
        """Create or replace an object regardless of its version (Calico's Apply)."""
        table = self._table(type(obj), InvalidObject)
        id = table.table.check(obj)
        current = table.rows.get(id)
        if current is None:
            new = table.table.restamp(obj, self._meta_create or self._first_meta())
            self._apply(table, id, None, new)
            return new  # type: ignore[no-any-return]
        return self._replace(table, id, current, obj)  # type: ignore[no-any-return]

    def _replace(self, table: TableState, id: str, current: Any, obj: Any) -> Any:
        meta = new_meta(self.version, current.meta.created_at, self._now or self._clock())
        new = table.table.restamp(obj, meta)
        self._apply(table, id, current, new)
        return new

    def delete(self, obj_or_cls: Any, id: str | None = None) -> Any:
        """Delete ``delete(Type, id)``, or ``delete(obj)`` checking ``obj.meta.version``.

        ObjectNotFound if absent; SequenceConflict if ``obj`` is stale. Returns the removed
        object.
        """
        if id is None:
            obj = obj_or_cls
            table = self._table(type(obj), InvalidObject)
            id = table.table.check(obj)
        else:
            obj = None
            table = self._table(obj_or_cls)
            if type(id) is not str:
                raise InvalidObject(f"delete() takes a str id, got {id!r}")
        current = table.rows.get(id)
        if current is None:
            raise ObjectNotFound(table.name, id)
        if obj is not None and obj.meta.version != current.meta.version:
            raise SequenceConflict(current, obj.meta.version)
        self._apply(table, id, current, None)
        return current

    # -- savepoints and the change set ------------------------------------------------------

    def savepoint(self) -> int:
        """Return a mark that ``rollback_to`` undoes back to."""
        return len(self._undo)

    def rollback_to(self, mark: int) -> None:
        """Undo every write made after ``mark``, newest first."""
        undo = self._undo
        changes = self.changes
        while len(undo) > mark:
            table, id, before, opened = undo.pop()
            table.write(id, table.rows.get(id), before)
            key = (table.name, id)
            if opened:
                del changes[key]
            else:
                changes[key][1] = before

    def actions(self) -> list[StoreAction]:
        """The net effect of this transaction, one action per changed object, in order."""
        out: list[StoreAction] = []
        for (table, _id), (old, new) in self.changes.items():
            if old is not new:
                out.append(new_action(*action_fields(table, old, new)))
        return out

    @property
    def change_count(self) -> int:
        """How many objects this transaction has changed so far."""
        return len(self.changes)


class TrackingTx(Tx):
    """A :class:`Tx` that also records every object its reads returned (``reads``: the
    object, or None for a ``get`` that found nothing), for proposers that check at commit
    that nothing read has changed since. ``count`` is not recorded."""

    __slots__ = ("reads",)

    def __init__(self, state: StoreState, version: Version) -> None:
        super().__init__(state, version)
        self.reads: dict[tuple[str, str], Any] = {}

    def _note(self, cls: type, objects: Iterable[Any]) -> None:
        name = self._tables[cls].name
        reads = self.reads
        for obj in objects:
            reads.setdefault((name, obj.id), obj)

    def get(self, cls: type[T], id: str) -> T | None:
        obj = super().get(cls, id)
        key = (self._tables[cls].name, id)
        if key not in self.changes:
            self.reads.setdefault(key, obj)
        return obj

    def find(self, cls: type[T], **condition: Any) -> list[T]:
        found = super().find(cls, **condition)
        self._note(cls, found)
        return found

    def first(self, cls: type[T], **condition: Any) -> T | None:
        obj = super().first(cls, **condition)
        if obj is not None:
            self._note(cls, (obj,))
        return obj

    def all(self, cls: type[T]) -> list[T]:
        found = super().all(cls)
        self._note(cls, found)
        return found
