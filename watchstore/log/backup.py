"""A store in one file: ``write_backup`` copies a store directory consistently, also while
another process has it open and writes it; ``restore_backup`` makes a new store directory of
such a file, which it treats as hostile input.

The backup holds the kept segments, oldest first, each cut after its last good record (no
torn tail, no zeros written ahead), so the newest ends at a commit: the copy is the store as
it was at that commit, with its kept history. Records are copied as they are (an encrypted
store stays encrypted; its key is needed to check them)::

    backup  := magic "wsbackup" | format u16 (1) | reserved u16 (0) | head_length u32
               | head_crc u32 | head[head_length] | segment data...   (little-endian)
    head    := JSON {"format": 1, "created_ns": int, "source": str, "lineage": hex (16 B),
               "version": int, "encrypted": bool,
               "segments": [{"name": "NNNNNNNN.wslog", "size": int, "crc32c": int}, ...]}

``head_crc`` is the CRC32C of the head; each segment's bytes follow in the order the head
lists them, and the file ends right after the last. Restoring checks all of that, then every
record of every segment as ``watchstore verify`` does, and that the newest segment reaches
``version``; anything else is BackupCorrupt (a LogCorrupt) naming the backup file and the
offset in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
from crc32c import crc32c

from ..core.errors import LogCorrupt, StoreError
from .files import fsync_dir, write_file_atomically
from .manifest import Manifest, write_manifest
from .rawlog import read_epoch, replay, segment_files
from .records import CHUNK, FLAG_ENCRYPTED, HEADER_SIZE
from .segment import open_segment, read_fence

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from .rawlog import RawEpoch

MAGIC: Final = b"wsbackup"
PREAMBLE: Final = struct.Struct("<8sHHII")
FORMAT: Final = 1
MAX_HEAD: Final = 1 << 20
"""Bytes of a backup's head read at most (it lists the segments: a few dozen bytes each)."""
_NAME: Final = re.compile(r"[0-9]{8}\.wslog")


def _ignore(_size: int) -> None:
    pass


@attrs.frozen
class BackupInfo:
    """What a backup holds: the version it ends at, its segments and its size in bytes."""

    file: Path
    version: int
    segments: tuple[str, ...]
    size: int
    lineage: str
    encrypted: bool
    tables: dict[str, int]


class BackupCorrupt(LogCorrupt):
    """A backup file that is damaged, cut short, or not a backup: ``file`` and ``offset``
    say where."""


class RestoreTargetExists(StoreError):
    """``restore_backup`` makes a new store directory; the path given exists."""


def write_backup(
    directory: Path,
    target: Path,
    key: bytes | None = None,
    advance: Callable[[int], None] = _ignore,
) -> BackupInfo:
    """Copy the store in ``directory`` into the one file ``target`` (replaced atomically).

    Takes no lock: the store may be open in another process and written meanwhile. Each
    segment is read once and cut after its last good record; a segment retired by a
    compaction while the copy runs is left out (it was older than the newest); if the newest
    itself went, the copy starts again. Damage (not a torn tail) raises LogCorrupt naming
    the store's file."""
    for _attempt in range(3):
        staging = target.parent / f".{target.name}.{time.time_ns()}.tmp"
        with _staging(staging):
            copied = _copy_segments(directory, staging, key, advance)
            if copied is not None:
                return _write(directory, target, copied)
    raise StoreError(f"{directory} kept switching segments while it was copied; try again")


def _write(directory: Path, target: Path, copied: list[tuple[RawEpoch, Path]]) -> BackupInfo:
    """Write the backup of the checked copies ``copied`` (each segment's epoch, and its copy
    in the staging directory) into ``target``, streamed."""
    newest = copied[-1][0]
    segments = [
        {"name": e.file.name, "size": e.end, "crc32c": _crc(copy, e.end)} for e, copy in copied
    ]
    encrypted = bool(newest.header.flags & FLAG_ENCRYPTED)
    head = json.dumps(
        {
            "format": FORMAT,
            "created_ns": time.time_ns(),
            "source": str(directory),
            "lineage": newest.header.lineage.hex(),
            "version": newest.last_version,
            "encrypted": encrypted,
            "segments": segments,
        },
        sort_keys=True,
    ).encode()
    preamble = PREAMBLE.pack(MAGIC, FORMAT, 0, len(head), crc32c(head))

    def chunks() -> Iterator[bytes]:
        yield preamble
        yield head
        for epoch, copy in copied:
            yield from _chunks(copy, epoch.end)

    write_file_atomically(target, chunks())
    tables = {name: len(rows) for name, rows in replay(newest).items()}
    return BackupInfo(
        target,
        newest.last_version,
        tuple(e.file.name for e, _copy in copied),
        len(preamble) + len(head) + sum(e.end for e, _copy in copied),
        newest.header.lineage.hex(),
        encrypted,
        tables,
    )


