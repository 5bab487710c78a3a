"""The TCP transport over real loopback sockets (127.0.0.1, port 0).

Waits are on conditions (a message arrives, an event is logged) under generous deadlines;
the backoff timing test runs in virtual time with an injected failing dialer.
"""

from __future__ import annotations

import contextlib
import itertools
import random

import msgpack
import pytest
import trio
from trio.testing import MockClock

from consensus.codec import (
    PROTOCOL_VERSION,
    Batch,
    FrameKind,
    Hello,
    Reject,
    encode_frame,
)
from consensus.transport import (
    Backoff,
    FrameReader,
    TcpTransport,
    TcpTransportConfig,
    Transport,
    open_tcp_transport,
)
from consensus.types import NodeId

from .helpers import (
    CLUSTER,
    DEADLINE_S,
    REGISTRY,
    RecordingLogger,
    open_cluster,
    ping,
    receive,
    send_until_received,
    wait_connected,
)


async def test_two_transports_exchange_messages_both_ways() -> None:
    async with open_cluster([1, 2]) as t:
        t[1].send([ping(1, 2, 1)])
        assert await receive(t[2]) == [ping(1, 2, 1)]
        # Node 2 never dials (higher id); it answers over the connection node 1 opened.
        t[2].send([ping(2, 1, 2)])
        assert await receive(t[1]) == [ping(2, 1, 2)]
        assert t[2].statistics().dial_failures == 0


async def test_three_transports_all_pairs_with_one_frame_per_peer_per_send() -> None:
    async with open_cluster([1, 2, 3]) as t:
        for node in (1, 2, 3):
            for peer in (1, 2, 3):
                if peer != node:
                    await wait_connected(t[node], peer)
        before = {n: t[n].statistics().frames_sent for n in t}
        for src in (1, 2, 3):
            t[src].send(
                [ping(src, dst, seq) for dst in (1, 2, 3) if dst != src for seq in range(5)]
            )
        for dst in (1, 2, 3):
            got = await receive(t[dst], 10)
            assert sorted((m.src, m.body.seq) for m in got) == sorted(  # type: ignore[attr-defined]
                (src, seq) for src in (1, 2, 3) if src != dst for seq in range(5)
            )
        for n in t:
            stats = t[n].statistics()
            assert stats.frames_sent - before[n] == 2  # ten messages, two peers, two frames
            assert stats.messages_received == 10
            assert stats.bytes_sent > 0 and stats.bytes_received > 0


async def test_messages_to_one_peer_keep_their_order() -> None:
    async with open_cluster([1, 2]) as t:
        for seq in range(100):
            t[1].send([ping(1, 2, seq)])
        got = await receive(t[2], 100)
        assert [m.body.seq for m in got] == list(range(100))  # type: ignore[attr-defined]


async def test_a_frames_messages_reach_the_inbound_channel_together() -> None:
    """The reader hands over a whole frame at once (no scheduler round per message): when
    the first message of a 200-message frame can be received, all 200 are queued. One round
    per message capped a node's inbound rate below what 64 busy groups send."""
    async with open_cluster([1, 2]) as t:
        await wait_connected(t[1], 2)
        t[1].send([ping(1, 2, seq) for seq in range(200)])
        first = await receive(t[2])
        rest = [t[2].inbound.receive_nowait() for _ in range(199)]
        assert [m.body.seq for m in first + rest] == list(range(200))  # type: ignore[attr-defined]
        assert t[2].statistics().frames_received == 1


async def test_inbound_backpressure_still_holds_when_the_channel_is_full() -> None:
    """More messages than the inbound channel holds: the reader waits for room instead of
    dropping, and everything arrives in order."""
    async with open_cluster([1, 2], overrides={2: {"inbound_queue_messages": 8}}) as t:
        await wait_connected(t[1], 2)
        t[1].send([ping(1, 2, seq) for seq in range(50)])
        got = await receive(t[2], 50)
        assert [m.body.seq for m in got] == list(range(50))  # type: ignore[attr-defined]
        assert t[2].statistics().messages_dropped == 0


async def test_hello_with_another_cluster_id_is_rejected_with_a_logged_reason() -> None:
    logs = {1: RecordingLogger(), 2: RecordingLogger()}
    async with open_cluster(
        [1, 2], loggers=logs, overrides={2: {"cluster_id": "other-cluster"}}
    ) as t:
        await logs[2].wait_for("handshake_rejected", reason="cluster_id_mismatch")
        # The dialer learns why from the Reject frame (or sees the mismatch itself).
        event = await logs[1].wait_for("handshake_rejected")
        assert event["reason"] in ("cluster_id_mismatch", "rejected_by_peer")
        assert t[1].connected_peers() == () and t[2].connected_peers() == ()
        t[1].send([ping(1, 2)])
        with trio.move_on_after(0.2):
            await t[2].inbound.receive()
            pytest.fail("a message crossed clusters")


