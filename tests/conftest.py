"""Shared pytest configuration for the watchstore test suite."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from collections.abc import Iterator

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=False, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def etcd_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-member etcd for docs and README examples, named in WATCHSTORE_ETCD (the
    examples read their endpoints from it, defaulting to etcd's own 127.0.0.1:2379)."""
    from tests.etcd_cluster import EtcdCluster, etcd_binary

    if etcd_binary() is None and not os.environ.get("CI"):
        pytest.skip("etcd is not installed: run `make deps-etcd`")
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-docs"), 1)
    before = os.environ.get("WATCHSTORE_ETCD")
    os.environ["WATCHSTORE_ETCD"] = cluster.endpoints[0]
    try:
        yield cluster.endpoints[0]
    finally:
        cluster.stop()
        if before is None:
            del os.environ["WATCHSTORE_ETCD"]
        else:
            os.environ["WATCHSTORE_ETCD"] = before
