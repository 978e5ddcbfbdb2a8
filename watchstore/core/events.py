"""Events of committed changes, the specifiers that select them, and indexed routing (sans-I/O).

A commit produces, in transaction order, one ``Created``/``Updated``/``Deleted`` per changed
object and then one ``Committed``. A watcher gives specifiers (``on_create(Task,
node_id="n1")``, ``on(Node, where=...)``, ``on_commit()``...); it receives an event if any
specifier matches. An update matches when the old *or* the new object matches, so a watcher of
``node_id="n1"`` sees a task move away from n1.

Routing rule: a specifier with field equalities is filed under one of them, (table, field,
value); a commit looks up only the buckets of the values its objects have, so its cost grows
with the watchers that can match, not with all watchers. Specifiers without equalities are
filed per table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Generic, Never, overload

import attrs
from typing_extensions import TypeVar

from .errors import InvalidQuery
from .model import ActionKind, Change, StoreAction, Version, slot_constructor

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import TypeAlias

# -- events ------------------------------------------------------------------------------------

T = TypeVar("T", default=Any)
"""The class of the objects an event carries (Any when a type checker cannot tell)."""
T_co = TypeVar("T_co", covariant=True, default=Any)

if TYPE_CHECKING:
    Where: TypeAlias = Callable[[T], bool] | Iterable[Callable[[T], bool]] | None
    """A ``where=`` argument: a predicate on the object, or several (all must hold)."""


@attrs.frozen
class Created(Generic[T]):
    """``obj`` was created by the commit ``version``."""

    obj: T
    version: Version


@attrs.frozen
class Updated(Generic[T]):
    """``old`` was replaced by ``obj`` in the commit ``version``."""

    obj: T
    old: T
    version: Version


@attrs.frozen
class Deleted(Generic[T]):
    """``obj`` was deleted by the commit ``version``."""

    obj: T
    version: Version


@attrs.frozen
class Committed:
    """The commit ``version`` is complete; ``changes`` is how many objects it changed."""

    version: Version
    changes: int


Event = Created[T] | Updated[T] | Deleted[T] | Committed
"""Any event a watch yields; ``Event[Task]`` is one of a watch of ``Task`` objects (a bare
``Event`` is ``Event[Any]``)."""

new_created: Final[Callable[[Any, Version], Created[Any]]] = slot_constructor(Created)
new_updated: Final[Callable[[Any, Any, Version], Updated[Any]]] = slot_constructor(Updated)
new_deleted: Final[Callable[[Any, Version], Deleted[Any]]] = slot_constructor(Deleted)


# -- specifiers --------------------------------------------------------------------------------


@attrs.frozen
class Spec(Generic[T_co]):
    """Selects events: of ``cls`` (None = any table), of ``kinds``, whose object has every
    ``fields`` value and passes every ``where`` predicate. ``commit`` selects Committed.

    ``Spec[Task]`` selects events of ``Task`` objects: a watch of such specifiers yields
    ``Event[Task]``. ``on_commit()`` is a ``Spec[Never]``: it adds no object type."""

    cls: type[T_co] | None
    kinds: frozenset[ActionKind]
    fields: tuple[tuple[str, Any], ...] = ()
    where: tuple[Callable[[Any], bool], ...] = ()
    commit: bool = False

    def matches_object(self, obj: Any) -> bool:
        """True if ``obj`` has every field value and passes every predicate."""
        for name, value in self.fields:
            if getattr(obj, name, _MISSING) != value:
                return False
        return all(predicate(obj) for predicate in self.where)

    def matches(self, action: StoreAction) -> bool:
        """True if this specifier selects ``action`` (old or new object, for updates)."""
        if action.kind not in self.kinds:
            return False
        cls = self.cls
        if cls is not None and type(action.obj) is not cls:
            return False
        if not self.fields and not self.where:
            return True
        if self.matches_object(action.obj):
            return True
        return action.old is not None and self.matches_object(action.old)


_MISSING: Final = object()
_ALL_KINDS: Final = frozenset(ActionKind)


def _spec(
    cls: type[Any] | None, kinds: Iterable[ActionKind], where: Where[Any], fields: dict[str, Any]
) -> Spec[Any]:
    for name, value in fields.items():
        try:
            hash(value)
        except TypeError:
            raise InvalidQuery(
                f"{name}={value!r}: a watch compares fields with hashable values; use a "
                "frozenset or tuple, or where= for anything else"
            ) from None
    if where is None:
        predicates: tuple[Callable[[Any], bool], ...] = ()
    elif callable(where):
        predicates = (where,)
    else:
        predicates = tuple(where)
    return Spec(cls, frozenset(kinds), tuple(fields.items()), predicates)


@overload
def on_create(cls: type[T], *, where: Where[T] = None, **fields: Any) -> Spec[T]: ...
@overload
def on_create(cls: None = None, *, where: Where[Any] = None, **fields: Any) -> Spec[Any]: ...
def on_create(
    cls: type[Any] | None = None, *, where: Where[Any] = None, **fields: Any
) -> Spec[Any]:
    """Select creations of ``cls`` objects with these field values (and ``where``)."""
    return _spec(cls, (ActionKind.CREATE,), where, fields)


@overload
def on_update(cls: type[T], *, where: Where[T] = None, **fields: Any) -> Spec[T]: ...
@overload
def on_update(cls: None = None, *, where: Where[Any] = None, **fields: Any) -> Spec[Any]: ...
def on_update(
    cls: type[Any] | None = None, *, where: Where[Any] = None, **fields: Any
) -> Spec[Any]:
    """Select updates where the old or the new object matches."""
    return _spec(cls, (ActionKind.UPDATE,), where, fields)


@overload
def on_delete(cls: type[T], *, where: Where[T] = None, **fields: Any) -> Spec[T]: ...
@overload
def on_delete(cls: None = None, *, where: Where[Any] = None, **fields: Any) -> Spec[Any]: ...
def on_delete(
    cls: type[Any] | None = None, *, where: Where[Any] = None, **fields: Any
) -> Spec[Any]:
    """Select deletions of matching objects."""
    return _spec(cls, (ActionKind.DELETE,), where, fields)


@overload
def on(cls: type[T], *, where: Where[T] = None, **fields: Any) -> Spec[T]: ...
@overload
def on(cls: None = None, *, where: Where[Any] = None, **fields: Any) -> Spec[Any]: ...
def on(cls: type[Any] | None = None, *, where: Where[Any] = None, **fields: Any) -> Spec[Any]:
    """Select creations, updates and deletions of matching objects."""
    return _spec(cls, _ALL_KINDS, where, fields)


def on_commit() -> Spec[Never]:
    """Select the ``Committed`` event that ends every transaction (a ``Spec[Never]``: it
    adds no object type to a watch's events)."""
    return Spec(None, frozenset(), commit=True)


def check_specs(specs: Sequence[Spec], tables: dict[type, str]) -> None:
    """InvalidQuery unless every specifier can select something of a schema whose tables
    hold ``tables`` (class -> table name): a stored class, fields that class declares (for
    a specifier of any class: that some stored class declares). A specifier that could
    never match is a slip, not a watch."""
    names = ", ".join(f"{cls.__name__}" for cls in tables)
    for spec in specs:
        if not isinstance(spec, Spec):
            raise InvalidQuery(f"watch takes specifiers (ws.on(...), ...), not {spec!r}")
        if spec.cls is not None and spec.cls not in tables:
            raise InvalidQuery(
                f"no table holds {getattr(spec.cls, '__name__', spec.cls)} objects (the schema "
                f"holds {names}): a watch of it would never see an event"
            )
        classes = [spec.cls] if spec.cls is not None else list(tables)
        for field, _value in spec.fields:
            if not any(field in attrs.fields_dict(cls) for cls in classes):
                whose = spec.cls.__name__ if spec.cls is not None else f"any of {names}"
                raise InvalidQuery(
                    f"{whose} has no field {field!r}: a watch on it would never see an event"
                )


# -- routing -----------------------------------------------------------------------------------


class Router:
    """Finds, for a commit, the subscribers whose specifiers select each event.

    ``subscribe(key, specs)`` files each specifier; ``route(change)`` returns, per subscriber
    key, the events it selected in order (Committed last, if it asked for it).
    """

    def __init__(self) -> None:
        # (cls, field) -> value -> [(key, spec)]
        self._buckets: dict[tuple[type | None, str], dict[Any, list[tuple[Any, Spec]]]] = {}
        # cls -> [(key, spec)] for specifiers without field equalities (cls None = any table)
        self._broad: dict[type | None, list[tuple[Any, Spec]]] = {}
        self._commit: dict[Any, None] = {}  # keys that asked for Committed
        self._specs: dict[Any, tuple[Spec, ...]] = {}
        # Per object class: its broad specifiers and its (field, buckets) pairs, rebuilt after
        # any (un)subscription, so routing an object is a few dict lookups.
        self._plans: dict[type, tuple[list[tuple[Any, Spec]], list[tuple[str, Any]]]] = {}

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, key: object) -> bool:
        return key in self._specs

    def keys(self) -> list[Any]:
        """The subscriber keys."""
        return list(self._specs)

    def subscribe(self, key: Any, specs: Sequence[Spec]) -> None:
        """File ``specs`` for subscriber ``key`` (no specs = every object event and commit)."""
        if key in self._specs:
            raise ValueError(f"{key!r} is already subscribed")
        if not specs:
            specs = (on(), on_commit())
        for spec in specs:  # check everything first: a failed subscribe files nothing
            if not isinstance(spec, Spec):
                raise InvalidQuery(f"watch takes specifiers (ws.on(...), ...), not {spec!r}")
            for _name, value in spec.fields:
                hash(value)
        self._plans.clear()
        self._specs[key] = tuple(specs)
        for spec in specs:
            if spec.commit:
                self._commit[key] = None
            elif spec.fields:
                field, value = spec.fields[0]
                self._buckets.setdefault((spec.cls, field), {}).setdefault(value, []).append(
                    (key, spec)
                )
            else:
                self._broad.setdefault(spec.cls, []).append((key, spec))

    def unsubscribe(self, key: Any) -> None:
        """Remove every specifier of ``key``."""
        specs = self._specs.pop(key, ())
        self._commit.pop(key, None)
        self._plans.clear()
        for spec in specs:
            if spec.commit:
                continue
            if spec.fields:
                field, value = spec.fields[0]
                bucket_map = self._buckets[(spec.cls, field)]
                bucket = bucket_map[value]
                bucket.remove((key, spec))
                if not bucket:
                    del bucket_map[value]
                    if not bucket_map:
                        del self._buckets[(spec.cls, field)]
            else:
                broad = self._broad[spec.cls]
                broad.remove((key, spec))
                if not broad:
                    del self._broad[spec.cls]

    def route(
        self, change: Change, failed: dict[Any, Exception] | None = None
    ) -> dict[Any, list[Event]]:
        """Return {subscriber key: its events of ``change``, in order}.

        A subscriber's own code (a ``where=`` predicate, a field value's ``__eq__``) may
        raise: with ``failed``, its key gets that error there and no more events, and every
        other subscriber is routed as if nothing happened; without, the error propagates.
        """
        out: dict[Any, list[Event]] = {}
        if not self._specs:
            return out
        version = change.version
        for action in change.actions:
            event: Event | None = None
            for key, spec in self._candidates(action):
                matched = out.get(key)
                if matched and matched[-1] is event:
                    continue  # already selected by another of its specifiers
                try:
                    hit = spec.matches(action)
                except Exception as exc:
                    if failed is None:
                        raise
                    failed.setdefault(key, exc)
                    continue
                if hit and (failed is None or key not in failed):
                    if event is None:
                        event = _event(action, version)
                    if matched is None:
                        out[key] = [event]
                    else:
                        matched.append(event)
        if self._commit:
            committed = Committed(version, len(change.actions))
            for key in self._commit:
                matched = out.get(key)
                if matched is None:
                    out[key] = [committed]
                else:
                    matched.append(committed)
        return out

    def _candidates(self, action: StoreAction) -> list[tuple[Any, Spec]]:
        # On the commit path: no allocation unless something may match.
        obj = action.obj
        plan = self._plans.get(type(obj)) or self._plan(type(obj))
        found, routed = plan
        old = action.old
        for field, bucket_map in routed:
            value = getattr(obj, field, _MISSING)
            hits = _lookup(bucket_map, value)
            if hits:
                found = found + hits
            if old is not None:
                old_value = getattr(old, field, _MISSING)
                if old_value != value:
                    hits = _lookup(bucket_map, old_value)
                    if hits:
                        found = found + hits
        return found

    def _plan(self, cls: type) -> tuple[list[tuple[Any, Spec]], list[tuple[str, Any]]]:
        broad = [*self._broad.get(cls, ()), *self._broad.get(None, ())]
        routed = [
            (field, buckets)
            for (table, field), buckets in self._buckets.items()
            if table is cls or table is None
        ]
        plan = self._plans[cls] = (broad, routed)
        return plan


def _event(action: StoreAction, version: Version) -> Event:
    kind = action.kind
    if kind is ActionKind.UPDATE:
        return new_updated(action.obj, action.old, version)
    if kind is ActionKind.CREATE:
        return new_created(action.obj, version)
    return new_deleted(action.obj, version)


def _lookup(
    buckets: dict[Any, list[tuple[Any, Spec]]], value: Any
) -> list[tuple[Any, Spec]] | None:
    try:
        return buckets.get(value)
    except TypeError:  # an unhashable field value cannot equal a filed (hashable) one
        return None
