"""Power-loss test of the durable epoch log: every state a power cut could leave opens.

A child process (this file run as a script: ``python tests/test_power_loss.py DIR BACKEND``,
on the test's AnyIO backend) runs a scenario on a store in ``DIR`` under strace: four
concurrent writers (so group commit puts several records in one write) commit deterministic
transactions through automatic compactions in a forked child, an explicit ``compact()``, a
``rollback`` to a kept epoch and more commits after it. It writes its own account to stdout
as it goes (``begin V`` when the transaction of version V is built, ``ack V`` once its
``update`` returned, ``rollback-start V`` and ``rollback V`` around ``ws.rollback``), with
plain ``os.write``, so strace records each line in its place among the file operations.

``tests/powerloss.py`` replays the trace through a model of the page cache and lists, at every
fsync boundary, the trees a power cut could leave: unsynced data dropped, unsynced directory
operations dropped (strict) or kept, and the last unsynced write torn at 512-byte sectors in
and out of order. Each is written out and opened without salvage: the store must open at a
version between the last acknowledged one and the last one begun, holding exactly the
objects of that version (the transactions are a pure function of the version, so after a
rollback to V the versions V + 1... recommit the same ones). Before the store directory is
durable, an empty store is right only if nothing was acknowledged.

Needs strace (``make test`` installs it): skipped without it, failed without it in CI.
"""

from __future__ import annotations

import collections
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
import pytest

import watchstore as ws
from tests import powerloss, syscalls
from tests.faultshim import mounted_tmpfs
from tests.schema import SCHEMA, Node, State, Task

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

SEED: Final = 16
"""Seeds the random sector subsets of torn writes."""

WRITERS: Final = 4
COMPACT_BYTES: Final = 4096
"""The child compacts automatically once an epoch holds this many bytes of changes."""
FIRST_COMMITS: Final = 24
"""Commits of the first session, at least (it goes on until two compactions are done)."""
MORE_COMMITS: Final = 8
"""Commits before and after the explicit compaction, and after the rollback."""
RUN_TIMEOUT: Final = 120.0
STORE: Final = "store"
"""The store directory's name in the traced run's root (and in every crash state)."""

TASK_IDS: Final = tuple(f"t{i}" for i in range(12))
NODE_IDS: Final = tuple(f"n{i}" for i in range(4))
SERVICES: Final = ("svc-a", "svc-b", "svc-c")
CLASSES: Final[dict[str, type[Any]]] = {"Task": Task, "Node": Node}

Op = tuple[str, str, str, dict[str, Any]]
"""``("set" | "delete", table, id, fields)``: set creates or updates the object so that its
fields (but ``id`` and ``meta``) are ``fields``; delete removes it if present."""


# -- the scenario (the child process) ------------------------------------------------------------


def transaction(version: int) -> list[Op]:
    """The operations of the transaction that commits ``version`` (a pure function): one to
    three small tasks, a few kilobytes of node labels every fifth version (spanning several
    sectors), and always a last task naming ``version``, so every transaction changes the
    store."""
    rng = random.Random(f"power-loss {version}")
    ops: list[Op] = []
    for _ in range(rng.randint(0, 2)):
        id = rng.choice(TASK_IDS)
        if rng.random() < 0.25:
            ops.append(("delete", "Task", id, {}))
        else:
            ops.append(("set", "Task", id, _task_fields(rng, rng.randint(0, 5))))
    if version % 5 == 0:
        id = rng.choice(NODE_IDS)
        label = "blob-" + "".join(rng.choices("abcdef", k=rng.randint(1500, 5000)))
        ops.append(("set", "Node", id, {"name": f"{id}-v{version}", "labels": (label, "ssd")}))
    ops.append(("set", "Task", rng.choice(TASK_IDS), _task_fields(rng, version)))
    return ops


def _task_fields(rng: random.Random, slot: int) -> dict[str, Any]:
    return {
        "service_id": rng.choice(SERVICES),
        "node_id": rng.choice((None, *NODE_IDS)),
        "state": rng.choice(list(State)).value,
        "slot": slot,
    }


