"""Value types that cross the store's boundaries: versions, object metadata, actions, changes.

All are frozen, slotted attrs classes: hashable, cheap and impossible to change by accident.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


@attrs.frozen(eq=False, repr=False)
class Version:
    """The position of one commit in the store's history; ordered by ``index``.

    Every commit, on every path (update, batch, restore, replication), gets exactly one Version,
    and every object written by that commit carries it in ``meta.version``.
    """

    index: int

    # Hand-written: attrs' generated comparisons build tuples and cost ~10x more, and
    # versions are compared on every commit and every optimistic-concurrency check.
    def __eq__(self, other: object) -> bool:
        if type(other) is Version:
            return self.index == other.index
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if type(other) is Version:
            return self.index != other.index
        return NotImplemented

    def __lt__(self, other: Version) -> bool:
        return self.index < other.index

    def __le__(self, other: Version) -> bool:
        return self.index <= other.index

    def __gt__(self, other: Version) -> bool:
        return self.index > other.index

    def __ge__(self, other: Version) -> bool:
        return self.index >= other.index

    def __hash__(self) -> int:
        return hash(self.index)

    def __repr__(self) -> str:
        return f"Version({self.index})"


@attrs.frozen
class Meta:
    """Metadata the store stamps on every object it writes.

    ``version`` is the Version of the commit that last wrote the object (None on an object that
    was never stored); ``created_at``/``updated_at`` are Unix times in seconds.
    """

    version: Version | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


class ActionKind(enum.IntEnum):
    """What a :class:`StoreAction` does to its object."""

    CREATE = 1
    UPDATE = 2
    DELETE = 3


@attrs.frozen
class StoreAction:
    """One object change of a commit: ``obj`` is the new object (the removed one for DELETE).

    ``old`` is the object before an UPDATE (None for CREATE and DELETE). ``table`` is the
    table's name in the schema.
    """

    kind: ActionKind
    table: str
    obj: Any
    old: Any = None


@attrs.frozen
class Change:
    """One committed transaction: its version and its actions, in transaction order."""

    version: Version
    actions: Sequence[StoreAction]


def slot_constructor(cls: type) -> Callable[..., Any]:
    """Build ``f(*field_values)`` making an instance of a slotted attrs class without __init__.

    Setting slots through their descriptors is about twice as fast as attrs' frozen
    ``__init__``; it is only for values whose fields the caller has already validated.
    """
    setters = [getattr(cls, a.name).__set__ for a in attrs.fields(cls)]
    new = object.__new__
    names = ", ".join(f"v{i}" for i in range(len(setters)))
    body = "".join(f"    s{i}(o, v{i})\n" for i in range(len(setters)))
    namespace: dict[str, Any] = {f"s{i}": s for i, s in enumerate(setters)}
    namespace.update(new=new, cls=cls)
    exec(f"def make({names}):\n    o = new(cls)\n{body}    return o\n", namespace)
    make: Callable[..., Any] = namespace.pop("make")
    return make


new_meta: Callable[[Version | None, float, float], Meta] = slot_constructor(Meta)
new_action: Callable[[ActionKind, str, Any, Any], StoreAction] = slot_constructor(StoreAction)
new_change: Callable[[Version, Sequence[StoreAction]], Change] = slot_constructor(Change)
new_version: Callable[[int], Version] = slot_constructor(Version)


def action_fields(table: str, old: Any, new: Any) -> tuple[ActionKind, str, Any, Any]:
    """The fields (kind, table, obj, old) of the action that changed an object of ``table``
    from ``old`` to ``new`` (None: absent; not both): ``obj`` is the removed object of a
    DELETE, and ``old`` is set only for an UPDATE."""
    if old is None:
        return (ActionKind.CREATE, table, new, None)
    if new is None:
        return (ActionKind.DELETE, table, old, None)
    return (ActionKind.UPDATE, table, new, old)


ORIGIN: Final = Version(0)
"""The version of an empty store, before any commit."""
