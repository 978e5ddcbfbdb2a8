"""Tampered and hostile store directories: a store never comes back silently at an older or
foreign state, and no file in its directory makes it crash, hang, exhaust memory or write
outside the store.

Each case is refused twice: on open (a ``LogCorrupt`` or ``StorageError`` whose ``file``
names the file concerned) and by ``watchstore verify`` (exit 1, each line on stderr one
message, one of them naming the file, never a traceback). Whatever could hang or exhaust
memory (a FIFO, a link to ``/dev/zero``, a 6 GiB sparse file) runs in a child process,
bounded by a timeout and an address-space limit, that reports its peak RSS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import msgspec
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Task
from watchstore.log import epochlog as ws_log
from watchstore.log.manifest import Manifest, read_manifest, write_manifest
from watchstore.log.records import (
    CHANGE,
    HEADER_SIZE,
    SNAPSHOT,
    Record,
    SegmentHeader,
    head_size,
    pack_record,
    parse_header,
    record_head,
    scan,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

REPO: Final = Path(__file__).parent.parent
TIMEOUT: Final = 30
"""Seconds a child process may take: a child still running then is taken to hang."""
MEMORY_LIMIT: Final = 3 << 30
"""The address space of a child (RLIMIT_AS): what reads a file whole fails fast."""
PEAK_MB: Final = 500
"""The most a child may hold (peak RSS) whatever file it reads."""
DEPTH: Final = 200_000
"""Nesting of a hostile record: far past any recursion limit."""
SPARSE: Final = 6 << 30
KEY: Final = os.urandom(32)


# -- stores --------------------------------------------------------------------------------


async def build(path: Path, epochs: Sequence[int], *, key: bytes | None = None) -> None:
    """Open the store at ``path`` (creating it) and commit ``epochs[i]`` tasks one commit
    each, compacting before every epoch after the first; so a new store built with
    ``(5, 5, 5)`` has segments 1, 2, 3 with snapshots at 0, 5, 10 and is at version 15.
    Task ``t{v}`` is created by version ``v``."""
    async with ws.open_store(SCHEMA, path=path, key=key, keep_epochs=10) as store:
        for i, commits in enumerate(epochs):
            if i:
                await store.compact()
            for _ in range(commits):
                version = store.version.index + 1
                await store.update(lambda tx: tx.create(Task(f"t{version}", "svc", slot=version)))


async def version_of(path: Path, **options: Any) -> ws.Version:
    """The version the store at ``path`` opens at, checking it holds tasks t1.. up to it."""
    async with ws.open_store(SCHEMA, path=path, **options) as store:
        slots = store.view(lambda tx: sorted(t.slot for t in tx.all(Task)))
        assert slots == list(range(1, store.version.index + 1))
        return store.version


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.wslog"))


def records(segment: Path) -> list[Record]:
    """The records of a segment (the snapshot first)."""
    data = segment.read_bytes()
    return scan(data, parse_header(data)).records


def header_of(segment: Path) -> SegmentHeader:
    with segment.open("rb") as f:
        return parse_header(f.read(HEADER_SIZE))


def flip_byte(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


def crash(path: Path) -> None:
    """Rewrite the manifest as a crash leaves a one-segment store built from empty: opened
    at version 0, never closed (so only the records can tell what was acknowledged)."""
    manifest = read_manifest(path)
    assert manifest is not None
    write_manifest(path, Manifest(manifest.lineage, manifest.segment, 0))


def append_record(segment: Path, body: bytes) -> int:
    """Append a well-framed CHANGE record holding ``body`` (valid checksums); its offset."""
    offset = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(pack_record(header_of(segment), offset, CHANGE, body, offset))
    return offset


def format1_store(path: Path, snapshot: bytes, changes: Sequence[bytes] = ()) -> Path:
    """A format 1 store (which has no manifest) of one segment holding a SNAPSHOT body and
    CHANGE bodies, each a record with valid checksums; the segment."""
    header = SegmentHeader(1, 0, 1, os.urandom(16), 0)
    data = header.pack() + pack_record(header, HEADER_SIZE, SNAPSHOT, snapshot)
    for body in changes:
        data += pack_record(header, len(data), CHANGE, body)
    path.mkdir()
    segment = path / "00000001.wslog"
    segment.write_bytes(data)
    return segment


def precious(tmp_path: Path, name: str = "precious") -> Path:
    """A file outside the store that nothing may overwrite."""
    target = tmp_path / name
    target.write_bytes(b"not the store's")
    return target


# -- refusals --------------------------------------------------------------------------------


async def refused_on_open(path: Path, file: Path, **options: Any) -> ws.LogCorrupt:
    """Opening the store at ``path`` raises LogCorrupt naming ``file``."""
    with pytest.raises(ws.LogCorrupt) as caught:
        async with ws.open_store(SCHEMA, path=path, **options):
            pass
    assert Path(caught.value.file) == file, caught.value
    return caught.value


async def refused(path: Path, file: Path, *, key: bytes | None = None) -> ws.LogCorrupt:
    """Refused on open and by ``watchstore verify``, both naming ``file``."""
    exc = await refused_on_open(path, file, key=key)
    failed_naming(run_cli("verify", path, key=key), file)
    return exc


class Cli(NamedTuple):
    """What a run of the ``watchstore`` command gave: exit code, output, peak RSS."""

    code: int
    out: str
    err: str
    peak_mb: float


CLI: Final = f"""
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
peak = sys.argv.pop(1)
sys.argv[0] = "watchstore"
try:
    runpy.run_module("watchstore", run_name="__main__", alter_sys=True)
