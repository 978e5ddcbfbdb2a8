"""EtcdProposer: several processes share one store through an etcd cluster.

Every process keeps a full in-memory replica, fed by one etcd watch (list, then watch from
the next revision), so reads, queries and watches stay local. A write transaction runs on the
local replica, then becomes one etcd txn:

- compares: the ``mod_revision`` of every object it read or wrote (0: absent), that every
  unique-index key it takes is free, and that the ``mod_revision`` of this process's
  *fence* key is the one it last saw;
- success: puts and deletes of the objects and unique-index keys (each object's value
  carries a *nonce*, unique to the transaction, where its version would be);
- no failure branch: when a compare fails, a read-only txn ranges each compared key (and
  the fence) to learn how far the replica must catch up. Sending those ranges with every
  txn as its failure branch cost about 3-4% of the commits/s of a one-member etcd (they
  are parsed, logged and fsynced with the txn); the read costs a round trip on conflicts
  only.

Concurrent transactions of one process share txns (group commit). While a txn is in flight (at
most ``max_txns_in_flight`` at once), the transactions committed meanwhile queue, and the next
txn carries as many of them as fit etcd's limits: their compares and operations side by side,
one fence compare for all. They commit together, at one revision, which is then the Version of
each (watchers see one commit with all their changes). A lone writer (no txn in flight, no
other transaction of this process committing) sends its txn from its own task and pays for no
sender task (a spawn and two more scheduling rounds per commit: 6-13% of a commit's client CPU
at one writer, measured). Sender tasks are started only for transactions that queued.
Transactions that write a common key (a unique-index key: object keys never meet, see
``_inflight``) or that compare whole tables go in separate txns. When a shared txn's compare
fails, the read after it tells which transactions saw changed keys: they run again, the others
are sent again at once. One etcd request per group instead of one per transaction is what lets
many writers go faster than single puts: etcd's cost, and the HTTP client's, is mostly per
request.

The etcd revision of the txn is the store Version. The local change is undone at once and
applied again in revision order, so the replica only ever moves in revision order: from the
watch, like everyone else's; or from the objects the txn's transactions wrote (stamped with
the revision, exactly as the watch would decode them), by the task that sent it, once the
response says it committed at the revision right after the replica's (nothing can have come
between: see ``_apply_own``); the watch then skips its events. When something did come
between, the watch applies both in order; it recognises a txn that carried one transaction
by its first object put, the nonce in the value (see ``_own_txn``), and takes that
transaction's objects rather than decode them. Decoding the store's own commits back from
the watch was most of what a watched put costs over a bare one (benchmarks/etcd.py shows
both), and writers sharing a txn waited for it besides.

When a compare fails the replica catches up and the store re-runs the transaction
function, after a random back-off that grows with each retry; meanwhile the other
transactions of this process that touch the keys it writes wait too (see ``catch_up``).

The fence settles unknown outcomes. When a connection breaks after a txn was sent, the
process puts its fence key: every txn it sent before compares the fence's old revision, so
a lost txn that has not applied yet never will. Then it reads etcd's history from the
revision its replica had when it sent the txn up to the fence (a watch from that revision,
which ends at the fence's own event): the txn committed if and only if its first object
put, recognised by the nonce in its value, is there (a txn that only deletes also puts the
nonce into this process's *marker* key, to be found the same way). History that etcd
compacted away in the meantime leaves the outcome unknown: ProposalFailed says so.

A txn thus writes nothing but its own keys. (An earlier design put a *slot* key of the
process in every txn and fenced that: the extra put cost etcd about 15% of its txn rate.)
The fence and marker keys exist only once something was fenced or only deleted; a process
deletes them when it closes.

Key layout under ``prefix``: ``o/<table>/<id>`` objects (JSON, the nonce where meta's version
would be: the revision is the version), ``u/<table>/<index>/<key JSON>`` unique keys (value:
the holder's id), ``x/<session>/fence`` and ``x/<session>/marker``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import logging
import os
import random
import time
import uuid
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel
import attrs

from .. import _runtime as runtime
from ..core.codec import DecodeError, decoder_for, dump_data, encode, loads
from ..core.errors import (
    EtcdError,
    HistoryCompacted,
    NotLeader,
    ProposalFailed,
    StoreClosed,
    TransactionTooLarge,
)
from ..core.model import ORIGIN, ActionKind, Change, Meta, StoreAction, Version
from ..core.proposer import FENCE, Conflict, Loaded
from ..core.statistics import ProposerStatistics
from .client import (
    Compacted,
    EtcdClient,
    EtcdUnavailable,
    OutcomeUnknown,
    b64,
    prefix_end,
    unb64,
)
from .leadership import Elections, EtcdFence

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from contextlib import AbstractAsyncContextManager

    from .._runtime import Event, Lot, Scope
    from ..core.proposer import Host
    from ..core.schema import IndexSpec, Schema
    from ..core.state import StoreState
    from ..core.txn import TrackingTx

log = logging.getLogger("watchstore.etcd")

MAX_TXN_OPS: Final = 128
"""etcd's default ``--max-txn-ops``: most compares, and most operations, in one txn."""
MAX_REQUEST_BYTES: Final = 1_500_000
"""A little under etcd's default ``--max-request-bytes`` (1.5 MiB)."""
LIST_PAGE: Final = 1000
"""Keys per range request while listing."""
FENCED: Final = b"fenced"
"""The value of a fence key."""
_WATCH_RAN: Final = 1.0
"""Seconds a watch must have run for the next one to start at once when it breaks."""
REST: Final = 0.01
"""Seconds the watch may rest while this process's commits are in flight (see ``_rest``)."""


def _default_parse_error(key: bytes, value: bytes, error: Exception) -> None:
    log.warning("etcd key %r does not decode under this schema, skipped: %s", key, error)


