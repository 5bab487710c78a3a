"""An in-memory transport with fault injection, for trio-level tests of the IO shell.

Same interface and the same queueing rules as the TCP transport (bounded per-peer queue,
drop and report unreachable when full, backpressure on the bounded inbound channel, FIFO per
link), with links that can lose messages, delay them and be partitioned. Delays are trio
time, so tests run them under ``trio.testing.MockClock`` in virtual time. Every random
decision (loss, delay) is drawn in ``send``, in ascending destination order, from the
network's injected ``random.Random``.

With a ``registry`` every batch goes through the real wire codec (encode in ``send``, decode
on delivery), so these tests also catch a body the codec cannot carry.

This is not the deterministic simulator (``consensus.sim`` drives the pure hosts with its own
network); trio's scheduler is random, so only the decisions, not the interleavings, replay.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from consensus.codec import Batch, BodyRegistry, decode_frame_bytes, encode_batch_frames
from consensus.transport.base import (
    Counters,
    TransportStatistics,
    UnreachableCallback,
    group_by_destination,
)
from consensus.types import Message, NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkFaults:
    drop_probability: float = 0.0
    """Each message is lost independently with this probability."""
    delay_min_s: float = 0.0
    delay_max_s: float = 0.0
    """Each batch arrives after a delay drawn uniformly from [min, max] (FIFO per link: a
    batch never overtakes an earlier one on the same link, as on one TCP connection)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_probability <= 1.0:
            raise ValueError("drop_probability must be in [0, 1]")
        if not 0.0 <= self.delay_min_s <= self.delay_max_s:
            raise ValueError("need 0 <= delay_min_s <= delay_max_s")


