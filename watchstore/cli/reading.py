"""The commands that read a store: ``inspect``, ``verify``, ``snapshots``, ``dump``, ``get``.

A store's files hold plain data, not Python classes, so these read them generically
(``read_epoch``, ``replay``): tables by name, objects as dicts. ``verify --schema`` imports
the program's ``Schema`` to rebuild typed objects and their indexes. ``inspect``, ``dump``
and ``get`` also read a store on etcd (``--etcd URL --prefix P``).
"""

from __future__ import annotations

import os
import socket
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ..core.errors import LogCorrupt
from ..core.model import Version
from ..etcd.raw import EtcdReader
from ..log.lock import lock_status
from ..log.manifest import MANIFEST, check_restored, check_segments, read_manifest, segment_header
from ..log.rawlog import KIND_NAMES, Object, RawEpoch, read_epoch, rebuild, replay, segment_files
from ..log.records import FLAG_ENCRYPTED
from .arguments import load_schema, on_etcd, read_key, store_path
from .output import CommandError, ExitCode, Grid, Output, count, json_line, size, when

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from ..core.schema import Schema


def read_all(path: Path, key: bytes | None, out: Output) -> list[RawEpoch]:
    """Every kept epoch of the store in ``path``; LogCorrupt at the first damage."""
    files = segment_files(path)
    with out.progress("reading", sum(f.stat().st_size for f in files)) as advance:
        epochs = [read_epoch(f, key, advance) for f in files]
    for epoch in epochs:
        if epoch.damage is not None:
            raise epoch.damage
    return epochs


def lock_info(path: Path) -> dict[str, Any]:
    """The lock's state (free, held or stale) and holder, with whether the holder lives."""
    if not (path / "LOCK").exists():
        return {"state": "free", "holder": {}, "holder_alive": None}
    status = lock_status(path)
    state = "held" if status.held else "stale" if status.stale else "free"
    holder = {k: v for k, v in status.holder.items() if k != "token"}  # the holder's own
    return {"state": state, "holder": holder, "holder_alive": alive(holder)}


def alive(holder: dict[str, Any]) -> bool | None:
    """Whether the holder's process runs (None: unknown, e.g. it is on another host)."""
    pid = holder.get("pid")
    if type(pid) is not int or holder.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def who(holder: dict[str, Any]) -> str:
    """The holder of a lock, as ``LOCK.json`` names it: pid, host and since when."""
    started = holder.get("started_at")
    since = f" since {when(started)}" if isinstance(started, int | float) else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{since}"


def holder_text(info: dict[str, Any]) -> str:
    """The lock's state for people."""
    holder = who(info["holder"])
    if info["state"] == "free":
        return "free"
    if info["state"] == "stale":
        return f"stale: {holder} is gone, and the system released its lock"
    if info["holder_alive"] is False:
        return f"held, though {holder} is gone: a process it started holds the lock until it ends"
    return f"held by {holder}"


def epoch_rows(epochs: list[RawEpoch]) -> list[dict[str, Any]]:
    """The kept epochs as --json reports them."""
    return [
        {
            "segment": e.header.segment,
            "file": e.file.name,
            "snapshot_version": e.snapshot_version,
            "last_version": e.last_version,
            "changes": len(e.changes),
            "size": e.size - e.written_ahead,
            "written_ahead": e.written_ahead,
            "created_at": e.header.created_ns / 1e9,
            "torn_tail": e.torn,
            "current": e is epochs[-1],
            "damage": None
            if e.damage is None
            else {"offset": e.damage.offset, "reason": e.damage.reason},
        }
        for e in epochs
    ]


def epochs_grid(rows: list[dict[str, Any]]) -> Grid:
    """The kept epochs for people."""
    damaged = [r for r in rows if r["damage"]]
    caption = "; ".join(
        f"segment {r['segment']} damaged at offset {r['damage']['offset']} after version "
        f"{r['last_version']}: {r['damage']['reason']}"
        for r in damaged
    )
    return Grid(
        "Epochs (kept snapshots; * is the current one)",
        ["segment", "snapshot", "last version", "changes", "size", "created"],
        [
            (
                f"{r['segment']}{' *' if r['current'] else ''}",
                r["snapshot_version"],
                r["last_version"],
                r["changes"],
                size(r["size"]),
                when(r["created_at"]),
            )
            for r in rows
        ],
        caption or None,
    )


T = TypeVar("T")


