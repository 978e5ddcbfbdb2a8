"""Encoding of objects and changes to JSON-ready values (sans-I/O; never pickle).

Stored classes are frozen attrs classes whose fields hold JSON-like values: str, int, float,
bool, None, enums, tuples, frozensets, bytes, nested frozen attrs values, ``Meta`` and
``Version``. ``encode`` turns such a value into plain dicts, lists and scalars; the byte size
of that JSON is what transaction limits are measured in.
"""

from __future__ import annotations

import base64
import collections.abc
import enum
import itertools
import json
import json.encoder
import json.scanner
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from json.encoder import encode_basestring
from typing import Any, Final, overload

import attrs

from .model import ActionKind, Meta, StoreAction, Version, new_action, new_meta, new_version


def encode(value: Any) -> Any:
    """Return ``value`` as JSON-ready data (dicts, lists, str, numbers, bools, None)."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    encoder = _CLASS_ENCODERS.get(t)
    if encoder is not None:
        return encoder(value)
    if t is Version:
        return value.index
    if t is Meta:
        return [encode(value.version), value.created_at, value.updated_at]
    if isinstance(value, enum.Enum):
        return encode(value.value)
    if attrs.has(t):
        return _class_encoder(t)(value)
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted((encode(v) for v in value), key=repr)
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, str | int | float):  # subclasses of the scalars encode as them
        return value
    raise TypeError(f"cannot encode {t.__name__} {value!r}: store JSON-like values only")


_CLASS_ENCODERS: dict[type, Callable[[Any], Any]] = {}


def _class_encoder(cls: type) -> Callable[[Any], Any]:
    """Compile ``encode`` for an attrs class: its fields read as attributes, plain str and
    int values (and None) taken as they are and anything else passed to ``encode``, in
    field order. A commit encodes every object it writes, and the generic path (a loop
    over ``attrs.fields``, a call per value) costs several times more."""
    names = [a.name for a in attrs.fields(cls)]
    lines = ["def encode_object(o):"]
    for i, name in enumerate(names):
        lines.append(f"    v{i} = o.{name}")
        lines.append(f"    t = type(v{i})")
        lines.append(f"    if t is not str and t is not int and v{i} is not None:")
        lines.append("        if t is Meta:")
        lines.append(f"            v = v{i}.version")
        lines.append(
            f"            v{i} = [v.index if type(v) is Version else encode(v), "
            f"v{i}.created_at, v{i}.updated_at]"
        )
        lines.append("        else:")
        lines.append(f"            v{i} = encode(v{i})")
    items = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names))
    lines.append(f"    return {{{items}}}")
    namespace: dict[str, Any] = {"encode": encode, "Meta": Meta, "Version": Version}
    exec("\n".join(lines), namespace)
    encoder: Callable[[Any], Any] = namespace.pop("encode_object")
    _CLASS_ENCODERS[cls] = encoder
    return encoder


def encoded_size(obj: Any) -> int:
    """Encoded size in bytes of one stored object."""
    return len(object_json(obj).encode())


def object_json(obj: Any) -> str:
    """The JSON text of a stored object: ``dump_data(encode(obj))`` as a str, written
    directly for the plain fields of its class (see ``_json_writer``)."""
    writer = _JSON_WRITERS.get(type(obj))
    if writer is None:
        writer = _json_writer(type(obj))
    return writer(obj)


def _value_json(value: Any) -> str:
    """The JSON text of any value (the general path of ``object_json``)."""
    return "".join(_dump_chunks(encode(value), 0)) if _dump_chunks else _JSON.encode(encode(value))


_isfinite: Final = math.isfinite


def _meta_json(meta: Any) -> str:
    version = meta.version
    created = meta.created_at
    updated = meta.updated_at
    if (
        type(created) is float
        and type(updated) is float
        and _isfinite(created)
        and _isfinite(updated)
    ):
        # A created object has the same two times (one float object; equality would take
        # -0.0 for 0.0): one repr, about 0.3 us, does for both.
        if created is updated:
            time = repr(created)
            times = f"{time},{time}"
        else:
            times = f"{created!r},{updated!r}"
        if version is None:
            return f"[null,{times}]"
        if type(version) is Version and type(version.index) is int:
            return f"[{version.index:d},{times}]"
    return _value_json(meta)


_JSON_WRITERS: dict[type, Callable[[Any], str]] = {}


def _json_writer(cls: type) -> Callable[[Any], str]:
    """Compile the JSON text writer of an object of ``cls`` (not necessarily an attrs class:
    anything else gets the general path). Fields in order, as ``encode`` gives them: a str
    escaped as json does, an int and None as they are, a Meta with finite float times
    inline; any other value through ``encode`` and the C encoder. A commit writes every
    object it changes, and building the dicts only for json to walk them costs twice as
    much."""
    if not attrs.has(cls) or cls is Meta:
        writer: Callable[[Any], str] = _value_json
        _JSON_WRITERS[cls] = writer
        return writer
    names = [a.name for a in attrs.fields(cls)]
    # Field names are identifiers: no "%" to escape in the template.
    template = "{" + ",".join(f"{encode_basestring(name)}:%s" for name in names) + "}"
    lines = ["def write(o):"]
    for i, name in enumerate(names):
        lines += [
            f"    v = o.{name}",
            "    t = type(v)",
            "    if t is str:",
            f"        p{i} = esc(v)",
            "    elif t is int:",
            f"        p{i} = int_text(v)",
            "    elif v is None:",
            f"        p{i} = 'null'",
            "    elif t is Meta:",
            f"        p{i} = meta(v)",
            "    else:",
            f"        p{i} = value(v)",
        ]
    parts = ", ".join(f"p{i}" for i in range(len(names)))
    lines.append(f"    return template % ({parts},)")
    namespace: dict[str, Any] = {
        "esc": encode_basestring,
        "int_text": int.__repr__,
        "meta": _meta_json,
        "value": _value_json,
        "Meta": Meta,
        "template": template,
    }
    exec("\n".join(lines), namespace)
    writer = namespace.pop("write")
    _JSON_WRITERS[cls] = writer
    return writer


class DecodeError(ValueError):
    """Stored data does not fit the type the schema declares for it."""


Decoder = Callable[[Any], Any]


def decoder_for(annotation: Any, *, where: str = "value") -> Decoder:
    """Build a function turning ``encode``'s output back into a value of ``annotation``.

    Supports the types ``encode`` writes: scalars, None/optional unions, enums, tuples
    (``tuple[X, ...]`` and fixed), frozensets, bytes, ``Meta``, ``Version``, nested attrs
    classes (rebuilt through ``__init__``, so their validators run) and ``Any``.
    """
    if annotation is Any or annotation is object:
        return lambda data: data
    if annotation is type(None) or annotation is None:
        return _expect_none(where)
    if annotation in (str, int, bool, float):
        return _scalar(annotation, where)
    if annotation is bytes:
        return _bytes(where)
    if annotation is Version:
        return lambda data: None if data is None else Version(_checked(data, int, where))
    if annotation is Meta:
        return _meta(where)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum(annotation, where)
    if isinstance(annotation, type) and attrs.has(annotation):
        return _attrs_class(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _union([decoder_for(a, where=where) for a in args], args, where)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = decoder_for(args[0], where=where)
            return lambda data: tuple(item(x) for x in _checked(data, list, where))
        items = [decoder_for(a, where=where) for a in args]
        return lambda data: tuple(
            f(x) for f, x in zip(items, _checked(data, list, where), strict=True)
        )
    if origin in (frozenset, collections.abc.Set, typing.AbstractSet):
        item = decoder_for(args[0] if args else Any, where=where)
        return lambda data: frozenset(item(x) for x in _checked(data, list, where))
    if origin is typing.Literal:
        return lambda data: data
    raise TypeError(
        f"{where}: cannot decode values of type {annotation!r}; store JSON-like "
        "values (str, int, float, bool, None, enums, tuples, frozensets, bytes, "
        "frozen attrs classes)"
    )


def _checked(data: Any, kind: type, where: str) -> Any:
    if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
        raise DecodeError(f"{where}: expected {kind.__name__}, got {data!r}")
    return data


def _expect_none(where: str) -> Decoder:
    def decode(data: Any) -> None:
        if data is not None:
            raise DecodeError(f"{where}: expected null, got {data!r}")

    return decode


def _scalar(kind: type, where: str) -> Decoder:
    if kind is float:
        return lambda data: float(_checked(data, (int, float), where))  # type: ignore[arg-type]
    return lambda data: _checked(data, kind, where)


def _bytes(where: str) -> Decoder:
    def decode(data: Any) -> bytes:
        if not isinstance(data, dict) or set(data) != {"$b64"}:
            raise DecodeError(f"{where}: expected {{'$b64': ...}}, got {data!r}")
        return base64.b64decode(data["$b64"], validate=True)

    return decode


def _meta(where: str) -> Decoder:
    def decode(data: Any) -> Meta:
        version, created, updated = _checked(data, list, where)
        return Meta(None if version is None else Version(version), created, updated)

    return decode


def _enum(cls: type[enum.Enum], where: str) -> Decoder:
    members = {member.value: member for member in cls}  # faster than calling the class

    def decode(data: Any) -> enum.Enum:
        try:
            return members[data]
        except (KeyError, TypeError):
            raise DecodeError(f"{where}: {data!r} is not a {cls.__name__}") from None

    return decode


def _union(decoders: list[Decoder], args: tuple[Any, ...], where: str) -> Decoder:
    if len(args) == 2 and type(None) in args:
        inner = decoders[0] if args[1] is type(None) else decoders[1]
        return lambda data: None if data is None else inner(data)

    def decode(data: Any) -> Any:
        for decoder in decoders:
            try:
                return decoder(data)
            except (DecodeError, TypeError, ValueError):
                continue
        raise DecodeError(f"{where}: {data!r} fits none of {args!r}")

    return decode


_CLASS_DECODERS: dict[type, Decoder] = {}


def _attrs_class(cls: type) -> Decoder:
    cached = _CLASS_DECODERS.get(cls)
    if cached is not None:
        return cached
    fields: dict[str, Decoder] = {}

    def through_init(data: Any) -> Any:
        if not isinstance(data, dict):
            raise DecodeError(f"{cls.__name__}: expected an object, got {data!r}")
        unknown = set(data) - set(fields)
        if unknown:
            raise DecodeError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        try:
            return cls(**{name: fields[name](value) for name, value in data.items()})
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"{cls.__name__}: {exc}") from exc

    holder: list[Decoder] = [through_init]
    _CLASS_DECODERS[cls] = lambda data: holder[0](data)  # classes may nest themselves
    hints = typing.get_type_hints(cls)
    annotations = {}
    for attribute in attrs.fields(cls):
        annotation = hints.get(attribute.name, Any)
        annotations[attribute.name] = annotation
        fields[attribute.name] = decoder_for(annotation, where=f"{cls.__name__}.{attribute.name}")
    holder[0] = _compile_slots_decoder(cls, annotations, fields, through_init) or through_init
    _CLASS_DECODERS[cls] = holder[0]
    return holder[0]


_PLAIN: Final = {str: "str", int: "int"}


def _compile_slots_decoder(
    cls: type, annotations: dict[str, Any], fields: dict[str, Decoder], fallback: Decoder
) -> Decoder | None:
    """A faster decoder for a slotted class: set the slots directly, checking plain str/int
    fields inline; anything unexpected (a missing or unknown field, a wrong type) goes to
    ``fallback``, which builds through ``__init__`` and reports the error precisely.

    Skipping ``__init__`` is safe here because the data was written by ``encode`` from an
    object that passed it, and the record holding it verified its checksum.
    """
    slots = getattr(cls, "__slots__", ())
    if "__dict__" in dir(cls) or any("cached_hash" in s for s in slots):
        return None
    env: dict[str, Any] = {
        "new": object.__new__,
        "cls": cls,
        "fallback": fallback,
        "count": len(fields),
        "meta": _meta_fast,
        "DecodeError": DecodeError,
    }
    lines = [
        "def decode(data):",
        "    if type(data) is not dict or len(data) != count:",
        "        return fallback(data)",
        "    try:",
        "        o = new(cls)",
    ]
    for i, name in enumerate(fields):
        env[f"s{i}"] = getattr(cls, name).__set__
        env[f"d{i}"] = fields[name]
        annotation = annotations[name]
        plain = _PLAIN.get(annotation)
        optional = typing.get_args(annotation)
        if plain is None and len(optional) == 2 and type(None) in optional:
            inner = optional[0] if optional[1] is type(None) else optional[1]
            plain = _PLAIN.get(inner)
            if plain is not None:
                lines.append(f"        v = data[{name!r}]")
                lines.append(f"        if v is not None and type(v) is not {plain}:")
                lines.append("            return fallback(data)")
                lines.append(f"        s{i}(o, v)")
                continue
        if plain is not None:
            lines.append(f"        v = data[{name!r}]")
            lines.append(f"        if type(v) is not {plain}:")
            lines.append("            return fallback(data)")
            lines.append(f"        s{i}(o, v)")
        elif annotation is Meta:
            lines.append(f"        s{i}(o, meta(data[{name!r}]))")
        else:
            lines.append(f"        s{i}(o, d{i}(data[{name!r}]))")
    lines += [
        "    except (KeyError, DecodeError, TypeError, ValueError):",
        "        return fallback(data)",
        "    return o",
    ]
    exec("\n".join(lines), env)
    decode: Decoder = env["decode"]
    return decode


# The last Meta decoded, with its data: objects written by one commit share their Meta (a
# transaction stamps all its creates with one), and logs and snapshots keep them together, so
# consecutive objects usually decode to an equal Meta. Sharing the frozen value saves the
# allocations, and holds millions fewer objects for the cyclic collector to scan on restore.
# One immutable tuple, replaced whole: safe to read and write from several threads.
_last_meta: tuple[Any, Meta] = (None, Meta())


def _meta_fast(data: Any) -> Meta:
    global _last_meta
    last = _last_meta
    if data == last[0]:
        return last[1]
    version, created, updated = data
    if type(created) is not float or type(updated) is not float:
        raise DecodeError(f"meta: expected [version, created_at, updated_at], got {data!r}")
    meta = new_meta(None if version is None else new_version(version), created, updated)
    _last_meta = (data, meta)
    return meta


_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# json.dumps with arguments builds an encoder per call; the C encoder built once (no check
# for cycles: encode's output is a fresh tree) writes the same text in half the time.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_dump_chunks: Final[Callable[[Any, int], Any] | None] = (
    _c_make_encoder(
        None, _JSON.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    if _c_make_encoder is not None
    else None
)


def dump_data(data: Any) -> bytes:
    """Compact UTF-8 JSON of data that is already JSON-ready (``encode``'s output)."""
    if _dump_chunks is not None:
        return "".join(_dump_chunks(data, 0)).encode()
    return _JSON.encode(data).encode()  # pragma: no cover - Pythons without the C accelerator


def loads(text: str | bytes) -> Any:
    """Parse JSON text written by ``dump_data`` (no type decoding)."""
    return json.loads(text)


_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]
)
_SPACE: Final = re.compile(r"[ \t\n\r]*")


