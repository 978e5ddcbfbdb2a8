"""Opening a damaged log: LogCorrupt by default, the valid prefix with salvage=True."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import watchstore as ws
from tests.schema import SCHEMA, Task
from watchstore.log.records import parse_header, scan

if TYPE_CHECKING:
    import pathlib


async def ten_commits(path: pathlib.Path) -> list[int]:
    """Commit ten single-task transactions; return each record's offset in the segment."""
    async with ws.open_store(SCHEMA, path=path) as store:
        for i in range(10):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "s1")))
    data = (path / "00000001.wslog").read_bytes()
    return [record.offset for record in scan(data, parse_header(data)).records[1:]]


def flip(path: pathlib.Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


async def test_damage_in_the_middle_is_reported_with_file_offset_and_version(
    tmp_path: pathlib.Path,
) -> None:
    offsets = await ten_commits(tmp_path)
    flip(tmp_path / "00000001.wslog", offsets[4] + 20)  # inside version 5's record
    with pytest.raises(ws.LogCorrupt) as info:
        async with ws.open_store(SCHEMA, path=tmp_path):
            pass
    assert info.value.file.endswith("00000001.wslog")
    assert info.value.offset == offsets[4]
    assert info.value.version == ws.Version(4)
    assert "salvage=True" in str(info.value)


async def test_salvage_keeps_the_valid_prefix_and_reports_what_was_lost(
    tmp_path: pathlib.Path,
) -> None:
    offsets = await ten_commits(tmp_path)
    segment = tmp_path / "00000001.wslog"
    damaged = segment.read_bytes()
    flip(segment, offsets[4] + 20)
    async with ws.open_store(SCHEMA, path=tmp_path, salvage=True) as store:
        assert store.recovery is not None
        report = store.recovery.salvage
        assert report is not None
        assert report.kept == ws.Version(4)
        assert report.offset == offsets[4]
        assert report.lost == (5, 6, 7, 8, 9, 10)  # up to what the manifest says was durable
        copy = tmp_path / report.copy.rsplit("/", 1)[-1]
        assert copy.read_bytes()[: len(damaged)] != damaged  # the damaged bytes, kept aside
        assert store.view(lambda tx: [t.id for t in tx.all(Task)]) == ["t0", "t1", "t2", "t3"]
        await store.update(lambda tx: tx.create(Task("after", "s1")))
    async with ws.open_store(SCHEMA, path=tmp_path) as store:  # repaired: opens plainly
        assert store.version == ws.Version(5)
        assert store.recovery is not None
        assert store.recovery.salvage is None


async def test_a_clean_log_opened_with_salvage_reports_nothing(tmp_path: pathlib.Path) -> None:
    await ten_commits(tmp_path)
    async with ws.open_store(SCHEMA, path=tmp_path, salvage=True) as store:
        assert store.recovery is not None
        assert store.recovery.salvage is None
        assert store.recovery.repaired_tail == 0
        assert store.version == ws.Version(10)
