"""Snapshots: O(1), consistent across awaits while writers go on, released when closed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import attrs
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, Task

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def store() -> AsyncIterator[ws.Store]:
    async with ws.open_store(SCHEMA) as store:
        await store.update(
            lambda tx: [tx.create(Task(f"t{i}", "s1", node_id="n1")) for i in range(5)]
        )
        yield store


async def test_a_snapshot_keeps_its_version_while_writers_go_on(store: ws.Store) -> None:
    with store.snapshot() as snap:
        before = snap.find(Task, node_id="n1")

        async def writer() -> None:
            for i in range(5):
                task = store.view(lambda tx: tx.get(Task, f"t{i}"))
                assert task is not None
                await store.update(lambda tx: tx.update(attrs.evolve(task, node_id="n2")))
                await anyio.lowlevel.checkpoint()
            await store.update(lambda tx: tx.create(Task("new", "s1", node_id="n1")))
            await store.update(lambda tx: tx.delete(Task, "t0"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
        assert snap.find(Task, node_id="n1") == before
        assert snap.find(Task, node_id="n2") == []
        assert snap.get(Task, "new") is None
        assert snap.get(Task, "t0") == before[0]
        assert [t.id for t in snap.all(Task)] == [f"t{i}" for i in range(5)]
        assert snap.count(Task, service_id="s1") == 5
        assert snap.version == ws.Version(1)
    now = store.view(lambda tx: [t.id for t in tx.find(Task, node_id="n1")])
    assert now == ["new"]


async def test_snapshots_at_different_versions_each_see_their_own(store: ws.Store) -> None:
    first = store.snapshot()
    await store.update(lambda tx: tx.create(Node("a", "alpha")))
    second = store.snapshot()
    await store.update(lambda tx: tx.create(Node("b", "beta")))
    await store.update(lambda tx: tx.delete(Node, "a"))
    assert first.all(Node) == []
    assert [n.id for n in second.all(Node)] == ["a"]
    first.close()  # the older layer merges away; the newer snapshot is unaffected
    assert [n.id for n in second.find(Node, name="ALPHA")] == ["a"]
    second.close()
    assert [n.id for n in store.view(lambda tx: tx.all(Node))] == ["b"]


async def test_closing_releases_the_undo_layers(store: ws.Store) -> None:
    snap = store.snapshot()
    await store.update(lambda tx: tx.delete(Task, "t1"))
    assert store._state.layers
    snap.close()
    assert store._state.layers == []
    with pytest.raises(ws.StoreError, match="closed"):
        snap.get(Task, "t1")


async def test_a_dropped_snapshot_is_released(store: ws.Store) -> None:
    store.snapshot()  # never referenced: released at once by reference counting
    await store.update(lambda tx: tx.delete(Task, "t1"))
    assert store._state.layers == []


async def test_readers_do_not_see_an_open_batch(store: ws.Store) -> None:
    seen: list[list[str]] = []

    async def load(batch: ws.Batch) -> None:
        await batch.update(lambda tx: tx.create(Task("b1", "s1", node_id="n1")))
        await batch.update(lambda tx: tx.delete(Task, "t0"))
        # The chunk is open on the tip; readers still see the committed state.
        seen.append(store.view(lambda tx: [t.id for t in tx.find(Task, node_id="n1")]))
        with store.snapshot() as snap:
            seen.append([t.id for t in snap.all(Task)])

    await store.batch(load)
    assert seen == [[f"t{i}" for i in range(5)]] * 2
    assert store.view(lambda tx: tx.get(Task, "b1")) is not None
