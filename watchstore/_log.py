"""The epoch log: a store's directory on disk (segments, epochs, restore, compaction files).

Directory layout: ``LOCK`` (held with flock while open) and ``LOCK.json`` (who holds it);
segment files ``00000001.wslog``...; each segment starts with a SNAPSHOT record (an epoch:
the full state at a version) followed by CHANGE records (one per committed transaction).

Opening takes the lock, verifies every record of the newest segment, truncates a torn tail
(an append that was never acknowledged) before anything is appended, and gives back the
snapshot and the changes after it. Damage anywhere else raises LogCorrupt naming the file, the
offset and the last good version. Appends are written and (by default) fsynced before the
commit is acknowledged (by the group committer's worker thread, or by the trio thread for a
lone commit; see ``_logproposer``); a failed write or fsync fails the log for good.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._codec import (
    DecodeError,
    LoggedActions,
    decoder_for,
    dump_data,
    load_members,
    load_value,
    loads,
    object_json,
    skip_space,
    skip_to,
)
from ._crypto import Sealer, SealError
from ._errors import (
    HistoryCompacted,
    LogCorrupt,
    ProposalFailed,
    StoreError,
    UnsupportedFormat,
)
from ._lock import DirectoryLock, fsync_dir, write_atomically
from ._model import ORIGIN, ActionKind, Change, StoreAction, Version, new_change
from ._records import (
    CHANGE,
    FLAG_ENCRYPTED,
    HEADER_SIZE,
    SNAPSHOT,
    HeaderError,
    Record,
    Scan,
    SegmentHeader,
    pack_record,
    parse_header,
    record_size,
    scan,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._schema import Schema

FORMAT: Final = 1
"""The format version this library writes (and the newest it reads)."""

PREALLOCATE: Final = 1 << 20
"""Zeros written ahead of the records at the end of the current segment (see ``append``)."""


@attrs.frozen
class Restored:
    """What opening a log found: the snapshot's objects and version, then the changes."""

    snapshot_version: Version
    objects: dict[str, list[Any]]
    changes: list[Change]
    repaired_tail: int
    """Bytes truncated from the end: a torn tail (with the zeros written ahead of the
    records, after a crash), or what salvage discarded (0: clean)."""
    salvage: Salvage | None = None
    """What salvage found and dropped, when the log was damaged and opened with salvage."""

    @property
    def version(self) -> Version:
        """The last version in the log."""
        return self.changes[-1].version if self.changes else self.snapshot_version


@attrs.frozen
class Salvage:
    """The result of opening a damaged log with ``salvage=True``.

    ``kept`` is the last version kept; ``lost`` the versions found after the damage that
    could not be applied (they follow a gap), so every version after ``kept`` up to
    ``max(lost)`` is gone. ``copy`` is the damaged file as it was before the repair.
    """

    file: str
    offset: int
    reason: str
    kept: Version
    lost: tuple[int, ...]
    copy: str


def _salvage(
    file: Path,
    data: bytes,
    header: SegmentHeader,
    end: int,
    kept: Version,
    damage: LogCorrupt,
    sealer: Sealer | None,
) -> Salvage:
    """Copy the damaged file aside, and find the versions of records after the damage
    (checksums are seeded by offset, so a record verifies only where it was written)."""
    copy = file.with_name(f"{file.name}.damaged-{time.time_ns()}")
    write_atomically(copy, data)
    lost = set()
    offset = end + 1
    stop = len(data.rstrip(b"\0"))  # a record never ends in zero: none lies in the zeros
    while offset < stop:
        found = scan(data, header, start=offset).records
        if not found:
            offset += 1
            continue
        for record in found:
            try:
                body = body_of(header, record, sealer, str(file))
                lost.add(int(loads(body)["version"]))
            except (ValueError, KeyError, TypeError, LogCorrupt):
                continue
        last = found[-1]
        offset = last.offset + record_size(len(last.body))
    return Salvage(str(file), damage.offset, damage.reason, kept, tuple(sorted(lost)), str(copy))


