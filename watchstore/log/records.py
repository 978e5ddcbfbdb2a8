"""The epoch log's on-disk framing (sans-I/O): segment headers and checksummed records.

A segment file is a 44-byte header followed by records. Every checksum is seeded with the
store's lineage, the segment number and the record's offset, so a record copied to another
place, segment or store does not verify (see ``docs/format.md``):

    header := magic "wslog\\0\\r\\n" | format u16 | flags u16 | segment u32 | lineage 16B
              | created_ns u64 | header_crc u32             (little-endian, 44 bytes)
    record := length u32 | kind u8 | synced u64 | head_crc u32 | body_crc u32
              | body[length] | 0xA5                        (format 2; format 1 has no synced)

``synced`` is how much of the segment was known durable (fsynced) when the record's write was
issued: with ``durability="always"``, the offset where that write started.

``scan`` reads records until the data ends and says how it ended. Where reading stops at an
offset D with data after it, that data is a torn tail (an append cut short by a crash: never
acknowledged, safe to cut off) or damage (which must stop the open). Format 2's rule, exact:

- zeros only from D on: the segment ends at D (the zeros are space written ahead);
- else the tail is torn iff (1) no record verifies anywhere after D whose ``synced`` is past
  D (a later write would prove D durable), and (2) the record at D shows what a write cut
  short leaves: it reaches past the end of the data or into its trailing zeros, or the part
  of it (of its head, if the head does not verify) in some 512-byte sector of the file is all
  zeros (a sector that never reached the disk, whatever order the others landed in);
- otherwise it is damage.

Format 1 records carry no ``synced``: a failing record there is torn iff it reaches into
the trailing zeros or past the end of the data.
"""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Final, Protocol

import attrs
from crc32c import crc32c

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MAGIC: Final = b"wslog\x00\r\n"
HEADER: Final = struct.Struct("<8sHHI16sQI")
HEADER_SIZE: Final = HEADER.size  # 44
RECORD_HEAD: Final = struct.Struct("<IBII")
"""Format 1's record head: length, kind, head_crc, body_crc."""
RECORD_HEAD_SIZE: Final = RECORD_HEAD.size  # 13
RECORD_HEAD_2: Final = struct.Struct("<IBQII")
"""Format 2's record head: length, kind, synced, head_crc, body_crc."""
RECORD_END: Final = 0xA5
"""The last byte of every record: non-zero, so a zero-filled tail is never a whole record."""
MAX_BODY: Final = 1 << 30
"""Largest record body accepted when reading (1 GiB): a bigger length is damage."""
SECTOR: Final = 512
"""The unit a disk writes atomically: a torn write leaves whole sectors old or new."""

SNAPSHOT: Final = 1
"""Record kind: the full state at a version; opens an epoch."""
CHANGE: Final = 2
"""Record kind: one committed transaction."""
KINDS: Final = frozenset({SNAPSHOT, CHANGE})

FLAG_ENCRYPTED: Final = 1
"""Header flag: record bodies are AES-GCM encrypted."""


@attrs.frozen
class SegmentHeader:
    """What a segment file says about itself."""

    format: int
    flags: int
    segment: int
    lineage: bytes
    created_ns: int

    def pack(self) -> bytes:
        """The 44 header bytes, checksum included."""
        head = HEADER.pack(
            MAGIC, self.format, self.flags, self.segment, self.lineage, self.created_ns, 0
        )[:-4]
        return head + crc32c(head).to_bytes(4, "little")


