"""The manifest: what a store last made durable, so that it never opens silently at an older
or foreign state.

``MANIFEST`` (JSON, replaced atomically) names the store's lineage, its newest segment, the
last version known durable and, once the store closed cleanly, the segment's exact size::

    {"format": 2, "lineage": "<hex>", "segment": 7, "version": 1234, "size": 56789 | null,
     "closed": true | false, "crc": <CRC32C of the same object without "crc">}

It is written before the first segment of a new store, after every open (the version
restored), after every segment switch (the new segment and its last version), on a clean
close (version and size exact) and by a rollback. Opening checks against it (``check_*``):

- every segment belongs to the store (its header's lineage) and to its name (the header's
  segment number is the file name's): a segment copied from another store, or renamed;
- the newest segment is the manifest's, or the one after it (a switch that crashed before
  the manifest was rewritten): a deleted newest segment is missing;
- the log reaches the manifest's version (a segment put back from an older copy, or cut);
  after a clean close it ends exactly there, at exactly that size (a cut at a record
  boundary, a zeroed last byte).

A format 1 store has no manifest until it is first opened by this version. A format 2 store
without one is refused (it cannot tell whether it is complete) unless opened with salvage.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Final

import attrs
from crc32c import crc32c

from ..core.errors import LogCorrupt
from .files import write_file_atomically
from .records import HEADER_SIZE, HeaderError, parse_header

if TYPE_CHECKING:
    from pathlib import Path

    from .records import SegmentHeader

MANIFEST: Final = "MANIFEST"
MAX_MANIFEST: Final = 4096
"""Bytes of a manifest read at most (it holds a few dozen)."""


@attrs.frozen
class Manifest:
    """What a store last made durable (see the module docstring)."""

    lineage: bytes
    segment: int
    version: int
    size: int | None = None
    closed: bool = False

    def dump(self) -> bytes:
        """The manifest as its file holds it, checksum included."""
        fields = {
            "format": 2,
            "lineage": self.lineage.hex(),
            "segment": self.segment,
            "version": self.version,
            "size": self.size,
            "closed": self.closed,
        }
        text = json.dumps(fields, sort_keys=True)
        return json.dumps({**fields, "crc": crc32c(text.encode())}, sort_keys=True).encode()


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Replace the manifest of ``directory`` (temporary file, fsync, rename, fsync)."""
    write_file_atomically(directory / MANIFEST, manifest.dump())


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of ``directory``; None if it has none; LogCorrupt if it is damaged."""
    file = directory / MANIFEST
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LogCorrupt(str(file), 0, f"the manifest cannot be read: {exc.strerror}") from None
    try:
        if not _regular(fd):
            raise LogCorrupt(str(file), 0, "the manifest is not a regular file")
        data = os.read(fd, MAX_MANIFEST + 1)
    finally:
        os.close(fd)
    try:
        if len(data) > MAX_MANIFEST:
            raise ValueError(f"longer than {MAX_MANIFEST} bytes")
        fields = json.loads(data)
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        crc = fields.pop("crc")
        if crc != crc32c(json.dumps(fields, sort_keys=True).encode()):
            raise ValueError("checksum mismatch")
        manifest = Manifest(
            bytes.fromhex(fields["lineage"]),
            _number(fields["segment"]),
            _number(fields["version"]),
            None if fields["size"] is None else _number(fields["size"]),
            fields["closed"] is True,
        )
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise LogCorrupt(str(file), 0, f"the manifest is damaged: {exc}") from None
    if len(manifest.lineage) != 16:
        raise LogCorrupt(str(file), 0, "the manifest is damaged: its lineage is not 16 bytes")
    return manifest


def _number(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a non-negative int")
    return value


def _regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def segment_header(file: Path) -> SegmentHeader:
    """The header of a segment file, read without following a link and only from a regular
    file (a FIFO would block, a link to a device would never end); LogCorrupt otherwise."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise LogCorrupt(
            str(file), 0, f"the segment cannot be read ({exc.strerror}): it must be a regular file"
        ) from None
    try:
        if not _regular(fd):
            raise LogCorrupt(str(file), 0, "the segment is not a regular file")
        data = os.read(fd, HEADER_SIZE)
    finally:
        os.close(fd)
    try:
        return parse_header(data)
    except HeaderError as exc:
        raise LogCorrupt(str(file), 0, exc.reason) from None


def check_segments(
    directory: Path, headers: dict[Path, SegmentHeader], manifest: Manifest | None
) -> None:
    """Every segment belongs to this store and to its name; the newest is not missing.
    LogCorrupt names the file and what is wrong."""
    lineage = manifest.lineage if manifest is not None else None
    for file, header in headers.items():
        if header.segment != int(file.stem):
            raise LogCorrupt(
                str(file),
                0,
                f"the file is segment {header.segment} of its store, not {int(file.stem)} (was "
                "it renamed?); put it back under its own number or remove it",
            )
        if lineage is None:
            lineage = header.lineage
        if header.lineage != lineage:
            raise LogCorrupt(
                str(file),
                0,
                f"the segment belongs to another store (lineage {header.lineage.hex()}, this "
                f"store's is {lineage.hex()}); remove it",
            )
    if manifest is None or not headers:
        return
    newest = max(h.segment for h in headers.values())
    if newest < manifest.segment:
        raise LogCorrupt(
            str(directory / f"{manifest.segment:08d}.wslog"),
            0,
            f"segment {manifest.segment}, the newest this store wrote (up to version "
            f"{manifest.version}), is missing; restore it (salvage would go on from segment "
            f"{newest})",
        )
    if newest > manifest.segment + 1:
        raise LogCorrupt(
            str(directory / f"{newest:08d}.wslog"),
            0,
            f"segment {newest} is newer than any this store wrote (its newest is "
            f"{manifest.segment}); remove it",
        )


def check_restored(
    file: Path, manifest: Manifest, segment: int, version: int, size: int, changes: int
) -> None:
    """The log opened at ``version`` (its newest segment ``segment`` ending at ``size``,
    with ``changes`` CHANGE records) reaches what the manifest says was durable; LogCorrupt
    otherwise. A segment after the manifest's that holds only its snapshot may be older: a
    rollback writes it before it rewrites the manifest."""
    if segment != manifest.segment:
        if version < manifest.version and changes:
            raise LogCorrupt(
                str(file), 0, f"the log ends at version {version}, older than {manifest.version}"
            )
        return
    if version < manifest.version:
        raise LogCorrupt(
            str(file),
            size,
            f"the log ends at version {version}, but the store had made {manifest.version} "
            "durable: the segment is an older copy, or was cut; put the complete one back",
        )
    if manifest.closed and (version, size) != (manifest.version, manifest.size):
        raise LogCorrupt(
            str(file),
            size,
            f"the store was closed at version {manifest.version} ({manifest.size} bytes), but "
            f"the segment holds version {version} ({size} bytes): it was changed since",
        )
