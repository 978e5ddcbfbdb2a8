"""Fan-out of commits to watchers, and the commit history (sans-I/O).

The commit callback calls ``Hub.publish(change)`` synchronously: it records the change in the
history ring, routes its events (``events.Router``) and appends each watcher's share to that
watcher's queue (a :class:`Subscriber`), a whole transaction at a time. Nothing there waits, so
a watcher that does not read never slows a writer or another watcher. The watchers' queues
and their waiting live in the service (``watchstore.service.watch``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

from .errors import WatcherFailed
from .events import Router, Spec
from .history import DEFAULT_HISTORY_BYTES, History
from .model import Change, Version, action_fields, new_action, new_change

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

DEFAULT_HISTORY: Final = 10_000
"""Default number of recent commits kept in memory for ``watch_from``."""


class Subscriber(Protocol):
    """A watcher's queue, as the hub feeds it."""

    def _deliver(self, items: Sequence[Any], previous: Version) -> None:
        """Take the items of one commit; ``previous`` is the commit before it."""

    def _fail(self, error: BaseException) -> None:
        """End the watch with ``error`` after what it already has."""


class Hub:
    """Routes every commit to the watchers that selected it, and keeps recent history.

    ``floor`` is the newest version *not* in the history: every commit after it is there.
    """

    def __init__(
        self,
        start: Version,
        history: int = DEFAULT_HISTORY,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
    ) -> None:
        self.router = Router()
        self._routed = self.router._specs  # a plain dict: testing it costs no Python call
        self.change_watchers: dict[Subscriber, None] = {}
        self.history = History(start, history, history_bytes)
        self.head = start
        """The last version published (what a watcher dropped at the next one saw last)."""
        self._record = self.history.append
        self._record_one = self.history.append_one
        self.commits = 0
        """Commits published (``store.statistics().commits``)."""
        self.overflows = 0
        """Watchers dropped because their queue was full (counted by the watch)."""

    @property
    def floor(self) -> Version:
        """The newest version not in the history: every commit after it is there."""
        return self.history.floor

    @floor.setter
    def floor(self, version: Version) -> None:
        self.history.floor = version
        self.head = max(self.head, version)

    def subscribe(self, watch: Subscriber, specs: Sequence[Spec], *, changes: bool) -> None:
        """Start delivering to ``watch``: whole Changes if ``changes``, else routed events."""
        if changes:
            self.change_watchers[watch] = None
        else:
            self.router.subscribe(watch, specs)

    def unsubscribe(self, watch: Subscriber) -> None:
        """Stop delivering to ``watch`` (idempotent)."""
        if watch in self.change_watchers:
            del self.change_watchers[watch]
        elif watch in self.router:
            self.router.unsubscribe(watch)

    def publish(self, change: Change) -> None:
        """Deliver one committed change. Runs in the commit path: never waits."""
        self._record(change)
        if self._routed or self.change_watchers:
            self._route(change)
        self.head = change.version
        self.commits += 1

    def publish_one(self, version: Version, table: str, old: Any, new: Any) -> None:
        """``publish`` for a commit that changed one object of ``table`` from ``old`` to
        ``new`` (None: absent): its Change is only built if a watcher is there to take it."""
        self._record_one(version.index, table, old, new)
        if self._routed or self.change_watchers:
            self._route(new_change(version, [new_action(*action_fields(table, old, new))]))
        self.head = version
        self.commits += 1

    def _route(self, change: Change) -> None:
        previous = self.head
        if self._routed:
            failed: dict[Any, Exception] = {}
            for watch, events in self.router.route(change, failed).items():
                if watch not in failed:
                    watch._deliver(events, previous)
            for watch, error in failed.items():
                watch._fail(_watcher_failed(error, change.version))
        if self.change_watchers:
            for watch in list(self.change_watchers):
                watch._deliver((change,), previous)

    def close(self, error: BaseException) -> None:
        """Fail every watcher with ``error`` (the store closed)."""
        for watch in self.watchers():
            watch._fail(error)

    def watchers(self) -> list[Any]:
        """Every watcher subscribed now (routed events or whole changes)."""
        return [*self.router.keys(), *self.change_watchers]

    def replay_from(self, version: Version) -> list[Change] | None:
        """The commits after ``version`` (in order), or None if some are not in memory."""
        return self.history.replay(version)


def _watcher_failed(error: Exception, version: Version) -> WatcherFailed:
    failed = WatcherFailed(
        f"a where= predicate of this watch (or a field it compares) raised {error!r} for an "
        f"object of {version!r}; the watch is closed (the commit and other watchers are not "
        "affected): fix the predicate, then watch_from the last version received"
    )
    failed.__cause__ = error
    return failed


def replay_items(
    changes: Iterable[Change], specs: Sequence[Spec], *, as_changes: bool
) -> tuple[list[Any], WatcherFailed | None]:
    """What a watcher with ``specs`` would have received for ``changes``: the items, up to
    the commit where one of its predicates raised, and then that failure (else None)."""
    if as_changes:
        return list(changes), None
    router = Router()
    router.subscribe("replay", specs)
    out: list[Any] = []
    failed: dict[Any, Exception] = {}
    for change in changes:
        routed = router.route(change, failed)
        if failed:
            return out, _watcher_failed(failed["replay"], change.version)
        out.extend(routed.get("replay", ()))
    return out, None
