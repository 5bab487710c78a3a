"""Planner scenarios: one test per decision the placement driver is supposed to make."""

from __future__ import annotations

from consensus.types import NodeId
from shardb.placement import (
    AddLearner,
    ClusterView,
    Merge,
    Operation,
    PlacementSettings,
    Promote,
    RemoveReplica,
    ReplaceDeadReplica,
    Split,
    SplitReason,
    TransferLeader,
    leader_counts,
    plan,
    replica_counts,
)

from .simcluster import SimCluster
from .views import node, nodes, rng, tiled

SETTINGS = PlacementSettings(max_concurrent_operations=16)


def run_to_fixpoint(sim: SimCluster, settings: PlacementSettings, *, rounds: int = 200) -> int:
    """Plan and execute until the planner has nothing left to do; returns the rounds used."""
    for i in range(rounds):
        ops = plan(sim.view(), settings)
        if not ops:
            return i
        for op in ops:
            sim.execute(op)
    raise AssertionError(f"planner did not settle in {rounds} rounds")


def spread(counts: dict[NodeId, int]) -> int:
    return max(counts.values()) - min(counts.values())


# --------------------------------------------------------------------------- moves


def test_new_nodes_receive_learners_first() -> None:
    """A move starts by adding the new node as a learner, never by removing a voter (Raft
    §4.2.1: new servers join as non-voting members until caught up)."""
    view = ClusterView(tick=0, nodes=nodes(1, 2, 3, 4, 5), ranges=tuple(tiled(6, (1, 2, 3))))
    ops = plan(view, SETTINGS)
    assert ops, "an unbalanced cluster must get moves"
    assert all(isinstance(op, AddLearner) for op in ops)
    targets = sorted(op.node_id for op in ops if isinstance(op, AddLearner))
    # 18 replicas over 5 nodes: 3 or 4 each, so each new node needs 3 to 4 of them.
    assert targets.count(NodeId(4)) >= 3
    assert targets.count(NodeId(5)) >= 3


def test_new_nodes_end_balanced_within_one() -> None:
    """After all moves finish, replica counts per live node differ by at most one."""
    sim = SimCluster.start(nodes=3, split_points=tuple(range(1000, 12000, 1000)))
    sim.add_node(NodeId(4))
    sim.add_node(NodeId(5))
    run_to_fixpoint(sim, SETTINGS)
    counts = replica_counts(sim.view())
    assert spread(counts) <= 1, counts
    assert counts[NodeId(4)] > 0 and counts[NodeId(5)] > 0


def test_learner_is_promoted_next() -> None:
    """The second step of a move promotes the caught-up learner."""
    view = ClusterView(
        tick=0, nodes=nodes(1, 2, 3, 4), ranges=(rng(1, (1, 2, 3), learners=(4,), leader=1),)
    )
    assert plan(view, SETTINGS) == [Promote(range_id=1, epoch=1, node_id=NodeId(4))]


def test_surplus_voter_is_removed_from_the_most_loaded_node() -> None:
    """The last step removes one voter from a group of RF + 1, the most loaded one."""
    ranges = (
        rng(1, (1, 2, 3, 4), leader=1, start=None, end=100),
        rng(2, (3, 5, 6), leader=5, start=100, end=None),
    )
    view = ClusterView(tick=0, nodes=nodes(1, 2, 3, 4, 5, 6), ranges=ranges)
    assert RemoveReplica(range_id=1, epoch=1, node_id=NodeId(3)) in plan(view, SETTINGS)


def test_leader_is_moved_off_a_replica_before_it_is_removed() -> None:
    """A leader chosen for removal first hands leadership to another voter (Raft §3.10), so
    the group never waits out an election timeout because of a planned move."""
    ranges = (
        rng(1, (1, 2, 3, 4), leader=3, start=None, end=100),
        rng(2, (3, 5, 6), leader=5, start=100, end=None),
    )
    view = ClusterView(tick=0, nodes=nodes(1, 2, 3, 4, 5, 6), ranges=ranges)
    ops = [op for op in plan(view, SETTINGS) if 1 in _ranges(op)]
    assert len(ops) == 1
    assert isinstance(ops[0], TransferLeader) and ops[0].node_id != NodeId(3)


def test_dead_learner_is_dropped_not_promoted() -> None:
    """A learner on a down node is removed; promoting it would add a voter that cannot vote."""
    view = ClusterView(
        tick=0,
        nodes=(*nodes(1, 2, 3), node(4, alive=False)),
        ranges=(rng(1, (1, 2, 3), learners=(4,), leader=1),),
    )
    assert plan(view, SETTINGS) == [RemoveReplica(range_id=1, epoch=1, node_id=NodeId(4))]


# --------------------------------------------------------------------------- leaders


