"""Admin ops of a database node: leadership transfer, leader spreading, link faults."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio

from consensus.runtime.client import ClientError

from .harness import ShardCluster, shard_cluster

pytestmark = pytest.mark.timeout(180)


async def leaders(cluster: ShardCluster, table: str, *, via: int = 1) -> dict[int, int]:
    """range id -> leader node, from every node's own status (not hints)."""
    meta = await cluster.client.call(via, "meta", {})
    groups = {r["group_id"]: r["range_id"] for r in meta["ranges"] if r["table"] == table}
    found: dict[int, int] = {}
    for node in cluster.nodes.values():
        for gid in node.node.group_ids():
            st = node.node.status(gid)
            if int(gid) in groups and st.role.value == "leader":
                found[groups[int(gid)]] = int(node.node_id)
    return found


async def test_leaders_spread_over_the_nodes(tmp_path: Path) -> None:
    """Ranges' leaders follow the meta group's hints, which spread them over the nodes."""
    async with shard_cluster(tmp_path, leader_balance_s=0.5) as cluster:
        await cluster.sql("CREATE TABLE t (k TEXT PRIMARY KEY, v) WITH (shards = 6)")
        with trio.fail_after(60):
            while True:
                led = await leaders(cluster, "t")
                if len(led) == 6 and sorted(set(led.values())) == [1, 2, 3]:
                    break
                await trio.sleep(0.2)


async def test_transfer_leader_moves_a_range_and_followers_refuse(tmp_path: Path) -> None:
    async with shard_cluster(tmp_path, leader_balance_s=0) as cluster:
        await cluster.sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v)")
        led = await leaders(cluster, "t")
        ((range_id, leader),) = led.items()
        meta = await cluster.client.call(1, "meta", {})
        group = next(r["group_id"] for r in meta["ranges"] if r["range_id"] == range_id)
        target = 1 + leader % 3
        follower = 1 + target % 3
        with trio.fail_after(30):  # CREATE TABLE waits for a quorum of replicas, not all
            while not all(
                group in [int(g) for g in n.node.group_ids()] for n in cluster.nodes.values()
            ):
                await trio.sleep(0.02)
        with pytest.raises(ClientError) as refused:
            await cluster.client.call(follower, "transfer_leader", {"group": group, "node": target})
        assert refused.value.code == "not_leader"
        await cluster.client.call(leader, "transfer_leader", {"group": group, "node": target})
        with trio.fail_after(30):
            while (await leaders(cluster, "t")).get(range_id) != target:
                await trio.sleep(0.05)
        await cluster.sql("INSERT INTO t VALUES (1, 'after transfer')")


async def test_faults_are_refused_unless_allowed(tmp_path: Path) -> None:
    async with shard_cluster(tmp_path) as cluster:
        with pytest.raises(ClientError) as refused:
            await cluster.client.call(1, "fault", {"kind": "block", "peers": [2]})
        assert refused.value.code == "faults_disabled"


async def test_an_isolated_leader_loses_its_ranges_and_heals(tmp_path: Path) -> None:
    """Blocking every link of a node (both sides) is a partition: the others elect new leaders
    and keep serving; healing lets the isolated node catch up."""
    async with shard_cluster(tmp_path, allow_faults=True, leader_balance_s=0) as cluster:
        await cluster.sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v)")
        await cluster.sql("INSERT INTO t VALUES (1, 'before')")
        ((range_id, leader),) = (await leaders(cluster, "t")).items()
        others = [n for n in (1, 2, 3) if n != leader]
        await cluster.client.call(leader, "fault", {"kind": "block", "peers": others})
        for other in others:
            await cluster.client.call(other, "fault", {"kind": "block", "peers": [leader]})
        # The gateways' clients can still reach the isolated node's client port (only peer
        # links are cut): wait until CheckQuorum made it step down, or a write sent there
        # would wait, outcome unknown, until the partition heals. A range that had quiesced
        # before the cut keeps its leader asleep (no ticks, so no CheckQuorum) until a
        # request wakes it, as a client's would: poke it with a short read.
        with trio.fail_after(30):
            while (await leaders(cluster, "t", via=others[0])).get(range_id) in (None, leader):
                with contextlib.suppress(ClientError):
                    await cluster.sql("SELECT count(*) FROM t", node=leader, timeout_ms=300)
                await trio.sleep(0.05)
        await cluster.sql("INSERT INTO t VALUES (2, 'during')", node=others[0])
        got = await cluster.sql("SELECT count(*) FROM t", node=others[1])
        assert got["rows"] == [[2]]
        for node in (1, 2, 3):
            await cluster.client.call(node, "fault", {"kind": "heal"})
        with trio.fail_after(30):
            while True:
                local = await cluster.sql(
                    "SELECT count(*) FROM t", node=leader, consistency="stale"
                )
                if local["rows"] == [[2]]:
                    break
                await trio.sleep(0.05)
        jumped = await cluster.client.call(1, "fault", {"kind": "clock_jump", "jump_ms": 300})
        assert jumped["faults"]["blocked"] == []


