"""The Ready contract of ``consensus.api`` as PaxosCore implements it: ``has_ready()`` is a
side-effect-free question ("would ready() hand out anything?"), False while a Ready is
outstanding; all protocol work that turns bookkeeping into messages happens in ``ready()``
(the same contract as RaftCore)."""

from __future__ import annotations

from support.cluster import Cluster

from consensus.api import Ready
from consensus.paxos.messages import Accept, Heartbeat, InstallSnapshot
from consensus.types import NodeId

from .harness import cluster


def test_has_ready_does_no_protocol_work_and_logs_nothing() -> None:
    """Asking has_ready() any number of times sends nothing, changes no progress and logs
    nothing; the one ready() that follows carries the batch exactly once."""
    c = cluster(3)
    c.elect(1)
    c.deliver_all()
    leader = c.core(1)
    for i in range(3):
        leader.propose(b"v%d" % i)
    leader.tick()  # a heartbeat round is now due as well
    lines = len(c.log_lines)
    before = leader.status()
    for _ in range(3):
        assert leader.has_ready()
    assert leader.status() == before
    assert len(c.log_lines) == lines
    rd = leader.ready()
    leader.advance(rd)
    accepts = [m for m in rd.messages if isinstance(m.body, Accept)]
    assert sorted(m.dst for m in accepts) == [2, 3]
    assert all(len(m.body.entries) == 3 for m in accepts)
    assert sorted(m.dst for m in rd.messages if isinstance(m.body, Heartbeat)) == [2, 3]
    assert not leader.has_ready()


def test_snapshot_transfer_starts_in_ready_not_in_has_ready() -> None:
    """A lagging peer needs compacted slots: has_ready() reports it, but the snapshot
    transfer (and its log line) starts only inside ready()."""
    c = cluster(3)
    c.elect(1)
    c.isolate(3)
    for i in range(3):
        c.propose(1, b"v%d" % i)
        c.deliver_all()
    c.run(2)
    c.compact(1)
    c.heal()
    leader = c.core(1)
    leader.report_unreachable(NodeId(3))  # resend from what 3 holds: compacted slots
    lines = len(c.log_lines)
    assert leader.has_ready()
    assert len(c.log_lines) == lines
    rd = leader.ready()
    leader.advance(rd)
    assert [m.dst for m in rd.messages if isinstance(m.body, InstallSnapshot)] == [3]
    assert any("snapshot_transfer_started" in line for line in c.log_lines[lines:])


def test_has_ready_is_false_while_a_ready_is_outstanding() -> None:
    """consensus.api: ready() before advance() is a UsageError, so has_ready() must say
    False until the outstanding Ready is advanced, even if new work arrived meanwhile."""
    c = cluster(3)
    c.elect(1)
    c.deliver_all()
    leader = c.core(1)
    leader.propose(b"a")
    rd = leader.ready()
    leader.propose(b"b")
    assert not leader.has_ready()
    leader.advance(rd)
    assert leader.has_ready()


class _ExactCluster(Cluster):
    """A cluster whose every Ready checks has_ready() against what ready() hands out."""

    checked = 0

    def process(self, node_id: int) -> None:
        node = self.nodes[NodeId(node_id)]
        if not node.alive:
            return
        while True:
            predicted = node.core.has_ready()
            rd: Ready = node.core.ready()
            if predicted == rd.is_empty():
                raise AssertionError(f"node {node_id}: has_ready()={predicted} but got {rd}")
            self.checked += 1
            if rd.is_empty():
                node.core.advance(rd)
                return
            node.readies += 1
            node.storage.persist(rd)
            for message in rd.messages:
                self._send(message)
            self._apply(node, rd)
            node.core.advance(rd)


def test_has_ready_predicts_ready_exactly_through_elections_faults_and_snapshots() -> None:
    """has_ready() is True exactly when ready() is non-empty, checked before every Ready of
    a run with an election, pipelined proposals, loss, a snapshot transfer, a crash and a
    leader change."""
    c = _ExactCluster(3, backend="paxos", seed=5, max_inflight_msgs=2)
    c.elect(1)
    for i in range(6):
        c.propose(1, b"p%d" % i)
    c.deliver_all()
    c.isolate(3)
    for i in range(4):
        c.propose(1, b"q%d" % i)
        c.run(1)
    c.compact(1)
    c.heal()
    c.run(5)
    c.crash(1)
    c.run(40)
    leader = c.leader()
    assert leader is not None and leader != 1
    c.propose(leader, b"after")
    c.run(3)
    c.check_consistent()
    assert c.applied(3)[-1] == b"after"
    assert c.checked > 100