async def test_hmac_with_the_same_secret_connects() -> None:
    secret = {"secret": b"s3cret"}
    async with open_cluster([1, 2], overrides={1: secret, 2: secret}) as t:
        t[1].send([ping(1, 2, 5)])
        assert await receive(t[2]) == [ping(1, 2, 5)]


async def test_hmac_with_a_wrong_secret_is_rejected() -> None:
    logs = {1: RecordingLogger(), 2: RecordingLogger()}
    overrides = {1: {"secret": b"right"}, 2: {"secret": b"wrong"}}
    async with open_cluster([1, 2], loggers=logs, overrides=overrides) as t:
        await logs[2].wait_for("handshake_rejected", reason="auth_failed")
        await logs[1].wait_for("handshake_rejected")
        assert t[2].connected_peers() == ()
        assert t[2].statistics().handshakes_rejected >= 1


async def test_secret_on_one_side_only_is_rejected() -> None:
    logs = {2: RecordingLogger()}
    async with open_cluster([1, 2], loggers=logs, overrides={1: {"secret": b"k"}}):
        await logs[2].wait_for("handshake_rejected", reason="auth_mode_mismatch")


# --------------------------------------------------------------------------- raw peers


async def raw_connect(transport: TcpTransport) -> tuple[trio.SocketStream, FrameReader]:
    host, port = transport.listen_address
    stream = await trio.open_tcp_stream(host, port)
    return stream, FrameReader(stream, registry=REGISTRY)


async def raw_hello(stream: trio.SocketStream, reader: FrameReader, node: int) -> None:
    await stream.send_all(
        encode_frame(Hello(cluster_id=CLUSTER, node_id=NodeId(node), nonce=b"n" * 16, auth=False))
    )
    with trio.fail_after(DEADLINE_S):
        assert isinstance(await reader.receive_frame(), Hello)


async def wait_closed(reader: FrameReader) -> list[object]:
    """Read until the transport closes the connection; return what it sent before."""
    frames: list[object] = []
    with trio.fail_after(DEADLINE_S):
        try:
            while (frame := await reader.receive_frame()) is not None:
                frames.append(frame)
        except trio.BrokenResourceError:  # closed with our unread bytes pending: RST
            pass
    return frames


async def test_hello_of_another_protocol_version_is_rejected() -> None:
    log = RecordingLogger()
    async with open_cluster([1, 2], loggers={2: log}) as t:
        stream, _ = await raw_connect(t[2])
        async with stream:
            future_hello = [PROTOCOL_VERSION + 1, int(FrameKind.HELLO), ["x", 9, b"n" * 16]]
            await stream.send_all(msgpack.packb(future_hello))
            await log.wait_for("handshake_rejected", reason="protocol_version_mismatch")
            raw = FrameReader(stream, registry=REGISTRY)
            # We get its hello, then a Reject naming the reason, then EOF.
            frames = await wait_closed(raw)
            assert Reject(reason="protocol_version_mismatch") in frames
        # Still serving the real peer.
        assert await send_until_received(t[1], t[2], ping(1, 2, 3)) == ping(1, 2, 3)


async def test_garbage_bytes_close_the_connection_and_others_keep_working() -> None:
    log = RecordingLogger()
    async with open_cluster([1, 2], loggers={2: log}) as t:
        stream, reader = await raw_connect(t[2])
        async with stream:
            await stream.send_all(b"\xc1\xc1 GET / HTTP/1.1\r\n\r\n")
            await log.wait_for("handshake_rejected", reason="malformed_frame")
            await wait_closed(reader)
        t[1].send([ping(1, 2, 4)])
        assert await receive(t[2]) == [ping(1, 2, 4)]


async def test_oversized_frame_after_hello_closes_that_connection_only() -> None:
    log = RecordingLogger()
    async with open_cluster(
        [1, 2], loggers={2: log}, overrides={2: {"max_frame_bytes": 4096}}
    ) as t:
        await wait_connected(t[2], 1)
        stream, reader = await raw_connect(t[2])
        async with stream:
            await raw_hello(stream, reader, node=9)
            big = encode_frame(Batch(messages=(ping(9, 2, 0, b"x" * 10_000),)), registry=REGISTRY)
            # The transport may reset the connection before it has read all of our bytes.
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(big)
            await wait_closed(reader)
            event = await log.wait_for("connection_closed_malformed", peer=9)
            assert "exceeds 4096" in event["reason"]
        assert t[2].statistics().connections_closed_malformed == 1
        t[1].send([ping(1, 2, 6)])
        assert await receive(t[2]) == [ping(1, 2, 6)]


