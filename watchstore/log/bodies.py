"""Record bodies of each format: how a commit and a snapshot are written and read back.

Format 2 (written by this library) encodes with msgspec's MessagePack, objects as rows (see
``_rows``)::

    SNAPSHOT body := [version, [[table, [column, ...], [row, ...]], ...]]
    CHANGE body   := [version, [[table, [kind, ...], [row, ...]], ...]]

A change's actions are grouped in runs of consecutive actions on one table (kind 1 create,
2 update, 3 delete: the row of the object as it was deleted); its rows have the columns of
its segment's snapshot. Format 1 bodies are JSON, an object a JSON object (``_codec``); a
format 1 segment is appended to in format 1 until a compaction writes format 2.

Reading validates what a checksum cannot: a version is a non-negative int (a commit's a
positive one), kinds are known, rows have their columns, nesting is bounded (msgspec and
``json`` raise RecursionError on a document 200,000 levels deep: caught here). What does not
decode is ``LogCorrupt``; what decodes but does not fit today's classes is
``SchemaMismatch``. The generic readers (``generic_*``) give plain dicts, for the tools.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Final

import attrs
import msgspec

from ..core.codec import (
    DecodeError,
    LoggedActions,
    decoder_for,
    dump_data,
    load_members,
    load_value,
    loads,
    object_json,
    skip_space,
    skip_to,
)
from ..core.errors import LogCorrupt, SchemaMismatch
from ..core.model import ActionKind, Change, StoreAction, Version, new_change, new_version
from .rows import _meta, array_header, codec_for, encode, encode_elements, plain

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core.schema import Schema, Table

Columns = dict[str, tuple[str, ...]]
"""The columns of each table's rows in a format 2 segment (its snapshot's)."""

_KINDS: Final = {int(kind): kind for kind in ActionKind}
_DECODE_ERRORS: Final = (msgspec.DecodeError, RecursionError, ValueError, KeyError, TypeError)
_ENVELOPE_SNAPSHOT: Final = msgspec.msgpack.Decoder(
    tuple[int, list[tuple[str, list[str], msgspec.Raw]]]
)
_ENVELOPE_CHANGE: Final = msgspec.msgpack.Decoder(
    tuple[int, list[tuple[str, list[int], msgspec.Raw]]]
)


@attrs.frozen
class SnapshotRead:
    """A snapshot as read: its version, each table's objects, the columns its rows were
    written with (format 2), and whether any object was read in another shape than today's
    (so a new epoch should rewrite them)."""

    version: Version
    objects: dict[str, list[Any]]
    columns: Columns
    reshaped: bool


def _version(value: Any, first: int, file: str, offset: int) -> Version:
    if type(value) is not int or value < first:
        raise LogCorrupt(file, offset, f"version {value!r} is not an int >= {first}")
    return new_version(value)


class Format2:
    """Format 2 bodies for a schema. ``reshaped`` turns True once an object was read in
    another shape than today's class (through an upgrade, or completed with defaults)."""

    format: Final = 2

    def __init__(self, schema: Schema) -> None:
        self.tables = {t.name: t for t in schema.tables}
        self.reshaped = False

    def columns(self) -> Columns:
        """The columns each table's rows are written with today."""
        return {name: codec_for(table).columns for name, table in self.tables.items()}

    def piece(self, table: str, objs: Sequence[Any]) -> bytes:
        """A run of ``objs`` of ``table`` encoded for ``snapshot``."""
        return encode_elements(codec_for(self.tables[table]).rows(objs))

    def snapshot(self, version: Version, tables: Sequence[tuple[str, int, list[bytes]]]) -> bytes:
        """A SNAPSHOT body from pieces: ``(table, object count, pieces)`` per table."""
        parts = [array_header(2), encode(version.index), array_header(len(tables))]
        for name, count, pieces in tables:
            columns = codec_for(self.tables[name]).columns
            parts += [array_header(3), encode(name), encode(columns), array_header(count)]
            parts += pieces
        return b"".join(parts)

    def change(self, version: Version, actions: Sequence[StoreAction]) -> bytes:
        """The CHANGE body of one commit."""
        groups: list[list[Any]] = []
        table = None
        kinds: list[int] = []
        rows: list[tuple[Any, ...]] = []
        row: Callable[[Any], tuple[Any, ...]] = tuple
        for action in actions:
            if action.table != table:
                table = action.table
                kinds, rows = [], []
                groups.append([table, kinds, rows])
                row = codec_for(self.tables[table]).row
            kinds.append(action.kind)
            rows.append(row(action.obj))
        return encode((version.index, groups))

    def read_snapshot(self, body: bytes, file: str, offset: int) -> SnapshotRead:
        """The objects of a SNAPSHOT body (LogCorrupt, SchemaMismatch)."""
        try:
            version, tables = _ENVELOPE_SNAPSHOT.decode(body)
        except _DECODE_ERRORS as exc:
            raise LogCorrupt(file, offset, f"snapshot does not decode: {exc}") from None
        at = _version(version, 0, file, offset)
        objects: dict[str, list[Any]] = {}
        columns: Columns = {}
        reshaped = False
        for name, stored, raw in tables:
            codec = codec_for(self._table(name, version, file))
            try:
                objects[name], evolved = codec.read(raw, stored, version, file)
            except _DECODE_ERRORS as exc:
                raise LogCorrupt(file, offset, f"snapshot does not decode: {exc}") from None
            columns[name] = tuple(stored)
            reshaped = reshaped or evolved
        reshaped = reshaped or set(self.tables) != set(objects)
        self.reshaped = self.reshaped or reshaped
        return SnapshotRead(at, objects, columns, reshaped)

    def read_change(self, body: bytes, file: str, offset: int, columns: Columns) -> Change:
        """The change of a CHANGE body whose rows have ``columns`` (LogCorrupt,
        SchemaMismatch)."""
        try:
            version, groups = _ENVELOPE_CHANGE.decode(body)
        except _DECODE_ERRORS as exc:
            raise LogCorrupt(file, offset, f"change does not decode: {exc}") from None
        at = _version(version, 1, file, offset)
        kinds: list[ActionKind] = []
        names: list[str] = []
        objs: list[Any] = []
        for name, group_kinds, raw in groups:
            table = self._table(name, version, file)
            codec = codec_for(table)
            try:
                read, evolved = codec.read(raw, columns.get(name, codec.columns), version, file)
                self.reshaped = self.reshaped or evolved
                if len(read) != len(group_kinds):
                    raise ValueError(f"{len(group_kinds)} kinds for {len(read)} rows")
                kinds.extend(_KINDS[k] for k in group_kinds)
            except _DECODE_ERRORS as exc:
                raise LogCorrupt(file, offset, f"change does not decode: {exc}") from None
            names.extend([name] * len(read))
            objs.extend(read)
        return new_change(at, LoggedActions(kinds, names, objs, len(body)))

    def _table(self, name: str, version: int, file: str) -> Table:
        table = self.tables.get(name)
        if table is None:
            raise SchemaMismatch(
                name,
                None,
                "the log has this table; the schema does not declare it",
                version,
                file,
            )
        return table


