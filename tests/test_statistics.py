"""``store.statistics()``: commits and their latency, fsyncs and groups of commits, watchers
and their queues, overflows, a replica's lag and resyncs, compactions, etcd's requests and
retries. Real stores, real files and fsyncs, a real etcd member."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import attrs
import pytest

import watchstore as ws
from tests.etcd_cluster import require_etcd, running
from tests.schema import SCHEMA, Task
from watchstore.core.proposer import Instrumented
from watchstore.core.statistics import WINDOW, ProposerStatistics, Recent
from watchstore.testing.etcd import free_ports

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path


async def create(store: ws.Store, *ids: str) -> None:
    for id in ids:
        await store.update(lambda tx: tx.create(Task(id, "svc")))


def ids(count: int, stem: str = "t") -> list[str]:
    return [f"{stem}{i}" for i in range(count)]


# -- the record ------------------------------------------------------------------------------


def test_a_summary_gives_the_median_99th_percentile_and_maximum_by_nearest_rank() -> None:
    recent = Recent()
    assert recent.summary() == ws.Summary()
    for value in range(1, 101):
        recent.add(float(value))
    assert recent.summary() == ws.Summary(count=100, p50=50.0, p99=99.0, max=100.0)


def test_a_summary_covers_only_the_recent_window_but_counts_every_sample() -> None:
    recent = Recent()
    for _ in range(WINDOW):
        recent.add(1000.0)
    for _ in range(WINDOW):
        recent.add(1.0)
    assert recent.summary() == ws.Summary(count=2 * WINDOW, p50=1.0, p99=1.0, max=1.0)


async def test_statistics_are_a_frozen_record() -> None:
    async with ws.open_store(SCHEMA) as store:
        stats = store.statistics()
        assert isinstance(stats, ws.Statistics)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            stats.commits = 5  # type: ignore[misc]


# -- commits ---------------------------------------------------------------------------------


async def test_commits_are_counted_and_updates_in_memory_timed_one_in_16() -> None:
    async with ws.open_store(SCHEMA) as store:
        await create(store, *ids(47))
        await store.update(lambda tx: None)  # commits nothing, but returned: timed
        stats = store.statistics()
    assert stats.version == ws.Version(47)
    assert stats.commits == 47
    latency = stats.commit_latency
    assert latency.count == 48 // 16
    assert 0 < latency.p50 <= latency.p99 <= latency.max


async def test_on_a_durable_store_every_update_is_timed(tmp_path: Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        await create(store, *ids(5))
        await store.update(lambda tx: None)
        stats = store.statistics()
    assert (stats.commits, stats.commit_latency.count) == (5, 6)
    assert stats.commit_latency.max >= stats.fsyncs.max > 0  # each includes its fsync


async def test_each_chunk_of_a_batch_is_a_commit() -> None:
    async def load(batch: ws.Batch) -> None:
        for id in ids(25):
            await batch.update(lambda tx: tx.create(Task(id, "svc")))

    async with ws.open_store(SCHEMA) as store:
        await store.batch(load, max_changes=10)
        assert store.statistics().commits == 3


async def test_without_statistics_commits_are_counted_but_not_timed() -> None:
    async with ws.open_store(SCHEMA, statistics=False) as store:
        await create(store, *ids(40))
        stats = store.statistics()
    assert stats.commits == 40
    assert stats.commit_latency == ws.Summary()


async def test_a_reopened_store_counts_only_the_commits_made_since_it_opened(
    tmp_path: Path,
) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        await create(store, *ids(3))
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert store.statistics().commits == 0
        await create(store, "again")
        stats = store.statistics()
    assert (stats.version, stats.commits, stats.commit_latency.count) == (ws.Version(4), 1, 1)


# -- a durable store: fsyncs, groups of commits, compactions ---------------------------------


async def test_a_durable_store_reports_its_fsyncs_and_groups_of_commits(tmp_path: Path) -> None:
    """32 writers committing 4 times each share fsyncs (group commit): fewer writes than
    commits, and some carried several; every write was fsynced and timed."""
    async with ws.open_store(SCHEMA, path=tmp_path) as store:

        async def write(i: int) -> None:
            await create(store, *ids(4, f"w{i}-"))

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(write, i)
        stats = store.statistics()
    assert stats.commits == 128
    groups, fsyncs = stats.commit_groups, stats.fsyncs
    assert groups.count == fsyncs.count <= 32
    assert 1 <= groups.p50 <= groups.max
    assert groups.max > 1
    assert 0 < fsyncs.p50 <= fsyncs.p99 <= fsyncs.max
    assert stats.commit_latency.count == 128


async def test_a_store_without_durability_fsyncs_nothing_but_counts_its_writes(
    tmp_path: Path,
) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path, durability="none") as store:
        await create(store, *ids(3))
        stats = store.statistics()
    assert stats.fsyncs == ws.Summary()
    assert stats.commit_groups.count == 3


async def test_a_store_in_memory_has_no_fsyncs_compactions_or_etcd() -> None:
    async with ws.open_store(SCHEMA) as store:
        await create(store, "t1")
        stats = store.statistics()
    assert stats.fsyncs == stats.commit_groups == ws.Summary()
    assert (stats.compactions, stats.etcd_requests, stats.etcd_retries) == (0, 0, 0)
    assert stats.last_compaction_seconds is None


async def test_compactions_are_counted_and_the_last_one_timed(tmp_path: Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path, compact_in_child=False) as store:
        await create(store, *ids(3))
        await store.compact()
        await store.compact()
        stats = store.statistics()
    assert (stats.compactions, stats.compaction_failures) == (2, 0)
    assert stats.last_compaction_seconds is not None
    assert stats.last_compaction_seconds > 0


async def test_a_failed_compaction_is_counted(tmp_path: Path) -> None:
    """A directory in the way of the next segment's name: the switch cannot rename the
    new epoch into place, the compaction fails, the store goes on."""
    async with ws.open_store(SCHEMA, path=tmp_path, compact_in_child=False) as store:
        await create(store, "t1")
        blocker = tmp_path / "00000002.wslog"
        blocker.mkdir()
        (blocker / "in-the-way").write_text("")
        with pytest.raises(ws.CompactionFailed):
            await store.compact()
        await create(store, "t2")
        stats = store.statistics()
    assert (stats.compactions, stats.compaction_failures) == (0, 1)
    assert stats.last_compaction_seconds is None
    assert stats.commits == 2


# -- watchers ------------------------------------------------------------------------------


async def test_watchers_and_the_events_waiting_in_their_queues_are_reported() -> None:
    async with (
        ws.open_store(SCHEMA, schedule_every=1000) as store,
        store.watch(ws.on(Task)) as everything,
        store.watch(ws.on(Task, service_id="other")),
    ):
        assert store.statistics().watchers == 2
        await create(store, *ids(3))
        stats = store.statistics()
        # every Task event, each followed by nothing else: ws.on(Task) takes no Committed
        assert (stats.watchers, stats.watch_pending_total, stats.watch_pending_max) == (2, 3, 3)
        await everything.receive()
        assert store.statistics().watch_pending_max == 2
    assert store.statistics().watchers == 0


async def test_a_watcher_dropped_for_a_full_queue_is_an_overflow() -> None:
    async with ws.open_store(SCHEMA, schedule_every=1000) as store:
        async with store.watch(ws.on(Task), queue=2) as events:
            await create(store, *ids(3))
            stats = store.statistics()
            assert (stats.overflows, stats.watchers) == (1, 0)
            with pytest.raises(ws.WatchOverflow):
                async for _ in events:
                    pass
        assert store.statistics().overflows == 1


# -- replicas ------------------------------------------------------------------------------


async def test_a_replica_reports_how_many_commits_it_has_not_applied_yet() -> None:
    async with ws.open_store(SCHEMA, schedule_every=1000) as store, store.fork() as replica:
        assert store.statistics().watchers == 1  # the replica's feed
        await create(store, *ids(3))  # no schedule point: the replica has not run
        assert replica.statistics().lag == 3
        await replica.wait_for(store.version)
        stats = replica.statistics()
        assert (stats.lag, stats.commits, stats.resyncs) == (0, 3, 0)
        assert stats.version == store.version


async def test_a_replica_that_fell_behind_reports_its_resync() -> None:
    async with (
        ws.open_store(SCHEMA, schedule_every=1000) as store,
        store.fork(queue=2) as replica,
    ):
        await create(store, *ids(5))
        assert store.statistics().overflows == 1
        await replica.wait_for(store.version)
        stats = replica.statistics()
        assert (stats.resyncs, stats.lag) == (1, 0)
        assert replica.view(lambda tx: tx.count(Task)) == 5


# -- proposers: the capability -----------------------------------------------------------


class CountingProposer(ws.MemoryProposer):
    """A proposer of a user's own that measures something, and says so through
    ``statistics()`` (``core.proposer.Instrumented``): the store reports it."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def propose_value(
        self, actions: Sequence[ws.StoreAction], commit: Callable[[ws.Version], None]
    ) -> ws.Version:
        self.requests += 1
        return await super().propose_value(actions, commit)

    def statistics(self) -> ProposerStatistics:
        return ProposerStatistics(etcd_requests=self.requests, etcd_retries=7)


