"""Issue 22: ordered iteration and paging, last, find_any, any_of of ranges, delete_where,
compound keys of different lengths, required indexes, on_commit and replace_all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

import watchstore as ws
from tests.schema import SCHEMA, Node, Task
from tests.test_store import SlowProposer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@attrs.frozen
class Company:
    """go-memdb's compound-index example: a company and, optionally, its country and city."""

    id: str
    place: tuple[str, ...] = ()
    meta: ws.Meta = ws.Meta()


PLACES = ws.Schema(
    ws.Table(Company, indexes=[ws.Index(key=lambda c: c.place or None, name="place")])
)


@pytest.fixture
async def store() -> AsyncIterator[ws.Store]:
    async with ws.open_store(SCHEMA) as store:

        def fill(tx: ws.Tx) -> None:
            for i in range(40):
                tx.create(Task(f"t{i:02d}", f"svc-{i % 4}", node_id=f"n{i % 3}", slot=i))
            tx.create(Node("n1", "Web-1", labels=frozenset({"ssd", "gpu"})))
            tx.create(Node("n2", "web-2", labels=frozenset({"ssd"})))
            tx.create(Node("n3", "db-1"))

        await store.update(fill)
        yield store


def ids(objs: Any) -> list[str]:
    return [o.id for o in objs]


# -- iter, limit, reverse, after, last -------------------------------------------------------


async def test_iter_yields_in_index_order_lazily_and_stops_at_limit(store: ws.Store) -> None:
    def read(tx: ws.ReadTx) -> tuple[list[str], list[str]]:
        found = tx.iter(Task, limit=3, node_id="n1")
        assert iter(found) is found  # an iterator, not a list
        return ids(found), ids(tx.find(Task, node_id="n1"))[:3]

    got, expected = store.view(read)
    assert got == expected == ["t01", "t04", "t07"]


async def test_reverse_and_last_read_from_the_end(store: ws.Store) -> None:
    assert ids(store.view(lambda tx: tx.find(Task, limit=2, reverse=True, service_id="svc-1"))) == [
        "t37",
        "t33",
    ]
    last = store.view(lambda tx: tx.last(Task, service_id=ws.prefix("svc-")))
    assert last is not None
    assert last.id == "t39"  # svc-3, the highest key, then the highest id
    assert store.view(lambda tx: tx.last(Task, service_id="nope")) is None


async def test_after_continues_past_an_object_in_either_direction(store: ws.Store) -> None:
    def pages(tx: ws.ReadTx, reverse: bool) -> list[list[str]]:
        out, after = [], None
        while page := tx.find(Task, limit=7, reverse=reverse, after=after, node_id="n2"):
            out.append(ids(page))
            after = page[-1]
        return out

    forward = store.view(lambda tx: pages(tx, False))
    backward = store.view(lambda tx: pages(tx, True))
    every = [i for p in forward for i in p]
    assert every == ids(store.view(lambda tx: tx.find(Task, node_id="n2")))
    assert [i for p in backward for i in p] == every[::-1]
    assert [len(p) for p in forward] == [7, 6]


async def test_after_an_object_deleted_since_still_marks_its_place(store: ws.Store) -> None:
    gone = await store.update(lambda tx: tx.delete(Task, "t10"))  # svc-2, between t06 and t14
    rest = store.view(lambda tx: tx.find(Task, after=gone, service_id="svc-2"))
    assert ids(rest) == ["t14", "t18", "t22", "t26", "t30", "t34", "t38"]


async def test_an_iterator_in_an_update_continues_after_the_writes_it_made(
    store: ws.Store,
) -> None:
    def move_all(tx: ws.Tx) -> list[str]:
        seen = []
        for task in tx.iter(Task, node_id="n0"):
            seen.append(task.id)
            tx.update(attrs.evolve(task, node_id="n9"))
        return seen

    moved = await store.update(move_all)
    assert moved == [f"t{i:02d}" for i in range(0, 40, 3)]
    assert store.view(lambda tx: tx.count(Task, node_id="n0")) == 0


async def test_a_snapshot_iterator_reads_its_version_across_awaits(store: ws.Store) -> None:
    with store.snapshot() as snap:
        expected = ids(snap.find(Task))
        found = snap.iter(Task)
        head = [next(found).id for _ in range(20)]  # past the first page of 16
        await store.update(lambda tx: tx.delete_where(Task, service_id="svc-0"))
        await store.update(lambda tx: tx.create(Task("t00a", "svc-0")))
        assert head + ids(found) == expected
        assert ids(snap.find(Task, limit=3, reverse=True)) == ["t39", "t38", "t37"]


