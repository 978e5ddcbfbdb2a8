"""Every example runs by itself, as a user would run it, and says what it did; every Python
block of the guides in docs/ runs as written."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
GUIDES = sorted((ROOT / "docs").glob("*.md"))


def run_example(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not done.stderr, done.stderr
    return done.stdout


def test_the_quickstart_runs_and_shows_every_step() -> None:
    out = run_example("quickstart.py")
    steps = [line.split(".")[0] for line in out.splitlines() if line[:1].isdigit()]
    assert steps == [str(n) for n in range(1, 9)]
    assert "10000 tasks at Version(51)" in out


def test_the_scheduler_demo_continues_from_the_state_its_previous_run_left(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "demo-state")
    first = run_example("scheduler.py", "--path", path, "--nodes", "3", "--tasks", "300")
    assert "created a new one" in first
    assert "node-1 down | node-2 150 | node-3 150" in first
    assert "everything recovered" in first
    closed = re.search(r"closed the store at (Version\(\d+\))", first)
    assert closed is not None

    second = run_example("scheduler.py", "--path", path, "--nodes", "3", "--tasks", "300")
    assert f"found 300 tasks on 3 nodes at {closed[1]} from the previous run" in second
    assert "round 2:" in second
    assert "node-1 back up" in second
    assert "node-1 300 | node-2 down | node-3 300" in second
    assert "reopened from disk: Version(" in second
    assert "600 tasks, 3 nodes" in second
    assert "everything recovered" in second


def test_the_controller_converges_and_retries_a_stale_write_on_the_current_copy() -> None:
    out = run_example("controller.py")
    assert "cli:        SequenceConflict: web was written at Version(5)" in out
    assert "cli:        web written at Version(6): replicas=5" in out
    assert "web:        web.1.1, web.2.2, web.3.1, web.4.1, web.5.1" in out
    assert "web running=5 restarts=1" in out
    assert "api:        none" in out


def test_the_replica_example_syncs_a_cache_and_reports_its_resync() -> None:
    out = run_example("replica.py")
    assert "statuses seen: WAIT_FOR_DATASTORE -> RESYNC_IN_PROGRESS -> IN_SYNC -> " in out
    assert "resyncs reported: 1; cache: 69 nodes, matches the store: True" in out


@pytest.mark.parametrize("guide", GUIDES, ids=[g.name for g in GUIDES])
def test_the_python_blocks_of_each_guide_run_in_order(
    guide: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    text = guide.read_text()
    if "WATCHSTORE_ETCD" in text:
        request.getfixturevalue("etcd_env")  # the guide's examples talk to a real etcd
    namespace: dict[str, object] = {"__name__": "guide"}
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        exec(compile(block, str(guide), "exec", dont_inherit=True), namespace)
