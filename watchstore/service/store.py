"""The store service, on AnyIO: serialises writers, talks to the proposer, runs its tasks.

``update`` runs the caller's function on a write transaction, proposes its actions and returns
once they are committed. The proposer's ``commit`` callback is the commit point: the state
marks the transaction committed there, and waiters for that version are woken. Readers are
never blocked: ``view`` reads the committed state synchronously and ``snapshot`` pins it.

The store knows its proposer only through the protocols of ``core.proposer``: it looks for
each optional capability once, when it opens, and the proposer's lifecycle (what to load,
its background tasks, its close) runs through ``Lifecycle``. The few event-loop calls on the
commit path go through ``_runtime`` (trio's own primitives, on trio).
"""

from __future__ import annotations

import heapq
import logging
from contextlib import asynccontextmanager, contextmanager
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, cast, overload

import anyio
from typing_extensions import TypeVar

from .. import _runtime
from ..core.codec import encoded_size
from ..core.errors import (
    HistoryCompacted,
    InvalidQuery,
    NotLeader,
    ProposalFailed,
    SequenceConflict,
    StoreClosed,
    StoreError,
    TransactionTooLarge,
    WatchOverflow,
)
from ..core.events import check_specs
from ..core.history import DEFAULT_HISTORY_BYTES
from ..core.hub import DEFAULT_HISTORY, Hub, replay_items
from ..core.model import ORIGIN, Change, Meta, StoreAction, Version
from ..core.proposer import (
    CommitsAtOnce,
    Compacting,
    Conflict,
    Instrumented,
    Leading,
    Lifecycle,
    Loaded,
    MemoryProposer,
    Pipelined,
    Proposer,
    TransactionalProposer,
)
from ..core.schema import Schema
from ..core.state import Snapshot, StoreState, difference
from ..core.statistics import MASK, NO_PROPOSER_STATISTICS, Recent, Statistics
from ..core.tables import restore_tables
from ..core.txn import VIEW_ENDED, ReadTx, Savepoint, TrackingTx, Tx, replace_content
from ..log.proposer import Durability, LogProposer
from .leadership import Lead, LocalLeaders, default_identity
from .watch import DEFAULT_QUEUE, Watch

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
    from contextlib import AbstractAsyncContextManager

    from ..core.events import Event, Spec
    from ..core.proposer import Submission
    from ..log.epochlog import Recovery

R = TypeVar("R")
ObjT = TypeVar("ObjT", default=Any)  # the class of the objects a watch's events carry
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

MAX_BATCH_CHANGES: Final = 200
"""Default most changes one batch commit carries (SwarmKit's MaxChangesPerTransaction)."""
MAX_BATCH_BYTES: Final = 3 * 1024 * 1024 // 2
"""Default most encoded bytes one batch commit carries (1.5 MiB)."""
SCHEDULE_EVERY: Final = 16
"""Default for ``open_store(schedule_every=)``: an ``update`` that did not have to wait
lets other tasks run once every this many calls (see :meth:`Store.update`)."""

log = logging.getLogger("watchstore")

TIME_EVERY: Final = 16
"""On a store whose proposer commits in memory, ``statistics().commit_latency`` samples
one ``update()`` in this many (a power of two); elsewhere every one is timed."""


