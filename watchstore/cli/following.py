"""``watchstore watch``: follow a store's changes as JSON lines, one per action
(``{"version", "kind", "table", "object"}``, as ``dump --from`` prints them).

A local store is followed through its log, read-only (``log.follow.LogFollower``: no lock
is taken, the writer goes on), polled every ``--interval`` seconds; a store on etcd through
a watch of its prefix. ``--count N`` ends after N commits (for scripts and tests). With
``--json`` each line is an envelope of its own: ``{"ok": true, "exit_code": 0, "result":
{"version", ...}}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ..log.follow import LogFollower
from ..log.rawlog import KIND_NAMES, Object
from .arguments import on_etcd, read_key, store_path
from .output import ExitCode, Output, json_line
from .reading import run_etcd

if TYPE_CHECKING:
    import argparse

    from ..etcd.raw import EtcdReader


def cmd_watch(args: argparse.Namespace, out: Output) -> int:
    """Print every change made from now on (or until --count commits)."""
    seen = {"commits": 0, "version": 0}

    def emit(version: int, actions: list[tuple[int, str, Object]], resync: bool) -> bool:
        """Print a commit's actions; whether to go on."""
        for kind, table, obj in actions:
            if args.table in (None, table):
                line: dict[str, Any] = {
                    "version": version,
                    "kind": KIND_NAMES[kind],
                    "table": table,
                    "object": obj,
                }
                if resync:
                    line["resync"] = True
                if out.as_json:  # each line an envelope of its own
                    line = {"ok": True, "exit_code": 0, "result": line}
                out.write(json_line(line))
        out.stdout.flush()
        seen["commits"] += 1
        seen["version"] = version
        return args.count is None or seen["commits"] < args.count

    if on_etcd(args):

        async def follow(reader: EtcdReader) -> None:
            revision, _state = await reader.snapshot()
            seen["version"] = revision
            out.error(f"watching {args.etcd} prefix {args.prefix} from version {revision}")
            async for version, actions in reader.follow(revision):
                if not emit(version, actions, False):
                    return

        run_etcd(args, follow)
    else:
        follower = LogFollower(store_path(args), read_key(args))
        seen["version"] = follower.version
        out.error(f"watching {args.path} from version {follower.version}")

        async def poll() -> None:
            while True:
                for change in follower.poll():
                    if not emit(change.version, change.actions, change.resync):
                        return
                await trio.sleep(args.interval)

        trio.run(poll)
    return ExitCode.OK
