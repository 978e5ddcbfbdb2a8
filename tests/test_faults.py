"""Faults of the disk never lose an acknowledged commit nor brick a store (issue 16).

Each test runs a scenario (an ``async`` function ``scenario_*`` below) in a child process
with the fault shim of ``tests/faultshim.py`` preloaded, or on a small tmpfs that really
fills up; the scenario opens a store, commits, arms the fault at the moment it matters and
reports what happened. The test then checks the reports (each error names its cause) and
reopens the store in this process, without the shim and without salvage: it holds every
acknowledged commit and none of the commits that raised.

A scenario's commit ``k`` upserts the task ``t{k:04d}`` with slot ``k`` (``commit`` below),
so the reopened store shows exactly which commits made it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
import pytest

import watchstore as ws
from tests.faultshim import (
    ROOT,
    Run,
    build_shim,
    describe,
    faults,
    fifo,
    fill,
    finished_run,
    free_bytes,
    mounted_tmpfs,
    open_gate,
    read_line,
    read_only_view,
    report,
    require,
    run_scenario,
    scenario_env,
    started_scenario,
    wait_closed,
)
from tests.schema import SCHEMA, Task

if TYPE_CHECKING:
    from collections.abc import Iterator

EIO: Final = os.strerror(errno.EIO)
""""Input/output error": what an error caused by EIO must name."""
ENOSPC: Final = os.strerror(errno.ENOSPC)
""""No space left on device"."""
NEVER: Final = 1 << 40
"""``compact_bytes`` for a store that never compacts by itself."""
WRITES: Final = ("write", "pwrite")
"""The calls a file's bytes may be written with: a rule on writes is armed on both."""
WAIT: Final = 20.0
"""Seconds any one wait of a test may take before it counts as a hang."""


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault shim, compiled once per session."""
    return build_shim(tmp_path_factory.mktemp("faultshim"))


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted after the test."""
    with mounted_tmpfs(tmp_path / "fs", "2m") as directory:
        yield directory


# -- what scenarios share --------------------------------------------------------------------


def task(k: int, size: int = 64) -> Task:
    """The object commit ``k`` writes, with about ``size`` bytes of payload."""
    return Task(f"t{k:04d}", "svc-" + "x" * size, slot=k)


async def commit(store: ws.Store, k: int, size: int = 64, **extra: Any) -> bool:
    """Commit ``k``; report it as ``acked`` (with the store's version) or ``failed`` (with
    the error), along with ``extra``; return whether it was acknowledged."""
    try:
        await store.update(lambda tx: tx.upsert(task(k, size)))
    except ws.StoreError as exc:
        report("failed", k=k, error=describe(exc), **extra)
        return False
    report("acked", k=k, version=store.version.index, **extra)
    return True


async def next_line(fd: int, seconds: float = WAIT) -> str | None:
    """``read_line`` in a worker thread (abandoned if the scenario is cancelled)."""
    return await anyio.to_thread.run_sync(read_line, fd, seconds, abandon_on_cancel=True)


