"""TCP transport: one connection per node pair, one bounded send queue per peer.

Connection rule: the node with the lower id dials, the higher id only accepts. Both ends
therefore agree, without a tie-break protocol, on which single connection a pair uses, and
a restarted lower node reconnects at once while a restarted higher node is redialled with
exponential backoff. If a second authenticated connection from the same peer arrives anyway
(the peer restarted while our side of the old one still looks alive), the newest wins and
the old one is cancelled.

Sending never blocks the caller: ``send`` encodes, groups by destination and puts one batch
per peer (one or more BATCH frames, split only by ``max_frame_bytes``) on that peer's bounded
queue. A full queue means the peer is not keeping up or not reachable: the batch is dropped
and the peer reported unreachable, which both protocols tolerate (they retransmit), instead
of letting memory grow. Queues survive reconnects, so a short outage loses nothing.

Receiving applies backpressure instead: a reader blocks on the bounded inbound channel when
the runtime falls behind, TCP flow control then stalls the sender, whose queue fills and
drops. Anything malformed from a peer closes that connection with a logged reason.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
import trio

from consensus.api import Logger
from consensus.codec import (
    DEFAULT_REGISTRY,
    Batch,
    BodyRegistry,
    Reject,
    encode_batch_frames,
)
from consensus.transport.backoff import Backoff
from consensus.transport.base import Counters, TransportStatistics, UnreachableCallback
from consensus.transport.base import group_by_destination as _group
from consensus.transport.framing import DEFAULT_MAX_FRAME_BYTES, FrameReader, FramingError
from consensus.transport.handshake import HandshakeConfig, HandshakeError, handshake
from consensus.types import Message, NodeId

Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]
"""How to open a stream to ``host:port``; ``trio.open_tcp_stream`` unless injected."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpTransportConfig:
    node_id: NodeId
    cluster_id: str
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port; read the real one from ``TcpTransport.listen_address``."""
    peers: Mapping[NodeId, tuple[str, int]] = field(default_factory=dict)
    """Addresses of the other nodes. Needed for peers with a higher id (we dial them)."""
    secret: bytes | None = None
    """Shared cluster secret: when set, hellos are authenticated with HMAC-SHA256."""
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    send_queue_batches: int = 256
    """Per-peer send queue capacity, in batches (one batch per ``send`` call)."""
    send_queue_bytes: int = 64 << 20
    """Per-peer cap on encoded bytes waiting in the send queue."""
    inbound_queue_messages: int = 4096
    handshake_timeout_s: float = 5.0
    backoff: Backoff = Backoff()

    def validate(self) -> None:
        if self.node_id <= 0:
            raise ValueError("node ids start at 1")
        if self.send_queue_batches < 1 or self.inbound_queue_messages < 1:
            raise ValueError("queue capacities must be positive")
        if self.node_id in self.peers:
            raise ValueError("peers must not contain this node")


@dataclass(slots=True)
class _Outbound:
    frames: tuple[tuple[bytes, int], ...]
    """(frame bytes, messages in it)."""
    size_bytes: int
    message_count: int


class _ConnectionEnded(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _Peer:
    def __init__(self, node_id: NodeId, address: tuple[str, int] | None, capacity: int) -> None:
        self.node_id = node_id
        self.address = address
        self.send_tx, self.send_rx = trio.open_memory_channel[_Outbound](capacity)
        self.queued_bytes = 0
        self.queued_batches = 0
        self.connection: trio.CancelScope | None = None
        self.dialer: trio.CancelScope | None = None
        self.ever_connected = False


class TcpTransport:
    """Use through ``open_tcp_transport``; implements ``consensus.transport.Transport``."""

    def __init__(
        self,
        config: TcpTransportConfig,
        *,
        rng: random.Random,
        registry: BodyRegistry,
        on_unreachable: UnreachableCallback | None,
        logger: Logger | None,
        connect: Connector,
    ) -> None:
        config.validate()
        self._config = config
        self._rng = rng
        self._registry = registry
        self._on_unreachable = on_unreachable
        self._log: Logger = logger or structlog.get_logger(__name__).bind(
            node_id=int(config.node_id)
        )
        self._connect = connect
        self._counters = Counters()
        self._inbound_tx, self._inbound_rx = trio.open_memory_channel[Message](
            config.inbound_queue_messages
        )
        self._peers: dict[NodeId, _Peer] = {}
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._listen_address: tuple[str, int] = (config.host, config.port)
        self._handshake_config = HandshakeConfig(
            cluster_id=config.cluster_id, node_id=config.node_id, secret=config.secret
        )

    # ------------------------------------------------------------------ public API

    @property
    def node_id(self) -> NodeId:
        return self._config.node_id

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[Message]:
        return self._inbound_rx

    @property
    def listen_address(self) -> tuple[str, int]:
        return self._listen_address

    def connected_peers(self) -> tuple[NodeId, ...]:
        """Peers with an established (handshaken) connection right now."""
        return tuple(sorted(p.node_id for p in self._peers.values() if p.connection is not None))

    def statistics(self) -> TransportStatistics:
        return self._counters.snapshot(
            queued_batches=sum(p.queued_batches for p in self._peers.values()),
            queued_bytes=sum(p.queued_bytes for p in self._peers.values()),
        )

    def add_peer(self, node_id: NodeId, host: str, port: int) -> None:
        """Learn (or change) a peer's address; we dial it if its id is above ours."""
        if node_id == self.node_id or node_id <= 0:
            raise ValueError(f"invalid peer id {node_id}")
        peer = self._peers.get(node_id)
        if peer is None:
            peer = self._new_peer(node_id, (host, port))
        else:
            peer.address = (host, port)
            if peer.dialer is not None:
                peer.dialer.cancel()  # redial at the new address
                peer.dialer = None
        self._maybe_start_dialer(peer)

    def remove_peer(self, node_id: NodeId) -> None:
        """Forget a peer: close its connection and drop whatever is queued for it."""
        peer = self._peers.pop(node_id, None)
        if peer is None:
            return
        for scope in (peer.dialer, peer.connection):
            if scope is not None:
                scope.cancel()
        self._counters.messages_dropped += _drain(peer)
        peer.send_tx.close()

    def send(self, messages: Iterable[Message]) -> None:
        """Queue one batch per destination; never blocks. Raises ``EncodeError`` (before
        queuing anything) if a message cannot be encoded: that is a local bug."""
        grouped = _group(messages)
        encoded: list[tuple[NodeId, list[Message], list[tuple[bytes, int]], list[Message]]] = []
        for dst, batch in grouped.items():
            if dst == self.node_id:
                encoded.append((dst, batch, [], []))
                continue
            frames, oversized = encode_batch_frames(
                batch, max_frame_bytes=self._config.max_frame_bytes, registry=self._registry
            )
            encoded.append((dst, batch, frames, oversized))
        for dst, batch, frames, oversized in encoded:
            if dst == self.node_id:
                self._deliver_local(batch)
                continue
            if oversized:
                self._counters.messages_dropped += len(oversized)
                self._log.warning("message_too_large_dropped", peer=int(dst), count=len(oversized))
            if frames:
                self._enqueue(dst, frames)

    # ------------------------------------------------------------------ sending

    def _enqueue(self, dst: NodeId, frames: list[tuple[bytes, int]]) -> None:
        message_count = sum(count for _, count in frames)
        peer = self._peers.get(dst)
        if peer is None or self._closed:
            self._drop(dst, message_count, "no_route")
            return
        item = _Outbound(
            frames=tuple(frames),
            size_bytes=sum(len(data) for data, _ in frames),
            message_count=message_count,
        )
        if peer.queued_bytes + item.size_bytes > self._config.send_queue_bytes:
            self._drop(dst, message_count, "queue_bytes_full")
            return
        try:
            peer.send_tx.send_nowait(item)
        except trio.WouldBlock:
            self._drop(dst, message_count, "queue_full")
            return
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._drop(dst, message_count, "peer_closed")
            return
        peer.queued_bytes += item.size_bytes
        peer.queued_batches += 1

    def _drop(self, dst: NodeId, count: int, why: str) -> None:
        self._counters.messages_dropped += count
        self._log.debug("messages_dropped", peer=int(dst), count=count, reason=why)
        if self._on_unreachable is not None:
            self._on_unreachable(dst)

    def _deliver_local(self, batch: list[Message]) -> None:
        for msg in batch:
            try:
                self._inbound_tx.send_nowait(msg)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                self._counters.messages_dropped += 1

    async def _write_loop(self, peer: _Peer, stream: trio.abc.SendStream) -> None:
        while True:
            item = await peer.send_rx.receive()
            peer.queued_bytes -= item.size_bytes
            peer.queued_batches -= 1
            for index, (frame, count) in enumerate(item.frames):
                try:
                    await stream.send_all(frame)
                except BaseException as exc:
                    # The frame may or may not have left; count it and the rest as lost.
                    lost = sum(c for _, c in item.frames[index:])
                    self._counters.messages_dropped += lost
                    if not isinstance(exc, trio.Cancelled) and self._on_unreachable is not None:
                        self._on_unreachable(peer.node_id)
                    raise
                self._counters.frames_sent += 1
                self._counters.bytes_sent += len(frame)
                self._counters.messages_sent += count

    # ------------------------------------------------------------------ receiving

    async def _read_loop(self, peer_id: NodeId, reader: FrameReader) -> None:
        seen_bytes = reader.bytes_received
        while True:
            frame = await reader.receive_frame()
            self._counters.bytes_received += reader.bytes_received - seen_bytes
            seen_bytes = reader.bytes_received
            match frame:
                case None:
                    raise _ConnectionEnded("peer_closed")
                case Batch(messages=messages):
                    self._counters.frames_received += 1
                    for msg in messages:
                        # An authenticated peer speaks only for itself, and only to us:
                        # a spoofed src would let it impersonate another voter.
                        if msg.src != peer_id or msg.dst != self.node_id:
                            raise _MisroutedMessage(
                                f"message {msg.src}->{msg.dst} on the link {peer_id}->"
                                f"{self.node_id}"
                            )
                    self._counters.messages_received += len(messages)
                    for msg in messages:
                        # A frame's messages go in one go while there is room (an awaited
                        # send is a scheduler round per message); wait only when full.
                        try:
                            self._inbound_tx.send_nowait(msg)
                        except trio.WouldBlock:
                            await self._inbound_tx.send(msg)
                case Reject(reason=reason):
                    raise _ConnectionEnded(f"rejected_by_peer: {reason}")
                case _:
                    raise _UnexpectedFrame(f"unexpected {type(frame).__name__} after handshake")

    # ------------------------------------------------------------------ connections

    def _new_peer(self, node_id: NodeId, address: tuple[str, int] | None) -> _Peer:
        peer = _Peer(node_id, address, self._config.send_queue_batches)
        self._peers[node_id] = peer
        return peer

    def _maybe_start_dialer(self, peer: _Peer) -> None:
        if (
            self._nursery is None
            or self._closed
            or peer.dialer is not None
            or peer.address is None
            or peer.node_id < self.node_id
        ):
            return
        scope = trio.CancelScope()
        peer.dialer = scope
        self._nursery.start_soon(self._dial_loop, peer, scope)

    async def _dial_loop(self, peer: _Peer, scope: trio.CancelScope) -> None:
        with scope:
            attempt = 0
            while peer.address is not None:
                host, port = peer.address
                try:
                    with trio.fail_after(self._config.handshake_timeout_s):
                        stream = await self._connect(host, port)
                except (OSError, trio.TooSlowError) as exc:
                    self._counters.dial_failures += 1
                    self._log.debug(
                        "dial_failed", peer=int(peer.node_id), error=repr(exc), attempt=attempt
                    )
                else:
                    async with stream:
                        established = await self._run_stream(
                            stream, expected_peer=peer.node_id, remote=f"{host}:{port}"
                        )
                    if established:
                        attempt = 0
                await trio.sleep(self._config.backoff.delay_s(attempt, self._rng))
                attempt += 1

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            remote = f"{host}:{port}"
        except OSError:
            remote = "unknown"
        await self._run_stream(stream, expected_peer=None, remote=remote)

    async def _run_stream(
        self, stream: trio.abc.Stream, *, expected_peer: NodeId | None, remote: str
    ) -> bool:
        """Handshake, then serve the connection until it ends. True if the handshake
        succeeded (the dialer then resets its backoff)."""
        reader = FrameReader(
            stream, max_frame_bytes=self._config.max_frame_bytes, registry=self._registry
        )
        try:
            peer_id = await handshake(
                stream,
                reader,
                self._handshake_config,
                expected_peer=expected_peer,
                timeout_s=self._config.handshake_timeout_s,
            )
        except HandshakeError as exc:
            self._counters.handshakes_rejected += 1
            self._log.warning(
                "handshake_rejected",
                reason=exc.reason,
                detail=exc.detail,
                remote=remote,
                expected_peer=None if expected_peer is None else int(expected_peer),
            )
            return False
        if self._closed:
            return True
        peer = self._peers.get(peer_id) or self._new_peer(peer_id, None)
        if peer.connection is not None:
            # Newest wins: the old link is half-open or the peer restarted.
            peer.connection.cancel()
        with trio.CancelScope() as scope:
            peer.connection = scope
            if peer.ever_connected:
                self._counters.reconnects += 1
            peer.ever_connected = True
            self._log.info("peer_connected", peer=int(peer_id), remote=remote)
            reason = await self._serve_connection(peer, stream, reader)
        if peer.connection is scope:
            peer.connection = None
        self._log.info(
            "peer_disconnected",
            peer=int(peer_id),
            reason="replaced_or_closed" if scope.cancelled_caught else reason,
        )
        return True

    async def _serve_connection(
        self, peer: _Peer, stream: trio.abc.Stream, reader: FrameReader
    ) -> str:
        reason = "closed"

        async def guarded(fn: Callable[..., Awaitable[None]], *args: Any) -> None:
            nonlocal reason
            try:
                await fn(*args)
            except (FramingError, _PeerMisbehaved) as exc:
                reason = f"malformed_frame: {exc}"
                self._counters.connections_closed_malformed += 1
                self._log.warning(
                    "connection_closed_malformed", peer=int(peer.node_id), reason=str(exc)
                )
            except _ConnectionEnded as exc:
                reason = exc.reason
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                reason = f"io_error: {exc!r}"
            finally:
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, self._read_loop, peer.node_id, reader)
            nursery.start_soon(guarded, self._write_loop, peer, stream)
        return reason

    # ------------------------------------------------------------------ lifecycle

    async def _serve(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        listeners = await trio.open_tcp_listeners(self._config.port, host=self._config.host)
        sockname = listeners[0].socket.getsockname()
        self._listen_address = (str(sockname[0]), int(sockname[1]))
        await nursery.start(
            partial(trio.serve_listeners, self._handle_inbound, listeners, handler_nursery=nursery)
        )
        for node_id in sorted(self._config.peers):
            host, port = self._config.peers[node_id]
            self.add_peer(node_id, host, port)
        self._log.info(
            "transport_listening", host=self._listen_address[0], port=self._listen_address[1]
        )

    def _close(self) -> None:
        self._closed = True
        for node_id in sorted(self._peers):
            peer = self._peers[node_id]
            self._counters.messages_dropped += _drain(peer)
            peer.send_tx.close()
        self._inbound_tx.close()


class _PeerMisbehaved(Exception):
    pass


class _MisroutedMessage(_PeerMisbehaved):
    pass


class _UnexpectedFrame(_PeerMisbehaved):
    pass


def _drain(peer: _Peer) -> int:
    dropped = 0
    while True:
        try:
            item = peer.send_rx.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
        dropped += item.message_count
    peer.queued_batches = 0
    peer.queued_bytes = 0
    return dropped


async def _open_tcp_stream(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


@asynccontextmanager
async def open_tcp_transport(
    config: TcpTransportConfig,
    *,
    rng: random.Random,
    registry: BodyRegistry | None = None,
    on_unreachable: UnreachableCallback | None = None,
    logger: Logger | None = None,
    connect: Connector | None = None,
) -> AsyncIterator[TcpTransport]:
    """Listen, dial the peers above us, and yield the transport; on exit every task and
    connection is cancelled and ``inbound`` is closed."""
    transport = TcpTransport(
        config,
        rng=rng,
        registry=registry or DEFAULT_REGISTRY,
        on_unreachable=on_unreachable,
        logger=logger,
        connect=connect or _open_tcp_stream,
    )
    async with trio.open_nursery() as nursery:
        try:
            await transport._serve(nursery)
            yield transport
        finally:
            transport._close()
            nursery.cancel_scope.cancel()
