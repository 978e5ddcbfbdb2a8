"""Every Python code block in README.md runs as written (in order, in one namespace), and every
Python code block in README.md and docs/*.md passes ``mypy --strict`` with the project's
configuration (tests/test_examples.py runs the guides' blocks)."""

from __future__ import annotations

import pathlib
import re
from typing import TYPE_CHECKING

from mypy import api as mypy

if TYPE_CHECKING:
    import pytest

ROOT = pathlib.Path(__file__).parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", flags=re.DOTALL)


def python_blocks(doc: pathlib.Path = README) -> list[str]:
    return BLOCK.findall(doc.read_text())


def as_module(doc: pathlib.Path) -> str:
    """The Python blocks of ``doc`` as one module, as they run (in order, in one namespace),
    each line at its own line number in the document, so that mypy's line numbers are the
    document's."""
    text = doc.read_text()
    lines = [""] * (text.count("\n") + 1)
    for block in BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1))
        for n, line in enumerate(block[1].splitlines()):
            lines[first + n] = line
    return "\n".join(lines)


def test_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 3


def test_readme_python_blocks_run(request: pytest.FixtureRequest) -> None:
    if "WATCHSTORE_ETCD" in README.read_text():
        request.getfixturevalue("etcd_env")  # the etcd example talks to a real etcd
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in python_blocks():
        exec(compile(block, str(README), "exec", dont_inherit=True), namespace)


def test_the_python_blocks_of_the_readme_and_the_guides_pass_mypy_strict(
    tmp_path: pathlib.Path,
) -> None:
    """One mypy run over every document (one module each), reported as ``doc.md:LINE``."""
    modules: dict[str, str] = {}
    for doc in DOCS:
        if python_blocks(doc):
            file = tmp_path / f"doc_{doc.stem.replace('-', '_').lower()}.py"
            file.write_text(as_module(doc))
            modules[str(file)] = str(doc.relative_to(ROOT))
    assert len(modules) >= 8
    config = [
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(ROOT / ".mypy_cache"),
    ]
    out, err, status = mypy.run([*config, *modules])
    for module, name in modules.items():
        out = out.replace(module, name)
    assert (status, err) == (0, ""), out + err