def _build(cls: type[Any], id: str, fields: dict[str, Any]) -> Any:
    values = dict(fields)
    if "labels" in values:
        values["labels"] = frozenset(values["labels"])
    if "state" in values:
        values["state"] = State(values["state"])
    return cls(id=id, **values)


def _apply(tx: ws.Tx) -> int:
    """Apply the transaction of the version ``tx`` will commit as; return that version."""
    version = tx.version.index
    _emit(f"begin {version}")
    for kind, table, id, fields in transaction(version):
        cls = CLASSES[table]
        current = tx.get(cls, id)
        if kind == "delete":
            if current is not None:
                tx.delete(cls, id)
        elif current is None:
            tx.create(_build(cls, id, fields))
        else:
            tx.update(attrs.evolve(_build(cls, id, fields), meta=current.meta))
    return version


def _emit(line: str) -> None:
    """Write a line of the child's account to stdout in one write (strace records it)."""
    data = (line + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def _newest_segment(directory: Path) -> int:
    return max((int(p.stem) for p in directory.glob("*.wslog") if p.stem.isdigit()), default=0)


async def _commit(store: ws.Store, directory: Path, count: int, *, segment: int = 0) -> None:
    """Commit ``count`` versions or more with ``WRITERS`` concurrent writers, acknowledging
    each, and go on until the newest segment is at least ``segment``."""
    start = store.version.index

    def done() -> bool:
        if store.version.index > start + 1000:
            raise AssertionError(f"no segment {segment} after 1,000 commits")
        return store.version.index >= start + count and _newest_segment(directory) >= segment

    async def writer() -> None:
        while not done():
            version = await store.update(_apply)
            _emit(f"ack {version}")

    async with anyio.create_task_group() as tg:
        for _ in range(WRITERS):
            tg.start_soon(writer)


def _opened(store: ws.Store, expected: int) -> None:
    _emit(f"open {store.version.index}")
    if store.version.index != expected:
        raise AssertionError(f"opened at version {store.version.index}, expected {expected}")


async def scenario(directory: Path) -> None:
    """The run the test traces (see the module's docstring)."""
    # Two automatic compactions (segments 2 and 3), in forked children.
    async with ws.open_store(
        SCHEMA, path=directory, durability="always", compact_bytes=COMPACT_BYTES
    ) as store:
        _opened(store, 0)
        await _commit(store, directory, FIRST_COMMITS, segment=3)
        first = store.version.index
    # An explicit compaction (the default compact_bytes starts none of its own).
    async with ws.open_store(SCHEMA, path=directory, durability="always") as store:
        _opened(store, first)
        await _commit(store, directory, MORE_COMMITS)
        _emit(f"compacted {(await store.compact()).index}")
        await _commit(store, directory, MORE_COMMITS)
        second = store.version.index
    target = ws.list_epochs(directory)[0].version
    if not 0 < target.index < second:
        raise AssertionError(f"no older epoch to roll back to: {ws.list_epochs(directory)}")
    _emit(f"rollback-start {target.index}")
    ws.rollback(directory, target)
    _emit(f"rollback {target.index}")
    async with ws.open_store(
        SCHEMA, path=directory, durability="always", compact_bytes=COMPACT_BYTES
    ) as store:
        _opened(store, target.index)
        await _commit(store, directory, MORE_COMMITS)


# -- what a crash state must hold --------------------------------------------------------------


@attrs.define
class Acknowledged:
    """What the child's account up to a crash point allows the store to hold: a version from
    ``low`` (acknowledged) to ``high`` (begun), or ``rollback`` during one."""

    low: int = 0
    high: int = 0
    rollback: int | None = None

    @classmethod
    def of(cls, notes: Iterable[str]) -> Acknowledged:
        """Fold the child's notes (see the module's docstring)."""
        out = cls()
        for line in "".join(notes).splitlines():
            word, _, number = line.partition(" ")
            version = int(number)
            if word == "begin":
                out.high = max(out.high, version)
            elif word == "ack":
                out.low = max(out.low, version)
            elif word == "rollback-start":
                out.rollback = version
            elif word == "rollback":
                out.low = out.high = version
                out.rollback = None
        return out

    def allows(self, version: int) -> bool:
        """Whether opening at ``version`` keeps exactly the acknowledged commits."""
        return self.low <= version <= self.high or version == self.rollback

    def describe(self) -> str:
        """The allowed versions, in words."""
        during = f" or {self.rollback} (a rollback was under way)" if self.rollback else ""
        return f"{self.low} acknowledged, {self.high} begun{during}"


def expected_states(last: int) -> list[dict[tuple[str, str], tuple[Any, int]]]:
    """The store's objects at each version up to ``last``: (table, id) -> (the object with
    default meta, the version that last wrote it)."""
    states: list[dict[tuple[str, str], tuple[Any, int]]] = [{}]
    for version in range(1, last + 1):
        state = dict(states[-1])
        for kind, table, id, fields in transaction(version):
            if kind == "delete":
                state.pop((table, id), None)
            else:
                state[table, id] = (_build(CLASSES[table], id, fields), version)
        states.append(state)
    return states


def stored_objects(tx: ws.ReadTx) -> dict[tuple[str, str], tuple[Any, int]]:
    """What a store holds, in the form of ``expected_states``."""
    return {
        (name, obj.id): (attrs.evolve(obj, meta=ws.Meta()), obj.meta.version.index)
        for name, cls in CLASSES.items()
        for obj in tx.all(cls)
    }


@attrs.frozen
class Opened:
    """What opening a crash state gave: its version, or why it failed (``reason``)."""

    version: int = 0
    objects: dict[tuple[str, str], tuple[Any, int]] = attrs.field(factory=dict)
    reason: str = ""
    detail: str = ""


async def open_state(directory: Path) -> Opened:
    """Open the store in ``directory`` without salvage and read everything it holds."""
    try:
        async with ws.open_store(SCHEMA, path=directory) as store:
            return Opened(store.version.index, store.view(stored_objects))
    except Exception as exc:  # every failure to open is a finding to report
        if isinstance(exc, ws.LogCorrupt):
            reason = exc.reason
            detail = f"{Path(exc.file).name} at offset {exc.offset} after {exc.version}"
        else:
            reason = detail = str(exc).replace(str(directory), "DIR")
        reason = f"{type(exc).__name__}: {re.sub(r'[0-9]+', 'N', reason)}"
        return Opened(reason=reason, detail=detail)


def failure(
    opened: Opened,
    allowed: Acknowledged,
    state: powerloss.CrashState,
    expected: list[dict[tuple[str, str], tuple[Any, int]]],
) -> tuple[str, str] | None:
    """Why ``opened`` is wrong for a crash state allowing ``allowed``, as (reason, detail),
    or None if it is right."""
    if opened.reason:
        return opened.reason, opened.detail
    version = opened.version
    if not allowed.allows(version):
        if STORE not in state.tree:
            return (
                "the store directory is missing: an empty store opened after acknowledged commits",
                f"opened at 0; {allowed.describe()}",
            )
        return (
            "opened at a version outside the acknowledged range",
            f"opened at {version}; {allowed.describe()}",
        )
    if opened.objects != expected[version]:
        wrong = sorted(set(opened.objects.items()) ^ set(expected[version].items()))
        return "the objects are not those of the version", f"at {version}: {wrong[:3]}"
    return None


@pytest.fixture
def strace() -> None:
    """Skip without strace, or fail in CI (where ``make test`` installs it)."""
    if syscalls.strace() is None:
        message = "strace is not installed (`make test` installs it): cannot record the run"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def traced_run(tmp_path: Path, backend: str) -> tuple[Path, list[syscalls.Call], str]:
    """Run the scenario on AnyIO's ``backend`` under strace in ``tmp_path/run``; return that
    root, the calls and the child's stdout."""
    root = tmp_path / "run"
    root.mkdir()
    trace = tmp_path / "trace.txt"
    repo = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    done = syscalls.record(
        [sys.executable, __file__, str(root / STORE), backend],
        trace,
        env={**os.environ, "PYTHONPATH": path},
        cwd=root,
        timeout=RUN_TIMEOUT,
    )
    stdout = done.stdout.decode()
    assert done.returncode == 0, f"the traced run failed:\n{done.stderr.decode()[-3000:]}"
    return root, syscalls.parse_trace(trace.read_text()), stdout


# -- the tests -----------------------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory to write crash states out in: a tmpfs if the tests run as root (opening
    a state writes and fsyncs a megabyte of zeros, which on a disk is most of the test's
    time; the states need no real disk), else a directory under ``tmp_path``."""
    path = tmp_path / "states"
    if os.geteuid() != 0 or shutil.which("mount") is None:
        path.mkdir()
        yield path
        return
    with mounted_tmpfs(path, "256m"):
        yield path


@pytest.mark.usefixtures("strace")
async def test_every_power_cut_leaves_a_store_that_opens_at_the_acknowledged_prefix(
    tmp_path: Path, scratch: Path, anyio_backend: str
) -> None:
    """At every fsync boundary of a run with group commit, compactions in a forked child, an
    explicit compaction and a rollback, each state a power cut could leave (strict or with
    directory operations persisted, the last write torn at sectors in and out of order)
    opens without salvage at a version from the last acknowledged to the last begun, with
    exactly that version's objects."""
    root, calls, stdout = await anyio.to_thread.run_sync(traced_run, tmp_path, anyio_backend)
    words = collections.Counter(line.split()[0] for line in stdout.splitlines())
    assert words["ack"] >= FIRST_COMMITS + 3 * MORE_COMMITS, stdout
    assert words["compacted"] == words["rollback"] == 1, stdout
    outcomes: dict[bytes, Opened] = {}  # by tree
    verdicts: dict[tuple[bytes, int, int, int | None], tuple[str, str] | None] = {}
    failures: dict[str, list[str]] = collections.defaultdict(list)
    variants: collections.Counter[tuple[str, str]] = collections.Counter()
    seen: collections.Counter[str] = collections.Counter()  # states of each kind, see below
    points = 0
    expected: list[dict[tuple[str, str], tuple[Any, int]]] = []
    notes: tuple[str, ...] = ()
    model = powerloss.FileSystem.of(calls, root, cwd=root)
    for point in powerloss.replay(calls, model, seed=SEED):
        points += 1
        notes = point.notes
        allowed = Acknowledged.of(point.notes)
        if len(expected) <= allowed.high:
            expected = expected_states(allowed.high + 50)
        for state in point.states:
            seen[state.variant] += 1
            seen["torn"] += bool(state.torn)
            check = (state.key, allowed.low, allowed.high, allowed.rollback)
            if check not in verdicts:
                opened = outcomes.get(state.key)
                if opened is None:
                    where = scratch / str(len(outcomes))
                    state.materialise(where)
                    opened = outcomes[state.key] = await open_state(where / STORE)
                    shutil.rmtree(where)
                verdicts[check] = failure(opened, allowed, state, expected)
            wrong = verdicts[check]
            if wrong is not None:
                reason, detail = wrong
                variants[reason, state.variant] += 1
                failures[reason].append(f"{point.label}, {state.describe()}: {detail}")
            elif state.torn:
                seen[f"torn, opened: {state.variant}"] += 1
                seen["in flight"] += outcomes[state.key].version > allowed.low
    assert "".join(notes) == stdout, "the trace missed some of the child's account"
    assert model.contents() == powerloss.read_tree(root), "the model lost track of the run"
    summary = (
        f"{seen[powerloss.STRICT] + seen[powerloss.PERSISTED]} crash states "
        f"({seen[powerloss.STRICT]} {powerloss.STRICT}, {seen[powerloss.PERSISTED]} "
        f"{powerloss.PERSISTED}; {seen['torn']} with a torn write) at {points} crash points, "
        f"{len(outcomes)} distinct trees opened: {sum(map(len, failures.values()))} wrong; "
        f"{seen['in flight']} kept an unacknowledged commit"
    )
    print(summary)
    report = [summary]
    for reason, examples in sorted(failures.items(), key=lambda item: -len(item[1])):
        split = ", ".join(
            f"{variants[reason, v]} {v}" for v in (powerloss.STRICT, powerloss.PERSISTED)
        )
        report.append(f"\n{len(examples)} ({split}): {reason}")
        report += [f"    e.g. {example[:400]}" for example in examples[:3]]
    assert not failures, "\n".join(report)
    # Not vacuous: torn writes were opened in both variants, some with the commit in flight.
    assert seen[f"torn, opened: {powerloss.STRICT}"], summary
    assert seen[f"torn, opened: {powerloss.PERSISTED}"], summary
    assert seen["in flight"], summary


