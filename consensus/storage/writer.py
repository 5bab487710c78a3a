"""The trio face of the log store: every call runs in a worker thread.

A commit waits for an fsync (milliseconds on real disks); doing that on the trio loop would
stall every group's ticks and every connection. ``trio.to_thread.run_sync`` moves the call to a
worker thread and a ``CapacityLimiter(1)`` admits one call at a time, so the store sees the
single serial caller it requires and batches keep their order.

Calls are not abandoned on cancellation (trio's default ``abandon_on_cancel=False``): a
cancelled caller still waits until the transaction has committed or failed, because
reporting "cancelled" for a batch that may or may not be durable would leave the caller unable
to tell which promises it may send.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TypeVar

import trio

from consensus.api import Logger, PersistedState, Ready
from consensus.backends import Backend
from consensus.storage.sqlite_store import GroupInfo, SQLiteLogStore, StoreStats
from consensus.types import ConfState, GroupId, NodeId

_T = TypeVar("_T")


class StorageWriter:
    """Async facade over one ``SQLiteLogStore``; owns it and closes it in ``aclose``."""

    def __init__(self, store: SQLiteLogStore) -> None:
        self._store = store
        self._limiter = trio.CapacityLimiter(1)

    @property
    def store(self) -> SQLiteLogStore:
        return self._store

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def write_batch(self, batch: Sequence[tuple[GroupId, Ready]]) -> None:
        """Persist one merged batch durably (see ``SQLiteLogStore.write_batch``)."""
        await self._run(self._store.write_batch, batch)

    async def load(self, group_id: GroupId) -> PersistedState:
        return await self._run(self._store.load, group_id)

    async def load_all(self) -> dict[GroupId, PersistedState]:
        return await self._run(self._store.load_all)

    async def create_group(
        self,
        group_id: GroupId,
        backend: Backend | str,
        conf: ConfState,
        *,
        initial: PersistedState | None = None,
    ) -> GroupInfo:
        """``SQLiteLogStore.create_group``: registry row and ``initial`` in one transaction."""
        return await self._run(
            partial(self._store.create_group, initial=initial), group_id, backend, conf
        )

    async def delete_group(self, group_id: GroupId) -> None:
        await self._run(self._store.delete_group, group_id)

    async def list_groups(self) -> tuple[GroupInfo, ...]:
        return await self._run(self._store.list_groups)

    async def reclaim_space(self) -> None:
        await self._run(self._store.reclaim_space)

    def statistics(self) -> StoreStats:
        return self._store.statistics()

    async def aclose(self) -> None:
        await self._run(self._store.close)


@asynccontextmanager
async def open_storage_writer(
    path: str | os.PathLike[str],
    *,
    cluster_id: str,
    node_id: NodeId,
    create: bool = False,
    max_db_bytes: int | None = None,
    verify_on_open: bool = True,
    fsync: bool = True,
    logger: Logger | None = None,
) -> AsyncIterator[StorageWriter]:
    """Open (in a worker thread: ``quick_check`` reads the whole file) and close a store."""

    def open_store() -> SQLiteLogStore:
        return SQLiteLogStore(
            path,
            cluster_id=cluster_id,
            node_id=node_id,
            create=create,
            max_db_bytes=max_db_bytes,
            verify_on_open=verify_on_open,
            fsync=fsync,
            logger=logger,
        )

    store = await trio.to_thread.run_sync(open_store)
    writer = StorageWriter(store)
    try:
        yield writer
    finally:
        with trio.CancelScope(shield=True):
            await writer.aclose()
