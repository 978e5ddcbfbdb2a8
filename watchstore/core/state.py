"""The whole in-memory state of a store and what a commit does to it (sans-I/O).

Rules that keep readers consistent while the tables are mutated in place:

1. Writes go straight into the live tables (the *tip*). Every transaction that has written
   and is not yet committed sits in ``pending``, in order, and remembers the value each
   object had before it (``Tx.changes``).
2. ``version`` is the last *committed* version. When ``pending`` is empty the tip is exactly
   that version and readers read the live tables directly.
3. A reader of an older version (a snapshot, or any reader while something is pending) sees,
   for each id, the value before the *first* change after its version: it consults the undo
   layers from its own onwards, then the pending transactions, first hit wins.
4. Undo layers exist only for pinned snapshots. A layer starts at the committed version where
   a snapshot was pinned; each commit adds the values it replaced to the newest layer (first
   value per id wins). A layer no snapshot pins any more is merged into the one before it, or
   dropped if it is the oldest; so memory is held only for what live snapshots can still see.
"""

from __future__ import annotations

import heapq
import operator
import weakref
from builtins import id as id_of
from typing import TYPE_CHECKING, Any, Self, TypeVar

from .errors import StoreError
from .model import ORIGIN, ActionKind, Change, Meta, StoreAction, Version, new_change, new_version
from .query import key_matcher
from .tables import TableState, locator
from .txn import SNAPSHOT_CLOSED, TX_ENDED, ReadTx, Savepoint, Tx, parse_condition

DELETE = ActionKind.DELETE
T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from .schema import Schema


class UndoLayer:
    """Old values replaced by commits after ``base``, for snapshots pinned at ``base``."""

    __slots__ = ("base", "olds", "overlays", "pins")

    def __init__(self, base: Version) -> None:
        self.base = base
        self.olds: dict[tuple[str, str], Any] = {}
        self.pins = 0
        self.overlays: dict[str, tuple[Version, dict[str, Any]]] = {}
        """Per table, the committed part of its snapshots' overlay (``overlay_table``) and
        the version it was built at: what this layer and the later ones hold changes only
        when a commit adds to them (merging layers keeps their union), so each query of a
        snapshot between two commits reuses it."""


class OverlayReadTx(ReadTx):
    """A reader of an older version: the live tables seen through the undo layers from
    ``layer`` on (None: only the pending transactions), per rule 3 above."""

    __slots__ = ("_layer", "_state")

    def __init__(self, state: StoreState, version: Version, layer: UndoLayer | None) -> None:
        super().__init__(state.tables, version)
        self._state = state
        self._layer = layer

    def get(self, cls: type[T], id: str) -> T | None:
        table = self._table(cls)
        found, value = self._state.overlay_get(self._layer, table.name, id)
        if found:
            return value  # type: ignore[no-any-return]
        return table.rows.get(id)

    def count(self, cls: type, **condition: Any) -> int:
        table = self._table(cls)
        index_name, normalized = parse_condition(table, condition)
        return sum(1 for _ in self._objects(table, index_name, normalized, False, None))

    def all(self, cls: type[T]) -> list[T]:
        return self.find(cls)

    def _objects(
        self,
        table: TableState,
        index_name: str,
        condition: Any,
        reverse: bool,
        start: tuple[Any, str] | None,
    ) -> Iterator[Any]:
        """The scan at this reader's version: the live matches not changed since, merged in
        index order with the changed objects' old values that match (sorted first: the cost
        grows with the objects changed since, not with the table)."""
        overlay = self._state.overlay_table(self._layer, table.name)
        rows = table.rows
        ids = table.ordered_ids(index_name, condition, reverse=reverse, start=start)
        if not overlay:
            return map(rows.__getitem__, ids)
        return _merged(table, index_name, condition, reverse, start, overlay, ids)


def _merged(
    table: TableState,
    index_name: str,
    condition: Any,
    reverse: bool,
    start: tuple[Any, str] | None,
    overlay: dict[str, Any],
    ids: Iterator[str],
) -> Iterator[Any]:
    matches = key_matcher(condition)
    locate = locator(table, index_name, condition)
    olds = []
    for id, obj in overlay.items():
        if obj is None:
            continue
        key = locate(obj)
        if key is None or not matches(key):
            continue
        if start is not None and ((key, id) >= start if reverse else (key, id) <= start):
            continue
        olds.append((key, id, obj))
    if not olds:
        rows = table.rows
        for id in ids:
            if id not in overlay:
                yield rows[id]
        return
    olds.sort(key=_entry, reverse=reverse)
    for _key, _id, obj in heapq.merge(
        _live_entries(table, index_name, condition, overlay, ids), olds, key=_entry, reverse=reverse
    ):
        yield obj


def _entry(entry: tuple[Any, str, Any]) -> tuple[Any, str]:
    return entry[0], entry[1]


