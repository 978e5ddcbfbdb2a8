"""One source for each published figure: the results of the benchmarks are published in the
README's Performance section only, each table under the command that makes it again; every
other page (the rest of the README, docs/*.md) says what they show in words and links there,
so no two pages can give different figures for the same benchmark."""

from __future__ import annotations

import pathlib
import re

from benchmarks.__main__ import FAMILIES

ROOT = pathlib.Path(__file__).parent.parent

FIGURE = re.compile(
    r"""
    \d[\d,.]*\s?(?:µs|ns)\b           # a time: 1.57 µs
    | \b\d+\.\d+\s?ms\b               # a measured time in ms: 0.14 ms (settings are whole: 50 ms)
    | \d[\d,.]*\s?(?:[a-z]+)?/s\b     # a rate: 123,409/s, 996 writes/s
    | \b\d+(?:\.\d+)?x\b              # a ratio: 1.15x, 6x
    | \b\d+-fold\b                    # a ratio in words: 30-fold
    """,
    flags=re.VERBOSE,
)
"""A benchmark result as the pages write one. Whole milliseconds and sizes (MiB) are left
out: the pages give settings in them too (a 50 ms fsync interval, 1.5 MiB batches)."""


def performance_section() -> tuple[str, str]:
    """README's Performance section (the home of the figures), and the rest of the README."""
    text = (ROOT / "README.md").read_text()
    home = re.search(r"^## Performance\n.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert home is not None, "README.md has no Performance section"
    return home[0], text[: home.start()] + text[home.end() :]


def figures_in(text: str) -> list[str]:
    return [
        f"line {text.count(chr(10), 0, m.start()) + 1}: {m[0]!r}" for m in FIGURE.finditer(text)
    ]


def test_the_pattern_finds_the_figures_the_performance_section_publishes() -> None:
    home, _rest = performance_section()
    found = {m[0] for m in FIGURE.finditer(home)}
    assert {"2.60 µs", "115,632/s", "1.25x", "30-fold", "0.22 ms"} <= found


def test_no_figure_is_published_outside_the_performance_section() -> None:
    _home, rest = performance_section()
    pages = {"README.md (outside Performance)": rest}
    pages |= {f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
    found = {page: figures_in(text) for page, text in pages.items() if figures_in(text)}
    assert found == {}, f"give these in the README's Performance section only, and link: {found}"


def test_each_table_of_figures_follows_the_command_that_makes_it() -> None:
    home, _rest = performance_section()
    tables = re.findall(r"((?:^[^|\n].*\n)+)\n\| workload \|", home, flags=re.MULTILINE)
    assert len(tables) == 4
    for paragraph in tables:
        command = re.match(r"`python -m benchmarks (\w+)`", paragraph)
        assert command is not None, paragraph
        assert command[1] in FAMILIES
