"""Property-based tests of the watch API: view_and_watch, filtering, overflow and resume.

Writers run random transactions (creates, updates, upserts and deletes of tasks and nodes on a
small id space, some multi-object, some failing, some through ``store.batch`` with small
chunks), interleaved by random numbers of checkpoints. An unfiltered watcher opened before
the first commit records the *full stream*; every other watcher is checked against it, or
against a filter of it written here from the specification (independently of ``ws.Spec``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import watchstore as ws
from tests.schema import SCHEMA, Node, State, Task

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

# -- random transactions -----------------------------------------------------------------------

TASK_IDS: Final = ("t0", "t1", "t2", "t3", "t4")
NODE_IDS: Final = ("n0", "n1", "n2")
SERVICES: Final = ("s1", "s2")
NODE_REFS: Final = (None, "n1", "n2")
SLOTS: Final = (0, 1, 2)
LABELS: Final[tuple[frozenset[str], ...]] = (
    frozenset(),
    frozenset({"gpu"}),
    frozenset({"gpu", "ssd"}),
)


class Rollback(Exception):
    """Raised by a transaction function on purpose: its writes must leave no event."""


@attrs.frozen
class TaskOp:
    """Write task ``id``: create it if absent, else delete it or update (or upsert) it."""

    id: str
    delete: bool
    upsert: bool
    service_id: str
    node_id: str | None
    state: State
    slot: int


@attrs.frozen
class NodeOp:
    """Write node ``id``: create it if absent, else delete it or relabel it."""

    id: str
    delete: bool
    labels: frozenset[str]


Op: TypeAlias = TaskOp | NodeOp


@attrs.frozen
class Update:
    """One ``store.update``; with ``fail`` its function raises after writing (no commit)."""

    ops: tuple[Op, ...]
    fail: bool


@attrs.frozen
class BatchTxn:
    """One ``store.batch``: a ``batch.update`` per group, ``pause`` checkpoints after each.

    The group at index ``fail_group`` raises after writing: only its own writes are undone.
    """

    groups: tuple[tuple[Op, ...], ...]
    max_changes: int
    pause: int
    fail_group: int | None


Txn: TypeAlias = Update | BatchTxn
Plan: TypeAlias = tuple[tuple[int, Txn], ...]
"""A writer's work: (checkpoints to take first, transaction) pairs."""


def task_ops(ids: Sequence[str] = TASK_IDS) -> st.SearchStrategy[TaskOp]:
    return st.builds(
        TaskOp,
        id=st.sampled_from(ids),
        delete=st.integers(0, 3).map(lambda n: n == 0),
        upsert=st.booleans(),
        service_id=st.sampled_from(SERVICES),
        node_id=st.sampled_from(NODE_REFS),
        state=st.sampled_from(State),
        slot=st.sampled_from(SLOTS),
    )


def node_ops(ids: Sequence[str] = NODE_IDS) -> st.SearchStrategy[NodeOp]:
    return st.builds(
        NodeOp,
        id=st.sampled_from(ids),
        delete=st.integers(0, 3).map(lambda n: n == 0),
        labels=st.sampled_from(LABELS),
    )


ops: st.SearchStrategy[Op] = st.one_of(task_ops(), task_ops(), node_ops())
op_groups = st.lists(ops, min_size=1, max_size=4).map(tuple)
updates = st.builds(Update, ops=op_groups, fail=st.integers(0, 5).map(lambda n: n == 0))
batches = st.builds(
    BatchTxn,
    groups=st.lists(op_groups, min_size=1, max_size=4).map(tuple),
    max_changes=st.integers(1, 3),
    pause=st.integers(0, 3),
    fail_group=st.none() | st.integers(0, 3),
)
txns: st.SearchStrategy[Txn] = st.one_of(updates, updates, batches)
plans: st.SearchStrategy[Plan] = st.lists(
    st.tuples(st.integers(0, 4), txns), min_size=2, max_size=8
).map(tuple)
populations: st.SearchStrategy[Update] = st.builds(
    Update,
    ops=st.tuples(*(task_ops([i]) for i in TASK_IDS), *(node_ops([i]) for i in NODE_IDS)),
    fail=st.just(False),
)
"""One transaction creating every task and node (with drawn fields): later ops mostly update."""


