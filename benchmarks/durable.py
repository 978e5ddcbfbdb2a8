"""Durability benchmark: durable commits, restore and compaction vs sqlite3 on a file.

One schema throughout, the families' shared one (``benchmarks._common``), as in the core
benchmark: objects with ``id`` (random hex), ``service_id`` (100 values), ``node_id`` (1000
values) and ``meta``, with non-unique secondary indexes on service_id and node_id. sqlite rows
carry the same columns, the same indexes and the object's JSON as a ``data`` blob, so both
sides write a similar payload.
Every store and database lives in a fresh directory under one temporary directory (on the
filesystem named in the header), removed at the end.

1. Durable commits/s, 1 writer: ``open_store(schema, path=..., durability="always")`` and one
   ``await store.update(lambda tx: tx.create(obj))`` per object (N = 2,000), vs sqlite3 with
   ``PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL`` doing ``INSERT`` + ``commit()`` per
   row, vs the floor: ``os.write`` of a record of the same size + ``os.fdatasync`` per
   commit in a plain loop (what one synchronous append costs on this disk, with no store).
   That loop grows its file, so each fdatasync also journals the new size; watchstore
   writes over zeros it wrote ahead (as sqlite's WAL reuses its file) and can beat it.
2. Durable commits/s, 64 writers: 64 tasks each doing N/64 single-create updates on one
   ``durability="always"`` store; compared with sqlite's single-writer rate, as the target
   says. Extra rows without targets: watchstore's ``durability="interval"`` and ``"none"``
   with 1 writer, next to sqlite WAL with ``synchronous=NORMAL`` (fsyncs only at
   checkpoints) and ``synchronous=OFF``.
3. Restore of a store of N_RESTORE = 1,000,000 objects: built with ``store.batch`` (chunks of
   ``ws.MAX_BATCH_CHANGES``) and closed, untimed; then the time from calling ``open_store(schema,
   path=...)`` until its ``async with`` body is entered, as objects/s. The store compacts when
   due, as by default (``compact_bytes`` 64 MiB), so restoring reads the newest segment: its
   snapshot (empty if the store never compacted), then a replay of every change after it. The
   notes say how many segment files there were and at which commit that snapshot was taken.
   Peer: ``sqlite3.connect`` of a file holding the same rows plus ``SELECT`` of every row
   into Python tuples (``fetchall``; the JSON is not decoded, which favours sqlite). Both
   read files the page cache holds (they were just written).
4. Compaction's effect on commit latency: a ``durability="always"`` store of N_COMPACT =
   200,000 objects, built with ``store.batch`` and a ``compact_bytes`` it never reaches (only
   the benchmark compacts), then 1 writer doing M = 2,000 single-object upserts of existing
   objects (``await store.update(lambda tx: tx.upsert(obj))``, objects drawn at random), each
   commit timed on its own: once with nothing in the background, once while another task runs
   ``await store.compact()`` back to back until the writer is done (the table says how many
   compactions ran, how long each took and what share of the writer's time they covered).
   Reported: p50, p99 (nearest rank) and max latency, and p99 while compacting / p99 without.
   Peer: sqlite WAL+FULL, ``INSERT ... ON CONFLICT (id) DO UPDATE`` + ``commit()`` per row on
   a file of the same rows, with nothing in the background and while a thread runs ``VACUUM
   INTO`` a new file + an fsync of it back to back on a connection of its own (sqlite's way to
   write a consistent copy while writers go on). The four variants run interleaved, the order
   rotating; each keeps its run with the lowest p99.

Why: these are the targets of the durability issue: (a) 1 durable writer >= 0.8x sqlite's
commit-per-insert on WAL+FULL; (b) 64 concurrent durable writers >= 10x sqlite's single-writer
rate, which needs group commit (one fsync covering the commits of many writers); (c) restore
>= 200k objects/s; (d) compaction does not stall commits: p99 commit latency while compacting
at most 2x p99 without.

Method: all variants of sections 1-2 run interleaved in every repetition (the order rotates),
in one process, on the same objects built outside the timed regions; rows report the best of
``--reps`` runs, section 3 the best of ``--restore-reps`` reopens, section 4 the run with the
lowest p99 of ``--compact-reps`` (1 with ``--quick``). Times are WALL time
(``time.perf_counter``), not CPU time as in the core benchmark: waiting for fsync is the point.
The clock covers the commits only, not opening or closing the store. sqlite runs in the event
loop's thread (blocking it, as the core benchmark does); so does watchstore's append of a lone
commit (one no other update() is waiting beside, as in rows 1 and 2+), while commits of concurrent
writers (row 2) are grouped and written in a worker thread. The garbage collector stays at
Python's defaults, as applications run it.
"""

from __future__ import annotations

import gc
import math
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import attrs

import watchstore as ws
from benchmarks._common import (
    SCHEMA,
    SQL,
    SQL_INSERT,
    WS,
    Measure,
    Obj,
    add_backend,
    add_quick_and_json,
    argument_parser,
    create_sql_tables,
    fmt_measure,
    fmt_ratio,
    fmt_seconds,
    gc_settings,
    grid,
    make_objects,
    platform_and_versions,
    platform_line,
    positive,
    progress_reporter,
    rate_ratio,
    rotated,
    run_on,
    size_label,
    sized,
    sql_row,
    sql_rows,
    verdict,
    versions_line,
    write_json,
)
from watchstore.log.bodies import Format1
from watchstore.log.records import HEADER_SIZE, SNAPSHOT, SegmentHeader, pack_record

if TYPE_CHECKING:
    from collections.abc import Sequence

    from benchmarks._common import SqlRow