@attrs.frozen
class Prepared:
    """One transaction turned into etcd operations (see the module docstring)."""

    compares: list[dict[str, Any]]
    success: list[dict[str, Any]]
    ranges: list[dict[str, Any]]
    """A range of each compared key (read when a compare failed)."""
    expect: dict[bytes, int]
    """Each compared object key and the mod_revision the transaction saw (0: absent)."""
    written: list[bytes]
    """The object keys it writes."""
    nonce: bytes
    """Unique to the transaction: in each object value it puts, or in the marker key."""
    witness: tuple[bytes, bytes] | None
    """Its first object put (key, value), if it puts one: found in etcd's history, it says
    the transaction committed."""
    free: list[bytes] = attrs.field(factory=list)
    """The unique-index keys it takes (compared absent)."""
    puts: frozenset[bytes] = frozenset()
    """Every key its operations write: etcd refuses a key twice in one txn."""
    size: int = 0
    """About the bytes it adds to a request."""
    alone: bool = False
    """It compares whole tables (too many reads to compare one by one): such a compare
    would not see the changes of transactions sharing its txn, so it goes in one alone."""
    fence: EtcdFence | None = None
    """The leadership it was made under (its key is compared too), if any."""
    watched: tuple[str, str] | None = None
    """Its witness put as its watch event shows it (base64 key and value), if any."""
    changes: list[tuple[str, str, Any]] = attrs.field(factory=list)
    """Each object it writes: (table, id, the new object or None if deleted); what its
    revision's watch event holds, so a txn of its own at the replica's next revision is
    applied from here (see ``commit_prepared``)."""

    def broken(self, current: dict[bytes, int]) -> bool:
        """Whether a compare fails on ``current`` (each key found and its mod_revision)."""
        return (
            any(current.get(k, 0) != r for k, r in self.expect.items())
            or any(k in current for k in self.free)
            or self.deposed(current)
        )

    def deposed(self, current: dict[bytes, int]) -> bool:
        """Whether its leadership's key is gone (or another's) in ``current``."""
        fence = self.fence
        return fence is not None and current.get(fence.key, 0) != fence.revision


@attrs.define(eq=False)
class _Pending:
    """A prepared transaction waiting for its txn, and then its outcome."""

    prepared: Prepared
    alone: bool = False
    taken: bool = False
    outcome: Version | BaseException | None = None
    done: Event | None = None
    """Set once it is settled: given to a transaction that waits in the queue (a lone
    writer sends its own txn and needs none)."""

    def settle(self, outcome: Version | BaseException) -> None:
        self.outcome = outcome
        if self.done is not None:
            self.done.set()

    def result(self) -> Version:
        """The settled outcome: its version, or its error raised."""
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


