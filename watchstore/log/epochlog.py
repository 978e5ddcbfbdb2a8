"""The epoch log: a store's directory on disk (segments, epochs, restore, appends, switches).

Directory layout: ``LOCK`` (record-locked while open) and ``LOCK.json`` (who holds it);
segment files ``00000001.wslog``...; each segment starts with a SNAPSHOT record (an epoch:
the full state at a version) followed by CHANGE records (one per committed transaction).

Opening takes the lock, verifies every record of the newest segment, truncates a torn tail
(an append that was never acknowledged) before anything is appended, and gives back the
snapshot and the changes after it. Damage anywhere else raises LogCorrupt naming the file, the
offset and the last good version. Appends are written and (by default) fsynced before the
commit is acknowledged (by the group committer's worker thread, or by the event loop's thread for a
lone commit; see ``_logproposer``). A failed write or fsync fails the log for good, after
making sure the failed append never comes back: it is cut off (or zeroed), and if even that
fails, a fence (``FENCE.json``) tells every later reader where the segment ends.

A compaction's new segment is switched to only once it is complete: written, fsynced, renamed
into place and the directory fsynced. Any failure before that leaves the current segment in
use and writable (``CompactionFailed``).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..core.errors import (
    CompactionFailed,
    HistoryCompacted,
    LogCorrupt,
    ProposalFailed,
    StorageError,
    StoreError,
)
from ..core.model import ORIGIN, ActionKind, Change, StoreAction, Version
from ..core.statistics import Recent
from .bodies import Columns, Format2, bodies_for, body_version
from .crypto import Sealer, SealError
from .files import (
    create_exclusive,
    fsync_dir,
    make_directory,
    pwrite_all,
    pwrite_some,
    reason,
    write_all,
    write_file_atomically,
)
from .lock import DirectoryLock
from .manifest import (
    MANIFEST,
    Manifest,
    check_restored,
    check_segments,
    read_manifest,
    segment_header,
    write_manifest,
)
from .records import (
    CHANGE,
    CHUNK,
    END,
    HEADER_SIZE,
    SNAPSHOT,
    HeaderError,
    SegmentHeader,
    parse_header,
    record_head,
)
from .segment import (
    FENCE,
    FORMAT,
    Fence,
    Salvage,
    body_of,
    find_lost,
    frame,
    open_segment,
    read_fence,
    read_segment,
    sealer_for,
    segment_path,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..core.schema import Schema

PREALLOCATE: Final = 1 << 20
"""Zeros written ahead of the records at the end of the current segment (see ``append``)."""


@attrs.frozen
class Restored:
    """What opening a log found: the snapshot's objects and version, then the changes."""

    snapshot_version: Version
    objects: dict[str, list[Any]]
    changes: list[Change]
    repaired_tail: int
    """Bytes truncated from the end: a torn tail, or what salvage discarded (0: clean)."""
    salvage: Salvage | None = None
    """What salvage found and dropped, when the log was damaged and opened with salvage."""
    reshaped: bool = False
    """Objects were stored in another shape than today's classes (read through an upgrade,
    completed with defaults, or in a table the snapshot lacks): a new epoch should rewrite
    them before anything is appended."""
    format: int = 2
    """The format of the segment the store appends to."""

    @property
    def version(self) -> Version:
        """The last version in the log."""
        return self.changes[-1].version if self.changes else self.snapshot_version

    def summary(self) -> Recovery:
        """What opening found, without the objects and changes (``store.recovery``)."""
        return Recovery(
            self.snapshot_version,
            self.version,
            len(self.changes),
            self.repaired_tail,
            self.salvage,
            self.reshaped,
            self.format,
        )


