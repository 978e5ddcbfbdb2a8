"""Encoding stored objects to JSON and decoding them back, guided by their annotations."""

from __future__ import annotations

from typing import Any

import attrs
import hypothesis
import pytest
from hypothesis import strategies as st

import watchstore as ws
from tests.schema import Node, State, Task
from watchstore.core.codec import DecodeError, decoder_for, dump_data, encode, object_json


@attrs.frozen
class Everything:
    id: str
    count: int
    ratio: float
    flag: bool
    maybe: str | None
    state: State
    pair: tuple[str, int]
    many: tuple[int, ...]
    tags: frozenset[str]
    blob: bytes
    version: ws.Version | None = None
    meta: ws.Meta = ws.Meta()


def test_every_supported_type_round_trips() -> None:
    obj = Everything(
        "e1",
        3,
        0.5,
        True,
        None,
        State.RUNNING,
        ("a", 1),
        (1, 2, 3),
        frozenset({"x", "y"}),
        b"\x00\xff",
        ws.Version(7),
        ws.Meta(ws.Version(2), 1.0, 2.0),
    )
    assert decoder_for(Everything)(encode(obj)) == obj


@pytest.mark.parametrize(
    "obj", [Task("t1", "s1", None, State.NEW, 3), Node("n1", "web", frozenset({"gpu"}))]
)
def test_schema_classes_round_trip(obj: object) -> None:
    assert decoder_for(type(obj))(encode(obj)) == obj


def test_a_wrong_type_names_the_field() -> None:
    data = encode(Task("t1", "s1"))
    data["slot"] = "three"
    with pytest.raises(DecodeError, match=r"Task\.slot: expected int"):
        decoder_for(Task)(data)


def test_an_unknown_enum_value_is_refused() -> None:
    data = encode(Task("t1", "s1"))
    data["state"] = 99
    with pytest.raises(DecodeError, match="99 is not a State"):
        decoder_for(Task)(data)


def test_unknown_fields_are_refused_and_missing_ones_take_defaults() -> None:
    data = encode(Task("t1", "s1", slot=4))
    with pytest.raises(DecodeError, match="unknown fields"):
        decoder_for(Task)({**data, "colour": "red"})
    del data["node_id"], data["slot"]
    assert decoder_for(Task)(data) == Task("t1", "s1")


def test_an_object_encodes_to_the_text_the_format_defines() -> None:
    """Compiled encoders must write exactly what docs/format.md defines: fields in order,
    values as they are or encoded (enums by value, tuples as lists, bytes as $b64, sets
    sorted, Meta as [version, created_at, updated_at])."""
    obj = Everything(
        "e1",
        3,
        0.5,
        False,
        "m",
        State.ASSIGNED,
        ("a", 1),
        (1, 2),
        frozenset({"y", "x"}),
        b"\x01",
        None,
        ws.Meta(ws.Version(9), 1.5, 2.5),
    )
    assert dump_data(encode(obj)) == (
        b'{"id":"e1","count":3,"ratio":0.5,"flag":false,"maybe":"m","state":2,'
        b'"pair":["a",1],"many":[1,2],"tags":["x","y"],"blob":{"$b64":"AQ=="},'
        b'"version":null,"meta":[9,1.5,2.5]}'
    )
    assert dump_data(encode(ws.Meta())) == b"[null,0.0,0.0]"
    assert dump_data("é\n") == '"é\\n"'.encode()


@attrs.frozen
class Plain:
    id: str
    count: int | None
    anything: Any
    meta: ws.Meta = ws.Meta()


_times = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70))
_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.sampled_from(State)
)


@hypothesis.given(
    id=st.text(),
    count=st.one_of(st.none(), st.integers(-(2**70), 2**70)),
    anything=_values,
    version=st.one_of(st.none(), st.integers(0, 2**64)),
    created=_times,
    updated=_times,
)
def test_the_direct_json_writer_writes_what_encode_and_json_write(
    id: str, count: int | None, anything: Any, version: int | None, created: Any, updated: Any
) -> None:
    meta = ws.Meta(None if version is None else ws.Version(version), created, updated)
    obj = Plain(id, count, anything, meta)
    assert object_json(obj).encode() == dump_data(encode(obj))
