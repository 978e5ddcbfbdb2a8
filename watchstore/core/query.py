"""Find conditions: equality (a plain value), ``prefix``, ``between`` and ``any_of``.

A condition is given as the keyword value of ``find``/``iter``/``count``/``first``:
``tx.find(Task, node_id="n1")``, ``tx.find(Node, name=ws.prefix("web-"))``,
``tx.find(Task, state=ws.between(1, 3))``, ``tx.find(Task, node_id=ws.any_of("n1", "n2"))``.

Every condition is, underneath, a union of key ranges (``key_ranges``): an index answers it by
bisecting its ordered keys once per range, so reading the first k matches costs O(log n + k).
A prefix is the range from the prefix to its successor (``"ab"`` covers ``["ab", "ac")``), a
tuple prefix the range from the tuple to the tuple followed by ``TOP``, a value that sorts
after everything. Index keys are compared by Python's ordering: tuples element by element,
a shorter tuple before the longer ones it starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable


@attrs.frozen
class Prefix:
    """Keys starting with ``value``: a str or bytes prefix, or a tuple prefix of a compound key
    (whose last part may itself be a ``Prefix`` of a str or bytes part)."""

    value: Any


@attrs.frozen
class Between:
    """Keys from ``low`` to ``high`` (None = unbounded); ``inclusive`` is (low, high)."""

    low: Any = None
    high: Any = None
    inclusive: tuple[bool, bool] = (True, False)


@attrs.frozen
class AnyOf:
    """Keys matching any of ``values`` (plain values, prefixes or ranges); results come in
    index order, each object once."""

    values: tuple[Any, ...]


def prefix(value: str | bytes | tuple[Any, ...]) -> Prefix:
    """Match index keys that start with ``value``: ``str.startswith``, or a tuple prefix of a
    compound key, whose last part may be a prefix itself: ``prefix(("HashiCorp",
    prefix("U")))`` matches ``("HashiCorp", "Uber")`` and ``("HashiCorp", "US", 3)``."""
    return Prefix(value)


def between(
    low: Any = None, high: Any = None, *, inclusive: tuple[bool, bool] = (True, False)
) -> Between:
    """Match index keys in ``[low, high)`` by default; None leaves that end open."""
    return Between(low, high, inclusive)


def any_of(*values: Any) -> AnyOf:
    """Match index keys matching any of ``values``: plain values (equality), ``prefix(...)``
    and ``between(...)`` conditions, mixed freely."""
    return AnyOf(values)


class _Top:
    """Sorts after every index key (and equals none): the open end of a tuple prefix."""

    __slots__ = ()

    def __lt__(self, other: object) -> bool:
        return False

    def __le__(self, other: object) -> bool:
        return other is self

    def __gt__(self, other: object) -> bool:
        return other is not self

    def __ge__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "TOP"


TOP: Final = _Top()

KeyRange = tuple[Any, Any, bool, bool]
"""(low, high, low inclusive, high inclusive); None leaves an end open."""


def successor(value: str | bytes) -> str | bytes | None:
    """The smallest value after every str (bytes) starting with ``value``; None if there is
    none (the empty prefix, or one made only of the largest character)."""
    if isinstance(value, str):
        text = value.rstrip("\U0010ffff")
        if not text:
            return None
        return text[:-1] + chr(ord(text[-1]) + 1)
    data = value.rstrip(b"\xff")
    if not data:
        return None
    return data[:-1] + bytes((data[-1] + 1,))


def key_ranges(condition: Any) -> list[KeyRange]:
    """The key ranges whose union a normalised condition matches (None: every key)."""
    if condition is None:
        return [(None, None, True, True)]
    if isinstance(condition, Prefix):
        value = condition.value
        if isinstance(value, tuple):
            if value and isinstance(value[-1], Prefix):
                head, part = value[:-1], value[-1].value
                after = successor(part)
                high = (*head, TOP if after is None else after)
                return [((*head, part), high, True, False)]
            return [(value, (*value, TOP), True, False)]
        return [(value, successor(value), True, False)]
    if isinstance(condition, Between):
        low_in, high_in = condition.inclusive
        return [(condition.low, condition.high, low_in, high_in)]
    if isinstance(condition, AnyOf):
        return [r for value in condition.values for r in key_ranges(value)]
    return [(condition, condition, True, True)]


def in_range(key: Any, low: Any, high: Any, low_in: bool, high_in: bool) -> bool:
    """True if ``key`` lies in the range."""
    if low is not None and (key < low if low_in else key <= low):
        return False
    return not (high is not None and (key > high if high_in else key >= high))


def key_matcher(condition: Any) -> Callable[[Any], bool]:
    """Return a predicate over normalised keys for a normalised condition."""
    if condition is None:
        return lambda key: True
    if not isinstance(condition, (Prefix, Between, AnyOf)):
        return lambda key: key == condition
    ranges = key_ranges(condition)
    if len(ranges) == 1:
        ((low, high, low_in, high_in),) = ranges
        return lambda key: in_range(key, low, high, low_in, high_in)
    return lambda key: any(in_range(key, *r) for r in ranges)
