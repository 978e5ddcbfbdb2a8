"""Reads: get, find by equality/prefix/range/any-of in index order, count, first, all."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, State, Task

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def store() -> AsyncIterator[ws.Store]:
    async with ws.open_store(SCHEMA) as store:

        def fill(tx: ws.Tx) -> None:
            tx.create(Task("t3", "svc-b", node_id="n1", state=State.RUNNING, slot=2))
            tx.create(Task("t1", "svc-a", node_id="n1", state=State.NEW, slot=1))
            tx.create(Task("t2", "svc-a", node_id="n2", state=State.FAILED, slot=2))
            tx.create(Task("t4", "svc-a", node_id=None, state=State.ASSIGNED, slot=3))
            tx.create(Node("n1", "Web-1", labels=frozenset({"ssd", "gpu"})))
            tx.create(Node("n2", "web-2", labels=frozenset({"ssd"})))
            tx.create(Node("n3", "db-1"))

        await store.update(fill)
        yield store


def ids(objs: list[Task] | list[Node]) -> list[str]:
    return [o.id for o in objs]


async def test_find_by_equality_returns_index_order(store: ws.Store) -> None:
    assert ids(store.view(lambda tx: tx.find(Task, service_id="svc-a"))) == ["t1", "t2", "t4"]


async def test_missing_values_are_not_indexed(store: ws.Store) -> None:
    found = store.view(lambda tx: tx.find(Task, node_id=ws.prefix("")))
    assert ids(found) == ["t1", "t3", "t2"]


async def test_int_enums_range_scan_numerically(store: ws.Store) -> None:
    # RUNNING=10 sorts after ASSIGNED=2, which a decimal-string key would get wrong.
    found = store.view(lambda tx: tx.find(Task, state=ws.between(State.ASSIGNED, State.FAILED)))
    assert ids(found) == ["t4", "t3"]
    found = store.view(
        lambda tx: tx.find(
            Task, state=ws.between(State.ASSIGNED, State.FAILED, inclusive=(False, True))
        )
    )
    assert ids(found) == ["t3", "t2"]


async def test_open_ended_ranges(store: ws.Store) -> None:
    assert ids(store.view(lambda tx: tx.find(Task, state=ws.between(State.RUNNING)))) == [
        "t3",
        "t2",
    ]
    assert ids(store.view(lambda tx: tx.find(Task, state=ws.between(high=State.ASSIGNED)))) == [
        "t1"
    ]


async def test_any_of_returns_index_order_once_each(store: ws.Store) -> None:
    found = store.view(lambda tx: tx.find(Task, node_id=ws.any_of("n2", "n1", "n2")))
    assert ids(found) == ["t1", "t3", "t2"]


async def test_case_folded_unique_index_matches_any_case(store: ws.Store) -> None:
    assert ids(store.view(lambda tx: tx.find(Node, name="WEB-1"))) == ["n1"]
    assert ids(store.view(lambda tx: tx.find(Node, name=ws.prefix("WEB")))) == ["n1", "n2"]


async def test_multi_valued_index_finds_each_element(store: ws.Store) -> None:
    assert ids(store.view(lambda tx: tx.find(Node, labels="ssd"))) == ["n1", "n2"]
    assert ids(store.view(lambda tx: tx.find(Node, labels="gpu"))) == ["n1"]
    # An object matching several keys comes once, at its first key.
    assert ids(store.view(lambda tx: tx.find(Node, labels=ws.any_of("gpu", "ssd")))) == ["n1", "n2"]


async def test_compound_derived_index_with_tuple_prefix(store: ws.Store) -> None:
    found = store.view(lambda tx: tx.find(Task, service_slot=ws.prefix(("svc-a",))))
    assert ids(found) == ["t1", "t2", "t4"]
    assert ids(store.view(lambda tx: tx.find(Task, service_slot=("svc-b", 2)))) == ["t3"]


async def test_conditional_index_holds_only_matching_objects(store: ws.Store) -> None:
    assert ids(store.view(lambda tx: tx.find(Task, running_on="n1"))) == ["t3"]
    assert store.view(lambda tx: tx.count(Task, running_on=ws.prefix(""))) == 1


async def test_id_prefix_and_all_in_id_order(store: ws.Store) -> None:
    assert ids(store.view(lambda tx: tx.all(Task))) == ["t1", "t2", "t3", "t4"]
    assert ids(store.view(lambda tx: tx.find(Task, id=ws.prefix("t")))) == ["t1", "t2", "t3", "t4"]
    assert ids(store.view(lambda tx: tx.find(Task, id=ws.between("t2", "t4")))) == ["t2", "t3"]


async def test_count_and_first(store: ws.Store) -> None:
    assert store.view(lambda tx: tx.count(Task)) == 4
    assert store.view(lambda tx: tx.count(Task, service_id="svc-a")) == 3
    first = store.view(lambda tx: tx.first(Task, service_id="svc-a"))
    assert first is not None
    assert first.id == "t1"
    assert store.view(lambda tx: tx.first(Task, service_id="none")) is None


async def test_get_missing_is_none(store: ws.Store) -> None:
    assert store.view(lambda tx: tx.get(Task, "nope")) is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (lambda tx: tx.find(Task, colour="red"), "no index 'colour'"),
        (lambda tx: tx.find(Task, node_id="n1", state=1), "one index condition"),
        (lambda tx: tx.find(Task, node_id=None), "does not hold None"),
        (lambda tx: tx.find(Task, state="running"), "cannot be compared"),
        (lambda tx: tx.get(str, "x"), "no table holds str"),
    ],
)
async def test_invalid_queries_raise_invalid_query(
    store: ws.Store, query: object, message: str
) -> None:
    with pytest.raises(ws.InvalidQuery, match=message):
        store.view(query)  # type: ignore[arg-type]


async def test_a_read_tx_kept_after_its_view_raises(store: ws.Store) -> None:
    leaked = store.view(lambda tx: tx)
    with pytest.raises(ws.StoreError, match="view\\(\\) returned"):
        leaked.get(Task, "t1")
