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
from typing import TYPE_CHECKING, Final

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


@attrs.frozen
class _Head:
    """A record head that verifies: its fields and where the record ends."""

    length: int
    kind: int
    synced: int
    end: int


def _head(data: bytes, header: SegmentHeader, offset: int) -> _Head | str:
    """The verified head of the record at ``offset``, or why it does not verify."""
    size = len(data)
    if header.format < 2:
        if size - offset < RECORD_HEAD_SIZE:
            return "record header cut short"
        length, kind, head_crc, _body_crc = RECORD_HEAD.unpack_from(data, offset)
        synced, covered, head = 0, 5, RECORD_HEAD_SIZE
    else:
        if size - offset < RECORD_HEAD_2.size:
            return "record header cut short"
        length, kind, synced, head_crc, _body_crc = RECORD_HEAD_2.unpack_from(data, offset)
        covered, head = 13, RECORD_HEAD_2.size
    seed = _seed(header.lineage, header.segment, offset)
    if crc32c(data[offset : offset + covered], seed) != head_crc:
        return "record header checksum mismatch"
    if kind not in KINDS or length > MAX_BODY or synced > offset:
        return f"invalid record (kind {kind}, {length} B, synced {synced})"
    return _Head(length, kind, synced, offset + head + length + 1)


def _body(data: bytes, header: SegmentHeader, offset: int, head: _Head) -> bytes | None:
    """The body of the record at ``offset`` if it verifies (the head already does)."""
    body_crc = struct.unpack_from("<I", data, head.end - head.length - 5)[0]
    body = data[head.end - head.length - 1 : head.end - 1]
    seed = _seed(header.lineage, header.segment, offset)
    if crc32c(body, seed) != body_crc or data[head.end - 1] != RECORD_END:
        return None
    return body


def scan(data: bytes, header: SegmentHeader, start: int = HEADER_SIZE) -> Scan:
    """Verify the records of segment ``data`` from ``start``; see the module docstring."""
    records: list[Record] = []
    offset = start
    size = len(data)
    while offset < size:
        head = _head(data, header, offset)
        if isinstance(head, str):
            extent = offset + head_size(header)
            return _ended(data, header, records, offset, extent, head)
        if head.end > size:
            return _ended(data, header, records, offset, head.end, "record cut short")
        body = _body(data, header, offset, head)
        if body is None:
            return _ended(data, header, records, offset, head.end, "record checksum mismatch")
        records.append(Record(offset, head.kind, body))
        offset = head.end
    return Scan(records, offset)


def data_end(data: bytes) -> int:
    """The offset just after the last non-zero byte of ``data`` (0 if all zeros): the end of
    what was written, before the zeros written ahead. Looks at the tail only."""
    stop = len(data)
    while stop > 0:
        begin = max(0, stop - (1 << 16))
        chunk = data[begin:stop].rstrip(b"\0")
        if chunk:
            return begin + len(chunk)
        stop = begin
    return 0


def _ended(
    data: bytes,
    header: SegmentHeader,
    records: list[Record],
    offset: int,
    extent: int,
    reason: str,
) -> Scan:
    """Classify what follows the good records: the failing record at ``offset`` (reaching
    to ``extent``) is a torn tail, damage, or the start of the zeros written ahead."""
    written = data_end(data)
    if offset >= written:
        return Scan(records, offset, padding=len(data) - offset)
    if header.format < 2:
        torn = extent > written
    else:
        cut = extent > written or _cut_short(data, offset, extent)
        torn = cut and _durable_after(data, header, offset) is None
    return Scan(records, offset, torn=True) if torn else Scan(records, offset, corrupt=reason)


_ZERO_SECTOR: Final = bytes(SECTOR)


def _cut_short(data: bytes, start: int, end: int) -> bool:
    """True if the record in ``data[start:end]`` looks like a write cut short: the data ends
    inside it, or its part in some 512-byte sector of the file is all zeros."""
    if end > len(data):
        return True
    sector = start - start % SECTOR
    while sector < end:
        low, high = max(sector, start), min(sector + SECTOR, end)
        if data[low:high] == _ZERO_SECTOR[: high - low]:
            return True
        sector += SECTOR
    return False


def _durable_after(data: bytes, header: SegmentHeader, offset: int) -> Record | None:
    """The first record that verifies after ``offset`` and says the segment was durable past
    ``offset`` when it was written (so the record at ``offset`` was acknowledged)."""
    found = _candidates(data, header, offset + 1, lambda synced: synced > offset)
    return next((record for record, _synced in found), None)


def records_after(data: bytes, header: SegmentHeader, start: int) -> Iterator[Record]:
    """Every record that verifies at an offset from ``start`` on, in order, found in time
    linear in the data (for salvage: what lies after damage). Records never overlap."""
    for record, _synced in _candidates(data, header, start, lambda _synced: True):
        yield record


_KIND_BYTE: Final = re.compile(b"[%c%c]" % (SNAPSHOT, CHANGE))


def _candidates(
    data: bytes, header: SegmentHeader, start: int, wanted: Callable[[int], bool]
) -> Iterator[tuple[Record, int]]:
    """The verifying records from ``start`` on whose ``synced`` passes ``wanted``. Only
    offsets whose kind byte is valid are tried (found by a regular expression, in C), and a
    head is checksummed only if its length fits and its ``synced`` is wanted."""
    lead = 4  # the kind byte's place in a record head
    stop = data_end(data)
    size = len(data)
    at = start + lead
    while at < stop:
        found = _KIND_BYTE.search(data, at, stop)
        if found is None:
            return
        offset = found.start() - lead
        at = found.start() + 1
        head_bytes = head_size(header)
        if offset + head_bytes > size:
            return
        if header.format < 2:
            length = struct.unpack_from("<I", data, offset)[0]
            synced = 0
        else:
            length, _kind, synced = struct.unpack_from("<IBQ", data, offset)
            if synced > offset or not wanted(synced):
                continue
        if length > MAX_BODY or offset + head_bytes + length + 1 > stop:
            continue
        head = _head(data, header, offset)
        if isinstance(head, str):
            continue
        body = _body(data, header, offset, head)
        if body is None:
            continue
        yield Record(offset, head.kind, body), head.synced
        at = head.end + lead