def run_etcd(args: argparse.Namespace, body: Callable[[EtcdReader], Awaitable[T]]) -> T:
    """Run ``body`` with a reader of the store at ``--etcd URL --prefix P``."""

    async def run() -> T:
        reader = EtcdReader([args.etcd], args.prefix)
        try:
            return await body(reader)
        finally:
            await reader.aclose()

    try:
        return trio.run(run)
    except ValueError as exc:  # a malformed URL or prefix
        message = f"--etcd {args.etcd} --prefix {args.prefix}: {exc}"
        raise CommandError(ExitCode.USAGE, message) from None


# -- inspect ---------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace, out: Output) -> int:
    """Tables, row counts, version, epochs, segments, sizes and lock holder of a store."""
    if on_etcd(args):
        return _inspect_etcd(args, out)
    path = store_path(args)
    epochs = read_all(path, read_key(args), out)
    current = epochs[-1]
    state = replay(current)
    lock = lock_info(path)
    rows = epoch_rows(epochs)
    report: dict[str, Any] = {
        "path": str(path),
        "format": current.header.format,
        "lineage": current.header.lineage.hex(),
        "encrypted": bool(current.header.flags & FLAG_ENCRYPTED),
        "version": current.last_version,
        "tables": {name: len(rows) for name, rows in state.items()},
        "epochs": rows,
        "size": sum(r["size"] for r in rows),
        "written_ahead": current.written_ahead,
        "lock": lock,
    }
    if out.as_json:
        out.result(report)
        return ExitCode.OK
    fields = [
        ("store", str(path)),
        ("version", str(current.last_version)),
        ("format", f"{current.header.format} (lineage {current.header.lineage.hex()})"),
        ("encrypted", "yes" if report["encrypted"] else "no"),
        ("size", f"{size(report['size'])} in {count(len(epochs), 'segment')}"),
        ("lock", holder_text(lock)),
    ]
    if current.written_ahead:
        fields.append(
            (
                "written ahead",
                f"{size(current.written_ahead)} of zeros (space for the next commits)",
            )
        )
    if current.torn:
        fields.append(("torn tail", f"{current.torn} B (truncated on the next open)"))
    out.table(Grid("Store", [], fields, fields=True))
    out.table(Grid("Tables", ["table", "rows"], list(report["tables"].items())))
    out.table(epochs_grid(rows))
    return ExitCode.OK


def _inspect_etcd(args: argparse.Namespace, out: Output) -> int:
    async def read(reader: EtcdReader) -> tuple[int, dict[str, dict[str, Object]], str]:
        revision, state = await reader.snapshot()
        return revision, state, reader.server_version

    revision, state, server = run_etcd(args, read)
    report = {
        "etcd": args.etcd,
        "prefix": args.prefix,
        "server_version": server,
        "version": revision,
        "tables": {name: len(rows) for name, rows in sorted(state.items())},
    }
    if out.as_json:
        out.result(report)
        return ExitCode.OK
    fields = [
        ("store", f"{args.etcd} prefix {args.prefix}"),
        ("version", f"{revision} (the etcd revision)"),
        ("etcd", server),
    ]
    out.table(Grid("Store", [], fields, fields=True))
    out.table(Grid("Tables", ["table", "rows"], list(report["tables"].items())))
    return ExitCode.OK


# -- snapshots -------------------------------------------------------------------------------


def cmd_snapshots(args: argparse.Namespace, out: Output) -> int:
    """The kept epochs: each segment's snapshot version and time, and its last version.

    Lenient, as it is where to look for a rollback target once ``verify`` has failed: a
    segment damaged after its snapshot is listed up to the damage, which is shown."""
    key = read_key(args)
    epochs = [read_epoch(f, key) for f in segment_files(store_path(args))]
    rows = epoch_rows(epochs)
    if out.as_json:
        out.result(rows)
    else:
        out.table(epochs_grid(rows))
    return ExitCode.OK


