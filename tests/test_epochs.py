"""Compaction into epochs, listing kept epochs, and rolling back to one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import attrs
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Task
from watchstore.log import proposer as ws_log_proposer
from watchstore.log.compaction import write_epoch_inline

if TYPE_CHECKING:
    import pathlib

    from watchstore.log.epochlog import EpochLog, PreparedEpoch


async def fill(store: ws.Store, start: int, stop: int) -> None:
    for i in range(start, stop):
        await store.update(lambda tx: tx.create(Task(f"t{i:04}", "s1", node_id=f"n{i % 3}")))


@pytest.mark.parametrize("in_child", [True, False], ids=["forked", "inline"])
async def test_compaction_keeps_every_commit_made_while_it_runs(
    tmp_path: pathlib.Path, in_child: bool
) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path, compact_in_child=in_child) as store:
        await fill(store, 0, 50)
        async with anyio.create_task_group() as tg:
            tg.start_soon(fill, store, 50, 150)
            snapshot_version = await store.compact()
        assert snapshot_version >= ws.Version(50)
        before = store.view(lambda tx: tx.all(Task))
        version = store.version
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert store.version == version
        assert store.view(lambda tx: tx.all(Task)) == before
        assert len(store.view(lambda tx: tx.find(Task, node_id="n1"))) == 50


async def test_old_epochs_are_retired_beyond_keep(tmp_path: pathlib.Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path, keep_epochs=2) as store:
        for round in range(4):
            await fill(store, round * 10, round * 10 + 10)
            await store.compact()
    epochs = ws.list_epochs(tmp_path)
    assert [e.segment for e in epochs] == [4, 5]
    assert [e.version for e in epochs] == [ws.Version(30), ws.Version(40)]
    assert epochs[0].created_at <= epochs[1].created_at


async def test_the_store_compacts_by_itself_past_compact_bytes(tmp_path: pathlib.Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path, compact_bytes=4096) as store:
        await fill(store, 0, 200)
        version = store.version
    epochs = ws.list_epochs(tmp_path)
    assert len(epochs) == 2  # compacted at least twice; two epochs kept
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert store.version == version
        assert store.view(lambda tx: tx.count(Task)) == 200


async def test_rollback_to_a_kept_snapshot(tmp_path: pathlib.Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path, keep_epochs=3) as store:
        await fill(store, 0, 10)
        kept = await store.compact()
        at_kept = store.view(lambda tx: tx.all(Task))
        await fill(store, 10, 20)
        await store.compact()
    ws.rollback(tmp_path, kept)
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert store.version == kept
        assert store.view(lambda tx: tx.all(Task)) == at_kept
        await fill(store, 100, 101)  # and it goes on from there
        assert store.version == ws.Version(kept.index + 1)


async def test_rollback_to_an_unknown_version_names_the_kept_ones(tmp_path: pathlib.Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        await fill(store, 0, 3)
        await store.compact()
    with pytest.raises(ws.StoreError, match=r"kept: 0, 3"):
        ws.rollback(tmp_path, ws.Version(2))


async def test_rollback_refuses_an_open_store(tmp_path: pathlib.Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path):
        with pytest.raises(ws.StoreLocked):
            ws.rollback(tmp_path, ws.Version(0))


async def test_compact_needs_a_log() -> None:
    async with ws.open_store(SCHEMA) as store:
        with pytest.raises(ws.StoreError, match="path="):
            await store.compact()


async def test_watch_from_reads_the_kept_epochs_before_the_current_one(
    tmp_path: pathlib.Path,
) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path, history=2, keep_epochs=3) as store:
        await fill(store, 0, 3)  # versions 1-3
        await store.compact()  # epoch at 3
        moved = store.view(lambda tx: tx.get(Task, "t0000"))
        assert moved is not None
        await store.update(lambda tx: tx.update(attrs.evolve(moved, node_id="elsewhere")))
        await store.compact()  # epoch at 4
        await fill(store, 3, 6)  # versions 5-7; memory keeps only the last two
        async with store.watch_from(ws.Version(2), ws.on(Task, node_id="n0")) as events:
            got = [events.receive_nowait() for _ in range(events.pending())]
        # Version 4 moved t0000 off n0 (the old object comes from replaying the log), and
        # version 5 created t0003 on n0.
        assert [(type(e).__name__, e.version.index) for e in got] == [
            ("Updated", 4),
            ("Created", 5),
        ]
        assert isinstance(got[0], ws.Updated)
        assert got[0].old.node_id == "n0"


async def test_watch_from_older_than_every_kept_epoch_is_compacted(
    tmp_path: pathlib.Path,
) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path, history=1, keep_epochs=1) as store:
        await fill(store, 0, 3)
        await store.compact()  # only the epoch at version 3 is kept
        await fill(store, 3, 5)
        with pytest.raises(ws.HistoryCompacted) as info:
            async with store.watch_from(ws.Version(1)):
                pass
        assert info.value.oldest == ws.Version(3)


async def test_closing_a_store_as_its_compaction_falls_due_raises_nothing(
    tmp_path: pathlib.Path,
) -> None:
    """The commit that makes the automatic compaction due may be the block's last: leaving
    the block then closes the store quietly (the compaction is cancelled, not refused with
    StoreClosed out of the block), and every commit is there."""
    for round in range(5):
        async with ws.open_store(SCHEMA, path=tmp_path, compact_bytes=1) as store:
            await anyio.wait_all_tasks_blocked()  # the compaction task waits
            await fill(store, round, round + 1)
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert store.version == ws.Version(5)


async def test_a_failing_automatic_compaction_is_retried_after_a_doubling_delay(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The automatic compaction logs each failure (naming its cause) and tries again after
    1 s, then 2 s, then 4 s, until one succeeds; nothing reaches the block meanwhile."""
    attempts = 0
    fourth = anyio.Event()
    real = write_epoch_inline
    delays: list[float] = []
    sleep = anyio.sleep

    async def failing_three_times(
        snapshot: ws.Snapshot, log: EpochLog, schema: ws.Schema
    ) -> PreparedEpoch:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise ws.CompactionFailed("writing the new epoch failed: No space left on device")
        fourth.set()
        return await real(snapshot, log, schema)

    async def recorded_sleep(delay: float) -> None:  # the delays asked for, not waited
        delays.append(delay)
        await sleep(0)

    monkeypatch.setattr(ws_log_proposer, "write_epoch_inline", failing_three_times)
    monkeypatch.setattr(anyio, "sleep", recorded_sleep)
    async with ws.open_store(
        SCHEMA, path=tmp_path, compact_bytes=1, compact_in_child=False
    ) as store:
        await fill(store, 0, 1)
        await fourth.wait()
        await store.compact()  # waits for the automatic one to finish first
        await fill(store, 1, 2)
    assert delays == [1, 2, 4]
    warnings = [r for r in caplog.records if r.name == "watchstore"]
    assert len(warnings) == 3
    assert all("No space left on device" in r.getMessage() for r in warnings)
    assert [e.segment for e in ws.list_epochs(tmp_path)][-1] >= 3
