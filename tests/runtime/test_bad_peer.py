"""A peer's message that a group cannot take is dropped, never fatal (non-negotiable 4).

A peer configured with the other backend for a group sends bodies this group's core does
not understand; the core refuses them with ``UsageError`` before changing anything, and the
node must log, count and drop them like a malformed frame while it keeps serving.
"""

from __future__ import annotations

from pathlib import Path

import trio

from consensus.paxos.messages import Heartbeat
from consensus.types import GroupId, Index, Message, NodeId, Term

from .helpers import memory_cluster, wait_until


async def test_a_body_of_the_other_backend_is_dropped_and_the_node_keeps_serving(
    tmp_path: Path,
) -> None:
    async with memory_cluster(tmp_path, nodes=(1,)) as cluster:
        await cluster.create_group(5, "raft", voters=(1,))
        await cluster.put(5, b"k", b"before")
        node = cluster.nodes[1]
        async with cluster.network.open_transport(NodeId(9)) as rogue:
            rogue.send(
                [
                    Message(
                        group_id=GroupId(5),
                        src=NodeId(9),
                        dst=NodeId(1),
                        body=Heartbeat(ballot=Term((7 << 16) | 9), commit=Index(3), round=1),
                    )
                ]
            )
            await wait_until(
                lambda: node.statistics().messages_rejected == 1,
                what="the Paxos body sent to a Raft group is rejected",
            )
        assert not node.statistics().failed
        await cluster.put(5, b"k", b"after")
        assert await cluster.get(5, b"k") == b"after"
        await trio.lowlevel.checkpoint()
