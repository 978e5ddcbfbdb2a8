"""The child process of the crash test (``tests/test_crash.py``): commits until it is killed.

``python tests/crash_child.py DIR SEED BACKEND [--wait] [--compact-bytes N] [--compact-after K]
[--rollback-after K]`` opens a durable store in ``DIR`` (durability ``always``) on the AnyIO
backend ``BACKEND`` (``trio`` or ``asyncio``), writes ``open N`` (N = the version it
recovered) to stdout, then commits forever: the transaction of version ``v`` is
``transaction(SEED, v)``, a pure function, so the parent can compute the state at any version
by replaying it. After each commit is acknowledged (its ``update`` returned) the
child writes ``v`` as a line, unbuffered. A restarted child goes on from the version the store
recovered. With ``--wait`` it first imports everything and waits for a line on stdin before
opening the store (the test overlaps its start-up this way); ``--compact-bytes`` is passed to
``open_store``.

Two operations happen once each, after K commits of this run, so that the test can kill the
child inside them; each is announced before it starts and after it ends:

- ``--compact-after K``: ``compact`` then ``await store.compact()`` then ``compacted V`` (V the
  snapshot's version; no commit runs meanwhile).
- ``--rollback-after K``: the child closes the store, picks a kept epoch's snapshot version V
  from ``ws.list_epochs`` (one older than the store's version where there is one), writes
  ``rollback V``, calls ``ws.rollback(DIR, Version(V))``, writes ``rolledback V``, opens the
  store again (``open V``) and goes on committing from V + 1: the same transactions as before,
  so the same states.

This module imports only the standard library at the top, so the test can import
``transaction`` cheaply; the child imports AnyIO and watchstore in ``main``.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import watchstore as ws

TASK_IDS: Final = tuple(f"t{i:02d}" for i in range(40))
NODE_IDS: Final = tuple(f"n{i:02d}" for i in range(12))
SERVICES: Final = ("svc-a", "svc-b", "svc-c", "svc-d")
STATES: Final = (0, 2, 10, 20)  # the values of tests.schema.State
LABELS: Final = ("zone=a", "zone=b", "ssd", "gpu", "arm")

Op = tuple[str, str, str, dict[str, Any]]
"""``("set" | "delete", table name, id, fields)``: ``set`` creates or updates the object so
that its fields (all but ``id`` and ``meta``) are ``fields``; ``delete`` removes it if present
(``fields`` is empty)."""


def transaction(seed: int, version: int) -> list[Op]:
    """The operations of the transaction that commits ``version`` (a pure function).

    Sizes vary from 1 to 50 operations, some objects carry strings of a few KB, and the last
    operation always writes a value naming ``version``, so every transaction changes the store.
    """
    rng = random.Random(f"{seed}:{version}")
    roll = rng.random()
    count = rng.randint(1, 3) if roll < 0.7 else rng.randint(4, 12) if roll < 0.96 else 50
    big = rng.random() < 0.15  # a transaction with large string fields
    ops: list[Op] = []
    for _ in range(count - 1):
        if rng.random() < 0.7:
            ops.append(_task_op(rng, big))
        else:
            ops.append(_node_op(rng, version, big))
    # The last op always changes something (a delete or an undo of a create could be a no-op).
    ops.append(("set", "Task", rng.choice(TASK_IDS), {**_task_fields(rng, big), "slot": version}))
    return ops


def _task_op(rng: random.Random, big: bool) -> Op:
    id = rng.choice(TASK_IDS)
    if rng.random() < 0.2:
        return ("delete", "Task", id, {})
    return ("set", "Task", id, _task_fields(rng, big))


def _task_fields(rng: random.Random, big: bool) -> dict[str, Any]:
    service = rng.choice(SERVICES)
    if big and rng.random() < 0.3:
        service += "-" + _payload(rng)
    return {
        "service_id": service,
        "node_id": rng.choice((None, *NODE_IDS[:6])),
        "state": rng.choice(STATES),
        "slot": rng.randint(0, 5),
    }


def _node_op(rng: random.Random, version: int, big: bool) -> Op:
    id = rng.choice(NODE_IDS)
    if rng.random() < 0.2:
        return ("delete", "Node", id, {})
    # The name contains the id, so names never collide under the unique, case-folding index;
    # the case varies so that folding is exercised.
    name = f"{id.upper() if rng.random() < 0.5 else id}-v{version}-{rng.randint(0, 9)}"
    labels = set(rng.sample(LABELS, rng.randint(0, 3)))
    if big:
        labels.add("blob-" + _payload(rng))
    return ("set", "Node", id, {"name": name, "labels": tuple(sorted(labels))})


def _payload(rng: random.Random) -> str:
    return "".join(rng.choices("abcdefghij", k=rng.randint(1000, 8000)))


def _apply(tx: ws.Tx, ops: list[Op]) -> None:
    import attrs

    from tests.schema import Node, State, Task

    classes: dict[str, type[Any]] = {"Task": Task, "Node": Node}
    for kind, table, id, fields in ops:
        cls = classes[table]
        current = tx.get(cls, id)
        if kind == "delete":
            if current is not None:
                tx.delete(cls, id)
            continue
        values = dict(fields)
        if "labels" in values:
            values["labels"] = frozenset(values["labels"])
        if "state" in values:
            values["state"] = State(values["state"])
        if current is None:
            tx.create(cls(id=id, **values))
        else:
            tx.update(attrs.evolve(current, **values))


def _emit(line: str) -> None:
    data = (line + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


async def _run(
    directory: str,
    seed: int,
    compact_bytes: int,
    compact_after: int | None,
    rollback_after: int | None,
) -> None:
    import watchstore as ws
    from tests.schema import SCHEMA

    committed = 0  # commits of this run
    while True:
        async with ws.open_store(
            SCHEMA, path=directory, durability="always", compact_bytes=compact_bytes
        ) as store:
            _emit(f"open {store.version.index}")
            while committed != rollback_after:
                if committed == compact_after:
                    _emit("compact")
                    _emit(f"compacted {(await store.compact()).index}")
                    compact_after = None
                version = store.version.index + 1
                ops = transaction(seed, version)
                await store.update(lambda tx: _apply(tx, ops))
                if store.version.index != version:
                    raise AssertionError(f"committed {store.version}, expected {version}")
                _emit(str(version))
                committed += 1
            current = store.version.index
        # The store is closed: roll it back, then open it again.
        rollback_after = None
        target = _rollback_target(seed, current, ws.list_epochs(directory))
        _emit(f"rollback {target}")
        ws.rollback(directory, ws.Version(target))
        _emit(f"rolledback {target}")


def _rollback_target(seed: int, current: int, epochs: list[ws.EpochInfo]) -> int:
    """The snapshot version to roll back to: a random kept epoch older than ``current``, or
    any kept epoch if none is older."""
    versions = sorted({e.version.index for e in epochs})
    older = [v for v in versions if v < current]
    return random.Random(f"{seed}:rollback:{current}").choice(older or versions)


USAGE: Final = (
    "usage: crash_child.py DIR SEED BACKEND [--wait] [--compact-bytes N] [--compact-after K] "
    "[--rollback-after K]"
)


def main(argv: list[str]) -> None:
    """Entry point: ``crash_child.py DIR SEED BACKEND [--wait] [--compact-bytes N]
    [--compact-after K] [--rollback-after K]``.

    The store runs on AnyIO's ``BACKEND`` (``anyio.run(..., backend=BACKEND)``). With
    ``--wait`` the child imports everything, then waits for a line on stdin before it
    opens the store (so its start-up can overlap the parent's checks; at EOF it exits).
    ``--compact-bytes`` is passed to ``open_store`` (small values compact often, so that
    kills also land in compactions). ``--compact-after`` and ``--rollback-after`` run an
    explicit compaction or a rollback once, after that many commits (see the module).
    """
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)  # for ``tests.schema`` when run as a script
    import anyio

    import tests.schema  # noqa: F401  (imported before the wait, to overlap start-up)
    import watchstore  # noqa: F401

    if len(argv) < 3:
        raise SystemExit(USAGE)
    directory, seed, backend, *flags = argv
    wait = "--wait" in flags
    if wait:
        flags.remove("--wait")
    options = {"--compact-bytes": 64 << 20}  # open_store's default
    if len(flags) % 2:
        raise SystemExit(f"{USAGE}; got {argv}")
    for name, value in zip(flags[::2], flags[1::2], strict=True):
        if name not in ("--compact-bytes", "--compact-after", "--rollback-after"):
            raise SystemExit(f"{USAGE}; got {argv}")
        options[name] = int(value)
    if wait and not sys.stdin.buffer.readline():
        return
    anyio.run(
        _run,
        directory,
        int(seed),
        options["--compact-bytes"],
        options.get("--compact-after"),
        options.get("--rollback-after"),
        backend=backend,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
