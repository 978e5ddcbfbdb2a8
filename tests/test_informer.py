"""The informer: a watch that lists, follows, and recovers by itself when it falls behind,
resuming from history (``watch_from``) or listing again, and reporting every re-list.

Each test keeps a consumer's own cache from the informer's events (and its ``Resynced``
lists) and checks it against the store afterwards: the view it delivers stays consistent.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

import watchstore as ws
from tests.etcd_cluster import EtcdCluster, post, require_etcd, running
from tests.schema import SCHEMA, Node, Task

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

_prefixes = itertools.count()


def on_n1(tx: ws.ReadTx) -> dict[str, Task]:
    return {t.id: t for t in tx.find(Task, node_id="n1")}


def all_tasks(tx: ws.ReadTx) -> dict[str, Task]:
    return {t.id: t for t in tx.all(Task)}


def follow(cache: dict[str, Task], event: ws.InformerEvent[Task], on: str | None = None) -> None:
    """What a consumer does with each event: keep its own copy of the selection (the tasks
    of node ``on``, or all of them)."""
    if isinstance(event, ws.Resynced):
        cache.clear()
        cache.update(event.objects)
    elif isinstance(event, ws.Deleted) or (on is not None and event.obj.node_id != on):
        cache.pop(event.obj.id, None)  # gone, or an update took it out of the selection
    else:
        cache[event.obj.id] = event.obj


async def collect(informer: ws.Informer[Task], version: ws.Version) -> list[Any]:
    """Consume in a task, as a consumer does, until it is done with ``version`` (which
    moves on commits that select nothing too); the events it received."""
    events: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def consume() -> None:
            async for event in informer:
                events.append(event)

        tg.start_soon(consume)
        with anyio.fail_after(30):
            await informer.wait_for(version)
        tg.cancel_scope.cancel()
    return events


async def drain(
    informer: ws.Informer[Task], cache: dict[str, Task], version: ws.Version, on: str | None
) -> None:
    """Consume until done with ``version``, keeping ``cache``."""
    for event in await collect(informer, version):
        follow(cache, event, on)


async def test_an_informer_lists_then_delivers_the_changes_of_its_selection() -> None:
    async with ws.open_store(SCHEMA) as store:
        t1 = await store.update(lambda tx: tx.create(Task("t1", "web", node_id="n1")))
        await store.update(lambda tx: tx.create(Task("t2", "web", node_id="n2")))
        async with ws.informer(store, Task, node_id="n1") as informer:
            assert dict(informer.objects) == {"t1": t1}
            assert informer.version == store.version
            cache = dict(informer.objects)
            await store.update(lambda tx: tx.create(Task("t3", "web", node_id="n1")))
            await store.update(lambda tx: tx.update(attrs.evolve(t1, node_id="n2")))
            await store.update(lambda tx: tx.create(Node("n9", "n9")))  # not selected
            created, moved = await informer.receive(), await informer.receive()
            assert isinstance(created, ws.Created)
            assert isinstance(moved, ws.Updated)
            assert (moved.old.node_id, moved.obj.node_id) == ("n1", "n2")
            follow(cache, created, "n1")
            follow(cache, moved, "n1")
            await drain(informer, cache, store.version, "n1")
            assert cache == dict(informer.objects) == store.view(on_n1)
            assert (informer.resyncs, informer.resumes) == (0, 0)


async def test_a_12000_object_commit_overflows_the_informer_which_resumes_from_history() -> None:
    async with ws.open_store(SCHEMA) as store:
        await store.update(lambda tx: tx.create(Task("before", "web")))
        async with ws.informer(store, Task) as informer:
            cache = dict(informer.objects)

            def many(tx: ws.Tx) -> None:
                for i in range(12_000):
                    tx.create(Task(f"t{i}", "web"))

            await store.update(many)  # 12,001 events: more than the queue's 10,000
            await store.update(lambda tx: tx.delete(Task, "before"))
            events = await collect(informer, store.version)
            for event in events:
                follow(cache, event)
            assert informer.resumes == 1
            assert informer.resyncs == 0  # nothing re-listed: history had the commit
            assert [type(e) for e in events] == [ws.Created] * 12_000 + [ws.Deleted]
            assert cache == dict(informer.objects) == store.view(all_tasks)


async def test_an_overflow_past_the_history_lists_again_and_reports_the_resync() -> None:
    async with ws.open_store(SCHEMA, history=1) as store:
        for i in range(3):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "web", node_id="n1")))
        async with ws.informer(store, Task, node_id="n1", queue=4) as informer:
            cache = dict(informer.objects)
            await store.update(lambda tx: tx.delete(Task, "t0"))
            await store.update(  # 5 events: does not fit in 4
                lambda tx: [tx.create(Task(f"u{i}", "web", node_id="n1")) for i in range(5)]
            )
            await store.update(lambda tx: tx.create(Task("v", "web", node_id="n1")))
            await store.update(lambda tx: tx.create(Task("elsewhere", "web", node_id="n2")))
            first = await informer.receive()
            assert isinstance(first, ws.Deleted)
            follow(cache, first, "n1")
            resynced = await informer.receive()  # history=1 no longer has the 5 creations
            assert isinstance(resynced, ws.Resynced)
            assert resynced.version == store.version
            assert dict(resynced.objects) == store.view(on_n1)
            follow(cache, resynced, "n1")
            assert (informer.resyncs, informer.resumes) == (1, 0)
            await store.update(lambda tx: tx.delete(Task, "v"))
            await drain(informer, cache, store.version, "n1")
            assert cache == dict(informer.objects) == store.view(on_n1)


async def test_wait_for_returns_once_the_consumer_is_done_with_that_version(
    tmp_path: Path,
) -> None:
    async with (
        ws.open_store(SCHEMA, path=tmp_path) as store,  # its commits wait for an fsync
        ws.informer(store, Task, node_id=None) as new,
        anyio.create_task_group() as tg,
    ):

        async def assign() -> None:  # a consumer that awaits while handling an event
            async for event in new:
                if isinstance(event, ws.Created):
                    task = event.obj
                    await store.update(lambda tx: tx.update(attrs.evolve(task, node_id="n1")))

        tg.start_soon(assign)
        await store.update(lambda tx: tx.create(Task("t1", "web")))
        created = store.version
        with anyio.fail_after(10):
            await new.wait_for(created)
        # done with the creation: its own write, made while handling it, is committed
        assert store.view(lambda tx: tx.find(Task, node_id="n1"))
        assert new.version >= created
        tg.cancel_scope.cancel()


async def test_an_informer_of_a_class_no_table_holds_is_refused() -> None:
    @attrs.frozen
    class Stray:
        id: str

    async with ws.open_store(SCHEMA) as store:
        with pytest.raises(ws.InvalidQuery, match="no table holds Stray"):
            async with ws.informer(store, Stray):
                pass


# -- etcd: the resume point compacted away -------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_etcd()
    with running(tmp_path_factory.mktemp("etcd-informer")) as cluster:
        yield cluster


async def test_an_etcd_compaction_past_the_resume_point_relists(cluster: EtcdCluster) -> None:
    prefix = f"informer{os.getpid()}-{next(_prefixes)}"
    endpoints = cluster.endpoints
    async with (
        ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix, history=2) as store,
        ws.informer(store, Task, queue=3) as informer,
    ):
        cache = dict(informer.objects)
        await store.update(lambda tx: tx.create(Task("t0", "web")))
        await store.update(  # 4 events: the informer's queue overflows
            lambda tx: [tx.create(Task(f"t{i}", "web")) for i in range(1, 5)]
        )
        for i in range(5, 9):  # beyond the 2 commits the store keeps in memory
            await store.update(lambda tx: tx.create(Task(f"t{i}", "web")))
        await store.update(lambda tx: tx.delete(Task, "t1"))
        body: dict[str, Any] = {"revision": store.version.index, "physical": True}
        await anyio.to_thread.run_sync(post, endpoints[0], "kv/compaction", body)
        events = await collect(informer, store.version)
        for event in events:
            follow(cache, event)
        assert isinstance(events[0], ws.Created)
        assert isinstance(events[1], ws.Resynced)  # etcd no longer has what came after t0
        assert (informer.resyncs, informer.resumes) == (1, 0)
        assert cache == dict(informer.objects) == store.view(all_tasks)
        await store.update(lambda tx: tx.create(Task("after", "web")))
        await drain(informer, cache, store.version, None)
        assert cache == store.view(all_tasks)
