"""etcd benchmark: commits through an EtcdProposer store next to raw etcd puts.

A real one-member etcd (Debian's etcd-server, with its default fsync) is started on a free
loopback port with a temporary data dir, and stopped at the end.

1. Commits/s, 1 writer: ``await store.update(lambda tx: tx.create(obj))`` per object on a
   store opened with ``etcd=[endpoint]`` (each is one etcd txn: compares, puts of the object
   and of the proposal's marker; the call returns once the store's own watch has applied it),
   next to raw ``kv/put`` calls of the same JSON through the same HTTP client
   (``watchstore._etcdclient.EtcdClient``, httpx): the floor for one etcd write.
2. The same with 16 concurrent writers (trio tasks on one store / one client).
3. Replica lag: a second OS process holds a replica of the same prefix and watches it; this
   process commits objects carrying ``time.time()``, one at a time, and the other records
   ``time.time()`` when each event arrives. p50 and p99 of the difference.

Target (issue 5): store commits/s at least 0.8x raw puts/s, with 1 and with 16 writers.
Times are wall time; the variants alternate over ``--reps`` rounds and each keeps its best.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import trio

import watchstore as ws
from benchmarks._common import (
    argument_parser,
    fmt_ratio,
    grid,
    progress_reporter,
    verdict,
    version_of,
)
from tests.etcd_cluster import EtcdCluster
from watchstore._codec import dump_data, encode
from watchstore._etcdclient import EtcdClient, b64

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

ROOT: Final = Path(__file__).parent.parent
WRITERS: Final = 16


@attrs.frozen
class Ping:
    """The benchmark's object: ``sent`` is when the writer committed it (Unix time)."""

    id: str
    sent: float = 0.0
    payload: str = ""
    meta: ws.Meta = ws.Meta()


SCHEMA: Final = ws.Schema(ws.Table(Ping))
PAYLOAD: Final = "x" * 200


async def _rate(writers: int, count: int, write: Callable[[int], Awaitable[object]]) -> float:
    """Writes per second: ``writers`` tasks share ``count`` calls of ``write(i)``."""
    per = count // writers

    async def worker(w: int) -> None:
        for i in range(w * per, (w + 1) * per):
            await write(i)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(worker, w)
    return writers * per / (time.perf_counter() - start)


async def _commit_rates(endpoint: str, count: int, reps: int) -> dict[str, float]:
    best: dict[str, float] = {}
    client = EtcdClient([endpoint])
    try:
        async with ws.open_store(SCHEMA, etcd=[endpoint], prefix="bench-store") as store:
            for rep in range(reps):
                for writers in (1, WRITERS):

                    async def put(i: int, tag: str = f"{rep}-{writers}") -> None:
                        obj = Ping(f"raw-{tag}-{i}", time.time(), PAYLOAD)
                        key = f"bench-raw/o/Ping/{obj.id}".encode()
                        value = dump_data(encode(obj))
                        await client.call(
                            "kv/put", {"key": b64(key), "value": b64(value)}, write=True
                        )

                    async def commit(i: int, tag: str = f"{rep}-{writers}") -> None:
                        obj = Ping(f"ws-{tag}-{i}", time.time(), PAYLOAD)
                        await store.update(lambda tx: tx.create(obj))

                    for name, write in (("raw", put), ("store", commit)):
                        rate = await _rate(writers, count, write)
                        key = f"{name}/{writers}"
                        best[key] = max(best.get(key, 0.0), rate)
    finally:
        await client.aclose()
    return best


