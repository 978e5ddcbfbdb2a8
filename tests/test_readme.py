"""Every Python code block in README.md runs as written (in order, in one namespace)."""

from __future__ import annotations

import pathlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 3


def test_readme_python_blocks_run(request: pytest.FixtureRequest) -> None:
    if "WATCHSTORE_ETCD" in README.read_text():
        request.getfixturevalue("etcd_env")  # the etcd example talks to a real etcd
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in python_blocks():
        exec(compile(block, str(README), "exec", dont_inherit=True), namespace)