def test_the_log_and_etcd_proposers_are_instrumented_and_memory_is_not(tmp_path: Path) -> None:
    assert isinstance(ws.LogProposer(tmp_path), Instrumented)
    assert isinstance(ws.EtcdProposer(["http://127.0.0.1:2379"]), Instrumented)
    assert not isinstance(ws.MemoryProposer(), Instrumented)


async def test_a_proposer_of_ones_own_reports_through_the_capability() -> None:
    async with ws.open_store(SCHEMA, proposer=CountingProposer()) as store:
        await create(store, *ids(4))
        stats = store.statistics()
    assert (stats.commits, stats.etcd_requests, stats.etcd_retries) == (4, 4, 7)


# -- etcd ----------------------------------------------------------------------------------


def add_one(tx: ws.Tx) -> None:
    task = tx.get(Task, "t1")
    assert task is not None
    tx.update(attrs.evolve(task, slot=task.slot + 1))


async def test_an_etcd_store_counts_its_requests_and_conflict_retries(
    tmp_path: Path, prefix: str
) -> None:
    """Each commit is a txn (a request). An update that runs on a replica held behind (a
    batch keeps a's writers' lock while b commits) fails its compare and runs again: a
    conflict retry."""
    require_etcd()
    with running(tmp_path) as cluster:
        endpoints = cluster.endpoints
        async with (
            ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as a,
            ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as b,
        ):
            before = a.statistics().etcd_requests
            assert before > 0  # the version check and the listing
            await a.update(lambda tx: tx.create(Task("t1", "svc")))
            stats = a.statistics()
            assert stats.etcd_requests > before
            assert (stats.commits, stats.commit_latency.count, stats.conflict_retries) == (1, 1, 0)
            await b.wait_for(a.version)
            assert b.statistics().commits == 1  # replicated through b's watch

            holding = anyio.Event()
            go = anyio.Event()

            async def hold(batch: ws.Batch) -> None:
                await batch.update(lambda tx: tx.get(Task, "t1"))  # takes the lock
                holding.set()
                await go.wait()

            async with anyio.create_task_group() as tg:
                tg.start_soon(a.batch, hold)
                await holding.wait()
                tg.start_soon(a.update, add_one)  # queued for the lock, first
                await anyio.wait_all_tasks_blocked()
                await b.update(add_one)  # a's replica cannot apply it before a's update runs
                go.set()
            await a.wait_for(b.version)
            assert a.view(lambda tx: tx.get(Task, "t1")).slot == 2  # type: ignore[union-attr]
            assert a.statistics().conflict_retries == 1
            assert b.statistics().conflict_retries == 0


async def test_an_etcd_request_sent_again_to_the_next_member_is_a_retry(
    tmp_path: Path, prefix: str
) -> None:
    """The first endpoint refuses connections (nothing listens there): every request
    that went there first is sent again to the member that serves."""
    require_etcd()
    with running(tmp_path) as cluster:
        (dead,) = free_ports(1)
        endpoints = [f"http://127.0.0.1:{dead}", *cluster.endpoints]
        async with ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as store:
            await create(store, "t1")
            stats = store.statistics()
    assert stats.etcd_retries >= 1
    assert stats.etcd_requests > stats.etcd_retries