class Format1:
    """Format 1 bodies (JSON) for a schema: read, and appended to a format 1 segment.
    ``reshaped`` as in Format2."""

    format: Final = 1

    def __init__(self, schema: Schema) -> None:
        self.tables = {t.name: t for t in schema.tables}
        self._decoders = {t.name: decoder_for(t.cls) for t in schema.tables}
        self.reshaped = False

    def piece(self, table: str, objs: Sequence[Any]) -> bytes:
        """A run of objects as comma-separated JSON (a piece of a snapshot's table)."""
        return ",".join([object_json(o) for o in objs]).encode()

    def snapshot(self, version: Version, tables: Sequence[tuple[str, int, list[bytes]]]) -> bytes:
        """A SNAPSHOT body assembled from pieces, without re-encoding anything."""
        parts = [b'{"version":%d,"tables":{' % version.index]
        for i, (name, _count, pieces) in enumerate(tables):
            parts.append(b"%s%s:[" % (b"," if i else b"", dump_data(name)))
            parts.append(b",".join(p for p in pieces if p))
            parts.append(b"]")
        parts.append(b"}}")
        return b"".join(parts)

    def change(self, version: Version, actions: Sequence[StoreAction]) -> bytes:
        """``{"version":V,"actions":[[kind,table,obj],...]}``, written directly."""
        names = _TABLE_JSON
        parts = []
        for action in actions:
            table = action.table
            name = names.get(table)
            if name is None:
                name = names[table] = object_json(table)
            parts.append(f"[{action.kind:d},{name},{object_json(action.obj)}]")
        return f'{{"version":{version.index:d},"actions":[{",".join(parts)}]}}'.encode()

    def _decode(
        self, name: str, version: int, file: str, upgraded: list[bool]
    ) -> Callable[[Any], Any]:
        """The decoder of ``name``'s objects: typed, falling back to the table's upgrade
        (SchemaMismatch if an object does not fit and there is none; ``upgraded`` gets a
        True when one is upgraded)."""
        table = self.tables.get(name)
        if table is None or not isinstance(name, str):
            raise SchemaMismatch(
                str(name),
                None,
                "the log has this table; the schema does not declare it",
                version,
                file,
            )
        typed = self._decoders[name]

        def decode(data: Any) -> Any:
            try:
                return typed(data)
            except DecodeError as exc:
                if table.upgrade is None:
                    raise SchemaMismatch(
                        name, _field_of(str(exc)), str(exc), version, file
                    ) from None
                upgraded.append(True)
                self.reshaped = True
                return _upgrade_v1(table, data, version, file)

        return decode

    def read_snapshot(self, body: bytes, file: str, offset: int) -> SnapshotRead:
        """The objects of a SNAPSHOT body. Each table's array is decoded a member at a time
        (see ``load_members``): a snapshot holds millions of objects."""
        version: Version | None = None
        objects: dict[str, list[Any]] | None = None
        upgraded: list[bool] = []
        try:
            text = body.decode()
            index = skip_to(text, 0, "{")
            more, index = _first(text, index, "}")
            while more:
                key, index = load_value(text, index)
                index = skip_to(text, index, ":")
                if key == "tables":
                    objects = {}
                    index = skip_to(text, index, "{")
                    more_tables, index = _first(text, index, "}")
                    while more_tables:
                        name, index = load_value(text, index)
                        at = -1 if version is None else version.index
                        index = skip_to(text, index, ":")
                        decode = self._decode(name, at, file, upgraded)
                        objects[name], index = load_members(text, index, decode)
                        more_tables, index = _separator(text, index, "}")
                else:
                    value, index = load_value(text, index)
                    if key == "version":
                        version = _version(value, 0, file, offset)
                more, index = _separator(text, index, "}")
            if skip_space(text, index) != len(text):
                raise ValueError(f"extra data at character {index}")
            if version is None or objects is None:
                raise KeyError("version" if version is None else "tables")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise LogCorrupt(file, offset, f"snapshot does not decode: {exc!r}") from None
        reshaped = bool(upgraded) or set(self.tables) != set(objects)
        self.reshaped = self.reshaped or reshaped
        return SnapshotRead(version, objects, {}, reshaped)

    def read_change(self, body: bytes, file: str, offset: int, columns: Columns) -> Change:
        """The change of a CHANGE body (``columns`` unused: objects name their fields)."""
        try:
            data = loads(body)
            version = _version(data["version"], 1, file, offset)
            kinds: list[ActionKind] = []
            tables: list[str] = []
            objs: list[Any] = []
            for kind, table, obj in data["actions"]:
                decode = self._decode(table, version.index, file, [])
                kinds.append(_KINDS[kind])
                tables.append(table)
                objs.append(decode(obj))
            return new_change(version, LoggedActions(kinds, tables, objs, len(body)))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise LogCorrupt(file, offset, f"change does not decode: {exc!r}") from None


