"""The meta group's replicated state machine: the catalog, the range descriptors, the nodes.

Pure and deterministic: every replica of the meta group applies the same committed command
stream and must reach byte-identical state (``snapshot()``), so ``apply`` reads no clock, draws
no randomness and iterates only sorted ids. A command that fails validation changes nothing and
returns a ``MetaResult`` with an error code and message that are the same on every replica; the
entry still counts as applied (as in the user state machine, see ARCHITECTURE "State machine").

Ownership of ids: range ids and group ids are allocated here, from counters that are part of
the replicated state, so a CreateTable or SplitRange names the same new groups on every replica.
Group id 0 is the host's own channel (``consensus.host.HOST_GROUP``) and group id 1 is the meta
group itself (``META_GROUP_ID``); user groups start at 2.

Nodes: node ids are allocated here too (``ReserveNodeId``, from a counter above every id ever
known), so a new node never reuses the id of a removed one, whose old replicas other nodes may
still remember. Removal is two-step: ``DecommissionNode`` marks a node for the planner to
drain, ``RemoveNode`` forgets it once no range lists it as a voter or learner.

Epochs: a command that changes a range's bounds or replicas names the epoch it was planned
against and is refused with ``STALE_EPOCH`` if the range has moved on, which makes planner
operations computed from an old cluster view harmless (optimistic concurrency). Every such change
bumps the epoch, so gateways holding an older descriptor get ``StaleEpoch`` from the group.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypeAlias

import structlog

from consensus.api import Logger
from consensus.backends import Backend
from consensus.types import GroupId, NodeId
from shardb.placement.descriptors import Key, RangeDescriptor, RangeMap, RangeMapError
from shardb.placement.wire import WireError, from_plain, optional, pack, to_plain, unpack

META_GROUP_ID = GroupId(1)
FIRST_USER_GROUP_ID = 2
FIRST_RANGE_ID = 1
FIRST_NODE_ID = 1
FORMAT_VERSION = 1
"""Bumped on any incompatible change of a command's or the snapshot's fields."""

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


class PkType(enum.Enum):
    """The primary-key type of a table; one type per table, so keys never compare across types."""

    INTEGER = "INTEGER"
    TEXT = "TEXT"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True, kw_only=True)
class TableInfo:
    name: str
    schema_sql: str
    pk_column: str
    pk_type: PkType
    backend: str
    """``consensus.backends.Backend`` value of every group of this table."""
    replication_factor: int
    options: tuple[tuple[str, str], ...] = ()
    """Free-form ``(key, value)`` table options, sorted by key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    node_id: NodeId
    address: str
    alive: bool
    capacity_bytes: int = 0
    """0 = unlimited."""
    peer_address: str = optional("")
    """The consensus transport's ``host:port`` (``address`` is the client-facing one), so
    other nodes can add this one as a peer; empty if the node did not say."""
    decommissioning: bool = optional(False)
    """Set by ``DecommissionNode``: the planner moves every replica off this node and places
    nothing new on it; ``RemoveNode`` then forgets it."""


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateTable:
    """Create a table cut at ``split_points`` into ``len(split_points) + 1`` ranges."""

    name: str
    schema_sql: str
    pk_column: str
    pk_type: PkType
    backend: str
    split_points: tuple[Key, ...] = ()
    replication_factor: int = 3
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DropTable:
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitRange:
    """Cut a range at ``split_key``: the left keeps its group, the right gets a new group on the
    same replicas (metadata only: the new group starts from the parent's rows)."""

    range_id: int
    epoch: int
    split_key: Key


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeRanges:
    """Fold the right neighbour into the left range; the right's group is retired.

    Both must have the same replica set: the left group then already holds the right's rows on
    every one of its nodes, so the merge needs no data movement. (The planner proposes merges
    only for neighbours already on the same nodes; it does not co-locate them first.)
    """

    left_range_id: int
    left_epoch: int
    right_range_id: int
    right_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetReplicas:
    """Record a range's voters after its group committed a membership change (a move step).
    Same as ``SetMembers`` with the range's current learners, less any now among the voters."""

    range_id: int
    epoch: int
    replicas: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SetMembers:
    """Record a range's voters and learners after its group committed a membership change;
    bumps the epoch. Voters non-empty, no node in both, every node known."""

    range_id: int
    epoch: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLeaseholder:
    """Leader hint for routing; not an epoch change (a stale hint costs one ``NotLeader``)."""

    range_id: int
    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeJoined:
    """A node joined, or rejoined after being down (it is alive again)."""

    node_id: NodeId
    address: str
    capacity_bytes: int = 0
    peer_address: str = optional("")
    """See ``NodeInfo.peer_address``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDown:
    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class ReserveNodeId:
    """Allocate a fresh node id (``MetaResult.node_id``) for a node about to join: above every
    id known or reserved before, so never one a removed node had."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DecommissionNode:
    """Mark a node ``decommissioning`` (idempotent): drain it, place nothing new on it."""

    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveNode:
    """Forget a node; refused while any range lists it as a voter or learner. Its id is
    never given out again and it cannot rejoin under it."""

    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTableOption:
    """Set (``value`` given) or remove (None) one of a table's free-form options; the gateway
    records each secondary index as ``("index:<name>", CREATE INDEX text)`` so every gateway's
    catalog knows it."""

    table: str
    key: str
    value: str | None


