"""Reconfiguration through the log (Paxos Made Simple §3 with alpha = 1 at configuration
changes; see the package docstring, "Reconfiguration")."""

from __future__ import annotations

import pytest

from consensus.api import ChangeKind, ChangeOp, MembershipChange, ProposalDropped, Role
from consensus.membership import encode_conf_entry
from consensus.paxos import make_ballot
from consensus.paxos.messages import Prepare, Promise
from consensus.types import ConfState, Entry, EntryKind, Index, NodeId

from .harness import bodies, cluster, core, drain, envelope


def change(*ops: tuple[ChangeKind, int]) -> MembershipChange:
    return MembershipChange(ops=tuple(ChangeOp(kind=k, node=NodeId(n)) for k, n in ops))


def commit_change(c, leader: int, ch: MembershipChange) -> None:  # type: ignore[no-untyped-def]
    c.core(leader).change_membership(ch)
    c.process(leader)
    c.deliver_all()
    c.run(3)


def test_learner_receives_values_but_is_never_counted() -> None:
    """ADD_LEARNER: the learner applies every chosen value, yet its acceptances never make
    a quorum."""
    c = cluster(3)
    c.elect(1)
    c.propose(1, b"before")
    c.deliver_all()
    c.add_node(4)
    commit_change(c, 1, change((ChangeKind.ADD_LEARNER, 4)))
    assert c.core(1).status().conf.learners == (4,)
    c.propose(1, b"with-learner")
    c.deliver_all()
    c.run(3)
    assert c.applied(4) == [b"before", b"with-learner"]
    assert c.core(4).status().conf.learners == (4,)
    c.drop(1, 2)
    c.drop(1, 3)
    c.propose(1, b"needs-voters")
    c.run(3)
    assert b"needs-voters" not in c.applied(1)
    assert c.core(1).status().commit == c.core(4).status().commit


def test_promoted_learner_counts_toward_the_quorum() -> None:
    """ADD_VOTER after ADD_LEARNER: four voters, three needed; the new voter's acceptance
    is now what makes a quorum with the leader and one other."""
    c = cluster(3)
    c.elect(1)
    c.add_node(4)
    commit_change(c, 1, change((ChangeKind.ADD_LEARNER, 4)))
    commit_change(c, 1, change((ChangeKind.ADD_VOTER, 4)))
    assert c.core(1).status().conf.voters == (1, 2, 3, 4)
    c.drop(1, 3)
    c.propose(1, b"x")
    c.run(3)
    assert c.applied(1) == [b"x"]  # 1, 2 and 4 of four
    c.drop(1, 4)
    c.propose(1, b"y")
    c.run(3)
    assert c.applied(1) == [b"x"]  # 1 and 2 of four is not a quorum


def test_removed_voter_no_longer_counts_or_receives() -> None:
    """REMOVE: after the change commits the group runs with the remaining voters."""
    c = cluster(3)
    c.elect(1)
    commit_change(c, 1, change((ChangeKind.REMOVE, 3)))
    assert c.core(1).status().conf.voters == (1, 2)
    assert 3 not in c.core(1).status().progress
    c.crash(3)
    c.propose(1, b"two-of-two")
    c.deliver_all()
    c.run(2)
    assert c.applied(2) == [b"two-of-two"]


def test_one_pending_change_at_a_time_and_nothing_proposed_beyond_it() -> None:
    """Alpha = 1: while a CONFIG slot is unchosen, a second change and any proposal beyond
    it are refused with ProposalDropped; once it commits both are accepted again."""
    c = cluster(3)
    c.elect(1)
    c.add_node(4)
    c.core(1).change_membership(change((ChangeKind.ADD_LEARNER, 4)))
    with pytest.raises(ProposalDropped):
        c.core(1).change_membership(change((ChangeKind.REMOVE, 3)))
    with pytest.raises(ProposalDropped):
        c.core(1).propose(b"beyond")
    c.process(1)
    c.deliver_all()
    c.run(2)
    c.propose(1, b"after")
    c.core(1).change_membership(change((ChangeKind.REMOVE, 3)))


def test_malformed_changes_are_refused() -> None:
    """A change that removes every voter, repeats a node or changes nothing is dropped."""
    c = cluster(1)
    c.elect(1)
    for bad in (
        change((ChangeKind.REMOVE, 1)),
        change((ChangeKind.ADD_VOTER, 2), (ChangeKind.REMOVE, 2)),
        change((ChangeKind.ADD_VOTER, 1)),
        change(),
    ):
        with pytest.raises(ProposalDropped):
            c.core(1).change_membership(bad)


def test_several_voters_change_in_one_entry_without_a_joint_configuration() -> None:
    """Every slot has exactly one configuration, so replacing a voter in one entry is safe
    and leaves no joint state."""
    c = cluster(3)
    c.elect(1)
    c.add_node(4)
    commit_change(c, 1, change((ChangeKind.ADD_VOTER, 4), (ChangeKind.REMOVE, 3)))
    conf = c.core(1).status().conf
    assert (conf.voters, conf.voters_outgoing) == ((1, 2, 4), ())
    c.crash(3)
    c.propose(1, b"z")
    c.deliver_all()
    c.run(2)
    assert c.applied(4) == [b"z"]
    c.check_consistent()


def test_removed_leader_steps_down_and_the_rest_elect() -> None:
    """A leader that removes itself leads until the change commits, then steps down; the
    remaining voters elect a leader among themselves."""
    c = cluster(3, seed=9)
    c.elect(1)
    commit_change(c, 1, change((ChangeKind.REMOVE, 1)))
    assert c.core(1).status().role is Role.FOLLOWER
    c.run(40)
    leader = c.leader()
    assert leader in (2, 3)
    assert c.core(leader).status().conf.voters == (2, 3)


def test_phase1_needs_a_quorum_of_every_configuration_in_play() -> None:
    """A recovered CONFIG value at slot 1 (adding voters 4 and 5) governs slots above 1, so
    a quorum of {1,2,3} alone does not end phase 1: the candidate also asks 4 and 5 and
    needs three of {1..5}."""
    c = core(1, pre_vote=False)
    c.campaign()
    (prepare,) = bodies(drain(c), Prepare, dst=2)
    b = prepare.ballot
    grow = change((ChangeKind.ADD_VOTER, 4), (ChangeKind.ADD_VOTER, 5))
    grown = ConfState(voters=tuple(NodeId(n) for n in (1, 2, 3, 4, 5)))
    old = make_ballot(1, NodeId(2))
    cfg = Entry(
        index=Index(1),
        term=old,
        kind=EntryKind.CONFIG,
        data=encode_conf_entry(grow, grown),
        accepted_ballot=old,
    )
    c.step(
        envelope(
            2,
            1,
            Promise(
                ballot=b, from_slot=Index(1), entries=(cfg,), next_slot=Index(0), commit=Index(0)
            ),
        )
    )
    assert c.status().role is Role.CANDIDATE
    rd = drain(c)
    assert sorted(m.dst for m in rd.messages if isinstance(m.body, Prepare)) == [4, 5]
    c.step(
        envelope(
            4,
            1,
            Promise(ballot=b, from_slot=Index(1), entries=(), next_slot=Index(0), commit=Index(0)),
        )
    )
    assert c.status().role is Role.LEADER
    rd = drain(c)
    (entry,) = rd.entries
    assert (entry.kind, entry.term, entry.accepted_ballot) == (EntryKind.CONFIG, old, b)