def _lag(endpoint: str, count: int) -> list[float]:
    """Commit ``count`` pings here; a replica in another process reports each one's lag."""
    with subprocess.Popen(
        [sys.executable, "-m", "benchmarks.etcd", "--lag-child", endpoint, str(count)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    ) as child:
        try:
            assert child.stdout is not None
            ready = child.stdout.readline()
            assert ready.strip() == b"ready", ready
            trio.run(_ping, endpoint, count)
            lags: list[float] = json.loads(child.stdout.read())
            return lags
        finally:
            if child.poll() is None:
                child.kill()


async def _ping(endpoint: str, count: int) -> None:
    async with ws.open_store(SCHEMA, etcd=[endpoint], prefix="bench-lag") as store:
        for i in range(count):
            await store.update(lambda tx: tx.upsert(Ping(f"p{i}", time.time(), PAYLOAD)))
            await trio.sleep(0.002)


async def _lag_child(endpoint: str, count: int) -> None:
    lags: list[float] = []
    async with (
        ws.open_store(SCHEMA, etcd=[endpoint], prefix="bench-lag") as store,
        store.watch(ws.on(Ping)) as events,
    ):
        print("ready", flush=True)
        async for event in events:
            assert isinstance(event, ws.Created | ws.Updated)
            lags.append(time.time() - event.obj.sent)
            if len(lags) == count:
                break
    print(json.dumps(lags))


def _per_op(rate: float) -> dict[str, float]:
    return {"seconds_per_op": 1.0 / rate, "ops_per_second": rate}


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def main(argv: Sequence[str]) -> int:
    """Run the etcd benchmark; see the module docstring."""
    parser = argument_parser("etcd", __doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--count", type=int, default=800, help="commits per variant and run")
    parser.add_argument("--reps", type=int, default=3, help="rounds (each variant keeps its best)")
    parser.add_argument("--lag-count", type=int, default=300, help="pings timed for the lag")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (smoke)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--lag-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lag_child:
        trio.run(_lag_child, args.lag_child[0], int(args.lag_child[1]))
        return 0
    if args.quick:
        args.count, args.reps, args.lag_count = 64, 1, 20
    progress = progress_reporter("etcd")
    with tempfile.TemporaryDirectory(prefix="ws-bench-etcd-") as tmp:
        progress("starting a one-member etcd")
        cluster = EtcdCluster(Path(tmp), 1)
        try:
            endpoint = cluster.endpoints[0]
            progress(f"commits: {args.count} per variant, {args.reps} rounds")
            rates = trio.run(_commit_rates, endpoint, args.count, args.reps)
            progress(f"replica lag: {args.lag_count} pings")
            lags = _lag(endpoint, args.lag_count)
        finally:
            cluster.stop()
    print(f"etcd {cluster_version()} (one member, fsync on), httpx {version_of('httpx')}")
    rows = []
    for writers in (1, WRITERS):
        raw, store = rates[f"raw/{writers}"], rates[f"store/{writers}"]
        rows.append(
            [
                f"{writers} writer{'s' if writers > 1 else ''}",
                f"{store:,.0f}/s",
                f"{raw:,.0f}/s",
                fmt_ratio(store / raw),
            ]
        )
    print("\n".join(grid(["commits", "watchstore", "raw kv/put", "ws vs raw"], rows)))
    p50, p99 = _percentile(lags, 0.5), _percentile(lags, 0.99)
    print(
        f"replica lag (commit here -> event in another process), {len(lags)} pings: "
        f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, max {max(lags) * 1e3:.2f} ms, "
        f"mean {statistics.mean(lags) * 1e3:.2f} ms"
    )
    for label, writers in (("(a)", 1), ("(b)", WRITERS)):
        ratio = rates[f"store/{writers}"] / rates[f"raw/{writers}"]
        print(
            f"  {verdict(ratio >= 0.8)}  {label} store commits >= 0.8x raw puts, {writers} "
            f"writer{'s' if writers > 1 else ''}: {ratio:.2f}x"
        )
    if args.json:
        table = {
            f"commits, {w} writer{'s' if w > 1 else ''}": {
                "watchstore": _per_op(rates[f"store/{w}"]),
                "raw kv/put": _per_op(rates[f"raw/{w}"]),
            }
            for w in (1, WRITERS)
        }
        results = {
            "table": table,
            "commits_per_second": rates,
            "replica_lag_seconds": {"p50": p50, "p99": p99},
        }
        args.json.write_text(json.dumps(results, indent=2))
    return 0


@functools.cache
def cluster_version() -> str:
    """The etcd server version on PATH."""
    done = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.split("\n")[0].removeprefix("etcd Version: ").strip()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
