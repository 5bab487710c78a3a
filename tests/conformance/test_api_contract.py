"""The calling contract of ``consensus.api.ConsensusCore``, identical for every backend:
who may propose, and the ``has_ready`` / ``ready`` / ``advance`` protocol."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.api import NotLeader, UsageError
from consensus.types import NO_NODE, GroupId, NodeId

from .harness import CheckedCluster


def test_propose_before_any_election_raises_not_leader_with_unknown_leader(
    backend: str,
) -> None:
    """Before any election nobody leads: propose raises NotLeader whose hint is NO_NODE
    ("leader unknown"), on every node."""
    c = CheckedCluster(3, backend=backend)
    for node_id in (1, 2, 3):
        with pytest.raises(NotLeader) as info:
            c.core(node_id).propose(b"x")
        assert info.value.leader_hint == NO_NODE


def test_propose_on_follower_raises_not_leader_hinting_the_leader(backend: str) -> None:
    """Raft §5.1 ("if a client contacts a follower, the follower redirects it to the
    leader"): a follower refuses with NotLeader and names the leader it follows."""
    c = CheckedCluster(3, backend=backend)
    c.elect(2)
    c.settle()
    for node_id in (1, 3):
        with pytest.raises(NotLeader) as info:
            c.core(node_id).propose(b"x")
        assert info.value.leader_hint == 2


def test_not_leader_hint_follows_a_leader_change(backend: str) -> None:
    """After a new leader is elected, followers' hints name the new leader."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    c.crash(1)
    c.run(30)
    leader = c.wait_for_leader()
    follower = next(n for n in (2, 3) if n != leader)
    with pytest.raises(NotLeader) as info:
        c.core(follower).propose(b"x")
    assert info.value.leader_hint == leader


def test_ready_twice_without_advance_raises_usage_error(backend: str) -> None:
    """consensus.api: calling ready() again before advance() is a UsageError."""
    c = CheckedCluster(3, backend=backend)
    core = c.core(1)
    core.campaign()
    assert core.has_ready()
    rd = core.ready()
    with pytest.raises(UsageError):
        core.ready()
    core.advance(rd)  # the outstanding Ready is still accepted afterwards
    core.ready()  # and a new one may be taken


def test_advance_with_a_foreign_ready_raises_usage_error(backend: str) -> None:
    """advance() takes back exactly the Ready that ready() handed out: one from another core,
    or none outstanding, or the same one twice, is a UsageError."""
    c = CheckedCluster(3, backend=backend)
    a, b = c.core(1), c.core(2)
    a.campaign()
    b.campaign()
    rd_a = a.ready()
    rd_b = b.ready()
    with pytest.raises(UsageError):
        a.advance(rd_b)
    a.advance(rd_a)
    with pytest.raises(UsageError):
        a.advance(rd_a)  # already advanced
    b.advance(rd_b)
    with pytest.raises(UsageError):
        c.core(3).advance(rd_a)  # nothing outstanding at all


def test_has_ready_agrees_with_ready(backend: str) -> None:
    """has_ready() is True exactly when ready() has something to hand out: whenever it is
    False, ready() returns an empty Ready (and when True, a non-empty one -- CheckedCluster
    checks that on every Ready). Checked on every node after every delivery of a run with an
    election, replication, a crash and a restart."""
    c = CheckedCluster(3, backend=backend)
    empties = 0

    def probe() -> None:
        nonlocal empties
        for node in c.nodes.values():
            if node.alive and not node.core.has_ready():
                rd = node.core.ready()
                assert rd.is_empty(), f"node {node.node_id}: has_ready() False, Ready {rd}"
                node.core.advance(rd)
                empties += 1

    c.elect(1)
    for i in range(5):
        c.propose(1, b"p%d" % i)
        while c.deliver_one():
            probe()
    c.crash(3)
    c.propose(1, b"while-down")
    c.restart(3)
    for _ in range(5):
        c.tick_all()
        while c.deliver_one():
            probe()
    assert empties > 20


def test_has_ready_is_false_while_a_ready_is_outstanding(backend: str) -> None:
    """consensus.api: ready() before advance() is a UsageError, so has_ready() -- "may I call
    ready() now?" -- must be False while a Ready is outstanding, even if new work (here a
    proposal) arrived meanwhile; it turns True again after advance()."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.settle()
    core = c.core(1)
    core.propose(b"first")
    rd = core.ready()
    core.propose(b"second")
    outstanding = core.has_ready()
    core.advance(rd)
    assert core.has_ready()
    assert outstanding is False


@pytest.mark.parametrize("misroute", ["dst", "group"])
def test_a_misrouted_message_is_a_usage_error(backend: str, misroute: str) -> None:
    """The caller routes messages by (dst, group_id); handing a core a message addressed to
    another node or group is local misuse (UsageError), not a peer's fault to ignore, and it
    leaves the core untouched."""
    c = CheckedCluster(3, backend=backend)
    c.core(1).campaign()
    c.process(1)
    [message, *_] = c.take_messages()
    if misroute == "dst":
        wrong = dataclasses.replace(message, dst=NodeId(3) if message.dst != 3 else NodeId(2))
    else:
        wrong = dataclasses.replace(message, group_id=GroupId(message.group_id + 1))
    target = c.core(message.dst)
    before = target.status()
    with pytest.raises(UsageError):
        target.step(wrong)
    assert target.status() == before and not target.has_ready()


def test_status_progress_lists_every_member_including_the_leader(backend: str) -> None:
    """Status.progress is filled on the leader only, with one row per member of the
    configuration, the leader's own included (its match is its whole log)."""
    c = CheckedCluster(3, backend=backend)
    c.elect(1)
    c.propose(1, b"x")
    c.settle()
    st = c.core(1).status()
    assert sorted(st.progress) == [1, 2, 3]
    assert all(pr.match == st.last_index for pr in st.progress.values())
    assert c.core(2).status().progress == {}
