"""Durable storage of the consensus log of every group on a node (SQLite via apsw, WAL).

This is IO shell, not pure core: it persists what the cores' ``Ready`` batches say and makes
no protocol decisions.
"""

from consensus.storage.errors import (
    CorruptDatabase,
    CorruptRecord,
    GroupExists,
    IdentityMismatch,
    StorageCorrupt,
    StorageError,
    StorageFailed,
    StoreLocked,
    StoreNotFound,
    UnknownGroup,
)
from consensus.storage.sqlite_store import (
    SCHEMA_VERSION,
    GroupInfo,
    SQLiteLogStore,
    StoreStats,
)
from consensus.storage.writer import StorageWriter, open_storage_writer

__all__ = [
    "SCHEMA_VERSION",
    "CorruptDatabase",
    "CorruptRecord",
    "GroupExists",
    "GroupInfo",
    "IdentityMismatch",
    "SQLiteLogStore",
    "StorageCorrupt",
    "StorageError",
    "StorageFailed",
    "StorageWriter",
    "StoreLocked",
    "StoreNotFound",
    "StoreStats",
    "UnknownGroup",
    "open_storage_writer",
]
