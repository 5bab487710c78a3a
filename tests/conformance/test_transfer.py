"""Leadership transfer (Raft thesis §3.10; the Multi-Paxos analogue: catch the target up,
then let it run phase 1 at once)."""

from __future__ import annotations

import pytest

from consensus.api import ChangeKind, ProposalDropped, Role
from consensus.types import NodeId

from .harness import CheckedCluster, change


def _steady(backend: str) -> CheckedCluster:
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    for i in range(3):
        c.propose(1, b"cmd-%d" % i)
    c.settle()
    return c


def test_transfer_ends_with_the_target_as_leader(backend: str) -> None:
    """Thesis §3.10: after transfer_leadership(target) the target leads, everyone follows
    it, and it commits new proposals."""
    c = _steady(backend)
    c.core(1).transfer_leadership(NodeId(2))
    assert c.core(1).status().transferring_to == 2
    c.process(1)
    c.settle()
    assert c.leaders() == [2]
    assert all(c.core(n).status().leader == 2 for n in (1, 3))
    proposed = c.propose(2, b"under-2")
    c.settle()
    assert c.proposal_succeeded(proposed) is True


def test_proposals_refused_during_transfer(backend: str) -> None:
    """Thesis §3.10: while a transfer is in flight the old leader refuses proposals (and
    membership changes) with ProposalDropped, so none is lost to the hand-over."""
    c = _steady(backend)
    c.core(1).transfer_leadership(NodeId(2))
    with pytest.raises(ProposalDropped):
        c.core(1).propose(b"refused")
    with pytest.raises(ProposalDropped):
        c.core(1).change_membership(change((ChangeKind.ADD_LEARNER, 4)))


def test_transfer_to_a_lagging_target_catches_it_up_first(backend: str) -> None:
    """Thesis §3.10 step 1: the leader first brings the target's log up to date; the target
    then leads with every committed entry."""
    c = _steady(backend)
    c.isolate(3)
    for i in range(4):
        c.propose(1, b"missed-%d" % i)
    c.deliver_all()
    c.heal()
    c.core(1).transfer_leadership(NodeId(3))
    c.process(1)
    c.settle()
    assert c.core(3).status().role is Role.LEADER
    assert c.applied(3) == c.applied(1)
    assert c.applied(3)[-1] == b"missed-3"


def test_transfer_that_cannot_finish_is_abandoned(backend: str) -> None:
    """Thesis §3.10: if the target does not take over within an election timeout the
    leader abandons the transfer and accepts proposals again."""
    c = _steady(backend)
    c.isolate(2)
    c.core(1).transfer_leadership(NodeId(2))
    c.process(1)
    c.run(12)  # > election_timeout_ticks; CheckQuorum still sees node 3
    assert c.core(1).status().role is Role.LEADER
    assert c.core(1).status().transferring_to == 0
    c.propose(1, b"accepted-again")
