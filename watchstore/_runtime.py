"""The event loop under the store: AnyIO, and the few fast paths each backend gives.

The store service and the proposers are written on AnyIO, so the same code runs under
``trio.run``, ``asyncio.run`` and ``anyio.run`` with either backend. A handful of things on
the commit path use the backend's own primitives instead, because AnyIO's portable ones cost
microseconds a call there (a commit to a memory store costs a few): the checkpoints, parking
a task until another wakes it (a watcher waiting for events, a writer waiting for the lock),
a one-shot wait that cannot be cancelled (a commit's fsync: the commit will happen), a call
in a worker thread that cannot be abandoned, events, and the current task's identity.

Request timeouts are timers (``call_later``) rather than cancel scopes: trio's scope with a
deadline costs an etcd request about 20 us of its 250, a timer of a run's timer task a heap
push.

``Runtime`` is that small set; ``current()`` picks the running backend's (through sniffio),
once, when a store opens. Both implementations are here, side by side, with the same
semantics, which trio defines: a task woken from a lot returns from ``park`` even if it was
cancelled in the same instant, and an uncancellable wait returns its result; a cancellation
that arrived meanwhile is delivered at the task's next checkpoint instead. On asyncio that
holds for AnyIO's cancel scopes and for a plain ``task.cancel()`` alike.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import anyio.lowlevel
import sniffio
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

T = TypeVar("T")

log = logging.getLogger("watchstore")


class Lot(Protocol):
    """Tasks parked until woken, in FIFO order (trio's ``ParkingLot``)."""

    async def park(self) -> None:
        """Wait until ``unpark`` or ``unpark_all`` picks this task (cancellable until then)."""

    def unpark(self) -> object:
        """Wake the longest parked task; truthy if there was one."""
        ...

    def unpark_all(self) -> object:
        """Wake every parked task."""
        ...

    def __bool__(self) -> bool:
        """True while a task is parked."""
        ...


class Waiter(Protocol):
    """A one-shot wake-up that cannot be cancelled (what it waits for will happen)."""

    async def wait(self) -> None:
        """Return once ``wake()`` was called (at once if it already was)."""

    def wake(self) -> None:
        """Let ``wait`` return (from any task of the event loop's thread)."""


class Event(Protocol):
    """The backend's event: ``set``, ``is_set``, ``await wait()``."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


class Scope(Protocol):
    """A cancel scope as a context manager (trio's or AnyIO's)."""

    @property
    def cancelled_caught(self) -> bool:
        """True if the scope's deadline cancelled its block."""
        ...

    def __enter__(self) -> Any: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> bool | None: ...


class Timer(Protocol):
    """A callback due at a time (``Runtime.call_later``)."""

    def cancel(self) -> object:
        """Do not call it (nothing happens if it ran already)."""
        ...


class Runtime(Protocol):
    """What the store needs of its event loop beyond AnyIO's portable API."""

    name: str
    """``trio`` or ``asyncio``."""
    checkpoint: Callable[[], Awaitable[None]]
    """A cancel point and a schedule point."""
    checkpoint_if_cancelled: Callable[[], Awaitable[None]]
    """A cancel point only (a schedule point only if cancelled)."""
    cancel_shielded_checkpoint: Callable[[], Awaitable[None]]
    """A schedule point only."""
    current_task: Callable[[], object]
    """The running task (compare by identity)."""
    event: Callable[[], Event]
    """A new event."""
    lot: Callable[[], Lot]
    """A new parking lot."""
    waiter: Callable[[], Waiter]
    """A new one-shot, uncancellable waiter."""
    wait_readable: Callable[[Any], Awaitable[None]]
    """Wait until a socket is readable."""
    wait_writable: Callable[[Any], Awaitable[None]]
    """Wait until a socket is writable."""

    def deadline(self, seconds: float) -> Scope:
        """A cancel scope whose block is cancelled ``seconds`` from now (``fail_after``
        without the exception: see ``cancelled_caught``)."""
        ...

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback()`` in the event loop's thread ``seconds`` from now, unless the
        timer is cancelled first. It must not block or raise (an error is logged)."""
        ...

    async def run_in_thread(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread: its result or error. Not cancellable once started
        (the caller waits for the thread; a cancellation comes at its next checkpoint)."""
        ...


# -- trio --------------------------------------------------------------------------------------


class _TrioWaiter:
    __slots__ = ("_task", "done")

    def __init__(self) -> None:
        self.done = False
        self._task: Any = None

    async def wait(self) -> None:
        if self.done:
            return
        self._task = _current_task()
        await _wait_task_rescheduled(_refuse_abort)

    def wake(self) -> None:
        self.done = True
        task = self._task
        if task is not None:
            self._task = None
            _reschedule(task)


# Bound once: a waiter is made, waited on and woken for every queued commit.
_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_reschedule = trio.lowlevel.reschedule
_ABORT_FAILED = trio.lowlevel.Abort.FAILED


def _refuse_abort(_raise_cancel: object) -> Any:
    return _ABORT_FAILED


def _call_logged(callback: Callable[[], object]) -> None:
    """``callback()``; an error is logged with its traceback, naming the callback, and goes
    no further: raised in trio's timer task it would end the whole run (TrioInternalError),
    on asyncio it would reach the loop's handler instead of the store's log. (watchstore's
    own callbacks raise nothing: see ``Runtime.call_later``.)"""
    try:
        callback()
    except Exception:
        log.exception("watchstore: timer callback %r failed", callback)


class _TrioTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _TrioTimers:
    """The timers of one trio run, called by a system task of the run (started with the
    first timer; cancelled, as trio's system tasks are, when the run's main task ends).

    Timers are mostly cancelled soon, and in the order they were set (requests answered
    in time): the ones cancelled at the front of the heap are dropped as new ones come, so
    the heap holds about the timers in force. The task sleeps until the earliest is due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _TrioTimer]] = []
        self._order = itertools.count()
        self._sleep: trio.CancelScope | None = None
        self._running = False

    def call_later(self, seconds: float, callback: Callable[[], object]) -> _TrioTimer:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        timer = _TrioTimer(callback)
        when = trio.current_time() + seconds
        heapq.heappush(heap, (when, next(self._order), timer))
        if not self._running:
            trio.lowlevel.spawn_system_task(self._run, name="watchstore timers")
            self._running = True
        elif self._sleep is not None and when < self._sleep.deadline:
            self._sleep.deadline = when
        return timer

    async def _run(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and (heap[0][2].cancelled or heap[0][0] <= now):
                timer = heapq.heappop(heap)[2]
                if not timer.cancelled:
                    timer.cancelled = True
                    _call_logged(timer.callback)  # an error here would end the whole run
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sleep:
                self._sleep = sleep
                await trio.sleep_forever()
            self._sleep = None


_TIMERS: trio.lowlevel.RunVar[_TrioTimers | None] = trio.lowlevel.RunVar(
    "watchstore_timers", default=None
)


class TrioRuntime:
    """The trio backend: trio.lowlevel, directly (its ParkingLot is the lot)."""

    name = "trio"

    def __init__(self) -> None:
        self.checkpoint: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint
        self.checkpoint_if_cancelled: Callable[[], Awaitable[None]] = (
            trio.lowlevel.checkpoint_if_cancelled
        )
        self.cancel_shielded_checkpoint: Callable[[], Awaitable[None]] = (
            trio.lowlevel.cancel_shielded_checkpoint
        )
        self.current_task: Callable[[], object] = trio.lowlevel.current_task
        self.event: Callable[[], Event] = trio.Event
        self.lot: Callable[[], Lot] = trio.lowlevel.ParkingLot
        self.waiter: Callable[[], Waiter] = _TrioWaiter
        self.wait_readable: Callable[[Any], Awaitable[None]] = trio.lowlevel.wait_readable
        self.wait_writable: Callable[[Any], Awaitable[None]] = trio.lowlevel.wait_writable

    def deadline(self, seconds: float) -> Scope:
        """trio's own scope (AnyIO's ``fail_after`` adds a generator and a wrapping scope);
        the etcd watch rests under one. Requests use timers instead (``call_later``)."""
        return trio.CancelScope(deadline=trio.current_time() + seconds)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """A timer of the run's timer task (see ``_TrioTimers``)."""
        timers = _TIMERS.get()
        if timers is None:
            timers = _TrioTimers()
            _TIMERS.set(timers)
        return timers.call_later(seconds, callback)

    async def run_in_thread(self, fn: Callable[[], T]) -> T:
        """Through ``start_thread_soon``: ``trio.to_thread.run_sync``'s capacity limiter,
        context copy and cancellation wrapping cost the trio thread 43 us a call here, this
        25 us (the group committer calls it for every batch it writes in a thread)."""
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def deliver(result: Any) -> None:  # an outcome.Outcome, from the worker thread
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        trio.lowlevel.start_thread_soon(fn, deliver)
        result: T = await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        return result


