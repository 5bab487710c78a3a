"""The simulated network: delay bounds, loss, duplication, reordering, partitions, limits."""

from __future__ import annotations

import random

import pytest

from consensus.sim.network import NetworkError, SimNetwork
from consensus.types import GroupId, Message, NodeId

N1, N2, N3 = NodeId(1), NodeId(2), NodeId(3)
NODES = (N1, N2, N3)


def msg(src: NodeId, dst: NodeId, body: object = "x") -> Message:
    return Message(group_id=GroupId(1), src=src, dst=dst, body=body)


def net(seed: int = 0, **kw: float) -> SimNetwork:
    return SimNetwork(NODES, random.Random(seed), **kw)  # type: ignore[arg-type]  # test kwargs


def deliverable(network: SimNetwork, src: NodeId, dst: NodeId) -> bool:
    """Send one message now and report whether a copy arrives."""
    message = msg(src, dst)
    return any(network.arrive(message) for _ in network.send(message, 0))


def test_delays_stay_within_bounds() -> None:
    """Every copy arrives between min_delay_us and max_delay_us after it was sent."""
    network = net(min_delay_us=100, max_delay_us=500)
    times = [t for _ in range(500) for t in network.send(msg(N1, N2), 1_000)]
    assert len(times) == 500
    assert min(times) >= 1_100 and max(times) <= 1_500
    assert len(set(times)) > 50


def test_independent_delays_reorder_messages() -> None:
    """Two messages on one link may arrive in the opposite order (reordering)."""
    network = net(min_delay_us=0, max_delay_us=1_000)
    reordered = 0
    for now in range(0, 200_000, 1_000):
        (first,) = network.send(msg(N1, N2, "a"), now)
        (second,) = network.send(msg(N1, N2, "b"), now + 1)
        reordered += second < first
    assert reordered > 0


def test_loss_rate_drops_roughly_that_share() -> None:
    network = net(loss_rate=0.3)
    sent = 4_000
    arrived = sum(len(network.send(msg(N1, N2), 0)) for _ in range(sent))
    assert 0.6 * sent < arrived < 0.8 * sent
    assert network.stats.dropped_loss == sent - arrived


def test_total_loss_drops_everything() -> None:
    network = net(loss_rate=1.0)
    assert all(network.send(msg(N1, N2), 0) == [] for _ in range(100))


def test_duplication_delivers_two_copies() -> None:
    network = net(dup_rate=1.0)
    assert len(network.send(msg(N1, N2), 0)) == 2
    assert network.stats.duplicated == 1
    assert network.in_flight == 2


def test_symmetric_partition_blocks_both_directions_only_across_groups() -> None:
    network = net()
    network.partition([[N1], [N2, N3]])
    assert not deliverable(network, N1, N2) and not deliverable(network, N2, N1)
    assert not deliverable(network, N1, N3) and not deliverable(network, N3, N1)
    assert deliverable(network, N2, N3) and deliverable(network, N3, N2)


def test_one_way_cut_is_asymmetric() -> None:
    network = net()
    network.cut_one_way(N1, N2)
    assert not deliverable(network, N1, N2)
    assert deliverable(network, N2, N1)


def test_bridge_node_reaches_only_its_peer() -> None:
    """The bridge: N1 talks to N2 only; N2 still talks to everyone (Raft thesis §9.6)."""
    network = net()
    network.bridge(N1, N2)
    assert deliverable(network, N1, N2) and deliverable(network, N2, N1)
    assert not deliverable(network, N1, N3) and not deliverable(network, N3, N1)
    assert deliverable(network, N2, N3) and deliverable(network, N3, N2)


def test_isolate_cuts_a_node_off() -> None:
    network = net()
    network.isolate(N3)
    assert not any(deliverable(network, N3, n) or deliverable(network, n, N3) for n in (N1, N2))
    assert deliverable(network, N1, N2)


def test_cut_drops_messages_already_in_flight() -> None:
    """Pulling the cable loses what was on the wire too."""
    network = net()
    message = msg(N1, N2)
    assert len(network.send(message, 0)) == 1
    network.cut(N1, N2)
    assert not network.arrive(message)
    assert network.in_flight == 0


def test_heal_restores_every_link() -> None:
    network = net()
    network.partition([[N1], [N2], [N3]])
    network.heal()
    assert network.cut_links == ()
    assert all(deliverable(network, a, b) for a in NODES for b in NODES if a != b)


def test_in_flight_queue_is_bounded() -> None:
    """Beyond max_in_flight messages are dropped (TigerStyle: bound every queue)."""
    network = net(max_in_flight=3)
    accepted = [network.send(msg(N1, N2), 0) for _ in range(5)]
    assert sum(map(len, accepted)) == 3
    assert network.stats.dropped_overflow == 2
    network.arrive(msg(N1, N2))
    assert len(network.send(msg(N1, N2), 0)) == 1


def test_same_seed_same_schedule() -> None:
    """Delivery times are a function of the seed only."""

    def schedule(seed: int) -> list[list[int]]:
        network = net(seed, loss_rate=0.2, dup_rate=0.2)
        return [network.send(msg(N1, N2), i) for i in range(200)]

    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)


def test_partition_rejects_unknown_nodes_and_overlaps() -> None:
    network = net()
    with pytest.raises(NetworkError):
        network.partition([[N1], [NodeId(9)]])
    with pytest.raises(NetworkError):
        network.partition([[N1, N2], [N2, N3]])
    with pytest.raises(NetworkError):
        network.bridge(N1, N1)
    with pytest.raises(NetworkError):
        network.set_conditions(loss_rate=1.5)
