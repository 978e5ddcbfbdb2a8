"""Schema: which frozen attrs classes the store holds and how each is indexed.

Owns everything that depends only on the schema: extracting and normalising index keys from an
object, checking that an object is storable, and re-stamping an object with new metadata.

Index keys are ordinary Python values compared by Python's own ordering, so ints and enums scan
numerically and strings lexically. Keys are normalised first: enum members become their value,
case-folded indexes fold strings, and None (a missing value) is not indexed at all. Every key of
one index must be of one *family* (numbers, strings, bytes, or tuples of those position by
position) so that they can be ordered; a key of another family is refused before anything is
written.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import attrs

from .errors import InvalidObject
from .fieldtypes import class_checker
from .model import Meta

# Key families: keys of one index must all be mutually orderable.
_FAMILY: Final[dict[type, str]] = {
    str: "str",
    int: "number",
    float: "number",
    bool: "number",
    bytes: "bytes",
}

_setattr: Final = object.__setattr__

RESERVED_INDEX_NAMES: Final = ("after", "limit", "reverse")
"""Keywords of ``find``/``iter`` that cannot name an index."""


def normalize_key(value: Any) -> Any:
    """Return the orderable form of an index key: enums by value, tuples element-wise."""
    if isinstance(value, enum.Enum):
        return value.value
    if type(value) is tuple:
        return tuple(normalize_key(v) for v in value)
    return value


def key_family(key: Any) -> Any:
    """Return the ordering family of a normalised key, or raise TypeError if it has none."""
    family = _FAMILY.get(type(key))
    if family is not None:
        return family
    if isinstance(key, tuple):
        return tuple(key_family(k) for k in key)
    for base, name in _FAMILY.items():
        if isinstance(key, base):
            return name
    raise TypeError(
        f"index keys must be str, int, float, bool, bytes or tuples of them, "
        f"not {type(key).__name__}"
    )


def families_agree(a: Any, b: Any) -> bool:
    """True if keys of families ``a`` and ``b`` can be ordered together: equal, or tuples
    (compound keys, perhaps of different lengths) agreeing position by position."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return all(x == y or families_agree(x, y) for x, y in zip(a, b, strict=False))
    return bool(a == b)


