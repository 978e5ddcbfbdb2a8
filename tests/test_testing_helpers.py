"""``watchstore.testing``: waiting on events for what a test depends on (a condition on the
committed state; replicas, informers and other stores catching up) and a throw-away etcd."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import attrs
import pytest

import watchstore as ws
import watchstore.testing
from tests.etcd_cluster import require_etcd
from tests.schema import SCHEMA, Task

if TYPE_CHECKING:
    from pathlib import Path


async def test_wait_until_returns_the_checks_result_once_commits_make_it_true() -> None:
    async with ws.open_store(SCHEMA) as store, anyio.create_task_group() as tg:

        async def writer() -> None:
            for i in range(3):
                await store.update(lambda tx: tx.create(Task(f"t{i}", "web")))
                await anyio.lowlevel.checkpoint()

        tg.start_soon(writer)
        checks: list[int] = []

        def three(tx: ws.ReadTx) -> int | None:
            count = tx.count(Task)
            checks.append(count)
            return count if count == 3 else None

        with anyio.fail_after(10):
            assert await ws.testing.wait_until(store, three) == 3
        assert checks[0] < 3  # checked before it held, then at commits (not in a loop)
        assert len(checks) <= 4


async def test_wait_until_on_a_true_state_returns_at_once() -> None:
    async with ws.open_store(SCHEMA) as store:
        task = await store.update(lambda tx: tx.create(Task("t1", "web")))
        assert await ws.testing.wait_until(store, lambda tx: tx.get(Task, "t1")) == task


async def test_wait_until_raises_store_closed_when_the_store_closes() -> None:
    async with ws.open_store(SCHEMA) as store, anyio.create_task_group() as tg:

        async def close() -> None:
            await store.aclose()

        tg.start_soon(close)
        with anyio.fail_after(10), pytest.raises(ws.StoreClosed):
            await ws.testing.wait_until(store, lambda tx: tx.count(Task))


async def test_settled_waits_until_replicas_and_informers_have_caught_up() -> None:
    async with (
        ws.open_store(SCHEMA) as store,
        store.fork() as replica,
        ws.informer(store, Task) as informer,
        anyio.create_task_group() as tg,
    ):
        seen: dict[str, Task] = {}

        async def consume() -> None:
            async for event in informer:
                if isinstance(event, ws.Created | ws.Updated):
                    seen[event.obj.id] = event.obj

        tg.start_soon(consume)
        for i in range(50):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "web")))
        t0 = store.view(lambda tx: tx.get(Task, "t0"))
        assert t0 is not None
        await store.update(lambda tx: tx.update(attrs.evolve(t0, node_id="n1")))
        assert replica.version < store.version  # the replica follows in a task of its own
        with anyio.fail_after(10):
            version = await ws.testing.settled(store, replica, informer)
        assert version == store.version == replica.version == informer.version
        everything = lambda tx: {t.id: t for t in tx.all(Task)}  # noqa: E731
        assert replica.view(everything) == store.view(everything) == seen
        tg.cancel_scope.cancel()


async def test_settled_brings_stores_on_one_etcd_prefix_to_the_same_version(
    tmp_path: Path,
) -> None:
    require_etcd()
    with ws.testing.EtcdMember.start(tmp_path) as member:
        assert (tmp_path / "etcd.log").stat().st_size > 0
        prefix = member.new_prefix()
        async with (
            ws.open_store(SCHEMA, etcd=member.endpoints, prefix=prefix) as a,
            ws.open_store(SCHEMA, etcd=member.endpoints, prefix=prefix) as b,
        ):
            for i in range(5):
                await a.update(lambda tx: tx.create(Task(f"a{i}", "web")))
                await b.update(lambda tx: tx.create(Task(f"b{i}", "web")))
            with anyio.fail_after(20):
                version = await ws.testing.settled(a, b)
            assert a.version == b.version == version
            assert a.view(lambda tx: tx.count(Task)) == b.view(lambda tx: tx.count(Task)) == 10
    assert member.process.poll() is not None  # stopped on leaving the block
