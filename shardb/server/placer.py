"""The placement driver's executor: the trio side of ``shardb.placement.planner``.

It runs on every node and acts only while its node leads the meta group, so there is one
executor in the cluster (a new meta leader takes over; the planner remembers nothing, so
nothing is lost). Each round, every ``interval_s``:

1. **Observe**: the meta state (nodes, range descriptors) and, from each range's leader, the
   group's actual configuration (voters, learners, each peer's match index), its commit index
   and the range's size (``range_stats`` op).
2. **Sync**: a range whose group configuration differs from its descriptor (a previous round
   committed a membership change and stopped before recording it) gets ``SetMembers`` with
   the group's configuration. The group is the authority on membership, the meta group a
   record of it, always updated after the group committed: so a node that no longer finds
   itself among a range's members in the meta group may delete its replica.
3. **Plan**: ``plan(view, settings)``; the view marks a node dead once it has been down
   (``NodeDown`` in the meta group) for ``replace_down_after_s``, and leaves decommissioning
   nodes out, so their replicas are rebuilt elsewhere before they go.
4. **Execute** at most ``max_operations`` operations concurrently (the speed knob, with
   ``interval_s``): a replica move is ``AddLearner`` (membership change, then ``SetMembers``;
   the new node's reconciler creates an empty replica, which receives a snapshot), ``Promote``
   once the learner's match index reached the leader's commit index (Raft thesis §4.2.1),
   ``RemoveReplica`` (the removed node's reconciler deletes its replica); ``TransferLeader``
   records the leader hint that the nodes' leader balancers follow and asks the leader at
   once; ``Merge`` runs the gateway's merge (``Gateway.merge``). Splits are decided by each
   range's leader (``ShardNode.split_once``), not here, so ``Split`` operations are dropped.

Every step names the epoch it was planned against; a stale one is refused by the meta group
and simply re-planned next round from what the cluster looks like then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from consensus.api import ChangeKind, ChangeOp, ConsensusError, Logger, MembershipChange, Role
from consensus.quorum import majority
from consensus.runtime.client import ClientError
from consensus.runtime.errors import ApplicationError, NodeError
from consensus.runtime.node import Node
from consensus.types import NO_NODE, NodeId
from shardb.placement.descriptors import RangeDescriptor
from shardb.placement.meta import META_GROUP_ID, MetaState, SetLeaseholder, SetMembers
from shardb.placement.planner import (
    AddLearner,
    ClusterView,
    Merge,
    NodeView,
    Operation,
    PlacementSettings,
    Promote,
    RangeView,
    RemoveReplica,
    ReplaceDeadReplica,
    Split,
    TransferLeader,
    plan,
)
from shardb.server.gateway import Gateway
from shardb.server.groups import GroupAccess

_FAILURES = (ApplicationError, ClientError, NodeError, ConsensusError)
META_VOTERS = 5
"""The meta group's size when enough nodes are usable (as at bootstrap)."""
QPS_SAMPLES = 3
"""Commit-rate observations kept per range (the planner's ``hot_observations``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacerConfig:
    interval_s: float = 2.0
    """Time between planning rounds (0 = no placement driver on this node)."""
    max_operations: int = 2
    """Operations carried out at once: the speed knob. A move costs a snapshot transfer."""
    replication_factor: int = 3
    replace_down_after_s: float = 60.0
    """A node down (``NodeDown``) this long has its replicas rebuilt on other nodes."""
    merge_bytes: int = 0
    """Merge adjacent ranges that are both smaller than this (0 = no automatic merges)."""
    split_rows: int = 0
    """The nodes' size split threshold: merges never make a range of more than half of it."""
    hot_writes_per_s: float = 0.0
    """The load split threshold: ranges merge only when clearly cooler than it."""
    op_timeout_s: float = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """One range as its leader reports it."""

    leader: NodeId
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    commit: int
    matches: dict[int, int] = field(default_factory=dict)
    rows: int = 0
    approx_bytes: int = 0


