"""EtcdProposer through members that restart, refuse or are not ready yet, under contention
on one key, and with etcd-style prefixes (issue 18)."""

from __future__ import annotations

import contextlib
import json
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs
import pytest

import watchstore as ws
from tests.etcd_cluster import EtcdCluster, post, require_etcd, running
from tests.schema import SCHEMA, Task
from tests.test_etcd import HeldWatch, fake_http
from watchstore.etcd import http
from watchstore.etcd.client import EtcdClient, EtcdUnavailable, b64
from watchstore.etcd.proposer import backoff_bound

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
    from pathlib import Path

require_etcd()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Three members, shared by the tests that leave them running."""
    with running(tmp_path_factory.mktemp("etcd3"), 3) as cluster:
        yield cluster


@pytest.fixture
def three(tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three members of a test's own, which it may stop and start."""
    with running(tmp_path, 3) as cluster:
        yield cluster


def add_one(tx: ws.Tx) -> None:
    """Add one to the slot of the task "counter"."""
    task = tx.get(Task, "counter")
    assert task is not None
    tx.update(attrs.evolve(task, slot=task.slot + 1))


def counter(store: ws.Store) -> int:
    """The slot of the task "counter" in ``store``'s replica."""
    task = store.view(lambda tx: tx.get(Task, "counter"))
    assert task is not None
    return task.slot


async def create_counter(*stores: ws.Store) -> None:
    """Create the task "counter" (slot 0) through the first store; wait until all have it."""
    await stores[0].update(lambda tx: tx.create(Task("counter", "c")))
    for store in stores:
        await store.wait_for(stores[0].version)


# -- members shutting down or not ready: scripted answers ------------------------------------


@attrs.frozen
class Refusal:
    """An answer a member gives instead of serving a request to ``path`` (the part after
    ``/v3/``): HTTP ``status``, with the gateway's body (``message``, gRPC ``code``). With
    ``applied``, the member acted on the request first (a write committed) and then failed."""

    path: str
    status: int
    code: int
    message: str
    applied: bool = False


def closing(path: str, *, applied: bool = False) -> Refusal:
    """What a member's gateway answers while the member shuts down (SIGTERM)."""
    return Refusal(path, 408, 1, "grpc: the client connection is closing", applied)


@attrs.frozen
class Sent:
    """A request as :class:`Answers` saw it: to which endpoint (its index), for which path,
    and the status it got."""

    endpoint: int
    path: str
    status: int


class Answers:
    """Stands in front of a proposer's unary requests (``EtcdClient.send``; the watch has a
    connection of its own): each request is served by its member, unless ``refusals`` holds
    one for its path: then the first such refusal is the answer (after the member served it,
    if the refusal says it was ``applied``). ``sent`` records every request."""

    def __init__(self, client: EtcdClient) -> None:
        self._client = client
        self._real = client.send
        self.refusals: list[Refusal] = []
        self.sent: list[Sent] = []

    async def send(self, method: str, path: str, body: bytes | None) -> http.Response:
        endpoint = self._client.endpoints.index(self._client.endpoint)
        name = path.removeprefix("/").removeprefix("v3/")
        refusal = next((r for r in self.refusals if r.path == name), None)
        if refusal is None or refusal.applied:
            response = await self._real(method, path, body)
            if refusal is None:
                self.sent.append(Sent(endpoint, name, response.status))
                return response
        self.refusals.remove(refusal)
        self.sent.append(Sent(endpoint, name, refusal.status))
        answer = {"error": refusal.message, "message": refusal.message, "code": refusal.code}
        return http.Response(refusal.status, json.dumps(answer).encode())

    def of(self, path: str) -> list[tuple[int, int]]:
        """(endpoint, status) of each request sent to ``path``."""
        return [(s.endpoint, s.status) for s in self.sent if s.path == path]


async def answered(proposer: ws.EtcdProposer) -> Answers:
    """Route ``proposer``'s unary requests through a new :class:`Answers`."""
    answers = Answers(proposer.client)
    proposer.client.send = answers.send  # type: ignore[method-assign]
    return answers


async def test_a_read_refused_by_a_member_shutting_down_goes_to_the_next(
    cluster: EtcdCluster, prefix: str
) -> None:
    proposer = ws.EtcdProposer(cluster.endpoints, prefix)
    answers = await answered(proposer)
    answers.refusals = [closing("kv/range")]
    async with ws.open_store(SCHEMA, proposer=proposer):  # lists the prefix
        pass
    assert answers.of("kv/range") == [(0, 408), (1, 200)]


async def test_a_read_every_member_refuses_for_a_moment_goes_round_again(
    cluster: EtcdCluster, prefix: str
) -> None:
    """A leader election: each member answers "leader changed"; the read pauses, then goes
    round the members again."""
    proposer = ws.EtcdProposer(cluster.endpoints, prefix)
    answers = await answered(proposer)
    answers.refusals = [Refusal("kv/range", 503, 14, "etcdserver: leader changed")] * 3
    async with ws.open_store(SCHEMA, proposer=proposer):
        pass
    assert answers.of("kv/range") == [(0, 503), (1, 503), (2, 503), (0, 200)]


