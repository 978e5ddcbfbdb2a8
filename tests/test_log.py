"""The durable epoch log through ``open_store(schema, path=...)``: round trips, the directory
lock, torn tails versus corruption on open, format versions, durability modes, failed writes
and ``watch_from`` served from the log file. Real files and real fsync throughout."""

from __future__ import annotations

import errno
import os
import random
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import attrs
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, State, Task
from watchstore.log import proposer as ws_logproposer
from watchstore.log.manifest import Manifest, read_manifest, write_manifest
from watchstore.log.records import HEADER_SIZE, Record, parse_header, scan

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

T = TypeVar("T")
Contents = dict[tuple[str, str], Any]
"""Every object of a store by (table, id): objects compare with their meta."""

# The keys each index of tests/schema.py holds, to query every index by every key it has.
INDEX_KEYS: dict[type, dict[str, Callable[[Any], Iterable[Any]]]] = {
    Task: {
        "service_id": lambda t: [t.service_id],
        "node_id": lambda t: [t.node_id] if t.node_id is not None else [],
        "state": lambda t: [t.state],
        "service_slot": lambda t: [(t.service_id, t.slot)],
        "running_on": lambda t: (
            [t.node_id] if t.state == State.RUNNING and t.node_id is not None else []
        ),
    },
    Node: {"name": lambda n: [n.name], "labels": lambda n: n.labels},
}


def contents(store: ws.Store) -> Contents:
    """The whole state of ``store``."""

    def read(tx: ws.ReadTx) -> Contents:
        out: Contents = {("Task", t.id): t for t in tx.all(Task)}
        out.update({("Node", n.id): n for n in tx.all(Node)})
        return out

    return store.view(read)


def index_results(store: ws.Store) -> dict[tuple[str, str, object], list[str]]:
    """For every index: the ids of a full scan, and of ``find`` by each key the objects have."""

    def read(tx: ws.ReadTx) -> dict[tuple[str, str, object], list[str]]:
        out: dict[tuple[str, str, object], list[str]] = {}
        for cls, indexes in INDEX_KEYS.items():
            objects: list[Any] = tx.all(cls)
            for name, keys_of in indexes.items():
                for key in [ws.between(), *{k for o in objects for k in keys_of(o)}]:
                    found: list[Any] = tx.find(cls, **{name: key})
                    out[cls.__name__, name, key] = [o.id for o in found]
        return out

    return store.view(read)


def get(tx: ws.Tx, cls: type[T], id: str) -> T:
    obj = tx.get(cls, id)
    assert obj is not None
    return obj


def segment_of(path: Path) -> Path:
    """The store's one segment file."""
    (segment,) = path.glob("*.wslog")
    return segment


def crash_manifest(target: Path, source: Path) -> None:
    """Give ``target`` the manifest a crash of the store in ``source`` would have left: the
    store open since version 0, never closed (what ``build`` makes of a new store)."""
    manifest = read_manifest(source)
    assert manifest is not None
    write_manifest(target, Manifest(manifest.lineage, manifest.segment, 0))


def split_zeros(data: bytes) -> bytes:
    """``data`` without the zeros after its last record, checking that only zeros follow."""
    result = scan(data, parse_header(data))
    assert result.corrupt is None
    assert not data[result.end :].strip(b"\0"), "not only zeros after the last record"
    return data[: result.end]


def records_of(data: bytes) -> list[Record]:
    result = scan(data, parse_header(data))
    assert (result.torn, result.corrupt, result.end) == (False, None, len(data))
    return result.records


