"""Fenced leadership on etcd: one leader per name among the processes sharing a prefix.

A campaign grants a lease of ``ttl`` seconds and puts the key ``<prefix>l/<name>/<lease>``
(value: the campaigner's identity) under it; the campaigner whose key was created first leads,
the others watch the name's keys until the ones before theirs are gone (as etcd's own
election recipe does). While it leads, a task keeps the lease alive and another watches the
key: when the lease expires (the process was paused or cut off for ``ttl`` seconds) etcd
deletes the key, and the leadership is lost.

Every write made under the leadership (``Lead.update``) compares the key's revision in the
same etcd txn: once the key is gone, or belongs to another lease, nothing more commits, even
from a process that does not know yet that it was deposed (a paused one, resumed). On exit the
lease is revoked, so the next campaigner leads at once.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import anyio

from ..core.errors import EtcdError
from .client import EtcdUnavailable, b64, prefix_end, unb64

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from .client import EtcdClient

log = logging.getLogger("watchstore.etcd")

_RETRY: Final = 0.2
"""Seconds between two attempts at a request that found etcd unavailable."""


class EtcdFence:
    """A leadership as held on etcd: the key and the revision every fenced write compares."""

    def __init__(self, name: str, key: bytes, revision: int) -> None:
        self.name = name
        self.key = key
        self.revision = revision
        self._lost = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def lost(self) -> bool:
        """True once the leadership is lost."""
        return self._lost

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the leadership is lost (at once if it is)."""
        if self._lost:
            callback()
        else:
            self._callbacks.append(callback)

    def lose(self, why: str) -> None:
        """Mark the leadership lost and tell whoever asked."""
        if self._lost:
            return
        self._lost = True
        log.warning("etcd leadership of %r lost: %s", self.name, why)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def compare(self) -> dict[str, Any]:
        """The compare a fenced txn carries: the key still at the revision it was put."""
        return {
            "target": "MOD",
            "key": b64(self.key),
            "result": "EQUAL",
            "mod_revision": self.revision,
        }


class Elections:
    """Campaigns and leader lookups under ``prefix`` (``<prefix>l/<name>/...``)."""

    def __init__(self, client: EtcdClient, prefix: bytes) -> None:
        self._client = client
        self._prefix = prefix

    def _names(self, name: str) -> bytes:
        if not name or "/" in name:
            raise ValueError(f"a leadership name is a non-empty word without '/': {name!r}")
        return self._prefix + b"l/" + name.encode() + b"/"

    async def leader(self, name: str) -> str | None:
        """The identity of the current leader of ``name``, or None."""
        first, _revision = await self._first(self._names(name))
        return None if first is None else unb64(first.get("value", "")).decode()

    async def _first(self, names: bytes) -> tuple[dict[str, Any] | None, int]:
        """The name's key created first (the leader's) or None, and the revision read at."""
        body = {
            "key": b64(names),
            "range_end": b64(prefix_end(names)),
            "sort_target": "CREATE",
            "sort_order": "ASCEND",
            "limit": 1,
        }
        response = await self._client.call("kv/range", body)
        kvs: list[dict[str, Any]] = response.get("kvs", [])
        return (kvs[0] if kvs else None), int(response["header"]["revision"])

    @asynccontextmanager
    async def campaign(
        self,
        name: str,
        identity: str,
        ttl: float,
        spawn: Callable[[Callable[[], Awaitable[object]]], None],
    ) -> AsyncIterator[EtcdFence]:
        """Lead ``name`` as ``identity`` for the block (entered once this process leads);
        ``spawn`` runs the background tasks that keep and watch the leadership."""
        names = self._names(name)
        client = self._client
        if ttl < 1:
            raise ValueError(f"etcd leases last whole seconds, at least 1: ttl={ttl}")
        granted = await client.call("lease/grant", {"TTL": int(ttl)}, write=True)
        lease = int(granted["ID"])
        key = names + f"{lease:016x}".encode()
        try:
            put = {"key": b64(key), "value": b64(identity.encode()), "lease": str(lease)}
            response = await client.call("kv/put", put, write=True)
            fence = EtcdFence(name, key, int(response["header"]["revision"]))
            keeping, watching = anyio.CancelScope(), anyio.CancelScope()  # one per task

            async def keep_alive() -> None:
                with keeping:
                    await self._keep_alive(lease, ttl, fence)

            async def watch_key() -> None:
                with watching:
                    await self._watch_key(fence)

            spawn(keep_alive)
            try:
                await self._wait_to_lead(names, fence)
                if fence.lost:
                    raise EtcdError(f"the lease of the campaign for {name!r} expired")
                spawn(watch_key)
                yield fence
            finally:
                keeping.cancel()
                watching.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(client.timeout):
                try:
                    await client.call("lease/revoke", {"ID": str(lease)}, write=True)
                except EtcdError as exc:  # it expires by itself within ttl
                    log.info("etcd lease of %r not revoked: %s", name, exc)

    async def _wait_to_lead(self, names: bytes, fence: EtcdFence) -> None:
        """Return once ``fence``'s key is the name's first (or the campaign's lease ended)."""
        while not fence.lost:
            try:
                first, revision = await self._first(names)
                if first is None:  # our own key is gone: the lease ended
                    fence.lose("the campaign's key was deleted")
                    return
                if unb64(first["key"]) == fence.key:
                    return
                # Wait for a deletion among the name's keys, then look again.
                request = {
                    "key": b64(names),
                    "range_end": b64(prefix_end(names)),
                    "start_revision": revision + 1,
                    "filters": ["NOPUT"],
                }
                async with _watching(self._client, request) as results:
                    async for result in results:
                        if result.get("events"):
                            break
            except EtcdUnavailable as exc:
                log.info("etcd campaign waits: %s", exc)
                await anyio.sleep(_RETRY)

    async def _keep_alive(self, lease: int, ttl: float, fence: EtcdFence) -> None:
        """Renew the lease every third of ``ttl``; lose the leadership once etcd says the
        lease is gone, or nothing was renewed for ``ttl`` seconds."""
        renewed = anyio.current_time()
        while not fence.lost:
            await anyio.sleep(ttl / 3)
            if anyio.current_time() - renewed >= ttl:
                fence.lose(f"the lease was not renewed for {ttl:g} s")
                return
            try:
                response = await self._client.call("lease/keepalive", {"ID": str(lease)})
            except EtcdUnavailable as exc:
                log.info("etcd lease keep-alive failed: %s", exc)
                continue
            result = response.get("result", response)
            if int(result.get("TTL", 0)) <= 0:
                fence.lose("the lease expired")
                return
            renewed = anyio.current_time()

    async def _watch_key(self, fence: EtcdFence) -> None:
        """Lose the leadership when its key is deleted (the lease expired or was revoked)."""
        start = fence.revision + 1
        while not fence.lost:
            request = {"key": b64(fence.key), "start_revision": start, "filters": ["NOPUT"]}
            try:
                async with _watching(self._client, request) as results:
                    async for result in results:
                        if result.get("events"):
                            fence.lose("its key was deleted")
                            return
                        revision = int(result.get("header", {}).get("revision", 0))
                        start = max(start, revision + 1)
            except EtcdError as exc:
                log.info("etcd leadership watch interrupted: %s", exc)
                await anyio.sleep(_RETRY)


@asynccontextmanager
async def _watching(client: EtcdClient, request: dict[str, Any]) -> AsyncIterator[Any]:
    results = client.watch(request)
    try:
        yield results
    finally:
        await results.aclose()
