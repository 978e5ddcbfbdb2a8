"""``iter``/``find`` with ``limit``, ``reverse`` and ``after`` agree with a sorted-list model,
on the live tables and on a snapshot taken before later writes (issue 22).

The store's core runs here without an event loop: the same ``StoreState`` the service drives,
committed as a proposer would commit it. The model is a plain list of (smallest matching key,
id, object) sorted by Python, with matching written out from the conditions' definitions.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import watchstore as ws
from watchstore.core.state import StoreState


@attrs.frozen
class Part:
    id: str
    group: str | None = None
    tags: frozenset[str] = frozenset()
    path: tuple[str, ...] = ()
    meta: ws.Meta = ws.Meta()


SCHEMA: Final = ws.Schema(
    ws.Table(
        Part,
        indexes=[
            ws.Index("group"),
            ws.Index("tags", multi=True),
            ws.Index(key=lambda p: p.path or None, name="path"),
        ],
    )
)

IDS: Final = tuple(f"p{i:02d}" for i in range(24))
GROUPS: Final = ("a", "ab", "abc", "b", "ba", "c")
TAGS: Final = ("x", "xy", "y", "z")
WORDS: Final = ("H", "Ha", "Hb", "U", "Ub")


def parts() -> st.SearchStrategy[Part]:
    return st.builds(
        Part,
        st.sampled_from(IDS),
        st.none() | st.sampled_from(GROUPS),
        st.frozensets(st.sampled_from(TAGS), max_size=3),
        st.lists(st.sampled_from(WORDS), max_size=3).map(tuple),
    )


# -- the model ---------------------------------------------------------------------------------


def keys_of(obj: Part, index: str) -> list[Any]:
    if index == "id":
        return [obj.id]
    if index == "group":
        return [] if obj.group is None else [obj.group]
    if index == "tags":
        return list(obj.tags)
    return [obj.path] if obj.path else []


def matches(condition: Any, key: Any) -> bool:
    if condition is None:
        return True
    if isinstance(condition, ws.AnyOf):
        return any(matches(c, key) for c in condition.values)
    if isinstance(condition, ws.Between):
        low, high = condition.low, condition.high
        low_in, high_in = condition.inclusive
        if low is not None and not (low <= key if low_in else low < key):
            return False
        return high is None or (key <= high if high_in else key < high)
    if isinstance(condition, ws.Prefix):
        value = condition.value
        if isinstance(value, str):
            return isinstance(key, str) and key.startswith(value)
        if value and isinstance(value[-1], ws.Prefix):
            head, last = value[:-1], value[-1].value
            return (
                len(key) >= len(value)
                and key[: len(head)] == head
                and key[len(head)].startswith(last)
            )
        return bool(key[: len(value)] == value)
    return bool(key == condition)


def position(obj: Part, index: str, condition: Any) -> Any:
    hits = [k for k in keys_of(obj, index) if matches(condition, k)]
    if index in ("group", "path", "id"):  # single-valued: its key, matching or not
        keys = keys_of(obj, index)
        return keys[0] if keys else None
    return min(hits) if hits else None


def model_find(
    objects: dict[str, Part],
    index: str,
    condition: Any,
    *,
    limit: int | None = None,
    reverse: bool = False,
    after: Part | None = None,
) -> list[Part]:
    hits = []
    for obj in objects.values():
        keys = [k for k in keys_of(obj, index) if matches(condition, k)]
        if keys:
            hits.append(((min(keys), obj.id), obj))
    hits.sort(key=lambda hit: hit[0], reverse=reverse)
    if after is not None:
        mark = (position(after, index, condition), after.id)
        hits = [h for h in hits if (h[0] < mark if reverse else h[0] > mark)]
    found = [obj for _pos, obj in hits]
    return found if limit is None else found[:limit]


# -- conditions ----------------------------------------------------------------------------------


def _scalar_conditions(
    values: tuple[str, ...], prefixes: tuple[str, ...]
) -> st.SearchStrategy[Any]:
    value = st.sampled_from(values)
    plain = st.one_of(
        value,
        st.sampled_from(prefixes).map(ws.prefix),
        st.builds(
            ws.between,
            st.none() | value,
            st.none() | value,
            inclusive=st.tuples(st.booleans(), st.booleans()),
        ),
    )
    return st.one_of(plain, st.lists(plain, min_size=1, max_size=3).map(lambda cs: ws.any_of(*cs)))


def _path_conditions() -> st.SearchStrategy[Any]:
    path = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(tuple)
    return st.one_of(
        path,
        path.map(ws.prefix),
        st.builds(
            lambda head, last: ws.prefix((*head, ws.prefix(last))),
            st.lists(st.sampled_from(WORDS), max_size=2).map(tuple),
            st.sampled_from(("", "H", "U", "Ha")),
        ),
        st.builds(ws.between, st.none() | path, st.none() | path),
    )


CONDITIONS: Final = {
    "id": st.none() | _scalar_conditions(IDS, ("", "p0", "p1", "p2")),
    "group": _scalar_conditions(GROUPS, ("", "a", "ab", "b")),
    "tags": _scalar_conditions(TAGS, ("", "x", "y")),
    "path": _path_conditions(),
}


@st.composite
def queries(draw: st.DrawFn) -> tuple[str, Any, int | None, bool]:
    index = draw(st.sampled_from(sorted(CONDITIONS)))
    condition = draw(CONDITIONS[index])
    limit = draw(st.none() | st.integers(0, 8))
    return index, condition, limit, draw(st.booleans())


def pick_after(draw: Any, objects: dict[str, Part], index: str, condition: Any) -> Part | None:
    """An object with a place in the scan (any object of the table for a single-valued
    index; for the multi-valued one, one with a matching key), or None."""
    candidates = [o for o in objects.values() if position(o, index, condition) is not None]
    if not candidates or draw(st.booleans()):
        return None
    chosen: Part = draw(st.sampled_from(candidates))
    return chosen


# -- the store's core ------------------------------------------------------------------------


def commit(state: StoreState, write: Any) -> None:
    tx = state.begin()
    write(tx)
    state.commit(tx, tx.version)


def load(state: StoreState, objects: list[Part]) -> dict[str, Part]:
    """Upsert ``objects`` in one commit; return the model: id -> stored object."""
    commit(state, lambda tx: [tx.upsert(o) for o in objects])
    return {o.id: o for o in state.reader().all(Part)}


def check(
    reader: ws.ReadTx,
    model: dict[str, Part],
    query: tuple[str, Any, int | None, bool],
    after: Part | None,
) -> None:
    index, condition, limit, reverse = query
    cond = {} if condition is None else {index: condition}
    expected = model_find(model, index, condition, limit=limit, reverse=reverse, after=after)
    where = f"{index}={condition!r} limit={limit} reverse={reverse} after={after}"
    options: dict[str, Any] = {"limit": limit, "reverse": reverse, "after": after}
    assert reader.find(Part, **options, **cond) == expected, where
    assert list(reader.iter(Part, **options, **cond)) == expected, where
    if after is None and limit is None:
        everything = model_find(model, index, condition)
        assert reader.first(Part, **cond) == (everything[0] if everything else None), where
        assert reader.last(Part, **cond) == (everything[-1] if everything else None), where
        assert reader.count(Part, **cond) == len(everything), where


@settings(max_examples=150, deadline=None)
@given(st.data(), st.lists(parts(), max_size=24), st.lists(parts(), max_size=12), queries())
def test_live_and_snapshot_scans_agree_with_a_sorted_list(
    data: st.DataObject,
    before: list[Part],
    writes: list[Part],
    query: tuple[str, Any, int | None, bool],
) -> None:
    state = StoreState(SCHEMA)
    model_before = load(state, before)
    snapshot = state.pin()
    # Later writes: upserts, and deletes of some objects the snapshot still sees.
    doomed = data.draw(st.lists(st.sampled_from(sorted(model_before) or ["none"]), max_size=4))
    model_after = load(state, writes)
    commit(state, lambda tx: [tx.delete(Part, id) for id in set(doomed) if tx.get(Part, id)])
    model_after = {o.id: o for o in state.reader().all(Part)}

    index, condition, _limit, _reverse = query
    check(state.reader(), model_after, query, pick_after(data.draw, model_after, index, condition))
    after = pick_after(data.draw, model_before, index, condition)
    check(snapshot, model_before, query, after)
    snapshot.close()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(parts(), min_size=1, max_size=24),
    st.lists(parts(), min_size=1, max_size=24),
    queries(),
)
def test_a_snapshot_iterator_keeps_its_version_while_writes_land_between_pages(
    before: list[Part], writes: list[Part], query: tuple[str, Any, int | None, bool]
) -> None:
    state = StoreState(SCHEMA)
    model = load(state, before)
    snapshot = state.pin()
    index, condition, limit, reverse = query
    cond = {} if condition is None else {index: condition}
    found = snapshot.iter(Part, limit=limit, reverse=reverse, **cond)
    first = next(found, None)
    for obj in writes:  # each write a commit of its own, between the pages
        commit(state, lambda tx, obj=obj: tx.upsert(obj))
    rest = list(found)
    expected = model_find(model, index, condition, limit=limit, reverse=reverse)
    assert ([first] if first is not None else []) + rest == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(parts(), max_size=24), queries(), st.integers(1, 5))
def test_paging_with_after_visits_every_match_once_in_order(
    objects: list[Part], query: tuple[str, Any, int | None, bool], page: int
) -> None:
    state = StoreState(SCHEMA)
    model = load(state, objects)
    index, condition, _limit, reverse = query
    cond = {} if condition is None else {index: condition}
    reader = state.reader()
    seen: list[Part] = []
    after = None
    while True:
        got = reader.find(Part, limit=page, reverse=reverse, after=after, **cond)
        seen.extend(got)
        if len(got) < page:
            break
        after = got[-1]
    assert seen == model_find(model, index, condition, reverse=reverse)


def test_the_model_orders_compound_keys_shorter_first() -> None:
    assert sorted([("H", "a"), ("H",), ("G", "z", "z")]) == [("G", "z", "z"), ("H",), ("H", "a")]


def test_after_an_object_of_another_class_is_refused() -> None:
    state = StoreState(SCHEMA)
    with pytest.raises(ws.InvalidQuery, match="after= takes a Part"):
        state.reader().find(Part, after="p01")
