"""EtcdProposer against real etcd members (Debian's etcd-server) on loopback."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import signal
import ssl
import subprocess
import sys
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import h11
import pytest
from anyio.streams.tls import TLSListener

import watchstore as ws
from tests.etcd_cluster import EtcdCluster, Tls, post, require_etcd, running
from tests.schema import SCHEMA, Node, Task
from watchstore.core.codec import encode
from watchstore.etcd import http
from watchstore.etcd.client import (
    Compacted,
    EtcdUnavailable,
    OutcomeUnknown,
    b64,
    unb64,
)

if TYPE_CHECKING:
    from collections.abc import (
        AsyncGenerator,
        AsyncIterator,
        Awaitable,
        Callable,
        Coroutine,
        Iterator,
        Sequence,
    )
    from contextlib import AbstractAsyncContextManager

ROOT = Path(__file__).parent.parent

require_etcd()


@pytest.fixture
def three(tmp_path: Path) -> Iterator[EtcdCluster]:
    with running(tmp_path, 3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdCluster, Tls]]:
    """A one-member cluster serving clients over TLS only, with client certificates."""
    tmp = tmp_path_factory.mktemp("etcd-tls")
    tls = Tls.create(tmp)
    cluster = EtcdCluster(tmp, 1, tls=tls)
    try:
        yield cluster, tls
    finally:
        cluster.stop()


@asynccontextmanager
async def two_stores(endpoints: list[str], prefix: str) -> AsyncIterator[tuple[ws.Store, ws.Store]]:
    """Two stores sharing one prefix, as two processes would."""
    async with (
        ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as a,
        ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as b,
    ):
        yield a, b


async def assert_same_as_fresh(store: ws.Store, endpoints: list[str], prefix: str) -> None:
    """A replica listed afresh from etcd, once ``store`` has caught up with it, equals it."""
    async with ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as fresh:
        await store.wait_for(fresh.version)
        assert state_of(fresh) == state_of(store)


def state_of(store: ws.Store) -> dict[str, Any]:
    """The whole replica, encoded (metadata and versions included)."""
    return store.view(
        lambda tx: {
            "tasks": [encode(t) for t in tx.all(Task)],
            "nodes": [encode(n) for n in tx.all(Node)],
        }
    )


async def test_writes_reach_every_replica_with_the_etcd_revision_as_version(
    single: EtcdCluster, prefix: str
) -> None:
    endpoints = single.endpoints
    async with two_stores(endpoints, prefix) as (a, b), b.watch(ws.on(Task)) as events:
        task = await a.update(lambda tx: tx.create(Task("t1", "web")))
        assert a.view(lambda tx: tx.get(Task, "t1")) is not None
        created = await events.receive()
        assert isinstance(created, ws.Created)
        stored = created.obj
        assert stored.meta.version == a.version
        assert stored.meta.created_at == task.meta.created_at
        response = post(endpoints[0], "kv/range", {"key": b64(f"{prefix}/o/Task/t1".encode())})
        assert int(response["kvs"][0]["mod_revision"]) == a.version.index

        await b.update(lambda tx: tx.update(attrs.evolve(stored, node_id="n1")))
        updated = await events.receive()
        assert isinstance(updated, ws.Updated)
        assert updated.old == stored
        await a.wait_for(b.version)
        assert a.view(lambda tx: tx.find(Task, node_id="n1")) == [updated.obj]

        await a.update(lambda tx: tx.delete(Task, "t1"))
        assert isinstance(await events.receive(), ws.Deleted)
    # A store opened later lists what is there.
    async with ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as c:
        assert c.view(lambda tx: tx.count(Task)) == 0


async def test_a_lone_commit_applied_from_what_it_wrote_equals_what_the_watch_decodes(
    single: EtcdCluster, prefix: str
) -> None:
    # A lone txn at the replica's next revision is applied from the transaction's own
    # objects, not decoded from its watch event: the writer's watchers and replica must
    # see exactly what every other replica decodes.
    endpoints = single.endpoints
    async with (
        ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as a,
        a.watch(ws.on(Task), ws.on(Node)) as events,
    ):
        node = await a.update(
            lambda tx: tx.create(Node("n1", "node one", labels=frozenset({"zone=b"})))
        )
        task = await a.update(lambda tx: tx.create(Task("t1", "web", node_id="n1")))
        assert task.meta.version == a.version
        moved = await a.update(lambda tx: tx.update(attrs.evolve(task, node_id=None)))
        await a.update(lambda tx: tx.delete(Node, node.id))
        with anyio.fail_after(10):
            got = [await events.receive() for _ in range(4)]
        assert [type(e).__name__ for e in got] == ["Created", "Created", "Updated", "Deleted"]
        created, updated = got[1], got[2]
        assert isinstance(created, ws.Created)
        assert isinstance(updated, ws.Updated)
        assert created.obj == task
        assert (updated.old, updated.obj) == (task, moved)
        assert created.version == task.meta.version
        assert updated.version == moved.meta.version
        assert got[3].version == a.version
        await assert_same_as_fresh(a, endpoints, prefix)


async def test_a_writer_committing_on_and_on_still_gets_the_commits_of_others(
    single: EtcdCluster, prefix: str
) -> None:
    # While commits of a process are in flight its watch rests rather than read each of its
    # own events (EtcdProposer._rest). Another process's commit must still reach the
    # replica and its watchers while the writer goes on, in version order, and the
    # writer's next commit after it must wait for it.
    endpoints = single.endpoints
    async with (
        two_stores(endpoints, prefix) as (a, b),
        a.watch(ws.on(Task), ws.on(Node)) as events,
    ):
        first = a.version
        written: list[Task] = []

        async def write_until_a_node_arrives() -> None:
            i = 0
            while a.view(lambda tx: tx.get(Node, "n-b")) is None:
                written.append(await a.update(lambda tx: tx.create(Task(f"t{i}", "web"))))
                i += 1

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(write_until_a_node_arrives)
                await a.wait_for(ws.Version(first.index + 20))  # the writer is under way
                node = await b.update(lambda tx: tx.create(Node("n-b", "from b")))
            got = [await events.receive() for _ in range(len(written) + 1)]
        created = [e for e in got if isinstance(e, ws.Created)]
        assert len(created) == len(got)
        assert [e.version for e in created] == sorted({e.version for e in created})
        assert [e.obj for e in created if isinstance(e.obj, Task)] == written
        (from_b,) = [e for e in created if isinstance(e.obj, Node)]
        assert from_b.obj == node
        after = [e for e in created if isinstance(e.obj, Task) and e.version > from_b.version]
        assert after, "the writer stopped before the other process's commit"
        await assert_same_as_fresh(a, endpoints, prefix)


async def test_a_stale_version_raises_sequence_conflict_at_once(
    single: EtcdCluster, prefix: str
) -> None:
    async with ws.open_store(SCHEMA, etcd=single.endpoints, prefix=prefix) as store:
        old = await store.update(lambda tx: tx.create(Task("t1", "web")))
        await store.update(lambda tx: tx.update(attrs.evolve(old, slot=1)))
        calls = 0

        def stale(tx: ws.Tx) -> None:
            nonlocal calls
            calls += 1
            tx.update(attrs.evolve(old, slot=2))

        with pytest.raises(ws.SequenceConflict) as caught:
            await store.update(stale)
        assert calls == 1
        assert caught.value.current.slot == 1


async def test_concurrent_read_modify_writes_lose_no_update(
    single: EtcdCluster, prefix: str
) -> None:
    async with two_stores(single.endpoints, prefix) as (a, b):
        await a.update(lambda tx: tx.create(Task("counter", "c")))
        await b.wait_for(a.version)
        runs = 0

        async def bump(store: ws.Store) -> None:
            nonlocal runs
            for _ in range(15):

                def add(tx: ws.Tx) -> None:
                    nonlocal runs
                    runs += 1
                    task = tx.get(Task, "counter")
                    assert task is not None
                    tx.update(attrs.evolve(task, slot=task.slot + 1))

                await store.update(add)

        async with anyio.create_task_group() as tg:
            for store in (a, a, b, b):
                tg.start_soon(bump, store)
        await a.wait_for(b.version)
        await b.wait_for(a.version)
        assert a.view(lambda tx: tx.get(Task, "counter")).slot == 60  # type: ignore[union-attr]
        assert state_of(a) == state_of(b)
        assert runs > 60  # some ran again after a conflict


async def test_unique_keys_hold_across_stores(single: EtcdCluster, prefix: str) -> None:
    async with two_stores(single.endpoints, prefix) as (a, b):
        outcomes: list[str] = []

        async def claim(store: ws.Store, id: str) -> None:
            try:
                await store.update(lambda tx: tx.create(Node(id, "Worker")))
                outcomes.append("ok")
            except ws.UniqueConflict:
                outcomes.append("conflict")

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim, a, "a1")
            tg.start_soon(claim, b, "b1")
        assert sorted(outcomes) == ["conflict", "ok"]
        # Renaming frees the old key for the other store.
        await a.wait_for(b.version)
        holder = a.view(lambda tx: tx.get(Node, "a1") or tx.get(Node, "b1"))
        assert holder is not None
        await a.update(lambda tx: tx.update(attrs.evolve(holder, name="renamed")))
        await b.wait_for(a.version)
        await b.update(lambda tx: tx.create(Node("b2", "worker")))
        await a.wait_for(b.version)
        assert {n.name for n in a.view(lambda tx: tx.all(Node))} == {"renamed", "worker"}


async def test_a_transaction_whose_reads_changed_does_not_commit(
    single: EtcdCluster, prefix: str
) -> None:
    async with two_stores(single.endpoints, prefix) as (a, b):
        await a.update(lambda tx: tx.create(Node("n1", "one")))
        await b.wait_for(a.version)
        opened = anyio.Event()
        go = anyio.Event()

        async def reads_n1_then_waits(batch: ws.Batch) -> None:
            def place(tx: ws.Tx) -> None:
                node = tx.get(Node, "n1")
                assert node is not None
                assert node.name == "one"
                tx.create(Task("t1", "web", node_id=node.id))

            await batch.update(place)
            opened.set()
            await go.wait()  # the batch holds its chunk open: a's replica cannot move

        async with anyio.create_task_group() as tg:

            async def run_batch() -> None:
                with pytest.raises(ws.SequenceConflict):
                    await a.batch(reads_n1_then_waits)

            tg.start_soon(run_batch)
            await opened.wait()
            node = b.view(lambda tx: tx.get(Node, "n1"))
            assert node is not None
            await b.update(lambda tx: tx.update(attrs.evolve(node, name="drained")))
            go.set()
        await a.wait_for(b.version)
        assert a.view(lambda tx: tx.get(Task, "t1")) is None


async def test_etcd_limits_give_transaction_too_large_and_batch_splits(
    single: EtcdCluster, prefix: str
) -> None:
    async with ws.open_store(SCHEMA, etcd=single.endpoints, prefix=prefix) as store:

        def many(tx: ws.Tx) -> None:
            for i in range(200):
                tx.create(Task(f"t{i}", "bulk"))

        with pytest.raises(ws.TransactionTooLarge, match="128"):
            await store.update(many)
        assert store.view(lambda tx: tx.count(Task)) == 0

        async def fill(batch: ws.Batch) -> None:
            for i in range(500):
                await batch.update(lambda tx: tx.create(Task(f"t{i}", "bulk")))

        before = store.version
        commits: list[ws.Version] = []
        async with store.watch(ws.on_commit()) as events:
            await store.batch(fill)
            while len(commits) < 4:
                event = await events.receive()
                assert isinstance(event, ws.Committed)
                commits.append(event.version)
        assert store.view(lambda tx: tx.count(Task)) == 500
        assert all(v > before for v in commits)


async def test_undecodable_objects_go_to_on_parse_error(single: EtcdCluster, prefix: str) -> None:
    errors: list[bytes] = []
    proposer = ws.EtcdProposer(
        single.endpoints, prefix, on_parse_error=lambda key, value, exc: errors.append(key)
    )
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        await store.update(lambda tx: tx.create(Task("t1", "web")))
        await store.update(lambda tx: tx.create(Task("t2", "web")))
        key = f"{prefix}/o/Task/t1".encode()
        post(single.endpoints[0], "kv/put", {"key": b64(key), "value": b64(b'{"id": 1}')})
        await store.update(lambda tx: tx.create(Task("t3", "web")))  # the replica goes on
        assert errors == [key]
        assert [t.id for t in store.view(lambda tx: tx.all(Task))] == ["t2", "t3"]


async def test_over_tls_with_client_certificates_commits_and_the_watch_work(
    secure: tuple[EtcdCluster, Tls], prefix: str
) -> None:
    cluster, tls = secure

    def tls_store() -> AbstractAsyncContextManager[ws.Store]:
        proposer = ws.EtcdProposer(cluster.endpoints, prefix, ssl_context=tls.context())
        return ws.open_store(SCHEMA, proposer=proposer)

    # A watch that cannot connect would leave the commits waiting: fail instead.
    with anyio.fail_after(20):
        async with tls_store() as a, tls_store() as b, b.watch(ws.on(Node)) as events:
            nodes = [Node(f"n{i}", f"node {i}") for i in range(5)]
            for node in nodes:
                await a.update(functools.partial(ws.Tx.create, obj=node))
            seen = [await events.receive() for _ in nodes]
            assert [e.obj.id for e in seen if isinstance(e, ws.Created)] == [n.id for n in nodes]
            await b.wait_for(a.version)
            assert state_of(a) == state_of(b)
    listed = post(
        cluster.endpoints[0],
        "kv/range",
        {"key": b64(f"{prefix}/o/".encode()), "range_end": b64(f"{prefix}/o0".encode())},
        context=cluster.context,
    )
    assert int(listed["count"]) == len(nodes)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no client certificate", "BAD_CERTIFICATE|certificate required"),
        ("CA not trusted", "CERTIFICATE_VERIFY_FAILED"),
        ("no context", "CERTIFICATE_VERIFY_FAILED"),
        ("http to a TLS port", "disconnected"),
    ],
)
async def test_a_tls_cluster_refuses_a_client_without_its_credentials_and_says_why(
    secure: tuple[EtcdCluster, Tls], prefix: str, case: str, reason: str
) -> None:
    cluster, tls = secure
    endpoints, context = cluster.endpoints, None
    if case == "no client certificate":
        context = tls.context(certificate=False)
    elif case == "CA not trusted":
        context = tls.context(trust=False)
    elif case == "http to a TLS port":
        endpoints = [e.replace("https://", "http://") for e in endpoints]
    hint = "ssl_context"
    proposer = ws.EtcdProposer(endpoints, prefix, ssl_context=context, timeout=2.0)
    with pytest.raises(EtcdUnavailable, match=f"(?s)({reason}).*{hint}"):
        async with ws.open_store(SCHEMA, proposer=proposer):
            pass


def test_an_endpoint_without_a_scheme_is_refused_with_an_example() -> None:
    with pytest.raises(ValueError, match=r"'127\.0\.0\.1:2379'.*http://127\.0\.0\.1:2379"):
        ws.EtcdProposer(["127.0.0.1:2379"])


async def test_old_etcd_is_refused_at_connect() -> None:
    body = b'{"etcdserver":"3.3.25","etcdcluster":"3.3.0"}'
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    head += b"content-length: %d\r\n\r\n" % len(body)
    async with fake_http(head + body) as (endpoint, _requests):
        with pytest.raises(ws.EtcdError, match=r"3\.3\.25.*3\.4"):
            async with ws.open_store(SCHEMA, etcd=[endpoint]):
                pass


def test_two_processes_writing_the_same_rows_converge(
    single: EtcdCluster, prefix: str, anyio_backend: str
) -> None:
    """Must show 1: real OS processes, same rows, no lost update, unique keys hold."""
    endpoint = single.endpoints[0]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.etcd_child", endpoint, prefix, me, other, anyio_backend],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for me, other in (("p1", "p2"), ("p2", "p1"))
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
        results.append(json.loads(out))
    one, two = results
    assert one["state"] == two["state"]  # identical replicas, compared in full
    tasks = {t["id"]: t for t in one["state"]["tasks"]}
    assert sum(tasks[f"counter-{k}"]["slot"] for k in range(3)) == (
        one["increments"] + two["increments"]
    )
    assert one["increments"] == two["increments"] == 40
    names = [n["name"].casefold() for n in one["state"]["nodes"]]
    assert len(names) == len(set(names))
    assert not set(one["claimed"]) & set(two["claimed"])
    assert len(one["claimed"]) + len(two["claimed"]) == 30


async def test_leader_killed_under_load_loses_no_acknowledged_commit(
    three: EtcdCluster, prefix: str
) -> None:
    """Must show 2: SIGKILL the leader mid-load; writers go on; replicas converge."""
    endpoints = three.endpoints
    acknowledged: set[str] = set()
    after_kill = 0
    killed = anyio.Event()
    enough = anyio.Event()
    errors: list[str] = []

    async def writer(store: ws.Store, name: str) -> None:
        nonlocal after_kill
        for i in itertools.count():
            id = f"{name}-{i}"
            while True:
                try:
                    await store.update(lambda tx: tx.create(Task(id, name)))
                    break
                except ws.ObjectExists:  # an earlier attempt did commit
                    break
                except ws.EtcdError as exc:  # no leader yet: retry
                    errors.append(repr(exc))
                    # Real time against a real cluster electing a leader: nothing to wait on.
                    await anyio.sleep(0.1)
            acknowledged.add(id)
            if len(acknowledged) >= 100:
                enough.set()
            if killed.is_set():
                after_kill += 1
                if after_kill >= 120:
                    return

    order = [endpoints, endpoints[1:] + endpoints[:1]]
    async with (
        ws.open_store(SCHEMA, etcd=order[0], prefix=prefix) as a,
        ws.open_store(SCHEMA, etcd=order[1], prefix=prefix) as b,
    ):
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                for i, store in enumerate((a, a, b, b)):
                    tg.start_soon(writer, store, f"w{i}")
                await enough.wait()
                leader = three.leader()
                three.signal(leader, signal.SIGKILL)
                killed.set()
            await a.wait_for(b.version)
            await b.wait_for(a.version)
        assert state_of(a) == state_of(b)
        ids = {t.id for t in a.view(lambda tx: tx.all(Task))}
        assert acknowledged <= ids
    survivors = [e for i, e in enumerate(endpoints) if i != leader]
    async with ws.open_store(SCHEMA, etcd=survivors, prefix=prefix) as fresh:
        assert {t.id for t in fresh.view(lambda tx: tx.all(Task))} == ids


async def test_a_watcher_behind_a_compaction_relists_and_reports_it(
    three: EtcdCluster, prefix: str
) -> None:
    """Must show 3: the watch revision is compacted away; re-list, report, exact state."""
    endpoints = three.endpoints
    resyncs: list[ws.Version] = []
    follower = ws.EtcdProposer(endpoints[:2], prefix, on_resync=resyncs.append)
    async with (
        ws.open_store(SCHEMA, proposer=follower) as a,
        ws.open_store(SCHEMA, etcd=endpoints[1:], prefix=prefix) as b,
        a.watch(ws.on(Task)) as events,
    ):
        for i in range(20):
            await b.update(lambda tx: tx.create(Task(f"t{i}", "web")))
        await a.wait_for(b.version)
        assert [type(await events.receive()) for _ in range(20)] == [ws.Created] * 20
        assert follower.client.endpoint == endpoints[0]
        three.signal(0, signal.SIGSTOP)  # a's watch stalls on member 0
        for i in range(10):
            await b.update(lambda tx: tx.delete(Task, f"t{i}"))
        for i in range(20, 30):
            await b.update(lambda tx: tx.create(Task(f"t{i}", "api")))
        post(endpoints[1], "kv/compaction", {"revision": b.version.index, "physical": True})
        three.signal(0, signal.SIGKILL)  # the stream breaks; a resumes on member 1
        with anyio.fail_after(30):
            await a.wait_for(b.version)
        assert resyncs == [a.version]
        assert follower.resyncs == 1
        assert state_of(a) == state_of(b)
        seen = [await events.receive() for _ in range(20)]  # the resync, as events
        assert sorted(type(e).__name__ for e in seen) == ["Created"] * 10 + ["Deleted"] * 10


async def test_a_frozen_member_does_not_stall_the_replica(three: EtcdCluster, prefix: str) -> None:
    """A member that stops answering leaves its watch silent, not broken: the watchdog
    notices and the replica follows another member."""
    endpoints = three.endpoints
    follower = ws.EtcdProposer(endpoints, prefix, watch_idle=0.5)
    async with (
        ws.open_store(SCHEMA, proposer=follower) as a,
        ws.open_store(SCHEMA, etcd=endpoints[1:], prefix=prefix) as b,
    ):
        await b.update(lambda tx: tx.create(Task("t0", "web")))
        await a.wait_for(b.version)
        three.signal(0, signal.SIGSTOP)
        for i in range(1, 6):
            await b.update(lambda tx: tx.create(Task(f"t{i}", "web")))
        with anyio.fail_after(20):
            await a.wait_for(b.version)
        assert follower.client.endpoint != endpoints[0]
        assert state_of(a) == state_of(b)


@asynccontextmanager
async def fake_http(response: bytes) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A one-connection HTTP server: reads a request, sends ``response``, then closes."""
    requests: list[bytes] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive()
        requests.append(data)
        await stream.send(response)
        await stream.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}", requests
        tg.cancel_scope.cancel()