def merge_families(a: Any, b: Any) -> Any:
    """The family of an index holding keys of the agreeing families ``a`` and ``b``: for
    tuples, position by position, as long as the longer."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        if len(a) < len(b):
            a, b = b, a
        return tuple(merge_families(x, y) for x, y in zip(a, b, strict=False)) + a[len(b) :]
    return a


@attrs.frozen
class Index:
    """A secondary index of a table.

    ``field`` names the attribute to index; ``key`` instead derives the key from the object
    (compound keys as tuples; return None to leave the object out, which makes a conditional
    index). ``name`` defaults to ``field`` and is what ``find`` takes as its keyword. ``unique``
    enforces at most one object per key (``UniqueConflict``); ``fold_case`` indexes strings
    case-insensitively (queries are folded too); ``multi`` indexes each element of a set or
    tuple value separately. ``required`` refuses (``InvalidObject``, nothing written) an object
    whose key is None, or, for a multi-valued index, that has no key at all.

    Compound keys (tuples) may differ in length within one index: they order element by
    element, a shorter tuple before the longer ones it starts (go-memdb's ``AllowMissing``).
    """

    field: str | None = None
    name: str | None = None
    unique: bool = False
    fold_case: bool = False
    multi: bool = False
    key: Callable[[Any], Any] | None = None
    required: bool = False

    def __attrs_post_init__(self) -> None:
        if (self.field is None) == (self.key is None):
            raise ValueError("Index takes exactly one of field= or key=")
        if self.key is not None and self.name is None:
            raise ValueError("an Index with key= needs a name=")

    @property
    def index_name(self) -> str:
        """The name ``find`` uses for this index."""
        name = self.name if self.name is not None else self.field
        assert name is not None
        return name


@attrs.define(eq=False)
class IndexSpec:
    """A compiled index: how to get its normalised keys from an object of its table."""

    name: str
    unique: bool
    multi: bool
    fold_case: bool
    # Single-valued: object -> key or None. Multi-valued: object -> frozenset of keys.
    extract: Callable[[Any], Any]
    # The attribute whose value is the key as it is (when it is a str, an int or None), so the
    # compiled write path can read it directly instead of calling ``extract``.
    plain_field: str | None = None
    required: bool = False

    def normalize_query(self, value: Any) -> Any:
        """Normalise a value given in a query the way keys of this index are."""
        value = normalize_key(value)
        if self.fold_case and isinstance(value, str):
            value = value.casefold()
        return value


def _compile_index(cls: type, index: Index) -> IndexSpec:
    field = index.field
    derive = index.key
    fold = index.fold_case

    def one(value: Any) -> Any:
        if value is None:
            return None
        t = type(value)
        if t is not str and t is not int:
            value = normalize_key(value)
        if fold:
            if not isinstance(value, str):
                raise InvalidObject(
                    f"index {index.index_name!r} folds case but got {type(value).__name__} "
                    f"{value!r}; fold_case indexes hold strings only"
                )
            return value.casefold()
        return value

    def raw(obj: Any) -> Any:
        return derive(obj) if derive is not None else getattr(obj, field)  # type: ignore[arg-type]

    if index.multi:

        def extract_many(obj: Any) -> frozenset[Any]:
            values = raw(obj)
            if values is None:
                return frozenset()
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise InvalidObject(
                    f"multi index {index.index_name!r} of {cls.__name__} needs a set or tuple "
                    f"value, got {type(values).__name__}"
                )
            keys = {one(v) for v in values}
            keys.discard(None)
            return frozenset(keys)

        extract: Callable[[Any], Any] = extract_many
    elif derive is None and not fold:
        assert field is not None

        def extract_field(obj: Any) -> Any:
            value = getattr(obj, field)
            t = type(value)
            if t is str or t is int or value is None:
                return value
            return one(value)

        extract = extract_field
    else:

        def extract_one(obj: Any) -> Any:
            return one(raw(obj))

        extract = extract_one
    plain = field if derive is None and not fold and not index.multi else None
    if plain is not None and not plain.isidentifier():
        plain = None
    return IndexSpec(
        index.index_name, index.unique, index.multi, index.fold_case, extract, plain, index.required
    )


def _is_frozen(cls: type) -> bool:
    inspect = getattr(attrs, "inspect", None)
    if inspect is not None:
        return bool(inspect(cls).is_frozen)
    return getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs"  # pragma: no cover


_MUTABLE_ANNOTATIONS: Final = ("list", "dict", "set", "bytearray")


def _compile_restamp(cls: type) -> Callable[[Any, Meta], Any]:
    """Build ``f(obj, meta)`` returning a copy of ``obj`` with ``meta`` replaced.

    Copying field by field through the slot descriptors skips ``__init__`` (validators and
    converters already ran when the object was built) and is 2.5x faster than
    ``attrs.evolve``. Dict classes and classes that cache their hash use evolve.
    """
    names = [a.name for a in attrs.fields(cls)]
    slots = getattr(cls, "__slots__", ())
    if "__dict__" in dir(cls) or any("cached_hash" in s for s in slots):
        return lambda obj, meta: attrs.evolve(obj, meta=meta)
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    lines = ["def restamp(obj, meta):", "    o = new(cls)"]
    for i, name in enumerate(names):
        namespace[f"s{i}"] = getattr(cls, name).__set__
        value = "meta" if name == "meta" else f"obj.{name}"
        lines.append(f"    s{i}(o, {value})")
    lines.append("    return o")
    exec("\n".join(lines), namespace)
    restamp: Callable[[Any, Meta], Any] = namespace.pop("restamp")
    return restamp


Upgrade = Callable[[dict[str, Any]], dict[str, Any]]
"""``Table(upgrade=)``: the stored fields of an object (by name, as stored, without
``meta``) to the fields of today's class."""


class Table:
    """A table of the schema: the frozen attrs class it holds and its secondary indexes.

    The class must be a frozen attrs class with an ``id: str`` field and a ``meta: Meta``
    field; every field's annotation must be a type the store writes (``_fieldtypes``).
    ``name`` defaults to the class name. ``upgrade`` reads objects stored with another
    shape of the class (a field added without a default, removed, renamed or retyped): it
    gets the stored fields as a dict of plain values (lists for tuples and sets, values for
    enums, dicts for nested classes) and returns today's fields, which are checked against
    the class; compaction then writes them in today's shape. Without it, a stored object
    that does not fit raises SchemaMismatch (a field added with a default needs nothing).
    """

    __slots__ = ("_check_fields", "cls", "index_specs", "indexes", "name", "restamp", "upgrade")

    def __init__(
        self,
        cls: type,
        indexes: Sequence[Index] = (),
        *,
        name: str | None = None,
        upgrade: Upgrade | None = None,
    ):
        given: object = cls  # checked at run time: a slip is common
        if not isinstance(given, type):
            kind = type(given).__name__
            raise InvalidObject(
                f"Table takes the class, not an instance ({kind} {given!r:.60}): "
                f"write ws.Table({kind})"
            )
        if not attrs.has(cls):
            raise InvalidObject(f"{cls!r} is not an attrs class; declare it with @attrs.frozen")
        if not _is_frozen(cls):
            raise InvalidObject(
                f"{cls.__name__} is mutable; declare it with @attrs.frozen so stored objects "
                "cannot change under the indexes"
            )
        fields = attrs.fields_dict(cls)
        for required in ("id", "meta"):
            if required not in fields:
                raise InvalidObject(
                    f"{cls.__name__} has no {required!r} field; stored classes need "
                    "'id: str' and 'meta: watchstore.Meta = watchstore.Meta()'"
                )
        for fname, attribute in fields.items():
            annotation = attribute.type
            text = str(getattr(annotation, "__name__", annotation))
            if any(text == m or text.startswith(m + "[") for m in _MUTABLE_ANNOTATIONS):
                raise InvalidObject(
                    f"{cls.__name__}.{fname} is declared {text}, which is mutable; use tuple, "
                    "frozenset or another frozen type"
                )
        self.cls: type[Any] = cls
        self.name = name if name is not None else cls.__name__
        self.indexes = tuple(indexes)
        specs: dict[str, IndexSpec] = {}
        for index in self.indexes:
            if index.field is not None and index.field not in fields:
                raise InvalidObject(f"{cls.__name__} has no field {index.field!r} to index")
            if index.index_name in specs or index.index_name == "id":
                raise InvalidObject(f"{cls.__name__} has two indexes named {index.index_name!r}")
            if index.index_name in RESERVED_INDEX_NAMES:
                raise InvalidObject(
                    f"{cls.__name__}: an index cannot be named {index.index_name!r}, which "
                    f"find() and iter() take as an option; give it another name= (the names "
                    f"{', '.join(RESERVED_INDEX_NAMES)} are reserved)"
                )
            specs[index.index_name] = _compile_index(cls, index)
        self.index_specs = specs
        self.restamp = _compile_restamp(cls)
        self._check_fields = class_checker(cls)
        self.upgrade = upgrade

    def __repr__(self) -> str:
        return f"Table({self.cls.__name__}, indexes={list(self.index_specs)})"

    def check(self, obj: Any) -> str:
        """Check that ``obj`` can be stored in this table; return its id."""
        if type(obj) is not self.cls:
            raise InvalidObject(
                f"table {self.name} holds {self.cls.__name__} objects, not {type(obj).__name__}"
            )
        id = obj.id
        if type(id) is not str or not id:
            raise InvalidObject(f"{self.name} objects need a non-empty str id, got {id!r}")
        self._check_fields(obj)
        if type(obj.meta) is not Meta:
            raise InvalidObject(f"{self.name} {id!r}: meta must be a watchstore.Meta")
        return id


class Schema:
    """The tables of a store; each class and each table name appears once."""

    __slots__ = ("tables",)

    def __init__(self, *tables: Table) -> None:
        if not tables:
            raise ValueError("a Schema needs at least one Table")
        for given in list[object](tables):  # checked at run time: a slip is common
            if isinstance(given, Table):
                continue
            if isinstance(given, list | tuple):
                raise TypeError("pass the tables as arguments, not a list: ws.Schema(*tables)")
            if isinstance(given, type):
                raise TypeError(
                    f"ws.Schema takes tables: write ws.Schema(ws.Table({given.__name__}, "
                    "indexes=[...]))"
                )
            raise TypeError(f"ws.Schema takes ws.Table(...)s, not {given!r:.80}")
        self.tables = tables
        classes: set[type] = set()
        names: set[str] = set()
        for table in tables:
            if table.cls in classes or table.name in names:
                raise ValueError(f"table {table.name} is declared twice")
            classes.add(table.cls)
            names.add(table.name)

    def __repr__(self) -> str:
        return f"Schema({', '.join(t.name for t in self.tables)})"