class MemoryNetwork:
    """The wires between ``MemoryTransport``s, and the knobs to break them."""

    def __init__(
        self,
        *,
        rng: random.Random,
        registry: BodyRegistry | None = None,
        faults: LinkFaults = LinkFaults(),
        max_frame_bytes: int = 16 << 20,
    ) -> None:
        self._rng = rng
        self._registry = registry
        self._default_faults = faults
        self._link_faults: dict[tuple[NodeId, NodeId], LinkFaults] = {}
        self._cut: set[tuple[NodeId, NodeId]] = set()
        self._nodes: dict[NodeId, MemoryTransport] = {}
        self._max_frame_bytes = max_frame_bytes

    # ------------------------------------------------------------------ faults

    def set_faults(
        self, faults: LinkFaults, *, src: NodeId | None = None, dst: NodeId | None = None
    ) -> None:
        """Faults for the link ``src -> dst`` (one direction), or the default for every link
        without its own setting when both are None."""
        if src is None and dst is None:
            self._default_faults = faults
        elif src is not None and dst is not None:
            self._link_faults[(src, dst)] = faults
        else:
            raise ValueError("give both src and dst, or neither")

    def faults(self, src: NodeId, dst: NodeId) -> LinkFaults:
        return self._link_faults.get((src, dst), self._default_faults)

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Cut every link between nodes of different groups (both directions). Nodes not
        named keep their links. Adds to cuts already in place."""
        members = [sorted(set(g)) for g in groups]
        for i, left in enumerate(members):
            for right in members[i + 1 :]:
                for a in left:
                    for b in right:
                        self._cut.add((a, b))
                        self._cut.add((b, a))

    def cut(self, src: NodeId, dst: NodeId) -> None:
        """Cut one direction only (asymmetric partition)."""
        self._cut.add((src, dst))

    def heal(self) -> None:
        self._cut.clear()

    def connected(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) not in self._cut

    # ------------------------------------------------------------------ nodes

    @asynccontextmanager
    async def open_transport(
        self,
        node_id: NodeId,
        *,
        send_queue_batches: int = 256,
        inbound_queue_messages: int = 4096,
        on_unreachable: UnreachableCallback | None = None,
    ) -> AsyncIterator[MemoryTransport]:
        if node_id in self._nodes:
            raise ValueError(f"node {node_id} is already on this network")
        async with trio.open_nursery() as nursery:
            transport = MemoryTransport(
                self,
                node_id,
                nursery=nursery,
                send_queue_batches=send_queue_batches,
                inbound_queue_messages=inbound_queue_messages,
                on_unreachable=on_unreachable,
            )
            self._nodes[node_id] = transport
            try:
                yield transport
            finally:
                if self._nodes.get(node_id) is transport:
                    del self._nodes[node_id]
                transport._close()
                nursery.cancel_scope.cancel()


@dataclass(slots=True)
class _InFlight:
    deliver_at: float
    messages: tuple[Message, ...] = ()
    frames: tuple[bytes, ...] = ()
    """Encoded form when the network has a registry (then ``messages`` is empty)."""
    message_count: int = 0


@dataclass(slots=True)
class _Link:
    tx: trio.MemorySendChannel[_InFlight]
    rx: trio.MemoryReceiveChannel[_InFlight] = field(repr=False)


class MemoryTransport:
    """One node's end of a ``MemoryNetwork``; implements ``consensus.transport.Transport``."""

    def __init__(
        self,
        network: MemoryNetwork,
        node_id: NodeId,
        *,
        nursery: trio.Nursery,
        send_queue_batches: int,
        inbound_queue_messages: int,
        on_unreachable: UnreachableCallback | None,
    ) -> None:
        self._network = network
        self._node_id = node_id
        self._nursery = nursery
        self._queue_capacity = send_queue_batches
        self._on_unreachable = on_unreachable
        self._counters = Counters()
        self._inbound_tx, self._inbound_rx = trio.open_memory_channel[Message](
            inbound_queue_messages
        )
        self._links: dict[NodeId, _Link] = {}
        self._closed = False

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[Message]:
        return self._inbound_rx

    def statistics(self) -> TransportStatistics:
        queued = sum(link.rx.statistics().current_buffer_used for link in self._links.values())
        return self._counters.snapshot(queued_batches=queued, queued_bytes=0)

    def send(self, messages: Iterable[Message]) -> None:
        net = self._network
        now = trio.current_time()
        for dst, batch in group_by_destination(messages).items():
            if dst == self._node_id:
                for msg in batch:
                    self._put_inbound_nowait(msg)
                continue
            if self._closed or dst not in net._nodes:
                self._drop(dst, len(batch), unreachable=True)
                continue
            faults = net.faults(self._node_id, dst)
            kept = tuple(m for m in batch if net._rng.random() >= faults.drop_probability)
            delay = net._rng.uniform(faults.delay_min_s, faults.delay_max_s)
            self._counters.messages_dropped += len(batch) - len(kept)
            if not kept:
                continue
            item = _InFlight(deliver_at=now + delay, message_count=len(kept))
            if net._registry is not None:
                frames, oversized = encode_batch_frames(
                    kept, max_frame_bytes=net._max_frame_bytes, registry=net._registry
                )
                self._counters.messages_dropped += len(oversized)
                item.frames = tuple(data for data, _ in frames)
                item.message_count = sum(count for _, count in frames)
            else:
                item.messages = kept
            try:
                self._link(dst).tx.send_nowait(item)
            except trio.WouldBlock:
                self._drop(dst, item.message_count, unreachable=True)

    # ------------------------------------------------------------------ internals

    def _link(self, dst: NodeId) -> _Link:
        link = self._links.get(dst)
        if link is None:
            tx, rx = trio.open_memory_channel[_InFlight](self._queue_capacity)
            link = _Link(tx=tx, rx=rx)
            self._links[dst] = link
            self._nursery.start_soon(self._run_link, dst, rx)
        return link

    async def _run_link(self, dst: NodeId, rx: trio.MemoryReceiveChannel[_InFlight]) -> None:
        async for item in rx:
            await trio.sleep_until(item.deliver_at)
            target = self._network._nodes.get(dst)
            # A partition or a crash while in flight loses the batch, as on a real wire.
            if target is None or not self._network.connected(self._node_id, dst):
                self._counters.messages_dropped += item.message_count
                continue
            messages = item.messages
            for data in item.frames:
                frame = decode_frame_bytes(data, registry=self._network._registry)
                if not isinstance(frame, Batch):  # our own encoder wrote it: a local bug
                    raise TypeError(f"memory link carried a {type(frame).__name__} frame")
                messages += frame.messages
                self._counters.bytes_sent += len(data)
                target._counters.bytes_received += len(data)
            self._counters.frames_sent += 1
            self._counters.messages_sent += len(messages)
            target._counters.frames_received += 1
            target._counters.messages_received += len(messages)
            for msg in messages:
                try:
                    # The whole batch at once while there is room, as the TCP reader does.
                    try:
                        target._inbound_tx.send_nowait(msg)
                    except trio.WouldBlock:
                        await target._inbound_tx.send(msg)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    self._counters.messages_dropped += 1

    def _put_inbound_nowait(self, msg: Message) -> None:
        try:
            self._inbound_tx.send_nowait(msg)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._counters.messages_dropped += 1

    def _drop(self, dst: NodeId, count: int, *, unreachable: bool) -> None:
        self._counters.messages_dropped += count
        if unreachable and self._on_unreachable is not None:
            self._on_unreachable(dst)

    def _close(self) -> None:
        self._closed = True
        for dst in sorted(self._links):
            self._links[dst].tx.close()
        self._inbound_tx.close()