def apply_op(tx: ws.Tx, op: Op) -> None:
    """Apply ``op`` to whatever the transaction sees now (never raises)."""
    if isinstance(op, TaskOp):
        task = tx.get(Task, op.id)
        new = Task(op.id, op.service_id, node_id=op.node_id, state=op.state, slot=op.slot)
        if task is None:
            tx.create(new)
        elif op.delete:
            tx.delete(task)
        elif op.upsert:
            tx.upsert(new)
        else:
            tx.update(attrs.evolve(new, meta=task.meta))
    else:
        node = tx.get(Node, op.id)
        if node is None:
            tx.create(Node(op.id, f"node-{op.id}", labels=op.labels))
        elif op.delete:
            tx.delete(Node, op.id)
        else:
            tx.update(attrs.evolve(node, labels=op.labels))


def write(group: Sequence[Op], fail: bool) -> Callable[[ws.Tx], None]:
    """A transaction function applying ``group`` (and then raising, if ``fail``)."""

    def fn(tx: ws.Tx) -> None:
        for op in group:
            apply_op(tx, op)
        if fail:
            raise Rollback

    return fn


async def run_txn(store: ws.Store, txn: Txn) -> None:
    """Run one random transaction; failures it provokes on purpose are swallowed."""
    if isinstance(txn, Update):
        with contextlib.suppress(Rollback):
            await store.update(write(txn.ops, txn.fail))
        return

    async def body(batch: ws.Batch) -> None:
        for i, group in enumerate(txn.groups):
            with contextlib.suppress(Rollback):
                await batch.update(write(group, i == txn.fail_group))
            for _ in range(txn.pause):
                await anyio.lowlevel.checkpoint()

    await store.batch(body, max_changes=txn.max_changes)


async def run_plan(store: ws.Store, plan: Plan) -> None:
    """Run a writer's plan, taking the drawn number of checkpoints before each transaction."""
    for pause, txn in plan:
        for _ in range(pause):
            await anyio.lowlevel.checkpoint()
        await run_txn(store, txn)


# -- the event stream --------------------------------------------------------------------------

Key: TypeAlias = tuple[str, str]
"""(table class name, id) of a stored object."""
ObjectEvent: TypeAlias = ws.Created | ws.Updated | ws.Deleted


def key_of(obj: Any) -> Key:
    return (type(obj).__name__, obj.id)


def read_all(tx: ws.ReadTx) -> tuple[ws.Version, dict[Key, Any]]:
    """The version a reader sees and every object it sees, by key."""
    objects: dict[Key, Any] = {key_of(t): t for t in tx.all(Task)}
    objects.update((key_of(n), n) for n in tx.all(Node))
    return tx.version, objects


def drain(watch: ws.Watch[ws.Event]) -> list[ws.Event]:
    """Everything waiting in ``watch`` (it must not have overflowed)."""
    out: list[ws.Event] = []
    while True:
        try:
            out.append(watch.receive_nowait())
        except ws.WouldBlock:
            return out


def transactions(events: Iterable[ws.Event]) -> list[tuple[list[ObjectEvent], ws.Committed]]:
    """Split a stream that asked for Committed into (object events, Committed) per commit.

    Checks that each commit's object events are contiguous, carry its version and come right
    before its Committed, that the stream ends with a Committed, and that Committed versions
    strictly increase.
    """
    out: list[tuple[list[ObjectEvent], ws.Committed]] = []
    current: list[ObjectEvent] = []
    for ev in events:
        if isinstance(ev, ws.Committed):
            assert all(e.version == ev.version for e in current), (current, ev)
            if out:
                assert out[-1][1].version < ev.version, (out[-1][1], ev)
            out.append((current, ev))
            current = []
        else:
            current.append(ev)
    assert not current, f"object events without their Committed: {current}"
    return out


