"""Durability ordering: ``must_sync`` and "persist before you acknowledge".

consensus.api step 1: votes, promises and acknowledgements promise durable state, so a Ready
that changes the term/ballot or vote, or carries entries or a snapshot, must ask for an
fsync, and no message acknowledging state may leave in a Ready *before* the Ready that
persists it (Raft Figure 2, "Rules for Servers" with "persistent state ... updated on stable
storage before responding to RPCs"; Paxos Made Simple §2.3, "an acceptor must remember this
information even if it fails and then restarts"). ``CheckedCluster`` checks both on every
Ready of every test; these tests make sure the checks bite and the scenarios cover them.
"""

from __future__ import annotations

import dataclasses

from support.cluster import MemStorage

from consensus.types import HardState, NodeId, Term

from .harness import ACK_CHECKS, CheckedCluster, must_sync_problem


def _eventful(backend: str) -> CheckedCluster:
    """Elections (term changes), replication (entries), compaction and snapshot install,
    a restart and a second election."""
    c = CheckedCluster(3, backend=backend, max_snapshot_chunk_bytes=40)
    c.keep_readies = True
    c.elect(1)
    for i in range(5):
        c.propose(1, b"a%d" % i)
    c.settle()
    c.isolate(3)
    for i in range(5):
        c.propose(1, b"b%d" % i)
    c.settle()
    c.compact(1)
    c.compact(2)
    c.heal()
    c.settle(5)
    c.crash(1)
    c.restart(1)
    c.crash(2)
    leader = c.wait_for_leader()
    c.restart(2)
    c.propose(leader, b"c")
    c.settle()
    return c


def test_must_sync_whenever_term_vote_entries_or_snapshot_change(backend: str) -> None:
    """Every Ready that changes the persisted term/ballot or vote, or carries entries or a
    snapshot, has must_sync set; the run produced each kind of such Ready."""
    c = _eventful(backend)
    kinds = {"term": 0, "entries": 0, "snapshot": 0}
    for (_, rd), before in zip(c.readies_seen, c.persisted_before, strict=True):
        assert must_sync_problem(rd, before) is None
        if rd.hard_state is not None and rd.hard_state.term != before.term:
            kinds["term"] += 1
            assert rd.must_sync
        if rd.entries:
            kinds["entries"] += 1
            assert rd.must_sync
        if rd.snapshot is not None:
            kinds["snapshot"] += 1
            assert rd.must_sync
    assert all(count > 0 for count in kinds.values()), kinds


def test_must_sync_check_rejects_an_unsynced_term_change() -> None:
    """The checker itself: a Ready that raises the term without must_sync is reported."""
    from consensus.api import Ready

    rd = Ready(hard_state=HardState(term=Term(2)))
    assert must_sync_problem(rd, HardState()) is not None
    assert must_sync_problem(dataclasses.replace(rd, must_sync=True), HardState()) is None


def test_acknowledgements_leave_only_with_or_after_what_they_promise(backend: str) -> None:
    """Replaying every Ready of the run into fresh storage: each acknowledgement (vote,
    promise, append/accept ack, snapshot ack) is backed by storage once its own Ready is
    persisted -- never by a later one -- and many acks are *not* backed before their Ready
    is persisted, i.e. state and ack travel together and the caller's persist-then-send
    order is what makes the ack honest."""
    c = _eventful(backend)
    check = ACK_CHECKS[backend]
    replay: dict[NodeId, MemStorage] = {}
    acks = 0
    needed_this_ready = 0
    for node_id, rd in c.readies_seen:
        storage = replay.setdefault(node_id, MemStorage())
        before = [check(m, storage) for m in rd.messages]
        storage.persist(rd)
        for message, problem_before in zip(rd.messages, before, strict=True):
            problem = check(message, storage)
            assert problem is None, f"node {node_id}: {problem}"
            if type(message.body).__name__ in _ACK_KINDS:
                acks += 1
            if problem_before is not None:
                needed_this_ready += 1
    assert acks > 20
    assert needed_this_ready > 5


_ACK_KINDS = {
    "RequestVoteResponse",
    "AppendEntriesResponse",
    "InstallSnapshotResponse",
    "Promise",
    "Accepted",
    "HeartbeatAck",
}
