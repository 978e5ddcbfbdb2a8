"""Versions that skip, on a real etcd: the store's versions are etcd revisions, which any other
write on the cluster advances. Between every two commits here a foreign key is written, so
no commit follows the one before by one; the contract holds all the same (issue 18)."""

from __future__ import annotations

import base64
import contextlib
import itertools
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

import watchstore as ws
from tests.etcd_cluster import EtcdCluster, post, require_etcd, running
from tests.schema import SCHEMA, Task

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

require_etcd()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with running(tmp_path_factory.mktemp("etcd-versions")) as cluster:
        yield cluster


def foreign_write(cluster: EtcdCluster, count: int = 2) -> None:
    """Advance etcd's revision with writes outside any store's prefix."""
    for _ in range(count):
        key = base64.b64encode(b"elsewhere/key").decode()
        post(cluster.endpoints[0], "kv/put", {"key": key, "value": key})


def obj(event: ws.Event) -> Any:
    assert isinstance(event, ws.Created | ws.Updated | ws.Deleted), event
    return event.obj


async def commits_with_gaps(store: ws.Store, cluster: EtcdCluster, count: int) -> list[ws.Version]:
    """``count`` commits (one task each, updated from the object the last returned), with
    foreign writes before each; their versions."""
    versions = []
    await anyio.to_thread.run_sync(foreign_write, cluster)
    current = await store.update(lambda tx: tx.create(Task("t", "s")))
    for i in range(count):
        if i:
            await anyio.to_thread.run_sync(foreign_write, cluster)
            current = await store.update(lambda tx: tx.update(attrs.evolve(current, slot=i)))
        assert current.meta.version == store.version
        versions.append(store.version)
    return versions


async def test_updates_from_returned_objects_commit_across_skipped_revisions(
    cluster: EtcdCluster, prefix: str
) -> None:
    async with ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix) as store:
        versions = await commits_with_gaps(store, cluster, 5)
        assert all(b.index - a.index > 1 for a, b in itertools.pairwise(versions))
        stored = store.view(lambda tx: tx.get(Task, "t"))
        assert stored is not None
        assert (stored.slot, stored.meta.version) == (4, versions[-1])


async def test_watch_from_any_version_gives_exactly_the_commits_after_it(
    cluster: EtcdCluster, prefix: str
) -> None:
    async with ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix) as store:
        versions = await commits_with_gaps(store, cluster, 4)
        first = versions[0].index
        for start in range(first - 1, versions[-1].index + 1):
            async with store.watch_from(ws.Version(start), ws.on(Task)) as events:
                got = []
                with contextlib.suppress(ws.WouldBlock):
                    while True:
                        got.append(events.receive_nowait().version)
            assert got == [v for v in versions if v.index > start], start


async def test_an_overflowed_watcher_resumes_from_the_last_commit_it_saw(
    cluster: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    async with ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix) as store:
        async with store.watch(ws.on(Task), queue=2) as events:
            versions = await commits_with_gaps(store, cluster, 4)
            seen = [events.receive_nowait(), events.receive_nowait()]
            with pytest.raises(ws.WatchOverflow) as info:
                events.receive_nowait()
        last = info.value.last_version
        assert last == seen[-1].version == versions[1]
        async with store.watch_from(last, ws.on(Task)) as resumed:
            rest = [resumed.receive_nowait(), resumed.receive_nowait()]
        assert [e.version for e in rest] == versions[2:]
        assert [obj(e).slot for e in rest] == [2, 3]