Bodies = Format1 | Format2


def bodies_for(fmt: int, schema: Schema) -> Bodies:
    """The bodies of format ``fmt`` for ``schema``."""
    return Format1(schema) if fmt == 1 else Format2(schema)


def _field_of(message: str) -> str | None:
    """The field a format 1 DecodeError names (``Class.field: ...``), if it names one."""
    head = message.split(":", 1)[0]
    return head.split(".", 1)[1] if "." in head else None


def _upgrade_v1(table: Table, data: Any, version: int, file: str) -> Any:
    """A format 1 object (a JSON object) that does not fit today's class, through the
    table's upgrade function."""
    assert table.upgrade is not None
    if not isinstance(data, dict) or "meta" not in data:
        raise ValueError(f"{table.name}: a stored object is not an object with meta")
    stored = {k: _from_json(v) for k, v in data.items() if k != "meta"}
    try:
        fields = table.upgrade(stored)
    except Exception as exc:
        raise SchemaMismatch(
            table.name, None, f"its upgrade function raised {exc!r}", version, file
        ) from exc
    try:
        obj = msgspec.convert(fields, table.cls)
    except msgspec.ValidationError as exc:
        raise SchemaMismatch(
            table.name, None, f"the upgraded value does not fit: {exc}", version, file
        ) from None
    return table.restamp(obj, _meta(data["meta"]))


