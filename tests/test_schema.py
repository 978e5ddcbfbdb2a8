"""Schema declaration: which classes can be stored and how indexes are declared."""

from __future__ import annotations

import attrs
import pytest

import watchstore as ws


@attrs.frozen
class Plain:
    id: str
    meta: ws.Meta = ws.Meta()


def test_a_mutable_class_is_refused() -> None:
    @attrs.define
    class Mutable:
        id: str
        meta: ws.Meta = ws.Meta()

    with pytest.raises(ws.InvalidObject, match=r"attrs\.frozen"):
        ws.Table(Mutable)


def test_a_class_that_is_not_attrs_is_refused() -> None:
    class NotAttrs:
        id = "x"

    with pytest.raises(ws.InvalidObject, match="not an attrs class"):
        ws.Table(NotAttrs)


def test_id_and_meta_fields_are_required() -> None:
    @attrs.frozen
    class NoMeta:
        id: str

    with pytest.raises(ws.InvalidObject, match="'meta'"):
        ws.Table(NoMeta)


def test_mutable_field_annotations_are_refused() -> None:
    @attrs.frozen
    class WithList:
        id: str
        tags: list[str]
        meta: ws.Meta = ws.Meta()

    with pytest.raises(ws.InvalidObject, match=r"tags.*mutable"):
        ws.Table(WithList)


def test_an_index_on_a_missing_field_is_refused() -> None:
    with pytest.raises(ws.InvalidObject, match="no field 'nope'"):
        ws.Table(Plain, indexes=[ws.Index("nope")])


def test_index_names_must_be_distinct() -> None:
    with pytest.raises(ws.InvalidObject, match="two indexes"):
        ws.Table(Plain, indexes=[ws.Index("id", name="x"), ws.Index("id", name="x")])


def test_a_derived_index_needs_a_name() -> None:
    with pytest.raises(ValueError, match="name"):
        ws.Index(key=lambda o: o.id)


def test_a_table_is_declared_once() -> None:
    with pytest.raises(ValueError, match="twice"):
        ws.Schema(ws.Table(Plain), ws.Table(Plain))