def check_full_stream(events: Sequence[ws.Event], start: ws.Version, end: ws.Version) -> None:
    """``events`` is the unfiltered stream of every commit in (start, end], well formed."""
    txs = transactions(events)
    assert [c.version.index for _, c in txs] == list(range(start.index + 1, end.index + 1))
    for objects, committed in txs:
        assert committed.changes == len(objects) >= 1
        assert len({key_of(e.obj) for e in objects}) == len(objects), "one event per object"
        for e in objects:
            if isinstance(e, ws.Deleted):
                assert e.obj.meta.version < e.version
            else:
                assert e.obj.meta.version == e.version
            if isinstance(e, ws.Updated):
                assert key_of(e.old) == key_of(e.obj)
                assert e.old.meta.version < e.version


def rebuild(start: dict[Key, Any], events: Iterable[ws.Event]) -> dict[Key, Any]:
    """Apply the object events to ``start``, checking each one against the state it changes."""
    state = dict(start)
    for ev in events:
        if isinstance(ev, ws.Committed):
            continue
        key = key_of(ev.obj)
        if isinstance(ev, ws.Created):
            assert key not in state, ev
            state[key] = ev.obj
        elif isinstance(ev, ws.Updated):
            assert state.get(key) == ev.old, ev
            state[key] = ev.obj
        else:
            assert state.pop(key, None) == ev.obj, ev
    return state


# -- specifiers and the reference filter -------------------------------------------------------

_MISSING: Final = object()


@attrs.frozen
class Pred:
    """A named ``where=`` predicate (the name makes failing examples readable)."""

    name: str
    fn: Callable[[Any], bool] = attrs.field(repr=False)


PREDICATES: Final = (
    Pred("slot>=1", lambda o: getattr(o, "slot", 0) >= 1),
    Pred("odd-id", lambda o: o.id[-1] in "13"),
    Pred("gpu", lambda o: "gpu" in getattr(o, "labels", frozenset())),
    Pred("running", lambda o: getattr(o, "state", None) == State.RUNNING),
    Pred("assigned", lambda o: getattr(o, "node_id", None) is not None),
)

FIELD_VALUES: Final[dict[type | None, dict[str, tuple[Any, ...]]]] = {
    Task: {
        "id": TASK_IDS,
        "service_id": SERVICES,
        "node_id": NODE_REFS,
        "state": tuple(State),
        "slot": SLOTS,
    },
    Node: {"id": NODE_IDS, "name": tuple(f"node-{n}" for n in NODE_IDS), "labels": LABELS},
    None: {"id": TASK_IDS + NODE_IDS, "node_id": NODE_REFS, "labels": LABELS, "slot": SLOTS},
}

Maker: TypeAlias = Literal["on", "on_create", "on_update", "on_delete", "on_commit"]
MAKERS: Final[dict[Maker, Callable[..., ws.Spec]]] = {
    "on": ws.on,
    "on_create": ws.on_create,
    "on_update": ws.on_update,
    "on_delete": ws.on_delete,
}
KINDS: Final[dict[Maker, tuple[type, ...]]] = {
    "on": (ws.Created, ws.Updated, ws.Deleted),
    "on_create": (ws.Created,),
    "on_update": (ws.Updated,),
    "on_delete": (ws.Deleted,),
    "on_commit": (),
}


@attrs.frozen
class SpecDesc:
    """A specifier as drawn: builds the ``ws.Spec`` and, independently, selects events."""

    maker: Maker
    cls: type | None = None
    fields: tuple[tuple[str, Any], ...] = ()
    where: tuple[Pred, ...] = ()
    where_as_list: bool = False

    def build(self) -> ws.Spec:
        if self.maker == "on_commit":
            return ws.on_commit()
        where: Any = None
        if self.where_as_list or len(self.where) > 1:
            where = [p.fn for p in self.where]
        elif self.where:
            where = self.where[0].fn
        return MAKERS[self.maker](self.cls, where=where, **dict(self.fields))

    def selects(self, ev: ws.Event) -> bool:
        """The specification: kind, table, and the old *or* new object has the fields and
        passes the predicates."""
        if isinstance(ev, ws.Committed):
            return self.maker == "on_commit"
        if not isinstance(ev, KINDS[self.maker]):
            return False
        if isinstance(ev, ws.Updated):
            return self._matches(ev.obj) or self._matches(ev.old)
        return self._matches(ev.obj)

    def _matches(self, obj: Any) -> bool:
        if self.cls is not None and type(obj) is not self.cls:
            return False
        if any(getattr(obj, name, _MISSING) != value for name, value in self.fields):
            return False
        return all(p.fn(obj) for p in self.where)


