"""The ``watchstore`` command: look inside a store (a directory, or a prefix on etcd), check
it, dump it, follow it, load, back up and restore it, and manage its epochs and its lock,
without the program that wrote it.

The commands live in ``reading`` (inspect, verify, snapshots, dump, get), ``following``
(watch) and ``maintaining`` (compact, rollback, unlock, salvage, backup, restore, load);
this module parses the arguments, runs one, and turns what went wrong into an exit code.

Exit codes, which scripts may rely on (docs/cli.md):
0 success; 1 verification failed, the log or a backup is corrupt, or load's input is
invalid; 2 usage error (bad or missing arguments, a ``--schema`` that does not import);
3 the store is locked by another process; 4 not found (no store at PATH, a version that is
not kept, an unknown table or object); 5 unreadable (a newer log format, an encrypted store
without its key or with a wrong one); 6 any other store, etcd or file error; 130
interrupted. A reader of stdout that goes away (``watchstore dump s | head -1``) ends the
command quietly, with 0.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import runpy
import sys
import textwrap
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from ..core.errors import (
    EtcdError,
    HistoryCompacted,
    LogCorrupt,
    StoreError,
    StoreLocked,
    UnsupportedFormat,
)
from ..log.backup import BackupCorrupt
from ..log.rawlog import StoreNotFound, UnreadableLog
from .arguments import positive, seconds, version
from .following import cmd_watch
from .maintaining import (
    cmd_backup,
    cmd_compact,
    cmd_load,
    cmd_restore,
    cmd_rollback,
    cmd_salvage,
    cmd_unlock,
)
from .output import EXTRA, CommandError, ExitCode, Output
from .reading import alive, cmd_dump, cmd_get, cmd_inspect, cmd_snapshots, cmd_verify, holder_text

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["ExitCode", "build_parser", "locate_demo", "main", "run_script"]


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


def cmd_completion(args: argparse.Namespace, out: Output) -> int:
    """Print the shell completion script (shtab writes it from the parser)."""
    try:
        import shtab
    except ImportError:
        raise CommandError(
            ExitCode.ERROR, f"completion needs shtab, in the cli extra: {EXTRA}"
        ) from None
    out.write(shtab.complete(build_parser(), shell=args.shell))
    return ExitCode.OK


EXIT_CODES: Final = """exit codes:
  0    success (also when the reader of stdout goes away, as `| head` does)
  1    verification failed, the log or a backup is corrupt (the message names file and
       offset), or load's input is invalid (the message names the line)
  2    usage error (bad or missing arguments, a --schema that does not import)
  3    the store is locked by another process
  4    not found: no store at PATH, a version that is not kept, an unknown table or object
  5    unreadable: a newer log format, an encrypted store without its key or a wrong key
  6    any other store, etcd or file error
  130  interrupted