class EtcdProposer:
    """Commits through an etcd cluster; each process holds a replica fed by a watch.

    Give it to ``open_store(schema, proposer=EtcdProposer([...]))`` or use
    ``open_store(schema, etcd=[...], prefix=...)``. The store's keys go under ``prefix``
    followed by ``/``; a trailing ``/`` is optional (``"/registry/"`` and ``"/registry"`` are
    the same prefix). ``max_retries`` bounds how often a transaction function is re-run,
    each time after a random back-off (see ``catch_up``), after another process changed
    what it read;
    ``on_parse_error(key, value, error)`` hears of objects that no longer decode under the
    schema (they are left out of the replica); ``on_resync(version)`` of every re-list
    after the watch's revision was compacted. ``resyncs`` counts those. A watch silent for
    ``watch_idle`` seconds is checked: if its member does not answer, the watch moves to
    the next endpoint. At most ``max_txns_in_flight`` txns are sent at once; transactions
    committed meanwhile share the next (see the module docstring).

    For a cluster that serves TLS, give ``https://`` endpoints and an ``ssl_context`` that
    trusts its CA and, if etcd checks client certificates (``--client-cert-auth``), holds
    this process's certificate::

        context = ssl.create_default_context(cafile="ca.pem")
        context.load_cert_chain("client.pem", "client-key.pem")
        proposer = EtcdProposer(["https://etcd-1:2379"], "app", ssl_context=context)
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "watchstore",
        *,
        max_retries: int = 16,
        max_txn_ops: int = MAX_TXN_OPS,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_txns_in_flight: int = 2,
        timeout: float = 5.0,
        watch_idle: float = 10.0,
        on_parse_error: Callable[[bytes, bytes, Exception], None] | None = None,
        on_resync: Callable[[Version], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        # "/registry/" and "/registry" are one prefix: etcd users end prefixes with "/", and
        # the keys go under "<prefix>/" either way.
        stem = prefix.removesuffix("/")
        if not stem:
            raise ValueError(
                f"etcd prefix must name the keys' prefix, such as 'app' or '/registry/': {prefix!r}"
            )
        if max_txns_in_flight < 1:
            raise ValueError(f"max_txns_in_flight must be at least 1, not {max_txns_in_flight}")
        self.prefix = stem.encode() + b"/"
        self.client = EtcdClient(
            endpoints,
            timeout=timeout,
            ssl_context=ssl_context,
            user=user,
            password=password,
            scope=self.prefix.decode(),
        )
        self.max_retries = max_retries
        self.max_txn_ops = max_txn_ops
        self.max_request_bytes = max_request_bytes
        self.max_txns_in_flight = max_txns_in_flight
        self.watch_idle = watch_idle
        self.on_parse_error = on_parse_error or _default_parse_error
        self.on_resync = on_resync
        self.resyncs = 0
        """How often the replica re-listed because its watch revision was compacted."""
        self.server_version = ""
        self._version = ORIGIN
        self._session_text = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._session = self._session_text.encode()
        session = self.prefix + b"x/" + self._session
        self._fence_key = session + b"/fence"
        self._marker_key = session + b"/marker"
        self._fence = 0  # the fence key's mod_revision as last seen (0: absent)
        self._session_keys = False  # whether the fence or marker key was written
        self._nonces = itertools.count()
        self._schema: Schema | None = None
        self._decoders: dict[str, Callable[[Any], Any]] = {}
        self._uniques: dict[str, list[IndexSpec]] = {}
        self._revision = 0  # the last revision the replica has fully applied
        self._watching_since: float | None = None  # when the current watch was created
        self._host: Host | None = None
        # Object keys being committed by tasks of this process, and the event set when done.
        self._inflight: dict[bytes, Event] = {}
        self._event: Callable[[], Event] = anyio.Event
        self._own: dict[tuple[str, str], Prepared] = {}
        """This process's transactions in a txn alone, in flight, by their witness put
        (key and value as etcd's JSON has them): see ``_own_txn``."""
        """Makes the events of the commit path (the backend's own, once connected)."""
        self._queue: collections.deque[_Pending] = collections.deque()  # waiting for a txn
        self._senders = 0  # tasks sending txns
        self._writers = 0  # tasks in commit_prepared: committing, or waiting for the replica
        self._needed = 0  # tasks waiting for the watch to bring a revision (see _watch_needed)
        self._resting: Lot | None = None  # the watch's task, resting (see _rest)
        self._deadline: Callable[[float], Scope] | None = None

    # -- connecting and listing ----------------------------------------------------------

    # -- lifecycle (core.proposer.Lifecycle) -------------------------------------------------

    async def open(self, schema: Schema) -> Loaded:
        """Check the server, then list every object under the prefix, at one revision."""
        revision, objects = await self.connect(schema)
        return Loaded(revision, objects)

    async def start(self, host: Host) -> None:
        """Feed ``host``'s replica from a watch (see ``follow``)."""
        self.attach(host)  # at once: the follow task starts later
        host.spawn(self.follow, host)

    async def connect(self, schema: Schema) -> tuple[Version, dict[str, list[Any]]]:
        """Check the server, then list every object: returns the revision and the objects."""
        self._schema = schema
        backend = runtime.current()
        self._event = backend.event
        self._resting = backend.lot()
        self._deadline = backend.deadline
        self._decoders = {t.name: decoder_for(t.cls) for t in schema.tables}
        self._classes = {t.name: t.cls for t in schema.tables}
        self._uniques = {
            t.name: [s for s in t.index_specs.values() if s.unique] for t in schema.tables
        }
        self.server_version = await self.client.check_version()
        revision, objects = await self._list()
        self._version = Version(revision)
        self._revision = revision
        return self._version, objects

    async def _list(self) -> tuple[int, dict[str, list[Any]]]:
        """Every object under the prefix at one revision, page by page."""
        start = self.prefix + b"o/"
        end = prefix_end(start)
        revision = 0
        objects: dict[str, list[Any]] = {name: [] for name in self._decoders}
        key = start
        while True:
            body: dict[str, Any] = {"key": b64(key), "range_end": b64(end), "limit": LIST_PAGE}
            if revision:
                body["revision"] = revision
            response = await self.client.call("kv/range", body)
            if not revision:
                revision = int(response["header"]["revision"])
            kvs = response.get("kvs", [])
            for kv in kvs:
                decoded = self._decode(kv)
                if decoded is not None:
                    objects[decoded[0]].append(decoded[1])
            if not response.get("more") or not kvs:
                return revision, objects
            key = unb64(kvs[-1]["key"]) + b"\0"

    def _decode(self, kv: dict[str, Any]) -> tuple[str, Any] | None:
        """(table, object) of a listed or watched key-value, or None if it does not decode."""
        key = unb64(kv["key"])
        value = unb64(kv.get("value", ""))
        try:
            table, _id = self._split(key)
            decode = self._decoders.get(table)
            if decode is None:
                raise DecodeError(f"no table {table!r} in this schema")
            data = loads(value)
            data["meta"][0] = int(kv["mod_revision"])
            return table, decode(data)
        except (DecodeError, ValueError, KeyError, TypeError, IndexError) as exc:
            self.on_parse_error(key, value, exc)
            return None

    def _split(self, key: bytes) -> tuple[str, str]:
        rest = key[len(self.prefix) + 2 :].decode()
        table, _, id = rest.partition("/")
        return table, id

    def _object_key(self, table: str, id: str) -> bytes:
        return self.prefix + b"o/" + table.encode() + b"/" + id.encode()

    def _unique_key(self, table: str, index: str, key: Any) -> bytes:
        return self.prefix + b"u/" + f"{table}/{index}/".encode() + dump_data(encode(key))

    # -- the Proposer protocol -------------------------------------------------------------

    def get_version(self) -> Version:
        """The revision the replica was listed at."""
        return self._version

    async def propose_value(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None]
    ) -> Version:
        """Not used: the store hands this proposer whole transactions (``prepare``)."""
        raise NotImplementedError("EtcdProposer commits prepared transactions")

    async def changes_between(self, start: Version, end: Version) -> Sequence[Change]:
        """The commits after ``start`` up to ``end``, read back from etcd's own history (for
        ``watch_from`` a version older than the store's in-memory history): a watch over the
        prefix from revision ``start + 1`` with each event's previous value, ended by a put
        of this process's marker key made first (so it ends even if nothing under the prefix
        was written at ``end``). HistoryCompacted, naming etcd's compact revision, once etcd
        has compacted past ``start``."""
        if start >= end:
            return ()
        bound = await self._put_bound()
        objects = self.prefix + b"o/"
        request = {
            "key": b64(self.prefix),
            "range_end": b64(prefix_end(self.prefix)),
            "start_revision": start.index + 1,
            "prev_kv": True,
        }
        changes: list[Change] = []
        try:
            async with aclosing(self.client.watch(request)) as results:
                async for result in results:
                    events = result.get("events") or ()
                    for revision, group in itertools.groupby(
                        events, key=lambda e: int(e["kv"]["mod_revision"])
                    ):
                        if revision >= bound:
                            return changes
                        if revision > end.index:
                            continue
                        actions = [
                            action
                            for event in group
                            if unb64(event["kv"]["key"]).startswith(objects)
                            and (action := self._history_action(event)) is not None
                        ]
                        if actions:
                            changes.append(Change(Version(revision), actions))
        except Compacted as exc:
            raise HistoryCompacted(Version(exc.compact_revision), end) from None
        return changes  # not reached: the watch raises when it ends

    def _history_action(self, event: dict[str, Any]) -> StoreAction | None:
        """The action of a watched event with its previous value (None if it does not
        decode: reported through ``on_parse_error``)."""
        previous = self._decode(event["prev_kv"]) if "prev_kv" in event else None
        if event.get("type") == "DELETE":
            if previous is None:
                return None
            return StoreAction(ActionKind.DELETE, previous[0], previous[1])
        decoded = self._decode(event["kv"])
        if decoded is None:
            return None
        table, obj = decoded
        if previous is None:
            return StoreAction(ActionKind.CREATE, table, obj)
        return StoreAction(ActionKind.UPDATE, table, obj, previous[1])

    async def _put_bound(self) -> int:
        """Put this process's marker key (a value no transaction's nonce has); its revision,
        which is past every commit the store has seen."""
        body = {"key": b64(self._marker_key), "value": b64(b"history bound")}
        self._session_keys = True
        response = await self.client.call("kv/put", body, write=True)
        return int(response["header"]["revision"])

    # -- leadership (core.proposer.Leading) --------------------------------------------------

    def leadership(
        self, host: Host, name: str, identity: str, ttl: float
    ) -> AbstractAsyncContextManager[EtcdFence]:
        """Campaign for ``name`` on an etcd lease (see ``etcd.leadership``)."""
        return Elections(self.client, self.prefix).campaign(name, identity, ttl, host.spawn)

    async def leader(self, name: str) -> str | None:
        """The identity of the current leader of ``name`` (None: nobody leads)."""
        return await Elections(self.client, self.prefix).leader(name)

    # -- transactions ------------------------------------------------------------------------

    def prepare(self, tx: TrackingTx, base: Version) -> Prepared:
        """Turn a finished local transaction into an etcd txn (TransactionTooLarge if it
        exceeds etcd's limits). ``base`` is the version the transaction ran on."""
        expect: dict[bytes, int] = {}
        written: list[bytes] = []
        success: list[dict[str, Any]] = []
        size = 0
        nonce = f"{self._session_text}/{next(self._nonces)}"
        witness: tuple[bytes, bytes] | None = None
        watched: tuple[str, str] | None = None
        held_before: dict[bytes, str] = {}
        held_after: dict[bytes, str] = {}
        changes: list[tuple[str, str, Any]] = []
        compares: list[dict[str, Any]] = []
        ranges: list[dict[str, Any]] = []
        for (table, id), (old, new) in tx.changes.items():
            if old is new:
                continue
            changes.append((table, id, new))
            key = self._object_key(table, id)
            named = b64(key)
            expect[key] = revision = _revision_of(old)
            compares.append(_mod_equal_named(named, revision))
            ranges.append({"request_range": {"key": named}})
            written.append(key)
            if new is None:
                success.append({"request_delete_range": {"key": named}})
            else:
                data = encode(new)
                data["meta"][0] = nonce  # the revision is the version: see _decode
                value = dump_data(data)
                size += len(value)
                put = {"key": named, "value": b64(value)}
                if witness is None:
                    witness = (key, value)
                    watched = (put["key"], put["value"])
                success.append({"request_put": put})
            size += len(key)
            for spec in self._uniques[table]:
                for k in _keys(spec, old):
                    held_before[self._unique_key(table, spec.name, k)] = id
                for k in _keys(spec, new):
                    held_after[self._unique_key(table, spec.name, k)] = id
        reads = [(k, obj) for k, obj in tx.reads.items() if k not in tx.changes]
        free: list[bytes] = []
        puts = set(written)
        for ukey, holder in held_after.items():
            if held_before.get(ukey) != holder:
                if ukey not in held_before:
                    free.append(ukey)
                puts.add(ukey)
                success.append({"request_put": {"key": b64(ukey), "value": b64(holder.encode())}})
        for ukey in held_before.keys() - held_after.keys():
            puts.add(ukey)
            success.append({"request_delete_range": {"key": b64(ukey)}})
        compares.extend(_absent(k) for k in free)
        ranges.extend({"request_range": {"key": b64(k)}} for k in free)
        fence = FENCE.get()
        if fence is not None:
            if not isinstance(fence, EtcdFence):
                raise TypeError(f"an etcd store writes under its own leadership, not {fence!r}")
            if fence.lost:
                raise NotLeader(fence.name, "its leadership was lost")
            compares.append(fence.compare())
            ranges.append({"request_range": {"key": b64(fence.key)}})
        room = self.max_txn_ops - 1 - len(compares)  # one compare for the fence
        alone = len(reads) > room
        if not alone:
            for (table, id), obj in reads:
                key = self._object_key(table, id)
                expect[key] = _revision_of(obj)
                compares.append(_mod_equal(key, expect[key]))
                ranges.append({"request_range": {"key": b64(key)}})
        else:
            # Too many reads to compare one by one: no object of a table read may have
            # changed since ``base`` (catches changes and creations, not deletions).
            for table in sorted({table for (table, _id), _obj in reads}):
                start = self.prefix + b"o/" + table.encode() + b"/"
                compares.append(
                    {
                        "target": "MOD",
                        "key": b64(start),
                        "range_end": b64(prefix_end(start)),
                        "result": "LESS",
                        "mod_revision": base.index + 1,
                    }
                )
                newest: dict[str, Any] = {
                    "key": b64(start),
                    "range_end": b64(prefix_end(start)),
                    "sort_target": "MOD",
                    "sort_order": "DESCEND",
                    "limit": 1,
                }
                ranges.append({"request_range": newest})
        size += sum(len(k) for k in expect) + 64 * (len(compares) + len(success))
        operations = max(len(compares) + 1, len(success) + 1, len(ranges) + 1)
        if operations > self.max_txn_ops:
            raise TransactionTooLarge(
                f"this transaction needs {operations} etcd operations; etcd allows "
                f"{self.max_txn_ops} per txn (--max-txn-ops): split it, or use store.batch()"
            )
        if size > self.max_request_bytes:
            raise TransactionTooLarge(
                f"this transaction is about {size} bytes; etcd takes at most "
                f"{self.max_request_bytes} per request (--max-request-bytes): split it, or "
                "use store.batch()"
            )
        return Prepared(
            compares,
            success,
            ranges,
            expect,
            written,
            nonce.encode(),
            witness,
            free,
            frozenset(puts),
            size,
            alone,
            fence,
            watched,
            changes,
        )

    async def commit_prepared(self, prepared: Prepared) -> Version:
        """Send the txn (shared with other transactions of this process committing at the
        same time); return its revision, or raise Conflict (the store catches up and re-runs
        the transaction). An unknown outcome is resolved through the fence.

        The keys the transaction writes are this task's while its txn is in flight; other
        tasks of this process needing one wait, then re-run (``Conflict(local=True)``). After
        a failed compare they stay held until the store has passed the Conflict to
        ``catch_up`` and it returned (it always does: see TransactionalProposer)."""
        inflight = self._inflight
        busy = {inflight[key] for key in prepared.expect if key in inflight}
        if busy:  # another task here is committing a key this needs: wait, then re-run
            for done in busy:
                await done.wait()
            raise Conflict(local=True)
        done = self._event()
        for key in prepared.written:
            inflight[key] = done
        held = False
        self._writers += 1
        try:
            item = _Pending(prepared, alone=prepared.alone)
            try:
                version = await self._submit(item)
            except Conflict as conflict:
                held = True
                release = functools.partial(_release, inflight, prepared.written, done)
                raise _Held(conflict, release) from None
            host = self._host
            if host is not None and host.version < version:  # (no checkpoint if it has)
                # Not applied from what it wrote (see _apply_own): something came between.
                with self._watch_needed():
                    await host.wait_for(version)
            return version
        finally:
            self._writers -= 1
            if not held:
                _release(inflight, prepared.written, done)

    async def _submit(self, item: _Pending) -> Version:
        """Send ``prepared`` in a txn and wait for its outcome.

        A lone writer (no txn in flight, no other transaction of this process committing)
        sends its txn from its own task. Otherwise the transaction queues, and a sender
        task shares the next txn among the transactions queued by then: writers woken
        together by one txn's outcome are still committing their previous transactions,
        so the first of them to commit again queues rather than go alone. A store that is
        not followed yet sends each in a txn of its own, in this task.
        """
        host = self._host
        if host is None:
            await self._commit([item])
            return item.result()
        if self._writers == 1 and not self._senders and not self._queue:
            item.taken = True
            self._senders += 1
            try:
                await self._commit([item])
            finally:
                self._senders -= 1
                self._start_sender(host)  # for the transactions queued meanwhile
            return item.result()
        done = item.done = self._event()
        self._queue.append(item)
        self._start_sender(host)
        try:
            await done.wait()
        except BaseException:
            if not item.taken:  # never sent: it will not be
                self._queue.remove(item)
            raise
        return item.result()

    def _start_sender(self, host: Host) -> None:
        """Start a sender task if transactions are queued and another txn may go; if the
        store is closed, fail them instead."""
        if not self._queue or self._senders >= self.max_txns_in_flight:
            return
        if not host.closed:
            self._senders += 1
            try:
                host.spawn(self._sender)
                return
            except RuntimeError:  # the store's task group is closed
                self._senders -= 1
        while self._queue:
            self._queue.popleft().settle(
                StoreClosed("the store closed before this transaction was sent")
            )

    async def _sender(self) -> None:
        """Send the queued transactions, as many per txn as fit, until none is left."""
        group: list[_Pending] = []
        try:
            while self._queue:
                # One scheduling round first: writers already runnable (woken together by
                # the last txn's outcome, say) queue now and share this txn. (Meanwhile a
                # cancelled writer may have left the queue: it can be empty again.)
                await anyio.lowlevel.checkpoint()
                group = self._take()
                if group:
                    await self._commit(group)
        finally:
            self._senders -= 1
            for item in group:
                if item.outcome is None:
                    item.settle(
                        ProposalFailed(
                            "the store closed while this transaction was being committed; "
                            "it may or may not have committed"
                        )
                    )
            if not self._senders:
                while self._queue:
                    self._queue.popleft().settle(
                        StoreClosed("the store closed before this transaction was sent")
                    )

    def _take(self) -> list[_Pending]:
        """The queue's first transactions that fit one txn together, in order."""
        queue = self._queue
        group: list[_Pending] = []
        keys: set[bytes] = set()
        compares = success = ranges = 1  # the fence's compare and read, a marker put
        size = 0
        while queue:
            item = queue[0]
            p = item.prepared
            if group and (
                item.alone
                or group[0].alone
                or not keys.isdisjoint(p.puts)
                or max(compares + len(p.compares), success + len(p.success)) > self.max_txn_ops
                or ranges + len(p.ranges) > self.max_txn_ops
                or size + p.size > self.max_request_bytes
            ):
                break
            queue.popleft()
            item.taken = True
            group.append(item)
            keys |= p.puts
            compares += len(p.compares)
            success += len(p.success)
            ranges += len(p.ranges)
            size += p.size
        return group

    async def _commit(self, group: list[_Pending]) -> None:
        """Commit ``group`` in one txn and settle each transaction's outcome."""
        # The txn can only apply after what the replica has (the watch, resting, may be
        # behind the commits this process applied itself).
        host = self._host
        start = max(self._revision, host.version.index if host is not None else 0) + 1
        witness = next((i.prepared.witness for i in group if i.prepared.witness), None)
        marker: list[dict[str, Any]] = []
        if witness is None:  # deletes only: the nonce goes into the marker key
            witness = (self._marker_key, group[0].prepared.nonce)
            marker.append({"request_put": {"key": b64(witness[0]), "value": b64(witness[1])}})
            self._session_keys = True
        # A txn of one transaction: its watch event is recognised by its witness put (see
        # _own_txn).
        own = group[0].prepared.watched if len(group) == 1 else None
        if own is not None:
            self._own[own] = group[0].prepared
        try:
            await self._send_group(group, witness, marker, start)
        finally:
            if own is not None:
                del self._own[own]

    async def _send_group(
        self,
        group: list[_Pending],
        witness: tuple[bytes, bytes],
        marker: list[dict[str, Any]],
        start: int,
    ) -> None:
        """Send ``group``'s txn until it commits, or settle its transactions otherwise."""
        fence_key = b64(self._fence_key)
        while True:
            fence = self._fence
            body = {
                "compare": [
                    *(c for item in group for c in item.prepared.compares),
                    _mod_equal(self._fence_key, fence),
                ],
                "success": [*(op for item in group for op in item.prepared.success), *marker],
            }
            try:
                response = await self.client.call("kv/txn", body, write=True)
            except OutcomeUnknown as exc:
                log.info("etcd txn's outcome is unknown, settling it through the fence: %s", exc)
                try:
                    version = await self._resolve(witness, start)
                except (Conflict, ProposalFailed) as exc:
                    _settle_all(group, exc)
                    return
                _settle_all(group, version)
                return
            except TransactionTooLarge as exc:  # refused: as it was
                if len(group) == 1:
                    group[0].settle(exc)
                    return
                for item in reversed(group):  # more than etcd takes together: one by one
                    item.alone, item.taken = True, False
                    self._queue.appendleft(item)
                return
            except EtcdError as exc:  # refused or never sent: as it was
                _settle_all(group, exc)
                return
            if response.get("succeeded"):
                version = Version(int(response["header"]["revision"]))
                _settle_all(group, version)
                await self._apply_own(group, version)
                return
            # A compare failed: nothing was written. Read what the compares saw, at one
            # revision.
            read = {
                "success": [
                    *(r for item in group for r in item.prepared.ranges),
                    {"request_range": {"key": fence_key}},
                ]
            }
            try:
                response = await self.client.call("kv/txn", read)
            except EtcdUnavailable:
                _settle_all(group, Conflict())  # re-run on what the replica has
                return
            *ranges, last = response["responses"]
            kvs = last["response_range"].get("kvs", [])
            seen = int(kvs[0]["mod_revision"]) if kvs else 0
            if seen != fence:
                # Fenced since (after an unknown outcome here, or from outside): send again.
                if self._fence == fence:
                    self._fence = seen
                    if seen:
                        log.warning("etcd fence %r was changed from outside", self._fence_key)
                        self._session_keys = True  # deleted on close all the same
                continue
            group = self._settle_conflicts(group, ranges)
            if not group:
                return

    def _settle_conflicts(
        self, group: list[_Pending], ranges: list[dict[str, Any]]
    ) -> list[_Pending]:
        """After a failed compare: settle with Conflict each transaction whose compares fail
        on what the read found (``ranges``: the range responses of the group's keys, in
        order); return the others, to be sent again. With one transaction, or none found
        failing (the keys changed back since), all of them run again."""
        current = {
            unb64(kv["key"]): int(kv["mod_revision"])
            for item in ranges
            for kv in item.get("response_range", {}).get("kvs", [])
        }
        keep: list[_Pending] = []
        offset = 0
        failed = []
        for item in group:
            count = len(item.prepared.ranges)
            mine = ranges[offset : offset + count]
            offset += count
            if len(group) == 1 or item.prepared.broken(current):
                failed.append((item, mine))
            else:
                keep.append(item)
        if not failed:
            failed = [(item, []) for item in keep]
            keep = []
        for item, mine in failed:
            fence = item.prepared.fence
            if fence is not None and item.prepared.deposed(current):
                fence.lose("a fenced write found its key gone")
                item.settle(NotLeader(fence.name, "its key is gone: another process may lead"))
            else:
                item.settle(self._conflict(item.prepared, mine))
        return keep

    def _conflict(self, prepared: Prepared, ranges: list[dict[str, Any]]) -> Conflict:
        """What the replica must reach before the re-run: the newest revision seen of the
        compared keys (``ranges``: the range responses of the txn's own keys), and the
        compared objects found deleted."""
        revision = 0
        found: set[bytes] = set()
        for item in ranges:
            for kv in item.get("response_range", {}).get("kvs", []):
                revision = max(revision, int(kv["mod_revision"]))
                found.add(unb64(kv["key"]))
        gone = [
            self._split(key) for key, seen in prepared.expect.items() if seen and key not in found
        ]
        return Conflict(revision, gone)

    async def _resolve(self, witness: tuple[bytes, bytes], start: int) -> Version:
        """After an unknown outcome: fence, then look for ``witness`` (a put of the lost
        txn) in etcd's history from revision ``start`` to the fence. Its revision if found;
        Conflict (run again) if not; ProposalFailed if etcd cannot tell within 60 s."""
        reason = "did not answer for 60 s"
        with anyio.move_on_after(60):
            fenced = await self._put_fence()
            while True:
                try:
                    revision = await self._find(witness, start, fenced)
                except Compacted:
                    reason = f"compacted its history past revision {start}"
                    break
                except EtcdUnavailable:
                    await anyio.sleep(0.2)
                    continue
                if revision is None:
                    raise Conflict()  # it never applied and now never will: run again
                return Version(revision)
        raise ProposalFailed(
            f"etcd {reason} ({', '.join(self.client.endpoints)}); the last "
            "transaction may or may not have committed"
        )

    async def _put_fence(self) -> int:
        """Put the fence key; return its revision (every txn compared an older one)."""
        body = {"key": b64(self._fence_key), "value": b64(FENCED)}
        self._session_keys = True
        while True:
            try:
                response = await self.client.call("kv/put", body, write=True)
            except EtcdUnavailable:  # an unknown outcome too: another fence does no harm
                await anyio.sleep(0.2)
                continue
            revision = int(response["header"]["revision"])
            self._fence = max(self._fence, revision)
            return revision

    async def _find(self, witness: tuple[bytes, bytes], start: int, fenced: int) -> int | None:
        """The revision at which ``witness`` was put between ``start`` and ``fenced`` (the
        fence's own event, under the prefix too, ends the search), or None."""
        key, value = witness
        request = {
            "key": b64(self.prefix),
            "range_end": b64(prefix_end(self.prefix)),
            "start_revision": start,
        }
        async with aclosing(self.client.watch(request)) as results:
            async for result in results:
                for event in result.get("events", ()):
                    kv = event["kv"]
                    revision = int(kv["mod_revision"])
                    if revision >= fenced:
                        return None
                    if (
                        event.get("type") != "DELETE"
                        and unb64(kv["key"]) == key
                        and unb64(kv.get("value", "")) == value
                    ):
                        return revision
        return None  # not reached: the watch raises when it ends

    async def catch_up(self, host: Host, conflict: Conflict, attempt: int) -> None:
        """Wait until the replica has what a failed compare saw (at most 5 s); then, unless
        ``attempt`` is 0 (no run follows), back off before the function's ``attempt``-th
        run again: sleep a random time below ``backoff_bound(attempt)``, then wait, at most
        as long again, for the next commit to reach the replica, and return as soon as it
        does.

        Until this returns, the keys the transaction writes stay held (see
        ``commit_prepared``): the other tasks of this process that need them wait too. The
        process backs off as a whole; otherwise the next of its tasks re-runs at once, on a
        replica that has not yet seen the commit that made the compare fail, and its txn
        fails too: retries that no back-off slows.

        The random sleep spreads contending writers over more and more commits. Returning
        right after a commit lands sends the run again when the key is least likely to have
        a txn in flight: retries sent at random moments mostly meet the txn of a writer whose
        last commit just succeeded (it never backs off), and lose again.
        """
        try:
            with self._watch_needed():
                with anyio.move_on_after(5):
                    await host.wait_for(Version(conflict.revision))
                    while self._present(host, conflict.gone):
                        await host.wait_for(Version(host.version.index + 1))
                if attempt:
                    bound = backoff_bound(attempt)
                    await anyio.sleep(random.uniform(0, bound))
                    with anyio.move_on_after(bound):
                        await host.wait_for(Version(host.version.index + 1))
        finally:
            if isinstance(conflict, _Held):
                conflict.release()

    def _present(self, host: Host, gone: Sequence[tuple[str, str]]) -> bool:
        """True while ``host``'s replica still has one of the objects ``gone`` (deleted by
        the commit that made a compare fail)."""
        classes = self._classes
        with host.pin() as snapshot:
            return any(snapshot.get(classes[table], id) is not None for table, id in gone)

    # -- the replica feed --------------------------------------------------------------------

    def attach(self, host: Host) -> None:
        """Make ``store`` the one this proposer feeds (before ``follow`` starts): from now on
        a commit waits until its change reached the replica, and concurrent commits share
        txns."""
        self._host = host

    async def follow(self, host: Host) -> None:
        """Apply every change under the prefix to ``store``, forever: watch from the next
        revision, fail over and resume when a member dies, re-list when compacted."""
        self._host = host
        start = self.prefix + b"o/"
        request: dict[str, Any] = {
            "key": b64(start),
            "range_end": b64(prefix_end(start)),
            "progress_notify": True,
            "prev_kv": False,
        }
        delay = 0.0
        while True:
            try:
                request["start_revision"] = self._revision + 1
                await self._watch_once(host, request)
                delay = 0.0
            except Compacted:
                await self._relist(host)
            except EtcdUnavailable as exc:
                # A watch that had been running resumes at once on the next member (commits
                # wait for the replica: a member restarting must not stall them); one that
                # could not start, or broke as soon as it had, waits longer each time.
                since = self._watching_since
                if since is not None and anyio.current_time() - since >= _WATCH_RAN:
                    delay = 0.0
                else:
                    delay = min(max(delay * 2, 0.05), 2.0)
                log.info("etcd watch interrupted, resuming from %d: %s", self._revision, exc)
                await anyio.sleep(delay)

    async def _watch_once(self, host: Host, request: dict[str, Any]) -> None:
        """Follow one watch until it breaks (EtcdUnavailable, Compacted) or its member
        stops answering (then fail over and return)."""
        self._watching_since = None
        try:
            async with anyio.create_task_group() as nursery:
                heard = [time.monotonic()]  # (cheaper than the loop's clock, per message)
                nursery.start_soon(self._watchdog, nursery.cancel_scope, heard)
                async with aclosing(self.client.watch(request, between=self._rest)) as results:
                    async for result in results:
                        if self._watching_since is None:  # etcd's first message: created
                            self._watching_since = anyio.current_time()
                        heard[0] = time.monotonic()
                        events = result.get("events")
                        if events:
                            last = int(events[-1]["kv"]["mod_revision"])
                            if last > host.version.index:  # (else this process applied it)
                                apply = functools.partial(self._changes, events=events)
                                await host.apply_remote(apply)
                            self._revision = last
        except BaseExceptionGroup as group:  # the watch's own error, not a group of one
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        if nursery.cancel_scope.cancelled_caught:
            self.client.fail_over()
            log.warning("etcd member stopped answering; watching another from %d", self._revision)

    async def _rest(self) -> None:
        """Called by the watch when it has yielded every message that arrived: while commits
        of this process are in flight and no task waits for the watch, rest (at most
        ``REST`` seconds, or until such a task wakes it) rather than read each message as it
        comes.

        A commit of this process that nothing came between is applied by the task that sent
        it from what it wrote, so its event only needs skipping; read one by one, such events cost a
        lone writer about a fifth of its CPU (a wake-up, a read, HTTP and JSON for each),
        read after a rest they cost a few microseconds each. Commits of other processes
        still arrive at once whenever a commit of this process needs them: a writer whose
        txn committed after one it has not seen, and ``catch_up``, wait for the watch
        through ``_watch_needed``, which wakes it. Otherwise they wait at most
        ``REST`` seconds longer while this process is committing."""
        resting, deadline = self._resting, self._deadline
        if not self._writers or self._needed or resting is None or deadline is None:
            return
        with deadline(REST):
            await resting.park()

    @contextlib.contextmanager
    def _watch_needed(self) -> Iterator[None]:
        """For a task waiting for the watch to bring a revision: the watch does not rest
        meanwhile, and ends a rest under way (see ``_rest``)."""
        self._needed += 1
        if self._resting:
            self._resting.unpark_all()
        try:
            yield
        finally:
            self._needed -= 1

    async def _watchdog(self, watch: anyio.CancelScope, heard: list[float]) -> None:
        """Cancel ``watch`` when its member stops answering: after ``watch_idle`` seconds
        without a message, ask the same member for the revision (a frozen or cut-off member
        leaves a watch silent, not broken)."""
        idle = self.watch_idle
        while True:
            await anyio.sleep(max(heard[0] + idle - time.monotonic(), 0.0))
            if time.monotonic() - heard[0] < idle:
                continue
            with anyio.move_on_after(min(idle, self.client.timeout)):
                try:
                    await self.client.ping()
                    heard[0] = time.monotonic()
                    continue
                except EtcdUnavailable:
                    pass
            watch.cancel()
            return

    def _changes(self, state: StoreState, *, events: list[dict[str, Any]]) -> list[Change]:
        """The Changes of a watch message: one per revision, in order."""
        changes: list[Change] = []
        applied = state.version.index
        for revision, group in itertools.groupby(events, key=lambda e: e["kv"]["mod_revision"]):
            version = Version(int(revision))
            if version.index <= applied:  # applied already (a commit of this process)
                continue
            batch = list(group)
            own = self._own_txn(batch)
            if own is not None:  # a txn of this process's alone: no need to decode it
                changes.append(Change(version, self._own_actions(state, own, version)))
                continue
            actions: list[StoreAction] = []
            for event in batch:
                kv = event["kv"]
                if event.get("type") == "DELETE":
                    table, id = self._split(unb64(kv["key"]))
                    current = _current(state, table, id)
                    if current is not None:
                        actions.append(StoreAction(ActionKind.DELETE, table, current))
                    continue
                decoded = self._decode(kv)
                if decoded is None:  # reported; drop what the replica had under the key
                    table, id = self._split(unb64(kv["key"]))
                    current = _current(state, table, id)
                    if current is not None:
                        actions.append(StoreAction(ActionKind.DELETE, table, current))
                    continue
                table, obj = decoded
                actions.append(StoreAction(ActionKind.UPDATE, table, obj))
            changes.append(Change(version, actions))
        return changes

    async def _apply_own(self, group: list[_Pending], version: Version) -> None:
        """Apply the txn of ``group`` that committed at ``version`` from the objects its
        transactions wrote, if the replica is at the revision before it (nothing can have
        come between), rather than wait for its watch event and decode it: the watch then
        finds it applied and skips it (see ``_changes``). Otherwise the watch applies it,
        after what came between, and the writers wait for that."""
        host = self._host
        if host is None or host.version.index + 1 != version.index:
            return
        prepared = [item.prepared for item in group]
        await host.apply_remote(
            functools.partial(self._own_change, prepared=prepared, version=version)
        )

    def _own_change(
        self, state: StoreState, *, prepared: list[Prepared], version: Version
    ) -> list[Change]:
        """The Change of this process's txn at ``version`` (its transactions in order),
        from what they wrote: only if the replica is at the revision before it still (else
        the watch has applied it, or must first apply what came between)."""
        if state.version.index + 1 != version.index:
            return []
        actions = [a for each in prepared for a in self._own_actions(state, each, version)]
        return [Change(version, actions)]

    def _own_txn(self, events: list[dict[str, Any]]) -> Prepared | None:
        """The transaction of this process's whose txn, sent alone, made ``events`` (one
        revision's): its first object put is the transaction's witness, whose value holds
        the transaction's nonce; None if they are not such a txn's."""
        own = self._own
        if not own:
            return None
        for event in events:
            if event.get("type") != "DELETE":
                kv = event["kv"]
                prepared = own.get((kv["key"], kv.get("value", "")))
                if prepared is None or len(prepared.changes) != len(events):
                    return None
                return prepared
        return None

    def _own_actions(
        self, state: StoreState, prepared: Prepared, version: Version
    ) -> list[StoreAction]:
        """The actions of ``prepared`` committed at ``version``, from the objects it wrote,
        each stamped with the revision (as its watch event decodes)."""
        actions: list[StoreAction] = []
        for table, id, new in prepared.changes:
            if new is None:
                current = _current(state, table, id)
                if current is not None:
                    actions.append(StoreAction(ActionKind.DELETE, table, current))
                continue
            meta = new.meta
            stamped = state.by_name[table].table.restamp(
                new, Meta(version, meta.created_at, meta.updated_at)
            )
            actions.append(StoreAction(ActionKind.UPDATE, table, stamped))
        return actions

    async def _relist(self, host: Host) -> None:
        """Re-list after the watch's start revision was compacted; apply the difference."""
        from ..core.state import difference

        revision, objects = await self._list()
        listed = {name: {obj.id: obj for obj in objs} for name, objs in objects.items()}

        def resync(state: StoreState) -> list[Change]:
            actions = difference(state, listed, same=_same_version)
            if revision <= state.version.index:
                return []
            return [Change(Version(revision), actions)]

        await host.apply_remote(resync)
        self._revision = revision
        self.resyncs += 1
        log.warning("etcd watch revision was compacted; re-listed at revision %d", revision)
        if self.on_resync is not None:
            self.on_resync(Version(revision))

    def statistics(self) -> ProposerStatistics:
        """The requests sent to etcd, those sent again, and the re-lists (see
        ``core.proposer.Instrumented``)."""
        return ProposerStatistics(
            etcd_requests=self.client.requests,
            etcd_retries=self.client.retries,
            resyncs=self.resyncs,
        )

    async def aclose(self) -> None:
        """Delete this session's fence and marker keys (if etcd answers within
        ``timeout``), then close the connections."""
        with anyio.CancelScope(shield=True):
            if self._session_keys:
                start = self.prefix + b"x/" + self._session + b"/"
                body = {"key": b64(start), "range_end": b64(prefix_end(start))}
                with anyio.move_on_after(self.client.timeout):
                    try:
                        await self.client.call("kv/deleterange", body, write=True)
                    except EtcdError as exc:
                        log.info("etcd keys of session %r left behind: %s", self._session, exc)
        self._host = None  # the store refers to this proposer: break the cycle
        await self.client.aclose()


