"""What every transport offers the runtime: the ``Transport`` protocol and its statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import trio

from consensus.types import Message, NodeId

UnreachableCallback = Callable[[NodeId], None]
"""Called (synchronously, from the transport's tasks or from ``send``) when messages to a
peer were dropped because its queue is full or it has no route; the runtime forwards it to
``ConsensusCore.report_unreachable`` so the leader stops pipelining to that peer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportStatistics:
    """A snapshot of a transport's counters since it opened (trio's ``statistics()`` style).

    Frame and byte counts cover BATCH frames only (handshake frames are not counted); the
    memory transport counts one frame per delivered batch and bytes only with a codec."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    messages_dropped: int = 0
    """Messages given to ``send`` that will never be delivered by this end: queue full, no
    route, too large for a frame, partitioned or lost (memory transport), or lost with a
    connection that broke while they were being written."""
    reconnects: int = 0
    """Connections established to a peer that had been connected before."""
    dial_failures: int = 0
    handshakes_rejected: int = 0
    connections_closed_malformed: int = 0
    """Connections closed because the peer sent a malformed or oversized frame."""
    queued_batches: int = 0
    """Batches waiting in per-peer send queues right now (bounded by the queue capacity)."""
    queued_bytes: int = 0


class Transport(Protocol):
    """Moves ``Message`` envelopes between nodes; implemented by TCP and in-memory transports.

    ``send`` never blocks and never raises for network trouble: it queues one batch per
    destination (one frame per peer per call) and drops, reporting the peer unreachable,
    when a queue is full. Inbound messages arrive on ``inbound`` in per-peer order.
    """

    @property
    def node_id(self) -> NodeId: ...

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[Message]: ...

    def send(self, messages: Iterable[Message]) -> None: ...

    def statistics(self) -> TransportStatistics: ...


@dataclass(slots=True)
class Counters:
    """The mutable twin of ``TransportStatistics`` that the transports update in place."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    messages_dropped: int = 0
    reconnects: int = 0
    dial_failures: int = 0
    handshakes_rejected: int = 0
    connections_closed_malformed: int = 0

    def snapshot(self, *, queued_batches: int, queued_bytes: int) -> TransportStatistics:
        return TransportStatistics(
            frames_sent=self.frames_sent,
            frames_received=self.frames_received,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
            messages_dropped=self.messages_dropped,
            reconnects=self.reconnects,
            dial_failures=self.dial_failures,
            handshakes_rejected=self.handshakes_rejected,
            connections_closed_malformed=self.connections_closed_malformed,
            queued_batches=queued_batches,
            queued_bytes=queued_bytes,
        )


def group_by_destination(messages: Iterable[Message]) -> dict[NodeId, list[Message]]:
    """Messages per destination, destinations ascending, each list in the given order, so
    that drops and frames follow one defined order whatever order the caller used."""
    grouped: dict[NodeId, list[Message]] = {}
    for msg in messages:
        grouped.setdefault(msg.dst, []).append(msg)
    return {dst: grouped[dst] for dst in sorted(grouped)}
