"""Salvage benchmark: opening a damaged log with ``salvage=True`` takes time linear in its size.

For each size N (32, 128, 384, 1024 and 4096 KiB): a durable store gets 20 small commits, one
commit of an object carrying N KiB of text, and 20 small commits more, and is closed. One bit
in the middle of the big record's body is flipped. Timed: ``open_store(schema, path=...,
salvage=True)`` until its block is entered (it keeps the 20 commits before the damage, copies
the damaged file aside, and looks for the versions lost after it). Peer, in the same run: the
same open of the undamaged copy of the store (reading and checking every record, replaying
every commit), the floor any open pays. The ratio salvage / clean open stays flat as N grows
when salvage is linear; it grew with N when salvage rescanned the rest of the file from every
offset after the damage (0.1 s at 32 KiB, 7.6 s at 384 KiB, 46 s at 1 MiB).

Method: each size is built once, untimed; the two opens alternate, ``--reps`` times each, and
the best time of each is kept (WALL time). Files live in a temporary directory on the
repository's filesystem.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

import watchstore as ws
from benchmarks._common import (
    add_quick_and_json,
    argument_parser,
    fmt_ratio,
    fmt_seconds,
    gc_settings,
    grid,
    platform_and_versions,
    platform_line,
    positive,
    progress_reporter,
    versions_line,
    write_json,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

SIZES_KIB: Final = (32, 128, 384, 1024, 4096)
QUICK_SIZES_KIB: Final = (32, 128)
AROUND: Final = 20
"""Small commits before and after the big one."""

progress = progress_reporter("salvage")


@attrs.frozen
class Blob:
    """An object with a payload of text."""

    id: str
    text: str
    meta: ws.Meta = ws.Meta()


SCHEMA: Final = ws.Schema(ws.Table(Blob))


async def build(directory: Path, kib: int) -> int:
    """The store of the benchmark; returns the offset of a byte inside the big record."""
    async with ws.open_store(SCHEMA, path=directory) as store:
        for i in range(AROUND):
            await store.update(lambda tx: tx.upsert(Blob(f"small-{i}", "x")))
        await store.update(lambda tx: tx.upsert(Blob("big", "y" * (kib << 10))))
        for i in range(AROUND):
            await store.update(lambda tx: tx.upsert(Blob(f"after-{i}", "z")))
    data = (directory / "00000001.wslog").read_bytes()
    return data.index(b"yyyy") + (kib << 9)


async def timed_open(directory: Path, salvage: bool) -> float:
    """Seconds from calling open_store until its block is entered."""
    start = time.perf_counter()
    async with ws.open_store(SCHEMA, path=directory, salvage=salvage) as store:
        elapsed = time.perf_counter() - start
        if salvage:
            assert store.recovery is not None
            assert store.recovery.salvage is not None
            assert store.version == ws.Version(AROUND)
    return elapsed


async def measure(base: Path, kib: int, reps: int) -> dict[str, Any]:
    """Best salvage and clean-open times for one size."""
    clean = base / f"clean-{kib}"
    offset = await build(clean, kib)
    segment = (clean / "00000001.wslog").read_bytes()
    damaged = bytearray(segment)
    damaged[offset] ^= 0x04
    best = {"salvage": float("inf"), "clean": float("inf")}
    for _ in range(reps):
        work = base / f"damaged-{kib}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        (work / "00000001.wslog").write_bytes(bytes(damaged))
        best["salvage"] = min(best["salvage"], await timed_open(work, salvage=True))
        best["clean"] = min(best["clean"], await timed_open(clean, salvage=False))
    progress(f"{kib} KiB: salvage {fmt_seconds(best['salvage'])}")
    return {"kib": kib, "segment_bytes": len(segment), **best}


def render(env: dict[str, Any], results: Sequence[dict[str, Any]]) -> list[str]:
    cells = [
        [
            f"{r['kib']} KiB",
            f"{r['segment_bytes'] / 1024:,.0f} KiB",
            fmt_seconds(r["salvage"]),
            fmt_seconds(r["clean"]),
            fmt_ratio(r["salvage"] / r["clean"]),
            f"{r['salvage'] * 1e6 / (r['segment_bytes'] / 1024):,.1f}",
        ]
        for r in results
    ]
    headers = ["damaged record", "segment", "salvage", "clean open", "ratio", "salvage us/KiB"]
    return [
        "watchstore salvage benchmark: open with salvage=True after one flipped bit",
        platform_line(env),
        versions_line(env),
        "",
        *grid(headers, cells),
        "",
        "ratio = salvage / clean open of the same store undamaged; flat = linear.",
    ]


def main(argv: Sequence[str]) -> int:
    """``python -m benchmarks salvage [--reps N] [--quick] [--json PATH]``."""
    parser = argument_parser("salvage", __doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--reps", type=positive, default=3, help="opens of each kind per size")
    add_quick_and_json(parser)
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES_KIB if args.quick else SIZES_KIB
    env = {**platform_and_versions(cpus=True), **gc_settings()}
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as scratch:
        base = Path(scratch)
        results = [trio.run(measure, base, kib, args.reps) for kib in sizes]
    print("\n".join(render(env, results)))
    write_json(args.json, {"environment": env, "results": results}, progress)
    return 0
