"""Schema evolution: a stored object that no longer fits its class is a SchemaMismatch (never
LogCorrupt, never advice that throws data away), and ``Table(upgrade=...)`` reads the stored
shape into today's; compaction then writes today's shape.

Each test writes with one shape of a class and reopens with another of the same table name
(``Table(cls, name="Item")``), as a program does after its class changed.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import watchstore as ws

if TYPE_CHECKING:
    import pathlib


@attrs.frozen
class ItemV1:
    id: str
    size: int
    old: str = "x"
    meta: ws.Meta = ws.Meta()


@attrs.frozen
class ItemNoOld:
    """``old`` removed."""

    id: str
    size: int
    meta: ws.Meta = ws.Meta()


@attrs.frozen
class ItemWithColor:
    """A field added with a default."""

    id: str
    size: int
    old: str = "x"
    color: str = "blue"
    meta: ws.Meta = ws.Meta()


@attrs.frozen
class ItemWithOwner:
    """A field added without a default."""

    id: str
    size: int
    owner: str
    old: str = "x"
    meta: ws.Meta = ws.Meta()


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


@attrs.frozen
class ItemSized:
    """``size`` retyped (int to an enum) and ``old`` renamed ``label``."""

    id: str
    size: Size
    label: str = ""
    meta: ws.Meta = ws.Meta()


def schema(cls: type, **table: Any) -> ws.Schema:
    return ws.Schema(ws.Table(cls, indexes=[ws.Index("size")], name="Item", **table))


async def write_v1(path: pathlib.Path, count: int = 3) -> ws.Version:
    """Items i0.. with size i, old "o<i>", then one update, at the versions they return."""
    async with ws.open_store(schema(ItemV1), path=path) as store:
        for i in range(count):
            await store.update(lambda tx: tx.create(ItemV1(f"i{i}", i, f"o{i}")))
        await store.update(lambda tx: tx.update(attrs.evolve(tx.get(ItemV1, "i0"), size=10)))  # type: ignore[misc]
        return store.version


async def test_a_removed_field_is_a_schema_mismatch_naming_it(tmp_path: pathlib.Path) -> None:
    await write_v1(tmp_path)
    for salvage in (False, True):  # salvage does not make it data to throw away
        with pytest.raises(ws.SchemaMismatch) as info:
            async with ws.open_store(schema(ItemNoOld), path=tmp_path, salvage=salvage):
                pass
        assert (info.value.table, info.value.field) == ("Item", "old")
        assert "no longer declares" in str(info.value)
        assert "salvage" not in str(info.value)
    async with ws.open_store(schema(ItemV1), path=tmp_path) as store:  # nothing was lost
        assert store.view(lambda tx: tx.count(ItemV1)) == 3


async def test_a_field_added_without_a_default_is_a_schema_mismatch(
    tmp_path: pathlib.Path,
) -> None:
    await write_v1(tmp_path)
    with pytest.raises(ws.SchemaMismatch) as info:
        async with ws.open_store(schema(ItemWithOwner), path=tmp_path):
            pass
    assert info.value.field == "owner"
    assert "requires 'owner'" in str(info.value)


async def test_a_field_added_with_a_default_needs_nothing_and_is_written_in_the_new_shape(
    tmp_path: pathlib.Path,
) -> None:
    version = await write_v1(tmp_path)
    async with ws.open_store(schema(ItemWithColor), path=tmp_path) as store:
        assert store.version == version
        items = store.view(lambda tx: tx.all(ItemWithColor))
        assert [(i.id, i.size, i.old, i.color) for i in items] == [
            ("i0", 10, "o0", "blue"),
            ("i1", 1, "o1", "blue"),
            ("i2", 2, "o2", "blue"),
        ]
        assert [i.meta.version for i in items] == [version, ws.Version(2), ws.Version(3)]
        assert [e.version for e in ws.list_epochs(tmp_path)][-1] == version  # rewritten
        await store.update(lambda tx: tx.create(ItemWithColor("i9", 9, color="red")))
    async with ws.open_store(schema(ItemWithColor), path=tmp_path) as store:
        assert store.view(lambda tx: tx.get(ItemWithColor, "i9")).color == "red"  # type: ignore[union-attr]
        assert store.recovery is not None
        assert not store.recovery.reshaped


def to_sized(stored: dict[str, Any]) -> dict[str, Any]:
    """ItemV1's fields to ItemSized's: size by threshold, ``old`` renamed ``label``."""
    return {
        "id": stored["id"],
        "size": "large" if stored["size"] >= 5 else "small",
        "label": stored.pop("old"),
    }


async def test_an_upgrade_function_retypes_renames_and_drops_fields(
    tmp_path: pathlib.Path,
) -> None:
    version = await write_v1(tmp_path)
    with pytest.raises(ws.SchemaMismatch):
        async with ws.open_store(schema(ItemSized), path=tmp_path):
            pass
    async with ws.open_store(schema(ItemSized, upgrade=to_sized), path=tmp_path) as store:
        items = store.view(lambda tx: tx.all(ItemSized))
        assert [(i.id, i.size, i.label) for i in items] == [
            ("i0", Size.LARGE, "o0"),
            ("i1", Size.SMALL, "o1"),
            ("i2", Size.SMALL, "o2"),
        ]
        assert items[0].meta.version == version
        assert [i.id for i in store.view(lambda tx: tx.find(ItemSized, size=Size.SMALL))] == [
            "i1",
            "i2",
        ]
    async with ws.open_store(schema(ItemSized), path=tmp_path) as store:  # now stored so
        assert store.view(lambda tx: tx.count(ItemSized)) == 3


async def test_an_upgrade_that_gives_a_value_of_the_wrong_type_is_a_schema_mismatch(
    tmp_path: pathlib.Path,
) -> None:
    await write_v1(tmp_path)

    def wrong(stored: dict[str, Any]) -> dict[str, Any]:
        return {"id": stored["id"], "size": 3}

    with pytest.raises(ws.SchemaMismatch, match="does not fit"):
        async with ws.open_store(schema(ItemSized, upgrade=wrong), path=tmp_path):
            pass


async def test_an_upgrade_that_raises_is_a_schema_mismatch_carrying_its_error(
    tmp_path: pathlib.Path,
) -> None:
    await write_v1(tmp_path)

    def broken(stored: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("nope")

    with pytest.raises(ws.SchemaMismatch, match="upgrade function raised") as info:
        async with ws.open_store(schema(ItemSized, upgrade=broken), path=tmp_path):
            pass
    assert isinstance(info.value.__cause__, KeyError)


async def test_a_retyped_field_without_an_upgrade_is_a_schema_mismatch_naming_it(
    tmp_path: pathlib.Path,
) -> None:
    @attrs.frozen
    class ItemStrSize:
        id: str
        size: str
        old: str = "x"
        meta: ws.Meta = ws.Meta()

    await write_v1(tmp_path)
    with pytest.raises(ws.SchemaMismatch) as info:
        async with ws.open_store(schema(ItemStrSize), path=tmp_path):
            pass
    assert info.value.field == "size"
    assert "Expected `str`, got `int`" in str(info.value)


async def test_a_table_the_schema_no_longer_declares_is_a_schema_mismatch(
    tmp_path: pathlib.Path,
) -> None:
    await write_v1(tmp_path)

    @attrs.frozen
    class Other:
        id: str
        meta: ws.Meta = ws.Meta()

    with pytest.raises(ws.SchemaMismatch) as info:
        async with ws.open_store(ws.Schema(ws.Table(Other)), path=tmp_path):
            pass
    assert (info.value.table, info.value.field) == ("Item", None)


async def test_watch_from_reads_older_epochs_in_their_own_shape(tmp_path: pathlib.Path) -> None:
    """History kept on disk in the old shape replays through the upgrade as well."""
    await write_v1(tmp_path)
    async with (
        ws.open_store(schema(ItemSized, upgrade=to_sized), path=tmp_path, history=0) as store,
        store.watch_from(ws.Version(0), ws.on(ItemSized)) as events,
    ):
        first = await events.receive()
        assert isinstance(first, ws.Created)
        assert first.obj.size is Size.SMALL
