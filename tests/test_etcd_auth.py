"""etcd authentication (issue 20): a store as an etcd user, against a real etcd with auth on.

The cluster has ``alice`` (a role with readwrite on ``app/``), ``bob`` (no role) and root.
alice's store works, writes and watches alike; bob gets EtcdPermissionDenied naming the
prefix and what to grant; a wrong password, or no user at all, gets EtcdAuthFailed saying so;
a token the member no longer knows is replaced without the caller noticing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

import watchstore as ws
from tests.etcd_cluster import EtcdCluster, post, require_etcd, running
from tests.schema import SCHEMA, Task
from watchstore.etcd.client import b64, prefix_end

if TYPE_CHECKING:
    from collections.abc import Iterator

require_etcd()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A one-member etcd with auth enabled and the users above."""
    with running(tmp_path_factory.mktemp("etcd-auth")) as cluster:
        endpoint = cluster.endpoints[0]
        post(endpoint, "auth/role/add", {"name": "root"})
        post(endpoint, "auth/user/add", {"name": "root", "password": "root-pw"})
        post(endpoint, "auth/user/grant", {"user": "root", "role": "root"})
        post(endpoint, "auth/role/add", {"name": "app"})
        permission = {
            "permType": "READWRITE",
            "key": b64(b"app/"),
            "range_end": b64(prefix_end(b"app/")),
        }
        post(endpoint, "auth/role/grant", {"name": "app", "perm": permission})
        for user, password in (("alice", "alice-pw"), ("bob", "bob-pw")):
            post(endpoint, "auth/user/add", {"name": user, "password": password})
        post(endpoint, "auth/user/grant", {"user": "alice", "role": "app"})
        post(endpoint, "auth/enable", {})
        yield cluster


def as_user(cluster: EtcdCluster, user: str, password: str) -> ws.EtcdProposer:
    return ws.EtcdProposer(cluster.endpoints, "app", user=user, password=password, timeout=2.0)


async def test_a_user_with_readwrite_on_the_prefix_writes_reads_and_watches(
    secured: EtcdCluster, anyio_backend: str
) -> None:
    task = Task(f"t1-{anyio_backend}", "web")  # the cluster outlives one backend's tests
    async with ws.open_store(SCHEMA, proposer=as_user(secured, "alice", "alice-pw")) as store:
        async with store.watch(ws.on(Task)) as events:
            await store.update(lambda tx: tx.create(task))
            with anyio.fail_after(10):
                event = await events.receive()
        assert isinstance(event, ws.Created)
        assert event.obj.id == task.id
    async with ws.open_store(SCHEMA, proposer=as_user(secured, "alice", "alice-pw")) as again:
        assert again.view(lambda tx: tx.get(Task, task.id)) is not None


async def test_a_token_the_member_no_longer_knows_is_replaced(secured: EtcdCluster) -> None:
    proposer = as_user(secured, "alice", "alice-pw")
    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        # An expired simple token looks like this: random text, then the raft index it was
        # issued at (an index etcd has not applied yet would make it wait for it instead).
        proposer.client._tokens = dict.fromkeys(proposer.client._tokens, "expired.1")
        await store.update(lambda tx: tx.upsert(Task("t2", "web")))
        assert proposer.client._tokens
        assert "expired.1" not in proposer.client._tokens.values()


async def test_a_user_without_permission_on_the_prefix_is_told_what_to_grant(
    secured: EtcdCluster,
) -> None:
    with pytest.raises(ws.EtcdPermissionDenied, match=r"(?s)'bob'.*'app/'.*readwrite"):
        async with ws.open_store(SCHEMA, proposer=as_user(secured, "bob", "bob-pw")):
            pytest.fail("bob may not read app/")


async def test_a_wrong_password_says_so(secured: EtcdCluster) -> None:
    with pytest.raises(ws.EtcdAuthFailed, match=r"(?s)'alice'.*password"):
        async with ws.open_store(SCHEMA, proposer=as_user(secured, "alice", "wrong")):
            pytest.fail("a wrong password must not open")


async def test_no_user_on_a_cluster_with_auth_says_to_give_one(secured: EtcdCluster) -> None:
    with pytest.raises(ws.EtcdAuthFailed, match=r"user= and password="):
        async with ws.open_store(SCHEMA, etcd=secured.endpoints, prefix="app"):
            pytest.fail("no user must not open")


def test_a_user_without_a_password_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="both user= and password="):
        ws.EtcdProposer(["http://127.0.0.1:9"], "app", user="alice")
