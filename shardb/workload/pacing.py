"""Pacing (closed and open loop), the async phase driver, and latency metrics.

Closed loop (the default): each client issues its next operation when the previous one
returns, so latency is measured from the actual start.

Open loop (``target`` ops/s): each of ``clients`` clients owns an equal share of the rate and
a fixed schedule of *intended* start times, as YCSB's ``-target`` does per thread. Latency is
measured from the intended start, not from when the client got round to sending. A client
stuck behind a slow operation therefore charges the wait to every operation it delayed;
measuring from the actual start would drop exactly the slow periods from the histogram
("coordinated omission", Gil Tene; wrk2 and YCSB's ``measureIntended`` correct it the same
way). Both times are kept: ``latency`` (from intended start) and ``service`` (from actual).

Metrics are HdrHistograms of microseconds per operation label, mergeable across processes
(``to_dict`` / ``from_dict`` carry them encoded), plus counts of ok / fail / unknown, retries,
and a per-second time series.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

import trio
from hdrh.histogram import HdrHistogram

from shardb.workload.outcome import OpResult, Outcome

OpT = TypeVar("OpT")

NS_PER_S: Final = 1_000_000_000
NS_PER_US: Final = 1_000
HISTOGRAM_MAX_US: Final = 3_600_000_000
"""An hour: anything slower is clamped (and still counted) rather than dropped."""
HISTOGRAM_DIGITS: Final = 3


class Clock(Protocol):
    """One monotonic clock for pacing, latency and histories."""

    def now_ns(self) -> int: ...

    async def sleep_until_ns(self, deadline_ns: int) -> None: ...


class TrioClock:
    """trio's clock: real monotonic time in production, virtual under ``MockClock``."""

    def now_ns(self) -> int:
        return round(trio.current_time() * NS_PER_S)

    async def sleep_until_ns(self, deadline_ns: int) -> None:
        await trio.sleep_until(deadline_ns / NS_PER_S)


class Labelled(Protocol):
    @property
    def label(self) -> str: ...


LabelledT = TypeVar("LabelledT", bound=Labelled)


class OperationSource(Protocol[OpT]):
    """A workload as the driver sees it (``CoreWorkload``, ``LoadPhase``, ``RegisterWorkload``,
    ``KvWorkload``)."""

    def next_operation(self) -> OpT | None: ...

    def complete(self, op: OpT, outcome: Outcome) -> None: ...


class Pacer(Protocol):
    def intended_start_ns(self, client: int, seq: int, now_ns: int) -> int:
        """When ``client``'s operation number ``seq`` (from 0) should start."""
        ...


class ClosedLoop:
    """No schedule: an operation is intended to start the moment its client is free."""

    def intended_start_ns(self, client: int, seq: int, now_ns: int) -> int:
        del client, seq
        return now_ns


class OpenLoop:
    """``target_ops_s`` in total, spread evenly over ``clients`` from ``start_ns``.

    Client ``c``'s operation ``s`` is intended at ``start + (c + s * clients) / target``: the
    clients interleave, so the aggregate schedule is one evenly spaced stream.
    """

    def __init__(self, *, target_ops_s: float, clients: int, start_ns: int) -> None:
        if not (target_ops_s > 0 and math.isfinite(target_ops_s)):
            raise ValueError(f"target must be a positive number of ops/s, got {target_ops_s}")
        if clients < 1:
            raise ValueError(f"need at least one client, got {clients}")
        self.target_ops_s = target_ops_s
        self.clients = clients
        self.start_ns = start_ns

    def intended_start_ns(self, client: int, seq: int, now_ns: int) -> int:
        del now_ns
        slot = client + seq * self.clients
        return self.start_ns + round(slot * NS_PER_S / self.target_ops_s)


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS)