class Placer:
    def __init__(
        self, node: Node, gateway: Gateway, access: GroupAccess, config: PlacerConfig, log: Logger
    ) -> None:
        self._node = node
        self._gateway = gateway
        self._access = access
        self._config = config
        self._log = log
        self._down_since: dict[int, float] = {}
        self._commits: dict[int, tuple[float, int]] = {}
        self._qps: dict[int, tuple[int, ...]] = {}
        self.rounds = 0
        self.executed: list[str] = []
        """Names of the operations carried out (newest last, bounded), for tests and logs."""

    def settings(self) -> PlacementSettings:
        c = self._config
        merge = max(0, c.merge_bytes)
        return PlacementSettings(
            replication_factor=c.replication_factor,
            # Splits are the range leaders' business (module docstring): never planned here.
            split_size_bytes=max(merge, 1 << 62),
            merge_size_bytes=merge,
            hot_qps=max(1, math.ceil(c.hot_writes_per_s)) if c.hot_writes_per_s > 0 else 1 << 30,
            hot_observations=QPS_SAMPLES,
            down_replacement_delay_ticks=max(0, math.ceil(c.replace_down_after_s)),
            max_concurrent_operations=max(1, c.max_operations),
        )

    def _leads_meta(self) -> bool:
        node = self._node
        return META_GROUP_ID in node.group_ids() and node.status(META_GROUP_ID).role is Role.LEADER

    async def run_forever(self) -> None:
        if self._config.interval_s <= 0:
            return
        while True:
            await trio.sleep(self._config.interval_s)
            if not self._leads_meta():
                self._down_since.clear()
                continue
            try:
                await self.round()
            except _FAILURES as exc:
                self._log.info("placement_round_failed", error=str(exc))

    # ----------------------------------------------------------------- one round

    async def round(self) -> list[Operation]:
        """Observe, sync, plan and execute once; the operations carried out."""
        self.rounds += 1
        timeout = self._config.op_timeout_s
        meta = await self._gateway.refresh_meta(timeout=timeout)
        observed = await self._observe(meta)
        if await self._sync(meta, observed):
            meta = await self._gateway.refresh_meta(timeout=timeout)
        try:
            await self._place_meta_group(meta)
        except _FAILURES as exc:
            # The ranges' operations do not depend on it: go on with them this round.
            self._log.info("meta_group_placement_failed", error=str(exc))
        view = self._view(meta, observed)
        operations = [
            op for op in plan(view, self.settings(), logger=self._log) if self._wanted(op, observed)
        ]
        async with trio.open_nursery() as nursery:
            for op in operations:
                nursery.start_soon(self._execute_logged, op, meta, observed)
        return operations

    async def _place_meta_group(self, meta: MetaState) -> None:
        """Keep the meta group on min(META_VOTERS, usable nodes) voters, rounded down to an odd
        number, replacing voters on decommissioning or long-dead nodes: one membership step
        per round, add before remove (a learner first, promoted once caught up; Raft thesis
        §4.2.1). The meta group has no descriptor, so its new member is asked directly to
        host an empty replica."""
        node = self._node
        st = node.status(META_GROUP_ID)
        if st.role is not Role.LEADER:
            return
        now = trio.current_time()
        gone = {int(n.node_id) for n in meta.nodes() if n.decommissioning} | {
            nid
            for nid, since in self._down_since.items()
            if now - since >= self._config.replace_down_after_s
        }
        alive = {int(n.node_id) for n in meta.nodes() if n.alive} - gone
        usable = {int(n.node_id) for n in meta.nodes()} - gone
        voters = {int(v) for v in st.voters}
        learners = {int(v) for v in st.learners}
        matches = {int(n): int(m) for n, m in st.progress}
        timeout = self._config.op_timeout_s

        async def change(kind: ChangeKind, target: int) -> None:
            ops = (ChangeOp(kind=kind, node=NodeId(target)),)
            await node.change_membership(META_GROUP_ID, MembershipChange(ops=ops), timeout=timeout)
            self._log.info("meta_group_changed", change=kind.name.lower(), node=target)
            self.executed.append(f"meta:{kind.name.lower()}")

        for learner in sorted(learners):
            if learner not in alive:
                await change(ChangeKind.REMOVE, learner)
            elif matches.get(learner, 0) >= int(st.commit):
                await change(ChangeKind.ADD_VOTER, learner)
            return  # one step per round; a learner still catching up waits
        # An odd size: a fourth voter would add a quorum member without adding a tolerated
        # failure (4 voters survive one loss, as 3 do).
        target = max(1, min(META_VOTERS, len(usable)))
        if target % 2 == 0:
            target -= 1
        healthy = voters - gone
        if len(healthy) < target:
            candidates = sorted(alive - voters)
            if candidates:
                joiner = candidates[0]
                await self._access.join_group(
                    META_GROUP_ID, st.backend.value, joiner, timeout=timeout
                )
                await change(ChangeKind.ADD_LEARNER, joiner)
                return
        leaving = sorted(voters & gone)
        if leaving and len(healthy) >= majority(len(voters)):
            victim = leaving[0]
            if victim == int(node.node_id):
                # Hand the meta group over first; the new leader's placer finishes the job.
                successor = min(healthy & alive, default=None)
                if successor is not None:
                    await node.transfer_leadership(META_GROUP_ID, successor, timeout=timeout)
                return
            await change(ChangeKind.REMOVE, victim)

    async def _observe(self, meta: MetaState) -> dict[int, Observed]:
        observed: dict[int, Observed] = {}
        limiter = trio.CapacityLimiter(8)

        async def one(d: RangeDescriptor) -> None:
            async with limiter:
                result = await self._observe_range(meta, d)
            if result is not None:
                observed[d.range_id] = result

        async with trio.open_nursery() as nursery:
            for d in meta.ranges():
                nursery.start_soon(one, d)
        now = trio.current_time()
        for range_id, obs in observed.items():
            previous = self._commits.get(range_id)
            self._commits[range_id] = (now, obs.commit)
            if previous is not None and now > previous[0]:
                rate = max(0, obs.commit - previous[1]) / (now - previous[0])
                samples = (*self._qps.get(range_id, ()), round(rate))
                self._qps[range_id] = samples[-QPS_SAMPLES:]
        return observed

    async def _observe_range(self, meta: MetaState, d: RangeDescriptor) -> Observed | None:
        hint = meta.leader_hint(d.range_id)
        try:
            status = await self._access.leader_status(
                d.group_id, int(hint) if hint else None, timeout=2.0
            )
        except _FAILURES:
            return None
        if status is None:
            return None
        leader = int(status["leader"])
        rows, size = 0, 0
        try:
            stats = await self._access.range_stats(d.group_id, leader, timeout=2.0)
            rows, size = int(stats["rows"]), int(stats["approx_bytes"])
        except _FAILURES as exc:
            self._log.debug("range_stats_failed", range_id=d.range_id, error=str(exc))
        return Observed(
            leader=NodeId(leader),
            voters=tuple(NodeId(int(v)) for v in status["voters"]),
            learners=tuple(NodeId(int(v)) for v in status["learners"]),
            commit=int(status["commit"]),
            matches={int(n): int(m) for n, m in status.get("progress", [])},
            rows=rows,
            approx_bytes=size,
        )

    async def _sync(self, meta: MetaState, observed: dict[int, Observed]) -> bool:
        """Record in the meta group the configurations groups committed (step 2)."""
        changed = False
        for d in meta.ranges():
            obs = observed.get(d.range_id)
            if obs is None or not obs.voters:
                continue
            if tuple(sorted(obs.voters)) == tuple(sorted(d.replicas)) and tuple(
                sorted(obs.learners)
            ) == tuple(sorted(d.learners)):
                continue
            changed = await self._set_members(d, obs.voters, obs.learners) or changed
        return changed

    def _view(self, meta: MetaState, observed: dict[int, Observed]) -> ClusterView:
        now = trio.current_time()
        nodes: list[NodeView] = []
        for info in meta.nodes():
            nid = int(info.node_id)
            if info.decommissioning:
                continue  # absent from the view: the planner rebuilds its replicas elsewhere
            if info.alive:
                self._down_since.pop(nid, None)
                nodes.append(
                    NodeView(node_id=info.node_id, alive=True, last_heartbeat_tick=int(now))
                )
            else:
                since = self._down_since.setdefault(nid, now)
                nodes.append(
                    NodeView(node_id=info.node_id, alive=False, last_heartbeat_tick=int(since))
                )
        ranges: list[RangeView] = []
        for d in meta.ranges():
            obs = observed.get(d.range_id)
            ranges.append(
                RangeView(
                    descriptor=d,
                    size_bytes=obs.approx_bytes if obs else 0,
                    qps_samples=self._qps.get(d.range_id, ()),
                    learners=d.learners,
                    leader=obs.leader if obs else NO_NODE,
                )
            )
        return ClusterView(tick=int(now), nodes=tuple(nodes), ranges=tuple(ranges))

    def _wanted(self, op: Operation, observed: dict[int, Observed]) -> bool:
        if isinstance(op, Split):
            return False
        if isinstance(op, Merge):
            if self._config.merge_bytes <= 0:
                return False
            left, right = observed.get(op.left_range_id), observed.get(op.right_range_id)
            if left is None or right is None:
                return False
            limit = self._config.split_rows
            return limit <= 0 or 2 * (left.rows + right.rows) < limit
        # Every other operation needs the range's leader to have answered this round.
        return op.range_id in observed

    # ----------------------------------------------------------------- execution

    async def _execute_logged(
        self, op: Operation, meta: MetaState, observed: dict[int, Observed]
    ) -> None:
        try:
            done = await self._execute(op, meta, observed)
        except _FAILURES as exc:
            self._log.info(
                "placement_operation_failed", operation=type(op).__name__, error=str(exc)
            )
            return
        if done:
            self._log.info("placement_operation_done", operation=type(op).__name__, detail=str(op))
            self.executed.append(type(op).__name__)
            del self.executed[:-256]

    async def _execute(self, op: Operation, meta: MetaState, observed: dict[int, Observed]) -> bool:
        timeout = self._config.op_timeout_s
        if isinstance(op, Merge):
            await self._gateway.merge(
                op.left_range_id,
                op.left_epoch,
                op.right_range_id,
                op.right_epoch,
                trio.current_time() + timeout,
            )
            return True
        d = meta.range(op.range_id)
        obs = observed.get(op.range_id)
        if d is None or obs is None or d.epoch != op.epoch:
            return False
        match op:
            case AddLearner(node_id=target) | ReplaceDeadReplica(node_id=target):
                await self._change(d, ChangeKind.ADD_LEARNER, target)
                return await self._set_members(d, d.replicas, (*d.learners, target))
            case Promote(node_id=target):
                # Promote only a learner that holds everything committed so far (Raft thesis
                # §4.2.1): a lagging new voter would make the group wait for it.
                if obs.matches.get(int(target), 0) < obs.commit:
                    self._log.debug("learner_catching_up", range_id=d.range_id, node=int(target))
                    return False
                await self._change(d, ChangeKind.ADD_VOTER, target)
                learners = tuple(n for n in d.learners if n != target)
                return await self._set_members(d, (*d.replicas, target), learners)
            case RemoveReplica(node_id=target):
                await self._change(d, ChangeKind.REMOVE, target)
                voters = tuple(n for n in d.replicas if n != target)
                learners = tuple(n for n in d.learners if n != target)
                return await self._set_members(d, voters, learners)
            case TransferLeader(node_id=target):
                deadline = trio.current_time() + timeout
                await self._gateway.propose_meta(
                    SetLeaseholder(range_id=d.range_id, node_id=target), deadline
                )
                await self._access.transfer_leader(d.group_id, int(target), timeout=timeout)
                return True
        return False

    async def _change(self, d: RangeDescriptor, kind: ChangeKind, target: NodeId) -> None:
        change = MembershipChange(ops=(ChangeOp(kind=kind, node=target),))
        await self._access.change_membership(d.group_id, change, timeout=self._config.op_timeout_s)

    async def _set_members(
        self, d: RangeDescriptor, voters: Sequence[NodeId], learners: Sequence[NodeId]
    ) -> bool:
        result = await self._gateway.propose_meta(
            SetMembers(
                range_id=d.range_id,
                epoch=d.epoch,
                voters=tuple(sorted(set(voters))),
                learners=tuple(sorted(set(learners) - set(voters))),
            ),
            trio.current_time() + self._config.op_timeout_s,
        )
        if not result.ok:
            self._log.info("set_members_refused", range_id=d.range_id, reason=result.message)
        return result.ok
