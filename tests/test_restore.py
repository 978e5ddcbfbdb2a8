"""Restoring a log into the tables in bulk (``core.tables.restore_tables``): the tables it builds
and the changes it returns are those of replaying every object and change one write at a time
(``StoreState.apply``); where an index needs per-object checks it falls back to them."""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest

import watchstore as ws
from watchstore.core.codec import LoggedActions, dump_data, encode, load_members
from watchstore.core.model import ActionKind, Change, Meta, StoreAction, Version
from watchstore.core.state import StoreState
from watchstore.core.tables import TableState, restore_tables
from watchstore.log.bodies import Format1


@attrs.frozen
class Pod:
    id: str
    zone: str
    rank: int
    owner: str | None = None
    meta: ws.Meta = ws.Meta()


SCHEMA = ws.Schema(
    ws.Table(
        Pod,
        indexes=[
            ws.Index("zone"),
            ws.Index("rank"),
            ws.Index("owner", unique=True),
            ws.Index(key=lambda p: p.zone.upper(), name="loud_zone"),
        ],
    )
)


def pods(n: int, seed: int) -> list[Pod]:
    rng = random.Random(seed)
    meta = Meta(Version(1), 1.0, 1.0)
    return [
        Pod(
            f"p{rng.getrandbits(40):010x}",
            rng.choice("abcde"),
            rng.randrange(7),
            f"o{i}" if i % 3 else None,
            meta,
        )
        for i in range(n)
    ]


def layout(table: TableState) -> dict[str, Any]:
    """Everything a table's structures hold, in the order reads see it."""
    out: dict[str, Any] = {"rows": dict(table.rows), "ids": list(table.ids.ordered())}
    for name, index in table.indexes.items():
        buckets = {
            key: bucket if type(bucket) is str else list(bucket.ordered())
            for key, bucket in index.buckets.items()
        }
        out[name] = (list(index.keys.ordered()), buckets, index.family, index.key_type)
    return out


def restore_both_ways(
    snapshot: list[Pod], changes: list[Change]
) -> tuple[list[Change], list[Change]]:
    """Restore ``snapshot`` then ``changes`` in bulk (``restore_tables``) and one by one
    (``write`` each object, ``apply`` each change); assert both tables end up with the same
    layout and return what each committed."""
    bulk = StoreState(SCHEMA, Version(1))
    committed = restore_tables(bulk.by_name, {"Pod": snapshot}, changes)
    one_by_one = StoreState(SCHEMA, Version(1))
    table = one_by_one.by_name["Pod"]
    for obj in snapshot:
        table.write(obj.id, None, obj)
    expected = [one_by_one.apply(change) for change in changes]
    assert layout(bulk.by_name["Pod"]) == layout(table)
    return committed, expected


def written_one_by_one(objs: list[Pod]) -> TableState:
    table = StoreState(SCHEMA).by_name["Pod"]
    for obj in objs:
        table.write(obj.id, None, obj)
    return table


def test_a_bulk_load_builds_what_writing_each_object_builds() -> None:
    objs = pods(500, seed=1)
    table = StoreState(SCHEMA).by_name["Pod"]
    table.load({o.id: o for o in objs})
    assert layout(table) == layout(written_one_by_one(objs))
    moved = attrs.evolve(objs[0], zone="z", owner="new")
    table.write(moved.id, objs[0], moved)  # the compiled write still sees the same structures
    assert table.rows[moved.id] is moved
    assert moved.id in table.indexes["zone"].buckets["z"]


def test_a_bulk_load_of_a_held_unique_key_raises_what_a_write_raises() -> None:
    objs = pods(10, seed=2)
    twin = attrs.evolve(objs[1], id="twin")
    table = StoreState(SCHEMA).by_name["Pod"]
    with pytest.raises(ws.UniqueConflict):
        table.load({o.id: o for o in [*objs, twin]})


def test_a_bulk_load_with_keys_of_two_families_raises_what_a_write_raises() -> None:
    objs = pods(10, seed=3)
    odd = attrs.evolve(objs[4], rank="seven")  # type: ignore[arg-type]
    table = StoreState(SCHEMA).by_name["Pod"]
    with pytest.raises(ws.StoreError):
        table.load({o.id: o for o in [*objs, odd]})


