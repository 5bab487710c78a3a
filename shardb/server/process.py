"""``shardb node start``: one database node as an OS process.

The node serves SQL on its client port (any node is a gateway), hosts its replicas of the meta
group and of the ranges placed on it, and stops cleanly on SIGTERM/SIGINT. ``--kv`` runs the
bare consensus runtime with the key-value state machine instead (the runtime benchmark and
its tests use it).
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import structlog
import trio
import typer

from consensus.runtime.process import parse_address, parse_peers, run_node
from consensus.types import NodeId
from shardb.server.joining import JoinError, join_cluster

node_app = typer.Typer(help="Run a shardb node as a real process.", no_args_is_help=True)


@node_app.command("start")
def start(
    listen: Annotated[str, typer.Option(help="HOST:PORT for node-to-node traffic.")],
    client: Annotated[str, typer.Option(help="HOST:PORT for SQL clients and admin.")],
    data_dir: Annotated[Path, typer.Option(help="Directory for log.db, data.db, meta.db.")],
    node_id: Annotated[
        int | None,
        typer.Option(
            "--id", min=1, help="This node's id (with --join: assigned by the cluster if absent)."
        ),
    ] = None,
    cluster_id: Annotated[
        str | None,
        typer.Option(help="Cluster identity checked on every link (with --join: learned)."),
    ] = None,
    join: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT (client port) of a running node: join its cluster instead of "
            "bootstrapping one with --peers."
        ),
    ] = None,
    peers: Annotated[
        str, typer.Option(help="ID=HOST:PORT,... node-to-node address of every initial node.")
    ] = "",
    clients: Annotated[
        str, typer.Option(help="ID=HOST:PORT,... client address of every initial node.")
    ] = "",
    backend: Annotated[str, typer.Option(help="Default backend of new tables.")] = "raft",
    replication: Annotated[int, typer.Option(min=1, help="Replicas per range.")] = 3,
    split_rows: Annotated[
        int, typer.Option(min=0, help="Split a range past this many rows (0: never).")
    ] = 0,
    split_writes: Annotated[
        float,
        typer.Option(min=0, help="Split a range sustaining more writes/s than this (0: never)."),
    ] = 0.0,
    tick_ms: Annotated[int, typer.Option(min=1, help="Milliseconds per logical tick.")] = 10,
    election_ticks: Annotated[int, typer.Option(min=2, help="Election timeout in ticks.")] = 20,
    snapshot_every: Annotated[
        int, typer.Option(min=1, help="Compact a group's log every N applied entries.")
    ] = 10_000,
    allow_faults: Annotated[
        bool,
        typer.Option(
            "--allow-faults", help="Accept fault injection on the admin endpoint (tests, demos)."
        ),
    ] = False,
    rebalance_interval: Annotated[
        float,
        typer.Option(min=0, help="Seconds between placement rounds (0: no replica moves)."),
    ] = 2.0,
    rebalance_ops: Annotated[
        int,
        typer.Option(
            min=1, help="Placement operations (moves, merges) run at once: the speed knob."
        ),
    ] = 2,
    replace_down_after: Annotated[
        float,
        typer.Option(
            min=0, help="Rebuild a down node's replicas elsewhere after this many seconds."
        ),
    ] = 60.0,
    merge_bytes: Annotated[
        int,
        typer.Option(min=0, help="Merge adjacent ranges both smaller than this (0: never)."),
    ] = 0,
    client_token: Annotated[
        str | None,
        typer.Option(
            envvar="SHARDB_TOKEN",
            help="Require this token in every client's hello (clients send $SHARDB_TOKEN).",
        ),
    ] = None,
    unsafe_no_fsync: Annotated[
        bool,
        typer.Option(
            "--unsafe-no-fsync",
            help="Never fsync the consensus log: only to measure what durability costs "
            "(a machine crash may lose acknowledged writes).",
        ),
    ] = False,
    kv: Annotated[
        bool, typer.Option("--kv", help="Run the bare key-value runtime node instead.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run one node until SIGTERM or SIGINT."""
    if backend not in ("raft", "paxos"):
        raise typer.BadParameter("backend must be raft or paxos", param_hint="--backend")
    peer_map = parse_peers(peers)
    client_map = {int(n): a for n, a in parse_peers(clients).items()}
    bootstrap_ids: tuple[int, ...] = ()
    if join is not None:
        if peers:
            raise typer.BadParameter("give --peers or --join, not both", param_hint="--join")
        try:
            joined = join_cluster(join, data_dir, node_id, client_token)
        except JoinError as exc:
            typer.echo(f"shardb node: cannot join {join}: {exc}", err=True)
            raise typer.Exit(code=3) from None
        if cluster_id is not None and cluster_id != joined.cluster_id:
            typer.echo(
                f"shardb node: {join} belongs to cluster {joined.cluster_id!r}, not {cluster_id!r}",
                err=True,
            )
            raise typer.Exit(code=2)
        node_id, cluster_id = joined.node_id, joined.cluster_id
        peer_map = {NodeId(n): a for n, a in joined.peers.items()}
        client_map = dict(joined.clients)
    else:
        if node_id is None or cluster_id is None:
            raise typer.BadParameter("--id and --cluster-id are required without --join")
        bootstrap_ids = tuple(sorted({int(n) for n in peer_map} | {node_id}))
    own_id: int = node_id

    async def serve_shard(config: object, client_address: tuple[str, int]) -> None:
        from consensus.runtime.node import NodeConfig
        from shardb.server.gateway import GatewayConfig
        from shardb.server.placer import PlacerConfig
        from shardb.server.service import ShardNodeConfig, open_shard_node

        assert isinstance(config, NodeConfig)
        shard_config = ShardNodeConfig(
            node=replace(config, allow_faults=allow_faults),
            client_host=client_address[0],
            client_port=client_address[1],
            initial_nodes=bootstrap_ids,
            peer_clients={n: a for n, a in client_map.items() if n != own_id},
            gateway=GatewayConfig(default_backend=backend, replication_factor=replication),
            split_rows=split_rows,
            split_writes_per_s=split_writes,
            client_token=client_token or None,
            placer=PlacerConfig(
                interval_s=rebalance_interval,
                max_operations=rebalance_ops,
                replication_factor=replication,
                replace_down_after_s=replace_down_after,
                merge_bytes=merge_bytes,
                split_rows=split_rows,
                hot_writes_per_s=split_writes,
            ),
        )
        log = structlog.get_logger("shardb.server.process")
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with open_shard_node(shard_config) as shard:
                log.info(
                    "node_ready",
                    listen=list(shard.node.listen_address or ()),
                    client=list(shard.client_address),
                    groups=len(shard.node.group_ids()),
                    pid=os.getpid(),
                )
                async for signum in signals:
                    log.info("shutdown_requested", signal=signal.Signals(signum).name)
                    break

    code = run_node(
        node_id=own_id,
        listen=parse_address(listen),
        client=parse_address(client),
        peers=peer_map,
        data_dir=data_dir,
        cluster_id=str(cluster_id),
        tick_interval_ms=tick_ms,
        election_timeout_ticks=election_ticks,
        snapshot_interval_entries=snapshot_every,
        fsync=not unsafe_no_fsync,
        log_level=log_level,
        serve_node=None if kv else serve_shard,
    )
    raise typer.Exit(code=code)
