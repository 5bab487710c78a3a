"""Fault injection on a real node's links, for experiments on running clusters (the shell's
``.partition``/``.slow`` commands, the comparison benchmark's fault scenarios).

``FaultyTransport`` wraps the node's transport: messages to or from a *blocked* peer are
dropped (both directions, at this node: a partition between A and B is "A blocks B" plus "B
blocks A"), messages to a *slowed* peer leave after a delay. Everything stays bounded: delayed
batches beyond ``MAX_DELAYED`` are dropped like a full send queue would drop them. Only
installed when the node was started with faults allowed (``NodeConfig.allow_faults``); a node
in production never carries the wrapper.

A delay may have jitter (a WAN link): each batch to the peer waits ``delay + uniform(-jitter,
+jitter)`` (never below 0), drawn from the wrapper's own seeded ``random.Random``. Delayed
batches to one peer leave in the order they were sent, as on one TCP connection: a batch whose
draw would make it overtake an earlier one waits for that one instead (head-of-line blocking),
and while batches to a peer are still waiting, new ones queue behind them even after the delay
was lifted. One task per slowed peer releases its queue.
"""

from __future__ import annotations

import collections
import math
import random
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

    def __init__(
        self,
        inner: Transport,
        nursery: trio.Nursery,
        *,
        capacity: int,
        rng: random.Random | None = None,
    ) -> None:
        self._inner = inner
        self._nursery = nursery
        # Jitter draws: seeded from the node id unless given, so a run's draws do not depend
        # on the module-level generator (and two nodes do not draw the same sequence).
        self._rng = rng if rng is not None else random.Random(int(inner.node_id))
        self._blocked: set[NodeId] = set()
        self._delay_s: dict[NodeId, float] = {}
        self._jitter_s: dict[NodeId, float] = {}
        self._dropped = 0
        self._delayed = 0
        """Delayed batches queued and not yet released (all peers)."""
        self._queues: dict[NodeId, trio.MemorySendChannel[tuple[float, list[Message]]]] = {}
        self._waiting: dict[NodeId, int] = {}
        """Per peer, delayed batches not yet released: new messages queue behind them."""
        self._last_due: dict[NodeId, float] = {}
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
        later: dict[NodeId, list[Message]] = {}
        for message in messages:
            if message.dst in self._blocked:
                self._dropped += 1
                continue
            dst = message.dst
            if dst in self._delay_s or self._waiting.get(dst, 0) > 0:
                later.setdefault(dst, []).append(message)
            else:
                now.append(message)
        if now:
            self._inner.send(now)
        if not later:
            return
        clock = trio.current_time()
        # Ascending peer order: the draws, and so a seeded run's delays, do not depend on the
        # order the messages happened to be given in.
        for dst, batch in sorted(later.items()):
            if self._delayed >= MAX_DELAYED:
                self._dropped += len(batch)
                continue
            due = max(clock + self._draw_delay(dst), self._last_due.get(dst, -math.inf))
            self._last_due[dst] = due
            self._delayed += 1
            self._waiting[dst] = self._waiting.get(dst, 0) + 1
            self._queue(dst).send_nowait((due, batch))

    def _draw_delay(self, dst: NodeId) -> float:
        delay = self._delay_s.get(dst, 0.0)
        jitter = self._jitter_s.get(dst, 0.0)
        if delay <= 0 and jitter <= 0:
            return 0.0  # only queued behind earlier delayed batches
        if jitter > 0:
            delay += self._rng.uniform(-jitter, jitter)
        return max(0.0, delay)

    def _queue(self, dst: NodeId) -> trio.MemorySendChannel[tuple[float, list[Message]]]:
        queue = self._queues.get(dst)
        if queue is None:
            # Unbounded channel: the bound is MAX_DELAYED over all peers, checked in send.
            queue, rx = trio.open_memory_channel[tuple[float, list[Message]]](math.inf)
            self._queues[dst] = queue
            self._nursery.start_soon(self._release, dst, rx)
        return queue

    def statistics(self) -> TransportStatistics:
        inner = self._inner.statistics()
        return replace(inner, messages_dropped=inner.messages_dropped + self._dropped)

    # ----------------------------------------------------------------- control

    def block(self, peers: Iterable[int]) -> None:
        self._blocked.update(NodeId(p) for p in peers if p != self.node_id)

    def unblock(self, peers: Iterable[int]) -> None:
        self._blocked.difference_update(NodeId(p) for p in peers)

    def delay(self, peers: Iterable[int], seconds: float, jitter_s: float = 0.0) -> None:
        """Delay messages to ``peers`` by ``seconds`` +- up to ``jitter_s`` (uniform, per
        batch, never below 0); ``seconds`` and ``jitter_s`` both 0 lifts the delay."""
        if not 0 <= seconds <= MAX_DELAY_S:
            raise ValueError(f"delay must be between 0 and {MAX_DELAY_S:.0f} s")
        if not 0 <= jitter_s <= MAX_DELAY_S:
            raise ValueError(f"jitter must be between 0 and {MAX_DELAY_S:.0f} s")
        for peer in peers:
            node = NodeId(peer)
            if seconds == 0 and jitter_s == 0:
                self._delay_s.pop(node, None)
                self._jitter_s.pop(node, None)
            else:
                self._delay_s[node] = seconds
                self._jitter_s[node] = jitter_s

    def heal(self) -> None:
        self._blocked.clear()
        self._delay_s.clear()
        self._jitter_s.clear()
        self._generation += 1

    def describe(self) -> dict[str, object]:
        return {
            "blocked": sorted(int(p) for p in self._blocked),
            "delay_ms": {str(int(p)): round(d * 1000) for p, d in sorted(self._delay_s.items())},
            "jitter_ms": {
                str(int(p)): round(j * 1000) for p, j in sorted(self._jitter_s.items()) if j > 0
            },
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

    async def _release(
        self, dst: NodeId, queue: trio.MemoryReceiveChannel[tuple[float, list[Message]]]
    ) -> None:
        """Send ``dst``'s delayed batches at their due times, in queue order (due times are
        non-decreasing per peer, see ``send``), dropping messages whose peer got blocked.

        Every batch already due goes out in one ``send`` per wake-up: a checkpoint per batch
        would let a busy node's release fall behind its due times, delaying heartbeats past
        an election timeout (the same reason ``pump`` takes queued input without one)."""
        pending: collections.deque[tuple[float, list[Message]]] = collections.deque()
        while True:
            if not pending:
                try:
                    pending.append(await queue.receive())
                except trio.EndOfChannel:
                    return
            while True:
                try:
                    pending.append(queue.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await trio.sleep_until(pending[0][0])
            now = trio.current_time()
            due: list[Message] = []
            while pending and pending[0][0] <= now:
                due.extend(pending.popleft()[1])
                self._delayed -= 1
                self._waiting[dst] -= 1
            kept = [m for m in due if m.dst not in self._blocked]
            self._dropped += len(due) - len(kept)
            if kept:
                self._inner.send(kept)