def frame(
    header: SegmentHeader, offset: int, kind: int, body: bytes, sealer: Sealer | None
) -> bytes:
    """The bytes of a record of ``kind`` at ``offset``: sealed first if encrypting."""
    if sealer is not None:
        body = sealer.seal(header, offset, kind, body)
    return pack_record(header, offset, kind, body)


def body_of(header: SegmentHeader, record: Record, sealer: Sealer | None, file: str) -> bytes:
    """The plain body of a verified record (opened if the segment is encrypted)."""
    if sealer is None:
        return record.body
    try:
        return sealer.open(header, record.offset, record.kind, record.body)
    except SealError:
        raise LogCorrupt(file, record.offset, "record does not decrypt at its place") from None


def sealer_for(
    file: Path,
    header: SegmentHeader,
    key: bytes | None,
    *,
    error: type[StoreError] = StoreError,
    give_key: str = "open it with key=",
    drop_key: str = "open it without key=",
) -> Sealer | None:
    """The sealer to read ``file`` with ``key``, or ``error`` if the key does not fit the
    segment (its message says to ``give_key`` or to ``drop_key``)."""
    encrypted = bool(header.flags & FLAG_ENCRYPTED)
    if encrypted and key is None:
        raise error(f"{file} is encrypted: {give_key}")
    if not encrypted and key is not None:
        raise error(f"{file} is not encrypted: {drop_key}")
    return Sealer(key) if key is not None else None


def read_segment(file: Path, limit: int | None = None) -> tuple[bytes, SegmentHeader, Scan]:
    """Read and verify a segment file (up to ``limit`` bytes): its header (LogCorrupt, or
    UnsupportedFormat for a newer format) and records, which must open with a snapshot."""
    data = file.read_bytes()
    if limit is not None:
        data = data[:limit]
    try:
        header = parse_header(data)
    except HeaderError as exc:
        raise LogCorrupt(str(file), 0, exc.reason) from None
    if header.format > FORMAT:
        raise UnsupportedFormat(
            f"{file} is in log format {header.format}, newer than this watchstore reads "
            f"({FORMAT}); upgrade watchstore to open it"
        )
    result = scan(data, header)
    if not result.records:
        reason = result.corrupt or "the segment holds no snapshot"
        raise LogCorrupt(str(file), HEADER_SIZE, reason)
    first = result.records[0]
    if first.kind != SNAPSHOT:
        raise LogCorrupt(str(file), first.offset, "the segment does not start with a snapshot")
    return data, header, result


