"""What the benchmark families share: the stored object and its schema, the matching sqlite
table, timings, formatting, the environment header and the command-line scaffolding.

Nothing here is timed on its own: the families decide what runs inside their clocks.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import attrs
import trio

import watchstore as ws
from watchstore.core.codec import dump_data, encode

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

T = TypeVar("T")
C = TypeVar("C")
R = TypeVar("R")

WS: Final = "watchstore"
SQL: Final = "sqlite3"

# -- the stored object ------------------------------------------------------------------------

SERVICES: Final = 100
NODES: Final = 1000
SERVICE_IDS: Final = tuple(f"svc-{i:03d}" for i in range(SERVICES))
NODE_IDS: Final = tuple(f"node-{i:04d}" for i in range(NODES))


@attrs.frozen
class Obj:
    """The benchmarks' stored object, shaped like a SwarmKit task."""

    id: str
    service_id: str
    node_id: str
    meta: ws.Meta = ws.Meta()


SCHEMA: Final = ws.Schema(ws.Table(Obj, indexes=[ws.Index("service_id"), ws.Index("node_id")]))


def make_objects(n: int, seed: int) -> Iterator[Obj]:
    """Yield ``n`` objects with random 96-bit hex ids (collisions are negligible)."""
    rng = random.Random(seed)
    bits = rng.getrandbits
    choice = rng.choice
    for _ in range(n):
        yield Obj(f"{bits(96):024x}", choice(SERVICE_IDS), choice(NODE_IDS))


# -- the same rows in sqlite ------------------------------------------------------------------

SQL_CREATE: Final = (
    "CREATE TABLE objs (id TEXT PRIMARY KEY, service_id TEXT NOT NULL, "
    "node_id TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE INDEX objs_service ON objs (service_id)",
    "CREATE INDEX objs_node ON objs (node_id)",
)
SQL_INSERT: Final = "INSERT INTO objs (id, service_id, node_id, data) VALUES (?, ?, ?, ?)"

SqlRow = tuple[str, str, str, str]


def sql_row(obj: Obj) -> SqlRow:
    """``obj`` as a sqlite row: its indexed columns plus its JSON as the ``data`` blob."""
    return (obj.id, obj.service_id, obj.node_id, dump_data(encode(obj)).decode())


def sql_rows(objs: Iterable[Obj]) -> list[SqlRow]:
    """The sqlite rows of ``objs``, built before any timed region."""
    return [sql_row(o) for o in objs]


def create_sql_tables(conn: sqlite3.Connection) -> None:
    """Create the ``objs`` table and its two indexes, and commit."""
    for statement in SQL_CREATE:
        conn.execute(statement)
    conn.commit()


# -- timings ------------------------------------------------------------------------------------


@attrs.define
class Measure:
    """Repeated timings of one peer on one workload: each run times ``ops`` operations."""

    ops: int
    stat: str = "best"  # "best" (min of runs) or "median"
    times: list[float] = attrs.Factory(list)

    def seconds(self) -> float:
        """Seconds per operation by ``stat``."""
        total = min(self.times) if self.stat == "best" else statistics.median(self.times)
        return total / self.ops

    def to_json(self) -> dict[str, Any]:
        per_op = self.seconds()
        return {
            "ops_per_run": self.ops,
            "stat": self.stat,
            "run_seconds": self.times,
            "seconds_per_op": per_op,
            "ops_per_second": 1.0 / per_op,
        }


def rate_ratio(num: Measure, den: Measure) -> float:
    """rate(num) / rate(den): how many times faster ``num`` is (below 1: slower)."""
    return den.seconds() / num.seconds()


def rotated(values: Sequence[T], rep: int) -> list[T]:
    """``values`` starting at ``rep``: no variant always runs first (or last) in a round."""
    shift = rep % len(values)
    return [*values[shift:], *values[:shift]]


# -- formatting ---------------------------------------------------------------------------------


def fmt_seconds(seconds: float) -> str:
    """A duration in the unit that suits it: ns, us, ms or s."""
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_measure(measure: Measure | None, is_rate: bool) -> str:
    """A table cell: ops/s if ``is_rate``, else the time per op; "-" for no measure."""
    if measure is None:
        return "-"
    if is_rate:
        return f"{1.0 / measure.seconds():,.0f}/s"
    return fmt_seconds(measure.seconds())


def fmt_ratio(value: float | None) -> str:
    """A speed ratio such as ``1.23x`` (no decimals from 100x up); "-" for none."""
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 100 else f"{value:.2f}x"