# -- asyncio -----------------------------------------------------------------------------------


async def _uncancellable(future: asyncio.Future[T]) -> T:
    """Wait for ``future`` whatever happens; a plain ``task.cancel()`` that arrived meanwhile
    is requested again once it is done, so the task's next await raises it (AnyIO's cancel
    scopes are held off by the shield and deliver at the next checkpoint by themselves)."""
    cancelled: asyncio.CancelledError | None = None
    with anyio.CancelScope(shield=True):
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError as exc:
                cancelled = exc
    if cancelled is not None:
        _cancel_again(cancelled)
    return future.result()


def _cancel_again(cancelled: asyncio.CancelledError) -> None:
    """Request again the cancellation ``cancelled`` that a wait absorbed: the task's
    cancellation count stays as it was, and its next await raises it."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
        task.cancel(*cancelled.args[:1])


class _AsyncioWaiter:
    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        future = self._future
        if future is None:
            future = self._future = asyncio.get_running_loop().create_future()
        elif future.done():
            return
        await _uncancellable(future)

    def wake(self) -> None:
        future = self._future
        if future is None:
            future = self._future = asyncio.get_running_loop().create_future()
        if not future.done():
            future.set_result(None)


class _AsyncioLot:
    __slots__ = ("_parked",)

    def __init__(self) -> None:
        self._parked: deque[asyncio.Future[None]] = deque()

    async def park(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._parked.append(future)
        try:
            await future
        except asyncio.CancelledError as exc:
            if future.cancelled():  # cancelled while parked: leave the lot
                with contextlib.suppress(ValueError):  # unless an unpark passed it over
                    self._parked.remove(future)
                raise
            # Woken in the same instant: the wake-up wins (it may have handed this task a
            # lock); the cancellation comes at the next await, as on trio.
            _cancel_again(exc)

    def unpark(self) -> bool:
        parked = self._parked
        while parked:
            future = parked.popleft()
            if not future.done():
                future.set_result(None)
                return True
        return False

    def unpark_all(self) -> None:
        parked, self._parked = self._parked, deque()
        for future in parked:
            if not future.done():
                future.set_result(None)

    def __bool__(self) -> bool:
        return bool(self._parked)


class AsyncioRuntime:
    """The asyncio backend: futures, and AnyIO's checkpoints and events."""

    name = "asyncio"

    def __init__(self) -> None:
        self.checkpoint: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint
        self.checkpoint_if_cancelled: Callable[[], Awaitable[None]] = (
            anyio.lowlevel.checkpoint_if_cancelled
        )
        self.cancel_shielded_checkpoint: Callable[[], Awaitable[None]] = (
            anyio.lowlevel.cancel_shielded_checkpoint
        )
        self.current_task: Callable[[], object] = asyncio.current_task
        self.event: Callable[[], Event] = anyio.Event
        self.lot: Callable[[], Lot] = _AsyncioLot
        self.waiter: Callable[[], Waiter] = _AsyncioWaiter
        self.wait_readable: Callable[[Any], Awaitable[None]] = anyio.wait_readable
        self.wait_writable: Callable[[Any], Awaitable[None]] = anyio.wait_writable

    def deadline(self, seconds: float) -> Scope:
        """AnyIO's scope."""
        return anyio.CancelScope(deadline=anyio.current_time() + seconds)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """The loop's own timer."""
        return asyncio.get_running_loop().call_later(seconds, _call_logged, callback)

    async def run_in_thread(self, fn: Callable[[], T]) -> T:
        """In watchstore's own worker threads: the loop's default executor is shared, and a
        commit's write must not queue behind the program's other jobs."""
        loop = asyncio.get_running_loop()
        return await _uncancellable(loop.run_in_executor(_executor(), fn))


_EXECUTOR: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="watchstore")
    return _EXECUTOR


_RUNTIMES: dict[str, Runtime] = {}


def current() -> Runtime:
    """The runtime of the running event loop (trio or asyncio); RuntimeError outside one."""
    try:
        name = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError(
            "watchstore runs in an event loop: call it from trio.run, asyncio.run or anyio.run"
        ) from None
    runtime = _RUNTIMES.get(name)
    if runtime is None:
        if name == "trio":
            runtime = TrioRuntime()
        elif name == "asyncio":
            runtime = AsyncioRuntime()
        else:
            raise RuntimeError(f"watchstore runs on trio or asyncio, not on {name}")
        _RUNTIMES[name] = runtime
    return runtime
