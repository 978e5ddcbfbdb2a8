"""watchstore in a plain asyncio service: an API writes what users want, a controller makes it so.

No AnyIO or trio in sight: ``asyncio.run``, an ``asyncio.TaskGroup``, an ``asyncio.Event``.
A Deployment says which version of an app should run and how many replicas; the controller
watches deployments and pods (``store.view_and_watch``) and reconciles each one that changes
in one transaction: it starts the pods that are missing, stops the extra and outdated ones,
and writes the deployment's status. With ``--path DIR`` the store is durable, and each run
rolls ``web`` out to the next version from where the previous run left it.

    python examples/asyncio_service.py                        # in memory
    python examples/asyncio_service.py --path service-state   # run it twice
"""

from __future__ import annotations

import argparse
import asyncio

import attrs

import watchstore as ws


@attrs.frozen
class Deployment:
    id: str
    version: int  # spec: written by the API
    replicas: int
    ready: int = 0  # status: written by the controller
    meta: ws.Meta = ws.Meta()


@attrs.frozen
class Pod:
    id: str  # "<deployment>-v<version>-<slot>"
    deployment: str
    version: int
    slot: int
    meta: ws.Meta = ws.Meta()


SCHEMA = ws.Schema(ws.Table(Deployment), ws.Table(Pod, indexes=[ws.Index("deployment")]))


async def controller(store: ws.Store, ready: asyncio.Event) -> None:
    """Reconcile every deployment that changes or whose pods change, until cancelled."""
    names = lambda tx: [d.id for d in tx.all(Deployment)]  # noqa: E731
    while True:
        async with store.view_and_watch(names, ws.on(Deployment), ws.on(Pod)) as (dirty, events):
            ready.set()
            try:
                for name in dirty:  # changed before we were watching
                    await store.update(lambda tx: reconcile(tx, name))
                async for event in events:
                    if not isinstance(event, ws.Committed):
                        obj = event.obj
                        name = obj.id if isinstance(obj, Deployment) else obj.deployment
                        await store.update(lambda tx: reconcile(tx, name))
            except ws.WatchOverflow:
                continue  # fell behind: list every deployment again


def reconcile(tx: ws.Tx, name: str) -> None:
    """Make the pods of ``name`` match its spec, in this one transaction."""
    want = tx.get(Deployment, name)
    version, replicas = (want.version, want.replicas) if want else (0, 0)
    pods = tx.find(Pod, deployment=name)
    stop = [p for p in pods if p.version != version or p.slot > replicas]
    have = {p.slot for p in pods if p not in stop}
    start = [Pod(f"{name}-v{version}-{n}", name, version, n) for n in range(1, replicas + 1)]
    start = [p for p in start if p.slot not in have]
    for pod in stop:
        tx.delete(pod)
    for pod in start:
        tx.create(pod)
    if want is not None and want.ready != replicas:
        tx.update(attrs.evolve(want, ready=replicas))
    for verb, some in ("start", start), ("stop", stop):
        if some:  # said before the commit, so before the API can see it
            say("controller", f"{name}: {verb} {', '.join(p.id for p in some)}")


def deploy(tx: ws.Tx, name: str, version: int, replicas: int) -> None:
    """``PUT /deployments/{name}``: write the spec, keep the status the controller wrote."""
    current = tx.get(Deployment, name) or Deployment(name, version, replicas)
    tx.upsert(attrs.evolve(current, version=version, replicas=replicas))


def converged(tx: ws.ReadTx) -> bool:
    """True when the pods are exactly those the deployments' specs ask for."""
    specs = [(d.id, d.version, s) for d in tx.all(Deployment) for s in range(1, d.replicas + 1)]
    return {f"{n}-v{v}-{s}" for n, v, s in specs} == {p.id for p in tx.all(Pod)}


async def settled(store: ws.Store) -> None:
    """Wait for the controller to catch up (looked at after every commit)."""
    async with store.watch(ws.on_commit()) as commits:
        while not store.view(converged):
            await commits.receive()


async def api(store: ws.Store) -> None:
    """The requests a user and a node send; each waits for the controller to converge."""
    web = store.view(lambda tx: tx.get(Deployment, "web"))
    version = web.version + 1 if web else 1
    say("api", f"PUT /deployments/web version={version} replicas=3")
    await store.update(lambda tx: deploy(tx, "web", version, 3))
    await settled(store)
    say("node", f"web-v{version}-2 exited")
    await store.update(lambda tx: tx.delete(Pod, f"web-v{version}-2"))
    await settled(store)
    say("api", "PUT /deployments/web replicas=2")
    await store.update(lambda tx: deploy(tx, "web", version, 2))
    await settled(store)


def say(who: str, what: str) -> None:
    print(f"{who + ':':<11} {what}")


async def main(path: str | None) -> None:
    async with ws.open_store(SCHEMA, path=path) as store:
        web = store.view(lambda tx: tx.get(Deployment, "web"))
        found = f"web v{web.version}, {web.ready} ready" if web else "empty"
        say("store", f"{f'in {path}/' if path else 'in memory'} at {store.version}: {found}")
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            watching = tg.create_task(controller(store, ready))
            await ready.wait()  # the controller watches: no request goes unseen
            await api(store)
            watching.cancel()
        pods = store.view(lambda tx: ", ".join(p.id for p in tx.all(Pod)))
        say("store", f"closing at {store.version}: {pods}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", help="a durable store in this directory (default: in memory)")
    asyncio.run(main(parser.parse_args().path))