async def _collect(
    results: AsyncGenerator[dict[str, Any], None], into: list[dict[str, Any]]
) -> None:
    async with aclosing(results):
        async for result in results:
            into.append(result)


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


class Pieces(anyio.abc.ByteStream):
    """A stream whose every ``receive`` gets exactly the next ``step`` bytes of ``data``
    (then the end of the stream), whatever a socket would have coalesced; what is sent to
    it is dropped."""

    def __init__(self, data: bytes, step: int) -> None:
        self._pieces = [data[i : i + step] for i in range(0, len(data), step)]
        self.receives = 0

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        self.receives += 1
        if not self._pieces:
            raise anyio.EndOfStream
        return self._pieces.pop(0)

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()


FIRST = json.dumps({"result": {"header": {"revision": "5"}, "events": [{"n": 1}]}}).encode()
SECOND = json.dumps({"result": {"events": [{"n": 2}, {"n": 3}]}}).encode()
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
CHUNKED_HEAD += b"Transfer-Encoding: chunked\r\n\r\n"
CHUNKED_BODY = _chunked(FIRST[:10], FIRST[10:] + b"\n" + SECOND[:4], SECOND[4:], b"\n", b"\n")


async def _answered(data: bytes, step: int) -> http.Stream:
    """The response ``data`` to a watch request, arriving ``step`` bytes at a time."""
    connection = http._Connection(Pieces(data, step))
    head = [("host", "etcd"), ("content-length", "2")]
    await connection.send(h11.Request(method="POST", target="/v3/watch", headers=head), b"{}")
    return http.Stream(connection, await connection.read_head())


