"""The store's errors: one flat hierarchy under :class:`StoreError`.

Each error carries what a caller needs to act on it (the current object, the conflicting holder,
the version, the file and offset) and its message says what to do next.
"""

from __future__ import annotations

import time
from typing import Any


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class InvalidObject(StoreError, TypeError):
    """An object handed to a write is not storable as it is.

    Raised for an object of a type the table does not hold, an object without a string ``id``,
    an object that is not a frozen attrs instance or holds mutable values, or an index key of a
    type the index does not hold. Nothing of the transaction is applied when it escapes.
    """


class InvalidQuery(StoreError, LookupError):
    """A read named a table or index the schema does not have, or a malformed condition."""


class ObjectExists(StoreError):
    """``create`` of an id that is already present; ``current`` is the stored object."""

    def __init__(self, current: Any) -> None:
        self.current = current
        super().__init__(
            f"{type(current).__name__} {current.id!r} already exists; "
            "use update() to change it or upsert() to write it regardless"
        )


class ObjectNotFound(StoreError, LookupError):
    """``update`` or ``delete`` of an id that is not present."""

    def __init__(self, table: str, id: str) -> None:
        self.table = table
        self.id = id
        super().__init__(
            f"{table} {id!r} does not exist; use create() or upsert() to write a new object"
        )


class UniqueConflict(StoreError):
    """A write would give a unique index key a second holder.

    ``index`` names the index, ``key`` is the (normalised) key and ``holder`` the id of the
    object that already holds it.
    """

    def __init__(self, table: str, index: str, key: Any, holder: str, id: str) -> None:
        self.table = table
        self.index = index
        self.key = key
        self.holder = holder
        self.id = id
        super().__init__(
            f"{table} {id!r}: unique index {index!r} already has key {key!r}, "
            f"held by {holder!r}; change the key or update/delete the holder first"
        )


class SequenceConflict(StoreError):
    """An ``update``/``delete`` was made from a stale copy of the object.

    ``current`` is the stored object: re-apply the change to it and retry.
    """

    def __init__(self, current: Any, given_version: Any) -> None:
        self.current = current
        self.given_version = given_version
        super().__init__(
            f"{type(current).__name__} {current.id!r} was written at "
            f"{current.meta.version!r} but this change was made from {given_version!r}; "
            "re-read the object (it is .current on this error) and apply the change again"
        )


class TransactionTooLarge(StoreError):
    """A transaction exceeds a limit of the proposer (changes or bytes), named in the message."""


class WatchOverflow(StoreError):
    """A watcher fell behind and its bounded queue overflowed.

    Everything up to and including ``last_version`` was delivered; resume with
    ``store.watch_from(last_version, ...)``.
    """

    def __init__(self, last_version: Any) -> None:
        self.last_version = last_version
        super().__init__(
            f"watcher fell behind and was dropped after {last_version!r}; "
            "resume with watch_from(last_version)"
        )


class WatcherFailed(StoreError):
    """A watcher's own code (a ``where=`` predicate) raised for an object of a commit: that
    watcher is closed with this error, chained to the cause; the commit, the writer and
    every other watcher are unaffected."""


class HistoryCompacted(StoreError):
    """The history asked for is gone: ``oldest`` is the oldest version still replayable."""

    def __init__(self, oldest: Any, current: Any) -> None:
        self.oldest = oldest
        self.current = current
        super().__init__(
            f"history before {oldest!r} is compacted (store is at {current!r}); "
            "re-read the state with view_and_watch() instead of resuming"
        )


class ProposalFailed(StoreError):
    """The proposer failed: the change may or may not have committed.

    If it did, it arrives through the replication path like any other commit.
    """


class StoreClosed(StoreError):
    """The store was closed (or failed closed); open it again to continue."""


