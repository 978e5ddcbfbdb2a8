"""A read replica and a Syncer: a consumer that keeps its own cache of the store, Calico-style.

``store.fork()`` starts an in-process read-only replica that follows every commit of the
store. A :class:`watchstore.Syncer` on the replica feeds a consumer the way Calico's syncer
feeds Felix: status callbacks (WAIT_FOR_DATASTORE, RESYNC_IN_PROGRESS, IN_SYNC) and batches of
NEW/UPDATED/DELETED updates. The consumer here keeps a cache of the nodes by id and a count
per label; when it falls behind (its watch overflows) the Syncer lists again, sends only the
difference, and reports that resync too.

    python examples/replica.py                         # --backend asyncio: on asyncio
"""

from __future__ import annotations

import argparse
import collections
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs

import watchstore as ws

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


@attrs.frozen
class Node:
    id: str
    labels: frozenset[str] = frozenset()
    meta: ws.Meta = ws.Meta()


SCHEMA = ws.Schema(ws.Table(Node, indexes=[ws.Index("labels", multi=True)]))


class NodeCache:
    """The consumer: a cache of nodes and a count per label, fed by a Syncer's callbacks."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.per_label: collections.Counter[str] = collections.Counter()
        self.statuses: list[ws.SyncStatus] = []
        self._changed = anyio.Event()

    def on_status(self, status: ws.SyncStatus) -> None:
        self.statuses.append(status)
        print(f"   status  {status.name}")
        self._notify()

    def on_updates(self, updates: list[ws.SyncUpdate]) -> None:
        kinds = collections.Counter(u.kind.name for u in updates)
        print(f"   updates {len(updates)}: {dict(kinds)}")
        for update in updates:
            node: Node = update.obj
            old = self.nodes.pop(node.id, None)
            if old is not None:
                self.per_label.subtract(old.labels)
            if update.kind is not ws.UpdateKind.DELETED:
                self.nodes[node.id] = node
                self.per_label.update(node.labels)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, holds: Callable[[], bool]) -> None:
        """Return once ``holds()`` is true, looking again after every callback."""
        while not holds():
            await self._changed.wait()

    def matches(self, store: ws.Store) -> bool:
        """True if the cache holds exactly the store's nodes."""
        return self.nodes == {n.id: n for n in store.view(lambda tx: tx.all(Node))}


def add_nodes(tx: ws.Tx, first: int, count: int) -> None:
    for i in range(first, first + count):
        tx.create(Node(f"node-{i:03}", frozenset({"ssd" if i % 2 else "hdd", "zone-a"})))


async def demo() -> None:
    async with ws.open_store(SCHEMA) as store:
        await store.update(lambda tx: add_nodes(tx, 0, 20))
        print(f"1. the store holds 20 nodes at {store.version}; fork a replica of it")
        async with store.fork() as replica, anyio.create_task_group() as tg:
            print(
                f"   replica at {replica.version}, {replica.view(lambda tx: tx.count(Node))} nodes"
            )

            print("2. a Syncer on the replica lists it for the cache, then follows its changes")
            cache = NodeCache()
            # A small queue, so that step 4 can make the consumer fall behind.
            syncer = ws.Syncer(
                replica, on_status=cache.on_status, on_updates=cache.on_updates, queue=10
            )
            await tg.start(syncer.run)
            print(f"   cache: {len(cache.nodes)} nodes, labels {dict(cache.per_label)}")

            print("3. writes to the store reach the cache through the replica")

            def relabel(tx: ws.Tx) -> None:
                node = tx.get(Node, "node-001")
                assert node is not None
                tx.update(attrs.evolve(node, labels=node.labels | {"gpu"}))
                tx.delete(Node, "node-002")

            await store.update(relabel)
            await replica.wait_for(store.version)
            await cache.wait_until(lambda: cache.matches(store))
            print(
                f"   replica at {replica.version}; cache: {len(cache.nodes)} nodes, gpu: "
                f"{cache.per_label['gpu']}"
            )

            print("4. one commit of 50 nodes overflows the Syncer's queue of 10: it resyncs")
            await store.update(lambda tx: add_nodes(tx, 100, 50))
            await replica.wait_for(store.version)
            await cache.wait_until(
                lambda: syncer.status is ws.SyncStatus.IN_SYNC and cache.matches(store)
            )
            print(
                f"   resyncs reported: {syncer.resyncs}; cache: {len(cache.nodes)} nodes, "
                f"matches the store: {cache.matches(store)}"
            )
            print(f"   statuses seen: {' -> '.join(s.name for s in cache.statuses)}")
            tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=["trio", "asyncio"],
        default="trio",
        help="the event loop to run on (default: trio)",
    )
    args = parser.parse_args(argv)
    anyio.run(demo, backend=args.backend)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
