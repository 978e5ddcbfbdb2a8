"""Recording a run's file and descriptor calls with strace, and reading them back.

``record`` runs a command under ``strace -f``, which logs every file and descriptor call of
the process, its threads and its forked children, in the order they happened (one call split
over two lines when another thread's call came in between: ``<unfinished ...>`` and
``<... resumed>``). ``parse_trace`` reads the log back as ``Call`` records, with their
string arguments decoded (``-xx``) and their descriptors named (``-y``). What it cannot read
raises ``TraceError``. Used by the power-loss model (``tests/powerloss.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

STRING_LIMIT: Final = 1 << 22
"""strace's ``-s``: the longest buffer it records whole (a longer write is a ``TraceError``)."""

TRACED: Final = (
    # Calls that may be missing on an architecture carry strace's "?" (no error if unknown).
    *("openat", "?open", "?creat", "close", "?close_range", "?dup", "?dup2", "dup3", "fcntl"),
    *("read", "readv", "lseek", "write", "pwrite64", "writev", "pwritev", "?pwritev2"),
    *("ftruncate", "truncate", "fallocate", "?copy_file_range", "?sendfile", "mmap"),
    *("fsync", "fdatasync", "sync", "syncfs", "sync_file_range"),
    *("?rename", "renameat", "?renameat2", "?unlink", "unlinkat", "?rmdir"),
    *("?mkdir", "mkdirat", "?link", "linkat", "?symlink", "symlinkat"),
    *("clone", "?clone3", "?fork", "?vfork"),
)
"""The system calls ``record`` traces: those that change files, directories, descriptors or
offsets, and those that create threads and processes."""


class TraceError(Exception):
    """The trace holds something this reader (or the model behind it) cannot follow."""


def strace() -> str | None:
    """The path of the strace binary, or None if it is not installed."""
    return shutil.which("strace")


