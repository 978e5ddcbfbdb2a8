"""A writer process for tests/test_etcd.py: ``python -m tests.etcd_child ENDPOINT PREFIX ME
OTHER BACKEND`` (BACKEND: the AnyIO backend to run on, ``trio`` or ``asyncio``).

Waits until the other writer is up, then, concurrently: increments shared counters
(read-modify-write on the same rows as the other process) and tries to claim unique names
the other process also wants. Then marks itself done, waits for the other's mark, and prints
JSON: how many increments and which names it got acknowledged, and its replica in full.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING

import anyio
import attrs

import watchstore as ws
from tests.schema import SCHEMA, Node, Task
from watchstore.core.codec import encode

if TYPE_CHECKING:
    from collections.abc import Callable

COUNTERS = 3
INCREMENTS = 40
NAMES = 30


def counter_id(k: int) -> str:
    return f"counter-{k}"


async def main(endpoint: str, prefix: str, me: str, other: str) -> None:
    async with ws.open_store(SCHEMA, etcd=[endpoint], prefix=prefix) as store:
        for k in range(COUNTERS):
            with contextlib.suppress(ws.ObjectExists):
                await store.update(lambda tx: tx.create(Task(counter_id(k), "counter")))
        await store.update(lambda tx: tx.upsert(Node(f"ready-{me}", f"ready-{me}")))
        await _until(store, lambda tx: tx.get(Node, f"ready-{other}") is not None)

        increments = 0
        claimed: list[str] = []

        async def increment() -> None:
            nonlocal increments
            for i in range(INCREMENTS):

                def bump(tx: ws.Tx) -> None:
                    task = tx.get(Task, counter_id(i % COUNTERS))
                    assert task is not None
                    tx.update(attrs.evolve(task, slot=task.slot + 1))

                await store.update(bump)
                increments += 1

        async def claim() -> None:
            for k in range(NAMES):
                try:
                    await store.update(lambda tx: tx.create(Node(f"{me}-{k}", f"Name-{k}")))
                    claimed.append(f"name-{k}")
                except ws.UniqueConflict:
                    pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(increment)
            tg.start_soon(claim)
        await store.update(lambda tx: tx.upsert(Node(f"done-{me}", f"done-{me}")))
        await _until(store, lambda tx: tx.get(Node, f"done-{other}") is not None)
        state = store.view(
            lambda tx: {
                "version": tx.version.index,
                "tasks": [encode(t) for t in tx.all(Task)],
                "nodes": [encode(n) for n in tx.all(Node)],
            }
        )
    print(json.dumps({"increments": increments, "claimed": claimed, "state": state}))


async def _until(store: ws.Store, check: Callable[[ws.ReadTx], bool]) -> None:
    async with store.view_and_watch(check) as (done, events):
        if done:
            return
        async for _event in events:
            if store.view(check):
                return


if __name__ == "__main__":
    endpoint, prefix, me, other, backend = sys.argv[1:6]
    anyio.run(main, endpoint, prefix, me, other, backend=backend)