@pytest.mark.parametrize("step", [1, 2, 3, 7, 4096])
async def test_the_watch_stream_reads_chunked_lines_however_they_arrive(step: int) -> None:
    stream = await _answered(CHUNKED_HEAD + CHUNKED_BODY, step)
    assert stream.status == 200
    lines = []
    while (line := await stream.line()) is not None:
        lines.append(line)
    await stream.aclose()
    assert lines == [FIRST, SECOND, b""]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 4096])
async def test_buffered_says_whether_the_next_line_waits_for_the_connection(step: int) -> None:
    # The watch rests while this process commits only when no message is waiting
    # (EtcdProposer._rest): Stream.buffered() must say exactly whether line() reads.
    pieces = Pieces(CHUNKED_HEAD + CHUNKED_BODY, step)
    connection = http._Connection(pieces)
    head = h11.Request(
        method="POST", target="/v3/watch", headers=[("host", "etcd"), ("content-length", "2")]
    )
    await connection.send(head, b"{}")
    stream = http.Stream(connection, await connection.read_head())
    said = []
    while True:
        buffered, receives = stream.buffered(), pieces.receives
        line = await stream.line()
        said.append(buffered)
        assert (pieces.receives == receives) is buffered, (step, len(said))
        if line is None:
            break
    await stream.aclose()
    if step == 4096:  # all of it came with the head: no line had to be read
        assert said == [True, True, True, True]
    else:
        assert not said[0]