def _record_us(histogram: HdrHistogram, duration_ns: int) -> None:
    micros = min(max(1, duration_ns // NS_PER_US), HISTOGRAM_MAX_US)
    histogram.record_value(micros)


@dataclass(slots=True)
class SecondBucket:
    ok: int = 0
    fail: int = 0
    unknown: int = 0
    latency_us_sum: int = 0
    latency_us_max: int = 0

    def add(self, other: SecondBucket) -> None:
        self.ok += other.ok
        self.fail += other.fail
        self.unknown += other.unknown
        self.latency_us_sum += other.latency_us_sum
        self.latency_us_max = max(self.latency_us_max, other.latency_us_max)


@dataclass(slots=True)
class LabelStats:
    latency: HdrHistogram = field(default_factory=_histogram)
    """From the intended start (coordinated-omission corrected)."""
    service: HdrHistogram = field(default_factory=_histogram)
    """From the actual start."""
    ok: int = 0
    fail: int = 0
    unknown: int = 0
    retries: int = 0

    def count(self, outcome: Outcome) -> int:
        return {Outcome.OK: self.ok, Outcome.FAIL: self.fail, Outcome.UNKNOWN: self.unknown}[
            outcome
        ]


class Metrics:
    """Per-label latency histograms and outcome counts, plus a per-second time series.

    Only completed operations have a latency; an operation cut off by the phase deadline is
    counted as ``unknown`` with no latency sample (there is no completion to measure).
    """

    def __init__(self) -> None:
        self.labels: dict[str, LabelStats] = {}
        self.series: dict[int, SecondBucket] = {}

    def _stats(self, label: str) -> LabelStats:
        stats = self.labels.get(label)
        if stats is None:
            stats = self.labels[label] = LabelStats()
        return stats

    def _count(self, stats: LabelStats, bucket: SecondBucket, outcome: Outcome) -> None:
        match outcome:
            case Outcome.OK:
                stats.ok += 1
                bucket.ok += 1
            case Outcome.FAIL:
                stats.fail += 1
                bucket.fail += 1
            case Outcome.UNKNOWN:
                stats.unknown += 1
                bucket.unknown += 1

    def _bucket(self, elapsed_ns: int) -> SecondBucket:
        second = max(0, elapsed_ns // NS_PER_S)
        bucket = self.series.get(second)
        if bucket is None:
            bucket = self.series[second] = SecondBucket()
        return bucket

    def record(
        self,
        label: str,
        outcome: Outcome,
        *,
        latency_ns: int,
        service_ns: int,
        elapsed_ns: int,
        retries: int = 0,
    ) -> None:
        """One completed operation; ``elapsed_ns`` is its completion since the phase start."""
        stats = self._stats(label)
        bucket = self._bucket(elapsed_ns)
        self._count(stats, bucket, outcome)
        stats.retries += retries
        _record_us(stats.latency, latency_ns)
        _record_us(stats.service, service_ns)
        latency_us = max(1, latency_ns // NS_PER_US)
        bucket.latency_us_sum += latency_us
        bucket.latency_us_max = max(bucket.latency_us_max, latency_us)

    def record_cut_off(self, label: str, *, elapsed_ns: int) -> None:
        """An operation still in flight when the phase was cancelled: outcome unknown."""
        self._count(self._stats(label), self._bucket(elapsed_ns), Outcome.UNKNOWN)

    @property
    def total(self) -> int:
        return sum(s.ok + s.fail + s.unknown for s in self.labels.values())

    def merge(self, other: Metrics) -> None:
        for label in sorted(other.labels):
            theirs = other.labels[label]
            mine = self._stats(label)
            mine.latency.add(theirs.latency)
            mine.service.add(theirs.service)
            mine.ok += theirs.ok
            mine.fail += theirs.fail
            mine.unknown += theirs.unknown
            mine.retries += theirs.retries
        for second in sorted(other.series):
            self._bucket(second * NS_PER_S).add(other.series[second])

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, bytes) for msgpack or JSON (histograms are base64 text)."""
        return {
            "labels": {
                label: {
                    "latency": stats.latency.encode().decode("ascii"),
                    "service": stats.service.encode().decode("ascii"),
                    "ok": stats.ok,
                    "fail": stats.fail,
                    "unknown": stats.unknown,
                    "retries": stats.retries,
                }
                for label, stats in sorted(self.labels.items())
            },
            "series": [
                [second, b.ok, b.fail, b.unknown, b.latency_us_sum, b.latency_us_max]
                for second, b in sorted(self.series.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        metrics = cls()
        for label, raw in data["labels"].items():
            stats = LabelStats(
                ok=raw["ok"], fail=raw["fail"], unknown=raw["unknown"], retries=raw["retries"]
            )
            stats.latency.add(HdrHistogram.decode(raw["latency"]))
            stats.service.add(HdrHistogram.decode(raw["service"]))
            metrics.labels[label] = stats
        for second, ok, fail, unknown, latency_sum, latency_max in data["series"]:
            metrics.series[second] = SecondBucket(ok, fail, unknown, latency_sum, latency_max)
        return metrics

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Per label: counts and latency percentiles in milliseconds (from intended start)."""
        out: dict[str, dict[str, float | int]] = {}
        for label, stats in sorted(self.labels.items()):
            h = stats.latency
            samples = h.get_total_count()
            row: dict[str, float | int] = {
                "ok": stats.ok,
                "fail": stats.fail,
                "unknown": stats.unknown,
                "retries": stats.retries,
                "samples": samples,
            }
            if samples:
                row |= {
                    "mean_ms": h.get_mean_value() / 1000,
                    "p50_ms": h.get_value_at_percentile(50) / 1000,
                    "p95_ms": h.get_value_at_percentile(95) / 1000,
                    "p99_ms": h.get_value_at_percentile(99) / 1000,
                    "p999_ms": h.get_value_at_percentile(99.9) / 1000,
                    "max_ms": h.get_max_value() / 1000,
                }
            out[label] = row
        return out


Execute = Callable[[OpT, int], Awaitable[OpResult]]
"""``execute(op, client) -> OpResult``: run one operation as client number ``client``. It
should map protocol errors to outcomes itself (``outcome_of_error``); an exception it raises
stops the phase."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseResult:
    metrics: Metrics
    started: int
    """Operations handed to the executor."""
    cut_off: int
    """Operations still in flight at the drain deadline (counted as unknown)."""
    start_ns: int
    end_ns: int


async def run_phase(
    *,
    source: OperationSource[LabelledT],
    execute: Execute[LabelledT],
    clock: Clock,
    clients: int,
    target_ops_s: float | None = None,
    duration_ns: int | None = None,
    operation_count: int | None = None,
    drain_ns: int = 0,
) -> PhaseResult:
    """Run ``clients`` concurrent clients against ``execute`` until the source is exhausted,
    ``operation_count`` operations have started, or ``duration_ns`` has passed.

    No operation is started at or after the end of the duration; operations in flight then
    get ``drain_ns`` more to finish, after which they are cancelled and counted as unknown.
    ``target_ops_s`` switches to open loop (latency from the intended start). With neither a
    duration nor a count, the source must end by itself (a load phase does).
    """
    if clients < 1:
        raise ValueError(f"need at least one client, got {clients}")
    start_ns = clock.now_ns()
    end_ns = None if duration_ns is None else start_ns + duration_ns
    pacer: Pacer = (
        ClosedLoop()
        if target_ops_s is None
        else OpenLoop(target_ops_s=target_ops_s, clients=clients, start_ns=start_ns)
    )
    metrics = Metrics()
    started = 0
    cut_off = 0

    async def client_loop(client: int) -> None:
        nonlocal started, cut_off
        seq = 0
        while operation_count is None or started < operation_count:
            intended = pacer.intended_start_ns(client, seq, clock.now_ns())
            if end_ns is not None and intended >= end_ns:
                return
            if intended > clock.now_ns():
                await clock.sleep_until_ns(intended)
            if operation_count is not None and started >= operation_count:
                return  # another client took the last one while this one slept
            op = source.next_operation()
            if op is None:
                return
            started += 1
            seq += 1
            actual = clock.now_ns()
            try:
                result = await execute(op, client)
            except trio.Cancelled:
                cut_off += 1
                metrics.record_cut_off(op.label, elapsed_ns=clock.now_ns() - start_ns)
                source.complete(op, Outcome.UNKNOWN)
                raise
            done = clock.now_ns()
            source.complete(op, result.outcome)
            metrics.record(
                op.label,
                result.outcome,
                latency_ns=done - intended,
                service_ns=done - actual,
                elapsed_ns=done - start_ns,
                retries=result.retries,
            )

    clients_scope = trio.CancelScope()

    async def watchdog(deadline_ns: int) -> None:
        await clock.sleep_until_ns(deadline_ns)
        clients_scope.cancel()

    async with trio.open_nursery() as outer:
        if end_ns is not None:
            outer.start_soon(watchdog, end_ns + drain_ns)
        with clients_scope:
            async with trio.open_nursery() as nursery:
                for client in range(clients):
                    nursery.start_soon(client_loop, client)
        outer.cancel_scope.cancel()
    return PhaseResult(
        metrics=metrics, started=started, cut_off=cut_off, start_ns=start_ns, end_ns=clock.now_ns()
    )
