"""The commands that change a store or make one: ``compact``, ``rollback``, ``unlock``,
``salvage``, ``backup``, ``restore`` and ``load``. Each calls the log layer, which does the
work (``watchstore.log``: epochs, the lock, backups, seeding); this module checks the
arguments and reports."""

from __future__ import annotations

import json
import sys
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..core.codec import DecodeError, decoder_for
from ..core.errors import StoreError
from ..core.model import Version
from ..core.state import StoreState
from ..log.backup import BackupInfo, RestoreTargetExists, restore_backup, write_backup
from ..log.epochlog import list_epochs, rollback
from ..log.lock import unlock
from ..log.rawlog import key_sealer, segment_files
from ..log.records import HEADER_SIZE, HeaderError, parse_header
from ..log.seed import StoreExists, seed_store
from ..service.store import open_store
from .arguments import read_key, required_schema
from .output import CommandError, ExitCode, Grid, Output, count, size
from .reading import epoch_rows, epochs_grid, holder_text, lock_info, read_all, who

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

    from ..core.schema import Schema
    from ..log.segment import Salvage


def cmd_compact(args: argparse.Namespace, out: Output) -> int:
    """Open the store with its schema and write its state as a new epoch."""
    schema = required_schema(args, "opens the store")
    path = Path(args.path)
    segment_files(path)
    key = read_key(args)

    async def compact() -> tuple[int, int]:
        async with open_store(
            schema, path=path, keep_epochs=args.keep, key=key, compact_in_child=False
        ) as store:
            repaired = store.recovery.repaired_tail if store.recovery else 0
            return (await store.compact()).index, repaired

    with out.status("compacting"):
        version, repaired = trio.run(compact)
    rows = epoch_rows(read_all(path, key, out))
    if out.as_json:
        out.result({"version": version, "repaired_tail": repaired, "epochs": rows})
        return ExitCode.OK
    out.line(f"compacted {path} at version {version}")
    if repaired:
        out.line(f"(a torn tail of {repaired} B was truncated first)")
    out.table(epochs_grid(rows))
    return ExitCode.OK


def cmd_rollback(args: argparse.Namespace, out: Output) -> int:
    """Make a kept snapshot the store's state (the store must not be open)."""
    path = Path(args.path)
    newest = segment_files(path)[-1]
    key = read_key(args)
    with suppress(HeaderError):  # a damaged header: list_epochs reports it
        key_sealer(newest, parse_header(newest.read_bytes()[:HEADER_SIZE]), key)
    kept = [e.version.index for e in list_epochs(path, key=key)]
    if args.to not in kept:
        raise CommandError(
            ExitCode.NOT_FOUND,
            f"no kept snapshot at version {args.to}; the kept ones are at "
            f"{', '.join(map(str, kept))} (see `watchstore snapshots {path}`)",
            kept=kept,
        )
    epoch = rollback(path, Version(args.to), key=key)
    if out.as_json:
        out.result({"version": args.to, "segment": epoch.segment, "file": epoch.file.name})
    else:
        out.line(
            f"rolled back {path} to version {args.to}: new segment {epoch.file.name}; the "
            "newer segments stay until compaction retires them",
        )
    return ExitCode.OK


def cmd_unlock(args: argparse.Namespace, out: Output) -> int:
    """Clear a stale lock; a lock held by a live process only with --force."""
    path = Path(args.path)
    segment_files(path)  # NOT_FOUND, as every command, where there is no store
    info = lock_info(path)
    if info["state"] == "held" and not args.force:
        raise CommandError(
            ExitCode.LOCKED,
            f"{path} is locked: {holder_text(info)}. Close the store in that process. "
            "Only if it is stuck for good (e.g. its host is gone) run `watchstore unlock "
            "PATH --force`: if the old holder resumes, it and the next opener both write, "
            "which corrupts the store",
            lock=info,
        )
    if info["state"] != "free":
        unlock(path, force=args.force)
    holder = who(info["holder"])
    message = {
        "free": "not locked: nothing to do",
        "stale": f"cleared a stale lock: {holder} is gone",
        "held": f"removed the lock held by {holder}",
    }[info["state"]]
    if out.as_json:
        out.result({"cleared": info["state"] != "free", "lock": info})
    else:
        out.line(message)
    return ExitCode.OK


