"""In-process shardb clusters: real node loops, real SQLite files, real TCP on 127.0.0.1 (three
nodes share one trio run), driven through the nodes' client ports like any client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from consensus.runtime import NodeConfig
from consensus.runtime.client import Client, ClientError, open_client
from consensus.runtime.localhost import free_ports
from consensus.types import NodeId
from shardb.server.gateway import GatewayConfig
from shardb.server.service import ShardNode, ShardNodeConfig, open_shard_node

CLUSTER = "shard-test"


@dataclass
class ShardCluster:
    nodes: dict[int, ShardNode]
    client: Client
    addresses: dict[int, tuple[str, int]]

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
) -> AsyncIterator[ShardCluster]:
    ports = free_ports(2 * n)
    peers = {NodeId(i): ("127.0.0.1", ports[i - 1]) for i in range(1, n + 1)}
    clients = {i: ("127.0.0.1", ports[n + i - 1]) for i in range(1, n + 1)}
    nodes: dict[int, ShardNode] = {}
    async with trio.open_nursery() as nursery:
        stops: list[trio.Event] = []
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
            )
            stop = trio.Event()
            stops.append(stop)

            async def run(
                config: ShardNodeConfig = config,
                stop: trio.Event = stop,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                async with open_shard_node(config) as shard:
                    nodes[int(shard.node_id)] = shard
                    task_status.started()
                    await stop.wait()

            await nursery.start(run)
        with trio.fail_after(60):
            for shard in nodes.values():
                await shard.joined.wait()
        async with open_client(clients, timeout_s=30.0, token=client_token) as client:
            try:
                yield ShardCluster(nodes=nodes, client=client, addresses=clients)
            finally:
                for stop in stops:
                    stop.set()