def test_leaders_are_spread_by_transfer() -> None:
    """Leader counts per node are evened out with leadership transfers."""
    view = ClusterView(tick=0, nodes=nodes(1, 2, 3), ranges=tuple(tiled(6, (1, 2, 3), leader=1)))
    ops = plan(view, SETTINGS)
    assert ops and all(isinstance(op, TransferLeader) for op in ops)
    after = {NodeId(1): 6, NodeId(2): 0, NodeId(3): 0}
    for op in ops:
        assert isinstance(op, TransferLeader)
        after[NodeId(1)] -= 1
        after[op.node_id] += 1
    assert spread(after) <= 1, after


def test_leaders_end_balanced_within_one() -> None:
    """After replica moves and transfers settle, leader counts differ by at most one."""
    sim = SimCluster.start(nodes=4, split_points=tuple(range(1000, 16000, 1000)))
    for range_id in sorted(sim.leader):
        sim.leader[range_id] = min(sim.meta.range(range_id).replicas)  # type: ignore[union-attr]  # every listed range exists
    run_to_fixpoint(sim, SETTINGS)
    counts = leader_counts(sim.view())
    assert spread(counts) <= 1, counts


# --------------------------------------------------------------------------- dead nodes


def _view_with_down_node(tick: int) -> ClusterView:
    return ClusterView(
        tick=tick,
        nodes=(*nodes(1, 2, 4), node(3, alive=False, heartbeat=10)),
        ranges=tuple(tiled(2, (1, 2, 3), leader=1)),
    )


def test_down_node_is_not_replaced_before_the_delay() -> None:
    """A short outage costs no snapshot transfer: nothing is rebuilt before the delay."""
    settings = PlacementSettings(down_replacement_delay_ticks=50, max_concurrent_operations=8)
    ops = plan(_view_with_down_node(tick=10 + 49), settings)
    assert not any(isinstance(op, ReplaceDeadReplica | AddLearner) for op in ops), ops


def test_down_node_is_replaced_after_the_delay() -> None:
    """Once down for the delay, each of its replicas gets a replacement on a live node."""
    settings = PlacementSettings(down_replacement_delay_ticks=50, max_concurrent_operations=8)
    ops = plan(_view_with_down_node(tick=10 + 50), settings)
    assert ops == [
        ReplaceDeadReplica(range_id=1, epoch=1, dead_node_id=NodeId(3), node_id=NodeId(4)),
        ReplaceDeadReplica(range_id=2, epoch=1, dead_node_id=NodeId(3), node_id=NodeId(4)),
    ]


def test_replacement_finishes_by_removing_the_dead_voter() -> None:
    """After the replacement is promoted, the dead node's voter is the one removed."""
    view = ClusterView(
        tick=100,
        nodes=(*nodes(1, 2, 4), node(3, alive=False)),
        ranges=(rng(1, (1, 2, 3, 4), leader=1),),
    )
    assert plan(view, SETTINGS) == [RemoveReplica(range_id=1, epoch=1, node_id=NodeId(3))]


def test_voter_on_a_node_unknown_to_the_view_is_replaced() -> None:
    """A voter on a node that left the cluster view entirely counts as dead at once."""
    view = ClusterView(tick=0, nodes=nodes(1, 2, 4), ranges=(rng(1, (1, 2, 3), leader=1),))
    assert plan(view, SETTINGS) == [
        ReplaceDeadReplica(range_id=1, epoch=1, dead_node_id=NodeId(3), node_id=NodeId(4))
    ]


def test_suspect_node_gets_no_new_replicas() -> None:
    """A node the failure detector doubts is never a move target, even if it is emptiest."""
    view = ClusterView(
        tick=1,
        nodes=(*nodes(1, 2, 3), node(4, alive=False, heartbeat=0)),
        ranges=tuple(tiled(2, (1, 2, 3), leader=1)),
    )
    ops = plan(view, SETTINGS)
    assert not any(getattr(op, "node_id", None) == NodeId(4) for op in ops), ops


def test_group_without_quorum_is_left_alone() -> None:
    """With two of three voters dead no membership change can commit (Raft §6), so the
    planner issues none for that group instead of one that would hang."""
    view = ClusterView(
        tick=1000,
        nodes=(*nodes(1, 4, 5), node(2, alive=False), node(3, alive=False)),
        ranges=(rng(1, (1, 2, 3), leader=1),),
    )
    assert [op for op in plan(view, SETTINGS) if 1 in _ranges(op)] == []


def test_dead_node_is_fully_evacuated() -> None:
    """End to end: a node killed for good ends with no replicas; every group is whole."""
    sim = SimCluster.start(nodes=5, split_points=tuple(range(1000, 10000, 1000)))
    sim.kill(NodeId(2))
    sim.advance(SETTINGS.down_replacement_delay_ticks)
    run_to_fixpoint(sim, SETTINGS)
    for d in sim.meta.ranges():
        assert NodeId(2) not in d.replicas
        assert len(d.replicas) == SETTINGS.replication_factor
    assert spread(replica_counts(sim.view())) <= 1