@attrs.frozen
class Recovery:
    """What opening a durable store found (``store.recovery``), in a few fields: it keeps
    nothing of the objects and changes it restored alive."""

    snapshot_version: Version
    """The version of the snapshot the newest segment starts with."""
    version: Version
    """The version the store opened at."""
    changes: int
    """How many commits were replayed after the snapshot."""
    repaired_tail: int
    """Bytes cut from the end: a torn tail, or what salvage discarded (0: clean)."""
    salvage: Salvage | None = None
    """What salvage found and dropped, when the log was damaged and opened with salvage."""
    reshaped: bool = False
    """Objects were stored in another shape than today's classes (and were rewritten)."""
    format: int = 2
    """The format of the segment the store appends to."""


def _segments(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("*.wslog") if p.stem.isdigit())


class EpochLog:
    """An open store directory: the lock, the current segment, appends (sync, for threads)."""

    def __init__(
        self,
        directory: Path,
        lock: DirectoryLock,
        header: SegmentHeader,
        fd: int,
        size: int,
        schema: Schema,
        sealer: Sealer | None,
    ) -> None:
        self.directory = directory
        self.sealer = sealer
        self.schema = schema
        self.bodies = bodies_for(header.format, schema)
        """How this segment's record bodies are written (its format's)."""
        self.lock = lock
        self.header = header
        self.file = segment_path(directory, header.segment)
        self._fd = fd
        self.size = size
        self.synced = size
        """How much of the segment is known durable: a record's ``synced`` field."""
        # The file's length: appends overwrite zeros written ahead (see ``append``).
        self.allocated = os.fstat(fd).st_size
        self.snapshot_end = size  # set by _restore/switch: where the epoch's changes start
        self.version = ORIGIN
        """The last version in the log."""
        self.columns: Columns = {}
        """The columns of the current segment's rows (its snapshot's; format 2)."""
        self.failed: BaseException | None = None
        self.fsyncs = Recent()
        """Seconds of each fsync of appended commits (``append``, ``sync``), recent ones."""

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        schema: Schema,
        salvage: bool = False,
        key: bytes | None = None,
    ) -> tuple[EpochLog, Restored]:
        """Open (creating if needed) the log in ``directory``; return it and what it holds.

        Damage raises LogCorrupt unless ``salvage``: then the valid prefix is kept, the
        damaged file is copied aside first, and ``Restored.salvage`` says what was lost.
        With ``key``, a new log is encrypted and an existing one must be. A file operation
        that fails raises StorageError naming its cause, with the lock released."""
        path = Path(directory)
        try:
            make_directory(path)
        except OSError as exc:
            raise _storage_error("creating the store directory", exc, path) from exc
        lock = DirectoryLock(path)
        try:
            for leftover in path.glob(".*.wslog.*tmp"):  # compactions that never switched
                leftover.unlink(missing_ok=True)
            _apply_fence(path)
            log, restored = cls._open_locked(path, lock, schema, salvage, key)
            write_manifest(path, log.manifest())
        except BaseException as exc:
            with contextlib.suppress(OSError):
                lock.release()
            if isinstance(exc, OSError):
                raise _storage_error("opening the store", exc, path) from exc
            raise
        log.write_ahead()
        return log, restored

    @classmethod
    def _open_locked(
        cls, path: Path, lock: DirectoryLock, schema: Schema, salvage: bool, key: bytes | None
    ) -> tuple[EpochLog, Restored]:
        """Create or restore the log, checked against the manifest (see ``_manifest``);
        with ``salvage``, a newest segment whose header or snapshot is damaged is put
        aside and the one before it restored."""
        try:
            manifest = read_manifest(path)
        except LogCorrupt:
            if not salvage:
                raise
            manifest = None
        segments = _segments(path)
        if not segments:
            if manifest is not None and manifest.version > 0:
                raise LogCorrupt(
                    str(segment_path(path, manifest.segment)),
                    0,
                    f"every segment is missing (the store had made version {manifest.version} "
                    "durable); restore them",
                )
            return cls._create(path, lock, schema, key)
        headers = {}
        for file in segments:
            try:
                headers[file] = segment_header(file)
            except LogCorrupt:
                if file == segments[-1] and not salvage:
                    raise
        newest = headers.get(segments[-1])
        if manifest is None and newest is not None and newest.format >= 2 and not salvage:
            raise LogCorrupt(
                str(path / MANIFEST),
                0,
                "the manifest is missing, so the store cannot tell whether its segments are "
                "complete; put it back, or open with salvage=True to take them as they are",
            )
        check_segments(path, headers, None if salvage else manifest)
        aside: tuple[LogCorrupt, Path] | None = None
        while True:
            file = segments[-1]
            try:
                log, restored = cls._restore(path, lock, file, schema, salvage, key)
                break
            except LogCorrupt as exc:  # with salvage: its header or snapshot is damaged
                if not salvage or len(segments) == 1:
                    raise
                copy = file.with_name(f"{file.name}.damaged-{time.time_ns()}")
                os.replace(file, copy)
                fsync_dir(path)
                aside = aside or (exc, copy)
                segments.pop()
        if manifest is not None and not salvage:
            changes = len(restored.changes)
            segment, version = log.header.segment, log.version.index
            check_restored(log.file, manifest, segment, version, log.size, changes)
        lost_after = manifest.version if manifest is not None else 0
        if salvage and (aside is not None or log.version.index < lost_after):
            restored = _salvaged(restored, log.version, lost_after, aside)
        return log, restored

    def manifest(self, *, closed: bool = False) -> Manifest:
        """The manifest of the log as it is now (``closed``: after a clean close)."""
        return Manifest(
            self.header.lineage,
            self.header.segment,
            self.version.index,
            self.size if closed else None,
            closed,
        )

    @classmethod
    def _create(
        cls, path: Path, lock: DirectoryLock, schema: Schema, key: bytes | None
    ) -> tuple[EpochLog, Restored]:
        sealer = Sealer(key) if key is not None else None
        flags = 1 if key is not None else 0
        header = SegmentHeader(FORMAT, flags, 1, uuid.uuid4().bytes, time.time_ns())
        write_manifest(path, Manifest(header.lineage, 1, 0))  # before the segment it names
        body = Format2(schema).snapshot(ORIGIN, [(t.name, 0, []) for t in schema.tables])
        data = header.pack() + frame(header, HEADER_SIZE, SNAPSHOT, body, sealer)
        file = segment_path(path, 1)
        write_file_atomically(file, data)
        fd = os.open(file, os.O_WRONLY | os.O_CLOEXEC)
        restored = Restored(ORIGIN, {t.name: [] for t in schema.tables}, [], 0, None)
        log = cls(path, lock, header, fd, len(data), schema, sealer)
        log.columns = Format2(schema).columns()
        return log, restored

    @classmethod
    def _restore(
        cls,
        path: Path,
        lock: DirectoryLock,
        file: Path,
        schema: Schema,
        salvage: bool,
        key: bytes | None,
    ) -> tuple[EpochLog, Restored]:
        _size, header, result = read_segment(file)
        sealer = sealer_for(file, header, key)
        records = result.records
        bodies = bodies_for(header.format, schema)
        if sealer is not None:
            try:
                snapshot_body = sealer.open(header, records[0].offset, SNAPSHOT, records[0].body)
            except SealError:
                raise StoreError(
                    f"{file}: wrong encryption key (the snapshot, whose checksum "
                    "is correct, does not decrypt with it)"
                ) from None
        else:
            snapshot_body = records[0].body
        snapshot = bodies.read_snapshot(snapshot_body, str(file), records[0].offset)
        version = snapshot_version = snapshot.version
        changes: list[Change] = []
        end = result.end
        damage: LogCorrupt | None = None
        if result.corrupt is not None:
            damage = LogCorrupt(str(file), result.end, result.corrupt)
        for record in records[1:]:
            try:
                if record.kind != CHANGE:
                    raise LogCorrupt(str(file), record.offset, "a snapshot in mid-segment")
                body = body_of(header, record, sealer, str(file))
                change = bodies.read_change(body, str(file), record.offset, snapshot.columns)
                if change.version.index != version.index + 1:
                    raise LogCorrupt(
                        str(file),
                        record.offset,
                        f"version {change.version.index} follows {version.index}",
                    )
            except LogCorrupt as exc:
                damage, end = exc, record.offset
                break
            version = change.version
            changes.append(change)
        salvaged: Salvage | None = None
        if damage is not None:
            if not salvage:
                raise LogCorrupt(damage.file, damage.offset, damage.reason, version)
            copy = file.with_name(f"{file.name}.damaged-{time.time_ns()}")
            with open_segment(file) as source:
                chunks = (source.read(at, CHUNK) for at in range(0, source.size, CHUNK))
                write_file_atomically(copy, chunks)
                lost = find_lost(file, source, header, end, sealer)
            salvaged = Salvage(str(file), damage.offset, damage.reason, version, lost, str(copy))
        fd = os.open(file, os.O_WRONLY | os.O_CLOEXEC)
        try:
            repaired = 0
            if result.torn or salvaged is not None:
                repaired = os.fstat(fd).st_size - end
                os.ftruncate(fd, end)  # repair before anything is appended
            # What was read may sit in the page cache only (a killed writer's last append):
            # make it durable before any record claims it is (``synced``).
            os.fdatasync(fd)
            log = cls(path, lock, header, fd, end, schema, sealer)
        except BaseException:
            os.close(fd)
            raise
        log.snapshot_end = records[1].offset if len(records) > 1 else end
        restored = Restored(
            snapshot_version,
            snapshot.objects,
            changes,
            repaired,
            salvaged,
            reshaped=bodies.reshaped,
            format=header.format,
        )
        log.columns = snapshot.columns
        log.version = restored.version
        return log, restored

    # -- appending (in a worker thread, or the event loop's thread for a lone commit) -----

    def change_body(self, version: Version, actions: Sequence[StoreAction]) -> bytes:
        """The CHANGE body of a commit, in the current segment's format."""
        return self.bodies.change(version, actions)

    def append(self, bodies: Sequence[bytes], sync: bool, version: Version) -> None:
        """Write CHANGE records at the end of the segment in one write (the last of them at
        ``version``), then fsync if ``sync``. Any failure fails the log for good
        (ProposalFailed naming the cause).

        The records overwrite zeros written ahead: a write that reaches past the file's end
        carries ``PREALLOCATE`` bytes of zeros after its records, so the fsyncs of the next
        appends write data only, with no change of the file's size to journal (on ext4
        about 90 us instead of 130). Those zeros are optional: a full disk that takes the
        records but not all the zeros fails nothing. A crash leaves what the format expects
        of a torn append (docs/format.md); ``close`` cuts the zeros off."""
        self.check_writable()
        records = []
        offset = self.size
        for body in bodies:
            record = frame(self.header, offset, CHANGE, body, self.sealer, self.synced)
            records.append(record)
            offset += len(record)
        data = b"".join(records)
        needed = len(data)
        if offset > self.allocated:
            data += bytes(PREALLOCATE)
        try:
            written = pwrite_some(self._fd, data, self.size, needed)
            if sync:
                start = perf_counter()
                os.fdatasync(self._fd)
                self.fsyncs.add(perf_counter() - start)
        except OSError as exc:
            self._fail(exc, self.size + len(data))
            raise ProposalFailed(
                f"writing {self.file} at offset {self.size} failed: {reason(exc)}; the store "
                "accepts no more writes (reads go on); this commit is not in the log; reopen "
                "the store once the disk is fixed"
            ) from exc
        self.allocated = max(self.allocated, self.size + written)
        self.size = offset
        self.version = version
        if sync:
            self.synced = offset

    def check_writable(self) -> None:
        """ProposalFailed if the log failed earlier (and so takes no more appends)."""
        if self.failed is not None:
            raise ProposalFailed(
                f"the log failed earlier ({reason(self.failed)}): the store accepts no more "
                "writes (reads go on); reopen it once the disk is fixed"
            )

    def _fail(self, exc: BaseException, end: int) -> None:
        """Fail the log for good after an append that failed, and make sure that append's
        records (from ``self.size`` to at most ``end``) never come back: cut them off, or
        zero them; if that cannot be made durable either, leave a fence for the next open
        (and every reader) to cut the segment at ``self.size``."""
        self.failed = exc
        gone = False
        try:
            os.ftruncate(self._fd, self.size)
            self.allocated = self.size
            gone = True
        except OSError:
            with contextlib.suppress(OSError):
                stop = min(end, os.fstat(self._fd).st_size)
                pwrite_all(self._fd, bytes(max(0, stop - self.size)), self.size)
                gone = True
        if gone:
            try:
                os.fdatasync(self._fd)
                return
            except OSError:
                pass  # the cut is in the page cache, but may not reach the disk
        fence = Fence(self.header.segment, self.header.lineage, self.size)
        with contextlib.suppress(OSError):  # nothing else is left to try
            write_file_atomically(self.directory / FENCE, fence.dump())

    def write_ahead(self) -> None:
        """Write ``PREALLOCATE`` zeros past the end now, and fsync them (see ``append``),
        unless that many are there already: done when the log is opened and when it switches
        segments, so that the first commits after that do not pay for growing the file
        (about 8 ms on ext4, for the commit that happens to need it). Best effort: on a full
        disk, the next append grows the file itself."""
        if self.failed is not None or self.allocated >= self.size + PREALLOCATE:
            return
        try:
            written = pwrite_some(self._fd, bytes(PREALLOCATE), self.size, 0)
        except OSError:
            written = 0
        self.allocated = max(self.allocated, self.size + written)
        try:
            os.fdatasync(self._fd)
        except OSError as exc:  # Linux reports a failed writeback once: never lose it
            self._fail(exc, self.size + written)

    def sync(self) -> None:
        """fsync the segment (for the interval durability mode). A failure fails the log."""
        if self.failed is None:
            size = self.size
            try:
                start = perf_counter()
                os.fdatasync(self._fd)
                self.fsyncs.add(perf_counter() - start)
            except OSError as exc:
                self.failed = exc
                return
            self.synced = max(self.synced, size)

    # -- reading the history (in a worker thread) --------------------------------------------

    def read_changes(self, start: Version, end: Version) -> list[Change]:
        """The changes with ``start < version <= end``, read from the kept segments.

        Reading starts at the newest segment whose snapshot is not after ``start`` (after a
        rollback that is the rolled-back line of history, as it should be) and goes on
        through the newer ones, skipping the changes a compaction copied into the next
        segment. CHANGE records hold new objects only, so the state is replayed from that
        snapshot to give each update its old object. HistoryCompacted if ``start`` is older
        than every kept snapshot, or than a gap in the kept changes (a damaged segment):
        never a history with versions missing.
        """
        segments = []
        for path in _segments(self.directory):
            try:
                _data, header, result = read_segment(path, self.size if path == self.file else None)
            except FileNotFoundError:  # retired by a compaction meanwhile
                continue
            bodies = bodies_for(header.format, self.schema)
            first = result.records[0]
            body = body_of(header, first, self.sealer, str(path))
            snapshot = bodies.read_snapshot(body, str(path), first.offset)
            segments.append((path, header, result.records, snapshot, bodies))
        usable = [i for i, seg in enumerate(segments) if seg[3].version <= start]
        if not usable:
            oldest = min((seg[3].version for seg in segments), default=end)
            raise HistoryCompacted(oldest, end)
        first_segment = usable[-1]
        current: dict[tuple[str, str], Any] = {}
        for name, objs in segments[first_segment][3].objects.items():
            for obj in objs:
                current[name, obj.id] = obj
        last = segments[first_segment][3].version.index
        changes: list[Change] = []
        for path, header, records, snapshot, bodies in segments[first_segment:]:
            if snapshot.version.index > last:  # versions last+1 .. snapshot are gone
                raise HistoryCompacted(snapshot.version, end)
            for record in records[1:]:
                body = body_of(header, record, self.sealer, str(path))
                change = bodies.read_change(body, str(path), record.offset, snapshot.columns)
                if change.version.index <= last:
                    continue  # already read from the segment before (a compaction's tail)
                if change.version.index != last + 1:
                    raise HistoryCompacted(change.version, end)
                last = change.version.index
                if change.version > end:
                    return changes
                actions = []
                for action in change.actions:
                    key = (action.table, action.obj.id)
                    if action.kind is ActionKind.UPDATE:
                        action = StoreAction(
                            action.kind, action.table, action.obj, current.get(key)
                        )
                    if action.kind is ActionKind.DELETE:
                        current.pop(key, None)
                    else:
                        current[key] = action.obj
                    actions.append(action)
                if change.version > start:
                    changes.append(Change(change.version, actions))
        return changes

    # -- compaction (write_epoch in a worker thread; switch in the group committer) --------

    def write_epoch(
        self, version: Version, tables: Sequence[tuple[str, int, list[bytes]]]
    ) -> PreparedEpoch:
        """Write a new segment holding a snapshot at ``version``, under a temporary name
        (invisible to opening until ``switch``). ``tables`` gives each table's object count
        and encoded pieces (``Format2.piece``)."""
        header = self.next_header()
        size = self.write_epoch_file(header, Format2(self.schema).snapshot(version, tables))
        return self.prepared(version, header, size)

    def next_header(self) -> SegmentHeader:
        """The header of the segment a compaction starts next."""
        return SegmentHeader(
            FORMAT, self.header.flags, self.header.segment + 1, self.header.lineage, time.time_ns()
        )

    def epoch_paths(self, header: SegmentHeader) -> tuple[Path, Path]:
        """(temporary, final) paths of the segment ``header`` starts."""
        final = segment_path(self.directory, header.segment)
        # Unique per attempt: a compaction that failed may have left its file behind.
        return final.with_name(f".{final.name}.{header.created_ns}.tmp"), final

    def write_epoch_file(self, header: SegmentHeader, body: bytes) -> int:
        """Write and fsync the temporary file of a new epoch (created exclusively, mode
        0600); return its size. OSError if that fails (the file is then removed). Touches
        nothing else of the log, so it may run in a forked child process."""
        if self.sealer is not None:
            body = self.sealer.seal(header, HEADER_SIZE, SNAPSHOT, body)
        head = header.pack() + record_head(header, HEADER_SIZE, SNAPSHOT, body)
        tmp, _final = self.epoch_paths(header)
        fd = create_exclusive(tmp)
        try:
            write_all(fd, head)
            write_all(fd, body)  # in bounded pieces: a snapshot may be many GiB
            write_all(fd, END)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return len(head) + len(body) + len(END)

    def prepared(self, version: Version, header: SegmentHeader, size: int) -> PreparedEpoch:
        """Open the written temporary file of a new epoch, ready for ``switch``."""
        tmp, final = self.epoch_paths(header)
        fd = os.open(tmp, os.O_WRONLY | os.O_CLOEXEC)
        return PreparedEpoch(version, header, tmp, final, fd, size)

    def abandon(self, epoch: PreparedEpoch) -> None:
        """Give up a prepared epoch: close and remove its temporary file."""
        with contextlib.suppress(OSError):
            os.close(epoch.fd)
        with contextlib.suppress(OSError):
            epoch.tmp.unlink(missing_ok=True)

    def switch(self, epoch: PreparedEpoch, tail: Sequence[Tail], keep: int) -> None:
        """Make ``epoch`` the current segment: append ``tail`` (the changes committed since
        its snapshot), fsync, rename it into place and fsync the directory; then retire
        segments beyond ``keep`` epochs. Until the directory is fsynced, the old segment
        stays the current one; if any step fails, CompactionFailed, with the old segment
        still current and writable (if even undoing the rename fails, the log fails)."""
        offset = epoch.size
        records = []
        bodies = bodies_for(epoch.header.format, self.schema)
        for version, actions, body in tail:
            if bodies.format != self.bodies.format:  # written for the old segment's format
                body = bodies.change(version, actions)
            record = frame(epoch.header, offset, CHANGE, body, self.sealer, epoch.size)
            records.append(record)
            offset += len(record)
        try:
            pwrite_all(epoch.fd, b"".join(records), epoch.size)
            os.fsync(epoch.fd)
            os.replace(epoch.tmp, epoch.final)
        except OSError as exc:
            self.abandon(epoch)
            raise self._compaction_failed(epoch, exc) from exc
        try:
            fsync_dir(self.directory)
        except OSError as exc:
            # The rename may or may not be durable: undo it, so that the segment appends
            # go to stays the one an open finds.
            try:
                epoch.final.unlink()
                fsync_dir(self.directory)
            except OSError:
                self.failed = exc
            with contextlib.suppress(OSError):
                os.close(epoch.fd)
            raise self._compaction_failed(epoch, exc) from exc
        old_fd, old_size = self._fd, self.size
        self._fd = epoch.fd
        with contextlib.suppress(OSError):  # an old segment reads the same with them
            os.ftruncate(old_fd, old_size)  # the zeros written ahead (see ``append``)
        with contextlib.suppress(OSError):
            os.close(old_fd)
        self.header = epoch.header
        self.bodies = bodies
        self.columns = Format2(self.schema).columns()
        self.file = epoch.final
        self.size = self.allocated = self.synced = offset
        self.snapshot_end = epoch.size
        self.version = max(epoch.version, tail[-1][0]) if tail else epoch.version
        with contextlib.suppress(OSError):  # else the next open finds one segment more
            write_manifest(self.directory, self.manifest())
        with contextlib.suppress(OSError):  # older epochs only: retired by the next switch
            for path in _segments(self.directory):
                if int(path.stem) <= epoch.header.segment - keep:
                    path.unlink()
            fsync_dir(self.directory)
        self.write_ahead()

    def _compaction_failed(self, epoch: PreparedEpoch, exc: OSError) -> CompactionFailed:
        still = "" if self.failed is None else "; the log failed and accepts no more writes"
        return CompactionFailed(
            f"switching to the new epoch {epoch.final.name} failed: {reason(exc)}; the store "
            f"goes on with its current epoch {self.file.name}{still}"
        )

    def close(self) -> None:
        """Cut off the zeros written ahead, record the clean close in the manifest (the
        exact version and size), close the segment and release the lock."""
        try:
            with contextlib.suppress(OSError):  # else the next open keeps the zeros
                if self.allocated > self.size:
                    os.ftruncate(self._fd, self.size)
                    self.allocated = self.size
                if self.failed is None:
                    os.fdatasync(self._fd)
                    write_manifest(self.directory, self.manifest(closed=True))
            with contextlib.suppress(OSError):
                os.close(self._fd)
        finally:
            with contextlib.suppress(OSError):
                self.lock.release()


