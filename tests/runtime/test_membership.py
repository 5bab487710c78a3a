"""The runtime's membership API over real TCP: seeded groups, joining replicas, membership
changes, removing a replica, and the client protocol ops for them (Raft §6 / thesis §4;
Multi-Paxos reconfiguration through CONFIG slots, Paxos Made Simple §3).

Every wait is a condition polled under a generous deadline (see ``tests/runtime/test_node``
for why these tests run on trio's real clock).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from consensus.api import ChangeKind, ChangeOp, MembershipChange, NotLeader, ProposalDropped
from consensus.host import UnknownGroup
from consensus.runtime import (
    SEED_INDEX,
    ClientError,
    GroupConflict,
    GroupRemoved,
    KVStateMachine,
    Node,
    open_client,
    open_client_server,
)
from consensus.runtime import protocol as p
from consensus.runtime.statemachine import encode_put
from consensus.types import ConfState, GroupId, Index, NodeId

from .helpers import TcpCluster, tcp_cluster, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.parametrize("backend", ["raft", "paxos"])]

G = GroupId(7)
SEED_ROWS = [(b"seed-%02d" % i, b"inherited-%02d" % i) for i in range(20)]


def change(kind: ChangeKind, node: int) -> MembershipChange:
    return MembershipChange(ops=(ChangeOp(kind=kind, node=NodeId(node)),))


def kv(node: Node) -> KVStateMachine:
    sm = node.state_machine
    assert isinstance(sm, KVStateMachine)
    return sm


async def seed(cluster: TcpCluster, backend: str, voters: tuple[int, ...] = (1, 2, 3)) -> None:
    """Each voter's state machine holds the inherited rows at SEED_INDEX (as the right half
    of a split would), then the group starts from a snapshot of them."""
    for node_id in voters:
        node = cluster.nodes[node_id]
        await node.call_state_machine(kv(node).seed_group, G, SEED_INDEX, SEED_ROWS)
        assert await node.create_group(G, backend, list(voters), seeded=True) is True


def caught_up(leader: Node, node: Node) -> bool:
    """The leader's match index for ``node`` reached its commit, and ``node`` applied it."""
    if G not in node.group_ids():
        return False
    st = leader.status(G)
    match = dict(st.progress).get(node.node_id, Index(0))
    return match >= st.commit and node.status(G).applied >= st.commit


async def change_on_leader(cluster: TcpCluster, ch: MembershipChange) -> ConfState:
    """``change_membership`` on whoever leads, retried while leadership moves (nothing was
    proposed on NotLeader/ProposalDropped)."""
    with trio.fail_after(60):
        while True:
            leader = await cluster.wait_leader(int(G))
            try:
                return await leader.change_membership(G, ch, timeout=10.0)
            except (NotLeader, ProposalDropped):
                await trio.sleep(0.05)


class Writer:
    """Writes keys one after another through whoever leads until stopped, so the test can
    check the group kept committing while its membership changed."""

    def __init__(self, cluster: TcpCluster) -> None:
        self.cluster = cluster
        self.written: list[bytes] = []
        self.stopped = False

    async def run(self) -> None:
        i = 0
        while not self.stopped:
            key = b"live-%04d" % i
            await self.cluster.put(int(G), key, b"v%d" % i, timeout_s=60.0)
            self.written.append(key)
            i += 1
            await trio.sleep(0.01)

    async def wait_for_more(self, count: int = 3) -> None:
        target = len(self.written) + count
        await wait_until(lambda: len(self.written) >= target, what="writes keep committing")