@pytest.mark.parametrize("applied", [False, True], ids=["not applied", "applied"])
async def test_a_write_refused_by_a_member_shutting_down_is_settled_and_applied_once(
    cluster: EtcdCluster, prefix: str, applied: bool
) -> None:
    """The member may have applied the txn before its gateway answered 408: the fence
    settles it, as after a broken connection. Found in etcd's history, it is not run again;
    not found, it runs again (and can no longer apply in the meantime)."""
    proposer = ws.EtcdProposer(cluster.endpoints, prefix)
    answers = await answered(proposer)
    runs = 0

    def add(tx: ws.Tx) -> None:
        nonlocal runs
        runs += 1
        add_one(tx)

    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        await create_counter(store)
        answers.refusals = [closing("kv/txn", applied=applied)]
        with anyio.fail_after(20):
            await store.update(add)
        assert counter(store) == 1
        assert runs == (1 if applied else 2)
    async with ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix) as fresh:
        assert counter(fresh) == 1


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (429, 8, "etcdserver: too many requests"),  # catching up after a restart
        (503, 14, "etcdserver: not capable"),  # just started
    ],
)
async def test_a_write_refused_by_a_member_not_ready_goes_to_the_next_at_once(
    cluster: EtcdCluster, prefix: str, status: int, code: int, message: str
) -> None:
    """etcd refuses so before acting on a request: the txn is sent to the next member as it
    is, with no fence and no run again."""
    proposer = ws.EtcdProposer(cluster.endpoints, prefix)
    answers = await answered(proposer)
    runs = 0

    def add(tx: ws.Tx) -> None:
        nonlocal runs
        runs += 1
        add_one(tx)

    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        await create_counter(store)
        answers.sent.clear()
        answers.refusals = [Refusal("kv/txn", status, code, message)]
        with anyio.fail_after(20):
            await store.update(add)
        assert counter(store) == 1
        assert runs == 1
        (refused, _), (served, ok) = answers.of("kv/txn")
        assert (served, ok) == ((refused + 1) % 3, 200)
        assert answers.of("kv/put") == []  # no fence


async def test_a_watch_refused_by_a_member_shutting_down_is_unavailable() -> None:
    """So the replica resumes on the next member; any other error would stop it."""
    error = b'{"error":"grpc: the client connection is closing","code":1}'
    head = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: %d\r\n\r\n" % len(error)
    async with fake_http(head + error) as (endpoint, _requests):
        client = ws.EtcdProposer([endpoint]).client
        with pytest.raises(EtcdUnavailable, match="closing"):
            await drain(client.watch({"key": "AA=="}))
        await client.aclose()


async def drain(results: AsyncGenerator[dict[str, Any], None]) -> None:
    async with aclosing(results):
        async for _result in results:
            pass


# -- contention on one key --------------------------------------------------------------------


def test_the_back_off_bound_doubles_from_2_ms_to_at_most_100_ms() -> None:
    bounds = [backoff_bound(attempt) for attempt in range(1, 10)]
    assert bounds == [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.1, 0.1, 0.1]


async def test_after_a_conflict_the_process_backs_off_as_a_whole(
    cluster: EtcdCluster, prefix: str
) -> None:
    """When a txn's compare fails, the other tasks of the process waiting for the same key
    wait until the replica has the commit that made it fail and the back-off is over: none
    sends a txn sure to fail, at once, on what it knows is stale."""
    proposer = ws.EtcdProposer(cluster.endpoints, prefix)
    held = HeldWatch(proposer)
    real = proposer.client.call
    txns: list[dict[str, Any]] = []  # a's txns that compare (not the reads)
    before: list[Callable[[], Awaitable[object]]] = []  # run before a's next kv/txn calls
    after: list[Callable[[], Awaitable[object]]] = []  # and after

    async def call(method: str, body: dict[str, Any], *, write: bool = False) -> Any:
        if method == "kv/txn" and "compare" in body:
            txns.append(body)
        step = len(txns)
        if method == "kv/txn" and before:
            await before.pop(0)()
        response = await real(method, body, write=write)
        if method == "kv/txn" and after and step:
            await after.pop(0)()
        return response

    proposer.client.call = call  # type: ignore[method-assign]
    async with (
        ws.open_store(SCHEMA, proposer=proposer) as a,
        ws.open_store(SCHEMA, etcd=cluster.endpoints, prefix=prefix) as b,
        anyio.create_task_group() as tg,
    ):
        await create_counter(a, b)
        held.close()
        await b.update(add_one)  # a's replica does not see it: a's next txn fails
        moved = b.version.index

        async def second_writer_queues() -> None:  # while a's first writer's txn is held
            tg.start_soon(a.update, add_one)
            await anyio.wait_all_tasks_blocked()

        async def open_once_all_wait() -> None:
            await anyio.wait_all_tasks_blocked()
            held.open()

        async def after_the_read() -> None:  # of the failed txn's keys
            tg.start_soon(open_once_all_wait)

        before.append(second_writer_queues)
        after.extend([anyio.lowlevel.checkpoint, after_the_read])
        txns.clear()
        with anyio.fail_after(20):
            await a.update(add_one)
            while counter(a) < 3:
                await a.wait_for(ws.Version(a.version.index + 1))
    key = b64(f"{prefix}/o/Task/counter".encode())
    compared = [
        next(int(c["mod_revision"]) for c in body["compare"] if c["key"] == key) for body in txns
    ]
    assert compared[0] < moved  # the first, on a's replica before b's commit: it failed
    assert all(revision >= moved for revision in compared[1:]), compared
    assert len(compared) == 3  # and the two increments, each once


