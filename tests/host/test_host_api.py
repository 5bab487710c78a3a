"""MultiGroupHost: routing, merging of many groups' Readys, and the API contract."""

from __future__ import annotations

import random

import pytest

from consensus.api import CoreConfig, ReadMode, UsageError
from consensus.backends import Backend
from consensus.codec import (
    BodyRegistry,
    decode_frame_bytes,
    decode_message_bytes,
    encode_batch_frames,
    encode_message,
    register_default_bodies,
)
from consensus.host import (
    HOST_GROUP,
    HostConfig,
    MultiGroupHost,
    NodeHeartbeat,
    Quiesce,
    TooManyGroups,
    UnknownGroup,
    Unquiesce,
)
from consensus.raft.messages import Heartbeat
from consensus.types import ConfState, GroupId, Index, Message, NodeId, Term

from .driver import HostCluster

MIXED = {g: ("raft" if g % 2 else "paxos") for g in range(1, 21)}


def _host(node: int = 1, **overrides: object) -> MultiGroupHost:
    config = HostConfig(node_id=NodeId(node), **overrides)  # type: ignore[arg-type]
    return MultiGroupHost(config, rng=random.Random(0))


def test_all_groups_elect_commit_and_every_replica_applies_identical_entries() -> None:
    """20 groups of both backends on 3 hosts elect leaders on their own, commit proposals,
    and every replica applies the same entries in the same order (Raft §5.4.3 State Machine
    Safety; Paxos Made Simple §3: one chosen value per slot)."""
    c = HostCluster(groups=MIXED, seed=1)
    c.run_until(lambda: all(c.leader(g) is not None for g in MIXED), max_ticks=200)
    for round_ in range(3):
        for g in MIXED:
            c.propose(g, f"g{g}-c{round_}".encode())
        c.run(1)
    c.run_until(
        lambda: all(c.applied_everywhere(g, f"g{g}-c2".encode()) for g in MIXED), max_ticks=50
    )
    for g in MIXED:
        expected = [f"g{g}-c{r}".encode() for r in range(3)]
        for node in (1, 2, 3):
            assert c.commands(node, g) == expected
    c.check_consistent()


def test_one_host_ready_merges_every_busy_group_and_one_frame_per_peer() -> None:
    """One proposal in each of 20 groups led by node 1 comes out as ONE HostReady: every
    group's Ready in ascending group id, one must_sync for all of them (group commit), and
    one message tuple per destination node (one BATCH frame per peer)."""
    c = HostCluster(groups=MIXED, seed=2)
    c.elect_all(1)
    host = c.host(1)
    for g in MIXED:
        host.propose(GroupId(g), f"x{g}".encode())
    assert host.has_ready()
    hr = host.ready()
    assert [gr.group_id for gr in hr.groups] == sorted(MIXED)
    assert all(gr.ready.entries for gr in hr.groups)
    assert hr.must_sync
    assert [dst for dst, _ in hr.messages] == [2, 3]
    for dst, messages in hr.messages:
        assert all(m.dst == dst and m.src == 1 for m in messages)
        # Every group replicates to every peer, in ascending group order within the frame.
        group_order = [m.group_id for m in messages if m.group_id != HOST_GROUP]
        assert sorted(set(group_order)) == sorted(MIXED)
        assert group_order == sorted(group_order)
    host.advance(hr)
    # The driver persists one HostReady per loop: syncs are per HostReady, not per group.
    before = c.nodes[NodeId(1)].syncs
    for g in MIXED:
        host.propose(GroupId(g), f"y{g}".encode())
    c.process(NodeId(1))
    assert c.nodes[NodeId(1)].syncs - before == 1


def test_ready_is_empty_of_clean_groups() -> None:
    """ready() only visits groups that were touched: an untouched group contributes nothing
    and a second ready() after advance() is empty."""
    c = HostCluster(groups=MIXED, seed=3)
    c.elect_all(1)
    c.run_until(c.all_quiesced, max_ticks=30)
    host = c.host(1)
    host.propose(GroupId(7), b"only seven")
    hr = host.ready()
    assert [gr.group_id for gr in hr.groups] == [7]
    host.advance(hr)
    c.deliver_all()
    assert not host.has_ready()


