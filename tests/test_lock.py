"""The store directory's lock: one opener, stale locks of dead holders, force-unlock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import anyio
import pytest

import watchstore as ws
from tests.schema import SCHEMA

if TYPE_CHECKING:
    import pathlib

HOLDER = textwrap.dedent(
    """
    import sys, anyio, watchstore as ws
    from tests.schema import SCHEMA

    async def main() -> None:
        async with ws.open_store(SCHEMA, path=sys.argv[1]):
            print("open", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)  # hold the lock until killed

    anyio.run(main, backend=sys.argv[2])
    """
)


def killed_holder(path: pathlib.Path, backend: str) -> int:
    """Run a process that opens the store (on AnyIO's ``backend``), then SIGKILL it; return
    its pid."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), backend],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "open"
        assert ws.lock_status(path).held
        child.send_signal(signal.SIGKILL)
        child.wait()
        return child.pid


def test_the_lock_of_a_killed_holder_is_stale_and_does_not_block(
    tmp_path: pathlib.Path, anyio_backend: str
) -> None:
    pid = killed_holder(tmp_path, anyio_backend)
    status = ws.lock_status(tmp_path)
    assert (status.held, status.stale, status.holder["pid"]) == (False, True, pid)

    async def reopen() -> int:
        async with ws.open_store(SCHEMA, path=tmp_path):
            return int(json.loads((tmp_path / "LOCK.json").read_text())["pid"])

    assert anyio.run(reopen, backend=anyio_backend) == os.getpid()
    assert ws.unlock(tmp_path).held is False  # nothing left to clear


def test_a_stale_lock_file_can_be_cleared(tmp_path: pathlib.Path, anyio_backend: str) -> None:
    killed_holder(tmp_path, anyio_backend)
    assert ws.unlock(tmp_path).stale
    assert not (tmp_path / "LOCK.json").exists()
    assert ws.lock_status(tmp_path) == ws.LockStatus(False, {}, False)


async def test_a_live_holder_is_not_unlocked_without_force(tmp_path: pathlib.Path) -> None:
    async with ws.open_store(SCHEMA, path=tmp_path):
        status = ws.lock_status(tmp_path)
        assert (status.held, status.stale, status.holder["pid"]) == (True, False, os.getpid())
        with pytest.raises(ws.StoreLocked):
            ws.unlock(tmp_path)


async def test_force_unlock_lets_a_new_opener_in_and_the_old_one_cannot_clear_it(
    tmp_path: pathlib.Path,
) -> None:
    opened, close = anyio.Event(), anyio.Event()

    async def old_holder() -> None:
        async with ws.open_store(SCHEMA, path=tmp_path):
            opened.set()
            await close.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(old_holder)
        await opened.wait()
        ws.unlock(tmp_path, force=True)
        async with ws.open_store(SCHEMA, path=tmp_path):
            mine = ws.lock_status(tmp_path).holder["token"]
            close.set()  # the old holder closes: our lock info stays
            await anyio.wait_all_tasks_blocked()
            assert ws.lock_status(tmp_path).holder["token"] == mine