class Store:
    """An open store: the tables of a schema in memory, read in consistent views, changed by
    atomic transactions, followed through watches. Get one from :func:`open_store`.

    Reads: ``view(fn)`` and ``snapshot()``. Writes: ``update(fn)`` and ``batch(fn)``.
    Events: ``watch``, ``view_and_watch`` and ``watch_from``. Then ``wait_for(version)``,
    ``compact()``, ``leadership(name)``, and ``fork()`` for a :class:`Replica`. ``version``
    is the last commit's, ``recovery`` what opening a log found.
    """

    def __init__(
        self,
        schema: Schema,
        proposer: Proposer,
        task_group: anyio.abc.TaskGroup,
        *,
        history: int = DEFAULT_HISTORY,
        schedule_every: int = SCHEDULE_EVERY,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        statistics: bool = True,
    ) -> None:
        if schedule_every < 1:
            raise ValueError(f"schedule_every must be at least 1, got {schedule_every}")
        self.schema = schema
        self._proposer = proposer
        self._state = StoreState(schema, proposer.get_version())
        self._hub = Hub(self._state.version, history, history_bytes)
        self._task_group = task_group
        self._task_scopes: set[anyio.CancelScope] = set()
        rt = self._rt = _runtime.current()
        self._checkpoint = rt.checkpoint
        self._checkpoint_if_cancelled = rt.checkpoint_if_cancelled
        self._cancel_shielded_checkpoint = rt.cancel_shielded_checkpoint
        self.recovery: Recovery | None = None
        """For a store opened from a log: what opening found (``repaired_tail`` bytes,
        and ``salvage`` when it was opened with ``salvage=True`` and had damage)."""
        self._write_lock = WriteLock(rt.lot())
        # The proposer's capabilities (see core.proposer), looked for once.
        # One that commits in memory is called without a coroutine (see _commit_now).
        self._memory = (
            proposer if isinstance(proposer, CommitsAtOnce) and proposer.commits_at_once() else None
        )
        # One that can pipeline (queue a commit synchronously, then make it durable in the
        # background) lets the next writer begin while this one waits.
        self._submit: Callable[..., Submission] | None = (
            proposer.submit if isinstance(proposer, Pipelined) else None
        )
        # One that checks reads at commit (etcd) gets whole transactions instead.
        self._remote = proposer if isinstance(proposer, TransactionalProposer) else None
        # One shared by several processes elects leaders; on one machine, they are local.
        self._leading = proposer if isinstance(proposer, Leading) else None
        self._local_leaders = LocalLeaders()
        # One that measures its own work (fsyncs, compactions, etcd) reports it.
        self._instrumented = proposer if isinstance(proposer, Instrumented) else None
        # update() latencies: a perf_counter pair and a ring slot per timed call. A clock
        # read costs about 1% of a memory commit, so on one only every TIME_EVERY-th call is
        # timed (update() calls whose number & _untimed is 0: -1 times none).
        self._timed = statistics
        self._untimed = -1 if not statistics else 0 if self._memory is None else TIME_EVERY - 1
        self._updates = 0  # update() calls, for choosing those to time
        self._latencies = Recent()
        self._conflict_retries = 0
        self._waiters: list[tuple[int, int, _runtime.Event]] = []
        self._updating = 0  # update() calls under way
        self._classes = {t.cls: t.name for t in schema.tables}
        self._batching: dict[object, Batch] = {}  # tasks in store.batch(fn)
        # update() calls until the next one that did not wait makes a schedule point.
        self._schedule_every = schedule_every
        self._until_schedule = schedule_every
        self._closed: BaseException | None = None

    # -- reads -------------------------------------------------------------------------------

    @property
    def version(self) -> Version:
        """The version of the last committed transaction."""
        return self._state.version

    def view(self, fn: Callable[[ReadTx], R]) -> R:
        """Run ``fn(tx)`` on the committed state and return its result.

        ``fn`` is synchronous, so nothing can change the state while it runs; the ReadTx must
        not be kept after it returns (take a ``snapshot()`` to read across awaits).
        """
        self._check_open()
        tx = self._state.reader()
        try:
            result = fn(tx)
            if type(result) not in _NOT_AWAITABLE:
                _check_result(result)  # an async fn would read after the view has ended
            return result
        finally:
            tx._end(VIEW_ENDED)

    def snapshot(self) -> Snapshot:
        """Return a read-only transaction pinned at the current version, in O(1).

        It stays consistent across awaits while writers go on. Close it (or use it in a
        ``with`` block) when done: it keeps the objects it can see alive until then.
        """
        self._check_open()
        return self._state.pin()

    @asynccontextmanager
    async def leadership(
        self, name: str, *, ttl: float = 10.0, identity: str | None = None
    ) -> AsyncIterator[Lead]:
        """Lead ``name`` among the processes sharing this store, for the block.

        Enters once this process leads (it waits while another does). Write through
        ``lead.update(fn)``: on etcd each such write commits only while this process still
        leads, so a process deposed without knowing it (paused past ``ttl`` seconds, cut
        off) commits nothing more: its update raises NotLeader. When the leadership is lost
        the block is cancelled, and leaving it raises NotLeader. ``identity`` (by default
        ``host/pid``) is what :meth:`leader` tells the others. A store on one machine has
        one process to lead it: held at once unless another task holds it, never lost.
        """
        self._check_open()
        identity = default_identity() if identity is None else identity
        if self._leading is not None:
            campaign = self._leading.leadership(self, name, identity, ttl)
        else:
            campaign = self._local_leaders.campaign(name, identity)
        async with campaign as fence:
            lead = Lead(self, name, identity, fence)
            with anyio.CancelScope() as scope:
                fence.on_lost(scope.cancel)
                yield lead
            if scope.cancelled_caught:
                raise NotLeader(name, "the leadership was lost while the block ran")

    async def leader(self, name: str) -> str | None:
        """The identity of the current leader of ``name`` (None: nobody leads it)."""
        self._check_open()
        if self._leading is not None:
            return await self._leading.leader(name)
        return self._local_leaders.leader(name)

    async def wait_for(self, version: Version) -> None:
        """Return once the store has committed ``version`` (at once if it already has)."""
        if self._state.version >= version:
            await self._checkpoint()
            return
        event = self._rt.event()
        heapq.heappush(self._waiters, (version.index, id(event), event))
        await event.wait()
        self._check_open()

    def statistics(self) -> Statistics:
        """The store's counters and recent latencies, now (a frozen record; see
        :class:`Statistics` and docs/operations.md for each field).

        Cheap to call: it reads counters, and sorts a copy of each ring of recent samples
        (at most 1024 each); it visits every open watch for the queue depths. Nothing is
        measured for it on the commit path beyond counters and, unless the store was opened
        with ``statistics=False``, a ``perf_counter()`` pair per timed ``update()`` (every
        one, or one in 16 on a store in memory, where a commit takes microseconds).
        """
        hub = self._hub
        proposer = (
            NO_PROPOSER_STATISTICS
            if self._instrumented is None
            else self._instrumented.statistics()
        )
        pending = [watch.pending() for watch in hub.watchers()]
        return Statistics(
            version=self.version,
            commits=hub.commits,
            commit_latency=self._latencies.summary(),
            conflict_retries=self._conflict_retries,
            fsyncs=proposer.fsyncs,
            commit_groups=proposer.commit_groups,
            watchers=len(pending),
            watch_pending_total=sum(pending),
            watch_pending_max=max(pending, default=0),
            overflows=hub.overflows,
            lag=self._lag(),
            resyncs=self._resyncs() + proposer.resyncs,
            compactions=proposer.compactions,
            compaction_failures=proposer.compaction_failures,
            last_compaction_seconds=proposer.last_compaction_seconds,
            etcd_requests=proposer.etcd_requests,
            etcd_retries=proposer.etcd_retries,
        )

    def _lag(self) -> int:
        """Commits of a source not applied yet (a replica's; a store has none)."""
        return 0

    def _resyncs(self) -> int:
        """Times this store caught up from a new snapshot (a replica's)."""
        return 0

    # -- writes ------------------------------------------------------------------------------

    async def update(self, fn: Callable[[Tx], R]) -> R:
        """Run ``fn(tx)`` in a write transaction, commit its changes and return its result.

        If ``fn`` raises, nothing is applied and the exception propagates. Once the changes
        are proposed, the call returns when they are committed; if the proposer fails,
        ``ProposalFailed`` is raised and the outcome is unknown. If cancelled while
        proposing, the change is undone locally unless it had already committed.

        Every call is a cancel point (a cancelled caller gets the event loop's cancellation
        before anything runs). It is a schedule point (other tasks run) whenever it suspends (for
        the lock, a group commit's fsync or etcd) or fsynced a lone commit itself. Any other
        call (a memory commit, or a lone commit written inline with durability "interval"
        or "none") is one on every ``schedule_every``-th call (``open_store``'s argument,
        default 16): a memory commit takes microseconds and trio's schedule point costs
        about as much again, so a loop of updates yields often enough to starve nobody
        without paying it on every commit.
        ``schedule_every=1`` follows trio's own convention of a schedule point in every
        call.

        With a transactional proposer (etcd), ``fn`` runs on the local replica and is run
        again, up to the proposer's ``max_retries`` times, when another process changed
        what it read or wrote before it committed; then SequenceConflict.
        """
        if self._batching and self._rt.current_task() in self._batching:
            raise StoreError(
                "store.update() inside store.batch(fn) would wait for the batch's own chunk: "
                "write with await batch.update(fn2) there"
            )
        if self._remote is not None:
            return await self._update_remote(fn, self._remote)
        self._updates = updates = self._updates + 1
        start = 0.0 if updates & self._untimed else perf_counter()
        self._updating += 1  # a writer on its way: see _submit_pipelined
        try:
            lock = self._write_lock
            if lock.held or self._closed is not None:
                await self._take_write_lock()
            else:  # the uncontended fast path of _take_write_lock, without a coroutine
                await self._checkpoint_if_cancelled()
                lock.held = True
            submission = None
            try:
                state = self._state
                tx = state.begin()
                try:
                    result = fn(tx)
                    if type(result) not in _NOT_AWAITABLE:  # _run_in_tx, without the call
                        _check_result(result)
                except BaseException:
                    state.rollback(tx)
                    raise
                if self._memory is not None:
                    self._commit_now(tx, self._memory)
                elif self._submit is None:
                    await self._propose(tx)
                    result = cast("R", restamped(result, tx.restamped))
                else:
                    submission = self._submit_pipelined(tx)
            finally:
                lock.release()
            if submission is not None:
                # The next writers may begin while this commit is on its way to the disk.
                # Once submitted it will be written, so the wait cannot be cancelled (it is
                # short).
                waited = not submission.finished
                if waited:
                    await submission.wait()
                if submission.error is not None:
                    self._undo_uncommitted()
                    raise submission.error
                if waited:
                    if start:
                        self._latencies.add(perf_counter() - start)
                    self._until_schedule = self._schedule_every
                    if tx._on_commit:
                        tx.run_on_commit()
                    return result  # the wait was a schedule point: no other one is needed
            if start:  # Recent.add, inline: this is the memory commit's path
                latencies = self._latencies
                count = latencies.count
                latencies.ring[count & MASK] = perf_counter() - start
                latencies.count = count + 1
            if tx._on_commit:
                tx.run_on_commit()
            self._until_schedule -= 1
            # A lone commit fsynced inline held the thread for the disk: let the other
            # writers in at once, so that their commits share the next fsync.
            if not self._until_schedule or (submission is not None and submission.synced_inline):
                self._until_schedule = self._schedule_every
                await self._cancel_shielded_checkpoint()
            return result
        finally:
            self._updating -= 1

    async def _update_remote(self, fn: Callable[[Tx], R], remote: TransactionalProposer) -> R:
        attempt = 0
        start = perf_counter() if self._timed else 0.0
        while True:
            await self._take_write_lock()
            try:
                tx = self._state.begin(TrackingTx)
                try:
                    result = _run_in_tx(fn, tx)
                except BaseException:
                    self._state.rollback(tx)
                    raise
                written = _written(tx)
                prepared, seen = self._prepare_remote(cast("TrackingTx", tx), remote)
            finally:
                self._write_lock.release()
            if prepared is None:
                await self._checkpoint()
                if start:
                    self._latencies.add(perf_counter() - start)
                tx.run_on_commit()
                return result
            try:
                version = await remote.commit_prepared(prepared)
            except Conflict as conflict:
                if conflict.local:
                    continue
                if attempt == remote.max_retries:
                    await remote.catch_up(self, conflict, 0)
                    raise self._conflict_error(seen, remote.max_retries) from None
                attempt += 1
                self._conflict_retries += 1
                await remote.catch_up(self, conflict, attempt)
                continue
            if self._state.version < version:  # the commit was a checkpoint: no other needed
                await self.wait_for(version)
            if start:
                self._latencies.add(perf_counter() - start)
            tx.run_on_commit()
            return cast("R", restamped(result, self._stamped(written, version)))

    def _stamped(
        self, written: list[tuple[str, Any]], version: Version
    ) -> dict[int, tuple[Any, Any]]:
        """What ``restamped`` takes for objects a transaction wrote, committed at
        ``version``: each stamped with it (as the replication path applies them)."""
        out = {}
        for name, obj in written:
            meta = obj.meta
            if meta.version != version:
                table = self._state.by_name[name].table
                new = table.restamp(obj, Meta(version, meta.created_at, meta.updated_at))
                out[id(obj)] = (obj, new)
        return out

    def _prepare_remote(
        self, tx: TrackingTx, remote: TransactionalProposer
    ) -> tuple[Any, dict[tuple[str, str], Any]]:
        """Hand a finished transaction to the proposer and undo it locally: it comes back
        through the replication path. Returns the prepared request (None if ``tx`` changed
        nothing) and every object ``tx`` saw, for the error if it keeps conflicting."""
        state = self._state
        try:
            changed = any(old is not new for old, new in tx.changes.values())
            prepared = remote.prepare(tx, state.version) if changed else None
        finally:
            seen = {key: entry[0] for key, entry in tx.changes.items()}
            seen.update(tx.reads)
            state.rollback(tx)
        return prepared, seen

    def _conflict_error(self, seen: dict[tuple[str, str], Any], retries: int) -> StoreError:
        """The error once the retries are spent: a SequenceConflict on the first object the
        transaction saw that has changed since."""
        state = self._state
        for (name, id), old in seen.items():
            current = state.by_name[name].rows.get(id)
            if current is not None and current is not old:
                error = SequenceConflict(current, None if old is None else old.meta.version)
                error.add_note(f"watchstore: gave up after {retries} retries")
                return error
        return ProposalFailed(
            f"other writers kept changing what this transaction read; gave up after {retries} "
            "retries"
        )

    def _submit_pipelined(self, tx: Tx) -> Submission | None:
        """Queue ``tx`` with a pipelining proposer; None if it changed nothing."""
        state = self._state
        actions = tx.proposed = tx.actions()
        if not actions:
            state.rollback(tx)
            return None
        assert self._submit is not None
        # The update() calls under way (waiting for the lock or their commit, or about to
        # return): with no other, no commit could share this one's fsync, and the proposer
        # may write it at once; with others, it writes a batch in this thread only if all
        # of them wait for it.
        try:
            return self._submit(actions, self._on_commit, writers=self._updating)
        except BaseException as exc:
            state.rollback(tx)
            failed = _as_proposal_failed(exc)
            if failed is None:
                raise
            raise failed from exc

    async def _take_write_lock(self) -> None:
        """Take the writers' lock (FIFO; uncontended it is one attribute test), as a cancel
        point; StoreClosed if the store is or gets closed meanwhile."""
        self._check_open()
        await self._checkpoint_if_cancelled()
        lock = self._write_lock
        if lock.held:
            await lock.wait_turn()
            if self._closed is not None:
                lock.release()
                self._check_open()
        else:
            lock.held = True

    def _undo_uncommitted(self) -> None:
        """After the proposer failed: undo every transaction it did not commit, newest
        first (later ones were built on the earlier ones)."""
        state = self._state
        while state.pending and not state.pending[-1].committed:
            state.rollback(state.pending[-1])

    async def batch(
        self,
        fn: Callable[[Batch], Awaitable[R]],
        *,
        max_changes: int = MAX_BATCH_CHANGES,
        max_bytes: int | None = None,
    ) -> R:
        """Run ``await fn(batch)``, where ``fn`` calls ``await batch.update(fn2)`` many times.

        The writes are committed in chunks of at most ``max_changes`` changes or
        ``max_bytes`` encoded bytes, and other writers get in between chunks (without
        ``max_bytes``: ``MAX_BATCH_BYTES`` for a store whose proposer encodes its commits, a
        log or etcd, and no byte limit for a store in memory, which encodes nothing). A
        ``batch.update`` whose function raises undoes only its own writes (a savepoint) and
        re-raises. If ``fn`` raises, the open chunk is undone; earlier chunks stay committed
        (``batch.committed`` and ``batch.version`` say how far it got, also in a note on the
        exception).
        """
        self._check_open()
        batch = Batch(self, max_changes, max_bytes)
        task = self._rt.current_task()
        self._batching[task] = batch
        try:
            result = await fn(batch)
            await batch.flush()
        except BaseException as exc:
            batch._abort()
            if isinstance(exc, Exception):
                exc.add_note(
                    f"watchstore batch: {batch.committed} changes were committed before this "
                    f"error (up to {batch.version!r}); the rest were undone"
                )
            raise
        finally:
            del self._batching[task]
        return cast("R", restamped(result, batch._restamped))

    async def replace_all(self, objects: Iterable[Any]) -> int:
        """Make the store's content exactly ``objects`` in one commit (SwarmKit's
        ``Restore``); return how many objects changed.

        Objects whose id is new are created, those differing from the stored one in a field
        other than ``meta`` are updated, stored objects not given are deleted, and the rest
        are left alone: watchers see ``Created``/``Updated``/``Deleted`` for the difference
        only, then one ``Committed``. Every object is checked as ``create`` checks it
        before anything changes (InvalidObject; two of one table with the same id too).
        Errors and cancellation are as for :meth:`update`.
        """
        given = list(objects)
        return await self.update(lambda tx: replace_content(tx, given))

    async def _propose(self, tx: Tx) -> int:
        """Propose ``tx``; undo it if it does not commit. Returns how many actions it had."""
        state = self._state
        actions = tx.proposed = tx.actions()
        if not actions:
            state.rollback(tx)  # nothing to commit; release its place in the pipeline
            return 0
        try:
            await self._proposer.propose_value(actions, self._on_commit)
        except BaseException as exc:
            if tx.committed:
                raise
            self._undo_uncommitted()
            failed = _as_proposal_failed(exc)
            if failed is None:
                raise
            raise failed from exc
        if not tx.committed:
            self._undo_uncommitted()
            raise ProposalFailed("the proposer returned without committing the change")
        return len(actions)

    def _commit_now(self, tx: Tx, proposer: CommitsAtOnce) -> None:
        """``_propose`` for the default MemoryProposer, which commits at once: no coroutine,
        and a transaction that changed one object publishes it without building its
        StoreAction and Change unless a watcher wants them."""
        changes = tx.changes
        if len(changes) != 1:
            actions = tx.actions()
            if not actions:
                self._state.rollback(tx)
                return
            self._committed(self._state.commit(tx, proposer.advance(tx.version), actions))
            return
        for (table, _id), entry in changes.items():
            if entry[0] is entry[1]:  # created and deleted again
                self._state.rollback(tx)
                return
            version = proposer.advance(tx.version)
            try:
                self._state.finish(tx, version)
            except BaseException:  # only a broken invariant: leave nothing half-applied
                self._undo_uncommitted()
                raise
            self._hub.publish_one(version, table, entry[0], entry[1])
            if self._waiters:
                self._wake_waiters(version.index)

    def _on_commit(self, version: Version) -> None:
        """The proposer's ``commit`` callback.

        Commits arrive in proposal order, so each one commits the oldest pending transaction.
        """
        state = self._state
        tx = state.pending[0]
        self._committed(state.commit(tx, version, tx.proposed))

    def _committed(self, change: Change) -> None:
        self._hub.publish(change)
        if self._waiters:
            self._wake_waiters(change.version.index)

    def _wake_waiters(self, index: int) -> None:
        """Wake the ``wait_for`` callers waiting for version ``index`` or an older one."""
        waiters = self._waiters
        while waiters and waiters[0][0] <= index:
            heapq.heappop(waiters)[2].set()

    # -- lifecycle ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed is not None:
            raise StoreClosed("the store is closed; open it again with open_store()") from (
                self._closed if isinstance(self._closed, StoreError) else None
            )

    async def compact(self, *, keep: int | None = None) -> Version:
        """Write the current state as a new epoch of the log and retire older segments,
        keeping ``keep`` epochs (default: ``keep_epochs`` of ``open_store``); returns the
        snapshot's version once the new epoch is complete on disk (written, fsynced,
        renamed, the directory fsynced). Writers go on meanwhile: the snapshot is pinned in
        O(1) and written by a forked child process (or encoded in chunks with checkpoints
        between them, and written in a worker thread). A compaction under way (the
        automatic one, say) is waited for first. CompactionFailed names the cause if it
        fails; the store then goes on with its current epoch, writable, nothing lost.
        StoreError if the store's proposer keeps no epochs (see ``core.proposer.Compacting``)."""
        self._check_open()
        proposer = self._proposer
        if not isinstance(proposer, Compacting):
            raise StoreError("only a store opened with path= has a log to compact")
        return await proposer.compact(self, keep)

    def _restore(self, loaded: Loaded) -> None:
        """Load what the proposer started from: a snapshot and the changes after it, the
        tables in bulk; each change is then published as a commit, so it is in the history
        for ``watch_from``."""
        state = self._state
        committed = restore_tables(state.by_name, loaded.objects, loaded.changes)
        state.version = loaded.version
        self._hub.floor = loaded.snapshot_version
        for change in committed:
            self._committed(change)
        self._hub.commits = 0  # statistics count the commits made since the store opened

    # -- what a proposer uses (core.proposer.Host) -------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the store is closed."""
        return self._closed is not None

    def pin(self) -> Snapshot:
        """A snapshot of the committed state, for a proposer (``snapshot()`` without the
        check that the store is open: a compaction may finish as the store closes)."""
        return self._state.pin()

    async def apply_remote(self, build: Callable[[StoreState], Sequence[Change]]) -> None:
        """Apply the changes ``build`` makes from the committed state, under the writers'
        lock (a batch may hold a transaction open across awaits), and publish them: the
        replication path of a proposer whose commits are made elsewhere."""
        await self._take_write_lock()
        try:
            for change in build(self._state):
                self._apply_replicated(change)
        finally:
            self._write_lock.release()

    def _apply_replicated(self, change: Change) -> None:
        """Apply a change committed elsewhere (the replication path) and publish it."""
        self._committed(self._state.apply(change))

    # -- watches -----------------------------------------------------------------------------

    # Up to three specifiers of different classes type the events with their union (an
    # on_commit() adds none); more than that, with the classes' common base.
    @overload
    def watch(
        self, a: Spec[A], b: Spec[B], /, *, queue: int = ...
    ) -> AbstractAsyncContextManager[Watch[Event[A | B]]]: ...
    @overload
    def watch(
        self, a: Spec[A], b: Spec[B], c: Spec[C], /, *, queue: int = ...
    ) -> AbstractAsyncContextManager[Watch[Event[A | B | C]]]: ...
    @overload
    def watch(
        self, *specs: Spec[ObjT], queue: int = ...
    ) -> AbstractAsyncContextManager[Watch[Event[ObjT]]]: ...
    @asynccontextmanager
    async def watch(
        self, *specs: Spec[Any], queue: int = DEFAULT_QUEUE
    ) -> AsyncIterator[Watch[Event[Any]]]:
        """Watch the events of every commit from now on that ``specs`` select.

        ``async with store.watch(ws.on(Task, node_id="n1")) as events: async for ev in
        events: ...``. No specifier selects every object event and every ``Committed``.
        At most ``queue`` events wait; beyond that the watch raises WatchOverflow.
        """
        self._check_open()
        check_specs(specs, self._classes)
        watch: Watch[Event[Any]] = Watch(self._hub, queue, self._rt)
        self._hub.subscribe(watch, specs, changes=False)
        try:
            await self._checkpoint()
            yield watch
        finally:
            self._hub.unsubscribe(watch)

    # Up to three specifiers of different classes type the events with their union (an
    # on_commit() adds none); more than that, with the classes' common base.
    @overload
    def view_and_watch(
        self, fn: Callable[[ReadTx], R], a: Spec[A], b: Spec[B], /, *, queue: int = ...
    ) -> AbstractAsyncContextManager[tuple[R, Watch[Event[A | B]]]]: ...
    @overload
    def view_and_watch(
        self, fn: Callable[[ReadTx], R], a: Spec[A], b: Spec[B], c: Spec[C], /, *, queue: int = ...
    ) -> AbstractAsyncContextManager[tuple[R, Watch[Event[A | B | C]]]]: ...
    @overload
    def view_and_watch(
        self, fn: Callable[[ReadTx], R], *specs: Spec[ObjT], queue: int = ...
    ) -> AbstractAsyncContextManager[tuple[R, Watch[Event[ObjT]]]]: ...
    @asynccontextmanager
    async def view_and_watch(
        self, fn: Callable[[ReadTx], R], *specs: Spec[Any], queue: int = DEFAULT_QUEUE
    ) -> AsyncIterator[tuple[R, Watch[Event[Any]]]]:
        """Run ``fn`` on the committed state and watch every commit after it, atomically.

        The watch yields exactly the events of the commits after the state ``fn`` saw: none
        missing, none twice. ``fn`` runs synchronously, like ``view``.
        """
        self._check_open()
        check_specs(specs, self._classes)
        result = self.view(fn)
        watch: Watch[Event[Any]] = Watch(self._hub, queue, self._rt)
        self._hub.subscribe(watch, specs, changes=False)  # no await since the view
        try:
            await self._checkpoint()
            yield result, watch
        finally:
            self._hub.unsubscribe(watch)

    # Up to three specifiers of different classes type the events with their union (an
    # on_commit() adds none); more than that, with the classes' common base.
    @overload
    def watch_from(
        self, version: Version, a: Spec[A], b: Spec[B], /, *, queue: int = ...
    ) -> AbstractAsyncContextManager[Watch[Event[A | B]]]: ...
    @overload
    def watch_from(
        self, version: Version, a: Spec[A], b: Spec[B], c: Spec[C], /, *, queue: int = ...
    ) -> AbstractAsyncContextManager[Watch[Event[A | B | C]]]: ...
    @overload
    def watch_from(
        self, version: Version, *specs: Spec[ObjT], queue: int = ...
    ) -> AbstractAsyncContextManager[Watch[Event[ObjT]]]: ...
    @asynccontextmanager
    async def watch_from(
        self, version: Version, *specs: Spec[Any], queue: int = DEFAULT_QUEUE
    ) -> AsyncIterator[Watch[Event[Any]]]:
        """Replay the selected events of every commit after ``version``, then go live.

        Recent history comes from memory, older from the proposer's ``changes_between``;
        raises HistoryCompacted(oldest, current) when it is gone.
        """
        async with self._watch_from(version, specs, queue, as_changes=False) as watch:
            yield watch

    @asynccontextmanager
    async def _watch_from(
        self, version: Version, specs: Sequence[Spec[Any]], queue: int, *, as_changes: bool
    ) -> AsyncIterator[Watch[Any]]:
        self._check_open()
        check_specs(specs, self._classes)
        if version > self.version:
            raise InvalidQuery(
                f"watch_from({version!r}): the store is at {self.version!r}, so there is no "
                f"{version!r} to resume after yet; await store.wait_for(version) first, or "
                "watch_from a version the store has seen"
            )
        hub = self._hub
        watch: Watch[Any] = Watch(hub, queue, self._rt)
        hub.subscribe(watch, specs, changes=as_changes)
        try:
            current = self.version
            replay = hub.replay_from(version)  # no await since subscribing: nothing missed
            if replay is None:
                floor = hub.floor
                replay = hub.replay_from(floor) or []
                try:
                    older = await self._proposer.changes_between(version, floor)
                except HistoryCompacted as gone:
                    # Resumable from whichever reaches further back: the proposer or memory.
                    raise HistoryCompacted(min(gone.oldest, floor), current) from None
                replay = [*older, *replay]
            else:
                await self._checkpoint()
            items, failed = replay_items(replay, specs, as_changes=as_changes)
            watch._replay.extend(items)
            if failed is not None:
                watch._fail(failed)
            yield watch
        finally:
            hub.unsubscribe(watch)

    @asynccontextmanager
    async def fork(
        self, *, queue: int = DEFAULT_QUEUE, history: int = DEFAULT_HISTORY
    ) -> AsyncIterator[Replica]:
        """Start an in-process read-only replica of this store, kept in sync until exit.

        The replica starts at the current version without copying objects (they are frozen
        and shared) and follows every commit; if it falls more than ``queue`` commits behind
        it catches up from a fresh snapshot (``replica.resyncs`` counts that).
        """
        self._check_open()
        with lone_errors_unwrapped():
            async with anyio.create_task_group() as task_group:
                replica = Replica(self.schema, _NoProposer(), task_group, history=history)
                watch: Watch[Change] = Watch(self._hub, queue, self._rt)
                replica._feed = watch
                snapshot = self._state.pin()
                self._hub.subscribe(watch, (), changes=True)  # same step as the pin
                try:
                    await replica._load(snapshot)
                    replica.spawn(replica._follow, self, watch, queue)
                    yield replica
                finally:
                    self._hub.unsubscribe(watch)
                    replica._close()  # no await here: an error of the block must not be masked

    # -- lifecycle ---------------------------------------------------------------------------

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``await fn(*args)`` in the store's task group until it returns or the store
        closes (its proposer's background work runs so). An exception it raises closes the
        store and leaves its ``async with`` block.

        Each task gets a cancel scope of its own: cancelling the task group's scope would
        also cancel the body of the ``async with`` that opened the store.
        """
        scope = anyio.CancelScope()
        self._task_scopes.add(scope)

        async def run() -> None:
            try:
                with scope:
                    await fn(*args)
            except Exception as exc:
                # Once the store has closed, what a task still raises is a consequence of
                # the close, not its cause: a task woken in the step the store closed meets
                # StoreClosed before its cancellation, or fails together with it (an etcd
                # watch whose revision was compacted meanwhile). That ends the task.
                if self._closed is None:
                    raise
                log.debug("a task of the closed store ended with %r", exc)
            finally:
                self._task_scopes.discard(scope)

        self._task_group.start_soon(run)

    def _close(self) -> None:
        """Close without waiting: fail watchers, wake waiters, cancel background tasks."""
        if self._closed is None:
            self._closed = StoreClosed("closed")
            self._hub.close(StoreClosed("the store was closed while watching"))
        for _index, _id, event in self._waiters:
            event.set()
        self._waiters.clear()
        for scope in list(self._task_scopes):
            scope.cancel()

    async def aclose(self) -> None:
        """Close the store: later operations raise StoreClosed; waiters and watchers are
        woken (watchers raise StoreClosed); background tasks are cancelled."""
        self._close()
        await self._checkpoint()


class Batch:
    """Handed to the function of :meth:`Store.batch`; commits its writes in chunks."""

    def __init__(self, store: Store, max_changes: int, max_bytes: int | None) -> None:
        if max_changes < 1 or (max_bytes is not None and max_bytes < 1):
            raise ValueError("batch limits must be positive")
        self._store = store
        self._tx: Tx | None = None
        self._bytes = 0
        self._max_changes = max_changes
        self._max_bytes = MAX_BATCH_BYTES if max_bytes is None else max_bytes
        self.committed = 0
        """How many changes this batch has committed so far."""
        self.version: Version | None = None
        """The version of this batch's last commit (None before the first)."""
        self._restamped: dict[int, tuple[Any, Any]] = {}  # see ``restamped``
        # The default byte limit bounds what a proposer encodes for one commit (a log
        # record, an etcd request): a store in memory encodes nothing, and sizing every
        # object in JSON would cost its bulk loads a quarter of their time.
        self._count_bytes = max_bytes is not None or store._memory is None

    async def update(self, fn: Callable[[Tx], R]) -> R:
        """Run ``fn(tx)`` as part of the batch; if it raises, undo its writes and re-raise."""
        tx = self._tx
        if tx is None:
            tx = await self._begin()
        undo = tx._undo
        mark = len(undo)  # tx.savepoint(), without building it unless fn raises
        callbacks = len(tx._on_commit)
        try:
            result = fn(tx)
            if type(result) not in _NOT_AWAITABLE:  # _run_in_tx, without the call
                _check_result(result)
        except BaseException:
            tx.rollback_to(Savepoint(mark, callbacks))
            raise
        store = self._store
        remote = store._remote
        if remote is not None and mark:
            try:
                remote.prepare(cast("TrackingTx", tx), store._state.version)
            except TransactionTooLarge:  # the chunk is full: commit it, then run fn again
                tx.rollback_to(Savepoint(mark, callbacks))
                await self.flush()
                return await self.update(fn)
        if self._count_bytes:
            for table, id, _old, _opened in undo[mark:]:
                new = table.rows.get(id)
                if new is not None:
                    self._bytes += encoded_size(new)
            if self._bytes >= self._max_bytes:
                await self.flush()
                return result
        if len(tx.changes) >= self._max_changes:
            await self.flush()
        return result

    async def _begin(self) -> Tx:
        """Open the next chunk's transaction, under the writers' lock."""
        store = self._store
        await store._take_write_lock()
        tx = self._tx = store._state.begin(Tx if store._remote is None else TrackingTx)
        self._bytes = 0
        return tx

    async def flush(self) -> None:
        """Commit the open chunk now (the batch does this itself when a chunk is full)."""
        tx = self._tx
        if tx is None:
            return
        store = self._store
        if store._remote is not None:
            await self._flush_remote(tx, store._remote)
            return
        try:
            count = await store._propose(tx)
            if count:
                self.committed += count
                self.version = store.version
            if tx.restamped:
                self._restamped.update(tx.restamped)
        finally:
            self._tx = None
            store._write_lock.release()
        tx.run_on_commit()
        await store._cancel_shielded_checkpoint()

    async def _flush_remote(self, tx: Tx, remote: TransactionalProposer) -> None:
        store = self._store
        self._tx = None
        count = len(tx.actions())
        written = _written(tx)
        try:
            prepared, seen = store._prepare_remote(cast("TrackingTx", tx), remote)
        finally:
            store._write_lock.release()
        if prepared is not None:
            try:
                version = await remote.commit_prepared(prepared)
            except Conflict as conflict:  # a batch cannot re-run what it already returned
                await remote.catch_up(store, conflict, 0)
                raise store._conflict_error(seen, 0) from None
            await store.wait_for(version)
            self.committed += count
            self.version = version
            self._restamped.update(store._stamped(written, version))
        tx.run_on_commit()
        await store._checkpoint()

    def _abort(self) -> None:
        tx = self._tx
        if tx is not None:
            self._tx = None
            state = self._store._state
            if state.pending and state.pending[-1] is tx:
                state.rollback(tx)
            self._store._write_lock.release()


class WriteLock:
    """The writers' lock: FIFO-fair, and taking it uncontended is one attribute test.

    The holder sets ``held``; others ``await wait_turn()``, and ``release`` hands the lock
    straight to the longest waiter, so nobody can barge in between.
    """

    __slots__ = ("_lot", "held", "waiting")

    def __init__(self, lot: _runtime.Lot | None = None) -> None:
        self.held = False
        self.waiting = 0  # tasks in wait_turn: an int test, not the lot's __bool__ call
        self._lot = _runtime.current().lot() if lot is None else lot

    async def wait_turn(self) -> None:
        """Wait until the lock is handed to this task (cancellable while waiting; once it
        is handed over, the task takes it, and a cancellation comes at its next
        checkpoint)."""
        self.waiting += 1
        try:
            await self._lot.park()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        """Release the lock, handing it to the longest waiter if there is one.

        A waiter counts in ``waiting`` until it runs again; one cancelled meanwhile has
        already left the lot, so ``unpark`` may find nobody, and then the lock is free."""
        if not (self.waiting and self._lot.unpark()):
            self.held = False


def _run_in_tx(fn: Callable[[Tx], R], tx: Tx) -> R:
    """Run a transaction function, refusing an async one (its writes would run later)."""
    result = fn(tx)
    if type(result) not in _NOT_AWAITABLE:
        _check_result(result)
    return result


# Result types seen without ``__await__``: a set test costs a seventh of ``hasattr``, which
# builds and drops an AttributeError for every type that lacks the attribute. Cleared when
# full, so classes made on the fly cannot pile up.
_NOT_AWAITABLE: set[type] = {type(None)}
_NOT_AWAITABLE_MAX: Final = 256


def _check_result(result: object) -> None:
    """Raise if a transaction function returned an awaitable; else remember its type."""
    cls = type(result)
    if not hasattr(cls, "__await__"):
        if len(_NOT_AWAITABLE) >= _NOT_AWAITABLE_MAX:
            _NOT_AWAITABLE.clear()
            _NOT_AWAITABLE.add(type(None))
        _NOT_AWAITABLE.add(cls)
        return
    close = getattr(result, "close", None)
    if close is not None:
        close()  # never started: no "coroutine was never awaited" warning
    raise TypeError(
        "transaction functions are synchronous (this one returned a coroutine); do the "
        "awaiting before view() or update(), or between the batch.update() calls of "
        "store.batch()"
    )


def _as_proposal_failed(exc: BaseException) -> ProposalFailed | None:
    """The ProposalFailed (outcome unknown) to raise for a proposer's error, or None to
    re-raise it as it is (store errors, cancellation)."""
    if isinstance(exc, Exception) and not isinstance(exc, StoreError):
        return ProposalFailed(f"proposal failed, outcome unknown: {exc!r}")
    return None


@asynccontextmanager
async def open_store(
    schema: Schema,
    *,
    path: str | os.PathLike[str] | None = None,
    proposer: Proposer | None = None,
    durability: Durability = "always",
    compact_bytes: int = 64 << 20,
    keep_epochs: int = 2,
    compact_in_child: bool = True,
    salvage: bool = False,
    key: bytes | None = None,
    history: int = DEFAULT_HISTORY,
    history_bytes: int = DEFAULT_HISTORY_BYTES,
    schedule_every: int = SCHEDULE_EVERY,
    etcd: Sequence[str] | None = None,
    prefix: str = "watchstore",
    statistics: bool = True,
) -> AsyncIterator[Store]:
    """Open a store of ``schema`` for the duration of an ``async with`` block.

    With ``path``, the store is durable: an epoch log in that directory (created if needed)
    is restored on open and every commit is appended to it (``durability`` says when appends
    are fsynced; see :data:`Durability`); once the current epoch holds ``compact_bytes`` of
    changes, the store compacts in the background, keeping ``keep_epochs`` epochs; with
    ``compact_in_child`` (the default, where ``os.fork`` exists) a forked child process
    encodes and writes the snapshot, so compaction takes no CPU from this process. A damaged
    log raises LogCorrupt; with ``salvage=True`` it opens with the valid prefix instead and
    ``store.recovery.salvage`` reports exactly which versions were lost. With ``key`` (16,
    24 or 32 bytes) a new log is encrypted at rest (AES-GCM; needs ``pip install
    "watchstore[encryption]"``) and an existing one must be opened with its key. Without
    one, the store lives in memory
    (:class:`MemoryProposer`), unless another ``proposer`` is given. ``history`` recent
    commits are kept in memory for ``watch_from``, holding at most about ``history_bytes``
    of objects (older ones are read back from the log, where there is one).
    ``schedule_every`` says how often an ``update`` that did not wait lets other tasks run
    (see :meth:`Store.update`). ``store.statistics()`` reports the store's counters and
    recent latencies; ``statistics=False`` leaves out the one thing timed per ``update()``,
    its latency (two ``perf_counter()`` calls), and keeps the counters. The
    store owns a task group for its proposer's background work; leaving the block closes it (and
    the log). It runs under ``trio.run``, ``asyncio.run`` and ``anyio.run`` alike.

    With ``etcd`` (endpoints such as ``["http://127.0.0.1:2379"]``) several processes share
    the store through an etcd cluster under the key ``prefix`` (see :class:`EtcdProposer`;
    needs ``pip install "watchstore[etcd]"``): the store lists the prefix, then follows it
    with a watch, and commits each transaction as one etcd txn.

    ``path=...`` is ``proposer=LogProposer(path, ...)`` and ``etcd=...`` is
    ``proposer=EtcdProposer(etcd, prefix)``; any other :class:`Proposer` may be given (see
    ``core.proposer`` for the capabilities it may declare).
    """
    if not isinstance(schema, Schema):
        raise TypeError(
            f"open_store takes a ws.Schema first, not {schema!r:.80}: "
            "ws.open_store(ws.Schema(ws.Table(Task)), ...)"
        )
    if sum(x is not None for x in (path, proposer, etcd)) > 1:
        raise ValueError("open_store takes one of path=, proposer= or etcd=")
    _runtime.current()  # outside an event loop (or on another), say so before anything
    if etcd is not None:
        with _needs_extra("etcd"):
            from ..etcd.proposer import EtcdProposer

            proposer = EtcdProposer(etcd, prefix)
    elif path is not None:
        proposer = LogProposer(
            path,
            durability=durability,
            compact_bytes=compact_bytes,
            keep_epochs=keep_epochs,
            compact_in_child=compact_in_child,
            salvage=salvage,
            key=key,
        )
    elif proposer is None:
        proposer = MemoryProposer()
    lifecycle = proposer if isinstance(proposer, Lifecycle) else None
    try:
        loaded = None if lifecycle is None else await lifecycle.open(schema)
        with lone_errors_unwrapped():
            async with anyio.create_task_group() as task_group:
                store = Store(
                    schema,
                    proposer,
                    task_group,
                    history=history,
                    history_bytes=history_bytes,
                    schedule_every=schedule_every,
                    statistics=statistics,
                )
                try:
                    if loaded is not None:
                        store._restore(loaded)
                        store.recovery = loaded.recovery
                        loaded = None  # not kept alive for the store's life by this frame
                    if lifecycle is not None:
                        await lifecycle.start(store)
                    yield store
                finally:
                    store._close()  # no await here: an error of the block must not be masked
    finally:
        if lifecycle is not None:
            with anyio.CancelScope(shield=True):
                await lifecycle.aclose()


def _written(tx: Tx) -> list[tuple[str, Any]]:
    """(table name, object) for every object ``tx`` wrote (created or updated)."""
    return [
        (name, new)
        for (name, _id), (old, new) in tx.changes.items()
        if new is not None and new is not old
    ]


def restamped(result: Any, stamped: dict[int, tuple[Any, Any]] | None) -> Any:
    """``result`` (what a transaction's function returned) with every object the transaction
    wrote replaced by that object as committed, stamped with the version the proposer chose
    (which may not be the one predicted: versions may skip); in lists, tuples, sets and
    dict values too."""
    if not stamped:
        return result
    found = stamped.get(id(result))
    if found is not None and found[0] is result:
        return found[1]
    kind = type(result)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return kind(restamped(value, stamped) for value in result)
    if kind is dict:
        return {key: restamped(value, stamped) for key, value in result.items()}
    return result


@contextmanager
def _needs_extra(extra: str) -> Iterator[None]:
    """A missing optional dependency, said as what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"this needs watchstore's {extra!r} extra ({exc.name} is not installed): "
            f'pip install "watchstore[{extra}]"'
        ) from exc


@contextmanager
def lone_errors_unwrapped() -> Iterator[None]:
    """Re-raise a lone error of the store's task group as itself, not as a group of one.

    The body of ``async with open_store(...)`` runs inside the store's task group, which wraps
    whatever it raises in an ExceptionGroup; callers should get their own exception back.
    Several errors at once stay a group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            inner = group.exceptions[0]
            raise inner from inner.__cause__
        raise


# -- replicas --------------------------------------------------------------------------------------
#
# In-process read replicas (``store.fork()``) that follow a store through its changes.
#
# A replica is a read-only :class:`Store` with tables of its own. It starts from an O(1)
# snapshot pinned in the same synchronous step as subscribing to the source's changes, so it
# neither misses nor doubles a commit; it loads the snapshot in chunks, yielding to other tasks,
# then applies each change through the replication path, which publishes it to the replica's
# own watchers. If it falls behind (its queue overflows) it re-pins, and applies the difference
# between its state and the new snapshot as one change. Objects are shared, never copied: they
# are frozen.

LOAD_CHUNK: Final = 5_000
"""Objects loaded between two checkpoints while a replica starts."""


class _NoProposer:
    """A replica commits only what its source committed: it proposes nothing."""

    def __init__(self) -> None:
        self._version = ORIGIN

    async def propose_value(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None]
    ) -> Version:
        raise StoreError("a replica is read-only; write to the store it was forked from")

    def get_version(self) -> Version:
        return self._version

    async def changes_between(self, start: Version, end: Version) -> Sequence[Change]:
        raise HistoryCompacted(end, end)