def test_restored_changes_are_those_applying_them_one_by_one_gives() -> None:
    objs = pods(60, seed=4)
    snapshot, later = objs[:40], objs[40:]
    changes = []
    version = 1
    for obj in later:  # creates
        version += 1
        changes.append(Change(Version(version), [StoreAction(ActionKind.CREATE, "Pod", obj)]))
    for obj in objs[::7]:  # updates (decoded from a log: no old object) and deletes
        version += 1
        newer = attrs.evolve(obj, rank=obj.rank + 10)
        changes.append(Change(Version(version), [StoreAction(ActionKind.UPDATE, "Pod", newer)]))
    for obj in objs[3::11]:
        version += 1
        changes.append(Change(Version(version), [StoreAction(ActionKind.DELETE, "Pod", obj)]))

    committed, expected = restore_both_ways(snapshot, changes)
    assert committed == expected


def test_a_restored_delete_of_a_missing_object_is_refused() -> None:
    gone = pods(1, seed=5)[0]
    change = Change(Version(2), [StoreAction(ActionKind.DELETE, "Pod", gone)])
    with pytest.raises(ws.StoreError, match="does not exist"):
        restore_tables(StoreState(SCHEMA).by_name, {"Pod": []}, [change])


@pytest.mark.parametrize("text", ["[1,2,3]", " [ 1 , 2 ,\n3 ] ", "[1,\t2,3]"])
def test_members_of_an_array_are_decoded_one_by_one_with_any_white_space(text: str) -> None:
    members, end = load_members(text + "x", 0, lambda n: n * 2)
    assert members == [2, 4, 6]
    assert (text + "x")[end:].strip() == "x"


@pytest.mark.parametrize("text", ["[1,2", "[1;2]", "1,2]", "[1,,2]", "[1 2]"])
def test_a_malformed_array_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: the caller names the record
        load_members(text, 0, lambda n: n)


def test_a_snapshot_body_decodes_whatever_its_white_space_and_key_order() -> None:
    obj = pods(1, seed=6)[0]
    item = dump_data(encode(obj)).decode()
    body = f' {{ "tables" : {{ "Pod" : [ {item} , {item} ] }} ,\n "version" : 3 }} '.encode()
    read = Format1(SCHEMA).read_snapshot(body, "f", 44)
    assert read.version == Version(3)
    assert read.objects == {"Pod": [obj, obj]}


@pytest.mark.parametrize(
    "body", [b'{"version":3,"tables":{"Pod":[]}}x', b'{"version":3}', b'{"tables":{}}']
)
def test_a_snapshot_body_with_extra_or_missing_parts_is_corrupt(body: bytes) -> None:
    with pytest.raises(ws.LogCorrupt):
        Format1(SCHEMA).read_snapshot(body, "f", 44)


def logged(version: int, *actions: tuple[ActionKind, Pod]) -> Change:
    """A Change as _log decodes it: LoggedActions."""
    return Change(
        Version(version),
        LoggedActions([k for k, _ in actions], ["Pod"] * len(actions), [o for _, o in actions]),
    )


def test_logged_actions_read_as_the_list_of_store_actions_they_stand_for() -> None:
    a, b = pods(2, seed=7)
    actions = LoggedActions([ActionKind.CREATE, ActionKind.DELETE], ["Pod", "Pod"], [a, b])
    expected = [StoreAction(ActionKind.CREATE, "Pod", a), StoreAction(ActionKind.DELETE, "Pod", b)]
    assert len(actions) == 2
    assert list(actions) == expected
    assert actions == expected
    assert expected == actions
    assert actions[1] == expected[1]
    assert actions[-1:] == expected[-1:]
    assert repr(actions) == repr(expected)
    assert Change(Version(3), actions) == Change(Version(3), expected)


def test_logged_changes_restore_as_applying_them_one_by_one_does() -> None:
    """The decoded form: creates-only changes are kept as decoded; a change with an update,
    a delete, a create of an id that exists, or an id twice goes action by action."""
    objs = pods(30, seed=8)
    snapshot, later = objs[:10], objs[10:]
    moved = attrs.evolve(objs[0], rank=99)
    twice = attrs.evolve(later[5], rank=50)
    changes = [
        logged(2, *((ActionKind.CREATE, o) for o in later[:5])),
        logged(3, (ActionKind.CREATE, later[5]), (ActionKind.CREATE, twice)),
        logged(4, (ActionKind.UPDATE, moved), (ActionKind.CREATE, later[6])),
        logged(5, (ActionKind.CREATE, attrs.evolve(objs[1], rank=77))),  # exists: an update
        logged(6, (ActionKind.DELETE, objs[2]), (ActionKind.CREATE, later[7])),
        logged(7),
    ]
    committed, expected = restore_both_ways(snapshot, changes)
    assert committed == expected
    assert committed[0] is changes[0]  # kept as decoded
