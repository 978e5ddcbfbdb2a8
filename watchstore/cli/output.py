"""What the ``watchstore`` command prints and how it ends: exit codes, the ``--json``
envelope, tables for people (drawn by rich when the ``cli`` extra is installed, as plain
aligned text otherwise), and progress on stderr.

Every command's ``--json`` output is one object::

    {"ok": true, "exit_code": 0, "result": ...}
    {"ok": false, "exit_code": N, "error": {"message": "...", ...details}}

(``verify`` that finds damage gives both: its ``result`` and an ``error``.)
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import json
from typing import TYPE_CHECKING, Any, Final, TextIO

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence


class ExitCode(enum.IntEnum):
    """What the ``watchstore`` command's exit status means."""

    OK = 0
    FAILED = 1
    """Verification failed, the log is corrupt, or load's input is invalid."""
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


EXTRA: Final = "pip install 'watchstore[cli]'"
"""How to install what the command's tables, progress bars and completion need."""


def have_rich() -> bool:
    """Whether rich (the ``cli`` extra) can be imported."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


@attrs.frozen
class Grid:
    """A table for people: a title, column names and rows (``fields``: name/value pairs
    without a header), and a caption below it."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str | None = None
    fields: bool = False


_LEFT: Final = frozenset({"table", "file", "status", ""})


class Output:
    """Where a command writes: results on ``stdout``, progress and messages on ``stderr``."""

    def __init__(self, stdout: TextIO, stderr: TextIO, as_json: bool) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.as_json = as_json
        self.rich = have_rich()
        self._consoles: dict[str, Any] = {}

    def _console(self, which: str) -> Any:
        if which not in self._consoles:
            from rich.console import Console

            class Quiet(Console):
                """rich's console, leaving a broken pipe to ``main`` (rich itself would
                exit with 1)."""

                def on_broken_pipe(self) -> None:
                    raise BrokenPipeError

            file = self.stdout if which == "out" else self.stderr
            self._consoles[which] = Quiet(file=file, emoji=False, markup=False)
        return self._consoles[which]

    @property
    def live(self) -> bool:
        """Whether progress is shown: rich is there, stderr is a terminal, no --json."""
        return self.rich and not self.as_json and self.stderr.isatty()

    def write(self, text: str) -> None:
        """Write ``text`` as it is to stdout."""
        self.stdout.write(text)

    def line(self, text: str) -> None:
        """Print a line to stdout."""
        if self.rich:
            self._console("out").print(text, soft_wrap=True)
        else:
            self.stdout.write(text + "\n")

    def error(self, text: str) -> None:
        """Print a line to stderr."""
        if self.rich:
            self._console("err").print(text, soft_wrap=True)
        else:
            self.stderr.write(text + "\n")

    def table(self, grid: Grid) -> None:
        """Print ``grid`` to stdout."""
        if self.rich:
            self._console("out").print(_rich_table(grid))
        else:
            self.stdout.write(plain_table(grid))

    def result(self, result: Any, code: ExitCode = ExitCode.OK, **error: Any) -> None:
        """Print the --json envelope of a command that ran (``error``: why it failed)."""
        envelope: dict[str, Any] = {"ok": code == ExitCode.OK, "exit_code": int(code)}
        envelope["result"] = result
        if error:
            envelope["error"] = error
        self.stdout.write(json.dumps(envelope, indent=2, ensure_ascii=False) + "\n")

    def failure(self, code: ExitCode, message: str, details: dict[str, Any]) -> None:
        """Report a command that failed: the message on stderr, and the envelope with
        --json."""
        self.error(f"watchstore: error: {message}")
        if self.as_json:
            envelope = {
                "ok": False,
                "exit_code": int(code),
                "error": {"message": message, **details},
            }
            self.stdout.write(json.dumps(envelope, indent=2, ensure_ascii=False) + "\n")

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr for the block (only when ``live``); yields the
        function to call with each amount of work done."""
        if not self.live:
            yield _ignore
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
        with Progress(
            *columns, TimeRemainingColumn(), console=self._console("err"), transient=True
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    @contextlib.contextmanager
    def status(self, description: str) -> Iterator[None]:
        """A spinner on stderr for the block (only when ``live``)."""
        if not self.live:
            yield
            return
        with self._console("err").status(description, spinner="dots"):
            yield


def _ignore(_n: int) -> None:
    pass


def _rich_table(grid: Grid) -> Any:
    from rich import box
    from rich.table import Table

    if grid.fields:
        table = Table(title=grid.title, show_header=False, title_justify="left", box=None)
        table.add_column(style="bold")
        table.add_column()
    else:
        table = Table(title=grid.title, title_justify="left", box=box.SIMPLE_HEAD)
        for column in grid.columns:
            table.add_column(column, justify="left" if column in _LEFT else "right")
    for row in grid.rows:
        table.add_row(*(str(v) for v in row))
    if grid.caption:
        table.caption = grid.caption
        table.caption_justify = "left"
    return table


def plain_table(grid: Grid) -> str:
    """``grid`` as aligned plain text (when rich is not installed)."""
    header = [] if grid.fields else [list(grid.columns)]
    cells = header + [[str(v) for v in row] for row in grid.rows]
    width = [
        max((len(r[i]) for r in cells if i < len(r)), default=0)
        for i in range(len(cells[0]) if cells else 0)
    ]
    left = [True, True] if grid.fields else [c in _LEFT for c in grid.columns]
    lines = [grid.title]
    for n, row in enumerate(cells):
        parts = [
            c.ljust(w) if left[i] else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, width, strict=False))
        ]
        lines.append("  " + "   ".join(parts).rstrip())
        if header and n == 0:
            lines.append("  " + "-" * (sum(width) + 3 * (len(width) - 1)))
    if grid.caption:
        lines.append(grid.caption)
    return "\n".join(lines) + "\n\n"


def when(seconds: float) -> str:
    """A local time, to the second."""
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def size(n: int) -> str:
    """A size in bytes for people."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    units = ["KiB", "MiB", "GiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"


def count(n: int, noun: str) -> str:
    """``n noun(s)``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def json_line(data: Any) -> str:
    """``data`` as one compact JSON line (dump, get, watch)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
