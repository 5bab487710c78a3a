"""The hello exchange that opens every connection.

Both ends send ``Hello(cluster_id, node_id, nonce, auth)`` at once, then check the peer's:
same protocol version (checked by the frame decoder before anything else), same cluster,
same auth mode, a node id that is not ours (and the one we dialled, when we dialled). With a
shared secret both ends then send ``Auth(mac)``: an HMAC-SHA256 over the sender's hello and
the *receiver's* nonce, so a recorded answer cannot be replayed on a new connection and an
answer cannot be reflected back to its author (the MAC input is ordered sender, receiver,
and a hello claiming our own id is refused). The secret authenticates the hello only; the
link is not encrypted.

A failed handshake raises ``HandshakeError`` with a machine-readable ``reason``; before
closing we send a best-effort ``Reject`` so the peer's log says why too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import msgpack
import trio

from consensus.codec import (
    PROTOCOL_VERSION,
    Auth,
    CodecError,
    Frame,
    Hello,
    ProtocolVersionMismatch,
    Reject,
    encode_frame,
)
from consensus.transport.framing import FrameReader, FramingError
from consensus.types import NodeId

NONCE_BYTES = 16
_MAC_LABEL = "shardb-hello-auth-v1"


class HandshakeError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        """snake_case, stable: logged and sent to the peer in a ``Reject``."""
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeConfig:
    cluster_id: str
    node_id: NodeId
    secret: bytes | None = None


def hello_mac(secret: bytes, sender: Hello, *, receiver_id: NodeId, receiver_nonce: bytes) -> bytes:
    data: bytes = msgpack.packb(
        [
            _MAC_LABEL,
            PROTOCOL_VERSION,
            sender.cluster_id,
            int(sender.node_id),
            sender.nonce,
            sender.auth,
            int(receiver_id),
            receiver_nonce,
        ],
        use_bin_type=True,
    )
    return hmac.new(secret, data, hashlib.sha256).digest()


async def _receive(reader: FrameReader) -> Frame:
    try:
        frame = await reader.receive_frame()
    except FramingError as exc:
        if isinstance(exc.__cause__, ProtocolVersionMismatch):
            raise HandshakeError("protocol_version_mismatch", str(exc.__cause__)) from exc
        raise HandshakeError("malformed_frame", str(exc)) from exc
    if frame is None:
        raise HandshakeError("closed_during_handshake")
    if isinstance(frame, Reject):
        raise HandshakeError("rejected_by_peer", frame.reason)
    return frame


async def handshake(
    stream: trio.abc.Stream,
    reader: FrameReader,
    config: HandshakeConfig,
    *,
    expected_peer: NodeId | None,
    timeout_s: float,
) -> NodeId:
    """Run the hello (and auth) exchange; return the authenticated peer's node id."""
    try:
        with trio.fail_after(timeout_s):
            return await _handshake(stream, reader, config, expected_peer=expected_peer)
    except HandshakeError as exc:
        if exc.reason not in ("rejected_by_peer", "closed_during_handshake", "io_error"):
            await _send_reject(stream, exc.reason)
        raise
    except trio.TooSlowError as exc:
        raise HandshakeError("handshake_timeout", f"no hello within {timeout_s}s") from exc


async def _handshake(
    stream: trio.abc.Stream,
    reader: FrameReader,
    config: HandshakeConfig,
    *,
    expected_peer: NodeId | None,
) -> NodeId:
    # A fresh unpredictable nonce per connection: the injected Random may be seeded for
    # reproducible tests, and a predictable nonce would let a recorded Auth be replayed.
    ours = Hello(
        cluster_id=config.cluster_id,
        node_id=config.node_id,
        nonce=secrets.token_bytes(NONCE_BYTES),
        auth=config.secret is not None,
    )
    try:
        await stream.send_all(encode_frame(ours))
        theirs = await _receive(reader)
        if not isinstance(theirs, Hello):
            raise HandshakeError("unexpected_frame", f"expected hello, got {type(theirs).__name__}")
        _check_hello(ours, theirs, expected_peer=expected_peer)
        if config.secret is not None:
            mac = hello_mac(
                config.secret, ours, receiver_id=theirs.node_id, receiver_nonce=theirs.nonce
            )
            await stream.send_all(encode_frame(Auth(mac=mac)))
            answer = await _receive(reader)
            if not isinstance(answer, Auth):
                raise HandshakeError(
                    "unexpected_frame", f"expected auth, got {type(answer).__name__}"
                )
            want = hello_mac(
                config.secret, theirs, receiver_id=ours.node_id, receiver_nonce=ours.nonce
            )
            if not hmac.compare_digest(answer.mac, want):
                raise HandshakeError("auth_failed", "hello MAC does not match the shared secret")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise HandshakeError("io_error", repr(exc)) from exc
    except CodecError as exc:  # our own hello failed to encode: bad local configuration
        raise HandshakeError("bad_local_config", str(exc)) from exc
    return theirs.node_id


def _check_hello(ours: Hello, theirs: Hello, *, expected_peer: NodeId | None) -> None:
    if theirs.cluster_id != ours.cluster_id:
        raise HandshakeError(
            "cluster_id_mismatch",
            f"peer is in {theirs.cluster_id!r}, we are in {ours.cluster_id!r}",
        )
    if theirs.auth != ours.auth:
        raise HandshakeError(
            "auth_mode_mismatch", f"peer auth={theirs.auth}, ours auth={ours.auth}"
        )
    if theirs.node_id == ours.node_id:
        raise HandshakeError("self_connection", f"peer claims our node id {ours.node_id}")
    if expected_peer is not None and theirs.node_id != expected_peer:
        raise HandshakeError(
            "unexpected_node_id", f"dialled node {expected_peer}, reached {theirs.node_id}"
        )


async def _send_reject(stream: trio.abc.Stream, reason: str) -> None:
    # Best effort: the peer may be gone or not reading; never wait long for it.
    with (
        trio.move_on_after(1.0),
        contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError
        ),
    ):
        await stream.send_all(encode_frame(Reject(reason=reason)))


__all__ = ["NONCE_BYTES", "HandshakeConfig", "HandshakeError", "handshake", "hello_mac"]
