"""Issue 22 on etcd, where a transaction commits as an etcd txn and comes back through the
replication path: on_commit runs only for what committed, delete_where and replace_all
commit once, iter pages through the local replica."""

from __future__ import annotations

import anyio
import attrs
import pytest

import watchstore as ws
from tests.etcd_cluster import EtcdCluster, require_etcd
from tests.schema import SCHEMA, Node, Task

require_etcd()


async def test_on_commit_runs_once_the_etcd_txn_committed(single: EtcdCluster, prefix: str) -> None:
    calls: list[ws.Version] = []
    async with ws.open_store(SCHEMA, etcd=single.endpoints, prefix=prefix) as store:

        def write(tx: ws.Tx) -> None:
            tx.create(Task("t1", "web"))
            tx.on_commit(lambda: calls.append(store.version))

        await store.update(write)
        assert calls == [store.version]

        def write_more(tx: ws.Tx) -> None:
            tx.create(Task("t2", "web"))
            tx.on_commit(lambda: calls.append(store.version))

        async def load(batch: ws.Batch) -> None:
            await batch.update(write_more)

        await store.batch(load)
        assert calls[-1] == store.version
        assert len(calls) == 2


async def test_on_commit_never_runs_for_a_batch_whose_etcd_txn_conflicted(
    single: EtcdCluster, prefix: str
) -> None:
    calls: list[str] = []
    async with (
        ws.open_store(SCHEMA, etcd=single.endpoints, prefix=prefix) as a,
        ws.open_store(SCHEMA, etcd=single.endpoints, prefix=prefix) as b,
    ):
        await a.update(lambda tx: tx.create(Node("n1", "one")))
        await b.wait_for(a.version)
        opened, go = anyio.Event(), anyio.Event()

        def place(tx: ws.Tx) -> None:
            node = tx.get(Node, "n1")
            assert node is not None
            tx.create(Task("t1", "web", node_id=node.id))
            tx.on_commit(lambda: calls.append("placed"))

        async def held_open(batch: ws.Batch) -> None:
            await batch.update(place)
            opened.set()
            await go.wait()

        async with anyio.create_task_group() as tg:

            async def run_batch() -> None:
                with pytest.raises(ws.SequenceConflict):
                    await a.batch(held_open)

            tg.start_soon(run_batch)
            await opened.wait()
            node = b.view(lambda tx: tx.get(Node, "n1"))
            assert node is not None
            await b.update(lambda tx: tx.update(attrs.evolve(node, name="changed")))
            go.set()
        assert calls == []


async def test_delete_where_and_replace_all_commit_once_on_etcd(
    single: EtcdCluster, prefix: str
) -> None:
    async with ws.open_store(SCHEMA, etcd=single.endpoints, prefix=prefix) as store:
        await store.update(
            lambda tx: [tx.create(Task(f"t{i:02}", "web" if i % 2 else "db")) for i in range(20)]
        )
        start = store.version
        assert await store.update(lambda tx: tx.delete_where(Task, service_id="db")) == 10
        assert store.view(lambda tx: [t.id for t in tx.iter(Task, limit=3, reverse=True)]) == [
            "t19",
            "t17",
            "t15",
        ]
        keep = store.view(lambda tx: tx.find(Task, limit=5))
        assert await store.replace_all([*keep, Task("new", "api")]) == 6
        assert store.version > start
        assert [t.id for t in store.view(lambda tx: tx.all(Task))] == [
            "new",
            *(t.id for t in keep),
        ]