def _trace(*lines: str) -> list[syscalls.Call]:
    """A hand-written trace, its paths and strings written plainly here and hex-encoded as
    strace's ``-xx`` shows them; lines without a thread id are thread 100's."""

    def hexed(text: str) -> str:
        return "".join(f"\\x{b:02x}" for b in text.encode())

    text = ""
    for line in lines:
        line = re.sub(r'"([^"]*)"', lambda m: f'"{hexed(m[1])}"', line)
        line = re.sub(r"<(/[^>]*)>", lambda m: f"<{hexed(m[1])}>", line)
        text += (line if re.match(r"\d+  ", line) else f"100  {line}") + "\n"
    return syscalls.parse_trace(text)


CREATE_F: Final = (
    'openat(AT_FDCWD</r>, "/r/f", O_WRONLY|O_CREAT, 0600) = 3</r/f>',
    'openat(AT_FDCWD</r>, "/r", O_RDONLY|O_DIRECTORY) = 4</r>',
    "fsync(4</r>) = 0",
)
"""Thread 100 creates /r/f (descriptor 3) and makes its name durable."""


def _files(state: powerloss.CrashState) -> dict[str, bytes]:
    return {
        path: image.data()
        for path, image in state.tree.items()
        if isinstance(image, powerloss.FileImage)
    }