class Replica(Store):
    """A read-only, in-process copy of a store, kept in sync; from ``store.fork()``.

    ``view``, ``snapshot``, ``watch``, ``view_and_watch``, ``watch_from`` and
    ``wait_for(version)`` work as on the source; versions are the source's. ``resyncs``
    counts how often it fell behind and caught up from a new snapshot; ``statistics()``
    reports it, and ``lag``: the source's commits it has not applied yet.
    """

    resyncs: int = 0
    _feed: Watch[Change] | None = None  # the source's changes, as they wait to be applied

    def _lag(self) -> int:
        feed = self._feed
        return 0 if feed is None else feed.pending()

    def _resyncs(self) -> int:
        return self.resyncs

    async def update(self, fn: Callable[[Tx], R]) -> R:
        """Replicas are read-only: raises StoreError."""
        raise StoreError("a replica is read-only; write to the store it was forked from")

    async def batch(
        self,
        fn: Callable[[Batch], Awaitable[R]],
        *,
        max_changes: int = 0,
        max_bytes: int | None = None,
    ) -> R:
        """Replicas are read-only: raises StoreError."""
        raise StoreError("a replica is read-only; write to the store it was forked from")

    async def _load(self, snapshot: Snapshot) -> None:
        state = self._state
        count = 0
        for table in self.schema.tables:
            live = state.tables[table.cls]
            for obj in snapshot.all(table.cls):
                live.write(obj.id, None, obj)
                count += 1
                if count % LOAD_CHUNK == 0:
                    await self._checkpoint()
        state.version = snapshot.version
        self._hub.floor = snapshot.version
        snapshot.close()

    async def _follow(self, source: Store, watch: Watch[Change], queue: int) -> None:
        self._feed = watch
        try:
            while True:
                try:
                    change = await watch.receive()
                except WatchOverflow:
                    self.resyncs += 1
                    source._hub.unsubscribe(watch)
                    watch = self._feed = Watch(source._hub, queue, self._rt)
                    with source._state.pin() as snapshot:
                        source._hub.subscribe(watch, (), changes=True)  # same step as pin
                        self._resync(snapshot)
                    continue
                except StoreClosed:
                    await self.aclose()
                    return
                self._apply_replicated(change)
        finally:
            source._hub.unsubscribe(watch)

    def _resync(self, snapshot: Snapshot) -> None:
        theirs = {t.name: {obj.id: obj for obj in snapshot.all(t.cls)} for t in self.schema.tables}
        actions = difference(self._state, theirs)
        if snapshot.version > self.version:
            self._apply_replicated(Change(snapshot.version, actions))