def cmd_salvage(args: argparse.Namespace, out: Output) -> int:
    """Open a damaged store with salvage=True: keep the valid prefix, put the damaged
    segment aside, and report the versions lost."""
    schema = required_schema(args, "opens the store with salvage=True")
    path = Path(args.path)
    segment_files(path)
    key = read_key(args)

    async def salvage() -> tuple[int, Salvage | None]:
        async with open_store(schema, path=path, key=key, salvage=True) as store:
            recovery = store.recovery
            assert recovery is not None  # a durable store's
            return recovery.version.index, recovery.salvage

    with out.status("salvaging"):
        version, found = trio.run(salvage)
    report: dict[str, Any] = {"path": str(path), "version": version, "salvaged": found is not None}
    if found is not None:
        report.update(
            kept=found.kept.index,
            lost=list(found.lost),
            file=found.file,
            offset=found.offset,
            reason=found.reason,
            copy=found.copy,
        )
    if out.as_json:
        out.result(report)
    elif found is None:
        out.line(f"nothing to salvage: {path} opens as it is, at version {version}")
    else:
        lost = ", ".join(map(str, found.lost)) or "none"
        where = f"{found.file} at offset {found.offset}: " if found.file else ""
        out.line(f"salvaged {path}: damage in {where}{found.reason}")
        out.line(f"kept every version up to {found.kept.index}; lost versions: {lost}")
        if found.copy:
            out.line(f"the damaged segment, as it was, is kept aside as {found.copy}")
    return ExitCode.OK


def _backup_report(info: BackupInfo) -> dict[str, Any]:
    return {
        "file": str(info.file),
        "version": info.version,
        "segments": list(info.segments),
        "size": info.size,
        "lineage": info.lineage,
        "encrypted": info.encrypted,
        "tables": info.tables,
    }


def cmd_backup(args: argparse.Namespace, out: Output) -> int:
    """Copy a store, open or not, into one file."""
    path, target = Path(args.path), Path(args.file)
    files = segment_files(path)
    if target.is_dir():
        raise CommandError(ExitCode.USAGE, f"{target} is a directory: give the backup's file name")
    with out.progress("backing up", sum(f.stat().st_size for f in files)) as advance:
        info = write_backup(path, target, read_key(args), advance)
    if out.as_json:
        out.result(_backup_report(info))
    else:
        out.line(
            f"backed up {path} at version {info.version} to {target} ({size(info.size)}, "
            f"{count(len(info.segments), 'segment')})"
        )
    return ExitCode.OK


def cmd_restore(args: argparse.Namespace, out: Output) -> int:
    """Make a new store directory of a backup file, checked."""
    source, target = Path(args.file), Path(args.dir)
    if not source.is_file():
        raise CommandError(ExitCode.NOT_FOUND, f"{source} is not a file")
    try:
        with out.progress("restoring", source.stat().st_size) as advance:
            info = restore_backup(source, target, read_key(args), advance)
    except RestoreTargetExists as exc:
        raise CommandError(ExitCode.USAGE, str(exc)) from None
    if out.as_json:
        out.result({**_backup_report(info), "path": str(target)})
    else:
        out.line(f"restored {target} at version {info.version} from {source}")
        out.table(Grid("Tables", ["table", "rows"], list(info.tables.items())))
    return ExitCode.OK


def cmd_load(args: argparse.Namespace, out: Output) -> int:
    """Make a new store of the JSON lines ``dump`` prints, read from stdin."""
    schema = required_schema(args, "decodes and checks every object")
    path = Path(args.path)
    objects, version = read_objects(schema, sys.stdin)
    try:
        seed_store(path, schema, version, objects, key=read_key(args))
    except StoreExists as exc:
        raise CommandError(ExitCode.USAGE, str(exc)) from None
    tables = {name: len(objs) for name, objs in objects.items()}
    if out.as_json:
        out.result({"path": str(path), "version": version, "tables": tables})
    else:
        total = sum(tables.values())
        out.line(f"loaded {count(total, 'object')} into {path} at version {version}")
    return ExitCode.OK


def read_objects(schema: Schema, lines: Iterable[str]) -> tuple[dict[str, list[Any]], int]:
    """The objects of ``dump``'s lines (``{"table", "object"}``), decoded through their
    classes and loaded into a fresh state (which checks ids and unique indexes), and the
    version to load them at (the newest any carries). CommandError (exit 1) names the line
    of the first that does not fit; nothing is written then."""
    tables = {t.name: t for t in schema.tables}
    decoders = {name: decoder_for(t.cls) for name, t in tables.items()}
    state = StoreState(schema)
    objects: dict[str, list[Any]] = {name: [] for name in tables}
    version = 0
    number = 0
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            if not isinstance(line, dict) or set(line) != {"table", "object"}:
                raise ValueError('a line is {"table": NAME, "object": {...}}, as dump prints')
            name = line["table"]
            if name not in tables:
                raise ValueError(f"no table {name!r} in the schema ({', '.join(tables)})")
            obj = decoders[name](line["object"])
            stamp = obj.meta.version
            if stamp is None or stamp.index < 1:
                raise ValueError("the object's meta carries no version (dump's meta does)")
            if obj.id in state.by_name[name].rows:
                raise ValueError(f"{name} {obj.id!r} is twice in the input")
            state.by_name[name].write(obj.id, None, obj)
        except (ValueError, TypeError, KeyError, DecodeError, StoreError, RecursionError) as exc:
            raise CommandError(
                ExitCode.FAILED,
                f"stdin line {number}: {exc}; nothing was loaded",
                line=number,
            ) from None
        objects[name].append(obj)
        version = max(version, stamp.index)
    return objects, version
