"""Crash test of the durable epoch log: SIGKILL a committing child, then check recovery.

A child process (``tests/crash_child.py``) commits a deterministic sequence of transactions to
a store directory and reports every acknowledged commit on stdout. The test kills it with
SIGKILL at a random point, reopens the directory and checks that the store recovered every
acknowledged commit and nothing else: its version R is the last acknowledged one A, or A + 1
(the one commit in flight, which may or may not have reached the log; it was never
acknowledged, so both are correct), and its objects and every index equal a plain-dict model
replayed to R. Then the next child resumes from R, and so on.

``WATCHSTORE_CRASH_KILLS`` (default 100) sets how many kills; ``WATCHSTORE_CRASH_SEED`` the
seed of the transactions and of the kill points.
"""

from __future__ import annotations

import enum
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

import watchstore as ws
from tests.crash_child import NODE_IDS, TASK_IDS, transaction
from tests.schema import SCHEMA, Node, State, Task

if TYPE_CHECKING:
    from trio.abc import ReceiveStream

KILLS: Final = int(os.environ.get("WATCHSTORE_CRASH_KILLS", "100"))
SEED: Final = int(os.environ.get("WATCHSTORE_CRASH_SEED", "20240607"))
CHILD: Final = Path(__file__).with_name("crash_child.py")
ROUND_TIMEOUT: Final = 60.0
COMPACT_BYTES: Final = (16 << 10, 64 << 10, 256 << 10, 64 << 20)
"""The child compacts once its epoch holds this many bytes of changes (a random choice per
child; the last is the default, which these runs never reach)."""
CLASSES: Final[dict[str, type[Any]]] = {"Task": Task, "Node": Node}


class Lines:
    """Reads newline-terminated lines from a stream."""

    def __init__(self, stream: ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str | None:
        """The next line without its newline, or None at the end of the stream."""
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some()
            if not data:
                assert not self._buffer, f"stream ended inside a line: {self._buffer!r}"
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


class Model:
    """The expected state: ``(table, id) -> (fields, version that last wrote it)``."""

    def __init__(self) -> None:
        self.version = 0
        self.rows: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}

    def advance_to(self, version: int) -> None:
        """Replay the child's transactions up to ``version``."""
        assert version >= self.version, "the model cannot go back"
        while self.version < version:
            self.version += 1
            for kind, table, id, fields in transaction(SEED, self.version):
                if kind == "delete":
                    self.rows.pop((table, id), None)
                else:
                    self.rows[table, id] = (fields, self.version)

    def objects(self, table: str) -> list[tuple[Any, int]]:
        """The expected objects of ``table`` in id order (with default meta), each with the
        version that last wrote it."""
        cls = CLASSES[table]
        out = []
        for (name, id), (fields, version) in sorted(self.rows.items()):
            if name != table:
                continue
            values = dict(fields)
            if "labels" in values:
                values["labels"] = frozenset(values["labels"])
            if "state" in values:
                values["state"] = State(values["state"])
            out.append((cls(id=id, **values), version))
        return out


def _index_keys(index: ws.Index, obj: Any) -> set[Any]:
    """The normalised keys ``obj`` should have in ``index``, computed independently."""
    raw = index.key(obj) if index.key is not None else getattr(obj, index.field or "")
    values = (raw or ()) if index.multi else (raw,)
    return {_norm(v, index.fold_case) for v in values if v is not None}


def _norm(value: Any, fold: bool) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, tuple):
        return tuple(_norm(v, False) for v in value)
    if fold and isinstance(value, str):
        value = value.casefold()
    return value


def check_state(tx: ws.ReadTx, model: Model, where: str) -> None:
    """Assert that ``tx`` holds exactly the model's objects and that every index agrees."""
    for table in SCHEMA.tables:
        cls = table.cls
        expected = model.objects(table.name) if table.name in CLASSES else []
        stored = tx.all(cls)
        assert [o.id for o in stored] == [o.id for o, _ in expected], f"{where}: {table.name} ids"
        assert tx.count(cls) == len(expected), where
        for obj, (want, version) in zip(stored, expected, strict=True):
            assert attrs.evolve(obj, meta=ws.Meta()) == want, f"{where}: {obj.id}"
            assert obj.meta.version == ws.Version(version), f"{where}: {obj.id} meta.version"
            assert 0 < obj.meta.created_at <= obj.meta.updated_at, f"{where}: {obj.id} meta"
            if isinstance(obj, Task):
                assert type(obj.state) is State, f"{where}: {obj.id} state {obj.state!r}"
            if isinstance(obj, Node):
                assert type(obj.labels) is frozenset, f"{where}: {obj.id} labels"
            assert tx.get(cls, obj.id) is obj, where
        present = {o.id for o, _ in expected}
        for name, id in _all_ids():
            if name == table.name and id not in present:
                assert tx.get(cls, id) is None, f"{where}: {name} {id} should be absent"
        objects = [o for o, _ in expected]
        for index in table.indexes:
            check_index(tx, cls, index, objects, f"{where}: {table.name}.{index.index_name}")


def _all_ids() -> list[tuple[str, str]]:
    return [("Task", id) for id in TASK_IDS] + [("Node", id) for id in NODE_IDS]


