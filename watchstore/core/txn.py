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
from collections.abc import Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

from .codec import LoggedActions
from .errors import (
    InvalidObject,
    InvalidQuery,
    ObjectExists,
    ObjectNotFound,
    SequenceConflict,
    StoreError,
)
from .fieldtypes import object_size
from .model import ActionKind, Meta, StoreAction, Version, new_action, new_meta
from .query import AnyOf, Between, Prefix
from .schema import IndexSpec, families_agree, key_family
from .tables import TableState, position

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from .state import StoreState


T = TypeVar("T")
CREATE, UPDATE, DELETE = ActionKind.CREATE, ActionKind.UPDATE, ActionKind.DELETE

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

    def iter(
        self,
        cls: type[T],
        *,
        limit: int | None = None,
        reverse: bool = False,
        after: T | None = None,
        **condition: Any,
    ) -> Iterator[T]:
        """Iterate lazily over the objects matching one index condition, in index order (by
        key, then id), or in reverse order with ``reverse=True``.

        The condition is as for :meth:`find`; ``limit`` stops after that many objects;
        ``after=obj`` starts after ``obj``'s position in the index used (its key there and
        its id, taken from ``obj`` itself, so an object since changed or deleted still marks
        its place): with ``reverse=True``, the objects before it, descending. The first k
        objects cost O(log n + k) on the live store and on snapshots (plus the objects
        changed since the snapshot). Errors in the condition raise at the call.

        Objects are read a page at a time (growing from 16 to 1024), each page in one step;
        a snapshot's iterator stays valid across awaits. Inside ``view`` or ``update`` it
        ends with the function; writes the transaction makes while iterating are seen by
        the pages read after them, which resume after the last object returned.
        """
        table = self._table(cls)
        index_name, normalized = parse_condition(table, condition)
        _check_limit(limit)
        start = None if after is None else _start(table, index_name, normalized, after)
        return self._pages(cls, index_name, normalized, limit, reverse, start)

    def _pages(
        self,
        cls: type[T],
        index_name: str,
        condition: Any,
        limit: int | None,
        reverse: bool,
        start: tuple[Any, str] | None,
    ) -> Iterator[T]:
        size = FIRST_PAGE
        left = limit
        while left is None or left > 0:
            want = size if left is None else min(size, left)
            table = self._table(cls)  # raises once the transaction has ended
            page = list(islice(self._objects(table, index_name, condition, reverse, start), want))
            yield from page
            if len(page) < want:
                return
            if left is not None:
                left -= want
            last: Any = page[-1]
            start = (position(table, index_name, condition, last), last.id)
            size = min(size * 2, MAX_PAGE)

    def find(
        self,
        cls: type[T],
        *,
        limit: int | None = None,
        reverse: bool = False,
        after: T | None = None,
        **condition: Any,
    ) -> list[T]:
        """Return the objects matching one index condition, in index order (key, then id).

        ``find(Task, node_id="n1")`` (equality), ``prefix(...)``, ``between(...)`` and
        ``any_of(...)`` conditions; ``id=`` uses the primary index. With no condition, all
        objects in id order. ``limit``, ``reverse`` and ``after`` are as for :meth:`iter`:
        ``find(Task, limit=10, after=page[-1], node_id="n1")`` is the next page.
        """
        table = self._table(cls)
        index_name, normalized = parse_condition(table, condition)
        start = None if after is None else _start(table, index_name, normalized, after)
        found = self._objects(table, index_name, normalized, reverse, start)
        if limit is None:
            return list(found)
        _check_limit(limit)
        return list(islice(found, limit))

    def first(self, cls: type[T], **condition: Any) -> T | None:
        """Return the first object ``find`` would return, or None; O(log n)."""
        table = self._table(cls)
        index_name, normalized = parse_condition(table, condition)
        return next(self._objects(table, index_name, normalized, False, None), None)

    def last(self, cls: type[T], **condition: Any) -> T | None:
        """Return the last object ``find`` would return, or None; O(log n)."""
        table = self._table(cls)
        index_name, normalized = parse_condition(table, condition)
        return next(self._objects(table, index_name, normalized, True, None), None)

    def count(self, cls: type, **condition: Any) -> int:
        """Return how many objects ``find`` would return."""
        table = self._table(cls)
        if not condition:
            return len(table.rows)
        index_name, normalized = parse_condition(table, condition)
        return sum(1 for _ in table.ordered_ids(index_name, normalized))

    def all(self, cls: type[T]) -> list[T]:
        """Return every object of type ``cls``, in id order."""
        table = self._table(cls)
        rows = table.rows
        return [rows[id] for id in table.ids.ordered()]

    def find_any(self, cls: type[T], *conditions: Mapping[str, Any]) -> list[T]:
        """Return the objects matching any of ``conditions``, each once, in id order.

        Each condition is a dict of one index condition, as ``find`` takes them as
        keywords, on any index: ``find_any(Task, {"node_id": "n1"}, {"id": prefix("x")})``
        (SwarmKit's ``Or``). An empty dict matches every object.
        """
        table = self._table(cls)
        parsed = []
        for condition in conditions:
            if not isinstance(condition, Mapping):
                raise InvalidQuery(
                    f"find_any takes conditions as dicts, like {{'node_id': 'n1'}}; got "
                    f"{condition!r:.80}"
                )
            parsed.append(parse_condition(table, dict(condition)))
        found: dict[str, Any] = {}
        for index_name, normalized in parsed:
            for obj in self._objects(table, index_name, normalized, False, None):
                found[obj.id] = obj
        return [found[id] for id in sorted(found)]

    def _objects(
        self,
        table: TableState,
        index_name: str,
        condition: Any,
        reverse: bool,
        start: tuple[Any, str] | None,
    ) -> Iterator[Any]:
        """The objects of a scan (see ``TableState.ordered_ids``), lazily: valid until the
        next write. Readers of an older version override this."""
        ids = table.ordered_ids(index_name, condition, reverse=reverse, start=start)
        return map(table.rows.__getitem__, ids)

    def _end(self, ended: _Ended) -> None:
        self._tables = ended


