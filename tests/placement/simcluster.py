"""A model cluster that carries out planner operations through a real ``MetaState``.

Not a mock of the planner's inputs: descriptors, epochs and replica sets live in the meta state
machine and change only through its commands, exactly as the placement service will drive it.
What the model adds is what the groups themselves know (learners, the current leader) and what
stores report (sizes, QPS), with one table of INTEGER keys spread uniformly over
``[0, KEY_SPACE)`` so the median of a range is the middle of its clipped bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.quorum import majority
from consensus.types import NO_NODE, NodeId
from shardb.placement import (
    AddLearner,
    ClusterView,
    CreateTable,
    Merge,
    MergeRanges,
    MetaCommand,
    MetaResult,
    MetaState,
    NodeDown,
    NodeJoined,
    NodeView,
    Operation,
    PkType,
    Promote,
    RangeDescriptor,
    RangeView,
    RemoveReplica,
    ReplaceDeadReplica,
    SetLeaseholder,
    SetReplicas,
    Split,
    SplitRange,
    TransferLeader,
)

KEY_SPACE = 1 << 20
TABLE = "t"


class InvariantBroken(AssertionError):
    """The cluster reached a state the planner must never cause."""


@dataclass
class SimCluster:
    meta: MetaState = field(default_factory=MetaState)
    tick: int = 0
    alive: dict[NodeId, bool] = field(default_factory=dict)
    heartbeat: dict[NodeId, int] = field(default_factory=dict)
    learners: dict[int, tuple[NodeId, ...]] = field(default_factory=dict)
    leader: dict[int, NodeId] = field(default_factory=dict)
    size: dict[int, int] = field(default_factory=dict)
    qps: dict[int, tuple[int, ...]] = field(default_factory=dict)

    # ----------------------------------------------------------------- setup

    @classmethod
    def start(
        cls, *, nodes: int, split_points: tuple[int, ...] = (), size_bytes: int = 0
    ) -> SimCluster:
        sim = cls()
        for n in range(1, nodes + 1):
            sim.add_node(NodeId(n))
        sim.command(
            CreateTable(
                name=TABLE,
                schema_sql=f"CREATE TABLE {TABLE}(id INTEGER PRIMARY KEY, v TEXT)",
                pk_column="id",
                pk_type=PkType.INTEGER,
                backend="raft",
                split_points=split_points,
            )
        )
        for d in sim.meta.ranges():
            hint = sim.meta.leader_hint(d.range_id)
            sim.leader[d.range_id] = hint if hint is not None else min(d.replicas)
            sim.size[d.range_id] = size_bytes
        return sim

    def command(self, cmd: MetaCommand) -> MetaResult:
        result = self.meta.apply(cmd)
        if not result.ok:
            raise InvariantBroken(f"meta refused {cmd!r}: {result.error} {result.message}")
        return result

    def add_node(self, node: NodeId) -> None:
        self.command(NodeJoined(node_id=node, address=f"n{node}:7000"))
        self.alive[node] = True
        self.heartbeat[node] = self.tick

    def kill(self, node: NodeId) -> None:
        self.command(NodeDown(node_id=node))
        self.alive[node] = False
        for range_id, led in sorted(self.leader.items()):
            if led == node:
                self._elect(range_id)

    def revive(self, node: NodeId) -> None:
        self.add_node(node)
        for d in self.meta.ranges():
            if self.leader.get(d.range_id, NO_NODE) == NO_NODE:
                self._elect(d.range_id)

    def advance(self, ticks: int) -> None:
        self.tick += ticks
        for node in sorted(self.alive):
            if self.alive[node]:
                self.heartbeat[node] = self.tick

    def _elect(self, range_id: int) -> None:
        d = self._descriptor(range_id)
        live = [n for n in d.replicas if self.alive[n]]
        # An election needs a majority of voters (Raft §5.2); without one the group has none.
        self.leader[range_id] = min(live) if len(live) >= majority(len(d.replicas)) else NO_NODE

    def _descriptor(self, range_id: int) -> RangeDescriptor:
        d = self.meta.range(range_id)
        if d is None:
            raise InvariantBroken(f"range {range_id} vanished")
        return d

    # ----------------------------------------------------------------- the view

    def view(self, in_flight: tuple[Operation, ...] = ()) -> ClusterView:
        nodes = tuple(
            NodeView(node_id=n, alive=self.alive[n], last_heartbeat_tick=self.heartbeat[n])
            for n in sorted(self.alive)
        )
        ranges = tuple(
            RangeView(
                descriptor=d,
                size_bytes=self.size.get(d.range_id, 0),
                qps_samples=self.qps.get(d.range_id, ()),
                learners=self.learners.get(d.range_id, ()),
                leader=self.leader.get(d.range_id, NO_NODE),
                median_key=_median(d),
            )
            for d in self.meta.ranges()
        )
        return ClusterView(tick=self.tick, nodes=nodes, ranges=ranges, in_flight=in_flight)

    # ----------------------------------------------------------------- execution

    def execute(self, op: Operation) -> None:
        """Carry one operation out to completion, checking the safety invariants after it."""
        match op:
            case Split():
                self._split(op)
            case Merge():
                self._merge(op)
            case AddLearner() | ReplaceDeadReplica():
                self._add_learner(op.range_id, op.epoch, op.node_id)
            case Promote():
                self._promote(op)
            case RemoveReplica():
                self._remove(op)
            case TransferLeader():
                self._transfer(op)
        self.check_safety()

    def _split(self, op: Split) -> None:
        d = self._descriptor(op.range_id)
        key = op.key if op.key is not None else _median(d)
        if key is None or key == d.start_key or not d.contains(key):
            raise InvariantBroken(f"no split key for range {op.range_id}")
        result = self.command(SplitRange(range_id=op.range_id, epoch=op.epoch, split_key=key))
        left, right = result.ranges
        # Rows follow keys: each side keeps the share of the parent's keys it now holds.
        total = self.size[left.range_id]
        parent_span = span(left) + span(right)
        left_size = total * span(left) // parent_span if parent_span else 0
        self.size[left.range_id] = left_size
        self.size[right.range_id] = total - left_size
        # A new group starts without load history; the parent's is no longer about its keys.
        self.qps[left.range_id] = ()
        self.qps[right.range_id] = ()
        self.leader[right.range_id] = self.leader[left.range_id]

    def _merge(self, op: Merge) -> None:
        self.command(
            MergeRanges(
                left_range_id=op.left_range_id,
                left_epoch=op.left_epoch,
                right_range_id=op.right_range_id,
                right_epoch=op.right_epoch,
            )
        )
        self.size[op.left_range_id] += self.size.pop(op.right_range_id)
        self.qps[op.left_range_id] = ()
        self.qps.pop(op.right_range_id, None)
        self.leader.pop(op.right_range_id, None)
        self.learners.pop(op.right_range_id, None)

    def _add_learner(self, range_id: int, epoch: int, node: NodeId) -> None:
        d = self._descriptor(range_id)
        if d.epoch != epoch:
            raise InvariantBroken(f"stale add learner on range {range_id}")
        current = self.learners.get(range_id, ())
        if node in d.replicas or node in current:
            raise InvariantBroken(f"node {node} is already a member of range {range_id}")
        if not self.alive[node]:
            raise InvariantBroken(f"learner added on down node {node}")
        self.learners[range_id] = tuple(sorted((*current, node)))

    def _promote(self, op: Promote) -> None:
        d = self._descriptor(op.range_id)
        current = self.learners.get(op.range_id, ())
        if op.node_id not in current:
            raise InvariantBroken(f"promote of non-learner {op.node_id}")
        self.command(
            SetReplicas(range_id=op.range_id, epoch=op.epoch, replicas=(*d.replicas, op.node_id))
        )
        self.learners[op.range_id] = tuple(n for n in current if n != op.node_id)

    def _remove(self, op: RemoveReplica) -> None:
        d = self._descriptor(op.range_id)
        current = self.learners.get(op.range_id, ())
        if op.node_id in current:
            self.learners[op.range_id] = tuple(n for n in current if n != op.node_id)
            return
        if op.node_id not in d.replicas:
            raise InvariantBroken(f"remove of non-member {op.node_id}")
        remaining = tuple(n for n in d.replicas if n != op.node_id)
        self.command(SetReplicas(range_id=op.range_id, epoch=op.epoch, replicas=remaining))
        if self.leader.get(op.range_id) == op.node_id:
            self._elect(op.range_id)

    def _transfer(self, op: TransferLeader) -> None:
        d = self._descriptor(op.range_id)
        if op.node_id not in d.replicas or not self.alive[op.node_id]:
            raise InvariantBroken(f"leadership sent to {op.node_id}, not a live voter")
        self.command(SetLeaseholder(range_id=op.range_id, node_id=op.node_id))
        self.leader[op.range_id] = op.node_id

    # ----------------------------------------------------------------- invariants

    def check_safety(self) -> None:
        """Distinct replicas, and a live quorum in every group (given at most one node down)."""
        for d in self.meta.ranges():
            members = (*d.replicas, *self.learners.get(d.range_id, ()))
            if len(set(members)) != len(members):
                raise InvariantBroken(f"range {d.range_id} has two replicas on one node")
            live = sum(1 for n in d.replicas if self.alive[n])
            if live < majority(len(d.replicas)):
                raise InvariantBroken(
                    f"range {d.range_id} voters {d.replicas} have {live} live: under quorum"
                )


def _clip(d: RangeDescriptor) -> tuple[int, int]:
    low = 0 if d.start_key is None else max(0, int(d.start_key))
    high = KEY_SPACE if d.end_key is None else min(KEY_SPACE, int(d.end_key))
    return low, high


def span(d: RangeDescriptor) -> int:
    """How many of the table's keys ``[0, KEY_SPACE)`` fall in the range."""
    low, high = _clip(d)
    return max(0, high - low)


def _median(d: RangeDescriptor) -> int | None:
    """The middle of the range's keys, as its leader would report it; None if it has none."""
    low, high = _clip(d)
    if high <= low:
        return None
    return (low + high) // 2