def flip(data: bytes, pos: int, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[pos] ^= 1 << bit
    return bytes(damaged)


async def load(path: Path) -> tuple[ws.Version, Contents]:
    """Open the store at ``path`` and return its version and contents."""
    async with ws.open_store(SCHEMA, path=path) as store:
        return store.version, contents(store)


async def load_or_corrupt(path: Path) -> tuple[ws.Version, Contents] | ws.LogCorrupt:
    """``load(path)``, or the LogCorrupt it raised."""
    try:
        return await load(path)
    except ws.LogCorrupt as exc:
        return exc


# Five commits of creates, updates and deletes; the last one is a few hundred bytes.
def commit_1(tx: ws.Tx) -> None:
    tx.create(Node("n1", "Web-1", labels=frozenset({"ssd", "gpu"})))
    tx.create(Node("n2", "web-2", labels=frozenset({"ssd"})))


def commit_2(tx: ws.Tx) -> None:
    tx.create(Task("t1", "svc-a", node_id="n1", state=State.RUNNING, slot=1))
    tx.create(Task("t2", "svc-a", node_id="n2", slot=2))


def commit_3(tx: ws.Tx) -> None:
    tx.update(attrs.evolve(get(tx, Task, "t2"), node_id="n1", state=State.ASSIGNED))
    tx.create(Task("t3", "svc-b"))


def commit_4(tx: ws.Tx) -> None:
    tx.delete(Node, "n2")
    tx.update(attrs.evolve(get(tx, Task, "t1"), state=State.FAILED))


def commit_5(tx: ws.Tx) -> None:
    tx.create(Task("t4", "svc-with-a-longer-name", node_id="n1", state=State.RUNNING, slot=4))
    tx.create(Task("t5", "svc-with-a-longer-name", node_id="n3", slot=5))
    tx.update(attrs.evolve(get(tx, Node, "n1"), labels=frozenset({"ssd", "gpu", "fast"})))


COMMITS = [commit_1, commit_2, commit_3, commit_4, commit_5]
K = len(COMMITS)


async def build(path: Path) -> list[Contents]:
    """Commit COMMITS to a new store at ``path``; return the contents after each version."""
    async with ws.open_store(SCHEMA, path=path) as store:
        states = [contents(store)]
        for commit in COMMITS:
            await store.update(commit)
            states.append(contents(store))
        assert store.version == ws.Version(K)
    return states


async def check_appends_after_repair(path: Path, state: Contents, version: int) -> None:
    """One more commit after an open at ``version``, and a reopen that has it."""
    async with ws.open_store(SCHEMA, path=path) as store:
        await store.update(lambda tx: tx.create(Task("after", "svc-a", node_id="n1")))
        expected = contents(store)
    assert set(expected) == {*state, ("Task", "after")}
    assert await load(path) == (ws.Version(version + 1), expected)


# -- round trips -------------------------------------------------------------------------------


async def test_a_durable_round_trip_restores_objects_indexes_and_versions(tmp_path: Path) -> None:
    """Reopening gives back every object (meta included), every index and the version; a
    second reopen after more commits does too."""
    assert {cls: set(keys) for cls, keys in INDEX_KEYS.items()} == {
        t.cls: {i.index_name for i in t.indexes} for t in SCHEMA.tables
    }, "INDEX_KEYS must cover every index of the test schema"
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        for commit in COMMITS:
            await store.update(commit)
        before = (store.version, contents(store), index_results(store))
    assert before[0] == ws.Version(K)
    assert len(before[2]) > 20

    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert (store.version, contents(store), index_results(store)) == before
        assert contents(store)[("Task", "t4")].meta.version == ws.Version(5)
        t1 = store.view(lambda tx: tx.get(Task, "t1"))
        assert t1 is not None
        await store.update(lambda tx: tx.update(attrs.evolve(t1, node_id="n9")))
        await store.update(lambda tx: tx.delete(Task, "t3"))
        await store.update(lambda tx: tx.create(Node("n3", "db-1")))
        again = (store.version, contents(store), index_results(store))
    assert again[0] == ws.Version(K + 3)
    assert again[1][("Task", "t1")].meta.version == ws.Version(K + 1)

    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert (store.version, contents(store), index_results(store)) == again
        # The restored store goes on committing at the next version.
        await store.update(lambda tx: tx.create(Task("t9", "svc-a")))
        assert store.version == ws.Version(K + 4)


async def test_an_empty_store_round_trips(tmp_path: Path) -> None:
    """A store opened and closed without commits reopens empty at version 0."""
    async with ws.open_store(SCHEMA, path=tmp_path / "new") as store:
        assert store.version == ws.Version(0)
    assert await load(tmp_path / "new") == (ws.Version(0), {})


@pytest.mark.parametrize("durability", ["interval", "none"])
async def test_other_durability_modes_round_trip(tmp_path: Path, durability: ws.Durability) -> None:
    """With durability "interval" or "none" a store opens, commits and reopens the same."""
    async with ws.open_store(SCHEMA, path=tmp_path, durability=durability) as store:
        for commit in COMMITS:
            await store.update(commit)
        before = (store.version, contents(store))
    assert before[0] == ws.Version(K)
    assert await load(tmp_path) == before
    async with ws.open_store(SCHEMA, path=tmp_path, durability=durability) as store:
        await store.update(lambda tx: tx.delete(Task, "t1"))
        after = (store.version, contents(store))
    assert await load(tmp_path) == after


# -- the directory lock ------------------------------------------------------------------------


async def test_a_second_open_while_open_raises_store_locked(tmp_path: Path) -> None:
    """A second open of an open directory raises StoreLocked naming the holder's pid; the
    first store is unaffected; after close the directory opens and LOCK.json is gone."""
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert (tmp_path / "LOCK.json").exists()
        with pytest.raises(ws.StoreLocked) as info:
            async with ws.open_store(SCHEMA, path=tmp_path):
                pytest.fail("opened a locked store")
        assert info.value.holder["pid"] == os.getpid()
        assert str(os.getpid()) in str(info.value)
        assert (tmp_path / "LOCK.json").exists()
        await store.update(lambda tx: tx.create(Task("t1", "svc-a")))
    assert not (tmp_path / "LOCK.json").exists()
    version, state = await load(tmp_path)
    assert (version, list(state)) == (ws.Version(1), [("Task", "t1")])
    assert not (tmp_path / "LOCK.json").exists()


# -- torn tails and corruption -----------------------------------------------------------------


async def test_a_cut_at_every_offset_of_the_last_record_repairs_to_the_previous_version(
    tmp_path: Path,
) -> None:
    """Cutting the segment anywhere inside its last record (an append a crash interrupted):
    the open succeeds with exactly the state of version K-1, truncates the file to the end
    of record K-1, and appending then works (one more commit, reopen, consistent)."""
    states = await build(tmp_path / "orig")
    data = segment_of(tmp_path / "orig").read_bytes()
    last = records_of(data)[-1]
    assert 150 < len(data) - last.offset < 1000  # a few hundred opens below
    work = tmp_path / "work"
    work.mkdir()
    segment = work / segment_of(tmp_path / "orig").name
    for cut in range(last.offset, len(data)):
        crash_manifest(work, tmp_path / "orig")
        segment.write_bytes(data[:cut])
        async with ws.open_store(SCHEMA, path=work) as store:
            assert (store.version, contents(store)) == (ws.Version(K - 1), states[K - 1]), cut
            # While open, only the zeros written ahead for the next appends follow.
            assert split_zeros(segment.read_bytes()) == data[: last.offset], cut
        assert segment.read_bytes() == data[: last.offset], cut  # closing cuts them off
        await check_appends_after_repair(work, states[K - 1], K - 1)


async def test_a_zero_filled_extension_is_repaired(tmp_path: Path) -> None:
    """4096 zero bytes after the last record (a file extended by a crash) are truncated on
    open; every version is still there and appending works."""
    states = await build(tmp_path)
    segment = segment_of(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data + bytes(4096))
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert (store.version, contents(store)) == (ws.Version(K), states[K])
        assert split_zeros(segment.read_bytes()) == data
    assert segment.read_bytes() == data
    await check_appends_after_repair(tmp_path, states[K], K)


async def test_flipped_bits_raise_log_corrupt_never_wrong_data(tmp_path: Path) -> None:
    """A bit flipped in a record (200 samples in the last one, 50 in earlier ones): the open
    either raises LogCorrupt naming the file and an offset in it, or returns exactly the state
    of a version that was committed. In practice it is LogCorrupt at the damaged record, with
    the last good version; the file is left untouched and the lock released."""
    states = await build(tmp_path / "orig")
    data = segment_of(tmp_path / "orig").read_bytes()
    records = records_of(data)
    last = records[-1]
    work = tmp_path / "work"
    work.mkdir()
    crash_manifest(work, tmp_path / "orig")
    segment = work / segment_of(tmp_path / "orig").name
    rng = random.Random(20240607)
    positions = [rng.randrange(last.offset, len(data)) for _ in range(200)]
    positions += [rng.randrange(HEADER_SIZE, last.offset) for _ in range(50)]
    outcomes: list[tuple[int, int | None, ws.Version | None]] = []
    for pos in positions:
        damaged = flip(data, pos, rng.randrange(8))
        segment.write_bytes(damaged)
        got = await load_or_corrupt(work)
        if isinstance(got, ws.LogCorrupt):
            assert got.file == str(segment), pos
            assert 0 <= got.offset < len(data), pos
            assert segment.read_bytes() == damaged, pos  # nothing repaired over damage
            assert not (work / "LOCK.json").exists()
            outcomes.append((pos, got.offset, got.version))
        else:
            version, state = got
            assert state == states[version.index], pos  # never a mixed state
            outcomes.append((pos, None, version))
    # What happens in practice: LogCorrupt at the start of the damaged record.
    for pos, offset, last_good in outcomes:
        index = max(i for i, r in enumerate(records) if r.offset <= pos)
        assert offset == records[index].offset, pos
        assert last_good == (ws.Version(index - 1) if index else None), pos


async def test_a_flipped_bit_in_the_segment_header_is_corrupt_at_offset_0(tmp_path: Path) -> None:
    """Damage anywhere in the 44-byte segment header raises LogCorrupt at offset 0."""
    await build(tmp_path)
    segment = segment_of(tmp_path)
    data = segment.read_bytes()
    for pos in range(HEADER_SIZE):
        segment.write_bytes(flip(data, pos, pos % 8))
        with pytest.raises(ws.LogCorrupt) as info:
            await load(tmp_path)
        assert (info.value.file, info.value.offset) == (str(segment), 0), pos
    segment.write_bytes(data)
    assert (await load(tmp_path))[0] == ws.Version(K)


async def test_a_newer_format_version_raises_unsupported_format(tmp_path: Path) -> None:
    """A segment whose (valid) header says format 99 is refused with UnsupportedFormat naming
    both its version and the one this library reads; the file is left alone."""
    await build(tmp_path)
    segment = segment_of(tmp_path)
    data = segment.read_bytes()
    header = parse_header(data)
    assert header.format == 2
    newer = attrs.evolve(header, format=99).pack() + data[HEADER_SIZE:]
    segment.write_bytes(newer)
    with pytest.raises(ws.UnsupportedFormat, match=r"format 99\b.*\(2\)"):
        await load(tmp_path)
    assert segment.read_bytes() == newer
    assert not (tmp_path / "LOCK.json").exists()


# -- failed writes -----------------------------------------------------------------------------


def failing_fdatasync(fd: int) -> None:
    raise OSError(errno.EIO, "simulated I/O error")


async def test_a_failed_fsync_fails_the_log_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync error fails the update with ProposalFailed, nothing of it is visible, every
    later update fails too, and reads go on."""
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        await store.update(commit_1)
        before = (store.version, contents(store), index_results(store))
        monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
        with pytest.raises(ws.ProposalFailed):
            await store.update(commit_2)
        assert (store.version, contents(store), index_results(store)) == before
        monkeypatch.undo()  # the disk is back, but the log stays failed
        with pytest.raises(ws.ProposalFailed):
            await store.update(lambda tx: tx.create(Task("t9", "svc-a")))
        assert (store.version, contents(store), index_results(store)) == before
        assert store.view(lambda tx: tx.find(Node, labels="gpu"))[0].id == "n1"


async def test_after_a_failed_fsync_a_reopen_has_only_the_commits_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The update whose fsync failed raised ProposalFailed and was never visible: reopening
    (without the fault) gives only the commits before the failure ("the log then holds
    exactly what was fsynced", docs/format.md), and commits again."""
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        await store.update(commit_1)
        before = (store.version, contents(store))
        monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
        with pytest.raises(ws.ProposalFailed):
            await store.update(commit_2)
    monkeypatch.undo()
    assert await load(tmp_path) == before
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        await store.update(commit_2)
        assert store.version == ws.Version(2)


async def test_concurrent_writers_fail_together_when_their_shared_fsync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers whose commits were grouped into one failed fsync all get ProposalFailed and
    none of their writes is visible or comes back on reopen. (The first of 8 writers
    started at once commits alone, its fsync succeeds; the other 7 share the next one.)"""
    real = os.fdatasync
    calls: list[int] = []

    def fails_after_the_first(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 1:
            failing_fdatasync(fd)
        real(fd)

    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        monkeypatch.setattr(os, "fdatasync", fails_after_the_first)
        failures: list[BaseException] = []

        async def write(i: int) -> None:
            try:
                await store.update(lambda tx: tx.create(Task(f"g{i}", "svc-a")))
            except ws.ProposalFailed as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(write, i)
        assert len(failures) == 7
        assert store.version == ws.Version(1)
        committed = contents(store)
        assert len(committed) == 1
    monkeypatch.undo()
    assert await load(tmp_path) == (ws.Version(1), committed)


async def test_concurrent_writers_share_fsyncs_and_a_lone_one_gets_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: 32 writers committing 4 times each need far fewer fsyncs than their
    128 commits; a lone writer's commit is fsynced before update() returns."""
    synced: list[int] = []
    real = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        real(fd)
        synced.append(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    async with ws.open_store(SCHEMA, path=tmp_path) as store:

        async def write(i: int) -> None:
            for j in range(4):
                await store.update(lambda tx: tx.create(Task(f"w{i}-{j}", "svc-a")))

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(write, i)
        assert store.version == ws.Version(128)
        assert len(synced) <= 128 // 4
        before = len(synced)
        await store.update(lambda tx: tx.create(Task("alone", "svc-a")))
        assert len(synced) == before + 1
    assert (await load(tmp_path))[0] == ws.Version(129)


def fsync_threads(monkeypatch: pytest.MonkeyPatch, slow: set[int] | None = None) -> list[bool]:
    """Patch ``os.fdatasync`` to record, per call, whether it ran in this (the event loop's)
    thread.

    The clock the proposer times its writes with is replaced by one that stands still, so
    no real fsync of a loaded machine counts as slow; the calls numbered in ``slow`` (from
    0) move it on by 1 s, a slow disk."""
    threads: list[bool] = []
    real = os.fdatasync
    loop_thread = threading.get_ident()
    now = [0.0]

    def recording_fdatasync(fd: int) -> None:
        if slow is not None and len(threads) in slow:
            now[0] += 1.0
        threads.append(threading.get_ident() == loop_thread)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)
    monkeypatch.setattr(ws_logproposer, "perf_counter", lambda: now[0])
    return threads


async def start_writers(store: ws.Store, count: int, commits: int = 1) -> None:
    """``count`` tasks started at once, each creating ``commits`` Tasks one by one."""

    async def write(i: int) -> None:
        for j in range(commits):
            await store.update(lambda tx: tx.create(Task(f"w{i}-{j}-{count}-{commits}", "svc-a")))

    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(write, i)


async def test_a_batch_is_fsynced_in_the_event_loop_thread_only_if_every_writer_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 writers started at once, one commit each: the first commits alone (in the event
    loop's thread); the other 7 share the next fsync, in a worker thread, since the first is
    still under way (returning) and could go on meanwhile. Then 8 writers of 3 commits each:
    the first commits alone, and it has made its second commit by the time the committer
    takes the others' first ones, so each batch holds a commit of every writer: nothing could
    go on during its fsync, and it is written in the event loop's thread, sparing the worker
    thread's round trip."""
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        threads = fsync_threads(monkeypatch)
        await start_writers(store, 8)
        assert threads == [True, False]

        del threads[:]
        await start_writers(store, 8, commits=3)
        # The lone first commit, then batches of all 8 writers (the last one may hold
        # fewer, as writers finish).
        assert threads[:3] == [True, True, True]
        assert len(threads) == 4
        assert store.view(lambda tx: tx.count(Task)) == 8 + 24


async def test_after_a_slow_fsync_writes_leave_the_event_loop_thread_until_one_is_quick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that took longer than ``inline_write_limit`` (2 ms; here 1 s on the patched
    clock) sends the next write, even a lone commit's, to a worker thread; once a write is
    quick again, lone commits are fsynced in the event loop's thread again."""
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        threads = fsync_threads(monkeypatch, slow={1})
        for i in range(4):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "svc-a")))
        assert threads == [True, True, False, True]