@st.composite
def spec_descs(draw: st.DrawFn) -> SpecDesc:
    maker: Maker = draw(st.sampled_from(["on", "on_create", "on_update", "on_delete", "on_commit"]))
    if maker == "on_commit":
        return SpecDesc(maker)
    cls = draw(st.sampled_from([Task, Node, None]))
    values = FIELD_VALUES[cls]
    names = draw(st.lists(st.sampled_from(sorted(values)), unique=True, max_size=2))
    fields = tuple((name, draw(st.sampled_from(values[name]))) for name in names)
    where = tuple(draw(st.lists(st.sampled_from(PREDICATES), max_size=2)))
    return SpecDesc(maker, cls, fields, where, draw(st.booleans()))


spec_lists = st.lists(spec_descs(), max_size=3).map(tuple)


def selected(descs: Sequence[SpecDesc], events: Iterable[ws.Event]) -> list[ws.Event]:
    """The events a watcher with ``descs`` must receive (no specifier = everything)."""
    if not descs:
        return list(events)
    return [ev for ev in events if any(d.selects(ev) for d in descs)]


# -- 1. view_and_watch under concurrent writers ------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    population=populations,
    writers=st.lists(plans, min_size=2, max_size=4),
    reader_delay=st.integers(0, 40),
    read_pauses=st.lists(st.integers(0, 3), min_size=1, max_size=5),
    tasks_only=st.booleans(),
)
async def test_view_and_watch_never_misses_or_doubles_under_concurrent_writers(
    population: Update,
    writers: list[Plan],
    reader_delay: int,
    read_pauses: list[int],
    tasks_only: bool,
) -> None:
    """view_and_watch is atomic: its events are exactly those of the commits after the state
    its function saw, whole transactions in commit order; view + events = the final state.

    The reader enters after a random number of checkpoints while 2-4 writers commit, and takes
    random checkpoints between receives. Specifiers: none, or ``on(Task)`` + ``on_commit()``.
    """
    specs = (ws.on(Task), ws.on_commit()) if tasks_only else ()
    views: list[tuple[ws.Version, dict[Key, Any]]] = []
    seen: list[ws.Event] = []
    watches: list[ws.Watch[ws.Event]] = []

    async with ws.open_store(SCHEMA) as store, store.watch() as everything:
        await run_txn(store, population)

        async def reader() -> None:
            for _ in range(reader_delay):
                await anyio.lowlevel.checkpoint()
            async with store.view_and_watch(read_all, *specs) as (view, events):
                views.append(view)
                watches.append(events)
                async for ev in events:
                    seen.append(ev)
                    for _ in range(read_pauses[len(seen) % len(read_pauses)]):
                        await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            async with anyio.create_task_group() as writing:
                for plan in writers:
                    writing.start_soon(run_plan, store, plan)
            # The reader is now parked in receive(): it has consumed everything delivered.
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(ws.WouldBlock):
                watches[0].receive_nowait()
            tg.cancel_scope.cancel()

        final_version, final = store.view(read_all)
        full = drain(everything)

    check_full_stream(full, ws.Version(0), final_version)
    [(view_version, start)] = views
    event("reader entered after the last commit" if view_version == final_version else "live")

    assert all(ev.version > view_version for ev in seen)
    txs = transactions(seen)
    assert [c.version.index for _, c in txs] == list(
        range(view_version.index + 1, final_version.index + 1)
    )
    later = [ev for ev in full if ev.version > view_version]
    if tasks_only:
        later = [ev for ev in later if isinstance(ev, ws.Committed) or type(ev.obj) is Task]
        start = {k: v for k, v in start.items() if k[0] == "Task"}
        final = {k: v for k, v in final.items() if k[0] == "Task"}
    assert seen == later
    assert rebuild(start, seen) == final
    assert all(obj.meta.version <= final_version for obj in final.values())