def _salvaged(
    restored: Restored, kept: Version, durable: int, aside: tuple[LogCorrupt, Path] | None
) -> Restored:
    """``restored`` reporting what salvage lost besides: a newest segment put aside, and
    the versions up to ``durable`` (what the manifest says was made durable)."""
    lost = set(restored.salvage.lost) if restored.salvage is not None else set()
    lost.update(range(kept.index + 1, durable + 1))
    if aside is not None:
        exc, copy = aside
        salvage = Salvage(exc.file, exc.offset, exc.reason, kept, tuple(sorted(lost)), str(copy))
    elif restored.salvage is not None:
        salvage = attrs.evolve(restored.salvage, lost=tuple(sorted(lost)))
    else:
        salvage = Salvage(
            "",
            0,
            f"the log ends at {kept!r}, before the version the manifest names",
            kept,
            tuple(sorted(lost)),
            "",
        )
    return attrs.evolve(restored, salvage=salvage)


def _storage_error(action: str, exc: OSError, path: Path) -> StorageError:
    file = exc.filename if isinstance(exc.filename, str) else str(path)
    return StorageError(
        f"{action} {str(path)!r} failed: {reason(exc)} ({file}); fix that (free space, "
        "permissions, the disk) and open it again: nothing committed is lost",
        errno=exc.errno,
        file=file,
    )


