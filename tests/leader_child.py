"""A campaigner for tests/test_leadership.py: ``python -m tests.leader_child ENDPOINTS PREFIX ME
TTL BACKEND`` (ENDPOINTS comma-separated; BACKEND: ``trio`` or ``asyncio``).

Opens a store on etcd, campaigns for "scheduler" as ME and, once it leads, prints ``leading``,
then writes ``Task("ME-n")`` through ``lead.update`` every 20 ms, printing ``wrote n`` after
each acknowledged write and ``refused n`` for each that raised NotLeader. When the leadership
is lost (the block is cancelled and leaving it raises NotLeader) it prints ``lost`` and exits.
Every line is flushed at once: the test reads them as they come.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import anyio

import watchstore as ws
from tests.schema import SCHEMA, Task

if TYPE_CHECKING:
    from collections.abc import Callable


def write(me: str, n: int) -> Callable[[ws.Tx], Task]:
    return lambda tx: tx.upsert(Task(f"{me}-{n}", "lead"))


def say(line: str) -> None:
    print(line, flush=True)


async def main(endpoints: list[str], prefix: str, me: str, ttl: float) -> None:
    proposer = ws.EtcdProposer(endpoints, prefix, timeout=2.0)
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        say("campaigning")
        try:
            async with store.leadership("scheduler", ttl=ttl, identity=me) as lead:
                say("leading")
                n = 0
                while True:
                    try:
                        await lead.update(write(me, n))
                        say(f"wrote {n}")
                    except ws.NotLeader:
                        say(f"refused {n}")
                    n += 1
                    await anyio.sleep(0.02)
        except ws.NotLeader:
            say("lost")


if __name__ == "__main__":
    endpoints, prefix, me, ttl, backend = sys.argv[1:]
    anyio.run(main, endpoints.split(","), prefix, me, float(ttl), backend=backend)
