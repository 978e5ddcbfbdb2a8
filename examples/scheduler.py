"""An event-driven scheduler on a durable store, and watchstore's demo (``make demo``).

Nodes and tasks live in a store on disk. The scheduler keeps a fork of the store (an
in-process read replica), watches the fork for pending tasks and for nodes that change, plans
placements on the fork, and commits them to the store in a transaction that checks the plan
still holds. When a node goes down, its tasks go back to pending and are placed again.

Each run of the demo is one round: it adds nodes and tasks, lets the scheduler place them,
takes a node down, waits for the rescheduling, then closes the store and reopens it from disk
to check that everything came back. The next run starts from that state: it brings the node
back up, adds more tasks and takes another node down.

    python examples/scheduler.py --path demo-state     # run it twice
    python examples/scheduler.py --backend asyncio     # on asyncio instead of trio
"""

from __future__ import annotations

import argparse
import enum
import heapq
import pathlib
import time
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs

import watchstore as ws

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class NodeStatus(enum.IntEnum):
    READY = 1
    DOWN = 2


class TaskState(enum.IntEnum):
    PENDING = 0
    ASSIGNED = 1


@attrs.frozen
class Node:
    id: str
    status: NodeStatus = NodeStatus.READY
    meta: ws.Meta = ws.Meta()


@attrs.frozen
class Task:
    id: str
    round: int
    node_id: str | None = None
    state: TaskState = TaskState.PENDING
    meta: ws.Meta = ws.Meta()


@attrs.frozen
class Round:
    """One run of the demo, kept in the store so the next run knows where it is."""

    id: str
    number: int
    tasks_added: int
    node_down: str
    meta: ws.Meta = ws.Meta()


SCHEMA = ws.Schema(
    ws.Table(Node, indexes=[ws.Index("status")]),
    ws.Table(Task, indexes=[ws.Index("node_id"), ws.Index("state")]),
    ws.Table(Round),
)

# What the scheduler watches: a task that is (or was) pending, and any change to a node.
# An update matches when the old or the new object matches, so the scheduler also sees a
# task leave the pending state.
WATCHED = (ws.on(Task, state=TaskState.PENDING), ws.on(Node))


# -- the scheduler ------------------------------------------------------------------------------


