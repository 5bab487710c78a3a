"""A shardb node: the consensus runtime, the SQL state machine, the gateway and the background
services that keep this node's replicas in line with the meta group.

Services (each a trio task of the node):

- **bootstrap**: a fresh node listed among the first ``META_VOTERS`` initial nodes creates its
  replica of the meta group; every node then announces itself (``NodeJoined`` with its client
  address) until the meta group has applied it, also after every restart.
- **meta watcher**: a meta replica feeds its own applied meta state to the gateway; other
  nodes refresh it from the meta leader periodically (routing errors refresh it at once).
- **reconciler**: makes this node host every range the meta group places on it. A range of a
  new table is registered (its table created in SQLite, at ``SEED_INDEX``) and its consensus
  group started from a seed snapshot there. A range carved out of a range this node already
  hosts (a split) is NOT created from the meta group: it appears when this node's replica of
  the parent applies the split trigger (see ``shardb.statemachine``), because only then has
  the parent applied every older write to those keys. If that has not happened after
  ``split_repair_s`` (the gateway that started the split died between the meta change and the
  parent's split), the reconciler proposes the parent's split itself; a duplicate is refused
  harmlessly by epoch. The same repair finishes a merge whose gateway died. Any other range
  listed with this node as voter or learner (a replica the placement driver added) gets an
  empty replica that its leader fills by snapshot. A replica the meta group no longer lists
  with this node, or a group retired by a merge, is deleted after ``remove_grace_s``.
- **placement driver** (``shardb.server.placer``): on the meta group's leader, moves replicas,
  rebuilds those of dead nodes, drains decommissioned nodes and merges small ranges.
- **peers**: nodes that joined later (``--join``) are dialled once the meta group lists
  their node-to-node address.
- **splitter**: for each range this node leads, past ``split_rows`` rows it asks the gateway to
  split it at its median key (the placement driver's size rule, decided by the range's
  leader as in CockroachDB: the leader sees its range's size without a cluster-wide view).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog
import trio

from consensus.api import ConsensusError, Logger, Role
from consensus.backends import Backend
from consensus.runtime.client import ClientError, open_client
from consensus.runtime.errors import ApplicationError, NodeError
from consensus.runtime.layout import LOG_FILE
from consensus.runtime.node import Node, NodeConfig, open_node
from consensus.runtime.server import open_client_server
from consensus.types import GroupId, NodeId
from shardb.placement.descriptors import Key, RangeDescriptor
from shardb.placement.meta import META_GROUP_ID, MetaCommand, MetaState, NodeDown, NodeJoined
from shardb.server.gateway import Gateway, GatewayConfig, table_schemas
from shardb.server.groups import GroupAccess
from shardb.server.ops import sql_ops
from shardb.server.placer import Placer, PlacerConfig
from shardb.sql.admin import range_filter
from shardb.sql.catalog import parse_create_table
from shardb.statemachine.commands import decode_result, encode_query
from shardb.statemachine.shard import ShardStateMachine

HOT_CHECKS: Final = 3
"""Consecutive split checks a range must be hot for: load, not a burst."""
META_VOTERS: Final = 5
"""The meta group's size: the first (lowest id) initial nodes, at most this many."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardNodeConfig:
    node: NodeConfig
    client_host: str = "127.0.0.1"
    client_port: int = 0
    initial_nodes: Sequence[int] = ()
    """Ids of the nodes that bootstrap the cluster together (``--peers``); empty for a node
    that joins an existing cluster."""
    peer_clients: dict[int, tuple[str, int]] = field(default_factory=dict)
    """Client addresses of other nodes known at start (initial peers, or ``--join``)."""
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    meta_backend: str = "raft"
    reconcile_interval_s: float = 0.1
    meta_refresh_s: float = 1.0
    split_repair_s: float = 3.0
    split_rows: int = 0
    """Split a range past this many rows (0 = no automatic splits)."""
    split_check_s: float = 2.0
    split_writes_per_s: float = 0.0
    """Split a range whose leader commits more than this many entries per second for
    ``HOT_CHECKS`` checks in a row (0 = never): a hot range is cut at its median key so its
    halves can be led by different nodes."""
    client_token: str | None = None
    """Clients (and other nodes' gateways) must send this token in their hello; None = no
    authentication (bind the client port to a private network then)."""
    leader_balance_s: float = 2.0
    """How often a leader hands ranges to their hinted replicas (0 = never)."""
    node_down_after_s: float = 10.0
    """The meta leader marks a node down after suspecting it this long (0 = never)."""
    placer: PlacerConfig = field(default_factory=PlacerConfig)
    """The placement driver (replica moves, repair of dead nodes' replicas, merges)."""
    remove_grace_s: float = 2.0
    """A replica the meta group no longer lists is deleted after this long (the meta group
    records membership only after the group committed it, so this is only a safety margin
    against acting on one refresh)."""


