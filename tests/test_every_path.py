"""The contract on every path, not only the default proposer's happy one: versions that skip,
a watcher's own code that raises, misuse, and the errors common slips get.

A proposer may commit at a version other than ``current + 1`` (SwarmKit's MockProposer steps
by 3; etcd's revisions skip whenever anything else on the cluster is written), so the tests
here run on a proposer whose versions step by 3.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

import watchstore as ws
import watchstore.etcd
from tests.schema import SCHEMA, Node, Task

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable, Sequence


class SteppingProposer:
    """Commits in memory at versions 3, 6, 9, ...: every version is a multiple of 3."""

    def __init__(self, step: int = 3) -> None:
        self.step = step
        self.changes: list[ws.Change] = []

    async def propose_value(
        self, actions: Sequence[ws.StoreAction], commit: Callable[[ws.Version], None]
    ) -> ws.Version:
        version = ws.Version(self.get_version().index + self.step)
        self.changes.append(ws.Change(version, tuple(actions)))
        commit(version)
        return version

    def get_version(self) -> ws.Version:
        return self.changes[-1].version if self.changes else ws.Version(0)

    async def changes_between(self, start: ws.Version, end: ws.Version) -> list[ws.Change]:
        return [c for c in self.changes if start < c.version <= end]


def obj(event: ws.Event) -> Any:
    """The object of an object event."""
    assert isinstance(event, ws.Created | ws.Updated | ws.Deleted), event
    return event.obj


def get(tx: ws.ReadTx, cls: type[Any], id: str) -> Any:
    obj = tx.get(cls, id)
    assert obj is not None, id
    return obj


# -- versions that skip -------------------------------------------------------------------------


async def test_objects_update_returns_carry_the_committed_version() -> None:
    async with ws.open_store(SCHEMA, proposer=SteppingProposer(), history=0) as store:
        created = await store.update(lambda tx: tx.create(Task("t1", "s")))
        assert created.meta.version == store.version == ws.Version(3)
        stored = store.view(lambda tx: get(tx, Task, "t1"))
        assert stored == created
        # The next update from the returned object commits: it is not a stale copy.
        updated = await store.update(lambda tx: tx.update(attrs.evolve(created, slot=1)))
        assert updated.meta.version == ws.Version(6)
        pair = await store.update(
            lambda tx: [tx.update(attrs.evolve(updated, slot=2)), tx.create(Task("t2", "s"))]
        )
        assert [o.meta.version for o in pair] == [ws.Version(9), ws.Version(9)]


async def test_what_batch_returns_carries_the_committed_versions() -> None:
    async def load(batch: ws.Batch) -> list[Task]:
        return [await batch.update(lambda tx: tx.create(Task(f"t{i}", "s"))) for i in range(5)]

    async with ws.open_store(SCHEMA, proposer=SteppingProposer()) as store:
        tasks = await store.batch(load, max_changes=2)
        assert [t.meta.version for t in tasks] == [ws.Version(v) for v in (3, 3, 6, 6, 9)]
        assert tasks == store.view(lambda tx: tx.all(Task))
        await store.update(lambda tx: tx.update(attrs.evolve(tasks[0], slot=7)))


async def test_events_and_committed_carry_the_committed_version() -> None:
    async with ws.open_store(SCHEMA, proposer=SteppingProposer()) as store:
        async with store.watch(ws.on(Task), ws.on_commit()) as events:
            await store.update(lambda tx: tx.create(Task("t1", "s")))
            created, committed = events.receive_nowait(), events.receive_nowait()
        assert isinstance(created, ws.Created)
        assert isinstance(committed, ws.Committed)
        assert created.version == obj(created).meta.version == committed.version == ws.Version(3)


async def test_an_overflowed_watcher_resumes_from_a_version_that_was_committed() -> None:
    """WatchOverflow names the last commit the watcher saw in full, which is a real version,
    and watch_from it resumes with exactly the events after it."""
    async with ws.open_store(SCHEMA, proposer=SteppingProposer()) as store:
        async with store.watch(ws.on(Task), queue=2) as events:
            for i in range(4):
                await store.update(lambda tx: tx.create(Task(f"t{i}", "s")))
            got = [events.receive_nowait(), events.receive_nowait()]
            with pytest.raises(ws.WatchOverflow) as info:
                events.receive_nowait()
        last = info.value.last_version
        assert last == got[-1].version == ws.Version(6)
        async with store.watch_from(last, ws.on(Task)) as resumed:
            rest = [resumed.receive_nowait(), resumed.receive_nowait()]
        assert [obj(e).id for e in rest] == ["t2", "t3"]
        assert [e.version for e in rest] == [ws.Version(9), ws.Version(12)]


@pytest.mark.parametrize("start", range(0, 13))
async def test_watch_from_any_version_gives_exactly_the_commits_after_it(start: int) -> None:
    async with ws.open_store(SCHEMA, proposer=SteppingProposer(), history=0) as store:
        for i in range(4):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "s")))
        async with store.watch_from(ws.Version(start), ws.on(Task)) as events:
            versions = []
            with contextlib.suppress(ws.WouldBlock):
                while True:
                    versions.append(events.receive_nowait().version.index)
        assert versions == [v for v in (3, 6, 9, 12) if v > start]


# -- watch_from the future ----------------------------------------------------------------------


async def test_watch_from_a_version_beyond_the_store_is_refused_naming_both(
    tmp_path: pathlib.Path,
) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        for i in range(5):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "s")))
        with pytest.raises(ws.InvalidQuery, match=r"Version\(5000\).*Version\(5\)"):
            async with store.watch_from(ws.Version(5000), ws.on(Task)):
                pass
        async with store.watch_from(ws.Version(5), ws.on(Task)) as events:  # the present: fine
            await store.update(lambda tx: tx.create(Task("t5", "s")))
            assert events.receive_nowait().version == ws.Version(6)


# -- a watcher's own code -----------------------------------------------------------------------


def explode_on_t2(task: Task) -> bool:
    if task.id == "t2":
        raise ZeroDivisionError("a predicate of the watcher's own")
    return True


async def test_a_predicate_that_raises_closes_only_its_watcher(tmp_path: pathlib.Path) -> None:
    """The writer's update returns its result, the commit stands, every other watcher gets
    the commit's events, and the broken watcher's receive raises, chained to the cause."""
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        async with (
            store.watch(ws.on(Task, where=explode_on_t2)) as broken,
            store.watch(ws.on(Task)) as healthy,
        ):
            await store.update(lambda tx: tx.create(Task("t1", "s")))
            result = await store.update(lambda tx: tx.create(Task("t2", "s")))
            assert result.id == "t2"
            await store.update(lambda tx: tx.create(Task("t3", "s")))
            assert [obj(healthy.receive_nowait()).id for _ in range(3)] == ["t1", "t2", "t3"]
            assert obj(broken.receive_nowait()).id == "t1"
            with pytest.raises(ws.WatcherFailed, match="where=") as info:
                broken.receive_nowait()
            assert isinstance(info.value.__cause__, ZeroDivisionError)
        assert store.version == ws.Version(3)
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert store.view(lambda tx: tx.count(Task)) == 3


async def test_a_predicate_that_raises_on_replay_fails_watch_from_with_it() -> None:
    async with ws.open_store(SCHEMA) as store:
        for i in range(3):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "s")))
        async with store.watch_from(ws.Version(0), ws.on(Task, where=explode_on_t2)) as events:
            assert obj(events.receive_nowait()).id == "t0"
            assert obj(events.receive_nowait()).id == "t1"
            with pytest.raises(ws.WatcherFailed) as info:
                events.receive_nowait()
        assert isinstance(info.value.__cause__, ZeroDivisionError)


# -- misuse -------------------------------------------------------------------------------------


async def test_update_inside_batch_is_refused_instead_of_hanging() -> None:
    async with ws.open_store(SCHEMA) as store:

        async def load(batch: ws.Batch) -> None:
            await batch.update(lambda tx: tx.create(Task("t1", "s")))
            await store.update(lambda tx: tx.create(Task("t2", "s")))

        with anyio.fail_after(5), pytest.raises(ws.StoreError, match=r"batch\.update"):
            await store.batch(load)


async def test_view_refuses_a_coroutine_function() -> None:
    async def reader(tx: ws.ReadTx) -> int:
        return tx.count(Task)

    async with ws.open_store(SCHEMA) as store:
        with pytest.raises(TypeError, match="coroutine"):
            _never = store.view(reader)
        with pytest.raises(TypeError, match="coroutine"):
            _never = await store.update(reader)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (None, "None"),
        (42, "int"),
        (ws.between(1, 2), "cannot be compared"),
        (ws.prefix(3), "cannot be compared"),  # type: ignore[arg-type]
        (ws.any_of("t1", 7), "cannot be compared"),
    ],
    ids=["None", "int", "int range", "int prefix", "any_of with an int"],
)
async def test_id_conditions_are_validated_like_other_indexes(condition: Any, message: str) -> None:
    async with ws.open_store(SCHEMA) as store:
        await store.update(lambda tx: [tx.create(Task(f"t{i}", "s")) for i in range(3)])
        with pytest.raises(ws.InvalidQuery, match=message):
            store.view(lambda tx: tx.find(Task, id=condition))
        with pytest.raises(ws.InvalidQuery, match=message):
            await store.update(
                lambda tx: [tx.delete(Task, t.id) for t in tx.find(Task, id=condition)]
            )
        assert store.view(lambda tx: tx.count(Task)) == 3


@attrs.frozen
class NotStored:
    id: str
    meta: ws.Meta = ws.Meta()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ws.on(Task, nosuch=1), "nosuch"),
        (ws.on_create(Node, namee="x"), "namee"),
        (ws.on(NotStored), "NotStored"),
        (ws.on(nosuch=1), "nosuch"),
    ],
)
async def test_watch_specs_are_checked_against_the_schema(spec: ws.Spec, message: str) -> None:
    async with ws.open_store(SCHEMA) as store:
        with pytest.raises(ws.InvalidQuery, match=message):
            async with store.watch(spec):
                pass
        with pytest.raises(ws.InvalidQuery, match=message):
            async with store.watch_from(ws.Version(0), spec):
                pass
        with pytest.raises(ws.InvalidQuery, match=message):
            async with store.view_and_watch(lambda tx: None, spec):
                pass


# -- the errors of common slips -----------------------------------------------------------------


TASKS = ws.Table(Task)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ws.Schema(Task), r"ws\.Table\(Task"),  # type: ignore[arg-type]
        (lambda: ws.Schema([TASKS]), r"ws\.Schema\(\*tables\)"),  # type: ignore[arg-type]
        (lambda: ws.Table(Task("t1", "s")), "an instance"),  # type: ignore[arg-type]
        (lambda: ws.Schema(), "at least one"),
    ],
    ids=["a class", "a list", "an instance", "nothing"],
)
def test_a_schema_slip_gets_an_error_saying_what_to_write(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises((ws.StoreError, TypeError, ValueError), match=message):
        make()


async def test_open_store_without_a_schema_says_so() -> None:
    with pytest.raises(TypeError, match=r"ws\.Schema"):
        async with ws.open_store(None):  # type: ignore[arg-type]
            pass


async def test_get_with_a_table_name_says_to_pass_the_class() -> None:
    async with ws.open_store(SCHEMA) as store:
        with pytest.raises(ws.InvalidQuery, match="the class Task, not the name 'Task'"):
            store.view(lambda tx: tx.get("Task", "t1"))  # type: ignore[arg-type]


async def test_store_recovery_is_a_small_summary(tmp_path: pathlib.Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        await store.batch(lambda b: _load(b, 2000))
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        recovery = store.recovery
        assert recovery is not None
        assert recovery.version == store.version
        assert recovery.changes == store.version.index
        assert len(repr(recovery)) < 500
        assert not hasattr(recovery, "objects")


async def _load(batch: ws.Batch, count: int) -> None:
    for i in range(count):
        await batch.update(lambda tx: tx.create(Task(f"t{i}", "s")))


async def test_etcd_without_its_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h11", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "watchstore.etcd.http", raising=False)
    monkeypatch.delattr(watchstore.etcd, "http", raising=False)  # the package's attribute
    with pytest.raises(ws.StoreError, match=r'pip install "watchstore\[etcd\]"'):
        async with ws.open_store(SCHEMA, etcd=["http://127.0.0.1:9"]):
            pass
