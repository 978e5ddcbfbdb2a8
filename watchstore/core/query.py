"""Find conditions: equality (a plain value), ``prefix``, ``between`` and ``any_of``.

A condition is given as the keyword value of ``find``/``count``/``first``:
``tx.find(Task, node_id="n1")``, ``tx.find(Node, name=ws.prefix("web-"))``,
``tx.find(Task, state=ws.between(1, 3))``, ``tx.find(Task, node_id=ws.any_of("n1", "n2"))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable


@attrs.frozen
class Prefix:
    """Keys starting with ``value``: a string prefix, or a tuple prefix of a compound key."""

    value: Any


@attrs.frozen
class Between:
    """Keys from ``low`` to ``high`` (None = unbounded); ``inclusive`` is (low, high)."""

    low: Any = None
    high: Any = None
    inclusive: tuple[bool, bool] = (True, False)


@attrs.frozen
class AnyOf:
    """Keys equal to any of ``values``; results come in index order, each object once."""

    values: tuple[Any, ...]


def prefix(value: str | tuple[Any, ...]) -> Prefix:
    """Match index keys that start with ``value`` (``str.startswith`` or a tuple prefix)."""
    return Prefix(value)


def between(
    low: Any = None, high: Any = None, *, inclusive: tuple[bool, bool] = (True, False)
) -> Between:
    """Match index keys in ``[low, high)`` by default; None leaves that end open."""
    return Between(low, high, inclusive)


def any_of(*values: Any) -> AnyOf:
    """Match index keys equal to any of ``values``."""
    return AnyOf(values)


def starts_with(key: Any, value: Any) -> bool:
    """True if index key ``key`` starts with the prefix ``value``."""
    if isinstance(value, str):
        return isinstance(key, str) and key.startswith(value)
    if isinstance(value, tuple):
        return isinstance(key, tuple) and key[: len(value)] == value
    return False


def key_matcher(condition: Any) -> Callable[[Any], bool]:
    """Return a predicate over normalised keys for a normalised condition."""
    if isinstance(condition, Prefix):
        value = condition.value
        return lambda key: starts_with(key, value)
    if isinstance(condition, Between):
        low, high = condition.low, condition.high
        low_in, high_in = condition.inclusive

        def in_range(key: Any) -> bool:
            if low is not None and (key < low if low_in else key <= low):
                return False
            return not (high is not None and (key > high if high_in else key >= high))

        return in_range
    if isinstance(condition, AnyOf):
        values = set(condition.values)
        return values.__contains__
    return lambda key: key == condition