MetaCommand: TypeAlias = (
    CreateTable
    | DropTable
    | SplitRange
    | MergeRanges
    | SetReplicas
    | SetMembers
    | SetLeaseholder
    | NodeJoined
    | NodeDown
    | SetTableOption
    | ReserveNodeId
    | DecommissionNode
    | RemoveNode
)

_TAGS: dict[type[object], str] = {
    CreateTable: "create_table",
    DropTable: "drop_table",
    SplitRange: "split_range",
    MergeRanges: "merge_ranges",
    SetReplicas: "set_replicas",
    SetLeaseholder: "set_leaseholder",
    NodeJoined: "node_joined",
    NodeDown: "node_down",
    SetTableOption: "set_table_option",
    SetMembers: "set_members",
    ReserveNodeId: "reserve_node_id",
    DecommissionNode: "decommission_node",
    RemoveNode: "remove_node",
}
_CLASSES: dict[str, type[object]] = {tag: cls for cls, tag in _TAGS.items()}


def encode_command(command: MetaCommand) -> bytes:
    """The bytes proposed to the meta group: ``[FORMAT_VERSION, tag, [fields...]]``."""
    return pack([FORMAT_VERSION, _TAGS[type(command)], to_plain(command)])


def decode_command(data: bytes) -> MetaCommand:
    """Inverse of ``encode_command``; raises ``WireError`` on anything else."""
    raw = unpack(data)
    if not isinstance(raw, list) or len(raw) != 3:
        raise WireError("meta command: expected [version, tag, body]")
    version, tag, body = raw
    if version != FORMAT_VERSION:
        raise WireError(f"meta command: format version {version!r}, expected {FORMAT_VERSION}")
    cls = _CLASSES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise WireError(f"meta command: unknown tag {tag!r}")
    command: MetaCommand = from_plain(cls, body)  # type: ignore[assignment]  # _CLASSES holds only MetaCommand classes
    return command


# --------------------------------------------------------------------------- results


