"""The ``watchstore`` command's newer commands and behaviours, against real stores, real
processes and real pipes: get, watch, load, backup and restore, salvage, --version,
completion, the --json envelope, a reader that goes away, and running without rich.

(tests/test_cli.py covers inspect, verify, dump, snapshots, rollback, compact, unlock and
demo; tests/test_cli_etcd.py the commands on a store on etcd.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Task
from tests.test_cli import build, contents, flip_byte, records, run, run_json, segments
from watchstore.cli.main import ExitCode
from watchstore.log.records import parse_header, record_size

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).parent.parent
WAIT = 60


@pytest.fixture
def store(tmp_path: Path, anyio_backend: str) -> Path:
    """A durable store of tests/schema.py at version 5, in two segments."""
    path = tmp_path / "store"
    anyio.run(build, path, backend=anyio_backend)
    return path


def watchstore(*argv: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m watchstore ARGV`` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "watchstore", *map(str, argv)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=WAIT,
    )


def envelope(done: subprocess.CompletedProcess[str]) -> Any:
    """The --json result of a child that succeeded."""
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["ok"], answer["exit_code"]) == (True, 0)
    return answer["result"]


WRITER = textwrap.dedent(
    """
    import sys, anyio, watchstore as ws
    from tests.schema import SCHEMA, Task

    async def main() -> None:
        path, backend, mode = sys.argv[1:4]
        async with ws.open_store(SCHEMA, path=path, keep_epochs=3) as store:
            print("open", store.version.index, flush=True)
            if mode == "loop":  # commit without pause until stdin closes
                stop = anyio.Event()

                async def until_stdin_ends() -> None:
                    await anyio.to_thread.run_sync(sys.stdin.read)
                    stop.set()

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(until_stdin_ends)
                    i = 0
                    while not stop.is_set():
                        await store.update(lambda tx: tx.create(Task(f"w{i:06d}", "web", slot=i)))
                        i += 1
                        if i == 20:
                            print("writing", flush=True)
                        if i % 100 == 0:  # segments switch and retire meanwhile too
                            await store.compact()
                print("stopped", store.version.index, flush=True)
                return
            while line := await anyio.to_thread.run_sync(sys.stdin.readline):
                what, _, id = line.split()[0], None, line.split()[-1]
                if what == "create":
                    await store.update(lambda tx: tx.create(Task(id, "web")))
                elif what == "delete":
                    await store.update(lambda tx: tx.delete(Task, id))
                elif what == "compact":
                    await store.compact()
                print("done", store.version.index, flush=True)

    anyio.run(main, backend=sys.argv[2])
    """
)


@contextmanager
def writer(path: Path, backend: str, mode: str) -> Iterator[subprocess.Popen[str]]:
    """Another process with the store open (see WRITER), until the block ends. In
    ``loop`` mode it commits (and compacts every 100 commits) until its stdin closes."""
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), backend, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().startswith("open")
        try:
            yield child
        finally:
            child.kill()
            child.wait()


def tell(child: subprocess.Popen[str], line: str) -> str:
    """Send a WRITER in line mode one command; its answer."""
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(line + "\n")
    child.stdin.flush()
    return child.stdout.readline().strip()


# -- --version, help, completion -------------------------------------------------------------


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert ws.__version__ == version("watchstore")
    code, out, _err = run(capsys, "--version")
    assert (code, out) == (ExitCode.OK, f"watchstore {ws.__version__}\n")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_prints_a_script_the_shell_accepts(tmp_path: Path, shell: str) -> None:
    done = watchstore("completion", shell)
    assert done.returncode == 0, done.stderr
    for command in ("inspect", "backup", "restore", "watch", "salvage", "load", "get"):
        assert command in done.stdout
    if shell == "bash":
        script = tmp_path / "watchstore.bash"
        script.write_text(done.stdout)
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        # Loaded into a shell, it completes the commands.
        probe = (
            f"source {script}; COMP_WORDS=(watchstore ba); COMP_CWORD=1; "
            "_shtab_watchstore; echo ${COMPREPLY[@]}"
        )
        loaded = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
        assert loaded.stdout.split() == ["backup"], loaded.stderr
        # A store's PATH completes to directories, a backup FILE to files too.
        (tmp_path / "state").mkdir()
        (tmp_path / "state.wsbackup").write_text("")
        for words, expected in [
            ("watchstore inspect st", ["state"]),  # directories only
            ("watchstore restore st", ["state", "state.wsbackup"]),
        ]:
            probe = (
                f"cd {tmp_path}; source {script}; COMP_WORDS=({words}); COMP_CWORD=2; "
                "_shtab_watchstore; printf '%s\\n' \"${COMPREPLY[@]}\""
            )
            loaded = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
            assert sorted(loaded.stdout.split()) == expected, (words, loaded.stderr)
    else:
        assert done.stdout.startswith("#compdef watchstore")


# -- the envelope, exit codes, pipes ---------------------------------------------------------


def test_every_command_answers_json_in_one_envelope(
    capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "b.wsbackup"
    commands: list[list[str | Path]] = [
        ["inspect", store],
        ["verify", store],
        ["snapshots", store],
        ["dump", store],
        ["get", store, "Task", "t05"],
        ["backup", store, backup],
        ["restore", backup, tmp_path / "restored"],
        ["unlock", store],
        ["compact", store, "--schema", "tests.schema:SCHEMA"],
        ["rollback", store, "--to", "5"],
        ["salvage", store, "--schema", "tests.schema:SCHEMA"],
    ]
    for argv in commands:
        code, out, err = run(capsys, *argv, "--json")
        answer = json.loads(out)
        assert (code, set(answer)) == (0, {"ok", "exit_code", "result"}), (argv, err)
        assert (answer["ok"], answer["exit_code"]) == (True, 0)
    code, out, _err = run(capsys, "get", store, "Task", "nope", "--json")
    assert json.loads(out) == {
        "ok": False,
        "exit_code": 4,
        "error": {"message": "no Task 'nope' in the store (at version 5)", "version": 5},
    }


def test_a_usage_error_is_in_the_envelope_too_with_json(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, out, err = run(capsys, "rollback", store, "--json")
    assert code == ExitCode.USAGE
    assert json.loads(out) == {
        "ok": False,
        "exit_code": 2,
        "error": {"message": "rollback: the following arguments are required: --to"},
    }
    assert err.startswith("usage: watchstore rollback")
    assert "watchstore rollback: error: the following arguments are required: --to" in err
    code, out, err = run(capsys, "get", store, "Task", "--json")  # no ID
    assert code == ExitCode.USAGE
    assert json.loads(out)["error"]["message"] == (
        "get takes PATH TABLE ID, or --etcd URL --prefix P TABLE ID"
    )


def test_unlock_of_a_directory_without_a_store_is_not_found(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _out, err = run(capsys, "unlock", tmp_path)
    assert code == ExitCode.NOT_FOUND
    assert "holds no watchstore store" in err


def test_dump_into_a_pipe_whose_reader_goes_away_ends_quietly_with_0(tmp_path: Path) -> None:
    path = tmp_path / "store"

    async def fill() -> None:
        async with ws.open_store(SCHEMA, path=path) as opened:
            await opened.update(
                lambda tx: [tx.create(Task(f"t{i:05d}", "w" * 200)) for i in range(5000)]
            )

    anyio.run(fill)
    with subprocess.Popen(
        [sys.executable, "-m", "watchstore", "dump", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    ) as dump:
        assert dump.stdout is not None
        assert dump.stderr is not None
        first = dump.stdout.readline()  # as `head -1` does: one line, then the pipe closes
        dump.stdout.close()
        err = dump.stderr.read()
        assert dump.wait(timeout=WAIT) == 0
    assert json.loads(first)["object"]["id"] == "t00000"
    assert err == b""


@pytest.mark.parametrize(
    "argv",
    [["inspect"], ["verify"], ["snapshots"], ["dump"], ["dump", "--json"], ["get", "Task", "t05"]],
)
@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_a_reader_gone_before_anything_was_written_ends_every_command_quietly(
    store: Path, argv: list[str], rich: bool
) -> None:
    script = (
        "import sys; from watchstore.cli.main import main; raise SystemExit(main(sys.argv[1:]))"
    )
    if not rich:
        script = "import sys; sys.modules['rich'] = None; " + script
    reader, writer_end = os.pipe()
    os.close(reader)  # the reader is gone: the command's first write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, argv[0], str(store), *argv[1:]],
            stdout=writer_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=WAIT,
            check=False,
        )
    finally:
        os.close(writer_end)
    assert (done.returncode, done.stderr) == (0, "")


def test_without_rich_the_commands_print_plain_tables(store: Path) -> None:
    script = (
        "import sys; sys.modules['rich'] = None; "
        "from watchstore.cli.main import main; raise SystemExit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "inspect", str(store)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=WAIT,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert "Tables" in lines
    assert any(line.split() == ["Task", "20"] for line in lines)
    assert any(line.split()[:2] == ["version", "5"] for line in lines)
    completion = subprocess.run(
        [sys.executable, "-c", script.replace("'rich'", "'shtab'"), "completion", "bash"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=WAIT,
        check=False,
    )
    assert completion.returncode == ExitCode.ERROR
    assert "pip install 'watchstore[cli]'" in completion.stderr


# -- inspect of an open store ----------------------------------------------------------------


def test_inspect_of_an_open_store_reports_the_zeros_written_ahead_not_a_torn_tail(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    with writer(store, anyio_backend, "lines") as child:
        assert tell(child, "create x1") == "done 6"
        report = run_json(capsys, "inspect", store)
        code, out, _err = run(capsys, "inspect", store)
        on_disk = segments(store)[-1].stat().st_size
    assert code == ExitCode.OK
    assert [e["torn_tail"] for e in report["epochs"]] == [0, 0]
    # The zeros after the last commit: about a MiB (PREALLOCATE, less the commit after them).
    assert (1 << 20) - 4096 < report["written_ahead"] <= 1 << 20
    assert report["epochs"][-1]["size"] + report["written_ahead"] == on_disk
    assert "torn tail" not in out
    assert "written ahead" in out


# -- get -------------------------------------------------------------------------------------


def test_get_prints_one_object_as_stored(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    code, out, _err = run(capsys, "get", store, "Task", "t05")
    assert code == ExitCode.OK
    assert json.loads(out) == contents(store, anyio_backend)["Task", "t05"]
    result = run_json(capsys, "get", store, "Node", "n1")
    assert result == {
        "version": 5,
        "table": "Node",
        "object": contents(store, anyio_backend)["Node", "n1"],
    }


def test_get_of_an_absent_object_or_table_is_not_found(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, _out, err = run(capsys, "get", store, "Task", "t07")  # deleted at version 4
    assert code == ExitCode.NOT_FOUND
    assert "no Task 't07' in the store (at version 5)" in err
    code, _out, err = run(capsys, "get", store, "Nope", "x")
    assert code == ExitCode.NOT_FOUND
    assert "no table 'Nope'" in err


# -- backup and restore ----------------------------------------------------------------------


def test_backup_and_restore_make_an_equal_store_that_verifies(
    capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path, anyio_backend: str
) -> None:
    backup = tmp_path / "store.wsbackup"
    code, out, _err = run(capsys, "backup", store, backup)
    assert code == ExitCode.OK
    assert out.startswith(f"backed up {store} at version 5 to {backup}")
    restored = tmp_path / "restored"
    result = run_json(capsys, "restore", backup, restored)
    assert (result["version"], result["segments"]) == (5, ["00000001.wslog", "00000002.wslog"])
    assert run(capsys, "verify", restored, "--schema", "tests.schema:SCHEMA")[0] == ExitCode.OK
    assert contents(restored, anyio_backend) == contents(store, anyio_backend)
    # The history is kept too: the changes after version 1, as the source has them.
    assert (
        run(capsys, "dump", restored, "--from", "1")[1]
        == run(capsys, "dump", store, "--from", "1")[1]
    )


async def test_a_backup_streams_the_segments_it_copies(tmp_path: Path) -> None:
    # 20 MiB of history over a state of one small object: the copy goes through in chunks
    # (never a segment, let alone every segment, in memory at once) and restores equal. It
    # holds no more than a few chunks beyond what checking the segment's records holds
    # (read_epoch keeps the changes it decoded).
    import tracemalloc

    import attrs

    from watchstore.log.backup import restore_backup, write_backup
    from watchstore.log.rawlog import read_epoch
    from watchstore.log.records import CHUNK

    path = tmp_path / "big"
    async with ws.open_store(SCHEMA, path=path, compact_bytes=1 << 40) as source:
        task = await source.update(lambda tx: tx.create(Task("t", "s" * 8192)))
        for i in range(3000):
            task = await source.update(
                lambda tx, t=task, i=i: tx.update(attrs.evolve(t, slot=i))  # type: ignore[misc]
            )
    history = sum(f.stat().st_size for f in segments(path))
    assert history > 20 << 20
    backup = tmp_path / "big.wsbackup"

    def peak_of(fn: Callable[[], object]) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    checking = peak_of(lambda: [read_epoch(file, None) for file in segments(path)])
    info = write_backup(path, backup)
    assert info.version == 3001
    copying = peak_of(lambda: write_backup(path, backup))
    assert copying < checking + 4 * CHUNK, f"the backup held {copying} bytes at once"
    restored = restore_backup(backup, tmp_path / "restored")
    assert restored.version == 3001
    async with ws.open_store(SCHEMA, path=tmp_path / "restored") as copy:
        assert copy.view(lambda tx: tx.get(Task, "t")) == task


def test_backup_of_a_store_another_process_writes_restores_a_consistent_copy(
    store: Path, tmp_path: Path, anyio_backend: str
) -> None:
    backup = tmp_path / "live.wsbackup"
    with writer(store, anyio_backend, "loop") as child:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == "writing"
        result = envelope(watchstore("backup", store, backup, "--json"))
        child.stdin.close()
        stopped = child.stdout.readline().split()
    assert stopped[0] == "stopped"
    assert 5 + 20 <= result["version"] < int(stopped[1])  # taken while the writer wrote
    restored = tmp_path / "restored"
    envelope(watchstore("restore", backup, restored, "--json"))
    assert watchstore("verify", restored, "--schema", "tests.schema:SCHEMA").returncode == 0
    # Equal to the source as it was at the backup's version: the writer only creates, each
    # object stamped with its commit's version.
    source = contents(store, anyio_backend)
    expected = {key: obj for key, obj in source.items() if obj["meta"][0] <= result["version"]}
    assert contents(restored, anyio_backend) == expected
    assert run_inspect_version(restored) == result["version"]


def run_inspect_version(path: Path) -> int:
    version: int = envelope(watchstore("inspect", path, "--json"))["version"]
    return version


def test_restore_refuses_a_directory_that_exists(
    capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "b.wsbackup"
    assert run(capsys, "backup", store, backup)[0] == ExitCode.OK
    (tmp_path / "there").mkdir()
    code, _out, err = run(capsys, "restore", backup, tmp_path / "there")
    assert code == ExitCode.USAGE
    assert "exists: restore makes a new store directory" in err


@pytest.mark.parametrize(
    ("damage", "offset", "reason"),
    [
        ("magic", 0, "magic b'xxbackup'"),
        ("head", 20, "head checksum mismatch"),
        ("segment", -1, "segment 00000002.wslog: checksum mismatch"),
        ("cut", -1, "it was cut short"),
        ("appended", -1, "has bytes after its end"),
        ("empty", 0, "shorter than its preamble"),
    ],
)
def test_restore_of_a_damaged_backup_names_the_file_and_offset(
    store: Path, tmp_path: Path, damage: str, offset: int, reason: str
) -> None:
    backup = tmp_path / "b.wsbackup"
    assert watchstore("backup", store, backup).returncode == 0
    data = bytearray(backup.read_bytes())
    size = len(data)
    if damage == "magic":
        data[0:2] = b"xx"
    elif damage == "head":
        data[30] ^= 1
    elif damage == "segment":
        data[-10] ^= 1
        offset = size - segments(store)[-1].stat().st_size
    elif damage == "cut":
        data = data[:-3]
        offset = size - 3
    elif damage == "appended":
        data += b"\0"
        offset = size
    else:
        data = bytearray()
    backup.write_bytes(bytes(data))
    done = watchstore("restore", backup, tmp_path / "restored")
    assert done.returncode == ExitCode.FAILED
    assert f"backup corrupt: {backup} at offset {offset}: not a valid watchstore backup" in (
        done.stderr
    )
    assert "nothing was restored" in done.stderr
    assert reason in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "restored").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_restore_checks_every_record_of_a_backup_whose_checksums_were_rewritten(
    store: Path, tmp_path: Path
) -> None:
    """A hostile backup with a consistent head but a damaged record inside a segment."""
    backup = tmp_path / "b.wsbackup"
    assert watchstore("backup", store, backup).returncode == 0
    data = bytearray(backup.read_bytes())
    first = segments(store)[0]
    length = int.from_bytes(data[12:16], "little")
    start = 20 + length
    record = records(first)[1].offset
    data[start + record + 20] ^= 1  # a record's body: its own checksum fails
    head = json.loads(data[20:start])
    from crc32c import crc32c

    segment_size = head["segments"][0]["size"]
    head["segments"][0]["crc32c"] = crc32c(bytes(data[start : start + segment_size]))
    new_head = json.dumps(head, sort_keys=True).encode()
    data[20:start] = new_head
    data[12:16] = len(new_head).to_bytes(4, "little")
    data[16:20] = crc32c(new_head).to_bytes(4, "little")
    backup.write_bytes(bytes(data))
    done = watchstore("restore", backup, tmp_path / "restored")
    assert done.returncode == ExitCode.FAILED
    offset = 20 + len(new_head) + record
    assert f"{backup} at offset {offset}" in done.stderr
    assert f"segment 00000001.wslog at offset {record}: record checksum mismatch" in done.stderr


# -- load ------------------------------------------------------------------------------------


def test_load_of_a_dump_round_trips_exactly(
    capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path, anyio_backend: str
) -> None:
    dumped = watchstore("dump", store)
    assert dumped.returncode == 0
    loaded = tmp_path / "loaded"
    done = watchstore("load", loaded, "--schema", "tests.schema:SCHEMA", stdin=dumped.stdout)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"loaded 23 objects into {loaded} at version 5\n"
    assert watchstore("dump", loaded).stdout == dumped.stdout
    assert contents(loaded, anyio_backend) == contents(store, anyio_backend)
    assert run(capsys, "verify", loaded, "--schema", "tests.schema:SCHEMA")[0] == ExitCode.OK


def test_load_json_reports_the_tables(store: Path, tmp_path: Path) -> None:
    dumped = watchstore("dump", store).stdout
    done = watchstore(
        "load", tmp_path / "l", "--schema", "tests.schema:SCHEMA", "--json", stdin=dumped
    )
    assert envelope(done) == {
        "path": str(tmp_path / "l"),
        "version": 5,
        "tables": {"Task": 20, "Node": 3},
    }


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "Expecting value"),
        ('{"table": "Task"}', 'a line is {"table": NAME, "object": {...}}'),
        ('{"table": "Nope", "object": {}}', "no table 'Nope' in the schema"),
        ('{"table": "Task", "object": {"id": "x", "service_id": 3}}', "service_id"),
        (
            '{"table": "Node", "object": {"id": "n9", "name": "NODE-1", "meta": [1, 0, 0]}}',
            "unique",
        ),
        (
            '{"table": "Task", "object": {"id": "t00", "service_id": "a", "meta": [1, 0, 0]}}',
            "twice",
        ),
        ('{"table": "Task", "object": {"id": "x", "service_id": "a"}}', "no version"),
    ],
)
def test_load_refuses_invalid_input_naming_the_line_and_writes_nothing(
    store: Path, tmp_path: Path, line: str, reason: str
) -> None:
    dumped = watchstore("dump", store).stdout
    loaded = tmp_path / "loaded"
    done = watchstore("load", loaded, "--schema", "tests.schema:SCHEMA", stdin=dumped + line + "\n")
    assert done.returncode == ExitCode.FAILED
    assert f"stdin line {dumped.count(chr(10)) + 1}: " in done.stderr
    assert reason in done.stderr
    assert "nothing was loaded" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_load_into_a_store_is_refused(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    done = watchstore("load", store, "--schema", "tests.schema:SCHEMA", stdin="")
    assert done.returncode == ExitCode.USAGE
    assert "is not empty: load makes a new store" in done.stderr


# -- salvage ---------------------------------------------------------------------------------


def test_salvage_keeps_the_valid_prefix_and_reports_the_lost_versions(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    current = segments(store)[-1]
    damaged = records(current)[2].offset  # version 4
    flip_byte(current, damaged + 20)
    assert run(capsys, "inspect", store)[0] == ExitCode.FAILED
    code, out, _err = run(capsys, "salvage", store, "--schema", "tests.schema:SCHEMA")
    assert code == ExitCode.OK
    assert f"damage in {current} at offset {damaged}: record checksum mismatch" in out
    assert "kept every version up to 3; lost versions: 4, 5" in out
    copies = list(store.glob("*.damaged-*"))
    assert len(copies) == 1
    assert f"kept aside as {copies[0]}" in out
    assert run_json(capsys, "inspect", store)["version"] == 3
    assert ("Task", "t07") in contents(store, anyio_backend)  # its delete, version 4, is lost
    result = run_json(capsys, "salvage", store, "--schema", "tests.schema:SCHEMA")
    assert result == {"path": str(store), "version": 3, "salvaged": False}


def test_salvage_json_reports_the_damage(capsys: pytest.CaptureFixture[str], store: Path) -> None:
    current = segments(store)[-1]
    damaged = records(current)[2].offset
    flip_byte(current, damaged + 20)
    result = run_json(capsys, "salvage", store, "--schema", "tests.schema:SCHEMA")
    assert result["salvaged"] is True
    assert (result["kept"], result["lost"]) == (3, [4, 5])
    assert (result["file"], result["offset"]) == (str(current), damaged)
    assert Path(result["copy"]).read_bytes() != current.read_bytes()


def test_salvage_needs_the_schema_and_a_closed_store(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    code, _out, err = run(capsys, "salvage", store)
    assert code == ExitCode.USAGE
    assert "--schema module:ATTR" in err
    with writer(store, anyio_backend, "lines"):
        code, _out, err = run(capsys, "salvage", store, "--schema", "tests.schema:SCHEMA")
    assert code == ExitCode.LOCKED


# -- watch -----------------------------------------------------------------------------------


@contextmanager
def watching(*argv: str | Path) -> Iterator[subprocess.Popen[str]]:
    """``watchstore watch ARGV`` in a child, once it says it watches."""
    with subprocess.Popen(
        [sys.executable, "-m", "watchstore", "watch", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as child:
        assert child.stderr is not None
        started = child.stderr.readline()
        assert started.startswith("watching"), started + child.stderr.read()
        try:
            yield child
        finally:
            child.kill()
            child.wait()


def test_watch_follows_the_commits_of_another_process(store: Path, anyio_backend: str) -> None:
    with (
        writer(store, anyio_backend, "lines") as child,
        watching(store, "--count", "3", "--interval", "0.01") as watch,
    ):
        assert tell(child, "create a") == "done 6"
        assert tell(child, "compact") == "done 6"  # the watch moves to the new segment
        assert tell(child, "create b") == "done 7"
        assert tell(child, "delete a") == "done 8"
        out, err = watch.communicate(timeout=WAIT)
        assert watch.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["version"], d["kind"], d["table"], d["object"]["id"]) for d in lines] == [
        (6, "create", "Task", "a"),
        (7, "create", "Task", "b"),
        (8, "delete", "Task", "a"),
    ]
    assert lines[0]["object"]["meta"][0] == 6


def test_watch_json_gives_each_line_its_envelope(store: Path, anyio_backend: str) -> None:
    with (
        writer(store, anyio_backend, "lines") as child,
        watching(store, "--count", "1", "--interval", "0.01", "--json") as watch,
    ):
        assert tell(child, "create a") == "done 6"
        out, _err = watch.communicate(timeout=WAIT)
    (line,) = out.splitlines()
    answer = json.loads(line)
    assert (answer["ok"], answer["exit_code"]) == (True, 0)
    assert (answer["result"]["version"], answer["result"]["kind"]) == (6, "create")


def test_watch_of_a_rolled_back_store_gives_a_resync(store: Path, anyio_backend: str) -> None:
    with watching(store, "--count", "1", "--interval", "0.01") as watch:
        ws.rollback(store, ws.Version(2))
        out, _err = watch.communicate(timeout=WAIT)
    lines = [json.loads(line) for line in out.splitlines()]
    assert {(d["kind"], d["object"]["id"]) for d in lines} == {
        ("update", "t05"),
        ("create", "t07"),
        ("delete", "t99"),
    }
    assert all(d["resync"] is True and d["version"] == 2 for d in lines)


# -- encryption, progress --------------------------------------------------------------------


def test_backup_and_restore_of_an_encrypted_store_need_its_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, anyio_backend: str
) -> None:
    from tests.test_cli import KEY

    path = tmp_path / "secret"
    anyio.run(build, path, KEY, backend=anyio_backend)
    key_file = tmp_path / "key"
    key_file.write_text(KEY.hex())
    backup = tmp_path / "secret.wsbackup"
    code, _out, err = run(capsys, "backup", path, backup)
    assert code == ExitCode.UNREADABLE
    assert "is encrypted: pass its key with --key-file" in err
    assert run_json(capsys, "backup", path, backup, "--key-file", key_file)["encrypted"] is True
    assert KEY.hex().encode() not in backup.read_bytes()
    restored = tmp_path / "restored"
    assert run(capsys, "restore", backup, restored)[0] == ExitCode.UNREADABLE
    assert not restored.exists()
    assert run(capsys, "restore", backup, restored, "--key-file", key_file)[0] == ExitCode.OK
    assert run(capsys, "verify", restored, "--key-file", key_file)[0] == ExitCode.OK
    assert (
        run(capsys, "dump", restored, "--key-file", key_file)[1]
        == (run(capsys, "dump", path, "--key-file", key_file)[1])
    )


def test_long_work_shows_progress_on_stderr_only_when_it_is_a_terminal(
    store: Path, tmp_path: Path
) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "watchstore", "backup", str(store), str(tmp_path / "b")],
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            cwd=REPO,
            timeout=WAIT,
            check=False,
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert b"backing up" in shown  # rich's bar, drawn on the terminal then cleared
    assert done.stdout.startswith("backed up")
    piped = watchstore("backup", store, tmp_path / "c")
    assert (piped.returncode, piped.stderr) == (0, "")


def test_a_torn_append_in_the_zeros_written_ahead_is_counted_apart_from_them(
    capsys: pytest.CaptureFixture[str], store: Path, anyio_backend: str
) -> None:
    """A crash (or an append still being written) leaves the start of a record in the zeros
    written ahead: the torn tail is that start (a record head at least: 21 bytes in format
    2), not the zeros after it."""
    with writer(store, anyio_backend, "lines") as child:
        assert tell(child, "create x1") == "done 6"
    current = segments(store)[-1]  # killed: its zeros written ahead are still there
    end = records(current)[-1]
    data = current.read_bytes()
    record_end = end.offset + record_size(len(end.body), parse_header(data))
    assert data[record_end:] == bytes(len(data) - record_end)
    with open(current, "r+b") as f:
        f.seek(record_end)
        f.write(b"\x7f" * 10)  # the start of a head, cut short
    report = run_json(capsys, "inspect", store)
    assert report["epochs"][-1]["torn_tail"] == 21
    assert report["written_ahead"] == len(data) - record_end - 21
    assert report["epochs"][-1]["size"] == record_end + 21
