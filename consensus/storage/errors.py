"""Errors raised by the durable log store.

Two families matter to a node: ``StorageFailed`` (the disk or the OS let us down; the store
refuses every later write, so the node must stop accepting writes and restart) and
``StorageCorrupt`` (what is on disk is not what we wrote; the node must refuse to start rather
than replay a damaged log). The rest are local misuse.
"""

from __future__ import annotations

from consensus.types import GroupId


class StorageError(Exception):
    """Base of every error the storage layer raises."""


class StorageFailed(StorageError):
    """An IO error, a full disk or a failed fsync. The store is now unusable for writes:
    after a failed fsync the OS may have dropped dirty pages, so continuing could ack state
    that never reaches the disk."""


class StorageCorrupt(StorageError):
    """The data on disk is damaged; a node must refuse to start on it."""


class CorruptDatabase(StorageCorrupt):
    """The file as a whole is unreadable: not a SQLite database, a torn or truncated file,
    a failed integrity check, or a SQLite database that is not a shardb log store."""


class CorruptRecord(StorageCorrupt):
    """One row failed its checksum or its ordering check.

    ``index`` is the log index (log and snapshot rows) or None (hard state, groups).
    """

    def __init__(self, *, table: str, group_id: GroupId, index: int | None, reason: str) -> None:
        self.table = table
        self.group_id = group_id
        self.index = index
        where = f"table {table!r}, group {group_id}"
        if index is not None:
            where += f", index {index}"
        super().__init__(f"corrupt record in {where}: {reason}")


class IdentityMismatch(StorageError):
    """The file belongs to another cluster or another node. Opening it would let this node
    vote with someone else's promises (Raft Figure 2: term and vote are per server)."""


class StoreNotFound(StorageError):
    """No store exists at the path and ``create`` was not requested."""


class StoreLocked(StorageError):
    """Another process already has this store open."""


class UnknownGroup(StorageError):
    """The group was never created on this node (or was deleted)."""

    def __init__(self, group_id: GroupId) -> None:
        self.group_id = group_id
        super().__init__(f"group {group_id} is not hosted by this store; call create_group first")


class GroupExists(StorageError):
    """``create_group`` for a group this store already hosts."""

    def __init__(self, group_id: GroupId) -> None:
        self.group_id = group_id
        super().__init__(f"group {group_id} already exists in this store")
