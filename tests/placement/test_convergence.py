"""Property: driving a model cluster with the planner is safe at every step and converges.

A random history of node joins, deaths, revivals, load and ticks is interleaved with planning
and with in-flight operations completing in random order. After every completed operation no
group is under quorum and no node holds two replicas of one range (``SimCluster.check_safety``).
Once the history stops, planning to a fixpoint must end with every range fully replicated on
live nodes and replicas and leaders spread within one per node.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import NodeId
from shardb.placement import (
    AddLearner,
    Operation,
    PlacementSettings,
    Promote,
    ReplaceDeadReplica,
    TransferLeader,
    leader_counts,
    operation_ranges,
    plan,
    replica_counts,
)

from .simcluster import KEY_SPACE, SimCluster, span

RF = 3
QUIESCE_ROUNDS = 300


def targets_down_node(sim: SimCluster, op: Operation) -> bool:
    """The executor would fail this operation: the node it needs died after it was planned."""
    if isinstance(op, AddLearner | ReplaceDeadReplica | Promote | TransferLeader):
        return not sim.alive[op.node_id]
    return False


def plan_checked(sim: SimCluster, placement: PlacementSettings, in_flight: list[Operation]) -> None:
    ops = plan(sim.view(tuple(in_flight)), placement)
    assert len(in_flight) + len(ops) <= placement.max_concurrent_operations
    busy = {r for op in in_flight for r in operation_ranges(op)}
    for op in ops:
        touched = operation_ranges(op)
        assert not busy.intersection(touched), f"{op} touches a range already in flight"
        busy.update(touched)
    in_flight.extend(ops)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_planner_keeps_quorum_and_converges(data: st.DataObject) -> None:
    """Safety at every step, balance at the end (replicas and leaders within 1 per node)."""
    node_count = data.draw(st.integers(min_value=3, max_value=6), label="nodes")
    points = sorted(set(data.draw(st.lists(st.integers(1, KEY_SPACE - 1), max_size=8))))
    placement = PlacementSettings(
        replication_factor=RF,
        split_size_bytes=64 * 1024,
        merge_size_bytes=16 * 1024,
        hot_qps=100,
        hot_observations=2,
        down_replacement_delay_ticks=10,
        max_concurrent_operations=data.draw(st.integers(1, 6), label="max_concurrent"),
    )
    sim = SimCluster.start(nodes=node_count, split_points=tuple(points))
    for d in sim.meta.ranges():
        if span(d):  # a range with no keys of the table holds no rows
            sim.size[d.range_id] = data.draw(st.integers(0, 200 * 1024), label="size")
    in_flight: list[Operation] = []
    next_node = node_count + 1

    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        event = data.draw(
            st.sampled_from(["plan", "plan", "complete", "complete", "join", "kill", "revive"])
            | st.sampled_from(["tick", "load"]),
            label="event",
        )
        down = sorted(n for n, up in sim.alive.items() if not up)
        if event == "plan":
            plan_checked(sim, placement, in_flight)
        elif event == "complete" and in_flight:
            op = in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1)))
            if not targets_down_node(sim, op):
                sim.execute(op)
        elif event == "join" and next_node <= 9:
            sim.add_node(NodeId(next_node))
            next_node += 1
        elif event == "kill" and not down:
            # One node down at a time: with RF 3 a second failure could break quorum on its
            # own, which says nothing about the planner.
            sim.kill(data.draw(st.sampled_from(sorted(sim.alive))))
        elif event == "revive" and down:
            sim.revive(down[0])
        elif event == "tick":
            sim.advance(data.draw(st.integers(1, 15)))
        elif event == "load":
            ranges = [d for d in sim.meta.ranges() if span(d)]
            r = ranges[data.draw(st.integers(0, len(ranges) - 1))]
            sample = data.draw(st.integers(0, 300))
            sim.qps[r.range_id] = (*sim.qps.get(r.range_id, ()), sample)[-4:]
            sim.size[r.range_id] += data.draw(st.integers(0, 32 * 1024))

    # Quiesce: the outstanding operations finish, load stops, a lone dead node stays dead
    # (so its replicas must be rebuilt) unless too few nodes would be left for RF replicas.
    for op in in_flight:
        if not targets_down_node(sim, op):
            sim.execute(op)
    down = sorted(n for n, up in sim.alive.items() if not up)
    if down and sum(sim.alive.values()) < RF:
        sim.revive(down[0])
    sim.advance(placement.down_replacement_delay_ticks)
    for _ in range(QUIESCE_ROUNDS):
        for d in sim.meta.ranges():
            sim.qps[d.range_id] = (*sim.qps.get(d.range_id, ()), 0)[-4:]
        ops = plan(sim.view(), placement)
        if not ops and all(len(sim.qps[d.range_id]) >= 2 for d in sim.meta.ranges()):
            break
        for op in ops:
            sim.execute(op)
    else:
        raise AssertionError(f"no fixpoint after {QUIESCE_ROUNDS} rounds")

    view = sim.view()
    for rv in view.ranges:
        assert not rv.learners
        assert len(rv.voters) == RF and all(sim.alive[n] for n in rv.voters), rv
        # Only a range holding a single key may stay large: there is nowhere to cut it.
        assert rv.size_bytes < placement.split_size_bytes or span(rv.descriptor) == 1, rv
    replicas = replica_counts(view)
    assert max(replicas.values()) - min(replicas.values()) <= 1, replicas
    leaders = leader_counts(view)
    assert max(leaders.values()) - min(leaders.values()) <= 1, leaders
