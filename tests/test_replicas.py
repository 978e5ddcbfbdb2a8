"""Forked replicas and the Syncer: following a store, catching up, reporting every resync."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, Task

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def store() -> AsyncIterator[ws.Store]:
    async with ws.open_store(SCHEMA) as store:

        def fill(tx: ws.Tx) -> None:
            for i in range(20):
                tx.create(Task(f"t{i:02}", f"s{i % 3}", node_id=f"n{i % 4}"))
            tx.create(Node("n1", "one"))

        await store.update(fill)
        yield store


def state_of(reader: ws.Store) -> dict[str, list[Any]]:
    return reader.view(lambda tx: {"tasks": tx.all(Task), "nodes": tx.all(Node)})


async def test_a_fork_starts_equal_and_follows_every_commit(store: ws.Store) -> None:
    async with store.fork() as replica:
        assert replica.version == store.version
        assert state_of(replica) == state_of(store)
        moved = store.view(lambda tx: tx.get(Task, "t00"))
        assert moved is not None
        await store.update(lambda tx: tx.update(attrs.evolve(moved, node_id="n9")))
        await store.update(lambda tx: tx.delete(Task, "t01"))
        await store.update(lambda tx: tx.create(Node("n2", "two")))
        await replica.wait_for(store.version)
        assert state_of(replica) == state_of(store)
        assert replica.view(lambda tx: [t.id for t in tx.find(Task, node_id="n9")]) == ["t00"]


async def test_a_fork_is_read_only(store: ws.Store) -> None:
    async with store.fork() as replica:
        with pytest.raises(ws.StoreError, match="read-only"):
            await replica.update(lambda tx: tx.create(Task("x", "s1")))


async def test_a_fork_can_be_watched_like_the_store(store: ws.Store) -> None:
    async with store.fork() as replica, replica.watch(ws.on_create(Task)) as events:
        await store.update(lambda tx: tx.create(Task("new", "s1")))
        event = await events.receive()
        assert isinstance(event, ws.Created)
        assert event.obj.id == "new"


def commit_in_one_step(store: ws.Store, action: ws.StoreAction) -> None:
    """Commit through the replication path (as changes made elsewhere arrive), which does
    not yield: followers cannot run in between."""
    store._apply_replicated(ws.Change(ws.Version(store.version.index + 1), [action]))


async def test_a_fork_that_falls_behind_catches_up_from_a_snapshot(store: ws.Store) -> None:
    async with store.fork(queue=2) as replica:
        for i in range(5):  # five commits before the replica runs: its queue of 2 overflows
            commit_in_one_step(
                store, ws.StoreAction(ws.ActionKind.CREATE, "Task", Task(f"x{i}", "s1"))
            )
        gone = store.view(lambda tx: tx.get(Task, "t05"))
        commit_in_one_step(store, ws.StoreAction(ws.ActionKind.DELETE, "Task", gone))
        await replica.wait_for(store.version)
        assert replica.resyncs == 1
        assert state_of(replica) == state_of(store)


async def test_the_syncer_reports_statuses_and_batches_updates(store: ws.Store) -> None:
    statuses: list[ws.SyncStatus] = []
    batches: list[list[ws.SyncUpdate]] = []
    syncer = ws.Syncer(
        store, on_status=statuses.append, on_updates=batches.append, tables=[Task], batch=8
    )
    async with anyio.create_task_group() as tg:
        await tg.start(syncer.run)
        assert statuses == [
            ws.SyncStatus.WAIT_FOR_DATASTORE,
            ws.SyncStatus.RESYNC_IN_PROGRESS,
            ws.SyncStatus.IN_SYNC,
        ]
        assert [len(b) for b in batches] == [8, 8, 4]
        assert {u.kind for b in batches for u in b} == {ws.UpdateKind.NEW}
        batches.clear()
        await store.update(lambda tx: tx.delete(Task, "t00"))
        await store.update(lambda tx: tx.create(Task("new", "s1")))
        await anyio.wait_all_tasks_blocked()
        kinds = [(u.kind, u.obj.id) for b in batches for u in b]
        assert kinds == [(ws.UpdateKind.DELETED, "t00"), (ws.UpdateKind.NEW, "new")]
        tg.cancel_scope.cancel()


async def test_the_syncer_reports_every_resync_and_sends_the_difference(
    store: ws.Store,
) -> None:
    statuses: list[ws.SyncStatus] = []
    updates: list[ws.SyncUpdate] = []
    syncer = ws.Syncer(
        store, on_status=statuses.append, on_updates=updates.extend, tables=[Task], queue=2
    )
    async with anyio.create_task_group() as tg:
        await tg.start(syncer.run)
        updates.clear()

        def three_changes(tx: ws.Tx) -> None:  # three events overflow a queue of 2
            tx.delete(Task, "t00")
            tx.delete(Task, "t01")
            changed = tx.get(Task, "t02")
            assert changed is not None
            tx.update(attrs.evolve(changed, slot=5))

        await store.update(three_changes)
        await anyio.wait_all_tasks_blocked()
        assert syncer.resyncs == 1
        assert statuses[-2:] == [ws.SyncStatus.RESYNC_IN_PROGRESS, ws.SyncStatus.IN_SYNC]
        assert statuses.count(ws.SyncStatus.RESYNC_IN_PROGRESS) == 2
        got = sorted((u.kind.value, u.obj.id) for u in updates)
        assert got == [("deleted", "t00"), ("deleted", "t01"), ("updated", "t02")]
        tg.cancel_scope.cancel()
