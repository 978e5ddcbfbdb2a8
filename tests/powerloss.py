"""Power-loss states of a traced run, for the power-loss test (``tests/test_power_loss.py``).

The calls of a run come from ``tests/syscalls.py`` (``record`` runs it under ``strace -f``,
``parse_trace`` reads the calls back). ``replay`` runs them through ``FileSystem``, a model
of a file system with a page cache, and stops at every fsync boundary to list the trees a
power cut there could leave on the disk (``CrashState``), ready to be written out as real
directories and opened.

The model's rules (after ALICE, "All File Systems Are Not Created Equal", OSDI 2014):

- A file has current content (the page cache) and durable content (the disk). ``fsync`` or
  ``fdatasync`` makes its current content durable; ``sync`` and ``syncfs`` every file's. The
  content made durable is the one the call started with: a write that completes while the
  fsync runs may not be covered, so the model takes it as not.
- A directory has current and durable entries; an fsync of the directory makes its current
  entries durable. So a created, renamed or unlinked name (a new directory's too) is durable
  only once its parent directory is fsynced.
- A power cut keeps the durable contents. Its directory entries are either the durable ones
  (*strict*: every unsynced directory operation is lost) or the current ones (*directory
  operations persisted*: as a journaling file system that commits metadata in order, ext4,
  can leave them).
- The last write not yet fsynced may have partly reached the disk: any subset of its 512-byte
  sectors (by file offset), with the file possibly grown to the write's end and the missing
  sectors reading as zeros (see ``tears``).

The model follows descriptors through ``open``, ``dup``, ``fcntl``, ``close``, threads and
``fork`` (``clone``), and offsets through ``read``, ``write`` and ``lseek``. strace's ``-y``
names the file behind every descriptor argument; the model checks that name against its own
table, so it notices a descriptor it lost track of. Whatever it cannot follow (a writable
shared mapping, ``copy_file_range`` into a modelled file, a rename across the root) raises
``ModelError`` instead of guessing. Only the tree under one root directory is modelled; the
root must be empty when the run starts.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from typing import TYPE_CHECKING, Final

import attrs

from tests.syscalls import (
    Call,
    TraceError,
    decode_iovec,
    decode_string,
    descriptor,
    flags,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from pathlib import Path

SECTOR: Final = 512
"""The unit in which a write may reach the disk in part (and in any order)."""

STRICT: Final = "strict"
"""The variant of a crash state in which every unsynced directory operation is lost."""

PERSISTED: Final = "directory operations persisted"
"""The variant in which every directory operation before the crash reached the disk."""


ModelError = TraceError
"""The trace holds something the model cannot follow (it refuses to guess)."""


# -- the file system ----------------------------------------------------------------------------


class File:
    """A regular file: its content in the page cache and on the disk."""

    __slots__ = ("current", "digest", "durable")

    def __init__(self) -> None:
        self.current = bytearray()
        self.durable = b""
        self.digest = hashlib.sha256(b"").digest()

    def make_durable(self, content: bytes) -> None:
        """The disk now holds ``content`` (an fsync completed)."""
        self.durable = content
        self.digest = hashlib.sha256(content).digest()

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` in the page cache (a gap before it reads as zeros)."""
        if offset > len(self.current):
            self.current.extend(bytes(offset - len(self.current)))
        self.current[offset : offset + len(data)] = data

    def resize(self, size: int) -> None:
        """Cut the file to ``size`` bytes or extend it with zeros."""
        if size < len(self.current):
            del self.current[size:]
        else:
            self.current.extend(bytes(size - len(self.current)))


class Directory:
    """A directory: its entries in the page cache and on the disk."""

    __slots__ = ("durable", "entries")

    def __init__(self) -> None:
        self.entries: dict[str, Node] = {}
        self.durable: dict[str, Node] = {}


class Symlink:
    """A symbolic link (its target is fixed when it is created)."""

    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        self.target = target


Node = File | Directory | Symlink

Content = bytes | dict[str, Node]
"""A file's content or a directory's entries, as a sync call makes them durable."""


@attrs.define(eq=False)
class Description:
    """An open file description: what descriptors (and ``dup``s, and forked children's
    copies of them) share."""

    node: Node
    offset: int
    append: bool