class MetaErrorCode(enum.Enum):
    MALFORMED = "malformed"
    INVALID = "invalid"
    TABLE_EXISTS = "table_exists"
    UNKNOWN_TABLE = "unknown_table"
    UNKNOWN_RANGE = "unknown_range"
    UNKNOWN_NODE = "unknown_node"
    STALE_EPOCH = "stale_epoch"
    BAD_SPLIT_KEY = "bad_split_key"
    NOT_ADJACENT = "not_adjacent"
    REPLICAS_DIFFER = "replicas_differ"
    BAD_REPLICAS = "bad_replicas"
    NOT_ENOUGH_NODES = "not_enough_nodes"
    NODE_IN_USE = "node_in_use"
    """RemoveNode of a node some range still lists as a voter or learner."""
    NODE_REMOVED = "node_removed"
    """NodeJoined under the id of a removed node: reserve a new id instead."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaResult:
    """What one applied command did. ``error`` set = the state is unchanged."""

    error: MetaErrorCode | None = None
    message: str = ""
    ranges: tuple[RangeDescriptor, ...] = ()
    """Descriptors created or changed by the command, sorted by range id."""
    retired_groups: tuple[GroupId, ...] = ()
    """Groups that no longer own any range (dropped table, merged-away right range)."""
    node_id: NodeId | None = None
    """The id a ``ReserveNodeId`` allocated."""

    @property
    def ok(self) -> bool:
        return self.error is None


class _Rejected(Exception):
    def __init__(self, code: MetaErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class _Image:
    """The whole replicated state, in canonical (sorted) order: the snapshot's body."""

    next_range_id: int
    next_group_id: int
    tables: tuple[TableInfo, ...]
    nodes: tuple[NodeInfo, ...]
    ranges: tuple[RangeDescriptor, ...]
    leaders: tuple[tuple[int, NodeId], ...]
    next_node_id: int = optional(FIRST_NODE_ID)
    removed_nodes: tuple[NodeId, ...] = optional(())


# --------------------------------------------------------------------------- state machine


