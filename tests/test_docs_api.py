"""docs/api.md is the API reference made from the docstrings by ``python -m tools.apiref``: the
checked-in page is what the tool makes of the code as it is, and every public name (and every
public member of a public class) has a docstring for it to show."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import watchstore as ws
from tools import apiref

ROOT = pathlib.Path(__file__).parent.parent


def test_the_checked_in_api_reference_is_up_to_date() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    assert page == apiref.render(), "docs/api.md is stale: run `python -m tools.apiref`"


def test_the_reference_is_the_same_from_another_process() -> None:
    """Nothing in it depends on the process (addresses, set order): `--check` in a child
    compares its own rendering with the page."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.apiref", "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_every_public_name_and_member_has_a_docstring() -> None:
    assert apiref.undocumented() == []


def test_every_name_watchstore_re_exports_is_in_all() -> None:
    """`from .x import Name as Name` in watchstore/__init__.py makes Name public (for type
    checkers too): it must be in ``__all__``, or the reference would leave it out."""
    tree = ast.parse((ROOT / "watchstore" / "__init__.py").read_text())
    exported = {
        alias.asname
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name and not alias.name.startswith("__")
    }
    assert sorted(exported - set(ws.__all__)) == []


def test_the_reference_shows_each_public_name_with_its_signature_and_docstring() -> None:
    page = apiref.render()
    for name in ws.__all__:
        assert f"\n### ws.{name}\n" in page, name
    assert "```text\nasync with ws.open_store(schema: Schema, *, path: " in page
    assert "Open a store of `schema` for the duration of an `async with` block." in page
    assert "- `async with fork(*, queue: int = " in page  # a Store method, kind and signature
    assert "### ws.Replica\n\n```text\nclass ws.Replica(ws.Store)" in page
