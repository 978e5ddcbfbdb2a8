"""Exporting ``store.statistics()`` to monitoring: a Prometheus collector, and the readings
any other exporter (OpenTelemetry, say) can be fed from.

Nothing here runs on the commit path: a scrape (or an exporter's callback) reads
``store.statistics()`` when it comes, and turns the record into metrics then.

    from prometheus_client import REGISTRY, start_http_server
    from watchstore.metrics import PrometheusCollector

    REGISTRY.register(PrometheusCollector(store))
    start_http_server(9100)

``PrometheusCollector`` needs prometheus-client (``pip install "watchstore[metrics]"``);
``readings`` needs nothing. docs/operations.md lists every metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

from .core.errors import StoreError
from .core.statistics import Statistics, Summary

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

Kind = Literal["counter", "gauge", "summary"]
"""A counter only grows (while the store is open); a gauge is a value now; a summary is a
:class:`~watchstore.Summary` (a count of samples, and quantiles of the recent ones)."""

QUANTILES = (("0.5", "p50"), ("0.99", "p99"), ("1", "max"))
"""A summary's quantiles as Prometheus labels them, and the Summary field of each."""


class HasStatistics(Protocol):
    """A store or a replica: anything whose ``statistics()`` returns a Statistics."""

    def statistics(self) -> Statistics:
        """The statistics, now."""
        ...


@attrs.frozen
class Reading:
    """One metric of a :class:`~watchstore.Statistics` record, named for monitoring:
    ``name`` (without a namespace; Prometheus adds ``_total`` to a counter's), its
    ``kind``, a ``help`` line and its ``value``."""

    name: str
    kind: Kind
    help: str
    value: float | Summary


def readings(stats: Statistics) -> list[Reading]:
    """Every metric of ``stats``, always the same ones in the same order (the one
    docs/operations.md lists them in); the last compaction's duration is NaN before the
    first."""
    last_compaction = stats.last_compaction_seconds
    return [
        Reading(
            "version",
            "gauge",
            "The store's version (its last commit).",
            stats.version.index,
        ),
        Reading("commits", "counter", "Commits applied since the store opened.", stats.commits),
        Reading(
            "commit_latency_seconds",
            "summary",
            "Seconds from an update() call to its return (recent calls).",
            stats.commit_latency,
        ),
        Reading(
            "conflict_retries",
            "counter",
            "Transaction functions run again after another process changed what they read.",
            stats.conflict_retries,
        ),
        Reading(
            "fsync_seconds", "summary", "Seconds of the log's fsyncs of commits.", stats.fsyncs
        ),
        Reading(
            "commit_group_size",
            "summary",
            "Commits carried by each write to the log (group commit).",
            stats.commit_groups,
        ),
        Reading("watchers", "gauge", "Watches open now.", stats.watchers),
        Reading(
            "watch_pending",
            "gauge",
            "Events waiting in all the watchers' queues.",
            stats.watch_pending_total,
        ),
        Reading(
            "watch_pending_max",
            "gauge",
            "Events waiting in the fullest watcher's queue.",
            stats.watch_pending_max,
        ),
        Reading(
            "overflows",
            "counter",
            "Watchers dropped with WatchOverflow because their queue was full.",
            stats.overflows,
        ),
        Reading(
            "replica_lag",
            "gauge",
            "Commits of a replica's source that it has not applied yet.",
            stats.lag,
        ),
        Reading(
            "resyncs",
            "counter",
            "Times the store caught up from a new snapshot or listing.",
            stats.resyncs,
        ),
        Reading("compactions", "counter", "Compactions completed.", stats.compactions),
        Reading(
            "compaction_failures", "counter", "Compactions that failed.", stats.compaction_failures
        ),
        Reading(
            "last_compaction_seconds",
            "gauge",
            "How long the last completed compaction took (NaN before the first).",
            math.nan if last_compaction is None else last_compaction,
        ),
        Reading("etcd_requests", "counter", "Requests sent to etcd.", stats.etcd_requests),
        Reading(
            "etcd_retries",
            "counter",
            "etcd requests sent again after a member did not serve them.",
            stats.etcd_retries,
        ),
    ]


class PrometheusCollector:
    """A Prometheus collector of the statistics of a store (or a replica), read at each
    scrape: ``registry.register(PrometheusCollector(store))``.

    For several stores in one process, give them by name in one collector:
    ``PrometheusCollector({"orders": orders, "users": users})``; each sample then carries
    the label ``label`` (default ``store``) naming its store. (A registry refuses two
    collectors of the same metric names.) Metric names start with ``namespace`` and ``_``
    (``watchstore_commits_total``). Summaries carry the quantiles 0.5, 0.99 and 1 (the
    maximum) of the recent samples, and ``_count`` (no ``_sum``: nothing is added up on the
    commit path). StoreError, naming the extra to install, without prometheus-client.
    """

    def __init__(
        self,
        stores: HasStatistics | Mapping[str, HasStatistics],
        *,
        namespace: str = "watchstore",
        label: str = "store",
    ) -> None:
        try:
            from prometheus_client import metrics_core
        except ModuleNotFoundError as exc:
            raise StoreError(
                "watchstore.metrics.PrometheusCollector needs watchstore's 'metrics' extra "
                f'({exc.name} is not installed): pip install "watchstore[metrics]"'
            ) from exc
        self._core = metrics_core
        if isinstance(stores, Mapping):
            self._stores = [({label: name}, store) for name, store in stores.items()]
        else:
            self._stores = [({}, stores)]
        self._prefix = f"{namespace}_" if namespace else ""

    def collect(self) -> Iterator[Metric]:
        """The metrics of each store's ``statistics()`` now (the registry calls this at each
        scrape)."""
        families: dict[str, Metric] = {}
        for labels, store in self._stores:
            for reading in readings(store.statistics()):
                name = self._prefix + reading.name
                metric = families.get(name)
                if metric is None:
                    metric = families[name] = self._core.Metric(name, reading.help, reading.kind)
                value = reading.value
                if isinstance(value, Summary):
                    for quantile, field in QUANTILES:
                        quantiled = {**labels, "quantile": quantile}
                        metric.add_sample(name, quantiled, getattr(value, field))
                    metric.add_sample(f"{name}_count", labels, value.count)
                elif reading.kind == "counter":
                    metric.add_sample(f"{name}_total", labels, value)
                else:
                    metric.add_sample(name, labels, value)
        yield from families.values()
