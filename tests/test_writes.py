"""Write transactions: create, update, upsert, delete, errors, aborts and versions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, State, Task

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator


@pytest.fixture
async def store() -> AsyncIterator[ws.Store]:
    async with ws.open_store(SCHEMA) as store:
        yield store


async def test_create_stores_the_object_stamped_with_its_commit(store: ws.Store) -> None:
    created = await store.update(lambda tx: tx.create(Task("t1", "s1")))
    assert created.meta.version == store.version == ws.Version(1)
    assert created.meta.created_at == created.meta.updated_at > 0
    assert store.view(lambda tx: tx.get(Task, "t1")) == created


async def test_creating_an_existing_id_raises_object_exists(store: ws.Store) -> None:
    first = await store.update(lambda tx: tx.create(Task("t1", "s1")))
    with pytest.raises(ws.ObjectExists) as info:
        await store.update(lambda tx: tx.create(Task("t1", "s2")))
    assert info.value.current == first


async def test_update_keeps_created_at_and_moves_version(store: ws.Store) -> None:
    first = await store.update(lambda tx: tx.create(Task("t1", "s1")))
    second = await store.update(lambda tx: tx.update(attrs.evolve(first, node_id="n1")))
    assert second.meta.version == ws.Version(2)
    assert second.meta.created_at == first.meta.created_at
    assert second.meta.updated_at >= first.meta.updated_at


async def test_update_from_a_stale_copy_raises_sequence_conflict(store: ws.Store) -> None:
    first = await store.update(lambda tx: tx.create(Task("t1", "s1")))
    second = await store.update(lambda tx: tx.update(attrs.evolve(first, node_id="n1")))
    with pytest.raises(ws.SequenceConflict) as info:
        await store.update(lambda tx: tx.update(attrs.evolve(first, node_id="n2")))
    assert info.value.current == second
    assert info.value.given_version == ws.Version(1)


async def test_update_of_a_never_stored_object_conflicts(store: ws.Store) -> None:
    await store.update(lambda tx: tx.create(Task("t1", "s1")))
    with pytest.raises(ws.SequenceConflict):
        await store.update(lambda tx: tx.update(Task("t1", "s9")))


async def test_update_of_a_missing_id_raises_object_not_found(store: ws.Store) -> None:
    with pytest.raises(ws.ObjectNotFound, match="upsert"):
        await store.update(lambda tx: tx.update(Task("nope", "s1")))


async def test_upsert_creates_or_replaces_regardless_of_version(store: ws.Store) -> None:
    created = await store.update(lambda tx: tx.upsert(Task("t1", "s1")))
    replaced = await store.update(lambda tx: tx.upsert(Task("t1", "s2")))
    assert replaced.service_id == "s2"
    assert replaced.meta.created_at == created.meta.created_at


async def test_delete_by_id_and_by_object(store: ws.Store) -> None:
    a = await store.update(lambda tx: tx.create(Task("a", "s1")))
    await store.update(lambda tx: tx.create(Task("b", "s1")))
    removed = await store.update(lambda tx: tx.delete(a))
    assert removed == a
    await store.update(lambda tx: tx.delete(Task, "b"))
    assert store.view(lambda tx: tx.all(Task)) == []


async def test_delete_of_a_stale_object_conflicts(store: ws.Store) -> None:
    a = await store.update(lambda tx: tx.create(Task("a", "s1")))
    await store.update(lambda tx: tx.update(attrs.evolve(a, slot=1)))
    with pytest.raises(ws.SequenceConflict):
        await store.update(lambda tx: tx.delete(a))


async def test_delete_of_a_missing_id_raises_object_not_found(store: ws.Store) -> None:
    with pytest.raises(ws.ObjectNotFound):
        await store.update(lambda tx: tx.delete(Task, "nope"))


@attrs.frozen
class Unknown:
    id: str
    meta: ws.Meta = ws.Meta()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (Unknown("u1"), "no table holds Unknown"),
        (Task("", "s1"), "non-empty str id"),
        (
            Task("t1", ["not", "hashable"]),  # type: ignore[arg-type]
            r"Task.service_id: \['not', 'hashable'\] \(list\) is not str",
        ),
    ],
)
async def test_unstorable_objects_are_refused(store: ws.Store, bad: object, message: str) -> None:
    def write(tx: ws.Tx) -> None:
        tx.create(Task("ok", "s1"))
        tx.create(bad)

    with pytest.raises(ws.InvalidObject, match=message):
        await store.update(write)
    assert store.view(lambda tx: tx.all(Task)) == []


async def test_an_exception_in_the_function_aborts_everything(store: ws.Store) -> None:
    await store.update(lambda tx: tx.create(Task("keep", "s1", node_id="n1")))

    def failing(tx: ws.Tx) -> None:
        tx.create(Task("new", "s1", node_id="n1"))
        tx.update(attrs.evolve(tx.get(Task, "keep"), node_id="n2"))  # type: ignore[misc]
        tx.delete(Task, "new")
        tx.create(Task("other", "s2"))
        raise RuntimeError("boom")

    before = store.version
    with pytest.raises(RuntimeError, match="boom"):
        await store.update(failing)
    assert store.version == before
    assert [t.id for t in store.view(lambda tx: tx.find(Task, node_id="n1"))] == ["keep"]
    assert store.view(lambda tx: tx.find(Task, node_id="n2")) == []
    assert store.view(lambda tx: tx.count(Task)) == 1


async def test_reads_inside_a_transaction_see_its_own_writes(store: ws.Store) -> None:
    def work(tx: ws.Tx) -> list[str]:
        tx.create(Task("a", "s1", node_id="n1"))
        tx.create(Task("b", "s1", node_id="n1"))
        tx.delete(Task, "a")
        return [t.id for t in tx.find(Task, node_id="n1")]

    assert await store.update(work) == ["b"]


async def test_a_transaction_that_changes_nothing_commits_no_version(store: ws.Store) -> None:
    await store.update(lambda tx: tx.get(Task, "x"))

    def create_then_delete(tx: ws.Tx) -> None:
        tx.create(Task("a", "s1"))
        tx.delete(Task, "a")

    await store.update(create_then_delete)
    assert store.version == ws.Version(0)


async def test_every_commit_gets_the_next_version(store: ws.Store) -> None:
    for i in range(5):
        obj = await store.update(lambda tx: tx.create(Task(f"t{i}", "s1")))
        assert obj.meta.version == ws.Version(i + 1)
    assert store.version == ws.Version(5)


async def test_unique_conflict_names_index_key_and_holder(store: ws.Store) -> None:
    await store.update(lambda tx: tx.create(Node("n1", "Web-1")))
    with pytest.raises(ws.UniqueConflict) as info:
        await store.update(lambda tx: tx.create(Node("n2", "WEB-1")))
    assert (info.value.index, info.value.key, info.value.holder) == ("name", "web-1", "n1")
    assert store.view(lambda tx: tx.count(Node)) == 1


async def test_a_unique_key_can_move_within_one_transaction(store: ws.Store) -> None:
    old = await store.update(lambda tx: tx.create(Node("n1", "web")))

    def rename(tx: ws.Tx) -> None:
        tx.update(attrs.evolve(old, name="retired"))
        tx.create(Node("n2", "web"))

    await store.update(rename)
    assert store.view(lambda tx: tx.first(Node, name="WEB")).id == "n2"  # type: ignore[union-attr]


async def test_an_async_function_is_refused_and_nothing_applied(store: ws.Store) -> None:
    async def wrong(tx: ws.Tx) -> None:
        tx.create(Task("a", "s1"))

    with pytest.raises(TypeError, match="synchronous"):
        await store.update(wrong)  # type: ignore[unused-coroutine]
    assert store.view(lambda tx: tx.count(Task)) == 0


async def test_awaitables_are_refused_whatever_results_came_before(store: ws.Store) -> None:
    # The store remembers result types without __await__; more than it keeps must not
    # let an awaitable through, in update() or in a batch.
    for i in range(300):
        kind = type(f"Result{i}", (), {})

        def make(tx: ws.Tx, kind: type = kind) -> object:
            return kind()

        assert type(await store.update(make)) is kind

    class Pending:
        def __await__(self) -> Generator[None, None, None]:
            yield

    def wrong(tx: ws.Tx) -> Pending:
        tx.create(Task("a", "s1"))
        return Pending()

    with pytest.raises(TypeError, match="synchronous"):
        await store.update(wrong)

    async def load(batch: ws.Batch) -> None:
        await batch.update(wrong)

    with pytest.raises(TypeError, match="synchronous"):
        await store.batch(load)
    assert store.view(lambda tx: tx.count(Task)) == 0


async def test_keys_of_another_type_are_refused_before_anything_is_written(
    store: ws.Store,
) -> None:
    @attrs.frozen
    class Loose:
        id: str
        rank: object = None
        meta: ws.Meta = ws.Meta()

    schema = ws.Schema(ws.Table(Loose, indexes=[ws.Index("rank")]))
    async with ws.open_store(schema) as loose:
        await loose.update(lambda tx: tx.create(Loose("a", rank=1)))
        with pytest.raises(ws.InvalidObject, match="cannot be ordered"):
            await loose.update(lambda tx: tx.create(Loose("b", rank="one")))
        assert loose.view(lambda tx: [o.id for o in tx.all(Loose)]) == ["a"]
        assert loose.view(lambda tx: [o.id for o in tx.find(Loose, rank=ws.between(0, 5))]) == ["a"]


async def test_state_enum_is_stored_as_given(store: ws.Store) -> None:
    t = await store.update(lambda tx: tx.create(Task("a", "s1", state=State.RUNNING)))
    assert t.state is State.RUNNING


async def test_compound_keys_must_keep_their_element_types(store: ws.Store) -> None:
    await store.update(lambda tx: tx.create(Task("a", "s1", slot=1)))

    @attrs.frozen
    class Pair:
        id: str
        left: object
        right: object
        meta: ws.Meta = ws.Meta()

    schema = ws.Schema(
        ws.Table(Pair, indexes=[ws.Index(key=lambda p: (p.left, p.right), name="pair")])
    )
    async with ws.open_store(schema) as pairs:
        await pairs.update(lambda tx: tx.create(Pair("p1", "a", 1)))
        with pytest.raises(ws.InvalidObject, match="cannot be ordered"):
            await pairs.update(lambda tx: tx.create(Pair("p2", "a", "b")))
        found = pairs.view(lambda tx: [p.id for p in tx.find(Pair, pair=ws.prefix(("a",)))])
        assert found == ["p1"]
