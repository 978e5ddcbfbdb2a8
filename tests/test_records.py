"""The epoch log's framing (sans-I/O): segment headers, records, and format 1's torn-tail rule.

Format 1's rule (see ``watchstore/log/records.py``): a crash leaves a prefix of one append or a
zero-filled extension of the file, so a record cut off by the end of the data is a torn tail
(safe to truncate), zeros to the end are space written ahead (padding); a complete record
that does not verify, or anything wrong followed by more data, is corruption. Format 2's rule
is specified in ``tests/test_torn_writes.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from crc32c import crc32c
from hypothesis import event, given, settings
from hypothesis import strategies as st

from watchstore.log.records import (
    CHANGE,
    HEADER_SIZE,
    KINDS,
    MAGIC,
    MAX_BODY,
    RECORD_HEAD,
    RECORD_HEAD_SIZE,
    SNAPSHOT,
    HeaderError,
    Record,
    Scan,
    SegmentHeader,
    _seed,
    pack_record,
    parse_header,
    record_size,
    scan,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

LINEAGE = bytes(range(16))
HEADER = SegmentHeader(format=1, flags=0, segment=3, lineage=LINEAGE, created_ns=1_700_000_000)


def build(header: SegmentHeader, bodies: Sequence[tuple[int, bytes]]) -> tuple[bytes, list[Record]]:
    """A segment of ``header`` and records of ``bodies``; also the records as written."""
    data = bytearray(header.pack())
    records = []
    for kind, body in bodies:
        records.append(Record(len(data), kind, body))
        data += pack_record(header, len(data), kind, body)
    return bytes(data), records


def record_end(record: Record) -> int:
    return record.offset + record_size(len(record.body))


SAMPLE_BODIES = [
    (SNAPSHOT, b'{"version":0,"tables":{}}'),
    (CHANGE, b""),
    (CHANGE, b"x" * 40),
    (CHANGE, bytes(range(256))),
    (SNAPSHOT, b"\x00" * 17),
    (CHANGE, b"last record of the segment"),
]


# -- headers -----------------------------------------------------------------------------------


def test_header_round_trips() -> None:
    """pack() is 44 bytes starting with the magic, and parse_header gives the header back,
    whatever follows it."""
    packed = HEADER.pack()
    assert len(packed) == HEADER_SIZE == 44
    assert packed.startswith(MAGIC)
    assert parse_header(packed) == HEADER
    assert parse_header(packed + b"records follow") == HEADER
    other = SegmentHeader(7, 1, 2**32 - 1, b"\xff" * 16, 2**64 - 1)
    assert parse_header(other.pack()) == other


def test_bad_magic_is_a_header_error_not_torn() -> None:
    """A file that does not start with the magic is not ours (and not a torn header)."""
    packed = b"XXlog\x00\r\n" + HEADER.pack()[8:]
    with pytest.raises(HeaderError, match="magic") as info:
        parse_header(packed)
    assert not info.value.torn


@pytest.mark.parametrize("byte", range(8, HEADER_SIZE))
def test_a_flipped_bit_after_the_magic_fails_the_header_checksum(byte: int) -> None:
    """Every header byte after the magic is covered by the header checksum."""
    packed = bytearray(HEADER.pack())
    packed[byte] ^= 1 << (byte % 8)
    with pytest.raises(HeaderError, match="checksum") as info:
        parse_header(bytes(packed))
    assert not info.value.torn


def test_short_header_is_torn_only_for_a_prefix_or_zeros() -> None:
    """Data shorter than a header: torn if it is a prefix of a header or all zeros (what a
    crash can leave), not torn if it is something else."""
    packed = HEADER.pack()
    for n in range(HEADER_SIZE):
        with pytest.raises(HeaderError, match="shorter") as info:
            parse_header(packed[:n])
        assert info.value.torn, n
    with pytest.raises(HeaderError) as info:
        parse_header(b"\0" * 30)
    assert info.value.torn
    for garbage in (b"hello", b"not a watchstore log"):
        with pytest.raises(HeaderError, match="shorter") as info:
            parse_header(garbage)
        assert not info.value.torn


# -- records -----------------------------------------------------------------------------------


def test_records_round_trip() -> None:
    """Many records of both kinds (empty bodies too) scan back in order, ending cleanly."""
    bodies = [((SNAPSHOT, CHANGE)[i % 3 != 0], bytes([i]) * (i * 7 % 300)) for i in range(200)]
    data, written = build(HEADER, bodies)
    result = scan(data, HEADER)
    assert result == Scan(written, len(data))
    assert [(r.kind, r.body) for r in result.records] == bodies


def test_scan_from_a_later_start() -> None:
    """``start`` skips records already read."""
    data, written = build(HEADER, SAMPLE_BODIES)
    assert scan(data, HEADER, written[2].offset) == Scan(written[2:], len(data))


def test_a_record_moved_to_another_offset_does_not_verify() -> None:
    """The checksums are seeded by the offset: a record copied elsewhere is corruption."""
    data, written = build(HEADER, SAMPLE_BODIES[:3])
    moved = pack_record(HEADER, 1000, CHANGE, b"written for offset 1000")
    result = scan(data + moved + pack_record(HEADER, len(data) + len(moved), CHANGE, b""), HEADER)
    assert result.records == written
    assert result.end == len(data)
    assert result.corrupt is not None
    assert not result.torn
    # Two records of equal size swapped: neither verifies.
    a = pack_record(HEADER, HEADER_SIZE, CHANGE, b"aaaa")
    b = pack_record(HEADER, HEADER_SIZE + len(a), CHANGE, b"bbbb")
    in_place = scan(HEADER.pack() + a + b, HEADER).records
    assert in_place == [
        Record(HEADER_SIZE, CHANGE, b"aaaa"),
        Record(HEADER_SIZE + len(a), CHANGE, b"bbbb"),
    ]
    swapped = scan(HEADER.pack() + b + a, HEADER)
    assert swapped.records == []
    assert swapped.corrupt is not None


@pytest.mark.parametrize(
    "other",
    [
        SegmentHeader(1, 0, HEADER.segment + 1, LINEAGE, HEADER.created_ns),
        SegmentHeader(1, 0, HEADER.segment, bytes(16), HEADER.created_ns),
    ],
    ids=["another segment", "another lineage"],
)
def test_a_record_from_another_segment_or_lineage_does_not_verify(other: SegmentHeader) -> None:
    """The same records at the same offsets, read as another segment or another store's,
    verify nothing and are reported as corruption (not a torn tail)."""
    data, written = build(HEADER, SAMPLE_BODIES)
    assert scan(data, HEADER).records == written
    result = scan(data, other)
    assert result.records == []
    assert result.end == HEADER_SIZE
    assert result.corrupt is not None
    assert not result.torn
    # A single record spliced in from the other segment at the right offset fails too.
    alien = pack_record(other, written[2].offset, CHANGE, b"alien")
    result = scan(data[: written[2].offset] + alien, HEADER)
    assert result.records == written[:2]
    assert result.corrupt is not None


# -- the torn-tail rule, case by case ----------------------------------------------------------


def test_pure_truncation_is_never_corrupt() -> None:
    """Cutting the data at any offset: the complete records before the cut come back, and
    the rest is a torn tail (or nothing, at a record boundary)."""
    data, written = build(HEADER, SAMPLE_BODIES)
    boundaries = {HEADER_SIZE} | {record_end(r) for r in written}
    for cut in range(HEADER_SIZE, len(data) + 1):
        result = scan(data[:cut], HEADER)
        complete = [r for r in written if record_end(r) <= cut]
        assert result.records == complete, cut
        assert result.end == max(boundaries & set(range(cut + 1))), cut
        assert result.corrupt is None, cut
        zeros = not data[result.end : cut].strip(b"\0")  # a cut inside zero bytes
        assert result.torn == (cut not in boundaries and not zeros), cut
        assert result.padding == (cut - result.end if zeros else 0), cut


@pytest.mark.parametrize("zeros", [1, 5, RECORD_HEAD_SIZE - 1, RECORD_HEAD_SIZE, 100, 4096])
def test_zeros_after_the_last_record_are_padding(zeros: int) -> None:
    """Zeros after the last record (written ahead, or a file extended by a crash) end the
    records cleanly: padding, neither torn nor damage."""
    data, written = build(HEADER, SAMPLE_BODIES)
    result = scan(data + bytes(zeros), HEADER)
    assert result == Scan(written, len(data), padding=zeros)


def test_a_flipped_bit_in_a_complete_record_is_corrupt() -> None:
    """A flip anywhere in a complete record, the last one included, is corruption at that
    record; the records before it come back."""
    data, written = build(HEADER, SAMPLE_BODIES)
    for i, record in enumerate(written):
        for pos in range(record.offset, record_end(record)):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << (pos % 8)
            result = scan(bytes(damaged), HEADER)
            assert result.records == written[:i], pos
            assert result.end == record.offset, pos
            assert result.corrupt is not None, pos
            assert not result.torn, pos


def test_garbage_after_the_last_record_is_corrupt() -> None:
    """Non-zero bytes after the last record that cannot be a record head are corruption."""
    data, written = build(HEADER, SAMPLE_BODIES)
    result = scan(data + b"this is not a record head", HEADER)
    assert result.records == written
    assert result.end == len(data)
    assert result.corrupt is not None


def test_a_torn_append_followed_by_zeros_is_torn() -> None:
    """A crash can extend the file for an append but get only part of its data to disk: the
    record's remaining bytes are zeros. The rule calls a record "whose remaining bytes are all
    zeros" (docs/format.md: "followed only by zero bytes") a torn tail, so this must be
    repaired, not refused as corruption: the append was never acknowledged."""
    data, written = build(HEADER, SAMPLE_BODIES[:-1])
    append = pack_record(HEADER, len(data), CHANGE, b"an unacknowledged append" * 8)
    for written_bytes in (3, RECORD_HEAD_SIZE, RECORD_HEAD_SIZE + 10, len(append) - 1):
        on_disk = append[:written_bytes] + bytes(len(append) - written_bytes)
        result = scan(data + on_disk, HEADER)
        assert result.records == written
        assert result.end == len(data)
        assert (result.torn, result.corrupt) == (True, None), written_bytes


# -- fuzzing -----------------------------------------------------------------------------------

bodies_strategy = st.lists(
    st.tuples(st.sampled_from([SNAPSHOT, CHANGE]), st.binary(max_size=64)), max_size=8
)
position = st.integers(min_value=0, max_value=10_000)
mutation = st.one_of(
    st.tuples(st.just("truncate"), position),
    st.tuples(st.just("flip"), position, st.integers(min_value=0, max_value=7)),
    st.tuples(st.just("zeros"), st.integers(min_value=1, max_value=64)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("overwrite"), position, st.binary(min_size=1, max_size=32)),
)


VERIFIED_HEAD = 9


def unfinished(data: bytes, offset: int, header: SegmentHeader) -> bool:
    """True if a record header at ``offset`` verifies and its record reaches into the
    trailing zeros of ``data`` (or past its end): the rule's 'never fully written'."""
    if len(data) - offset < RECORD_HEAD_SIZE:
        return False
    length, kind, head_crc, _body_crc = RECORD_HEAD.unpack_from(data, offset)
    seed = _seed(header.lineage, header.segment, offset)
    if crc32c(data[offset : offset + 5], seed) != head_crc or kind not in KINDS:
        return False  # the header (length, kind, head checksum) does not verify
    if length > MAX_BODY:
        return False
    return offset + record_size(length) > len(data.rstrip(b"\0"))


