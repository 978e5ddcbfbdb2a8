"""Crash test of the durable epoch log: SIGKILL a child while it commits, compacts or rolls back,
reopen the store at once, and check that it recovered exactly what was acknowledged.

A child process (``tests/crash_child.py``) commits a deterministic sequence of transactions to
a store directory and reports every acknowledged commit on stdout. The test kills it with
SIGKILL at a chosen point and reopens the directory right away: nothing runs between the
child's death and the reopen but reading what the child had already written to its pipe and
two looks at the directory (a glob, and the last MiB of the newest segment to tell a torn
record from the zeros written ahead). The reopen must succeed then and there: a ``StoreLocked``
fails the test (no process of the killed child, such as a compaction child it forked, may hold
the directory's lock). Then the store must hold every acknowledged commit and nothing else: its
version R is the last acknowledged one A, or A + 1 when a commit was in flight (it was never
acknowledged, so both are correct), and its objects and every index equal a plain-dict model
replayed to R. The next child resumes from R, and so on.

The rounds cycle through three kinds, so that the kills land in every operation that rewrites
the log:

- ``commits``: the child commits (compacting in the background: ``compact_bytes`` is often
  small) and is killed after 1-30 acknowledged commits, at once or a little later.
- ``compaction``: the child also calls ``store.compact()`` once, announcing it (``compact``,
  then ``compacted V``); it is killed inside it (right after ``compact``, or a random few
  milliseconds later) or after it. No commit runs during it, so a kill there must recover
  exactly A.
- ``rollback``: the child closes the store, announces ``rollback V`` (V a kept epoch's
  snapshot version), calls ``ws.rollback``, announces ``rolledback V``, reopens and goes on
  from V + 1. A kill between the two lines may leave the old state (A) or V; after
  ``rolledback V`` only the rolled-back line is right. The model then goes back to V (it
  replays again; transactions are a pure function of the version).

A kill is counted inside a compaction if it came between ``compact`` and ``compacted`` or left
a compaction's unfinished epoch file (``.NNNNNNNN.wslog.*.tmp``, so automatic compactions count
too); inside a rollback if it came between ``rollback V`` and ``rolledback V``. A run of at
least 20 kills must have some of each.

Every check runs after every kill: the full state check (objects, metas, absent ids, every
index key by key and in a full scan) takes about 2 ms on these ~50 objects. The time goes into
starting the children (a Python process importing AnyIO and watchstore: about 0.3 s of CPU), so
two spare children are kept importing ahead (300 kills: 50-85 s measured on 2 cores).
``WATCHSTORE_CRASH_KILLS`` (default 300) sets how many kills; ``WATCHSTORE_CRASH_SEED`` the
seed of the transactions and of the kill points.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

import watchstore as ws
from tests.crash_child import NODE_IDS, TASK_IDS, transaction
from tests.schema import SCHEMA, Node, State, Task

KILLS: Final = int(os.environ.get("WATCHSTORE_CRASH_KILLS", "300"))
SEED: Final = int(os.environ.get("WATCHSTORE_CRASH_SEED", "20240607"))
CHILD: Final = Path(__file__).with_name("crash_child.py")
ROUND_TIMEOUT: Final = 60.0
SPARE_CHILDREN: Final = 2
"""Children started ahead of their round, importing while earlier rounds run."""
ROUNDS: Final = ("commits", "compaction", "commits", "rollback")
"""The kind of each round, in turn."""
COMPACT_BYTES: Final = (16 << 10, 64 << 10, 256 << 10, 64 << 20)
"""The child compacts once its epoch holds this many bytes of changes (a random choice per
child; the last is the default, which these runs never reach)."""
TAIL_WINDOW: Final = (1 << 20) + (64 << 10)
"""How much of the newest segment's end to read to find its last record's end: more than the
zeros written ahead of the records (1 MiB)."""
MODEL_SAVE_EVERY: Final = 256
"""The model keeps its state at every multiple of this version, to go back cheaply."""
CLASSES: Final[dict[str, type[Any]]] = {"Task": Task, "Node": Node}


class Pipe:
    """A pipe a child writes to; this process reads its end, non-blocking. The test reads it
    itself, not through a process stream of AnyIO's, which may hold bytes the pipe held in a
    buffer of its own: ``now`` must see everything the child wrote."""

    def __init__(self) -> None:
        self.fd, self.child_end = os.pipe()
        os.set_blocking(self.fd, False)

    async def receive(self) -> bytes:
        """The bytes that arrive next (waiting for some), or b"" at the end of the pipe."""
        await anyio.lowlevel.checkpoint()
        while True:
            try:
                return os.read(self.fd, 1 << 16)
            except BlockingIOError:
                await anyio.wait_readable(self.fd)

    def now(self) -> bytes:
        """What the pipe holds now, without waiting for more or for its end."""
        data = b""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return data
            if not chunk:
                return data
            data += chunk

    def started(self) -> None:
        """The child has its end: close it here, so the pipe ends when the child's copies
        close."""
        os.close(self.child_end)
        self.child_end = -1

    def close(self) -> None:
        """Close what is still open of it here."""
        for fd in (self.fd, self.child_end):
            if fd >= 0:
                os.close(fd)
        self.fd = self.child_end = -1


class Lines:
    """Reads newline-terminated lines from a child's stdout pipe."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self._buffer = b""

    async def next(self) -> str | None:
        """The next line without its newline, or None at the end of the stream."""
        while b"\n" not in self._buffer:
            data = await self._pipe.receive()
            if not data:
                assert not self._buffer, f"stream ended inside a line: {self._buffer!r}"
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def rest(self) -> list[str]:
        """The lines the pipe holds now, without waiting for its end: once the child is dead
        they are all it wrote (a process it forked may hold the pipe open for a while)."""
        self._buffer += self._pipe.now()
        *lines, self._buffer = self._buffer.split(b"\n")
        assert not self._buffer, f"the child died inside a line: {self._buffer!r}"
        return [line.decode() for line in lines]


