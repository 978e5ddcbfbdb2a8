"""Every example runs by itself, as a user would run it, and says what it did, on each backend
of ``anyio_backend`` (``--backend trio`` or ``--backend asyncio``); the plain-asyncio service
runs as is. Every Python block of the guides in docs/ runs as written."""

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


def test_the_quickstart_runs_and_shows_every_step(anyio_backend: str) -> None:
    out = run_example("quickstart.py", "--backend", anyio_backend)
    steps = [line.split(".")[0] for line in out.splitlines() if line[:1].isdigit()]
    assert steps == [str(n) for n in range(1, 9)]
    assert "10000 tasks at Version(51)" in out


def test_the_scheduler_demo_continues_from_the_state_its_previous_run_left(
    tmp_path: pathlib.Path, anyio_backend: str
) -> None:
    path = str(tmp_path / "demo-state")
    args = ("--path", path, "--nodes", "3", "--tasks", "300", "--backend", anyio_backend)
    first = run_example("scheduler.py", *args)
    assert "created a new one" in first
    assert "node-1 down | node-2 150 | node-3 150" in first
    assert "everything recovered" in first
    closed = re.search(r"closed the store at (Version\(\d+\))", first)
    assert closed is not None

    second = run_example("scheduler.py", *args)
    assert f"found 300 tasks on 3 nodes at {closed[1]} from the previous run" in second
    assert "round 2:" in second
    assert "node-1 back up" in second
    assert "node-1 300 | node-2 down | node-3 300" in second
    assert "reopened from disk: Version(" in second
    assert "600 tasks, 3 nodes" in second
    assert "everything recovered" in second


def test_the_controller_converges_and_retries_a_stale_write_on_the_current_copy(
    anyio_backend: str,
) -> None:
    out = run_example("controller.py", "--backend", anyio_backend)
    assert "cli:        SequenceConflict: web was written at Version(5)" in out
    assert "cli:        web written at Version(6): replicas=5" in out
    assert "web:        web.1.1, web.2.2, web.3.1, web.4.1, web.5.1" in out
    assert "web running=5 restarts=1" in out
    assert "api:        none" in out


def test_the_replica_example_syncs_a_cache_and_reports_its_resync(anyio_backend: str) -> None:
    out = run_example("replica.py", "--backend", anyio_backend)
    assert "statuses seen: WAIT_FOR_DATASTORE -> RESYNC_IN_PROGRESS -> IN_SYNC -> " in out
    assert "resyncs reported: 1; cache: 69 nodes, matches the store: True" in out


def test_the_scheduler_demo_runs_with_only_a_path_as_watchstore_demo_runs_it(
    tmp_path: pathlib.Path,
) -> None:
    """`watchstore demo` runs the script with ``--path`` alone: on trio, the default."""
    path = str(tmp_path / "demo-state")
    out = run_example("scheduler.py", "--path", path, "--nodes", "2", "--tasks", "10")
    assert "everything recovered" in out


FIRST_RUN = """\
api:        PUT /deployments/web version=1 replicas=3
controller: web: start web-v1-1, web-v1-2, web-v1-3
node:       web-v1-2 exited
controller: web: start web-v1-2
api:        PUT /deployments/web replicas=2
controller: web: stop web-v1-3
store:      closing at Version(6): web-v1-1, web-v1-2
"""

SECOND_RUN = """\
api:        PUT /deployments/web version=2 replicas=3
controller: web: start web-v2-1, web-v2-2, web-v2-3
controller: web: stop web-v1-1, web-v1-2
node:       web-v2-2 exited
controller: web: start web-v2-2
api:        PUT /deployments/web replicas=2
controller: web: stop web-v2-3
store:      closing at Version(12): web-v2-1, web-v2-2
"""


def test_the_asyncio_service_reconciles_what_its_api_asks_for() -> None:
    out = run_example("asyncio_service.py")
    assert out == "store:      in memory at Version(0): empty\n" + FIRST_RUN


def test_the_asyncio_service_rolls_out_the_next_version_over_its_durable_state(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "service-state"
    first = run_example("asyncio_service.py", "--path", str(path))
    assert first == f"store:      in {path}/ at Version(0): empty\n" + FIRST_RUN
    second = run_example("asyncio_service.py", "--path", str(path))
    assert second == f"store:      in {path}/ at Version(6): web v1, 2 ready\n" + SECOND_RUN


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