@pytest.mark.parametrize("step", [1, 3, 4096])
async def test_a_response_body_by_length_or_to_the_end_is_read_however_it_arrives(
    step: int,
) -> None:
    body = FIRST + b"\n" + SECOND
    by_length = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body)
    to_the_end = b"HTTP/1.1 200 OK\r\n\r\n"
    for head, rest in ((by_length, b"ignored"), (to_the_end, b"")):
        stream = await _answered(head + body + rest, step)
        assert await stream.read_all() == body
        await stream.aclose()


async def test_the_watch_yields_each_result_and_ends_unavailable() -> None:
    async with fake_http(CHUNKED_HEAD + CHUNKED_BODY) as (endpoint, requests):
        client = ws.EtcdProposer([endpoint]).client
        got: list[dict[str, Any]] = []
        with pytest.raises(ws.EtcdError, match="ended"):
            await _collect(client.watch({"key": "AA=="}), got)
        await client.aclose()
    assert got == [json.loads(FIRST)["result"], json.loads(SECOND)["result"]]
    assert requests[0].startswith(b"POST /v3/watch HTTP/1.1\r\n")


async def test_a_refused_watch_gives_the_servers_error() -> None:
    error = b'{"error":"etcdserver: mvcc: required revision has been compacted","code":11}'
    head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(error)
    async with fake_http(head + error + b"ignored") as (endpoint, _requests):
        client = ws.EtcdProposer([endpoint]).client
        with pytest.raises(Compacted):
            await _collect(client.watch({"key": "AA=="}), [])
        await client.aclose()