# -- verify ----------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    """Check every record of every kept segment; with --schema, rebuild every index."""
    path = store_path(args)
    key = read_key(args)
    schema = load_schema(args.schema) if args.schema else None
    files = segment_files(path)
    total = sum(f.stat().st_size for f in files)
    results: list[dict[str, Any]] = []
    with out.progress("verifying", total * (2 if schema else 1)) as advance:
        for file in files:
            lineage = next((r["lineage"] for r in results if "lineage" in r), None)
            results.append(verify_segment(file, key, schema, lineage, advance))
    manifest = verify_manifest(path, files, results)
    problems = [r for r in [*results, manifest] if r["problem"]]
    report = {
        "path": str(path),
        "segments": results,
        "manifest": manifest,
        "records": sum(r["records"] for r in results),
        "indexes_rebuilt": schema is not None,
    }
    lines = []
    for r in problems:
        p = r["problem"]
        after = f" (after version {p['version']})" if p["version"] is not None else ""
        lines.append(f"{r['path']} at offset {p['offset']}{after}: {p['reason']}")
    code = ExitCode.OK if not problems else ExitCode.FAILED
    if out.as_json:
        if problems:
            out.result(report, code, message="verify failed: " + "; ".join(lines))
        else:
            out.result(report)
    else:
        _print_verify(report, not problems, out)
    for line in lines:
        out.error(f"watchstore: verify failed: {line}")
    return code


def verify_segment(
    file: Path,
    key: bytes | None,
    schema: Schema | None,
    lineage: str | None,
    advance: Callable[[int], None],
) -> dict[str, Any]:
    """Verify one segment: the records, the ids, and with ``schema`` the typed rebuild.
    ``lineage`` is the store's (hex), from the segments verified before (None: the first)."""
    result: dict[str, Any] = {"file": file.name, "path": str(file), "records": 0, "problem": None}
    expected = file.stat().st_size * (2 if schema else 1)
    done = 0

    def counted(n: int) -> None:
        nonlocal done
        done += n
        advance(n)

    try:
        epoch = read_epoch(file, key, counted)
        result.update(
            lineage=epoch.header.lineage.hex(),
            records=epoch.records,
            snapshot_version=epoch.snapshot_version,
            last_version=epoch.last_version,
            torn_tail=epoch.torn,
            format=epoch.header.format,
            size=epoch.size,
            end=epoch.end,
        )
        if epoch.header.segment != int(file.stem):
            raise LogCorrupt(str(file), 0, f"the header says segment {epoch.header.segment}")
        if lineage is not None and epoch.header.lineage.hex() != lineage:
            raise LogCorrupt(str(file), 0, "a segment of another store (its lineage differs)")
        if epoch.damage is not None:
            raise epoch.damage
        replay(epoch, strict=True)
        if schema is not None:
            state = rebuild(epoch, schema, counted)
            result["objects"] = sum(len(t.rows) for t in state.tables.values())
            result["indexes"] = sum(len(t.indexes) for t in state.tables.values())
    except LogCorrupt as exc:
        version = exc.version.index if isinstance(exc.version, Version) else None
        result["problem"] = {"offset": exc.offset, "reason": exc.reason, "version": version}
    advance(expected - done)
    return result