class HeaderError(Exception):
    """The data does not start with a valid segment header; ``reason`` says why."""

    def __init__(self, reason: str, *, torn: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.torn = torn


def parse_header(data: bytes) -> SegmentHeader:
    """Parse a segment header; HeaderError if it is missing, damaged or not ours."""
    if len(data) < HEADER_SIZE:
        raise HeaderError(
            f"file is {len(data)} bytes, shorter than a segment header",
            torn=not data.strip(b"\0") or MAGIC.startswith(data[:8]),
        )
    magic, fmt, flags, segment, lineage, created, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise HeaderError(f"not a watchstore log segment (magic {magic!r})")
    if crc32c(data[: HEADER_SIZE - 4]) != crc:
        raise HeaderError("segment header checksum mismatch")
    return SegmentHeader(fmt, flags, segment, lineage, created)


def _seed(lineage: bytes, segment: int, offset: int) -> int:
    return crc32c(lineage + segment.to_bytes(4, "little") + offset.to_bytes(8, "little"))


END: Final = bytes((RECORD_END,))
"""The end byte of a record, as bytes."""


def head_size(header: SegmentHeader) -> int:
    """Bytes of a record head in a segment of ``header``'s format."""
    return RECORD_HEAD_SIZE if header.format < 2 else RECORD_HEAD_2.size


def record_head(
    header: SegmentHeader, offset: int, kind: int, body: bytes, synced: int = 0
) -> bytes:
    """The head of a record of ``kind`` with ``body`` at ``offset`` of the segment, whose
    write is issued when the segment is durable up to ``synced`` (format 2; format 1 has no
    such field). The record is this head, the body, then the end byte ``RECORD_END``."""
    seed = _seed(header.lineage, header.segment, offset)
    length = len(body)
    if header.format < 2:
        head_crc = crc32c(struct.pack("<IB", length, kind), seed)
        return RECORD_HEAD.pack(length, kind, head_crc, crc32c(body, seed))
    head_crc = crc32c(struct.pack("<IBQ", length, kind, synced), seed)
    return RECORD_HEAD_2.pack(length, kind, synced, head_crc, crc32c(body, seed))


def pack_record(
    header: SegmentHeader, offset: int, kind: int, body: bytes, synced: int = 0
) -> bytes:
    """Frame ``body`` as a record of ``kind`` at ``offset`` (see ``record_head``)."""
    return record_head(header, offset, kind, body, synced) + body + END


@attrs.frozen
class Record:
    """A verified record: its offset in the segment, kind and body."""

    offset: int
    kind: int
    body: bytes


@attrs.frozen
class Scan:
    """The records of a segment and how the data ended.

    ``end`` is the offset just after the last good record. ``torn`` is True when what follows
    is a torn tail (truncate to ``end``); ``corrupt`` holds the reason when it is damage at
    ``end`` instead. Both False/None: the data ended cleanly, possibly followed by
    ``padding`` bytes of zeros (space written ahead of the records).
    """

    records: list[Record]
    end: int
    torn: bool = False
    corrupt: str | None = None
    padding: int = 0


def record_size(body_length: int, header: SegmentHeader | None = None) -> int:
    """Bytes a record with a body of ``body_length`` takes in a segment of ``header``'s
    format (format 1 without one)."""
    head = RECORD_HEAD_SIZE if header is None else head_size(header)
    return head + body_length + 1


class Source(Protocol):
    """What ``scan`` reads a segment from: its ``size`` and its bytes at an offset (fewer
    than asked only at the end). ``bytes`` for data in memory (``BytesSource``); the log
    reads files with ``pread``, never whole."""

    size: int

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end)."""
        ...


class BytesSource:
    """A ``Source`` over bytes held in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end)."""
        return self._data[offset : offset + length]


def as_source(data: bytes | Source) -> Source:
    """``data`` as a Source."""
    return BytesSource(data) if isinstance(data, bytes | bytearray) else data


@attrs.frozen
class _Head:
    """A record head that verifies: its fields and where the record ends."""

    length: int
    kind: int
    synced: int
    end: int


def _unpack_head(header: SegmentHeader, head: bytes) -> tuple[int, int, int, int, int]:
    """(length, kind, synced, head_crc, body_crc) of a record head's bytes."""
    if header.format < 2:
        length, kind, head_crc, body_crc = RECORD_HEAD.unpack(head)
        return length, kind, 0, head_crc, body_crc
    return RECORD_HEAD_2.unpack(head)


def _head(source: Source, header: SegmentHeader, offset: int) -> _Head | str:
    """The verified head of the record at ``offset``, or why it does not verify."""
    size = head_size(header)
    head = source.read(offset, size)
    if len(head) < size:
        return "record header cut short"
    length, kind, synced, head_crc, _body_crc = _unpack_head(header, head)
    covered = 5 if header.format < 2 else 13
    if crc32c(head[:covered], _seed(header.lineage, header.segment, offset)) != head_crc:
        return "record header checksum mismatch"
    if kind not in KINDS or length > MAX_BODY or synced > offset:
        return f"invalid record (kind {kind}, {length} B, synced {synced})"
    return _Head(length, kind, synced, offset + size + length + 1)


def _body(source: Source, header: SegmentHeader, offset: int, head: _Head) -> bytes | None:
    """The body of the record at ``offset`` if it verifies (the head already does)."""
    size = head_size(header)
    body_crc = _unpack_head(header, source.read(offset, size))[4]
    rest = source.read(offset + size, head.length + 1)
    seed = _seed(header.lineage, header.segment, offset)
    body = rest[:-1]
    if len(rest) != head.length + 1 or rest[-1] != RECORD_END or crc32c(body, seed) != body_crc:
        return None
    return body


