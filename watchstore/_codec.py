"""Encoding of objects and changes to JSON-ready values (sans-I/O; never pickle).

Stored classes are frozen attrs classes whose fields hold JSON-like values: str, int, float,
bool, None, enums, tuples, frozensets, bytes, nested frozen attrs values, ``Meta`` and
``Version``. ``encode`` turns such a value into plain dicts, lists and scalars; the byte size
of that JSON is what transaction limits are measured in.
"""

from __future__ import annotations

import base64
import enum
import json
from typing import Any

import attrs

from ._model import Meta, Version


def encode(value: Any) -> Any:
    """Return ``value`` as JSON-ready data (dicts, lists, str, numbers, bools, None)."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if t is Version:
        return value.index
    if t is Meta:
        return [encode(value.version), value.created_at, value.updated_at]
    if isinstance(value, enum.Enum):
        return encode(value.value)
    if attrs.has(t):
        return {a.name: encode(getattr(value, a.name)) for a in attrs.fields(t)}
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted((encode(v) for v in value), key=repr)
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, str | int | float):  # subclasses of the scalars encode as them
        return value
    raise TypeError(f"cannot encode {t.__name__} {value!r}: store JSON-like values only")


def dumps(value: Any) -> str:
    """Compact JSON text of ``encode(value)``."""
    return json.dumps(encode(value), separators=(",", ":"), ensure_ascii=False)


def encoded_size(obj: Any) -> int:
    """Encoded size in bytes of one stored object."""
    return len(dumps(obj).encode())
