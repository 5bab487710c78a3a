"""When operations succeeded during a run, and what a fault cost: unavailability and recovery.

Definitions (used in the reports and docs/raft-vs-paxos.md):

- **unavailability window** of a fault: from the fault to the first successful write that
  completes after it, on the range the fault targets (a fault on one range's leader does not
  stop writes to the other ranges, so the cluster-wide first write would say nothing), and
  that was served by a leader other than the node the fault took out (kill -9, SIGSTOP,
  isolation). The leader comes from the statement's trace, which records the gateway's
  belief when it routed the statement: a write routed to the old leader and then retried by
  the gateway onto the new one is excluded too, so the window is conservative by about one
  operation (it includes the time gateways take to learn the new leader). Without the
  exclusion a write the old leader committed just before the fault, whose reply was still
  queued in a busy gateway, would count as availability (observed: a 9 ms "window" under
  load). For a fault not tied to a range, the worst range counts.
- **recovery time**: from the fault until the start of the first ``window_s`` window lying
  wholly after the fault in which the cluster-wide successful operations per second are back
  to at least ``RECOVERY_FRACTION`` of the median rate over the same windows before the fault
  (the first second of the phase, the warm-up, excluded). 0 when throughput never dipped.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Final

NS_PER_S: Final = 1_000_000_000
RECOVERY_FRACTION: Final = 0.9
WINDOW_S: Final = 0.5
STEP_S: Final = 0.1
WARMUP_S: Final = 1.0
TAKES_NODES_OUT: Final = ("kill_leader", "restart", "pause_node", "partition")
BUCKET_S: Final = 0.1
"""Resolution of the stored time series."""


@dataclass(slots=True)
class OpTimeline:
    """Completion times (ns since the run start) of successful operations, per range."""

    writes_ok: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    """Range id (0 = unknown) -> (completion time, serving leader or 0) of successful
    writes, in completion order."""
    ops_ok: list[int] = field(default_factory=list)
    ops_failed: list[int] = field(default_factory=list)

    def record(self, at_ns: int, *, ok: bool, write: bool, range_id: int, leader: int = 0) -> None:
        if not ok:
            self.ops_failed.append(at_ns)
            return
        self.ops_ok.append(at_ns)
        if write:
            self.writes_ok.setdefault(range_id, []).append((at_ns, leader))

    def first_write_after(
        self,
        at_ns: int,
        range_ids: list[int] | None = None,
        *,
        not_served_by: Collection[int] = (),
        excluded_until_ns: int | None = None,
    ) -> int | None:
        """Delay (ns) from ``at_ns`` to the first successful write completing after it on each
        of ``range_ids`` (all ranges written in the run when None) and served by a leader not
        in ``not_served_by`` (that exclusion ends at ``excluded_until_ns``, when the fault
        was healed and those nodes may lead again); the worst of them. None when one of them
        never saw such a write."""
        ranges = sorted(self.writes_ok) if range_ids is None else range_ids
        if not ranges:
            return None
        worst = 0
        for range_id in ranges:
            after = [
                t
                for t, leader in self.writes_ok.get(range_id, [])
                if t > at_ns
                and (
                    leader not in not_served_by
                    or (excluded_until_ns is not None and t > excluded_until_ns)
                )
            ]
            if not after:
                return None
            worst = max(worst, min(after) - at_ns)
        return worst

    def buckets(self, end_ns: int, bucket_s: float = BUCKET_S) -> dict[str, list[int]]:
        """Counts per ``bucket_s`` bucket from 0 to ``end_ns``: ok ops, failed ops, ok writes."""
        size = round(bucket_s * NS_PER_S)
        count = max(1, -(-end_ns // size))

        def histogram(times: list[int]) -> list[int]:
            out = [0] * count
            for t in times:
                out[min(count - 1, max(0, t // size))] += 1
            return out

        writes = [t for times in self.writes_ok.values() for t, _ in times]
        return {
            "ok": histogram(self.ops_ok),
            "failed": histogram(self.ops_failed),
            "writes_ok": histogram(writes),
        }


def recovery_time_s(
    ok_times_ns: list[int],
    fault_ns: int,
    end_ns: int,
    *,
    window_s: float = WINDOW_S,
    step_s: float = STEP_S,
    warmup_s: float = WARMUP_S,
    fraction: float = RECOVERY_FRACTION,
) -> float | None:
    """See the module docstring. None when there is no pre-fault baseline or throughput never
    came back before ``end_ns``."""
    times = sorted(ok_times_ns)
    window = round(window_s * NS_PER_S)
    step = round(step_s * NS_PER_S)

    def rate(start: int) -> float:
        lo = bisect.bisect_left(times, start)
        hi = bisect.bisect_left(times, start + window)
        return (hi - lo) / window_s

    baseline_starts = range(round(warmup_s * NS_PER_S), fault_ns - window + 1, step)
    baseline = [rate(s) for s in baseline_starts]
    if not baseline:
        return None
    target = fraction * statistics.median(baseline)
    start = fault_ns
    while start + window <= end_ns:
        if rate(start) >= target:
            return (start - fault_ns) / NS_PER_S
        start += step
    return None


def fault_costs(
    timeline: OpTimeline,
    faults: list[dict[str, Any]],
    end_ns: int,
) -> list[dict[str, Any]]:
    """Unavailability and recovery for each applied fault (``FaultEvent.as_dict`` entries)."""
    out: list[dict[str, Any]] = []
    for event in faults:
        if event.get("error") or event.get("at_ns") is None:
            continue
        at_ns = int(event["at_ns"])
        ranges = event.get("ranges") or None
        # Nodes the fault took out cannot have served a write after it: one they "served"
        # was committed before the fault (see the module docstring).
        down = event.get("nodes", []) if event.get("kind") in TAKES_NODES_OUT else []
        out_by_range = event.get("out_by_range") or {}
        if event.get("kind") == "partition" and out_by_range:
            # A partition takes out only the replicas it cuts off from a majority of their
            # group, not every end of a cut link (a partial partition isolates nobody from the
            # cluster), so the exclusion is per range.
            unavailable = _worst_first_write(
                timeline, at_ns, ranges, out_by_range, event.get("healed_ns")
            )
        else:
            unavailable = timeline.first_write_after(
                at_ns, ranges, not_served_by=down, excluded_until_ns=event.get("healed_ns")
            )
        out.append(
            {
                "fault": event["label"],
                "at_s": at_ns / NS_PER_S,
                "unavailability_s": None if unavailable is None else unavailable / NS_PER_S,
                "recovery_s": recovery_time_s(timeline.ops_ok, at_ns, end_ns),
            }
        )
    return out


def _worst_first_write(
    timeline: OpTimeline,
    at_ns: int,
    ranges: list[int] | None,
    out_by_range: dict[str, list[int]],
    healed_ns: int | None,
) -> int | None:
    worst = 0
    for range_id in sorted(timeline.writes_ok) if ranges is None else ranges:
        delay = timeline.first_write_after(
            at_ns,
            [range_id],
            not_served_by=out_by_range.get(str(range_id), []),
            excluded_until_ns=healed_ns,
        )
        if delay is None:
            return None
        worst = max(worst, delay)
    return worst
