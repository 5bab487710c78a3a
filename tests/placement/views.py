"""Small builders for hand-written cluster views in planner scenario tests."""

from __future__ import annotations

from consensus.types import NO_NODE, GroupId, NodeId
from shardb.placement import Key, NodeView, RangeDescriptor, RangeView


def node(n: int, *, alive: bool = True, heartbeat: int = 0, capacity: int = 0) -> NodeView:
    return NodeView(
        node_id=NodeId(n), alive=alive, last_heartbeat_tick=heartbeat, capacity_bytes=capacity
    )


def nodes(*ids: int) -> tuple[NodeView, ...]:
    return tuple(node(n) for n in ids)


def rng(
    range_id: int,
    voters: tuple[int, ...],
    *,
    leader: int = 0,
    start: Key | None = None,
    end: Key | None = None,
    epoch: int = 1,
    size: int = 0,
    qps: tuple[int, ...] = (),
    learners: tuple[int, ...] = (),
    median: Key | None = None,
    table: str = "t",
) -> RangeView:
    descriptor = RangeDescriptor(
        range_id=range_id,
        table=table,
        start_key=start,
        end_key=end,
        group_id=GroupId(range_id + 1),
        replicas=tuple(NodeId(v) for v in sorted(voters)),
        backend="raft",
        epoch=epoch,
    )
    return RangeView(
        descriptor=descriptor,
        size_bytes=size,
        qps_samples=qps,
        learners=tuple(NodeId(n) for n in learners),
        leader=NodeId(leader) if leader else NO_NODE,
        median_key=median,
    )


def tiled(
    count: int,
    voters: tuple[int, ...],
    *,
    width: int = 100,
    leader: int = 0,
    size: int = 0,
    qps: tuple[int, ...] = (),
) -> list[RangeView]:
    """``count`` adjacent integer ranges of ``width`` keys tiling the whole key space."""
    out = []
    for i in range(count):
        start = None if i == 0 else i * width
        end = None if i == count - 1 else (i + 1) * width
        out.append(rng(i + 1, voters, start=start, end=end, leader=leader, size=size, qps=qps))
    return out
