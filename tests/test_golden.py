"""Golden files: logs written by each released format version keep opening, exactly.

``tests/golden/v1/store`` was written by format 1, ``tests/golden/v2/store`` by format 2 (two
epochs: a compaction after version 2; see docs/format.md). Older formats load through the
migration chain; none of these files is ever regenerated.
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import attrs
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, State, Task
from watchstore.log.records import parse_header

GOLDEN = pathlib.Path(__file__).parent / "golden"
CREATED_NODES = 1795367199.5152502
CREATED_TASKS = 1795367199.5159738


def expected_v1() -> tuple[list[Node], list[Task]]:
    nodes_meta = ws.Meta(ws.Version(1), CREATED_NODES, CREATED_NODES)
    tasks_meta = ws.Meta(ws.Version(2), CREATED_TASKS, CREATED_TASKS)
    nodes = [
        Node("n1", "Web-1", frozenset({"ssd", "gpu"}), nodes_meta),
        Node("n2", "db-1", frozenset(), nodes_meta),
    ]
    tasks = [
        Task(
            "t0",
            "svc",
            "n2",
            State.ASSIGNED,
            0,
            ws.Meta(ws.Version(3), CREATED_TASKS, 1795367199.5164738),
        ),
        Task("t1", "svc", "n1", State.RUNNING, 1, tasks_meta),
        Task("t2", "svc", None, State.NEW, 2, tasks_meta),
    ]
    return nodes, tasks


async def test_a_format_1_log_opens_with_exactly_what_it_held(tmp_path: pathlib.Path) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(GOLDEN / "v1" / "store", store_dir)
    async with ws.open_store(SCHEMA, path=store_dir) as store:
        assert store.version == ws.Version(4)
        assert store.view(lambda tx: (tx.all(Node), tx.all(Task))) == expected_v1()
        assert [n.id for n in store.view(lambda tx: tx.find(Node, labels="gpu"))] == ["n1"]
        assert [t.id for t in store.view(lambda tx: tx.find(Task, node_id="n1"))] == ["t1"]
        assert store.recovery is not None
        assert store.recovery.repaired_tail == 0


async def test_a_format_1_log_takes_commits_and_its_compaction_writes_format_2(
    tmp_path: pathlib.Path,
) -> None:
    """A format 1 store is appended to in format 1 (its segment keeps one framing), torn
    tails there follow format 1's rule, and the next compaction writes a format 2 segment
    holding everything."""
    store_dir = tmp_path / "store"
    shutil.copytree(GOLDEN / "v1" / "store", store_dir)
    first = store_dir / "00000001.wslog"
    async with ws.open_store(SCHEMA, path=store_dir) as store:
        await store.update(lambda tx: tx.delete(Task, "t2"))
        data = first.read_bytes().rstrip(b"\0")  # as a crash would leave it
        manifest = (store_dir / "MANIFEST").read_bytes()
    assert parse_header(first.read_bytes()).format == 1
    first.write_bytes(data[:-7])  # the last append cut short
    (store_dir / "MANIFEST").write_bytes(manifest)
    async with ws.open_store(SCHEMA, path=store_dir) as store:
        assert store.version == ws.Version(4)
        await store.update(lambda tx: tx.delete(Task, "t2"))
        await store.compact()
        await store.update(lambda tx: tx.delete(Task, "t1"))
    second = store_dir / "00000002.wslog"
    assert parse_header(second.read_bytes()).format == 2
    async with ws.open_store(SCHEMA, path=store_dir) as store:
        assert store.version == ws.Version(6)
        nodes, tasks = expected_v1()
        assert store.view(lambda tx: (tx.all(Node), tx.all(Task))) == (nodes, tasks[:1])


def expected_v2() -> tuple[list[Node], list[Task]]:
    tasks_meta = ws.Meta(ws.Version(2), 1796512403.2331166, 1796512403.2331166)
    nodes_meta = ws.Meta(ws.Version(1), 1796512403.2319992, 1796512403.2319992)
    nodes = [
        Node("n1", "Web-1", frozenset({"ssd", "gpu"}), nodes_meta),
        Node("n2", "db-1", frozenset(), nodes_meta),
        Node(
            "n3",
            "Cache-1",
            frozenset({"ssd"}),
            ws.Meta(ws.Version(4), 1796512403.247142, 1796512403.247142),
        ),
    ]
    tasks = [
        Task(
            "t0",
            "svc",
            "n2",
            State.ASSIGNED,
            0,
            ws.Meta(ws.Version(3), 1796512403.2331166, 1796512403.246614),
        ),
        Task("t1", "svc", "n1", State.RUNNING, 1, tasks_meta),
        Task("t2", "svc", None, State.NEW, 2, tasks_meta),
    ]
    return nodes, tasks


async def test_a_format_2_log_opens_with_exactly_what_it_held(tmp_path: pathlib.Path) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(GOLDEN / "v2" / "store", store_dir)
    assert [e.version for e in ws.list_epochs(store_dir)] == [ws.Version(0), ws.Version(2)]
    async with ws.open_store(SCHEMA, path=store_dir) as store:
        assert store.version == ws.Version(4)
        assert store.view(lambda tx: (tx.all(Node), tx.all(Task))) == expected_v2()
        assert [n.id for n in store.view(lambda tx: tx.find(Node, labels="ssd"))] == ["n1", "n3"]
        assert [t.id for t in store.view(lambda tx: tx.find(Task, node_id="n2"))] == ["t0"]
        assert store.recovery is not None
        assert (store.recovery.repaired_tail, store.recovery.format) == (0, 2)
        async with store.watch_from(ws.Version(0), ws.on(Node)) as events:  # from epoch 1
            first = await events.receive()
            assert isinstance(first, ws.Created)
            assert first.obj.id == "n1"


@attrs.frozen
class TaskWithoutSlot:
    """tests.schema.Task with ``slot`` removed and ``owner`` added without a default."""

    id: str
    service_id: str
    owner: str
    node_id: str | None = None
    state: State = State.NEW
    meta: ws.Meta = ws.Meta()


def task_without_slot(stored: dict[str, Any]) -> dict[str, Any]:
    del stored["slot"]
    return {**stored, "owner": f"slot-{stored['id']}"}


def schema_without_slot(**table: Any) -> ws.Schema:
    (node,) = [t for t in SCHEMA.tables if t.name == "Node"]
    return ws.Schema(node, ws.Table(TaskWithoutSlot, name="Task", **table))


async def test_a_format_1_log_of_a_changed_class_is_a_schema_mismatch_or_upgraded(
    tmp_path: pathlib.Path,
) -> None:
    """The format 1 golden store read with a changed Task: SchemaMismatch naming the field
    (and nothing written); through an upgrade every object comes back, and the store is
    rewritten in format 2 and today's shape, which opens without the upgrade."""
    store_dir = tmp_path / "store"
    shutil.copytree(GOLDEN / "v1" / "store", store_dir)
    before = sorted(p.name for p in store_dir.iterdir())
    with pytest.raises(ws.SchemaMismatch) as info:
        async with ws.open_store(schema_without_slot(), path=store_dir):
            pass
    assert info.value.table == "Task"
    assert "slot" in str(info.value)
    assert sorted(p.name for p in store_dir.iterdir() if p.suffix == ".wslog") == [
        n for n in before if n.endswith(".wslog")
    ]
    upgraded = schema_without_slot(upgrade=task_without_slot)
    async with ws.open_store(upgraded, path=store_dir) as store:
        tasks = store.view(lambda tx: tx.all(TaskWithoutSlot))
        assert [(t.id, t.owner, t.state) for t in tasks] == [
            ("t0", "slot-t0", State.ASSIGNED),
            ("t1", "slot-t1", State.RUNNING),
            ("t2", "slot-t2", State.NEW),
        ]
        assert tasks[0].meta == expected_v1()[1][0].meta
    newest = max(store_dir.glob("*.wslog"))
    assert parse_header(newest.read_bytes()).format == 2
    async with ws.open_store(schema_without_slot(), path=store_dir) as store:
        assert store.view(lambda tx: tx.count(TaskWithoutSlot)) == 3
