"""The ``watchstore`` command: look inside a store directory, check it, dump it, and manage
its epochs and its lock, without the program that wrote it.

A store's files hold JSON, not Python classes, so every command except ``compact`` reads them
generically (``read_epoch``, ``replay``): tables by name, objects as dicts. ``verify --schema``
and ``compact`` import the program's ``Schema`` (``module:ATTR``) to rebuild typed objects and
their indexes, or to open the store.

Exit codes, which scripts may rely on (docs/cli.md):
0 success; 1 verification failed or the log is corrupt; 2 usage error (bad or missing
arguments, a ``--schema`` that does not import); 3 the store is locked by another process;
4 not found (no store at PATH, a version that is not kept, an unknown table); 5 unreadable
(a newer log format, an encrypted store without its key or with a wrong one); 6 any other
store or file error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import functools
import importlib
import json
import os
import runpy
import socket
import sys
import textwrap
import traceback
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from rich import box
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from ..core.errors import (
    LogCorrupt,
    StoreError,
    StoreLocked,
    UnsupportedFormat,
)
from ..core.model import Version
from ..core.schema import Schema
from ..log.epochlog import list_epochs, rollback
from ..log.lock import lock_status, unlock
from ..log.manifest import MANIFEST, check_restored, check_segments, read_manifest, segment_header
from ..log.rawlog import (
    KIND_NAMES,
    Object,
    RawEpoch,
    StoreNotFound,
    UnreadableLog,
    key_sealer,
    read_epoch,
    rebuild,
    replay,
    segment_files,
)
from ..log.records import (
    FLAG_ENCRYPTED,
    HEADER_SIZE,
    HeaderError,
    parse_header,
)
from ..service.store import open_store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence


class ExitCode(enum.IntEnum):
    """What the ``watchstore`` command's exit status means."""

    OK = 0
    FAILED = 1
    """Verification failed, or the log is corrupt."""
    USAGE = 2
    LOCKED = 3
    NOT_FOUND = 4
    UNREADABLE = 5
    ERROR = 6
    INTERRUPTED = 130


