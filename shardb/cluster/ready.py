"""Waiting until a cluster serves SQL: every node answers on its client port and the meta
group lists every node as alive."""

from __future__ import annotations

import trio

from consensus.runtime.client import ClientError, open_client
from shardb.cluster.local import ClusterError, LocalCluster


async def wait_ready(cluster: LocalCluster, *, timeout_s: float = 60.0) -> None:
    """Poll ``meta`` on every running node until each lists all nodes; raise ``ClusterError``
    (with the log tail of a node that died) otherwise."""
    expected = set(cluster.node_ids)
    running = [n for n in cluster.node_ids if cluster.running(n)]
    with trio.move_on_after(timeout_s) as scope:
        async with open_client(cluster.client_addresses, timeout_s=5.0) as client:
            pending = set(running)
            while pending:
                cluster.check_alive()
                for node_id in sorted(pending):
                    try:
                        meta = await client.call(
                            node_id, "meta", {}, deadline=trio.current_time() + 2.0
                        )
                    except ClientError:
                        continue
                    listed = {int(n["node_id"]) for n in meta.get("nodes", []) if n["alive"]}
                    if listed >= expected or listed >= set(running):
                        pending.discard(node_id)
                if pending:
                    await trio.sleep(0.1)
    if scope.cancelled_caught:
        cluster.check_alive()
        raise ClusterError(f"the cluster did not become ready within {timeout_s:.0f} s")
