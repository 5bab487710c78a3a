"""Linearizable reads: ReadIndex (SAFE) and leases (LEASE), Raft thesis §6.4 / §6.4.1; for
Multi-Paxos a quorum-acknowledged heartbeat round and a leader lease (consensus.paxos,
"Reads")."""

from __future__ import annotations

import pytest

from consensus.api import NotLeader, ReadMode, ReadState, Role

from .harness import CheckedCluster


def _read_states(c: CheckedCluster, node_id: int, request_id: int) -> list[ReadState]:
    return [rs for rs in c.read_states(node_id) if rs.request_id == request_id]


def test_safe_read_covers_every_write_acknowledged_before_it(backend: str) -> None:
    """Thesis §6.4: the ReadState's index is at least the index of every write whose commit
    was acknowledged before the read started."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    writes = [c.propose(1, b"w%d" % i) for i in range(5)]
    c.deliver_all()
    assert all(c.proposal_succeeded(w) is True for w in writes)
    c.core(1).read_index(7)
    c.process(1)
    c.settle()
    [state] = _read_states(c, 1, 7)
    assert state.index >= max(w.index for w in writes)


def test_safe_read_on_a_new_leader_covers_the_old_leaders_writes(backend: str) -> None:
    """Thesis §6.4 step 1 (Raft: commit an entry of the new term first; Paxos: finish
    re-proposing the values recovered in phase 1): a read issued the moment a new leader
    takes over still covers a write the old leader acknowledged but never told anyone
    else was committed."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    write = c.propose(1, b"acked-by-old-leader")
    while c.commit_index(1) < write.index:
        assert c.deliver_one()
    c.crash(1)  # its commit notification dies with it
    assert all(c.commit_index(n) < write.index for n in (2, 3))
    new = None
    for _ in range(100):  # tick, delivering one message at a time, until someone leads
        c.tick_all()
        while new is None and c.deliver_one():
            new = next(iter(c.leaders()), None)
        if new is not None:
            break
    assert new is not None
    assert c.commit_index(new) < write.index  # it does not know about the write yet
    c.core(new).read_index(9)
    c.process(new)
    c.deliver_all()
    c.run(2)
    [state] = _read_states(c, new, 9)
    assert state.index >= write.index


def test_safe_read_needs_a_quorum_round(backend: str) -> None:
    """Thesis §6.4 step 3: a leader cut off from the quorum (it may already be deposed)
    never answers a SAFE read, however long it waits."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    c.isolate(1)
    c.core(1).read_index(3)
    c.process(1)
    for _ in range(8):  # before CheckQuorum would depose it
        c.run(1)
        assert c.core(1).status().role is Role.LEADER
    assert _read_states(c, 1, 3) == []


def test_lease_read_inside_the_lease_needs_no_message_round(backend: str) -> None:
    """Thesis §6.4.1: within the lease, a LEASE read is answered at once, in the leader's
    next Ready, before any message is delivered."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    write = c.propose(1, b"w")
    c.deliver_all()
    delivered = c.delivered
    c.core(1).read_index(5, mode=ReadMode.LEASE)
    c.process(1)
    [state] = _read_states(c, 1, 5)
    assert state.index >= write.index
    assert c.delivered == delivered


def test_lease_read_after_the_lease_expired_waits_for_a_quorum(backend: str) -> None:
    """Thesis §6.4.1: once the lease has run out (no quorum heard for
    election_timeout * (1 - drift) ticks) a LEASE read falls back to SAFE, so a cut-off
    leader cannot answer it."""
    c = CheckedCluster(3, backend=backend, election_timeout_ticks=20, lease_clock_drift_ratio=0.5)
    c.elect(1)
    c.settle()
    c.isolate(1)
    c.tick(1, 11)  # past the 10-tick lease, before CheckQuorum (20 ticks) deposes it
    assert c.core(1).status().role is Role.LEADER
    c.core(1).read_index(5, mode=ReadMode.LEASE)
    c.process(1)
    c.deliver_all()
    assert _read_states(c, 1, 5) == []


@pytest.mark.parametrize("mode", [ReadMode.SAFE, ReadMode.LEASE])
def test_read_on_a_follower_raises_not_leader(backend: str, mode: ReadMode) -> None:
    """Reads are served by the leader: a follower raises NotLeader naming it."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    for node_id in (2, 3):
        with pytest.raises(NotLeader) as info:
            c.core(node_id).read_index(1, mode=mode)
        assert info.value.leader_hint == 1


def test_lease_survives_a_quick_restart_of_a_lease_quorum_member(backend: str) -> None:
    """Thesis §6.4.1: the lease is safe only if no other leader can be elected (and commit)
    while it lasts. Node 2 acknowledged the leader's lease round, then restarts at once;
    node 3, cut off from the leader, campaigns. If node 2's restart let it vote, node 3
    would commit a write the old leader's LEASE read then misses (a stale read)."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    c.drop(1, 3)
    c.drop(3, 1)
    c.crash(2)
    c.restart(2)  # no time passes anywhere: well inside leader 1's lease
    c.core(3).campaign()
    c.process(3)
    c.deliver_all()
    write = None
    if c.core(3).status().role is Role.LEADER:
        write = c.propose(3, b"newer-write")
        c.deliver_all()
    c.core(1).read_index(5, mode=ReadMode.LEASE)
    c.process(1)
    served = _read_states(c, 1, 5)
    assert served, "leader 1 still holds its lease and answers at once"
    if write is not None and c.proposal_succeeded(write):
        assert all(state.index >= write.index for state in served), (
            f"stale LEASE read at {served} misses write {write} acknowledged before it"
        )