async def test_writers_contending_for_one_key_all_get_through(
    cluster: EtcdCluster, prefix: str
) -> None:
    """Twelve writers on six stores increment one counter: none gives up after its retries
    and every increment counts once."""
    endpoints = cluster.endpoints
    gave_up: list[str] = []
    acknowledged = 0

    async def writer(store: ws.Store) -> None:
        nonlocal acknowledged
        for _ in range(20):
            try:
                await store.update(add_one)
            except ws.StoreError as exc:
                gave_up.append(repr(exc))
            else:
                acknowledged += 1

    async with contextlib.AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(
                ws.open_store(SCHEMA, etcd=endpoints[i % 3 :] + endpoints[: i % 3], prefix=prefix)
            )
            for i in range(6)
        ]
        await create_counter(*stores)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for store in stores * 2:
                    tg.start_soon(writer, store)
        assert gave_up == []
        assert acknowledged == 240
        await stores[0].wait_for(max(s.version for s in stores))
        assert counter(stores[0]) == 240


# -- prefixes ---------------------------------------------------------------------------------


async def test_a_prefix_with_a_trailing_slash_is_the_same_prefix(
    cluster: EtcdCluster, prefix: str
) -> None:
    endpoints = cluster.endpoints
    async with (
        ws.open_store(SCHEMA, etcd=endpoints, prefix=f"/{prefix}/") as a,
        ws.open_store(SCHEMA, etcd=endpoints, prefix=f"/{prefix}") as b,
    ):
        await a.update(lambda tx: tx.create(Task("t1", "web")))
        await b.wait_for(a.version)
        assert b.view(lambda tx: tx.get(Task, "t1")) is not None
    listed = post(endpoints[0], "kv/range", {"key": b64(f"/{prefix}/o/Task/t1".encode())})
    assert listed.get("count") == "1"


def test_a_prefix_that_is_only_a_slash_is_refused_with_an_example() -> None:
    with pytest.raises(ValueError, match="'/registry/'"):
        ws.EtcdProposer(["http://127.0.0.1:2379"], "/")


# -- rolling restart --------------------------------------------------------------------------


@attrs.define
class Tally:
    """Increments attempted, acknowledged and failed by the writers of a test; ``more(n)``
    returns once ``n`` more were acknowledged."""

    attempted: int = 0
    acknowledged: int = 0
    failed: list[str] = attrs.Factory(list)
    _waiters: list[tuple[int, anyio.Event]] = attrs.Factory(list)

    async def more(self, n: int) -> None:
        event = anyio.Event()
        self._waiters.append((self.acknowledged + n, event))
        await event.wait()

    async def increment(self, store: ws.Store, stop: anyio.Event) -> None:
        """Increment the counter through ``store`` until ``stop``; count what happens."""
        while not stop.is_set():
            self.attempted += 1
            try:
                await store.update(add_one)
            except ws.StoreError as exc:
                self.failed.append(repr(exc))
                continue
            self.acknowledged += 1
            for target, event in self._waiters:
                if self.acknowledged >= target:
                    event.set()


async def test_a_rolling_restart_of_every_member_fails_loses_and_doubles_no_increment(
    three: EtcdCluster, prefix: str
) -> None:
    """Must show 3: each member in turn is stopped with SIGTERM (as an init system stops
    it), waited for, started again on its data dir and ports and waited for until healthy,
    while writers on two stores increment one counter: every update succeeds and the
    counter ends at the number of increments acknowledged."""
    endpoints = three.endpoints
    tally = Tally()
    stop = anyio.Event()
    async with (
        ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as a,
        ws.open_store(SCHEMA, etcd=endpoints[1:] + endpoints[:1], prefix=prefix) as b,
    ):
        await create_counter(a, b)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for store in (a, a, b):  # a rival on another store contends for the counter
                    tg.start_soon(tally.increment, store, stop)
                await tally.more(20)
                for member in range(3):
                    await anyio.to_thread.run_sync(three.terminate, member)
                    await tally.more(20)  # while it is down
                    await anyio.to_thread.run_sync(three.restart, member)
                    await tally.more(20)
                stop.set()
            await a.wait_for(b.version)
            await b.wait_for(a.version)
        print(
            f"\nrolling restart: {tally.attempted} updates attempted, {tally.acknowledged} "
            f"acknowledged, {len(tally.failed)} failed; counter at {counter(a)}"
        )
        assert tally.failed == []
        assert counter(a) == counter(b) == tally.acknowledged
    async with ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as fresh:
        assert counter(fresh) == tally.acknowledged