# -- 2. filtered watchers ----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    population=populations,
    writers=st.lists(plans, min_size=1, max_size=3),
    watchers=st.lists(spec_lists, min_size=1, max_size=4),
)
async def test_a_filtered_watcher_receives_exactly_the_filtered_full_stream(
    population: Update, writers: list[Plan], watchers: list[tuple[SpecDesc, ...]]
) -> None:
    """A watcher receives exactly the events of the full stream that any of its specifiers
    selects: by kind, table, field equalities and ``where`` predicates, an update matching if
    its old *or* new object matches; Committed only with ``on_commit()``; no specifier selects
    everything. Several watchers with different specifiers share the store's routing.
    """
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(ws.open_store(SCHEMA))
        everything = await stack.enter_async_context(store.watch())
        filtered = [
            await stack.enter_async_context(store.watch(*(d.build() for d in descs)))
            for descs in watchers
        ]
        await run_txn(store, population)
        async with anyio.create_task_group() as writing:
            for plan in writers:
                writing.start_soon(run_plan, store, plan)
        full = drain(everything)
        check_full_stream(full, ws.Version(0), store.version)
        for descs, watch in zip(watchers, filtered, strict=True):
            got = drain(watch)
            assert got == selected(descs, full), descs
            event(f"a watcher received {min(len(got), 5)}+ events")


# -- 3. overflow, then resume ------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    population=populations,
    descs=spec_lists,
    queue=st.integers(1, 6),
    steps=st.lists(st.tuples(txns, st.just(0) | st.integers(0, 3)), min_size=1, max_size=12),
)
async def test_an_overflowed_watcher_resumes_exactly_where_it_was_dropped(
    population: Update, descs: tuple[SpecDesc, ...], queue: int, steps: list[tuple[Txn, int]]
) -> None:
    """A watcher whose queue overflows yields what it has, then raises WatchOverflow naming
    the last commit it received in full; ``watch_from(last_version, same specs)`` replays
    exactly what it missed, then goes live. Received-before-overflow + replays, across any
    number of overflows, equals the full stream filtered by the same specifiers.

    After each transaction the watcher reads at most a drawn number of events (often none).
    """
    specs = [d.build() for d in descs]
    received: list[ws.Event] = []
    resumed_at: list[ws.Version] = []

    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(ws.open_store(SCHEMA, history=1_000))
        everything = await stack.enter_async_context(store.watch())
        watch = await stack.enter_async_context(store.watch(*specs, queue=queue))
        full: list[ws.Event] = []

        def everything_so_far() -> list[ws.Event]:
            full.extend(drain(everything))
            return full

        async def take(limit: int | None) -> None:
            """Receive up to ``limit`` events; on overflow, check and resume."""
            nonlocal watch
            count = 0
            while limit is None or count < limit:
                try:
                    received.append(watch.receive_nowait())
                except ws.WouldBlock:
                    return
                except ws.WatchOverflow as overflow:
                    last = overflow.last_version
                    assert isinstance(last, ws.Version)
                    assert last < store.version
                    if resumed_at:
                        assert last >= resumed_at[-1]
                    expected = selected(descs, everything_so_far())
                    assert received == [ev for ev in expected if ev.version <= last]
                    resumed_at.append(last)
                    watch = await stack.enter_async_context(
                        store.watch_from(last, *specs, queue=queue)
                    )
                    continue
                count += 1

        for txn, reads in [(population, 0), *steps]:
            await run_txn(store, txn)
            await take(reads)
        await take(None)
        # Live after the resume: one more commit reaches the resumed watcher.
        await store.update(lambda tx: tx.create(Task("late", "s9", slot=1)))
        await take(None)

        check_full_stream(everything_so_far(), ws.Version(0), store.version)
        assert received == selected(descs, full)
    event(f"overflowed {min(len(resumed_at), 3)}+ times")