async def test_an_iterator_ends_with_its_view(store: ws.Store) -> None:
    found = store.view(lambda tx: tx.iter(Task))
    with pytest.raises(ws.StoreError, match="view\\(\\) returned"):
        next(found)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": -1}, "limit must be"),
        ({"limit": 2.5}, "limit must be"),
        ({"after": Node("n1", "x")}, "after= takes a Task"),
        ({"after": Task("t1", "s", node_id=None), "node_id": "n1"}, "has no key in index"),
        ({"node_id": ws.prefix(3)}, "cannot be compared"),  # type: ignore[arg-type]
        ({"service_slot": ws.prefix(("svc-1", ws.prefix(3)))}, "only the last part"),  # type: ignore[arg-type]
    ],
)
async def test_bad_options_raise_invalid_query_at_the_call(
    store: ws.Store, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ws.InvalidQuery, match=message):
        store.view(lambda tx: tx.iter(Task, **options))


async def test_an_index_cannot_be_named_after_an_option() -> None:
    with pytest.raises(ws.InvalidObject, match="reserved"):
        ws.Table(Task, indexes=[ws.Index("slot", name="limit")])


# -- find_any and any_of ---------------------------------------------------------------------


async def test_find_any_is_the_union_in_id_order_each_object_once(store: ws.Store) -> None:
    found = store.view(
        lambda tx: tx.find_any(
            Task,
            {"node_id": "n1"},
            {"id": ws.prefix("t0")},
            {"service_slot": ("svc-1", 1)},
        )
    )
    expected = sorted({f"t{i:02d}" for i in range(1, 40, 3)} | {f"t0{i}" for i in range(10)})
    assert ids(found) == expected


async def test_find_any_refuses_a_condition_that_is_not_a_dict(store: ws.Store) -> None:
    with pytest.raises(ws.InvalidQuery, match="as dicts"):
        store.view(lambda tx: tx.find_any(Task, "n1"))  # type: ignore[arg-type]


async def test_any_of_takes_prefixes_and_ranges_as_well_as_values(store: ws.Store) -> None:
    condition = ws.any_of(ws.prefix("db"), "WEB-2", ws.between("a", "c"))
    assert ids(store.view(lambda tx: tx.find(Node, name=condition))) == ["n3", "n2"]
    overlapping = ws.any_of(ws.between("t05", "t08"), ws.between("t07", "t10"), "t07")
    assert ids(store.view(lambda tx: tx.find(Task, id=overlapping))) == [
        "t05",
        "t06",
        "t07",
        "t08",
        "t09",
    ]
    found = store.view(
        lambda tx: tx.find(Task, id=ws.any_of(ws.prefix("t3"), ws.between("t05", "t08")))
    )
    assert ids(found) == ["t05", "t06", "t07", *(f"t3{i}" for i in range(10))]


# -- delete_where --------------------------------------------------------------------------------


async def test_delete_where_deletes_every_match_with_one_event_each(store: ws.Store) -> None:
    async with store.watch(ws.on_delete(Task), ws.on_commit()) as events:
        count = await store.update(lambda tx: tx.delete_where(Task, node_id="n2"))
        assert count == 13
        with anyio.fail_after(5):
            got = [await events.receive() for _ in range(14)]
    deleted = [e for e in got if isinstance(e, ws.Deleted)]
    assert sorted(e.obj.id for e in deleted) == [f"t{i:02d}" for i in range(2, 40, 3)]
    assert isinstance(got[-1], ws.Committed)
    assert store.view(lambda tx: tx.count(Task)) == 27


async def test_delete_where_with_an_id_prefix_is_delete_prefix(store: ws.Store) -> None:
    assert await store.update(lambda tx: tx.delete_where(Task, id=ws.prefix("t1"))) == 10
    assert await store.update(lambda tx: tx.delete_where(Task, id=ws.prefix("t1"))) == 0


# -- compound keys ---------------------------------------------------------------------------


