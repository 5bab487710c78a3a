"""Linearizable reads: SAFE (quorum round after recovery) and LEASE."""

from __future__ import annotations

from consensus.api import ReadMode, Role
from consensus.paxos.messages import Heartbeat
from consensus.types import NodeId

from .harness import cluster


def test_safe_read_waits_for_a_quorum_round() -> None:
    """A SAFE read reports the commit index at request time only after a quorum
    acknowledged a heartbeat round sent after the request."""
    c = cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    c.deliver_all()
    c.run(2)
    c.isolate(1)
    c.core(1).read_index(7, mode=ReadMode.SAFE)
    c.process(1)
    c.deliver_all()
    assert c.read_states(1) == []
    c.heal()
    c.core(1).read_index(8, mode=ReadMode.SAFE)
    c.process(1)
    c.deliver_all()
    got = {rs.request_id: rs.index for rs in c.read_states(1)}
    assert got == {7: 1, 8: 1}


def test_new_leader_serves_reads_only_after_recovered_values_are_chosen() -> None:
    """The Raft no-op analogue: a leader's commit point is current only once the values it
    recovered in phase 1 are chosen again, so reads wait for that."""
    c = cluster(3, pre_vote=False, check_quorum=False)
    c.elect(1)
    c.drop(1, 3)
    c.drop(2, 1)
    c.propose(1, b"pending")  # accepted by 1 and 2, unknown to be chosen
    c.deliver_all()
    c.crash(1)
    c.heal()
    c.core(2).campaign()
    c.process(2)
    while c.leader() != 2:
        c.deliver_one()
    c.take_messages()  # the re-proposal of the recovered slot is lost
    c.core(2).read_index(1)
    c.deliver_all()
    assert c.read_states(2) == []
    c.run(3)
    (rs,) = c.read_states(2)
    assert rs.index >= 1 and c.applied(2) == [b"pending"]


def test_lease_read_is_answered_without_a_round() -> None:
    """While the lease holds (a quorum acked a recent round), LEASE reads need no messages."""
    c = cluster(3)
    c.elect(1)
    c.run(2)
    c.core(1).read_index(5, mode=ReadMode.LEASE)
    rd = c.core(1).ready()
    c.core(1).advance(rd)
    assert [(rs.request_id, rs.index) for rs in rd.read_states] == [(5, 0)]
    assert not any(isinstance(m.body, Heartbeat) for m in rd.messages)


def test_lease_read_falls_back_to_a_round_when_the_lease_expired() -> None:
    """The lease lasts election_timeout_ticks * (1 - drift) from when the acknowledged
    round was sent; afterwards a LEASE read behaves like SAFE."""
    c = cluster(3, election_timeout_ticks=10, lease_clock_drift_ratio=0.2)
    c.elect(1)
    c.run(1)
    c.isolate(1)
    c.tick(1, 8)  # the acked round was sent 9 ticks ago: 9 >= 10 * 0.8
    c.core(1).read_index(5, mode=ReadMode.LEASE)
    c.process(1)
    assert c.read_states(1) == []
    c.heal()
    c.deliver_all()
    c.run(1)
    assert [rs.request_id for rs in c.read_states(1)] == [5]


def test_lease_is_not_held_without_check_quorum() -> None:
    """Without check_quorum acceptors do not protect the lease, so LEASE means SAFE."""
    c = cluster(3, check_quorum=False)
    c.elect(1)
    c.run(2)
    c.core(1).read_index(5, mode=ReadMode.LEASE)
    c.process(1)
    assert c.read_states(1) == []
    c.deliver_all()
    assert [rs.request_id for rs in c.read_states(1)] == [5]


def test_deposed_leader_cannot_complete_a_safe_read() -> None:
    """PMS §2.3: acceptors that promised a higher ballot refuse the old leader's round, so it
    steps down instead of answering a stale read."""
    c = cluster(3, pre_vote=False, check_quorum=False)
    c.elect(1)
    c.isolate(1)
    c.core(2).campaign()
    c.deliver_all()
    assert c.core(2).status().role is Role.LEADER
    c.propose(2, b"new")
    c.deliver_all()
    c.heal()
    c.core(1).read_index(9)
    c.deliver_all()
    assert c.read_states(1) == []
    assert c.core(1).status().role is Role.FOLLOWER
    assert c.core(NodeId(1)).status().leader in (0, 2)


def test_no_lease_read_is_served_once_another_leader_can_choose() -> None:
    """Lease safety in lockstep time: after the leader is cut off, there is no tick at which
    it still answers a LEASE read locally while a new leader has chosen a newer value."""
    c = cluster(3, seed=1, election_timeout_ticks=10, lease_clock_drift_ratio=0.0)
    c.elect(1)
    c.run(2)
    c.isolate(1)
    new_leader_wrote = False
    served_after_isolation = 0
    for request_id in range(1, 60):
        c.run(1)
        other = next((n for n in (2, 3) if c.core(n).status().role is Role.LEADER), None)
        if other is not None and not new_leader_wrote:
            c.propose(other, b"newer")
            c.deliver_all()
            c.run(1)
            new_leader_wrote = c.core(other).status().commit >= 1
        if c.core(1).status().role is Role.LEADER:
            before = len(c.read_states(1))
            c.core(1).read_index(request_id, mode=ReadMode.LEASE)
            c.process(1)
            if len(c.read_states(1)) > before:
                served_after_isolation += 1
                assert not new_leader_wrote, "stale lease read after a new leader chose"
    assert served_after_isolation > 0 and new_leader_wrote