def _apply_fence(path: Path) -> None:
    """Cut the segment a fence names at its size (a failed append that could not be cut
    off when it failed), then remove the fence."""
    fence = read_fence(path)
    if fence is None:
        (path / FENCE).unlink(missing_ok=True)  # an unreadable one cannot be ours
        return
    file = segment_path(path, fence.segment)
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(file, os.O_RDWR | os.O_CLOEXEC)
        try:
            head = os.pread(fd, HEADER_SIZE, 0)
            try:
                same = parse_header(head).lineage == fence.lineage
            except HeaderError:
                same = False
            if same and os.fstat(fd).st_size > fence.size:
                os.ftruncate(fd, fence.size)
                os.fdatasync(fd)
        finally:
            os.close(fd)
    (path / FENCE).unlink()
    fsync_dir(path)


@attrs.frozen
class EpochInfo:
    """One kept epoch of a log: its segment, the version and time of its snapshot, and size."""

    segment: int
    version: Version
    created_at: float
    size: int
    file: Path


def list_epochs(directory: str | os.PathLike[str], *, key: bytes | None = None) -> list[EpochInfo]:
    """The epochs kept in a store directory, oldest first (reads only; takes no lock).
    An encrypted store needs its ``key``."""
    out = []
    for file in _segments(Path(directory)):
        try:
            size, header, result = read_segment(file)
            body = body_of(header, result.records[0], sealer_for(file, header, key), str(file))
            version = Version(body_version(header.format, body))
        except (LogCorrupt, ValueError, KeyError, TypeError):
            continue  # a damaged epoch cannot be rolled back to; ``watchstore verify`` names it
        out.append(EpochInfo(header.segment, version, header.created_ns / 1e9, size, file))
    return out