def _from_json(value: Any) -> Any:
    """A format 1 value as plain values: ``{"$b64": ...}`` back to bytes, at any depth."""
    if isinstance(value, dict):
        if set(value) == {"$b64"} and isinstance(value["$b64"], str):
            return base64.b64decode(value["$b64"], validate=True)
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


_TABLE_JSON: dict[str, str] = {}
"""The JSON text of table names (a str each; few)."""


def _first(text: str, index: int, closing: str) -> tuple[bool, int]:
    """At the start of a JSON object's members: (False, index after ``closing``) if it is
    empty, else (True, index)."""
    at = skip_space(text, index)
    if text[at : at + 1] == closing:
        return False, at + 1
    return True, index


def _separator(text: str, index: int, closing: str) -> tuple[bool, int]:
    """After a member of a JSON object: (True, index after ',') or (False, index after
    ``closing``); ValueError for anything else."""
    index = skip_space(text, index)
    found = text[index : index + 1]
    if found == ",":
        return True, index + 1
    if found == closing:
        return False, index + 1
    raise ValueError(f"expected ',' or {closing!r} at character {index}")


# -- generic reading, for the tools (no schema) ------------------------------------------------

Object = dict[str, Any]
"""A stored object read without its class: its fields as plain, JSON-ready values."""


def body_version(fmt: int, body: bytes) -> int:
    """The version a body names (ValueError if it names none): for salvage's report."""
    value = loads(body)["version"] if fmt == 1 else msgspec.msgpack.decode(body)[0]
    if type(value) is not int:
        raise ValueError(f"version {value!r}")
    return value


def generic_snapshot(fmt: int, body: bytes) -> tuple[int, dict[str, list[Object]], Columns]:
    """A SNAPSHOT body as plain values: version, objects by table, columns (format 2).
    Raises ValueError (and the like) if it does not decode."""
    if fmt == 1:
        data = loads(body)
        return data["version"], dict(data["tables"]), {}
    version, tables = _ENVELOPE_SNAPSHOT.decode(body)
    objects: dict[str, list[Object]] = {}
    columns: Columns = {}
    for name, stored, raw in tables:
        columns[name] = tuple(stored)
        objects[name] = _objects(msgspec.msgpack.decode(raw), columns[name])
    return version, objects, columns


def generic_change(
    fmt: int, body: bytes, columns: Columns
) -> tuple[int, list[tuple[int, str, Object]]]:
    """A CHANGE body as plain values: version and (kind, table, object) actions."""
    if fmt == 1:
        data = loads(body)
        return data["version"], [tuple(a) for a in data["actions"]]
    version, groups = _ENVELOPE_CHANGE.decode(body)
    actions: list[tuple[int, str, Object]] = []
    for name, kinds, raw in groups:
        if name not in columns:
            raise ValueError(f"a change of table {name!r}, which the snapshot does not have")
        objs = _objects(msgspec.msgpack.decode(raw), columns[name])
        if len(objs) != len(kinds):
            raise ValueError(f"{len(kinds)} kinds for {len(objs)} rows")
        actions.extend(zip(kinds, [name] * len(objs), objs, strict=True))
    return version, actions


def _objects(rows: Any, columns: tuple[str, ...]) -> list[Object]:
    if not isinstance(rows, list):
        raise ValueError("rows are not an array")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) != len(columns):
            raise ValueError(f"a row is not an array of {len(columns)} values")
        out.append({c: plain(v) for c, v in zip(columns, row, strict=True)})
    return out
