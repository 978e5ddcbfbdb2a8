"""A reconcile-loop controller: services in, tasks out, in the style of SwarmKit's orchestrator.

Users write a service's *spec* (how many replicas); the controller watches services and
tasks, and converges: it creates the tasks a service lacks, replaces failed ones, removes
extras, and writes what it did into the service's *status* (running, restarts).

Every write is optimistic: an update made from a copy whose ``meta.version`` is no longer the
stored one raises ``SequenceConflict`` carrying the current object, and the writer applies its
change again to that. The controller plans from a view and commits the plan; a command-line
user edits a service from a copy it read earlier, and conflicts when the controller wrote the
status in between (SwarmKit's "update out of sequence"): it retries on the current copy.

    python examples/controller.py                      # --backend asyncio: on asyncio
"""

from __future__ import annotations

import argparse
import enum
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.abc
import attrs

import watchstore as ws

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

T = TypeVar("T")


class TaskState(enum.IntEnum):
    RUNNING = 1
    FAILED = 2


@attrs.frozen
class Service:
    id: str
    replicas: int  # spec: written by users
    running: int = 0  # status: written by the controller
    restarts: int = 0
    meta: ws.Meta = ws.Meta()


@attrs.frozen
class Task:
    id: str  # "<service>.<slot>.<attempt>"
    service_id: str
    slot: int
    attempt: int = 1
    state: TaskState = TaskState.RUNNING
    meta: ws.Meta = ws.Meta()


SCHEMA = ws.Schema(
    ws.Table(Service),
    ws.Table(Task, indexes=[ws.Index("service_id"), ws.Index("state")]),
)

# Every service change, a task that fails and a task that disappears wake the controller.
WATCHED = (ws.on(Service), ws.on_update(Task, state=TaskState.FAILED), ws.on_delete(Task))


