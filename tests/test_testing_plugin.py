"""The pytest plugin that installing watchstore registers: a user's tests, run by pytest as
in the user's own project (pytester: a separate directory and session), get stores from its
fixtures, on trio and asyncio, in memory, on disk and on a real etcd.

The user's test module is the one docs/testing.md shows, taken from the page itself.
"""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

from tests.etcd_cluster import require_etcd

pytest_plugins = ["pytester"]

GUIDE = pathlib.Path(__file__).parent.parent / "docs" / "testing.md"

USER_CONFIG = """
[pytest]
anyio_mode = auto
"""

SCHEMA_AND_BACKENDS = """
import attrs
import pytest

import watchstore as ws


@attrs.frozen
class Task:
    id: str
    meta: ws.Meta = ws.Meta()


@pytest.fixture
def watchstore_schema():
    return ws.Schema(ws.Table(Task))


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request):
    return request.param
"""


def guide_file(name: str) -> str:
    """The block of docs/testing.md that starts with ``# name``."""
    for block in re.findall(r"```(?:python|toml)\n(.*?)```", GUIDE.read_text(), re.DOTALL):
        if block.startswith(f"# {name}\n"):
            return str(block)
    raise AssertionError(f"docs/testing.md shows no {name}")


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """An empty project of a user, configured as docs/testing.md says."""
    assert "anyio_mode" in guide_file("pyproject.toml")
    pytester.makeini(USER_CONFIG)
    return pytester


def test_the_users_test_module_of_the_guide_passes_on_memory_and_durable_stores(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(test_scheduler=guide_file("test_scheduler.py"))
    result = user_project.runpytest("-v", "-p", "no:cacheprovider")
    # 2 tests on any_store (memory and durable) + 1 durable + 1 memory, each on 2 backends
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(
        [
            "*test_a_new_task_is_assigned?trio-memory? PASSED*",
            "*test_a_new_task_is_assigned?trio-durable? PASSED*",
            "*test_a_new_task_is_assigned?asyncio-memory? PASSED*",
            "*test_a_new_task_is_assigned?asyncio-durable? PASSED*",
        ]
    )


def test_a_durable_store_lives_in_the_tests_own_tmp_path(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        SCHEMA_AND_BACKENDS
        + textwrap.dedent(
            """
            async def test_durable(durable_store, tmp_path):
                await durable_store.update(lambda tx: tx.create(Task("t1")))
                assert (tmp_path / "store").is_dir()
                assert any((tmp_path / "store").iterdir())


            async def test_memory(memory_store, tmp_path):
                await memory_store.update(lambda tx: tx.create(Task("t1")))
                assert not (tmp_path / "store").exists()
            """
        )
    )
    user_project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=4)


def test_in_anyio_strict_mode_tests_marked_anyio_get_the_stores(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")  # AnyIO's default mode: only marked tests are its own
    pytester.makepyfile(
        SCHEMA_AND_BACKENDS
        + textwrap.dedent(
            """
            @pytest.mark.anyio
            async def test_marked(memory_store):
                await memory_store.update(lambda tx: tx.create(Task("t1")))
                assert memory_store.view(lambda tx: tx.count(Task)) == 1
            """
        )
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_without_a_schema_the_store_fixtures_say_what_to_define(
    user_project: pytest.Pytester,
) -> None:
    user_project.makepyfile(
        """
        async def test_it(memory_store):
            pass
        """
    )
    result = user_project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)  # AnyIO's anyio_backend: every backend installed
    result.stdout.fnmatch_lines(["*define a fixture named `watchstore_schema`*"])


def test_options_reach_open_store(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        SCHEMA_AND_BACKENDS
        + textwrap.dedent(
            """
            @pytest.fixture
            def watchstore_options():
                return {"history": 1}


            async def test_it(memory_store):  # history=1: the first commit is forgotten
                for i in range(3):
                    await memory_store.update(lambda tx: tx.create(Task(f"t{i}")))
                with pytest.raises(ws.HistoryCompacted):
                    async with memory_store.watch_from(ws.Version(1)):
                        pass
            """
        )
    )
    user_project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


ETCD_TEST = SCHEMA_AND_BACKENDS + textwrap.dedent(
    """
    import watchstore.testing


    async def test_etcd(etcd_store, etcd_member):
        await etcd_store.update(lambda tx: tx.create(Task("t1")))
        async with ws.open_store(
            ws.Schema(ws.Table(Task)), etcd=etcd_member.endpoints, prefix="elsewhere"
        ) as other:
            assert other.view(lambda tx: tx.count(Task)) == 0
        assert etcd_store.view(lambda tx: tx.count(Task)) == 1


    async def test_a_fresh_prefix_each_time(etcd_store):
        assert etcd_store.view(lambda tx: tx.count(Task)) == 0
    """
)


def test_etcd_store_is_a_store_on_a_real_etcd_member_under_a_fresh_prefix(
    user_project: pytest.Pytester,
) -> None:
    require_etcd()
    user_project.makepyfile(ETCD_TEST)
    result = user_project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


@pytest.mark.parametrize(
    ("required", "outcome"),
    [("false", {"skipped": 4}), ("true", {"errors": 4})],
    ids=["skipped", "failed-when-required"],
)
def test_without_etcd_its_tests_are_skipped_naming_it_or_failed_when_required(
    user_project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
    required: str,
    outcome: dict[str, int],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-etcd-here"))
    user_project.makeini(USER_CONFIG + f"watchstore_require_etcd = {required}\n")
    user_project.makepyfile(ETCD_TEST)
    result = user_project.runpytest("-rsE", "-p", "no:cacheprovider")
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines(["*etcd is not installed (no `etcd` on PATH)*"])


def test_the_plugin_is_registered_by_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("watchstore")
    assert plugin is not None
    assert getattr(plugin, "__name__", None) == "watchstore.testing.plugin"
