"""Real node processes on 127.0.0.1, started, killed and restarted by the tests.

Every test owns its processes through the ``procs`` fixture, whose finalizer kills any child
still running, whatever the outcome. Waits are conditions under generous deadlines.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
import trio
from support.procs import ProcCluster, free_ports

from consensus.runtime import Client, ClientError, open_client

pytestmark = pytest.mark.timeout(120)

ELECTION_BOUND_S = 5.0
"""Generous bound on "leader killed -> new leader": the expected value is node_dead (200 ms)
+ election timeout (200-400 ms) + pre-vote and vote round trips, see consensus.runtime.node."""


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[ProcCluster]]:
    clusters: list[ProcCluster] = []
    yield clusters
    for cluster in clusters:
        cluster.kill_all()


def new_cluster(
    procs: list[ProcCluster], tmp_path: Path, nodes: tuple[int, ...], *args: str
) -> ProcCluster:
    cluster = ProcCluster(tmp_path, nodes, *args)
    procs.append(cluster)
    return cluster


async def leader_of(client: Client, nodes: list[int], group: int) -> int | None:
    """The node that says it leads ``group`` in the highest term, asking only ``nodes``."""
    best: tuple[int, int] | None = None
    for node in nodes:
        try:
            status = await client.status(node)
        except ClientError:
            continue
        for g in status["groups"]:
            leads = g["group"] == group and g["role"] == "leader"
            if leads and (best is None or g["term"] > best[0]):
                best = (g["term"], node)
    return None if best is None else best[1]


async def wait_leader(client: Client, nodes: list[int], group: int, timeout_s: float) -> int:
    with trio.fail_after(timeout_s):
        while (leader := await leader_of(client, nodes, group)) is None:
            await trio.sleep(0.02)
    return leader


async def wait_applied(client: Client, node: int, group: int, index: int) -> None:
    with trio.fail_after(60):
        while True:
            status = await client.status(node)
            applied = {g["group"]: g["applied"] for g in status["groups"]}
            if applied.get(group, 0) >= index:
                return
            await trio.sleep(0.05)


async def test_cluster_elects_commits_and_replays_after_a_full_restart(
    tmp_path: Path, procs: list[ProcCluster]
) -> None:
    """Several groups of both backends elect and commit; after SIGTERM (exit 0) and restart,
    every node replays its log and every write is there (Raft Figure 2, persistent state)."""
    cluster = new_cluster(procs, tmp_path, (1, 2, 3))
    await cluster.start_all()
    groups = {1: "raft", 2: "paxos", 3: "raft", 4: "paxos"}
    async with open_client(cluster.addresses) as client:
        for group, backend in groups.items():
            await client.create_group(group, backend, [1, 2, 3])
        for group in groups:
            for i in range(10):
                await client.put(group, f"k{i}", f"g{group}v{i}")
        for group in groups:
            assert await wait_leader(client, [1, 2, 3], group, 10) in (1, 2, 3)
    for node in (1, 2, 3):
        assert await cluster.terminate(node) == 0
    assert "shutdown_requested" in cluster.log_text(1)
    await cluster.start_all()
    async with open_client(cluster.addresses) as client:
        for group in groups:
            for i in range(10):
                assert await client.get(group, f"k{i}") == f"g{group}v{i}".encode()
        status = await client.status(2)
        assert [g["backend"] for g in status["groups"]] == [groups[g] for g in sorted(groups)]


async def test_kill9_of_a_leader_elects_another_and_loses_no_acknowledged_write(
    tmp_path: Path, procs: list[ProcCluster]
) -> None:
    """Raft §5.2 / §5.4 (and the Paxos equivalent): after a leader crash a new leader is
    elected within the bound, and every write acknowledged before or after the crash is
    still there once the old leader is back."""
    cluster = new_cluster(procs, tmp_path, (1, 2, 3))
    await cluster.start_all()
    acknowledged: dict[tuple[int, str], str] = {}
    async with open_client(cluster.addresses, timeout_s=15) as client:
        await client.create_group(1, "raft", [1, 2, 3])
        await client.create_group(2, "paxos", [1, 2, 3])
        leader = await wait_leader(client, [1, 2, 3], 1, 10)
        await client.put(1, "warm", "up")
        stop = trio.Event()

        async def writer(group: int, worker: int) -> None:
            seq = 0
            while not stop.is_set():
                key, value = f"w{worker}-{seq}", f"{seq}"
                try:
                    await client.put(group, key, value)
                except ClientError:
                    continue  # unknown outcome: not acknowledged, never checked
                acknowledged[(group, key)] = value
                seq += 1

        async with trio.open_nursery() as nursery:
            for worker in range(4):
                nursery.start_soon(writer, 1 + worker % 2, worker)
            with trio.fail_after(30):
                while len(acknowledged) < 40:
                    await trio.sleep(0.02)
            cluster.kill9(leader)
            killed_at = time.monotonic()
            survivors = [n for n in (1, 2, 3) if n != leader]
            await wait_leader(client, survivors, 1, ELECTION_BOUND_S)
            elected_after = time.monotonic() - killed_at
            count = len(acknowledged)
            with trio.fail_after(30):
                while len(acknowledged) < count + 40:
                    await trio.sleep(0.02)
            stop.set()
        assert elected_after < ELECTION_BOUND_S
        cluster.start(leader)
        await cluster.wait_serving(leader)
        for (group, key), value in sorted(acknowledged.items()):
            assert await client.get(group, key) == value.encode(), (group, key)
        # The restarted node replays its log and catches up with the others.
        new_leader = await wait_leader(client, [1, 2, 3], 1, 10)
        target = next(
            g["commit"] for g in (await client.status(new_leader))["groups"] if g["group"] == 1
        )
        await wait_applied(client, leader, 1, target)


async def test_stopped_follower_catches_up_by_snapshot(
    tmp_path: Path, procs: list[ProcCluster]
) -> None:
    """A follower that was down while the leader compacted past its log gets a snapshot
    (Raft §7; Paxos catch-up by snapshot), then the rest of the log."""
    cluster = new_cluster(procs, tmp_path, (1, 2, 3), "--snapshot-every", "50")
    await cluster.start_all()
    async with open_client(cluster.addresses, timeout_s=15) as client:
        for group, backend in ((1, "raft"), (2, "paxos")):
            await client.create_group(group, backend, [1, 2, 3])
        leaders = {g: await wait_leader(client, [1, 2, 3], g, 10) for g in (1, 2)}
        follower = next(n for n in (1, 2, 3) if n not in leaders.values())
        assert await cluster.terminate(follower) == 0

        async def write(group: int, worker: int) -> None:
            for i in range(60):
                await client.put(group, f"k{worker}-{i % 20}", f"{i}")

        async with trio.open_nursery() as nursery:
            for worker in range(4):
                nursery.start_soon(write, 1 + worker % 2, worker)
        # Restart the survivors too: the TCP transport keeps messages queued for a peer
        # across a short outage, and those alone could bring the follower up to date.
        # Fresh queues leave only the compacted logs, so only a snapshot can help.
        survivors = [n for n in (1, 2, 3) if n != follower]
        for node in survivors:
            assert await cluster.terminate(node) == 0
        for node in [*survivors, follower]:
            cluster.start(node)
        for node in (1, 2, 3):
            await cluster.wait_serving(node)
        for group in (1, 2):
            leader = await wait_leader(client, [1, 2, 3], group, 10)
            status = await client.status(leader)
            commit = next(g["commit"] for g in status["groups"] if g["group"] == group)
            first = next(g["first_index"] for g in status["groups"] if g["group"] == group)
            assert first > 50, "the leader compacted its log"
            await wait_applied(client, follower, group, commit)
        stats = await client.stats(follower)
        assert stats["node"]["snapshots_restored"] >= 2


async def test_corrupt_log_record_is_reported_and_the_node_refuses_to_start(
    tmp_path: Path, procs: list[ProcCluster]
) -> None:
    """A record that fails its checksum is reported with its location (exit 2) and the node
    never serves on a damaged log."""
    cluster = new_cluster(procs, tmp_path, (1,))
    await cluster.start_all()
    async with open_client(cluster.addresses) as client:
        await client.create_group(1, "raft", [1])
        for i in range(10):
            await client.put(1, f"k{i}", "v")
    assert await cluster.terminate(1) == 0
    db = apsw.Connection(str(cluster.data_dir(1) / "log.db"))
    row = db.execute("SELECT max(idx) FROM log WHERE group_id = 1").fetchone()
    assert row is not None
    (index,) = row
    db.execute("UPDATE log SET data = X'deadbeef' WHERE group_id = 1 AND idx = ?", (index,))
    db.close()
    proc = cluster.start(1)
    assert await trio.to_thread.run_sync(lambda: proc.wait(timeout=60)) == 2
    log = cluster.log_text(1)
    assert '"event": "log_corrupt"' in log
    assert f'"index": {index}' in log and '"table": "log"' in log
    assert "node_ready" not in log.split("log_corrupt")[-1]


async def test_two_nodes_cannot_share_a_data_dir(tmp_path: Path, procs: list[ProcCluster]) -> None:
    """The PID file's flock refuses a second process at once and names the holder."""
    cluster = new_cluster(procs, tmp_path, (1,))
    await cluster.start_all()
    peer_port, client_port = free_ports(2)
    second = cluster.spawn(
        cluster.command(1, client_port=client_port, peer_port=peer_port), tmp_path / "second.log"
    )
    assert await trio.to_thread.run_sync(lambda: second.wait(timeout=60)) == 3
    text = (tmp_path / "second.log").read_text()
    assert "data_dir_in_use" in text and str(cluster.procs[1].pid) in text
    await cluster.wait_serving(1)  # the first node still serves
