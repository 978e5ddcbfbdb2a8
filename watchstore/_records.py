"""The epoch log's on-disk framing (sans-I/O): segment headers and checksummed records.

A segment file is a 44-byte header followed by records. Every checksum is seeded with the
store's lineage, the segment number and the record's offset, so a record copied to another
place, segment or store does not verify (see ``docs/format.md``):

    header := magic "wslog\\0\\r\\n" | format u16 | flags u16 | segment u32 | lineage 16B
              | created_ns u64 | header_crc u32             (little-endian, 44 bytes)
    record := length u32 | kind u8 | head_crc u32 | body_crc u32 | body[length] | 0xA5

``scan`` reads records until the data ends and says how it ended. The rule that tells a torn
tail (an append cut short by a crash: safe to truncate, since it was never acknowledged) from
corruption (which must stop the open): an append is one write, fsynced before it is
acknowledged, so a crash can only leave a *prefix* of it, possibly followed by zeros where the
file was extended but never written. Every record ends with the byte 0xA5, so a complete
record never ends in zero. Hence: a failing record that reaches into the trailing zeros of the
data (or past its end) was never fully written, a torn tail; a failing record that ends before
them is damage.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs
from crc32c import crc32c

MAGIC: Final = b"wslog\x00\r\n"
HEADER: Final = struct.Struct("<8sHHI16sQI")
HEADER_SIZE: Final = HEADER.size  # 44
RECORD_HEAD: Final = struct.Struct("<IBII")
RECORD_HEAD_SIZE: Final = RECORD_HEAD.size  # 13
RECORD_END: Final = 0xA5
"""The last byte of every record: non-zero, so a zero-filled tail is never a whole record."""
MAX_BODY: Final = 1 << 30
"""Largest record body accepted when reading (1 GiB): a bigger length is damage."""

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


_END: Final = bytes((RECORD_END,))


def pack_record(header: SegmentHeader, offset: int, kind: int, body: bytes) -> bytes:
    """Frame ``body`` as a record of ``kind`` at ``offset`` of the segment."""
    seed = _seed(header.lineage, header.segment, offset)
    length = len(body)
    head_crc = crc32c(length.to_bytes(4, "little") + bytes((kind,)), seed)
    return RECORD_HEAD.pack(length, kind, head_crc, crc32c(body, seed)) + body + _END


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
    ``end`` instead. Both False/None: the data ended cleanly.
    """

    records: list[Record]
    end: int
    torn: bool = False
    corrupt: str | None = None


def record_size(body_length: int) -> int:
    """Bytes a record with a body of ``body_length`` takes in the file."""
    return RECORD_HEAD_SIZE + body_length + 1


def scan(data: bytes | memoryview, header: SegmentHeader, start: int = HEADER_SIZE) -> Scan:
    """Verify the records of segment ``data`` from ``start``; see the module docstring."""
    view = memoryview(data)
    size = len(view)
    records: list[Record] = []
    offset = start
    lineage, segment = header.lineage, header.segment
    zeros_from: int | None = None  # where the trailing zeros start (computed on failure)
    while offset < size:
        if size - offset < RECORD_HEAD_SIZE:
            return _ended(
                records,
                offset,
                offset + RECORD_HEAD_SIZE,
                view,
                zeros_from,
                "record header cut short",
            )
        length, kind, head_crc, body_crc = RECORD_HEAD.unpack_from(view, offset)
        seed = _seed(lineage, segment, offset)
        if crc32c(bytes(view[offset : offset + 5]), seed) != head_crc:
            # The extent is unknown: torn only if the zeros start inside the header.
            return _ended(
                records,
                offset,
                offset + RECORD_HEAD_SIZE,
                view,
                zeros_from,
                "record header checksum mismatch",
            )
        if kind not in KINDS or length > MAX_BODY:
            return Scan(records, offset, corrupt=f"invalid record (kind {kind}, {length} B)")
        end = offset + record_size(length)
        if end > size:
            return Scan(records, offset, torn=True)
        body = bytes(view[offset + RECORD_HEAD_SIZE : end - 1])
        if crc32c(body, seed) != body_crc or view[end - 1] != RECORD_END:
            return _ended(records, offset, end, view, zeros_from, "record checksum mismatch")
        records.append(Record(offset, kind, body))
        offset = end
    return Scan(records, offset)


def _ended(
    records: list[Record],
    offset: int,
    end: int,
    view: memoryview,
    zeros_from: int | None,
    reason: str,
) -> Scan:
    """Classify the failing record at ``offset`` (ending at ``end``): torn or damaged."""
    if zeros_from is None:
        zeros_from = len(bytes(view).rstrip(b"\0"))
    if end > zeros_from:
        return Scan(records, offset, torn=True)
    return Scan(records, offset, corrupt=reason)