class Controller:
    """Converges each service's tasks to its spec, one service per transaction."""

    def __init__(self, store: ws.Store) -> None:
        self.store = store
        self.conflicts = 0
        """Plans that met a concurrent write and were made again."""

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Reconcile until cancelled; started once the first list is taken and watched."""
        while True:
            list_all = lambda tx: [s.id for s in tx.all(Service)]  # noqa: E731
            async with self.store.view_and_watch(list_all, *WATCHED) as (service_ids, events):
                task_status.started()
                task_status = anyio.TASK_STATUS_IGNORED
                dirty = dict.fromkeys(service_ids)
                try:
                    while True:
                        for service_id in dirty:
                            await self.reconcile(service_id)
                        dirty = {}
                        for event in await receive_all(events):
                            if not isinstance(event, ws.Committed):
                                obj = event.obj
                                dirty[obj.id if isinstance(obj, Service) else obj.service_id] = None
                except ws.WatchOverflow:
                    continue  # fell behind: list everything again

    async def reconcile(self, service_id: str) -> None:
        """Plan from the current state, commit the plan; plan again if it went stale."""
        while True:
            service, tasks = self.store.view(
                lambda tx: (tx.get(Service, service_id), tx.find(Task, service_id=service_id))
            )
            work = plan(service_id, service, tasks)
            if not work:
                return
            say("controller", f"{service_id}: {work.describe()}")
            try:
                await self.store.update(work.commit)
                return
            except ws.SequenceConflict as exc:
                self.conflicts += 1
                say("controller", f"{exc.current.id} changed since it was read; planning again")


@attrs.frozen
class Plan:
    """What converges one service: tasks to delete and create, and its new status.

    It is made from objects read before the transaction that commits it: deleting a task
    object and updating the service check their ``meta.version``, so if either changed
    meanwhile, SequenceConflict aborts the whole plan.
    """

    delete: tuple[Task, ...] = ()
    create: tuple[Task, ...] = ()
    status: Service | None = None

    def __bool__(self) -> bool:
        return bool(self.delete or self.create or self.status)

    def commit(self, tx: ws.Tx) -> None:
        for task in self.delete:
            tx.delete(task)
        for task in self.create:
            tx.create(task)
        if self.status is not None:
            tx.update(self.status)

    def describe(self) -> str:
        done = []
        if self.delete:
            done.append(f"delete {', '.join(t.id for t in self.delete)}")
        if self.create:
            done.append(f"create {', '.join(t.id for t in self.create)}")
        if self.status is not None:
            done.append(f"status running={self.status.running} restarts={self.status.restarts}")
        return "; ".join(done)


def plan(service_id: str, service: Service | None, tasks: Sequence[Task]) -> Plan:
    """What it takes for the tasks of ``service`` to match its spec."""
    if service is None:  # deleted: remove its tasks
        return Plan(delete=tuple(tasks))
    failed = [t for t in tasks if t.state is TaskState.FAILED]
    running = [t for t in tasks if t.state is TaskState.RUNNING]
    replacements = [
        Task(f"{service_id}.{t.slot}.{t.attempt + 1}", service_id, t.slot, t.attempt + 1)
        for t in failed
    ]
    taken = {t.slot for t in tasks}
    missing = [
        Task(f"{service_id}.{slot}.1", service_id, slot)
        for slot in range(1, service.replicas + 1)
        if slot not in taken
    ]
    extra = [t for t in running if t.slot > service.replicas]
    status = attrs.evolve(
        service, running=service.replicas, restarts=service.restarts + len(failed)
    )
    return Plan(
        delete=(*failed, *extra),
        create=(*replacements, *missing),
        status=status if status != service else None,
    )


async def update_with_retry(store: ws.Store, copy: T, change: Callable[[T], T]) -> T:
    """Write ``change(copy)``; on SequenceConflict, apply ``change`` to the current object."""
    while True:
        try:
            return await store.update(lambda tx: tx.update(change(copy)))
        except ws.SequenceConflict as exc:
            say(
                "cli",
                f"SequenceConflict: {exc.current.id} was written at {exc.current.meta.version}",
            )
            say("cli", "re-applying the change to the current copy")
            copy = exc.current


async def receive_all(events: ws.Watch[ws.Event]) -> list[ws.Event]:
    """Wait for the next event, then take every event already waiting."""
    out = [await events.receive()]
    while True:
        try:
            out.append(events.receive_nowait())
        except ws.WouldBlock:
            return out


def converged(tx: ws.ReadTx) -> bool:
    """True when every service runs exactly its replicas and reports it, and no task is
    failed or left over from a deleted service."""
    services = {s.id: s for s in tx.all(Service)}
    for task in tx.all(Task):
        if task.service_id not in services or task.state is TaskState.FAILED:
            return False
    return all(
        s.running == s.replicas and tx.count(Task, service_id=s.id) == s.replicas
        for s in services.values()
    )


async def until_converged(store: ws.Store) -> None:
    """Return once the controller has caught up (looked at after every commit)."""
    async with store.watch(ws.on_commit()) as commits:
        while not store.view(converged):
            await commits.receive()


def say(who: str, what: str) -> None:
    print(f"  {who + ':':<11} {what}")


def tasks_of(tx: ws.ReadTx, service_id: str) -> str:
    return ", ".join(t.id for t in tx.find(Task, service_id=service_id)) or "none"


async def demo() -> None:
    async with ws.open_store(SCHEMA) as store, anyio.create_task_group() as tg:
        controller = Controller(store)
        await tg.start(controller.run)

        print("1. a user creates two services; the controller creates their tasks")

        def create_services(tx: ws.Tx) -> None:
            tx.create(Service("web", replicas=3))
            tx.create(Service("api", replicas=2))

        await store.update(create_services)
        await until_converged(store)

        print("2. the cli reads web to scale it; meanwhile a task of web fails")
        cli_copy = store.view(lambda tx: tx.get(Service, "web"))
        assert cli_copy is not None
        say("cli", f"read web at {cli_copy.meta.version} (replicas={cli_copy.replicas})")
        failing = store.view(lambda tx: tx.get(Task, "web.2.1"))
        assert failing is not None
        await store.update(lambda tx: tx.update(attrs.evolve(failing, state=TaskState.FAILED)))
        say("worker", "web.2.1 failed")
        await until_converged(store)

        print("3. the cli writes replicas=5 from its copy, which the controller made stale")
        web = await update_with_retry(store, cli_copy, lambda s: attrs.evolve(s, replicas=5))
        say("cli", f"web written at {web.meta.version}: replicas={web.replicas}")
        await until_converged(store)

        print("4. scale api down to 1, then delete it")
        api = store.view(lambda tx: tx.get(Service, "api"))
        assert api is not None
        await store.update(lambda tx: tx.update(attrs.evolve(api, replicas=1)))
        await until_converged(store)
        await store.update(lambda tx: tx.delete(Service, "api"))
        await until_converged(store)

        print("5. converged")
        say("web", store.view(lambda tx: tasks_of(tx, "web")))
        say("api", store.view(lambda tx: tasks_of(tx, "api")))
        web_now = store.view(lambda tx: tx.get(Service, "web"))
        assert web_now is not None
        say("status", f"web running={web_now.running} restarts={web_now.restarts}")
        say("store", f"at {store.version}; controller plans made again: {controller.conflicts}")
        tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=["trio", "asyncio"],
        default="trio",
        help="the event loop to run on (default: trio)",
    )
    args = parser.parse_args(argv)
    anyio.run(demo, backend=args.backend)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
