"""Limits, errors and the Ready/advance contract (same as the Raft backend)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.api import CoreConfig, ProposalDropped, Ready, Role, UsageError
from consensus.backends import core_factory
from consensus.paxos import PaxosCore, ballot_node, ballot_round, make_ballot
from consensus.paxos.messages import Accept
from consensus.types import NodeId

from .harness import cluster


def test_backend_registry_builds_paxos() -> None:
    assert core_factory("paxos") is PaxosCore


def test_node_ids_must_fit_in_a_ballot() -> None:
    with pytest.raises(UsageError):
        PaxosCore(CoreConfig(node_id=NodeId(1 << 16)), rng=random.Random(0))


@given(
    st.integers(0, 1 << 40), st.integers(1, 65535), st.integers(0, 1 << 40), st.integers(1, 65535)
)
def test_ballots_order_like_round_node_pairs(r1: int, n1: int, r2: int, n2: int) -> None:
    """PMS §2.2: ballots are totally ordered and unique per proposer: packed comparison
    equals lexicographic (round, node) comparison, and unpacking inverts packing."""
    a, b = make_ballot(r1, NodeId(n1)), make_ballot(r2, NodeId(n2))
    assert (a < b) == ((r1, n1) < (r2, n2))
    assert (a == b) == ((r1, n1) == (r2, n2))
    assert (ballot_round(a), ballot_node(a)) == (r1, n1)


def test_proposed_names_the_slot_and_the_ballot() -> None:
    """propose returns Proposed(index=slot, term=ballot of this proposal); the entry
    committed there carries that term."""
    c = cluster(3)
    c.elect(1)
    p1 = c.propose(1, b"a")
    p2 = c.propose(1, b"b")
    ballot = c.core(1).status().term
    assert (p1.index, p1.term, p2.index, p2.term) == (1, ballot, 2, ballot)
    c.deliver_all()
    c.run(2)
    entries = c.nodes[NodeId(2)].applied_entries
    assert [(e.index, e.term) for e in entries] == [(1, ballot), (2, ballot)]


def test_oversized_entry_is_refused() -> None:
    c = cluster(1, max_entry_bytes=100)
    c.elect(1)
    with pytest.raises(ProposalDropped):
        c.core(1).propose(b"x" * 100)
    c.propose(1, b"x" * 50)


def test_uncommitted_bytes_are_bounded() -> None:
    """Proposals beyond max_uncommitted_bytes are refused until earlier ones commit."""
    c = cluster(3, max_uncommitted_bytes=300)
    c.elect(1)
    c.isolate(1)
    c.propose(1, b"x" * 100)
    c.propose(1, b"x" * 100)
    with pytest.raises(ProposalDropped):
        c.core(1).propose(b"x" * 100)
    c.heal()
    c.run(3)
    c.propose(1, b"x" * 100)


def test_accepts_are_batched_and_bounded_by_max_msg_bytes() -> None:
    """Proposals made between two Readys travel together: one Accept per peer, split only
    where max_msg_bytes requires it."""
    c = cluster(3, max_msg_bytes=400)
    c.elect(1)
    c.run(1)
    leader = c.core(1)
    for i in range(10):
        leader.propose(b"%d" % i + b"." * 75)  # 100 bytes each with overhead
    messages = c.take_messages()
    accepts = [m.body for m in messages if m.dst == 2 and isinstance(m.body, Accept)]
    assert [len(a.entries) for a in accepts] == [4, 4, 2]
    assert all(sum(e.size_bytes() for e in a.entries) <= 400 for a in accepts)


def test_inflight_accepts_are_bounded_per_peer() -> None:
    """Pipelining stops at max_inflight_msgs unacknowledged messages per peer."""
    c = cluster(3, max_inflight_msgs=3)
    c.elect(1)
    c.run(1)
    sent: list[object] = []
    for i in range(6):
        c.propose(1, b"%d" % i)
        sent += c.take_messages()
    to_2 = [m for m in sent if m.dst == 2 and isinstance(m.body, Accept)]
    assert len(to_2) == 3
    c.run(4)  # heartbeat acks reveal the loss; replication resumes
    assert len(c.applied(2)) == 6


def test_ready_twice_without_advance_is_misuse() -> None:
    c = cluster(1)
    core = c.core(1)
    core.campaign()
    rd = core.ready()
    with pytest.raises(UsageError):
        core.ready()
    with pytest.raises(UsageError):
        core.advance(Ready())
    core.advance(rd)
    with pytest.raises(UsageError):
        core.advance(rd)


def test_status_reports_role_ballot_leader_and_progress() -> None:
    c = cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    c.deliver_all()
    c.run(1)
    st1, st2 = c.core(1).status(), c.core(2).status()
    assert (st1.role, st1.leader, st1.term) == (Role.LEADER, 1, make_ballot(1, NodeId(1)))
    assert (st2.role, st2.leader, st2.term) == (Role.FOLLOWER, 1, st1.term)
    assert st1.progress[NodeId(2)].match == 1 and st1.progress[NodeId(2)].state == "replicate"
    assert st2.progress == {}


def test_report_unreachable_falls_back_to_probing() -> None:
    """After report_unreachable the leader sends one message at a time to that peer until
    it answers (etcd's probe state)."""
    c = cluster(3)
    c.elect(1)
    c.run(1)
    c.core(1).report_unreachable(NodeId(2))
    assert c.core(1).status().progress[NodeId(2)].state == "probe"
    c.propose(1, b"a")
    c.process(1)
    c.deliver_all()
    assert c.core(1).status().progress[NodeId(2)].state == "replicate"


def test_config_is_validated() -> None:
    with pytest.raises(UsageError):
        PaxosCore(
            dataclasses.replace(CoreConfig(node_id=NodeId(1)), election_timeout_ticks=1),
            rng=random.Random(0),
        )


def test_has_ready_is_false_once_everything_is_handed_out() -> None:
    c = cluster(3)
    c.elect(1)
    c.deliver_all()
    for n in (1, 2, 3):
        assert not c.core(n).has_ready()
    c.core(1).propose(b"x")
    assert c.core(1).has_ready()
