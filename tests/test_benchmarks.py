"""The benchmarks still run (a smoke run on small sizes; timings are not checked here)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest

from benchmarks.__main__ import main
from tests.etcd_cluster import etcd_binary

needs_etcd = pytest.mark.skipif(
    etcd_binary() is None and not os.environ.get("CI"),
    reason="etcd is not installed: run `make deps-etcd` (in CI this fails instead)",
)

if TYPE_CHECKING:
    import pathlib


@pytest.mark.parametrize(
    ("family", "marker", "targets"),
    [
        ("core", "sqlite3", ("(a)", "(b)", "(c)")),
        ("events", "non-matching watchers", ("(a)", "(b)")),
        ("durable", "WAL", ("(a)", "(b)", "(c)", "(d)")),
        pytest.param("etcd", "raw kv/put", ("(a)", "(b)"), marks=needs_etcd),
    ],
)
def test_a_quick_run_prints_its_table_and_every_target_once(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    family: str,
    marker: str,
    targets: tuple[str, ...],
) -> None:
    out = tmp_path / f"{family}.json"
    assert main([family, "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "watchstore" in printed
    assert marker in printed
    for target in targets:
        assert printed.count(target) == 1
    assert json.loads(out.read_text())
