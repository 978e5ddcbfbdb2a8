"""What a commit acknowledges reads back: any object ``tx.create`` accepts comes back equal
after the store is closed and opened again; a value that would not read back is refused at
``tx.create`` with InvalidObject naming the field, and the store still opens.
"""

from __future__ import annotations

import datetime  # noqa: TC003 - the store resolves Event's annotations at run time
import enum
import pathlib
import re
import tempfile
from typing import Any, Literal

import anyio
import attrs
import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import watchstore as ws


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 9


@attrs.frozen
class Port:
    number: int
    name: str | None = None


@attrs.frozen
class Item:
    """A field of every kind the store writes."""

    id: str
    text: str = ""
    count: int = 0
    ratio: float = 0.0
    flag: bool = False
    blob: bytes = b""
    maybe: str | None = None
    color: Color = Color.RED
    level: Level = Level.LOW
    mode: Literal["a", "b"] = "a"
    tags: frozenset[str] = frozenset()
    sizes: tuple[int, ...] = ()
    pair: tuple[str, float] = ("", 0.0)
    port: Port | None = None
    anything: Any = None
    meta: ws.Meta = ws.Meta()


SCHEMA = ws.Schema(ws.Table(Item, indexes=[ws.Index("count"), ws.Index("tags", multi=True)]))

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
texts = st.text()  # includes lone surrogates, which must be refused
anything = st.one_of(
    st.none(), st.booleans(), ints, st.floats(), st.text(), st.binary(), st.integers()
)
wild = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.tuples(st.integers()),
    st.frozensets(st.text(max_size=3), max_size=2),
)
"""A value of any type: sometimes what the field takes, often not."""


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return valid


valid_items = st.builds(
    Item,
    id=st.text(min_size=1, max_size=8),
    text=field(texts),
    count=field(st.one_of(ints, st.integers())),
    ratio=field(st.one_of(st.floats(), ints)),
    flag=field(st.booleans()),
    blob=field(st.binary()),
    maybe=field(st.one_of(st.none(), texts)),
    color=field(st.sampled_from(Color)),
    level=field(st.sampled_from(Level)),
    mode=field(st.sampled_from(["a", "b"])),
    tags=field(st.frozensets(texts, max_size=4)),
    sizes=field(st.lists(ints, max_size=4).map(tuple)),
    pair=field(st.tuples(texts, st.floats())),
    port=field(st.one_of(st.none(), st.builds(Port, ints, st.one_of(st.none(), texts)))),
    anything=field(anything),
)
FIELDS = [name for name in attrs.fields_dict(Item) if name not in ("id", "meta")]


@st.composite
def poisoned_items(draw: st.DrawFn) -> Item:
    """A valid item with one field replaced by a value of any type (often one it takes)."""
    item = draw(valid_items)
    return attrs.evolve(item, **{draw(st.sampled_from(FIELDS)): draw(wild)})


items = st.one_of(valid_items, poisoned_items())


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to itself (msgpack keeps every float bit for bit)."""
    return msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b) or a == b


async def create_then_reopen(path: pathlib.Path, item: Item) -> tuple[bool, Item | None]:
    """Create ``item`` in a fresh durable store and read it back after a reopen: (accepted,
    the object read back)."""
    accepted = True
    async with ws.open_store(SCHEMA, path=path, durability="none") as store:
        await store.update(lambda tx: tx.create(Item("before")))
        try:
            await store.update(lambda tx: tx.create(item))
        except ws.InvalidObject:
            accepted = False
        await store.update(lambda tx: tx.create(Item("after")))
    async with ws.open_store(SCHEMA, path=path) as store:
        assert store.version == ws.Version(3 if accepted else 2)
        ids = [i.id for i in store.view(lambda tx: tx.all(Item))]
        assert {"before", "after"} <= set(ids)
        return accepted, store.view(lambda tx: tx.get(Item, item.id))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(item=items)
def test_every_object_create_accepts_comes_back_equal(
    tmp_path: pathlib.Path, anyio_backend: str, item: Item
) -> None:
    if item.id in ("before", "after"):
        return
    path = pathlib.Path(tempfile.mkdtemp(dir=tmp_path))
    accepted, back = anyio.run(create_then_reopen, path, item, backend=anyio_backend)
    event("accepted" if accepted else "refused")
    if accepted:
        assert back is not None
        for name in attrs.fields_dict(Item):
            if name != "meta":
                assert same(getattr(back, name), getattr(item, name)), name
    else:
        assert back is None


POISON = [
    ("count", None, re.escape("Item.count: None (NoneType) is not int")),
    ("count", "7", re.escape("Item.count: '7' (str) is not int")),
    ("count", True, re.escape("Item.count: True (bool) is not int")),
    ("count", 1.5, re.escape("Item.count: 1.5 (float) is not int")),
    ("count", 10**5000, "is outside -2\\*\\*63"),
    ("text", "bad \udc80 name", "lone surrogate"),
    ("tags", frozenset({"ok", "\ud800"}), "lone surrogate"),
    ("sizes", (1, "2"), "Item.sizes"),
    ("color", "red", "is not Color"),
    ("mode", "c", "one of \\['a', 'b'\\]"),
    ("anything", (1, 2), "an Any field"),
    ("port", Port(2**70), "Item.port"),
    ("flag", 1, "is not bool"),
    ("blob", bytearray(b"x"), "is not bytes"),
]


@pytest.mark.parametrize(
    ("field_name", "value", "message"), POISON, ids=[f"{f}-{m[:20]}" for f, _v, m in POISON]
)
async def test_a_value_that_would_not_read_back_is_refused_and_the_store_still_opens(
    tmp_path: pathlib.Path, field_name: str, value: Any, message: str
) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        await store.update(lambda tx: tx.create(Item("ok")))
        with pytest.raises(ws.InvalidObject, match=message):
            await store.update(lambda tx: tx.create(Item("bad", **{field_name: value})))
        assert store.version == ws.Version(1)
        await store.update(lambda tx: tx.create(Item("next")))
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        assert store.version == ws.Version(2)
        assert [i.id for i in store.view(lambda tx: tx.all(Item))] == ["next", "ok"]


async def test_updates_and_upserts_are_checked_as_creates_are(tmp_path: pathlib.Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path) as store:
        await store.update(lambda tx: tx.create(Item("a")))
        current = store.view(lambda tx: tx.get(Item, "a"))
        assert current is not None
        with pytest.raises(ws.InvalidObject, match=r"Item\.count"):
            await store.update(lambda tx: tx.update(attrs.evolve(current, count=None)))  # type: ignore[arg-type]
        with pytest.raises(ws.InvalidObject, match=r"Item\.ratio"):
            await store.update(lambda tx: tx.upsert(Item("b", ratio="1.0")))  # type: ignore[arg-type]
        assert store.version == ws.Version(1)


@attrs.frozen
class Event:
    id: str
    at: datetime.datetime
    meta: ws.Meta = ws.Meta()


def test_a_class_with_a_field_the_store_cannot_write_is_refused_when_declared() -> None:
    with pytest.raises(ws.InvalidObject, match=r"Event\.at is declared datetime"):
        ws.Table(Event)
