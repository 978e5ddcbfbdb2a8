"""watchstore: an embeddable, in-memory, transactional table store for trio and asyncio.

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

    trio.run(main)  # or asyncio.run(main()), or anyio.run(main, backend=...)
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from .core.errors import CompactionFailed as CompactionFailed
from .core.errors import EtcdAuthFailed as EtcdAuthFailed
from .core.errors import EtcdError as EtcdError
from .core.errors import EtcdPermissionDenied as EtcdPermissionDenied
from .core.errors import HistoryCompacted as HistoryCompacted
from .core.errors import InvalidObject as InvalidObject
from .core.errors import InvalidQuery as InvalidQuery
from .core.errors import LogCorrupt as LogCorrupt
from .core.errors import NotLeader as NotLeader
from .core.errors import ObjectExists as ObjectExists
from .core.errors import ObjectNotFound as ObjectNotFound
from .core.errors import ProposalFailed as ProposalFailed
from .core.errors import SchemaMismatch as SchemaMismatch
from .core.errors import SequenceConflict as SequenceConflict
from .core.errors import StorageError as StorageError
from .core.errors import StoreClosed as StoreClosed
from .core.errors import StoreError as StoreError
from .core.errors import StoreLocked as StoreLocked
from .core.errors import TransactionTooLarge as TransactionTooLarge
from .core.errors import UniqueConflict as UniqueConflict
from .core.errors import UnsupportedFormat as UnsupportedFormat
from .core.errors import WatcherFailed as WatcherFailed
from .core.errors import WatchOverflow as WatchOverflow
from .core.events import Committed as Committed
from .core.events import Created as Created
from .core.events import Deleted as Deleted
from .core.events import Event as Event
from .core.events import Spec as Spec
from .core.events import Updated as Updated
from .core.events import on as on
from .core.events import on_commit as on_commit
from .core.events import on_create as on_create
from .core.events import on_delete as on_delete
from .core.events import on_update as on_update
from .core.model import ActionKind as ActionKind
from .core.model import Change as Change
from .core.model import Meta as Meta
from .core.model import StoreAction as StoreAction
from .core.model import Version as Version
from .core.proposer import MemoryProposer as MemoryProposer
from .core.proposer import Proposer as Proposer
from .core.query import AnyOf as AnyOf
from .core.query import Between as Between
from .core.query import Prefix as Prefix
from .core.query import any_of as any_of
from .core.query import between as between
from .core.query import prefix as prefix
from .core.schema import Index as Index
from .core.schema import Schema as Schema
from .core.schema import Table as Table
from .core.state import Snapshot as Snapshot
from .core.statistics import Statistics as Statistics
from .core.statistics import Summary as Summary
from .core.txn import ReadTx as ReadTx
from .core.txn import Tx as Tx
from .etcd.proposer import EtcdProposer as EtcdProposer
from .log.epochlog import EpochInfo as EpochInfo
from .log.epochlog import Recovery as Recovery
from .log.epochlog import Restored as Restored
from .log.epochlog import list_epochs as list_epochs
from .log.epochlog import rollback as rollback
from .log.lock import LockStatus as LockStatus
from .log.lock import lock_status as lock_status
from .log.lock import unlock as unlock
from .log.proposer import Durability as Durability
from .log.proposer import LogProposer as LogProposer
from .log.segment import Salvage as Salvage
from .service.informer import Informer as Informer
from .service.informer import InformerEvent as InformerEvent
from .service.informer import Resynced as Resynced
from .service.informer import informer as informer
from .service.leadership import Lead as Lead
from .service.store import MAX_BATCH_BYTES as MAX_BATCH_BYTES
from .service.store import MAX_BATCH_CHANGES as MAX_BATCH_CHANGES
from .service.store import SCHEDULE_EVERY as SCHEDULE_EVERY
from .service.store import Batch as Batch
from .service.store import Replica as Replica
from .service.store import Store as Store
from .service.store import open_store as open_store
from .service.syncer import Syncer as Syncer
from .service.syncer import SyncStatus as SyncStatus
from .service.syncer import SyncUpdate as SyncUpdate
from .service.syncer import UpdateKind as UpdateKind
from .service.watch import Watch as Watch
from .service.watch import WouldBlock as WouldBlock

try:
    __version__: str = _version("watchstore")
    """The installed watchstore's version (its package metadata's)."""
except _PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

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
    "EpochInfo",
    "EtcdAuthFailed",
    "EtcdError",
    "EtcdPermissionDenied",
    "EtcdProposer",
    "Event",
    "HistoryCompacted",
    "Index",
    "Informer",
    "InformerEvent",
    "InvalidObject",
    "InvalidQuery",
    "Lead",
    "LockStatus",
    "LogCorrupt",
    "LogProposer",
    "MemoryProposer",
    "Meta",
    "NotLeader",
    "ObjectExists",
    "ObjectNotFound",
    "Prefix",
    "ProposalFailed",
    "Proposer",
    "ReadTx",
    "Recovery",
    "Replica",
    "Restored",
    "Resynced",
    "Salvage",
    "Schema",
    "SchemaMismatch",
    "SequenceConflict",
    "Snapshot",
    "Spec",
    "Statistics",
    "StorageError",
    "Store",
    "StoreAction",
    "StoreClosed",
    "StoreError",
    "StoreLocked",
    "Summary",
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
    "WouldBlock",
    "any_of",
    "between",
    "informer",
    "list_epochs",
    "lock_status",
    "on",
    "on_commit",
    "on_create",
    "on_delete",
    "on_update",
    "open_store",
    "prefix",
    "rollback",
    "unlock",
]