@attrs.frozen(eq=False)
class Write:
    """A write in the page cache, not yet made durable by an fsync."""

    file: File
    offset: int
    data: bytes
    line: int


# -- crash states ------------------------------------------------------------------------------


@attrs.frozen
class FileImage:
    """A file's bytes in a crash state: ``base`` (the durable content, whose sha256 is
    ``base_digest``) with ``patches`` (offset, bytes) written over it, cut or zero-extended
    to ``size``."""

    base: bytes
    base_digest: bytes
    size: int
    patches: tuple[tuple[int, bytes], ...] = ()

    def data(self) -> bytes:
        """The file's bytes."""
        if not self.patches and self.size == len(self.base):
            return self.base
        out = bytearray(self.base[: self.size])
        out.extend(bytes(self.size - len(out)))
        for offset, patch in self.patches:
            out[offset : offset + len(patch)] = patch
        return bytes(out)

    @property
    def digest(self) -> bytes:
        """Equal for equal descriptions (cheap: the base is not hashed again)."""
        if not self.patches and self.size == len(self.base):
            return self.base_digest
        h = hashlib.sha256(self.base_digest + b"%d" % self.size)
        for offset, patch in self.patches:
            h.update(b"@%d:%d:" % (offset, len(patch)))
            h.update(patch)
        return h.digest()


@attrs.frozen
class DirectoryImage:
    """A directory in a crash state (its entries are the tree's other paths)."""


@attrs.frozen
class LinkImage:
    """A symbolic link in a crash state."""

    target: str


Image = FileImage | DirectoryImage | LinkImage


@attrs.frozen
class CrashState:
    """A tree a power cut could leave under the root: relative path -> image, parents
    first. ``key`` is equal for equal trees."""

    variant: str
    """``STRICT`` or ``PERSISTED``."""
    torn: str
    """Which part of the last unsynced write reached the disk ("" if none of it did)."""
    tree: Mapping[str, Image]
    key: bytes

    def describe(self) -> str:
        """The variant and the torn write, in words."""
        return f"{self.variant}; {self.torn}" if self.torn else self.variant

    def materialise(self, destination: Path) -> None:
        """Write the tree out as a real directory ``destination`` (which must not exist)."""
        destination.mkdir()
        for path, image in self.tree.items():
            target = destination / path
            if isinstance(image, DirectoryImage):
                target.mkdir()
            elif isinstance(image, LinkImage):
                target.symlink_to(image.target)
            else:
                target.write_bytes(image.data())


def tree_key(tree: Mapping[str, Image]) -> bytes:
    """A digest of a tree: equal trees, equal keys."""
    h = hashlib.sha256()
    for path, image in sorted(tree.items()):
        h.update(os.fsencode(path) + b"\0")
        if isinstance(image, FileImage):
            h.update(b"f" + image.digest)
        elif isinstance(image, LinkImage):
            h.update(b"l" + os.fsencode(image.target) + b"\0")
        else:
            h.update(b"d")
    return h.digest()


@attrs.frozen
class Tear:
    """What reached the disk of a torn write: ``sectors`` of it (numbered by file offset)
    as ``patches`` over the durable content, in a file of ``size`` bytes (``grown``: the
    file grew to the write's end, its missing sectors reading as zeros)."""

    sectors: tuple[int, ...]
    grown: bool
    patches: tuple[tuple[int, bytes], ...]
    size: int

    def describe(self, changed: Sequence[int]) -> str:
        """In words, given every sector the write changes (``changed_sectors``)."""
        grown = ", file grown to the write's end" if self.grown else ""
        return f"sectors {_ranges(self.sectors)} of {_ranges(changed)} written{grown}"


