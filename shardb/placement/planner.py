"""The placement planner: a pure function from a cluster view to placement operations.

``plan(view, settings)`` reads what the stores last reported (node liveness, range sizes, load,
voters, learners, leaders) plus the operations still in flight, and returns the next operations
to start. It remembers nothing between calls: every decision is derived from the view, so a
placement service that crashes mid-move simply resumes from what the cluster looks like. The
trio service (not here) carries each operation out through the range's group and records the
outcome in the meta group (``shardb.placement.meta``); every operation names the range epoch it
was planned against, so one planned from a stale view is refused there (``STALE_EPOCH``).

A replica move is three operations, each started only after the previous one finished, so a
group never has fewer live voters than a quorum because of us (add before remove, Raft §4.2.1
on catching up new servers as non-voting members first):

1. ``AddLearner`` (or ``ReplaceDeadReplica``, the same step aimed at a dead node's replica):
   the new node receives the log or a snapshot without voting.
2. ``Promote``: the caught-up learner becomes a voter (the group has RF + 1 voters).
3. ``RemoveReplica``: the surplus voter goes, a dead one first, else the most loaded; if that
   is the leader, a ``TransferLeader`` comes first so the group keeps serving.

Priorities, highest first: finish moves in progress, repair (dead or missing replicas), split
(hot, then large), merge, balance replicas, balance leaders. At most
``max_concurrent_operations`` are in flight at once, and at most one per range.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

import structlog

from consensus.api import Logger
from consensus.quorum import majority
from consensus.types import NO_NODE, NodeId
from shardb.placement.descriptors import Key, RangeDescriptor

# --------------------------------------------------------------------------- the view


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeView:
    node_id: NodeId
    alive: bool
    """The failure detector's verdict: a node that is not alive receives nothing new."""
    last_heartbeat_tick: int
    capacity_bytes: int = 0
    """0 = unlimited."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeView:
    descriptor: RangeDescriptor
    """From the meta group: bounds, epoch and voters (``descriptor.replicas``)."""
    size_bytes: int = 0
    qps_samples: tuple[int, ...] = ()
    """Recent queries-per-second observations, oldest first."""
    learners: tuple[NodeId, ...] = ()
    """Non-voting members reported by the group (a move in progress)."""
    leader: NodeId = NO_NODE
    median_key: Key | None = None
    """The range's median primary key, if its leader reported one."""

    @property
    def range_id(self) -> int:
        return self.descriptor.range_id

    @property
    def voters(self) -> tuple[NodeId, ...]:
        return self.descriptor.replicas


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterView:
    tick: int
    nodes: tuple[NodeView, ...]
    ranges: tuple[RangeView, ...]
    in_flight: tuple[Operation, ...] = ()
    """Operations started earlier and not finished yet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementSettings:
    replication_factor: int = 3
    split_size_bytes: int = 64 * 1024
    """Small by default so that demos split; production would use tens of MiB."""
    hot_qps: int = 1_000
    hot_observations: int = 3
    """A range is hot when its last ``hot_observations`` samples are all >= ``hot_qps``."""
    merge_size_bytes: int = 16 * 1024
    """Neighbours are merged when both are below this (and together below the split size)."""
    down_replacement_delay_ticks: int = 100
    """How long a node must be silent before its replicas are rebuilt elsewhere: a short
    restart should not cost a full snapshot transfer of every range it held."""
    max_concurrent_operations: int = 4

    def __post_init__(self) -> None:
        _check(self.replication_factor >= 1, "replication factor must be at least 1")
        _check(self.hot_observations >= 1, "hot_observations must be at least 1")
        _check(self.max_concurrent_operations >= 1, "max_concurrent_operations must be >= 1")
        _check(
            self.merge_size_bytes <= self.split_size_bytes,
            "merge size must not exceed split size, or merges and splits would undo each other",
        )


# --------------------------------------------------------------------------- operations


class SplitReason(enum.Enum):
    SIZE = "size"
    LOAD = "load"


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    range_id: int
    epoch: int
    key: Key | None
    """The median key if known, else the midpoint of two finite integer bounds; None asks the
    executor to take the median from the range's data (text keys, unbounded ranges)."""
    reason: SplitReason