async def test_compound_keys_of_different_lengths_order_element_wise_shorter_first() -> None:
    async with ws.open_store(PLACES) as store:
        await store.update(
            lambda tx: [
                tx.create(Company(id, place))
                for id, place in [
                    ("c1", ("HashiCorp", "US", "SF")),
                    ("c2", ("HashiCorp",)),
                    ("c3", ("HashiCorp", "UK")),
                    ("c4", ("Acme", "US")),
                    ("c5", ("HashiCorp", "US")),
                    ("c6", ("HashiCorp", "DE", "Berlin")),
                ]
            ]
        )
        everything = store.view(lambda tx: tx.find(Company))
        by_place = store.view(lambda tx: tx.find(Company, place=ws.between()))
        assert [c.place for c in by_place] == sorted(c.place for c in everything)
        assert ids(by_place) == ["c4", "c2", "c6", "c3", "c5", "c1"]
        starting_u = ws.prefix(("HashiCorp", ws.prefix("U")))
        assert ids(store.view(lambda tx: tx.find(Company, place=starting_u))) == ["c3", "c5", "c1"]
        assert ids(store.view(lambda tx: tx.find(Company, place=ws.prefix(("HashiCorp",))))) == [
            "c2",
            "c6",
            "c3",
            "c5",
            "c1",
        ]
        with pytest.raises(ws.InvalidObject, match="is not str"):
            await store.update(lambda tx: tx.create(Company("c7", ("HashiCorp", 3))))  # type: ignore[arg-type]


# -- required indexes ------------------------------------------------------------------------


@attrs.frozen
class Volume:
    id: str
    node_id: str | None = None
    zones: frozenset[str] = frozenset()
    meta: ws.Meta = ws.Meta()


VOLUMES = ws.Schema(
    ws.Table(
        Volume,
        indexes=[ws.Index("node_id", required=True), ws.Index("zones", multi=True, required=True)],
    )
)


async def test_a_required_index_refuses_an_object_without_a_key() -> None:
    async with ws.open_store(VOLUMES) as store:
        stored = await store.update(lambda tx: tx.create(Volume("v1", "n1", frozenset({"a"}))))
        with pytest.raises(ws.InvalidObject, match="'node_id' requires a key"):
            await store.update(lambda tx: tx.create(Volume("v2", None, frozenset({"a"}))))
        with pytest.raises(ws.InvalidObject, match="'zones' requires a key"):
            await store.update(lambda tx: tx.update(attrs.evolve(stored, zones=frozenset())))
        assert store.view(lambda tx: tx.all(Volume)) == [stored]


async def test_a_required_index_refuses_a_batch_with_a_missing_key() -> None:
    async with ws.open_store(VOLUMES) as store:

        async def load(b: ws.Batch) -> None:
            await b.update(lambda tx: tx.create(Volume("v1", "n1", frozenset({"a"}))))
            await b.update(lambda tx: tx.create(Volume("v2", None, frozenset({"a"}))))

        with pytest.raises(ws.InvalidObject, match="requires a key"):
            await store.batch(load)
        assert store.view(lambda tx: tx.count(Volume)) == 0


# -- on_commit -------------------------------------------------------------------------------


async def test_on_commit_runs_after_the_commit_in_registration_order(store: ws.Store) -> None:
    calls: list[tuple[str, ws.Version]] = []

    def write(tx: ws.Tx) -> None:
        tx.on_commit(lambda: calls.append(("first", store.version)))
        tx.create(Task("new", "svc-9"))
        tx.on_commit(lambda: calls.append(("second", store.version)))
        assert calls == []

    before = store.version
    await store.update(write)
    assert calls == [("first", store.version), ("second", store.version)]
    assert store.version.index == before.index + 1


async def test_on_commit_never_runs_when_the_transaction_aborts(store: ws.Store) -> None:
    calls: list[str] = []

    def write(tx: ws.Tx) -> None:
        tx.on_commit(lambda: calls.append("ran"))
        tx.create(Task("new", "svc-9"))
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        await store.update(write)
    assert calls == []


async def test_on_commit_never_runs_when_the_proposal_fails() -> None:
    proposer = SlowProposer()
    proposer.fail = OSError("disk gone")
    proposer.release.set()
    calls: list[str] = []

    def write(tx: ws.Tx) -> None:
        tx.on_commit(lambda: calls.append("ran"))
        tx.create(Task("t1", "s1"))

    async with ws.open_store(SCHEMA, proposer=proposer) as store:
        with pytest.raises(ws.ProposalFailed):
            await store.update(write)
    assert calls == []