def _ranges(numbers: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` as ``1-3,5``; ``none`` if empty."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs) or "none"


def changed_sectors(base: bytes, offset: int, data: bytes) -> list[int]:
    """The sectors (numbered by file offset) in which writing ``data`` at ``offset`` over
    ``base`` changes a byte (past the end of ``base`` the disk reads as zeros)."""
    end = offset + len(data)
    sectors = []
    for sector in range(offset // SECTOR, (end + SECTOR - 1) // SECTOR):
        start, stop = max(sector * SECTOR, offset), min((sector + 1) * SECTOR, end)
        old = base[start:stop]
        old += bytes(stop - start - len(old))
        if data[start - offset : stop - offset] != old:
            sectors.append(sector)
    return sectors


def sector_subsets(count: int, rng: random.Random, randoms: int = 4) -> list[tuple[int, ...]]:
    """Which of ``count`` sectors (indexes) reach the disk: each prefix (in order, the empty
    one included), each suffix, each with one sector missing, and ``randoms`` random subsets
    drawn from ``rng``; no subset twice."""
    every = tuple(range(count))
    subsets = [every[:i] for i in range(count + 1)]
    subsets += [every[i:] for i in range(1, count)]
    subsets += [every[:i] + every[i + 1 :] for i in range(count)]
    subsets += [tuple(i for i in every if rng.random() < 0.5) for _ in range(randoms)]
    return list(dict.fromkeys(subsets))


def tears(base: bytes, offset: int, data: bytes, rng: random.Random) -> list[Tear]:
    """What a power cut can leave of writing ``data`` at ``offset`` over ``base`` (the file's
    durable content): for each subset of the changed sectors (``sector_subsets``), the file
    with those sectors written; and if the write reaches past the end of ``base``, the same
    with the file grown to the write's end. The durable content itself is not listed."""
    end = offset + len(data)
    changed = changed_sectors(base, offset, data)
    out = []
    for subset in sector_subsets(len(changed), rng):
        sectors = tuple(changed[i] for i in subset)
        patches = []
        for sector in sectors:
            start, stop = max(sector * SECTOR, offset), min((sector + 1) * SECTOR, end)
            patches.append((start, data[start - offset : stop - offset]))
        reach = max([len(base), *(start + len(patch) for start, patch in patches)])
        sizes = {reach: False}
        if end > reach:
            sizes[end] = True
        for size, grown in sizes.items():
            if patches or grown:
                out.append(Tear(sectors, grown, tuple(patches), size))
    return out


@attrs.frozen
class CrashPoint:
    """A moment of the run at which the power is cut: the crash ``states`` it can leave
    (without duplicates), and the ``notes`` the run had written before it."""

    line: int
    """The trace line the crash comes after (or, for ``before ...``, before)."""
    label: str
    notes: tuple[str, ...]
    states: tuple[CrashState, ...]


@attrs.frozen
class Clone:
    """How a thread or process came to be: made by thread ``parent``, sharing its descriptor
    table (``CLONE_FILES``) or with a copy of it, a thread of its process or a new one."""

    parent: int
    shares_files: bool
    thread: bool


# -- the model ----------------------------------------------------------------------------------


class FileSystem:
    """The model: the tree under ``root`` (files, directories, their page cache and disk),
    and the descriptor table of every traced process. Feed it ``Call``s in order with
    ``apply`` (and ``start`` for a sync call strace split); ``crash_states`` lists what a
    power cut would leave now. Writes to descriptor ``notes_fd`` outside the model by the
    traced command's own process (any of its threads, not its children) are kept as
    ``notes``: the run's own account of what it did, in the trace's order."""

    def __init__(
        self, root: Path, cwd: Path, clones: Mapping[int, Clone], notes_fd: int = 1
    ) -> None:
        self._root_path = str(root.resolve())
        self._cwd = str(cwd.resolve())
        self.root = Directory()
        self._nodes: list[File | Directory] = [self.root]
        self._clones = clones
        self._tables: dict[int, dict[int, Description]] = {}
        self._command: int | None = None  # the traced command's process id
        self._notes_fd = notes_fd
        self.notes: list[str] = []
        self._unsynced: dict[File, Write] = {}
        # What each split sync call under way will make durable, by (thread, start line).
        self._syncing: dict[tuple[int, int], list[tuple[File | Directory, Content]]] = {}
        self._handlers: dict[str, Callable[[Call], None]] = {
            **dict.fromkeys(("open", "openat", "creat"), self._open),
            **dict.fromkeys(("write", "writev", "pwrite64", "pwritev", "pwritev2"), self._write),
            **dict.fromkeys(("read", "readv"), self._read),
            **dict.fromkeys(("fsync", "fdatasync", "sync", "syncfs"), self._sync),
            **dict.fromkeys(("rename", "renameat", "renameat2"), self._rename),
            **dict.fromkeys(("unlink", "unlinkat", "rmdir"), self._unlink),
            **dict.fromkeys(("mkdir", "mkdirat"), self._mkdir),
            **dict.fromkeys(("link", "linkat"), self._link),
            **dict.fromkeys(("symlink", "symlinkat"), self._symlink),
            **dict.fromkeys(("dup", "dup2", "dup3"), self._dup),
            **dict.fromkeys(("clone", "clone3", "fork", "vfork"), self._clone),
            **dict.fromkeys(("copy_file_range", "sendfile"), self._copy),
            "lseek": self._lseek,
            "ftruncate": self._truncate,
            "truncate": self._truncate,
            "fallocate": self._fallocate,
            "fcntl": self._fcntl,
            "close": self._close,
            "close_range": self._close_range,
            "mmap": self._mmap,
            "sync_file_range": lambda call: None,  # no disk flush, no metadata: not durable
        }

    @classmethod
    def of(cls, calls: Sequence[Call], root: Path, *, cwd: Path, notes_fd: int = 1) -> FileSystem:
        """A model of ``root`` for replaying ``calls``, made in working directory ``cwd``."""
        return cls(root, cwd, clones(calls), notes_fd)

    # -- feeding it calls ---------------------------------------------------------------------

    def start(self, call: Call) -> None:
        """A sync call began (strace split it): note what it will make durable, as it is
        now (a write that completes meanwhile may not be covered)."""
        if call.name in ("fsync", "fdatasync", "sync", "syncfs"):
            self._syncing[call.pid, call.started] = self._sync_targets(call)

    def apply(self, call: Call) -> None:
        """Apply a completed call (a failed one changes nothing)."""
        try:
            if call.ok:
                self._handlers[call.name](call)
        except ModelError as exc:
            raise ModelError(f"line {call.line} ({call.name}): {exc}") from None
        finally:
            if call.started < call.line:
                self._syncing.pop((call.pid, call.started), None)

    # -- descriptors and paths ----------------------------------------------------------------

    def _table(self, pid: int) -> dict[int, Description]:
        """The descriptor table of thread ``pid`` (shared by threads; a forked child starts
        with a copy of its parent's, sharing its open file descriptions)."""
        table = self._tables.get(pid)
        if table is None:
            clone = self._clones.get(pid)
            if clone is not None:
                parent = self._table(clone.parent)
                table = parent if clone.shares_files else dict(parent)
            elif not self._tables:
                table = {}  # the traced command itself
                self._command = pid
            else:
                raise ModelError(f"thread {pid} appears, but no clone made it")
            self._tables[pid] = table
        return table

    def _in_command(self, pid: int) -> bool:
        """Whether thread ``pid`` belongs to the traced command's process."""
        self._table(pid)  # (the first thread seen is the command's: it must be known)
        while pid != self._command:
            clone = self._clones.get(pid)
            if clone is None or not clone.thread:
                return False
            pid = clone.parent
        return True

    def _inside(self, path: str) -> list[str] | None:
        """The components of absolute ``path`` below the root ([] for the root itself), or
        None if it lies outside."""
        if path == self._root_path:
            return []
        if path.startswith(self._root_path + "/"):
            return path[len(self._root_path) + 1 :].split("/")
        return None

    def _description(self, call: Call, arg: str) -> Description | None:
        """The description behind descriptor ``arg`` of ``call``, None if it is outside the
        model (and dropped from the table if strace shows the number is reused so)."""
        number, shown = descriptor(arg)
        if number is None:
            raise ModelError(f"{arg!r} is not a descriptor")
        table = self._table(call.pid)
        found = table.get(number)
        if shown is None:  # a raw argument: only the table can tell
            return found
        if self._inside(shown) is None:
            table.pop(number, None)
            return None
        if found is None:
            raise ModelError(f"descriptor {number} is {shown}, but the model never saw it open")
        return found

    def _path(self, call: Call, dirfd: str | None, arg: str) -> str:
        """The absolute path of path argument ``arg`` (relative to ``dirfd`` or the working
        directory)."""
        path = os.fsdecode(decode_string(arg))
        if not path.startswith("/"):
            base = self._cwd
            if dirfd is not None:
                number, shown = descriptor(dirfd)
                if shown is not None:
                    base = shown
                elif number is not None:
                    raise ModelError(f"cannot tell which directory {dirfd!r} is")
            path = f"{base}/{path}"
        return os.path.normpath(path)

    def _lookup(self, parts: list[str]) -> Node | None:
        node: Node | None = self.root
        for part in parts:
            if not isinstance(node, Directory):
                return None
            node = node.entries.get(part)
        return node

    def _parent(self, parts: list[str]) -> tuple[Directory, str]:
        if not parts:
            raise ModelError("the root itself cannot be created, renamed or removed")
        parent = self._lookup(parts[:-1])
        if not isinstance(parent, Directory):
            raise ModelError(f"{'/'.join(parts[:-1]) or '.'} is not a directory in the model")
        return parent, parts[-1]

    def _new(self, node: File | Directory) -> File | Directory:
        self._nodes.append(node)
        return node

    def target(self, call: Call) -> str:
        """The path (below the root) of the file behind ``call``'s first argument, a
        descriptor, for messages: "(outside)" if it is not in the model."""
        description = self._description(call, call.args[0])
        return "(outside)" if description is None else self.path_of(description.node)

    def path_of(self, node: Node) -> str:
        """A current path of ``node`` below the root (for messages)."""
        stack: list[tuple[Directory, str]] = [(self.root, "")]
        while stack:
            directory, prefix = stack.pop()
            for name, child in directory.entries.items():
                if child is node:
                    return prefix + name
                if isinstance(child, Directory):
                    stack.append((child, f"{prefix}{name}/"))
        return "." if node is self.root else "(unlinked)"

    # -- the calls ----------------------------------------------------------------------------

    def _open(self, call: Call) -> None:
        if call.name == "openat":
            path, mode = self._path(call, call.args[0], call.args[1]), flags(call.args[2])
        else:
            path = self._path(call, None, call.args[0])
            mode = flags(call.args[1]) if call.name == "open" else {"O_CREAT", "O_TRUNC"}
        number = call.value
        table = self._table(call.pid)
        parts = self._inside(path)
        if parts is None:
            table.pop(number, None)
            return
        node: Node | None
        if "O_TMPFILE" in mode:
            node = self._new(File())
        else:
            node = self._lookup(parts)
            if node is None:
                if "O_CREAT" not in mode:
                    raise ModelError(f"{path} opened, but the model has no such file")
                parent, name = self._parent(parts)
                node = parent.entries[name] = self._new(File())
            elif isinstance(node, Symlink):
                raise ModelError(f"{path} is a symbolic link: the model does not follow them")
            elif "O_TRUNC" in mode and isinstance(node, File):
                node.resize(0)
        table[number] = Description(node, 0, "O_APPEND" in mode)

    def _file(self, call: Call, description: Description) -> File:
        if not isinstance(description.node, File):
            raise ModelError(f"{call.name} on a directory")
        return description.node

    def _write(self, call: Call) -> None:
        description = self._description(call, call.args[0])
        if call.name in ("write", "pwrite64"):
            data = decode_string(call.args[1])
        else:
            data = decode_iovec(call.args[1])
        data = data[: call.value]
        if description is None:
            if descriptor(call.args[0])[0] == self._notes_fd and self._in_command(call.pid):
                self.notes.append(data.decode(errors="replace"))
            return
        file = self._file(call, description)
        positioned = call.name in ("pwrite64", "pwritev", "pwritev2")
        offset = int(call.args[3], 0) if positioned else -1
        if description.append:  # (Linux appends even for pwrite on an O_APPEND file)
            offset = len(file.current)
        elif offset == -1:  # write, writev, and pwritev2 at offset -1: the current offset
            offset = description.offset
        if not positioned or call.args[3] == "-1":
            description.offset = offset + len(data)
        file.write(offset, data)
        self._unsynced[file] = Write(file, offset, data, call.line)

    def _read(self, call: Call) -> None:
        description = self._description(call, call.args[0])
        if description is not None:
            description.offset += call.value

    def _lseek(self, call: Call) -> None:
        description = self._description(call, call.args[0])
        if description is not None:
            description.offset = call.value

    def _truncate(self, call: Call) -> None:
        if call.name == "ftruncate":
            description = self._description(call, call.args[0])
            node = None if description is None else description.node
        else:
            parts = self._inside(self._path(call, None, call.args[0]))
            node = None if parts is None else self._lookup(parts)
        if isinstance(node, File):
            node.resize(int(call.args[1], 0))

    def _fallocate(self, call: Call) -> None:
        description = self._description(call, call.args[0])
        if description is None:
            return
        file = self._file(call, description)
        mode = flags(call.args[1]) - {"0"}
        offset, length = int(call.args[2], 0), int(call.args[3], 0)
        if mode - {"FALLOC_FL_KEEP_SIZE"}:
            raise ModelError(f"fallocate mode {call.args[1]} is not modelled")
        if not mode and offset + length > len(file.current):
            file.resize(offset + length)

    def _sync_targets(self, call: Call) -> list[tuple[File | Directory, Content]]:
        """What ``call`` makes durable, as (node, its current content or entries now)."""
        if call.name == "sync":
            nodes = list(self._nodes)
        else:
            description = self._description(call, call.args[0])
            if description is None or isinstance(description.node, Symlink):
                return []
            nodes = list(self._nodes) if call.name == "syncfs" else [description.node]
        return [(n, bytes(n.current) if isinstance(n, File) else dict(n.entries)) for n in nodes]

    def _sync(self, call: Call) -> None:
        targets = self._syncing.get((call.pid, call.started))
        if targets is None:
            targets = self._sync_targets(call)
        for node, content in targets:
            if isinstance(node, File):
                assert isinstance(content, bytes)
                node.make_durable(content)
                write = self._unsynced.get(node)
                if write is not None and write.line < call.started:
                    del self._unsynced[node]
            else:
                assert isinstance(content, dict)
                node.durable = content

    def _two_paths(self, call: Call) -> tuple[str, str]:
        if call.name in ("rename", "link"):
            return self._path(call, None, call.args[0]), self._path(call, None, call.args[1])
        return (
            self._path(call, call.args[0], call.args[1]),
            self._path(call, call.args[2], call.args[3]),
        )

    def _rename(self, call: Call) -> None:
        old, new = self._two_paths(call)
        old_parts, new_parts = self._inside(old), self._inside(new)
        if old_parts is None and new_parts is None:
            return
        if old_parts is None or new_parts is None:
            raise ModelError(f"a rename across the root ({old} -> {new}) is not modelled")
        source, old_name = self._parent(old_parts)
        target, new_name = self._parent(new_parts)
        node = source.entries.get(old_name)
        if node is None:
            raise ModelError(f"{old} renamed, but the model has no such file")
        if call.name == "renameat2" and "RENAME_EXCHANGE" in flags(call.args[4]):
            other = target.entries[new_name]
            source.entries[old_name], target.entries[new_name] = other, node
            return
        if (source, old_name) != (target, new_name):
            del source.entries[old_name]
            target.entries[new_name] = node

    def _unlink(self, call: Call) -> None:
        dirfd = call.args[0] if call.name == "unlinkat" else None
        path = self._path(call, dirfd, call.args[1] if dirfd is not None else call.args[0])
        parts = self._inside(path)
        if parts is not None:
            parent, name = self._parent(parts)
            if parent.entries.pop(name, None) is None:
                raise ModelError(f"{path} removed, but the model has no such file")

    def _mkdir(self, call: Call) -> None:
        dirfd = call.args[0] if call.name == "mkdirat" else None
        path = self._path(call, dirfd, call.args[1] if dirfd is not None else call.args[0])
        parts = self._inside(path)
        if parts is not None:
            parent, name = self._parent(parts)
            parent.entries[name] = self._new(Directory())

    def _link(self, call: Call) -> None:
        old_arg = call.args[0] if call.name == "link" else call.args[1]
        source: Node | None = None
        if call.name == "linkat" and decode_string(old_arg) == b"":  # AT_EMPTY_PATH
            description = self._description(call, call.args[0])
            source = None if description is None else description.node
            old = "" if source is not None else "(outside)"
        else:
            old, _new = self._two_paths(call)
            proc = re.fullmatch(r"/proc/(?:self|\d+)/fd/(\d+)", old)
            if proc is not None:  # linkat of an O_TMPFILE descriptor, by its /proc name
                found = self._table(call.pid).get(int(proc[1]))
                source = None if found is None else found.node
            else:
                parts = self._inside(old)
                source = None if parts is None else self._lookup(parts)
        new_arg = call.args[1] if call.name == "link" else call.args[3]
        new = self._path(call, None if call.name == "link" else call.args[2], new_arg)
        parts = self._inside(new)
        if parts is None:
            return
        if source is None:
            raise ModelError(f"a link into the root from outside it ({old}) is not modelled")
        parent, name = self._parent(parts)
        parent.entries[name] = source

    def _symlink(self, call: Call) -> None:
        dirfd = call.args[1] if call.name == "symlinkat" else None
        path = self._path(call, dirfd, call.args[-1])
        parts = self._inside(path)
        if parts is not None:
            parent, name = self._parent(parts)
            parent.entries[name] = Symlink(os.fsdecode(decode_string(call.args[0])))

    def _dup(self, call: Call) -> None:
        self._duplicate(call, call.args[0], call.value)

    def _duplicate(self, call: Call, old: str, new: int) -> None:
        description = self._description(call, old)
        table = self._table(call.pid)
        if description is None:
            table.pop(new, None)
        else:
            table[new] = description

    def _fcntl(self, call: Call) -> None:
        command = call.args[1]
        if command in ("F_DUPFD", "F_DUPFD_CLOEXEC"):
            self._duplicate(call, call.args[0], call.value)
        elif command == "F_SETFL":
            description = self._description(call, call.args[0])
            if description is not None:
                description.append = "O_APPEND" in flags(call.args[2])

    def _close(self, call: Call) -> None:
        number, _shown = descriptor(call.args[0])
        if number is not None:
            self._table(call.pid).pop(number, None)

    def _close_range(self, call: Call) -> None:
        if "CLOSE_RANGE_CLOEXEC" in flags(call.args[2]):
            return  # only marked close-on-exec
        first = int(call.args[0], 0)
        last = 2**32 - 1 if call.args[1] == "~0U" else int(call.args[1], 0)
        table = self._table(call.pid)
        for number in [n for n in table if first <= n <= last]:
            del table[number]

    def _mmap(self, call: Call) -> None:
        prot, mode = flags(call.args[2]), flags(call.args[3])
        if call.args[4].startswith("-1") or "MAP_ANONYMOUS" in mode:
            return
        writable = "PROT_WRITE" in prot and "MAP_SHARED" in mode
        if writable and self._description(call, call.args[4]) is not None:
            raise ModelError("a writable shared mapping of a modelled file")

    def _copy(self, call: Call) -> None:
        target = call.args[2] if call.name == "copy_file_range" else call.args[0]
        if self._description(call, target) is not None:
            raise ModelError(f"{call.name} into a modelled file is not modelled")

    def _clone(self, call: Call) -> None:
        self._table(call.value)  # a thread shares the table; a child gets a copy of it now

    # -- crash states -------------------------------------------------------------------------

    def crash_states(self, rng: random.Random) -> list[CrashState]:
        """The trees a power cut now could leave, without duplicates: for each variant
        (``STRICT``, ``PERSISTED``) the durable state, then the same with each ``Tear`` of
        the last write not yet made durable."""
        last = max(self._unsynced.values(), key=lambda w: w.line, default=None)
        states: dict[bytes, CrashState] = {}
        for variant in (STRICT, PERSISTED):
            tree, paths = self._tree(persisted=variant == PERSISTED)
            candidates = [("", tree)]
            if last is not None and last.file in paths:
                file = last.file
                total = changed_sectors(file.durable, last.offset, last.data)
                where = ", ".join(paths[file])
                for tear in tears(file.durable, last.offset, last.data, rng):
                    image = FileImage(file.durable, file.digest, tear.size, tear.patches)
                    torn = dict(tree)
                    for path in paths[file]:
                        torn[path] = image
                    what = f"{where}: write of {len(last.data)} bytes at {last.offset} torn, "
                    candidates.append((what + tear.describe(total), torn))
            for torn_what, candidate in candidates:
                key = tree_key(candidate)
                if key not in states:
                    states[key] = CrashState(variant, torn_what, candidate, key)
        return list(states.values())

    def contents(self) -> dict[str, bytes | str | None]:
        """The tree as it is now (in the page cache), in the form of ``read_tree``."""
        out: dict[str, bytes | str | None] = {}

        def walk(directory: Directory, prefix: str) -> None:
            for name, node in sorted(directory.entries.items()):
                if isinstance(node, Directory):
                    out[prefix + name] = None
                    walk(node, f"{prefix}{name}/")
                else:
                    out[prefix + name] = (
                        node.target if isinstance(node, Symlink) else bytes(node.current)
                    )

        walk(self.root, "")
        return out

    def _tree(self, *, persisted: bool) -> tuple[dict[str, Image], dict[File, list[str]]]:
        """The tree a crash leaves with the durable (or, ``persisted``, the current) entries
        and the durable contents; and the paths of each file in it."""
        tree: dict[str, Image] = {}
        paths: dict[File, list[str]] = {}

        def walk(directory: Directory, prefix: str, depth: int) -> None:
            if depth > 64:
                raise ModelError("directories nested over 64 deep (a cycle?)")
            entries = directory.entries if persisted else directory.durable
            for name, node in sorted(entries.items()):
                path = prefix + name
                if isinstance(node, Directory):
                    tree[path] = DirectoryImage()
                    walk(node, path + "/", depth + 1)
                elif isinstance(node, Symlink):
                    tree[path] = LinkImage(node.target)
                else:
                    tree[path] = FileImage(node.durable, node.digest, len(node.durable))
                    paths.setdefault(node, []).append(path)

        walk(self.root, "", 0)
        return tree, paths


def clones(calls: Sequence[Call]) -> dict[int, Clone]:
    """How each thread and process the traced calls created came to be."""
    out = {}
    for call in calls:
        if call.name in ("clone", "clone3", "fork", "vfork") and call.ok:
            text = ",".join(call.args)
            out[call.value] = Clone(call.pid, "CLONE_FILES" in text, "CLONE_THREAD" in text)
    return out


def read_tree(root: Path) -> dict[str, bytes | str | None]:
    """A real directory's tree: relative path -> a file's bytes, a symbolic link's target,
    or None for a directory (to compare with ``FileSystem.contents``)."""
    out: dict[str, bytes | str | None] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            out[name] = str(path.readlink())
        elif path.is_dir():
            out[name] = None
        else:
            out[name] = path.read_bytes()
    return out


def replay(calls: Sequence[Call], fs: FileSystem, *, seed: int = 0) -> Iterator[CrashPoint]:
    """Replay ``calls`` (``parse_trace``) through ``fs`` (``FileSystem.of`` them) and yield
    a ``CrashPoint`` just before and just after each sync call completes, after each note
    and at the end; ``seed`` seeds the random sector subsets. Afterwards ``fs`` holds the
    tree as the run left it."""
    rng = random.Random(seed)
    starts = sorted((call.started, i) for i, call in enumerate(calls) if call.started < call.line)
    pending = 0

    def point(line: int, label: str) -> CrashPoint:
        return CrashPoint(line, label, tuple(fs.notes), tuple(fs.crash_states(rng)))

    for call in calls:
        while pending < len(starts) and starts[pending][0] < call.line:
            fs.start(calls[starts[pending][1]])
            pending += 1
        if call.ok and call.name in ("fsync", "fdatasync", "sync", "syncfs"):
            what = f"{call.name} of {fs.target(call)}" if call.args else call.name
            yield point(call.line, f"before {what} (line {call.line}) completes")
            fs.apply(call)
            yield point(call.line, f"after {what} (line {call.line})")
            continue
        notes = len(fs.notes)
        fs.apply(call)
        if len(fs.notes) > notes:
            yield point(call.line, f"after note {fs.notes[-1].strip()!r} (line {call.line})")
    yield point(calls[-1].line if calls else 0, "at the end of the run")
