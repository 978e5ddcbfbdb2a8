"""The layer contracts of ``pyproject.toml`` (``[tool.importlinter]``) hold, and catch breaks.

``make test`` runs ``lint-imports`` on the package; here the same contracts are also run on a
copy of the package with one forbidden import planted in it, to show each contract fails when
a later change breaks it: the core importing an event loop or ``os``, a lower layer importing
a higher one, two modules of a layer importing each other.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINT_IMPORTS = pathlib.Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_its_contracts() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("core/model.py", "import anyio", "The core is sans-I/O"),
        ("core/schema.py", "import os", "The core is sans-I/O"),
        ("core/txn.py", "from ..service import store", "Layers"),
        ("log/records.py", "from ..etcd import client", "Layers"),
        ("_runtime.py", "from .log import files", "Layers"),
        ("core/errors.py", "from . import state", "No circles"),
    ],
)
def test_a_planted_import_breaks_a_contract(
    tmp_path: pathlib.Path, module: str, planted: str, broken: str
) -> None:
    shutil.copytree(ROOT / "watchstore", tmp_path / "watchstore")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "watchstore" / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken}" in result.stdout.split("Broken contracts")[1]
