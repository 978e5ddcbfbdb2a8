"""Dispatcher: ``python -m benchmarks FAMILY [options]`` runs one benchmark family.

Families are modules exposing ``main(argv) -> int``; add a new one to ``FAMILIES``.
``--chart PATH.png`` (any family) also draws the run's results (see ``_chart.py``): it is
handled here, from the raw numbers the family writes with ``--json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from benchmarks import core, durable, etcd, events, salvage

if TYPE_CHECKING:
    from collections.abc import Sequence


class Family(Protocol):
    """A benchmark family: a module with a ``main`` taking the arguments after its name."""

    def main(self, argv: Sequence[str]) -> int: ...


FAMILIES: dict[str, Family] = {
    "core": core,
    "durable": durable,
    "etcd": etcd,
    "events": events,
    "salvage": salvage,
}


def main(argv: Sequence[str]) -> int:
    """Run the family named by ``argv[0]`` with the rest of the arguments."""
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in FAMILIES:
        names = ", ".join(FAMILIES)
        print(
            f"usage: python -m benchmarks {{{names}}} [options] [--chart PATH.png]  "
            "(FAMILY --help for options)"
        )
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    family, args = argv[0], list(argv[1:])
    chart = take_option(args, "--chart")
    if chart is None:
        return FAMILIES[family].main(args)
    with tempfile.TemporaryDirectory() as scratch:
        if "--json" not in args and not any(a.startswith("--json=") for a in args):
            args += ["--json", str(Path(scratch) / f"{family}.json")]
        code = FAMILIES[family].main(args)
        if code == 0:
            from benchmarks._chart import write_chart

            results = json.loads(Path(option_value(args, "--json")).read_text())
            write_chart(family, results, chart)
            print(f"[{family}] wrote chart {chart}", file=sys.stderr)
    return code


def take_option(args: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` (or ``name=VALUE``) from ``args`` and return VALUE."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del args[i]
            return arg.partition("=")[2]
    return None


def option_value(args: Sequence[str], name: str) -> str:
    """The VALUE of ``name VALUE`` or ``name=VALUE`` in ``args`` (the last one given)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.partition("=")[2]
    if value is None:
        raise LookupError(name)
    return value


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