def _final_states(calls: list[syscalls.Call]) -> list[powerloss.CrashState]:
    model = powerloss.FileSystem.of(calls, Path("/r"), cwd=Path("/r"))
    *_, last = powerloss.replay(calls, model)
    return list(last.states)


def _contents(calls: list[syscalls.Call], name: str = "f") -> set[bytes]:
    return {_files(state)[name] for state in _final_states(calls)}


def test_the_model_drops_a_write_that_was_never_fsynced() -> None:
    """A file's durable content is what its last fsync covered: a power cut loses a later
    write whole, or keeps it torn (here its one sector, or only the file's new length)."""
    calls = _trace(
        *CREATE_F,
        'write(3</r/f>, "durable", 7) = 7',
        "fsync(3</r/f>) = 0",
        'write(3</r/f>, "-lost", 5) = 5',
    )
    assert _contents(calls) == {b"durable", b"durable-lost", b"durable" + bytes(5)}
    untorn = [_files(state) for state in _final_states(calls) if not state.torn]
    assert untorn == [{"f": b"durable"}]


def test_the_model_tears_the_last_write_at_sectors_in_and_out_of_order() -> None:
    """The last unsynced write, of three sectors over zeros, reaches the disk as each prefix
    of its sectors, each suffix, each with one sector missing (and a few random subsets),
    the file as long as its last sector written or grown to the write's end; nothing else."""
    sectors = (b"A" * 512, b"B" * 512, b"C" * 512)
    calls = _trace(
        *CREATE_F,
        'pwrite64(3</r/f>, "zzzzzzzzzz", 10, 0) = 10',
        "fdatasync(3</r/f>) = 0",
        f'pwrite64(3</r/f>, "{b"".join(sectors).decode()}", 1536, 512) = 1536',
    )
    old = b"z" * 10 + bytes(502)

    def torn(written: set[int], grown: bool) -> bytes:
        parts = [s if i in written else bytes(512) for i, s in enumerate(sectors)]
        return old + b"".join(parts[: 3 if grown else max(written, default=-1) + 1])

    required = {b"z" * 10, torn(set(), grown=True), torn({0, 1, 2}, grown=False)}
    for i in range(1, 3):
        required |= {torn(set(range(i)), False), torn(set(range(i)), True)}  # prefixes
        required |= {torn(set(range(i, 3)), False)}  # suffixes
    for missing in range(3):
        required |= {torn({0, 1, 2} - {missing}, g) for g in (False, True)}
    possible = {b"z" * 10} | {
        torn({i for i in range(3) if mask >> i & 1}, grown)
        for mask in range(8)
        for grown in (False, True)
    }
    assert required <= _contents(calls) <= possible


