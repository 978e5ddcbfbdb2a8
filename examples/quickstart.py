"""A short tour of watchstore: tables, indexes, transactions, conflicts, snapshots, batches.

Run it with ``python examples/quickstart.py`` (``--backend asyncio`` runs it on asyncio
instead of trio; ``make demo`` runs the scheduler demo).
"""

from __future__ import annotations

import argparse
import enum
import tempfile
import time
from typing import TYPE_CHECKING

import anyio
import attrs

import watchstore as ws

if TYPE_CHECKING:
    from collections.abc import Sequence


class State(enum.IntEnum):
    NEW = 0
    ASSIGNED = 2
    RUNNING = 10


@attrs.frozen
class Node:
    id: str
    name: str
    labels: frozenset[str] = frozenset()
    meta: ws.Meta = ws.Meta()


@attrs.frozen
class Task:
    id: str
    service_id: str
    node_id: str | None = None
    state: State = State.NEW
    meta: ws.Meta = ws.Meta()


SCHEMA = ws.Schema(
    ws.Table(
        Node,
        indexes=[ws.Index("name", unique=True, fold_case=True), ws.Index("labels", multi=True)],
    ),
    ws.Table(Task, indexes=[ws.Index("service_id"), ws.Index("node_id"), ws.Index("state")]),
)


async def tour() -> None:
    async with ws.open_store(SCHEMA) as store:
        print("1. one transaction creates three nodes atomically")

        def add_nodes(tx: ws.Tx) -> None:
            tx.create(Node("n1", "Worker-1", frozenset({"ssd", "gpu"})))
            tx.create(Node("n2", "worker-2", frozenset({"ssd"})))
            tx.create(Node("n3", "worker-3"))

        await store.update(add_nodes)
        print(
            f"   store at {store.version}; ssd nodes:",
            store.view(lambda tx: [n.id for n in tx.find(Node, labels="ssd")]),
        )

        print("2. unique, case-folded names are enforced")
        try:
            await store.update(lambda tx: tx.create(Node("n4", "WORKER-1")))
        except ws.UniqueConflict as exc:
            print(f"   UniqueConflict: {exc}")

        print("3. a batch loads 10,000 tasks in chunked commits")

        async def load(batch: ws.Batch) -> None:
            for i in range(10_000):
                await batch.update(lambda tx: tx.create(Task(f"task-{i:05}", f"svc-{i % 10}")))

        started = time.perf_counter()
        await store.batch(load)
        print(
            f"   {store.view(lambda tx: tx.count(Task))} tasks in "
            f"{time.perf_counter() - started:.2f} s, store at {store.version}"
        )

        print("4. a snapshot stays consistent while a scheduler assigns tasks")
        with store.snapshot() as before:

            def assign(tx: ws.Tx) -> int:
                nodes = [n.id for n in tx.all(Node)]
                new = tx.find(Task, state=State.NEW)
                for i, task in enumerate(new[:3000]):
                    tx.update(
                        attrs.evolve(task, node_id=nodes[i % len(nodes)], state=State.ASSIGNED)
                    )
                return min(3000, len(new))

            assigned = await store.update(assign)
            print(
                f"   assigned {assigned}; now {store.view(lambda tx: tx.count(Task, node_id='n1'))}"
                f" on n1, snapshot at {before.version} still sees "
                f"{before.count(Task, node_id='n1')}"
            )
            print(
                "   tasks ASSIGNED or later:",
                store.view(lambda tx: tx.count(Task, state=ws.between(State.ASSIGNED))),
            )

        print("5. optimistic concurrency: a stale copy conflicts")
        stale = store.view(lambda tx: tx.get(Task, "task-00000"))
        assert stale is not None
        await store.update(lambda tx: tx.update(attrs.evolve(stale, state=State.RUNNING)))
        try:
            await store.update(lambda tx: tx.update(attrs.evolve(stale, node_id="n3")))
        except ws.SequenceConflict as exc:
            print(f"   SequenceConflict; current state is {exc.current.state.name}")

        print("6. an exception inside a transaction applies nothing")
        try:

            def half_done(tx: ws.Tx) -> None:
                tx.delete(Node, "n3")
                raise RuntimeError("changed my mind")

            await store.update(half_done)
        except RuntimeError:
            print("   n3 still there:", store.view(lambda tx: tx.get(Node, "n3")) is not None)

        print("7. a watcher of node n1 sees a task leave it")
        async with store.watch(ws.on(Task, node_id="n1")) as events:
            on_n1 = store.view(lambda tx: tx.first(Task, node_id="n1"))
            assert on_n1 is not None
            await store.update(lambda tx: tx.update(attrs.evolve(on_n1, node_id="n2")))
            event = await events.receive()
            assert isinstance(event, ws.Updated)
            print(
                f"   {event.obj.id}: {event.old.node_id} -> {event.obj.node_id} at {event.version}"
            )

    print("8. a durable store survives closing and reopening")
    with tempfile.TemporaryDirectory() as path:
        async with ws.open_store(SCHEMA, path=path) as store:
            await store.update(add_nodes)
            started = time.perf_counter()
            await store.batch(load)
            print(f"   wrote 10,000 tasks durably in {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        async with ws.open_store(SCHEMA, path=path) as store:
            count = store.view(lambda tx: tx.count(Task))
            print(
                f"   reopened in {time.perf_counter() - started:.2f} s: {count} tasks at "
                f"{store.version}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=["trio", "asyncio"],
        default="trio",
        help="the event loop to run on (default: trio)",
    )
    args = parser.parse_args(argv)
    anyio.run(tour, backend=args.backend)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
