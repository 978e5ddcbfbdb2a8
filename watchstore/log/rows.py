"""Format 2's encoding of stored objects: msgpack rows, a codec per table, schema evolution.

An object is written as a *row*: the values of its fields in its class's order, with
``meta`` as ``[version, created_at, updated_at]``, encoded by msgspec (MessagePack). A
snapshot names each table's *columns* (the field names its rows were written with), and the
changes of a segment use its snapshot's columns (a store whose classes changed starts a new
epoch when it opens). Reading decodes a table's rows with one typed msgspec decoder built
from the class's annotations, and makes each object without ``__init__`` (its values were
checked when written; see ``_fieldtypes``).

When the stored columns are not the class's fields, or a stored value does not fit its
field's type today, the rows are read as plain values instead and turned into today's
objects: by the table's ``upgrade`` function if it has one, else only if every stored field
is still declared and every new one has a default. Anything else is ``SchemaMismatch``
(the bytes are intact: a checksum verified them), never corruption.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any, Final

import attrs
import msgspec

from ..core.errors import SchemaMismatch
from ..core.fieldtypes import field_hints
from ..core.model import Meta, new_meta, new_version

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core.schema import Table

META_ROW: Final = tuple[int | None, float, float]
"""How ``meta`` is written in a row."""

_ENCODER: Final = msgspec.msgpack.Encoder()
encode: Final = _ENCODER.encode
"""msgpack bytes of a value (rows are tuples; attrs values, enums and sets are native)."""


def array_header(count: int) -> bytes:
    """The msgpack header of an array of ``count`` elements (written before rows that were
    encoded a piece at a time)."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def encode_elements(values: Sequence[Any]) -> bytes:
    """The msgpack encoding of ``values`` as elements of an array, without its header."""
    data = encode(list(values))
    return data[len(array_header(len(values))) :]


class TableCodec:
    """How the objects of one table are written as rows and read back."""

    def __init__(self, table: Table) -> None:
        cls = table.cls
        self.table = table
        self.name = table.name
        hints = field_hints(cls)
        self.columns: tuple[str, ...] = tuple(hints)
        self._required = {
            a.name for a in attrs.fields(cls) if a.default is attrs.NOTHING and a.name != "meta"
        }
        types = tuple(META_ROW if name == "meta" else hints[name] for name in self.columns)
        self._decoder = msgspec.msgpack.Decoder(list[tuple[types]])  # type: ignore[valid-type]
        self.row: Callable[[Any], tuple[Any, ...]] = _row_writer(cls, self.columns)
        self._make_all: Callable[[list[tuple[Any, ...]]], list[Any]] = _row_reader(
            cls, self.columns
        )

    def rows(self, objs: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of ``objs``."""
        row = self.row
        return [row(o) for o in objs]

    def read(
        self, raw: bytes, columns: Sequence[str], version: int, file: str | None
    ) -> tuple[list[Any], bool]:
        """The objects of an array of rows written with ``columns`` (msgpack bytes), and
        whether they were stored in another shape than today's class (read through the
        upgrade, or completed with defaults). SchemaMismatch if they do not fit and the
        table cannot upgrade them; msgspec.DecodeError (or RecursionError) if the bytes are
        not such an array."""
        if tuple(columns) == self.columns:
            try:
                return self._make_all(self._decoder.decode(raw)), False
            except msgspec.ValidationError as exc:
                if self.table.upgrade is None:
                    raise self._mismatch(exc, columns, version, file) from None
        return self._evolve(raw, columns, version, file), True

    def _mismatch(
        self, exc: msgspec.ValidationError, columns: Sequence[str], version: int, file: str | None
    ) -> SchemaMismatch:
        found = re.search(r"at `\$\[\d+\]\[(\d+)\]", str(exc))
        field = columns[int(found[1])] if found and int(found[1]) < len(columns) else None
        reason = str(exc).split(" - at ")[0]
        return SchemaMismatch(
            self.name, field, f"a stored value does not fit: {reason}", version, file
        )

    def _evolve(
        self, raw: bytes, columns: Sequence[str], version: int, file: str | None
    ) -> list[Any]:
        """Read rows of another shape: as plain values, each upgraded (or completed with
        defaults) and checked against today's class."""
        if "meta" not in columns or len(set(columns)) != len(columns):
            raise msgspec.DecodeError(f"columns {list(columns)!r} are not a stored class's")
        rows = msgspec.msgpack.decode(raw)
        if not isinstance(rows, list):
            raise msgspec.DecodeError("rows are not an array")
        meta_at = columns.index("meta")
        upgrade = self.table.upgrade
        if upgrade is None:
            self._check_shape(columns, version, file)
        cls, restamp = self.table.cls, self.table.restamp
        out = []
        for row in rows:
            if not isinstance(row, list) or len(row) != len(columns):
                raise msgspec.DecodeError(f"a row is not an array of {len(columns)} values")
            stored = {c: v for c, v in zip(columns, row, strict=True) if c != "meta"}
            if upgrade is not None:
                try:
                    stored = upgrade(stored)
                except Exception as exc:
                    raise SchemaMismatch(
                        self.name, None, f"its upgrade function raised {exc!r}", version, file
                    ) from exc
            try:
                obj = msgspec.convert(stored, cls)
            except msgspec.ValidationError as exc:
                field = re.search(r"at `\$\.(\w+)", str(exc))
                raise SchemaMismatch(
                    self.name,
                    field[1] if field else None,
                    f"{'the upgraded' if upgrade else 'a stored'} value does not fit: "
                    f"{str(exc).split(' - at ')[0]}",
                    version,
                    file,
                ) from None
            out.append(restamp(obj, _meta(row[meta_at])))
        return out

    def _check_shape(self, columns: Sequence[str], version: int, file: str | None) -> None:
        """SchemaMismatch unless rows of ``columns`` become today's objects by themselves:
        no stored field is gone from the class, and every new one has a default."""
        gone = [c for c in columns if c not in self.columns]
        if gone:
            raise SchemaMismatch(
                self.name,
                gone[0],
                f"stored objects have the field {gone[0]!r}, which {self.table.cls.__name__} "
                "no longer declares (an upgrade function decides whether to drop it)",
                version,
                file,
            )
        missing = sorted(self._required - set(columns))
        if missing:
            raise SchemaMismatch(
                self.name,
                missing[0],
                f"{self.table.cls.__name__} requires {missing[0]!r}, which stored objects "
                "lack (give it a default, or an upgrade function that fills it in)",
                version,
                file,
            )