def verify_manifest(path: Path, files: list[Path], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Check the store against its manifest, as opening does: no segment missing, foreign or
    renamed, and the newest reaching the version the store had made durable."""
    result: dict[str, Any] = {"file": MANIFEST, "path": str(path / MANIFEST), "records": 0}
    result["problem"] = None
    try:
        manifest = read_manifest(path)
        if manifest is None:
            if results and results[-1].get("format", 2) >= 2:
                raise LogCorrupt(
                    str(path / MANIFEST), 0, "the manifest is missing: no telling what is lost"
                )
            return result
        headers = {}
        for file in files:
            with suppress(LogCorrupt):
                headers[file] = segment_header(file)
        check_segments(path, headers, manifest)
        newest = results[-1]
        if "last_version" in newest and not newest["problem"]:
            check_restored(
                files[-1],
                manifest,
                int(files[-1].stem),
                newest["last_version"],
                newest["end"],
                newest["records"] - 1,
            )
    except LogCorrupt as exc:
        result["path"] = exc.file  # the file at fault: a segment, or the manifest itself
        result["problem"] = {"offset": exc.offset, "reason": exc.reason, "version": None}
    return result


def _print_verify(report: dict[str, Any], ok: bool, out: Output) -> None:
    rows = []
    for r in report["segments"]:
        if r["problem"]:
            status = f"FAILED at offset {r['problem']['offset']}"
        elif r.get("torn_tail"):
            status = f"ok, torn tail of {r['torn_tail']} B (truncated on the next open)"
        else:
            status = "ok"
        versions = f"{r['snapshot_version']}..{r['last_version']}" if "last_version" in r else "-"
        rows.append((r["file"], r["records"], versions, r.get("objects", "-"), status))
    out.table(Grid("Segments", ["file", "records", "versions", "objects", "status"], rows))
    if report["indexes_rebuilt"]:
        objects = sum(r.get("objects", 0) for r in report["segments"])
        note = f"indexes rebuilt ({objects} objects decoded and indexed)"
    else:
        note = "indexes not rebuilt: no --schema given"
    segments = count(len(report["segments"]), "segment")
    checked = f"{count(report['records'], 'record')} in {segments} checked"
    out.line(f"{'ok' if ok else 'FAILED'}: {checked}; {note}")


# -- dump and get ----------------------------------------------------------------------------


def cmd_dump(args: argparse.Namespace, out: Output) -> int:
    """JSON lines: the objects of the current state, or the changes after --from."""
    if on_etcd(args):
        if args.start is not None:
            raise CommandError(
                ExitCode.USAGE, "dump --from reads a local store's log; use `watch` on etcd"
            )
        state = run_etcd(args, lambda reader: _state(reader))
        lines: Iterator[dict[str, Any]] = _objects(state, args.table)
    else:
        epochs = read_all(store_path(args), read_key(args), out)
        if args.start is None:
            lines = _objects(replay(epochs[-1]), args.table)
        else:
            tables = {name for e in epochs for name in e.tables}
            if args.table is not None and args.table not in tables:
                raise _unknown_table(args.table, dict.fromkeys(tables))
            lines = (
                {"version": version, "kind": KIND_NAMES[kind], "table": name, "object": obj}
                for version, kind, name, obj in changes_after(epochs, args.start)
                if args.table in (None, name)
            )
    if out.as_json:
        out.result(list(lines))
    else:
        for line in lines:
            out.write(json_line(line))
    return ExitCode.OK


async def _state(reader: EtcdReader) -> dict[str, dict[str, Object]]:
    return (await reader.snapshot())[1]


def _objects(state: dict[str, dict[str, Object]], table: str | None) -> Iterator[dict[str, Any]]:
    if table is not None and table not in state:
        raise _unknown_table(table, state)
    for name, rows in state.items():
        if table in (None, name):
            for id in sorted(rows):
                yield {"table": name, "object": rows[id]}


def _unknown_table(name: str, tables: dict[str, Any]) -> CommandError:
    return CommandError(
        ExitCode.NOT_FOUND,
        f"no table {name!r} in the store; its tables are {', '.join(tables) or 'none'}",
    )


def changes_after(epochs: list[RawEpoch], start: int) -> Iterator[tuple[int, int, str, Object]]:
    """(version, kind, table, object) of every action after version ``start``, read as
    ``watch_from`` reads them: from the newest epoch whose snapshot is not after ``start``
    (after a rollback, the rolled-back line of history), then through the newer ones,
    skipping the changes a compaction copied into the next segment."""
    current = epochs[-1].last_version
    if start > current:
        raise CommandError(
            ExitCode.NOT_FOUND, f"version {start} is after the store's version {current}"
        )
    usable = [i for i, e in enumerate(epochs) if e.snapshot_version <= start]
    if not usable:
        oldest = min(e.snapshot_version for e in epochs)
        raise CommandError(
            ExitCode.NOT_FOUND,
            f"the history before version {oldest} is compacted (the oldest kept snapshot); "
            "dump without --from for the whole state",
            oldest=oldest,
        )
    last = epochs[usable[-1]].snapshot_version
    for epoch in epochs[usable[-1] :]:
        for change in epoch.changes:
            if change.version <= last:
                continue
            last = change.version
            if change.version > start:
                for kind, name, obj in change.actions:
                    yield change.version, kind, name, obj


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    """One object, by table and id, as JSON."""
    if on_etcd(args):

        async def get(reader: EtcdReader) -> tuple[int, Object | None, set[str]]:
            revision, obj = await reader.get(args.table, args.id)
            tables = set() if obj is not None else set((await reader.snapshot())[1])
            return revision, obj, tables

        version, obj, tables = run_etcd(args, get)
    else:
        epochs = read_all(store_path(args), read_key(args), out)
        state = replay(epochs[-1])
        version, tables = epochs[-1].last_version, set(state)
        obj = state.get(args.table, {}).get(args.id)
    if obj is None:
        if args.table not in tables:
            raise _unknown_table(args.table, dict.fromkeys(sorted(tables)))
        raise CommandError(
            ExitCode.NOT_FOUND,
            f"no {args.table} {args.id!r} in the store (at version {version})",
            version=version,
        )
    if out.as_json:
        out.result({"version": version, "table": args.table, "object": obj})
    else:
        out.write(json_line(obj))
    return ExitCode.OK
