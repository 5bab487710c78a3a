"""In-process clusters of real nodes (real SQLite files, real loop) on a ``MemoryNetwork``."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from consensus.api import NotLeader, ProposalDropped, Role
from consensus.codec import DEFAULT_REGISTRY, register_default_bodies
from consensus.runtime import Node, NodeConfig, OutcomeUnknown, ProposalLost, open_node
from consensus.runtime.statemachine import decode_result, encode_get, encode_put
from consensus.transport import MemoryNetwork
from consensus.types import GroupId, NodeId

CLUSTER = "test-cluster"


async def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float = 30.0, what: str = ""
) -> None:
    """Poll ``predicate`` every 5 ms until it holds; fail after ``timeout_s``."""
    with trio.move_on_after(timeout_s) as scope:
        while not predicate():
            await trio.sleep(0.005)
    if scope.cancelled_caught:
        raise AssertionError(f"condition not met within {timeout_s} s: {what or predicate}")


class MemoryCluster:
    def __init__(
        self,
        tmp_path: Path,
        nursery: trio.Nursery,
        network: MemoryNetwork | None,
        **overrides: Any,
    ) -> None:
        self.tmp_path = tmp_path
        self.nursery = nursery
        self.network = network
        self.overrides = overrides
        self.nodes: dict[int, Node] = {}
        self._stops: dict[int, tuple[trio.Event, trio.Event]] = {}

    def config(self, node_id: int) -> NodeConfig:
        base = NodeConfig(
            node_id=NodeId(node_id),
            cluster_id=CLUSTER,
            data_dir=self.tmp_path / f"node{node_id}",
            seed=node_id,
            # 0.5-1 s election timeouts: three nodes share one process (and CI shares two
            # cores with other suites), so 10 ms ticks are late often enough to churn.
            election_timeout_ticks=50,
        )
        return replace(base, **self.overrides)

    def isolate(self, node_id: int) -> None:
        """Cut every link between ``node_id`` and the other nodes (both directions)."""
        others = [NodeId(n) for n in sorted(self._stops) if n != node_id]
        assert self.network is not None, "isolate() needs a memory network"
        self.network.partition([NodeId(node_id)], others)

    async def start(self, node_id: int, **overrides: Any) -> Node:
        stop, stopped = trio.Event(), trio.Event()
        config = replace(self.config(node_id), **overrides)

        await self._run_node(node_id, config, stop, stopped, network=self.network)
        return self.nodes[node_id]

    async def _run_node(
        self,
        node_id: int,
        config: NodeConfig,
        stop: trio.Event,
        stopped: trio.Event,
        *,
        network: MemoryNetwork | None = None,
    ) -> None:
        """Run one node in the cluster's nursery until ``stop``; ``stopped`` is set after."""

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                async with open_node(config, network=network) as node:
                    self.nodes[node_id] = node
                    task_status.started()
                    await stop.wait()
            finally:
                self.nodes.pop(node_id, None)
                stopped.set()

        self._stops[node_id] = (stop, stopped)
        await self.nursery.start(run)

    async def stop(self, node_id: int) -> None:
        stop, stopped = self._stops.pop(node_id)
        stop.set()
        await stopped.wait()

    async def create_group(
        self, group: int, backend: str, voters: tuple[int, ...] = (1, 2, 3)
    ) -> None:
        for node_id in voters:
            if node_id in self.nodes:
                await self.nodes[node_id].create_group(GroupId(group), backend, list(voters))

    def leader(self, group: int) -> Node | None:
        """The running node that leads ``group`` in the highest term, if any."""
        best: tuple[int, Node] | None = None
        for node in self.nodes.values():
            if GroupId(group) not in node.group_ids():
                continue
            st = node.status(GroupId(group))
            if st.role is Role.LEADER and (best is None or st.term > best[0]):
                best = (int(st.term), node)
        return None if best is None else best[1]

    async def wait_leader(self, group: int, *, timeout_s: float = 30.0) -> Node:
        await wait_until(
            lambda: self.leader(group) is not None,
            timeout_s=timeout_s,
            what=f"a leader for group {group}",
        )
        leader = self.leader(group)
        assert leader is not None
        return leader

    async def put(self, group: int, key: bytes, value: bytes, *, timeout_s: float = 30.0) -> None:
        """Write through whoever leads; the state machine's result must be a plain ok."""
        with trio.fail_after(timeout_s):
            while True:
                leader = await self.wait_leader(group)
                try:
                    raw = await leader.propose(GroupId(group), encode_put(key, value), timeout=5.0)
                except (NotLeader, ProposalDropped, OutcomeUnknown, ProposalLost):
                    # A put of a fixed value is idempotent, so even an unknown outcome (a
                    # leader change under a loaded CI machine) may be retried.
                    await trio.sleep(0.01)
                    continue
                assert raw is not None and decode_result(raw) == {"ok": True}
                return

    async def get(self, group: int, key: bytes) -> bytes | None:
        with trio.fail_after(30):
            while True:
                leader = await self.wait_leader(group)
                try:
                    raw = await leader.read(GroupId(group), encode_get(key), timeout=5.0)
                except NotLeader:
                    await trio.sleep(0.01)
                    continue
                value = decode_result(raw)["value"]
                assert value is None or isinstance(value, bytes)
                return value


@asynccontextmanager
async def memory_cluster(
    tmp_path: Path, *, nodes: tuple[int, ...] = (1, 2, 3), seed: int = 7, **overrides: Any
) -> AsyncIterator[MemoryCluster]:
    register_default_bodies()
    network = MemoryNetwork(rng=random.Random(seed), registry=DEFAULT_REGISTRY)
    async with trio.open_nursery() as nursery:
        cluster = MemoryCluster(tmp_path, nursery, network, **overrides)
        for node_id in nodes:
            await cluster.start(node_id)
        try:
            yield cluster
        finally:
            for node_id in sorted(cluster._stops):
                await cluster.stop(node_id)


class TcpCluster(MemoryCluster):
    """Nodes on real TCP on 127.0.0.1. A node's first start binds a free port, and every
    running node learns it through ``Node.add_peer`` (the dynamic address book a joining
    node needs); a restart binds the same port again and is given the others' addresses."""

    def __init__(self, tmp_path: Path, nursery: trio.Nursery, **overrides: Any) -> None:
        super().__init__(tmp_path, nursery, None, **overrides)
        self.addresses: dict[int, tuple[str, int]] = {}

    async def start(self, node_id: int, **overrides: Any) -> Node:
        stop, stopped = trio.Event(), trio.Event()
        host, port = self.addresses.get(node_id, ("127.0.0.1", 0))
        peers = {NodeId(n): a for n, a in self.addresses.items() if n != node_id}
        config = replace(
            self.config(node_id), listen_host=host, listen_port=port, peers=peers, **overrides
        )

        await self._run_node(node_id, config, stop, stopped)
        node = self.nodes[node_id]
        address = node.listen_address
        assert address is not None
        self.addresses[node_id] = address
        for other_id, other in sorted(self.nodes.items()):
            if other_id != node_id:
                other.add_peer(node_id, *address)
        return node


@asynccontextmanager
async def tcp_cluster(
    tmp_path: Path, *, nodes: tuple[int, ...] = (1, 2, 3), **overrides: Any
) -> AsyncIterator[TcpCluster]:
    register_default_bodies()
    async with trio.open_nursery() as nursery:
        cluster = TcpCluster(tmp_path, nursery, **overrides)
        for node_id in nodes:
            await cluster.start(node_id)
        try:
            yield cluster
        finally:
            for node_id in sorted(cluster._stops):
                await cluster.stop(node_id)