# --------------------------------------------------------------------------- splits and merges


def test_hot_range_is_split_at_the_median() -> None:
    """A range whose QPS stays over the threshold for K samples is split at its median key."""
    settings = PlacementSettings(hot_qps=1000, hot_observations=3)
    view = ClusterView(
        tick=0,
        nodes=nodes(1, 2, 3),
        ranges=(rng(1, (1, 2, 3), leader=1, qps=(1500, 1200, 1000), median=4242),),
    )
    assert plan(view, settings) == [Split(range_id=1, epoch=1, key=4242, reason=SplitReason.LOAD)]


def test_short_load_spike_does_not_split() -> None:
    """Fewer than K hot samples in a row is a spike, not a hot range."""
    settings = PlacementSettings(hot_qps=1000, hot_observations=3)
    for samples in ((5000, 5000), (5000, 999, 5000, 5000), (0, 0, 0)):
        view = ClusterView(
            tick=0,
            nodes=nodes(1, 2, 3),
            ranges=(rng(1, (1, 2, 3), leader=1, qps=samples, median=7),),
        )
        assert plan(view, settings) == [], samples


def test_large_range_is_split() -> None:
    """A range over the size threshold is split; without a median, at the midpoint of its
    integer bounds; an unbounded one leaves the key to the executor (None)."""
    settings = PlacementSettings(split_size_bytes=1000, merge_size_bytes=100)
    view = ClusterView(
        tick=0,
        nodes=nodes(1, 2, 3),
        ranges=(
            rng(1, (1, 2, 3), leader=1, start=None, end=100, size=1000),
            rng(2, (1, 2, 3), leader=2, start=100, end=300, size=5000),
            rng(3, (1, 2, 3), leader=3, start=300, end=None, size=999),
        ),
    )
    assert plan(view, settings) == [
        Split(range_id=1, epoch=1, key=None, reason=SplitReason.SIZE),
        Split(range_id=2, epoch=1, key=200, reason=SplitReason.SIZE),
    ]


def test_median_outside_the_range_is_not_used() -> None:
    """A stale median that no longer lies strictly inside the range is ignored."""
    settings = PlacementSettings(split_size_bytes=1000, merge_size_bytes=100)
    view = ClusterView(
        tick=0,
        nodes=nodes(1, 2, 3),
        ranges=(
            rng(1, (1, 2, 3), leader=1, start=None, end=10, size=1),
            rng(2, (1, 2, 3), leader=2, start=10, end=20, size=5000, median=10),
            rng(3, (1, 2, 3), leader=3, start=20, end=None, size=1),
        ),
    )
    assert plan(view, settings) == [Split(range_id=2, epoch=1, key=15, reason=SplitReason.SIZE)]


def test_unbounded_range_with_median_at_its_start_is_not_split() -> None:
    """A reported median that is no cut point (all rows share the start key) means there is
    nothing to split; the planner must not ask the executor to find a key every round."""
    settings = PlacementSettings(split_size_bytes=1000, merge_size_bytes=100)
    view = ClusterView(
        tick=0,
        nodes=nodes(1, 2, 3),
        ranges=(
            rng(1, (1, 2, 3), leader=1, end=7, size=1),
            rng(2, (1, 2, 3), leader=2, start=7, size=5000, median=7),
        ),
    )
    assert [op for op in plan(view, settings) if isinstance(op, Split)] == []


def test_small_cool_neighbours_are_merged() -> None:
    """Two adjacent small ranges on the same replicas and without load are merged."""
    cool = (0, 0, 0)
    view = ClusterView(
        tick=0,
        nodes=nodes(1, 2, 3),
        ranges=(
            rng(1, (1, 2, 3), leader=1, start=None, end=100, size=10, qps=cool),
            rng(2, (1, 2, 3), leader=2, start=100, end=200, size=10, qps=cool),
            rng(3, (1, 2, 3), leader=3, start=200, end=None, size=10**6, qps=cool),
        ),
    )
    # Splits outrank merges; both fit in the budget.
    assert plan(view, SETTINGS) == [
        Split(range_id=3, epoch=1, key=None, reason=SplitReason.SIZE),
        Merge(left_range_id=1, left_epoch=1, right_range_id=2, right_epoch=1),
    ]