class Model:
    """The expected state: ``(table, id) -> (fields, version that last wrote it)``."""

    def __init__(self) -> None:
        self.version = 0
        self.rows: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        # States passed on the way, to restart from when going back (they are what a replay
        # from scratch gives: the transactions are a pure function of the version).
        self._saved: dict[int, dict[tuple[str, str], tuple[dict[str, Any], int]]] = {0: {}}

    def advance_to(self, version: int) -> None:
        """Replay the child's transactions up to ``version``."""
        assert version >= self.version, "the model goes back only with reset_to"
        while self.version < version:
            self.version += 1
            for kind, table, id, fields in transaction(SEED, self.version):
                if kind == "delete":
                    self.rows.pop((table, id), None)
                else:
                    self.rows[table, id] = (fields, self.version)
            if self.version % MODEL_SAVE_EVERY == 0:
                self._saved[self.version] = dict(self.rows)

    def reset_to(self, version: int) -> None:
        """Go to ``version``, back if need be (after a rollback): replay the transactions
        again, from the latest saved state at or before it (version 0: the empty store)."""
        start = max(v for v in self._saved if v <= version)
        self.version, self.rows = start, dict(self._saved[start])
        self.advance_to(version)

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
        condition: dict[str, Any] = {name: value}
        got = [o.id for o in tx.find(cls, **condition)]
        assert got == want, f"{where} = {value!r}"[:300]
        if index.fold_case and isinstance(value, str):
            folded: dict[str, Any] = {name: value.swapcase()}
            got = [o.id for o in tx.find(cls, **folded)]
            assert got == want, f"{where} = {value.swapcase()!r} (folded)"[:300]
    ordered = sorted((min(ks), id) for id, ks in keys.items() if ks)
    everything: dict[str, Any] = {name: ws.between()}
    got = [o.id for o in tx.find(cls, **everything)]
    assert got == [id for _, id in ordered], f"{where}: full scan"


