"""What ``store.statistics()`` reports (sans-I/O): counters, and summaries of recent samples.

The commit path pays for a statistic with a counter, or a slot of a :class:`Recent` ring
(an index and a store into a preallocated list): nothing is allocated per commit, nothing is
sorted, and no lock is taken. The work of summarising (copying the ring, sorting it, picking
percentiles) is done when someone asks, by ``Recent.summary()``: reading statistics costs
O(window) and O(watchers), writing nothing.

A proposer reports what it alone knows (fsyncs, groups of commits, compactions, etcd's
requests) as a :class:`ProposerStatistics`, through the ``Instrumented`` capability of
``core.proposer``; the store adds its own and returns one :class:`Statistics`.
"""

from __future__ import annotations

import math
from typing import Final

import attrs

from .model import ORIGIN, Version

WINDOW: Final = 1024
"""How many recent samples a :class:`Recent` ring keeps (a power of two: the slot of a
sample is its number masked)."""
MASK: Final = WINDOW - 1


@attrs.frozen
class Summary:
    """Recent samples of a measure (seconds, or sizes): ``count`` samples were taken in all;
    ``p50``, ``p99`` and ``max`` are over the last ones (at most 1024), by nearest rank.
    All zero before the first sample."""

    count: int = 0
    """Samples taken since the store opened."""
    p50: float = 0.0
    """The median of the recent samples."""
    p99: float = 0.0
    """The 99th percentile of the recent samples."""
    max: float = 0.0
    """The largest of the recent samples."""


EMPTY: Final = Summary()


class Recent:
    """A ring of the last :data:`WINDOW` samples and the count of all: ``add`` is a store
    into a preallocated slot and an increment. A hot path may do the same inline
    (``ring[count & MASK] = value; count += 1``). ``summary`` may run in another thread
    than ``add`` (an fsync timed in a worker thread): it copies the ring first."""

    __slots__ = ("count", "ring")

    def __init__(self) -> None:
        self.count = 0
        self.ring: list[float] = [0.0] * WINDOW

    def add(self, value: float) -> None:
        """Record one sample."""
        count = self.count
        self.ring[count & MASK] = value
        self.count = count + 1

    def summary(self) -> Summary:
        """The count, and the median, 99th percentile and maximum of the recent samples."""
        count = self.count
        if not count:
            return EMPTY
        recent = sorted(self.ring[: min(count, WINDOW)])
        return Summary(count, _rank(recent, 0.5), _rank(recent, 0.99), recent[-1])


def _rank(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of ``ordered`` (not empty) by nearest rank."""
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


@attrs.frozen
class ProposerStatistics:
    """What a proposer reports of its own work (each proposer fills what applies to it,
    the rest stays zero): see :class:`Statistics` for the meaning of each field."""

    fsyncs: Summary = EMPTY
    commit_groups: Summary = EMPTY
    compactions: int = 0
    compaction_failures: int = 0
    last_compaction_seconds: float | None = None
    etcd_requests: int = 0
    etcd_retries: int = 0
    resyncs: int = 0


NO_PROPOSER_STATISTICS: Final = ProposerStatistics()


@attrs.frozen
class Statistics:
    """A store's counters and recent latencies, as ``store.statistics()`` returns them.

    Counts are since the store (or replica) opened. A :class:`Summary` holds the number of
    samples in all and the median, 99th percentile and maximum of the last 1024. Fields
    that do not apply to a store (fsyncs of a store in memory, etcd's requests of a store on
    disk) are zero.
    """

    version: Version = ORIGIN
    """The store's version (``store.version``) when the statistics were read."""
    commits: int = 0
    """Commits applied: this store's own (``update``, and each chunk of a ``batch``) and,
    on a replica or an etcd store, those made elsewhere and replicated to it."""
    commit_latency: Summary = EMPTY
    """Seconds from an ``update()`` call to its return, for the calls that returned:
    waiting for the writers' lock, running the function and committing (the fsync on a
    durable store, the txn on etcd). Every call is timed, except on a store in memory,
    where one in 16 is (its commits take microseconds, and reading the clock twice would
    add a few percent to each); none on a store opened with ``statistics=False``."""
    conflict_retries: int = 0
    """Transaction functions run again because another process changed what they read
    (etcd's optimistic concurrency)."""
    fsyncs: Summary = EMPTY
    """The log's fsyncs of commits (``count``) and their seconds (durable stores)."""
    commit_groups: Summary = EMPTY
    """How many commits each write to the log carried: ``count`` writes in all, and their
    recent sizes (group commit: concurrent writers share one write and one fsync)."""
    watchers: int = 0
    """Watches open now (``watch``, ``view_and_watch``, ``watch_from``, and each replica
    forked from this store)."""
    watch_pending_total: int = 0
    """Events waiting in all the watchers' queues, now."""
    watch_pending_max: int = 0
    """Events waiting in the fullest watcher's queue, now (a watcher overflows beyond its
    ``queue``)."""
    overflows: int = 0
    """Watchers dropped with WatchOverflow because their queue was full."""
    lag: int = 0
    """On a replica: commits of its source that it has not applied yet (0 elsewhere)."""
    resyncs: int = 0
    """Times the store caught up from a new snapshot or listing instead of from changes:
    a replica that fell behind, an etcd store whose watch revision was compacted."""
    compactions: int = 0
    """Compactions completed (a new epoch written; durable stores)."""
    compaction_failures: int = 0
    """Compactions that failed (the store went on with its current epoch)."""
    last_compaction_seconds: float | None = None
    """How long the last completed compaction took (None before the first)."""
    etcd_requests: int = 0
    """Requests sent to etcd (each attempt counts; the watch stream does not)."""
    etcd_retries: int = 0
    """etcd requests sent again after a member did not serve them (to the next member, or
    after a pause once every member failed)."""
