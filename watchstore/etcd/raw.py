"""Reading a store that lives on etcd without its schema (the ``watchstore`` command's
``--etcd URL --prefix P``): tables by name, objects as the JSON the store put, with the
etcd revision that wrote each as its version (as ``EtcdProposer`` reads them).

Keys are ``<prefix>/o/<table>/<id>`` (see ``etcd.proposer``). ``snapshot`` reads every object
at one revision, page by page; ``get`` one; ``follow`` watches the prefix from a revision
and gives each revision's changes as one commit.
"""

from __future__ import annotations

import itertools
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from ..core.codec import loads
from ..core.errors import HistoryCompacted
from ..core.model import Version
from .client import Compacted, EtcdClient, b64, prefix_end, unb64

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

Object = dict[str, Any]
State = dict[str, dict[str, Object]]
CREATE, UPDATE, DELETE = 1, 2, 3
PAGE = 1000


class EtcdReader:
    """Reads the store under ``prefix`` at ``endpoints`` (read-only)."""

    def __init__(self, endpoints: Sequence[str], prefix: str, *, timeout: float = 5.0) -> None:
        stem = prefix.removesuffix("/")
        if not stem:
            raise ValueError(f"an etcd prefix names the store's keys, such as 'app': {prefix!r}")
        self.prefix = stem.encode() + b"/"
        self.objects = self.prefix + b"o/"
        self.client = EtcdClient(endpoints, timeout=timeout, scope=self.prefix.decode())
        self.server_version = ""

    async def aclose(self) -> None:
        """Close the connections."""
        await self.client.aclose()

    async def snapshot(self) -> tuple[int, State]:
        """(revision, table -> id -> object) of every object, read at one revision."""
        self.server_version = await self.client.check_version()
        revision = 0
        state: State = {}
        key, end = self.objects, prefix_end(self.objects)
        while True:
            body: dict[str, Any] = {"key": b64(key), "range_end": b64(end), "limit": PAGE}
            if revision:
                body["revision"] = revision
            response = await self.client.call("kv/range", body)
            revision = revision or int(response["header"]["revision"])
            kvs = response.get("kvs", [])
            for kv in kvs:
                table, obj = self._decode(kv)
                state.setdefault(table, {})[obj["id"]] = obj
            if not response.get("more") or not kvs:
                return revision, state
            key = unb64(kvs[-1]["key"]) + b"\0"

    async def get(self, table: str, id: str) -> tuple[int, Object | None]:
        """(revision, the object) of ``table``/``id``; None if there is none."""
        key = self.objects + f"{table}/{id}".encode()
        response = await self.client.call("kv/range", {"key": b64(key)})
        kvs = response.get("kvs", [])
        obj = self._decode(kvs[0])[1] if kvs else None
        return int(response["header"]["revision"]), obj

    async def follow(
        self, revision: int
    ) -> AsyncIterator[tuple[int, list[tuple[int, str, Object]]]]:
        """(revision, actions) of every commit after ``revision``, as etcd reports them;
        HistoryCompacted if etcd compacted past ``revision``."""
        request = {
            "key": b64(self.objects),
            "range_end": b64(prefix_end(self.objects)),
            "start_revision": revision + 1,
            "prev_kv": True,
        }
        try:
            async with aclosing(self.client.watch(request)) as results:
                async for result in results:
                    events = result.get("events") or ()
                    for rev, group in itertools.groupby(
                        events, key=lambda e: int(e["kv"]["mod_revision"])
                    ):
                        yield rev, [self._action(event) for event in group]
        except Compacted as exc:
            raise HistoryCompacted(Version(exc.compact_revision), Version(revision)) from None

    def _action(self, event: dict[str, Any]) -> tuple[int, str, Object]:
        if event.get("type") == "DELETE":
            table, obj = self._decode(event["prev_kv"])
            return DELETE, table, obj
        table, obj = self._decode(event["kv"])
        kind = (
            CREATE if event["kv"].get("create_revision") == event["kv"]["mod_revision"] else UPDATE
        )
        return kind, table, obj

    def _decode(self, kv: dict[str, Any]) -> tuple[str, Object]:
        """(table, object) of a key-value; its version is the revision that wrote it."""
        table = unb64(kv["key"])[len(self.objects) :].decode().partition("/")[0]
        obj: Object = loads(unb64(kv.get("value", "")))
        meta = obj.get("meta")
        if isinstance(meta, list) and meta:
            meta[0] = int(kv["mod_revision"])
        return table, obj