RAW: Final = "write+fdatasync"
WS1: Final = "ws format 1"
"""watchstore appending to a format 1 segment: the codec before msgspec, in the same run."""
COLUMNS: Final = (WS, WS1, SQL, RAW)

SQL_SELECT_ALL: Final = "SELECT id, service_id, node_id, data FROM objs"
RECORD_OVERHEAD: Final = 64  # bytes added to the JSON for the floor's records (framing, action)

TARGET_ONE_WRITER: Final = 0.8  # (a): ws rate / sqlite rate, 1 writer
TARGET_MANY_WRITERS: Final = 10.0  # (b): ws rate with many writers / sqlite 1-writer rate
TARGET_RESTORE: Final = 200_000  # (c): objects/s
TARGET_COMPACTION: Final = 2.0  # (d): p99 commit latency while compacting / p99 without
TARGET_RESTORE_VS_SQLITE: Final = 1.0  # (e): restore / sqlite reading rows into the objects
TARGET_VS_FORMAT_1: Final = 1.0  # (f): 1 and many writers, format 2 / format 1 codec
NEVER_COMPACT: Final = 1 << 62  # section 4's compact_bytes: no automatic compaction
SQL_UPSERT: Final = (
    "INSERT INTO objs (id, service_id, node_id, data) VALUES (?, ?, ?, ?) ON CONFLICT (id) "
    "DO UPDATE SET service_id = excluded.service_id, node_id = excluded.node_id, "
    "data = excluded.data"
)

progress = progress_reporter("durable")


# -- result rows -------------------------------------------------------------------------------


@attrs.define
class Row:
    """One line of the result table: a workload and what each column measured (rates)."""

    label: str
    peers: dict[str, Measure]
    baseline: Measure | None = None  # what the ratio compares against; default: the SQL peer

    def ratio(self) -> float | None:
        """How many times faster watchstore is than the baseline (None if either is missing)."""
        base = self.baseline if self.baseline is not None else self.peers.get(SQL)
        if WS not in self.peers or base is None:
            return None
        return rate_ratio(self.peers[WS], base)

    def rate(self, peer: str = WS) -> float:
        return 1.0 / self.peers[peer].seconds()

    def cell(self, peer: str) -> str:
        return fmt_measure(self.peers.get(peer), is_rate=True)

    def vs_format_1(self) -> float | None:
        """How many times faster watchstore is than itself with the format 1 codec."""
        if WS not in self.peers or WS1 not in self.peers:
            return None
        return rate_ratio(self.peers[WS], self.peers[WS1])

    def to_json(self) -> dict[str, Any]:
        return {
            "peers": {p: m.to_json() for p, m in self.peers.items()},
            "ratio_vs_baseline": self.ratio(),
            "ratio_vs_format_1": self.vs_format_1(),
        }


# -- the workloads -----------------------------------------------------------------------------


def seed_format_1(directory: Path) -> None:
    """Make ``directory`` an empty store of format 1 (what an older watchstore created): its
    appends use the format 1 codec until a compaction, which these runs never reach."""
    directory.mkdir(parents=True, exist_ok=True)
    header = SegmentHeader(1, 0, 1, os.urandom(16), time.time_ns())
    body = Format1(SCHEMA).snapshot(ws.Version(0), [(t.name, 0, []) for t in SCHEMA.tables])
    data = header.pack() + pack_record(header, HEADER_SIZE, SNAPSHOT, body)
    (directory / "00000001.wslog").write_bytes(data)


async def ws_commits(
    directory: Path,
    objs: Sequence[Obj],
    durability: ws.Durability,
    writers: int,
    codec: int = 2,
) -> float:
    """Wall seconds for one single-create update per object, by ``writers`` tasks, on a
    new store of format ``codec``."""
    if codec == 1:
        seed_format_1(directory)
    async with ws.open_store(
        SCHEMA, path=directory, durability=durability, compact_bytes=NEVER_COMPACT
    ) as store:

        async def write(part: Sequence[Obj]) -> None:
            for obj in part:
                await store.update(lambda tx: tx.create(obj))

        start = time.perf_counter()
        if writers == 1:
            await write(objs)
        else:
            async with anyio.create_task_group() as nursery:
                for i in range(writers):
                    nursery.start_soon(write, objs[i::writers])
        elapsed = time.perf_counter() - start
        assert store.view(lambda tx: tx.count(Obj)) == len(objs)
    return elapsed


def open_sqlite(path: Path, synchronous: str) -> sqlite3.Connection:
    """A database file in WAL mode with ``synchronous`` (FULL, NORMAL or OFF) and the table.

    Python's default isolation opens a transaction before each INSERT; ``commit()`` ends it.
    """
    conn = connect_sqlite(path, synchronous)
    create_sql_tables(conn)
    return conn


def connect_sqlite(path: Path, synchronous: str) -> sqlite3.Connection:
    """A connection to the database file ``path`` in WAL mode with ``synchronous``."""
    conn = sqlite3.connect(path)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    assert mode == ("wal",), mode
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def sqlite_commits(path: Path, rows: Sequence[SqlRow], synchronous: str) -> float:
    """Wall seconds for ``INSERT`` + ``commit()`` per row."""
    conn = open_sqlite(path, synchronous)
    execute, commit = conn.cursor().execute, conn.commit
    start = time.perf_counter()
    for row in rows:
        execute(SQL_INSERT, row)
        commit()
    elapsed = time.perf_counter() - start
    assert conn.execute("SELECT count(*) FROM objs").fetchone() == (len(rows),)
    conn.close()
    return elapsed


