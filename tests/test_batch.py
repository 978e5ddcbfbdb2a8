"""Batches: chunked commits, savepoints per batch.update, partial failure reporting."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import anyio
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, Task

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def store() -> AsyncIterator[ws.Store]:
    async with ws.open_store(SCHEMA) as store:
        yield store


async def test_a_batch_commits_in_chunks_of_max_changes(store: ws.Store) -> None:
    async def load(batch: ws.Batch) -> None:
        for i in range(10):
            await batch.update(lambda tx: tx.create(Task(f"t{i:02}", "s1")))

    await store.batch(load, max_changes=4)
    versions = store.view(lambda tx: [t.meta.version.index for t in tx.all(Task)])  # type: ignore[union-attr]
    assert versions == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert store.version == ws.Version(3)


async def test_a_batch_commits_in_chunks_of_max_bytes(store: ws.Store) -> None:
    async def load(batch: ws.Batch) -> None:
        for i in range(6):
            await batch.update(lambda tx: tx.create(Task(f"t{i}", "x" * 400)))

    await store.batch(load, max_bytes=1000)
    assert store.version == ws.Version(3)  # two objects of ~450 bytes per chunk


async def test_the_default_limit_is_200_changes(store: ws.Store) -> None:
    async def load(batch: ws.Batch) -> None:
        for i in range(450):
            await batch.update(lambda tx: tx.create(Task(f"t{i:03}", "s1")))

    await store.batch(load)
    assert store.version == ws.Version(3)
    assert ws.MAX_BATCH_CHANGES == 200
    assert ws.MAX_BATCH_BYTES == 1536 * 1024


async def test_a_failing_batch_update_undoes_only_its_own_writes(store: ws.Store) -> None:
    def bad(tx: ws.Tx) -> None:
        tx.create(Node("n2", "second"))
        tx.create(Node("n3", "FIRST"))  # unique conflict with n1

    async def load(batch: ws.Batch) -> None:
        await batch.update(lambda tx: tx.create(Node("n1", "first")))
        with pytest.raises(ws.UniqueConflict):
            await batch.update(bad)
        await batch.update(lambda tx: tx.create(Node("n4", "fourth")))

    await store.batch(load)
    assert store.view(lambda tx: [n.id for n in tx.all(Node)]) == ["n1", "n4"]


async def test_an_error_in_the_batch_keeps_earlier_chunks_and_says_so(store: ws.Store) -> None:
    async def load(batch: ws.Batch) -> None:
        for i in range(5):
            await batch.update(lambda tx: tx.create(Task(f"t{i}", "s1")))
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop") as info:
        await store.batch(load, max_changes=2)
    assert store.view(lambda tx: [t.id for t in tx.all(Task)]) == ["t0", "t1", "t2", "t3"]
    assert "4 changes were committed" in "".join(info.value.__notes__)


async def test_other_writers_get_in_between_chunks(store: ws.Store) -> None:
    started = anyio.Event()

    async def load(batch: ws.Batch) -> None:
        for i in range(4):
            await batch.update(lambda tx: tx.create(Task(f"b{i}", "s1")))
            if i == 0:
                started.set()
                await anyio.wait_all_tasks_blocked()  # "other" waits for the lock

    async def other() -> None:
        await started.wait()  # the batch holds the write lock now
        await store.update(lambda tx: tx.create(Task("other", "s1")))

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        tg.start_soon(functools.partial(store.batch, load, max_changes=2))
    # The waiting writer commits right after the first chunk, before the second.
    versions = store.view(lambda tx: {t.id: t.meta.version.index for t in tx.all(Task)})  # type: ignore[union-attr]
    assert versions == {"b0": 1, "b1": 1, "other": 2, "b2": 3, "b3": 3}
