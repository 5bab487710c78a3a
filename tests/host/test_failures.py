"""Node failures under quiescence: the coalesced liveness detector wakes groups whose leader
died, and lease reads never trust a clock that stood still. Both backends."""

from __future__ import annotations

import pytest

from consensus.api import ReadMode, Role
from consensus.host import MultiGroupHost
from consensus.types import GroupId, NodeId

from .driver import HostCluster

BACKENDS = ["raft", "paxos"]
MIXED = {g: ("raft" if g % 2 else "paxos") for g in range(1, 13)}
ELECTION_TIMEOUT_TICKS = 10  # CoreConfig default
NODE_DEAD_TICKS = 20  # HostConfig default


def quiesced_under_node_1(groups: dict[int, str], *, seed: int) -> HostCluster:
    c = HostCluster(groups=groups, seed=seed)
    c.elect_all(1)
    for g in groups:
        c.propose(g, f"before{g}".encode())
    c.run_until(
        lambda: (
            all(c.applied_everywhere(g, f"before{g}".encode()) for g in groups) and c.all_quiesced()
        ),
        max_ticks=10,
    )
    return c


def test_crashed_leader_node_groups_wake_via_liveness_detector_and_elect() -> None:
    """Node 1 leads every (quiesced) group and crashes. Nobody ticks those groups, so only
    the node-level detector can notice: after node_dead_ticks without a NodeHeartbeat the
    other hosts wake them, the followers time out (Raft §5.2; PMS §3) and elect new leaders
    within node_dead_ticks + 2 election timeouts + a few rounds. Safety holds throughout, the
    new leaders commit, and node 1, restarted, catches up."""
    c = quiesced_under_node_1(MIXED, seed=1)
    c.crash(1)
    bound = NODE_DEAD_TICKS + 2 * ELECTION_TIMEOUT_TICKS + 10
    took = c.run_until(lambda: all(c.leader(g) in (2, 3) for g in MIXED), max_ticks=bound)
    assert took >= NODE_DEAD_TICKS  # nothing happened before the detector fired
    for node in (2, 3):
        assert c.host(node).suspected_peers() == (1,)
        assert any(
            line.startswith(f"{node} node_suspected groups_woken=12 peer=1") for line in c.log_lines
        )
    for g in MIXED:
        c.propose(g, f"after{g}".encode())
    c.run_until(
        lambda: all(c.applied_everywhere(g, f"after{g}".encode()) for g in MIXED), max_ticks=10
    )
    c.check_consistent()
    c.restart(1)
    c.run_until(
        lambda: (
            all(c.applied_everywhere(g, f"after{g}".encode()) for g in MIXED) and c.all_quiesced()
        ),
        max_ticks=80,
    )
    for g in MIXED:
        assert c.commands(1, g) == [f"before{g}".encode(), f"after{g}".encode()]
    c.check_consistent()


@pytest.mark.parametrize("backend", BACKENDS)
def test_lease_read_right_after_wake_is_served_as_safe(backend: str) -> None:
    """Raft thesis §6.4.1: a lease read skips the quorum round only within a lease counted in
    the leader's ticks. A quiesced leader's ticks stood still, so the host turns the LEASE
    read into a SAFE one: no ReadState until a heartbeat round has been acknowledged."""
    c = quiesced_under_node_1({1: backend}, seed=2)
    host = c.host(1)
    assert host.is_quiesced(GroupId(1))
    host.read_index(GroupId(1), 42, mode=ReadMode.LEASE)
    c.process(NodeId(1))
    replica = c.nodes[NodeId(1)].replicas[GroupId(1)]
    assert replica.read_states == []
    assert any(f.src == 1 and any(m.group_id == 1 for m in f.messages) for f in c.frames)
    c.deliver_all()
    assert [r.request_id for r in replica.read_states] == [42]


