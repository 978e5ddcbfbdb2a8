"""LogProposer: commits through the epoch log with group commit, and its durability modes.

``submit`` queues a commit synchronously; the committer task writes everything queued with
one write and one fsync, then commits the batch in order through the store's callback, so
concurrent writers share fsyncs. A write that every writer under way waits for (a lone
commit, which nothing could share an fsync with, or a batch holding every writer's commit) is
written in the event loop's thread, as sqlite does: nothing else of the store could go on
meanwhile, and a worker thread's round trip costs about as much as a fast disk's fsync.
Other batches are written in a worker thread, so the writers not in them go on. No write
blocks the event loop's thread once the last one took longer than ``inline_write_limit``: a
slow disk must not stall the other tasks.
Compaction hands the committer a prepared epoch to switch to between two batches (see
``log.epochlog.EpochLog.switch``).
"""

from __future__ import annotations

import functools
import logging
import os
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import anyio
import attrs

from .. import _runtime
from ..core.errors import CompactionFailed, InvalidObject, ProposalFailed
from ..core.model import Change, StoreAction, Version, new_version
from ..core.proposer import Loaded
from ..core.statistics import EMPTY, ProposerStatistics, Recent
from .compaction import write_epoch_in_child, write_epoch_inline
from .epochlog import EpochLog
from .files import reason

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator, Sequence

    from ..core.proposer import Host
    from ..core.schema import Schema
    from ..core.state import Snapshot
    from .epochlog import PreparedEpoch, Tail

T = TypeVar("T")

logger = logging.getLogger("watchstore")
"""Where the log reports what no caller is waiting for (a failed automatic compaction)."""

Durability = Literal["always", "interval", "none"]
"""When appends reach the disk: ``always`` fsyncs each commit before acknowledging it (the
default; nothing acknowledged is lost); ``interval`` fsyncs at most every ``sync_interval``
seconds (a crash loses at most that window of acknowledged commits); ``none`` leaves it to
the operating system (a crash of the machine can lose anything not yet written back)."""


INLINE_WRITE_LIMIT: Final = 0.002
"""Seconds: while the last append (write plus fsync) took at most this, one that every writer
under way waits for is written in the event loop's thread, blocking it (see the module's
docstring)."""
COMPACTION_RETRY: Final = 1.0
"""Seconds before the automatic compaction tries again after a failure (then doubled)."""
COMPACTION_RETRY_MAX: Final = 300.0
"""The longest wait between two attempts of a failing automatic compaction."""


class Submission:
    """A commit waiting for the group committer: ``finished`` once it is durable (and
    committed) or failed (``error``); ``await wait()`` until then."""

    __slots__ = (
        "_waiter",
        "actions",
        "body",
        "commit",
        "error",
        "finished",
        "synced_inline",
        "version",
    )

    def __init__(self, version: Version, body: bytes, commit: Callable[[Version], None]) -> None:
        self.version = version
        self.body = body
        self.actions: Sequence[StoreAction] = ()
        """Kept while a compaction runs: its tail may need them in another format."""
        self.commit = commit
        self.finished = False
        self.error: BaseException | None = None
        self._waiter: _runtime.Waiter | None = None  # set when it is queued
        self.synced_inline = False
        """True if ``submit`` wrote and fsynced it at once, blocking the calling thread."""

    def wait(self) -> Awaitable[None]:
        """Await it: returns once the commit is durable or failed. Not cancellable: once
        submitted, a commit will be written, and a cancelled caller must not undo locally a
        change about to commit (the wait is one fsync; a cancellation comes at the next
        checkpoint). Returns at once, without a schedule point, if it is already finished.
        (The waiter's own coroutine is returned, not wrapped in another: every queued
        commit is awaited this way.)"""
        if self.finished:
            return _FINISHED
        assert self._waiter is not None
        return self._waiter.wait()

    def finish(self, error: BaseException | None = None) -> None:
        """Mark it finished (failed with ``error``) and wake its waiter."""
        self.error = error
        self.finished = True
        if self._waiter is not None:
            self._waiter.wake()