def raw_appends(path: Path, records: Sequence[bytes]) -> float:
    """Wall seconds for ``os.write`` + ``os.fdatasync`` per record: the floor of a
    synchronous append on this disk, with no store, no thread hop and no encoding."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for record in records:
            os.write(fd, record)
            os.fdatasync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)


@attrs.define
class Variant:
    """One workload of sections 1-2: a name, a column and how to run it once."""

    key: str
    peer: str
    durability: ws.Durability | None = None  # watchstore variants
    writers: int = 1
    codec: int = 2  # watchstore's format
    synchronous: str | None = None  # sqlite variants


async def run_variant(
    variant: Variant,
    base: Path,
    objs: Sequence[Obj],
    rows: Sequence[SqlRow],
    records: Sequence[bytes],
) -> tuple[float, int]:
    """Run ``variant`` once in a fresh directory: (wall seconds, bytes it left on disk)."""
    directory = Path(tempfile.mkdtemp(prefix=f"{variant.key}-", dir=base))
    try:
        gc.collect()
        if variant.durability is not None:
            elapsed = await ws_commits(
                directory, objs, variant.durability, variant.writers, variant.codec
            )
        elif variant.synchronous is not None:
            elapsed = sqlite_commits(directory / "objs.db", rows, variant.synchronous)
        else:
            elapsed = raw_appends(directory / "raw.log", records)
        return elapsed, directory_bytes(directory)
    finally:
        shutil.rmtree(directory)


async def section_commits(config: Config, base: Path) -> tuple[list[Row], dict[str, int]]:
    """Sections 1 and 2: every variant once per repetition, in rotating order.

    Also returns the bytes each variant left on disk (its last run), for the notes.
    """
    objs = list(make_objects(config.n, seed=1))
    rows = sql_rows(objs)
    records = [row[3].encode() + b"x" * RECORD_OVERHEAD for row in rows]
    many = config.writers
    variants = [
        Variant("ws-always", WS, durability="always"),
        Variant("ws-always-f1", WS1, durability="always", codec=1),
        Variant("sqlite-full", SQL, synchronous="FULL"),
        Variant("raw", RAW),
        Variant(f"ws-always-{many}", WS, durability="always", writers=many),
        Variant(f"ws-always-{many}-f1", WS1, durability="always", writers=many, codec=1),
        Variant("ws-interval", WS, durability="interval"),
        Variant("sqlite-normal", SQL, synchronous="NORMAL"),
        Variant("ws-none", WS, durability="none"),
        Variant("sqlite-off", SQL, synchronous="OFF"),
    ]
    measures = {v.key: Measure(config.n) for v in variants}
    disk: dict[str, int] = {}
    for rep in range(config.reps):
        progress(f"1-2. {config.n:,} commits per variant: run {rep + 1}/{config.reps}")
        for variant in rotated(variants, rep):
            elapsed, disk[variant.key] = await run_variant(variant, base, objs, rows, records)
            measures[variant.key].times.append(elapsed)

    def m(key: str) -> Measure:
        return measures[key]

    table = [
        Row(
            "1. 1 writer, always (sqlite: WAL+FULL)",
            {WS: m("ws-always"), WS1: m("ws-always-f1"), SQL: m("sqlite-full"), RAW: m("raw")},
        ),
        Row(
            f"2. {many} writers, always (vs sqlite 1 writer)",
            {WS: m(f"ws-always-{many}"), WS1: m(f"ws-always-{many}-f1")},
            baseline=m("sqlite-full"),
        ),
        Row(
            "2+ 1 writer, interval (sqlite: WAL+NORMAL)",
            {WS: m("ws-interval"), SQL: m("sqlite-normal")},
        ),
        Row("2+ 1 writer, none (sqlite: WAL+OFF)", {WS: m("ws-none"), SQL: m("sqlite-off")}),
    ]
    return table, disk


# -- section 3: restore -----------------------------------------------------------------------


@attrs.define
class RestoreInfo:
    """What section 3 built, for the notes."""

    size: int
    build_seconds: float
    log_bytes: int
    log_segments: int
    commits: int
    snapshot_version: int  # of the newest segment's snapshot (0: an empty snapshot)
    sqlite_bytes: int


def directory_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def newest_segment_bytes(directory: Path) -> int:
    """The size of the newest segment file of a store directory (names are zero-padded)."""
    return max(directory.glob("*.wslog")).stat().st_size


def segment_count(directory: Path) -> int:
    """How many log segment files a store directory holds."""
    return len(list(directory.glob("*.wslog")))


async def build_store(directory: Path, size: int, seed: int, codec: int = 2) -> tuple[float, int]:
    """Create ``size`` objects through ``store.batch``; return (seconds, commits). A
    format 1 store never compacts (a compaction would write format 2)."""
    step = max(size // 10, 1)
    start = time.perf_counter()
    compact = NEVER_COMPACT if codec == 1 else 64 << 20
    if codec == 1:
        seed_format_1(directory)
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=compact) as store:

        async def load(b: ws.Batch) -> None:
            for i, obj in enumerate(make_objects(size, seed), 1):
                await b.update(lambda tx: tx.create(obj))
                if i % step == 0:
                    progress(f"  built {i:,}/{size:,}")

        await store.batch(load)
        commits = store.version.index
    del store
    return time.perf_counter() - start, commits


SQL_OBJECTS: Final = (
    "CREATE TABLE objs (id TEXT PRIMARY KEY, service_id TEXT NOT NULL, node_id TEXT NOT NULL, "
    "version INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)",
    "CREATE INDEX objs_service ON objs (service_id)",
    "CREATE INDEX objs_node ON objs (node_id)",
)
"""Section 3's sqlite table: the object's fields, meta included, as columns."""


def build_sqlite(path: Path, size: int, seed: int) -> None:
    conn = open_sqlite(path, "FULL")
    conn.executemany(SQL_INSERT, (sql_row(o) for o in make_objects(size, seed)))
    conn.commit()
    conn.close()


def build_sqlite_objects(path: Path, size: int, seed: int) -> None:
    """The same objects as rows of ``SQL_OBJECTS``, each with the meta the store gives it
    (the version of its batch commit)."""
    conn = open_sqlite(path, "FULL")
    conn.execute("DROP TABLE objs")
    for statement in SQL_OBJECTS:
        conn.execute(statement)
    now = time.time()
    rows = (
        (o.id, o.service_id, o.node_id, i // ws.MAX_BATCH_CHANGES + 1, now, now)
        for i, o in enumerate(make_objects(size, seed))
    )
    conn.executemany("INSERT INTO objs VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


async def ws_restore(directory: Path, size: int) -> float:
    """Wall seconds from calling ``open_store(schema, path=...)`` until its body runs."""
    start = time.perf_counter()
    async with ws.open_store(SCHEMA, path=directory) as store:
        elapsed = time.perf_counter() - start
        count = store.view(lambda tx: tx.count(Obj))
    assert count == size, count
    del store
    return elapsed


def sqlite_restore(path: Path, size: int) -> float:
    """Wall seconds for ``connect`` + ``SELECT *`` + making the same objects of the rows,
    as a program would: ``Obj(id, service_id, node_id, Meta(Version(v), created, updated))``."""
    meta, version = ws.Meta, ws.Version
    start = time.perf_counter()
    conn = sqlite3.connect(path)
    loaded = [
        Obj(i, s, n, meta(version(v), c, u))
        for i, s, n, v, c, u in conn.execute("SELECT * FROM objs")
    ]
    elapsed = time.perf_counter() - start
    conn.close()
    assert len(loaded) == size, len(loaded)
    del loaded
    return elapsed


async def section_restore(config: Config, base: Path) -> tuple[Row, RestoreInfo]:
    size = config.restore_size
    store_dir = Path(tempfile.mkdtemp(prefix="ws-restore-", dir=base))
    v1_dir = Path(tempfile.mkdtemp(prefix="ws1-restore-", dir=base))
    db_dir = Path(tempfile.mkdtemp(prefix="sqlite-restore-", dir=base))
    db = db_dir / "objs.db"
    try:
        progress(f"3. building a durable store of {size:,} objects with store.batch (untimed)")
        build_seconds, commits = await build_store(store_dir, size, seed=3)
        progress(f"  built in {build_seconds:.1f} s ({commits:,} commits)")
        progress("3. the same in a format 1 store (untimed)")
        await build_store(v1_dir, size, seed=3, codec=1)
        progress(f"3. building the sqlite file of {size:,} rows (untimed)")
        build_sqlite_objects(db, size, seed=3)
        info = RestoreInfo(
            size,
            build_seconds,
            directory_bytes(store_dir),
            segment_count(store_dir),
            commits,
            ws.list_epochs(store_dir)[-1].version.index,
            directory_bytes(db_dir),
        )
        peers = {WS: Measure(size), WS1: Measure(size), SQL: Measure(size)}
        for rep in range(config.restore_reps):
            progress(f"3. restore of {size:,} objects: run {rep + 1}/{config.restore_reps}")
            for peer in rotated((WS, WS1, SQL), rep):
                gc.collect()
                if peer == WS:
                    peers[WS].times.append(await ws_restore(store_dir, size))
                elif peer == WS1:
                    peers[WS1].times.append(await ws_restore(v1_dir, size))
                else:
                    peers[SQL].times.append(sqlite_restore(db, size))
                gc.collect()
    finally:
        shutil.rmtree(store_dir)
        shutil.rmtree(v1_dir)
        shutil.rmtree(db_dir)
    label = f"3. restore {size_label(size)} objects (objects/s)"
    return Row(label, peers), info


# -- section 4: commit latency while compacting ------------------------------------------------


@attrs.define
class LatencyRun:
    """One run of section 4: each commit's wall latency, and the background jobs (compactions
    or VACUUM INTOs, as perf_counter intervals) that ran during it."""

    latencies: list[float]
    writer: tuple[float, float]  # when the writer started and finished
    jobs: list[tuple[float, float]] = attrs.Factory(list)

    def percentile(self, q: float) -> float:
        """The nearest-rank percentile: the smallest latency >= ``q`` of all of them."""
        ordered = sorted(self.latencies)
        return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]

    def p50(self) -> float:
        return self.percentile(0.50)

    def p99(self) -> float:
        return self.percentile(0.99)

    def max(self) -> float:
        return max(self.latencies)

    def job_seconds(self) -> list[float]:
        return [end - start for start, end in self.jobs]

    def coverage(self) -> float:
        """The share of the writer's time during which a background job was running."""
        first, last = self.writer
        covered = sum(max(0.0, min(end, last) - max(start, first)) for start, end in self.jobs)
        return covered / (last - first)

    def to_json(self) -> dict[str, Any]:
        return {
            "commits": len(self.latencies),
            "p50_seconds": self.p50(),
            "p99_seconds": self.p99(),
            "max_seconds": self.max(),
            "mean_seconds": statistics.fmean(self.latencies),
            "writer_seconds": self.writer[1] - self.writer[0],
            "background_job_seconds": self.job_seconds(),
            "background_coverage": self.coverage() if self.jobs else 0.0,
        }