def load_members(text: str, index: int, decode: Decoder) -> tuple[list[Any], int]:
    """Parse the JSON array at ``text[index]`` (after any white space), decoding each member
    with ``decode`` as soon as it is parsed; return the decoded members and where the array
    ends. One ``json.loads`` of a large array holds every member's dicts and lists at once,
    which the cyclic collector scans again and again; here each is dropped once decoded.
    ValueError if the text is not such an array."""
    index = skip_space(text, index)
    if text[index : index + 1] != "[":
        raise ValueError(f"expected a JSON array at character {index}")
    index = skip_space(text, index + 1)
    out: list[Any] = []
    if text[index : index + 1] == "]":
        return out, index + 1
    append = out.append
    scan = _scan_once
    try:
        while True:
            data, index = scan(text, index)
            append(decode(data))
            separator = text[index : index + 1]
            if separator not in (",", "]"):
                index = skip_space(text, index)
                separator = text[index : index + 1]
            index += 1
            if separator == ",":
                if text[index : index + 1] in (" ", "\t", "\n", "\r"):
                    index = skip_space(text, index)
                continue
            if separator == "]":
                return out, index
            raise ValueError(f"expected ',' or ']' at character {index - 1}")
    except StopIteration as stop:  # what the scanner raises where no value starts
        raise ValueError(f"expected a JSON value at character {stop.value}") from None