class _Finished:
    """An awaitable that is done at once, without suspending."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that yields nothing


_FINISHED: Final = _Finished()


@attrs.define
class _Switch:
    """A prepared epoch handed to the committer, and how its switch went."""

    epoch: PreparedEpoch
    keep: int
    done: _runtime.Event
    started: bool = False
    error: CompactionFailed | None = None


class LogProposer:
    """Commits through the epoch log in ``path`` (created if needed), with group commit.

    ``open_store(schema, path=p, ...)`` is ``open_store(schema, proposer=LogProposer(p,
    ...))``: the arguments are the same (see :func:`open_store`). Opening restores the log;
    ``submit`` queues a commit and returns at once; the committer task writes everything
    queued with one write and one fsync, then commits the batch in order. So concurrent
    writers share fsyncs: while one batch is on its way to the disk, the next writers'
    commits queue behind it. With ``durability="always"`` a commit is acknowledged only once
    fsynced. Once the current epoch holds ``compact_bytes`` of changes, a compaction starts
    a new epoch in the background, keeping ``keep_epochs``; a failed one is logged on the
    ``watchstore`` logger and tried again after 1 s, 2 s, 4 s ... at most 5 minutes apart.
    """

    log: EpochLog
    """The open log (once the store has opened it)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "always",
        compact_bytes: int = 64 << 20,
        keep_epochs: int = 2,
        compact_in_child: bool = True,
        salvage: bool = False,
        key: bytes | None = None,
        sync_interval: float = 0.05,
    ) -> None:
        if keep_epochs < 1:
            raise ValueError(f"keep_epochs must be at least 1, got {keep_epochs}")
        self.path = path
        self.durability = durability
        self.compact_bytes = compact_bytes
        """Start a new epoch once the current one holds this many bytes of changes."""
        self.keep_epochs = keep_epochs
        self.compact_in_child = compact_in_child and hasattr(os, "fork")
        self._salvage = salvage
        self._key = key
        self.sync_interval = sync_interval
        self._version = Version(0)
        self._reshaped = False
        self._dirty = False
        self._queue: list[Submission] = []
        self._writing = False  # the committer is writing a batch (or switching segments)
        # While compacting: the bodies of the commits made meanwhile (those after the
        # snapshot are copied into the new segment at the switch), and the switch the
        # committer must make; one compaction at a time.
        self._compacting = False
        self._tail: list[Tail] = []
        self._switch: _Switch | None = None
        self.inline_write_limit = INLINE_WRITE_LIMIT
        """Seconds; see ``INLINE_WRITE_LIMIT``."""
        self.last_write = 0.0
        """Seconds the last append took, in whichever thread wrote it."""
        self._writers = 0  # writers under way at the last submit
        # What statistics() reports (core.proposer.Instrumented).
        self._groups = Recent()  # commits per write to the log
        self._compactions = 0
        self._compaction_failures = 0
        self._last_compaction: float | None = None

    # -- lifecycle (core.proposer.Lifecycle) -------------------------------------------------

    async def open(self, schema: Schema) -> Loaded:
        """Open and restore the log (in a worker thread); return what it holds."""
        rt = self._rt = _runtime.current()
        self._wakeup = rt.event()
        self._due = rt.event()
        self._compaction = anyio.Lock()
        self._schema = schema
        log, restored = await rt.run_in_thread(
            functools.partial(EpochLog.open, self.path, schema, self._salvage, self._key)
        )
        self.log = log
        self._version = restored.version
        self._reshaped = restored.reshaped
        return Loaded(
            restored.snapshot_version, restored.objects, restored.changes, restored.summary()
        )

    async def start(self, host: Host) -> None:
        """Start the committer, the automatic compaction and (with durability "interval")
        the periodic fsync. A store read in another shape than today's classes (an
        upgrade, added defaults) is first rewritten as a new epoch, before anything is
        appended."""
        host.spawn(self._run)
        host.spawn(self._compact_when_due, host)
        if self.durability == "interval":
            host.spawn(self._run_syncer)
        if self._reshaped:
            await self.compact(host)

    async def aclose(self) -> None:
        """Close the log (its lock released; see ``EpochLog.close``)."""
        log = getattr(self, "log", None)
        if log is not None:
            log.close()

    def submit(
        self,
        actions: Sequence[StoreAction],
        commit: Callable[[Version], None],
        *,
        writers: int = 0,
    ) -> Submission:
        """Queue the next commit; its ``commit`` callback runs once it is durable.

        ``writers`` is the number of the store's writers under way, this one included (0 if
        not known). A commit with no other writer under way (1), nothing queued or being
        written, and a last write quicker than ``inline_write_limit`` is written (and
        fsynced) at once in this thread, as sqlite does, and returned finished: handing it
        to a worker thread and waking up for the result costs more than the fsync, and
        nothing could share it. Other tasks
        wait for that one fsync. ProposalFailed if the write fails (the log is then failed
        for good)."""
        log = self.log
        log.check_writable()
        version = new_version(self._version.index + 1)
        try:  # the version is taken only once the record is encoded
            body = log.change_body(version, actions)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidObject(f"a written object does not encode: {exc}") from exc
        self._version = version
        submission = Submission(version, body, commit)
        submission.actions = actions
        self._writers = writers
        if (
            writers == 1
            and not self._queue
            and not self._writing
            and self._switch is None
            and self.last_write <= self.inline_write_limit
        ):
            sync = self.durability == "always"
            try:
                self._append([submission.body], sync, version)
            except ProposalFailed:
                self._version = Version(version.index - 1)
                raise
            submission.synced_inline = sync
            self._written([submission])
            return submission
        submission._waiter = self._rt.waiter()
        self._queue.append(submission)
        self._wakeup.set()
        return submission

    async def propose_value(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None]
    ) -> Version:
        """Commit ``actions`` as the next version (see :class:`Proposer`)."""
        submission = self.submit(actions, commit)
        await submission.wait()
        if submission.error is not None:
            raise submission.error
        return submission.version

    def get_version(self) -> Version:
        """The last version committed through this proposer."""
        return self._version

    async def changes_between(self, start: Version, end: Version) -> Sequence[Change]:
        """The committed changes after ``start`` up to ``end`` (see :class:`Proposer`)."""
        if start >= end:
            return ()
        return await anyio.to_thread.run_sync(self.log.read_changes, start, end)

    async def _run(self) -> None:
        """The group committer: runs until cancelled (started by ``start``)."""
        sync = self.durability == "always"
        try:
            while True:
                await self._wakeup.wait()
                # One scheduling round first: writers that are already runnable (woken by
                # the previous batch) submit now and share this batch's fsync.
                await self._rt.checkpoint()
                self._wakeup = self._rt.event()
                batch, self._queue = self._queue, []
                self._writing = True
                try:
                    if self._switch is not None:
                        await self._make_switch()
                    if not batch:
                        continue
                    bodies = [s.body for s in batch]
                    quick = self.last_write <= self.inline_write_limit
                    if quick and 0 < self._writers <= len(batch):
                        # Every writer under way waits for this write: nothing else of the
                        # store could go on while a worker thread writes it.
                        self._append(bodies, sync, batch[-1].version)
                    else:
                        await self._rt.run_in_thread(
                            functools.partial(self._append, bodies, sync, batch[-1].version)
                        )
                except ProposalFailed as exc:
                    failed, self._queue = [*batch, *self._queue], []
                    for submission in failed:
                        submission.finish(exc)
                    continue
                finally:
                    self._writing = False
                self._written(batch)
        finally:
            # Closing: what was queued was never written, so it is known not to commit.
            closed = ProposalFailed("the store closed before this commit was written")
            for submission in self._queue:
                submission.finish(closed)
            self._queue = []

    def _append(self, bodies: list[bytes], sync: bool, version: Version) -> None:
        """``log.append``, timed into ``last_write``; the group's size is counted."""
        start = perf_counter()
        try:
            self.log.append(bodies, sync, version)
        finally:
            self.last_write = perf_counter() - start
        self._groups.add(len(bodies))

    def statistics(self) -> ProposerStatistics:
        """The log's fsyncs, groups of commits and compactions (see
        ``core.proposer.Instrumented``)."""
        log = getattr(self, "log", None)
        return ProposerStatistics(
            fsyncs=EMPTY if log is None else log.fsyncs.summary(),
            commit_groups=self._groups.summary(),
            compactions=self._compactions,
            compaction_failures=self._compaction_failures,
            last_compaction_seconds=self._last_compaction,
        )

    def _written(self, batch: list[Submission]) -> None:
        """After ``batch`` is in the log: note it for compaction, then commit it in order."""
        if self._compacting:
            self._tail.extend((s.version, s.actions, s.body) for s in batch)
        elif self.compaction_is_due():
            self._due.set()
        self._dirty = self.durability != "always"
        for submission in batch:
            submission.commit(submission.version)
            submission.finish()

    async def compact(self, host: Host, keep: int | None = None) -> Version:
        """Start a new epoch from a snapshot of ``host``, keeping ``keep`` epochs (None:
        ``keep_epochs``); return the snapshot's version once the new epoch is complete
        (written, fsynced, renamed and the directory fsynced). The snapshot is pinned in
        O(1) and written by a forked child process (``compact_in_child``) or encoded in
        chunks here and written in a worker thread; commits go on meanwhile, and the
        committer makes the switch between two batches. One compaction at a time: a second
        caller waits for the first to finish, then makes its own. CompactionFailed if any
        step fails; the current epoch then stays in use and the store writable."""
        keep = self.keep_epochs if keep is None else keep
        if keep < 1:
            raise ValueError("keep must be at least 1")
        write = write_epoch_in_child if self.compact_in_child else write_epoch_inline
        return await self._compact(host.pin, functools.partial(write, schema=self._schema), keep)

    async def _compact(
        self,
        pin: Callable[[], Snapshot],
        write: Callable[[Snapshot, EpochLog], Awaitable[PreparedEpoch]],
        keep: int,
    ) -> Version:
        async with self._compaction:
            start = perf_counter()
            try:
                version = await self._compact_now(pin, write, keep)
            except CompactionFailed:
                self._compaction_failures += 1
                raise
            self._compactions += 1
            self._last_compaction = perf_counter() - start
            return version

    async def _compact_now(
        self,
        pin: Callable[[], Snapshot],
        write: Callable[[Snapshot, EpochLog], Awaitable[PreparedEpoch]],
        keep: int,
    ) -> Version:
        """``_compact``'s work, under its lock."""
        if self.log.failed is not None:
            raise CompactionFailed(
                f"the log failed earlier ({reason(self.log.failed)}); reopen the store"
            )
        # From here on, commits are noted for the new segment's tail: the snapshot
        # pinned below cannot miss one.
        self._compacting = True
        self._tail = []
        try:
            with pin() as snapshot:
                version = snapshot.version
                try:
                    epoch = await write(snapshot, self.log)
                except OSError as exc:
                    raise CompactionFailed(
                        f"writing the new epoch failed: {reason(exc)}; the store goes on "
                        "with its current epoch (nothing is lost)"
                    ) from exc
            await self._switch_to(_Switch(epoch, keep, self._rt.event()))
        finally:
            self._compacting = False
            self._tail = []
        return version

    async def _compact_when_due(self, host: Host) -> None:
        """The automatic compaction: whenever the current epoch outgrows ``compact_bytes``.
        A failure is logged and retried later, with a growing delay; it never reaches the
        store's users (their next explicit ``compact()`` reports its own)."""
        delay = COMPACTION_RETRY
        while True:
            await self.wait_compaction_due()
            try:
                await self.compact(host)
            except CompactionFailed as exc:
                if self.log.failed is not None:
                    logger.error("automatic compaction stopped: %s", exc)
                    return
                logger.warning("automatic compaction failed: %s; retrying in %.0f s", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, COMPACTION_RETRY_MAX)
            else:
                delay = COMPACTION_RETRY
            await self._rt.checkpoint()

    async def _switch_to(self, switch: _Switch) -> None:
        """Hand ``switch`` to the committer and wait for it (CompactionFailed if it failed).
        Cancelled before the committer took it, the prepared epoch is abandoned."""
        self._switch = switch
        self._wakeup.set()
        try:
            await switch.done.wait()
        finally:
            if not switch.started:
                self._switch = None
                self.log.abandon(switch.epoch)
        if switch.error is not None:
            raise switch.error

    async def _make_switch(self) -> None:
        switch = self._switch
        assert switch is not None
        self._switch = None
        switch.started = True
        tail = [t for t in self._tail if t[0] > switch.epoch.version]
        try:
            await self._rt.run_in_thread(
                functools.partial(self.log.switch, switch.epoch, tail, switch.keep)
            )
        except CompactionFailed as exc:
            switch.error = exc
        finally:
            switch.done.set()

    def compaction_is_due(self) -> bool:
        """True once the current epoch holds more than ``compact_bytes`` of changes."""
        return self.log.size - self.log.snapshot_end > self.compact_bytes

    async def wait_compaction_due(self) -> None:
        """Return once a compaction is due (see ``compaction_is_due``)."""
        while not self.compaction_is_due():
            self._due = self._rt.event()
            await self._due.wait()

    async def _run_syncer(self) -> None:
        """For ``durability="interval"``: fsync at most every ``sync_interval`` seconds."""
        while True:
            await anyio.sleep(self.sync_interval)
            if self._dirty:
                self._dirty = False
                await anyio.to_thread.run_sync(self.log.sync)
