"""What a stored class's fields may hold, and the check of every value written (sans-I/O).

A field's annotation says what it holds, and the store checks every value written against it
before the transaction can commit (``InvalidObject`` naming ``Class.field``, the value and the
type; nothing applied), so what a commit acknowledges always reads back, equal. The types
understood are those the log's codec (msgspec) writes and reads back exactly:

- ``str`` (valid UTF-8: no lone surrogates), ``int`` (-2**63 to 2**64 - 1; not a bool),
  ``float`` (an int is taken, and reads back as a float), ``bool``, ``bytes``, ``None``;
- enums whose values are all str or all int, ``Literal`` of such values;
- ``tuple[X, ...]``, ``tuple[X, Y]``, ``frozenset[X]``;
- frozen attrs classes (nested values), ``Meta``, ``Version``;
- unions of those (``X | None``; msgspec allows one of each kind: one array type, one attrs
  class);
- ``Any`` (or no annotation): str, int, float, bool, bytes or None only, since a container
  there would read back as a list.

A class with a field of any other type is refused when its ``Table`` is declared.
"""

from __future__ import annotations

import enum
import functools
import typing
from collections.abc import Callable
from typing import Any, Final

import attrs

from .errors import InvalidObject
from .model import Meta, Version

MIN_INT: Final = -(1 << 63)
MAX_INT: Final = (1 << 64) - 1
"""The ints the codec writes (msgpack's range)."""

Check = Callable[[Any], None]
"""Raises ``_Unfit`` (with the expected type) if the value does not fit."""


class _Unfit(Exception):
    """A value does not fit its annotation; ``expected`` says what would."""

    def __init__(self, value: Any, expected: str, detail: str = "") -> None:
        super().__init__(expected)
        self.value = value
        self.expected = expected
        self.detail = detail