@dataclass(frozen=True, slots=True, kw_only=True)
class Merge:
    left_range_id: int
    left_epoch: int
    right_range_id: int
    right_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AddLearner:
    range_id: int
    epoch: int
    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplaceDeadReplica:
    """First step of a repair: add ``node_id`` as a learner in place of ``dead_node_id``; the
    ordinary ``Promote`` and ``RemoveReplica(dead_node_id)`` steps follow."""

    range_id: int
    epoch: int
    dead_node_id: NodeId
    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Promote:
    range_id: int
    epoch: int
    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveReplica:
    """Remove a voter (a surplus one after a promote) or an abandoned learner."""

    range_id: int
    epoch: int
    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferLeader:
    range_id: int
    epoch: int
    node_id: NodeId


Operation: TypeAlias = (
    Split | Merge | AddLearner | ReplaceDeadReplica | Promote | RemoveReplica | TransferLeader
)


def operation_ranges(op: Operation) -> tuple[int, ...]:
    """The ranges an operation works on (both for a merge)."""
    if isinstance(op, Merge):
        return (op.left_range_id, op.right_range_id)
    return (op.range_id,)


class PlacementError(ValueError):
    """The view or the settings break an invariant the planner relies on."""


def _check(condition: bool, message: str) -> None:
    """Invariant check that survives ``python -O`` (unlike ``assert``)."""
    if not condition:
        raise PlacementError(message)


# --------------------------------------------------------------------------- planning


def plan(
    view: ClusterView, settings: PlacementSettings, *, logger: Logger | None = None
) -> list[Operation]:
    """The operations to start now, in priority order; deterministic for a given view."""
    planned = _Planner(view, settings).run()
    log: Logger = logger or structlog.get_logger(__name__)
    for op in planned:
        log.debug("operation_planned", operation=type(op).__name__, ranges=operation_ranges(op))
    return planned