class ShardNode:
    def __init__(
        self,
        config: ShardNodeConfig,
        node: Node,
        sm: ShardStateMachine,
        gateway: Gateway,
        client_address: tuple[str, int],
        log: Logger,
    ) -> None:
        self.config = config
        self.node = node
        self.sm = sm
        self.gateway = gateway
        self.client_address = client_address
        self._log = log
        self._pending_since: dict[int, float] = {}
        self._commit_seen: dict[GroupId, tuple[float, int]] = {}
        self._hot_checks: dict[GroupId, int] = {}
        self._leaving_since: dict[GroupId, float] = {}
        self._peers: dict[int, str] = {}
        self.joined = trio.Event()
        self.placer: Placer | None = None

    @property
    def node_id(self) -> NodeId:
        return self.node.node_id

    # ----------------------------------------------------------------- bootstrap

    def meta_voters(self) -> tuple[int, ...]:
        return tuple(sorted(self.config.initial_nodes)[:META_VOTERS])

    async def bootstrap(self) -> None:
        voters = self.meta_voters()
        if int(self.node_id) in voters and META_GROUP_ID not in self.node.group_ids():
            await self.node.create_group(META_GROUP_ID, Backend(self.config.meta_backend), voters)

    async def announce(self) -> None:
        """Propose ``NodeJoined`` until the meta group applied it (retrying while it elects)."""
        host, port = self.client_address
        listen = self.node.listen_address
        command = NodeJoined(
            node_id=self.node_id,
            address=f"{host}:{port}",
            peer_address=f"{listen[0]}:{listen[1]}" if listen else "",
        )
        pause = 0.05
        while True:
            try:
                result = await self.gateway.propose_meta(command, trio.current_time() + 5.0)
                if result.ok:
                    self._log.info("node_joined_cluster", address=command.address)
                    self.joined.set()
                    return
                self._log.warning("join_refused", reason=result.message)
            except (ApplicationError, ClientError, NodeError) as exc:
                self._log.debug("join_retry", error=str(exc))
            await trio.sleep(pause)
            pause = min(pause * 2, 1.0)

    # ----------------------------------------------------------------- meta watcher

    async def watch_meta(self) -> None:
        last_remote = -math.inf
        while True:
            if META_GROUP_ID in self.node.group_ids():
                applied, state = await self.node.call_state_machine(_meta_view, self.sm)
                if state is not None:
                    self.gateway.offer_meta(applied, state)
            self._learn_peers()
            if trio.current_time() - last_remote >= self.config.meta_refresh_s:
                last_remote = trio.current_time()
                try:
                    await self.gateway.refresh_meta(timeout=2.0)
                except (ApplicationError, ClientError, NodeError) as exc:
                    self._log.debug("meta_refresh_failed", error=str(exc))
            await trio.sleep(self.config.reconcile_interval_s)

    def _learn_peers(self) -> None:
        """Dial nodes that joined after this one started (``--join``): their node-to-node
        address is in the meta group's node list."""
        meta = self.gateway.meta
        if meta is None:
            return
        for info in meta.nodes():
            nid = int(info.node_id)
            if nid == int(self.node_id) or not info.peer_address:
                continue
            if self._peers.get(nid) == info.peer_address:
                continue
            host, _, port = info.peer_address.rpartition(":")
            try:
                self.node.add_peer(nid, host, int(port))
            except ValueError as exc:
                self._log.warning("peer_address_refused", node=nid, error=str(exc))
                continue
            self._peers[nid] = info.peer_address
            self._log.info("peer_learned", node=nid, address=info.peer_address)

    # ----------------------------------------------------------------- reconciler

    async def reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except (ApplicationError, ClientError, NodeError) as exc:
                self._log.info("reconcile_failed", error=str(exc))
            await trio.sleep(self.config.reconcile_interval_s)

    async def reconcile_once(self) -> None:
        node = self.node
        hosted: tuple[RangeDescriptor, ...] = await node.call_state_machine(self.sm.hosted_ranges)
        running = set(node.group_ids())
        # 1. Registered ranges (new tables, split triggers) need their group. Registration
        # puts the range at SEED_INDEX, so the group starts from a snapshot there: a replica
        # added later gets that snapshot, never a log replayed from index 1.
        for descriptor in hosted:
            if descriptor.group_id not in running and self.node_id in descriptor.replicas:
                await self._start_group(descriptor)
        meta = self.gateway.meta
        if meta is None:
            return
        by_group = {d.group_id: d for d in hosted}
        now = trio.current_time()
        for descriptor in meta.ranges():
            member = self.node_id in descriptor.replicas or self.node_id in descriptor.learners
            if not member or descriptor.group_id in by_group:
                self._pending_since.pop(descriptor.range_id, None)
                if member:
                    await self._maybe_repair_merge(
                        meta, descriptor, by_group[descriptor.group_id], hosted
                    )
                continue
            if descriptor.group_id in running:
                continue  # joined, waiting for its snapshot
            parent = _overlapping(hosted, descriptor)
            if parent is None and (descriptor.epoch > 1 or self.node_id in descriptor.learners):
                # 2. A replica added by the placement driver, or of a range created while this
                # node was away: host an empty replica; the leader sends it a snapshot.
                created = await node.join_group(descriptor.group_id, Backend(descriptor.backend))
                if created:
                    self._log.info("range_joined", range_id=descriptor.range_id)
                continue
            if parent is None:
                # 3. A range of a new table: every initial replica registers it the same way
                # (empty, at SEED_INDEX) and starts its group there.
                info = meta.table(descriptor.table)
                if info is None:
                    continue
                schema = parse_create_table(info.schema_sql).schema
                await node.call_state_machine(self.sm.register_range, descriptor, schema.create_sql)
                await self._start_group(descriptor)
                continue
            # 4. Carved out of a local range: wait for the parent's split trigger.
            since = self._pending_since.setdefault(descriptor.range_id, now)
            if now - since >= self.config.split_repair_s:
                self._pending_since[descriptor.range_id] = now
                await self._repair_split(meta, parent, descriptor)
        await self._remove_departed(meta, hosted, running, now)

    async def _remove_departed(
        self,
        meta: MetaState,
        hosted: Sequence[RangeDescriptor],
        running: set[GroupId],
        now: float,
    ) -> None:
        """Delete replicas this node should no longer hold: of a range the meta group lists
        without this node (moved away: the group committed the removal before the meta group
        recorded it), or of a group neither registered here nor known to the meta group (the
        right range of a merge, retired by the left range's merge trigger)."""
        listed = {d.group_id: d for d in meta.ranges()}
        registered = {d.group_id for d in hosted}
        leaving: set[GroupId] = set()
        for gid in running:
            if gid == META_GROUP_ID:
                continue
            d = listed.get(gid)
            if d is not None:
                if self.node_id not in d.replicas and self.node_id not in d.learners:
                    leaving.add(gid)
            elif gid not in registered and gid < meta.next_group_id():
                leaving.add(gid)
        for gid in [g for g in self._leaving_since if g not in leaving]:
            del self._leaving_since[gid]
        for gid in sorted(leaving):
            since = self._leaving_since.setdefault(gid, now)
            if now - since < self.config.remove_grace_s:
                continue
            del self._leaving_since[gid]
            if await self.node.remove_group(gid):
                self._log.info("replica_removed", group_id=int(gid))

    async def _start_group(self, descriptor: RangeDescriptor) -> None:
        created = await self.node.create_group(
            descriptor.group_id,
            Backend(descriptor.backend),
            [int(n) for n in descriptor.replicas],
            seeded=True,
        )
        if created:
            self._log.info(
                "range_started", range_id=descriptor.range_id, group_id=int(descriptor.group_id)
            )

    async def _maybe_repair_merge(
        self,
        meta: MetaState,
        listed: RangeDescriptor,
        local: RangeDescriptor,
        hosted: Sequence[RangeDescriptor],
    ) -> None:
        """The meta group merged a range into ``listed`` but this node's replica of it still
        has the old bounds: if that lasts ``split_repair_s`` (the gateway that started the
        merge died), run the merge's idempotent steps from here."""
        if listed.start_key != local.start_key or listed.end_key == local.end_key:
            self._pending_since.pop(-int(listed.group_id), None)
            return
        right = next(
            (
                d
                for d in hosted
                if d.table == local.table
                and local.end_key is not None
                and d.start_key == local.end_key
                and d.group_id != local.group_id
            ),
            None,
        )
        if right is None or right.group_id in {d.group_id for d in meta.ranges()}:
            return
        key = -int(listed.group_id)  # negative: never a range id
        now = trio.current_time()
        since = self._pending_since.setdefault(key, now)
        if now - since < self.config.split_repair_s:
            return
        self._pending_since[key] = now
        self._log.info("merge_repair", range_id=listed.range_id, absorbed=right.range_id)
        try:
            await self.gateway.apply_merge(local, right, listed, trio.current_time() + 10.0)
        except ApplicationError as exc:
            self._log.info("merge_repair_failed", error=exc.message)

    async def _repair_split(
        self, meta: MetaState, parent: RangeDescriptor, right: RangeDescriptor
    ) -> None:
        left = meta.range(parent.range_id)
        if left is None or left.group_id != parent.group_id:
            return
        self._log.info(
            "split_repair", parent=parent.range_id, right=right.range_id, epoch=right.epoch
        )
        try:
            await self.gateway.apply_split(parent, left, right, trio.current_time() + 5.0)
        except ApplicationError as exc:
            self._log.info("split_repair_failed", error=exc.message)

    # ----------------------------------------------------------------- node liveness

    async def watch_nodes_forever(self) -> None:
        """On the meta group's leader: mark a node down in the meta group once this node
        has suspected it (no node heartbeat) for ``node_down_after_s``, and alive again when
        it is heard from. shardb_nodes shows it, and leaders are no longer handed to it."""
        if self.config.node_down_after_s <= 0:
            return
        suspected_since: dict[int, float] = {}
        while True:
            await trio.sleep(min(1.0, self.config.node_down_after_s / 4))
            meta = self.gateway.meta
            if (
                meta is None
                or META_GROUP_ID not in self.node.group_ids()
                or self.node.status(META_GROUP_ID).role is not Role.LEADER
            ):
                suspected_since.clear()
                continue
            now = trio.current_time()
            suspected = {int(n) for n in self.node.suspected_peers()}
            for node in sorted(suspected - set(suspected_since)):
                suspected_since[node] = now
            for node in [n for n in suspected_since if n not in suspected]:
                del suspected_since[node]
            for info in meta.nodes():
                nid = int(info.node_id)
                command: MetaCommand | None = None
                if (
                    info.alive
                    and now - suspected_since.get(nid, now) >= self.config.node_down_after_s
                ):
                    command = NodeDown(node_id=info.node_id)
                elif not info.alive and nid not in suspected and nid != int(self.node_id):
                    command = NodeJoined(node_id=info.node_id, address=info.address)
                if command is None:
                    continue
                try:
                    await self.gateway.propose_meta(command, trio.current_time() + 5.0)
                    self._log.info("node_liveness_recorded", node=nid, alive=not info.alive)
                except (ApplicationError, ClientError, NodeError) as exc:
                    self._log.info("node_liveness_failed", node=nid, error=str(exc))

    # ----------------------------------------------------------------- leader balance

    async def balance_leaders_forever(self) -> None:
        """Hand each range this node leads to the replica the meta group hints (spread over
        nodes when ranges are created or split), so leaders -- and the write load -- stay
        spread. A target that cannot take over (down, behind) makes the transfer time out
        and this node keeps leading; it is tried again after ``leader_balance_s``."""
        if self.config.leader_balance_s <= 0:
            return
        last_try: dict[int, float] = {}
        while True:
            await trio.sleep(self.config.leader_balance_s / 2)
            meta = self.gateway.meta
            if meta is None:
                continue
            alive = {n.node_id for n in meta.nodes() if n.alive}
            now = trio.current_time()
            for descriptor in meta.ranges():
                gid = descriptor.group_id
                if gid not in self.node.group_ids():
                    continue
                if self.node.status(gid).role is not Role.LEADER:
                    continue
                hint = meta.leader_hint(descriptor.range_id)
                if hint is None or hint == self.node_id or hint not in alive:
                    continue
                # A transfer blocks the range's proposals until it completes or times out
                # (an election timeout): never retry one range often.
                retry_after = 10 * self.config.leader_balance_s
                if now - last_try.get(descriptor.range_id, -math.inf) < retry_after:
                    continue
                last_try[descriptor.range_id] = now
                try:
                    await self.node.transfer_leadership(gid, int(hint), timeout=1.0)
                    self._log.info(
                        "leader_transfer", range_id=descriptor.range_id, target=int(hint)
                    )
                except (NodeError, ConsensusError) as exc:
                    self._log.debug("leader_transfer_failed", error=str(exc))

    # ----------------------------------------------------------------- splitter

    async def split_forever(self) -> None:
        if self.config.split_rows <= 0 and self.config.split_writes_per_s <= 0:
            return
        while True:
            await trio.sleep(self.config.split_check_s)
            try:
                await self.split_once()
            except (ApplicationError, ClientError, NodeError) as exc:
                self._log.info("auto_split_failed", error=str(exc))

    async def split_once(self) -> None:
        node = self.node
        hosted: tuple[RangeDescriptor, ...] = await node.call_state_machine(self.sm.hosted_ranges)
        for descriptor in hosted:
            gid = descriptor.group_id
            if gid not in node.group_ids() or node.status(gid).role is not Role.LEADER:
                continue
            # Load: committed entries per second since the last check, by the leader's commit
            # index (writes and membership/no-op entries; reads do not enter the log).
            now = trio.current_time()
            commit = int(node.status(gid).commit)
            previous = self._commit_seen.get(gid)
            self._commit_seen[gid] = (now, commit)
            rate = 0.0
            if previous is not None and now > previous[0]:
                rate = (commit - previous[1]) / (now - previous[0])
            hot = 0 < self.config.split_writes_per_s <= rate
            if hot:
                self._hot_checks[gid] = self._hot_checks.get(gid, 0) + 1
            else:
                self._hot_checks.pop(gid, None)
            sustained = self._hot_checks.get(gid, 0) >= HOT_CHECKS
            stats = await node.call_state_machine(self.sm.range_stats, gid)
            big = 0 < self.config.split_rows < stats.rows
            if not (big or sustained) or stats.rows < 2:
                continue
            key = await self._median_key(descriptor, stats.rows)
            if key is None or key == descriptor.start_key:
                continue
            self._hot_checks.pop(gid, None)
            self._log.info(
                "auto_split",
                range_id=descriptor.range_id,
                rows=stats.rows,
                writes_per_s=round(rate, 1),
                reason="size" if big else "load",
                split_key=key,
            )
            await self.gateway.split(descriptor.table, key, trio.current_time() + 10.0)

    async def _median_key(self, descriptor: RangeDescriptor, rows: int) -> Key | None:
        meta = self.gateway.meta
        info = meta.table(descriptor.table) if meta is not None else None
        if info is None:
            return None
        pk = '"' + info.pk_column.replace('"', '""') + '"'
        table = '"' + descriptor.table.replace('"', '""') + '"'
        clause, params = range_filter(info.pk_column, descriptor)
        sql = f"SELECT {pk} FROM {table}{clause} ORDER BY {pk} LIMIT 1 OFFSET ?"
        query = encode_query(sql, [*params, rows // 2], descriptor.epoch)
        raw = await self.node.call_state_machine(self.sm.query, descriptor.group_id, query)
        result = decode_result(raw)
        if not result["ok"] or not result["rows"]:
            return None
        key = result["rows"][0][0]
        return key if isinstance(key, int | str) and not isinstance(key, bool) else None


def _meta_view(sm: ShardStateMachine) -> tuple[int, MetaState | None]:
    return sm.meta_applied(), sm.meta_state()


def _overlapping(
    hosted: Sequence[RangeDescriptor], descriptor: RangeDescriptor
) -> RangeDescriptor | None:
    for local in hosted:
        if local.table != descriptor.table:
            continue
        starts_before_end = (
            descriptor.end_key is None
            or local.start_key is None
            or (
                local.start_key < descriptor.end_key  # type: ignore[operator]  # one key type per table
            )
        )
        ends_after_start = (
            local.end_key is None
            or descriptor.start_key is None
            or (
                descriptor.start_key < local.end_key  # type: ignore[operator]  # one key type per table
            )
        )
        if starts_before_end and ends_after_start:
            return local
    return None


@asynccontextmanager
async def open_shard_node(
    config: ShardNodeConfig, *, logger: Logger | None = None
) -> AsyncIterator[ShardNode]:
    """Run a shardb node until the context exits: consensus node, client port with the SQL
    ops, and the services above."""
    log: Logger = logger or structlog.get_logger("shardb.server").bind(
        node_id=int(config.node.node_id)
    )
    data_dir: Path = config.node.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    sm = await trio.to_thread.run_sync(lambda: ShardStateMachine(data_dir, logger=log))
    async with (
        open_node(config.node, state_machine=sm, logger=log) as node,
        trio.open_nursery() as nursery,
    ):
        client_book = dict(config.peer_clients)
        async with open_client(
            client_book or {int(node.node_id): ("127.0.0.1", 1)},
            timeout_s=10.0,
            token=config.client_token,
        ) as client:
            access = GroupAccess(node, client)
            gateway = Gateway(access, config=config.gateway, logger=log)
            async with open_client_server(
                node,
                config.client_host,
                config.client_port,
                ops=sql_ops(gateway),
                token=config.client_token,
            ) as bound:
                book = {**client_book, int(node.node_id): bound}
                access.set_addresses(book)
                shard = ShardNode(config, node, sm, gateway, bound, log)
                shard.placer = Placer(node, gateway, access, config.placer, log)
                await shard.bootstrap()
                nursery.start_soon(shard.announce)
                nursery.start_soon(shard.watch_meta)
                nursery.start_soon(shard.reconcile_forever)
                nursery.start_soon(shard.split_forever)
                nursery.start_soon(shard.balance_leaders_forever)
                nursery.start_soon(shard.watch_nodes_forever)
                nursery.start_soon(shard.placer.run_forever)
                log.info("shard_node_ready", client=list(bound), groups=len(node.group_ids()))
                try:
                    yield shard
                finally:
                    nursery.cancel_scope.cancel()


def has_log(data_dir: Path) -> bool:
    return (data_dir / LOG_FILE).exists()


__all__ = ["ShardNode", "ShardNodeConfig", "has_log", "open_shard_node", "table_schemas"]