def _chunks(file: Path, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of ``file`` (a copy this process made), ``CHUNK`` at a time."""
    with open(file, "rb") as f:
        left = size
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise StoreError(f"{file} shrank while it was backed up")
            left -= len(chunk)
            yield chunk


def _crc(file: Path, size: int) -> int:
    """The CRC32C of the first ``size`` bytes of ``file``."""
    crc = 0
    for chunk in _chunks(file, size):
        crc = crc32c(chunk, crc)
    return crc


def _copy_segments(
    directory: Path, staging: Path, key: bytes | None, advance: Callable[[int], None]
) -> list[tuple[RawEpoch, Path]] | None:
    """Copy each kept segment into ``staging``, ``CHUNK`` at a time, and check the copy:
    each segment's epoch (naming the store's file) and its copy, whose good records end at
    the epoch's ``end``; None if the newest segment vanished meanwhile."""
    files = segment_files(directory)
    fence = read_fence(directory)
    copied = []
    for file in files:
        copy = staging / file.name
        try:
            with open_segment(file) as source, open(copy, "xb") as out:
                size = source.size
                if fence is not None and fence.segment == int(file.stem):
                    size = min(size, fence.size)
                offset = 0
                while offset < size:
                    chunk = source.read(offset, min(CHUNK, size - offset))
                    if not chunk:
                        break  # the file shrank meanwhile: as if it ended here
                    out.write(chunk)
                    offset += len(chunk)
                    advance(len(chunk))
        except FileNotFoundError:
            with contextlib.suppress(FileNotFoundError):
                copy.unlink()
            if file == files[-1]:
                return None
            continue  # retired meanwhile: older than the newest, which has the state
        epoch = read_epoch(copy, key)
        if epoch.damage is not None:
            d = epoch.damage
            raise LogCorrupt(str(file), d.offset, d.reason, d.version)
        copied.append((attrs.evolve(epoch, file=file), copy))
    return copied


@contextlib.contextmanager
def _staging(path: Path) -> Iterator[Path]:
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@attrs.frozen
class _Head:
    lineage: bytes
    version: int
    encrypted: bool
    segments: list[tuple[str, int, int]]
    data_start: int


def _corrupt(file: Path, offset: int, reason: str) -> BackupCorrupt:
    return BackupCorrupt(str(file), offset, f"not a valid watchstore backup: {reason}")


