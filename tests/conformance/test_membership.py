"""Membership changes through the log: learners, promotion, removal (Raft §6 and thesis
§4; Multi-Paxos reconfiguration with alpha = 1, PMS §3 / PMMC §3)."""

from __future__ import annotations

from consensus.api import ChangeKind, Role

from .harness import CheckedCluster, change, commit_change


def _with_learner(backend: str, *, compact: bool = False) -> CheckedCluster:
    c = CheckedCluster(3, backend=backend, max_snapshot_chunk_bytes=64)
    c.keep_readies = True
    c.elect(1)
    for i in range(4):
        c.propose(1, b"before-%d" % i)
    c.settle()
    if compact:
        for node_id in (1, 2, 3):
            c.compact(node_id)
    c.add_node(4)
    commit_change(c, 1, change((ChangeKind.ADD_LEARNER, 4)))
    return c


def test_added_learner_catches_up(backend: str) -> None:
    """Raft thesis §4.2.1: a new server joins as a non-voting learner and receives the whole
    log; every member reports it as a learner."""
    c = _with_learner(backend)
    c.propose(1, b"with-learner")
    c.settle()
    assert c.applied(4) == c.applied(1)
    assert c.applied(4)[-1] == b"with-learner"
    for node_id in (1, 2, 3, 4):
        conf = c.core(node_id).status().conf
        assert conf.learners == (4,) and 4 not in conf.voters


def test_learner_joining_after_compaction_catches_up_by_snapshot(backend: str) -> None:
    """A learner with an empty disk that needs compacted entries gets the snapshot
    (Ready.snapshot and Ready.apply_snapshot), then the entries after it."""
    c = _with_learner(backend, compact=True)
    restored = [rd for nid, rd in c.readies_seen if nid == 4 and rd.apply_snapshot and rd.snapshot]
    assert restored
    c.propose(1, b"after")
    c.settle()
    assert c.nodes[4].state == c.nodes[1].state  # type: ignore[index]


def test_learner_never_counts_toward_a_quorum(backend: str) -> None:
    """Learners receive entries but never vote and never count toward commitment: with both
    other voters cut off, leader + learner (2 of 4 nodes, 1 of 3 voters) commit nothing."""
    c = _with_learner(backend)
    commit = c.commit_index(1)
    for peer in (2, 3):
        c.drop(1, peer)
        c.drop(peer, 1)
    proposed = c.propose(1, b"needs-a-voter")
    c.run(5)  # fewer ticks than CheckQuorum needs to depose the leader
    assert c.commit_index(1) == commit
    assert c.proposal_succeeded(proposed) is None
    assert b"needs-a-voter" not in c.applied(4)
    c.heal()
    c.settle()
    assert b"needs-a-voter" in c.applied(4)


def test_promoted_learner_counts_toward_the_quorum(backend: str) -> None:
    """ADD_VOTER promotes the learner: four voters, three needed. With node 3 cut off, the
    leader commits with nodes 2 and 4 -- impossible unless the promoted node counts."""
    c = _with_learner(backend)
    commit_change(c, 1, change((ChangeKind.ADD_VOTER, 4)))
    assert c.core(1).status().conf.voters == (1, 2, 3, 4)
    c.isolate(3)
    proposed = c.propose(1, b"three-of-four")
    c.deliver_all()
    assert c.proposal_succeeded(proposed) is True
    c.drop(1, 2)
    c.drop(2, 1)
    stuck = c.propose(1, b"two-of-four")
    c.run(3)
    assert c.proposal_succeeded(stuck) is None


def test_removed_voter_leaves_and_commits_continue(backend: str) -> None:
    """REMOVE takes a voter out: the others commit without it (2 of 3 remaining voters)
    and the removed node no longer receives new entries."""
    c = _with_learner(backend)
    commit_change(c, 1, change((ChangeKind.ADD_VOTER, 4)))
    commit_change(c, 1, change((ChangeKind.REMOVE, 2)))
    assert c.core(1).status().conf.voters == (1, 3, 4)
    c.crash(2)
    c.isolate(4)
    proposed = c.propose(1, b"without-2")  # 1 and 3 are a majority of {1, 3, 4}
    c.deliver_all()
    assert c.proposal_succeeded(proposed) is True
    c.heal()
    c.settle()
    assert c.applied(4) == c.applied(3) == c.applied(1)
    c.check_replicas_identical()


def test_removed_leader_steps_down_and_the_rest_elect_a_leader(backend: str) -> None:
    """Raft thesis §4.2.2: a leader removed from the configuration steps down once the
    change commits; the remaining voters elect a leader among themselves and go on."""
    c = _with_learner(backend)
    commit_change(c, 1, change((ChangeKind.ADD_VOTER, 4)))
    commit_change(c, 1, change((ChangeKind.REMOVE, 1)))
    assert c.core(1).status().role is not Role.LEADER
    c.crash(1)
    leader = c.wait_for_leader()
    assert leader in (2, 3, 4)
    proposed = c.propose(leader, b"after-removal")
    c.settle()
    assert c.proposal_succeeded(proposed) is True
    assert c.applied(2) == c.applied(3) == c.applied(4)
