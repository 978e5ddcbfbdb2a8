"""watchstore: an embeddable, in-memory, transactional table store for trio.

Tables of frozen attrs objects with enforced unique and secondary indexes, consistent read
transactions, atomic write transactions with optimistic concurrency, and O(1) snapshots;
commits go through a :class:`Proposer`.

    import attrs, trio, watchstore as ws

    @attrs.frozen
    class Task:
        id: str
        node_id: str | None = None
        meta: ws.Meta = ws.Meta()

    schema = ws.Schema(ws.Table(Task, indexes=[ws.Index("node_id")]))

    async def main() -> None:
        async with ws.open_store(schema) as store:
            await store.update(lambda tx: tx.create(Task("t1", node_id="n1")))
            print(store.view(lambda tx: tx.find(Task, node_id="n1")))

    trio.run(main)
"""

from ._errors import CompactionFailed as CompactionFailed
from ._errors import EtcdError as EtcdError
from ._errors import HistoryCompacted as HistoryCompacted
from ._errors import InvalidObject as InvalidObject
from ._errors import InvalidQuery as InvalidQuery
from ._errors import LogCorrupt as LogCorrupt
from ._errors import ObjectExists as ObjectExists
from ._errors import ObjectNotFound as ObjectNotFound
from ._errors import ProposalFailed as ProposalFailed
from ._errors import SchemaMismatch as SchemaMismatch
from ._errors import SequenceConflict as SequenceConflict
from ._errors import StorageError as StorageError
from ._errors import StoreClosed as StoreClosed
from ._errors import StoreError as StoreError
from ._errors import StoreLocked as StoreLocked
from ._errors import TransactionTooLarge as TransactionTooLarge
from ._errors import UniqueConflict as UniqueConflict
from ._errors import UnsupportedFormat as UnsupportedFormat
from ._errors import WatcherFailed as WatcherFailed
from ._errors import WatchOverflow as WatchOverflow
from ._etcd import EtcdProposer as EtcdProposer
from ._events import Committed as Committed
from ._events import Created as Created
from ._events import Deleted as Deleted
from ._events import Event as Event
from ._events import Spec as Spec
from ._events import Updated as Updated
from ._events import on as on
from ._events import on_commit as on_commit
from ._events import on_create as on_create
from ._events import on_delete as on_delete
from ._events import on_update as on_update
from ._lock import LockStatus as LockStatus
from ._lock import lock_status as lock_status
from ._lock import unlock as unlock
from ._log import EpochInfo as EpochInfo
from ._log import Recovery as Recovery
from ._log import Restored as Restored
from ._log import list_epochs as list_epochs
from ._log import rollback as rollback
from ._logproposer import Durability as Durability
from ._logproposer import LogProposer as LogProposer
from ._model import ActionKind as ActionKind
from ._model import Change as Change
from ._model import Meta as Meta
from ._model import StoreAction as StoreAction
from ._model import Version as Version
from ._proposer import MemoryProposer as MemoryProposer
from ._proposer import Proposer as Proposer
from ._query import AnyOf as AnyOf
from ._query import Between as Between
from ._query import Prefix as Prefix
from ._query import any_of as any_of
from ._query import between as between
from ._query import prefix as prefix
from ._replica import Replica as Replica
from ._schema import Index as Index
from ._schema import Schema as Schema
from ._schema import Table as Table
from ._segment import Salvage as Salvage
from ._state import Snapshot as Snapshot
from ._store import MAX_BATCH_BYTES as MAX_BATCH_BYTES
from ._store import MAX_BATCH_CHANGES as MAX_BATCH_CHANGES
from ._store import SCHEDULE_EVERY as SCHEDULE_EVERY
from ._store import Batch as Batch
from ._store import Store as Store
from ._store import open_store as open_store
from ._syncer import Syncer as Syncer
from ._syncer import SyncStatus as SyncStatus
from ._syncer import SyncUpdate as SyncUpdate
from ._syncer import UpdateKind as UpdateKind
from ._txn import ReadTx as ReadTx
from ._txn import Tx as Tx
from ._watch import Watch as Watch

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_CHANGES",
    "SCHEDULE_EVERY",
    "ActionKind",
    "AnyOf",
    "Batch",
    "Between",
    "Change",
    "Committed",
    "CompactionFailed",
    "Created",
    "Deleted",
    "Durability",
    "EtcdError",
    "EtcdProposer",
    "Event",
    "HistoryCompacted",
    "Index",
    "InvalidObject",
    "InvalidQuery",
    "LogCorrupt",
    "LogProposer",
    "MemoryProposer",
    "Meta",
    "ObjectExists",
    "ObjectNotFound",
    "Prefix",
    "ProposalFailed",
    "Proposer",
    "ReadTx",
    "Recovery",
    "Replica",
    "Schema",
    "SchemaMismatch",
    "SequenceConflict",
    "Snapshot",
    "Spec",
    "StorageError",
    "Store",
    "StoreAction",
    "StoreClosed",
    "StoreError",
    "StoreLocked",
    "SyncStatus",
    "SyncUpdate",
    "Syncer",
    "Table",
    "TransactionTooLarge",
    "Tx",
    "UniqueConflict",
    "UnsupportedFormat",
    "UpdateKind",
    "Updated",
    "Version",
    "Watch",
    "WatchOverflow",
    "WatcherFailed",
    "any_of",
    "between",
    "on",
    "on_commit",
    "on_create",
    "on_delete",
    "on_update",
    "open_store",
    "prefix",
]