@pytest.mark.parametrize("backend", BACKENDS)
def test_lease_read_on_a_group_that_never_quiesced_uses_the_lease(backend: str) -> None:
    """The control for the test above: with quiescence off, a leader holding a lease
    answers a LEASE read at once, without any message (Raft thesis §6.4.1)."""
    c = HostCluster(groups={1: backend}, host={"quiesce": False}, seed=3)
    c.elect_all(1)
    c.run(2 * ELECTION_TIMEOUT_TICKS)
    c.host(1).read_index(GroupId(1), 7, mode=ReadMode.LEASE)
    c.process(NodeId(1))
    assert [r.request_id for r in c.nodes[NodeId(1)].replicas[GroupId(1)].read_states] == [7]
    assert not any(f.src == 1 for f in c.frames)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lease_reads_resume_after_an_election_timeout_awake(backend: str) -> None:
    """The downgrade lasts one election timeout of awake ticks: by then every lease from
    before the wake has expired by the core's own count, and a valid lease comes from a
    round sent after the wake."""
    c = quiesced_under_node_1({1: backend}, seed=4)
    host = c.host(1)
    host.propose(GroupId(1), b"wake")
    for i in range(ELECTION_TIMEOUT_TICKS):
        c.run(1)
        host.propose(GroupId(1), f"busy{i}".encode())  # keep it from quiescing again
    c.run(1)
    assert not host.is_quiesced(GroupId(1))
    host.read_index(GroupId(1), 9, mode=ReadMode.LEASE)
    c.process(NodeId(1))
    assert [r.request_id for r in c.nodes[NodeId(1)].replicas[GroupId(1)].read_states] == [9]


@pytest.mark.parametrize("backend", BACKENDS)
def test_partitioned_quiesced_leader_never_serves_a_stale_lease_read(backend: str) -> None:
    """Why the downgrade exists. Node 1 leads a quiesced group and is partitioned away. The
    others suspect it, elect a new leader and commit a write. Node 1 still believes it
    leads, with a lease that its frozen clock says is fresh. A LEASE read there must not be
    answered (it would miss the write); as SAFE it waits for a quorum it cannot reach."""
    c = quiesced_under_node_1({1: backend}, seed=5)
    c.isolate(1)
    c.run_until(lambda: c.leader(1) in (2, 3), max_ticks=NODE_DEAD_TICKS + 40)
    c.propose(1, b"newer write")
    new_leader = c.leader(1)
    assert new_leader is not None
    c.run_until(lambda: b"newer write" in c.commands(int(new_leader), 1), max_ticks=10)
    old = c.host(1)
    assert old.status(GroupId(1)).role is Role.LEADER  # it has not noticed anything
    old.read_index(GroupId(1), 13, mode=ReadMode.LEASE)
    c.process(NodeId(1))
    c.run(ELECTION_TIMEOUT_TICKS * 2)
    assert c.nodes[NodeId(1)].replicas[GroupId(1)].read_states == []
    c.heal()
    c.run_until(lambda: c.applied_everywhere(1, b"newer write"), max_ticks=60)
    c.check_consistent()


def test_without_the_downgrade_the_frozen_lease_would_serve_a_stale_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shows the scenario above is real (so that test can fail): with the host's downgrade
    disabled, the partitioned old leader answers the LEASE read from its frozen lease at
    once, although a newer write is committed elsewhere."""
    monkeypatch.setattr(MultiGroupHost, "_lease_clock_stood_still", lambda self, group: False)
    c = quiesced_under_node_1({1: "raft"}, seed=5)
    c.isolate(1)
    c.run_until(lambda: c.leader(1) in (2, 3), max_ticks=NODE_DEAD_TICKS + 40)
    c.propose(1, b"newer write")
    c.run(3)
    c.host(1).read_index(GroupId(1), 13, mode=ReadMode.LEASE)
    c.process(NodeId(1))
    stale = c.nodes[NodeId(1)].replicas[GroupId(1)].read_states
    assert [r.request_id for r in stale] == [13]
    assert b"newer write" not in c.commands(1, 1)
