"""The placement driver on a live cluster: replica moves through membership changes (add a
learner, catch it up by snapshot, promote, remove), draining a decommissioned node, rebuilding
a dead node's replicas, spreading replicas to a node that joined, and merges (manual and
automatic) under concurrent writes. Every test ends with the row count and checksum the
acknowledged writes imply, read through every gateway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from consensus.runtime.client import ClientError
from shardb.server.placer import PlacerConfig

from .harness import ShardCluster, shard_cluster

BACKENDS = ["raft", "paxos"]
FAST = PlacerConfig(interval_s=0.3, max_operations=4, replace_down_after_s=1.0, op_timeout_s=10.0)


async def wait_for(
    what: str, check: Callable[[], Awaitable[bool]], *, timeout: float = 90.0
) -> None:
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.2)
    del what


async def meta(cluster: ShardCluster, node: int | None = None) -> dict[str, Any]:
    return await cluster.client.call(node or min(cluster.nodes), "meta", {})


async def count_and_sum(cluster: ShardCluster, node: int) -> tuple[int, int]:
    answer = await cluster.sql("SELECT count(*), sum(v) FROM t", node=node)
    ((count, total),) = answer["rows"]
    return int(count), int(total or 0)


async def create_table(cluster: ShardCluster, shards: int, rows: int) -> int:
    await cluster.sql(
        f"CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL) WITH (shards = {shards})"
    )
    total = 0
    for start in range(0, rows, 50):
        values = ", ".join(f"({k * 97}, {k})" for k in range(start, min(rows, start + 50)))
        await cluster.sql(f"INSERT INTO t VALUES {values}")
        total += sum(range(start, min(rows, start + 50)))
    return total


def hosted_ranges(cluster: ShardCluster, node: int, info: dict[str, Any]) -> set[int]:
    groups = {int(r["group_id"]) for r in info["ranges"]}
    return {int(g) for g in cluster.nodes[node].node.group_ids() if int(g) in groups}


def settled(info: dict[str, Any], rf: int = 3) -> bool:
    return all(len(r["replicas"]) == rf and not r.get("learners") for r in info["ranges"])


@pytest.mark.parametrize("backend", BACKENDS)
async def test_decommissioned_node_is_drained_then_removed(tmp_path: Path, backend: str) -> None:
    """Every replica of node 4 (ranges and the meta group) moves to the other nodes, add
    before remove; then the node can be forgotten, and no row was lost."""
    async with shard_cluster(tmp_path, 4, backend=backend, placer=FAST) as cluster:
        total = await create_table(cluster, 4, 200)
        state = await cluster.client.call(1, "decommission", {"node": 4})
        assert state["node"] == 4

        async def drained() -> bool:
            state = await cluster.client.call(1, "decommission", {"node": 4, "action": "status"})
            return state["replicas"] == 0 and not state["meta_member"]

        await wait_for("node 4 drained", drained)
        info = await meta(cluster)
        assert settled(info)
        assert all(4 not in r["replicas"] for r in info["ranges"])
        await cluster.client.call(1, "decommission", {"node": 4, "action": "remove"})
        assert 4 not in {n["node_id"] for n in (await meta(cluster))["nodes"]}

        async def replicas_deleted() -> bool:
            return not hosted_ranges(cluster, 4, info)

        await wait_for("node 4 deleted its replicas", replicas_deleted)
        await cluster.stop_node(4)
        for node in (1, 2, 3):
            assert await count_and_sum(cluster, node) == (200, total)


async def test_removing_a_node_that_still_holds_replicas_is_refused(tmp_path: Path) -> None:
    async with shard_cluster(tmp_path, 3) as cluster:
        await create_table(cluster, 1, 10)
        with pytest.raises(ClientError) as caught:
            await cluster.client.call(1, "decommission", {"node": 3, "action": "remove"})
        assert caught.value.code == "refused"
        assert "still holds" in caught.value.message


async def test_a_joined_node_receives_replicas(tmp_path: Path) -> None:
    """A node that joins (id reserved by the meta group) gets replicas by snapshot until the
    replica counts are even (18 replicas over 4 nodes: 4 or 5 each)."""
    async with shard_cluster(tmp_path, 3, placer=FAST) as cluster:
        total = await create_table(cluster, 6, 300)
        new = await cluster.add_node()
        assert int(new.node_id) == 4

        async def balanced() -> bool:
            info = await meta(cluster)
            if not settled(info):
                return False
            counts = {n: 0 for n in (1, 2, 3, 4)}
            for r in info["ranges"]:
                for n in r["replicas"]:
                    counts[n] += 1
            return max(counts.values()) - min(counts.values()) <= 1

        await wait_for("replicas spread to node 4", balanced, timeout=120)
        info = await meta(cluster)
        assert len(hosted_ranges(cluster, 4, info)) >= 4
        assert new.node.statistics().snapshots_restored >= 4
        for node in (1, 2, 3, 4):
            assert await count_and_sum(cluster, node) == (300, total)


async def test_a_dead_nodes_replicas_are_rebuilt_elsewhere(tmp_path: Path) -> None:
    """Once a node has been down for ``replace_down_after_s``, each of its replicas is
    replaced by a new one on a live node: the ranges are fully replicated again."""
    async with shard_cluster(tmp_path, 4, placer=FAST, node_down_after_s=1.0) as cluster:
        total = await create_table(cluster, 4, 200)
        info = await meta(cluster)
        victim = max((2, 3, 4), key=lambda n: sum(1 for r in info["ranges"] if n in r["replicas"]))
        await cluster.stop_node(victim)

        async def rebuilt() -> bool:
            info = await meta(cluster, 1)
            return settled(info) and all(victim not in r["replicas"] for r in info["ranges"])

        await wait_for("replicas rebuilt", rebuilt)
        for node in cluster.nodes:
            assert await count_and_sum(cluster, node) == (200, total)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_merges_under_concurrent_writes_lose_and_duplicate_nothing(
    tmp_path: Path, backend: str
) -> None:
    """UNSPLIT merges a range into its left neighbour while 4 writers insert: the final
    count and checksum equal the acknowledged inserts, on every gateway."""
    async with shard_cluster(tmp_path, 3, backend=backend) as cluster:
        await cluster.sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        await cluster.sql("ALTER TABLE t SPLIT AT VALUES (100), (200), (300), (400)")
        acknowledged: list[int] = []

        async def writer(w: int) -> None:
            for k in range(w, 500, 4):
                await cluster.sql("INSERT INTO t VALUES (?, ?)", [k, k], node=1 + w % 3)
                acknowledged.append(k)

        async def merger() -> None:
            for key in (100, 300, 200):
                await trio.sleep(0.3)
                await cluster.sql(f"ALTER TABLE t UNSPLIT AT VALUES ({key})")

        async with trio.open_nursery() as nursery:
            for w in range(4):
                nursery.start_soon(writer, w)
            nursery.start_soon(merger)
        ranges = (await cluster.sql("SHOW RANGES FROM TABLE t"))["rows"]
        assert len(ranges) == 2
        expected = (len(acknowledged), sum(acknowledged))
        for node in (1, 2, 3):
            assert await count_and_sum(cluster, node) == expected


async def test_small_adjacent_ranges_are_merged_automatically(tmp_path: Path) -> None:
    """With ``merge_bytes`` set, the placement driver merges cool neighbours below it."""
    placer = PlacerConfig(interval_s=0.3, max_operations=4, merge_bytes=1 << 20)
    async with shard_cluster(tmp_path, 3, placer=placer) as cluster:
        total = await create_table(cluster, 4, 100)

        async def merged() -> bool:
            rows = (await cluster.sql("SHOW RANGES FROM TABLE t"))["rows"]
            return len(rows) == 1

        await wait_for("ranges merged", merged)
        for node in (1, 2, 3):
            assert await count_and_sum(cluster, node) == (100, total)