@dataclass(slots=True)
class _Planner:
    view: ClusterView
    settings: PlacementSettings
    ops: list[Operation] = field(default_factory=list)
    budget: int = 0
    busy: set[int] = field(default_factory=set)
    live: set[NodeId] = field(default_factory=set)
    dead: set[NodeId] = field(default_factory=set)
    capacity: dict[NodeId, int] = field(default_factory=dict)
    replica_counts: dict[NodeId, int] = field(default_factory=dict)
    """Projected replicas (voters and learners) per live node, updated as operations are
    planned so that one call does not send every move to the same emptiest node."""
    used_bytes: dict[NodeId, int] = field(default_factory=dict)
    leader_counts: dict[NodeId, int] = field(default_factory=dict)
    ranges: list[RangeView] = field(default_factory=list)

    def run(self) -> list[Operation]:
        self._load()
        if self.budget <= 0:
            return []
        for phase in (
            self._phase_finish_moves,
            self._phase_repair,
            self._phase_split,
            self._phase_merge,
            self._phase_balance_replicas,
            self._phase_balance_leaders,
        ):
            phase()
            if self.budget <= 0:
                break
        return self.ops

    # ----------------------------------------------------------------- setup

    def _load(self) -> None:
        view = self.view
        node_ids = [n.node_id for n in view.nodes]
        _check(len(set(node_ids)) == len(node_ids), "duplicate node in the cluster view")
        range_ids = [r.range_id for r in view.ranges]
        _check(len(set(range_ids)) == len(range_ids), "duplicate range in the cluster view")
        self.ranges = sorted(view.ranges, key=lambda r: r.range_id)
        for node in sorted(view.nodes, key=lambda n: n.node_id):
            self.capacity[node.node_id] = node.capacity_bytes
            if node.alive:
                self.live.add(node.node_id)
            elif view.tick - node.last_heartbeat_tick >= self.settings.down_replacement_delay_ticks:
                self.dead.add(node.node_id)
        known = set(node_ids)
        for r in view.ranges:
            # A member the view does not know at all has been removed from the cluster.
            self.dead.update(n for n in (*r.voters, *r.learners) if n not in known)
        self.replica_counts = {n: 0 for n in sorted(self.live)}
        self.used_bytes = {n: 0 for n in sorted(self.live)}
        self.leader_counts = {n: 0 for n in sorted(self.live)}
        for r in self.ranges:
            members = (*r.voters, *r.learners)
            _check(len(set(members)) == len(members), f"range {r.range_id} repeats a node")
            for member in members:
                if member in self.replica_counts:
                    self.replica_counts[member] += 1
                    self.used_bytes[member] += r.size_bytes
            if r.leader in self.leader_counts:
                self.leader_counts[r.leader] += 1
        for op in view.in_flight:
            self.busy.update(operation_ranges(op))
        self.budget = self.settings.max_concurrent_operations - len(view.in_flight)

    def _emit(self, op: Operation) -> None:
        self.ops.append(op)
        self.busy.update(operation_ranges(op))
        self.budget -= 1

    def _free(self) -> Iterable[RangeView]:
        """Ranges with nothing in flight, by range id, while budget remains."""
        for r in self.ranges:
            if self.budget <= 0:
                return
            if r.range_id not in self.busy:
                yield r

    # ----------------------------------------------------------------- helpers

    def _live_voters(self, r: RangeView) -> int:
        return sum(1 for n in r.voters if n in self.live)

    def _available(self, r: RangeView) -> bool:
        """The group can commit a membership change: a majority of its voters is live."""
        return self._live_voters(r) >= majority(len(r.voters))

    def _healthy(self, r: RangeView) -> bool:
        return (
            not r.learners
            and len(r.voters) == self.settings.replication_factor
            and all(n in self.live for n in r.voters)
        )

    def _fits(self, node: NodeId, r: RangeView) -> bool:
        cap = self.capacity.get(node, 0)
        return cap == 0 or self.used_bytes[node] + r.size_bytes <= cap

    def _target_for(self, r: RangeView) -> NodeId | None:
        """The live non-member with the fewest replicas (ties by node id) that has room."""
        members = set(r.voters) | set(r.learners)
        candidates = [n for n in self.replica_counts if n not in members and self._fits(n, r)]
        if not candidates:
            return None
        return min(candidates, key=lambda n: (self.replica_counts[n], n))

    def _add_member(self, node: NodeId, r: RangeView) -> None:
        self.replica_counts[node] += 1
        self.used_bytes[node] += r.size_bytes

    def _drop_member(self, node: NodeId, r: RangeView) -> None:
        if node in self.replica_counts:
            self.replica_counts[node] -= 1
            self.used_bytes[node] -= r.size_bytes

    def _hot(self, r: RangeView) -> bool:
        k = self.settings.hot_observations
        recent = r.qps_samples[-k:]
        return len(recent) == k and all(q >= self.settings.hot_qps for q in recent)

    def _cool(self, r: RangeView) -> bool:
        """Clearly not hot: enough samples, all under half the threshold. The hysteresis keeps
        a range that was just split for load from being merged back at once."""
        k = self.settings.hot_observations
        recent = r.qps_samples[-k:]
        return len(recent) == k and all(2 * q < self.settings.hot_qps for q in recent)

    # ----------------------------------------------------------------- phases

    def _phase_finish_moves(self) -> None:
        rf = self.settings.replication_factor
        for r in self._free():
            if r.learners:
                self._next_learner_step(r)
            elif len(r.voters) > rf:
                self._remove_surplus_voter(r)

    def _next_learner_step(self, r: RangeView) -> None:
        learner = min(r.learners)
        if learner not in self.live:
            # A learner does not vote, so dropping one never costs quorum.
            self._emit(
                RemoveReplica(range_id=r.range_id, epoch=r.descriptor.epoch, node_id=learner)
            )
            self._drop_member(learner, r)
        elif self._available(r):
            self._emit(Promote(range_id=r.range_id, epoch=r.descriptor.epoch, node_id=learner))

    def _remove_surplus_voter(self, r: RangeView) -> None:
        if not self._available(r):
            return
        not_live = sorted(n for n in r.voters if n not in self.live)
        if not_live:
            victim = not_live[0]
        else:
            victim = max(r.voters, key=lambda n: (self.replica_counts[n], n))
            if victim == r.leader:
                # Hand leadership away first; removing the leader would stall the group until
                # an election timeout (Raft §6: a removed leader steps down).
                target = self._leader_target(r, exclude=victim)
                if target is not None:
                    self._emit(
                        TransferLeader(
                            range_id=r.range_id, epoch=r.descriptor.epoch, node_id=target
                        )
                    )
                    self.leader_counts[victim] -= 1
                    self.leader_counts[target] += 1
                return
        live_after = self._live_voters(r) - (1 if victim in self.live else 0)
        if live_after < majority(len(r.voters) - 1):
            return
        self._emit(RemoveReplica(range_id=r.range_id, epoch=r.descriptor.epoch, node_id=victim))
        self._drop_member(victim, r)

    def _leader_target(self, r: RangeView, *, exclude: NodeId) -> NodeId | None:
        candidates = [n for n in r.voters if n != exclude and n in self.live]
        if not candidates:
            return None
        return min(candidates, key=lambda n: (self.leader_counts[n], n))

    def _phase_repair(self) -> None:
        rf = self.settings.replication_factor
        for r in self._free():
            if r.learners or len(r.voters) > rf or not self._available(r):
                continue
            dead_voters = sorted(n for n in r.voters if n in self.dead)
            if not dead_voters and len(r.voters) >= rf:
                continue
            target = self._target_for(r)
            if target is None:
                continue
            epoch = r.descriptor.epoch
            if dead_voters:
                self._emit(
                    ReplaceDeadReplica(
                        range_id=r.range_id,
                        epoch=epoch,
                        dead_node_id=dead_voters[0],
                        node_id=target,
                    )
                )
            else:
                self._emit(AddLearner(range_id=r.range_id, epoch=epoch, node_id=target))
            self._add_member(target, r)

    def _phase_split(self) -> None:
        hot = [r for r in self._free() if self._hot(r)]
        large = [
            r
            for r in self._free()
            if not self._hot(r) and r.size_bytes >= self.settings.split_size_bytes
        ]
        for reason, candidates in ((SplitReason.LOAD, hot), (SplitReason.SIZE, large)):
            for r in candidates:
                if self.budget <= 0:
                    return
                chosen = _split_key(r)
                if chosen is None:
                    continue
                self._emit(
                    Split(
                        range_id=r.range_id, epoch=r.descriptor.epoch, key=chosen[0], reason=reason
                    )
                )

    def _phase_merge(self) -> None:
        by_table: dict[str, list[RangeView]] = {}
        for r in self.ranges:
            by_table.setdefault(r.descriptor.table, []).append(r)
        for table in sorted(by_table):
            ordered = sorted(by_table[table], key=lambda r: _start_order(r.descriptor))
            i = 0
            while i + 1 < len(ordered) and self.budget > 0:
                left, right = ordered[i], ordered[i + 1]
                if self._mergeable(left, right):
                    self._emit(
                        Merge(
                            left_range_id=left.range_id,
                            left_epoch=left.descriptor.epoch,
                            right_range_id=right.range_id,
                            right_epoch=right.descriptor.epoch,
                        )
                    )
                    i += 2
                else:
                    i += 1

    def _mergeable(self, left: RangeView, right: RangeView) -> bool:
        s = self.settings
        return (
            left.range_id not in self.busy
            and right.range_id not in self.busy
            and left.descriptor.end_key is not None
            and left.descriptor.end_key == right.descriptor.start_key
            and left.voters == right.voters
            and self._healthy(left)
            and self._healthy(right)
            and left.size_bytes < s.merge_size_bytes
            and right.size_bytes < s.merge_size_bytes
            and left.size_bytes + right.size_bytes < s.split_size_bytes
            and self._cool(left)
            and self._cool(right)
        )

    def _phase_balance_replicas(self) -> None:
        while self.budget > 0:
            move = self._find_move()
            if move is None:
                return
            r, source, target = move
            self._emit(AddLearner(range_id=r.range_id, epoch=r.descriptor.epoch, node_id=target))
            self._add_member(target, r)
            # Projected: the surplus voter removed at the end of this move is the most loaded
            # one, which is at least as loaded as ``source``.
            self._drop_member(source, r)

    def _find_move(self) -> tuple[RangeView, NodeId, NodeId] | None:
        counts = self.replica_counts
        by_load = sorted(counts, key=lambda n: (-counts[n], n))
        by_room = sorted(counts, key=lambda n: (counts[n], n))
        for source in by_load:
            for target in by_room:
                # Moving from a node with a to one with b replicas lowers the sum of squared
                # counts only when a - b >= 2; that is what makes balancing terminate.
                if counts[source] - counts[target] < 2:
                    break
                for r in self.ranges:
                    if (
                        r.range_id not in self.busy
                        and source in r.voters
                        and target not in r.voters
                        and self._healthy(r)
                        and self._fits(target, r)
                    ):
                        return r, source, target
        return None

    def _phase_balance_leaders(self) -> None:
        """Even out leaders with transfers along augmenting paths.

        A direct transfer from a node with the most leaders to one with two fewer is not always
        possible (the poorer node may hold no replica of the richer one's ranges), so look for
        a chain ``a -> b -> ... -> z`` where each hop moves the leadership of one range to
        another of its voters: the middle nodes give one and get one, ``a`` loses one and ``z``
        gains one. Choosing a leader per range is a semi-matching problem, and a placement with
        no such path is optimal (Harvey et al., "Semi-matchings for bipartite graphs", 2006);
        with replica counts within one, an optimum with leader counts within one exists.
        """
        leader_of = {r.range_id: r.leader for r in self.ranges}
        while self.budget > 0:
            path = self._leader_path(leader_of)
            if path is None:
                return
            # The whole chain when the budget allows (strict progress); otherwise only its
            # last hop, which never raises the spread and shortens the chain for next time.
            hops = path if len(path) <= self.budget else path[-1:]
            for r, source, target in hops:
                self._emit(
                    TransferLeader(range_id=r.range_id, epoch=r.descriptor.epoch, node_id=target)
                )
                leader_of[r.range_id] = target
                self.leader_counts[source] -= 1
                self.leader_counts[target] += 1

    def _leader_path(
        self, leader_of: dict[int, NodeId]
    ) -> list[tuple[RangeView, NodeId, NodeId]] | None:
        """Shortest transfer chain from the richest node to one with two fewer leaders."""
        counts = self.leader_counts
        edges: dict[NodeId, list[tuple[RangeView, NodeId]]] = {n: [] for n in counts}
        for r in self.ranges:
            holder = leader_of[r.range_id]
            if r.range_id in self.busy or r.learners or holder not in edges:
                continue
            edges[holder].extend((r, v) for v in r.voters if v != holder and v in counts)
        for source in sorted(counts, key=lambda n: (-counts[n], n)):
            parent: dict[NodeId, tuple[RangeView, NodeId]] = {}
            frontier = [source]
            seen = {source}
            while frontier:
                found: NodeId | None = None
                next_frontier: list[NodeId] = []
                for u in frontier:
                    for r, v in edges[u]:
                        if v in seen:
                            continue
                        seen.add(v)
                        parent[v] = (r, u)
                        next_frontier.append(v)
                        # Shortest chain first; at that length, the poorest end node.
                        if counts[v] <= counts[source] - 2 and (
                            found is None or (counts[v], v) < (counts[found], found)
                        ):
                            found = v
                if found is not None:
                    return _unwind(parent, source, found)
                frontier = next_frontier
        return None


