"""Following a store's log read-only while another process writes it (``watchstore watch``).

A ``LogFollower`` starts at the end of the newest segment and, each time it is polled, reads
the records appended since, generically (tables by name, objects as dicts, as ``rawlog``
reads them). It takes no lock and writes nothing. A record the writer is still appending
(cut short, or not yet whole on the page) ends the read: the next poll reads it whole.

When a newer segment appears (a compaction switched to it, or a rollback wrote it), the
follower moves there: the changes after its own version are read from it as usual if the new
segment carries on from there (a compaction copies the changes committed meanwhile); if it
does not (a rollback went back, or older segments were retired before they were read), the
follower gives one *resync*: the differences between what it had and what the segment
holds, so that a consumer applying the changes always ends with the store's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ..core.errors import LogCorrupt
from .rawlog import (
    CREATE,
    DELETE,
    UPDATE,
    Object,
    State,
    read_change,
    read_epoch,
    replay,
    segment_files,
)
from .records import record_size, scan
from .segment import open_segment

if TYPE_CHECKING:
    from pathlib import Path

    from .rawlog import RawEpoch


@attrs.frozen
class Followed:
    """A change the follower read: its version and actions as (kind, table, object).
    ``resync``: not a commit but the differences to a segment that does not carry on
    from the follower's version (a rollback, or history retired before it was read)."""

    version: int
    actions: list[tuple[int, str, Object]]
    resync: bool = False


class LogFollower:
    """Follows the store in ``directory`` from its current version (see the module
    docstring). ``key``: the store's encryption key, if it has one."""

    def __init__(self, directory: Path, key: bytes | None = None) -> None:
        self.directory = directory
        self.key = key
        epoch = self._read(segment_files(directory)[-1])
        self.state: State = replay(epoch)
        """The store's objects as of ``version``."""
        self._enter(epoch)

    @property
    def version(self) -> int:
        """The version the follower has read up to."""
        return self._version

    def _read(self, file: Path) -> RawEpoch:
        # Damage after the snapshot ends the good records (``end``): at the tail of a live
        # segment it is an append not yet whole, read again by the next poll.
        return read_epoch(file, self.key)

    def _enter(self, epoch: RawEpoch) -> None:
        self._epoch = epoch
        self._segment = int(epoch.file.stem)
        self._offset = epoch.end
        self._version = epoch.last_version

    def poll(self) -> list[Followed]:
        """The changes written since the last poll (or since the follower started)."""
        found = self._appended()
        newer = [f for f in segment_files(self.directory) if int(f.stem) > self._segment]
        if newer:
            found += self._appended()  # the last appends before the switch
            found += self._switch(newer[-1])
        return found

    def _appended(self) -> list[Followed]:
        epoch = self._epoch
        file, header = epoch.file, epoch.header
        try:
            with open_segment(file) as source:
                result = scan(source, header, self._offset)
        except FileNotFoundError:  # retired by a compaction: the newer segment has the rest
            return []
        found = []
        for record in result.records:
            try:
                change = read_change(
                    file, header, record, epoch.sealer, self._version, epoch.columns
                )
            except LogCorrupt:
                break  # not yet written whole, or damage: read again next time
            self._apply(change.actions)
            self._offset = record.offset + record_size(len(record.body), header)
            self._version = change.version
            found.append(Followed(change.version, change.actions))
        return found

    def _switch(self, file: Path) -> list[Followed]:
        epoch = self._read(file)
        found: list[Followed] = []
        if epoch.snapshot_version <= self._version <= epoch.last_version:
            for change in epoch.changes:
                if change.version > self._version:
                    self._apply(change.actions)
                    found.append(Followed(change.version, change.actions))
        else:
            target = replay(epoch)
            found.append(Followed(epoch.last_version, _differences(self.state, target), True))
            self.state = target
        self._enter(epoch)
        return found

    def _apply(self, actions: list[tuple[int, str, Object]]) -> None:
        for kind, table, obj in actions:
            rows = self.state.setdefault(table, {})
            if kind == DELETE:
                rows.pop(obj["id"], None)
            else:
                rows[obj["id"]] = obj


def _differences(old: State, new: State) -> list[tuple[int, str, Object]]:
    """The actions that turn ``old`` into ``new``."""
    actions: list[tuple[int, str, Object]] = []
    for table in dict.fromkeys([*old, *new]):
        before, after = old.get(table, {}), new.get(table, {})
        for id, obj in after.items():
            if id not in before:
                actions.append((CREATE, table, obj))
            elif before[id] != obj:
                actions.append((UPDATE, table, obj))
        actions.extend((DELETE, table, obj) for id, obj in before.items() if id not in after)
    return actions