@attrs.define
class LatencyRow:
    """One variant of section 4 and its runs; the run with the lowest p99 represents it."""

    key: str
    label: str
    peer: str
    job: str | None  # what runs back to back in the background (None: nothing)
    runs: list[LatencyRun] = attrs.Factory(list)

    def best(self) -> LatencyRun:
        return min(self.runs, key=LatencyRun.p99)

    def to_json(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "background_job": self.job,
            "best_run": self.runs.index(self.best()),
            "runs": [run.to_json() for run in self.runs],
        }


@attrs.define
class CompactionResult:
    """What section 4 built and measured: rows for watchstore idle and compacting, then sqlite
    idle and with VACUUM INTO."""

    size: int
    commits: int
    reps: int
    build_seconds: float
    snapshot_bytes: int  # the newest segment after a compacting run: a snapshot + a short tail
    sqlite_bytes: int
    rows: list[LatencyRow]

    def row(self, key: str) -> LatencyRow:
        return next(r for r in self.rows if r.key == key)

    def ratio(self, peer: str) -> float:
        """p99 with the background job / p99 without it, each variant's best run."""
        idle, busy = (r for r in self.rows if r.peer == peer)
        return busy.best().p99() / idle.best().p99()

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "commits_per_run": self.commits,
            "reps": self.reps,
            "build_seconds": self.build_seconds,
            "snapshot_bytes": self.snapshot_bytes,
            "sqlite_bytes": self.sqlite_bytes,
            "rows": {row.label: row.to_json() for row in self.rows},
            "p99_ratio": {WS: self.ratio(WS), SQL: self.ratio(SQL)},
        }