def load_value(text: str, index: int) -> tuple[Any, int]:
    """Parse the JSON value at ``text[index]`` (after any white space); return it and where
    it ends. ValueError if there is none."""
    index = skip_space(text, index)
    try:
        value, end = _scan_once(text, index)
    except StopIteration:
        raise ValueError(f"expected a JSON value at character {index}") from None
    return value, end


def skip_space(text: str, index: int) -> int:
    """The index of the first character at or after ``index`` that is not JSON white space."""
    match = _SPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def skip_to(text: str, index: int, expected: str) -> int:
    """The index after the character ``expected`` at ``text[index]`` (after any white
    space); ValueError if another character is there."""
    index = skip_space(text, index)
    if text[index : index + 1] != expected:
        raise ValueError(f"expected {expected!r} at character {index}")
    return index + 1


class LoggedActions(Sequence[StoreAction]):
    """The actions of a change decoded from the log: kinds, table names and objects in three
    lists, each StoreAction made when it is read (``old`` is None: the log holds new objects
    only). A restore keeps every change of the epoch (the history for ``watch_from``); an
    object per action fewer is a third fewer objects for Python's cyclic collector to scan,
    again and again, while a large store is restored (``core.tables.restore_tables`` reads the
    lists directly). ``size`` is the bytes of the record they were read from (what the
    history counts them as)."""

    __slots__ = ("kinds", "objs", "size", "tables")

    def __init__(
        self, kinds: list[ActionKind], tables: list[str], objs: list[Any], size: int = 0
    ) -> None:
        self.kinds = kinds
        self.tables = tables
        self.objs = objs
        self.size = size

    def __len__(self) -> int:
        return len(self.objs)

    @overload
    def __getitem__(self, index: int) -> StoreAction: ...

    @overload
    def __getitem__(self, index: slice) -> list[StoreAction]: ...

    def __getitem__(self, index: int | slice) -> StoreAction | list[StoreAction]:
        if isinstance(index, slice):
            return list(
                map(new_action, self.kinds[index], self.tables[index], self.objs[index], _NONES)
            )
        return new_action(self.kinds[index], self.tables[index], self.objs[index], None)

    def __iter__(self) -> Iterator[StoreAction]:
        return map(new_action, self.kinds, self.tables, self.objs, _NONES)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like the list it stands for

    def __repr__(self) -> str:
        return repr(list(self))


_NONES: Final = itertools.repeat(None)