@settings(max_examples=60, deadline=None)
@given(
    history=st.integers(0, 5),
    commits=st.integers(0, 10),
    since=st.integers(0, 10),
)
async def test_watch_from_beyond_the_history_raises_history_compacted(
    history: int, commits: int, since: int
) -> None:
    """With ``history=h`` the last h commits are replayable: ``watch_from(v)`` works for
    ``v >= current - h`` and replays commits v+1..current; for older ``v`` it raises
    HistoryCompacted with ``oldest`` = the oldest version it accepts and ``current``.
    """
    since = min(since, commits)
    async with ws.open_store(SCHEMA, history=history) as store:
        for i in range(commits):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "s1")))
        oldest = max(0, commits - history)
        if since < oldest:
            with pytest.raises(ws.HistoryCompacted) as info:
                async with store.watch_from(ws.Version(since)):
                    pass  # pragma: no cover
            assert info.value.oldest == ws.Version(oldest)
            assert info.value.current == ws.Version(commits)
        else:
            async with store.watch_from(ws.Version(since), ws.on_commit()) as events:
                replayed = [ev.version.index for ev in drain(events)]
            assert replayed == list(range(since + 1, commits + 1))


async def test_history_compacted_with_history_3() -> None:
    """The example of the design: history=3, five commits; watch_from(1) raises
    HistoryCompacted(oldest=Version(2), current=Version(5)); watch_from(2) replays 3, 4, 5."""
    async with ws.open_store(SCHEMA, history=3) as store:
        for i in range(5):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "s1")))
        with pytest.raises(ws.HistoryCompacted) as info:
            async with store.watch_from(ws.Version(1)):
                pass  # pragma: no cover
        assert (info.value.oldest, info.value.current) == (ws.Version(2), ws.Version(5))
        async with store.watch_from(ws.Version(2), ws.on_commit()) as events:
            assert [ev.version.index for ev in drain(events)] == [3, 4, 5]


class KeepingProposer:
    """Commits at once like MemoryProposer, but keeps every change for ``changes_between``,
    which suspends (so writers can commit while a ``watch_from`` reads old history)."""

    def __init__(self) -> None:
        self.log: list[ws.Change] = []

    async def propose_value(
        self, actions: Sequence[ws.StoreAction], commit: Callable[[ws.Version], None]
    ) -> ws.Version:
        version = ws.Version(len(self.log) + 1)
        self.log.append(ws.Change(version, list(actions)))
        commit(version)
        return version

    def get_version(self) -> ws.Version:
        return ws.Version(len(self.log))

    async def changes_between(self, start: ws.Version, end: ws.Version) -> Sequence[ws.Change]:
        await anyio.lowlevel.checkpoint()
        return [c for c in self.log if start < c.version <= end]


@settings(max_examples=50, deadline=None)
@given(
    population=populations,
    history=st.integers(0, 4),
    before=plans,
    after=st.lists(plans, min_size=1, max_size=2),
    since=st.integers(0, 20),
    descs=spec_lists,
)
async def test_watch_from_older_than_memory_reads_the_proposer_without_gaps(
    population: Update,
    history: int,
    before: Plan,
    after: list[Plan],
    since: int,
    descs: tuple[SpecDesc, ...],
) -> None:
    """``watch_from(v)`` for a ``v`` older than the in-memory history replays the older part
    from the proposer's ``changes_between`` and the rest from memory; commits made while it
    reads the proposer come live: the watch yields exactly the selected events after ``v``.
    """
    specs = [d.build() for d in descs]
    seen: list[ws.Event] = []
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            ws.open_store(SCHEMA, proposer=KeepingProposer(), history=history)
        )
        everything = await stack.enter_async_context(store.watch())
        await run_txn(store, population)
        await run_plan(store, before)
        start = ws.Version(min(since, store.version.index))

        async def reader(task_status: anyio.abc.TaskStatus[None]) -> None:
            async with store.watch_from(start, *specs) as events:
                task_status.started()
                async for ev in events:
                    seen.append(ev)

        async with anyio.create_task_group() as tg:
            for plan in after:
                tg.start_soon(run_plan, store, plan)
            await tg.start(reader)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()

        full = drain(everything)
        check_full_stream(full, ws.Version(0), store.version)
        assert seen == selected(descs, [ev for ev in full if ev.version > start])