def read_head(file: Path) -> _Head:
    """The head of the backup ``file``, checked (LogCorrupt naming the offset otherwise)."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        preamble = f.read(PREAMBLE.size)
        if len(preamble) < PREAMBLE.size:
            raise _corrupt(file, 0, f"the file is {len(preamble)} bytes, shorter than its preamble")
        magic, fmt, _reserved, length, crc = PREAMBLE.unpack(preamble)
        if magic != MAGIC:
            raise _corrupt(file, 0, f"magic {magic!r}, not {MAGIC!r}")
        if fmt != FORMAT:
            raise _corrupt(file, 8, f"backup format {fmt}; this watchstore reads {FORMAT}")
        if length > MAX_HEAD or PREAMBLE.size + length > size:
            raise _corrupt(file, 12, f"a head of {length} bytes does not fit the file")
        head = f.read(length)
    if crc32c(head) != crc:
        raise _corrupt(file, PREAMBLE.size, "head checksum mismatch")
    try:
        fields: Any = json.loads(head)
        lineage = bytes.fromhex(fields["lineage"])
        version = fields["version"]
        segments = []
        previous = ""
        for entry in fields["segments"]:
            name, length_, crc_ = entry["name"], entry["size"], entry["crc32c"]
            if not isinstance(name, str) or not _NAME.fullmatch(name) or name <= previous:
                raise ValueError(f"segment name {name!r} (NNNNNNNN.wslog, in order)")
            for value in (length_, crc_):
                if type(value) is not int or value < 0:
                    raise ValueError(f"{value!r} is not a non-negative int")
            if length_ < HEADER_SIZE:
                raise ValueError(f"segment {name} of {length_} bytes")
            segments.append((name, length_, crc_))
            previous = name
        if type(version) is not int or version < 0 or len(lineage) != 16 or not segments:
            raise ValueError("version, lineage or segments out of range")
        encrypted = fields["encrypted"] is True
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise _corrupt(file, PREAMBLE.size, f"the head is invalid: {exc}") from None
    start = PREAMBLE.size + len(head)
    expected = start + sum(length_ for _name, length_, _crc in segments)
    if expected != size:
        raise _corrupt(
            file,
            min(expected, size),
            f"the head lists {expected - start} bytes of segments, the file holds "
            f"{size - start}: it was cut short or has bytes after its end",
        )
    return _Head(lineage, version, encrypted, segments, start)


def restore_backup(
    file: Path,
    directory: Path,
    key: bytes | None = None,
    advance: Callable[[int], None] = _ignore,
) -> BackupInfo:
    """Make the new store directory ``directory`` (which must not exist) of the backup
    ``file``, checked (see the module docstring); the directory appears only once complete
    and checked."""
    if directory.exists() or directory.is_symlink():
        raise RestoreTargetExists(
            f"{directory} exists: restore makes a new store directory; give a path that does "
            "not exist (and move the old one away first, if it is to be replaced)"
        )
    head = read_head(file)
    parent = directory.parent
    staging = parent / f".{directory.name}.restore-{time.time_ns()}.tmp"
    with _staging(staging):
        offset = head.data_start
        epochs: list[RawEpoch] = []
        with open(file, "rb") as source:
            source.seek(offset)
            for name, size, crc in head.segments:
                copy = staging / name
                crc_ = _copy(source, copy, size, advance)
                if crc_ != crc:
                    raise _corrupt(file, offset, f"segment {name}: checksum mismatch")
                epochs.append(_checked(file, offset, copy, key, head))
                offset += size
        newest = epochs[-1]
        if newest.last_version != head.version:
            raise _corrupt(
                file,
                offset,
                f"the newest segment ends at version {newest.last_version}, the head says "
                f"{head.version}",
            )
        size = newest.end
        manifest = Manifest(head.lineage, int(newest.file.stem), head.version, size, True)
        write_manifest(staging, manifest)
        fsync_dir(staging)
        os.rename(staging, directory)
        fsync_dir(parent)
    tables = {name: len(rows) for name, rows in replay(newest).items()}
    return BackupInfo(
        file,
        head.version,
        tuple(name for name, _size, _crc in head.segments),
        file.stat().st_size,
        head.lineage.hex(),
        head.encrypted,
        tables,
    )


def _copy(source: Any, target: Path, size: int, advance: Callable[[int], None]) -> int:
    """Copy ``size`` bytes of ``source`` into the new file ``target`` (fsynced); their CRC."""
    crc = 0
    with open(target, "xb") as out:
        left = size
        while left:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                raise EOFError  # pragma: no cover - read_head checked the size
            out.write(chunk)
            crc = crc32c(chunk, crc)
            left -= len(chunk)
            advance(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return crc


def _checked(file: Path, offset: int, copy: Path, key: bytes | None, head: _Head) -> RawEpoch:
    """The restored segment ``copy`` (at ``offset`` in the backup ``file``) read and
    checked as ``watchstore verify`` checks a segment; LogCorrupt naming the backup."""
    try:
        epoch = read_epoch(copy, key)
        if epoch.header.lineage != head.lineage:
            raise LogCorrupt(str(copy), 0, "a segment of another store (its lineage differs)")
        if epoch.header.segment != int(copy.stem):
            raise LogCorrupt(str(copy), 0, f"the header says segment {epoch.header.segment}")
        if epoch.damage is not None:
            raise epoch.damage
        if epoch.end != copy.stat().st_size:
            raise LogCorrupt(str(copy), epoch.end, "bytes after the last record")
        replay(epoch, strict=True)
    except LogCorrupt as exc:
        raise _corrupt(
            file, offset + exc.offset, f"segment {copy.name} at offset {exc.offset}: {exc.reason}"
        ) from None
    return epoch