async def test_a_joined_replica_gets_the_data_by_snapshot_and_replaces_a_voter(
    tmp_path: Path, backend: str
) -> None:
    """The full replica move: a seeded group commits; node 4 joins with an empty
    configuration, is added as a learner and receives the group by snapshot (its log
    starts after SEED_INDEX, so the inherited rows can only come that way), is promoted to
    voter, an old voter is removed and drops its replica; the group commits throughout,
    and a restart of node 4 re-hosts it with the membership it learned (Raft thesis
    §4.2.1 learners catching up; §4.2.2 removal)."""
    async with tcp_cluster(tmp_path, nodes=(1, 2, 3, 4)) as cluster:
        await seed(cluster, backend)
        writer = Writer(cluster)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await writer.wait_for_more()

            node4 = cluster.nodes[4]
            assert await node4.join_group(G, backend) is True
            assert await node4.join_group(G, backend) is False  # idempotent
            assert node4.status(G).voters == ()
            conf = await change_on_leader(cluster, change(ChangeKind.ADD_LEARNER, 4))
            assert conf.learners == (4,) and conf.voters == (1, 2, 3)
            await writer.wait_for_more()

            def learner_caught_up() -> bool:
                leader = cluster.leader(int(G))
                return leader is not None and caught_up(leader, node4)

            await wait_until(learner_caught_up, what="learner 4 caught up")
            assert node4.statistics().snapshots_restored >= 1
            assert node4.status(G).learners == (4,)
            assert all(kv(node4).get(G, k) == v for k, v in SEED_ROWS)

            conf = await change_on_leader(cluster, change(ChangeKind.ADD_VOTER, 4))
            assert conf.voters == (1, 2, 3, 4) and conf.learners == ()
            await writer.wait_for_more()

            leader = await cluster.wait_leader(int(G))
            gone = next(n for n in (1, 2, 3) if n != int(leader.node_id))
            conf = await change_on_leader(cluster, change(ChangeKind.REMOVE, gone))
            assert gone not in conf.all_nodes() and 4 in conf.voters
            await writer.wait_for_more()
            writer.stopped = True

        removed = cluster.nodes[gone]
        assert await removed.remove_group(G) is True
        assert await removed.remove_group(G) is False  # idempotent
        assert G not in removed.group_ids()
        with pytest.raises(UnknownGroup):
            removed.status(G)
        assert kv(removed).applied_index(G) == 0 and kv(removed).items(G) == []

        members = [n for n in (1, 2, 3, 4) if n != gone]

        def converged() -> bool:
            states = [kv(cluster.nodes[n]).items(G) for n in members]
            return all(s == states[0] for s in states)

        await wait_until(converged, what="remaining replicas converge")
        items = dict(kv(node4).items(G))
        assert all(items[k] == v for k, v in SEED_ROWS)
        assert all(key in items for key in writer.written)

        await cluster.stop(gone)
        restarted = await cluster.start(gone)
        assert G not in restarted.group_ids()  # remove_group deleted it from the log store

        await cluster.stop(4)
        node4 = await cluster.start(4)
        st = node4.status(G)
        assert st.voters == tuple(NodeId(n) for n in members)
        assert dict(kv(node4).items(G)) == items
        await cluster.put(int(G), b"after-restart", b"yes")
        await wait_until(
            lambda: kv(node4).get(G, b"after-restart") == b"yes", what="node 4 applies again"
        )


async def test_change_membership_on_a_follower_raises_not_leader_with_a_hint(
    tmp_path: Path, backend: str
) -> None:
    """Membership changes go through the leader's log (Raft §6): a follower refuses with
    the leader it knows, and the leader refuses a change that alters nothing."""
    async with tcp_cluster(tmp_path) as cluster:
        await seed(cluster, backend)
        leader = await cluster.wait_leader(int(G))
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        await wait_until(lambda: follower.status(G).leader == leader.node_id)
        with pytest.raises(NotLeader) as info:
            await follower.change_membership(G, change(ChangeKind.ADD_LEARNER, 4))
        assert info.value.leader_hint == leader.node_id
        with pytest.raises(ProposalDropped):
            await leader.change_membership(G, change(ChangeKind.ADD_VOTER, 2))
        with pytest.raises(UnknownGroup):
            await leader.change_membership(GroupId(99), change(ChangeKind.ADD_LEARNER, 4))
        st = follower.status(G)
        assert st.progress == ()  # only the leader tracks its peers
        assert {n for n, _ in leader.status(G).progress} == {
            n for n in (1, 2, 3) if n != leader.node_id
        }


async def test_membership_and_group_status_over_the_client_protocol(
    tmp_path: Path, backend: str
) -> None:
    """``change_membership`` follows leader hints like a write and answers with the new
    configuration; ``group_status`` answers from the node asked."""
    async with tcp_cluster(tmp_path, nodes=(1, 2, 3, 4)) as cluster:
        await seed(cluster, backend)
        assert await cluster.nodes[4].join_group(G, backend) is True
        leader = await cluster.wait_leader(int(G))
        follower = next(n for n in (1, 2, 3) if n != int(leader.node_id))
        async with trio.open_nursery() as nursery:
            addresses = {
                node_id: await nursery.start(serve, node) for node_id, node in cluster.nodes.items()
            }
            async with open_client(addresses, timeout_s=30.0) as client:
                client._leaders[int(G)] = follower  # start wrong: the hint must be followed
                result = await client.change_membership(int(G), [("add_learner", 4)])
                assert result == {"voters": [1, 2, 3], "learners": [4], "voters_outgoing": []}

                async def learner_matched() -> bool:
                    now = cluster.leader(int(G))
                    if now is None:
                        return False
                    st = await client.group_status(int(now.node_id), int(G))
                    match = int(dict(st["progress"]).get(4, 0))
                    return st["role"] == "leader" and match >= int(st["commit"])

                with trio.fail_after(30):
                    while not await learner_matched():
                        await trio.sleep(0.02)
                leader_status = await client.group_status(int(leader.node_id), int(G))
                assert leader_status["first_index"] > SEED_INDEX
                node4 = cluster.nodes[4]
                await wait_until(lambda: node4.status(G).applied >= leader_status["commit"])
                status = await client.group_status(4, int(G))
                assert status["role"] == "follower" and status["progress"] == []
                assert status["learners"] == [4] and status["voters"] == [1, 2, 3]
                assert status["applied"] >= leader_status["commit"]
                with pytest.raises(ClientError) as info:
                    # Refused as "dropped" (it changes nothing), retried until the deadline.
                    await client.change_membership(int(G), [("add_learner", 4)], timeout_s=1.0)
                assert info.value.code == "timeout" and p.DROPPED in info.value.message
                replies = await exchange(
                    addresses[int(leader.node_id)],
                    {
                        "id": 1,
                        "op": "change_membership",
                        "args": {"group": int(G), "changes": [["promote", 4]]},
                    },
                )
                assert replies[-1]["error"]["code"] == p.BAD_REQUEST
                assert "add_learner" in replies[-1]["error"]["message"]
                with pytest.raises(ClientError) as unknown:
                    await client.group_status(1, 99)
                assert unknown.value.code == p.UNKNOWN_GROUP
            nursery.cancel_scope.cancel()