@asynccontextmanager
async def silent_http(*, read: bool = True, tls: Tls | None = None) -> AsyncIterator[str]:
    """A server that accepts connections and never answers (with ``read=False`` it does not
    even read what comes); with ``tls``, over TLS."""

    async def serve(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while read:
                    await stream.receive()
                await anyio.sleep_forever()

    listener: anyio.abc.Listener[Any] = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls.server)
        listener = TLSListener(listener, context, standard_compatible=False)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("transport", ["http", "https"])
async def test_a_request_without_an_answer_fails_once_its_timeout_passed(
    tmp_path: Path, transport: str
) -> None:
    """A member that takes a request and never answers: a write's outcome is unknown, a
    read (and a watch) finds no member, each once the client's timeout has passed."""
    tls = Tls.create(tmp_path) if transport == "https" else None
    context = None if tls is None else tls.context()
    async with silent_http(tls=tls) as endpoint:
        client = ws.EtcdProposer([endpoint], ssl_context=context, timeout=0.3).client
        with anyio.fail_after(10):  # not a figure: a guard against hanging
            for call, error in [
                (client.call("kv/txn", {}, write=True), OutcomeUnknown),
                (client.call("kv/range", {"key": "AA=="}), EtcdUnavailable),
                (_collect(client.watch({"key": "AA=="}), []), EtcdUnavailable),
            ]:
                start = anyio.current_time()
                with pytest.raises(error, match=r"no answer within 0\.3 s"):
                    await call
                assert anyio.current_time() - start >= 0.3
        await client.aclose()


async def test_a_request_the_server_does_not_read_fails_once_its_timeout_passed() -> None:
    """Its body fills the socket's buffers and the send waits: the timeout covers that."""
    async with silent_http(read=False) as endpoint:
        target = http.Endpoint(endpoint, None, timeout=0.3)
        with anyio.fail_after(10), pytest.raises(http.Broken, match=r"no answer within 0\.3 s"):
            await target.request("POST", "/v3/kv/put", bytes(64 << 20))
        await target.aclose()


async def test_a_connection_that_timed_out_is_not_used_again() -> None:
    """After a request timed out, the next one goes out on a new connection and is
    answered."""
    body = b"{}"
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    connections = 0

    async def serve(stream: anyio.abc.SocketStream) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    data = await stream.receive()
                    if not first and b"\r\n\r\n" in data:
                        await stream.send(answer)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        client = ws.EtcdProposer([f"http://127.0.0.1:{port}"], timeout=0.3).client
        with anyio.fail_after(10):
            with pytest.raises(OutcomeUnknown, match="no answer within"):
                await client.call("kv/txn", {}, write=True)
            assert await client.call("kv/range", {"key": "AA=="}) == {}
        await client.aclose()
        tg.cancel_scope.cancel()
    assert connections == 2


async def test_a_watch_cut_off_mid_chunk_is_unavailable() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with fake_http(head + b'40\r\n{"result":{}}\n') as (endpoint, _requests):
        client = ws.EtcdProposer([endpoint]).client
        got: list[dict[str, Any]] = []
        with pytest.raises(EtcdUnavailable, match="broke"):
            await _collect(client.watch({"key": "AA=="}), got)
        await client.aclose()
    assert got == [{}]


@asynccontextmanager
async def counter_and_rival(
    endpoints: list[str], prefix: str, **options: Any
) -> AsyncIterator[tuple[ws.Store, ws.Store, Faults]]:
    """Store ``a`` (its txns scripted by the Faults) and a rival ``b`` on one prefix, both
    holding the task "counter" (slot 0)."""
    proposer = ws.EtcdProposer(endpoints, prefix, **options)
    faults = Faults(proposer)
    async with (
        ws.open_store(SCHEMA, proposer=proposer) as a,
        ws.open_store(SCHEMA, etcd=endpoints, prefix=prefix) as b,
    ):
        await a.update(lambda tx: tx.create(Task("counter", "c")))
        await b.wait_for(a.version)
        yield a, b, faults


def add_one(tx: ws.Tx) -> None:
    """Add one to the slot of the task "counter"."""
    task = tx.get(Task, "counter")
    assert task is not None
    tx.update(attrs.evolve(task, slot=task.slot + 1))


class Faults:
    """Scripted faults for a proposer's next kv/txn calls: ``hold`` keeps the request back
    (never sent) and reports an unknown outcome; ``lose`` sends it and loses the answer;
    ``down`` reports that no member answered; ``interfere`` awaits ``interfere()`` first."""

    def __init__(self, proposer: ws.EtcdProposer) -> None:
        self.real = proposer.client.call
        self.script: list[str] = []
        self.held: list[dict[str, Any]] = []
        self.interfere: Callable[[], Awaitable[object]] | None = None
        self.txns: list[dict[str, Any]] = []  # every kv/txn body, in order
        proposer.client.call = self.call  # type: ignore[method-assign]

    async def call(self, method: str, body: dict[str, Any], *, write: bool = False) -> Any:
        if method == "kv/txn":
            self.txns.append(body)
        if method == "kv/txn" and self.script:
            action = self.script.pop(0)
            if action == "hold":
                self.held.append(body)
                raise OutcomeUnknown("test: the connection broke before etcd got it")
            if action == "down":
                raise EtcdUnavailable("test: no member answered")
            if action == "interfere":
                assert self.interfere is not None
                await self.interfere()
                return await self.real(method, body, write=write)
            assert action == "lose"
            await self.real(method, body, write=write)
            raise OutcomeUnknown("test: the connection broke before the answer came")
        return await self.real(method, body, write=write)


