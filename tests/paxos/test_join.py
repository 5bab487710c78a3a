"""A node that joins with an empty ``ConfState`` (``consensus.api.CoreFactory``) learns the
group's membership from CONFIG entries that carry the resulting configuration, or from a
snapshot's ``SnapshotMeta.conf`` -- never by replaying ops on its own empty base (Paxos Made
Simple §3: reconfiguration through the log; see ``consensus.membership``)."""

from __future__ import annotations

import random

import pytest

from consensus.api import ChangeKind, ChangeOp, MembershipChange, NotLeader, Role
from consensus.paxos import PaxosCore, make_ballot
from consensus.paxos.messages import InstallSnapshot, Learn, PreCheck, Prepare, TimeoutNow
from consensus.types import ConfState, EntryKind, NodeId

from .harness import bodies, cluster, core, drain, envelope

GROUP_1_TO_4 = ConfState(voters=tuple(NodeId(n) for n in (1, 2, 3, 4)))


def change(kind: ChangeKind, node: int) -> MembershipChange:
    return MembershipChange(ops=(ChangeOp(kind=kind, node=NodeId(node)),))


def commit_change(c, leader: int, ch: MembershipChange) -> None:  # type: ignore[no-untyped-def]
    c.core(leader).change_membership(ch)
    c.process(leader)
    c.deliver_all()
    c.run(3)


def run_recording(c, ticks: int, dst: int, kind: type) -> list:  # type: ignore[no-untyped-def]
    """``c.run(ticks)``, returning the bodies of ``kind`` delivered to ``dst``."""
    seen = []
    for _ in range(ticks):
        c.tick_all()
        while True:
            c.process_all()
            if not c.network:
                break
            message = c.network[0]
            delivered = (message.src, message.dst) not in c.blocked
            if delivered and message.dst == dst and isinstance(message.body, kind):
                seen.append(message.body)
            c.deliver_one()
    return seen


def assert_cannot_win_alone(c, node: int) -> None:  # type: ignore[no-untyped-def]
    """Isolated for many election timeouts, ``node`` never leads and cannot choose a value."""
    c.isolate(node)
    c.run(60)
    assert c.core(node).status().role is not Role.LEADER
    with pytest.raises(NotLeader):
        c.core(node).propose(b"rogue")


def test_joiner_learns_the_membership_from_config_entries_sent_by_learn() -> None:
    """Catch-up by chosen-value transfer: node 4 starts empty, receives the CONFIG values
    "l4" and "v4" as Learn, and ends with the group's membership, voters=(1 2 3 4), not
    voters=(4). Isolated, it cannot elect itself, so it never chooses a conflicting value
    (PMS §2: one value per slot)."""
    c = cluster(3, seed=1)
    c.elect(1)
    c.propose(1, b"before")
    c.deliver_all()
    c.add_node(4)
    c.core(1).change_membership(change(ChangeKind.ADD_LEARNER, 4))
    learned = run_recording(c, 3, 4, Learn)
    assert any(e.kind is EntryKind.CONFIG for body in learned for e in body.entries)
    commit_change(c, 1, change(ChangeKind.ADD_VOTER, 4))
    assert c.core(4).status().conf == c.core(1).status().conf == GROUP_1_TO_4

    assert_cannot_win_alone(c, 4)
    c.propose(1, b"real")  # 1, 2 and 3 are a quorum of four
    c.deliver_all()
    c.run(2)
    assert c.applied(2) == [b"before", b"real"]
    c.heal()
    c.run(5)
    c.check_consistent()
    assert c.applied(4) == c.applied(1)


def test_joiner_learns_the_membership_from_a_snapshot_then_from_later_entries() -> None:
    """Catch-up by snapshot: the CONFIG value adding node 4 as a learner was compacted before
    4 heard anything, so 4 learns it from the snapshot meta's conf; the later "v4" arrives as
    an ordinary value and 4 adopts the configuration it carries."""
    c = cluster(3, seed=2)
    c.elect(1)
    c.add_node(4)
    c.drop(1, 4)
    commit_change(c, 1, change(ChangeKind.ADD_LEARNER, 4))
    c.propose(1, b"x")
    c.deliver_all()
    c.run(2)
    snap = c.compact(1)
    assert snap is not None
    learner_conf = ConfState(voters=GROUP_1_TO_4.voters[:3], learners=(NodeId(4),))
    assert snap.meta.conf == learner_conf
    assert c.core(4).status().conf == ConfState()  # heard nothing yet

    c.heal()
    installed = run_recording(c, 5, 4, InstallSnapshot)
    assert installed and installed[-1].meta.conf == learner_conf
    assert c.core(4).status().conf == learner_conf
    commit_change(c, 1, change(ChangeKind.ADD_VOTER, 4))
    assert c.core(4).status().conf == GROUP_1_TO_4
    assert c.applied(4) == c.applied(1) == [b"x"]
    assert_cannot_win_alone(c, 4)


def test_joiner_restarted_with_an_empty_configuration_recovers_the_membership() -> None:
    """On restart the committed CONFIG entries in storage supersede the (empty) initial
    configuration, whatever the node started with."""
    c = cluster(3, seed=3)
    c.elect(1)
    c.add_node(4)
    commit_change(c, 1, change(ChangeKind.ADD_LEARNER, 4))
    commit_change(c, 1, change(ChangeKind.ADD_VOTER, 4))
    node = c.nodes[NodeId(4)]
    again = PaxosCore(
        c.config(NodeId(4)),
        rng=random.Random(4),
        persisted=node.storage.persisted_state(),
        initial_conf=ConfState(),
    )
    assert again.status().conf == GROUP_1_TO_4


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_node_with_an_empty_configuration_never_campaigns(pre_vote: bool) -> None:
    """A node that has not learned its membership has no votes to win: neither its election
    timer, nor campaign(), nor a TimeoutNow makes it send a PreCheck or a Prepare or lead."""
    c = core(4, voters=(), pre_vote=pre_vote)
    for _ in range(100):
        c.tick()
    c.campaign()
    c.step(envelope(1, 4, TimeoutNow(ballot=make_ballot(1, NodeId(1)))))
    rd = drain(c)
    assert c.status().role is Role.FOLLOWER
    assert not bodies(rd, PreCheck) and not bodies(rd, Prepare)