async def ws_latency_run(store: ws.Store, objs: Sequence[Obj], compacting: bool) -> LatencyRun:
    """One writer upserting each of ``objs`` in a commit of its own, timing each commit; with
    ``compacting``, ``store.compact()`` runs back to back in another task until the writer is
    done (the compaction under way then finishes, untimed)."""
    perf = time.perf_counter
    latencies: list[float] = []
    jobs: list[tuple[float, float]] = []
    span: list[float] = []
    writing = True

    async def writer() -> None:
        nonlocal writing
        update = store.update
        span.append(perf())
        try:
            for obj in objs:
                start = perf()
                await update(lambda tx: tx.upsert(obj))
                latencies.append(perf() - start)
        finally:
            span.append(perf())
            writing = False

    async def compactor() -> None:
        while writing:
            start = perf()
            await store.compact()
            jobs.append((start, perf()))

    gc.collect()
    async with anyio.create_task_group() as nursery:
        nursery.start_soon(writer)
        if compacting:
            nursery.start_soon(compactor)
    return LatencyRun(latencies, (span[0], span[1]), jobs)


def sqlite_latency_run(path: Path, rows: Sequence[SqlRow], vacuuming: bool) -> LatencyRun:
    """The same on sqlite WAL+FULL: an upsert + ``commit()`` per row, each timed; with
    ``vacuuming``, a thread runs ``VACUUM INTO`` a copy + an fsync of the copy back to back
    on a connection of its own until the writer is done."""
    perf = time.perf_counter
    latencies: list[float] = []
    jobs: list[tuple[float, float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    copy = path.with_name("copy.db")

    def vacuum() -> None:
        try:
            conn = sqlite3.connect(path)
            try:
                while not stop.is_set():
                    start = perf()
                    conn.execute("VACUUM INTO ?", (str(copy),))
                    fd = os.open(copy, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    jobs.append((start, perf()))
                    copy.unlink()
            finally:
                conn.close()
        except BaseException as exc:
            errors.append(exc)

    conn = connect_sqlite(path, "FULL")
    execute, commit = conn.cursor().execute, conn.commit
    thread = threading.Thread(target=vacuum, name="vacuum-into")
    gc.collect()
    if vacuuming:
        thread.start()
    first = perf()
    try:
        for row in rows:
            start = perf()
            execute(SQL_UPSERT, row)
            commit()
            latencies.append(perf() - start)
    finally:
        last = perf()
        stop.set()
        if vacuuming:
            thread.join()
        conn.close()
    if errors:
        raise errors[0]
    return LatencyRun(latencies, (first, last), jobs)


async def section_compaction(config: Config, base: Path) -> CompactionResult:
    size, commits = config.compact_size, config.compact_commits
    store_dir = Path(tempfile.mkdtemp(prefix="ws-compact-", dir=base))
    db_dir = Path(tempfile.mkdtemp(prefix="sqlite-compact-", dir=base))
    db = db_dir / "objs.db"
    objs = list(make_objects(size, seed=4))
    chosen = random.Random(5).choices(objs, k=commits)  # existing objects, in random order
    rows = sql_rows(chosen)
    table = [
        LatencyRow("ws-idle", "watchstore always, nothing in the background", WS, None),
        LatencyRow("ws-compact", "watchstore always, store.compact() back to back", WS, "compact"),
        LatencyRow("sqlite-idle", "sqlite3 WAL+FULL, nothing in the background", SQL, None),
        LatencyRow("sqlite-vacuum", "sqlite3 WAL+FULL, VACUUM INTO back to back", SQL, "vacuum"),
    ]
    snapshot_bytes = 0
    try:
        progress(f"4. building a durable store of {size:,} objects with store.batch (untimed)")
        start = time.perf_counter()
        async with ws.open_store(
            SCHEMA, path=store_dir, durability="always", compact_bytes=NEVER_COMPACT
        ) as store:

            async def load(b: ws.Batch) -> None:
                for obj in objs:
                    await b.update(lambda tx: tx.create(obj))

            await store.batch(load)
            build_seconds = time.perf_counter() - start
            progress(f"4. building the sqlite file of {size:,} rows (untimed)")
            build_sqlite(db, size, seed=4)
            sqlite_bytes = db.stat().st_size
            for rep in range(config.compact_reps):
                progress(
                    f"4. {commits:,} timed upserts per variant: run {rep + 1}/{config.compact_reps}"
                )
                for row in rotated(table, rep):
                    if row.peer == WS:
                        run = await ws_latency_run(store, chosen, compacting=row.job is not None)
                        if row.job is not None:
                            snapshot_bytes = newest_segment_bytes(store_dir)
                    else:
                        run = sqlite_latency_run(db, rows, vacuuming=row.job is not None)
                    row.runs.append(run)
            assert store.view(lambda tx: tx.count(Obj)) == size
        del store
    finally:
        shutil.rmtree(store_dir)
        shutil.rmtree(db_dir)
    return CompactionResult(
        size, commits, config.compact_reps, build_seconds, snapshot_bytes, sqlite_bytes, table
    )


# -- driver ------------------------------------------------------------------------------------


@attrs.define
class Config:
    n: int
    writers: int
    restore_size: int
    compact_size: int
    compact_commits: int
    quick: bool
    reps: int
    restore_reps: int
    compact_reps: int
    base: Path  # where the temporary directory is made
    json_path: str | None
    backend: str = "trio"


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_base() -> Path:
    """The default temporary directory if it is on the repository's filesystem, else the
    repository itself (a tmpfs /tmp would measure memory, not the disk)."""
    tmp = Path(tempfile.gettempdir())
    root = repo_root()
    return tmp if tmp.stat().st_dev == root.stat().st_dev else root


def filesystem_of(path: Path) -> dict[str, str]:
    """The mount holding ``path`` (Linux: from /proc/mounts; 'unknown' elsewhere)."""
    real = os.path.realpath(path)
    best = {"mount": "unknown", "type": "unknown", "device": "unknown"}
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    best_len = -1
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount, fstype = fields[0], fields[1].replace("\\040", " "), fields[2]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > best_len:
            best, best_len = {"mount": mount, "type": fstype, "device": device}, len(mount)
    return best


def source_state() -> str:
    """The repository's commit, and whether watchstore/ differs from it (others edit it)."""
    root = repo_root()

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "watchstore")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return f"{head}{' + uncommitted changes in watchstore/' if dirty else ''}"


def environment(config: Config, workdir: Path) -> dict[str, Any]:
    return {
        **platform_and_versions(cpus=True, sqlite=True, backend=config.backend),
        "source": source_state(),
        "workdir": str(workdir),
        "filesystem": filesystem_of(workdir),
        "same_filesystem_as_repo": workdir.stat().st_dev == repo_root().stat().st_dev,
        "n": config.n,
        "writers": config.writers,
        "restore_size": config.restore_size,
        "compact_size": config.compact_size,
        "compact_commits": config.compact_commits,
        "quick": config.quick,
        "reps": config.reps,
        "restore_reps": config.restore_reps,
        "compact_reps": config.compact_reps,
        "batch_max_changes": ws.MAX_BATCH_CHANGES,
        **gc_settings(),
    }


def targets(table: Sequence[Row], compaction: CompactionResult) -> dict[str, dict[str, Any]]:
    one, many, restore = table[0].ratio(), table[1].ratio(), table[4].rate()
    restore_ratio = table[4].ratio()
    ratios = [table[0].vs_format_1(), table[1].vs_format_1()]
    codec = min(r for r in ratios if r is not None) if None not in ratios else None
    stall = compaction.ratio(WS)
    return {
        "a_one_writer_vs_sqlite": {
            "value": one,
            "target": f">= {TARGET_ONE_WRITER}x sqlite WAL+FULL, 1 writer",
            "pass": one is not None and one >= TARGET_ONE_WRITER,
        },
        "b_many_writers_vs_sqlite_one": {
            "value": many,
            "target": f">= {TARGET_MANY_WRITERS:.0f}x sqlite WAL+FULL, 1 writer",
            "pass": many is not None and many >= TARGET_MANY_WRITERS,
        },
        "c_restore_objects_per_second": {
            "value": restore,
            "target": f">= {TARGET_RESTORE:,} objects/s",
            "pass": restore >= TARGET_RESTORE,
        },
        "d_compaction_commit_latency": {
            "value": stall,
            "target": f"p99 commit latency while compacting <= {TARGET_COMPACTION}x p99 without",
            "pass": stall <= TARGET_COMPACTION,
            "sqlite_vacuum_into_ratio": compaction.ratio(SQL),
        },
        "e_restore_vs_sqlite_objects": {
            "value": restore_ratio,
            "target": f">= {TARGET_RESTORE_VS_SQLITE}x sqlite reading the rows into the objects",
            "pass": restore_ratio is not None and restore_ratio >= TARGET_RESTORE_VS_SQLITE,
        },
        "f_writers_vs_format_1_codec": {
            "value": codec,
            "one_writer": table[0].vs_format_1(),
            "many_writers": table[1].vs_format_1(),
            "target": f">= {TARGET_VS_FORMAT_1}x the format 1 codec, 1 and many writers",
            "pass": codec is not None and codec >= TARGET_VS_FORMAT_1,
        },
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def jobs_cell(row: LatencyRow, run: LatencyRun) -> str:
    """What ran in the background of ``run``: how many jobs, how long, how much they covered."""
    if row.job is None:
        return "-"
    seconds = run.job_seconds()
    if not seconds:
        return "none finished"
    if row.job == "compact":
        name = "compaction" if len(seconds) == 1 else "compactions"
    else:
        name = "VACUUM INTO + fsync"
    return (
        f"{len(seconds)} {name}, {fmt_seconds(min(seconds))} to {fmt_seconds(max(seconds))} "
        f"each, running {run.coverage():.0%} of the writer's time"
    )


def render_compaction(result: CompactionResult) -> list[str]:
    headers = ("4. commit latency, 1 writer", "p50", "p99", "max", "p99 vs idle", "background")
    cells = []
    for row in result.rows:
        run = row.best()
        ratio = fmt_ratio(result.ratio(row.peer)) if row.job is not None else "-"
        cells.append(
            (row.label, ms(run.p50()), ms(run.p99()), ms(run.max()), ratio, jobs_cell(row, run))
        )
    return grid(headers, cells, last_left=True)


def render(
    env: dict[str, Any],
    table: Sequence[Row],
    info: RestoreInfo,
    disk: dict[str, int],
    compaction: CompactionResult,
) -> str:
    headers = ("workload", *COLUMNS, "ws vs sqlite", "vs format 1")
    cells = [
        (
            row.label,
            *(row.cell(p) for p in COLUMNS),
            fmt_ratio(row.ratio()),
            fmt_ratio(row.vs_format_1()),
        )
        for row in table
    ]
    fs = env["filesystem"]
    one, many = table[0], table[1]
    raw_latency = table[0].peers[RAW].seconds()
    results = targets(table, compaction)
    a, b, c, d, e, f = (
        results["a_one_writer_vs_sqlite"],
        results["b_many_writers_vs_sqlite_one"],
        results["c_restore_objects_per_second"],
        results["d_compaction_commit_latency"],
        results["e_restore_vs_sqlite_objects"],
        results["f_writers_vs_format_1_codec"],
    )
    replayed = info.commits - info.snapshot_version
    ws_idle, ws_busy = compaction.row("ws-idle").best(), compaction.row("ws-compact").best()
    out = [
        f"watchstore durability benchmark: N = {env['n']:,} commits per run, "
        f"{env['writers']} writers in row 2, restore of {env['restore_size']:,} objects, "
        f"{env['compact_commits']:,} timed commits on {env['compact_size']:,} objects in "
        f"section 4{' (quick)' if env['quick'] else ''}",
        f"{versions_line(env)} (source {env['source']})",
        platform_line(env),
        f"Files in {env['workdir']} on {fs['type']} {fs['device']} (mounted at {fs['mount']}; "
        f"{'same' if env['same_filesystem_as_repo'] else 'NOT the same'} filesystem as the "
        "repository)",
        f"WALL time. Rows 1-2: best of {env['reps']} interleaved runs; row 3: best of "
        f"{env['restore_reps']}. Rates: higher is better. 'ws vs sqlite' is a speed ratio "
        "(>1.00x: watchstore is faster); row 2 compares with sqlite's 1-writer rate of row 1.",
        "",
        *grid(headers, cells),
        "",
        f"Section 4: latency of each commit (single-object upserts of existing objects) on a "
        f"store of {compaction.size:,} objects and on a sqlite file of the same rows; per "
        f"variant, the run with the lowest p99 (nearest rank) of {compaction.reps} interleaved "
        "run(s). Lower is better; 'p99 vs idle' divides by the same peer's p99 with "
        "nothing in the background.",
        "",
        *render_compaction(compaction),
        "",
        "Notes:",
        f"- 1: per commit, watchstore {fmt_seconds(one.peers[WS].seconds())}, sqlite "
        f"{fmt_seconds(one.peers[SQL].seconds())}, a bare write+fdatasync "
        f"{fmt_seconds(raw_latency)}, the floor of a writer that waits for its own fsync "
        f"and grows its file (~{1 / raw_latency:,.0f}/s; watchstore writes over zeros it "
        "wrote ahead, with no size change to journal). Bytes written per commit: "
        "watchstore's log "
        f"{disk['ws-always'] / env['n']:.0f}, the floor's records {disk['raw'] / env['n']:.0f}"
        " (the object's JSON + framing).",
        f"- 2: {env['writers']} writers reach {many.rate():,.0f}/s, "
        f"{many.rate() / one.rate():.2f}x one writer: "
        + (
            "commits are not grouped, each waits for an fsync of its own."
            if many.rate() < 2 * one.rate()
            else "several commits share an fsync (group commit)."
        ),
        "- 2+: 'interval' fsyncs at most every 50 ms, 'none' never (each commit is still "
        "written, in the event loop's thread as a lone commit); sqlite WAL+NORMAL fsyncs only at "
        "checkpoints, WAL+OFF never.",
        f"- 3: built with store.batch in {info.build_seconds:.1f} s: {info.commits:,} commits "
        f"of up to {env['batch_max_changes']} creates (compacting when due, as by default); "
        f"the store directory held {info.log_bytes / 1e6:,.1f} MB in {info.log_segments} "
        f"segment file(s) (sqlite file {info.sqlite_bytes / 1e6:,.1f} MB). A restore reads "
        + (
            f"the newest segment: its snapshot (at commit {info.snapshot_version:,}) and the "
            f"{replayed:,} commits after it "
            if info.snapshot_version
            else f"one empty snapshot and replays all {replayed:,} commits "
        )
        + "(read, verify, decode, apply with indexes). Best times: watchstore "
        f"{table[4].peers[WS].seconds() * info.size:.2f} s, with the format 1 codec (a "
        "store of the same commits that never compacted: every commit replayed) "
        f"{table[4].peers[WS1].seconds() * info.size:.2f} s, sqlite "
        f"{table[4].peers[SQL].seconds() * info.size:.2f} s: connect, SELECT * of a table of "
        "the object's fields and meta, and Obj(id, service_id, node_id, Meta(Version(v), "
        "created, updated)) of each row, as a program would.",
        "- 'ws format 1': the same store appending to a format 1 segment (created empty as an "
        "older watchstore did): the JSON codec before msgspec, in the same run.",
        f"- 4: the store was built with store.batch in {compaction.build_seconds:.1f} s, "
        "durability 'always' and a compact_bytes it never reaches; a snapshot segment holds "
        f"{compaction.snapshot_bytes / 1e6:,.1f} MB (sqlite file "
        f"{compaction.sqlite_bytes / 1e6:,.1f} MB). store.compact() pins the state (O(1)), "
        "forks: the child encodes and writes the new segment from its copy-on-write image "
        "while this process goes on, then the group committer switches segments between two "
        "batches. Compactions "
        "start only while the writer runs (the one under way when it ends finishes untimed). "
        "sqlite's background job is VACUUM INTO a new file plus an fsync of it, on its own "
        "connection in a thread (sqlite3 releases the GIL while sqlite works); its writer "
        "blocks the event loop's thread, as in rows 1-3. Mean latency: watchstore idle "
        f"{ms(statistics.fmean(ws_idle.latencies))}, compacting "
        f"{ms(statistics.fmean(ws_busy.latencies))}.",
        "",
        "Targets:",
        f"  {verdict(e['pass'])}  (e) restore >= {TARGET_RESTORE_VS_SQLITE}x sqlite reading "
        f"the rows into the same objects: {e['value']:.2f}x",
        f"  {verdict(f['pass'])}  (f) 1 and {env['writers']} durable writers >= "
        f"{TARGET_VS_FORMAT_1}x with the format 1 codec: {f['one_writer']:.2f}x and "
        f"{f['many_writers']:.2f}x",
        f"  {verdict(a['pass'])}  (a) 1 durable writer >= {TARGET_ONE_WRITER}x sqlite "
        f"WAL+FULL: {a['value']:.2f}x",
        f"  {verdict(b['pass'])}  (b) {env['writers']} durable writers >= "
        f"{TARGET_MANY_WRITERS:.0f}x sqlite's 1 writer: {b['value']:.2f}x",
        f"  {verdict(c['pass'])}  (c) restore >= {TARGET_RESTORE:,} objects/s: "
        f"{c['value']:,.0f} objects/s",
        f"  {verdict(d['pass'])}  (d) p99 commit latency while compacting <= "
        f"{TARGET_COMPACTION:.0f}x p99 without: {d['value']:.2f}x ({ms(ws_busy.p99())} vs "
        f"{ms(ws_idle.p99())}; sqlite with VACUUM INTO: {d['sqlite_vacuum_into_ratio']:.2f}x)",
    ]
    return "\n".join(out)


async def run(config: Config) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="watchstore-durable-", dir=config.base))
    progress(f"working in {workdir}")
    try:
        gc.collect()
        table, disk = await section_commits(config, workdir)
        gc.collect()
        restore_row, info = await section_restore(config, workdir)
        table.append(restore_row)
        gc.collect()
        compaction = await section_compaction(config, workdir)
        env = environment(config, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(render(env, table, info, disk, compaction))
    return {
        "environment": env,
        "bytes_on_disk_per_run": disk,
        "table": {row.label: row.to_json() for row in table},
        "restore": attrs.asdict(info),
        "compaction": compaction.to_json(),
        "targets": targets(table, compaction),
    }


def parse_args(argv: Sequence[str]) -> Config:
    parser = argument_parser(
        "durable",
        "watchstore's durable commits (1 and many writers), restore and commit "
        "latency while compacting vs sqlite3 on a file (WAL).",
    )
    parser.add_argument(
        "--n", type=positive, default=None, help="commits per run (default 2000; 200 with --quick)"
    )
    parser.add_argument(
        "--writers",
        type=positive,
        default=None,
        help="concurrent writers of row 2 (default 64; 8 with --quick)",
    )
    parser.add_argument(
        "--restore-size",
        type=positive,
        default=None,
        help="objects in the restored store (default 1000000; 20000 with --quick)",
    )
    parser.add_argument(
        "--compact-size",
        type=positive,
        default=None,
        help="objects in the store of section 4 (default 200000; 10000 with --quick)",
    )
    parser.add_argument(
        "--compact-commits",
        type=positive,
        default=None,
        help="timed commits per run of section 4 (default 2000; 300 with --quick)",
    )
    parser.add_argument(
        "--reps", type=positive, default=None, help="runs of rows 1-2, the best is kept (default 5)"
    )
    parser.add_argument(
        "--restore-reps",
        type=positive,
        default=None,
        help="reopens of row 3, the best is kept (default 3)",
    )
    parser.add_argument(
        "--compact-reps",
        type=positive,
        default=None,
        help="runs of each variant of section 4, the lowest p99 is kept (default 3; 1 with "
        "--quick)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to make the temporary directory (default: the system's temporary "
        "directory if it is on the repository's filesystem, else the repository)",
    )
    add_backend(parser)
    add_quick_and_json(parser)
    args = parser.parse_args(list(argv))
    quick: bool = args.quick

    return Config(
        n=sized(args.n, 2_000, 200, quick=quick),
        writers=sized(args.writers, 64, 8, quick=quick),
        restore_size=sized(args.restore_size, 1_000_000, 20_000, quick=quick),
        compact_size=sized(args.compact_size, 200_000, 10_000, quick=quick),
        compact_commits=sized(args.compact_commits, 2_000, 300, quick=quick),
        quick=quick,
        reps=sized(args.reps, 5, 3, quick=quick),
        restore_reps=sized(args.restore_reps, 3, 2, quick=quick),
        compact_reps=sized(args.compact_reps, 3, 1, quick=quick),
        base=args.dir if args.dir is not None else default_base(),
        json_path=args.json,
        backend=args.backend,
    )


def main(argv: Sequence[str]) -> int:
    """Run the durability benchmark; print the table; optionally write the raw numbers."""
    config = parse_args(argv)
    data = run_on(config.backend, run, config)
    write_json(config.json_path, data, progress)
    return 0