FIRST_PAGE: Final = 16
"""Objects ``iter`` reads in its first page; each next page is twice as large..."""
MAX_PAGE: Final = 1024
"""...up to this many."""


def _check_limit(limit: int | None) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidQuery(f"limit must be None or an int >= 0, got {limit!r}")


def _start(table: TableState, index_name: str, condition: Any, after: Any) -> tuple[Any, str]:
    """The position ``(key, id)`` of ``after=obj`` in a scan (see ``tables.position``)."""
    if type(after) is not table.table.cls:
        raise InvalidQuery(
            f"after= takes a {table.table.cls.__name__} (the last object of the page before), "
            f"not {after!r:.80}"
        )
    key = position(table, index_name, condition, after)
    if key is None:
        raise InvalidQuery(
            f"after=: {table.name} {after.id!r} has no key in index {index_name!r}"
            + (" that matches the condition" if table.indexes[index_name].spec.multi else "")
            + ", so it marks no place there; pass an object the scan returned"
        )
    if index_name != "id":
        family = table.indexes[index_name].family
        if family is not None and not _comparable(key, family):
            raise InvalidQuery(
                f"after=: the key {key!r} of {table.name} {after.id!r} cannot be compared with "
                f"the keys of index {index_name!r}"
            )
    return key, after.id


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
        for key in _condition_keys(normalized):
            if not _comparable(key, index.family):
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
    if isinstance(value, AnyOf):
        value = AnyOf(tuple(_flat(value)))
    for key in _condition_keys(value):
        if type(key) is not str:
            raise InvalidQuery(
                f"{table}.id holds str ids; {key!r} ({type(key).__name__}) cannot be compared "
                "with them"
            )
    _check_shape(value)
    return value


def _comparable(key: Any, family: Any) -> bool:
    try:
        key_fam = key_family(key)
    except TypeError:
        return False
    # Compound keys of different lengths, and tuple prefixes, agree position by position.
    return key_fam == family or families_agree(key_fam, family)


def _normalize_condition(spec: IndexSpec, value: Any) -> Any:
    norm = spec.normalize_query
    if isinstance(value, Prefix):
        inner = value.value
        if type(inner) is tuple and inner and isinstance(inner[-1], Prefix):
            normalized: Any = Prefix((*norm(inner[:-1]), Prefix(norm(inner[-1].value))))
        else:
            normalized = Prefix(norm(inner))
        _check_shape(normalized)
        return normalized
    if isinstance(value, Between):
        low = None if value.low is None else norm(value.low)
        high = None if value.high is None else norm(value.high)
        return Between(low, high, value.inclusive)
    if isinstance(value, AnyOf):
        return AnyOf(tuple(_normalize_condition(spec, v) for v in _flat(value)))
    if value is None:
        raise InvalidQuery(
            f"index {spec.name!r} does not hold None: objects whose key is None are not "
            "indexed; use find() with no condition and filter"
        )
    return norm(value)


