"""Events are typed by the object they carry: ``store.watch(ws.on(Task))`` yields
``Event[Task]`` under mypy, so ``event.obj`` is a ``Task`` once the kind is narrowed.

mypy checks a small user module here (``reveal_type``, read from mypy's own report), and the
same expectations hold at run time for the events a real watch yields.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest
from mypy import api

import watchstore as ws
from tests.schema import SCHEMA, Node, Task

if TYPE_CHECKING:
    from pathlib import Path

USER_MODULE = textwrap.dedent(
    """
    import attrs
    import watchstore as ws


    @attrs.frozen
    class Task:
        id: str
        node_id: str | None = None
        meta: ws.Meta = ws.Meta()


    @attrs.frozen
    class Node:
        id: str
        meta: ws.Meta = ws.Meta()


    async def user(store: ws.Store, replica: ws.Replica) -> None:
        async with store.watch(ws.on(Task, node_id="n1")) as tasks:
            event = await tasks.receive()
            reveal_type(event)  # line:event
            if isinstance(event, ws.Updated):
                reveal_type(event.obj)  # line:updated-obj
                reveal_type(event.old)  # line:updated-old
        async with store.watch(ws.on_create(Task), ws.on_commit()) as created:
            reveal_type(await created.receive())  # line:with-commit
        async with store.watch(ws.on(Task), ws.on(Node)) as mixed:
            reveal_type(await mixed.receive())  # line:mixed
        async with store.watch() as everything:
            reveal_type(await everything.receive())  # line:everything
        async with store.watch_from(store.version, ws.on_delete(Node)) as nodes:
            reveal_type(await nodes.receive())  # line:watch-from
        async with replica.view_and_watch(lambda tx: tx.count(Task), ws.on(Task)) as (n, ev):
            reveal_type(n)  # line:view-result
            reveal_type(await ev.receive())  # line:view-and-watch
        reveal_type(ws.on(Task))  # line:spec
        reveal_type(ws.on_commit())  # line:commit-spec


    def untyped(event: ws.Event) -> None:
        reveal_type(event)  # line:bare-event
    """
)

EXPECTED = {
    "event": "Created[user.Task] | watchstore.core.events.Updated[user.Task] | "
    "watchstore.core.events.Deleted[user.Task] | watchstore.core.events.Committed",
    "updated-obj": "user.Task",
    "updated-old": "user.Task",
    "with-commit": "Created[user.Task] |",
    "mixed": "Created[user.Task | user.Node] |",
    "everything": "Created[Any] |",
    "watch-from": "Created[user.Node] |",
    "view-result": "int",
    "view-and-watch": "Created[user.Task] |",
    "spec": "watchstore.core.events.Spec[user.Task]",
    "commit-spec": "watchstore.core.events.Spec[Never]",
    "bare-event": "Created[Any] |",
}


@pytest.fixture(scope="module")
def revealed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What mypy --strict reveals on each marked line of USER_MODULE."""
    directory: Path = tmp_path_factory.mktemp("typed-events")
    module = directory / "user.py"
    module.write_text(USER_MODULE)
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(directory / "cache"),
            "--config-file",
            "",
            str(module),
        ]
    )
    lines = USER_MODULE.splitlines()
    found: dict[str, str] = {}
    errors = []
    for report in stdout.splitlines():
        _path, _sep, rest = report.partition("user.py:")
        number, _, message = rest.partition(": ")
        if not number.isdigit():
            continue
        source = lines[int(number) - 1]
        if "note: Revealed type is" in message and "# line:" in source:
            found[source.split("# line:")[1].strip()] = message.split('"')[1]
        elif "error:" in message:
            errors.append(report)
    assert not errors, f"mypy --strict found errors in a user's module: {errors}"
    assert status == 1 or not stderr, stderr  # 1: reveal_type notes count as findings
    return found


@pytest.mark.parametrize("line", sorted(EXPECTED))
def test_mypy_reveals_the_object_type_of_each_watchs_events(
    revealed: dict[str, str], line: str
) -> None:
    assert line in revealed, f"mypy revealed nothing on line {line}: {revealed}"
    assert EXPECTED[line] in revealed[line]


async def test_the_events_of_a_typed_watch_carry_that_type_at_run_time() -> None:
    async with ws.open_store(SCHEMA) as store:
        async with store.watch(ws.on(Task), ws.on_commit()) as events:
            task = await store.update(lambda tx: tx.create(Task("t1", "web")))
            await store.update(lambda tx: tx.update(task))
            created, _, updated, _ = [await events.receive() for _ in range(4)]
        assert isinstance(created, ws.Created)
        assert isinstance(updated, ws.Updated)
        assert isinstance(created.obj, Task)
        assert (updated.obj.id, updated.old.id) == ("t1", "t1")
        spec = ws.on(Node)
        assert spec.cls is Node
        assert ws.Created[Task](task, store.version) == ws.Created(task, store.version)