def mode_of(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def files_of(directory: Path) -> dict[str, int]:
    """The names of the files in ``directory`` and their permission bits."""
    return {p.name: mode_of(p) for p in sorted(directory.iterdir())}


# -- what tests share ------------------------------------------------------------------------


@attrs.frozen
class Reopened:
    """A store as this process finds it on opening: its version and every task's slot."""

    version: int
    slots: dict[str, int]


def reopen(directory: Path, backend: str) -> Reopened:
    """Open the store in ``directory`` here, on AnyIO's ``backend`` (no shim, no salvage),
    and read it."""

    async def read() -> Reopened:
        with anyio.fail_after(WAIT):
            async with ws.open_store(SCHEMA, path=directory) as store:
                assert store.recovery is not None
                assert store.recovery.salvage is None
                slots = store.view(lambda tx: {t.id: t.slot for t in tx.all(Task)})
                return Reopened(store.version.index, slots)

    return anyio.run(read, backend=backend)


def check_acknowledged(directory: Path, run: Run, backend: str) -> Reopened:
    """Reopen the store (on AnyIO's ``backend``): it opens without salvage at the version the
    scenario ended at (its ``final`` report), with every acknowledged commit and none of
    those that raised."""
    state = reopen(directory, backend)
    acked = {r["k"] for r in run.events("acked")}
    failed = {r["k"] for r in run.events("failed")}
    lost = sorted(k for k in acked if state.slots.get(task(k).id) != k)
    assert not lost, f"acknowledged commits lost: {lost}"
    back = sorted(k for k in failed if task(k).id in state.slots)
    assert not back, f"commits that raised ProposalFailed came back: {back}"
    final = run.events("final")[-1]["version"]
    assert state.version == final, f"reopened at version {state.version}, not {final}"
    return state


def assert_error(error: dict[str, Any], kind: str, cause: str) -> None:
    """``error`` (a reported exception) is a ``kind`` (a StoreError) naming ``cause``."""
    what = f"{error['type']}: {error['message']}"
    assert kind in error["classes"], f"expected a {kind}, got {what}"
    assert "StoreError" in error["classes"], f"not a StoreError: {what}"
    assert cause in error["message"], f"the error does not name {cause!r}: {what}"


def acked(run: Run) -> list[int]:
    """The commits a scenario reported acknowledged, in order."""
    return [r["k"] for r in run.events("acked")]


def failed(run: Run) -> list[dict[str, Any]]:
    """The errors of the commits a scenario reported failed, in order."""
    return [r["error"] for r in run.events("failed")]


# -- the shim itself -------------------------------------------------------------------------


async def scenario_shim_smoke(directory: str) -> None:
    """Arm each kind of rule and report what the calls made through Python's os did."""
    f = faults()
    victim, other = Path(directory, "victim"), Path(directory, "other")
    fd = os.open(victim, os.O_RDWR | os.O_CREAT, 0o600)
    other_fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o600)
    results: dict[str, Any] = {}

    def attempt(name: str, call: Any) -> None:
        try:
            results[name] = call()
        except OSError as exc:
            results[name] = os.strerror(exc.errno or 0)

    f.fail("write", "victim", errno.EIO, nth=2)
    attempt("write 1", lambda: os.write(fd, b"abcd"))
    attempt("write other", lambda: os.write(other_fd, b"abcd"))  # not counted
    attempt("write 2", lambda: os.write(fd, b"abcd"))
    attempt("write 3", lambda: os.write(fd, b"abcd"))
    f.clear()
    rule = f.short("write", "victim", every=True)
    attempt("short write", lambda: os.write(fd, b"abcd"))
    attempt("short write again", lambda: os.write(fd, b"abcd"))
    results["short hits"] = f.hits(rule)
    f.clear()
    f.fail("pwrite", "victim", errno.ENOSPC)
    attempt("pwrite", lambda: os.pwrite(fd, b"abcd", 0))
    f.fail("fsync", "victim", errno.EIO)
    attempt("fsync", lambda: os.fsync(fd))
    f.fail("fdatasync", "victim", errno.EIO)
    attempt("fdatasync", lambda: os.fdatasync(fd))
    f.fail("ftruncate", "victim", errno.EIO)
    attempt("ftruncate", lambda: os.ftruncate(fd, 0))
    f.fail("rename", "victim", errno.EIO)
    attempt("replace", lambda: os.replace(victim, Path(directory, "renamed")))
    dir_fd = os.open(directory, os.O_RDONLY)
    f.fail("fsync", f"{directory}$", errno.EIO)
    attempt("fsync other", lambda: os.fsync(other_fd))  # a suffix filter: not this one
    attempt("fsync directory", lambda: os.fsync(dir_fd))
    f.clear()
    attempt("write cleared", lambda: os.write(fd, b"abcd"))
    notified = fifo(Path(directory, "notify"))
    f.notify("fsync", "other", str(Path(directory, "notify")))
    os.fsync(other_fd)
    results["notified"] = await next_line(notified, 5) == str(os.getpid())
    os.close(notified)
    report("results", results=results)