def check_index(
    tx: ws.ReadTx, cls: type[Any], index: ws.Index, objects: list[Any], where: str
) -> None:
    """Assert that ``find`` on ``index`` agrees with the model objects, key by key and in a
    full ordered scan (which would also show entries left behind by deleted objects)."""
    name = index.index_name
    keys = {o.id: _index_keys(index, o) for o in objects}
    # One raw query value per normalised key.
    queries: dict[Any, Any] = {}
    for obj in objects:
        raw = index.key(obj) if index.key is not None else getattr(obj, index.field or "")
        for value in (raw or ()) if index.multi else (raw,):
            if value is not None:
                queries.setdefault(_norm(value, index.fold_case), value)
    for key, value in queries.items():
        want = sorted(id for id, ks in keys.items() if key in ks)
        got = [o.id for o in tx.find(cls, **{name: value})]
        assert got == want, f"{where} = {value!r}"[:300]
        if index.fold_case and isinstance(value, str):
            got = [o.id for o in tx.find(cls, **{name: value.swapcase()})]
            assert got == want, f"{where} = {value.swapcase()!r} (folded)"[:300]
    ordered = sorted((min(ks), id) for id, ks in keys.items() if ks)
    got = [o.id for o in tx.find(cls, **{name: ws.between()})]
    assert got == [id for _, id in ordered], f"{where}: full scan"


def _segment_sizes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.glob("*.wslog")}


class Child:
    """One run of ``crash_child.py``, started with ``--wait`` so that its imports overlap the
    previous round's checks; ``go`` lets it open the store."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        self.process = process
        self.stdin = process.stdin
        self.lines = Lines(process.stdout)
        self.stdout = process.stdout
        self.stderr = process.stderr

    @classmethod
    async def start(cls, directory: Path, compact_bytes: int) -> Child:
        """Start a child on ``directory``; it waits for ``go``."""
        process = await trio.lowlevel.open_process(
            [
                *(sys.executable, str(CHILD), str(directory), str(SEED), "--wait"),
                *("--compact-bytes", str(compact_bytes)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return cls(process)

    async def go(self) -> None:
        """Let the child open the store and start committing."""
        await self.stdin.send_all(b"go\n")

    async def fail(self, message: str) -> AssertionError:
        """Kill the child; return an error with ``message`` and what the child wrote to
        stderr."""
        await self.kill()
        stderr = b""
        while chunk := await self.stderr.receive_some():
            stderr += chunk
        return AssertionError(f"{message}; child stderr:\n{stderr.decode(errors='replace')}")

    async def kill(self) -> int:
        """SIGKILL the child (at once, whatever it is doing) and return its exit status."""
        self.process.kill()
        with trio.CancelScope(shield=True):
            status = await self.process.wait()
        return status

    async def aclose(self) -> None:
        """Kill the child if it still runs and close its pipes."""
        await self.kill()
        with trio.CancelScope(shield=True):
            for stream in (self.stdin, self.stdout, self.stderr):
                await stream.aclose()


async def run_child(child: Child, rng: random.Random, recovered: int) -> int:
    """Let ``child`` commit a random number of transactions, kill it with SIGKILL at a random
    point and return the last version it acknowledged."""
    acknowledged = recovered

    def record(line: str) -> None:
        nonlocal acknowledged
        assert int(line) == acknowledged + 1, f"child acknowledged {line} after {acknowledged}"
        acknowledged += 1

    await child.go()
    opened = await child.lines.next()
    if opened is None:
        raise await child.fail("the child exited before opening the store")
    assert opened == f"open {recovered}", f"child recovered {opened!r}, test saw {recovered}"
    for _ in range(rng.randint(1, 30)):
        line = await child.lines.next()
        if line is None:
            raise await child.fail("the child exited on its own")
        record(line)
    # The child is already working on the next commit. Kill it now, or after a random amount
    # of work of our own (0-3 ms: computing transactions), which lands the kill at varied
    # points of that commit: building it, writing it, fsyncing it or acknowledging it.
    for version in range(rng.choice((0, 0, rng.randint(1, 20)))):
        transaction(SEED, version + 1)
    if await child.kill() != -signal.SIGKILL:
        raise await child.fail("the child exited on its own")
    while (line := await child.lines.next()) is not None:  # printed before it died
        record(line)
    return acknowledged


async def test_recovery_after_sigkill_keeps_exactly_the_acknowledged_commits(
    tmp_path: Path,
) -> None:
    """Kill a committing child KILLS times; after each kill the reopened store holds every
    acknowledged commit, at most the one in flight besides, and its indexes agree."""
    directory = tmp_path / "store"
    rng = random.Random(SEED)
    model = Model()
    recovered = 0
    in_flight = 0  # kills after which the unacknowledged commit was recovered
    torn = 0  # kills that left a torn record for the open to truncate
    compacting = 0  # kills that left a compaction's unfinished segment
    child = await Child.start(directory, rng.choice(COMPACT_BYTES))
    try:
        for kill in range(KILLS):
            with trio.fail_after(ROUND_TIMEOUT):
                acknowledged = await run_child(child, rng, recovered)
                await child.aclose()
                # The next child imports while we check.
                child = await Child.start(directory, rng.choice(COMPACT_BYTES))
                before = _segment_sizes(directory)
                compacting += any(directory.glob(".*.wslog.tmp"))
                async with ws.open_store(SCHEMA, path=directory) as store:
                    version = store.version.index
                    where = (
                        f"seed {SEED}, kill {kill}: acknowledged {acknowledged}, "
                        f"recovered {version}"
                    )
                    assert acknowledged <= version <= acknowledged + 1, where
                    model.advance_to(version)
                    store.view(lambda tx: check_state(tx, model, where))
                after = _segment_sizes(directory)
            in_flight += version == acknowledged + 1
            torn += any(after.get(name, size) < size for name, size in before.items())
            recovered = version
    finally:
        await child.aclose()
    print(
        f"{KILLS} kills, {recovered} commits; recovered an unacknowledged commit after "
        f"{in_flight}; truncated a torn record after {torn}; interrupted a compaction "
        f"{compacting} times"
    )