@settings(max_examples=30, deadline=None)
@given(queue=st.integers(1, 4), extra=st.integers(0, 3))
async def test_a_parked_watcher_wakes_up_to_raise_watch_overflow(queue: int, extra: int) -> None:
    """A watcher waiting in ``receive()`` on an empty queue, whose next commit does not fit
    in its queue, is woken and raises WatchOverflow naming the commit before."""
    outcome: list[ws.WatchOverflow] = []
    async with ws.open_store(SCHEMA) as store:
        await store.update(lambda tx: tx.create(Task("first", "s1")))

        async def reader(task_status: anyio.abc.TaskStatus[None]) -> None:
            async with store.watch(queue=queue) as events:
                task_status.started()
                try:
                    async for _ in events:
                        pytest.fail("nothing fits in the queue")  # pragma: no cover
                except ws.WatchOverflow as overflow:
                    outcome.append(overflow)

        async with anyio.create_task_group() as tg:
            await tg.start(reader)
            await anyio.wait_all_tasks_blocked()  # parked in receive()

            def create_many(tx: ws.Tx) -> None:
                for i in range(queue + extra):  # + Committed: one more than fits
                    tx.create(Task(f"t{i}", "s1"))

            await store.update(create_many)
            await anyio.wait_all_tasks_blocked()
            assert outcome, "the parked watcher was not woken"
        assert outcome[0].last_version == ws.Version(1)


async def test_a_watch_that_fails_to_subscribe_leaves_no_trace() -> None:
    """Entering a watch either works or raises; if it raises, nothing of it stays subscribed.

    ``labels={"gpu"}`` (a set, equal to ``frozenset({"gpu"})``) cannot be filed in the
    router's hash buckets. Whether such a specifier is accepted or refused, a refused watch
    must not keep receiving events: a later commit must not raise in the writer, other
    watchers must receive it, and closing the store must not fail.
    """
    async with ws.open_store(SCHEMA) as store, store.watch() as other:
        with contextlib.suppress(TypeError, ws.InvalidQuery):
            async with store.watch(ws.on(Node), ws.on(Node, labels={"gpu"}), queue=1):
                pass

        def create_two(tx: ws.Tx) -> None:
            tx.create(Node("n1", "one", labels=frozenset({"gpu"})))
            tx.create(Node("n2", "two"))

        await store.update(create_two)
        assert [type(ev) for ev in drain(other)] == [ws.Created, ws.Created, ws.Committed]


