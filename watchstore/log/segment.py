"""Segment files read and their bodies encoded (sans-I/O but for reading a whole file).

``read_segment`` checks a segment as opening does: header, format, framing and checksums (see
``_records``), and that it opens with a snapshot; ``frame`` and ``body_of`` seal and open
record bodies of an encrypted store; the rest encodes and decodes SNAPSHOT and CHANGE bodies
(JSON; see ``docs/format.md``). ``find_lost`` is salvage's search for what follows damage.
A fence (``FENCE.json``) is left by a log whose failed append could not be cut off: every
reader stops the segment it names at its size.
"""

from __future__ import annotations

import json
import os
import stat
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

import attrs

from ..core.errors import LogCorrupt, StoreError, UnsupportedFormat
from .bodies import body_version
from .crypto import Sealer, SealError
from .records import (
    FLAG_ENCRYPTED,
    HEADER_SIZE,
    SNAPSHOT,
    HeaderError,
    Record,
    Scan,
    SegmentHeader,
    pack_record,
    parse_header,
    records_after,
    scan,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from ..core.model import Version
    from .records import Source

FORMAT: Final = 2
"""The format version this library writes (and the newest it reads)."""
FORMATS: Final = frozenset({1, 2})
"""The format versions this library reads."""
FENCE: Final = "FENCE.json"
"""The fence's file name in a store directory."""


def segment_path(directory: Path, number: int) -> Path:
    """The file of segment ``number``."""
    return directory / f"{number:08d}.wslog"


def frame(
    header: SegmentHeader,
    offset: int,
    kind: int,
    body: bytes,
    sealer: Sealer | None,
    synced: int = 0,
) -> bytes:
    """The bytes of a record of ``kind`` at ``offset`` (written while the segment is durable
    up to ``synced``): sealed first if encrypting."""
    if sealer is not None:
        body = sealer.seal(header, offset, kind, body)
    return pack_record(header, offset, kind, body, synced)


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


@attrs.frozen
class Fence:
    """Where a segment ends, recorded by a log whose failed append could not be cut off."""

    segment: int
    lineage: bytes
    size: int

    def dump(self) -> bytes:
        """The fence as ``FENCE.json`` holds it."""
        return json.dumps(
            {"segment": self.segment, "lineage": self.lineage.hex(), "size": self.size}
        ).encode()


def read_fence(directory: Path) -> Fence | None:
    """The fence of a store directory, if it has a valid one."""
    try:
        with open(directory / FENCE, "rb") as f:
            data = json.loads(f.read(4096))
        fence = Fence(int(data["segment"]), bytes.fromhex(data["lineage"]), int(data["size"]))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return fence if fence.size >= HEADER_SIZE else None


class FileSource:
    """A segment file read with ``pread`` (a ``log.records.Source``): never whole."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the end of ``size``)."""
        length = max(0, min(length, self.size - offset))
        parts = []
        while length > 0:
            part = os.pread(self._fd, length, offset)
            if not part:
                break  # the file shrank meanwhile: as if it ended here
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return b"".join(parts)


@contextmanager
def open_segment(file: Path) -> Iterator[FileSource]:
    """A segment file to read, for the block: opened without following a link and only if
    it is a regular file (a FIFO would block, a link to a device never end; LogCorrupt).
    Its size stops at the end of its last data extent: a sparse tail is not read."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise LogCorrupt(
            str(file), 0, f"the segment cannot be read ({exc.strerror}): it must be a regular file"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LogCorrupt(str(file), 0, "the segment is not a regular file")
        yield FileSource(fd, _data_extent_end(fd, info.st_size))
    finally:
        os.close(fd)


def _data_extent_end(fd: int, size: int) -> int:
    """Where the file's last extent of data ends (``size`` if the system cannot tell)."""
    end, at = 0, 0
    try:
        while at < size:
            at = os.lseek(fd, at, os.SEEK_DATA)
            at = end = os.lseek(fd, at, os.SEEK_HOLE)
    except OSError:  # ENXIO: no data after ``at``; EINVAL: no SEEK_DATA here
        return end if end else size
    return min(end, size)


def read_segment(file: Path, limit: int | None = None) -> tuple[int, SegmentHeader, Scan]:
    """Read and verify a segment file (up to ``limit`` bytes, or to where a fence stops it):
    its header (LogCorrupt, or UnsupportedFormat for a newer format) and records, which must
    open with a snapshot. Returns the size read, the header and the records."""
    with open_segment(file) as source:
        if limit is not None:
            source.size = min(source.size, limit)
        try:
            header = parse_header(source.read(0, HEADER_SIZE))
        except HeaderError as exc:
            raise LogCorrupt(str(file), 0, exc.reason) from None
        if header.format not in FORMATS:
            raise UnsupportedFormat(
                f"{file} is in log format {header.format}, newer than this watchstore reads "
                f"({FORMAT}); upgrade watchstore to open it"
            )
        fence = read_fence(file.parent)
        if fence is not None and (fence.segment, fence.lineage) == (
            header.segment,
            header.lineage,
        ):
            source.size = min(source.size, fence.size)
        result = scan(source, header)
        size = source.size
    if not result.records:
        reason = result.corrupt or "the segment holds no snapshot"
        raise LogCorrupt(str(file), HEADER_SIZE, reason)
    first = result.records[0]
    if first.kind != SNAPSHOT:
        raise LogCorrupt(str(file), first.offset, "the segment does not start with a snapshot")
    return size, header, result


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


def find_lost(
    file: Path, source: Source, header: SegmentHeader, end: int, sealer: Sealer | None
) -> tuple[int, ...]:
    """The versions of the records that verify after the damage at ``end`` (checksums are
    seeded by offset, so a record verifies only where it was written), found in one pass."""
    lost = set()
    for record in records_after(source, header, end + 1):
        try:
            lost.add(body_version(header.format, body_of(header, record, sealer, str(file))))
        except (ValueError, KeyError, TypeError, LogCorrupt):
            continue
    return tuple(sorted(lost))
