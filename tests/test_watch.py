"""Events and watches: what a commit publishes, who receives it, and resuming after overflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import attrs
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, State, Task
from watchstore.core.events import Router

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def store() -> AsyncIterator[ws.Store]:
    async with ws.open_store(SCHEMA) as store:
        yield store


def drain(events: ws.Watch[ws.Event]) -> list[ws.Event]:
    out: list[ws.Event] = []
    while True:
        try:
            out.append(events.receive_nowait())
        except ws.WouldBlock:
            return out


async def test_a_commit_publishes_its_events_then_committed(store: ws.Store) -> None:
    await store.update(lambda tx: tx.create(Task("t1", "s1")))
    async with store.watch() as events:

        def change(tx: ws.Tx) -> None:
            old = tx.get(Task, "t1")
            assert old is not None
            tx.update(attrs.evolve(old, node_id="n1"))
            tx.create(Node("n1", "one"))
            tx.delete(Task, "t1")

        await store.update(change)
        got = drain(events)
    v2 = ws.Version(2)
    created = store.view(lambda tx: tx.get(Node, "n1"))
    assert [type(e).__name__ for e in got] == ["Deleted", "Created", "Committed"]
    assert got[0] == ws.Deleted(got[0].obj, v2)  # type: ignore[union-attr]
    assert got[0].obj.id == "t1"
    assert got[1] == ws.Created(created, v2)
    assert got[2] == ws.Committed(v2, 2)


async def test_updates_carry_the_old_object(store: ws.Store) -> None:
    first = await store.update(lambda tx: tx.create(Task("t1", "s1")))
    async with store.watch(ws.on_update(Task)) as events:
        second = await store.update(lambda tx: tx.update(attrs.evolve(first, slot=3)))
        assert drain(events) == [ws.Updated(second, first, ws.Version(2))]


async def test_a_watcher_on_a_node_sees_a_task_leave_it(store: ws.Store) -> None:
    task = await store.update(lambda tx: tx.create(Task("t1", "s1", node_id="n1")))
    async with store.watch(ws.on(Task, node_id="n1")) as events:
        moved = await store.update(lambda tx: tx.update(attrs.evolve(task, node_id="n2")))
        await store.update(lambda tx: tx.update(attrs.evolve(moved, slot=9)))  # not n1: unseen
        got = drain(events)
    assert got == [ws.Updated(moved, task, ws.Version(2))]


async def test_specifiers_are_or_ed_and_their_conditions_and_ed(store: ws.Store) -> None:
    specs = (
        ws.on_create(Task, service_id="s1", where=lambda t: t.slot > 0),
        ws.on_delete(Node),
    )
    async with store.watch(*specs) as events:
        await store.update(lambda tx: tx.create(Task("a", "s1", slot=0)))  # where fails
        await store.update(lambda tx: tx.create(Task("b", "s2", slot=1)))  # field fails
        await store.update(lambda tx: tx.create(Task("c", "s1", slot=1)))  # selected
        await store.update(lambda tx: tx.create(Node("n1", "one")))  # create: not selected
        await store.update(lambda tx: tx.delete(Node, "n1"))  # selected
        got = drain(events)
    assert [(type(e).__name__, e.obj.id) for e in got] == [  # type: ignore[union-attr]
        ("Created", "c"),
        ("Deleted", "n1"),
    ]


async def test_enum_fields_are_matched_by_equality(store: ws.Store) -> None:
    async with store.watch(ws.on(Task, state=State.RUNNING)) as events:
        await store.update(lambda tx: tx.create(Task("a", "s1", state=State.RUNNING)))
        await store.update(lambda tx: tx.create(Task("b", "s1", state=State.NEW)))
        assert [e.obj.id for e in drain(events)] == ["a"]  # type: ignore[union-attr]


async def test_batch_commits_publish_per_chunk(store: ws.Store) -> None:
    async def load(batch: ws.Batch) -> None:
        for i in range(5):
            await batch.update(lambda tx: tx.create(Task(f"t{i}", "s1")))

    async with store.watch(ws.on_commit()) as events:
        await store.batch(load, max_changes=2)
        got = drain(events)
    assert got == [
        ws.Committed(ws.Version(1), 2),
        ws.Committed(ws.Version(2), 2),
        ws.Committed(ws.Version(3), 1),
    ]


async def test_view_and_watch_starts_exactly_after_the_view(store: ws.Store) -> None:
    await store.update(lambda tx: tx.create(Task("t1", "s1")))
    async with store.view_and_watch(lambda tx: tx.all(Task), ws.on(Task)) as (tasks, events):
        assert [t.id for t in tasks] == ["t1"]
        await store.update(lambda tx: tx.create(Task("t2", "s1")))
        got = drain(events)
    assert [(e.obj.id, e.version) for e in got] == [("t2", ws.Version(2))]  # type: ignore[union-attr]


async def test_view_and_watch_during_a_proposal_sees_the_commit_as_an_event() -> None:
    release = anyio.Event()

    class Slow(ws.MemoryProposer):
        async def propose_value(self, actions, commit):  # type: ignore[no-untyped-def]
            await release.wait()
            return await super().propose_value(actions, commit)

    async with ws.open_store(SCHEMA, proposer=Slow()) as store, anyio.create_task_group() as tg:
        tg.start_soon(store.update, lambda tx: tx.create(Task("t1", "s1")))
        await anyio.wait_all_tasks_blocked()
        async with store.view_and_watch(lambda tx: tx.count(Task)) as (count, events):
            assert count == 0
            release.set()
            event = await events.receive()
        assert isinstance(event, ws.Created)
        assert event.obj.id == "t1"


async def test_watch_from_replays_history_then_goes_live(store: ws.Store) -> None:
    for i in range(4):
        await store.update(lambda tx: tx.create(Task(f"t{i}", "s1")))
    async with store.watch_from(ws.Version(2), ws.on_create(Task)) as events:
        replayed = [(await events.receive()).obj.id for _ in range(2)]  # type: ignore[union-attr]
        await store.update(lambda tx: tx.create(Task("live", "s1")))
        live = await events.receive()
    assert replayed == ["t2", "t3"]
    assert live.obj.id == "live"  # type: ignore[union-attr]


async def test_watch_from_gone_history_raises_history_compacted() -> None:
    async with ws.open_store(SCHEMA, history=2) as store:
        for i in range(5):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "s1")))
        with pytest.raises(ws.HistoryCompacted) as info:
            async with store.watch_from(ws.Version(1)):
                pass
        assert (info.value.oldest, info.value.current) == (ws.Version(3), ws.Version(5))
        async with store.watch_from(ws.Version(3)) as events:
            assert events.pending() == 4  # two creates, each with its Committed


async def test_an_overflowing_watcher_resumes_exactly_with_watch_from(store: ws.Store) -> None:
    async with store.watch(ws.on(Task), queue=3) as slow:
        for i in range(6):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "s1")))
        got = [(await slow.receive()).obj.id for _ in range(3)]  # type: ignore[union-attr]
        with pytest.raises(ws.WatchOverflow) as info:
            await slow.receive()
    assert info.value.last_version == ws.Version(3)
    async with store.watch_from(info.value.last_version, ws.on(Task)) as resumed:
        got += [e.obj.id for e in drain(resumed)]  # type: ignore[union-attr]
    assert got == [f"t{i}" for i in range(6)]


async def test_a_transaction_is_never_split_by_an_overflow(store: ws.Store) -> None:
    async with store.watch(queue=4) as events:
        await store.update(lambda tx: tx.create(Task("a", "s1")))  # 2 events
        await store.update(lambda tx: [tx.create(Task(f"b{i}", "s1")) for i in range(2)])  # 3
        got = [events.receive_nowait(), events.receive_nowait()]
        with pytest.raises(ws.WatchOverflow) as info:
            events.receive_nowait()
    assert [type(e).__name__ for e in got] == ["Created", "Committed"]
    assert info.value.last_version == ws.Version(1)


async def test_a_watcher_that_never_reads_does_not_hold_anyone_up(store: ws.Store) -> None:
    async with store.watch(queue=1), store.watch() as reader:
        for i in range(100):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "s1")))
        assert reader.pending() == 200


async def test_closing_the_store_ends_watches_with_store_closed() -> None:
    async with ws.open_store(SCHEMA) as store:
        watch_cm = store.watch()
        events = await watch_cm.__aenter__()
    with pytest.raises(ws.StoreClosed):
        await events.receive()
    await watch_cm.__aexit__(None, None, None)


def test_routing_visits_only_watchers_that_can_match() -> None:
    router = Router()
    for i in range(1000):
        router.subscribe(f"w{i}", [ws.on(Task, node_id=f"node-{i}")])
    router.subscribe("mine", [ws.on(Task, node_id="n1")])
    task = Task("t1", "s1", node_id="n1")
    action = ws.StoreAction(ws.ActionKind.CREATE, "Task", task)
    assert [key for key, _ in router._candidates(action)] == ["mine"]
    routed = router.route(ws.Change(ws.Version(1), [action]))
    assert list(routed) == ["mine"]


def test_a_specifier_with_an_unhashable_value_is_refused_when_made() -> None:
    with pytest.raises(ws.InvalidQuery, match="frozenset"):
        ws.on(Node, labels={"gpu"})


def test_the_history_replays_exactly_the_commits_it_keeps() -> None:
    from watchstore.core.history import History

    def change(index: int, size: int) -> ws.Change:
        actions = [
            ws.StoreAction(ws.ActionKind.CREATE, "Task", Task(f"t{index}.{n}", "s"))
            for n in range(size)
        ]
        return ws.Change(ws.Version(index), actions)

    sizes = {1: 1, 2: 3, 3: 0, 4: 2, 5: 1, 6: 4, 7: 1}
    changes = [change(index, size) for index, size in sizes.items()]
    history = History(ws.Version(0), 3)
    for kept, committed in enumerate(changes, start=1):
        history.append(committed)
        assert len(history) == min(kept, 3)
        floor = max(kept - 3, 0)
        assert history.floor == ws.Version(floor)
        for after in range(kept + 1):
            replayed = history.replay(ws.Version(after))
            if after < floor:
                assert replayed is None
            else:
                assert replayed == changes[after:kept]
    nothing = History(ws.Version(5), 0)
    nothing.append(change(6, 2))
    assert nothing.floor == ws.Version(6)
    assert nothing.replay(ws.Version(5)) is None
    assert nothing.replay(ws.Version(6)) == []


async def test_the_history_is_bounded_by_bytes_as_well_as_commits() -> None:
    """300 updates of one 2 MB object keep only what fits ``history_bytes`` (not the 300
    commits the count allows): watch_from an old version is HistoryCompacted, a recent one
    replays."""
    big = "x" * (2 << 20)
    async with ws.open_store(SCHEMA, history_bytes=20 << 20) as store:
        await store.update(lambda tx: tx.create(Task("t1", big)))
        for i in range(300):
            await store.update(
                lambda tx: tx.update(attrs.evolve(tx.get(Task, "t1"), slot=i))  # type: ignore[misc]
            )
        with pytest.raises(ws.HistoryCompacted):
            async with store.watch_from(ws.Version(100), ws.on(Task)):
                pass
        async with store.watch_from(ws.Version(295), ws.on(Task)) as events:
            assert (await events.receive()).version == ws.Version(296)
