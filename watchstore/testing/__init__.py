"""Helpers for testing code that uses watchstore: wait for what a test depends on, on its
event, never by polling.

``await settled(store, replica, informer)`` returns once every follower of a store (a
replica from ``store.fork()``, an informer, another process's store on the same etcd
prefix) has caught up with everything committed; ``await wait_until(store, check)`` once
``check(tx)`` holds on the committed state, re-checked at each commit. Neither takes a
timeout: put them under ``anyio.fail_after``, as every wait.

The fixtures are in :mod:`watchstore.testing.plugin`, a pytest plugin that installing
watchstore registers (``memory_store``, ``durable_store``, ``any_store``, ``etcd_store``,
``etcd_member``); :class:`EtcdMember` starts a throw-away etcd outside pytest too. See
docs/testing.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

from ..core.errors import WatchOverflow
from ..core.events import on_commit
from .etcd import EtcdMember as EtcdMember
from .etcd import etcd_binary as etcd_binary

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.model import Version
    from ..core.txn import ReadTx
    from ..service.store import Store

__all__ = ["EtcdMember", "Follower", "etcd_binary", "settled", "wait_until"]

R = TypeVar("R")


class Follower(Protocol):
    """What :func:`settled` waits on: a ``Store``, a ``Replica``, an ``Informer``."""

    @property
    def version(self) -> Version:
        """The last version it has applied (or delivered)."""
        ...

    async def wait_for(self, version: Version) -> None:
        """Return once it has applied (or delivered) ``version``."""


async def settled(store: Store, *followers: Follower) -> Version:
    """Return the newest version any of them has seen, once the store and every follower
    have all applied it; repeated until no new commit arrived meanwhile.

    A follower is anything with ``version`` and ``wait_for``: a replica of the store, an
    informer (it moves as its consumer receives: a consumer must be receiving), or another
    store on the same etcd prefix (a commit made through one reaches the others through
    etcd's watch). A plain watch needs no waiting: a commit's events are in its queue when
    the commit returns.
    """
    everyone = (store, *followers)
    while True:
        target = max(member.version for member in everyone)
        for member in everyone:
            await member.wait_for(target)
        if max(member.version for member in everyone) == target:
            return target


async def wait_until(store: Store, check: Callable[[ReadTx], R]) -> R:
    """Return ``check(tx)``'s result once it is true on the committed state of ``store``
    (or a replica): checked now, then again after each commit (several commits that came
    together are checked once). ``check`` runs synchronously, like ``store.view``.

    For what a task under test does in reaction to commits (a controller that assigns
    tasks, say): ``await wait_until(store, lambda tx: tx.get(Task, "t1").node_id)``.
    Raises StoreClosed if the store closes first.
    """
    while True:
        async with store.watch(on_commit()) as commits:
            try:
                while True:
                    result = store.view(check)
                    if result:
                        return result
                    await commits.receive()
                    while commits.pending():
                        commits.receive_nowait()
            except WatchOverflow:
                continue  # more commits than its queue since the last check: check again
