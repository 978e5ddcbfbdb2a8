"""The pytest plugin of watchstore: store fixtures for a user's tests.

Installing watchstore registers it (the ``pytest11`` entry point), so a project's tests get
the fixtures without importing anything. The stores need the project's schema: define a
``watchstore_schema`` fixture (in ``conftest.py``) that returns it. The store fixtures are
async: they run under AnyIO's pytest plugin (``anyio_mode = "auto"``, or tests marked
``@pytest.mark.anyio``), on trio or asyncio, whichever ``anyio_backend`` names.

- ``memory_store``: ``open_store(schema)``.
- ``durable_store``: ``open_store(schema, path=tmp_path / "store")``: a real epoch log,
  fsynced, locked, in the test's own temporary directory.
- ``any_store``: a test that takes it runs twice, on a memory and on a durable store.
- ``etcd_member`` (one per session) and ``etcd_store`` (a fresh prefix per test): a real
  etcd started from the ``etcd`` on PATH. Without etcd those tests are skipped, saying so;
  set the ini option ``watchstore_require_etcd = true`` (in CI, say) to fail them instead.
- ``watchstore_options``: extra ``open_store`` arguments for every store fixture (default
  none); override it to set ``history=``, ``keep_epochs=``...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ..service.store import open_store
from .etcd import EtcdMember, etcd_binary

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from ..core.schema import Schema
    from ..service.store import Store

MISSING_SCHEMA = (
    "watchstore's store fixtures need your schema: define a fixture named "
    "`watchstore_schema` that returns your ws.Schema (in conftest.py, say: "
    "`@pytest.fixture\\ndef watchstore_schema() -> ws.Schema: return SCHEMA`)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ini option ``watchstore_require_etcd``."""
    parser.addini(
        "watchstore_require_etcd",
        type="bool",
        default=False,
        help="fail, rather than skip, the tests that use etcd_member or etcd_store when etcd "
        "is not installed (watchstore's fixtures)",
    )


@pytest.fixture
def watchstore_schema() -> Schema:
    """The schema of the store fixtures: override it with your own (this one fails the
    test, saying so)."""
    pytest.fail(MISSING_SCHEMA, pytrace=False)


@pytest.fixture
def watchstore_options() -> dict[str, Any]:
    """Extra ``open_store`` keyword arguments for every store fixture (none): override it."""
    return {}


@pytest.fixture
async def memory_store(
    watchstore_schema: Schema, watchstore_options: dict[str, Any]
) -> AsyncIterator[Store]:
    """A store in memory, open for the test and closed after it."""
    async with open_store(watchstore_schema, **watchstore_options) as store:
        yield store


@pytest.fixture
async def durable_store(
    watchstore_schema: Schema, watchstore_options: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Store]:
    """A store on an epoch log in ``tmp_path / "store"``, open for the test, closed after."""
    async with open_store(
        watchstore_schema, path=tmp_path / "store", **watchstore_options
    ) as store:
        yield store


@pytest.fixture(params=["memory", "durable"])
async def any_store(
    request: pytest.FixtureRequest,
    watchstore_schema: Schema,
    watchstore_options: dict[str, Any],
    tmp_path: Path,
) -> AsyncIterator[Store]:
    """A memory store, then (the test runs again) a durable one in ``tmp_path``."""
    path = tmp_path / "store" if request.param == "durable" else None
    async with open_store(watchstore_schema, path=path, **watchstore_options) as store:
        yield store


@pytest.fixture(scope="session")
def etcd_member(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EtcdMember]:
    """One etcd member on loopback for the whole session (skipped, saying why, without
    etcd; failed instead with ``watchstore_require_etcd = true``)."""
    if etcd_binary() is None:
        message = (
            "etcd is not installed (no `etcd` on PATH): install it to run this test "
            "(Debian and Ubuntu: apt-get install etcd-server)"
        )
        if request.config.getini("watchstore_require_etcd"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with EtcdMember.start(tmp_path_factory.mktemp("watchstore-etcd")) as member:
        yield member


@pytest.fixture
async def etcd_store(
    watchstore_schema: Schema, watchstore_options: dict[str, Any], etcd_member: EtcdMember
) -> AsyncIterator[Store]:
    """A store on the session's etcd member, under a prefix of its own (empty at first)."""
    async with open_store(
        watchstore_schema,
        etcd=etcd_member.endpoints,
        prefix=etcd_member.new_prefix(),
        **watchstore_options,
    ) as store:
        yield store
