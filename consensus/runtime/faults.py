"""Fault injection on a real node's links, for experiments on running clusters (the shell's
``.partition``/``.slow`` commands, the comparison benchmark's fault scenarios).

``FaultyTransport`` wraps the node's transport: messages to or from a *blocked* peer are
dropped (both directions, at this node: a partition between A and B is "A blocks B" plus "B
blocks A"), messages to a *slowed* peer leave after a delay. Everything stays bounded: delayed
batches beyond ``MAX_DELAYED`` are dropped like a full send queue would drop them. Only
installed when the node was started with faults allowed (``NodeConfig.allow_faults``); a node
in production never carries the wrapper.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Final

import trio

from consensus.transport.base import Transport, TransportStatistics
from consensus.types import Message, NodeId

MAX_DELAYED: Final = 4096
"""Delayed batches in flight at once."""
MAX_DELAY_S: Final = 60.0


class FaultyTransport:
    """A ``Transport`` that drops or delays messages by peer on command."""

    def __init__(self, inner: Transport, nursery: trio.Nursery, *, capacity: int) -> None:
        self._inner = inner
        self._nursery = nursery
        self._blocked: set[NodeId] = set()
        self._delay_s: dict[NodeId, float] = {}
        self._dropped = 0
        self._delayed = 0
        self._tx, self._rx = trio.open_memory_channel[Message](capacity)
        self._generation = 0

    # ----------------------------------------------------------------- Transport

    @property
    def node_id(self) -> NodeId:
        return self._inner.node_id

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[Message]:
        return self._rx

    def send(self, messages: Iterable[Message]) -> None:
        now: list[Message] = []
        later: dict[float, list[Message]] = {}
        for message in messages:
            if message.dst in self._blocked:
                self._dropped += 1
                continue
            delay = self._delay_s.get(message.dst, 0.0)
            if delay > 0:
                later.setdefault(delay, []).append(message)
            else:
                now.append(message)
        if now:
            self._inner.send(now)
        for delay, batch in sorted(later.items()):
            if self._delayed >= MAX_DELAYED:
                self._dropped += len(batch)
                continue
            self._delayed += 1
            self._nursery.start_soon(self._send_later, delay, batch)

    def statistics(self) -> TransportStatistics:
        inner = self._inner.statistics()
        return replace(inner, messages_dropped=inner.messages_dropped + self._dropped)

    # ----------------------------------------------------------------- control

    def block(self, peers: Iterable[int]) -> None:
        self._blocked.update(NodeId(p) for p in peers if p != self.node_id)

    def unblock(self, peers: Iterable[int]) -> None:
        self._blocked.difference_update(NodeId(p) for p in peers)

    def delay(self, peers: Iterable[int], seconds: float) -> None:
        if not 0 <= seconds <= MAX_DELAY_S:
            raise ValueError(f"delay must be between 0 and {MAX_DELAY_S:.0f} s")
        for peer in peers:
            if seconds == 0:
                self._delay_s.pop(NodeId(peer), None)
            else:
                self._delay_s[NodeId(peer)] = seconds

    def heal(self) -> None:
        self._blocked.clear()
        self._delay_s.clear()
        self._generation += 1

    def describe(self) -> dict[str, object]:
        return {
            "blocked": sorted(int(p) for p in self._blocked),
            "delay_ms": {str(int(p)): round(d * 1000) for p, d in sorted(self._delay_s.items())},
            "dropped": self._dropped,
        }

    def heal_later(self, seconds: float) -> None:
        """Heal everything after ``seconds`` unless healed (or re-armed) before."""
        generation = self._generation

        async def heal() -> None:
            await trio.sleep(seconds)
            if self._generation == generation:
                self.heal()

        self._nursery.start_soon(heal)

    # ----------------------------------------------------------------- tasks

    async def pump(self) -> None:
        """Forward inbound messages, dropping those from blocked peers."""
        # Without a checkpoint per message when input is queued (see Node._pump_inbound and
        # ADR 0011: a scheduler round per message caps a node's inbound rate).
        inbound = self._inner.inbound
        async with self._tx:
            while True:
                try:
                    message = inbound.receive_nowait()
                except trio.WouldBlock:
                    try:
                        message = await inbound.receive()
                    except trio.EndOfChannel:
                        return
                if message.src in self._blocked:
                    self._dropped += 1
                    continue
                try:
                    self._tx.send_nowait(message)
                except trio.WouldBlock:
                    await self._tx.send(message)

    async def _send_later(self, delay: float, batch: list[Message]) -> None:
        try:
            await trio.sleep(delay)
            self._inner.send(m for m in batch if m.dst not in self._blocked)
        finally:
            self._delayed -= 1
