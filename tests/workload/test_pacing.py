"""Pacing, the phase driver and metrics, on trio's virtual clock (no wall time).

Reference: Gil Tene, "How NOT to measure latency" (coordinated omission); wrk2 and YCSB's
``-target`` with ``measureIntended`` (latency from the intended start).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
import trio.testing

from consensus.sim.kv import Op
from shardb.workload import (
    HistoryRecorder,
    Metrics,
    OpenLoop,
    OpResult,
    Outcome,
    RegisterOp,
    RegisterWorkload,
    TrioClock,
    record_history,
    run_phase,
)
from shardb.workload.pacing import NS_PER_S

MS = 1_000_000


@dataclass(frozen=True, slots=True)
class Tick:
    n: int

    @property
    def label(self) -> str:
        return "tick"


class Ticks:
    """An endless source of numbered operations."""

    def __init__(self) -> None:
        self.issued = 0
        self.completed: list[Outcome] = []

    def next_operation(self) -> Tick | None:
        self.issued += 1
        return Tick(self.issued)

    def complete(self, op: Tick, outcome: Outcome) -> None:
        del op
        self.completed.append(outcome)


def _stalling(
    stall_on: int, stall_ns: int, service_ns: int = MS
) -> Callable[[Tick, int], Awaitable[OpResult]]:
    """Each operation takes ``service_ns``; operation number ``stall_on`` takes ``stall_ns``."""

    async def execute(op: Tick, client: int) -> OpResult:
        del client
        await trio.sleep((stall_ns if op.n == stall_on else service_ns) / NS_PER_S)
        return OpResult(outcome=Outcome.OK)

    return execute


def test_open_loop_schedule_interleaves_clients_evenly() -> None:
    """target ops/s over N clients: one evenly spaced stream of intended starts."""
    pacer = OpenLoop(target_ops_s=1000, clients=4, start_ns=5)
    starts = sorted(pacer.intended_start_ns(c, s, 0) for c in range(4) for s in range(3))
    assert starts == [5 + i * MS for i in range(12)]
    assert pacer.intended_start_ns(1, 2, now_ns=10**12) == 5 + 9 * MS  # independent of now


async def test_open_loop_latency_counts_from_intended_start_when_executor_stalls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Coordinated omission: one client at 100 ops/s, one operation stalls for 1 s. The ~100
    operations that should have started during the stall are charged the wait (latency from
    the intended start), while their service time stays 1 ms."""
    source = Ticks()
    result = await run_phase(
        source=source,
        execute=_stalling(stall_on=100, stall_ns=1000 * MS),
        clock=TrioClock(),
        clients=1,
        target_ops_s=100,
        duration_ns=3 * NS_PER_S,
    )
    stats = result.metrics.labels["tick"]
    # After the stall the client sends back to back (1 ms each) until it is on schedule
    # again, so the open loop still issues its 300 operations in 3 s.
    assert result.started == 300
    assert stats.latency.get_max_value() >= 990_000
    assert stats.service.get_max_value() >= 990_000
    # Op k of the backlog (k = 1..100) was intended 10k ms into the stall and completes k ms
    # after it: latency 1000 - 9k ms. 77 of the 300 ops (over 20%) are above 300 ms.
    assert stats.latency.get_value_at_percentile(80) >= 300_000
    assert stats.service.get_value_at_percentile(99) <= 1_100  # yet each was fast to serve


async def test_closed_loop_measures_from_actual_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Closed loop: the next operation starts when the previous returns, so a stall delays
    the following operations without being charged to them."""
    source = Ticks()
    result = await run_phase(
        source=source,
        execute=_stalling(stall_on=10, stall_ns=1000 * MS),
        clock=TrioClock(),
        clients=1,
        duration_ns=2 * NS_PER_S,
    )
    stats = result.metrics.labels["tick"]
    assert result.started == 1001  # 1 s of 1 ms ops + the stalled one
    assert stats.latency.get_value_at_percentile(99.8) <= 1_100
    assert stats.latency.get_max_value() >= 990_000


async def test_operations_in_flight_at_the_deadline_are_unknown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the duration plus the drain time, in-flight operations are cancelled: counted
    unknown in the metrics, reported unknown to the source and recorded unknown in the
    history (they may have reached the database)."""
    recorder = HistoryRecorder()
    clock = TrioClock()

    async def hang_on_third(op: RegisterOp, client: int) -> OpResult:
        del client
        hang = op.value == 3
        await trio.sleep(3600 if hang else 0.01)
        return OpResult(outcome=Outcome.OK)

    workload = RegisterWorkload(
        keys=1, rng=random.Random(0), read_proportion=0, cas_proportion=0, operation_count=0
    )
    result = await run_phase(
        source=workload,
        execute=record_history(hang_on_third, recorder, clock.now_ns),
        clock=clock,
        clients=1,
        duration_ns=NS_PER_S,
        drain_ns=100 * MS,
    )
    assert result.cut_off == 1
    assert result.metrics.labels["write"].unknown == 1
    assert result.metrics.labels["write"].ok == 2
    last = recorder.entries()[-1]
    assert last.op is Op.PUT and last.value == 3 and last.outcome is Outcome.UNKNOWN
    assert result.end_ns - result.start_ns == NS_PER_S + 100 * MS


async def test_operation_count_is_shared_by_all_clients(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = Ticks()
    result = await run_phase(
        source=source, execute=_stalling(0, 0), clock=TrioClock(), clients=7, operation_count=50
    )
    assert result.started == 50 == source.issued == len(source.completed)
    assert result.metrics.total == 50


async def test_time_series_counts_per_second(autojump_clock: trio.testing.MockClock) -> None:
    """200 ops/s for 3 s lands 200 completions in each one-second bucket."""
    result = await run_phase(
        source=Ticks(),
        execute=_stalling(0, 0),
        clock=TrioClock(),
        clients=2,
        target_ops_s=200,
        duration_ns=3 * NS_PER_S,
    )
    series = result.metrics.series
    assert sorted(series) == [0, 1, 2]
    assert [series[s].ok for s in range(3)] == [200, 200, 200]
    assert all(series[s].latency_us_max <= 1_100 for s in range(3))


def test_metrics_merge_across_processes() -> None:
    """Encoded metrics from two workers merge into the same counts and percentiles as one
    recorder that saw everything."""
    together, first, second = Metrics(), Metrics(), Metrics()
    rng = random.Random(5)
    for i in range(4000):
        latency = int(rng.expovariate(1 / (5 * MS)))
        outcome = (Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN)[i % 3]
        label = ("read", "update")[i % 2]
        for m in (together, first if i < 2500 else second):
            m.record(label, outcome, latency_ns=latency, service_ns=latency // 2,
                     elapsed_ns=i * MS, retries=i % 2)  # fmt: skip
    merged = Metrics.from_dict(first.to_dict())
    merged.merge(Metrics.from_dict(second.to_dict()))
    assert merged.summary() == together.summary()
    assert merged.to_dict()["series"] == together.to_dict()["series"]
    assert merged.total == 4000
    assert merged.summary()["update"]["retries"] == 2000