def test_ready_twice_before_advance_is_a_usage_error() -> None:
    host = _host()
    host.add_group(GroupId(1), "raft", CoreConfig(node_id=NodeId(1), group_id=GroupId(1)))
    hr = host.ready()
    with pytest.raises(UsageError):
        host.ready()
    assert not host.has_ready()
    with pytest.raises(UsageError):
        host.advance(
            type(hr)(groups=hr.groups, messages=hr.messages, must_sync=hr.must_sync)
        )  # an equal but different object
    host.advance(hr)
    with pytest.raises(UsageError):
        host.advance(hr)


def test_message_for_unknown_group_is_dropped_and_counted() -> None:
    """A replica this node does not host yet: drop (both protocols tolerate loss), count."""
    host = _host()
    host.add_group(GroupId(1), "raft", CoreConfig(node_id=NodeId(1), group_id=GroupId(1)))
    host.step(
        Message(
            group_id=GroupId(99),
            src=NodeId(2),
            dst=NodeId(1),
            body=Heartbeat(term=Term(1), commit=Index(0), context=0),
        )
    )
    host.step(
        Message(
            group_id=HOST_GROUP,
            src=NodeId(2),
            dst=NodeId(1),
            body=Quiesce(group_id=GroupId(98), term=Term(1), commit=Index(0), leader=NodeId(2)),
        )
    )
    assert host.statistics().unknown_group_messages == 2


def test_message_for_another_node_is_dropped_and_counted() -> None:
    host = _host()
    host.step(Message(group_id=HOST_GROUP, src=NodeId(2), dst=NodeId(3), body=NodeHeartbeat()))
    assert host.statistics().misrouted_messages == 1


def test_request_on_unknown_group_raises_unknown_group() -> None:
    """UnknownGroup is a ConsensusError and, like a dict lookup, a KeyError."""
    host = _host()
    for call in (
        lambda: host.propose(GroupId(5), b"x"),
        lambda: host.read_index(GroupId(5), 1, mode=ReadMode.LEASE),
        lambda: host.campaign(GroupId(5)),
        lambda: host.status(GroupId(5)),
        lambda: host.remove_group(GroupId(5)),
    ):
        with pytest.raises(UnknownGroup, match="group 5 is not hosted"):
            call()
    with pytest.raises(KeyError):
        host.backend(GroupId(5))


def test_add_group_validates_its_arguments() -> None:
    host = _host(max_groups=2)
    cfg = CoreConfig(node_id=NodeId(1), group_id=GroupId(1))
    with pytest.raises(UsageError):
        host.add_group(GroupId(0), "raft", CoreConfig(node_id=NodeId(1), group_id=GroupId(0)))
    with pytest.raises(UsageError):
        host.add_group(GroupId(2), "raft", cfg)  # config names another group
    with pytest.raises(UsageError):
        host.add_group(GroupId(1), "raft", CoreConfig(node_id=NodeId(2), group_id=GroupId(1)))
    with pytest.raises(UsageError):
        host.add_group(GroupId(1), "zab", cfg)
    host.add_group(GroupId(1), Backend.RAFT, cfg)
    with pytest.raises(UsageError):
        host.add_group(GroupId(1), "raft", cfg)
    host.add_group(GroupId(2), "paxos", CoreConfig(node_id=NodeId(1), group_id=GroupId(2)))
    with pytest.raises(TooManyGroups):
        host.add_group(GroupId(3), "raft", CoreConfig(node_id=NodeId(1), group_id=GroupId(3)))
    assert host.group_ids() == (1, 2)
    assert host.backend(GroupId(2)) is Backend.PAXOS