def test_the_shim_fails_shortens_and_reports_the_calls_it_is_armed_for(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """The shim really makes os.write, os.pwrite, os.fsync, os.fdatasync, os.ftruncate and
    os.replace fail, write short or notify, on the Nth call on a matching path only (so no
    other test passes because the shim does nothing)."""
    run = run_scenario(scenario_shim_smoke, str(tmp_path), shim=shim, backend=anyio_backend)
    run.check_finished()
    assert run.one("results")["results"] == {
        "write 1": 4,
        "write other": 4,
        "write 2": EIO,
        "write 3": 4,
        "short write": 2,
        "short write again": 2,
        "short hits": 2,
        "pwrite": ENOSPC,
        "fsync": EIO,
        "fdatasync": EIO,
        "ftruncate": EIO,
        "replace": EIO,
        "fsync other": None,
        "fsync directory": EIO,
        "write cleared": 4,
        "notified": True,
    }


# -- 1 and ENOSPC: a compaction on a nearly full disk ------------------------------------------


async def scenario_compaction_on_a_nearly_full_disk(fs: str, in_child: bool) -> None:
    """768 KiB of state, 256 KiB free: compact (keeping one epoch) and commit; then free
    the space, reopen in this process, compact and commit."""
    root = Path(fs)
    directory = root / "store"

    def opened() -> Any:
        return ws.open_store(
            SCHEMA, path=directory, keep_epochs=1, compact_in_child=in_child, compact_bytes=NEVER
        )

    async with opened() as store:
        for k in range(12):
            await commit(store, k, size=64 << 10)
        filler = fill(root, leave=256 << 10)
        try:
            version = await store.compact()
            report("compacted", version=version.index)
        except ws.StoreError as exc:
            report("compaction failed", error=describe(exc))
        await commit(store, 12)
        report("final", version=store.version.index)
    filler.unlink()
    async with opened() as store:
        report("reopened", version=store.version.index)
        version = await store.compact()
        report("compacted after freeing space", version=version.index)
        await commit(store, 13)
        report("final", version=store.version.index)


@pytest.mark.parametrize("in_child", [True, False], ids=["forked", "inline"])
def test_a_compaction_that_finds_the_disk_full_fails_and_the_store_goes_on(
    shim: Path, tmp_path: Path, in_child: bool, anyio_backend: str
) -> None:
    """A compaction whose snapshot does not fit raises CompactionFailed naming ENOSPC (no
    truncated epoch becomes current); the store stays writable, reopens intact even with
    keep_epochs=1, and compacts once there is room."""
    with mounted_tmpfs(tmp_path / "fs", "3m") as fs:
        run = run_scenario(
            scenario_compaction_on_a_nearly_full_disk,
            str(fs),
            in_child,
            shim=shim,
            backend=anyio_backend,
        )
        assert not run.events("compacted"), (
            f"compact() returned {run.events('compacted')} though the snapshot did not fit"
        )
        assert_error(run.one("compaction failed")["error"], "CompactionFailed", ENOSPC)
        run.check_finished()
        assert acked(run) == list(range(14)), f"the store refused commits: {failed(run)}"
        assert run.one("reopened")["version"] == 13
        assert run.one("compacted after freeing space")["version"] == 13
        check_acknowledged(fs / "store", run, anyio_backend)


# -- 2: a compaction reports a failure of any of its steps -------------------------------------


async def scenario_compaction_with_a_fault(directory: str, op: str, path: str) -> None:
    """Commit, compact with ``op`` failing once with EIO on ``path``, commit; then reopen in
    this process, compact and commit."""
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=NEVER) as store:
        for k in range(5):
            await commit(store, k)
        f = faults()
        for call in WRITES if op == "write" else (op,):
            f.fail(call, path, errno.EIO)
        try:
            version = await store.compact()
            report("compacted", version=version.index)
        except ws.StoreError as exc:
            report("compaction failed", error=describe(exc))
        f.clear()
        for k in range(5, 10):
            await commit(store, k)
        report("final", version=store.version.index)
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=NEVER) as store:
        report("reopened", version=store.version.index)
        version = await store.compact()
        report("compacted again", version=version.index)
        await commit(store, 10)
        report("final", version=store.version.index)


@pytest.mark.parametrize(
    ("op", "path"),
    [
        ("write", ".tmp"),
        ("fsync", ".tmp"),
        ("rename", ".wslog"),
        ("fsync", "/store$"),
    ],
    ids=["snapshot-write", "snapshot-fsync", "rename", "directory-fsync"],
)
def test_a_compaction_whose_step_fails_raises_compaction_failed_naming_the_cause(
    shim: Path, tmp_path: Path, op: str, path: str, anyio_backend: str
) -> None:
    """EIO on the snapshot's write or fsync (in the compaction child), on the rename or on
    the directory's fsync makes compact() raise CompactionFailed naming "Input/output error"
    (not a wait status, not success); the store stays writable with its current epoch,
    loses nothing on reopen, and compacts again."""
    directory = tmp_path / "store"
    run = run_scenario(
        scenario_compaction_with_a_fault, str(directory), op, path, shim=shim, backend=anyio_backend
    )
    assert not run.events("compacted"), f"compact() returned though its {op} failed"
    error = run.one("compaction failed")["error"]
    assert_error(error, "CompactionFailed", EIO)
    assert "wait status" not in error["message"], error["message"]
    run.check_finished()
    assert acked(run) == list(range(11)), f"the store refused commits: {failed(run)}"
    assert run.one("reopened")["version"] == 10
    assert run.one("compacted again")["version"] == 10
    check_acknowledged(directory, run, anyio_backend)


async def scenario_compact_and_look(directory: str) -> None:
    """Commit, compact, and report the files and how often the directory was fsynced by the
    time compact() returned."""
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=NEVER) as store:
        for k in range(5):
            await commit(store, k)
        f = faults()
        rules = [f.notify(op, f"{directory}$") for op in ("fsync", "fdatasync")]
        version = await store.compact()
        fsyncs = sum(f.hits(rule) for rule in rules)
        report("compacted", version=version.index, files=files_of(Path(directory)), fsyncs=fsyncs)
        await commit(store, 5)
        report("final", version=store.version.index)