def size_label(size: int) -> str:
    """A store size for row labels: ``1M``, ``100k``, or ``12,345`` if neither fits."""
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    return f"{size // 1000}k" if size % 1000 == 0 else f"{size:,}"


def verdict(passed: bool) -> str:
    """How a target line starts: PASS or MISS."""
    return "PASS" if passed else "MISS"


def grid(
    headers: Sequence[str], cells: Sequence[Sequence[str]], last_left: bool = False
) -> list[str]:
    """A text table: the first column flush left, the others flush right (the last one
    flush left too with ``last_left``)."""
    widths = [max(len(c[i]) for c in [headers, *cells]) for i in range(len(headers))]
    left = {0, len(headers) - 1} if last_left else {0}

    def line(values: Sequence[str]) -> str:
        return " | ".join(
            v.ljust(w) if i in left else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return [line(headers), "-+-".join("-" * w for w in widths), *(line(c) for c in cells)]


def progress_reporter(family: str) -> Callable[[str], None]:
    """A ``progress(message)`` that prints ``[family] message`` to stderr at once."""

    def progress(message: str) -> None:
        print(f"[{family}] {message}", file=sys.stderr, flush=True)

    return progress


# -- the environment of a run -------------------------------------------------------------------

# The libraries ``versions_line`` names, in its order, when a run recorded them.
_LIBRARIES: Final = ("backend", "trio", "sqlite", "sortedcontainers", "attrs", "watchstore")


def version_of(dist: str) -> str:
    """The installed version of the distribution ``dist``, or "not installed"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def platform_and_versions(
    *,
    cpus: bool = False,
    sqlite: bool = False,
    packages: Sequence[str] = (),
    backend: str | None = None,
) -> dict[str, Any]:
    """The first keys of a run's ``environment``: Python, the platform (and its CPU count with
    ``cpus``), the event loop ``backend`` it ran on, trio, the sqlite library with ``sqlite``,
    ``packages``, attrs and watchstore."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    if cpus:
        env["cpus"] = os.cpu_count()
    if backend is not None:
        env["backend"] = backend
    env["trio"] = trio.__version__
    if sqlite:
        env["sqlite"] = sqlite3.sqlite_version
    for dist in (*packages, "attrs", "watchstore"):
        env[dist] = version_of(dist)
    return env


def gc_settings() -> dict[str, Any]:
    """The garbage collector's state (the benchmarks leave it at Python's defaults)."""
    return {"gc_enabled": gc.isenabled(), "gc_threshold": list(gc.get_threshold())}


def versions_line(env: dict[str, Any]) -> str:
    """The header line of versions: ``python 3.x (CPython), trio ..., watchstore ...``."""
    libraries = (f"{name} {env[name]}" for name in _LIBRARIES if name in env)
    return ", ".join([f"python {env['python']} ({env['implementation']})", *libraries])


def platform_line(env: dict[str, Any]) -> str:
    """The header line of the platform, its CPU count if recorded, and the gc note."""
    cpus = f", {env['cpus']} cpus" if "cpus" in env else ""
    return (
        f"{env['platform']}{cpus}; gc enabled at Python defaults (threshold {env['gc_threshold']})"
    )


# -- command line -------------------------------------------------------------------------------


def argument_parser(family: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks FAMILY``."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks {family}", description=description)


def positive(text: str) -> int:
    """An argparse ``type``: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def add_quick_and_json(
    parser: argparse.ArgumentParser, quick_help: str = "small sizes for a smoke test"
) -> None:
    """The options every family ends with: ``--quick`` and ``--json PATH``."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", metavar="PATH", default=None, help="write raw numbers here")


BACKENDS: Final = ("trio", "asyncio")
"""The event loops a family can run on (``--backend``); trio first, the default."""


def add_backend(parser: argparse.ArgumentParser) -> None:
    """The ``--backend`` option: the AnyIO backend the run's event loop is."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="trio",
        help="the event loop to run on, through AnyIO (default trio)",
    )


def run_on(backend: str, fn: Callable[[C], Awaitable[R]], config: C) -> R:
    """``await fn(config)`` in a new event loop of ``backend`` (``anyio.run``)."""
    return anyio.run(fn, config, backend=backend)


def sized(value: int | None, full: int, small: int, *, quick: bool) -> int:
    """An option's value if given, else its default: ``small`` with --quick, else ``full``."""
    return value if value is not None else (small if quick else full)


def write_json(path: str | None, data: Any, progress: Callable[[str], None]) -> None:
    """Write a run's raw numbers to ``path`` (indented, newline-terminated), if given."""
    if path is None:
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    progress(f"wrote {path}")