def _flat(condition: AnyOf) -> Iterator[Any]:
    """The values of an any_of, nested any_ofs spread out."""
    for value in condition.values:
        if isinstance(value, AnyOf):
            yield from _flat(value)
        else:
            yield value


def _check_shape(condition: Any) -> None:
    """Refuse a prefix that is not a str, bytes or tuple (whose last part may be a str or
    bytes prefix), before it reaches an index."""
    if isinstance(condition, AnyOf):
        for value in condition.values:
            _check_shape(value)
        return
    if not isinstance(condition, Prefix):
        return
    value = condition.value
    if isinstance(value, tuple):
        parts = [i for i, v in enumerate(value) if isinstance(v, Prefix)]
        if not parts or (parts == [len(value) - 1] and isinstance(value[-1].value, (str, bytes))):
            return
        raise InvalidQuery(
            f"in a tuple prefix only the last part may be a prefix, of a str or bytes: "
            f"{value!r} cannot be compared with compound keys"
        )
    if not isinstance(value, (str, bytes)):
        raise InvalidQuery(
            f"a prefix is a str, bytes or tuple; {value!r} ({type(value).__name__}) cannot be "
            "compared with keys as a prefix; use between() for a range of numbers"
        )


def _condition_keys(condition: Any) -> list[Any]:
    """The keys a condition compares with (a tuple prefix ending in a prefix: the tuple with
    that prefix's value)."""
    if isinstance(condition, Prefix):
        value = condition.value
        if type(value) is tuple and value and isinstance(value[-1], Prefix):
            return [(*value[:-1], value[-1].value)]
        return [value]
    if isinstance(condition, Between):
        return [v for v in (condition.low, condition.high) if v is not None]
    if isinstance(condition, AnyOf):
        return [k for v in condition.values for k in _condition_keys(v)]
    return [condition]


