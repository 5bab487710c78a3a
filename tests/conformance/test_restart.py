"""Restart from ``PersistedState`` (Raft Figure 2 "persistent state"; Paxos acceptor state,
PMS §2.3): a core rebuilt from what it persisted resumes exactly there."""

from __future__ import annotations

import pytest

from consensus.api import ReadMode, Role
from consensus.types import NO_NODE, NodeId

from .harness import CheckedCluster, identity


def _busy_cluster(backend: str) -> CheckedCluster:
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    for i in range(6):
        c.propose(1, b"cmd-%d" % i)
    c.settle()
    c.compact(2, 3)
    c.propose(1, b"uncompacted")
    c.settle()
    return c


@pytest.mark.parametrize("victim", [1, 2])
def test_restart_resumes_with_the_same_hard_state_and_log(backend: str, victim: int) -> None:
    """A restarted core (leader or follower, with or without a snapshot) reports the term,
    commit, log bounds and membership it had persisted, starts as a follower with no known
    leader, and its first Readys do not change the persisted term/vote."""
    c = _busy_cluster(backend)
    before = c.core(victim).status()
    hard_before = c.nodes[NodeId(victim)].storage.hard_state
    c.crash(victim)
    c.restart(victim)
    after = c.core(victim).status()
    assert (after.term, after.commit, after.last_index, after.first_index, after.conf) == (
        before.term,
        before.commit,
        before.last_index,
        before.first_index,
        before.conf,
    )
    assert after.role is Role.FOLLOWER and after.leader == NO_NODE
    c.process(victim)  # only its own Readys: nothing delivered, no time passed
    hard_after = c.nodes[NodeId(victim)].storage.hard_state
    assert (hard_after.term, hard_after.vote) == (hard_before.term, hard_before.vote)


def test_restart_replays_the_persisted_committed_entries(backend: str) -> None:
    """After a restart, the committed entries above the snapshot are handed out again,
    identical to what the node applied before the crash (the state machine is rebuilt from
    snapshot + log)."""
    c = _busy_cluster(backend)
    node = c.nodes[NodeId(2)]
    snap = node.storage.snapshot
    assert snap is not None
    applied_before = {i: v for i, v in c.history[NodeId(2)].items() if i > snap.meta.index}
    state_before = list(node.state)
    c.crash(2)
    c.restart(2)
    c.process(2)
    replayed = {int(e.index): identity(e) for e in c.nodes[NodeId(2)].applied_entries}
    assert replayed == applied_before
    assert c.nodes[NodeId(2)].state == state_before


def test_restarted_node_rejoins_and_catches_up(backend: str) -> None:
    """A node that missed entries while down catches up from the leader after restart."""
    c = _busy_cluster(backend)
    c.crash(3)
    for i in range(3):
        c.propose(1, b"while-down-%d" % i)
    c.settle()
    c.restart(3)
    c.settle(5)
    assert c.applied(3) == c.applied(1)


def test_a_restarted_node_refuses_votes_for_one_election_timeout(backend: str) -> None:
    """Thesis §6.4.1 with §4.2.3: a node restarted from persisted state may have acknowledged
    a leader's lease round just before it crashed, so it refuses (pre-)votes for one election
    timeout of its own ticks; after that it votes again."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    c.crash(1)
    c.crash(2)
    c.restart(2)
    c.core(3).campaign()
    c.process(3)
    c.deliver_all()
    assert c.leaders() == []
    timeout = c.config(NodeId(2)).election_timeout_ticks
    c.tick(2, timeout)  # node 2's guard has run out
    c.core(3).campaign()
    c.process(3)
    c.deliver_all()
    assert len(c.leaders()) == 1  # node 3, or node 2 if its own timer fired first


def test_whole_cluster_restart_elects_a_leader_promptly(backend: str) -> None:
    """The restart guard costs a restarted cluster nothing: election timers are randomized
    in [T, 2T) (Raft §5.2), so the guard (T ticks) has expired everywhere by the time anyone
    campaigns, and a leader is elected within about 2T ticks; it then serves reads."""
    c = _busy_cluster(backend)
    for node_id in (1, 2, 3):
        c.crash(node_id)
    for node_id in (1, 2, 3):
        c.restart(node_id)
    timeout = c.config(NodeId(1)).election_timeout_ticks
    leader = c.wait_for_leader(max_ticks=2 * timeout + 3)
    c.core(leader).read_index(7, mode=ReadMode.SAFE)
    c.settle()
    assert [rs.request_id for rs in c.read_states(leader)] == [7]
    assert c.applied(leader) == c.applied(2 if leader != 2 else 1)
