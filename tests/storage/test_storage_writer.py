"""StorageWriter: the trio facade runs the store in a worker thread, one call at a time."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from consensus.api import Ready
from consensus.storage import StorageFailed, StorageWriter, open_storage_writer
from consensus.types import GroupId, HardState, Index, Term

from .helpers import CLUSTER, CONF, G1, NODE, entry


async def test_writer_round_trips_through_a_worker_thread(tmp_path: Path) -> None:
    """The loop thread never runs SQLite: every call happens on another thread, so an fsync
    never blocks the trio scheduler."""
    path = tmp_path / "log.db"
    async with open_storage_writer(path, cluster_id=CLUSTER, node_id=NODE, create=True) as w:
        await w.create_group(G1, "raft", CONF)
        await w.write_batch([(G1, Ready(entries=(entry(1, 1),), hard_state=HardState()))])
        assert [g.group_id for g in await w.list_groups()] == [G1]
        loaded = await w.load(G1)
        assert loaded.entries == (entry(1, 1),)

        loop_thread = threading.get_ident()
        store_threads: set[int] = set()
        original = w.store.write_batch

        def spy(batch: object) -> None:
            store_threads.add(threading.get_ident())
            original(batch)  # type: ignore[arg-type]  # the spy forwards whatever it got

        w.store.write_batch = spy  # type: ignore[method-assign]  # observe the calling thread
        await w.write_batch([(G1, Ready(entries=(entry(2, 1),)))])
        assert store_threads and loop_thread not in store_threads

    async with open_storage_writer(path, cluster_id=CLUSTER, node_id=NODE) as w:
        assert [e.index for e in (await w.load_all())[G1].entries] == [1, 2]


async def test_concurrent_callers_are_serialised_and_all_durable(tmp_path: Path) -> None:
    """CapacityLimiter(1): many tasks may call at once, the store still sees one caller at a
    time, and each call is its own committed transaction."""
    groups = [GroupId(g) for g in range(1, 9)]
    async with open_storage_writer(
        tmp_path / "log.db", cluster_id=CLUSTER, node_id=NODE, create=True
    ) as w:
        for g in groups:
            await w.create_group(g, "raft", CONF)
        inside = 0
        overlap = False
        original = w.store.write_batch

        def guarded(batch: object) -> None:
            nonlocal inside, overlap
            inside += 1
            overlap = overlap or inside > 1
            try:
                original(batch)  # type: ignore[arg-type]  # the guard forwards whatever it got
            finally:
                inside -= 1

        w.store.write_batch = guarded  # type: ignore[method-assign]  # detect overlapping calls
        before = w.statistics().transactions

        async def writer(g: GroupId) -> None:
            for i in range(1, 6):
                await w.write_batch([(g, Ready(entries=(entry(i, 1),)))])

        async with trio.open_nursery() as nursery:
            for g in groups:
                nursery.start_soon(writer, g)

        assert not overlap
        assert w.statistics().transactions - before == len(groups) * 5
        states = await w.load_all()
        assert all([e.index for e in states[g].entries] == [1, 2, 3, 4, 5] for g in groups)


async def test_storage_failure_reaches_the_async_caller(tmp_path: Path) -> None:
    """A full disk surfaces as StorageFailed in the awaiting task, and later writes fail too."""
    async with open_storage_writer(
        tmp_path / "log.db",
        cluster_id=CLUSTER,
        node_id=NODE,
        create=True,
        max_db_bytes=64 * 1024,
    ) as w:
        await w.create_group(G1, "raft", CONF)
        with pytest.raises(StorageFailed):
            for i in range(1, 200):
                await w.write_batch([(G1, Ready(entries=(entry(i, 1, b"q" * 4000),)))])
        with pytest.raises(StorageFailed):
            await w.write_batch([(G1, Ready(hard_state=HardState(term=Term(1))))])
        assert w.statistics().failed


async def test_writer_closes_the_store_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with open_storage_writer(path, cluster_id=CLUSTER, node_id=NODE, create=True) as w:
        writer: StorageWriter = w
        await w.create_group(G1, "raft", CONF)
    with pytest.raises(Exception, match="closed"):
        writer.store.write_batch([(G1, Ready(hard_state=HardState(commit=Index(1))))])
    # Closed means the lock is released: a new opener succeeds.
    async with open_storage_writer(path, cluster_id=CLUSTER, node_id=NODE) as w:
        assert [g.group_id for g in await w.list_groups()] == [G1]