def session_keys(endpoint: str, prefix: str) -> list[bytes]:
    """The fence and marker keys of every session under ``prefix``."""
    start = f"{prefix}/x/".encode()
    response = post(endpoint, "kv/range", {"key": b64(start), "range_end": b64(start[:-1] + b"0")})
    return [unb64(kv["key"]) for kv in response.get("kvs", [])]


@pytest.mark.parametrize(
    ("script", "delete", "runs"),
    [
        (["hold"], False, ["t0", "t1"]),  # never applied: fenced, run again
        (["lose"], False, ["t0"]),  # applied: its put is found in the history
        (["hold", "lose"], False, ["t0", "t1"]),  # lost again after the re-run: found
        (["hold"], True, ["t0", "t1"]),  # a delete only: never applied
        (["lose"], True, ["t0"]),  # a delete only, applied: its marker put is found
    ],
)
async def test_an_unknown_outcome_is_settled_exactly_through_the_fence(
    single: EtcdCluster, prefix: str, script: list[str], delete: bool, runs: list[str]
) -> None:
    proposer = ws.EtcdProposer(single.endpoints, prefix)
    faults = Faults(proposer)
    calls: list[str] = []

    def create_next(tx: ws.Tx) -> str:  # creates (or deletes) another object on each run
        calls.append(f"t{len(calls)}")
        if delete:
            tx.delete(Task, calls[-1])
        else:
            tx.create(Task(calls[-1], "web"))
        return calls[-1]

    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        await store.update(lambda tx: [tx.create(Task(f"t{i}", "web")) for i in range(delete * 2)])
        faults.script = list(script)  # a copy: the parameter is shared by both backends
        with anyio.fail_after(10):  # a wrong answer may be a revision the replica never sees
            assert await store.update(create_next) == runs[-1]
        assert calls == runs
        for body in faults.held:  # a lost txn arriving late: the fence stops it
            assert not (await faults.real("kv/txn", body, write=True)).get("succeeded")
        left = {"t0", "t1"} - {runs[-1]} if delete else {runs[-1]}
        async with ws.open_store(SCHEMA, etcd=single.endpoints, prefix=prefix) as fresh:
            assert {t.id for t in fresh.view(lambda tx: tx.all(Task))} == left
            assert state_of(fresh) == state_of(store)
        if not delete:
            stored = store.view(lambda tx: tx.get(Task, runs[-1]))
            assert stored is not None
            key = b64(f"{prefix}/o/Task/{runs[-1]}".encode())
            response = post(single.endpoints[0], "kv/range", {"key": key})
            assert stored.meta.version == ws.Version(int(response["kvs"][0]["mod_revision"]))
        keys = {k.rsplit(b"/", 1)[1] for k in session_keys(single.endpoints[0], prefix)}
        assert keys == ({b"fence", b"marker"} if delete else {b"fence"})
    assert session_keys(single.endpoints[0], prefix) == []  # deleted on close


async def test_commits_write_no_session_key_and_a_fence_moved_from_outside_costs_a_retry(
    single: EtcdCluster, prefix: str
) -> None:
    proposer = ws.EtcdProposer(single.endpoints, prefix)
    faults = Faults(proposer)
    async with ws.open_store(SCHEMA, proposer=proposer) as store:

        async def create(i: int) -> None:
            await store.update(lambda tx: tx.create(Task(f"t{i}", "web")))

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(create, i)
        for i in range(8, 20):
            await create(i)
        assert session_keys(single.endpoints[0], prefix) == []  # nothing but the objects
        fence = b64(proposer._fence_key)
        post(single.endpoints[0], "kv/put", {"key": fence, "value": b64(b"outside")})
        faults.txns.clear()
        await create(20)  # the fence's compare fails once; the txn goes through on retry
        assert len(faults.txns) == 3  # the txn, the read, the txn again
        assert store.view(lambda tx: tx.count(Task)) == 21
    assert session_keys(single.endpoints[0], prefix) == []


async def test_history_compacted_during_an_unknown_outcome_gives_proposal_failed(
    single: EtcdCluster, prefix: str
) -> None:
    proposer = ws.EtcdProposer(single.endpoints, prefix)
    faults = Faults(proposer)
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        await store.update(lambda tx: tx.create(Task("t0", "web")))
        real = faults.real

        async def compact_after_the_fence(method: str, body: dict[str, Any], **kw: bool) -> Any:
            response = await real(method, body, **kw)
            if method == "kv/put":  # the fence: compact everything up to it
                revision = int(response["header"]["revision"])
                post(single.endpoints[0], "kv/compaction", {"revision": revision})
            return response

        faults.real = compact_after_the_fence
        faults.script = ["lose"]
        with pytest.raises(ws.ProposalFailed, match="may or may not"):
            await store.update(lambda tx: tx.create(Task("t1", "web")))


@pytest.mark.parametrize("read", ["answers", "down"])
async def test_a_failed_compare_reads_the_keys_then_runs_again(
    single: EtcdCluster, prefix: str, read: str
) -> None:
    """The txn has no failure branch: after a failed compare one read says how far to catch
    up; if that read fails too, the function runs again on what the replica has."""
    async with counter_and_rival(single.endpoints, prefix) as (a, b, faults):

        async def b_adds_first() -> None:  # after a ran add, before its txn reaches etcd
            await b.update(add_one)

        faults.interfere = b_adds_first
        faults.script = ["interfere"] if read == "answers" else ["interfere", "down"]
        faults.txns.clear()
        with anyio.fail_after(10):
            await a.update(add_one)
        assert faults.script == []
        failed, reread, *_rerun = faults.txns  # the txn, then a read of its keys and slot
        assert "failure" not in failed
        assert "compare" not in reread
        assert len(reread["success"]) == len(failed["compare"])
        await a.wait_for(b.version)
        await b.wait_for(a.version)
        assert a.view(lambda tx: tx.get(Task, "counter")).slot == 2  # type: ignore[union-attr]
        assert state_of(a) == state_of(b)


