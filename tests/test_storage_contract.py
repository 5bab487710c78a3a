"""One storage contract, two implementations: the simulator's disk and the SQLite store.

The simulator proves the cores safe against ``SimDisk``; that proof only carries over to real
nodes if ``SQLiteLogStore`` persists a ``Ready`` exactly the same way. Random sequences of
Readys -- Raft-style appends and truncations, Paxos-style slot overwrites with holes,
snapshots above and below the last index, hard-state changes -- go to both, and what each
hands back on restart (``PersistedState``) must be identical after every step, including
after the SQLite file is closed and reopened.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.api import PersistedState, Ready
from consensus.sim.disk import SimDisk
from consensus.storage import SQLiteLogStore
from consensus.types import (
    ConfState,
    Entry,
    EntryKind,
    GroupId,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)

GROUP = GroupId(7)
CONF = ConfState(voters=(NodeId(1), NodeId(2), NodeId(3)))


@dataclass
class Model:
    """Just enough to generate valid Readys: the snapshot floor and the last index."""

    floor: int = 0
    last: int = 0
    term: int = 1


def _entry(index: int, term: int, tag: int, *, ballot: int = 0) -> Entry:
    kind = (EntryKind.NORMAL, EntryKind.NOOP, EntryKind.CONFIG)[tag % 3]
    return Entry(
        index=Index(index),
        term=Term(term),
        kind=kind,
        data=b"" if kind is EntryKind.NOOP else f"v{index}.{term}.{tag}".encode(),
        accepted_ballot=Term(ballot),
    )


@st.composite
def readys(draw: st.DrawFn) -> list[Ready]:
    model = Model()
    out: list[Ready] = []
    for _ in range(draw(st.integers(1, 25))):
        op = draw(st.sampled_from(["append", "truncate", "overwrite", "snapshot", "hard"]))
        tag = draw(st.integers(0, 1000))
        if op == "append":
            n = draw(st.integers(1, 4))
            entries = tuple(_entry(model.last + i, model.term, tag + i) for i in range(1, n + 1))
            model.last += n
            out.append(Ready(entries=entries, must_sync=True))
        elif op == "truncate" and model.last > model.floor:
            start = draw(st.integers(model.floor + 1, model.last))
            model.term += 1
            n = draw(st.integers(0, 3))
            entries = tuple(_entry(start + i, model.term, tag + i) for i in range(n))
            model.last = start + n - 1
            out.append(Ready(truncate_from=Index(start), entries=entries, must_sync=True))
        elif op == "overwrite":
            # Multi-Paxos: a slot above the floor, possibly past the end (a hole), with a
            # higher accepted ballot and the value's identity kept.
            slot = draw(st.integers(model.floor + 1, model.last + 3))
            ballot = draw(st.integers(1, 1 << 20))
            out.append(
                Ready(entries=(_entry(slot, model.term, tag, ballot=ballot),), must_sync=True)
            )
            model.last = max(model.last, slot)
        elif op == "snapshot":
            index = draw(st.integers(model.floor + 1, model.last + 2))
            snap = Snapshot(
                meta=SnapshotMeta(index=Index(index), term=Term(model.term), conf=CONF),
                data=f"image-{index}".encode(),
            )
            model.floor = index
            model.last = max(model.last, index)
            out.append(Ready(snapshot=snap, must_sync=True))
        else:
            model.term += draw(st.integers(0, 1))
            hs = HardState(
                term=Term(model.term),
                vote=NodeId(draw(st.integers(0, 3))),
                commit=Index(draw(st.integers(0, model.last))),
            )
            out.append(Ready(hard_state=hs, must_sync=draw(st.booleans())))
    return out


def _open(path: Path, *, create: bool = False) -> SQLiteLogStore:
    return SQLiteLogStore(path, cluster_id="contract", node_id=NodeId(1), create=create)


def _same(sim: PersistedState, sql: PersistedState) -> None:
    assert sql.hard_state == sim.hard_state
    assert sql.snapshot == sim.snapshot
    assert sql.entries == sim.entries


@settings(max_examples=60, deadline=None)
@given(readys())
def test_sqlite_store_persists_every_ready_like_the_sim_disk(sequence: list[Ready]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        store = _open(path, create=True)
        store.create_group(GROUP, "raft", CONF)
        disk = SimDisk()
        try:
            for ready in sequence:
                disk.write(ready)
                disk.sync()
                store.write_batch([(GROUP, ready)])
                _same(disk.load(), store.load(GROUP))
        finally:
            store.close()
        reopened = _open(path)
        try:
            _same(disk.load(), reopened.load(GROUP))
        finally:
            reopened.close()


def test_unsynced_sim_writes_are_what_a_crash_loses() -> None:
    """The contract's other half: what was not synced is not durable. SQLite commits are
    synchronous (WAL, synchronous=FULL), so its durable state is everything written; the
    simulator models the weaker case a core must survive."""
    disk = SimDisk()
    disk.write(Ready(entries=(_entry(1, 1, 0),), must_sync=True))
    disk.sync()
    disk.write(Ready(entries=(_entry(2, 1, 0),), must_sync=False))
    assert disk.crash() == 1
    assert [e.index for e in disk.load().entries] == [1]
