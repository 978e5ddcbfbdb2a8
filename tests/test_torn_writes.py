"""Format 2's end-of-log rule (sans-I/O): a torn final write, whatever order its sectors landed
in, is a torn tail; damage to records that were durable is corruption.

A segment is built as the store writes it: a snapshot, then writes of one or more records each
(group commit puts several commits in one write), every record carrying the ``synced`` of its
write (how much of the segment was fsynced when the write was issued: with
``durability="always"``, where the write starts), in a file kept ending in zeros written ahead.
A power cut during the last write leaves each of its 512-byte sectors either written or still
zero, in any combination (``docs/format.md``).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from watchstore.log.records import (
    CHANGE,
    HEADER_SIZE,
    RECORD_HEAD_2,
    SECTOR,
    SNAPSHOT,
    Record,
    Scan,
    SegmentHeader,
    _seed,
    pack_record,
    records_after,
    scan,
)

if TYPE_CHECKING:
    import random

HEADER = SegmentHeader(2, 0, 7, bytes(range(16)), 0)
AHEAD = 3000
"""Zeros after the records (the space written ahead)."""


class Segment:
    """A format-2 segment built write by write; ``writes`` holds each write's records and
    ``spans`` its (start, end) offsets."""

    def __init__(self) -> None:
        self.data = bytearray(HEADER.pack())
        self.data += pack_record(HEADER, HEADER_SIZE, SNAPSHOT, b'{"version":0,"tables":{}}')
        self.snapshot = Record(HEADER_SIZE, SNAPSHOT, b'{"version":0,"tables":{}}')
        self.writes: list[list[Record]] = []
        self.spans: list[tuple[int, int]] = []
        self.synced = len(self.data)

    def write(self, bodies: list[bytes], *, fsync: bool = True) -> None:
        """Append one write of ``bodies``; then fsync it unless ``fsync`` is False (as the
        interval durability mode does between its fsyncs)."""
        start = len(self.data)
        records = []
        for body in bodies:
            records.append(Record(len(self.data), CHANGE, body))
            self.data += pack_record(HEADER, len(self.data), CHANGE, body, self.synced)
        self.writes.append(records)
        self.spans.append((start, len(self.data)))
        if fsync:
            self.synced = len(self.data)

    def file(self) -> bytes:
        """The segment as a file: its records, then the zeros written ahead."""
        return bytes(self.data) + bytes(AHEAD)

    def records(self, writes: int) -> list[Record]:
        """The snapshot and the records of the first ``writes`` writes."""
        return [self.snapshot] + [r for w in self.writes[:writes] for r in w]


def sectors(start: int, end: int) -> list[int]:
    """The numbers of the file's sectors that ``[start, end)`` touches."""
    return list(range(start // SECTOR, (end - 1) // SECTOR + 1))


def torn(data: bytes, start: int, end: int, landed: set[int]) -> bytes:
    """``data`` with the write at ``[start, end)`` torn: only its sectors in ``landed``
    reached the disk; the others still hold zeros (the space written ahead)."""
    out = bytearray(data)
    for number in sectors(start, end):
        if number not in landed:
            low, high = max(number * SECTOR, start), min((number + 1) * SECTOR, end)
            out[low:high] = bytes(high - low)
    return bytes(out)


def changed(segment: Segment, data: bytes, record: Record) -> bool:
    """True if ``record`` of ``segment`` does not lie in ``data`` as it was written."""
    end = record.offset + RECORD_HEAD_2.size + len(record.body) + 1
    return data[record.offset : end] != segment.data[record.offset : end]


bodies = st.lists(st.binary(min_size=0, max_size=900), min_size=1, max_size=5)
big_bodies = st.lists(st.binary(min_size=200, max_size=900), min_size=2, max_size=5)
"""A write of several sectors: the one a power cut can tear out of order."""
text_bodies = st.lists(
    st.text("abcdefghij{}:,", min_size=1, max_size=700).map(str.encode), min_size=1, max_size=5
)


@pytest.mark.parametrize(
    "landed",
    [[], [-1], [1, -1], [0, 2], [-2, -1], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]],
    ids=["none", "only the last", "all but the first", "every other", "the end", "most"],
)
def test_sectors_of_the_last_write_landing_out_of_order_are_a_torn_tail(
    landed: list[int],
) -> None:
    """The cases a power cut is known for: later sectors of the last write on disk, earlier
    ones not. The records before that write come back, and no error."""
    segment = Segment()
    segment.write([b"durable" * 20])
    segment.write([b"a" * 600, b"b" * 700, b"c" * 600, b"d" * 900])
    start, end = segment.spans[-1]
    touched = sectors(start, end)
    wanted = {touched[i] for i in landed if -len(touched) <= i < len(touched)} - {touched[-1] + 1}
    if len(wanted) == len(touched):
        wanted.discard(touched[0])
    data = torn(segment.file(), start, end, wanted)
    result = scan(data, HEADER)
    assert result.corrupt is None
    assert result.records[:2] == segment.records(1)
    assert result.torn or not data[result.end :].strip(b"\0")


@settings(max_examples=300)
@given(earlier=st.lists(bodies, max_size=3), last=big_bodies, landed=st.sets(st.integers(0, 20)))
def test_a_torn_final_write_is_a_torn_tail_whatever_sectors_landed(
    earlier: list[list[bytes]], last: list[bytes], landed: set[int]
) -> None:
    """Every record of the durable writes comes back, then the records of the last write
    that landed whole before its first missing sector; the rest is a torn tail (or, if
    nothing of it landed, the zeros written ahead). Never corruption."""
    segment = Segment()
    for write in earlier:
        segment.write(write)
    segment.write(last)
    start, end = segment.spans[-1]
    touched = sectors(start, end)
    landed = {touched[i % len(touched)] for i in landed} if landed else set()
    data = torn(segment.file(), start, end, landed)
    result = scan(data, HEADER)
    whole = []
    for record in segment.writes[-1]:
        if changed(segment, data, record):
            break
        whole.append(record)
    assert result.records == segment.records(len(earlier)) + whole
    assert result.corrupt is None
    rest = data[result.end :]
    assert result.torn == bool(rest.strip(b"\0"))


@given(
    earlier=st.lists(bodies, min_size=1, max_size=3),
    unsynced=st.lists(bodies, min_size=1, max_size=3),
    seed=st.randoms(),
)
def test_unsynced_writes_torn_in_any_order_are_a_torn_tail(
    earlier: list[list[bytes]], unsynced: list[list[bytes]], seed: random.Random
) -> None:
    """With writes not fsynced between them (durability "interval" or "none"), a power cut
    can leave any of their sectors missing: all of them are a torn tail, the durable records
    come back."""
    segment = Segment()
    for write in earlier:
        segment.write(write)
    for write in unsynced:
        segment.write(write, fsync=False)
    start, end = segment.spans[len(earlier)][0], segment.spans[-1][1]
    touched = sectors(start, end)
    landed = set(seed.sample(touched, seed.randint(0, len(touched) - 1)))
    data = torn(segment.file(), start, end, landed)
    result = scan(data, HEADER)
    assert result.corrupt is None
    assert result.records[: len(segment.records(len(earlier)))] == segment.records(len(earlier))


@given(earlier=st.lists(bodies, min_size=1, max_size=3), later=bodies, which=st.integers(0, 100))
def test_a_zeroed_sector_in_a_durable_write_is_corruption(
    earlier: list[list[bytes]], later: list[bytes], which: int
) -> None:
    """A sector of zeros inside a write that a later write proves durable (its records say
    the segment was synced past it) is damage, not a torn tail: LogCorrupt at the first
    record it touches."""
    segment = Segment()
    for write in earlier:
        segment.write(write)
    segment.write(later)
    victim = which % len(earlier)
    start, end = segment.spans[victim]
    inside = [n for n in sectors(start, end) if n * SECTOR >= start and (n + 1) * SECTOR <= end]
    number = inside[which % len(inside)] if inside else None
    if number is None:  # the write fills no whole sector: zero its bytes instead
        data = torn(segment.file(), start, end, set())
    else:
        data = torn(segment.file(), number * SECTOR, (number + 1) * SECTOR, set())
    result = scan(data, HEADER)
    assert result.corrupt is not None
    assert not result.torn
    damaged = next(r for r in segment.writes[victim] if changed(segment, data, r))
    assert result.end == damaged.offset


@given(writes=st.lists(text_bodies, min_size=1, max_size=3), which=st.integers(0, 10_000))
def test_a_flipped_bit_in_the_last_write_is_corruption(
    writes: list[list[bytes]], which: int
) -> None:
    """Damage that no power cut leaves (a flipped bit, with no sector of zeros) in the last
    write, after which nothing follows, is still corruption: that write may have been
    acknowledged."""
    segment = Segment()
    for write in writes:
        segment.write(write)
    start, end = segment.spans[-1]
    data = bytearray(segment.file())
    position = start + which % (end - start)
    data[position] ^= 0x10
    result = scan(bytes(data), HEADER)
    assert result.corrupt is not None
    assert not result.torn


def test_a_forged_length_is_corruption_when_later_writes_follow() -> None:
    """A record whose length was changed and its head checksum recomputed (so the head
    verifies) reaches past the end of the file; later records prove it was durable:
    corruption, not a torn tail that would cut them off."""
    segment = Segment()
    for n in range(6):
        segment.write([b"commit %d" % n])
    data = bytearray(segment.file())
    victim = segment.writes[2][0]
    _length, kind, synced, _head_crc, body_crc = RECORD_HEAD_2.unpack_from(data, victim.offset)
    forged = 10 * len(data)
    seed = _seed(HEADER.lineage, HEADER.segment, victim.offset)
    head_crc = crc32c(struct.pack("<IBQ", forged, kind, synced), seed)
    RECORD_HEAD_2.pack_into(data, victim.offset, forged, kind, synced, head_crc, body_crc)
    result = scan(bytes(data), HEADER)
    assert result == Scan(segment.records(2), victim.offset, corrupt=result.corrupt)
    assert result.corrupt is not None


def test_records_after_finds_every_record_past_damage() -> None:
    """Salvage's search: after a damaged record, every record that verifies where it was
    written is found, in order, and nothing else."""
    segment = Segment()
    for n in range(20):
        segment.write([b"x" * (n * 37 % 300), bytes([n]) * 50])
    data = bytearray(segment.file())
    victim = segment.writes[5][1]
    data[victim.offset + 30] ^= 1
    after = list(records_after(bytes(data), HEADER, victim.offset + 1))
    expected = [r for w in segment.writes for r in w if r.offset > victim.offset]
    assert after == expected
