"""Dispatcher: ``python -m benchmarks FAMILY [options]`` runs one benchmark family.

Families are modules exposing ``main(argv) -> int``; add a new one to ``FAMILIES``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

from benchmarks import core, durable, etcd, events

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
}


def main(argv: Sequence[str]) -> int:
    """Run the family named by ``argv[0]`` with the rest of the arguments."""
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in FAMILIES:
        names = ", ".join(FAMILIES)
        print(f"usage: python -m benchmarks {{{names}}} [options]  (FAMILY --help for options)")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    return FAMILIES[argv[0]].main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