class StoreLocked(StoreError):
    """Another process holds the store's lock; ``holder`` describes it.

    ``holder`` holds what the lock's holder recorded (``pid``, ``host``, ``started_at``), or
    is empty when that cannot be told (the holder has not written it yet, or it is
    unreadable); the message says which, in a sentence.
    """

    def __init__(self, path: str, holder: dict[str, Any] | None) -> None:
        self.path = path
        self.holder = {k: v for k, v in (holder or {}).items() if k != "token"}
        super().__init__(
            f"store {path!r} is locked by {describe_holder(self.holder)}; close the store "
            "in that process first (the lock of a process that died is released by the "
            "system)"
        )


def describe_holder(holder: dict[str, Any]) -> str:
    """A lock holder in words: "pid 12 on host-a since 2026-12-05 21:25:41 UTC", or that it
    cannot be told."""
    pid, host, started = holder.get("pid"), holder.get("host"), holder.get("started_at")
    if type(pid) is not int:
        return "a process it cannot name (its lock record is missing or unreadable)"
    where = f" on {host}" if isinstance(host, str) and host else ""
    since = ""
    if isinstance(started, int | float) and not isinstance(started, bool) and 0 <= started < 1e11:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
        since = f" since {stamp}"
    return f"pid {pid}{where}{since}"


class StorageError(StoreError):
    """A file operation on the store's directory failed (opening, creating or locking it):
    ``errno`` and ``file`` say which; the message names the cause ("No space left on
    device") and what to do. Nothing committed is lost."""

    def __init__(self, message: str, *, errno: int | None = None, file: str | None = None) -> None:
        self.errno = errno
        self.file = file
        super().__init__(message)


class CompactionFailed(StoreError):
    """A compaction could not complete its new epoch; the message names the cause.

    The store goes on with its current epoch, writable, and nothing is lost; a later
    compaction tries again.
    """


class LogCorrupt(StoreError):
    """A log file is damaged at ``file``/``offset`` (near ``version``, when known)."""

    def __init__(self, file: str, offset: int, reason: str, version: Any = None) -> None:
        self.file = file
        self.offset = offset
        self.reason = reason
        self.version = version
        where = f"{file} at offset {offset}" + (f" (after {version!r})" if version else "")
        super().__init__(
            f"log corrupt in {where}: {reason}; open with salvage=True to keep the valid "
            "prefix (the lost versions are reported)"
        )


class SchemaMismatch(StoreError):
    """Stored objects do not fit today's class; the data itself is intact.

    ``table`` and ``field`` (None: the table as a whole) say where, ``reason`` what differs,
    ``version`` which commit wrote them (when known). Declare how to read the stored shape
    into today's with ``Table(cls, upgrade=...)`` (see docs/schema-and-indexes.md), or open
    the store with the class as it was.
    """

    def __init__(
        self,
        table: str,
        field: str | None,
        reason: str,
        version: Any = None,
        file: str | None = None,
    ) -> None:
        self.table = table
        self.field = field
        self.reason = reason
        self.version = version
        self.file = file
        where = f"{table}.{field}" if field else table
        written = f" (written by {version!r}" if version is not None else " ("
        written += f" in {file})" if file else ")"
        if written == " ()":
            written = ""
        super().__init__(
            f"{where}: {reason}{written}; the data is intact: declare Table({table}, "
            "upgrade=...) to turn the stored fields into today's (docs/schema-and-indexes.md), "
            "or open the store with the class as it was"
        )


class UnsupportedFormat(StoreError):
    """A file was written by a newer (or unknown) format version than this library reads."""


class EtcdError(StoreError):
    """etcd refused a request or cannot be used (too old, misconfigured); see the message."""


class NotLeader(StoreError):
    """This process does not lead ``name`` (any more): its lease expired, it was paused or cut
    off, or it left. Nothing the write that raised it tried was committed."""

    def __init__(self, name: str, why: str = "") -> None:
        self.name = name
        super().__init__(
            f"this process does not lead {name!r}{f' ({why})' if why else ''}: the write was "
            "not committed; campaign again with store.leadership(...)"
        )


class EtcdAuthFailed(EtcdError):
    """etcd refused the user name or password (or auth is not enabled on the cluster)."""


class EtcdPermissionDenied(EtcdError):
    """The etcd user's roles do not grant what the store needs on its prefix."""