# -- watch_from from the log -------------------------------------------------------------------


async def test_watch_from_older_than_memory_is_served_from_the_log(tmp_path: Path) -> None:
    """With 2 commits of history in memory, watch_from(Version(1)) after 6 commits replays
    commits 2..6 in order (from the log file), then goes live."""
    async with ws.open_store(SCHEMA, path=tmp_path, history=2) as store:
        for i in range(1, 7):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "svc-a")))
        async with store.watch_from(ws.Version(1)) as events:
            replayed = [events.receive_nowait() for _ in range(events.pending())]
            await store.update(lambda tx: tx.create(Task("live", "svc-a")))
            live = [await events.receive(), await events.receive()]
        created = {t.id: t for t in contents(store).values()}
    assert replayed == [
        event
        for i in range(2, 7)
        for event in (ws.Created(created[f"t{i}"], ws.Version(i)), ws.Committed(ws.Version(i), 1))
    ]
    assert [(t.meta.version, t.id) for t in created.values() if t.id != "live"] == [
        (ws.Version(i), f"t{i}") for i in range(1, 7)
    ]
    assert live == [ws.Created(created["live"], ws.Version(7)), ws.Committed(ws.Version(7), 1)]


async def test_watch_from_the_log_replays_the_events_watchers_saw_live(tmp_path: Path) -> None:
    """Replaying from the log gives the same events a watcher got live, updates included
    (``Updated.old`` is the object replaced), filtered the same way: a watcher of
    node_id="n1" sees the update that moves a task away from n1."""
    spec = ws.on(Task, node_id="n1")
    async with ws.open_store(SCHEMA, path=tmp_path, history=1) as store:
        async with store.watch() as everything, store.watch(spec) as on_n1:
            for commit in COMMITS:
                await store.update(commit)
            await store.update(
                lambda tx: tx.update(attrs.evolve(get(tx, Task, "t4"), node_id="n2"))
            )
            live_all = [everything.receive_nowait() for _ in range(everything.pending())]
            live_n1 = [on_n1.receive_nowait() for _ in range(on_n1.pending())]
        async with store.watch_from(ws.Version(0)) as replay_all:
            assert [replay_all.receive_nowait() for _ in range(replay_all.pending())] == live_all
        async with store.watch_from(ws.Version(0), spec) as replay_n1:
            assert [replay_n1.receive_nowait() for _ in range(replay_n1.pending())] == live_n1


