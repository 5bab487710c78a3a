"""Property test: the store against a dumb in-memory oracle of the documented semantics.

Random batches (several groups, repeated groups, truncations, overwrites, holes, snapshots,
hard states, invalid writes) go to a real SQLite store and to a dictionary model that applies
each Ready exactly as ``write_batch`` documents. After every batch and after a reopen, ``load``
must equal the model. This covers the store's own optimisation of applying one statement per
phase across all groups of a batch.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.api import PersistedState, Ready
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

from .helpers import CLUSTER, NODE

SLOTS = (0, 1, 2)
"""Positions of an example's three groups; mapped to fresh group ids per example."""


@dataclass
class GroupModel:
    log: dict[int, Entry] = field(default_factory=dict)
    snapshot: Snapshot | None = None
    hard_state: HardState = HardState()

    def expected(self) -> PersistedState:
        entries = tuple(self.log[i] for i in sorted(self.log))
        return PersistedState(hard_state=self.hard_state, snapshot=self.snapshot, entries=entries)


def apply_model(model: dict[GroupId, GroupModel], batch: list[tuple[GroupId, Ready]]) -> bool:
    """Apply ``batch`` to ``model`` if the store would accept it; return whether it did."""
    covered = {g: (m.snapshot.meta.index if m.snapshot else 0) for g, m in model.items()}
    for g, ready in batch:
        if any(e.index <= covered[g] for e in ready.entries):
            return False
        if ready.snapshot is not None:
            covered[g] = ready.snapshot.meta.index
    for g, ready in batch:
        m = model[g]
        if ready.truncate_from is not None:
            m.log = {i: e for i, e in m.log.items() if i < ready.truncate_from}
        for e in ready.entries:
            m.log[e.index] = e
        if ready.snapshot is not None:
            m.snapshot = ready.snapshot
            m.log = {i: e for i, e in m.log.items() if i > ready.snapshot.meta.index}
        if ready.hard_state is not None:
            m.hard_state = ready.hard_state
    return True


small = st.integers(min_value=0, max_value=4)
entries = st.builds(
    Entry,
    index=st.integers(min_value=1, max_value=14).map(Index),
    term=small.map(Term),
    kind=st.sampled_from(EntryKind),
    data=st.binary(max_size=8),
    accepted_ballot=small.map(Term),
)
conf = st.builds(
    ConfState,
    voters=st.lists(st.integers(1, 5).map(NodeId), unique=True, max_size=3).map(
        lambda ids: tuple(sorted(ids))
    ),
)
snapshots = st.builds(
    Snapshot,
    meta=st.builds(
        SnapshotMeta,
        index=st.integers(min_value=0, max_value=14).map(Index),
        term=small.map(Term),
        conf=conf,
    ),
    data=st.binary(max_size=8),
)
readies = st.builds(
    Ready,
    truncate_from=st.none() | st.integers(min_value=1, max_value=14).map(Index),
    entries=st.lists(entries, max_size=5).map(tuple),
    snapshot=st.none() | snapshots,
    hard_state=st.none()
    | st.builds(
        HardState,
        term=small.map(Term),
        vote=small.map(NodeId),
        commit=st.integers(0, 14).map(Index),
    ),
)
batches = st.lists(st.tuples(st.sampled_from(SLOTS), readies), min_size=1, max_size=4)


class StoreHolder:
    """One store file for every example (fresh files make each fsync far dearer); each
    example uses fresh group ids so examples stay independent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = SQLiteLogStore(path, cluster_id=CLUSTER, node_id=NODE, create=True)
        self.next_group = itertools.count(1)

    def reopen(self) -> None:
        self.store.close()
        self.store = SQLiteLogStore(self.path, cluster_id=CLUSTER, node_id=NODE)


@pytest.fixture(scope="module")
def holder() -> Iterator[StoreHolder]:
    with tempfile.TemporaryDirectory() as tmp:
        held = StoreHolder(Path(tmp) / "log.db")
        yield held
        held.store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.lists(st.tuples(batches, st.booleans()), min_size=1, max_size=6))
def test_store_matches_the_documented_model(
    holder: StoreHolder,
    program: list[tuple[list[tuple[int, Ready]], bool]],
) -> None:
    """Whatever the sequence of batches, load returns exactly what the model predicts, and a
    refused batch (an entry below the persisted snapshot) changes nothing."""
    groups = {slot: GroupId(next(holder.next_group)) for slot in SLOTS}
    for g in groups.values():
        holder.store.create_group(g, "paxos", ConfState())
    model = {g: GroupModel() for g in groups.values()}
    for slotted, reopen in program:
        batch = [(groups[slot], ready) for slot, ready in slotted]
        accepted = apply_model(model, batch)
        try:
            holder.store.write_batch(batch)
            stored = True
        except ValueError:
            stored = False
        assert stored == accepted
        if reopen:
            holder.reopen()
        assert {g: holder.store.load(g) for g in model} == {
            g: m.expected() for g, m in model.items()
        }
