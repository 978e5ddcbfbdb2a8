"""The store service: proposers, failure and cancellation, waiting, closing."""

from __future__ import annotations

import functools
import gc
import math
import weakref
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Task
from watchstore.log.proposer import LogProposer

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable, Sequence


class SlowProposer(ws.MemoryProposer):
    """Commits after the test lets it, or fails when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.fail: Exception | None = None
        self.skip_ahead = 0

    async def propose_value(
        self, actions: Sequence[ws.StoreAction], commit: Callable[[ws.Version], None]
    ) -> ws.Version:
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        if self.skip_ahead:
            self._version = ws.Version(self._version.index + self.skip_ahead)
        return await super().propose_value(actions, commit)


async def test_readers_see_the_old_state_while_a_commit_is_proposed() -> None:
    proposer = SlowProposer()
    async with ws.open_store(SCHEMA, proposer=proposer) as store, anyio.create_task_group() as tg:
        tg.start_soon(store.update, lambda tx: tx.create(Task("t1", "s1", node_id="n1")))
        await anyio.wait_all_tasks_blocked()
        assert store.view(lambda tx: tx.get(Task, "t1")) is None
        assert store.view(lambda tx: tx.find(Task, node_id="n1")) == []
        proposer.release.set()
        await store.wait_for(ws.Version(1))
        assert store.view(lambda tx: tx.get(Task, "t1")) is not None


async def test_a_failed_proposal_raises_proposal_failed_and_undoes() -> None:
    proposer = SlowProposer()
    proposer.fail = OSError("disk gone")
    proposer.release.set()
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        with pytest.raises(ws.ProposalFailed, match="outcome unknown"):
            await store.update(lambda tx: tx.create(Task("t1", "s1")))
        assert store.view(lambda tx: tx.count(Task)) == 0
        assert store.version == ws.Version(0)


async def test_a_cancelled_proposal_is_undone() -> None:
    proposer = SlowProposer()
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        with anyio.move_on_after(0.01):
            await store.update(lambda tx: tx.create(Task("t1", "s1")))
        assert store.view(lambda tx: tx.count(Task)) == 0
        proposer.release.set()
        await store.update(lambda tx: tx.create(Task("t2", "s1")))
        assert store.view(lambda tx: [t.id for t in tx.all(Task)]) == ["t2"]


async def test_objects_carry_the_version_the_proposer_chose() -> None:
    proposer = SlowProposer()
    proposer.release.set()
    proposer.skip_ahead = 6  # e.g. an etcd revision advanced by other keys
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        created = await store.update(lambda tx: tx.create(Task("t1", "s1")))
        stored = store.view(lambda tx: tx.get(Task, "t1"))
        assert stored is not None
        assert stored.meta.version == ws.Version(7)
        assert store.version == ws.Version(7)
        assert created == stored  # update returns the object as committed


async def test_wait_for_returns_once_the_version_is_committed() -> None:
    async with ws.open_store(SCHEMA) as store, anyio.create_task_group() as tg:
        done = anyio.Event()

        async def waiter() -> None:
            await store.wait_for(ws.Version(2))
            done.set()

        tg.start_soon(waiter)
        await store.update(lambda tx: tx.create(Task("t1", "s1")))
        await anyio.wait_all_tasks_blocked()
        assert not done.is_set()
        await store.update(lambda tx: tx.create(Task("t2", "s1")))
        await done.wait()
        await store.wait_for(ws.Version(1))  # already there: returns at once


async def test_operations_after_close_raise_store_closed() -> None:
    async with ws.open_store(SCHEMA) as store:
        pass
    assert store.closed
    with pytest.raises(ws.StoreClosed):
        await store.update(lambda tx: tx.create(Task("t1", "s1")))
    with pytest.raises(ws.StoreClosed):
        store.view(lambda tx: tx.count(Task))
    with pytest.raises(ws.StoreClosed):
        store.snapshot()


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "log"])
async def test_a_closed_store_is_freed_when_dropped_without_the_cycle_collector(
    on_disk: bool, tmp_path: pathlib.Path
) -> None:
    # A reference cycle through the store would keep every row alive until a full
    # collection: dropped stores piled up and slowed every later collection.
    path = tmp_path / "store" if on_disk else None
    gc.collect()
    gc.disable()
    try:
        async with ws.open_store(SCHEMA, path=path) as store:
            await store.update(lambda tx: tx.create(Task("t1", "s1", node_id="n1")))
            stored = weakref.ref(store.view(lambda tx: tx.get(Task, "t1")))
        del store
        assert stored() is None
    finally:
        gc.enable()


async def test_writers_are_serialised_and_each_gets_its_version() -> None:
    async with ws.open_store(SCHEMA) as store:
        async with anyio.create_task_group() as tg:
            for i in range(20):
                task = Task(f"t{i:02}", "s")
                tg.start_soon(store.update, functools.partial(ws.Tx.create, obj=task))
        versions = store.view(
            lambda tx: sorted(t.meta.version.index for t in tx.all(Task))  # type: ignore[union-attr]
        )
        assert versions == list(range(1, 21))


async def _ticks_during_updates(store: ws.Store, updates: int) -> int:
    """How many times a busy neighbour task ran while one task did ``updates`` updates."""
    ticks = 0

    async def neighbour() -> None:
        nonlocal ticks
        while True:
            await anyio.lowlevel.checkpoint()
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(neighbour)
        await anyio.lowlevel.checkpoint()  # the neighbour starts, and loops from now on
        start = ticks
        for i in range(updates):
            await store.update(functools.partial(ws.Tx.create, obj=Task(f"t{i}", "s")))
        ran = ticks - start
        tg.cancel_scope.cancel()
    return ran


async def test_a_loop_of_updates_lets_other_tasks_run_every_schedule_every_calls() -> None:
    # The event loop may run the two tasks of one batch in either order: counts are exact to
    # one.
    async with ws.open_store(SCHEMA) as store:
        assert abs(await _ticks_during_updates(store, 160) - 160 // ws.SCHEDULE_EVERY) <= 1
    async with ws.open_store(SCHEMA, schedule_every=1) as store:
        assert abs(await _ticks_during_updates(store, 160) - 160) <= 1
    with pytest.raises(ValueError, match="schedule_every"):
        async with ws.open_store(SCHEMA, schedule_every=0):
            pass


async def test_every_update_is_a_cancel_point_even_between_schedule_points() -> None:
    async with ws.open_store(SCHEMA) as store:
        await store.update(lambda tx: tx.create(Task("t0", "s")))  # not a schedule point
        with anyio.CancelScope() as scope:
            scope.cancel()
            await store.update(lambda tx: tx.create(Task("t1", "s")))
        assert scope.cancelled_caught
        assert store.view(lambda tx: tx.get(Task, "t1")) is None
        assert store.version == ws.Version(1)


async def test_a_lone_commit_fsynced_inline_lets_other_tasks_run_at_once(
    tmp_path: pathlib.Path,
) -> None:
    """Writing and fsyncing a lone commit holds the thread for the disk: the update yields
    right after, so other writers get in and share the next fsync. Without the fsync it
    yields every ``schedule_every``-th call, as a memory commit does."""
    async with ws.open_store(SCHEMA, path=tmp_path / "always") as store:
        # every commit inline, however slow this machine's disk is at the moment (a write
        # slower than the limit sends the next commit to the worker thread)
        proposer = store._proposer
        assert isinstance(proposer, LogProposer)
        proposer.inline_write_limit = math.inf
        assert abs(await _ticks_during_updates(store, 32) - 32) <= 1
    async with ws.open_store(SCHEMA, path=tmp_path / "none", durability="none") as store:
        assert abs(await _ticks_during_updates(store, 32) - 32 // ws.SCHEDULE_EVERY) <= 1


async def test_the_writers_lock_is_free_when_its_waiter_was_cancelled_before_release() -> None:
    # The waiter is cancelled (it leaves the lot) but has not run yet when the holder
    # releases: nobody is left to hand the lock to, so it must be free, not held by nobody.
    from watchstore.service.store import WriteLock

    lock = WriteLock()
    lock.held = True
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def waiter() -> None:
            with scope:
                await lock.wait_turn()

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
        lock.release()
        assert not lock.held
    assert lock.waiting == 0