async def test_a_node_with_a_client_token_refuses_hellos_without_it(tmp_path: Path) -> None:
    """Optional token authentication: with a token configured, a client must present it;
    a missing or wrong one gets a clear error and the connection is closed. Gateways use the
    same token to reach the other nodes."""
    import shardb

    async with shard_cluster(tmp_path, client_token="s3cret") as cluster:
        await cluster.sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v)", node=2)
        await cluster.sql("INSERT INTO t VALUES (1, 'x')", node=3)
        host, port = cluster.addresses[1]
        address = f"{host}:{port}"

        def attempt(token: str | None) -> str:
            try:
                with shardb.connect(address, token=token, timeout=5) as conn:
                    rows = conn.cursor().execute("SELECT v FROM t").fetchall()
                    return f"rows {rows}"
            except shardb.Error as exc:
                return str(exc)

        assert await trio.to_thread.run_sync(attempt, "s3cret") == "rows [('x',)]"
        for bad in (None, "guess"):
            message = await trio.to_thread.run_sync(attempt, bad)
            assert "authentication failed" in message, message


async def test_a_silent_node_is_marked_down_and_alive_again_when_heard(tmp_path: Path) -> None:
    """The meta leader records liveness: a node unheard for node_down_after_s shows as down
    in shardb_nodes, and alive again once its links heal."""
    async with shard_cluster(tmp_path, allow_faults=True, node_down_after_s=1.0) as cluster:
        await cluster.client.call(3, "fault", {"kind": "block", "peers": [1, 2]})
        for node in (1, 2):
            await cluster.client.call(node, "fault", {"kind": "block", "peers": [3]})

        async def alive(node: int) -> int:
            rows = await cluster.sql("SELECT node_id, alive FROM shardb_nodes", node=1)
            return dict(map(tuple, rows["rows"]))[node]  # type: ignore[no-any-return]

        with trio.fail_after(30):
            while await alive(3) != 0:
                await trio.sleep(0.1)
        for node in (1, 2, 3):
            await cluster.client.call(node, "fault", {"kind": "heal"})
        with trio.fail_after(30):
            while await alive(3) != 1:
                await trio.sleep(0.1)


async def test_a_stale_read_with_a_bound_leaves_a_cut_off_replica_for_the_leader(
    tmp_path: Path,
) -> None:
    """``stale`` reads come from the gateway's own replica; with ``max_staleness_ms`` only
    while that replica can promise it (it hears from its leader and has applied what it
    knows is committed). A replica cut off from its leader still answers unbounded stale
    reads with its old value, but a bounded one goes to the leader."""
    async with shard_cluster(tmp_path, allow_faults=True, leader_balance_s=0) as cluster:
        await cluster.sql("CREATE TABLE s (k INTEGER PRIMARY KEY, v TEXT)")
        await cluster.sql("INSERT INTO s VALUES (1, 'old')")
        ((_range_id, leader),) = (await leaders(cluster, "s")).items()
        reader = next(n for n in (1, 2, 3) if n != leader)
        with trio.fail_after(30):  # the reader's replica has the row
            while (await cluster.sql("SELECT v FROM s", node=reader, consistency="stale"))[
                "rows"
            ] != [["old"]]:
                await trio.sleep(0.05)
        others = [n for n in (1, 2, 3) if n != reader]
        await cluster.client.call(reader, "fault", {"kind": "block", "peers": others})
        for other in others:
            await cluster.client.call(other, "fault", {"kind": "block", "peers": [reader]})
        await cluster.sql("UPDATE s SET v = 'new' WHERE k = 1", node=leader)
        with trio.fail_after(30):  # until the reader suspects its leader's node
            while True:
                bounded = await cluster.sql(
                    "SELECT v FROM s", node=reader, consistency="stale", max_staleness_ms=5000
                )
                if bounded["rows"] == [["new"]]:
                    break
                await trio.sleep(0.05)
        unbounded = await cluster.sql("SELECT v FROM s", node=reader, consistency="stale")
        assert unbounded["rows"] == [["old"]]