def puts_of(body: dict[str, Any], prefix: str) -> list[str]:
    """The object keys a txn body puts, without the prefix."""
    start = f"{prefix}/o/"
    puts = [op["request_put"] for op in body["success"] if "request_put" in op]
    keys = [unb64(put["key"]).decode() for put in puts]
    return [k.removeprefix(start) for k in keys if k.startswith(start)]


class HeldWatch:
    """Holds back what a proposer's watch receives while closed: its replica stops moving."""

    def __init__(self, proposer: ws.EtcdProposer) -> None:
        self._open = anyio.Event()
        self._open.set()
        real = proposer.client.watch

        async def watch(
            body: dict[str, Any], *, between: Callable[[], Awaitable[None]] | None = None
        ) -> AsyncGenerator[dict[str, Any], None]:
            async with aclosing(real(body, between=between)) as results:
                async for result in results:
                    await self._open.wait()
                    yield result

        proposer.client.watch = watch  # type: ignore[method-assign]

    def close(self) -> None:
        self._open = anyio.Event()

    def open(self) -> None:
        self._open.set()


def one_txn_at_a_time(cluster: EtcdCluster, prefix: str) -> tuple[ws.EtcdProposer, Faults]:
    """A proposer with one txn in flight whose first txn waits until every task is blocked,
    so that the commits started meanwhile all queue behind it."""
    proposer = ws.EtcdProposer(cluster.endpoints, prefix, max_txns_in_flight=1)
    faults = Faults(proposer)
    faults.interfere = anyio.wait_all_tasks_blocked
    faults.script = ["interfere"]
    return proposer, faults


def create_task(runs: list[str], i: int) -> Callable[[ws.Tx], None]:
    """A transaction function creating task ``t{i}``; each run is recorded in ``runs``."""

    def fn(tx: ws.Tx) -> None:
        runs.append(f"t{i}")
        tx.create(Task(f"t{i}", "web"))

    return fn


async def queue_behind(
    tg: anyio.abc.TaskGroup,
    first: Callable[[], Coroutine[Any, Any, object]],
    writers: Sequence[Callable[[], Coroutine[Any, Any, object]]],
) -> None:
    """Start ``first`` in ``tg``; once it is blocked (its txn held), start ``writers``;
    return when they are blocked too (queued behind it)."""
    tg.start_soon(first)
    await anyio.wait_all_tasks_blocked()
    for writer in writers:
        tg.start_soon(writer)
    await anyio.wait_all_tasks_blocked()


async def commit_queued_together(
    store: ws.Store,
    faults: Faults,
    prefix: str,
    writers: Sequence[Callable[[], Coroutine[Any, Any, object]]],
    before_send: Callable[[], Awaitable[object]] | None = None,
) -> list[dict[str, Any]]:
    """Run ``writers`` concurrently so that their first commits all queue for one txn: a
    first txn (creating Task "first") is held until they have queued. ``before_send`` runs
    just before the next txn is sent. Returns the kv/txn bodies after the first."""
    release = anyio.Event()
    steps = [release.wait, *([before_send] if before_send else [])]

    async def interfere() -> None:
        await steps.pop(0)()

    faults.interfere = interfere
    faults.script = ["interfere"] * len(steps)
    faults.txns.clear()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            held = functools.partial(store.update, lambda tx: tx.create(Task("first", "c")))
            await queue_behind(tg, held, writers)
            release.set()
    first, *txns = faults.txns
    assert puts_of(first, prefix) == ["Task/first"]
    return txns


async def test_concurrent_commits_share_txns_and_each_lands_once(
    single: EtcdCluster, prefix: str
) -> None:
    proposer, faults = one_txn_at_a_time(single, prefix)
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        runs: list[str] = []
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(store.update, create_task(runs, i))
        assert sorted(runs) == sorted(f"t{i}" for i in range(12))  # each ran once
        shared = [puts_of(body, prefix) for body in faults.txns]
        assert sorted(k for keys in shared for k in keys) == sorted(f"Task/t{i}" for i in range(12))
        assert len(shared) < 12
        assert max(len(keys) for keys in shared) > 1
        # A shared txn is one commit: its objects carry its revision as their version.
        tasks = store.view(lambda tx: list(tx.all(Task)))
        versions = {t.id: t.meta.version for t in tasks}
        for keys in shared:
            assert len({versions[k.removeprefix("Task/")] for k in keys}) == 1
        await assert_same_as_fresh(store, single.endpoints, prefix)


async def test_a_shared_txn_is_applied_from_what_it_wrote_without_waiting_for_the_watch(
    single: EtcdCluster, prefix: str
) -> None:
    """When nothing came between, the sender applies a shared txn from the objects its
    transactions wrote (the watch then skips its events): its writers return with the
    watch held back, and their watchers see exactly what another replica decodes."""
    proposer, faults = one_txn_at_a_time(single, prefix)
    held = HeldWatch(proposer)
    async with (
        ws.open_store(SCHEMA, proposer=proposer) as a,
        ws.open_store(SCHEMA, etcd=single.endpoints, prefix=prefix) as b,
        a.watch(ws.on(Task)) as seen_here,
        b.watch(ws.on(Task)) as seen_there,
    ):
        held.close()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(a.update, create_task([], i))
            async with anyio.create_task_group() as tg:
                for i in range(0, 12, 2):
                    tg.start_soon(a.update, remove(i))
                for i in range(1, 12, 2):
                    tg.start_soon(a.update, relabel(i))
        assert max(len(puts_of(body, prefix)) for body in faults.txns) > 1  # shared txns
        held.open()
        with anyio.fail_after(20):
            await b.wait_for(a.version)
            here = [await seen_here.receive() for _ in range(24)]
            there = [await seen_there.receive() for _ in range(24)]
        assert [_described(e) for e in here] == [_described(e) for e in there]
        await assert_same_as_fresh(a, single.endpoints, prefix)


def remove(i: int) -> Callable[[ws.Tx], None]:
    """A transaction function deleting task ``t{i}``."""
    return lambda tx: tx.delete(Task, f"t{i}")


def relabel(i: int) -> Callable[[ws.Tx], None]:
    """A transaction function moving task ``t{i}`` to the service "moved"."""

    def fn(tx: ws.Tx) -> None:
        task = tx.get(Task, f"t{i}")
        assert task is not None
        tx.update(attrs.evolve(task, service_id="moved"))

    return fn