def rollback(
    directory: str | os.PathLike[str], version: Version, *, key: bytes | None = None
) -> EpochInfo:
    """Make the kept snapshot at ``version`` the store's state (unobin's SetCurrent).

    Writes a new newest segment holding that snapshot; newer segments stay on disk until
    compaction retires them. Takes the lock: the store must not be open.
    """
    path = Path(directory)
    lock = DirectoryLock(path)
    try:
        epochs = list_epochs(path, key=key)
        chosen = next((e for e in epochs if e.version == version), None)
        if chosen is None:
            kept = ", ".join(str(e.version.index) for e in epochs) or "none"
            raise StoreError(
                f"no kept snapshot at version {version.index} (kept: {kept}); "
                "list them with watchstore.list_epochs(path)"
            )
        _data, old, result = read_segment(chosen.file)
        sealer = sealer_for(chosen.file, old, key)
        body = body_of(old, result.records[0], sealer, str(chosen.file))
        number = int(_segments(path)[-1].stem) + 1  # after any, a damaged newest too
        header = SegmentHeader(old.format, old.flags, number, old.lineage, time.time_ns())
        new = header.pack() + frame(header, HEADER_SIZE, SNAPSHOT, body, sealer)
        final = segment_path(path, number)
        try:
            write_file_atomically(final, new)
            write_manifest(path, Manifest(old.lineage, number, version.index, len(new), True))
        except OSError as exc:
            raise _storage_error("rolling back", exc, path) from exc
        return EpochInfo(number, version, header.created_ns / 1e9, len(new), final)
    finally:
        lock.release()


Tail = tuple[Version, "Sequence[StoreAction]", bytes]
"""A commit made while a compaction ran: its version, actions and body (in the format of
the segment it was appended to)."""


@attrs.frozen
class PreparedEpoch:
    """A new segment written up to its snapshot, waiting to be switched to."""

    version: Version
    header: SegmentHeader
    tmp: Path
    final: Path
    fd: int
    size: int
