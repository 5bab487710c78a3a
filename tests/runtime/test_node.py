"""The node loop with real storage and state machines, three nodes on a memory network.

These run on trio's real clock. The autojump ``MockClock`` counts a task blocked on a worker
thread as idle, so virtual time would race ahead of every fsync and apply (each one worth a
tick or more), which turns a healthy cluster into an election storm. Waits are therefore
conditions polled under generous deadlines (``wait_until``), never fixed sleeps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from consensus.api import NotLeader, ReadMode, Role
from consensus.host import UnknownGroup
from consensus.runtime import (
    GroupConflict,
    NodeFailed,
    Overloaded,
    ProposalLost,
    RequestTimeout,
)
from consensus.runtime.statemachine import decode_result, encode_get, encode_put
from consensus.types import GroupId

from .helpers import memory_cluster, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("backend", ["raft", "paxos"])
async def test_groups_elect_commit_and_every_replica_applies_the_same(
    tmp_path: Path, backend: str
) -> None:
    """Proposals resolve with the state machine's result once applied, and all replicas
    hold identical state (Raft §5.3 log matching / Paxos Made Simple §3)."""
    async with memory_cluster(tmp_path) as cluster:
        for group in (1, 2):
            await cluster.create_group(group, backend)
        for group in (1, 2):
            for i in range(20):
                await cluster.put(group, b"k%d" % i, b"g%d-%d" % (group, i))

        def converged() -> bool:
            states = [
                [n.state_machine.snapshot(GroupId(g)) for g in (1, 2)]
                for n in cluster.nodes.values()
            ]
            # The counters are updated when the apply thread returns, just after the state.
            applied = [n.statistics().entries_applied for n in cluster.nodes.values()]
            return all(s == states[0] for s in states) and min(applied) >= 40

        await wait_until(converged, what="replicas converge")
        for node in cluster.nodes.values():
            stats = node.statistics()
            assert stats.batches_persisted > 0 and stats.fsyncs > 0
        assert await cluster.get(2, b"k19") == b"g2-19"


async def test_follower_rejects_with_leader_hint(tmp_path: Path) -> None:
    async with memory_cluster(tmp_path) as cluster:
        await cluster.create_group(1, "raft")
        leader = await cluster.wait_leader(1)
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        await wait_until(lambda: follower.status(GroupId(1)).leader == leader.node_id)
        with pytest.raises(NotLeader) as info:
            await follower.propose(GroupId(1), encode_put(b"k", b"v"))
        assert info.value.leader_hint == leader.node_id
        with pytest.raises(NotLeader):
            await follower.read(GroupId(1), encode_get(b"k"))
        with pytest.raises(UnknownGroup):
            await leader.propose(GroupId(99), encode_put(b"k", b"v"))


@pytest.mark.parametrize("mode", [ReadMode.SAFE, ReadMode.LEASE])
async def test_read_after_acknowledged_write_sees_it(tmp_path: Path, mode: ReadMode) -> None:
    """ReadIndex / lease reads are linearizable: a read that starts after a write was
    acknowledged returns it (Raft thesis §6.4, §6.4.1)."""
    async with memory_cluster(tmp_path) as cluster:
        await cluster.create_group(1, "raft")
        await cluster.create_group(2, "paxos")
        for group in (1, 2):
            for i in range(5):
                await cluster.put(group, b"x", b"%d" % i)
                leader = await cluster.wait_leader(group)
                raw = await leader.read(GroupId(group), encode_get(b"x"), mode=mode, timeout=10)
                assert decode_result(raw) == {"ok": True, "value": b"%d" % i}


async def test_create_group_is_persistent_idempotent_and_checked(tmp_path: Path) -> None:
    async with memory_cluster(tmp_path, nodes=(1,)) as cluster:
        node = cluster.nodes[1]
        assert await node.create_group(GroupId(5), "paxos", [1]) is True
        assert await node.create_group(GroupId(5), "paxos", [1]) is False
        with pytest.raises(GroupConflict):
            await node.create_group(GroupId(5), "raft", [1])
        await cluster.put(5, b"a", b"1")
        await cluster.stop(1)
        node = await cluster.start(1)
        assert node.group_ids() == (GroupId(5),)
        assert node.status(GroupId(5)).backend.value == "paxos"
        assert await cluster.get(5, b"a") == b"1"


async def test_restart_replays_the_log_and_keeps_acknowledged_writes(tmp_path: Path) -> None:
    """Persist-before-send plus replay on start: every acknowledged write survives a full
    cluster restart (Raft Figure 2, persistent state)."""
    async with memory_cluster(tmp_path) as cluster:
        await cluster.create_group(1, "raft")
        await cluster.create_group(2, "paxos")
        for i in range(15):
            await cluster.put(1, b"r%d" % i, b"%d" % i)
            await cluster.put(2, b"p%d" % i, b"%d" % i)
        terms = {n: cluster.nodes[n].status(GroupId(1)).term for n in (1, 2, 3)}
        for node_id in (1, 2, 3):
            await cluster.stop(node_id)
        for node_id in (1, 2, 3):
            await cluster.start(node_id)
        for node_id in (1, 2, 3):
            assert cluster.nodes[node_id].status(GroupId(1)).term >= terms[node_id]
        for i in range(15):
            assert await cluster.get(1, b"r%d" % i) == b"%d" % i
            assert await cluster.get(2, b"p%d" % i) == b"%d" % i
        await cluster.put(1, b"after", b"restart")
        assert await cluster.get(1, b"after") == b"restart"


@pytest.mark.parametrize("backend", ["raft", "paxos"])
async def test_compaction_and_follower_catch_up_by_snapshot(tmp_path: Path, backend: str) -> None:
    """Logs are compacted every N applied entries (Raft §7); a follower that missed entries
    the leader no longer holds is caught up by a snapshot, then by the log."""
    async with memory_cluster(tmp_path, snapshot_interval_entries=10) as cluster:
        await cluster.create_group(1, backend)
        await cluster.put(1, b"first", b"0")
        leader = await cluster.wait_leader(1)
        lagging = next(n for n in (1, 2, 3) if n != int(leader.node_id))
        await cluster.stop(lagging)
        for i in range(40):
            await cluster.put(1, b"k%d" % (i % 7), b"%d" % i)
        leader = await cluster.wait_leader(1)
        assert leader.status(GroupId(1)).first_index > 10, "leader compacted its log"
        assert leader.statistics().snapshots_taken >= 3
        node = await cluster.start(lagging)
        target = leader.status(GroupId(1)).commit
        await wait_until(
            lambda: node.status(GroupId(1)).applied >= target, what="follower caught up"
        )
        assert node.statistics().snapshots_restored >= 1
        leader = await cluster.wait_leader(1)
        for g in (GroupId(1),):
            assert node.state_machine.snapshot(g) == leader.state_machine.snapshot(g)
        # The caught-up replica restarts from its snapshot plus log.
        await cluster.stop(lagging)
        node = await cluster.start(lagging)
        assert node.state_machine.applied_index(GroupId(1)) >= target


async def test_proposal_overwritten_by_a_new_leader_is_reported_lost(tmp_path: Path) -> None:
    """An entry an isolated leader appended is replaced by the new leader's log (Raft §5.3):
    its proposer learns it was lost once another entry applies at that index."""
    async with memory_cluster(tmp_path) as cluster:
        await cluster.create_group(1, "raft")
        await cluster.put(1, b"a", b"1")
        old = await cluster.wait_leader(1)
        others = [n for n in (1, 2, 3) if n != int(old.node_id)]
        cluster.isolate(old.node_id)
        outcome: list[BaseException | bytes | None] = []

        async def doomed() -> None:
            try:
                outcome.append(await old.propose(GroupId(1), encode_put(b"a", b"lost"), timeout=30))
            except Exception as exc:
                outcome.append(exc)

        cluster.nursery.start_soon(doomed)
        await wait_until(
            lambda: any(cluster.nodes[n].status(GroupId(1)).role is Role.LEADER for n in others),
            what="majority elects",
        )
        new = next(
            cluster.nodes[n]
            for n in others
            if cluster.nodes[n].status(GroupId(1)).role is Role.LEADER
        )
        for i in range(3):
            await new.propose(GroupId(1), encode_put(b"b", b"%d" % i), timeout=10)
        cluster.network.heal()
        await wait_until(lambda: bool(outcome), what="the doomed proposal resolves")
        assert isinstance(outcome[0], ProposalLost)
        assert await cluster.get(1, b"a") == b"1"


@pytest.mark.parametrize("backend", ["raft", "paxos"])
async def test_a_read_waiting_at_a_deposed_leader_fails_with_not_leader(
    tmp_path: Path, backend: str
) -> None:
    """A leader cut off from its quorum steps down (CheckQuorum, Raft thesis §6.2) and its
    pending ReadIndex can never pass: the caller hears NotLeader at once (and can go to the
    new leader) instead of waiting for its deadline."""
    async with memory_cluster(tmp_path) as cluster:
        await cluster.create_group(1, backend)
        await cluster.put(1, b"k", b"v")
        old = await cluster.wait_leader(1)
        cluster.isolate(old.node_id)
        with trio.fail_after(20), pytest.raises(NotLeader):
            await old.read(GroupId(1), encode_get(b"k"), mode=ReadMode.SAFE, timeout=60)


async def test_timeout_when_no_quorum(tmp_path: Path) -> None:
    async with memory_cluster(tmp_path) as cluster:
        await cluster.create_group(1, "paxos")
        leader = await cluster.wait_leader(1)
        cluster.isolate(leader.node_id)
        with pytest.raises(RequestTimeout):
            await leader.propose(GroupId(1), encode_put(b"k", b"v"), timeout=0.05)


async def test_bounded_request_queue_rejects_when_full(tmp_path: Path) -> None:
    async with memory_cluster(tmp_path, max_pending_requests=4) as cluster:
        await cluster.create_group(1, "raft")
        leader = await cluster.wait_leader(1)
        cluster.isolate(leader.node_id)
        rejected: list[Overloaded] = []

        async def one(i: int) -> None:
            try:
                await leader.propose(GroupId(1), encode_put(b"k", b"%d" % i), timeout=1)
            except Overloaded as exc:
                rejected.append(exc)
            except RequestTimeout:
                pass

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
        assert len(rejected) == 6
        assert "overloaded" in str(rejected[0])


async def test_storage_failure_stops_the_node_from_accepting_writes(tmp_path: Path) -> None:
    """After StorageFailed nothing is known to be durable: pending and later requests fail
    with NodeFailed and a clear reason."""
    async with memory_cluster(tmp_path, nodes=(1,), max_log_db_bytes=256 << 10) as cluster:
        node = cluster.nodes[1]
        await node.create_group(GroupId(1), "raft", [1])
        await cluster.wait_leader(1)
        big = b"x" * (32 << 10)
        with pytest.raises(NodeFailed, match="stopped accepting"):
            for i in range(100):
                await node.propose(GroupId(1), encode_put(b"k%d" % i, big), timeout=10)
        assert node.failure is not None and "StorageFailed" in node.failure
        assert node.statistics().failed
        with pytest.raises(NodeFailed):
            await node.propose(GroupId(1), encode_put(b"k", b"v"))
        with pytest.raises(NodeFailed):
            await node.read(GroupId(1), encode_get(b"k"))


async def test_term_changes_count_elections_in_node_statistics(tmp_path: Path) -> None:
    """``term_changes`` measures leader churn: every node counts the term it adopts for the
    first election, and the survivors count again when the leader is lost (Raft §5.2)."""
    async with memory_cluster(tmp_path) as cluster:
        await cluster.create_group(1, "raft")
        leader = await cluster.wait_leader(1)
        term = leader.status(GroupId(1)).term
        await wait_until(
            lambda: all(n.status(GroupId(1)).term == term for n in cluster.nodes.values()),
            what="every node in the first term",
        )
        await cluster.put(1, b"k", b"v")  # the term is persisted before the write commits
        assert all(n.statistics().term_changes >= 1 for n in cluster.nodes.values())
        before = {n: cluster.nodes[n].statistics().term_changes for n in cluster.nodes}
        await cluster.stop(leader.node_id)
        await cluster.wait_leader(1)
        await cluster.put(1, b"k", b"w")
        assert all(cluster.nodes[n].statistics().term_changes > before[n] for n in cluster.nodes)


async def test_a_dead_peer_neither_stops_commits_nor_spins_the_loop(tmp_path: Path) -> None:
    """Messages to a stopped node are dropped and reported unreachable; the reports reach
    the host once per tick, so a core that retransmits on them cannot spin the loop, and the
    leader keeps committing with the remaining majority."""
    async with memory_cluster(tmp_path) as cluster:
        await cluster.create_group(1, "raft")
        await cluster.create_group(2, "paxos")
        for group in (1, 2):
            await cluster.wait_leader(group)
        # A follower of group 1 (it may lead group 2, which then elects another leader).
        victim = next(n for n in (1, 2, 3) if cluster.nodes[n] is not cluster.leader(1))
        await cluster.stop(victim)
        for i in range(5):
            for group in (1, 2):
                await cluster.put(group, b"k", b"%d" % i)
        survivors = [cluster.nodes[n] for n in sorted(cluster.nodes)]
        before = [n.statistics() for n in survivors]
        # Idle time passes; the loop must stay quiet through it.
        await wait_until(lambda: survivors[0].statistics().ticks >= before[0].ticks + 40)
        for node, start in zip(survivors, before, strict=True):
            now = node.statistics()
            ticks = now.ticks - start.ticks
            assert ticks > 0
            assert now.loops - start.loops <= 4 * ticks + 10, "the loop spins on a dead peer"