def scan(data: bytes | Source, header: SegmentHeader, start: int = HEADER_SIZE) -> Scan:
    """Verify the records of a segment from ``start``; see the module docstring."""
    source = as_source(data)
    records: list[Record] = []
    offset = start
    size = source.size
    while offset < size:
        head = _head(source, header, offset)
        if isinstance(head, str):
            extent = offset + head_size(header)
            return _ended(source, header, records, offset, extent, head)
        if head.end > size:
            return _ended(source, header, records, offset, head.end, "record cut short")
        body = _body(source, header, offset, head)
        if body is None:
            return _ended(source, header, records, offset, head.end, "record checksum mismatch")
        records.append(Record(offset, head.kind, body))
        offset = head.end
    return Scan(records, offset)


CHUNK: Final = 1 << 20
"""Bytes read at a time when searching a segment (its end, records after damage)."""


def data_end(data: bytes | Source) -> int:
    """The offset just after the last non-zero byte (0 if all zeros): the end of what was
    written, before the zeros written ahead. Reads the tail only, a chunk at a time."""
    source = as_source(data)
    stop = source.size
    while stop > 0:
        begin = max(0, stop - CHUNK)
        chunk = source.read(begin, stop - begin).rstrip(b"\0")
        if chunk:
            return begin + len(chunk)
        stop = begin
    return 0


def _ended(
    source: Source,
    header: SegmentHeader,
    records: list[Record],
    offset: int,
    extent: int,
    reason: str,
) -> Scan:
    """Classify what follows the good records: the failing record at ``offset`` (reaching
    to ``extent``) is a torn tail, damage, or the start of the zeros written ahead."""
    written = data_end(source)
    if offset >= written:
        return Scan(records, offset, padding=source.size - offset)
    if header.format < 2:
        torn = extent > written
    else:
        cut = extent > written or _cut_short(source, offset, extent)
        torn = cut and _durable_after(source, header, offset) is None
    return Scan(records, offset, torn=True) if torn else Scan(records, offset, corrupt=reason)


_ZERO_SECTOR: Final = bytes(SECTOR)


def _cut_short(source: Source, start: int, end: int) -> bool:
    """True if the record at ``[start, end)`` looks like a write cut short: the data ends
    inside it, or its part in some 512-byte sector of the file is all zeros."""
    if end > source.size:
        return True
    at = start
    while at < end:
        chunk_end = min(end, at - at % SECTOR + CHUNK)  # chunks never split a sector
        chunk = source.read(at, chunk_end - at)
        sector = at - at % SECTOR
        while sector < chunk_end:
            low, high = max(sector, at), min(sector + SECTOR, chunk_end)
            if chunk[low - at : high - at] == _ZERO_SECTOR[: high - low]:
                return True
            sector += SECTOR
        at = chunk_end
    return False


def _durable_after(source: Source, header: SegmentHeader, offset: int) -> Record | None:
    """The first record that verifies after ``offset`` and says the segment was durable past
    ``offset`` when it was written (so the record at ``offset`` was acknowledged)."""
    found = _candidates(source, header, offset + 1, lambda synced: synced > offset)
    return next((record for record, _synced in found), None)


def records_after(data: bytes | Source, header: SegmentHeader, start: int) -> Iterator[Record]:
    """Every record that verifies at an offset from ``start`` on, in order, found in time
    linear in the data (for salvage: what lies after damage). Records never overlap."""
    for record, _synced in _candidates(as_source(data), header, start, lambda _synced: True):
        yield record


_KIND_BYTE: Final = re.compile(b"[%c%c]" % (SNAPSHOT, CHANGE))


def _candidates(
    source: Source, header: SegmentHeader, start: int, wanted: Callable[[int], bool]
) -> Iterator[tuple[Record, int]]:
    """The verifying records from ``start`` on whose ``synced`` passes ``wanted``. Only
    offsets whose kind byte is valid are tried (found by a regular expression, in C, a chunk
    at a time), and a head is checksummed only if its length fits and its ``synced`` is
    wanted."""
    lead = 4  # the kind byte's place in a record head
    head_bytes = head_size(header)
    stop = data_end(source)
    at = start + lead  # the next kind byte position to try
    while at < stop:
        window_end = min(stop, at + CHUNK)
        window = source.read(at - lead, window_end - at + head_bytes)
        found = _KIND_BYTE.search(window, lead, lead + window_end - at)
        if found is None:
            at = window_end
            continue
        offset = at - lead + found.start() - lead
        at = offset + lead + 1
        head = window[found.start() - lead : found.start() - lead + head_bytes]
        if len(head) < head_bytes:
            return
        length, _kind, synced, _head_crc, _body_crc = _unpack_head(header, head)
        if synced > offset or not wanted(synced):
            continue
        if length > MAX_BODY or offset + head_bytes + length + 1 > stop:
            continue
        verified = _head(source, header, offset)
        if isinstance(verified, str):
            continue
        body = _body(source, header, offset, verified)
        if body is None:
            continue
        yield Record(offset, verified.kind, body), verified.synced
        at = verified.end + lead
