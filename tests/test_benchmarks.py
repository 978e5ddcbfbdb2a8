"""The benchmarks still run (a smoke run on small sizes; timings are not checked here)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from benchmarks.__main__ import main

if TYPE_CHECKING:
    import pathlib

    import pytest


def test_core_benchmark_quick_run_prints_its_table_and_targets(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "core.json"
    assert main(["core", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "watchstore" in printed
    assert "sqlite3" in printed
    for target in ("(a)", "(b)", "(c)"):
        assert printed.count(target) == 1
    assert json.loads(out.read_text())


def test_events_benchmark_quick_run_prints_its_table_and_targets(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.json"
    assert main(["events", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "non-matching watchers" in printed
    for target in ("(a)", "(b)"):
        assert printed.count(target) == 1
    assert json.loads(out.read_text())


def test_durable_benchmark_quick_run_prints_its_table_and_targets(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "durable.json"
    assert main(["durable", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "WAL" in printed
    for target in ("(a)", "(b)", "(c)"):
        assert printed.count(target) == 1
    assert json.loads(out.read_text())