def _newest_data_end(directory: Path) -> tuple[int, int]:
    """The size of the newest segment and the offset just past its last nonzero byte (past
    the records: zeros written ahead of them may follow)."""
    newest = max(p for p in directory.glob("*.wslog") if p.stem.isdigit())
    with open(newest, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = f.seek(max(0, size - TAIL_WINDOW))
        return size, start + len(f.read().rstrip(b"\0"))


@attrs.frozen
class Plan:
    """How one round goes: the child's options and where the test kills it.

    ``point``: ``"commits"`` (once ``commits`` commits are acknowledged, counted from the
    start, or from the end of the compaction or rollback), ``"announced"`` (on the
    compaction's or rollback's first line) or ``"ended"`` (on its last line). The test then
    does ``work`` transactions' worth of computation (0.25 ms each; often none) before the
    kill, which lands it at varied points of what the child is doing.
    """

    kind: str
    compact_bytes: int
    after: int  # commits before the explicit compaction or the rollback
    point: str
    commits: int
    work: int

    @classmethod
    def draw(cls, rng: random.Random, kind: str) -> Plan:
        compact_bytes = rng.choice(COMPACT_BYTES)
        after = rng.randint(0, 30)
        small_work = rng.choice((0, 0, rng.randint(1, 20)))
        if kind == "commits":
            return cls(kind, compact_bytes, 0, "commits", rng.randint(1, 30), small_work)
        if kind == "compaction":
            point, work = rng.choice(
                (
                    ("announced", 0),
                    ("announced", 0),
                    ("announced", rng.randint(1, 40)),  # up to ~10 ms: the compaction's span
                    ("commits", small_work),
                )
            )
        else:
            point, work = rng.choice(
                (
                    ("announced", 0),
                    ("announced", 0),
                    ("announced", rng.randint(1, 8)),  # up to ~2 ms: the rollback's span
                    ("ended", 0),
                    ("commits", small_work),
                    ("commits", small_work),
                )
            )
        return cls(kind, compact_bytes, after, point, rng.randint(1, 20), work)

    def describe(self) -> str:
        after = f" after {self.after} commits" if self.kind != "commits" else ""
        return f"{self.kind} round{after}, kill point {self.point}, work {self.work}"


class Child:
    """One run of ``crash_child.py``, started with ``--wait`` so that its imports overlap
    earlier rounds; ``go`` lets it open the store."""

    def __init__(self, process: anyio.abc.Process, plan: Plan, stdout: Pipe, stderr: Pipe) -> None:
        assert process.stdin is not None
        self.process = process
        self.plan = plan
        self.stdin = process.stdin
        self.lines = Lines(stdout)
        self.stdout = stdout
        self.stderr = stderr

    @classmethod
    async def start(cls, directory: Path, plan: Plan, backend: str) -> Child:
        """Start a child on ``directory`` for a round of ``plan``, its store on AnyIO's
        ``backend``; it waits for ``go``."""
        command = [sys.executable, str(CHILD), str(directory), str(SEED), backend, "--wait"]
        command += ["--compact-bytes", str(plan.compact_bytes)]
        if plan.kind == "compaction":
            command += ["--compact-after", str(plan.after)]
        elif plan.kind == "rollback":
            command += ["--rollback-after", str(plan.after)]
        stdout, stderr = Pipe(), Pipe()
        try:
            process = await anyio.open_process(
                command,
                stdin=subprocess.PIPE,
                stdout=stdout.child_end,
                stderr=stderr.child_end,
            )
        except BaseException:
            stdout.close()
            stderr.close()
            raise
        stdout.started()
        stderr.started()
        return cls(process, plan, stdout, stderr)

    async def go(self) -> None:
        """Let the child open the store and start committing."""
        await self.stdin.send(b"go\n")

    async def fail(self, message: str) -> AssertionError:
        """Kill the child; return an error with ``message`` and what the child wrote to
        stderr."""
        await self.kill()
        # What is there now: a process it forked may hold the pipe open.
        stderr = self.stderr.now()
        return AssertionError(f"{message}; child stderr:\n{stderr.decode(errors='replace')}")

    async def kill(self) -> int:
        """SIGKILL the child (at once, whatever it is doing) and return its exit status."""
        if self.process.returncode is None:
            # asyncio raises for a child it has already reaped; trio does nothing.
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with anyio.CancelScope(shield=True):
            status = await self.process.wait()
        return status

    async def aclose(self) -> None:
        """Kill the child if it still runs and close its pipes."""
        await self.kill()
        with anyio.CancelScope(shield=True):
            await self.process.aclose()
        self.stdout.close()
        self.stderr.close()


class Report:
    """What a child reported, line by line, and so which versions a reopen may find."""

    def __init__(self, recovered: int) -> None:
        self.opens = recovered  # the version the next ``open`` line must name
        self.acknowledged = recovered
        self.commits = 0  # acknowledged commits
        self.in_flight = False  # a commit may be under way
        self.inside: str | None = None  # "compaction" or "rollback": announced, not ended
        self.compacted = False  # the explicit compaction ended
        self.target: int | None = None  # the rollback's version
        self.rolled_back = False  # the rollback ended

    def read(self, line: str) -> None:
        """Take one line of the child's stdout into account."""
        word, _, arg = line.partition(" ")
        if word.isdigit():
            assert int(word) == self.acknowledged + 1, (
                f"child acknowledged {word} after {self.acknowledged}"
            )
            self.acknowledged += 1
            self.commits += 1
            self.in_flight = True
        elif word == "open":
            assert int(arg) == self.opens, f"child opened {arg}, expected {self.opens}"
            self.in_flight = True
        elif word == "compact":
            self.inside, self.in_flight = "compaction", False
        elif word == "compacted":
            assert self.inside == "compaction", line
            assert int(arg) == self.acknowledged, f"{line} after {self.acknowledged}"
            self.inside, self.compacted, self.in_flight = None, True, True
        elif word == "rollback":
            self.inside, self.target, self.in_flight = "rollback", int(arg), False
        elif word == "rolledback":
            assert self.inside == "rollback", line
            assert int(arg) == self.target, f"{line} after rollback {self.target}"
            self.inside, self.rolled_back = None, True
            self.acknowledged = self.opens = self.target
        else:
            raise AssertionError(f"unexpected line from the child: {line!r}")

    def done(self, plan: Plan, commits_at_end: int) -> bool:
        """Whether the kill point of ``plan`` has come."""
        if plan.kind == "commits":
            return self.commits >= plan.commits
        ended = self.compacted if plan.kind == "compaction" else self.rolled_back
        if plan.point == "announced":
            return self.inside is not None or ended
        if plan.point == "ended":
            return ended
        return ended and self.commits >= commits_at_end + plan.commits

    def allowed(self) -> set[int]:
        """The versions a reopen may find now that the child is dead."""
        allowed = {self.acknowledged}
        if self.in_flight:
            allowed.add(self.acknowledged + 1)
        if self.inside == "rollback":
            assert self.target is not None
            allowed.add(self.target)
        return allowed


async def run_child(child: Child, recovered: int, where: str) -> Report:
    """Let ``child`` run to its plan's kill point, kill it with SIGKILL and return what it
    reported (including what it wrote just before it died); ``where`` starts error messages."""
    plan = child.plan
    report = Report(recovered)
    await child.go()
    commits_at_end = -1  # the commits acknowledged when the compaction or rollback ended
    while not report.done(plan, commits_at_end):
        line = await child.lines.next()
        if line is None:
            raise await child.fail(f"{where}: the child exited on its own")
        report.read(line)
        if commits_at_end < 0 and (report.compacted or report.rolled_back):
            commits_at_end = report.commits
    # The child is already working on what comes next. Kill it now, or after a random amount
    # of work of our own (computing transactions), which lands the kill at varied points of
    # it: building a commit, writing it, fsyncing it, acknowledging it; forking the
    # compaction child, switching to the new epoch; writing the rolled-back segment.
    for version in range(plan.work):
        transaction(SEED, version + 1)
    if await child.kill() != -signal.SIGKILL:
        raise await child.fail(f"{where}: the child exited on its own")
    for line in child.lines.rest():  # written before it died
        report.read(line)
    return report


async def test_recovery_after_sigkill_keeps_exactly_the_acknowledged_commits(
    tmp_path: Path, anyio_backend: str
) -> None:
    """Kill a child KILLS times while it commits, compacts or rolls back; right after each
    kill the store reopens and holds every acknowledged commit, at most the one in flight
    besides (or, during a rollback, the rolled-back state), and its indexes agree."""
    directory = tmp_path / "store"
    rng = random.Random(SEED)
    model = Model()
    recovered = 0
    commits = in_flight = torn = 0
    compaction = explicit = unfinished = 0  # kills inside a compaction (see the module)
    rollback = rolled_back = 0  # kills inside a rollback; of them, those that had taken
    children: collections.deque[Child] = collections.deque()  # this round's, then spares
    started = 0

    async def start_children() -> None:
        # The plan of each round is drawn when its child starts, in round order.
        nonlocal started
        while len(children) <= SPARE_CHILDREN and started < KILLS:
            plan = Plan.draw(rng, ROUNDS[started % len(ROUNDS)])
            children.append(await Child.start(directory, plan, anyio_backend))
            started += 1

    try:
        for kill in range(KILLS):
            with anyio.fail_after(ROUND_TIMEOUT):
                await start_children()  # before the round, never between a kill and a reopen
                child = children[0]
                where = f"seed {SEED}, kill {kill} ({child.plan.describe()})"
                report = await run_child(child, recovered, where)
                # Right after the kill (nothing waits between them): two looks at the
                # directory, then the reopen.
                leftover = any(directory.glob(".*.wslog.*.tmp"))
                size, data_end = _newest_data_end(directory)
                where += f": acknowledged {report.acknowledged}, inside {report.inside}"
                opened = False
                try:
                    async with ws.open_store(SCHEMA, path=directory) as store:
                        opened = True
                        version = store.version.index
                        assert store.recovery is not None
                        repaired = store.recovery.repaired_tail
                        where += f", recovered {version}"
                        assert version in report.allowed(), (
                            f"{where}: expected one of {sorted(report.allowed())}"
                        )
                        if version < model.version:
                            model.reset_to(version)
                        model.advance_to(version)
                        store.view(lambda tx: check_state(tx, model, where))
                except ws.StoreError as exc:
                    if opened:
                        raise
                    if isinstance(exc, ws.StoreLocked):
                        raise AssertionError(
                            f"{where}: reopening right after the SIGKILL failed: {exc}. No "
                            "process of the killed child may hold the directory lock (a "
                            "compaction child it forked must die with it)"
                            + ("; a compaction's unfinished file was there" if leftover else "")
                        ) from exc
                    raise AssertionError(f"{where}: reopening failed: {exc!r}") from exc
                await children.popleft().aclose()
            commits += report.commits
            in_flight += report.in_flight and version == report.acknowledged + 1
            torn += data_end > size - repaired
            inside_compaction = report.inside == "compaction"
            compaction += inside_compaction or leftover
            explicit += inside_compaction
            unfinished += leftover
            rollback += report.inside == "rollback"
            rolled_back += report.inside == "rollback" and version == report.target
            recovered = version
    finally:
        for child in children:
            await child.aclose()
    print(
        f"{KILLS} kills, {commits} commits acknowledged; recovered an unacknowledged commit "
        f"after {in_flight}; truncated a torn record after {torn}; kills inside a compaction: "
        f"{compaction} ({explicit} explicit, {unfinished} leaving its unfinished epoch file); "
        f"kills inside a rollback: {rollback} (the rolled-back state recovered after "
        f"{rolled_back})"
    )
    if KILLS >= 20:
        assert compaction, "no kill landed inside a compaction"
        assert rollback, "no kill landed inside a rollback"
