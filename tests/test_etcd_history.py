"""``watch_from`` into etcd's own history (issue 20): a version older than the store's in-memory
history is replayed from etcd's MVCC history, exactly the commits after it, with the objects
each replaced or removed; once etcd has compacted past it, HistoryCompacted names etcd's
compact revision."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

import watchstore as ws
from tests.etcd_cluster import EtcdCluster, post, require_etcd, running
from tests.schema import SCHEMA, Task

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

require_etcd()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with running(tmp_path_factory.mktemp("etcd-history")) as cluster:
        yield cluster


def described(event: ws.Event) -> tuple[Any, ...]:
    """What a watcher sees of an event: its kind, version, object (and old object)."""
    if isinstance(event, ws.Updated):
        return ("updated", event.version.index, event.obj, event.old)
    if isinstance(event, ws.Created | ws.Deleted):
        return (type(event).__name__.lower(), event.version.index, event.obj)
    return ("committed", event.version.index)


def create(id: str, service: str = "web") -> Callable[[ws.Tx], Task]:
    return lambda tx: tx.create(Task(id, service))


def assign(task: Task) -> Callable[[ws.Tx], Task]:
    return lambda tx: tx.update(attrs.evolve(task, node_id="n1"))


async def some_commits(store: ws.Store, cluster: EtcdCluster) -> None:
    """Creates, updates and deletes, with foreign writes on the cluster between them (the
    revisions skip)."""
    foreign = base64.b64encode(b"elsewhere/key").decode()
    for i in range(4):
        await store.update(create(f"t{i}"))
        body = {"key": foreign, "value": foreign}
        await anyio.to_thread.run_sync(post, cluster.endpoints[0], "kv/put", body)
    for i in range(3):
        current = store.view(lambda tx: tx.all(Task))[i]
        await store.update(assign(current))
    await store.update(lambda tx: tx.delete(Task, "t0"))
    await store.update(lambda tx: [tx.delete(Task, "t1"), tx.create(Task("t9", "db"))])


async def test_watch_from_beyond_memory_replays_exactly_the_commits_after_it(
    cluster: EtcdCluster, prefix: str
) -> None:
    seen: list[ws.Event] = []
    async with ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix, history=2) as store:
        start = store.version
        async with store.watch() as live:
            await some_commits(store, cluster)
            while (
                not seen
                or seen[-1].version != store.version
                or not isinstance(seen[-1], ws.Committed)
            ):
                seen.append(await live.receive())
        # Every commit's version, and from each one on, what a live watcher saw after it.
        versions = [e.version for e in seen if isinstance(e, ws.Committed)]
        assert len(versions) == 9
        for since in [start, *versions[:6]]:  # all older than the 2 commits kept in memory
            expected = [described(e) for e in seen if e.version > since]
            async with store.watch_from(since) as replay:
                with anyio.fail_after(10):
                    got = [described(await replay.receive()) for _ in expected]
            assert got == expected
        # Only what a spec selects, as from memory.
        async with store.watch_from(start, ws.on_delete(Task)) as deletes:
            with anyio.fail_after(10):
                gone = [await deletes.receive() for _ in range(2)]
        assert [e.obj.id for e in gone if isinstance(e, ws.Deleted)] == ["t0", "t1"]


async def test_watch_from_before_etcds_compaction_names_its_compact_revision(
    cluster: EtcdCluster, prefix: str
) -> None:
    async with ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix, history=2) as store:
        start = store.version
        await some_commits(store, cluster)
        middle = store.version
        await some_commits_more(store)
        compact_at = middle.index
        body = {"revision": compact_at}
        await anyio.to_thread.run_sync(post, cluster.endpoints[0], "kv/compaction", body)
        with pytest.raises(ws.HistoryCompacted) as caught:
            async with store.watch_from(start):
                pass
        assert caught.value.oldest == ws.Version(compact_at)
        assert caught.value.current == store.version
        # From the compact revision on, etcd still has it all.
        async with store.watch_from(caught.value.oldest, ws.on(Task)) as replay:
            with anyio.fail_after(10):
                event = await replay.receive()
        assert event.version > ws.Version(compact_at)


async def some_commits_more(store: ws.Store) -> None:
    for i in range(4):
        await store.update(create(f"late{i}"))