"""The bytes of a record head its head checksum vouches for: length, kind and the checksum."""


def mutate(data: bytes, mutations: Sequence[tuple[object, ...]]) -> bytes:
    """Apply the mutations in order; positions are taken modulo the record area."""
    out = bytearray(data)
    for m in mutations:
        room = len(out) - HEADER_SIZE
        match m:
            case ("truncate", int(pos)):
                del out[HEADER_SIZE + pos % (room + 1) :]
            case ("flip", int(pos), int(bit)) if room > 0:
                out[HEADER_SIZE + pos % room] ^= 1 << bit
            case ("zeros", int(n)):
                out += bytes(n)
            case ("append", bytes(extra)):
                out += extra
            case ("overwrite", int(pos), bytes(new)) if room > 0:
                at = HEADER_SIZE + pos % room
                out[at : at + len(new)] = new
    return bytes(out)


def first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


@settings(max_examples=400)
@given(
    bodies=bodies_strategy,
    segment=st.integers(min_value=0, max_value=2**32 - 1),
    lineage=st.binary(min_size=16, max_size=16),
    mutations=st.lists(mutation, max_size=4),
)
def test_scan_of_damaged_data_returns_only_what_was_written(
    bodies: list[tuple[int, bytes]],
    segment: int,
    lineage: bytes,
    mutations: list[tuple[object, ...]],
) -> None:
    """Whatever is done to the records (cuts, bit flips, zeros, garbage, overwrites), scan
    does not raise; it returns exactly the written records that lie wholly before the first
    damaged byte (a prefix of the originals), ``end`` is just after the last of them, and
    torn/corrupt follow the rule: nothing after ``end`` is clean, zeros or a cut-off record
    are torn, other damage is corrupt."""
    header = SegmentHeader(1, 0, segment, lineage, 0)
    original, written = build(header, bodies)
    data = mutate(original, mutations)
    result = scan(data, header)  # never raises

    diff = first_difference(original, data)
    intact = [r for r in written if record_end(r) <= diff]
    assert result.records == intact
    assert result.end == (record_end(intact[-1]) if intact else HEADER_SIZE)
    assert not (result.torn and result.corrupt is not None)

    rest = data[result.end :]
    following = written[len(intact)] if len(intact) < len(written) else None
    # The bytes the record at ``end`` had when written (none if ``end`` is past the last).
    was = original[following.offset : record_end(following)] if following else b""
    event("torn" if result.torn else "corrupt" if result.corrupt else "clean")
    if not rest.strip(b"\0"):
        assert (result.torn, result.corrupt, result.padding) == (False, None, len(rest))
    elif len(rest) < RECORD_HEAD_SIZE:
        assert result.torn  # a cut-off record head
    elif rest[:VERIFIED_HEAD] == was[:VERIFIED_HEAD] and len(rest) < len(was):
        # A record whose length, kind and head checksum verify, cut off by the end of the
        # data (its body checksum cannot be checked without the whole body).
        assert result.torn
    elif was.startswith(rest.rstrip(b"\0")) and len(rest.rstrip(b"\0")) < len(was):
        # A prefix of the record followed by zeros: the append was never completed.
        assert result.torn
    elif unfinished(data, result.end, header):
        # A record whose header verifies but that does not end before the trailing zeros
        # (its end byte was never written): torn, whatever else is wrong inside it.
        assert result.torn
    elif len(rest.rstrip(b"\0")) < RECORD_HEAD_SIZE:
        # Less than a record header before the trailing zeros: it may be the start of an
        # append (the reader cannot tell garbage from a header it never finished writing).
        assert result.torn
    else:
        assert result.corrupt is not None
    # The rule's headline cases, stated directly.
    if original.startswith(data):
        assert result.corrupt is None  # a pure truncation is never corruption
    if (
        data.startswith(original)
        and len(data) > len(original)
        and not data[len(original) :].strip(b"\0")
    ):
        padding = len(data) - len(original)
        assert result == Scan(written, len(original), padding=padding)  # a zero extension