async def test_a_peer_cannot_send_messages_in_another_nodes_name() -> None:
    log = RecordingLogger()
    async with open_cluster([1, 2], loggers={2: log}) as t:
        stream, reader = await raw_connect(t[2])
        async with stream:
            await raw_hello(stream, reader, node=9)
            spoofed = encode_frame(Batch(messages=(ping(1, 2, 66),)), registry=REGISTRY)
            await stream.send_all(spoofed)
            event = await log.wait_for("connection_closed_malformed", peer=9)
            assert "1->2" in event["reason"]
        with trio.move_on_after(0.1):
            await t[2].inbound.receive()
            pytest.fail("spoofed message was delivered")


# --------------------------------------------------------------------------- restarts


class Incarnation:
    """One run of a transport in its own task, so it can stop while others keep running
    (nurseries must close in the order they opened, so a restart needs its own task)."""

    def __init__(self, config: TcpTransportConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.stop = trio.Event()
        self.stopped = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[TcpTransport]) -> None:
        try:
            async with open_tcp_transport(
                self.config, rng=random.Random(self.seed), registry=REGISTRY
            ) as transport:
                task_status.started(transport)
                await self.stop.wait()
        finally:
            self.stopped.set()

    async def shut_down(self) -> None:
        self.stop.set()
        with trio.fail_after(DEADLINE_S):
            await self.stopped.wait()


def config(node: int, port: int = 0, peers: dict[int, int] | None = None) -> TcpTransportConfig:
    return TcpTransportConfig(
        node_id=NodeId(node),
        cluster_id=CLUSTER,
        port=port,
        peers={NodeId(p): ("127.0.0.1", pport) for p, pport in (peers or {}).items()},
        backoff=Backoff(initial_s=0.01, max_s=0.1),
    )


async def test_dialer_reconnects_after_the_accepting_peer_restarts() -> None:
    """Node 2 stops and comes back on the same port; node 1 redials with backoff and
    traffic flows again both ways."""
    async with trio.open_nursery() as nursery:
        first = Incarnation(config(2), seed=2)
        t2: TcpTransport = await nursery.start(first.run)
        port = t2.listen_address[1]
        one = Incarnation(config(1, peers={2: port}), seed=1)
        t1: TcpTransport = await nursery.start(one.run)
        assert await send_until_received(t1, t2, ping(1, 2, 1)) == ping(1, 2, 1)

        await first.shut_down()
        second = Incarnation(config(2, port=port), seed=3)
        t2b: TcpTransport = await nursery.start(second.run)
        assert await send_until_received(t1, t2b, ping(1, 2, 2)) == ping(1, 2, 2)
        assert await send_until_received(t2b, t1, ping(2, 1, 3)) == ping(2, 1, 3)
        assert t1.statistics().reconnects >= 1
        await second.shut_down()
        await one.shut_down()


async def test_accepting_side_switches_to_the_restarted_dialers_new_connection() -> None:
    """Node 1 (the dialer) restarts; node 2 replaces the old connection with the new one
    (newest wins) and its queued traffic reaches the new incarnation."""
    async with trio.open_nursery() as nursery:
        two = Incarnation(config(2), seed=2)
        t2: TcpTransport = await nursery.start(two.run)
        port = t2.listen_address[1]
        first = Incarnation(config(1, peers={2: port}), seed=1)
        t1: TcpTransport = await nursery.start(first.run)
        assert await send_until_received(t1, t2, ping(1, 2, 1)) == ping(1, 2, 1)

        await first.shut_down()
        second = Incarnation(config(1, peers={2: port}), seed=4)
        t1b: TcpTransport = await nursery.start(second.run)
        assert await send_until_received(t2, t1b, ping(2, 1, 2)) == ping(2, 1, 2)
        assert t2.statistics().reconnects >= 1
        await second.shut_down()
        await two.shut_down()


# --------------------------------------------------------------------------- backpressure


async def test_a_peer_that_does_not_read_causes_drops_and_unreachable_reports() -> None:
    """Node 2 never reads its inbound channel: its reader stalls, TCP flow control stalls
    node 1's writer, node 1's bounded queue fills, and further sends are dropped and
    reported instead of growing memory."""
    reported: list[NodeId] = []
    overrides = {
        1: {"send_queue_batches": 4},
        2: {"inbound_queue_messages": 2},
    }
    async with open_cluster([1, 2], overrides=overrides, unreachable={1: reported}) as t:
        await wait_connected(t[1], 2)
        payload = b"x" * (256 << 10)
        with trio.fail_after(DEADLINE_S):
            seq = 0
            while not reported:
                t[1].send([ping(1, 2, seq, payload)])
                seq += 1
                await trio.sleep(0)  # let the writer run; we wait for the condition above
        stats = t[1].statistics()
        assert stats.messages_dropped >= 1
        assert stats.queued_batches <= 4
        assert stats.queued_bytes <= 4 * (len(payload) + 100)
        assert set(reported) == {NodeId(2)}
        # Node 2 is alive, just slow: once it reads, traffic flows again.
        assert len(await receive(t[2], 2)) == 2