def _described(event: ws.Event[Any]) -> tuple[object, ...]:
    """An event's kind, version, object and old object, for comparing."""
    obj, old = getattr(event, "obj", None), getattr(event, "old", None)
    return (type(event).__name__, event.version, obj, old)


async def test_in_a_shared_txn_only_the_transaction_that_conflicted_runs_again(
    single: EtcdCluster, prefix: str
) -> None:
    one_txn_at_a_time = counter_and_rival(single.endpoints, prefix, max_txns_in_flight=1)
    async with one_txn_at_a_time as (a, b, faults):
        runs: list[str] = []

        def add(tx: ws.Tx) -> None:
            runs.append("add")
            add_one(tx)

        def set_ten(tx: ws.Tx) -> None:
            task = tx.get(Task, "counter")
            assert task is not None
            tx.update(attrs.evolve(task, slot=10))

        async def b_adds_first() -> None:  # after a's group formed, before its txn is sent
            await b.update(set_ten)

        writers = [
            functools.partial(a.update, fn) for fn in [add, *map(create_task, [runs] * 3, range(3))]
        ]
        failed, reread, resent, *rest = await commit_queued_together(
            a, faults, prefix, writers, before_send=b_adds_first
        )
        assert sorted(puts_of(failed, prefix)) == ["Task/counter", "Task/t0", "Task/t1", "Task/t2"]
        assert "compare" not in reread
        assert sorted(puts_of(resent, prefix)) == ["Task/t0", "Task/t1", "Task/t2"]
        assert [puts_of(body, prefix) for body in rest] == [["Task/counter"]]
        assert sorted(runs) == ["add", "add", "t0", "t1", "t2"]  # only add ran again
        await a.wait_for(b.version)
        await b.wait_for(a.version)
        assert a.view(lambda tx: tx.get(Task, "counter")).slot == 11  # type: ignore[union-attr]
        assert state_of(a) == state_of(b)


async def test_transactions_taking_one_unique_key_never_share_a_txn(
    single: EtcdCluster, prefix: str
) -> None:
    proposer, faults = one_txn_at_a_time(single, prefix)
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        outcomes: dict[str, str] = {}

        async def claim(id: str, name: str) -> None:
            try:
                await store.update(lambda tx: tx.create(Node(id, name)))
                outcomes[id] = "ok"
            except ws.UniqueConflict:
                outcomes[id] = "conflict"

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim, "n0", "zero")
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(claim, "n1", "worker")
                tg.start_soon(claim, "n2", "Worker")  # the same key, case-folded
                tg.start_soon(claim, "n3", "three")
        assert outcomes["n0"] == outcomes["n3"] == "ok"
        assert sorted([outcomes["n1"], outcomes["n2"]]) == ["conflict", "ok"]
        together = [set(puts_of(body, prefix)) for body in faults.txns]
        assert together[0] == {"Node/n0"}
        assert not any({"Node/n1", "Node/n2"} <= keys for keys in together)
        assert any(len(keys) == 2 for keys in together)  # the queued ones shared where they could


async def test_writers_woken_by_one_txn_commit_again_together(
    single: EtcdCluster, prefix: str
) -> None:
    # When a shared txn commits, its writers wake together with nothing in flight. The first
    # of them to commit again must queue, not send a txn alone as a lone writer would:
    # the others are still finishing their previous commits.
    proposer = ws.EtcdProposer(single.endpoints, prefix, max_txns_in_flight=1)
    faults = Faults(proposer)
    async with ws.open_store(SCHEMA, proposer=proposer) as store:

        async def writer(i: int) -> None:
            for round in range(2):
                await store.update(lambda tx: tx.create(Task(f"t{i}-{round}", "web")))

        writers = [functools.partial(writer, i) for i in range(3)]
        txns = await commit_queued_together(store, faults, prefix, writers)
        assert [sorted(puts_of(body, prefix)) for body in txns] == [
            ["Task/t0-0", "Task/t1-0", "Task/t2-0"],
            ["Task/t0-1", "Task/t1-1", "Task/t2-1"],
        ]


async def test_a_cancelled_writer_sending_its_own_txn_hands_the_queue_on(
    single: EtcdCluster, prefix: str
) -> None:
    # A lone writer sends its txn from its own task; the transactions that queued behind it
    # must still be sent when that writer is cancelled mid-request.
    proposer = ws.EtcdProposer(single.endpoints, prefix, max_txns_in_flight=1)
    faults = Faults(proposer)
    faults.interfere = anyio.sleep_forever  # the first txn never reaches etcd
    faults.script = ["interfere"]
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        runs: list[str] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                cancelled = anyio.CancelScope()

                async def first() -> None:
                    with cancelled:
                        await store.update(lambda tx: tx.create(Task("first", "c")))

                writers = [functools.partial(store.update, create_task(runs, i)) for i in range(3)]
                await queue_behind(tg, first, writers)
                cancelled.cancel()
        assert sorted(runs) == ["t0", "t1", "t2"]
        assert sorted(t.id for t in store.view(lambda tx: list(tx.all(Task)))) == ["t0", "t1", "t2"]
        await assert_same_as_fresh(store, single.endpoints, prefix)


async def test_a_shared_txn_etcd_finds_too_large_is_sent_one_by_one(
    single: EtcdCluster, prefix: str
) -> None:
    # The proposer is told etcd takes 8 MB (it takes 1.5 MiB): each transaction fits, two
    # together do not, and etcd says so.
    proposer = ws.EtcdProposer(
        single.endpoints, prefix, max_txns_in_flight=1, max_request_bytes=8_000_000
    )
    faults = Faults(proposer)
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        await store.update(lambda tx: tx.create(Task("warm", "web")))
        faults.txns.clear()
        big = "x" * 900_000

        writers = [
            functools.partial(store.update, functools.partial(_create_big, i, big))
            for i in range(2)
        ]
        txns = await commit_queued_together(store, faults, prefix, writers)
        together, *alone = [sorted(puts_of(body, prefix)) for body in txns]
        assert together == ["Task/b0", "Task/b1"]
        assert sorted(alone) == [["Task/b0"], ["Task/b1"]]
        assert store.view(lambda tx: tx.count(Task)) == 4


def _create_big(i: int, service: str, tx: ws.Tx) -> None:
    tx.create(Task(f"b{i}", service))
