"""The ``watchstore`` command on a store that lives on etcd (``--etcd URL --prefix P`` in
place of PATH): inspect, dump, get and watch, against a real etcd member."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs

import watchstore as ws
from tests.etcd_cluster import EtcdCluster, require_etcd
from tests.schema import SCHEMA, Node, State, Task
from tests.test_cli import run, run_json
from watchstore.cli.main import ExitCode
from watchstore.core.codec import encode

if TYPE_CHECKING:
    import pytest

REPO = Path(__file__).parent.parent
WAIT = 60

require_etcd()


def fill(endpoints: list[str], prefix: str, backend: str) -> dict[tuple[str, str], Any]:
    """Three nodes and five tasks on etcd (one updated); the store's objects, encoded."""

    async def write() -> dict[tuple[str, str], Any]:
        async with ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as store:
            await store.update(lambda tx: [tx.create(Node(f"n{i}", f"node-{i}")) for i in range(3)])
            await store.update(lambda tx: [tx.create(Task(f"t{i}", "web")) for i in range(5)])
            task = store.view(lambda tx: tx.get(Task, "t2"))
            assert task is not None
            await store.update(lambda tx: tx.update(attrs.evolve(task, state=State.RUNNING)))
            tables: list[type[Any]] = [Task, Node]
            return store.view(
                lambda tx: {(c.__name__, o.id): encode(o) for c in tables for o in tx.all(c)}
            )

    return anyio.run(write, backend=backend)


def test_inspect_of_a_store_on_etcd(
    capsys: pytest.CaptureFixture[str], single: EtcdCluster, prefix: str, anyio_backend: str
) -> None:
    objects = fill(single.endpoints, prefix, anyio_backend)
    result = run_json(capsys, "inspect", "--etcd", single.endpoints[0], "--prefix", prefix)
    assert result["tables"] == {"Node": 3, "Task": 5}
    assert result["version"] >= max(obj["meta"][0] for obj in objects.values())
    assert result["server_version"].startswith("3.")
    code, out, _err = run(capsys, "inspect", "--etcd", single.endpoints[0], "--prefix", prefix)
    assert code == ExitCode.OK
    assert "Tables" in out
    assert "Task" in out


def test_dump_and_get_of_a_store_on_etcd_give_the_objects_as_the_store_reads_them(
    capsys: pytest.CaptureFixture[str], single: EtcdCluster, prefix: str, anyio_backend: str
) -> None:
    objects = fill(single.endpoints, prefix, anyio_backend)
    etcd = ("--etcd", single.endpoints[0], "--prefix", prefix)
    code, out, _err = run(capsys, "dump", *etcd)
    assert code == ExitCode.OK
    lines = [json.loads(line) for line in out.splitlines()]
    assert {(d["table"], d["object"]["id"]): d["object"] for d in lines} == objects
    code, out, _err = run(capsys, "get", *etcd, "Task", "t2")
    assert code == ExitCode.OK
    assert json.loads(out) == objects["Task", "t2"]
    assert run_json(capsys, "get", *etcd, "Node", "n1")["object"] == objects["Node", "n1"]
    code, _out, err = run(capsys, "get", *etcd, "Task", "nope")
    assert code == ExitCode.NOT_FOUND
    assert "no Task 'nope' in the store" in err


def test_path_and_etcd_go_one_without_the_other(
    capsys: pytest.CaptureFixture[str], single: EtcdCluster, tmp_path: Path
) -> None:
    code, _out, err = run(
        capsys, "inspect", tmp_path, "--etcd", single.endpoints[0], "--prefix", "p"
    )
    assert (code, "either PATH or --etcd" in err) == (ExitCode.USAGE, True)
    code, _out, err = run(capsys, "inspect", "--etcd", single.endpoints[0])
    assert (code, "needs --prefix" in err) == (ExitCode.USAGE, True)
    code, _out, err = run(capsys, "inspect")
    assert (code, "give PATH" in err) == (ExitCode.USAGE, True)


def test_an_etcd_that_does_not_answer_is_an_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from watchstore.testing.etcd import free_ports

    (port,) = free_ports(1)
    code, _out, err = run(capsys, "inspect", "--etcd", f"http://127.0.0.1:{port}", "--prefix", "p")
    assert code == ExitCode.ERROR
    assert "no etcd endpoint answered" in err
    assert "Traceback" not in err


def test_watch_of_a_store_on_etcd_sees_another_process_commit(
    single: EtcdCluster, prefix: str, anyio_backend: str
) -> None:
    fill(single.endpoints, prefix, anyio_backend)
    argv = ["watch", "--etcd", single.endpoints[0], "--prefix", prefix, "--count", "2"]
    with subprocess.Popen(
        [sys.executable, "-m", "watchstore", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as watch:
        assert watch.stderr is not None
        assert watch.stderr.readline().startswith("watching")

        async def commit() -> list[int]:
            async with ws.open_store(SCHEMA, etcd=single.endpoints, prefix=prefix) as store:
                await store.update(lambda tx: tx.create(Task("t9", "db")))
                made = store.version.index
                await store.update(lambda tx: tx.delete(Node, "n0"))
                return [made, store.version.index]

        versions = anyio.run(commit, backend=anyio_backend)
        out, err = watch.communicate(timeout=WAIT)
    assert watch.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["version"], d["kind"], d["table"], d["object"]["id"]) for d in lines] == [
        (versions[0], "create", "Task", "t9"),
        (versions[1], "delete", "Node", "n0"),
    ]
