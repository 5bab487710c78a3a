"""The in-memory transport: same queueing rules as TCP, plus loss, delay and partitions,
all in trio virtual time (MockClock with autojump)."""

from __future__ import annotations

import random

import pytest
import trio
from trio.testing import MockClock

from consensus.transport import LinkFaults, MemoryNetwork, Transport
from consensus.types import Message, NodeId

from .helpers import REGISTRY, ping


@pytest.fixture
def clock() -> MockClock:
    """Any trio.abc.Clock fixture becomes the test's clock under pytest-trio."""
    return MockClock(autojump_threshold=0)


async def drain(transport: Transport) -> list[Message]:
    got: list[Message] = []
    while True:
        try:
            got.append(transport.inbound.receive_nowait())
        except trio.WouldBlock:
            return got


async def test_three_nodes_exchange_messages_through_the_codec(clock: MockClock) -> None:
    net = MemoryNetwork(rng=random.Random(1), registry=REGISTRY)
    async with (
        net.open_transport(NodeId(1)) as t1,
        net.open_transport(NodeId(2)) as t2,
        net.open_transport(NodeId(3)) as t3,
    ):
        nodes: dict[int, Transport] = {1: t1, 2: t2, 3: t3}
        for src in (1, 2, 3):
            nodes[src].send([ping(src, dst, seq=src * 10 + dst) for dst in (1, 2, 3) if dst != src])
        await trio.sleep(1)
        for dst, transport in nodes.items():
            got = await drain(transport)
            assert sorted(m.body.seq for m in got) == sorted(  # type: ignore[attr-defined]
                src * 10 + dst for src in (1, 2, 3) if src != dst
            )
        stats = t1.statistics()
        assert stats.frames_sent == 2 and stats.messages_sent == 2 and stats.bytes_sent > 0


async def test_delay_is_applied_in_virtual_time_and_links_stay_fifo(clock: MockClock) -> None:
    net = MemoryNetwork(rng=random.Random(2), faults=LinkFaults(delay_min_s=1, delay_max_s=3))
    async with net.open_transport(NodeId(1)) as t1, net.open_transport(NodeId(2)) as t2:
        start = trio.current_time()
        for seq in range(20):
            t1.send([ping(1, 2, seq)])
        got = []
        for _ in range(20):
            got.append(await t2.inbound.receive())
            assert trio.current_time() - start >= 1
        assert [m.body.seq for m in got] == list(range(20))  # type: ignore[attr-defined]
        assert trio.current_time() - start <= 3


async def test_partition_drops_in_both_directions_and_heal_restores(clock: MockClock) -> None:
    net = MemoryNetwork(rng=random.Random(3))
    async with (
        net.open_transport(NodeId(1)) as t1,
        net.open_transport(NodeId(2)) as t2,
        net.open_transport(NodeId(3)) as t3,
    ):
        net.partition([NodeId(1)], [NodeId(2), NodeId(3)])
        t1.send([ping(1, 2), ping(1, 3)])
        t2.send([ping(2, 1), ping(2, 3)])
        await trio.sleep(1)
        assert await drain(t1) == []
        assert await drain(t3) == [ping(2, 3)]
        net.heal()
        t1.send([ping(1, 2, 7)])
        assert await t2.inbound.receive() == ping(1, 2, 7)
        assert t1.statistics().messages_dropped == 2


async def test_asymmetric_cut_blocks_one_direction_only(clock: MockClock) -> None:
    net = MemoryNetwork(rng=random.Random(4))
    async with net.open_transport(NodeId(1)) as t1, net.open_transport(NodeId(2)) as t2:
        net.cut(NodeId(1), NodeId(2))
        t1.send([ping(1, 2)])
        t2.send([ping(2, 1)])
        await trio.sleep(1)
        assert await drain(t2) == []
        assert await drain(t1) == [ping(2, 1)]


async def _delivered_with_loss(seed: int) -> list[int]:
    net = MemoryNetwork(rng=random.Random(seed), faults=LinkFaults(drop_probability=0.3))
    async with net.open_transport(NodeId(1)) as t1, net.open_transport(NodeId(2)) as t2:
        for seq in range(200):
            t1.send([ping(1, 2, seq)])
        await trio.sleep(1)
        return [m.body.seq for m in await drain(t2)]  # type: ignore[attr-defined]


async def test_loss_decisions_replay_from_the_seed(clock: MockClock) -> None:
    first = await _delivered_with_loss(42)
    assert first == await _delivered_with_loss(42)
    assert 100 < len(first) < 180  # about 70% of 200 survive
    assert first != await _delivered_with_loss(43)


async def test_full_queue_drops_and_reports_unreachable(clock: MockClock) -> None:
    """A receiver that never reads stalls its link (bounded inbound channel); the sender's
    bounded queue then fills and further batches are dropped and reported."""
    net = MemoryNetwork(rng=random.Random(5))
    reported: list[NodeId] = []
    async with (
        net.open_transport(NodeId(1), send_queue_batches=4, on_unreachable=reported.append) as t1,
        net.open_transport(NodeId(2), inbound_queue_messages=2) as t2,
    ):
        for seq in range(50):
            t1.send([ping(1, 2, seq)])
            await trio.sleep(0.01)
        stats = t1.statistics()
        assert stats.messages_dropped > 0
        assert stats.queued_batches <= 4
        assert set(reported) == {NodeId(2)}
        assert t2.inbound.statistics().current_buffer_used == 2


async def test_send_to_an_absent_node_is_dropped_and_reported(clock: MockClock) -> None:
    net = MemoryNetwork(rng=random.Random(6))
    reported: list[NodeId] = []
    async with net.open_transport(NodeId(1), on_unreachable=reported.append) as t1:
        t1.send([ping(1, 9)])
        assert reported == [NodeId(9)]
        assert t1.statistics().messages_dropped == 1


async def test_closed_transport_ends_its_inbound_channel(clock: MockClock) -> None:
    net = MemoryNetwork(rng=random.Random(7))
    async with net.open_transport(NodeId(1)) as t1:
        inbound = t1.inbound
    with pytest.raises(trio.EndOfChannel):
        await inbound.receive()