class Savepoint(NamedTuple):
    """A point of a transaction to roll back to: how many undo entries and ``on_commit``
    callbacks it had."""

    undo: int
    callbacks: int


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
        "_on_commit",
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
        self.proposed: Sequence[StoreAction] | None = None  # the actions handed to the proposer
        self.restamped: dict[int, tuple[Any, Any]] | None = None
        """If the proposer committed at another version than predicted: ``id()`` of each
        object the transaction wrote -> (that object, it stamped with the committed
        version)."""
        self.committed = False
        self._meta_create: Meta | None = None  # shared by every create of this transaction
        self._on_commit: list[Callable[[], object]] = []

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
        spec = table.table
        new = spec.restamp(obj, self._meta_create or self._first_meta())
        table.write(id, None, new)
        # self._apply(table, id, None, new), without the call: creates fill bulk loads
        key = (spec.name, id)
        changes = self.changes
        entry = changes.get(key)
        if entry is None:
            changes[key] = [None, new]
            self._undo.append((table, id, None, True))
        else:  # deleted earlier in this transaction
            entry[1] = new
            self._undo.append((table, id, None, False))
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

    def delete_where(self, cls: type, **condition: Any) -> int:
        """Delete every object ``find(cls, **condition)`` returns; return how many.

        Each deletion is as ``delete(cls, id)``'s: one ``Deleted`` event per object when the
        transaction commits (go-memdb's ``DeleteAll``; with ``id=ws.prefix(...)``, its
        ``DeletePrefix``).
        """
        table = self._table(cls)
        index_name, normalized = parse_condition(table, condition)
        doomed = list(self._objects(table, index_name, normalized, False, None))
        apply = self._apply
        for obj in doomed:
            apply(table, obj.id, obj, None)
        return len(doomed)

    def on_commit(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once this transaction has committed (go-memdb's ``Txn.Defer``).

        Callbacks run in the order they were registered, after the commit is applied and
        published and the writers' lock released, before ``update`` returns (for a batch:
        when the chunk holding them commits); a transaction that changed nothing runs them
        when it ends. They never run if the transaction aborts (its function raised, or a
        ``batch.update`` was undone) or its proposal fails. If one raises, the others still
        run and the first exception propagates from ``update``: the commit stands.
        """
        self._on_commit.append(fn)

    def run_on_commit(self) -> None:
        """Run (and forget) the callbacks of :meth:`on_commit`, once the transaction has
        committed."""
        callbacks = self._on_commit
        if not callbacks:
            return
        self._on_commit = []
        error: Exception | None = None
        for fn in callbacks:
            try:
                fn()
            except Exception as exc:  # the others still run; the first is raised after them
                if error is None:
                    error = exc
        if error is not None:
            error.add_note(
                "watchstore: raised by an on_commit callback; the transaction had committed"
            )
            raise error

    # -- savepoints and the change set ------------------------------------------------------

    def savepoint(self) -> Savepoint:
        """Return a mark that ``rollback_to`` undoes back to."""
        return Savepoint(len(self._undo), len(self._on_commit))

    def rollback_to(self, mark: Savepoint) -> None:
        """Undo every write made after ``mark``, newest first, and forget the ``on_commit``
        callbacks registered after it."""
        undo = self._undo
        changes = self.changes
        del self._on_commit[mark.callbacks :]
        while len(undo) > mark.undo:
            table, id, before, opened = undo.pop()
            table.write(id, table.rows.get(id), before)
            key = (table.name, id)
            if opened:
                del changes[key]
            else:
                changes[key][1] = before

    def actions(self) -> Sequence[StoreAction]:
        """The net effect of this transaction, one action per changed object, in order.

        A transaction that only created objects (a bulk load) gets them as a
        ``LoggedActions``, the compact form a decoded log change has: three lists rather than
        a StoreAction per object, which the history would keep and Python's cyclic collector
        scan again and again; ``size`` is what the history counts them as.
        """
        changes = self.changes
        for old, new in changes.values():
            if old is not None or new is None:
                break
        else:
            objs = [entry[1] for entry in changes.values()]
            tables = [table for table, _id in changes]
            kinds = [CREATE] * len(objs)
            return LoggedActions(kinds, tables, objs, sum(map(object_size, objs)))
        out: list[StoreAction] = []
        append = out.append
        for (table, _id), (old, new) in self.changes.items():
            # new_action(*action_fields(table, old, new)), without the call
            if old is None:
                if new is not None:
                    append(new_action(CREATE, table, new, None))
            elif new is None:
                append(new_action(DELETE, table, old, None))
            elif old is not new:
                append(new_action(UPDATE, table, new, old))
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

    def get(self, cls: type[T], id: str) -> T | None:
        obj = super().get(cls, id)
        key = (self._tables[cls].name, id)
        if key not in self.changes:
            self.reads.setdefault(key, obj)
        return obj

    def _objects(
        self,
        table: TableState,
        index_name: str,
        condition: Any,
        reverse: bool,
        start: tuple[Any, str] | None,
    ) -> Iterator[Any]:
        name = table.name
        reads = self.reads
        for obj in super()._objects(table, index_name, condition, reverse, start):
            reads.setdefault((name, obj.id), obj)
            yield obj

    def all(self, cls: type[T]) -> list[T]:
        found = super().all(cls)
        name = self._tables[cls].name
        reads = self.reads
        for obj in found:
            reads.setdefault((name, obj.id), obj)  # type: ignore[attr-defined]
        return found


def replace_content(tx: Tx, objects: Iterable[Any]) -> int:
    """Make the content of every table exactly ``objects``, within ``tx``: create the objects
    whose id is new, update those that differ from the stored one in a field other than
    ``meta``, delete every stored object not given. Returns how many objects changed.

    Each object is checked as ``create`` checks it (InvalidObject, nothing written) before
    anything changes; two objects of one table with the same id are refused.
    """
    tables: dict[type, TableState] = tx._tables
    wanted: dict[str, dict[str, Any]] = {table.name: {} for table in tables.values()}
    for obj in objects:
        try:
            table = tables[type(obj)]
        except KeyError:
            table = tx._table(type(obj), InvalidObject)  # raises the precise error
        id = table.table.check(obj)
        rows = wanted[table.name]
        if id in rows:
            raise InvalidObject(
                f"replace_all got two {table.name} objects with the id {id!r}; give each "
                "object once"
            )
        rows[id] = obj
    changed = 0
    apply = tx._apply
    for table in tables.values():
        rows = wanted[table.name]
        current = table.rows
        doomed = [old for id, old in current.items() if id not in rows]
        for old in doomed:
            apply(table, old.id, old, None)
        restamp = table.table.restamp
        for id, obj in rows.items():
            old = current.get(id)
            if old is None:
                apply(table, id, None, restamp(obj, tx._meta_create or tx._first_meta()))
            elif restamp(obj, old.meta) != old:
                tx._replace(table, id, old, obj)
            else:
                continue
            changed += 1
        changed += len(doomed)
    return changed
