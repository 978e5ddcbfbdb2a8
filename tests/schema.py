"""A small cluster schema shared by the tests: nodes and tasks, SwarmKit-style."""

from __future__ import annotations

import enum

import attrs

import watchstore as ws


class State(enum.IntEnum):
    """Task states; numerically ordered like SwarmKit's, so ranges scan by number."""

    NEW = 0
    ASSIGNED = 2
    RUNNING = 10
    FAILED = 20


@attrs.frozen
class Task:
    id: str
    service_id: str
    node_id: str | None = None
    state: State = State.NEW
    slot: int = 0
    meta: ws.Meta = ws.Meta()


@attrs.frozen
class Node:
    id: str
    name: str
    labels: frozenset[str] = frozenset()
    meta: ws.Meta = ws.Meta()


SCHEMA = ws.Schema(
    ws.Table(
        Task,
        indexes=[
            ws.Index("service_id"),
            ws.Index("node_id"),
            ws.Index("state"),
            ws.Index(key=lambda t: (t.service_id, t.slot), name="service_slot"),
            ws.Index(
                key=lambda t: t.node_id if t.state == State.RUNNING else None, name="running_on"
            ),
        ],
    ),
    ws.Table(
        Node,
        indexes=[ws.Index("name", unique=True, fold_case=True), ws.Index("labels", multi=True)],
    ),
)
