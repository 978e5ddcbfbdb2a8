"""Reading a store's log without its schema: tables by name, objects as decoded JSON dicts.

The ``watchstore`` command inspects, verifies and dumps any store this way, whatever program
wrote it. ``read_epoch`` checks a segment as opening does (``epochlog.read_segment``), then
every record's JSON and the order of versions, and carries on past damage to report it; ``replay``
gives the state at the end of an epoch (``strict``: every object must make sense where it
is); ``rebuild`` loads an epoch as typed objects under a schema, which rebuilds and checks
every index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs

from ..core.errors import LogCorrupt, SchemaMismatch, StoreError
from ..core.model import ActionKind, Version
from ..core.state import StoreState
from .bodies import Columns, bodies_for, generic_change, generic_snapshot
from .crypto import Sealer, SealError
from .records import CHANGE, Record, SegmentHeader, data_end, head_size, record_size
from .segment import body_of, open_segment, read_segment, sealer_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ..core.schema import Schema


class StoreNotFound(StoreError):
    """The path holds no store (not a directory, or no segment files)."""


class UnreadableLog(StoreError):
    """The log cannot be read with the key given: missing, superfluous or wrong."""


Object = dict[str, Any]
"""A stored object read without its class: its fields as decoded JSON."""

CREATE: Final = int(ActionKind.CREATE)
UPDATE: Final = int(ActionKind.UPDATE)
DELETE: Final = int(ActionKind.DELETE)
KIND_NAMES: Final = {CREATE: "create", UPDATE: "update", DELETE: "delete"}


def _ignore(_size: int) -> None:
    pass


@attrs.frozen
class RawChange:
    """One CHANGE record: its offset, version and actions as (kind, table, object)."""

    offset: int
    version: int
    actions: list[tuple[int, str, Object]]


@attrs.frozen
class RawEpoch:
    """One segment file read generically: its snapshot and changes, checked record by record.

    ``changes`` are the good ones. ``damage`` is the LogCorrupt that stopped the reading
    (None: the whole file is good); ``torn`` the size of a torn tail after the last good
    record (an append that was never acknowledged; the next open truncates it).
    """

    file: Path
    header: SegmentHeader
    size: int
    snapshot_offset: int
    snapshot_version: int
    tables: dict[str, list[Object]]
    changes: list[RawChange]
    torn: int
    damage: LogCorrupt | None
    sealer: Sealer | None = None
    end: int = 0
    """The offset just after the last good record."""
    written_ahead: int = 0
    """Zeros after the records: space an open store wrote ahead (not a torn tail)."""
    columns: Columns = attrs.field(factory=dict)
    """The columns of the rows of the segment's changes (format 2; its snapshot's)."""

    @property
    def last_version(self) -> int:
        """The version of the last good record."""
        return self.changes[-1].version if self.changes else self.snapshot_version

    @property
    def records(self) -> int:
        """How many good records the segment holds."""
        return 1 + len(self.changes)


def segment_files(path: Path) -> list[Path]:
    """The segment files of the store in ``path``, oldest first; NOT_FOUND if there are none."""
    if not path.is_dir():
        raise StoreNotFound(f"{path} is not a directory")
    files = sorted(p for p in path.glob("*.wslog") if p.stem.isdigit())
    if not files:
        raise StoreNotFound(f"{path} holds no watchstore store (no NNNNNNNN.wslog segment files)")
    return files


def key_sealer(file: Path, header: SegmentHeader, key: bytes | None) -> Sealer | None:
    """The sealer to read ``file`` with ``key`` (a ``--key-file``'s); UnreadableLog if the
    key does not fit."""
    return sealer_for(
        file,
        header,
        key,
        error=UnreadableLog,
        give_key="pass its key with --key-file",
        drop_key="drop --key-file",
    )


def _object(data: Any) -> Object:
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise TypeError(f"an object needs a non-empty str 'id', got {str(data)[:80]}")
    return data


def _version(data: Any) -> int:
    if type(data) is not int or data < 0:
        raise TypeError(f"a version is a non-negative int, got {data!r}")
    return data


def read_epoch(
    file: Path, key: bytes | None = None, advance: Callable[[int], None] = _ignore
) -> RawEpoch:
    """Read a segment and check every record: header, framing and checksums (as opening
    does), bodies (either format), and versions following one another. Damage after the
    snapshot stops the reading and is returned in ``damage``; a damaged header or snapshot
    raises LogCorrupt. ``advance(n)`` is told of each n bytes read."""
    size, header, result = read_segment(file)  # the checks opening makes
    records = result.records
    first = records[0]
    sealer = key_sealer(file, header, key)
    if sealer is not None:
        try:
            sealer.open(header, first.offset, first.kind, first.body)
        except SealError:
            raise UnreadableLog(
                f"{file}: wrong encryption key (the snapshot's checksum is correct but it "
                "does not decrypt with this key)"
            ) from None
    try:
        body = body_of(header, first, sealer, str(file))
        version, snapshot, columns = generic_snapshot(header.format, body)
        version = snapshot_version = _version(version)
        tables = {str(name): [_object(o) for o in objects] for name, objects in snapshot.items()}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise LogCorrupt(str(file), first.offset, f"snapshot does not decode: {exc}") from None
    end = first.offset + record_size(len(first.body), header)
    advance(end)
    changes: list[RawChange] = []
    damage = None
    try:
        for record in records[1:]:
            change = read_change(file, header, record, sealer, version, columns)
            changes.append(change)
            version = change.version
            end = record.offset + record_size(len(record.body), header)
            advance(record_size(len(record.body), header))
        if result.corrupt is not None:
            raise LogCorrupt(str(file), result.end, result.corrupt, Version(version))
    except LogCorrupt as exc:
        damage = exc
    torn = written_ahead = 0
    if damage is None:
        written_ahead = result.padding
        if result.torn:
            # A torn append may lie in the zeros an open store wrote ahead: it is what was
            # written of it (a record head at least), and the zeros after it are still
            # zeros written ahead.
            with open_segment(file) as source:
                written = max(data_end(source), result.end + head_size(header))
            written = min(written, size)
            torn, written_ahead = written - result.end, size - written
    return RawEpoch(
        file,
        header,
        size,
        first.offset,
        snapshot_version,
        tables,
        changes,
        torn,
        damage,
        sealer,
        end,
        written_ahead,
        columns,
    )


def read_change(
    file: Path,
    header: SegmentHeader,
    record: Record,
    sealer: Sealer | None,
    previous: int,
    columns: Columns,
) -> RawChange:
    """One CHANGE record read generically, checked to follow version ``previous``;
    LogCorrupt naming the file and offset otherwise."""
    if record.kind != CHANGE:
        raise LogCorrupt(str(file), record.offset, "a snapshot in mid-segment", Version(previous))
    try:
        version, raw = generic_change(
            header.format, body_of(header, record, sealer, str(file)), columns
        )
        version = _version(version)
        actions = []
        for kind, table, obj in raw:
            if kind not in KIND_NAMES or not isinstance(table, str):
                raise TypeError(f"invalid action ({kind!r}, {table!r})")
            actions.append((kind, table, _object(obj)))
    except LogCorrupt as exc:
        raise LogCorrupt(exc.file, exc.offset, exc.reason, Version(previous)) from None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise LogCorrupt(
            str(file), record.offset, f"change does not decode: {exc}", Version(previous)
        ) from None
    if version != previous + 1:
        raise LogCorrupt(
            str(file), record.offset, f"version {version} follows {previous}", Version(previous)
        )
    return RawChange(record.offset, version, actions)


State = dict[str, dict[str, Object]]
"""A store's objects read generically: table name -> id -> object."""


def replay(epoch: RawEpoch, *, strict: bool = False) -> State:
    """The state at the end of ``epoch``: its snapshot with its changes applied.

    With ``strict``, every object must make sense where it is (LogCorrupt otherwise): ids
    unique in the snapshot; a create of an absent id; an update or delete of a present one;
    each written object stamped with its commit's version (``meta[0]``).
    """
    state: State = {}
    file = str(epoch.file)
    for name, objects in epoch.tables.items():
        rows = state[name] = {}
        for obj in objects:
            if strict:
                if obj["id"] in rows:
                    raise LogCorrupt(
                        file,
                        epoch.snapshot_offset,
                        f"{name} {obj['id']!r} is twice in the snapshot",
                    )
                stamped = _stamp(obj)
                if stamped is None or stamped > epoch.snapshot_version:
                    raise LogCorrupt(
                        file,
                        epoch.snapshot_offset,
                        f"{name} {obj['id']!r} carries version {stamped} in a snapshot "
                        f"at version {epoch.snapshot_version}",
                    )
            rows[obj["id"]] = obj
    for change in epoch.changes:
        for kind, name, obj in change.actions:
            rows = state.setdefault(name, {})
            id = obj["id"]
            if strict:
                _check_action(epoch, change, kind, name, obj, id in rows)
            if kind == DELETE:
                rows.pop(id, None)
            else:
                rows[id] = obj
    return state


def _stamp(obj: Object) -> int | None:
    meta = obj.get("meta")
    if isinstance(meta, list) and len(meta) == 3 and type(meta[0]) is int:
        return meta[0]
    return None


def _check_action(
    epoch: RawEpoch, change: RawChange, kind: int, name: str, obj: Object, present: bool
) -> None:
    what = f"{name} {obj['id']!r}"
    if kind == CREATE and present:
        problem = f"creates {what}, which exists"
    elif kind != CREATE and not present:
        problem = f"{KIND_NAMES[kind]}s {what}, which does not exist"
    elif kind != DELETE and _stamp(obj) != change.version:
        problem = f"writes {what} stamped with version {_stamp(obj)}"
    else:
        return
    raise LogCorrupt(
        str(epoch.file),
        change.offset,
        f"version {change.version} {problem}",
        Version(change.version - 1),
    )


def rebuild(
    epoch: RawEpoch, schema: Schema, advance: Callable[[int], None] = _ignore
) -> StoreState:
    """Load ``epoch`` as typed objects into a fresh in-memory state, as opening does, so
    every object is decoded through its class and every unique and secondary index is
    rebuilt and checked. LogCorrupt at a record that does not decode; SchemaMismatch where
    objects do not fit the schema's classes."""
    state = StoreState(schema)
    file = str(epoch.file)
    _size, header, result = read_segment(epoch.file)
    bodies = bodies_for(header.format, schema)
    records = result.records[: 1 + len(epoch.changes)]
    first = records[0]
    snapshot = bodies.read_snapshot(body_of(header, first, epoch.sealer, file), file, first.offset)
    offset = first.offset
    try:
        for name, objects in snapshot.objects.items():
            for obj in objects:
                state.by_name[name].write(obj.id, None, obj)
        state.version = snapshot.version
        ends = [r.offset for r in records[2:]] + [epoch.size - epoch.torn]
        advance(records[1].offset if len(records) > 1 else ends[0])
        for record, end in zip(records[1:], ends, strict=False):
            offset = record.offset
            body = body_of(header, record, epoch.sealer, file)
            state.apply(bodies.read_change(body, file, offset, snapshot.columns))
            advance(end - offset)
    except (LogCorrupt, SchemaMismatch):
        raise
    except (StoreError, ValueError, TypeError) as exc:
        raise LogCorrupt(file, offset, f"does not fit the schema: {exc}") from None

    return state
