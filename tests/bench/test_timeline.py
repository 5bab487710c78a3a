"""Unavailability windows and recovery times from operation timelines."""

from __future__ import annotations

from typing import Any

import pytest

from shardb.bench.faults import cut_off_replicas
from shardb.bench.timeline import NS_PER_S, OpTimeline, fault_costs, recovery_time_s

MS = 1_000_000


def _steady(
    timeline: OpTimeline, start_s: float, end_s: float, rate: int, leader: int, range_id: int = 1
) -> None:
    step = NS_PER_S // rate
    t = round(start_s * NS_PER_S)
    while t < end_s * NS_PER_S:
        timeline.record(t, ok=True, write=True, range_id=range_id, leader=leader)
        t += step


def test_unavailability_is_the_first_write_on_the_faulted_range_by_another_leader() -> None:
    """A write acknowledged after the kill but served by the killed leader was committed
    before the kill; it must not close the window."""
    timeline = OpTimeline()
    _steady(timeline, 0, 5, 100, leader=3)
    timeline.record(5 * NS_PER_S + 9 * MS, ok=True, write=True, range_id=1, leader=3)
    _steady(timeline, 5.8, 8, 100, leader=1)
    _steady(timeline, 0.001, 8, 100, leader=2, range_id=2)
    fault = 5 * NS_PER_S
    assert timeline.first_write_after(fault, [1]) == 9 * MS
    assert timeline.first_write_after(fault, [1], not_served_by=[3]) == 800 * MS
    # Range 2 never stopped; across both ranges the worst counts.
    assert timeline.first_write_after(fault, [2]) == 1 * MS
    assert timeline.first_write_after(fault, None, not_served_by=[3]) == 800 * MS
    assert timeline.first_write_after(9 * NS_PER_S, [1]) is None


def test_a_healed_node_may_serve_again() -> None:
    """Once the killed leader is back (healed), a write it serves ends the window."""
    timeline = OpTimeline()
    _steady(timeline, 0, 5, 100, leader=3)
    _steady(timeline, 7, 8, 100, leader=3)
    fault = 5 * NS_PER_S
    assert timeline.first_write_after(fault, [1], not_served_by=[3]) is None
    window = timeline.first_write_after(
        fault, [1], not_served_by=[3], excluded_until_ns=6 * NS_PER_S
    )
    assert window == 2 * NS_PER_S


def test_recovery_waits_for_throughput_back_at_ninety_percent_of_the_median() -> None:
    ok = [t * 10 * MS for t in range(500)]  # 100 ops/s for 5 s
    ok += [5 * NS_PER_S + 2 * NS_PER_S + t * 10 * MS for t in range(300)]  # gap of 2 s
    recovery = recovery_time_s(ok, 5 * NS_PER_S, 10 * NS_PER_S)
    assert recovery == pytest.approx(2.0, abs=0.11)


def test_recovery_is_zero_without_a_dip_and_none_without_a_return() -> None:
    ok = [t * 10 * MS for t in range(1000)]
    assert recovery_time_s(ok, 5 * NS_PER_S, 10 * NS_PER_S) == 0.0
    assert recovery_time_s(ok[:500], 5 * NS_PER_S, 10 * NS_PER_S) is None
    assert recovery_time_s(ok, 0, 10 * NS_PER_S) is None  # no baseline before the fault


def test_fault_costs_skip_faults_that_were_not_applied() -> None:
    timeline = OpTimeline()
    _steady(timeline, 0, 5, 100, leader=3)
    _steady(timeline, 5.5, 10, 100, leader=2)
    events: list[dict[str, Any]] = [
        {"label": "kill_leader(range=1)", "kind": "kill_leader", "at_ns": 5 * NS_PER_S,
         "nodes": [3], "ranges": [1], "error": None},
        {"label": "partition(isolate=1)", "kind": "partition", "at_ns": None, "nodes": [],
         "ranges": [], "error": "node 1 does not serve the fault op"},
    ]  # fmt: skip
    costs = fault_costs(timeline, events, 10 * NS_PER_S)
    assert len(costs) == 1
    assert costs[0]["unavailability_s"] == pytest.approx(0.5)
    assert costs[0]["recovery_s"] == pytest.approx(0.5, abs=0.11)


def test_buckets_count_per_tenth_of_a_second() -> None:
    timeline = OpTimeline()
    timeline.record(50 * MS, ok=True, write=False, range_id=1)
    timeline.record(150 * MS, ok=True, write=True, range_id=1)
    timeline.record(160 * MS, ok=False, write=True, range_id=1)
    assert timeline.buckets(300 * MS) == {
        "ok": [1, 1, 0],
        "failed": [0, 1, 0],
        "writes_ok": [0, 1, 0],
    }


def test_partial_partition_excludes_only_replicas_cut_off_from_their_group() -> None:
    """Cutting links 1-2 and 1-3 of five nodes isolates nobody from the cluster; only in a group
    whose replicas are 1, 2, 3 is node 1 (and only node 1) out of a majority."""
    links = [(1, 2), (1, 3)]
    assert cut_off_replicas(links, [1, 2, 3]) == [1]
    assert cut_off_replicas(links, [1, 2, 3, 4, 5]) == []
    assert cut_off_replicas(links, [2, 3, 4]) == []


def test_partition_unavailability_counts_writes_served_by_replicas_still_in_quorum() -> None:
    """Before the fix every end of a cut link was excluded, so a range led by node 2 (not cut off)
    looked unavailable until the heal; now only the cut-off replica's writes are excluded."""
    timeline = OpTimeline()
    _steady(timeline, 0, 10, 100, leader=2)  # range 1, led by node 2 throughout
    events: list[dict[str, Any]] = [
        {"label": "partition(links=[1-2 1-3])", "kind": "partition", "at_ns": 5 * NS_PER_S,
         "nodes": [1, 2, 3], "ranges": [], "error": None, "healed_ns": 8 * NS_PER_S,
         "out_by_range": {"1": [1]}},
    ]  # fmt: skip
    (cost,) = fault_costs(timeline, events, 10 * NS_PER_S)
    assert cost["unavailability_s"] == pytest.approx(0.01, abs=0.011)
    events[0]["out_by_range"] = {"1": [2]}
    (cost,) = fault_costs(timeline, events, 10 * NS_PER_S)
    assert cost["unavailability_s"] == pytest.approx(3.0, abs=0.011)  # only after the heal