# -- zeros written ahead -----------------------------------------------------------------------


async def test_appends_overwrite_zeros_written_ahead_and_close_cuts_them_off(
    tmp_path: Path,
) -> None:
    """While open, the segment ends in zeros written ahead of the records (so an fsync has
    no change of size to journal); closing leaves exactly the records."""
    segment = tmp_path / "00000001.wslog"
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        for commit in COMMITS:
            await store.update(commit)
        data = segment.read_bytes()
        records = scan(data, parse_header(data))
        assert (records.torn, records.corrupt) == (False, None)  # zeros: space, not damage
        assert data[records.end :] == bytes(records.padding)
        assert len(data) - records.end >= 1 << 19
    assert segment.stat().st_size == records.end


async def test_a_crash_with_zeros_ahead_recovers_every_acknowledged_commit(
    tmp_path: Path,
) -> None:
    """A copy of the segment taken while the store is open is what a crash leaves: every
    acknowledged commit, then zeros, which the open keeps as space written ahead; a record
    half written into the zeros is a torn tail (its commit was never acknowledged), cut."""
    live, crashed, torn = tmp_path / "live", tmp_path / "crashed", tmp_path / "torn"
    async with ws.open_store(SCHEMA, path=live) as store:
        for commit in COMMITS:
            await store.update(commit)
        expected = (store.version, contents(store))
        data = (live / "00000001.wslog").read_bytes()
        manifest = (live / "MANIFEST").read_bytes()  # as it is while the store is open
    records = scan(data, parse_header(data))
    crashed.mkdir()
    (crashed / "00000001.wslog").write_bytes(data)
    (crashed / "MANIFEST").write_bytes(manifest)
    async with ws.open_store(SCHEMA, path=crashed) as store:
        assert (store.version, contents(store)) == expected
        assert store.recovery is not None
        assert store.recovery.repaired_tail == 0
    last = records.records[-1]
    half = last.offset + (records.end - last.offset) // 2
    torn.mkdir()
    (torn / "00000001.wslog").write_bytes(data[:half] + bytes(len(data) - half))
    (torn / "MANIFEST").write_bytes(manifest)
    async with ws.open_store(SCHEMA, path=torn) as store:
        assert store.version == ws.Version(expected[0].index - 1)
        assert store.recovery is not None
        assert store.recovery.repaired_tail == len(data) - last.offset
