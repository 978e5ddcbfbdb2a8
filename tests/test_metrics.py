"""``watchstore.metrics``: a Prometheus collector that reads ``store.statistics()`` at each
scrape, checked through prometheus-client's own registry, exposition and parser."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import watchstore as ws
from tests.schema import SCHEMA, Task
from watchstore.metrics import PrometheusCollector, readings

if TYPE_CHECKING:
    from pathlib import Path


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's text exposition, parsed: (name, labels) -> value."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_scrape_reports_the_commits_fsyncs_and_latencies_of_real_commits(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    async with ws.open_store(SCHEMA, path=tmp_path, compact_in_child=False) as store:
        registry.register(PrometheusCollector(store))
        before = scrape(registry)
        assert before[("watchstore_commits_total", ())] == 0
        for i in range(5):
            await store.update(lambda tx: tx.create(Task(f"t{i}", "svc")))
        await store.compact()
        async with store.watch(ws.on(Task)):
            await store.update(lambda tx: tx.create(Task("t5", "svc")))
            samples = scrape(registry)
        stats = store.statistics()
    assert samples[("watchstore_version", ())] == 6
    assert samples[("watchstore_commits_total", ())] == 6
    assert samples[("watchstore_commit_latency_seconds_count", ())] == 6
    p50 = samples[("watchstore_commit_latency_seconds", (("quantile", "0.5"),))]
    p99 = samples[("watchstore_commit_latency_seconds", (("quantile", "0.99"),))]
    top = samples[("watchstore_commit_latency_seconds", (("quantile", "1"),))]
    assert 0 < p50 <= p99 <= top
    assert samples[("watchstore_fsync_seconds_count", ())] == stats.fsyncs.count >= 6
    assert samples[("watchstore_commit_group_size", (("quantile", "1"),))] == 1
    assert samples[("watchstore_watchers", ())] == 1
    assert samples[("watchstore_watch_pending", ())] == 1
    assert samples[("watchstore_compactions_total", ())] == 1
    assert samples[("watchstore_last_compaction_seconds", ())] > 0
    assert samples[("watchstore_etcd_requests_total", ())] == 0


async def test_every_reading_is_exposed_once_under_its_name() -> None:
    registry = CollectorRegistry()
    async with ws.open_store(SCHEMA) as store:
        registry.register(PrometheusCollector(store, namespace="app"))
        text = generate_latest(registry).decode()
        names = [r.name for r in readings(store.statistics())]
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert sorted(families) == sorted(f"app_{name}" for name in names)
    assert families["app_commits"] == "counter"
    assert families["app_commit_latency_seconds"] == "summary"
    assert families["app_watchers"] == "gauge"
    last = {f.name: f for f in text_string_to_metric_families(text)}["app_last_compaction_seconds"]
    assert math.isnan(last.samples[0].value)  # no compaction yet


async def test_two_stores_in_one_collector_are_told_apart_by_a_label() -> None:
    registry = CollectorRegistry(auto_describe=True)
    async with ws.open_store(SCHEMA) as orders, ws.open_store(SCHEMA) as users:
        registry.register(PrometheusCollector({"orders": orders, "users": users}))
        for i in range(16):  # the 16th update is timed (a store in memory times 1 in 16)
            await orders.update(lambda tx: tx.create(Task(f"t{i}", "svc")))
        samples = scrape(registry)
    assert samples[("watchstore_commits_total", (("store", "orders"),))] == 16
    assert samples[("watchstore_commits_total", (("store", "users"),))] == 0
    quantile = (("quantile", "0.5"), ("store", "orders"))
    assert samples[("watchstore_commit_latency_seconds", quantile)] > 0


async def test_a_replica_exposes_its_lag_and_resyncs() -> None:
    registry = CollectorRegistry()
    async with ws.open_store(SCHEMA, schedule_every=1000) as store, store.fork() as replica:
        registry.register(PrometheusCollector(replica))
        await store.update(lambda tx: tx.create(Task("t1", "svc")))
        assert scrape(registry)[("watchstore_replica_lag", ())] == 1
        await replica.wait_for(store.version)
        samples = scrape(registry)
    assert samples[("watchstore_replica_lag", ())] == 0
    assert samples[("watchstore_commits_total", ())] == 1
    assert samples[("watchstore_resyncs_total", ())] == 0


async def test_without_prometheus_client_the_collector_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m.startswith("prometheus_client")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    async with ws.open_store(SCHEMA) as store:
        with pytest.raises(ws.StoreError, match=r'pip install "watchstore\[metrics\]"'):
            PrometheusCollector(store)
        assert readings(store.statistics())  # the readings need no extra
