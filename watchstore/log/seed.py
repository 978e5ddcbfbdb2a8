"""A new store made of given objects (``watchstore load``, the inverse of ``dump``).

``seed_store`` writes a store directory whose one epoch is a snapshot of the objects, at
the version given, their ``meta`` (version, times) kept as they are: opened, the store holds
exactly those objects, and a dump of it prints them as they were dumped. The directory
appears only once complete (written in a temporary directory beside it, then renamed).
"""

from __future__ import annotations

import shutil
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..core.errors import StoreError
from ..core.model import Version
from .bodies import Format2
from .crypto import Sealer
from .files import fsync_dir, write_file_atomically
from .manifest import Manifest, write_manifest
from .records import FLAG_ENCRYPTED, HEADER_SIZE, SNAPSHOT, SegmentHeader
from .segment import FORMAT, frame, segment_path

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from ..core.schema import Schema


class StoreExists(StoreError):
    """``seed_store`` makes a new store; the directory given already holds files."""


def seed_store(
    directory: Path,
    schema: Schema,
    version: int,
    objects: Mapping[str, Sequence[Any]],
    *,
    key: bytes | None = None,
) -> int:
    """Write a new store in ``directory`` (absent, or an empty directory) holding
    ``objects`` (typed objects, by table name, already checked against the schema) in a
    snapshot at ``version``; returns the segment's size. With ``key``, it is encrypted."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise StoreExists(f"{directory} is not empty: load makes a new store; give a new directory")
    bodies = Format2(schema)
    tables = [
        (t.name, len(objects.get(t.name, ())), [bodies.piece(t.name, objects.get(t.name, []))])
        for t in schema.tables
    ]
    body = bodies.snapshot(Version(version), tables)
    flags = FLAG_ENCRYPTED if key is not None else 0
    header = SegmentHeader(FORMAT, flags, 1, uuid.uuid4().bytes, time.time_ns())
    sealer = Sealer(key) if key is not None else None
    data = header.pack() + frame(header, HEADER_SIZE, SNAPSHOT, body, sealer)
    staging = directory.parent / f".{directory.name}.load-{time.time_ns()}.tmp"
    staging.mkdir(mode=0o700)
    try:
        write_file_atomically(segment_path(staging, 1), data)
        write_manifest(staging, Manifest(header.lineage, 1, version, len(data), True))
        if directory.exists():
            directory.rmdir()  # empty, checked above
        staging.rename(directory)
        fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(data)