def field_hints(cls: type) -> dict[str, Any]:
    """The annotation of each attrs field of ``cls`` (``Any`` where it has none)."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError) as exc:
        raise InvalidObject(
            f"the annotations of {cls.__name__} do not resolve ({exc}); define the class "
            "at module level, with every type it names importable there"
        ) from None
    return {a.name: hints.get(a.name, Any) for a in attrs.fields(cls)}


def _str(value: Any) -> None:
    if not isinstance(value, str):
        raise _Unfit(value, "str")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _Unfit(
                value,
                "str",
                "it holds a lone surrogate, which is not UTF-8 (decode file "
                "names with errors='replace', or store them as bytes)",
            ) from None


def _int(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Unfit(value, "int")
    if not MIN_INT <= value <= MAX_INT:
        raise _Unfit(value, "int", "it is outside -2**63 .. 2**64-1, the ints the log holds")


def _float(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, float | int):
        raise _Unfit(value, "float")
    if isinstance(value, int):
        try:
            exact = float(value) == value
        except OverflowError:
            exact = False
        if not exact:  # it would read back as another number
            raise _Unfit(value, "float", "that int has no exact float; pass a float")


def _exact(kind: type, name: str) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise _Unfit(value, name)

    return check


def _none(value: Any) -> None:
    if value is not None:
        raise _Unfit(value, "None")


def _scalar(value: Any) -> None:
    """What an ``Any`` field may hold."""
    if value is None or isinstance(value, bool | bytes):
        return
    if isinstance(value, str):
        _str(value)
    elif isinstance(value, int):
        _int(value)
    elif not isinstance(value, float):
        raise _Unfit(
            value,
            "a str, int, float, bool, bytes or None (an Any field)",
            "annotate the field (tuple[...], frozenset[...], a class) to store other values",
        )


_SCALARS: Final[dict[Any, Check]] = {
    str: _str,
    int: _int,
    float: _float,
    bool: _exact(bool, "bool"),
    bytes: _exact(bytes, "bytes"),
    type(None): _none,
    None: _none,
    Any: _scalar,
    object: _scalar,
}


def checker(annotation: Any, where: str) -> Check:
    """The check of values of ``annotation``; InvalidObject (naming ``where``) if the store
    cannot hold that type."""
    scalar = _SCALARS.get(annotation)
    if scalar is not None:
        return scalar
    if annotation is Version:
        return _version
    if annotation is Meta:
        return _meta
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum(annotation, where)
    if isinstance(annotation, type) and attrs.has(annotation):
        return _nested(annotation, where)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is _UnionType:
        return _union([checker(a, where) for a in args], annotation)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _tuple_of(checker(args[0], where), annotation)
        return _fixed_tuple([checker(a, where) for a in args], annotation)
    if origin is frozenset:
        return _frozenset_of(checker(args[0] if args else Any, where), annotation)
    if origin is typing.Literal:
        return _literal(args, where)
    raise InvalidObject(
        f"{where} is declared {_name(annotation)}, which the store cannot write; use str, "
        "int, float, bool, bytes, None, enums, tuple[...], frozenset[...] or frozen attrs "
        "classes"
    )


_UnionType: Final = type(int | None)


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _version(value: Any) -> None:
    if type(value) is not Version or type(value.index) is not int:
        raise _Unfit(value, "Version")


def _meta(value: Any) -> None:
    if type(value) is not Meta:
        raise _Unfit(value, "Meta")
    if value.version is not None:
        _version(value.version)
    _float(value.created_at)
    _float(value.updated_at)


def _enum(cls: type[enum.Enum], where: str) -> Check:
    values = [member.value for member in cls]
    if not (all(type(v) is str for v in values) or all(type(v) is int for v in values)):
        raise InvalidObject(
            f"{where} is the enum {cls.__name__}, whose values are not all str or all int; "
            "the store writes enums by value"
        )

    def check(value: Any) -> None:
        if not isinstance(value, cls):
            raise _Unfit(value, cls.__name__)

    return check


def _literal(args: tuple[Any, ...], where: str) -> Check:
    if not all(isinstance(a, str | int | bool) or a is None for a in args):
        raise InvalidObject(f"{where}: Literal values must be str, int, bool or None")
    allowed = frozenset((type(a), a) for a in args)

    def check(value: Any) -> None:
        if (type(value), value) not in allowed:
            raise _Unfit(value, f"one of {list(args)!r}")

    return check


def _union(checks: list[Check], annotation: Any) -> Check:
    def check(value: Any) -> None:
        for one in checks:
            try:
                one(value)
            except _Unfit:
                continue
            return
        raise _Unfit(value, _name(annotation))

    if len(checks) == 2 and _none in checks:
        inner = checks[0] if checks[1] is _none else checks[1]

        def optional(value: Any) -> None:
            if value is not None:
                try:
                    inner(value)
                except _Unfit as exc:
                    raise _Unfit(value, _name(annotation), exc.detail) from None

        return optional
    return check


def _tuple_of(item: Check, annotation: Any) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, tuple):
            raise _Unfit(value, _name(annotation))
        for element in value:
            item(element)

    return check


def _fixed_tuple(items: list[Check], annotation: Any) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, tuple) or len(value) != len(items):
            raise _Unfit(value, _name(annotation))
        for one, element in zip(items, value, strict=True):
            one(element)

    return check


def _frozenset_of(item: Check, annotation: Any) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, frozenset):
            raise _Unfit(value, _name(annotation))
        for element in value:
            item(element)

    return check


_NESTED: dict[type, Check] = {}


def _nested(cls: type, where: str) -> Check:
    cached = _NESTED.get(cls)
    if cached is not None:
        return cached
    if not attrs.inspect(cls).is_frozen:
        raise InvalidObject(f"{where} holds {cls.__name__}, which is not a frozen attrs class")
    fields: list[tuple[str, Check]] = []

    def check(value: Any) -> None:
        if type(value) is not cls:
            raise _Unfit(value, cls.__name__)
        for name, one in fields:
            one(getattr(value, name))

    _NESTED[cls] = check  # before the fields: a class may nest itself
    for name, annotation in field_hints(cls).items():
        fields.append((name, checker(annotation, f"{cls.__name__}.{name}")))
    return check


def class_checker(cls: type) -> Callable[[Any], None]:
    """The write-time check of objects of ``cls`` (a stored class): every field but
    ``meta`` (which the store stamps) against its annotation; InvalidObject names the field,
    the value and the type. Raises InvalidObject at once if a field's type is not
    storable."""
    name = cls.__name__
    checks = [
        (field, checker(annotation, f"{name}.{field}"))
        for field, annotation in field_hints(cls).items()
        if field != "meta"
    ]
    # Generated: a loop over the fields costs a call and a tuple per field.
    namespace: dict[str, Any] = {
        "Unfit": _Unfit,
        "fail": functools.partial(_fail_in, cls, checks),
        "ascii": str.isascii,
    }
    lines = ["def check(obj):", "    try:"]
    for i, (field, one) in enumerate(checks):
        namespace[f"c{i}"] = one
        value = f"obj.{field}" if field.isidentifier() else f"getattr(obj, {field!r})"
        if one is _str:  # the common case without a call: an ASCII str
            lines.append(f"        v = {value}")
            lines.append("        if type(v) is not str or not ascii(v):")
            lines.append(f"            c{i}(v)")
        else:
            lines.append(f"        c{i}({value})")
    lines.append("    except Unfit as exc:")
    lines.append("        fail(obj, exc)")
    if not checks:
        lines[1:] = ["    return"]
    exec("\n".join(lines), namespace)
    check: Callable[[Any], None] = namespace["check"]
    return check


def _short_repr(value: Any) -> str:
    try:
        return repr(value)
    except ValueError:  # an int too long for str(): Python refuses it
        return f"<an int of {value.bit_length()} bits>"


def _fail_in(cls: type, checks: list[tuple[str, Check]], obj: Any, exc: _Unfit) -> None:
    """Raise the InvalidObject for ``obj``: find the first field that does not fit."""
    for field, one in checks:
        try:
            one(getattr(obj, field))
        except _Unfit as unfit:
            value = _short_repr(unfit.value)
            if len(value) > 80:
                value = value[:77] + "..."
            detail = f" ({unfit.detail})" if unfit.detail else ""
            raise InvalidObject(
                f"{cls.__name__}.{field}: {value} ({type(unfit.value).__name__}) is not "
                f"{unfit.expected}{detail}; nothing was written"
            ) from None
    raise InvalidObject(f"{cls.__name__}: {_short_repr(exc.value)} is not {exc.expected}")


_SIZERS: dict[type, Callable[[Any], int]] = {}


def object_size(obj: Any) -> int:
    """An estimate of the bytes ``obj`` holds (a stored object): its str and bytes fields
    by length, 16 per element of a tuple or frozenset, 8 per other field, 64 for the object.
    Cheap (a compiled sum of lengths), for bounding what the history keeps."""
    sizer = _SIZERS.get(type(obj))
    if sizer is None:
        sizer = _SIZERS[type(obj)] = _compile_sizer(type(obj))
    return sizer(obj)


def _compile_sizer(cls: type) -> Callable[[Any], int]:
    if not attrs.has(cls):
        return lambda _obj: 64
    try:
        hints = field_hints(cls)
    except InvalidObject:
        hints = {a.name: Any for a in attrs.fields(cls)}
    terms = ["64"]
    for name, annotation in hints.items():
        if name == "meta" or not name.isidentifier():
            continue
        union = typing.get_origin(annotation) in (typing.Union, _UnionType)
        kinds = set(typing.get_args(annotation)) if union else {annotation}
        origins = {typing.get_origin(k) for k in kinds}
        if kinds & {str, bytes}:
            terms.append(f"(len(o.{name}) if isinstance(o.{name}, (str, bytes)) else 8)")
        elif origins & {tuple, frozenset}:
            terms.append(f"(16 * len(o.{name}) if isinstance(o.{name}, (tuple, frozenset)) else 8)")
        else:
            terms.append("8")
    namespace: dict[str, Any] = {}
    exec(f"def size(o):\n    return {' + '.join(terms)}", namespace)
    size: Callable[[Any], int] = namespace["size"]
    return size
