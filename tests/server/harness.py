"""In-process shardb clusters: real node loops, real SQLite files, real TCP on 127.0.0.1 (three
nodes share one trio run), driven through the nodes' client ports like any client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from consensus.runtime import NodeConfig
from consensus.runtime.client import Client, ClientError, open_client
from consensus.runtime.localhost import free_ports
from consensus.types import NodeId
from shardb.server.gateway import GatewayConfig
from shardb.server.placer import PlacerConfig
from shardb.server.service import ShardNode, ShardNodeConfig, open_shard_node

CLUSTER = "shard-test"


@dataclass
class ShardCluster:
    nodes: dict[int, ShardNode]
    client: Client
    addresses: dict[int, tuple[str, int]]
    nursery: trio.Nursery | None = None
    stops: dict[int, trio.Event] = field(default_factory=dict)
    stopped: dict[int, trio.Event] = field(default_factory=dict)
    template: ShardNodeConfig | None = None
    tmp_path: Path | None = None

    async def stop_node(self, node_id: int) -> None:
        """Stop one node (its tasks end, files close; its data directory stays)."""
        self.stops[node_id].set()
        with trio.fail_after(30):
            await self.stopped[node_id].wait()
        del self.nodes[node_id]

    async def add_node(self) -> ShardNode:
        """Start a new node that joins the running cluster the way ``--join`` does: a node
        id reserved by the meta group, the addresses of the others from the ``join`` op."""
        assert self.nursery is not None and self.template is not None and self.tmp_path
        reply = await self.client.call(min(self.nodes), "join", {})
        node_id = int(reply["node_id"])
        peer_port, client_port = free_ports(2)
        peers = {NodeId(int(k)): _address(v) for k, v in reply["peers"].items()}
        clients = {int(k): _address(v) for k, v in reply["clients"].items()}
        config = replace(
            self.template,
            node=replace(
                self.template.node,
                node_id=NodeId(node_id),
                data_dir=self.tmp_path / f"node{node_id}",
                listen_port=peer_port,
                peers=peers,
                seed=node_id,
            ),
            client_port=client_port,
            initial_nodes=(),
            peer_clients=clients,
        )
        shard = await start_node(self, config)
        self.addresses[node_id] = ("127.0.0.1", client_port)
        self.client.set_addresses(self.addresses)
        with trio.fail_after(60):
            await shard.joined.wait()
        return shard

    async def sql(
        self, text: str, params: list[Any] | None = None, *, node: int = 1, **args: Any
    ) -> dict[str, Any]:
        return await self.client.call(
            node,
            "sql",
            {"sql": text, "params": params or [], "timeout_ms": 60_000, **args},
            deadline=trio.current_time() + 70.0,
        )

    async def error(
        self, text: str, params: list[Any] | None = None, *, node: int = 1
    ) -> ClientError:
        try:
            await self.sql(text, params, node=node)
        except ClientError as exc:
            return exc
        raise AssertionError(f"{text!r} did not fail")


@asynccontextmanager
async def shard_cluster(
    tmp_path: Path,
    n: int = 3,
    *,
    backend: str = "raft",
    split_rows: int = 0,
    allow_faults: bool = False,
    leader_balance_s: float = 2.0,
    client_token: str | None = None,
    node_down_after_s: float = 10.0,
    split_writes_per_s: float = 0.0,
    placer: PlacerConfig | None = None,
) -> AsyncIterator[ShardCluster]:
    ports = free_ports(2 * n)
    peers = {NodeId(i): ("127.0.0.1", ports[i - 1]) for i in range(1, n + 1)}
    clients = {i: ("127.0.0.1", ports[n + i - 1]) for i in range(1, n + 1)}
    nodes: dict[int, ShardNode] = {}
    configs: list[ShardNodeConfig] = []
    async with trio.open_nursery() as nursery:
        for i in range(1, n + 1):
            config = ShardNodeConfig(
                node=NodeConfig(
                    node_id=NodeId(i),
                    cluster_id=CLUSTER,
                    data_dir=tmp_path / f"node{i}",
                    listen_port=peers[NodeId(i)][1],
                    peers={p: a for p, a in peers.items() if p != i},
                    seed=i,
                    election_timeout_ticks=50,
                    allow_faults=allow_faults,
                ),
                client_port=clients[i][1],
                initial_nodes=tuple(range(1, n + 1)),
                peer_clients={p: a for p, a in clients.items() if p != i},
                gateway=GatewayConfig(default_backend=backend),
                split_rows=split_rows,
                split_check_s=0.5,
                leader_balance_s=leader_balance_s,
                client_token=client_token,
                node_down_after_s=node_down_after_s,
                split_writes_per_s=split_writes_per_s,
                # Off unless a test asks: most tests want a placement that stays put.
                placer=placer or PlacerConfig(interval_s=0),
                remove_grace_s=0.5,
            )
            configs.append(config)
        cluster = ShardCluster(
            nodes=nodes,
            client=None,  # type: ignore[arg-type]  # set below, once the nodes run
            addresses=clients,
            nursery=nursery,
            template=configs[0],
            tmp_path=tmp_path,
        )
        for config in configs:
            await start_node(cluster, config)
        with trio.fail_after(60):
            for shard in nodes.values():
                await shard.joined.wait()
        async with open_client(dict(clients), timeout_s=30.0, token=client_token) as client:
            cluster.client = client
            try:
                yield cluster
            finally:
                for stop in cluster.stops.values():
                    stop.set()


async def start_node(cluster: ShardCluster, config: ShardNodeConfig) -> ShardNode:
    assert cluster.nursery is not None
    node_id = int(config.node.node_id)
    stop, stopped = trio.Event(), trio.Event()
    cluster.stops[node_id] = stop
    cluster.stopped[node_id] = stopped

    async def run(task_status: trio.TaskStatus[ShardNode] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_shard_node(config) as shard:
                cluster.nodes[node_id] = shard
                task_status.started(shard)
                await stop.wait()
        finally:
            stopped.set()

    shard: ShardNode = await cluster.nursery.start(run)
    return shard


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)