def segment_path(directory: Path, number: int) -> Path:
    """The file of segment ``number``."""
    return directory / f"{number:08d}.wslog"


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
        self.decoders = {t.name: decoder_for(t.cls) for t in schema.tables}
        self.lock = lock
        self.header = header
        self.file = segment_path(directory, header.segment)
        self._fd = fd
        self.size = size
        # The file's length: appends overwrite zeros written ahead (see ``append``).
        self.allocated = os.fstat(fd).st_size
        self.snapshot_end = size  # set by _restore/switch: where the epoch's changes start
        self.failed: BaseException | None = None

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
        With ``key``, a new log is encrypted and an existing one must be."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(path)
        try:
            for leftover in path.glob(".*.wslog.*tmp"):  # compactions that never switched
                leftover.unlink(missing_ok=True)
            segments = sorted(p for p in path.glob("*.wslog") if p.stem.isdigit())
            if not segments:
                log, restored = cls._create(path, lock, schema, key)
            else:
                log, restored = cls._restore(path, lock, segments[-1], schema, salvage, key)
        except BaseException:
            lock.release()
            raise
        log.write_ahead()
        return log, restored

    @classmethod
    def _create(
        cls, path: Path, lock: DirectoryLock, schema: Schema, key: bytes | None
    ) -> tuple[EpochLog, Restored]:
        sealer = Sealer(key) if key is not None else None
        flags = FLAG_ENCRYPTED if key is not None else 0
        header = SegmentHeader(FORMAT, flags, 1, uuid.uuid4().bytes, time.time_ns())
        body = snapshot_body_of_pieces(ORIGIN, {t.name: [] for t in schema.tables})
        data = header.pack() + frame(header, HEADER_SIZE, SNAPSHOT, body, sealer)
        file = segment_path(path, 1)
        tmp = file.with_name(f".{file.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
        fsync_dir(path)
        fd = os.open(file, os.O_WRONLY)
        restored = Restored(ORIGIN, {t.name: [] for t in schema.tables}, [], 0, None)
        return cls(path, lock, header, fd, len(data), schema, sealer), restored

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
        data, header, result = read_segment(file)
        sealer = sealer_for(file, header, key)
        records = result.records
        decoders = {t.name: decoder_for(t.cls) for t in schema.tables}
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
        version, objects = _decode_snapshot(snapshot_body, decoders, str(file), records[0].offset)
        snapshot_version = version
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
                change = _decode_change(body, decoders, str(file), record.offset)
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
            salvaged = _salvage(file, data, header, end, version, damage, sealer)
        repaired = 0
        if result.torn or salvaged is not None:
            repaired = len(data) - end
            with open(file, "r+b") as f:  # repair before anything is appended
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        fd = os.open(file, os.O_WRONLY)
        restored = Restored(snapshot_version, objects, changes, repaired, salvaged)
        log = cls(path, lock, header, fd, end, schema, sealer)
        log.snapshot_end = records[1].offset if len(records) > 1 else end
        return log, restored

    # -- appending (in a worker thread, or the trio thread for a lone commit) ---------------

    def append(self, bodies: Sequence[bytes], sync: bool) -> None:
        """Write CHANGE records at the end of the segment in one write, then fsync if
        ``sync``. Any failure fails the log for good (ProposalFailed).

        The records overwrite zeros written ahead: a write that reaches past the file's end
        carries ``PREALLOCATE`` bytes of zeros after its records, so the fsyncs of the next
        appends write data only, with no change of the file's size to journal (on ext4
        about 90 us instead of 130). A crash still leaves what the format expects of a torn
        append: a prefix of it, then zeros (docs/format.md); ``close`` cuts the zeros off."""
        if self.failed is not None:
            raise ProposalFailed(f"the log failed earlier ({self.failed!r}); reopen the store")
        records = []
        offset = self.size
        for body in bodies:
            record = frame(self.header, offset, CHANGE, body, self.sealer)
            records.append(record)
            offset += len(record)
        data = b"".join(records)
        if offset > self.allocated:
            data += bytes(PREALLOCATE)
        try:
            written = os.pwrite(self._fd, data, self.size)
            if written != len(data):
                raise OSError(errno.EIO, f"short write: {written} of {len(data)} bytes")
            if sync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self.failed = exc
            self._unwrite()
            raise ProposalFailed(
                f"writing {self.file} at offset {self.size} failed: {exc}; the store accepts "
                "no more writes (reads go on); reopen it once the disk is fixed"
            ) from exc
        self.allocated = max(self.allocated, self.size + len(data))
        self.size = offset

    def write_ahead(self) -> None:
        """Write ``PREALLOCATE`` zeros past the end now, and fsync them (see ``append``),
        unless that many are there already: done when the log is opened and when it switches
        segments, so that the first commits after that do not pay for growing the file
        (about 8 ms on ext4, for the commit that happens to need it). Best effort: if it
        fails, the next append grows the file itself."""
        if self.allocated >= self.size + PREALLOCATE:
            return
        try:
            os.pwrite(self._fd, bytes(PREALLOCATE), self.size)
            os.fdatasync(self._fd)
            self.allocated = self.size + PREALLOCATE
        except OSError:
            with contextlib.suppress(OSError):
                self.allocated = max(self.allocated, os.fstat(self._fd).st_size)

    def _unwrite(self) -> None:
        """After a failed write or fsync, cut the file back to its last durable size, so
        the unacknowledged records do not come back on the next open (best effort: the
        log is failed either way)."""
        try:
            os.ftruncate(self._fd, self.size)
            self.allocated = self.size
            os.fdatasync(self._fd)
        except OSError:
            pass

    def read_changes(self, start: Version, end: Version) -> list[Change]:
        """The changes with ``start < version <= end``, read from the kept segments.

        Reading starts at the newest segment whose snapshot is not after ``start`` (after a
        rollback that is the rolled-back line of history, as it should be) and goes on
        through the newer ones, skipping the changes a compaction copied into the next
        segment. CHANGE records hold new objects only, so the state is replayed from that
        snapshot to give each update its old object. HistoryCompacted if ``start`` is older
        than every kept snapshot.
        """
        segments = []
        for path in sorted(self.directory.glob("*.wslog")):
            if not path.stem.isdigit():
                continue
            try:
                _data, header, result = read_segment(path, self.size if path == self.file else None)
            except FileNotFoundError:  # retired by a compaction meanwhile
                continue
            records = result.records
            snapshot = loads(body_of(header, records[0], self.sealer, str(path)))
            segments.append((path, header, records, snapshot))
        usable = [i for i, seg in enumerate(segments) if seg[3]["version"] <= start.index]
        if not usable:
            oldest = min((seg[3]["version"] for seg in segments), default=end.index)
            raise HistoryCompacted(Version(oldest), end)
        first = usable[-1]
        current: dict[tuple[str, str], Any] = {}
        for name, items in segments[first][3]["tables"].items():
            decode = self.decoders[name]
            for item in items:
                obj = decode(item)
                current[name, obj.id] = obj
        last = segments[first][3]["version"]
        changes: list[Change] = []
        for path, header, records, _snapshot in segments[first:]:
            for record in records[1:]:
                body = body_of(header, record, self.sealer, str(path))
                change = _decode_change(body, self.decoders, str(path), record.offset)
                if change.version.index <= last:
                    continue  # already read from the segment before (a compaction's tail)
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

    def sync(self) -> None:
        """fsync the segment (for the interval durability mode)."""
        if self.failed is None:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self.failed = exc

    # -- compaction (write_epoch in a worker thread; switch in the group committer) --------

    def write_epoch(self, version: Version, tables: dict[str, list[bytes]]) -> PreparedEpoch:
        """Write a new segment holding a snapshot at ``version``, under a temporary name
        (invisible to opening until ``switch``). ``tables`` maps each table to JSON pieces,
        each a comma-separated run of encoded objects (see ``encode_piece``)."""
        header = self.next_header()
        size = self.write_epoch_file(header, snapshot_body_of_pieces(version, tables))
        return self.prepared(version, header, size)

    def next_header(self) -> SegmentHeader:
        """The header of the segment a compaction starts next."""
        return SegmentHeader(
            FORMAT, self.header.flags, self.header.segment + 1, self.header.lineage, time.time_ns()
        )

    def epoch_paths(self, header: SegmentHeader) -> tuple[Path, Path]:
        """(temporary, final) paths of the segment ``header`` starts."""
        final = segment_path(self.directory, header.segment)
        # Unique per attempt: an orphaned compaction child of a killed process may still be
        # writing its own temporary file when a new opener compacts.
        return final.with_name(f".{final.name}.{header.created_ns}.tmp"), final

    def write_epoch_file(self, header: SegmentHeader, body: bytes) -> int:
        """Write and fsync the temporary file of a new epoch; return its size. Touches
        nothing else of the log, so it may run in a forked child process."""
        data = header.pack() + frame(header, HEADER_SIZE, SNAPSHOT, body, self.sealer)
        tmp, _final = self.epoch_paths(header)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(data)

    def prepared(self, version: Version, header: SegmentHeader, size: int) -> PreparedEpoch:
        """Open the written temporary file of a new epoch, ready for ``switch``."""
        tmp, final = self.epoch_paths(header)
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
        return PreparedEpoch(version, header, tmp, final, fd, size)

    def switch(self, epoch: PreparedEpoch, tail: Sequence[bytes], keep: int) -> None:
        """Make ``epoch`` the current segment: append ``tail`` (the changes committed since
        its snapshot), fsync, rename it into place, then retire segments beyond ``keep``
        epochs. Until the rename, opening still finds the old segment, complete."""
        offset = epoch.size
        records = []
        for body in tail:
            record = frame(epoch.header, offset, CHANGE, body, self.sealer)
            records.append(record)
            offset += len(record)
        try:
            if records:
                os.write(epoch.fd, b"".join(records))
            os.fsync(epoch.fd)
            os.close(epoch.fd)
            os.replace(epoch.tmp, epoch.final)
            fsync_dir(self.directory)
        except OSError as exc:
            self.failed = exc
            raise ProposalFailed(f"switching to {epoch.final} failed: {exc}") from exc
        old_fd, old_size = self._fd, self.size
        self._fd = os.open(epoch.final, os.O_WRONLY)
        with contextlib.suppress(OSError):  # an old segment reads the same with them
            os.ftruncate(old_fd, old_size)  # the zeros written ahead (see ``append``)
        os.close(old_fd)
        self.header = epoch.header
        self.file = epoch.final
        self.size = self.allocated = offset
        self.snapshot_end = epoch.size
        for path in sorted(self.directory.glob("*.wslog")):
            if path.stem.isdigit() and int(path.stem) <= epoch.header.segment - keep:
                path.unlink()
        fsync_dir(self.directory)
        self.write_ahead()

    def close(self) -> None:
        """Cut off the zeros written ahead, close the segment and release the lock."""
        try:
            if self.allocated > self.size:
                with contextlib.suppress(OSError):  # else the next open cuts them off
                    os.ftruncate(self._fd, self.size)
            os.close(self._fd)
        finally:
            self.lock.release()


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
    for file in sorted(Path(directory).glob("*.wslog")):
        if not file.stem.isdigit():
            continue
        data, header, result = read_segment(file)
        body = body_of(header, result.records[0], sealer_for(file, header, key), str(file))
        version = Version(loads(body)["version"])
        out.append(EpochInfo(header.segment, version, header.created_ns / 1e9, len(data), file))
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
        number = epochs[-1].segment + 1
        header = SegmentHeader(FORMAT, old.flags, number, old.lineage, time.time_ns())
        new = header.pack() + frame(header, HEADER_SIZE, SNAPSHOT, body, sealer)
        final = segment_path(path, number)
        write_atomically(final, new)
        return EpochInfo(number, version, header.created_ns / 1e9, len(new), final)
    finally:
        lock.release()


def encode_piece(objects: Sequence[Any]) -> bytes:
    """Encode a run of objects as comma-separated JSON (a piece of a snapshot's table)."""
    return ",".join([object_json(o) for o in objects]).encode()


def snapshot_body_of_pieces(version: Version, tables: dict[str, list[bytes]]) -> bytes:
    """A SNAPSHOT body assembled from pieces, without re-encoding anything."""
    parts = [b'{"version":%d,"tables":{' % version.index]
    for i, (name, pieces) in enumerate(tables.items()):
        parts.append(b"%s%s:[" % (b"," if i else b"", dump_data(name)))
        parts.append(b",".join(p for p in pieces if p))
        parts.append(b"]")
    parts.append(b"}}")
    return b"".join(parts)


def change_body(version: Version, actions: Sequence[StoreAction]) -> bytes:
    """The CHANGE record body of one commit: ``{"version":V,"actions":[[kind,table,obj],...]}``
    (the JSON of ``encode``'s values, written directly)."""
    names = _TABLE_JSON
    parts = []
    for action in actions:
        table = action.table
        name = names.get(table)
        if name is None:
            name = names[table] = object_json(table)
        parts.append(f"[{action.kind:d},{name},{object_json(action.obj)}]")
    return f'{{"version":{version.index:d},"actions":[{",".join(parts)}]}}'.encode()


_TABLE_JSON: dict[str, str] = {}
"""The JSON text of table names (a str each; few)."""


def _decode_snapshot(
    body: bytes, decoders: dict[str, Callable[[Any], Any]], file: str, offset: int
) -> tuple[Version, dict[str, list[Any]]]:
    """The version and objects of a SNAPSHOT body. Each table's array is decoded a member at
    a time (see ``load_members``): a snapshot holds millions of objects."""
    version: Version | None = None
    objects: dict[str, list[Any]] | None = None
    try:
        text = body.decode()
        index = skip_to(text, 0, "{")
        more, index = _first(text, index, "}")
        while more:
            key, index = load_value(text, index)
            index = skip_to(text, index, ":")
            if key == "tables":
                objects = {}
                index = skip_to(text, index, "{")
                more_tables, index = _first(text, index, "}")
                while more_tables:
                    name, index = load_value(text, index)
                    decode = decoders.get(name)
                    if decode is None:
                        raise StoreError(
                            f"{file}: the log has a table {name!r} the schema does not; "
                            "open it with a schema that declares it"
                        )
                    index = skip_to(text, index, ":")
                    objects[name], index = load_members(text, index, decode)
                    more_tables, index = _separator(text, index, "}")
            else:
                value, index = load_value(text, index)
                if key == "version":
                    version = Version(value)
            more, index = _separator(text, index, "}")
        if skip_space(text, index) != len(text):
            raise ValueError(f"extra data at character {index}")
        if version is None or objects is None:
            raise KeyError("version" if version is None else "tables")
    except (ValueError, KeyError, TypeError, DecodeError) as exc:
        raise LogCorrupt(file, offset, f"snapshot does not decode: {exc}") from exc
    return version, objects


def _first(text: str, index: int, closing: str) -> tuple[bool, int]:
    """At the start of a JSON object's members: (False, index after ``closing``) if it is
    empty, else (True, index)."""
    at = skip_space(text, index)
    if text[at : at + 1] == closing:
        return False, at + 1
    return True, index


def _separator(text: str, index: int, closing: str) -> tuple[bool, int]:
    """After a member of a JSON object: (True, index after ',') or (False, index after
    ``closing``); ValueError for anything else."""
    index = skip_space(text, index)
    found = text[index : index + 1]
    if found == ",":
        return True, index + 1
    if found == closing:
        return False, index + 1
    raise ValueError(f"expected ',' or {closing!r} at character {index}")


_KINDS: Final = {int(kind): kind for kind in ActionKind}


def _decode_change(
    body: bytes, decoders: dict[str, Callable[[Any], Any]], file: str, offset: int
) -> Change:
    try:
        data = loads(body)
        kinds: list[ActionKind] = []
        tables: list[str] = []
        objs: list[Any] = []
        for kind, table, obj in data["actions"]:
            decode = decoders.get(table)
            if decode is None:
                raise StoreError(
                    f"{file}: the log has a table {table!r} the schema does not; "
                    "open it with a schema that declares it"
                )
            if type(table) is not str:
                raise TypeError(f"table name {table!r} is not a str")
            kinds.append(_KINDS[kind])
            tables.append(table)
            objs.append(decode(obj))
        return new_change(Version(data["version"]), LoggedActions(kinds, tables, objs))
    except (ValueError, KeyError, TypeError, DecodeError) as exc:
        raise LogCorrupt(file, offset, f"change does not decode: {exc}") from exc


@attrs.frozen
class PreparedEpoch:
    """A new segment written up to its snapshot, waiting to be switched to."""

    version: Version
    header: SegmentHeader
    tmp: Path
    final: Path
    fd: int
    size: int
