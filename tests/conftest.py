"""Shared pytest configuration for the watchstore test suite.

Every async test and async fixture runs under AnyIO's pytest plugin (``anyio_mode = "auto"``),
once per backend of ``anyio_backend``: trio and asyncio, or those named, comma-separated, in
``WATCHSTORE_TEST_BACKENDS`` (``WATCHSTORE_TEST_BACKENDS=trio`` runs on trio only). A sync test
that runs the store itself (``anyio.run``, a child process) asks for ``anyio_backend`` too.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Final

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.etcd_cluster import EtcdCluster

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=False, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

BACKENDS: Final = tuple(
    name.strip()
    for name in os.environ.get("WATCHSTORE_TEST_BACKENDS", "trio,asyncio").split(",")
    if name.strip()
)
"""The AnyIO backends every test runs on, in order."""


@pytest.fixture(scope="module", params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The AnyIO backend of the test (its id ends in ``[trio]`` or ``[asyncio]``); module
    scoped, as AnyIO's own, so a module runs all its tests on one backend, then the next."""
    backend: str = request.param
    return backend


@pytest.fixture(scope="module")
def single(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[EtcdCluster]:
    """A one-member etcd for the module's tests (a module using it calls
    ``tests.etcd_cluster.require_etcd()`` first, so it fails in CI without etcd)."""
    from tests.etcd_cluster import running

    with running(tmp_path_factory.mktemp(f"etcd-{request.module.__name__}")) as cluster:
        yield cluster


_prefixes = itertools.count()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test of this process has used (named after its module)."""
    module = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    return f"{module}{os.getpid()}-{next(_prefixes)}"


@pytest.fixture(scope="session")
def etcd_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-member etcd for docs and README examples, named in WATCHSTORE_ETCD (the
    examples read their endpoints from it, defaulting to etcd's own 127.0.0.1:2379)."""
    from tests.etcd_cluster import EtcdCluster
    from watchstore.testing.etcd import etcd_binary

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
