"""RangeMap routing against a brute-force oracle: every key lands in exactly one range."""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import GroupId, NodeId
from shardb.placement import Key, RangeDescriptor, RangeMap


def build(points: list[Key], seed: int) -> RangeMap:
    """A map cut at ``points`` (sorted, distinct), built from descriptors in shuffled order."""
    bounds: list[Key | None] = [None, *points, None]
    ranges = [
        RangeDescriptor(
            range_id=i + 1,
            table="t",
            start_key=start,
            end_key=end,
            group_id=GroupId(i + 2),
            replicas=(NodeId(1), NodeId(2), NodeId(3)),
            backend="raft",
        )
        for i, (start, end) in enumerate(itertools.pairwise(bounds))
    ]
    random.Random(seed).shuffle(ranges)
    return RangeMap.build("t", ranges)


def lower(key: Key | None) -> tuple[int, Any]:
    """A start bound in a total order: None is minus infinity."""
    return (0, 0) if key is None else (1, key)


def upper(key: Key | None) -> tuple[int, Any]:
    """An end bound in a total order: None is plus infinity."""
    return (2, 0) if key is None else (1, key)


def intersects(r: RangeDescriptor, low: Key | None, high: Key | None, inclusive: bool) -> bool:
    """Oracle: some key lies in both ``r`` and ``[low, high)`` (``[low, high]``).

    An interval's lower bound is its smallest key, so two intervals share a key iff the larger
    lower bound lies inside both."""
    first = max(lower(low), lower(r.start_key))
    if not first < upper(r.end_key):
        return False
    return first <= upper(high) if inclusive else first < upper(high)


int_keys: st.SearchStrategy[Key] = st.integers(min_value=-(2**63), max_value=2**63 - 1)
text_keys: st.SearchStrategy[Key] = st.text(max_size=4)


@st.composite
def maps_and_keys(draw: st.DrawFn) -> tuple[RangeMap, list[Key]]:
    keys = draw(st.sampled_from([int_keys, text_keys]))
    points: list[Key] = sorted(set(draw(st.lists(keys, max_size=12))))
    probes = draw(st.lists(keys, min_size=1, max_size=20)) + points
    return build(points, draw(st.integers(0, 2**32))), probes


@settings(max_examples=300, deadline=None)
@given(maps_and_keys())
def test_every_key_routes_to_exactly_one_range(case: tuple[RangeMap, list[Key]]) -> None:
    """lookup(key) is the single range whose bounds contain key (checked by scanning all)."""
    rmap, probes = case
    for key in probes:
        holders = [r for r in rmap.ranges if r.contains(key)]
        assert len(holders) == 1, (key, holders)
        assert rmap.lookup(key) == holders[0]


@settings(max_examples=300, deadline=None)
@given(maps_and_keys(), st.booleans(), st.data())
def test_overlapping_is_exactly_the_intersecting_ranges(
    case: tuple[RangeMap, list[Key]], inclusive: bool, data: st.DataObject
) -> None:
    """overlapping(low, high) returns, in key order, exactly the ranges that share a key with
    the query interval, for bounded and unbounded queries alike."""
    rmap, probes = case
    bounds = [None, *probes]
    low = data.draw(st.sampled_from(bounds), label="low")
    high = data.draw(st.sampled_from(bounds), label="high")
    if upper(high) < lower(low):
        low, high = high, low
    if not (lower(low) < upper(high) or (inclusive and lower(low) == upper(high))):
        return  # an empty query interval: "may hold" makes no promise for it
    expected = [r for r in rmap.ranges if intersects(r, low, high, inclusive)]
    assert list(rmap.overlapping(low, high, high_inclusive=inclusive)) == expected
