"""The examples run as written (``make demo`` runs the quickstart)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def test_the_quickstart_runs_and_shows_every_step() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    steps = [line.split(".")[0] for line in done.stdout.splitlines() if line[:1].isdigit()]
    assert steps == [str(n) for n in range(1, 9)]
    assert "10000 tasks at Version(51)" in done.stdout