def _live_entries(
    table: TableState, index_name: str, condition: Any, overlay: dict[str, Any], ids: Iterator[str]
) -> Iterator[tuple[Any, str, Any]]:
    rows = table.rows
    locate = locator(table, index_name, condition)
    for id in ids:
        if id not in overlay:
            obj = rows[id]
            yield locate(obj), id, obj


class Snapshot(OverlayReadTx):
    """A read-only transaction pinned at one version; consistent across awaits.

    Taking one costs O(1). It holds the objects it can still see in memory until it is closed
    (``close()``, a ``with`` block, or garbage collection).
    """

    __slots__ = ("__weakref__", "_release")

    def __init__(self, state: StoreState, layer: UndoLayer) -> None:
        super().__init__(state, layer.base, layer)
        self._release = weakref.finalize(self, state.unpin, layer)

    def ids(self, cls: type) -> list[str]:
        """The ids of ``cls`` objects in this snapshot, in no particular order (C-speed
        copies: cheaper than ``all`` when order does not matter)."""
        table = self._table(cls)
        overlay = self._state.overlay_table(self._layer, table.name)
        if not overlay:
            return list(table.rows)
        present = [id for id in table.rows if id not in overlay]
        present.extend(id for id, old in overlay.items() if old is not None)
        return present

    def close(self) -> None:
        """Release the snapshot; reads after this raise StoreError."""
        self._release()
        self._end(SNAPSHOT_CLOSED)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class StoreState:
    """Tables, committed version, pending transactions and undo layers of one store."""

    def __init__(self, schema: Schema, version: Version = ORIGIN) -> None:
        self.schema = schema
        self.tables: dict[type, TableState] = {t.cls: TableState(t) for t in schema.tables}
        self.by_name: dict[str, TableState] = {t.name: t for t in self.tables.values()}
        self.version = version
        self.pending: list[Tx] = []
        self.layers: list[UndoLayer] = []

    # -- readers ---------------------------------------------------------------------------

    def reader(self) -> ReadTx:
        """A reader of the committed state, valid until the caller next awaits."""
        if not self.pending:
            return ReadTx(self.tables, self.version)
        return OverlayReadTx(self, self.version, None)

    def pin(self) -> Snapshot:
        """Pin the committed version and return a snapshot of it (O(1))."""
        layers = self.layers
        if layers and layers[-1].base == self.version:
            layer = layers[-1]
        else:
            layer = UndoLayer(self.version)
            layers.append(layer)
        layer.pins += 1
        return Snapshot(self, layer)

    def unpin(self, layer: UndoLayer) -> None:
        layer.pins -= 1
        if layer.pins:
            return
        layers = self.layers
        at = layers.index(layer)
        del layers[at]
        if at > 0:
            older = layers[at - 1].olds
            for key, old in layer.olds.items():
                older.setdefault(key, old)

    def _sources(self, layer: UndoLayer | None) -> list[dict[tuple[str, str], Any]]:
        sources: list[dict[tuple[str, str], Any]] = []
        if layer is not None:
            at = self.layers.index(layer)
            sources.extend(lay.olds for lay in self.layers[at:])
        return sources

    def overlay_get(self, layer: UndoLayer | None, table: str, id: str) -> tuple[bool, Any]:
        """Return (True, value at the reader's version) if ``id`` changed since, else (False,)."""
        key = (table, id)
        for olds in self._sources(layer):
            if key in olds:
                return True, olds[key]
        for tx in self.pending:
            entry = tx.changes.get(key)
            if entry is not None:
                return True, entry[0]
        return False, None

    def overlay_table(self, layer: UndoLayer | None, table: str) -> dict[str, Any]:
        """Every id of ``table`` changed since the reader's version, with its value then
        (a dict the caller must not change)."""
        overlay: dict[str, Any] = {}
        if layer is not None:
            cached = layer.overlays.get(table)
            if cached is not None and cached[0] == self.version:
                overlay = cached[1]
            else:
                for olds in self._sources(layer):
                    for (name, id), old in olds.items():
                        if name == table and id not in overlay:
                            overlay[id] = old
                layer.overlays[table] = (self.version, overlay)
        if not self.pending:
            return overlay
        overlay = dict(overlay)  # the pending part is not cached: it changes with each write
        for tx in self.pending:
            for (name, id), (old, _new) in tx.changes.items():
                if name == table and id not in overlay:
                    overlay[id] = old
        return overlay

    # -- writes ----------------------------------------------------------------------------

    def begin(self, kind: type[Tx] = Tx) -> Tx:
        """Open a write transaction (of class ``kind``) on the tip, expecting to commit as
        the next version."""
        tx = kind(self, new_version(self.version.index + len(self.pending) + 1))
        self.pending.append(tx)
        return tx

    def rollback(self, tx: Tx) -> None:
        """Undo ``tx`` entirely. It must be the newest pending transaction."""
        if not self.pending or self.pending[-1] is not tx:
            raise StoreError("only the newest pending transaction can be rolled back")
        # Its on_commit callbacks stay: only a transaction that committed, or changed
        # nothing, runs them (see Tx.on_commit).
        tx.rollback_to(Savepoint(0, len(tx._on_commit)))
        self.pending.pop()
        tx._end(TX_ENDED)

    def apply(self, change: Change) -> Change:
        """Apply a change committed elsewhere (replication, replay): objects kept as given.

        All or nothing: if an object cannot be applied (the replica has diverged), nothing
        is and the error propagates.
        """
        tx = self.begin()
        try:
            for action in change.actions:
                table = self.by_name[action.table]
                id = action.obj.id
                current = table.rows.get(id)
                tx._apply(table, id, current, None if action.kind is DELETE else action.obj)
        except BaseException:
            self.rollback(tx)
            raise
        # The transaction's own actions: they carry each update's old object.
        return self.commit(tx, change.version, restamp=False)

    def commit(
        self,
        tx: Tx,
        version: Version,
        actions: Sequence[StoreAction] | None = None,
        *,
        restamp: bool = True,
    ) -> Change:
        """Mark the oldest pending ``tx`` committed as ``version``; return its Change.

        ``actions`` are ``tx.actions()`` if the caller has them already. If the proposer
        chose another version than the one predicted, the written objects are re-stamped
        (indexes hold ids, so only rows change), unless ``restamp`` is False (replicated
        objects keep the metadata they were committed with).
        """
        if self.finish(tx, version, restamp=restamp) or actions is None:
            actions = tx.actions()  # re-stamped objects make new actions
        return new_change(version, actions)

    def finish(self, tx: Tx, version: Version, *, restamp: bool = True) -> bool:
        """``commit`` without building the Change: ``tx.changes`` then holds what it did.
        Returns True if the objects it wrote were re-stamped."""
        if not self.pending or self.pending[0] is not tx:
            raise StoreError("commits must arrive in the order the transactions were begun")
        if version.index <= self.version.index:
            raise StoreError(f"commit version {version!r} is not after {self.version!r}")
        restamped = restamp and version.index != tx.version.index
        if restamped:
            self._restamp(tx, version)
        if self.layers:
            newest = self.layers[-1].olds
            for key, (old, _new) in tx.changes.items():
                newest.setdefault(key, old)
        del self.pending[0]
        self.version = version
        tx.committed = True
        tx._tables = TX_ENDED  # tx._end(TX_ENDED), without the call
        return restamped

    def _restamp(self, tx: Tx, version: Version) -> None:
        """Re-stamp the objects ``tx`` wrote with ``version``, wherever they are referenced:
        the live rows (unless a later pending transaction replaced them since) and the
        before-values and undo lists of later pending transactions."""
        tx.version = version
        stamped_for: dict[int, Any] = {}
        restamped = tx.restamped = {}
        for (name, id), entry in tx.changes.items():
            new = entry[1]
            if new is None:
                continue
            meta = new.meta
            table = self.by_name[name]
            stamped = table.table.restamp(new, Meta(version, meta.created_at, meta.updated_at))
            stamped_for[id_of(new)] = stamped
            restamped[id_of(new)] = (new, stamped)
            if table.rows.get(id) is new:
                table.rows[id] = stamped
            entry[1] = stamped
        for later in self.pending[1:]:
            for entry in later.changes.values():
                entry[0] = stamped_for.get(id_of(entry[0]), entry[0])
            later._undo = [
                (table, id, stamped_for.get(id_of(before), before), opened)
                for table, id, before, opened in later._undo
            ]

    def __repr__(self) -> str:
        rows = sum(len(t.rows) for t in self.tables.values())
        return f"<StoreState {self.version!r} rows={rows} pending={len(self.pending)}>"


def difference(
    state: StoreState,
    theirs: Mapping[str, Mapping[str, Any]],
    same: Callable[[Any, Any], bool] = operator.is_,
) -> list[StoreAction]:
    """Actions turning the committed tables of ``state`` into ``theirs`` (table name -> id
    -> object); objects for which ``same(mine, theirs)`` holds are left alone."""
    actions: list[StoreAction] = []
    for table in state.schema.tables:
        mine = state.tables[table.cls].rows
        other = theirs.get(table.name, {})
        for id, obj in other.items():
            current = mine.get(id)
            if current is None:
                actions.append(StoreAction(ActionKind.CREATE, table.name, obj))
            elif not same(current, obj):
                actions.append(StoreAction(ActionKind.UPDATE, table.name, obj, current))
        for id, current in mine.items():
            if id not in other:
                actions.append(StoreAction(ActionKind.DELETE, table.name, current))
    return actions
