"""Leadership: ``store.leadership(name)`` makes this process the one leader of ``name``.

On etcd the proposer elects the leader among every process sharing the prefix and fences
its writes (see ``etcd.leadership``). A store on one machine (memory or log) has only this
process to lead it: the leadership is held at once unless another task of the process holds
it, and is never lost, so code written for a cluster runs unchanged.
"""

from __future__ import annotations

import os
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import anyio

from ..core.errors import NotLeader
from ..core.proposer import FENCE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..core.proposer import Fence
    from ..core.txn import Tx
    from .store import Store

R = TypeVar("R")


def default_identity() -> str:
    """How a leader is named unless told: ``host/pid``."""
    return f"{socket.gethostname()}/{os.getpid()}"


class Lead:
    """The leadership of ``name``, held by this process (from ``store.leadership``).

    Write through :meth:`update`: each write commits only while this process still leads.
    ``identity`` is what ``store.leader(name)`` tells the other processes.
    """

    def __init__(self, store: Store, name: str, identity: str, fence: Fence) -> None:
        self.name = name
        self.identity = identity
        self._store = store
        self._fence = fence

    @property
    def lost(self) -> bool:
        """True once the leadership is lost (the block is then cancelled)."""
        return self._fence.lost

    async def update(self, fn: Callable[[Tx], R]) -> R:
        """``store.update(fn)``, committed only while this process leads: NotLeader (and
        nothing written) once it does not."""
        if self._fence.lost:
            raise NotLeader(self.name, "its leadership was lost")
        token = FENCE.set(self._fence)
        try:
            return await self._store.update(fn)
        finally:
            FENCE.reset(token)


class _Held:
    """The fence of a leadership that cannot be lost (a store on one machine)."""

    lost = False

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Never called: this leadership is not lost."""


class LocalLeaders:
    """Leadership within one process: one task at a time per name."""

    def __init__(self) -> None:
        self._locks: dict[str, anyio.Lock] = {}
        self._holders: dict[str, str] = {}

    @asynccontextmanager
    async def campaign(self, name: str, identity: str) -> AsyncIterator[Fence]:
        """Hold ``name`` for the block (waiting while another task holds it)."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = anyio.Lock()
        async with lock:
            self._holders[name] = identity
            try:
                yield _Held()
            finally:
                del self._holders[name]

    def leader(self, name: str) -> str | None:
        """Who holds ``name`` (None: nobody)."""
        return self._holders.get(name)