class Scheduler:
    """Places pending tasks on the least loaded ready node; evacuates nodes that go down.

    It plans on a fork of the store (what is pending, how loaded each node is) and commits to
    the store; each write re-checks, inside its transaction, that the task is still pending
    and the node still ready, so a plan gone stale is skipped, never committed.
    """

    def __init__(self, store: ws.Store) -> None:
        self.store = store
        self.placed = 0
        """Tasks this scheduler assigned to a node."""
        self.evacuated = 0
        """Tasks it sent back to pending because their node went down."""
        self.relists = 0
        """Times its watch fell behind and it listed the pending tasks again."""

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Schedule until cancelled; started once the fork is loaded and watched."""
        async with self.store.fork() as fork:
            while True:
                async with fork.view_and_watch(to_do, *WATCHED, queue=50_000) as (found, events):
                    task_status.started()
                    task_status = anyio.TASK_STATUS_IGNORED
                    try:
                        await self._follow(fork, found, events)
                    except ws.WatchOverflow:
                        self.relists += 1  # fell behind: list again, atomically with a watch

    async def _follow(
        self, fork: ws.Replica, found: tuple[list[str], list[str]], events: ws.Watch[ws.Event]
    ) -> None:
        pending, nodes_down = found
        queued = dict.fromkeys(pending)  # task ids to place, in arrival order
        for node_id in nodes_down:  # went down before we were watching
            await self._evacuate(fork, node_id)
        while True:
            if queued:
                leftover = await self._place(fork, list(queued))
                queued = dict.fromkeys(leftover)
            for event in await receive_all(events):
                if isinstance(event, ws.Committed):
                    continue
                obj = event.obj
                if isinstance(obj, Task):
                    if obj.state is TaskState.PENDING and not isinstance(event, ws.Deleted):
                        queued[obj.id] = None
                    else:
                        queued.pop(obj.id, None)
                elif isinstance(event, ws.Updated):
                    if obj.status is NodeStatus.DOWN and event.old.status is not NodeStatus.DOWN:
                        await self._evacuate(fork, obj.id)
                    elif obj.status is NodeStatus.READY:  # back up: room for what waited
                        queued.update(dict.fromkeys(fork.view(to_do)[0]))
                elif isinstance(event, ws.Created):
                    queued.update(dict.fromkeys(fork.view(to_do)[0]))
                else:
                    await self._evacuate(fork, obj.id)

    async def _place(self, fork: ws.Replica, task_ids: Sequence[str]) -> list[str]:
        """Assign ``task_ids`` to the least loaded ready nodes; return those to retry."""
        await fork.wait_for(self.store.version)  # plan on a state at least as new as ours
        loads = fork.view(node_loads)
        if not loads:
            return []  # no ready node: they wait, and are listed again when one comes up
        heap = [(load, node_id) for node_id, load in loads.items()]
        heapq.heapify(heap)
        retry: list[str] = []

        async def assign(batch: ws.Batch) -> None:
            for task_id in task_ids:
                load, node_id = heap[0]
                outcome = await batch.update(lambda tx: place(tx, task_id, node_id))
                if outcome == "placed":
                    heapq.heapreplace(heap, (load + 1, node_id))
                    self.placed += 1
                elif outcome == "node gone":
                    retry.append(task_id)

        await self.store.batch(assign)
        return retry

    async def _evacuate(self, fork: ws.Replica, node_id: str) -> None:
        """Send every task of ``node_id`` back to pending."""
        await fork.wait_for(self.store.version)
        on_node = fork.view(lambda tx: [t.id for t in tx.find(Task, node_id=node_id)])

        async def release(batch: ws.Batch) -> None:
            for task_id in on_node:
                if await batch.update(lambda tx: unassign(tx, task_id, node_id)):
                    self.evacuated += 1

        await self.store.batch(release)


def to_do(tx: ws.ReadTx) -> tuple[list[str], list[str]]:
    """The ids of the pending tasks, and of the nodes that are down but still hold tasks."""
    pending = [t.id for t in tx.find(Task, state=TaskState.PENDING)]
    down = [n.id for n in tx.find(Node, status=NodeStatus.DOWN) if tx.first(Task, node_id=n.id)]
    return pending, down


def node_loads(tx: ws.ReadTx) -> dict[str, int]:
    """How many tasks each ready node holds."""
    return {n.id: tx.count(Task, node_id=n.id) for n in tx.find(Node, status=NodeStatus.READY)}


def place(tx: ws.Tx, task_id: str, node_id: str) -> str:
    """Assign the task to the node if the plan still holds; say what happened."""
    task = tx.get(Task, task_id)
    if task is None or task.state is not TaskState.PENDING:
        return "not pending"  # placed or removed since we planned
    node = tx.get(Node, node_id)
    if node is None or node.status is not NodeStatus.READY:
        return "node gone"
    tx.update(attrs.evolve(task, node_id=node_id, state=TaskState.ASSIGNED))
    return "placed"


def unassign(tx: ws.Tx, task_id: str, node_id: str) -> bool:
    """Send the task back to pending if it is still on ``node_id``."""
    task = tx.get(Task, task_id)
    if task is None or task.node_id != node_id:
        return False
    tx.update(attrs.evolve(task, node_id=None, state=TaskState.PENDING))
    return True


async def receive_all(events: ws.Watch[ws.Event]) -> list[ws.Event]:
    """Wait for the next event, then take every event already waiting."""
    out = [await events.receive()]
    while True:
        try:
            out.append(events.receive_nowait())
        except ws.WouldBlock:
            return out


# -- the demo: one round per run -----------------------------------------------------------------


async def play_round(store: ws.Store, number: int, node_count: int, task_count: int) -> None:
    """Add nodes and tasks, let the scheduler place them, take a node down, reschedule."""
    async with anyio.create_task_group() as tg:
        scheduler = Scheduler(store)
        await tg.start(scheduler.run)
        print(f"round {number}: the scheduler follows a fork of the store through watches")

        started = time.perf_counter()
        added, back = await store.update(lambda tx: ready_nodes(tx, node_count))
        nodes = store.view(lambda tx: tx.count(Node))
        news = [f"{added} new"] if added else []
        news += [f"{node_id} back up" for node_id in back]
        step(f"{nodes} nodes ready ({', '.join(news) or 'as they were'})", started)

        started = time.perf_counter()

        async def load(batch: ws.Batch) -> None:
            for i in range(task_count):
                task = Task(f"r{number:03}-{i:06}", number)
                await batch.update(lambda tx: tx.create(task))

        await store.batch(load)
        step(
            f"{task_count:,} tasks created with store.batch (commits of {ws.MAX_BATCH_CHANGES})",
            started,
        )
        await settled(store)
        step("...and the scheduler placed each one as it came", started)
        print(f"      {store.view(placement)}")

        down = f"node-{(number - 1) % nodes + 1}"
        moving = store.view(lambda tx: tx.count(Task, node_id=down))
        started = time.perf_counter()
        await store.update(lambda tx: set_status(tx, down, NodeStatus.DOWN))
        await settled(store)
        step(f"{down} went down: its {moving:,} tasks were rescheduled", started)
        print(f"      {store.view(placement)}")

        await store.update(lambda tx: tx.create(Round(f"{number:04}", number, task_count, down)))
        print(
            f"  the scheduler made {scheduler.placed:,} placements and sent "
            f"{scheduler.evacuated:,} tasks back to pending"
            + (
                f"; it fell behind and relisted {scheduler.relists} times"
                if scheduler.relists
                else ""
            )
        )
        tg.cancel_scope.cancel()


def ready_nodes(tx: ws.Tx, count: int) -> tuple[int, list[str]]:
    """Create node-1..node-COUNT where missing and bring down nodes back up."""
    added = 0
    for i in range(1, count + 1):
        if tx.get(Node, f"node-{i}") is None:
            tx.create(Node(f"node-{i}"))
            added += 1
    back = [n.id for n in tx.find(Node, status=NodeStatus.DOWN)]
    for node_id in back:
        set_status(tx, node_id, NodeStatus.READY)
    return added, back


def set_status(tx: ws.Tx, node_id: str, status: NodeStatus) -> None:
    node = tx.get(Node, node_id)
    assert node is not None, node_id
    tx.update(attrs.evolve(node, status=status))


def unsettled(tx: ws.ReadTx) -> int:
    """How many tasks are not where they should be: pending, or on a node that is down."""
    count = tx.count(Task, state=TaskState.PENDING)
    for node in tx.find(Node, status=NodeStatus.DOWN):
        count += tx.count(Task, node_id=node.id)
    return count


async def settled(store: ws.Store) -> None:
    """Return once every task sits on a ready node (looked at after every commit)."""
    async with store.watch(ws.on_commit()) as commits:
        while store.view(unsettled):
            await commits.receive()


def placement(tx: ws.ReadTx) -> str:
    """``node-1 1,000 | node-2 down | ...``"""
    return " | ".join(
        f"{n.id} down"
        if n.status is NodeStatus.DOWN
        else f"{n.id} {tx.count(Task, node_id=n.id):,}"
        for n in tx.all(Node)
    )


def everything(tx: ws.ReadTx) -> tuple[ws.Version, list[Node], list[Task], list[Round]]:
    return tx.version, tx.all(Node), tx.all(Task), tx.all(Round)


def step(what: str, started: float) -> None:
    print(f"  {what:<64} {time.perf_counter() - started:6.2f} s")


async def demo(path: pathlib.Path, node_count: int, task_count: int) -> int:
    print(f"watchstore demo: an event-driven scheduler on a durable store in {path}/")
    started = time.perf_counter()
    async with ws.open_store(SCHEMA, path=path) as store:
        opened = time.perf_counter() - started
        rounds = store.view(lambda tx: tx.count(Round))
        if rounds:
            tasks, nodes = store.view(lambda tx: (tx.count(Task), tx.count(Node)))
            print(
                f"found {tasks:,} tasks on {nodes} nodes at {store.version} from the previous "
                f"run ({rounds} round{'s' * (rounds > 1)} so far; restored in {opened:.2f} s)"
            )
        else:
            print(f"no store in {path}/ yet: created a new one")
        await play_round(store, rounds + 1, node_count, task_count)
        written = store.view(everything)
    epochs = ws.list_epochs(path)
    size = sum(e.size for e in epochs)
    print(
        f"  closed the store at {written[0]}: {size / 1e6:.1f} MB on disk, "
        f"{len(epochs)} epoch{'s' * (len(epochs) > 1)} (a snapshot and the changes after it)"
    )

    started = time.perf_counter()
    async with ws.open_store(SCHEMA, path=path) as store:
        recovered = store.view(everything)
    version, nodes_back, tasks_back, _rounds = recovered
    step(
        f"reopened from disk: {version}, {len(tasks_back):,} tasks, {len(nodes_back)} nodes",
        started,
    )
    if recovered != written:
        print("  MISMATCH: the reopened store differs from what was written")
        return 1
    print("  everything recovered: every object as written, every task on its node")
    print(f"run it again: the next round continues from this state (delete {path}/ to start over)")
    return 0


def at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="watchstore's demo: an event-driven scheduler on a durable store. "
        "Each run is one round that continues from the state the previous run left."
    )
    parser.add_argument(
        "--path",
        type=pathlib.Path,
        default=pathlib.Path("demo-state"),
        help="the store's directory (default: demo-state)",
    )
    parser.add_argument("--nodes", type=at_least(2), default=5, help="nodes (default: 5)")
    parser.add_argument(
        "--tasks", type=at_least(1), default=5000, help="tasks added per round (default: 5000)"
    )
    parser.add_argument(
        "--backend",
        choices=["trio", "asyncio"],
        default="trio",
        help="the event loop to run on (default: trio)",
    )
    args = parser.parse_args(argv)
    try:
        return anyio.run(demo, args.path, args.nodes, args.tasks, backend=args.backend)
    except (ws.StoreLocked, ws.LogCorrupt, ws.UnsupportedFormat) as exc:
        print(f"cannot open {args.path}/: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