class CommandError(Exception):
    """Ends a command with ``code`` and ``message`` (and, with --json, ``details``)."""

    def __init__(self, code: ExitCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


# -- the commands ----------------------------------------------------------------------------


@attrs.frozen
class Output:
    """Where a command writes: ``out`` for results, ``err`` for progress and messages."""

    out: Console
    err: Console
    as_json: bool

    def progress(self) -> Progress:
        """A progress bar on stderr, off with --json or when stderr is not a terminal."""
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
            disable=self.as_json or not self.err.is_terminal,
        )

    def emit(self, data: Any) -> None:
        """Print ``data`` as JSON (for --json)."""
        self.out.file.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _when(seconds: float) -> str:
    """A local time, to the second."""
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    units = ["KiB", "MiB", "GiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fields(title: str, rows: Sequence[tuple[str, str]]) -> RichTable:
    table = RichTable(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    return table


def _grid(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> RichTable:
    table = RichTable(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("table", "file", "status") else "right"
        )
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table


def _read_all(path: Path, key: bytes | None, out: Output) -> list[RawEpoch]:
    """Every kept epoch of the store in ``path``; LogCorrupt at the first damage."""
    files = segment_files(path)
    with out.progress() as progress:
        task = progress.add_task("reading", total=sum(f.stat().st_size for f in files))
        advance = functools.partial(progress.advance, task)
        epochs = [read_epoch(f, key, advance) for f in files]
    for epoch in epochs:
        if epoch.damage is not None:
            raise epoch.damage
    return epochs


def _lock_info(path: Path) -> dict[str, Any]:
    """The lock's state (free, held or stale) and holder, with whether the holder lives."""
    if not (path / "LOCK").exists():
        return {"state": "free", "holder": {}, "holder_alive": None}
    status = lock_status(path)
    state = "held" if status.held else "stale" if status.stale else "free"
    holder = {k: v for k, v in status.holder.items() if k != "token"}  # the holder's own
    return {"state": state, "holder": holder, "holder_alive": _alive(holder)}


def _alive(holder: dict[str, Any]) -> bool | None:
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


def _who(holder: dict[str, Any]) -> str:
    """The holder of a lock, as ``LOCK.json`` names it: pid, host and since when."""
    started = holder.get("started_at")
    since = f" since {_when(started)}" if isinstance(started, int | float) else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{since}"


def _holder_text(info: dict[str, Any]) -> str:
    who = _who(info["holder"])
    if info["state"] == "free":
        return "free"
    if info["state"] == "stale":
        return f"stale: {who} is gone, and the system released its lock"
    if info["holder_alive"] is False:
        return f"held, though {who} is gone: a process it started holds the lock until it ends"
    return f"held by {who}"


def _epoch_rows(epochs: list[RawEpoch]) -> list[dict[str, Any]]:
    return [
        {
            "segment": e.header.segment,
            "file": e.file.name,
            "snapshot_version": e.snapshot_version,
            "last_version": e.last_version,
            "changes": len(e.changes),
            "size": e.size,
            "created_at": e.header.created_ns / 1e9,
            "torn_tail": e.torn,
            "current": e is epochs[-1],
            "damage": None
            if e.damage is None
            else {"offset": e.damage.offset, "reason": e.damage.reason},
        }
        for e in epochs
    ]


def cmd_inspect(args: argparse.Namespace, out: Output) -> int:
    """Tables, row counts, version, epochs, segments, sizes and lock holder of a store."""
    path = Path(args.path)
    epochs = _read_all(path, _key(args), out)
    current = epochs[-1]
    state = replay(current)
    lock = _lock_info(path)
    report: dict[str, Any] = {
        "path": str(path),
        "format": current.header.format,
        "lineage": current.header.lineage.hex(),
        "encrypted": bool(current.header.flags & FLAG_ENCRYPTED),
        "version": current.last_version,
        "tables": {name: len(rows) for name, rows in state.items()},
        "epochs": _epoch_rows(epochs),
        "size": sum(e.size for e in epochs),
        "lock": lock,
    }
    if out.as_json:
        out.emit(report)
        return ExitCode.OK
    fields = [
        ("store", str(path)),
        ("version", str(current.last_version)),
        ("format", f"{current.header.format} (lineage {current.header.lineage.hex()})"),
        ("encrypted", "yes" if report["encrypted"] else "no"),
        ("size", f"{_size(report['size'])} in {_count(len(epochs), 'segment')}"),
        ("lock", _holder_text(lock)),
    ]
    if current.torn:
        fields.append(("torn tail", f"{current.torn} B (truncated on the next open)"))
    out.out.print(_fields("Store", fields))
    out.out.print(_grid("Tables", ["table", "rows"], list(report["tables"].items())))
    out.out.print(_epochs_grid(report["epochs"]))
    return ExitCode.OK


def _epochs_grid(rows: list[dict[str, Any]]) -> RichTable:
    table = _grid(
        "Epochs (kept snapshots; * is the current one)",
        ["segment", "snapshot", "last version", "changes", "size", "created"],
        [
            (
                f"{r['segment']}{' *' if r['current'] else ''}",
                r["snapshot_version"],
                r["last_version"],
                r["changes"],
                _size(r["size"]),
                _when(r["created_at"]),
            )
            for r in rows
        ],
    )
    damaged = [r for r in rows if r["damage"]]
    if damaged:
        table.caption = "; ".join(
            f"segment {r['segment']} damaged at offset {r['damage']['offset']} after version "
            f"{r['last_version']}: {r['damage']['reason']}"
            for r in damaged
        )
        table.caption_justify = "left"
    return table


def cmd_snapshots(args: argparse.Namespace, out: Output) -> int:
    """The kept epochs: each segment's snapshot version and time, and its last version.

    Lenient, as it is where to look for a rollback target once ``verify`` has failed: a
    segment damaged after its snapshot is listed up to the damage, which is shown."""
    key = _key(args)
    epochs = [read_epoch(f, key) for f in segment_files(Path(args.path))]
    rows = _epoch_rows(epochs)
    if out.as_json:
        out.emit(rows)
    else:
        out.out.print(_epochs_grid(rows))
    return ExitCode.OK


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    """Check every record of every kept segment; with --schema, rebuild every index."""
    path = Path(args.path)
    key = _key(args)
    schema = load_schema(args.schema) if args.schema else None
    files = segment_files(path)
    total = sum(f.stat().st_size for f in files)
    results: list[dict[str, Any]] = []
    with out.progress() as progress:
        task = progress.add_task("verifying", total=total * (2 if schema else 1))
        for file in files:
            lineage = next((r["lineage"] for r in results if "lineage" in r), None)
            advance = functools.partial(progress.advance, task)
            results.append(_verify_segment(file, key, schema, lineage, advance))
    manifest = _verify_manifest(path, files, results)
    problems = [r for r in [*results, manifest] if r["problem"]]
    report = {
        "ok": not problems,
        "path": str(path),
        "segments": results,
        "manifest": manifest,
        "records": sum(r["records"] for r in results),
        "indexes_rebuilt": schema is not None,
    }
    if out.as_json:
        out.emit(report)
    else:
        _print_verify(report, out)
    for r in problems:
        p = r["problem"]
        after = f" (after version {p['version']})" if p["version"] is not None else ""
        out.err.print(
            f"watchstore: verify failed: {r['path']} at offset {p['offset']}{after}: {p['reason']}",
            soft_wrap=True,
        )
    return ExitCode.OK if not problems else ExitCode.FAILED


def _verify_segment(
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


def _verify_manifest(
    path: Path, files: list[Path], results: list[dict[str, Any]]
) -> dict[str, Any]:
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
            size = newest["size"] - newest.get("torn_tail", 0)
            check_restored(
                files[-1],
                manifest,
                int(files[-1].stem),
                newest["last_version"],
                size,
                newest["records"] - 1,
            )
    except LogCorrupt as exc:
        result["path"] = exc.file  # the file at fault: a segment, or the manifest itself
        result["problem"] = {"offset": exc.offset, "reason": exc.reason, "version": None}
    return result


def _print_verify(report: dict[str, Any], out: Output) -> None:
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
    out.out.print(_grid("Segments", ["file", "records", "versions", "objects", "status"], rows))
    if report["indexes_rebuilt"]:
        objects = sum(r.get("objects", 0) for r in report["segments"])
        note = f"indexes rebuilt ({objects} objects decoded and indexed)"
    else:
        note = "indexes not rebuilt: no --schema given"
    verdict = "ok" if report["ok"] else "FAILED"
    segments = _count(len(report["segments"]), "segment")
    checked = f"{_count(report['records'], 'record')} in {segments} checked"
    out.out.print(f"{verdict}: {checked}; {note}")


def cmd_dump(args: argparse.Namespace, out: Output) -> int:
    """JSON lines: the objects of the current state, or the changes after --from."""
    epochs = _read_all(Path(args.path), _key(args), out)
    write = out.out.file.write
    if args.start is None:
        state = replay(epochs[-1])
        if args.table is not None and args.table not in state:
            raise _unknown_table(args.table, state)
        for name, rows in state.items():
            if args.table in (None, name):
                for id in sorted(rows):
                    write(_line({"table": name, "object": rows[id]}))
        return ExitCode.OK
    tables = {name for e in epochs for name in e.tables}
    if args.table is not None and args.table not in tables:
        raise _unknown_table(args.table, dict.fromkeys(tables))
    for version, kind, name, obj in changes_after(epochs, args.start):
        if args.table in (None, name):
            write(
                _line({"version": version, "kind": KIND_NAMES[kind], "table": name, "object": obj})
            )
    return ExitCode.OK


def _line(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"


def _unknown_table(name: str, tables: dict[str, Any]) -> CommandError:
    return CommandError(
        ExitCode.NOT_FOUND, f"no table {name!r} in the store; its tables are {', '.join(tables)}"
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


def cmd_compact(args: argparse.Namespace, out: Output) -> int:
    """Open the store with its schema and write its state as a new epoch."""
    if not args.schema:
        raise CommandError(
            ExitCode.USAGE,
            "compact opens the store, which needs its schema: pass --schema module:ATTR "
            "(e.g. --schema myapp.models:SCHEMA)",
        )
    path = Path(args.path)
    segment_files(path)
    schema = load_schema(args.schema)
    key = _key(args)

    async def compact() -> tuple[int, int]:
        async with open_store(
            schema, path=path, keep_epochs=args.keep, key=key, compact_in_child=False
        ) as store:
            repaired = store.recovery.repaired_tail if store.recovery else 0
            return (await store.compact()).index, repaired

    with out.err.status("compacting", spinner="dots") if _live(out) else nullcontext():
        version, repaired = trio.run(compact)
    rows = _epoch_rows(_read_all(path, key, out))
    if out.as_json:
        out.emit({"version": version, "repaired_tail": repaired, "epochs": rows})
        return ExitCode.OK
    out.out.print(f"compacted {path} at version {version}")
    if repaired:
        out.out.print(f"(a torn tail of {repaired} B was truncated first)")
    out.out.print(_epochs_grid(rows))
    return ExitCode.OK


def _live(out: Output) -> bool:
    return not out.as_json and out.err.is_terminal


def cmd_rollback(args: argparse.Namespace, out: Output) -> int:
    """Make a kept snapshot the store's state (the store must not be open)."""
    path = Path(args.path)
    newest = segment_files(path)[-1]
    key = _key(args)
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
    report = {"version": args.to, "segment": epoch.segment, "file": epoch.file.name}
    if out.as_json:
        out.emit(report)
    else:
        out.out.print(
            f"rolled back {path} to version {args.to}: new segment {epoch.file.name}; the "
            "newer segments stay until compaction retires them",
        )
    return ExitCode.OK


def cmd_unlock(args: argparse.Namespace, out: Output) -> int:
    """Clear a stale lock; a lock held by a live process only with --force."""
    path = Path(args.path)
    if not path.is_dir():
        raise CommandError(ExitCode.NOT_FOUND, f"{path} is not a directory")
    info = _lock_info(path)
    if info["state"] == "held" and not args.force:
        raise CommandError(
            ExitCode.LOCKED,
            f"{path} is locked: {_holder_text(info)}. Close the store in that process. "
            "Only if it is stuck for good (e.g. its host is gone) run `watchstore unlock "
            "PATH --force`: if the old holder resumes, it and the next opener both write, "
            "which corrupts the store",
            lock=info,
        )
    if info["state"] != "free":
        unlock(path, force=args.force)
    who = _who(info["holder"])
    message = {
        "free": "not locked: nothing to do",
        "stale": f"cleared a stale lock: {who} is gone",
        "held": f"removed the lock held by {who}",
    }[info["state"]]
    if out.as_json:
        out.emit({"cleared": info["state"] != "free", "lock": info})
    else:
        out.out.print(message)
    return ExitCode.OK


def locate_demo(package: Path) -> Path | None:
    """The demo script: ``examples/scheduler.py`` inside the installed package (wheels carry
    it there), else in the source tree the package is imported from."""
    for candidate in (package / "examples", package.parent / "examples"):
        script = candidate / "scheduler.py"
        if script.is_file() and (candidate.parent == package or _is_source_tree(package.parent)):
            return script
    return None


def _is_source_tree(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "watchstore").is_dir()


def run_script(script: Path, argv: list[str]) -> int:
    """Run ``script`` as ``python script argv...`` would, in this process; its exit code."""
    saved = sys.argv, sys.path[:]
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return ExitCode.FAILED
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
    return ExitCode.OK


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    """Run the scheduler demo on a durable store."""
    script = locate_demo(Path(__file__).parent.parent)  # the package: examples/ is beside it
    if script is None:
        raise CommandError(
            ExitCode.NOT_FOUND,
            "the demo (examples/scheduler.py) is not installed with this watchstore; run it "
            "from a source checkout (`make demo`) or install watchstore from a wheel",
        )
    return run_script(script, [] if args.demo_path is None else ["--path", args.demo_path])


# -- arguments -------------------------------------------------------------------------------


def load_schema(spec: str) -> Schema:
    """Import ``module:ATTR`` (ATTR may be dotted) and check that it is a Schema."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(
            ExitCode.USAGE, f"--schema takes module:ATTR (e.g. myapp.models:SCHEMA), not {spec!r}"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the program's own modules
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except ImportError as exc:
        raise CommandError(
            ExitCode.USAGE,
            f"--schema {spec}: cannot import {module_name!r} ({exc}); run from the directory "
            "that holds it or set PYTHONPATH",
        ) from None
    except AttributeError:
        raise CommandError(
            ExitCode.USAGE, f"--schema {spec}: {module_name} has no attribute {attribute!r}"
        ) from None
    if not isinstance(value, Schema):
        raise CommandError(
            ExitCode.USAGE, f"--schema {spec} is a {type(value).__name__}, not a watchstore.Schema"
        )
    return value


def _key(args: argparse.Namespace) -> bytes | None:
    """The encryption key from --key-file: raw 16/24/32 bytes, or those bytes in hex."""
    if getattr(args, "key_file", None) is None:
        return None
    try:
        raw = Path(args.key_file).read_bytes()
    except OSError as exc:
        raise CommandError(ExitCode.USAGE, f"--key-file: {exc}") from None
    if len(raw) in (16, 24, 32):
        return raw
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) not in (16, 24, 32):
        raise CommandError(
            ExitCode.USAGE,
            f"--key-file {args.key_file}: a key is 16, 24 or 32 bytes, raw or in hex",
        )
    return key


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a positive integer, not {text!r}")
    return int(text)


def _version_arg(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a version is a non-negative integer, not {text!r}")
    return int(text)


EXIT_CODES: Final = """exit codes:
  0  success
  1  verification failed, or the log is corrupt (the message names file and offset)
  2  usage error (bad or missing arguments, a --schema that does not import)
  3  the store is locked by another process
  4  not found: no store at PATH, a version that is not kept, an unknown table
  5  unreadable: a newer log format, an encrypted store without its key or a wrong key
  6  any other store or file error
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``watchstore`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="watchstore",
        description="Look inside a watchstore store directory, check it, dump it, and "
        "manage its epochs and lock.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for machines")
    keyed = argparse.ArgumentParser(add_help=False)
    keyed.add_argument(
        "--key-file", metavar="FILE", help="the key of an encrypted store (raw bytes or hex)"
    )
    schema_help = "the program's schema, as module:ATTR (e.g. myapp.models:SCHEMA)"

    def command(
        name: str,
        handler: Callable[..., int],
        help: str,
        parents: list[Any],
        *,
        store_path: bool = True,
    ) -> argparse.ArgumentParser:
        """A subcommand; ``store_path``: its first argument is the store directory."""
        sub = commands.add_parser(
            name,
            help=help,
            description=textwrap.fill(help, 88),
            epilog=EXIT_CODES,
            parents=parents,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        if store_path:
            sub.add_argument("path", metavar="PATH", help="the store directory")
        return sub

    sub = command(
        "inspect",
        cmd_inspect,
        "Show tables, row counts, version, epochs, segments, sizes and lock holder.",
        [as_json, keyed],
    )
    sub = command(
        "verify",
        cmd_verify,
        "Check every record of every kept segment (framing, checksums, JSON, version order, "
        "object ids); with --schema, also decode every object and rebuild every index.",
        [as_json, keyed],
    )
    sub.add_argument("--schema", metavar="MODULE:ATTR", help=schema_help)
    sub = command(
        "dump",
        cmd_dump,
        "Print the current objects as JSON lines ({table, object}), or with --from the "
        "changes after a version ({version, kind, table, object}).",
        [as_json, keyed],
    )
    sub.add_argument("--table", metavar="NAME", help="only this table")
    sub.add_argument(
        "--from", dest="start", metavar="VERSION", type=_version_arg, help="changes after VERSION"
    )
    sub = command(
        "compact",
        cmd_compact,
        "Write the current state as a new epoch and retire old segments (opens the store: "
        "needs --schema, and the store must not be open elsewhere).",
        [as_json, keyed],
    )
    sub.add_argument("--schema", metavar="MODULE:ATTR", help=schema_help + " (required)")
    sub.add_argument("--keep", type=_positive, default=2, metavar="N", help="epochs to keep (2)")
    sub = command(
        "snapshots",
        cmd_snapshots,
        "List the kept epochs: snapshot versions and times, last versions, sizes.",
        [as_json, keyed],
    )
    sub = command(
        "rollback",
        cmd_rollback,
        "Make a kept snapshot the store's state (writes a new segment; deletes nothing).",
        [as_json, keyed],
    )
    sub.add_argument(
        "--to", required=True, type=_version_arg, metavar="VERSION", help="a kept snapshot"
    )
    sub = command(
        "unlock",
        cmd_unlock,
        "Clear the lock of a holder that died; with --force, also the lock of a live one.",
        [as_json],
    )
    sub.add_argument(
        "--force", action="store_true", help="remove a lock that a running process holds"
    )
    sub = command(
        "demo",
        cmd_demo,
        "Run the scheduler demo (examples/scheduler.py) on a durable store.",
        [],
        store_path=False,
    )
    sub.add_argument("--path", dest="demo_path", metavar="DIR", help="the demo's store directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``watchstore`` command with ``argv`` (default: ``sys.argv[1:]``); return its
    exit code (see ``ExitCode``)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse reported
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    as_json = bool(getattr(args, "json", False))
    consoles = [Console(file=f, emoji=False, markup=False) for f in (sys.stdout, sys.stderr)]
    out = Output(consoles[0], consoles[1], as_json)
    try:
        code: int = args.handler(args, out)
        return code
    except CommandError as exc:
        return _fail(out, exc.code, exc.message, exc.details)
    except StoreNotFound as exc:
        return _fail(out, ExitCode.NOT_FOUND, str(exc), {})
    except UnreadableLog as exc:
        return _fail(out, ExitCode.UNREADABLE, str(exc), {})
    except LogCorrupt as exc:
        return _fail(
            out,
            ExitCode.FAILED,
            f"log corrupt in {exc.file} at offset {exc.offset}: {exc.reason}; `watchstore "
            "verify PATH` lists every damage, and a program can open the store with "
            "salvage=True to keep the valid prefix",
            {"file": exc.file, "offset": exc.offset, "reason": exc.reason},
        )
    except StoreLocked as exc:
        holder = exc.holder
        info = {"state": "held", "holder": holder, "holder_alive": _alive(holder)}
        return _fail(
            out,
            ExitCode.LOCKED,
            f"{exc.path} is {_holder_text(info)}: close the store in that process first "
            "(see `watchstore unlock --help`)",
            {"lock": info},
        )
    except UnsupportedFormat as exc:
        return _fail(out, ExitCode.UNREADABLE, str(exc), {})
    except (StoreError, OSError) as exc:
        return _fail(out, ExitCode.ERROR, str(exc), {})
    except KeyboardInterrupt:
        return _fail(out, ExitCode.INTERRUPTED, "interrupted", {})
    except Exception as exc:  # a bug: exit 6 rather than Python's 1, which means "corrupt"
        traceback.print_exc()
        return _fail(out, ExitCode.ERROR, f"internal error: {exc!r}; please report it", {})


def _fail(out: Output, code: ExitCode, message: str, details: dict[str, Any]) -> int:
    out.err.print(f"watchstore: error: {message}", soft_wrap=True)
    if out.as_json:
        out.emit({"ok": False, "exit_code": int(code), "error": message, **details})
    return code