"""


def _version() -> str:
    from .. import __version__

    return f"watchstore {__version__}"


class _UsageError(Exception):
    """Arguments argparse refused: its message, and the usage of the (sub)command."""

    def __init__(self, message: str, usage: str, prog: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse's parser, raising its usage errors to ``main`` (which reports them as
    argparse does, and with --json in the envelope too) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message, self.format_usage(), self.prog)


def _completes(action: argparse.Action, kind: str) -> None:
    """Tell shtab (if installed) that ``action`` completes to a ``kind``: "FILE" or
    "DIRECTORY" (what the generated completion offers for it)."""
    try:
        import shtab
    except ImportError:
        return
    action.complete = getattr(shtab, kind)  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``watchstore`` command and its subcommands."""
    parser = _Parser(
        prog="watchstore",
        description="Look inside a watchstore store (a directory, or a prefix on etcd), check "
        "it, dump it, follow it, load, back up and restore it, and manage its epochs and lock.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for machines")
    keyed = argparse.ArgumentParser(add_help=False)
    _completes(
        keyed.add_argument(
            "--key-file", metavar="FILE", help="the key of an encrypted store (raw bytes or hex)"
        ),
        "FILE",
    )
    etcd = argparse.ArgumentParser(add_help=False)
    etcd.add_argument("--etcd", metavar="URL", help="read the store on etcd at URL instead of PATH")
    etcd.add_argument("--prefix", metavar="P", help="the store's key prefix on etcd")
    schema_help = "the program's schema, as module:ATTR (e.g. myapp.models:SCHEMA)"

    def command(
        name: str,
        handler: Callable[..., int],
        help: str,
        parents: list[Any],
        *,
        path: str | None = "the store directory",
    ) -> argparse.ArgumentParser:
        """A subcommand; ``path``: the help of its first argument, the store directory
        (optional where --etcd can take its place)."""
        sub = commands.add_parser(
            name,
            help=help,
            description=textwrap.fill(help, 88),
            epilog=EXIT_CODES,
            parents=parents,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        if path is not None:
            on_etcd = etcd in parents
            argument = sub.add_argument(
                "path",
                metavar="PATH",
                nargs="?" if on_etcd else None,
                help=path + (" (or --etcd URL --prefix P)" if on_etcd else ""),
            )
            _completes(argument, "DIRECTORY")
        return sub

    command(
        "inspect",
        cmd_inspect,
        "Show tables, row counts, version, epochs, segments, sizes and lock holder.",
        [as_json, keyed, etcd],
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
        [as_json, keyed, etcd],
    )
    sub.add_argument("--table", metavar="NAME", help="only this table")
    sub.add_argument(
        "--from", dest="start", metavar="VERSION", type=version, help="changes after VERSION"
    )
    sub = command(
        "get",
        cmd_get,
        "Print one object, by table and id, as JSON.",
        [as_json, keyed, etcd],
    )
    sub.add_argument("table", metavar="TABLE", help="the table's name (its class's)")
    sub.add_argument("id", metavar="ID", help="the object's id")
    sub = command(
        "watch",
        cmd_watch,
        "Follow the store's changes from now on, as JSON lines ({version, kind, table, "
        "object}); a local store is followed read-only while its program writes it.",
        [as_json, keyed, etcd],
    )
    sub.add_argument("--table", metavar="NAME", help="only this table")
    sub.add_argument("--count", type=positive, metavar="N", help="end after N commits")
    sub.add_argument(
        "--interval",
        type=seconds,
        default=0.2,
        metavar="SECONDS",
        help="how often a local store's log is read (0.2)",
    )
    sub = command(
        "compact",
        cmd_compact,
        "Write the current state as a new epoch and retire old segments (opens the store: "
        "needs --schema, and the store must not be open elsewhere).",
        [as_json, keyed],
    )
    sub.add_argument("--schema", metavar="MODULE:ATTR", help=schema_help + " (required)")
    sub.add_argument("--keep", type=positive, default=2, metavar="N", help="epochs to keep (2)")
    command(
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
    sub.add_argument("--to", required=True, type=version, metavar="VERSION", help="a kept snapshot")
    sub = command(
        "salvage",
        cmd_salvage,
        "Open a damaged store keeping its valid prefix (salvage=True): report the versions "
        "lost, and keep the damaged segment aside (needs --schema; the store must not be open).",
        [as_json, keyed],
    )
    sub.add_argument("--schema", metavar="MODULE:ATTR", help=schema_help + " (required)")
    sub = command(
        "backup",
        cmd_backup,
        "Copy the store, with its kept history, into one file: a consistent copy, also of a "
        "store another process has open and writes.",
        [as_json, keyed],
    )
    _completes(
        sub.add_argument("file", metavar="FILE", help="the backup file to write (replaced)"),
        "FILE",
    )
    sub = command(
        "restore",
        cmd_restore,
        "Make a new store directory of a backup file, checking every record.",
        [as_json, keyed],
        path=None,
    )
    _completes(sub.add_argument("file", metavar="FILE", help="the backup file"), "FILE")
    _completes(
        sub.add_argument("dir", metavar="DIR", help="the new store directory (must not exist)"),
        "DIRECTORY",
    )
    sub = command(
        "load",
        cmd_load,
        "Make a new store of the JSON lines `dump` prints, read from stdin: every object "
        "decoded through the schema and checked (meta kept); all or nothing.",
        [as_json, keyed],
        path="the new store directory (absent or empty)",
    )
    sub.add_argument("--schema", metavar="MODULE:ATTR", help=schema_help + " (required)")
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
        "completion",
        cmd_completion,
        'Print a shell completion script: eval "$(watchstore completion bash)", or save '
        "it where the shell loads completions from.",
        [],
        path=None,
    )
    sub.add_argument("shell", choices=["bash", "zsh"], help="the shell")
    sub = command(
        "demo",
        cmd_demo,
        "Run the scheduler demo (examples/scheduler.py) on a durable store.",
        [],
        path=None,
    )
    _completes(
        sub.add_argument(
            "--path", dest="demo_path", metavar="DIR", help="the demo's store directory"
        ),
        "DIRECTORY",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``watchstore`` command with ``argv`` (default: ``sys.argv[1:]``); return its
    exit code (see ``ExitCode``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or --version, printed
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    except _UsageError as exc:
        sys.stderr.write(exc.usage)
        command = exc.prog.removeprefix("watchstore").strip()
        message = f"{command}: {exc.message}" if command else exc.message
        sys.stderr.write(f"{exc.prog}: error: {exc.message}\n")
        if "--json" in argv:
            envelope = {"ok": False, "exit_code": 2, "error": {"message": message}}
            sys.stdout.write(json.dumps(envelope, indent=2) + "\n")
        return ExitCode.USAGE
    out = Output(sys.stdout, sys.stderr, bool(getattr(args, "json", False)))
    try:
        code: int = args.handler(args, out)
        out.stdout.flush()
        return code
    except BrokenPipeError:
        return _reader_gone()
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            return _reader_gone()
        return _fail(out, ExitCode.ERROR, str(exc), {})
    except CommandError as exc:
        return _fail(out, exc.code, exc.message, exc.details)
    except StoreNotFound as exc:
        return _fail(out, ExitCode.NOT_FOUND, str(exc), {})
    except UnreadableLog as exc:
        return _fail(out, ExitCode.UNREADABLE, str(exc), {})
    except BackupCorrupt as exc:
        return _fail(
            out,
            ExitCode.FAILED,
            f"backup corrupt: {exc.file} at offset {exc.offset}: {exc.reason}; nothing was "
            "restored (restore another backup)",
            {"file": exc.file, "offset": exc.offset, "reason": exc.reason},
        )
    except LogCorrupt as exc:
        return _fail(
            out,
            ExitCode.FAILED,
            f"log corrupt in {exc.file} at offset {exc.offset}: {exc.reason}; `watchstore "
            "verify PATH` lists every damage, and `watchstore salvage PATH` keeps the valid "
            "prefix",
            {"file": exc.file, "offset": exc.offset, "reason": exc.reason},
        )
    except StoreLocked as exc:
        holder = exc.holder
        info = {"state": "held", "holder": holder, "holder_alive": alive(holder)}
        return _fail(
            out,
            ExitCode.LOCKED,
            f"{exc.path} is {holder_text(info)}: close the store in that process first "
            "(see `watchstore unlock --help`)",
            {"lock": info},
        )
    except UnsupportedFormat as exc:
        return _fail(out, ExitCode.UNREADABLE, str(exc), {})
    except HistoryCompacted as exc:
        return _fail(out, ExitCode.NOT_FOUND, str(exc), {})
    except (StoreError, EtcdError) as exc:
        return _fail(out, ExitCode.ERROR, str(exc), {})
    except KeyboardInterrupt:
        return _fail(out, ExitCode.INTERRUPTED, "interrupted", {})
    except Exception as exc:  # a bug: exit 6 rather than Python's 1, which means "corrupt"
        traceback.print_exc()
        return _fail(out, ExitCode.ERROR, f"internal error: {exc!r}; please report it", {})


def _reader_gone() -> int:
    """The reader of stdout went away (``| head``): end quietly, with success, as the
    output nobody reads any more is not a failure. Python would report the broken pipe
    again when it flushes stdout at exit: stdout is pointed at /dev/null first."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (tests capture it)
        pass
    return ExitCode.OK


def _fail(out: Output, code: ExitCode, message: str, details: dict[str, Any]) -> int:
    try:
        out.failure(code, message, details)
    except BrokenPipeError:
        return _reader_gone()
    return code
