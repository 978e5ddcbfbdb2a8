"""The benchmarks still run (a smoke run on small sizes; timings are not checked here)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest

from benchmarks.__main__ import main
from benchmarks._chart import measured_rows
from watchstore.testing.etcd import etcd_binary

needs_etcd = pytest.mark.skipif(
    etcd_binary() is None and not os.environ.get("CI"),
    reason="etcd is not installed: run `make deps-etcd` (in CI this fails instead)",
)

if TYPE_CHECKING:
    import pathlib


@pytest.mark.parametrize(
    ("family", "marker", "targets"),
    [
        ("salvage", "clean open", ()),
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


@pytest.mark.parametrize(
    ("family", "marker", "targets"),
    [
        ("core", "sqlite3", ("(a)", "(b)", "(c)", "(d)", "(e)", "(s)")),
        ("events", "non-matching watchers", ("(a)", "(b)")),
        ("durable", "WAL", ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)")),
    ],
)
def test_a_quick_run_on_each_backend_prints_its_table_and_says_which(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    anyio_backend: str,
    family: str,
    marker: str,
    targets: tuple[str, ...],
) -> None:
    out = tmp_path / f"{family}.json"
    assert main([family, "--quick", "--backend", anyio_backend, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"backend {anyio_backend}" in printed
    assert marker in printed
    for target in targets:
        assert printed.count(target) == 1
    assert json.loads(out.read_text())["environment"]["backend"] == anyio_backend


def test_chart_writes_a_png_of_the_run_next_to_its_table(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chart = tmp_path / "core.png"
    assert main(["core", "--quick", "--chart", str(chart)]) == 0
    assert "watchstore" in capsys.readouterr().out
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_chart_draws_every_measured_row_and_leaves_ratio_rows_out() -> None:
    measure = {"seconds_per_op": 0.5, "ops_per_second": 2.0}
    table = {
        "1. flat": {"watchstore": measure, "sqlite3": measure},
        "2. nested": {"peers": {"watchstore": measure}, "ratio_vs_baseline": 1.0},
        "3. ratio": {"ratios": {"watchstore": 0.9, "naive peer": 0.1}},
    }
    assert measured_rows({"table": table}) == [
        ("1. flat", {"watchstore": 0.5, "sqlite3": 0.5}),
        ("2. nested", {"watchstore": 0.5}),
    ]
