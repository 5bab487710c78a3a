"""Batching in the IO shell: the node's apply pipeline, idle tick batching, and the
coalescing writer of the client protocol. Real storage and state machines, trio's real
clock, polled conditions."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import msgpack
import pytest
import trio
import trio.testing

from consensus.codec import register_default_bodies
from consensus.runtime import Node, NodeConfig, open_node
from consensus.runtime.protocol import CoalescingWriter
from consensus.runtime.statemachine import KVStateMachine, decode_result, encode_put
from consensus.transport import MemoryNetwork
from consensus.types import Entry, GroupId, NodeId

from .helpers import wait_until

pytestmark = pytest.mark.timeout(60)

G = GroupId(1)


class GatedStateMachine(KVStateMachine):
    """A real KV state machine whose ``apply`` waits (in the worker thread) while the gate
    is closed."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gate.set()

    def apply(self, group_id: GroupId, entries: Sequence[Entry]) -> tuple[bytes | None, ...]:
        if not self.gate.wait(timeout=30):
            raise TimeoutError("gate never opened")
        return super().apply(group_id, entries)


def _proposals_at_least(node: Node, count: int) -> Callable[[], bool]:
    return lambda: node.statistics().proposals >= count


async def test_persist_and_commit_continue_while_the_state_machine_is_applying(
    tmp_path: Path,
) -> None:
    """Apply is pipelined behind persist: while the state machine is busy with one batch the
    loop keeps persisting and committing later proposals, and every proposal still resolves
    with its own result once its entry is applied (in log order)."""
    register_default_bodies()
    sm = GatedStateMachine(tmp_path / "data.db")
    config = NodeConfig(node_id=NodeId(1), cluster_id="pipe", data_dir=tmp_path, seed=1)
    async with open_node(
        config, network=MemoryNetwork(rng=random.Random(1)), state_machine=sm
    ) as node:
        await node.create_group(G, "raft", [1])
        with trio.fail_after(30):
            while True:
                try:
                    await node.propose(G, encode_put(b"warm", b"up"), timeout=5)
                    break
                except Exception:  # no leader yet (single voter: it elects itself)
                    await trio.sleep(0.01)
        sm.gate.clear()
        results: dict[int, bytes | None] = {}

        async def put(i: int) -> None:
            results[i] = await node.propose(G, encode_put(b"k%d" % i, b"v"), timeout=30)

        try:
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(put, i)
                    # One proposal per loop iteration, so several batches are in flight.
                    await wait_until(_proposals_at_least(node, i + 2))
                applied_while_gated = node.status(G).applied
                await wait_until(
                    lambda: node.status(G).commit >= applied_while_gated + 3,
                    what="commit advances while apply is blocked",
                )
                assert not results
                sm.gate.set()
        finally:
            sm.gate.set()
        assert sorted(results) == [0, 1, 2]
        assert all(r is not None and decode_result(r)["ok"] for r in results.values())
        assert node.status(G).applied == node.status(G).commit
        assert sm.get(G, b"k2") == b"v"


async def test_replies_completed_together_leave_in_one_write() -> None:
    """Replies queued by many tasks in one scheduler round are written with one
    ``send_all``, in the order they were queued."""
    send, receive = trio.testing.memory_stream_one_way_pair()
    writer = CoalescingWriter(send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for i in range(10):
            await writer.send({"id": i, "ok": True})
        await trio.testing.wait_all_tasks_blocked()
        data = await receive.receive_some()
        nursery.cancel_scope.cancel()
    assert writer.writes == 1 and writer.objects == 10
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    assert [obj["id"] for obj in unpacker] == list(range(10))


async def test_a_reader_that_stops_reading_makes_senders_wait() -> None:
    """The queue is bounded in bytes: a client that does not read holds up its own replies
    instead of growing the node's memory."""
    send, receive = trio.testing.memory_stream_one_way_pair()
    writer = CoalescingWriter(send, max_queued_bytes=1000)
    async with trio.open_nursery() as nursery:
        # The writer is not running: nothing drains the queue.
        with trio.move_on_after(0.2) as scope:
            for i in range(100):
                await writer.send({"id": i, "pad": b"x" * 100})
        assert scope.cancelled_caught
        nursery.cancel_scope.cancel()
    await receive.aclose()


async def test_an_idle_node_wakes_once_per_stride_but_delivers_every_tick(tmp_path: Path) -> None:
    """With no awake group the loop sleeps ``idle_tick_stride`` ticks at a time; the ticks
    that passed are all delivered when it wakes (late, never dropped: Raft thesis §6.4.1)."""
    register_default_bodies()
    config = NodeConfig(
        node_id=NodeId(1), cluster_id="idle", data_dir=tmp_path, seed=1, idle_tick_stride=5
    )
    async with open_node(config, network=MemoryNetwork(rng=random.Random(1))) as node:
        start = node.statistics()
        started_s = trio.current_time()
        await wait_until(lambda: node.statistics().ticks >= start.ticks + 40)
        stats = node.statistics()
        elapsed_ticks = (trio.current_time() - started_s) * 1000 / config.tick_interval_ms
        assert stats.ticks - start.ticks >= min(40, int(elapsed_ticks) - 5)
        assert stats.loops - start.loops <= (stats.ticks - start.ticks) / 2
