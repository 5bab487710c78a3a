"""Jitter on the runtime's delay fault (``FaultyTransport``): each delayed batch waits
``delay + uniform(-jitter, +jitter)``, never below 0, from the wrapper's seeded generator, and a
link stays FIFO as a TCP connection is. The transport tests run over the in-memory network in
trio virtual time (MockClock with autojump), so delivery times are exact; the last test goes
through the real ``fault`` and ``stats`` admin ops of in-process nodes."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from consensus.codec import BodyRegistry
from consensus.runtime import ClientError, open_client, open_client_server
from consensus.runtime.faults import FaultyTransport
from consensus.transport import MemoryNetwork, Transport
from consensus.types import GroupId, Message, NodeId

from .helpers import memory_cluster

pytestmark = pytest.mark.timeout(60)

DELAY_S = 0.035
JITTER_S = 0.015
EPS = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    seq: int


REGISTRY = BodyRegistry()
REGISTRY.register(1, Ping)


def ping(src: int, dst: int, seq: int) -> Message:
    return Message(group_id=GroupId(1), src=NodeId(src), dst=NodeId(dst), body=Ping(seq=seq))


@pytest.fixture
def clock() -> MockClock:
    """Any trio.abc.Clock fixture becomes the test's clock under pytest-trio."""
    return MockClock(autojump_threshold=0)


@asynccontextmanager
async def faulty_pair(seed: int) -> AsyncIterator[tuple[FaultyTransport, Transport]]:
    """Node 1 behind a FaultyTransport (its jitter drawn from ``Random(seed)``), node 2 plain."""
    net = MemoryNetwork(rng=random.Random(0), registry=REGISTRY)
    async with (
        net.open_transport(NodeId(1)) as t1,
        net.open_transport(NodeId(2)) as t2,
        trio.open_nursery() as nursery,
    ):
        faulty = FaultyTransport(t1, nursery, capacity=1024, rng=random.Random(seed))
        yield faulty, t2
        nursery.cancel_scope.cancel()


async def send_spaced(
    faulty: FaultyTransport, receiver: Transport, count: int, gap_s: float
) -> tuple[list[int], list[float]]:
    """Send ``count`` pings 1 -> 2, one every ``gap_s``; return the arrival order (seq) and
    each ping's one-way delay in arrival order."""
    sent_at: dict[int, float] = {}
    order: list[int] = []
    delays: list[float] = []

    async def receive() -> None:
        for _ in range(count):
            message = await receiver.inbound.receive()
            seq = message.body.seq  # type: ignore[attr-defined]
            order.append(seq)
            delays.append(trio.current_time() - sent_at[seq])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        for seq in range(count):
            sent_at[seq] = trio.current_time()
            faulty.send([ping(1, 2, seq)])
            await trio.sleep(gap_s)
    return order, delays


def reorders(draws: Sequence[float], gap_s: float) -> bool:
    """Whether independent delays ``draws`` on sends ``gap_s`` apart would let a later batch
    arrive before an earlier one."""
    arrivals = [i * gap_s + d for i, d in enumerate(draws)]
    return any(later < earlier for earlier, later in itertools.pairwise(arrivals))


async def test_jittered_delays_spread_over_delay_plus_minus_jitter(clock: MockClock) -> None:
    """Sends far apart (no queueing): every delay lies in [delay - jitter, delay + jitter] and
    the draws cover that interval rather than sitting at the mean."""
    async with faulty_pair(seed=1) as (faulty, t2):
        faulty.delay([2], DELAY_S, JITTER_S)
        order, delays = await send_spaced(faulty, t2, count=200, gap_s=0.2)
    assert order == list(range(200))
    assert all(DELAY_S - JITTER_S - EPS <= d <= DELAY_S + JITTER_S + EPS for d in delays)
    assert min(delays) < DELAY_S - 0.8 * JITTER_S
    assert max(delays) > DELAY_S + 0.8 * JITTER_S
    assert abs(sum(delays) / len(delays) - DELAY_S) < JITTER_S / 4


async def test_a_later_batch_never_overtakes_an_earlier_one(clock: MockClock) -> None:
    """Sends 1 ms apart with +-15 ms of jitter: the draws alone would reorder the link (checked
    on the same seeded stream), yet the pings arrive in send order, none before its draw."""
    seed, gap, count = 2, 0.001, 300
    draws_rng = random.Random(seed)
    draws = [max(0.0, DELAY_S + draws_rng.uniform(-JITTER_S, JITTER_S)) for _ in range(count)]
    assert reorders(draws, gap)
    async with faulty_pair(seed=seed) as (faulty, t2):
        faulty.delay([2], DELAY_S, JITTER_S)
        order, delays = await send_spaced(faulty, t2, count=count, gap_s=gap)
    assert order == list(range(count))
    assert all(d >= drawn - EPS for d, drawn in zip(delays, draws, strict=True))
    assert max(delays) <= DELAY_S + JITTER_S + EPS  # head-of-line wait never exceeds the max