class MetaState:
    """The catalog and range descriptors, changed only by ``apply``."""

    def __init__(self, *, logger: Logger | None = None) -> None:
        self._log: Logger = logger or structlog.get_logger(__name__).bind(group_id=META_GROUP_ID)
        self._tables: dict[str, TableInfo] = {}
        self._nodes: dict[NodeId, NodeInfo] = {}
        self._ranges: dict[int, RangeDescriptor] = {}
        self._leaders: dict[int, NodeId] = {}
        self._next_range_id = FIRST_RANGE_ID
        self._next_group_id = FIRST_USER_GROUP_ID
        self._next_node_id = FIRST_NODE_ID
        self._removed_nodes: set[NodeId] = set()

    # ----------------------------------------------------------------- queries

    def tables(self) -> tuple[TableInfo, ...]:
        return tuple(self._tables[name] for name in sorted(self._tables))

    def table(self, name: str) -> TableInfo | None:
        return self._tables.get(name)

    def nodes(self) -> tuple[NodeInfo, ...]:
        return tuple(self._nodes[n] for n in sorted(self._nodes))

    def node(self, node_id: NodeId) -> NodeInfo | None:
        return self._nodes.get(node_id)

    def next_group_id(self) -> int:
        """Every group id below this was allocated (a group id at or above it is unknown to
        this state, not retired)."""
        return self._next_group_id

    def next_range_id(self) -> int:
        """Every range id below this was allocated."""
        return self._next_range_id

    def removed_nodes(self) -> tuple[NodeId, ...]:
        """Ids of removed nodes, which may not rejoin under them, ascending."""
        return tuple(sorted(self._removed_nodes))

    def ranges(self) -> tuple[RangeDescriptor, ...]:
        """Every range of every table, by range id."""
        return tuple(self._ranges[r] for r in sorted(self._ranges))

    def range(self, range_id: int) -> RangeDescriptor | None:
        return self._ranges.get(range_id)

    def range_map(self, table: str) -> RangeMap:
        if table not in self._tables:
            raise KeyError(table)
        return RangeMap.build(table, (r for r in self.ranges() if r.table == table))

    def leader_hint(self, range_id: int) -> NodeId | None:
        return self._leaders.get(range_id)

    # ----------------------------------------------------------------- apply

    def apply_encoded(self, data: bytes) -> MetaResult:
        """Apply a committed log entry; undecodable bytes are refused the same way everywhere."""
        try:
            command = decode_command(data)
        except WireError as exc:
            return self._reject(MetaErrorCode.MALFORMED, str(exc), "undecodable")
        return self.apply(command)

    def apply(self, command: MetaCommand) -> MetaResult:
        """Validate, then change the state; on a validation error nothing changes."""
        try:
            match command:
                case CreateTable():
                    return self._on_create_table(command)
                case DropTable():
                    return self._on_drop_table(command)
                case SplitRange():
                    return self._on_split_range(command)
                case MergeRanges():
                    return self._on_merge_ranges(command)
                case SetReplicas():
                    return self._on_set_replicas(command)
                case SetMembers():
                    return self._on_set_members(command)
                case SetLeaseholder():
                    return self._on_set_leaseholder(command)
                case NodeJoined():
                    return self._on_node_joined(command)
                case NodeDown():
                    return self._on_node_down(command)
                case SetTableOption():
                    return self._on_set_table_option(command)
                case ReserveNodeId():
                    return self._on_reserve_node_id()
                case DecommissionNode():
                    return self._on_decommission_node(command)
                case RemoveNode():
                    return self._on_remove_node(command)
                case _:
                    raise _Rejected(MetaErrorCode.MALFORMED, f"not a meta command: {command!r}")
        except _Rejected as rejected:
            return self._reject(rejected.code, rejected.message, type(command).__name__)

    def _reject(self, code: MetaErrorCode, message: str, command: str) -> MetaResult:
        self._log.info("command_rejected", command=command, code=code.value, reason=message)
        return MetaResult(error=code, message=message)

    def _on_create_table(self, cmd: CreateTable) -> MetaResult:
        if not cmd.name or not cmd.pk_column:
            raise _Rejected(MetaErrorCode.INVALID, "table name and pk column must be non-empty")
        if cmd.name in self._tables:
            raise _Rejected(MetaErrorCode.TABLE_EXISTS, f"table {cmd.name!r} already exists")
        if cmd.backend not in {b.value for b in Backend}:
            raise _Rejected(MetaErrorCode.INVALID, f"unknown backend {cmd.backend!r}")
        if cmd.replication_factor < 1:
            raise _Rejected(MetaErrorCode.INVALID, "replication factor must be at least 1")
        option_keys = [k for k, _ in cmd.options]
        if len(set(option_keys)) != len(option_keys):
            raise _Rejected(MetaErrorCode.INVALID, "duplicate table option")
        for key in cmd.split_points:
            _check_key(cmd.pk_type, key)
        for low, high in itertools.pairwise(cmd.split_points):
            if not low < high:  # type: ignore[operator]  # same type, checked above
                raise _Rejected(MetaErrorCode.INVALID, "split points must be strictly increasing")
        # A decommissioning node is being drained: new ranges go elsewhere.
        live = [
            n
            for n in sorted(self._nodes)
            if self._nodes[n].alive and not self._nodes[n].decommissioning
        ]
        if len(live) < cmd.replication_factor:
            raise _Rejected(
                MetaErrorCode.NOT_ENOUGH_NODES,
                f"{cmd.replication_factor} replicas need {cmd.replication_factor} live nodes, "
                f"{len(live)} are live",
            )
        table = TableInfo(
            name=cmd.name,
            schema_sql=cmd.schema_sql,
            pk_column=cmd.pk_column,
            pk_type=cmd.pk_type,
            backend=cmd.backend,
            replication_factor=cmd.replication_factor,
            options=tuple(sorted(cmd.options)),
        )
        # Place each new range on the live nodes holding the fewest replicas so far (ties by
        # node id), and give it the replica leading the fewest ranges as leader hint: an even
        # start, computed identically on every replica.
        replica_counts = self._replica_counts(live)
        leader_counts = {n: 0 for n in live}
        for node in self._leaders.values():
            if node in leader_counts:
                leader_counts[node] += 1
        bounds: list[Key | None] = [None, *cmd.split_points, None]
        created: list[RangeDescriptor] = []
        leaders: list[NodeId] = []
        for start, end in itertools.pairwise(bounds):
            chosen = sorted(live, key=lambda n: (replica_counts[n], n))[: cmd.replication_factor]
            for node in chosen:
                replica_counts[node] += 1
            leader = min(chosen, key=lambda n: (leader_counts[n], n))
            leader_counts[leader] += 1
            leaders.append(leader)
            created.append(
                RangeDescriptor(
                    range_id=self._next_range_id + len(created),
                    table=cmd.name,
                    start_key=start,
                    end_key=end,
                    group_id=GroupId(self._next_group_id + len(created)),
                    replicas=tuple(sorted(chosen)),
                    backend=cmd.backend,
                )
            )
        self._tables[cmd.name] = table
        for descriptor in created:
            self._ranges[descriptor.range_id] = descriptor
        for descriptor, leader in zip(created, leaders, strict=True):
            self._leaders[descriptor.range_id] = leader
        self._next_range_id += len(created)
        self._next_group_id += len(created)
        self._log.info("table_created", table=cmd.name, ranges=len(created))
        return MetaResult(ranges=tuple(created))

    def _on_drop_table(self, cmd: DropTable) -> MetaResult:
        if cmd.name not in self._tables:
            raise _Rejected(MetaErrorCode.UNKNOWN_TABLE, f"no table {cmd.name!r}")
        dropped = [r for r in self.ranges() if r.table == cmd.name]
        del self._tables[cmd.name]
        for descriptor in dropped:
            del self._ranges[descriptor.range_id]
            self._leaders.pop(descriptor.range_id, None)
        self._log.info("table_dropped", table=cmd.name, ranges=len(dropped))
        return MetaResult(retired_groups=tuple(sorted(r.group_id for r in dropped)))

    def _on_split_range(self, cmd: SplitRange) -> MetaResult:
        parent = self._range_at_epoch(cmd.range_id, cmd.epoch)
        table = self._tables[parent.table]
        try:
            _check_key(table.pk_type, cmd.split_key)
        except _Rejected as exc:
            raise _Rejected(MetaErrorCode.BAD_SPLIT_KEY, exc.message) from None
        key = cmd.split_key
        if parent.start_key is not None and key == parent.start_key:
            raise _Rejected(
                MetaErrorCode.BAD_SPLIT_KEY,
                f"split key {key!r} is the start boundary of range {parent.range_id}",
            )
        if not parent.contains(key):
            raise _Rejected(
                MetaErrorCode.BAD_SPLIT_KEY,
                f"split key {key!r} is outside range {parent.range_id} "
                f"[{parent.start_key!r}, {parent.end_key!r})",
            )
        epoch = parent.epoch + 1
        left = replace(parent, end_key=key, epoch=epoch)
        right = replace(
            parent,
            range_id=self._next_range_id,
            start_key=key,
            group_id=GroupId(self._next_group_id),
            epoch=epoch,
        )
        self._ranges[left.range_id] = left
        self._ranges[right.range_id] = right
        # The new group starts on the parent's replicas; hint the one leading the fewest
        # ranges so that leaders stay spread as ranges split (each node's leader balancer
        # hands leadership to the hinted replica).
        counts = {n: 0 for n in right.replicas}
        for node in self._leaders.values():
            if node in counts:
                counts[node] += 1
        alive = [n for n in right.replicas if (i := self._nodes.get(n)) is None or i.alive]
        if alive:
            self._leaders[right.range_id] = min(alive, key=lambda n: (counts[n], n))
        self._next_range_id += 1
        self._next_group_id += 1
        self._log.info(
            "range_split", range_id=left.range_id, new_range_id=right.range_id, epoch=epoch
        )
        return MetaResult(ranges=(left, right))

    def _on_merge_ranges(self, cmd: MergeRanges) -> MetaResult:
        if cmd.left_range_id == cmd.right_range_id:
            raise _Rejected(MetaErrorCode.NOT_ADJACENT, "cannot merge a range with itself")
        left = self._range_at_epoch(cmd.left_range_id, cmd.left_epoch)
        right = self._range_at_epoch(cmd.right_range_id, cmd.right_epoch)
        if left.table != right.table or left.end_key is None or left.end_key != right.start_key:
            raise _Rejected(
                MetaErrorCode.NOT_ADJACENT,
                f"range {right.range_id} does not start where range {left.range_id} ends",
            )
        if left.learners or right.learners:
            # A learner is a move in progress: the voters are about to change, and a merged
            # group must not inherit half of a move.
            raise _Rejected(
                MetaErrorCode.REPLICAS_DIFFER,
                f"ranges {left.range_id} and {right.range_id} must have no learners to merge",
            )
        if left.replicas != right.replicas:
            raise _Rejected(
                MetaErrorCode.REPLICAS_DIFFER,
                f"ranges {left.range_id} and {right.range_id} have different replicas "
                f"{list(left.replicas)} vs {list(right.replicas)}",
            )
        merged = replace(left, end_key=right.end_key, epoch=max(left.epoch, right.epoch) + 1)
        self._ranges[merged.range_id] = merged
        del self._ranges[right.range_id]
        self._leaders.pop(right.range_id, None)
        self._log.info(
            "ranges_merged", range_id=merged.range_id, absorbed=right.range_id, epoch=merged.epoch
        )
        return MetaResult(ranges=(merged,), retired_groups=(right.group_id,))

    def _on_set_replicas(self, cmd: SetReplicas) -> MetaResult:
        descriptor = self._range_at_epoch(cmd.range_id, cmd.epoch)
        learners = tuple(n for n in descriptor.learners if n not in cmd.replicas)
        return self._set_members(descriptor, cmd.replicas, learners)

    def _on_set_members(self, cmd: SetMembers) -> MetaResult:
        descriptor = self._range_at_epoch(cmd.range_id, cmd.epoch)
        return self._set_members(descriptor, cmd.voters, cmd.learners)

    def _set_members(
        self,
        descriptor: RangeDescriptor,
        voters: tuple[NodeId, ...],
        learners: tuple[NodeId, ...],
    ) -> MetaResult:
        if not voters:
            raise _Rejected(MetaErrorCode.BAD_REPLICAS, "a range needs at least one voter")
        if len(set(voters)) != len(voters) or len(set(learners)) != len(learners):
            raise _Rejected(MetaErrorCode.BAD_REPLICAS, "replicas must be on distinct nodes")
        both = sorted(set(voters) & set(learners))
        if both:
            raise _Rejected(
                MetaErrorCode.BAD_REPLICAS, f"nodes {both} cannot be both voter and learner"
            )
        for node in sorted((*voters, *learners)):
            if node not in self._nodes:
                raise _Rejected(MetaErrorCode.UNKNOWN_NODE, f"no node {node}")
        updated = replace(
            descriptor,
            replicas=tuple(sorted(voters)),
            learners=tuple(sorted(learners)),
            epoch=descriptor.epoch + 1,
        )
        self._ranges[updated.range_id] = updated
        # Leader hints name voters only: a learner never leads.
        if self._leaders.get(updated.range_id) not in updated.replicas:
            self._leaders.pop(updated.range_id, None)
        self._log.info(
            "members_set",
            range_id=updated.range_id,
            voters=list(updated.replicas),
            learners=list(updated.learners),
        )
        return MetaResult(ranges=(updated,))

    def _on_set_leaseholder(self, cmd: SetLeaseholder) -> MetaResult:
        descriptor = self._ranges.get(cmd.range_id)
        if descriptor is None:
            raise _Rejected(MetaErrorCode.UNKNOWN_RANGE, f"no range {cmd.range_id}")
        if cmd.node_id not in descriptor.replicas:
            raise _Rejected(
                MetaErrorCode.BAD_REPLICAS,
                f"node {cmd.node_id} is not a replica of range {cmd.range_id}",
            )
        self._leaders[cmd.range_id] = cmd.node_id
        return MetaResult(ranges=(descriptor,))

    def _on_node_joined(self, cmd: NodeJoined) -> MetaResult:
        if cmd.node_id < 1:
            raise _Rejected(MetaErrorCode.INVALID, "node ids start at 1")
        if cmd.capacity_bytes < 0:
            raise _Rejected(MetaErrorCode.INVALID, "capacity must not be negative")
        if cmd.node_id in self._removed_nodes:
            raise _Rejected(
                MetaErrorCode.NODE_REMOVED,
                f"node {cmd.node_id} was removed; a new node reserves a new id",
            )
        previous = self._nodes.get(cmd.node_id)
        self._nodes[cmd.node_id] = NodeInfo(
            node_id=cmd.node_id,
            address=cmd.address,
            alive=True,
            capacity_bytes=cmd.capacity_bytes,
            peer_address=cmd.peer_address,
            # A restart does not cancel a decommission: the node still has to be drained.
            decommissioning=previous is not None and previous.decommissioning,
        )
        self._next_node_id = max(self._next_node_id, cmd.node_id + 1)
        self._log.info("node_joined", joined=cmd.node_id, address=cmd.address)
        return MetaResult()

    def _on_reserve_node_id(self) -> MetaResult:
        node_id = NodeId(self._next_node_id)
        self._next_node_id += 1
        self._log.info("node_id_reserved", reserved=node_id)
        return MetaResult(node_id=node_id)

    def _known_node(self, node_id: NodeId) -> NodeInfo:
        node = self._nodes.get(node_id)
        if node is None:
            raise _Rejected(MetaErrorCode.UNKNOWN_NODE, f"no node {node_id}")
        return node

    def _on_decommission_node(self, cmd: DecommissionNode) -> MetaResult:
        node = self._known_node(cmd.node_id)
        self._nodes[cmd.node_id] = replace(node, decommissioning=True)
        self._log.info("node_decommissioning", decommissioned=cmd.node_id)
        return MetaResult()

    def _on_remove_node(self, cmd: RemoveNode) -> MetaResult:
        self._known_node(cmd.node_id)
        using = [
            r.range_id
            for r in self.ranges()
            if cmd.node_id in r.replicas or cmd.node_id in r.learners
        ]
        if using:
            raise _Rejected(
                MetaErrorCode.NODE_IN_USE,
                f"node {cmd.node_id} is still a member of ranges {using[:10]}",
            )
        del self._nodes[cmd.node_id]
        self._removed_nodes.add(cmd.node_id)
        self._log.info("node_removed", removed=cmd.node_id)
        return MetaResult()

    def _on_node_down(self, cmd: NodeDown) -> MetaResult:
        node = self._known_node(cmd.node_id)
        self._nodes[cmd.node_id] = replace(node, alive=False)
        self._log.info("node_marked_down", down=cmd.node_id)
        return MetaResult()

    # ----------------------------------------------------------------- helpers

    def _on_set_table_option(self, cmd: SetTableOption) -> MetaResult:
        table = self._tables.get(cmd.table)
        if table is None:
            raise _Rejected(MetaErrorCode.UNKNOWN_TABLE, f"no table {cmd.table!r}")
        if not cmd.key:
            raise _Rejected(MetaErrorCode.INVALID, "option key must be non-empty")
        options = {k: v for k, v in table.options if k != cmd.key}
        if cmd.value is not None:
            options[cmd.key] = cmd.value
        self._tables[cmd.table] = replace(table, options=tuple(sorted(options.items())))
        return MetaResult()

    def _range_at_epoch(self, range_id: int, epoch: int) -> RangeDescriptor:
        descriptor = self._ranges.get(range_id)
        if descriptor is None:
            raise _Rejected(MetaErrorCode.UNKNOWN_RANGE, f"no range {range_id}")
        if descriptor.epoch != epoch:
            raise _Rejected(
                MetaErrorCode.STALE_EPOCH,
                f"range {range_id} is at epoch {descriptor.epoch}, command names epoch {epoch}",
            )
        return descriptor

    def _replica_counts(self, nodes: Iterable[NodeId]) -> dict[NodeId, int]:
        counts = {n: 0 for n in nodes}
        for descriptor in self._ranges.values():
            for node in descriptor.replicas:
                if node in counts:
                    counts[node] += 1
        return counts

    # ----------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        """The whole state as canonical msgpack bytes: equal states give equal bytes."""
        image = _Image(
            next_range_id=self._next_range_id,
            next_group_id=self._next_group_id,
            tables=self.tables(),
            nodes=self.nodes(),
            ranges=self.ranges(),
            leaders=tuple(sorted(self._leaders.items())),
            next_node_id=self._next_node_id,
            removed_nodes=self.removed_nodes(),
        )
        return pack([FORMAT_VERSION, to_plain(image)])

    @classmethod
    def restore(cls, data: bytes, *, logger: Logger | None = None) -> MetaState:
        """Rebuild a state from ``snapshot()`` bytes; raises ``WireError`` if they are not one."""
        raw = unpack(data)
        if not isinstance(raw, list) or len(raw) != 2 or raw[0] != FORMAT_VERSION:
            raise WireError("meta snapshot: expected [version, image] of a known version")
        image = from_plain(_Image, raw[1])
        state = cls(logger=logger)
        state._next_range_id = image.next_range_id
        state._next_group_id = image.next_group_id
        state._tables = {t.name: t for t in image.tables}
        state._nodes = {n.node_id: n for n in image.nodes}
        state._ranges = {r.range_id: r for r in image.ranges}
        state._leaders = dict(image.leaders)
        # Snapshots from before node ids were allocated here lack the counter: start it above
        # every id they know (for newer snapshots it already is).
        known = (*state._nodes, *image.removed_nodes)
        state._next_node_id = max(image.next_node_id, max(known, default=0) + 1)
        state._removed_nodes = set(image.removed_nodes)
        state._check_invariants()
        return state

    def _check_invariants(self) -> None:
        """Refuse a snapshot whose pieces do not fit together rather than route by it."""
        if len(self._tables) != len({t.name for t in self._tables.values()}):
            raise WireError("meta snapshot: duplicate table")
        for descriptor in self._ranges.values():
            if descriptor.table not in self._tables:
                raise WireError(f"meta snapshot: range {descriptor.range_id} of unknown table")
            if descriptor.range_id >= self._next_range_id:
                raise WireError("meta snapshot: range id beyond the allocator")
            if descriptor.group_id >= self._next_group_id:
                raise WireError("meta snapshot: group id beyond the allocator")
        for name in sorted(self._tables):
            try:
                self.range_map(name)
            except RangeMapError as exc:
                raise WireError(f"meta snapshot: {exc}") from exc
        if any(n in self._nodes for n in self._removed_nodes):
            raise WireError("meta snapshot: a removed node is still known")
        for descriptor in self._ranges.values():
            members = (*descriptor.replicas, *descriptor.learners)
            if len(set(members)) != len(members):
                raise WireError(f"meta snapshot: range {descriptor.range_id} repeats a member")
        for range_id, node in sorted(self._leaders.items()):
            led = self._ranges.get(range_id)
            if led is None or node not in led.replicas:
                raise WireError(f"meta snapshot: bad leader hint for range {range_id}")


def _check_key(pk_type: PkType, key: object) -> None:
    """A key of the table's type; SQLite INTEGER keys are 64-bit, and bool is not an int here."""
    if pk_type is PkType.INTEGER:
        if isinstance(key, bool) or not isinstance(key, int):
            raise _Rejected(MetaErrorCode.INVALID, f"key {key!r} is not an INTEGER")
        if not INT64_MIN <= key <= INT64_MAX:
            raise _Rejected(MetaErrorCode.INVALID, f"key {key!r} is outside 64-bit INTEGER")
    elif not isinstance(key, str):
        raise _Rejected(MetaErrorCode.INVALID, f"key {key!r} is not TEXT")
