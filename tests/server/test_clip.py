"""``clip``: after a merge, a write refused by the old right range is re-routed to the merged
range cut at the refused range's bounds, so the keys that already applied are not sent again
(docs/adr/0009 and 0013)."""

from __future__ import annotations

from consensus.types import GroupId, NodeId
from shardb.placement.descriptors import RangeDescriptor, RangeMap
from shardb.server.gateway import clip


def _range(rid: int, start: int | None, end: int | None, epoch: int = 1) -> RangeDescriptor:
    return RangeDescriptor(
        range_id=rid,
        table="t",
        start_key=start,
        end_key=end,
        group_id=GroupId(rid + 1),
        replicas=(NodeId(1),),
        backend="raft",
        epoch=epoch,
    )


def test_a_merged_range_is_cut_at_the_refused_ranges_bounds() -> None:
    merged = RangeMap.build("t", [_range(1, None, 200, epoch=4), _range(3, 200, None)])
    refused = _range(2, 100, 200, epoch=2)
    pieces = clip(merged, [refused]).ranges
    assert [(p.start_key, p.end_key, p.range_id, p.epoch) for p in pieces] == [
        (None, 100, 1, 4),
        (100, 200, 1, 4),
        (200, None, 3, 1),
    ]


def test_clipping_at_existing_bounds_changes_nothing() -> None:
    ranges = RangeMap.build("t", [_range(1, None, 100), _range(2, 100, None)])
    assert clip(ranges, [_range(2, 100, None)]).ranges == ranges.ranges


def test_pieces_still_route_every_key_to_exactly_one_range() -> None:
    merged = RangeMap.build("t", [_range(1, None, None, epoch=9)])
    clipped = clip(merged, [_range(2, 10, 20), _range(3, 40, 50)])
    bounds = [(p.start_key, p.end_key) for p in clipped.ranges]
    assert bounds == [(None, 10), (10, 20), (20, 40), (40, 50), (50, None)]
    for key in (-5, 10, 19, 20, 45, 50, 10**9):
        assert clipped.lookup(key).range_id == 1