def test_compact_returns_with_the_new_epoch_renamed_into_place_and_the_directory_fsynced(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """When compact() returns, the new segment is in place under its final name, no
    temporary file of it is left, and the directory has been fsynced."""
    directory = tmp_path.resolve() / "store"  # as /proc/self/fd names it
    run = run_scenario(scenario_compact_and_look, str(directory), shim=shim, backend=anyio_backend)
    run.check_finished()
    compacted = run.one("compacted")
    assert compacted["version"] == 5
    assert "00000002.wslog" in compacted["files"], compacted["files"]
    assert not [name for name in compacted["files"] if "tmp" in name], compacted["files"]
    assert compacted["fsyncs"] >= 1, "compact() returned before the directory was fsynced"
    check_acknowledged(directory, run, anyio_backend)


# -- 3: the automatic compaction never tears the user's block down -----------------------------


async def scenario_explicit_compaction_while_the_automatic_one_runs(directory: str) -> None:
    """Hold the automatic compaction's child at its first snapshot write, call compact(),
    then let the child go on."""
    notify, gate = Path(directory).parent / "held", Path(directory).parent / "gate"
    held_read = fifo(notify, never_ends=True)
    os.mkfifo(gate)
    try:
        async with ws.open_store(SCHEMA, path=directory, compact_bytes=16 << 10) as store:
            f = faults()
            for op in WRITES:
                f.block(op, ".tmp", notify=str(notify), gate=str(gate), timeout=WAIT)
            for k in range(3):
                await commit(store, k, size=8 << 10)
            held = await next_line(held_read)
            report("automatic compaction held", pid=held, store_pid=os.getpid())
            outcome: dict[str, Any] = {}

            async def explicit() -> None:
                try:
                    outcome["version"] = (await store.compact()).index
                except ws.StoreError as exc:
                    outcome["error"] = describe(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(explicit)
                await anyio.wait_all_tasks_blocked()
                open_gate(gate)  # open until this process exits: later children pass too
            report("explicit compaction", **outcome)
            for k in range(3, 6):
                await commit(store, k)
            report("final", version=store.version.index)
    except Exception as exc:
        report("escaped", error=describe(exc))


def test_an_explicit_compaction_waits_for_the_automatic_one(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """compact() called while the automatic compaction runs waits for it and succeeds
    (never "a compaction is already running"); nothing escapes the user's block."""
    directory = tmp_path / "store"
    run = run_scenario(
        scenario_explicit_compaction_while_the_automatic_one_runs,
        str(directory),
        shim=shim,
        backend=anyio_backend,
    )
    run.check_finished()
    held = run.one("automatic compaction held")
    assert held["pid"] is not None, "no automatic compaction started"
    assert int(held["pid"]) != held["store_pid"], "the snapshot was written by the store's process"
    explicit = run.one("explicit compaction")
    assert "error" not in explicit, f"explicit compact() raised {explicit['error']}"
    assert not run.events("escaped"), f"escaped the block: {run.events('escaped')}"
    assert acked(run) == list(range(6))
    check_acknowledged(directory, run, anyio_backend)


class Warnings(logging.Handler):
    """Keeps the WARNING records of logger ``watchstore``; ``seen`` is set at the first."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[dict[str, Any]] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            {"level": record.levelname, "logger": record.name, "message": record.getMessage()}
        )
        self.seen.set()


async def scenario_automatic_compaction_on_a_full_disk(directory: str) -> None:
    """Every snapshot write fails with ENOSPC; commit past compact_bytes, wait for the
    warning, and go on committing and reading."""
    warnings = Warnings()
    logging.getLogger("watchstore").addHandler(warnings)
    try:
        async with ws.open_store(SCHEMA, path=directory, compact_bytes=16 << 10) as store:
            f = faults()
            for op in WRITES:
                f.fail(op, ".tmp", errno.ENOSPC, every=True)
            for k in range(3):
                await commit(store, k, size=8 << 10)
            warned = await anyio.to_thread.run_sync(
                warnings.seen.wait, WAIT, abandon_on_cancel=True
            )
            report("warned", warned=warned, records=warnings.records)
            for k in range(3, 6):
                await commit(store, k)
            report("read", tasks=store.view(lambda tx: tx.count(Task)))
            report("final", version=store.version.index)
    except Exception as exc:
        report("escaped", error=describe(exc))


def test_a_failed_automatic_compaction_is_logged_and_never_raised_into_the_block(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """When the automatic compaction's child fails on ENOSPC, a WARNING naming the cause is
    logged on logger "watchstore", nothing escapes the user's block, and commits and reads
    go on."""
    directory = tmp_path / "store"
    run = run_scenario(
        scenario_automatic_compaction_on_a_full_disk,
        str(directory),
        shim=shim,
        backend=anyio_backend,
    )
    assert not run.events("escaped"), f"escaped the block: {run.events('escaped')}"
    run.check_finished()
    warned = run.one("warned")
    assert warned["warned"], "no WARNING was logged on logger 'watchstore'"
    assert any(ENOSPC in r["message"] for r in warned["records"]), warned["records"]
    assert acked(run) == list(range(6))
    assert run.one("read")["tasks"] == 6
    check_acknowledged(directory, run, anyio_backend)


# -- 4: the automatic compaction keeps working after an explicit one ---------------------------


async def scenario_automatic_compactions_after_an_explicit_one(directory: str) -> None:
    """compact() once, then write 24 KiB at a time (compact_bytes is 16 KiB) and after each
    round wait for a compaction to rename its segment into place."""
    rounds = 8
    renamed = Path(directory).parent / "renamed"
    renamed_read = fifo(renamed, never_ends=True)
    async with ws.open_store(
        SCHEMA, path=directory, compact_bytes=16 << 10, keep_epochs=100
    ) as store:
        await commit(store, 0)
        await store.compact()
        faults().notify("rename", ".wslog", str(renamed))
        k = 1
        for round in range(rounds):
            for _ in range(3):
                await commit(store, k, size=8 << 10)
                k += 1
            rolled = await next_line(renamed_read, 5.0) is not None
            report("round", round=round, rolled=rolled)
            if not rolled:
                break
        report("final", version=store.version.index)
    report("segments", numbers=[e.segment for e in ws.list_epochs(directory)])


def test_the_automatic_compaction_goes_on_after_an_explicit_one(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """After one explicit compact(), every 24 KiB written with compact_bytes=16 KiB still
    rolls the log to a new epoch."""
    directory = tmp_path / "store"
    run = run_scenario(
        scenario_automatic_compactions_after_an_explicit_one,
        str(directory),
        shim=shim,
        backend=anyio_backend,
    )
    run.check_finished()
    rounds = run.events("round")
    stalled = [r["round"] for r in rounds if not r["rolled"]]
    assert not stalled, f"no automatic compaction in round {stalled[0]} after an explicit one"
    assert len(rounds) == 8
    assert max(run.one("segments")["numbers"]) >= 2 + 8
    check_acknowledged(directory, run, anyio_backend)


# -- 5: full disks and short writes of commits -------------------------------------------------


async def scenario_commit_with_a_fault(directory: str, fault: str) -> None:
    """Commit with the fault ``fault`` armed on the .wslog files: ``short-then-enospc`` (a
    write writes half, the next one fails with ENOSPC: a disk filling up) or ``short`` (every
    write writes half, also a compaction's); then close, reopen in this process, commit."""
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=NEVER) as store:
        for k in range(3):
            await commit(store, k)
        f = faults()
        if fault == "short":
            for op in WRITES:
                f.short(op, ".wslog", every=True)
            for k in range(3, 8):
                await commit(store, k, size=4 << 10)
            version = await store.compact()
            report("compacted", version=version.index)
            await commit(store, 8)
        else:
            for op in WRITES:
                f.short(op, ".wslog")
                f.fail(op, ".wslog", errno.ENOSPC, nth=2, every=True)
            await commit(store, 3)
            await commit(store, 4)
            report("read", tasks=store.view(lambda tx: tx.count(Task)))
        f.clear()
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=NEVER) as store:
        report("reopened", version=store.version.index)
        await commit(store, 100)
        report("final", version=store.version.index)


def test_a_disk_filling_up_fails_the_commit_naming_enospc_not_a_short_write(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """A commit whose write is cut short and then fails with ENOSPC raises ProposalFailed
    naming "No space left on device"; later commits raise ProposalFailed, reads go on, and
    the same process reopens the store with exactly the acknowledged commits."""
    directory = tmp_path / "store"
    run = run_scenario(
        scenario_commit_with_a_fault,
        str(directory),
        "short-then-enospc",
        shim=shim,
        backend=anyio_backend,
    )
    run.check_finished()
    first, later = failed(run)
    assert_error(first, "ProposalFailed", ENOSPC)
    assert "short write" not in first["message"], first["message"]
    assert "ProposalFailed" in later["classes"], later
    assert run.one("read")["tasks"] == 3
    assert run.one("reopened")["version"] == 3
    assert acked(run) == [0, 1, 2, 100]
    check_acknowledged(directory, run, anyio_backend)


def test_short_writes_are_retried_until_the_whole_record_is_written(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """When every write and pwrite of the log writes only half of its bytes, commits and a
    compaction still complete: short writes are retried until done."""
    directory = tmp_path / "store"
    run = run_scenario(
        scenario_commit_with_a_fault, str(directory), "short", shim=shim, backend=anyio_backend
    )
    assert not failed(run), f"commits failed on short writes: {failed(run)}"
    run.check_finished()
    assert acked(run) == [*range(9), 100]
    assert run.one("compacted")["version"] == 8
    check_acknowledged(directory, run, anyio_backend)


async def scenario_commit_until_the_disk_is_full(fs: str) -> None:
    """On a 2 MiB tmpfs with 256 KiB of ballast: commit 64 KiB at a time until a commit
    fails; try one more and read; free the ballast and reopen in this process."""
    root = Path(fs)
    directory = root / "store"
    ballast = root / "ballast"
    ballast.write_bytes(bytes(256 << 10))
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=NEVER) as store:
        for k in range(64):
            if not await commit(store, k, size=64 << 10, free=free_bytes(root)):
                break
        await commit(store, 1000)
        report("read", tasks=store.view(lambda tx: tx.count(Task)))
    ballast.unlink()
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=NEVER) as store:
        report("reopened", version=store.version.index)
        await commit(store, 2000)
        report("final", version=store.version.index)


def test_commits_on_a_full_disk_fail_with_enospc_only_once_their_records_do_not_fit(
    shim: Path, tmpfs: Path, anyio_backend: str
) -> None:
    """Committing on a tmpfs until it is full: the zeros written ahead never fail a commit
    whose records fit; the commit that does not fit raises ProposalFailed naming ENOSPC;
    the store refuses further writes but reads go on; once space is freed the same process
    reopens it with exactly the acknowledged commits."""
    run = run_scenario(
        scenario_commit_until_the_disk_is_full, str(tmpfs), shim=shim, backend=anyio_backend
    )
    errors = run.events("failed")
    assert errors, "the disk never filled up"
    first = errors[0]
    assert_error(first["error"], "ProposalFailed", ENOSPC)
    assert "short write" not in first["error"]["message"], first["error"]["message"]
    assert first["free"] < 2 * (64 << 10), (
        f"commit {first['k']} failed with {first['free']} bytes free, room for its records"
    )
    assert errors[1]["k"] == 1000
    assert "ProposalFailed" in errors[1]["error"]["classes"]
    run.check_finished()
    ok = [k for k in acked(run) if k < 1000]
    assert ok == list(range(len(ok)))
    assert len(ok) > 16, "the commits that overwrite the zeros written ahead did not all fit"
    assert run.one("read")["tasks"] == len(ok)
    assert run.one("reopened")["version"] == len(ok)
    assert 2000 in acked(run)
    check_acknowledged(tmpfs / "store", run, anyio_backend)


# -- 6: a failed open releases the lock and raises a StoreError --------------------------------


async def scenario_open_fails_then_opens(directory: str, fault: str) -> None:
    """Open the store while ``fault`` holds (``full``: its tmpfs is full; ``fsync``: the
    first fsync in it fails with EIO), then remove the fault and open it again."""
    path = Path(directory)
    filler = fill(path.parent) if fault == "full" else None
    if fault == "fsync":
        for op in ("fsync", "fdatasync"):
            faults().fail(op, str(path), errno.EIO)
    try:
        async with ws.open_store(SCHEMA, path=path):
            report("opened")
    except Exception as exc:
        report("open failed", error=describe(exc), oserror=isinstance(exc, OSError))
    if filler is not None:
        filler.unlink()
    faults().clear()
    async with ws.open_store(SCHEMA, path=path) as store:
        await commit(store, 0)
        report("final", version=store.version.index)


def test_creating_a_store_on_a_full_disk_raises_storage_error_and_releases_the_lock(
    shim: Path, tmpfs: Path, anyio_backend: str
) -> None:
    """open_store on a full disk raises StorageError (a StoreError, not an OSError) with
    errno ENOSPC, naming it; once space is freed the same process opens the store."""
    run = run_scenario(
        scenario_open_fails_then_opens,
        str(tmpfs / "store"),
        "full",
        shim=shim,
        backend=anyio_backend,
    )
    opened = run.one("open failed")
    assert_error(opened["error"], "StorageError", ENOSPC)
    assert not opened["oserror"], "the error is an OSError too"
    assert opened["error"]["errno"] == errno.ENOSPC
    run.check_finished()
    check_acknowledged(tmpfs / "store", run, anyio_backend)


def test_an_open_whose_fsync_fails_raises_storage_error_and_releases_the_lock(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """open_store whose first fsync fails with EIO raises StorageError naming it; once the
    disk is back the same process opens the store (the lock was released)."""
    directory = tmp_path / "store"
    run = run_scenario(
        scenario_open_fails_then_opens, str(directory), "fsync", shim=shim, backend=anyio_backend
    )
    opened = run.one("open failed")
    assert_error(opened["error"], "StorageError", EIO)
    assert not opened["oserror"], "the error is an OSError too"
    assert opened["error"]["errno"] == errno.EIO
    run.check_finished()
    check_acknowledged(directory, run, anyio_backend)


# -- 7: a compaction child dies with its parent and never holds the lock -----------------------


async def scenario_compaction_held_in_its_child(directory: str, notify: str) -> None:
    """Commit, then compact with the child held at its first snapshot write (it tells the
    FIFO ``notify`` its pid); the test kills this process meanwhile."""
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=NEVER) as store:
        for k in range(5):
            await commit(store, k)
        report("final", version=store.version.index)
        f = faults()
        for op in WRITES:
            f.block(op, ".tmp", notify=notify, timeout=3 * WAIT)
        await store.compact()
        report("compacted")


def test_a_sigkill_during_compaction_leaves_no_child_holding_the_store(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """SIGKILL a process while its compaction child writes: the store opens at once (no
    StoreLocked) with every acknowledged commit, and the orphaned child is gone soon."""
    directory = tmp_path / "store"
    notify_read = fifo(tmp_path / "held")
    orphan = None
    try:
        with started_scenario(
            scenario_compaction_held_in_its_child,
            str(directory),
            str(tmp_path / "held"),
            shim=shim,
            backend=anyio_backend,
            output=tmp_path / "child",
        ) as child:
            held = read_line(notify_read, WAIT)
            assert held is not None, "the compaction never started"
            orphan = int(held)
            assert orphan != child.pid, "the snapshot was written by the store's own process"
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=WAIT)
        run = finished_run(tmp_path / "child", child.returncode)
        check_acknowledged(
            directory, run, anyio_backend
        )  # at once: StoreLocked if the child holds the lock
        assert wait_closed(notify_read, 5.0), f"the orphaned compaction child {orphan} lives on"
    finally:
        os.close(notify_read)
        if orphan is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)


# -- 8: a commit that raised never comes back, whatever failed in the repair -------------------


async def scenario_double_fault(directory: str, writers: int) -> None:
    """Commit, then let ``writers`` writers commit at once while fdatasync fails with EIO
    once and every ftruncate of the log fails with EIO, to the end of this process."""
    async with ws.open_store(SCHEMA, path=directory, compact_bytes=NEVER) as store:
        f = faults()
        for k in range(4):
            await commit(store, k)
        # A slow fsync: the next writers' commits queue for the group committer together.
        f.block("fdatasync", ".wslog", timeout=0.05)
        await commit(store, 4)
        f.clear()
        f.fail("fdatasync", ".wslog", errno.EIO)
        f.fail("ftruncate", ".wslog", errno.EIO, every=True)
        async with anyio.create_task_group() as tg:
            for i in range(writers):
                tg.start_soon(commit, store, 100 + i)
        await commit(store, 200)
        report("read", tasks=store.view(lambda tx: tx.count(Task)))
        report("final", version=store.version.index)


@pytest.mark.parametrize("writers", [1, 16])
def test_commits_that_raised_never_come_back_after_a_failed_repair(
    shim: Path, tmp_path: Path, writers: int, anyio_backend: str
) -> None:
    """EIO on the commit's fdatasync, then on every ftruncate that would cut it off: every
    commit raises ProposalFailed (the first naming "Input/output error"), and on reopen
    none of them is there while every acknowledged one is."""
    directory = tmp_path / "store"
    run = run_scenario(
        scenario_double_fault, str(directory), writers, shim=shim, backend=anyio_backend
    )
    run.check_finished()
    assert acked(run) == list(range(5))
    errors = failed(run)
    assert len(errors) == writers + 1
    assert all("ProposalFailed" in e["classes"] for e in errors), errors
    assert any(EIO in e["message"] for e in errors), errors
    assert run.one("read")["tasks"] == 5
    check_acknowledged(directory, run, anyio_backend)


# -- 10: the directory and its files are private and durable -----------------------------------


async def scenario_create_under_umask(parent: str, umask: int) -> None:
    """Create a store under ``umask``, commit, compact, and report the modes while open."""
    os.umask(umask)
    directory = Path(parent, "store")
    async with ws.open_store(SCHEMA, path=directory, keep_epochs=5) as store:
        await commit(store, 0)
        await store.compact()
        await commit(store, 1)
        report("modes", directory=mode_of(directory), files=files_of(directory))
        report("final", version=store.version.index)


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_the_store_directory_is_0700_and_its_files_0600_whatever_the_umask(
    tmp_path: Path, umask: int, anyio_backend: str
) -> None:
    """A store created by open_store is a 0700 directory whose segment and lock files are
    0600, under the usual umask 022 and under 000."""
    run = run_scenario(
        scenario_create_under_umask, str(tmp_path), umask, shim=None, backend=anyio_backend
    )
    run.check_finished()
    modes = run.one("modes")
    assert oct(modes["directory"]) == oct(0o700)
    files = modes["files"]
    assert {"LOCK", "00000002.wslog"} <= set(files), files
    wrong = {name: oct(mode) for name, mode in files.items() if mode != 0o600}
    assert not wrong, f"files not 0600: {wrong}"
    check_acknowledged(tmp_path / "store", run, anyio_backend)


async def scenario_count_directory_fsyncs(parent: str) -> None:
    """Create a store in ``parent`` and report how often the store directory and its
    parent were fsynced."""
    f = faults()
    directory = Path(parent, "store")
    rules = {
        (name, op): f.notify(op, f"{path}$")
        for name, path in (("parent", parent), ("store", directory))
        for op in ("fsync", "fdatasync")
    }
    async with ws.open_store(SCHEMA, path=directory) as store:
        await commit(store, 0)
        report("final", version=store.version.index)
    hits = {name: 0 for name, _op in rules}
    for (name, _op), rule in rules.items():
        hits[name] += f.hits(rule)
    report("fsyncs", **hits)


def test_creating_the_store_directory_fsyncs_it_and_its_parent(
    shim: Path, tmp_path: Path, anyio_backend: str
) -> None:
    """open_store fsyncs the directory it creates and the directory's parent, so that the
    store (and its acknowledged commits) survive a power loss."""
    parent = tmp_path.resolve() / "parent"  # as /proc/self/fd names it
    parent.mkdir()
    run = run_scenario(
        scenario_count_directory_fsyncs, str(parent), shim=shim, backend=anyio_backend
    )
    run.check_finished()
    fsyncs = run.one("fsyncs")
    assert fsyncs["store"] >= 1, "the store directory was never fsynced"
    assert fsyncs["parent"] >= 1, "the parent of the created directory was never fsynced"
    check_acknowledged(parent / "store", run, anyio_backend)


# -- 11: reading the lock's state takes no lock ------------------------------------------------

LOCK_STATUS: Final = """
import json, os, sys
import watchstore as ws
status = ws.lock_status(sys.argv[1])
print(json.dumps({"held": status.held, "pid": status.holder.get("pid")}))
"""


async def test_lock_status_takes_no_lock(tmp_path: Path) -> None:
    """ws.lock_status takes no lock of any kind (no flock, no fcntl lock, and it does not even
    open LOCK), so a poller never makes an opener fail, and still reports the live holder."""
    strace = shutil.which("strace")
    require("strace", strace is not None)
    assert strace is not None
    trace = tmp_path / "trace"
    directory = tmp_path / "store"
    with anyio.fail_after(WAIT):
        async with ws.open_store(SCHEMA, path=directory):
            traced = ("-f", "-qq", "-y", "-e", "trace=flock,fcntl,openat,open", "-o", str(trace))
            done = await anyio.run_process(
                [strace, *traced, sys.executable, "-c", LOCK_STATUS, str(directory)],
                env=scenario_env(None),
                cwd=ROOT,
            )
    lines = trace.read_text().splitlines()
    calls = [line for line in lines if "flock(" in line or "F_SETLK" in line or "F_OFD" in line]
    assert not calls, f"lock_status took a lock: {calls}"
    opened = [line for line in lines if "open" in line and '/LOCK"' in line]
    assert not opened, f"lock_status opened LOCK: {opened}"
    assert json.loads(done.stdout) == {"held": True, "pid": os.getpid()}


async def test_store_locked_names_the_holder_in_a_sentence_without_its_token(
    tmp_path: Path,
) -> None:
    """StoreLocked names the holder's pid and host in words, never the lock's token."""
    with anyio.fail_after(WAIT):
        async with ws.open_store(SCHEMA, path=tmp_path):
            token = json.loads((tmp_path / "LOCK.json").read_text()).get("token")
            with pytest.raises(ws.StoreLocked) as caught:
                async with ws.open_store(SCHEMA, path=tmp_path):
                    pass
    message = str(caught.value)
    assert f"pid {os.getpid()}" in message, message
    assert socket.gethostname() in message, message
    assert token is None or token not in message, message


async def test_store_locked_never_names_an_empty_holder(tmp_path: Path) -> None:
    """A lock held by a process that left no LOCK.json gives a StoreLocked that names the
    holder or says it cannot tell, never ``{}`` or ``None``."""
    with anyio.fail_after(WAIT):
        async with ws.open_store(SCHEMA, path=tmp_path):
            pass
        (tmp_path / "LOCK.json").unlink(missing_ok=True)
        fd = os.open(tmp_path / "LOCK", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(ws.StoreLocked) as caught:
                async with ws.open_store(SCHEMA, path=tmp_path):
                    pass
        finally:
            os.close(fd)
    message = str(caught.value)
    assert "{}" not in message, message
    assert "None" not in message, message


def test_inspect_works_without_write_access_to_the_lock(tmp_path: Path, anyio_backend: str) -> None:
    """``watchstore inspect`` reads a store through a read-only mount (no write access to
    LOCK, even for root) and reports its version."""
    directory = tmp_path / "store"

    async def create() -> None:
        async with ws.open_store(SCHEMA, path=directory) as store:
            for k in range(3):
                await commit(store, k)

    anyio.run(create, backend=anyio_backend)
    with read_only_view(directory, tmp_path / "view") as view:
        done = run_inspect(view)
    assert done.returncode == 0, f"inspect failed ({done.returncode}): {done.stderr}"
    assert json.loads(done.stdout)["result"]["version"] == 3


@attrs.frozen
class Inspected:
    returncode: int
    stdout: str
    stderr: str


def run_inspect(directory: Path) -> Inspected:
    """``python -m watchstore inspect --json DIRECTORY`` in a child process."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "watchstore", "inspect", "--json", str(directory)],
        env=scenario_env(None),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    return Inspected(done.returncode, done.stdout, done.stderr)