def _unwind(
    parent: dict[NodeId, tuple[RangeView, NodeId]], source: NodeId, end: NodeId
) -> list[tuple[RangeView, NodeId, NodeId]]:
    hops: list[tuple[RangeView, NodeId, NodeId]] = []
    node = end
    while node != source:
        r, previous = parent[node]
        hops.append((r, previous, node))
        node = previous
    hops.reverse()
    return hops


def _split_key(r: RangeView) -> tuple[Key | None] | None:
    """``(key,)`` with a key strictly inside the range, or ``(None,)`` to let the executor take
    the median from the data; None when there is no usable key this time."""
    d = r.descriptor
    if r.median_key is not None and _strictly_inside(d, r.median_key):
        return (r.median_key,)
    if isinstance(d.start_key, int) and isinstance(d.end_key, int):
        if d.end_key - d.start_key < 2:
            return None  # no integer strictly between the bounds
        return ((d.start_key + d.end_key) // 2,)
    if r.median_key is not None:
        # The leader's own median is no cut point (e.g. every row has the start key): asking
        # the executor to find one would fail the same way every round.
        return None
    # A midpoint of an unbounded side would be far from the data (keys 1..N split at 2**62).
    return (None,)


def _strictly_inside(d: RangeDescriptor, key: Key) -> bool:
    return d.contains(key) and key != d.start_key


def _start_order(d: RangeDescriptor) -> tuple[int, Key | int]:
    return (0, 0) if d.start_key is None else (1, d.start_key)


def replica_counts(view: ClusterView) -> dict[NodeId, int]:
    """Replicas (voters and learners) per live node: what the balancer evens out."""
    counts = {n.node_id: 0 for n in sorted(view.nodes, key=lambda n: n.node_id) if n.alive}
    for r in view.ranges:
        for node in (*r.voters, *r.learners):
            if node in counts:
                counts[node] += 1
    return counts


def leader_counts(view: ClusterView) -> dict[NodeId, int]:
    """Ranges led per live node."""
    counts = {n.node_id: 0 for n in sorted(view.nodes, key=lambda n: n.node_id) if n.alive}
    for r in view.ranges:
        if r.leader in counts:
            counts[r.leader] += 1
    return counts