def record(
    argv: Sequence[str],
    trace: Path,
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` (in ``cwd``, with ``env``) under ``strace -f``, logging the calls of
    ``TRACED`` to ``trace``; return the finished process (its stdout and stderr captured).

    Strings are logged in full as hex escapes (``-xx``), descriptors with the file behind
    them (``-y``), reads without their data (``-e raw=read,readv``: only the byte counts
    matter), and signals and exit statuses not at all."""
    binary = strace()
    if binary is None:
        raise FileNotFoundError("strace is not installed")
    command = [
        *(binary, "-f", "-qq", "-y", "-xx", "-s", str(STRING_LIMIT)),
        *("-e", "signal=none", "-e", "raw=read,readv", "-e", "trace=" + ",".join(TRACED)),
        *("-o", str(trace), "--", *argv),
    ]
    return subprocess.run(
        command, env=dict(env), cwd=cwd, capture_output=True, timeout=timeout, check=False
    )


# -- reading the trace -------------------------------------------------------------------------


@attrs.frozen
class Call:
    """One completed system call: ``name(*args) = result``, made by thread ``pid``.

    ``started`` and ``line`` are the trace lines where the call began and completed (the
    same line unless strace split it, ``<unfinished ...>``, because another thread's call
    came in between). ``args`` and ``result`` are strace's text (see ``decode_string``,
    ``descriptor``)."""

    pid: int
    name: str
    args: tuple[str, ...]
    result: str
    started: int
    line: int

    @property
    def ok(self) -> bool:
        """The call succeeded (a result that is neither -1 nor unknown, ``?``)."""
        return not self.result.startswith(("-1", "?"))

    @property
    def value(self) -> int:
        """The call's integer result (a descriptor's number, a byte count)."""
        found = re.match(r"-?(?:0x[0-9a-f]+|\d+)", self.result)
        if found is None:
            raise TraceError(f"line {self.line}: {self.name} has no integer result")
        return int(found[0], 0)


_LINE: Final = re.compile(r"(\d+)\s+(.*)")
_RESUMED: Final = re.compile(r"<\.\.\. \w+ resumed>(.*)")
_UNFINISHED: Final = " <unfinished ...>"


def parse_trace(text: str) -> list[Call]:
    """The calls of an strace log (``-f`` format: each line starts with the thread's id), in
    the order they completed. A split call is joined; a call that never completed (its
    process died in it) had no effect and is left out."""
    calls: list[Call] = []
    pending: dict[int, tuple[int, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        found = _LINE.fullmatch(line)
        if found is None:
            raise TraceError(f"line {number} is not an strace line: {line[:200]!r}")
        pid, body = int(found[1]), found[2]
        if body.startswith(("+++", "---")):
            continue
        started = number
        resumed = _RESUMED.match(body)
        if resumed is not None:
            if pid not in pending:
                raise TraceError(f"line {number}: a call of {pid} resumed that never started")
            started, head = pending.pop(pid)
            body = head + resumed[1]
        if body.endswith(_UNFINISHED):
            pending[pid] = (started, body[: -len(_UNFINISHED)])
            continue
        calls.append(_parse_call(pid, body, started, number))
    return calls


def _parse_call(pid: int, body: str, started: int, line: int) -> Call:
    open_paren = body.find("(")
    args, close_paren = _arguments(body, open_paren)
    equals = body.find("=", close_paren)
    if open_paren <= 0 or close_paren < 0 or equals < 0:
        raise TraceError(f"line {line}: cannot read the call {body[:200]!r}")
    return Call(pid, body[:open_paren], args, body[equals + 1 :].strip(), started, line)


_TOKEN: Final = re.compile(r'"[^"]*"|[()\[\]{},]')
"""A string (with ``-xx`` it holds only hex escapes: no quote, bracket or comma), a bracket
or a comma."""


def _arguments(text: str, start: int) -> tuple[tuple[str, ...], int]:
    """The arguments in the brackets that open at ``start``, split at their top-level
    commas, and the index of the closing bracket (-1 if there is none)."""
    args: list[str] = []
    depth = 0
    begin = start + 1
    for token in _TOKEN.finditer(text, start):
        char = token[0]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                last = text[begin : token.start()].strip()
                return (*args, last) if args or last else (), token.start()
        elif char == "," and depth == 1:
            args.append(text[begin : token.start()].strip())
            begin = token.end()
    return tuple(args), -1


def split_args(text: str) -> tuple[str, ...]:
    """strace's argument list (without its brackets) split at its top-level commas."""
    return _arguments(f"({text})", 0)[0]


def decode_string(arg: str) -> bytes:
    """The bytes of a ``-xx`` string argument (``"\\x68\\x69"``); TraceError if strace cut
    it (a buffer longer than ``STRING_LIMIT``)."""
    end = arg.find('"', 1)
    if not arg.startswith('"') or end < 0 or arg[end + 1 :] not in ("", "..."):
        raise TraceError(f"not a string: {arg[:100]!r}")
    if arg.endswith("..."):
        raise TraceError(f"strace cut a string of {end // 4} bytes: raise STRING_LIMIT")
    hexed = arg[1:end]
    if len(hexed) % 4 or hexed[::4].strip("\\"):
        raise TraceError(f"not a -xx string: {arg[:100]!r}")
    return bytes.fromhex(hexed.replace("\\x", ""))


def decode_iovec(arg: str) -> bytes:
    """The bytes of a ``writev`` array of buffers, joined."""
    return b"".join(decode_string(m[0]) for m in re.finditer(r'"[^"]*"(?:\.\.\.)?', arg))


_DESCRIPTOR: Final = re.compile(r"(-?\d+|0x[0-9a-f]+|AT_FDCWD)(?:<([^>]*)>)?(?:\(deleted\))?")


def descriptor(arg: str) -> tuple[int | None, str | None]:
    """A descriptor argument as (number, the file strace showed for it): ``3</a/b>`` gives
    ``(3, "/a/b")``, ``AT_FDCWD</cwd>`` gives ``(None, "/cwd")``, a raw ``0x3`` gives
    ``(3, None)``. Non-files show as e.g. ``pipe:[1234]``; a file unlinked meanwhile is
    followed by ``(deleted)``."""
    found = _DESCRIPTOR.fullmatch(arg)
    if found is None:
        raise TraceError(f"not a descriptor: {arg[:100]!r}")
    number = None if found[1] == "AT_FDCWD" else int(found[1], 0)
    shown = found[2]
    if shown is not None and "\\x" in shown:
        shown = os.fsdecode(bytes.fromhex(shown.replace("\\x", "")))
    return number, shown


def flags(arg: str) -> set[str]:
    """The names in a flag argument such as ``O_WRONLY|O_CREAT``."""
    return set(arg.split("|"))