async def test_send_to_an_unknown_peer_is_dropped_and_reported() -> None:
    reported: list[NodeId] = []
    async with open_cluster([1], unreachable={1: reported}) as t:
        t[1].send([ping(1, 7)])
        assert reported == [NodeId(7)]
        assert t[1].statistics().messages_dropped == 1


async def test_message_larger_than_a_frame_is_dropped_not_sent() -> None:
    async with open_cluster([1, 2], overrides={1: {"max_frame_bytes": 1024}}) as t:
        t[1].send([ping(1, 2, 1, b"x" * 2000), ping(1, 2, 2)])
        assert await receive(t[2]) == [ping(1, 2, 2)]
        assert t[1].statistics().messages_dropped == 1


# --------------------------------------------------------------------------- backoff


@pytest.fixture
def autojump() -> MockClock:
    return MockClock(autojump_threshold=0)


async def test_redial_delays_follow_the_backoff_with_seeded_jitter(autojump: MockClock) -> None:
    """In virtual time, with a dialer that always fails: attempt k+1 starts exactly
    ``Backoff.delay_s(k)`` after attempt k, jitter drawn from the injected Random."""
    attempts: list[float] = []

    async def refuse(host: str, port: int) -> trio.abc.Stream:
        attempts.append(trio.current_time())
        raise ConnectionRefusedError("nobody home")

    backoff = Backoff(initial_s=0.1, max_s=1.0, multiplier=2.0, jitter=0.5)
    async with open_tcp_transport(
        TcpTransportConfig(
            node_id=NodeId(1),
            cluster_id=CLUSTER,
            peers={NodeId(2): ("127.0.0.1", 1)},
            backoff=backoff,
        ),
        rng=random.Random(99),
        registry=REGISTRY,
        connect=refuse,
    ) as t1:
        with trio.fail_after(100):
            while len(attempts) < 8:
                await trio.sleep(0.01)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        oracle = random.Random(99)
        expected = [backoff.delay_s(k, oracle) for k in range(len(gaps))]
        assert gaps == pytest.approx(expected, abs=1e-6)
        assert max(gaps) <= 1.0 and gaps[-1] > 0.5  # capped at max_s, minus <= 50% jitter
        assert t1.statistics().dial_failures >= 8


def test_backoff_grows_then_caps() -> None:
    backoff = Backoff(initial_s=0.05, max_s=5.0, multiplier=2.0, jitter=0.0)
    rng = random.Random(0)
    assert [backoff.delay_s(k, rng) for k in range(9)] == pytest.approx(
        [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    )
    assert backoff.delay_s(10_000, rng) == 5.0


# --------------------------------------------------------------------------- lifecycle


async def test_peers_can_be_added_and_removed_at_run_time() -> None:
    reported: list[NodeId] = []
    async with open_cluster([2]) as t, open_cluster([1], unreachable={1: reported}) as u:
        t1, t2 = u[1], t[2]
        host, port = t2.listen_address
        t1.add_peer(NodeId(2), host, port)
        assert await send_until_received(t1, t2, ping(1, 2, 1)) == ping(1, 2, 1)
        t1.remove_peer(NodeId(2))
        assert reported == []
        t1.send([ping(1, 2, 2)])
        assert reported == [NodeId(2)]
        with trio.fail_after(DEADLINE_S):
            while t2.connected_peers():
                await trio.sleep(0.005)


async def test_messages_addressed_to_self_are_delivered_locally() -> None:
    async with open_cluster([1]) as t:
        t[1].send([ping(1, 1, 8)])
        assert await receive(t[1]) == [ping(1, 1, 8)]


async def test_closing_ends_inbound_and_later_sends_are_dropped() -> None:
    async with open_cluster([1]) as t:
        transport: Transport = t[1]
        inbound = transport.inbound
    with pytest.raises(trio.EndOfChannel):
        await inbound.receive()
    transport.send([ping(1, 2)])
    assert transport.statistics().messages_dropped == 1


async def test_statistics_is_a_frozen_snapshot() -> None:
    async with open_cluster([1, 2]) as t:
        before = t[1].statistics()
        t[1].send([ping(1, 2)])
        await receive(t[2])
        assert before.messages_sent == 0
        with pytest.raises(AttributeError):
            before.messages_sent = 5  # type: ignore[misc]
