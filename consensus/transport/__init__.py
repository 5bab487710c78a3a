"""Transports: move ``Message`` envelopes between nodes (TCP for real, memory for tests).

See ``consensus.transport.tcp`` for the connection rules and ``consensus.codec`` for the
wire format.
"""

from consensus.transport.backoff import Backoff
from consensus.transport.base import Transport, TransportStatistics, UnreachableCallback
from consensus.transport.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    FrameReader,
    FrameTooLarge,
    FramingError,
    MalformedFrame,
)
from consensus.transport.handshake import HandshakeError
from consensus.transport.memory import LinkFaults, MemoryNetwork, MemoryTransport
from consensus.transport.tcp import TcpTransport, TcpTransportConfig, open_tcp_transport

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Backoff",
    "FrameDecoder",
    "FrameReader",
    "FrameTooLarge",
    "FramingError",
    "HandshakeError",
    "LinkFaults",
    "MalformedFrame",
    "MemoryNetwork",
    "MemoryTransport",
    "TcpTransport",
    "TcpTransportConfig",
    "Transport",
    "TransportStatistics",
    "UnreachableCallback",
    "open_tcp_transport",
]


def _conforms_to_transport(tcp: TcpTransport, memory: MemoryTransport) -> list[Transport]:
    """Never called: mypy checks here that both classes implement ``Transport``."""
    return [tcp, memory]