def test_the_model_drops_an_unsynced_rename_only_in_the_strict_variant() -> None:
    """A rename is durable once its directory is fsynced: before that the strict variant
    has the old name and the other variant the new one. A new directory exists only once
    its parent is fsynced."""
    calls = _trace(
        *CREATE_F,
        'write(3</r/f>, "data", 4) = 4',
        "fsync(3</r/f>) = 0",
        'rename("/r/f", "/r/g") = 0',
        'mkdir("/r/d", 0700) = 0',
    )
    by_variant = {state.variant: state for state in _final_states(calls)}
    assert _files(by_variant[powerloss.STRICT]) == {"f": b"data"}
    assert "d" not in by_variant[powerloss.STRICT].tree
    assert _files(by_variant[powerloss.PERSISTED]) == {"g": b"data"}
    assert isinstance(by_variant[powerloss.PERSISTED].tree["d"], powerloss.DirectoryImage)


def test_the_model_makes_durable_what_an_fsync_started_with() -> None:
    """A write that completes while another thread's fsync of the file runs may not be
    covered by it (strace splits the fsync around it): it is the unsynced write."""
    calls = _trace(
        *CREATE_F,
        'write(3</r/f>, "one", 3) = 3',
        "clone3({flags=CLONE_VM|CLONE_FILES|CLONE_THREAD}, 88) = 101",
        "101  fdatasync(3</r/f> <unfinished ...>",
        'write(3</r/f>, "two", 3) = 3',
        "101  <... fdatasync resumed>) = 0",
    )
    assert [(c.name, c.started, c.line) for c in calls[-2:]] == [
        ("write", 7, 7),
        ("fdatasync", 6, 8),
    ]
    untorn = [_files(state) for state in _final_states(calls) if not state.torn]
    assert untorn == [{"f": b"one"}]
    assert b"onetwo" in _contents(calls)


def test_the_model_gives_a_forked_child_a_copy_of_the_descriptors() -> None:
    """A forked child keeps its copy of a descriptor, at the parent's offset, when the
    parent closes its own."""
    calls = _trace(
        *CREATE_F,
        'write(3</r/f>, "one", 3) = 3',
        "fsync(3</r/f>) = 0",
        "clone(child_stack=NULL, flags=CLONE_CHILD_SETTID|SIGCHLD) = 102",
        "close(3</r/f>) = 0",
        '102  write(3</r/f>, "two", 3) = 3',
        "102  fsync(3</r/f>) = 0",
    )
    assert _contents(calls) == {b"onetwo"}


def test_a_descriptor_the_model_lost_track_of_is_an_error() -> None:
    """strace's name for a descriptor is checked against the model's table."""
    calls = _trace('write(7</r/f>, "x", 1) = 1')
    with pytest.raises(powerloss.ModelError, match="never saw it open"):
        _final_states(calls)


if __name__ == "__main__":
    anyio.run(scenario, Path(sys.argv[1]), backend=sys.argv[2])