async def exchange(address: tuple[str, int], request: dict[str, Any]) -> list[Any]:
    """Send a hello and ``request`` on a fresh connection; every reply until it closes."""
    replies: list[Any] = []
    unpacker = msgpack.Unpacker(raw=False)
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(p.pack(p.hello_request()) + p.pack(request))
        with trio.fail_after(10):
            while data := await stream.receive_some(65536):
                unpacker.feed(data)
                replies.extend(unpacker)
    return replies


async def serve(node: Node, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
    async with open_client_server(node) as address:
        task_status.started(address)
        await trio.sleep_forever()


async def test_a_seeded_group_comes_back_identically_after_a_restart(
    tmp_path: Path, backend: str
) -> None:
    """The seed snapshot and hard state are durable before the core starts: after every
    node restarts, the group elects, keeps its inherited rows and writes, still has no log
    at or below SEED_INDEX, and create_group is an idempotent no-op. Seeding a group whose
    state machine is not at SEED_INDEX is refused."""
    async with tcp_cluster(tmp_path) as cluster:
        with pytest.raises(ValueError, match="SEED_INDEX"):
            await cluster.nodes[1].create_group(G, backend, [1, 2, 3], seeded=True)
        await seed(cluster, backend)
        for node in cluster.nodes.values():
            st = node.status(G)
            assert st.first_index == SEED_INDEX + 1 and st.commit >= SEED_INDEX
        await cluster.put(int(G), b"k", b"before")
        for node_id in (1, 2, 3):
            await cluster.stop(node_id)
        for node_id in (1, 2, 3):
            await cluster.start(node_id)
        for node in cluster.nodes.values():
            assert node.status(G).first_index >= SEED_INDEX + 1
            assert await node.create_group(G, backend, [1, 2, 3], seeded=True) is False
            with pytest.raises(GroupConflict):
                await node.join_group(G, backend)
        await cluster.put(int(G), b"k2", b"after")
        assert await cluster.get(int(G), b"k") == b"before"

        def converged() -> bool:
            states = [kv(n).items(G) for n in cluster.nodes.values()]
            return all(s == states[0] for s in states) and len(states[0]) == len(SEED_ROWS) + 2

        await wait_until(converged, what="replicas converge after the restart")


async def test_remove_group_fails_the_requests_pending_on_the_replica(
    tmp_path: Path, backend: str
) -> None:
    """A proposal waiting on a leader cut off from its followers (it can never commit
    there) fails with ``GroupRemoved`` when the replica is removed, instead of waiting for
    its deadline; the node keeps serving its other groups."""
    async with tcp_cluster(tmp_path, allow_faults=True) as cluster:
        await seed(cluster, backend)
        await cluster.create_group(1, backend)
        leader = await cluster.wait_leader(int(G))
        assert leader.faults is not None
        leader.faults.block([n for n in (1, 2, 3) if n != leader.node_id])
        outcome: list[BaseException] = []

        async def propose() -> None:
            try:
                await leader.propose(G, encode_put(b"stuck", b"x"), timeout=60.0)
            except Exception as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(propose)
            await wait_until(lambda: leader.statistics().pending_requests >= 1)
            assert await leader.remove_group(G) is True
            await wait_until(lambda: bool(outcome), what="the pending proposal failed")
        assert isinstance(outcome[0], GroupRemoved)
        leader.faults.heal()
        await cluster.put(1, b"other", b"group")
