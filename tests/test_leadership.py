"""Fenced leadership (issue 20): ``store.leadership(name)``.

On a real 3-member etcd cluster two processes campaign and one leads. When the leader is
paused (SIGSTOP) past its lease's TTL, the other leads within TTL + an election; resumed,
the paused one commits nothing more: every object it wrote was committed before the first
write of the new leader, and its leadership block ends with NotLeader. A leader killed
(SIGKILL) is replaced likewise. On one machine (memory or log) the same API holds: the
leadership is held at once, one task at a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import watchstore as ws
from tests.etcd_cluster import EtcdCluster, post, running
from tests.schema import SCHEMA, Task
from watchstore.etcd.client import b64, prefix_end, unb64
from watchstore.testing.etcd import etcd_binary

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).parent.parent
TTL = 2.0
ELECTION = 3.0
"""Seconds etcd may take beyond the TTL to expire a lease and the other to see it (an etcd
leader election, a keep-alive round)."""


# -- one machine ---------------------------------------------------------------------------


async def test_a_local_store_leads_at_once_one_task_at_a_time() -> None:
    async with ws.open_store(SCHEMA) as store:
        assert await store.leader("scheduler") is None
        first_in, first_out = anyio.Event(), anyio.Event()
        order: list[str | None] = []

        async def first() -> None:
            async with store.leadership("scheduler", identity="first") as lead:
                order.append(await store.leader("scheduler"))
                await lead.update(lambda tx: tx.create(Task("a", "s")))
                first_in.set()
                await first_out.wait()

        async def second() -> None:
            await first_in.wait()
            async with store.leadership("scheduler", identity="second") as lead:
                order.append(await store.leader("scheduler"))
                await lead.update(lambda tx: tx.create(Task("b", "s")))
                assert not lead.lost

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
            await first_in.wait()
            await anyio.wait_all_tasks_blocked()  # the second has gone as far as it can
            assert order == ["first"]  # the second waits while the first leads
            first_out.set()
        assert order == ["first", "second"]
        assert await store.leader("scheduler") is None
        assert store.view(lambda tx: tx.count(Task, service_id="s")) == 2


# -- etcd ----------------------------------------------------------------------------------

needs_etcd = pytest.mark.skipif(
    etcd_binary() is None and not os.environ.get("CI"),
    reason="etcd is not installed: run `make deps`",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with running(tmp_path_factory.mktemp("etcd-lead"), 3) as cluster:
        yield cluster


class Campaigner:
    """A tests/leader_child.py process; its output lines, with when each arrived."""

    def __init__(self, cluster: EtcdCluster, prefix: str, me: str, backend: str) -> None:
        self.me = me
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.leader_child",
                ",".join(cluster.endpoints),
                prefix,
                me,
                str(TTL),
                backend,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._arrived = threading.Condition()  # notified on each line, and at the end
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._arrived:
                self.lines.append((time.monotonic(), line.strip()))
                self._arrived.notify_all()
        with self._arrived:
            self._arrived.notify_all()

    def first(self, text: str, after: float = 0.0) -> float | None:
        """When ``text`` was printed (at or after ``after``), or None."""
        return next((t for t, line in self.lines if line == text and t >= after), None)

    def wait_for(self, text: str, timeout: float, after: float = 0.0) -> float:
        """When ``text`` is printed (at or after ``after``), waiting up to ``timeout``."""
        with self._arrived:
            self._arrived.wait_for(
                lambda: self.first(text, after) is not None or not self._reader.is_alive(),
                timeout,
            )
        when = self.first(text, after)
        if when is not None:
            return when
        done = self.process.poll() is not None and self.process.stderr is not None
        stderr = self.process.stderr.read() if done and self.process.stderr else ""
        raise AssertionError(f"{self.me} never printed {text!r}: {self.lines[-5:]} {stderr}")

    def said(self, prefix: str, after: float = 0.0) -> list[str]:
        return [line for t, line in self.lines if line.startswith(prefix) and t >= after]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def written(cluster: EtcdCluster, prefix: str, me: str) -> list[int]:
    """The mod_revision of each object ``me`` wrote, from etcd."""
    start = f"{prefix}/o/Task/{me}-".encode()
    body = {"key": b64(start), "range_end": b64(prefix_end(start))}
    kvs: list[dict[str, Any]] = post(cluster.endpoints[0], "kv/range", body).get("kvs", [])
    assert all(unb64(kv["key"]).startswith(start) for kv in kvs)
    return [int(kv["mod_revision"]) for kv in kvs]


def leader_and_follower(
    cluster: EtcdCluster, prefix: str, backend: str
) -> tuple[Campaigner, Campaigner]:
    one = Campaigner(cluster, prefix, "one", backend)
    one.wait_for("leading", 30)
    two = Campaigner(cluster, prefix, "two", backend)
    campaigning = two.wait_for("campaigning", 30)
    # Ten more writes of one's after two began campaigning: two waits meanwhile.
    written_before = len(one.said("wrote"))
    one.wait_for(f"wrote {written_before + 10}", 30, after=campaigning)
    assert two.first("leading") is None
    assert one.said("wrote")
    return one, two


@needs_etcd
@pytest.mark.parametrize("how", ["SIGSTOP", "SIGKILL"])
def test_a_paused_or_killed_leader_is_replaced_and_commits_nothing_more(
    cluster: EtcdCluster, anyio_backend: str, how: str
) -> None:
    prefix = f"lead{os.getpid()}-{how}-{anyio_backend}"
    one, two = leader_and_follower(cluster, prefix, anyio_backend)
    try:
        acked_before = len(one.said("wrote"))
        stopped = time.monotonic()
        os.kill(one.process.pid, getattr(signal, how))
        took = two.wait_for("leading", TTL + ELECTION + 5, after=stopped) - stopped
        assert took <= TTL + ELECTION, f"two led {took:.2f} s after one was stopped"
        two.wait_for("wrote 3", 10)
        if how == "SIGSTOP":
            resumed = time.monotonic()
            os.kill(one.process.pid, signal.SIGCONT)
            one.wait_for("lost", 2 * TTL + 5, after=resumed)
            # Resumed, it wrote nothing more: at most the write in flight when it was paused
            # is acknowledged now (it committed before: see below); the others raised.
            late = one.said("wrote", after=resumed)
            assert len(late) <= 1, late
            assert all(int(line.split()[1]) <= acked_before for line in late)
        # Fencing: nothing of one's committed after two's first write.
        mine, theirs = written(cluster, prefix, "one"), written(cluster, prefix, "two")
        assert mine
        assert theirs
        assert max(mine) < min(theirs)
        acked = len(one.said("wrote"))
        assert len(mine) in (acked, acked + 1)  # + the write in flight when it was stopped
    finally:
        one.stop()
        two.stop()


@needs_etcd
async def test_the_leader_is_known_to_the_others(cluster: EtcdCluster, anyio_backend: str) -> None:
    prefix = f"lead{os.getpid()}-known-{anyio_backend}"
    async with (
        ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix) as a,
        ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix) as b,
    ):
        assert await b.leader("scheduler") is None
        async with a.leadership("scheduler", ttl=TTL, identity="a") as lead:
            assert await b.leader("scheduler") == "a"
            await lead.update(lambda tx: tx.create(Task("by-a", "s")))
        assert await b.leader("scheduler") is None  # the lease was revoked on exit
        async with b.leadership("scheduler", ttl=TTL, identity="b"):
            assert await a.leader("scheduler") == "b"


@needs_etcd
async def test_a_write_after_the_key_is_gone_raises_not_leader_and_writes_nothing(
    cluster: EtcdCluster, anyio_backend: str
) -> None:
    """The leadership key is deleted from outside and the next write is made at once, before
    this process could have noticed: its txn is refused by the fence's compare (NotLeader),
    or the process notices during the round trip and cancels the block; either way the
    write is not committed, and leaving the block raises NotLeader."""
    prefix = f"lead{os.getpid()}-gone-{anyio_backend}"
    names = f"{prefix}/l/scheduler/".encode()
    refused: list[ws.NotLeader] = []

    async def lead_and_lose(store: ws.Store) -> None:
        async with store.leadership("scheduler", ttl=TTL, identity="a") as lead:
            await lead.update(lambda tx: tx.create(Task("a-before", "s")))
            # A blocking call: no other task of this process runs until it returns.
            body = {"key": b64(names), "range_end": b64(prefix_end(names))}
            post(cluster.endpoints[0], "kv/deleterange", body)
            try:
                await lead.update(lambda tx: tx.create(Task("a-after", "s")))
            except ws.NotLeader as exc:
                refused.append(exc)
            assert lead.lost
            await anyio.sleep(5)  # cancelled: the leadership is lost
            pytest.fail("the block was not cancelled")

    async with ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix) as store:
        with pytest.raises(ws.NotLeader, match="lost while the block ran"):
            await lead_and_lose(store)
        assert len(refused) <= 1
        assert store.view(lambda tx: tx.get(Task, "a-after")) is None
    assert len(written(cluster, prefix, "a")) == 1  # a-before only
