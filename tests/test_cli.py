"""The ``watchstore`` command against real stores the tests create: every command, its exit
codes and its messages, including a corrupted store (``verify`` names the file and offset).

Commands run in-process through ``main([...])``, and through ``python -m watchstore`` in a
real subprocess where the process boundary matters (exit status, stdout/stderr)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, State, Task
from watchstore.cli.main import ExitCode, locate_demo, main, run_script
from watchstore.core.codec import encode
from watchstore.log.manifest import read_manifest, write_manifest
from watchstore.log.records import CHANGE, Record, pack_record, parse_header, scan
from watchstore.log.rows import codec_for
from watchstore.log.rows import encode as encode_row_data

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).parent.parent
COMMANDS = [
    "inspect",
    "verify",
    "dump",
    "get",
    "watch",
    "load",
    "backup",
    "restore",
    "salvage",
    "compact",
    "snapshots",
    "rollback",
    "unlock",
    "completion",
    "demo",
]
KEY = bytes(range(32))

Result = tuple[int, str, str]


async def build(path: Path, key: bytes | None = None) -> None:
    """Two epochs: versions 1-2 then a compaction at 2, then versions 3-5."""
    async with ws.open_store(SCHEMA, path=path, keep_epochs=3, key=key) as store:
        await store.update(
            lambda tx: [tx.create(Node(f"n{i}", f"node-{i}", frozenset({"a"}))) for i in range(3)]
        )
        await store.update(
            lambda tx: [
                tx.create(Task(f"t{i:02d}", "web", node_id=f"n{i % 3}", slot=i)) for i in range(20)
            ]
        )
        await store.compact()
        task = store.view(lambda tx: tx.get(Task, "t05"))
        assert task is not None
        await store.update(lambda tx: tx.update(attrs.evolve(task, state=State.RUNNING)))
        await store.update(lambda tx: tx.delete(Task, "t07"))
        await store.update(lambda tx: tx.create(Task("t99", "db")))


@pytest.fixture
def store(tmp_path: Path, anyio_backend: str) -> Path:
    """A durable store of tests/schema.py at version 5, in two segments (built on the
    test's AnyIO backend)."""
    path = tmp_path / "store"
    anyio.run(build, path, backend=anyio_backend)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    """Run the command in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Any:
    """Run the command with --json: the ``result`` of its envelope, which must say ok."""
    code, out, err = run(capsys, *argv, "--json")
    assert code == ExitCode.OK, err
    envelope = json.loads(out)
    assert (envelope["ok"], envelope["exit_code"]) == (True, 0)
    assert set(envelope) == {"ok", "exit_code", "result"}
    return envelope["result"]


def contents(path: Path, backend: str) -> dict[tuple[str, str], Any]:
    """Every object of the store at ``path`` as the library reads it (on AnyIO's
    ``backend``), encoded as stored."""

    async def read() -> dict[tuple[str, str], Any]:
        async with ws.open_store(SCHEMA, path=path) as store:
            tables: list[type[Any]] = [Task, Node]
            return store.view(
                lambda tx: {(cls.__name__, o.id): encode(o) for cls in tables for o in tx.all(cls)}
            )

    return anyio.run(read, backend=backend)


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.wslog"))


def records(segment: Path) -> list[Record]:
    data = segment.read_bytes()
    return scan(data, parse_header(data)).records


def crashed(store: Path) -> None:
    """Rewrite the store's manifest as a crash leaves it: open, never closed."""
    manifest = read_manifest(store)
    assert manifest is not None
    write_manifest(store, attrs.evolve(manifest, size=None, closed=False))


def append_change(segment: Path, version: int, actions: list[tuple[int, Any]]) -> int:
    """Append a well-framed CHANGE record of ``(kind, object)`` actions, one run of rows per
    action (valid checksums, format 2); return its offset."""
    data = segment.read_bytes()
    tables = {t.cls: t for t in SCHEMA.tables}
    groups = [
        [tables[type(obj)].name, [kind], [codec_for(tables[type(obj)]).row(obj)]]
        for kind, obj in actions
    ]
    body = encode_row_data((version, groups))
    with open(segment, "ab") as f:
        f.write(pack_record(parse_header(data), len(data), CHANGE, body))
    crashed(segment.parent)  # as if the writer had crashed after it, never closing
    return len(data)


def flip_byte(segment: Path, offset: int) -> None:
    data = bytearray(segment.read_bytes())
    data[offset] ^= 0x40
    segment.write_bytes(bytes(data))


# -- inspect ---------------------------------------------------------------------------------


def test_inspect_reports_the_tables_rows_version_and_epochs_the_store_holds(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    report = run_json(capsys, "inspect", store)
    expected: dict[str, int] = {}
    for table, _id in contents(store, anyio_backend):
        expected[table] = expected.get(table, 0) + 1
    assert report["tables"] == expected == {"Task": 20, "Node": 3}
    assert report["version"] == 5
    assert [(e["segment"], e["snapshot_version"], e["last_version"]) for e in report["epochs"]] == [
        (1, 0, 2),
        (2, 2, 5),
    ]
    assert report["size"] == sum(s.stat().st_size for s in segments(store))
    assert report["lock"]["state"] == "free"


def test_inspect_prints_human_tables_by_default(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, out, err = run(capsys, "inspect", store)
    assert (code, err) == (ExitCode.OK, "")
    assert "version" in out
    assert "Task" in out
    assert "20" in out
    assert "Epochs" in out
    assert "2 *" in out


def test_inspect_names_the_live_holder_of_the_lock(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    with holder(store, anyio_backend) as child:
        report = run_json(capsys, "inspect", store)
        _code, out, _err = run(capsys, "inspect", store)
    assert report["lock"]["state"] == "held"
    assert report["lock"]["holder"]["pid"] == child.pid
    assert report["lock"]["holder_alive"] is True
    assert f"held by pid {child.pid}" in out


def test_inspect_of_a_directory_without_a_store_is_not_found(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _out, err = run(capsys, "inspect", tmp_path)
    assert code == ExitCode.NOT_FOUND
    assert "holds no watchstore store" in err


# -- verify ----------------------------------------------------------------------------------


def test_verify_passes_a_sound_store_and_says_indexes_need_the_schema(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, out, err = run(capsys, "verify", store)
    assert code == ExitCode.OK
    assert err == ""  # no progress bar when stderr is not a terminal
    assert "ok: 7 records in 2 segments checked" in out
    assert "indexes not rebuilt: no --schema given" in out


def test_verify_with_the_schema_rebuilds_every_epoch_as_typed_objects(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    report = run_json(capsys, "verify", store, "--schema", "tests.schema:SCHEMA")
    assert report["indexes_rebuilt"] is True
    assert [s["objects"] for s in report["segments"]] == [23, 23]
    assert [s["indexes"] for s in report["segments"]] == [7, 7]


@pytest.mark.parametrize("which", [0, 1], ids=["old-segment", "current-segment"])
def test_verify_fails_on_a_flipped_byte_naming_the_file_and_offset(
    capsys: pytest.CaptureFixture[str], store: Path, which: int
) -> None:
    segment = segments(store)[which]
    damaged = records(segment)[1]
    flip_byte(segment, damaged.offset + 20)  # inside the body: its checksum fails
    code, out, err = run(capsys, "verify", store)
    assert code == ExitCode.FAILED
    assert f"verify failed: {segment} at offset {damaged.offset}" in err
    assert "record checksum mismatch" in err
    assert "FAILED" in out


def test_verify_checks_every_segment_and_reports_each_damage(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    old, current = segments(store)
    damaged = records(old)[2].offset
    flip_byte(old, damaged + 20)
    flip_byte(current, records(current)[0].offset + 30)  # the snapshot itself
    code, out, err = run(capsys, "verify", store, "--json")
    envelope = json.loads(out)
    problems = [(s["file"], s["problem"]["offset"]) for s in envelope["result"]["segments"]]
    assert code == ExitCode.FAILED
    assert (envelope["ok"], envelope["exit_code"]) == (False, 1)
    assert envelope["error"]["message"].startswith(f"verify failed: {old} at offset {damaged}")
    assert problems == [(old.name, damaged), (current.name, 44)]
    assert err.count("verify failed") == 2


def test_verify_fails_on_a_change_that_updates_a_missing_object(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    ghost = Task("ghost", "web", meta=ws.Meta(ws.Version(6), 1.0, 1.0))
    offset = append_change(segments(store)[-1], 6, [(2, ghost)])
    code, _out, err = run(capsys, "verify", store)
    assert code == ExitCode.FAILED
    assert f"at offset {offset} (after version 5)" in err
    assert "updates Task 'ghost', which does not exist" in err


def test_verify_with_the_schema_fails_on_a_broken_unique_index(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    # Checksums, versions and ids are fine; only the unique, case-folded name index is not.
    twin = Node("n9", "NODE-1", meta=ws.Meta(ws.Version(6), 1.0, 1.0))
    offset = append_change(segments(store)[-1], 6, [(1, twin)])
    assert run(capsys, "verify", store)[0] == ExitCode.OK
    code, _out, err = run(capsys, "verify", store, "--schema", "tests.schema:SCHEMA")
    assert code == ExitCode.FAILED
    assert f"at offset {offset}" in err
    assert "unique index 'name' already has key 'node-1'" in err


def test_verify_accepts_a_torn_tail_and_says_the_next_open_truncates_it(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    current = segments(store)[-1]
    size = current.stat().st_size
    append_change(current, 6, [(3, Task("t99", "db", meta=ws.Meta(ws.Version(6), 1.0, 1.0)))])
    with open(current, "r+b") as f:
        f.truncate(size + 20)  # the append, cut short by a crash
    code, out, _err = run(capsys, "verify", store)
    assert code == ExitCode.OK
    assert "torn tail of 20 B" in out


def test_verify_of_a_store_with_a_schema_that_does_not_import_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, _out, err = run(capsys, "verify", store, "--schema", "no_such_module:SCHEMA")
    assert code == ExitCode.USAGE
    assert "cannot import 'no_such_module'" in err
    code, _out, err = run(capsys, "verify", store, "--schema", "tests.schema:Task")
    assert code == ExitCode.USAGE
    assert "is a type, not a watchstore.Schema" in err


# -- dump ------------------------------------------------------------------------------------


def test_dump_prints_every_object_of_the_current_state_as_json_lines(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    code, out, _err = run(capsys, "dump", store)
    assert code == ExitCode.OK
    lines = [json.loads(line) for line in out.splitlines()]
    assert {(d["table"], d["object"]["id"]): d["object"] for d in lines} == contents(
        store, anyio_backend
    )
    assert len(lines) == 23


def test_dump_of_one_table(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    _code, out, _err = run(capsys, "dump", store, "--table", "Node")
    assert [json.loads(line)["object"]["id"] for line in out.splitlines()] == ["n0", "n1", "n2"]
    code, _out, err = run(capsys, "dump", store, "--table", "Nope")
    assert code == ExitCode.NOT_FOUND
    assert "no table 'Nope'" in err


def test_dump_from_a_version_prints_the_changes_watch_from_replays(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    code, out, _err = run(capsys, "dump", store, "--from", "1")
    got = [json.loads(line) for line in out.splitlines()]

    async def replayed() -> list[tuple[int, str, str, Any]]:
        async with (
            ws.open_store(SCHEMA, path=store, history=1) as opened,
            opened.watch_from(ws.Version(1), ws.on(Task), ws.on(Node)) as events,
        ):
            found = [events.receive_nowait() for _ in range(events.pending())]
        kinds = {ws.Created: "create", ws.Updated: "update", ws.Deleted: "delete"}
        return [
            (e.version.index, kinds[type(e)], type(e.obj).__name__, encode(e.obj))
            for e in found
            if isinstance(e, ws.Created | ws.Updated | ws.Deleted)
        ]

    assert code == ExitCode.OK
    expected = anyio.run(replayed, backend=anyio_backend)
    assert [(d["version"], d["kind"], d["table"], d["object"]) for d in got] == expected
    assert [d["version"] for d in got] == [2] * 20 + [3, 4, 5]


def test_dump_from_before_every_kept_snapshot_is_not_found(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    async def compact() -> None:
        async with ws.open_store(SCHEMA, path=store, keep_epochs=1) as opened:
            await opened.compact()

    anyio.run(compact, backend=anyio_backend)
    code, _out, err = run(capsys, "dump", store, "--from", "1")
    assert code == ExitCode.NOT_FOUND
    assert "the history before version 5 is compacted" in err


# -- snapshots, rollback, compact ------------------------------------------------------------


def test_snapshots_lists_the_kept_epochs_with_versions_and_times(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    rows = run_json(capsys, "snapshots", store)
    kept = ws.list_epochs(store)
    assert [(r["segment"], r["snapshot_version"], r["created_at"]) for r in rows] == [
        (e.segment, e.version.index, e.created_at) for e in kept
    ]
    assert [r["current"] for r in rows] == [False, True]


def test_rollback_makes_a_kept_snapshot_the_state(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    code, out, _err = run(capsys, "rollback", store, "--to", "2")
    assert code == ExitCode.OK
    assert "rolled back" in out
    state = contents(store, anyio_backend)
    assert ("Task", "t07") in state
    assert ("Task", "t99") not in state
    assert run_json(capsys, "inspect", store)["version"] == 2


def test_rollback_to_a_version_that_is_not_kept_names_the_kept_ones(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, _out, err = run(capsys, "rollback", store, "--to", "4")
    assert code == ExitCode.NOT_FOUND
    assert "no kept snapshot at version 4; the kept ones are at 0, 2" in err


def test_rollback_of_an_open_store_is_refused_as_locked(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    with holder(store, anyio_backend) as child:
        code, _out, err = run(capsys, "rollback", store, "--to", "2")
    assert code == ExitCode.LOCKED
    assert f"is held by pid {child.pid}" in err


def test_compact_needs_the_schema(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    code, _out, err = run(capsys, "compact", store)
    assert code == ExitCode.USAGE
    assert "needs its schema: pass --schema module:ATTR" in err


def test_compact_writes_a_new_epoch_and_keeps_the_state(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    before = contents(store, anyio_backend)
    report = run_json(capsys, "compact", store, "--schema", "tests.schema:SCHEMA", "--keep", "1")
    assert report["version"] == 5
    assert [(e["segment"], e["snapshot_version"]) for e in report["epochs"]] == [(3, 5)]
    assert contents(store, anyio_backend) == before


def test_a_damaged_store_is_recovered_with_snapshots_rollback_and_compact(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    current = segments(store)[-1]
    damaged = records(current)[2].offset  # version 4; the snapshot at 2 is intact
    flip_byte(current, damaged + 20)
    code, _out, err = run(capsys, "inspect", store)
    assert code == ExitCode.FAILED
    assert f"log corrupt in {current} at offset {damaged}" in err
    rows = run_json(capsys, "snapshots", store)
    assert rows[-1]["damage"] == {"offset": damaged, "reason": "record checksum mismatch"}
    assert rows[-1]["last_version"] == 3
    assert run(capsys, "rollback", store, "--to", "2")[0] == ExitCode.OK
    compacted = ("compact", store, "--schema", "tests.schema:SCHEMA", "--keep", "1")
    assert run(capsys, *compacted)[0] == ExitCode.OK
    assert run(capsys, "verify", store)[0] == ExitCode.OK
    assert run_json(capsys, "inspect", store)["version"] == 2


# -- unlock ----------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, anyio, watchstore as ws
    from tests.schema import SCHEMA

    async def main() -> None:
        async with ws.open_store(SCHEMA, path=sys.argv[1]):
            print("open", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)  # hold the lock until killed

    anyio.run(main, backend=sys.argv[2])
    """
)


@contextmanager
def holder(path: Path, backend: str) -> Iterator[subprocess.Popen[str]]:
    """A process that holds the store open (on AnyIO's ``backend``) until the block ends (it
    is then killed)."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), backend],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "open"
        try:
            yield child
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()


def test_unlock_of_a_free_store_does_nothing(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, out, _err = run(capsys, "unlock", store)
    assert (code, out.strip()) == (ExitCode.OK, "not locked: nothing to do")


def test_unlock_clears_the_stale_lock_of_a_killed_holder_without_force(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    with holder(store, anyio_backend) as child:
        pass
    assert ws.lock_status(store).stale
    assert run_json(capsys, "inspect", store)["lock"]["state"] == "stale"
    code, out, _err = run(capsys, "unlock", store)
    assert code == ExitCode.OK
    assert f"cleared a stale lock: pid {child.pid}" in out
    assert ws.lock_status(store) == ws.LockStatus(False, {}, False)


def test_unlock_refuses_a_live_holder_without_force_and_says_why(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    with holder(store, anyio_backend) as child:
        code, _out, err = run(capsys, "unlock", store)
        assert ws.lock_status(store).held
    assert code == ExitCode.LOCKED
    assert f"held by pid {child.pid}" in err
    assert "--force" in err
    assert "corrupts the store" in err


def test_unlock_with_force_removes_a_live_holders_lock(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    with holder(store, anyio_backend):
        code, out, _err = run(capsys, "unlock", store, "--force")
        assert not ws.lock_status(store).held
    assert code == ExitCode.OK
    assert out.startswith("removed the lock held by pid")


# -- encryption, usage, help -----------------------------------------------------------------


def test_an_encrypted_store_needs_its_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, anyio_backend: str
) -> None:
    path = tmp_path / "store"
    anyio.run(build, path, KEY, backend=anyio_backend)
    key_file = tmp_path / "key"
    key_file.write_text(KEY.hex() + "\n")
    code, _out, err = run(capsys, "inspect", path)
    assert code == ExitCode.UNREADABLE
    assert "is encrypted: pass its key with --key-file" in err
    assert run_json(capsys, "verify", path, "--key-file", key_file)["records"] == 7
    key_file.write_bytes(bytes(32))
    code, _out, err = run(capsys, "inspect", path, "--key-file", key_file)
    assert code == ExitCode.UNREADABLE
    assert "wrong encryption key" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _err = run(capsys, command, "--help")
    assert code == ExitCode.OK
    assert out.startswith(f"usage: watchstore {command}")
    assert "exit codes:" in out


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys)
    assert code == ExitCode.USAGE
    assert "usage: watchstore" in err


def test_errors_are_json_too_with_json(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    code, out, _err = run(capsys, "rollback", store, "--to", "4", "--json")
    assert code == ExitCode.NOT_FOUND
    assert json.loads(out) == {
        "ok": False,
        "exit_code": 4,
        "error": {
            "message": f"no kept snapshot at version 4; the kept ones are at 0, 2 (see "
            f"`watchstore snapshots {store}`)",
            "kept": [0, 2],
        },
    }


# -- as a real process -----------------------------------------------------------------------


def python_m(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchstore", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "COLUMNS": "100"},
    )


def test_python_m_watchstore_verify_exits_1_on_a_corrupted_store(store: Path) -> None:
    assert python_m("verify", store, "--schema", "tests.schema:SCHEMA").returncode == 0
    segment = segments(store)[-1]
    damaged = records(segment)[2]
    flip_byte(segment, damaged.offset + 15)
    done = python_m("verify", store)
    assert done.returncode == 1
    assert f"{segment} at offset {damaged.offset} (after version 3)" in done.stderr


def test_python_m_watchstore_inspect_json(store: Path) -> None:
    done = python_m("inspect", store, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["tables"] == {"Task": 20, "Node": 3}


# -- demo ------------------------------------------------------------------------------------


def test_the_demo_is_found_in_an_installed_package(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "watchstore"
    (package / "examples").mkdir(parents=True)
    (package / "examples" / "scheduler.py").write_text("")
    assert locate_demo(package) == package / "examples" / "scheduler.py"


def test_the_demo_is_found_in_a_source_tree_only(tmp_path: Path) -> None:
    package = tmp_path / "watchstore"
    package.mkdir()
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "scheduler.py").write_text("")
    assert locate_demo(package) is None  # an examples/ beside it, but no project: not ours
    (tmp_path / "pyproject.toml").write_text("")
    assert locate_demo(package) == tmp_path / "examples" / "scheduler.py"


def test_the_demo_runs_as_a_script_with_its_arguments(tmp_path: Path) -> None:
    script = tmp_path / "scheduler.py"
    script.write_text(
        textwrap.dedent(
            """
            import pathlib, sys
            if __name__ == "__main__":
                pathlib.Path(sys.argv[2], "ran").write_text(" ".join(sys.argv[1:]))
                raise SystemExit(7)
            """
        )
    )
    assert run_script(script, ["--path", str(tmp_path)]) == 7
    assert (tmp_path / "ran").read_text() == f"--path {tmp_path}"


def test_watchstore_demo_runs_the_scheduler_demo_and_the_next_run_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "demo-state"
    assert main(["demo", "--path", str(state)]) == ExitCode.OK
    first = capsys.readouterr().out
    assert main(["demo", "--path", str(state)]) == ExitCode.OK
    second = capsys.readouterr().out
    assert first != second  # the second run found the first one's state
    assert state.is_dir()