def _meta(value: Any) -> Meta:
    if not isinstance(value, list) or len(value) != 3:
        raise msgspec.DecodeError(f"meta {value!r} is not [version, created_at, updated_at]")
    version, created, updated = value
    if not (version is None or (type(version) is int and version >= 0)):
        raise msgspec.DecodeError(f"meta version {version!r} is not a version")
    if not all(type(t) in (int, float) for t in (created, updated)):
        raise msgspec.DecodeError(f"meta times {created!r}, {updated!r} are not numbers")
    return new_meta(
        None if version is None else new_version(version), float(created), float(updated)
    )


def _row_writer(cls: type, columns: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """Compile ``row(obj)``: the tuple of ``obj``'s field values, ``meta`` as a triple."""
    items = []
    for name in columns:
        if name == "meta":
            items.append(
                "(None if (v := (m := o.meta).version) is None else v.index, "
                "m.created_at, m.updated_at)"
            )
        else:
            items.append(f"o.{name}" if name.isidentifier() else f"getattr(o, {name!r})")
    namespace: dict[str, Any] = {}
    exec(f"def row(o):\n    return ({', '.join(items)},)", namespace)
    row: Callable[[Any], tuple[Any, ...]] = namespace["row"]
    return row


def _row_reader(cls: type, columns: tuple[str, ...]) -> Callable[[list[Any]], list[Any]]:
    """Compile ``make_all(rows)``: the objects of decoded rows, made through the slots (no
    ``__init__``: one loop, no call per row), or through ``__init__`` for classes without
    slots or with a cached hash."""
    slots = getattr(cls, "__slots__", ())
    namespace: dict[str, Any] = {
        "new": object.__new__,
        "cls": cls,
        "new_meta": new_meta,
        "new_version": new_version,
    }
    # The objects a commit wrote share one meta (and every meta of a version one Version):
    # one Meta per distinct triple, not three objects per row.
    at = columns.index("meta")
    meta = f"(metas.get(r[{at}]) or made(r[{at}]))"
    namespace["metas"] = None
    if "__dict__" in dir(cls) or any("cached_hash" in s for s in slots):
        args = ", ".join(
            f"{name}={meta if name == 'meta' else f'r[{i}]'}" for i, name in enumerate(columns)
        )
        lines = [
            "def make_all(rows):",
            "    metas, made = _metas()",
            f"    return [cls({args}) for r in rows]",
        ]
    else:
        lines = ["def make_all(rows):", "    metas, made = _metas()", "    out = []"]
        lines += ["    add = out.append", "    for r in rows:", "        o = new(cls)"]
        for i, name in enumerate(columns):
            namespace[f"s{i}"] = getattr(cls, name).__set__
            value = meta if name == "meta" else f"r[{i}]"
            lines.append(f"        s{i}(o, {value})")
        lines += ["        add(o)", "    return out"]
    namespace["_metas"] = _meta_cache
    exec("\n".join(lines), namespace)
    make_all: Callable[[list[Any]], list[Any]] = namespace["make_all"]
    return make_all


def _meta_cache() -> tuple[dict[tuple[Any, ...], Meta], Callable[[tuple[Any, ...]], Meta]]:
    """A cache of the Meta of each decoded triple, and the function that fills it."""
    metas: dict[tuple[Any, ...], Meta] = {}
    versions: dict[int, Any] = {}

    def made(triple: tuple[Any, ...]) -> Meta:
        index, created, updated = triple
        version = None
        if index is not None:
            version = versions.get(index)
            if version is None:
                version = versions[index] = new_version(index)
        meta = metas[triple] = new_meta(version, created, updated)
        return meta

    return metas, made


_CODECS: dict[int, TableCodec] = {}


def codec_for(table: Table) -> TableCodec:
    """The codec of ``table`` (made once per Table)."""
    codec = _CODECS.get(id(table))
    if codec is None or codec.table is not table:
        codec = _CODECS[id(table)] = TableCodec(table)
    return codec


def plain(value: Any) -> Any:
    """A value read generically, made JSON-ready: bytes as ``{"$b64": ...}`` (as format 1
    wrote them), at any depth."""
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