# -- 4. a slow watcher never blocks writers ----------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    population=populations,
    steps=st.lists(st.tuples(st.integers(0, 2), txns), min_size=20, max_size=40).map(tuple),
    descs=spec_lists,
)
async def test_a_watcher_that_never_reads_blocks_no_writer_and_no_other_watcher(
    population: Update, steps: Plan, descs: tuple[SpecDesc, ...]
) -> None:
    """Watchers that never read (queue=5; plain, filtered, view_and_watch and watch_from)
    neither block nor slow the writer: every commit completes without the writer waiting on
    them, a concurrent reader and an unread watcher with a big queue receive every event, and
    each stuck watcher holds at most 5 events, a prefix of its stream, then WatchOverflow.
    """
    specs = [d.build() for d in descs]
    live: list[ws.Event] = []
    finished: list[bool] = []

    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(ws.open_store(SCHEMA))
        everything = await stack.enter_async_context(store.watch())
        stuck = [
            await stack.enter_async_context(store.watch(queue=5)),
            await stack.enter_async_context(store.watch(*specs, queue=5)),
            await stack.enter_async_context(store.watch_from(ws.Version(0), *specs, queue=5)),
        ]
        _, viewed = await stack.enter_async_context(store.view_and_watch(read_all, queue=5))
        stuck.append(viewed)
        stuck_descs: list[Sequence[SpecDesc]] = [(), descs, descs, ()]

        async def fast_reader(task_status: anyio.abc.TaskStatus[None]) -> None:
            async with store.watch() as events:
                task_status.started()
                async for ev in events:
                    live.append(ev)

        async def writer() -> None:
            await run_txn(store, population)
            await run_plan(store, steps)
            finished.append(True)

        async with anyio.create_task_group() as tg:
            await tg.start(fast_reader)
            tg.start_soon(writer)
            # Returns once nothing can run: the writer must have finished by then.
            await anyio.wait_all_tasks_blocked()
            assert finished, "the writer is blocked"
            tg.cancel_scope.cancel()

        full = drain(everything)
        check_full_stream(full, ws.Version(0), store.version)
        assert live == full
        for descs_, watch in zip(stuck_descs, stuck, strict=True):
            expected = selected(descs_, full)
            assert watch.pending() <= 5
            got: list[ws.Event] = []
            try:
                while True:
                    got.append(watch.receive_nowait())
            except ws.WouldBlock:
                assert got == expected  # everything fitted: no overflow
            except ws.WatchOverflow as overflow:
                last = overflow.last_version
                assert got == [ev for ev in expected if ev.version <= last]
                # Dropped at the first commit whose events did not fit in the queue.
                dropped = [ev for ev in expected if ev.version > last]
                assert dropped
                assert dropped[0].version == ws.Version(last.index + 1)
                first = [ev for ev in dropped if ev.version == dropped[0].version]
                assert len(got) + len(first) > 5
                event("a stuck watcher overflowed")


# -- 6. the memory store's fast path ---------------------------------------------------------


class ThroughProposeValue(ws.MemoryProposer):
    """A MemoryProposer subclass: the store awaits its ``propose_value`` and builds every
    commit's StoreActions and Change, where a MemoryProposer itself is committed at once
    and a one-object commit builds them only for a watcher."""


def timeless(item: Any) -> Any:
    """``item`` (an event, an object, or a list or dict of them) with every meta's times
    zeroed: two runs of the same transactions differ only in those."""
    if isinstance(item, list):
        return [timeless(i) for i in item]
    if isinstance(item, dict):
        return {k: timeless(v) for k, v in item.items()}
    if isinstance(item, ws.Committed) or item is None:
        return item
    if isinstance(item, ws.Created | ws.Deleted):
        return attrs.evolve(item, obj=timeless(item.obj))
    if isinstance(item, ws.Updated):
        return attrs.evolve(item, obj=timeless(item.obj), old=timeless(item.old))
    return attrs.evolve(item, meta=ws.Meta(item.meta.version))


@settings(max_examples=60, deadline=None)
@given(population=populations, plan=plans, watched=st.booleans())
async def test_the_memory_fast_path_publishes_what_the_general_path_does(
    population: Update, plan: Plan, watched: bool
) -> None:
    """The same transactions through a MemoryProposer and through ``propose_value``: the
    same events live, the same history for ``watch_from``, the same state in the store and
    in a fork."""
    runs = []
    for proposer in (ws.MemoryProposer(), ThroughProposeValue()):
        async with contextlib.AsyncExitStack() as stack:
            store = await stack.enter_async_context(ws.open_store(SCHEMA, proposer=proposer))
            replica = await stack.enter_async_context(store.fork())
            live = await stack.enter_async_context(store.watch()) if watched else None
            await run_txn(store, population)
            await run_plan(store, plan)
            async with store.watch_from(ws.Version(0)) as history:
                replayed = drain(history)
            await replica.wait_for(store.version)
            state = store.view(read_all)
            assert replica.view(read_all) == state
            events = drain(live) if live else replayed
            runs.append((timeless(events), timeless(replayed), timeless(state[1])))
    assert runs[0] == runs[1]