def _settle_all(group: list[_Pending], outcome: Version | BaseException) -> None:
    """Settle every transaction of ``group`` with ``outcome`` (an error: one of its own
    for each, as each is raised in its own task)."""
    for i, item in enumerate(group):
        if i and isinstance(outcome, BaseException):
            item.settle(_copy_error(outcome))
        else:
            item.settle(outcome)


def _copy_error(error: BaseException) -> BaseException:
    if isinstance(error, Conflict):
        return Conflict(error.revision, error.gone, local=error.local)
    copy = type(error)(*error.args)
    copy.__cause__ = error.__cause__
    return copy


def _same_version(a: Any, b: Any) -> bool:
    return bool(a.meta.version == b.meta.version)


def _revision_of(obj: Any) -> int:
    if obj is None:
        return 0
    version: Version | None = obj.meta.version
    return 0 if version is None else version.index


def _keys(spec: IndexSpec, obj: Any) -> Iterable[Any]:
    if obj is None:
        return ()
    key = spec.extract(obj)
    if key is None:
        return ()
    return key if spec.multi else (key,)


def _mod_equal(key: bytes, revision: int) -> dict[str, Any]:
    return _mod_equal_named(b64(key), revision)


def _mod_equal_named(named: str, revision: int) -> dict[str, Any]:
    """``_mod_equal`` of a key already in base64."""
    return {"target": "MOD", "key": named, "result": "EQUAL", "mod_revision": revision}


def _absent(key: bytes) -> dict[str, Any]:
    return {"target": "CREATE", "key": b64(key), "result": "EQUAL", "create_revision": 0}


def backoff_bound(attempt: int) -> float:
    """Seconds: the longest back-off before running a transaction for the ``attempt``-th
    time again after a conflict (the back-off is random below it, "full jitter"):
    1 ms · 2^attempt, at most 100 ms."""
    return min(0.001 * 2.0**attempt, 0.1)


def _release(inflight: dict[bytes, Event], keys: list[bytes], done: Event) -> None:
    """Give up ``keys`` (those still held by ``done``'s transaction) and wake their waiters."""
    for key in keys:
        if inflight.get(key) is done:
            del inflight[key]
    done.set()


class _Held(Conflict):
    """A Conflict whose transaction still holds its keys: ``catch_up`` calls ``release``."""

    def __init__(self, conflict: Conflict, release: Callable[[], None]) -> None:
        super().__init__(conflict.revision, conflict.gone)
        self.release = release


def _current(state: StoreState, table: str, id: str) -> Any:
    tables = state.by_name.get(table)
    return None if tables is None else tables.rows.get(id)