async def test_jitter_larger_than_the_delay_never_goes_below_zero(clock: MockClock) -> None:
    """delay 5 ms +- 20 ms: draws below zero are clamped to an immediate send, not negative."""
    async with faulty_pair(seed=3) as (faulty, t2):
        faulty.delay([2], 0.005, 0.020)
        order, delays = await send_spaced(faulty, t2, count=100, gap_s=0.1)
    assert order == list(range(100))
    assert min(delays) == 0.0
    assert sum(1 for d in delays if d == 0.0) > 20  # P(draw < 0) = 15/40
    assert max(delays) <= 0.025 + EPS


async def test_the_same_seed_replays_the_same_delays(clock: MockClock) -> None:
    """The draws come from the wrapper's own seeded generator: same seed, same delays."""
    runs = []
    for _ in range(2):
        async with faulty_pair(seed=4) as (faulty, t2):
            faulty.delay([2], DELAY_S, JITTER_S)
            runs.append((await send_spaced(faulty, t2, count=50, gap_s=0.1))[1])
    # Equal up to float rounding: the second run starts at another virtual time.
    assert runs[0] == pytest.approx(runs[1], abs=1e-9)
    assert len(set(runs[0])) > 40


async def test_lifting_the_delay_does_not_let_new_messages_overtake(clock: MockClock) -> None:
    """Messages sent after the delay was lifted wait behind batches still delayed on the link,
    as bytes written later to one TCP connection do."""
    async with faulty_pair(seed=5) as (faulty, t2):
        faulty.delay([2], DELAY_S, JITTER_S)
        faulty.send([ping(1, 2, 0), ping(1, 2, 1)])
        faulty.delay([2], 0)
        faulty.send([ping(1, 2, 2)])
        got = [(await t2.inbound.receive()).body.seq for _ in range(3)]  # type: ignore[attr-defined]
        assert got == [0, 1, 2]
        assert faulty.describe()["jitter_ms"] == {}
        start = trio.current_time()
        faulty.send([ping(1, 2, 3)])  # nothing queued any more: sent at once
        assert (await t2.inbound.receive()).body.seq == 3  # type: ignore[attr-defined]
        assert trio.current_time() == start


async def test_fault_op_takes_jitter_and_stats_report_transport_bytes(tmp_path: Path) -> None:
    """Through the admin endpoint: ``delay`` with ``jitter_ms`` is applied and described,
    a bad ``jitter_ms`` is refused (the endpoint closes a connection that sends malformed
    arguments) and changes nothing, and ``stats`` carries the transport's bytes sent."""
    async with memory_cluster(tmp_path, allow_faults=True) as cluster:
        await cluster.create_group(1, "raft")
        leader = int((await cluster.wait_leader(1)).node_id)
        await cluster.put(1, b"k", b"v")
        async with open_client_server(cluster.nodes[leader]) as address:
            async with open_client({leader: address}) as client:
                with pytest.raises(ClientError):
                    await client.call(leader, "fault", {"kind": "delay", "jitter_ms": -1})
            async with open_client({leader: address}) as client:
                args = {"kind": "delay", "peers": [9], "delay_ms": 35, "jitter_ms": 15}
                reply = await client.call(leader, "fault", args)
                assert reply["faults"]["delay_ms"] == {"9": 35}
                assert reply["faults"]["jitter_ms"] == {"9": 15}
                stats = await client.stats(leader)
                assert stats["transport"]["bytes_sent"] > 0
                assert stats["transport"]["messages_sent"] == stats["node"]["messages_sent"]


async def test_batches_due_together_leave_in_one_send(clock: MockClock) -> None:
    """A busy node must not release its delayed batches one scheduler round at a time (it
    would fall behind the due times): everything due at a wake-up goes out as one frame."""
    async with faulty_pair(seed=6) as (faulty, t2):
        faulty.delay([2], DELAY_S)
        for seq in range(100):
            faulty.send([ping(1, 2, seq)])
        got = [(await t2.inbound.receive()).body.seq for _ in range(100)]  # type: ignore[attr-defined]
        assert got == list(range(100))
        assert faulty.statistics().frames_sent == 1
