"""The runtime under the store (``watchstore._runtime``): the same semantics on trio and asyncio.

The store's lock hand-off, its commits' fsync waits and its worker-thread writes rely on them:
a task woken from a lot keeps the wake-up even if it is cancelled in the same instant (it may
have been handed the lock), and an uncancellable wait returns its result, the cancellation
coming at the next checkpoint. On asyncio that must hold for AnyIO's cancel scopes and for a
plain ``task.cancel()`` alike, which these tests also try under ``asyncio.run`` directly.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from watchstore import _runtime

if TYPE_CHECKING:
    from collections.abc import Callable


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):
        if predicate():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("the condition never held")


def test_outside_an_event_loop_the_runtime_says_where_to_call_from() -> None:
    with pytest.raises(RuntimeError, match=r"trio\.run, asyncio\.run or anyio\.run"):
        _runtime.current()


async def test_the_runtime_is_the_running_backends(anyio_backend: str) -> None:
    runtime = _runtime.current()
    assert runtime.name == anyio_backend
    assert _runtime.current() is runtime


async def test_a_lot_wakes_parked_tasks_in_order() -> None:
    runtime = _runtime.current()
    lot = runtime.lot()
    woken: list[int] = []

    async def park(n: int) -> None:
        await lot.park()
        woken.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(park, n)
            await anyio.wait_all_tasks_blocked()  # parked before the next one
        assert lot.unpark()
        await _until(lambda: woken == [0])
        assert lot.unpark()
        await _until(lambda: woken == [0, 1])
        lot.unpark_all()
    assert woken == [0, 1, 2]
    assert not lot.unpark()


async def test_a_task_cancelled_while_parked_leaves_the_lot() -> None:
    runtime = _runtime.current()
    lot = runtime.lot()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lot.park)
        await _until(lambda: bool(lot))
        tg.cancel_scope.cancel()
    assert not lot
    assert not lot.unpark()  # nobody left to wake


async def test_a_task_woken_and_cancelled_in_one_instant_keeps_the_wake_up() -> None:
    runtime = _runtime.current()
    lot = runtime.lot()
    seen: list[str] = []

    async def parker(*, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await lot.park()
            seen.append("woken")
            try:
                await runtime.checkpoint()
            except anyio.get_cancelled_exc_class():
                seen.append("cancelled at the next checkpoint")
                raise

    async with anyio.create_task_group() as tg:
        scope = await tg.start(parker)
        await _until(lambda: bool(lot))
        assert lot.unpark()
        scope.cancel()  # same step: no checkpoint between the wake-up and the cancel
    assert seen == ["woken", "cancelled at the next checkpoint"]


async def test_an_uncancellable_wait_returns_and_the_cancel_comes_after() -> None:
    runtime = _runtime.current()
    waiter = runtime.waiter()
    seen: list[str] = []

    async def wait(*, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await waiter.wait()
            seen.append("returned")
            await runtime.checkpoint()
            seen.append("not cancelled")

    async with anyio.create_task_group() as tg:
        scope = await tg.start(wait)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert seen == []  # still waiting, cancelled or not
        waiter.wake()
    assert seen == ["returned"]


async def test_a_wake_before_the_wait_is_not_lost() -> None:
    waiter = _runtime.current().waiter()
    waiter.wake()
    with anyio.fail_after(5):
        await waiter.wait()


async def test_run_in_thread_is_not_abandoned_when_cancelled() -> None:
    runtime = _runtime.current()
    release = threading.Event()
    results: list[object] = []

    def work() -> str:
        release.wait(10)
        return f"done in {threading.current_thread().name}"

    async def run(*, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            results.append(await runtime.run_in_thread(work))
            await runtime.checkpoint()
            results.append("not cancelled")

    async with anyio.create_task_group() as tg:
        scope = await tg.start(run)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert results == []  # the caller still waits for its thread
        release.set()
    assert len(results) == 1
    assert str(results[0]).startswith("done in ")
    assert threading.current_thread().name not in str(results[0])


async def test_run_in_thread_raises_the_functions_error() -> None:
    def fail() -> None:
        raise ZeroDivisionError("from the thread")

    with pytest.raises(ZeroDivisionError, match="from the thread"):
        await _runtime.current().run_in_thread(fail)


# -- asyncio's own cancellation: task.cancel() ---------------------------------------------


def test_on_asyncio_a_plain_task_cancel_keeps_a_wake_up_and_comes_after() -> None:
    async def main() -> list[str]:
        runtime = _runtime.current()
        lot = runtime.lot()
        seen: list[str] = []

        async def parker() -> None:
            await lot.park()
            seen.append("woken")
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                seen.append("cancelled at the next await")
                raise

        task = asyncio.create_task(parker())
        await _until(lambda: bool(lot))
        lot.unpark()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelling() == 1  # requested once, as the caller asked
        return seen

    assert asyncio.run(main()) == ["woken", "cancelled at the next await"]


def test_on_asyncio_a_plain_task_cancel_waits_for_the_thread() -> None:
    async def main() -> list[str]:
        runtime = _runtime.current()
        release = threading.Event()
        seen: list[str] = []

        async def run() -> None:
            seen.append(await runtime.run_in_thread(lambda: "written" if release.wait(10) else ""))
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                seen.append("cancelled at the next await")
                raise

        task = asyncio.create_task(run())
        for _ in range(3):  # the task runs up to its wait for the thread
            await asyncio.sleep(0)
        task.cancel()
        for _ in range(3):  # the cancellation is delivered to it
            await asyncio.sleep(0)
        assert not task.done()  # a cancel does not abandon the write
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    assert asyncio.run(main()) == ["written", "cancelled at the next await"]


def test_on_asyncio_a_plain_task_cancel_of_a_parked_task_leaves_the_lot() -> None:
    async def main() -> None:
        lot = _runtime.current().lot()
        task = asyncio.create_task(lot.park())
        await _until(lambda: bool(lot))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not lot
        assert not lot.unpark()

    asyncio.run(main())


async def test_timers_fire_in_due_order_and_cancelled_ones_never(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An earlier timer set after a later one still fires first (on trio the timer task's
    sleep is cut short), a cancelled one never fires, and a callback that raises is logged
    without stopping the others."""
    runtime = _runtime.current()
    fired: list[str] = []

    def fail() -> None:
        fired.append("fails")
        raise RuntimeError("test: a failing callback")

    done = anyio.Event()

    def last() -> None:
        fired.append("later")
        done.set()

    later = runtime.call_later(0.3, last)
    dropped = runtime.call_later(0.05, lambda: fired.append("dropped"))
    runtime.call_later(0.1, fail)
    runtime.call_later(0.05, lambda: fired.append("sooner"))
    dropped.cancel()
    with anyio.fail_after(5):
        await done.wait()
    assert fired == ["sooner", "fails", "later"]
    assert "<locals>.fail at" in caplog.text  # the log names the callback that failed
    later.cancel()  # after it ran: nothing happens
    await anyio.sleep(0.1)
    assert fired == ["sooner", "fails", "later"]
