"""LogProposer: commits through the epoch log with group commit, and its durability modes.

``submit`` queues a commit synchronously; the ``run`` task writes everything queued with one
write and one fsync, then commits the batch in order through the store's callback, so
concurrent writers share fsyncs. Compaction hands the committer a prepared epoch to switch
to between two batches (see ``_log.EpochLog.switch``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import trio

from ._errors import ProposalFailed, StoreError
from ._log import EpochLog, PreparedEpoch, change_body
from ._model import Change, StoreAction, Version

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

Durability = Literal["always", "interval", "none"]
"""When appends reach the disk: ``always`` fsyncs each commit before acknowledging it (the
default; nothing acknowledged is lost); ``interval`` fsyncs at most every ``sync_interval``
seconds (a crash loses at most that window of acknowledged commits); ``none`` leaves it to
the operating system (a crash of the machine can lose anything not yet written back)."""


class Submission:
    """A commit waiting for the group committer: ``done`` is set once it is durable (and
    committed) or failed (``error``)."""

    __slots__ = ("body", "commit", "done", "error", "version")

    def __init__(self, version: Version, body: bytes, commit: Callable[[Version], None]) -> None:
        self.version = version
        self.body = body
        self.commit = commit
        self.done = trio.Event()
        self.error: BaseException | None = None


class LogProposer:
    """Commits through an :class:`EpochLog` with group commit.

    ``submit`` queues a commit and returns at once; the ``run`` task (started by
    ``open_store``) writes everything queued with one write and one fsync, then commits the
    batch in order. So concurrent writers share fsyncs: while one batch is on its way to the
    disk, the next writers' commits queue behind it. With ``durability="always"`` a commit
    is acknowledged only once fsynced.
    """

    def __init__(
        self,
        log: EpochLog,
        version: Version,
        *,
        durability: Durability = "always",
        sync_interval: float = 0.05,
    ) -> None:
        self.log = log
        self._version = version
        self.durability = durability
        self.sync_interval = sync_interval
        self._dirty = False
        self._queue: list[Submission] = []
        self._wakeup = trio.Event()
        # While compacting: the snapshot's version, and the bodies of later commits (copied
        # into the new segment at the switch); and the switch the committer must make.
        self._compacting: Version | None = None
        self._tail: list[tuple[Version, bytes]] = []
        self._switch: tuple[PreparedEpoch, int, trio.Event] | None = None
        self.compact_bytes = 64 << 20
        """Start a new epoch once the current one holds this many bytes of changes."""
        self.compaction_due = trio.Event()

    def submit(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None]
    ) -> Submission:
        """Queue the next commit; its ``commit`` callback runs once it is durable."""
        if self.log.failed is not None:
            raise ProposalFailed(f"the log failed earlier ({self.log.failed!r}); reopen the store")
        version = self._version = Version(self._version.index + 1)
        submission = Submission(version, change_body(version, actions), commit)
        self._queue.append(submission)
        self._wakeup.set()
        return submission

    async def propose_value(
        self, actions: Sequence[StoreAction], commit: Callable[[Version], None]
    ) -> Version:
        """Commit ``actions`` as the next version (see :class:`Proposer`)."""
        submission = self.submit(actions, commit)
        # Once queued it will be written: waiting is shielded so a cancelled caller cannot
        # undo locally a change that is about to commit (fsync waits are short).
        with trio.CancelScope(shield=True):
            await submission.done.wait()
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
        return await trio.to_thread.run_sync(self.log.read_changes, start, end)

    async def run(self) -> None:
        """The group committer: runs until cancelled (started by ``open_store``)."""
        sync = self.durability == "always"
        while True:
            await self._wakeup.wait()
            # One scheduling round first: writers that are already runnable (woken by the
            # previous batch) submit now and share this batch's fsync.
            await trio.lowlevel.checkpoint()
            self._wakeup = trio.Event()
            batch, self._queue = self._queue, []
            try:
                if self._switch is not None:
                    await self._make_switch()
                if not batch:
                    continue
                await trio.to_thread.run_sync(self.log.append, [s.body for s in batch], sync)
            except ProposalFailed as exc:
                failed, self._queue = [*batch, *self._queue], []
                for submission in failed:
                    submission.error = exc
                    submission.done.set()
                continue
            if self._compacting is not None:
                self._tail.extend((s.version, s.body) for s in batch)
            elif self.log.size - self.log.snapshot_end > self.compact_bytes:
                self.compaction_due.set()
            self._dirty = not sync
            for submission in batch:
                submission.commit(submission.version)
                submission.done.set()

    async def compact(
        self,
        version: Version,
        write: Callable[[EpochLog], Awaitable[PreparedEpoch]],
        *,
        keep: int = 2,
    ) -> None:
        """Start a new epoch from a snapshot of the store at ``version`` (a committed
        version: the caller pins it), keeping ``keep`` epochs. ``write(log)`` writes the new
        segment's file (the caller decides how: in a child process or chunk by chunk);
        commits go on meanwhile, and the committer makes the switch between two batches."""
        if self._compacting is not None:
            raise StoreError("a compaction is already running")
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._compacting = version
        self._tail = []
        try:
            epoch = await write(self.log)
            done = trio.Event()
            self._switch = (epoch, keep, done)
            self._wakeup.set()
            await done.wait()
        finally:
            self._compacting = None
            self._tail = []
            self._switch = None
            self.compaction_due = trio.Event()

    async def _make_switch(self) -> None:
        assert self._switch is not None
        epoch, keep, done = self._switch
        tail = [body for version, body in self._tail if version > epoch.version]
        try:
            await trio.to_thread.run_sync(self.log.switch, epoch, tail, keep)
        finally:
            self._switch = None
            done.set()

    async def run_syncer(self) -> None:
        """For ``durability="interval"``: fsync at most every ``sync_interval`` seconds."""
        while True:
            await trio.sleep(self.sync_interval)
            if self._dirty:
                self._dirty = False
                await trio.to_thread.run_sync(self.log.sync)
