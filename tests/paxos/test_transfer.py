"""Leadership transfer: catch the target up, then TimeoutNow; refuse proposals meanwhile;
abort after an election timeout."""

from __future__ import annotations

import pytest

from consensus.api import ProposalDropped, Role
from consensus.paxos.messages import TimeoutNow
from consensus.types import NodeId

from .harness import cluster


def test_transfer_to_an_up_to_date_voter() -> None:
    """The target starts phase 1 at once (skipping the pre-check and the lease) and leads
    with a higher ballot; the old leader follows it."""
    c = cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    c.deliver_all()
    c.run(2)
    old = c.core(1).status().term
    c.core(1).transfer_leadership(NodeId(2))
    assert c.core(1).status().transferring_to == 2
    c.deliver_all()
    assert c.leader() == 2
    assert c.core(2).status().term > old
    assert c.core(1).status().role is Role.FOLLOWER
    c.propose(2, b"b")
    c.deliver_all()
    c.run(2)
    assert c.applied(1) == [b"a", b"b"]


def test_proposals_are_refused_during_a_transfer() -> None:
    c = cluster(3)
    c.elect(1)
    c.drop(1, 3)
    c.core(1).transfer_leadership(NodeId(3))
    with pytest.raises(ProposalDropped):
        c.core(1).propose(b"x")
    with pytest.raises(ProposalDropped):
        c.core(1).transfer_leadership(NodeId(9))


def test_a_lagging_target_is_caught_up_before_timeout_now() -> None:
    """No TimeoutNow goes out while the target lacks slots; it is sent once the target
    accepted everything."""
    c = cluster(3)
    c.elect(1)
    c.isolate(3)
    for i in range(5):
        c.propose(1, b"%d" % i)
    c.deliver_all()
    c.run(2)
    c.core(1).transfer_leadership(NodeId(3))
    c.process(1)
    assert not any(isinstance(m.body, TimeoutNow) for m in c.network)
    c.heal()
    for _ in range(6):
        c.run(1)
        if c.leader() == 3:
            break
    assert c.leader() == 3
    assert c.applied(3)[:5] == [b"%d" % i for i in range(5)]


def test_transfer_aborts_after_an_election_timeout() -> None:
    """An unreachable target: the leader gives up after an election timeout and accepts
    proposals again."""
    c = cluster(3, election_timeout_ticks=10)
    c.elect(1)
    c.isolate(3)
    c.propose(1, b"x")
    c.deliver_all()
    c.core(1).transfer_leadership(NodeId(3))
    c.run(10)
    st = c.core(1).status()
    assert st.role is Role.LEADER and st.transferring_to == 0
    c.propose(1, b"y")