async def test_on_commit_in_a_batch_runs_when_its_chunk_commits_not_if_undone(
    store: ws.Store,
) -> None:
    calls: list[tuple[str, int]] = []

    def write(tx: ws.Tx, name: str, fail: bool = False) -> None:
        tx.on_commit(lambda: calls.append((name, store.view(lambda r: r.count(Task)))))
        tx.create(Task(name, "svc-9"))
        if fail:
            raise ValueError(name)

    async def load(b: ws.Batch) -> None:
        await b.update(lambda tx: write(tx, "a"))
        with pytest.raises(ValueError, match="b"):
            await b.update(lambda tx: write(tx, "b", fail=True))
        await b.update(lambda tx: write(tx, "c"))  # the chunk is full: a and c commit
        assert calls == [("a", 42), ("c", 42)]
        await b.update(lambda tx: write(tx, "d"))
        assert calls == [("a", 42), ("c", 42)]

    await store.batch(load, max_changes=2)
    assert calls == [("a", 42), ("c", 42), ("d", 43)]


async def test_an_on_commit_error_propagates_after_the_commit_and_the_others_run(
    store: ws.Store,
) -> None:
    calls: list[str] = []

    def write(tx: ws.Tx) -> None:
        tx.on_commit(lambda: 1 / 0)
        tx.on_commit(lambda: calls.append("second"))
        tx.create(Task("new", "svc-9"))

    with pytest.raises(ZeroDivisionError) as raised:
        await store.update(write)
    assert calls == ["second"]
    assert "had committed" in str(raised.value.__notes__)
    assert store.view(lambda tx: tx.get(Task, "new")) is not None


# -- replace_all -----------------------------------------------------------------------------


async def test_replace_all_commits_once_and_emits_only_the_difference(store: ws.Store) -> None:
    current = store.view(lambda tx: tx.all(Task))
    kept = current[:30]
    changed = [attrs.evolve(t, node_id="moved") for t in current[30:35]]
    new = [Task("fresh1", "svc-9"), Task("fresh2", "svc-9")]
    nodes = store.view(lambda tx: tx.all(Node))
    async with store.watch() as events:
        before = store.version
        count = await store.replace_all([*kept, *changed, *new, *nodes])
        assert count == 5 + 5 + 2  # updated, deleted, created
        assert store.version.index == before.index + 1
        with anyio.fail_after(5):
            got = [await events.receive() for _ in range(13)]
    kinds = {type(e).__name__: 0 for e in got}
    for e in got:
        kinds[type(e).__name__] += 1
    assert kinds == {"Deleted": 5, "Updated": 5, "Created": 2, "Committed": 1}
    assert ids(store.view(lambda tx: tx.find(Task, node_id="moved"))) == ids(changed)
    assert store.view(lambda tx: tx.count(Task)) == 37
    assert await store.replace_all([*kept, *changed, *new, *nodes]) == 0


async def test_replace_all_checks_every_object_before_changing_anything(store: ws.Store) -> None:
    before = store.version
    with pytest.raises(ws.InvalidObject, match="two Task objects with the id 'x'"):
        await store.replace_all([Task("x", "s"), Task("x", "t")])
    with pytest.raises(ws.InvalidObject, match="non-empty str id"):
        await store.replace_all([Task("", "s")])
    assert store.version == before
    assert store.view(lambda tx: tx.count(Task)) == 40


@attrs.frozen
class Mixed:
    id: str
    parts: tuple[str | int, ...] = ()
    meta: ws.Meta = ws.Meta()


async def test_compound_keys_must_agree_position_by_position_whatever_their_length() -> None:
    schema = ws.Schema(ws.Table(Mixed, indexes=[ws.Index(key=lambda m: m.parts, name="parts")]))
    async with ws.open_store(schema) as store:
        await store.update(
            lambda tx: [tx.create(Mixed("m1", ("a", 1))), tx.create(Mixed("m2", ("a",)))]
        )
        await store.update(lambda tx: tx.create(Mixed("m3", ("b", 2, "x"))))
        with pytest.raises(ws.InvalidObject, match="cannot be ordered"):
            await store.update(lambda tx: tx.create(Mixed("m4", ("a", "one"))))
        with pytest.raises(ws.InvalidObject, match="cannot be ordered"):
            await store.update(lambda tx: tx.create(Mixed("m4", ("c", 3, 4))))
        found = store.view(lambda tx: tx.find(Mixed, parts=ws.between(("a",), ("b", 3))))
        assert ids(found) == ["m2", "m1", "m3"]
        with pytest.raises(ws.InvalidQuery, match="cannot be compared"):
            store.view(lambda tx: tx.find(Mixed, parts=("a", "one")))
