"""``Proposed(index, term)``: a proposal succeeded iff the entry committed at ``index``
carries ``term`` (consensus.api.Proposed; ADR 0002)."""

from __future__ import annotations

from consensus.types import EntryKind

from .harness import CheckedCluster, new_leader_other_than


def test_proposed_identifies_the_committed_entry(backend: str) -> None:
    """Each accepted proposal's (index, term) names the entry committed there, which carries
    the proposed command, on every replica."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    proposals = [(c.propose(1, b"cmd-%d" % i), b"cmd-%d" % i) for i in range(5)]
    c.settle()
    for proposed, command in proposals:
        assert c.proposal_succeeded(proposed) is True
        chosen = c.committed_at(int(proposed.index))
        assert chosen == (int(proposed.index), int(proposed.term), EntryKind.NORMAL, command)
    for node_id in (1, 2, 3):
        assert c.applied(node_id) == [cmd for _, cmd in proposals]


def test_proposal_lost_to_a_leader_change_is_detected(backend: str) -> None:
    """A leader cut off from the quorum accepts a proposal it can never commit; a new leader
    commits something else at that index. Once healed, the entry committed there has a
    different term, so the client learns the proposal was lost, and no replica applies it."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    c.isolate(1)
    lost = c.propose(1, b"lost")
    new = new_leader_other_than(c, 1)
    winners = [c.propose(new, b"won-%d" % i) for i in range(3)]
    c.heal()
    c.settle(10)
    assert c.proposal_succeeded(lost) is False
    chosen = c.committed_at(int(lost.index))
    assert chosen is not None and chosen[1] != lost.term
    assert all(c.proposal_succeeded(p) is True for p in winners)
    for node_id in (1, 2, 3):
        assert b"lost" not in c.applied(node_id)
        assert c.applied(node_id) == [b"won-0", b"won-1", b"won-2"]


def test_proposal_committed_by_a_later_leader_still_succeeds(backend: str) -> None:
    """Raft §5.4.2 / Paxos Made Simple §2.3: an entry that reached a quorum member before its
    leader crashed is committed by the next leader (Raft: under its original term; Paxos:
    re-proposed with its identity kept, ADR 0002). Proposed(index, term) still matches, so
    the client is told the truth: it succeeded."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    c.drop(1, 3)  # node 3 never sees the entry
    c.drop(2, 1)  # node 1 never hears that node 2 has it, so it cannot commit it
    proposed = c.propose(1, b"survivor")
    c.deliver_all()
    assert c.proposal_succeeded(proposed) is None
    c.crash(1)
    c.heal()
    new_leader_other_than(c, 1)
    c.settle()
    assert c.proposal_succeeded(proposed) is True
    assert c.applied(2) == [b"survivor"] and c.applied(3) == [b"survivor"]