def test_remove_group_forgets_it_and_its_peers() -> None:
    host = _host()
    conf = ConfState(voters=(NodeId(1), NodeId(2), NodeId(3)))
    host.add_group(
        GroupId(1),
        "raft",
        CoreConfig(node_id=NodeId(1), group_id=GroupId(1)),
        initial_conf=conf,
    )
    assert host.statistics().peers == 2
    host.remove_group(GroupId(1))
    assert host.group_ids() == ()
    assert host.statistics().peers == 0
    host.tick()
    hr = host.ready()
    assert hr.is_empty()  # no group, no peer: nothing to heartbeat


def test_report_unreachable_reaches_every_group_with_that_peer() -> None:
    """The transport reports a peer once; each leader with that peer falls back to probing
    (etcd's MsgUnreachable) -- visible in status() as the peer's replication state."""
    c = HostCluster(groups={1: "raft", 2: "paxos"}, seed=4)
    c.elect_all(1)
    host = c.host(1)
    assert all(host.status(GroupId(g)).progress[NodeId(2)].state == "replicate" for g in (1, 2))
    host.report_unreachable(NodeId(2))
    for g in (1, 2):
        assert host.status(GroupId(g)).progress[NodeId(2)].state == "probe"
        assert host.status(GroupId(g)).progress[NodeId(3)].state == "replicate"


def test_host_bodies_are_registered_and_round_trip() -> None:
    """NodeHeartbeat, Quiesce and Unquiesce have wire tags 201-203 in the default table and
    survive encode/decode, alone and inside a BATCH frame."""
    reg = BodyRegistry()
    register_default_bodies(registry=reg)
    assert reg.class_of(201) is NodeHeartbeat
    assert reg.class_of(202) is Quiesce
    assert reg.class_of(203) is Unquiesce
    bodies = [
        NodeHeartbeat(),
        Quiesce(group_id=GroupId(7), term=Term(65538), commit=Index(12), leader=NodeId(2)),
        Unquiesce(group_id=GroupId(7)),
    ]
    messages = [Message(group_id=HOST_GROUP, src=NodeId(1), dst=NodeId(2), body=b) for b in bodies]
    for m in messages:
        assert decode_message_bytes(encode_message(m, registry=reg), registry=reg) == m
    frames, oversized = encode_batch_frames(messages, max_frame_bytes=1 << 16, registry=reg)
    assert oversized == []
    assert len(frames) == 1
    decoded = decode_frame_bytes(frames[0][0], registry=reg)
    assert getattr(decoded, "messages", None) == tuple(messages)


def test_same_seed_replays_bit_for_bit() -> None:
    """Determinism: groups and peers are visited in sorted order and every random choice
    comes from the injected rng, so one seed gives the same frames, byte for byte."""

    def run() -> list[str]:
        c = HostCluster(groups=MIXED, seed=11, loss=0.05)
        c.run(30)
        for g in MIXED:
            if c.leader(g) is not None:
                c.propose(g, b"x")
        c.run(30)
        return c.trace

    assert run() == run()


def test_work_arriving_while_a_host_ready_is_out_lands_in_the_next_one() -> None:
    """The runtime may keep ticking and receiving while it persists a HostReady (the
    storage writer runs in a worker thread): nothing is lost, and the next ready() after
    advance() carries it."""
    c = HostCluster(groups={1: "raft", 2: "paxos"}, seed=12)
    c.elect_all(1)
    host = c.host(1)
    host.propose(GroupId(1), b"a")
    hr = host.ready()
    assert [gr.group_id for gr in hr.groups] == [1]
    host.propose(GroupId(2), b"b")  # while hr is out
    host.tick()
    assert not host.has_ready()  # like a core: nothing new until advance()
    c.carry_out(c.nodes[NodeId(1)], hr)
    host.advance(hr)
    assert host.has_ready()
    hr2 = host.ready()
    assert 2 in [gr.group_id for gr in hr2.groups]
    c.carry_out(c.nodes[NodeId(1)], hr2)
    host.advance(hr2)
    c.run_until(
        lambda: c.applied_everywhere(1, b"a") and c.applied_everywhere(2, b"b"), max_ticks=5
    )