finally:
    with open(peak, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""
"""``python -m watchstore ARGS`` that writes its peak RSS (KiB) to a file first named."""


def child(code: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child Python (this project's, from the repository), bounded."""
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
            timeout=TIMEOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child {args} still ran after {TIMEOUT} s: it hangs")


def run_cli(command: str, path: Path, *options: str, key: bytes | None = None) -> Cli:
    """Run ``watchstore COMMAND PATH OPTIONS`` (with ``--key-file`` for ``key``)."""
    peak = path.parent / f".peak-{command}"
    if key is not None:
        (path.parent / "key").write_bytes(key)
        options = (*options, "--key-file", str(path.parent / "key"))
    done = child(CLI, peak, command, path, *options)
    return Cli(done.returncode, done.stdout, done.stderr, int(peak.read_text()) / 1024)


def failed_naming(cli: Cli, file: Path) -> None:
    """The command exited 1 with one-line messages on stderr, one naming ``file``, and no
    traceback anywhere."""
    assert "Traceback" not in cli.out + cli.err, cli.err
    assert cli.code == 1, cli
    lines = [line for line in cli.err.splitlines() if line.strip()]
    assert lines, "no message on stderr"
    assert all(line.startswith("watchstore: ") for line in lines), cli.err
    assert any(file.name in line for line in lines), f"{file.name} not named in:\n{cli.err}"


OPEN: Final = f"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
import anyio
import watchstore as ws
from tests.schema import SCHEMA

async def main(path):
    try:
        async with ws.open_store(SCHEMA, path=path) as store:
            return {{"version": store.version.index}}
    except ws.StoreError as exc:
        return {{"error": type(exc).__name__, "file": getattr(exc, "file", None)}}

result = anyio.run(main, sys.argv[1], backend=sys.argv[2])
result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""
"""Open the store at argv[1] on the AnyIO backend argv[2] and print what happened as JSON, with
the peak RSS (MiB)."""


def open_in_child(path: Path, backend: str) -> dict[str, Any]:
    """Open the store at ``path`` in a bounded child, on AnyIO's ``backend``: {"version"} or
    {"error", "file"}, and "peak_mb"; the child must not die of anything else."""
    done = child(OPEN, path, backend)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def corrupt_in_child(path: Path, file: Path, backend: str) -> None:
    """Opening the store at ``path`` (in a child, on AnyIO's ``backend``) raises LogCorrupt
    naming ``file``, within bounded memory."""
    result = open_in_child(path, backend)
    assert (result.get("error"), result.get("file")) == ("LogCorrupt", str(file)), result
    assert result["peak_mb"] < PEAK_MB, result


def verify_in_bounds(path: Path, file: Path) -> None:
    """``watchstore verify`` fails naming ``file`` within bounded memory."""
    cli = run_cli("verify", path)
    failed_naming(cli, file)
    assert cli.peak_mb < PEAK_MB, cli


# -- silent rollback and foreign data ----------------------------------------------------------


async def test_a_deleted_newest_segment_is_missing_not_an_older_state(tmp_path: Path) -> None:
    """The newest segment deleted: the store does not open at the epoch before it."""
    path = tmp_path / "store"
    await build(path, (10, 20))
    newest = segments(path)[-1]
    newest.unlink()
    await refused(path, newest)


async def test_a_segment_renamed_to_another_number_is_refused(tmp_path: Path) -> None:
    """A segment whose header names another number than its file name is refused."""
    path = tmp_path / "store"
    await build(path, (10, 10))
    renamed = path / "00000003.wslog"
    segments(path)[-1].rename(renamed)
    await refused(path, renamed)


async def test_a_segment_of_another_store_copied_in_is_refused(tmp_path: Path) -> None:
    """A segment of another store (its lineage) put in place of the store's own is refused,
    however well it verifies."""
    path, other = tmp_path / "store", tmp_path / "other"
    await build(path, (10,))
    await build(other, (20,))
    (segment,) = segments(path)
    shutil.copyfile(segments(other)[0], segment)
    await refused(path, segment)


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
async def test_an_older_copy_of_the_newest_segment_put_back_is_refused(
    tmp_path: Path, key: bytes | None
) -> None:
    """A copy of the newest segment taken at version 10, put back after version 20, is
    refused (its records all verify, encrypted too: only the manifest can tell)."""
    path = tmp_path / "store"
    await build(path, (10,), key=key)
    (segment,) = segments(path)
    older = segment.read_bytes()
    await build(path, (10,), key=key)
    segment.write_bytes(older)
    await refused(path, segment, key=key)


async def test_a_cleanly_closed_segment_cut_at_a_record_boundary_is_refused(
    tmp_path: Path,
) -> None:
    """The last five records cut off after a clean close (the rest verifies) is refused."""
    path = tmp_path / "store"
    await build(path, (20,))
    (segment,) = segments(path)
    os.truncate(segment, records(segment)[-5].offset)
    await refused(path, segment)


async def test_a_zeroed_last_byte_after_a_clean_close_is_refused(tmp_path: Path) -> None:
    """A zeroed last byte after a clean close is not taken for a torn tail (which would
    drop an acknowledged commit)."""
    path = tmp_path / "store"
    await build(path, (20,))
    (segment,) = segments(path)
    with segment.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\0")
    await refused(path, segment)


async def test_a_forged_record_length_with_a_valid_head_checksum_is_corrupt(
    tmp_path: Path,
) -> None:
    """A record of version 10 of 20 whose length (head checksum recomputed) reaches past the
    end of the file is corruption at that record, not a torn tail: later records prove it
    was acknowledged. The manifest is as a crash leaves it, so the records alone tell."""
    path = tmp_path / "store"
    await build(path, (20,))
    crash(path)
    (segment,) = segments(path)
    forged = records(segment)[10]
    size = segment.stat().st_size
    head = record_head(header_of(segment), forged.offset, CHANGE, bytes(size))
    with segment.open("r+b") as f:
        f.seek(forged.offset)
        f.write(head)
    assert len(head) == head_size(header_of(segment))
    exc = await refused(path, segment)
    assert exc.offset == forged.offset


async def test_a_missing_manifest_is_refused_unless_salvaging(tmp_path: Path) -> None:
    """Without its manifest a format 2 store cannot tell whether it is complete: refused,
    naming the manifest; salvage takes the segments as they are."""
    path = tmp_path / "store"
    await build(path, (20,))
    manifest = path / "MANIFEST"
    manifest.unlink()
    await refused(path, manifest)
    assert await version_of(path, salvage=True) == ws.Version(20)


async def test_watch_from_across_a_damaged_older_segment_raises_history_compacted(
    tmp_path: Path,
) -> None:
    """Versions 5-10 of the oldest kept epoch damaged: watch_from(2) served from the log
    raises HistoryCompacted instead of skipping them."""
    path = tmp_path / "store"
    await build(path, (10, 10, 5))
    oldest = segments(path)[0]
    damaged = records(oldest)[5]
    flip_byte(oldest, damaged.offset + head_size(header_of(oldest)) + 1)
    failed_naming(run_cli("verify", path), oldest)
    async with ws.open_store(SCHEMA, path=path, history=0) as store:
        with pytest.raises(ws.HistoryCompacted) as caught:
            async with store.watch_from(ws.Version(2)):
                pass
    assert caught.value.current == ws.Version(25)


# -- a damaged newest epoch, and the ways back to the intact older ones -----------------------

DAMAGE: Final = ["header", "snapshot"]


async def damaged_newest(tmp_path: Path, where: str) -> tuple[Path, Path]:
    """A store of three epochs (snapshots at 0, 5 and 10; version 15) whose newest segment
    has a damaged ``where``: (store, newest segment)."""
    path = tmp_path / "store"
    await build(path, (5, 5, 5))
    newest = segments(path)[-1]
    offset = 20 if where == "header" else HEADER_SIZE + head_size(header_of(newest)) + 1
    flip_byte(newest, offset)
    return path, newest


@pytest.mark.parametrize("where", DAMAGE)
async def test_a_damaged_newest_header_or_snapshot_is_refused(tmp_path: Path, where: str) -> None:
    """A damaged header or snapshot in the newest segment: LogCorrupt naming it."""
    path, newest = await damaged_newest(tmp_path, where)
    await refused(path, newest)


@pytest.mark.parametrize("where", DAMAGE)
async def test_salvage_puts_a_damaged_newest_segment_aside_and_restores_the_one_before(
    tmp_path: Path, where: str
) -> None:
    """Salvage renames the damaged newest segment aside, opens at the end of the one before
    (version 10) and reports versions 11-15 lost; the store then opens without salvage."""
    path, newest = await damaged_newest(tmp_path, where)
    async with ws.open_store(SCHEMA, path=path, salvage=True) as store:
        assert store.version == ws.Version(10)
        assert store.recovery is not None
        salvage = store.recovery.salvage
    assert salvage is not None
    assert (salvage.kept, salvage.lost) == (ws.Version(10), (11, 12, 13, 14, 15))
    assert not newest.exists()
    (aside,) = path.glob(f"{newest.name}.damaged-*")
    assert Path(salvage.copy) == aside
    assert await version_of(path) == ws.Version(10)


@pytest.mark.parametrize("where", DAMAGE)
async def test_list_epochs_leaves_out_a_damaged_newest_epoch(tmp_path: Path, where: str) -> None:
    """list_epochs lists the intact epochs only, without an error."""
    path, _newest = await damaged_newest(tmp_path, where)
    epochs = ws.list_epochs(path)
    assert [(e.segment, e.version) for e in epochs] == [(1, ws.Version(0)), (2, ws.Version(5))]


@pytest.mark.parametrize("where", DAMAGE)
async def test_rollback_past_a_damaged_newest_epoch_opens_at_the_kept_snapshot(
    tmp_path: Path, where: str
) -> None:
    """ws.rollback to the intact epoch at version 5; the store then opens there."""
    path, _newest = await damaged_newest(tmp_path, where)
    ws.rollback(path, ws.Version(5))
    assert await version_of(path) == ws.Version(5)


@pytest.mark.parametrize("where", DAMAGE)
async def test_the_cli_rollback_past_a_damaged_newest_epoch_opens_at_the_kept_snapshot(
    tmp_path: Path, where: str
) -> None:
    """``watchstore rollback --to 5`` likewise."""
    path, _newest = await damaged_newest(tmp_path, where)
    cli = run_cli("rollback", path, "--to", "5")
    assert (cli.code, "Traceback" in cli.err) == (0, False), cli
    assert await version_of(path) == ws.Version(5)


# -- hostile records -----------------------------------------------------------------------------


async def test_a_deeply_nested_format_1_record_is_corrupt_not_a_recursion_error(
    tmp_path: Path,
) -> None:
    """A format 1 CHANGE whose JSON nests 200,000 deep (valid checksums): LogCorrupt at it."""
    path = tmp_path / "store"
    deep = b"[" * DEPTH + b"]" * DEPTH
    segment = format1_store(
        path,
        b'{"version":0,"tables":{"Task":[],"Node":[]}}',
        [b'{"version":1,"actions":[[1,"Task",' + deep + b"]]}"],
    )
    exc = await refused(path, segment)
    assert exc.offset == records(segment)[1].offset


@pytest.mark.parametrize("where", ["body", "rows"])
async def test_a_deeply_nested_format_2_record_is_corrupt_not_a_recursion_error(
    tmp_path: Path, where: str
) -> None:
    """A format 2 CHANGE whose MessagePack nests 200,000 deep (the whole body, or the rows
    inside a valid envelope; valid checksums): LogCorrupt at it."""
    path = tmp_path / "store"
    await build(path, (3,))
    crash(path)
    (segment,) = segments(path)
    deep = b"\x91" * DEPTH + b"\x90"  # [[[...[]...]]]
    body = (
        deep if where == "body" else msgspec.msgpack.encode((4, [("Task", [1], msgspec.Raw(deep))]))
    )
    offset = append_record(segment, body)
    exc = await refused(path, segment)
    assert exc.offset == offset


@pytest.mark.parametrize("version", [b"1e400", b"-5", b'"x"', b"2.5"])
async def test_a_snapshot_version_that_is_not_a_count_is_corrupt(
    tmp_path: Path, version: bytes
) -> None:
    """A format 1 snapshot whose version is infinite, negative, a string or a fraction."""
    path = tmp_path / "store"
    segment = format1_store(path, b'{"version":%s,"tables":{"Task":[],"Node":[]}}' % version)
    exc = await refused(path, segment)
    assert exc.offset == HEADER_SIZE


# -- hostile files -------------------------------------------------------------------------------


@pytest.mark.parametrize("after", ["records", "header"])
async def test_a_6_gib_sparse_segment_is_read_in_bounded_memory(
    tmp_path: Path, after: str, anyio_backend: str
) -> None:
    """A segment grown to 6 GiB of holes after its records (or after its header alone) opens
    or is refused with LogCorrupt, in bounded memory and time; verify likewise."""
    path = tmp_path / "store"
    await build(path, (5,))
    (segment,) = segments(path)
    if after == "header":
        os.truncate(segment, HEADER_SIZE)
    os.truncate(segment, SPARSE)
    cli = run_cli("verify", path)
    assert "Traceback" not in cli.err, cli
    assert cli.code in (0, 1), cli
    if cli.code:
        failed_naming(cli, segment)
    assert cli.peak_mb < PEAK_MB, cli
    result = open_in_child(path, anyio_backend)
    if "error" in result:
        assert (result["error"], result["file"]) == ("LogCorrupt", str(segment)), result
    else:
        assert result["version"] == 5, result
    assert result["peak_mb"] < PEAK_MB, result


async def test_a_fifo_named_as_a_segment_is_refused_without_hanging(
    tmp_path: Path, anyio_backend: str
) -> None:
    """A FIFO named 00000002.wslog: open, inspect and verify refuse it and return."""
    path = tmp_path / "store"
    await build(path, (3,))
    fifo = path / "00000002.wslog"
    os.mkfifo(fifo)
    corrupt_in_child(path, fifo, anyio_backend)
    failed_naming(run_cli("inspect", path), fifo)
    verify_in_bounds(path, fifo)


async def test_a_segment_linked_to_dev_zero_is_refused_in_bounded_memory(
    tmp_path: Path, anyio_backend: str
) -> None:
    """A segment that is a symlink to /dev/zero (endless): refused, in bounded memory."""
    path = tmp_path / "store"
    await build(path, (3,))
    link = path / "00000002.wslog"
    link.symlink_to("/dev/zero")
    corrupt_in_child(path, link, anyio_backend)
    verify_in_bounds(path, link)


LOCK_INFO: Final = {
    "deep": b"[" * DEPTH + b"]" * DEPTH,
    "huge started_at": json.dumps(
        {"pid": 2**22 + 1, "host": "elsewhere", "started_at": 1e308, "token": "t"}
    ).encode(),
}


@pytest.mark.parametrize("content", LOCK_INFO.values(), ids=LOCK_INFO.keys())
async def test_a_hostile_lock_json_leaves_the_holder_unknown(
    tmp_path: Path, content: bytes
) -> None:
    """LOCK.json nested 200,000 deep, or with a started_at of 1e308: lock_status, inspect
    and open all work; the lock is free."""
    path = tmp_path / "store"
    await build(path, (3,))
    (path / "LOCK.json").write_bytes(content)
    status = ws.lock_status(path)
    assert not status.held
    if content == LOCK_INFO["deep"]:
        assert status.holder == {}
    cli = run_cli("inspect", path)
    assert (cli.code, "Traceback" in cli.out + cli.err) == (0, False), cli
    assert await version_of(path) == ws.Version(3)


@pytest.mark.parametrize("name", [".LOCK.json.tmp", ".MANIFEST.tmp"])
async def test_a_symlink_planted_at_a_temporary_name_never_overwrites_its_target(
    tmp_path: Path, name: str
) -> None:
    """A symlink at the temporary name of a file the store replaces (LOCK.json, MANIFEST),
    pointing outside the store: open, commit, compact and close leave its target alone."""
    path = tmp_path / "store"
    await build(path, (3,))
    target = precious(tmp_path)
    (path / name).symlink_to(target)
    await build(path, (3, 3))
    assert target.read_bytes() == b"not the store's"
    assert await version_of(path) == ws.Version(9)


async def test_a_symlink_planted_at_a_compaction_temp_name_never_overwrites_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Symlinks at the temporary names of the next epoch's segment (the clock fixed, so the
    name is known), pointing outside the store: compaction never writes through them, and
    nothing committed is lost."""
    path = tmp_path / "store"
    await build(path, (3,))
    now = 1_800_000_000_000_000_000
    clock = types.SimpleNamespace(time_ns=lambda: now)
    monkeypatch.setattr(ws_log, "time", clock)
    targets = []
    async with ws.open_store(SCHEMA, path=path) as store:
        for i, name in enumerate([f".00000002.wslog.{now}.tmp", ".00000002.wslog.tmp"]):
            targets.append(precious(tmp_path, f"precious-{i}"))
            (path / name).symlink_to(targets[-1])
        with contextlib.suppress(ws.CompactionFailed):  # refusing the name is as good
            await store.compact()
        await store.update(lambda tx: tx.create(Task("t4", "svc", slot=4)))
    assert [t.read_bytes() for t in targets] == [b"not the store's"] * 2
    monkeypatch.undo()
    assert await version_of(path) == ws.Version(4)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
async def test_a_lock_that_is_a_fifo_or_a_symlink_raises_storage_error(
    tmp_path: Path, kind: str, anyio_backend: str
) -> None:
    """LOCK replaced by a FIFO, or by a symlink to a file outside: StorageError naming it,
    no hang, the target untouched."""
    path = tmp_path / "store"
    await build(path, (3,))
    lock = path / "LOCK"
    lock.unlink()
    target = precious(tmp_path)
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.symlink_to(target)
    result = open_in_child(path, anyio_backend)
    assert (result.get("error"), result.get("file")) == ("StorageError", str(lock)), result
    assert target.read_bytes() == b"not the store's"
