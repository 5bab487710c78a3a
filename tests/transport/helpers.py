"""Shared pieces for the transport tests: a test body, its registry, a log recorder."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from consensus.codec import BodyRegistry
from consensus.transport import Backoff, TcpTransport, TcpTransportConfig, open_tcp_transport
from consensus.types import GroupId, Message, NodeId

CLUSTER = "test-cluster"
DEADLINE_S = 10.0
"""Generous: a condition that holds at all holds within milliseconds on loopback."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    seq: int
    payload: bytes = b""


def make_registry() -> BodyRegistry:
    registry = BodyRegistry()
    registry.register(1, Ping)
    return registry


REGISTRY = make_registry()
_FAST_BACKOFF = Backoff(initial_s=0.01, max_s=0.2)


def ping(src: int, dst: int, seq: int = 0, payload: bytes = b"") -> Message:
    return Message(
        group_id=GroupId(1), src=NodeId(src), dst=NodeId(dst), body=Ping(seq=seq, payload=payload)
    )


class RecordingLogger:
    """Implements ``consensus.api.Logger``; lets a test wait until an event is logged."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self._changed = trio.Event()

    def _record(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self.events.append((level, event, kw))
        self._changed.set()
        self._changed = trio.Event()

    def debug(self, event: str, **kw: Any) -> None:
        self._record("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._record("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._record("warning", event, kw)

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [
            kw
            for _, name, kw in self.events
            if name == event and all(kw.get(k) == v for k, v in match.items())
        ]

    async def wait_for(self, event: str, **match: Any) -> dict[str, Any]:
        with trio.fail_after(DEADLINE_S):
            while True:
                found = self.find(event, **match)
                if found:
                    return found[0]
                await self._changed.wait()


async def receive(transport: TcpTransport | Any, n: int = 1) -> list[Message]:
    got: list[Message] = []
    with trio.fail_after(DEADLINE_S):
        while len(got) < n:
            got.append(await transport.inbound.receive())
    return got


async def send_until_received(sender: Any, receiver: Any, msg: Message) -> Message:
    """Resend ``msg`` until it arrives: after a restart the first copies may go down a
    connection the sender does not yet know is dead. Polls, with an overall deadline."""
    with trio.fail_after(DEADLINE_S):
        while True:
            sender.send([msg])
            with trio.move_on_after(0.05):
                got: Message = await receiver.inbound.receive()
                return got


@asynccontextmanager
async def open_cluster(
    ids: list[int],
    *,
    loggers: Mapping[int, RecordingLogger] | None = None,
    overrides: Mapping[int, Mapping[str, Any]] | None = None,
    unreachable: Mapping[int, list[NodeId]] | None = None,
    seed: int = 1,
) -> AsyncIterator[dict[int, TcpTransport]]:
    """Open one transport per id on 127.0.0.1:0, highest id first so that every dialer
    (the lower id of a pair) knows the address of the peers it dials."""
    transports: dict[int, TcpTransport] = {}
    async with AsyncExitStack() as stack:
        for node in sorted(ids, reverse=True):
            peers = {NodeId(p): transports[p].listen_address for p in transports}
            settings: dict[str, Any] = {
                "node_id": NodeId(node),
                "cluster_id": CLUSTER,
                "peers": peers,
                "backoff": _FAST_BACKOFF,
            }
            settings.update((overrides or {}).get(node, {}))
            sink = (unreachable or {}).get(node)
            transports[node] = await stack.enter_async_context(
                open_tcp_transport(
                    TcpTransportConfig(**settings),
                    rng=random.Random(seed + node),
                    registry=REGISTRY,
                    logger=(loggers or {}).get(node),
                    on_unreachable=sink.append if sink is not None else None,
                )
            )
        yield transports


async def wait_connected(transport: TcpTransport, peer: int) -> None:
    with trio.fail_after(DEADLINE_S):
        while NodeId(peer) not in transport.connected_peers():
            await trio.sleep(0.005)
