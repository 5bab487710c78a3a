"""SimDisk: the storage contract of ``consensus.api.Ready`` with fsync and crash semantics."""

from __future__ import annotations

from consensus.api import PersistedState, Ready
from consensus.sim.disk import SimDisk
from consensus.types import (
    ConfState,
    Entry,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)


def entries(first: int, last: int, term: int = 1) -> tuple[Entry, ...]:
    return tuple(
        Entry(index=Index(i), term=Term(term), data=b"%d" % i) for i in range(first, last + 1)
    )


def snapshot(index: int, term: int = 1) -> Snapshot:
    meta = SnapshotMeta(index=Index(index), term=Term(term), conf=ConfState(voters=(NodeId(1),)))
    return Snapshot(meta=meta, data=b"image@%d" % index)


def indexes(state: PersistedState) -> list[int]:
    return [e.index for e in state.entries]


def test_synced_writes_survive_a_crash() -> None:
    disk = SimDisk()
    disk.write(Ready(hard_state=HardState(term=Term(2), vote=NodeId(1)), entries=entries(1, 3)))
    disk.sync()
    disk.crash()
    state = disk.load()
    assert state.hard_state == HardState(term=Term(2), vote=NodeId(1))
    assert indexes(state) == [1, 2, 3]


def test_crash_loses_unsynced_writes() -> None:
    """Raft Figure 2: only what reached stable storage survives a crash."""
    disk = SimDisk()
    disk.write(Ready(entries=entries(1, 2)))
    disk.sync()
    disk.write(Ready(hard_state=HardState(term=Term(5)), entries=entries(3, 4)))
    assert disk.entry(Index(4)) is not None  # the running node reads its own writes
    assert disk.crash() == 1
    state = disk.load()
    assert indexes(state) == [1, 2]
    assert state.hard_state.term == 0
    assert disk.entry(Index(4)) is None
    assert disk.stats.lost_writes == 1


def test_crash_may_keep_a_prefix_of_unsynced_writes() -> None:
    """Writes reach the disk in order: a crash keeps a prefix, never a later write alone."""
    disk = SimDisk()
    disk.write(Ready(entries=entries(1, 1)))
    disk.write(Ready(entries=entries(2, 2)))
    disk.write(Ready(entries=entries(3, 3)))
    assert disk.crash(keep=2) == 1
    assert indexes(disk.load()) == [1, 2]


def test_load_sees_only_durable_state() -> None:
    disk = SimDisk()
    disk.write(Ready(entries=entries(1, 2)))
    assert disk.load() == PersistedState()
    assert disk.unsynced_writes == 1


def test_truncate_then_overwrite() -> None:
    """truncate_from deletes the suffix before the Ready's entries are written."""
    disk = SimDisk()
    disk.write(Ready(entries=entries(1, 5, term=1)))
    disk.write(Ready(truncate_from=Index(3), entries=entries(3, 3, term=2)))
    disk.sync()
    state = disk.load()
    assert indexes(state) == [1, 2, 3]
    assert [e.term for e in state.entries] == [1, 1, 2]


def test_entries_overwrite_by_index() -> None:
    """Paxos upserts a slot with a higher accepted ballot without truncating."""
    disk = SimDisk()
    disk.write(Ready(entries=entries(1, 3, term=1)))
    disk.write(Ready(entries=(Entry(index=Index(2), term=Term(7), data=b"new"),)))
    disk.sync()
    assert [(e.index, e.term) for e in disk.load().entries] == [(1, 1), (2, 7), (3, 1)]


def test_snapshot_drops_covered_entries() -> None:
    disk = SimDisk()
    disk.write(Ready(entries=entries(1, 6)))
    disk.write(Ready(snapshot=snapshot(4)))
    disk.sync()
    state = disk.load()
    assert state.snapshot == snapshot(4)
    assert indexes(state) == [5, 6]
    assert disk.snapshot_index == 4


def test_older_snapshot_is_ignored() -> None:
    disk = SimDisk()
    disk.write(Ready(snapshot=snapshot(10)))
    disk.write(Ready(snapshot=snapshot(5)))
    disk.sync()
    assert disk.load().snapshot == snapshot(10)


def test_snapshot_in_same_ready_as_later_entries() -> None:
    """An installed snapshot plus the entries after it land together."""
    disk = SimDisk()
    disk.write(Ready(entries=entries(1, 3)))
    disk.write(Ready(truncate_from=Index(1), snapshot=snapshot(8), entries=entries(9, 10)))
    disk.sync()
    state = disk.load()
    assert state.snapshot == snapshot(8)
    assert indexes(state) == [9, 10]


def test_empty_ready_writes_nothing() -> None:
    disk = SimDisk()
    assert disk.write(Ready(must_sync=True)) is None
    assert disk.unsynced_writes == 0
    assert disk.stats.writes == 0