def test_no_merge_across_replica_sets_or_with_load() -> None:
    """Merging needs equal replica sets (metadata-only merge) and no recent load: a range
    just split for load has no samples yet and must not be merged straight back."""
    settings = PlacementSettings(max_concurrent_operations=16)
    cases = [
        ((1, 2, 3), (1, 2, 4), (0, 0, 0), (0, 0, 0)),
        ((1, 2, 3), (1, 2, 3), (0, 0, 0), ()),
        ((1, 2, 3), (1, 2, 3), (0, 0, 600), (0, 0, 0)),
    ]
    for left_voters, right_voters, left_qps, right_qps in cases:
        view = ClusterView(
            tick=0,
            nodes=nodes(1, 2, 3, 4),
            ranges=(
                rng(1, left_voters, leader=1, end=100, size=10, qps=left_qps),
                rng(2, right_voters, leader=2, start=100, size=10, qps=right_qps),
            ),
        )
        assert not any(isinstance(op, Merge) for op in plan(view, settings)), (
            left_voters,
            right_qps,
        )


def test_hot_splits_settle_without_merging_back() -> None:
    """End to end: a hot range splits once per hot streak, and cooled halves merge again."""
    settings = PlacementSettings(hot_qps=100, hot_observations=2, max_concurrent_operations=8)
    sim = SimCluster.start(nodes=3)
    (only,) = sim.meta.ranges()
    sim.qps[only.range_id] = (500, 500)
    ops = plan(sim.view(), settings)
    assert [type(op) for op in ops] == [Split]
    sim.execute(ops[0])
    after_split = [op for op in plan(sim.view(), settings) if isinstance(op, Split | Merge)]
    assert after_split == [], "new halves have no samples: neither split nor merge"
    for range_id in sorted(sim.qps):
        sim.qps[range_id] = (0, 0)
    ops = [op for op in plan(sim.view(), settings) if isinstance(op, Split | Merge)]
    assert [type(op) for op in ops] == [Merge]


# --------------------------------------------------------------------------- limits, determinism


def test_concurrency_limit_counts_in_flight_operations() -> None:
    """No more than max_concurrent_operations in flight; busy ranges get nothing new."""
    settings = PlacementSettings(max_concurrent_operations=3)
    ranges = tuple(tiled(8, (1, 2, 3), leader=1))
    base = ClusterView(tick=0, nodes=nodes(1, 2, 3, 4, 5), ranges=ranges)
    assert len(plan(base, settings)) == 3
    busy = AddLearner(range_id=1, epoch=1, node_id=NodeId(4))
    ops = plan(ClusterView(tick=0, nodes=base.nodes, ranges=ranges, in_flight=(busy,)), settings)
    assert len(ops) == 2
    assert all(1 not in _ranges(op) for op in ops)
    full = (busy, *plan(base, settings)[:2])
    assert (
        plan(ClusterView(tick=0, nodes=base.nodes, ranges=ranges, in_flight=full), settings) == []
    )


def test_one_operation_per_range_per_plan() -> None:
    """A range never gets two operations at once (they would race on its epoch)."""
    view = ClusterView(
        tick=0,
        nodes=nodes(1, 2, 3, 4, 5),
        ranges=tuple(tiled(6, (1, 2, 3), leader=1, size=10**6, qps=(10**6,) * 3)),
    )
    touched = [r for op in plan(view, SETTINGS) for r in _ranges(op)]
    assert len(touched) == len(set(touched))


def test_plan_is_deterministic_and_order_independent() -> None:
    """The same view, listed in any order, gives the same operations (replayable runs)."""
    ranges = tiled(9, (1, 2, 3), leader=1, size=10)
    view = ClusterView(tick=0, nodes=nodes(1, 2, 3, 4, 5), ranges=tuple(ranges))
    shuffled = ClusterView(
        tick=0, nodes=tuple(reversed(nodes(1, 2, 3, 4, 5))), ranges=tuple(ranges[::-1])
    )
    assert plan(view, SETTINGS) == plan(view, SETTINGS) == plan(shuffled, SETTINGS)


def test_balanced_cluster_is_left_alone() -> None:
    """A balanced, healthy cluster produces no operations at all."""
    sim = SimCluster.start(nodes=3, split_points=(100, 200))
    run_to_fixpoint(sim, SETTINGS)
    assert plan(sim.view(), SETTINGS) == []


def test_capacity_is_respected() -> None:
    """A node without room for a range is not chosen as its new home."""
    view = ClusterView(
        tick=0,
        nodes=(*nodes(1, 2, 3), node(4, capacity=50)),
        ranges=tuple(tiled(4, (1, 2, 3), leader=1, size=60)),
    )
    ops = plan(view, SETTINGS)
    assert not any(getattr(op, "node_id", None) == NodeId(4) for op in ops), ops


def _ranges(op: Operation) -> tuple[int, ...]:
    if isinstance(op, Merge):
        return (op.left_range_id, op.right_range_id)
    return (op.range_id,)
