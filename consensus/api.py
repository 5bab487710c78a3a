"""The one interface both consensus backends implement, and the values that cross it.

A core is a deterministic state machine in the Sans-IO style (h11, etcd's ``raft.RawNode``):
the caller feeds it time (``tick``), messages (``step``) and requests (``propose``,
``read_index``, ...), then collects its side effects as one immutable ``Ready`` and carries
them out in a fixed order:

1. **persist** ``truncate_from``, ``entries``, ``snapshot`` and ``hard_state``; fsync if
   ``must_sync``. Votes, promises and acknowledgements in ``messages`` promise exactly this
   state, so they must not leave before it is durable (Raft Figure 2; Paxos Made Simple §2.3).
2. **send** ``messages``.
3. **apply** ``apply_snapshot`` (if any), then ``committed_entries`` in order, then answer
   ``read_states`` whose index is applied.
4. **advance** by handing the same ``Ready`` back.

Calling ``ready()`` again before ``advance()`` is a ``UsageError``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from consensus.types import (
    NO_NODE,
    ConfState,
    Entry,
    GroupId,
    HardState,
    Index,
    Message,
    NodeId,
    Snapshot,
    Term,
)

# --------------------------------------------------------------------------- errors


class ConsensusError(Exception):
    """Base of every error a core raises."""


class NotLeader(ConsensusError):
    """The request needs the leader; ``leader_hint`` is who this node believes leads."""

    def __init__(self, leader_hint: NodeId = NO_NODE) -> None:
        self.leader_hint = leader_hint
        hint = f"; try node {leader_hint}" if leader_hint != NO_NODE else "; leader unknown"
        super().__init__(f"not the leader{hint}")


class ProposalDropped(ConsensusError):
    """The leader refused the request: a limit was hit, a transfer or config change is in
    flight, or the request is malformed. Retrying later may succeed."""


class UsageError(ConsensusError):
    """The caller broke the API contract (local misuse, as opposed to a misbehaving peer)."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreConfig:
    """Settings shared by both backends, so that a comparison runs on equal terms."""

    node_id: NodeId
    group_id: GroupId = GroupId(1)
    election_timeout_ticks: int = 10
    """Followers wait a random number of ticks in [T, 2T) before campaigning (Raft §5.2)."""
    heartbeat_interval_ticks: int = 1
    pre_vote: bool = True
    """Raft thesis §9.6: a partitioned node asks before disrupting the term."""
    check_quorum: bool = True
    """Raft thesis §6.2: a leader that has not heard from a quorum for an election timeout
    steps down. Required for lease reads."""
    max_msg_bytes: int = 1 << 20
    """Upper bound on the entry bytes in one replication message."""
    max_inflight_msgs: int = 256
    """Replication messages a leader may have unacknowledged per follower (pipelining)."""
    max_uncommitted_bytes: int = 64 << 20
    """Proposals beyond this many uncommitted bytes are refused with ``ProposalDropped``."""
    max_entry_bytes: int = 8 << 20
    """A single proposal larger than this is refused."""
    max_snapshot_chunk_bytes: int = 256 << 10
    """Snapshots travel in chunks of at most this many bytes."""
    lease_clock_drift_ratio: float = 0.1
    """Assumed bound on how much faster one node's tick may run than another's. A lease is
    trusted for ``election_timeout_ticks * (1 - ratio)`` ticks after a quorum heard from
    the leader; see docs/architecture.md, "Lease reads"."""

    def validate(self) -> None:
        if self.node_id == NO_NODE:
            raise UsageError("node id 0 is reserved for 'nobody'")
        if self.heartbeat_interval_ticks < 1:
            raise UsageError("heartbeat_interval_ticks must be >= 1")
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks:
            raise UsageError("election_timeout_ticks must exceed heartbeat_interval_ticks")
        if self.max_inflight_msgs < 1 or self.max_msg_bytes < 1:
            raise UsageError("max_inflight_msgs and max_msg_bytes must be positive")
        if not 0.0 <= self.lease_clock_drift_ratio < 1.0:
            raise UsageError("lease_clock_drift_ratio must be in [0, 1)")

    def check_entry_limits(self, entry_bytes: int, uncommitted_bytes: int) -> None:
        """Refuse a proposal of ``entry_bytes`` on a leader holding ``uncommitted_bytes``.

        Both backends apply the same limits so that a comparison runs on equal terms. An
        empty uncommitted budget always admits one entry (up to ``max_entry_bytes``) so a
        single large proposal cannot wedge the group.
        """
        if entry_bytes > self.max_entry_bytes:
            raise ProposalDropped(
                f"entry of {entry_bytes} bytes exceeds max_entry_bytes={self.max_entry_bytes}"
            )
        if uncommitted_bytes > 0 and uncommitted_bytes + entry_bytes > self.max_uncommitted_bytes:
            raise ProposalDropped(
                f"{uncommitted_bytes} uncommitted bytes plus this {entry_bytes}-byte entry "
                f"exceed max_uncommitted_bytes={self.max_uncommitted_bytes}; retry once the "
                "log catches up"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class PersistedState:
    """What storage hands back on restart: the core resumes exactly from here."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    """Entries after the snapshot, ascending by index (Paxos logs may have holes)."""


# --------------------------------------------------------------------------- requests


class ChangeKind(enum.Enum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeOp:
    kind: ChangeKind
    node: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipChange:
    """One or more membership operations proposed together.

    Raft: a change that alters at most one voter goes straight to the new configuration; one
    that alters several voters passes through a joint configuration (Raft §6) which the leader
    leaves automatically once the joint entry commits. Multi-Paxos needs no joint state: a
    CONFIG entry at slot s governs the slots after s and nothing is proposed past it until it
    is chosen, so no slot is ever decided under two configurations (see ``consensus.paxos``).
    """

    ops: tuple[ChangeOp, ...]

    def to_bytes(self) -> bytes:
        packed: bytes = msgpack.packb([[op.kind.value, int(op.node)] for op in self.ops])
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> MembershipChange:
        raw = msgpack.unpackb(data)
        return cls(ops=tuple(ChangeOp(kind=ChangeKind(k), node=NodeId(n)) for k, n in raw))


class ReadMode(enum.Enum):
    SAFE = 0
    """Confirm leadership with a quorum round before answering (Raft thesis §6.4)."""
    LEASE = 1
    """Answer from the leader lease without a round (Raft thesis §6.4.1). Needs
    check_quorum and a bounded clock drift; falls back to SAFE when the lease is not held."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposed:
    """Where an accepted proposal sits: it succeeded iff the entry committed at ``index``
    carries ``term``. Any other entry committed there means the proposal was lost."""

    index: Index
    term: Term


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadState:
    """A read barrier passed: the read ``request_id`` may be served once the state machine
    has applied ``index``."""

    request_id: int
    index: Index


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    hard_state: HardState | None = None
    """New hard state to persist, or None if unchanged."""
    truncate_from: Index | None = None
    """Delete persisted entries with index >= this before writing ``entries``."""
    entries: tuple[Entry, ...] = ()
    """Entries to write (insert or overwrite by index)."""
    snapshot: Snapshot | None = None
    """Snapshot to persist; entries at or below its index may then be deleted."""
    must_sync: bool = False
    """fsync before sending: set when a vote, promise or log acknowledgement depends on it."""
    messages: tuple[Message, ...] = ()
    apply_snapshot: Snapshot | None = None
    """A snapshot received from the leader: restore the state machine from it first."""
    committed_entries: tuple[Entry, ...] = ()
    """Gap-free, ascending entries to apply (NOOP and CONFIG included; skip their payload)."""
    read_states: tuple[ReadState, ...] = ()

    def is_empty(self) -> bool:
        return (
            self.hard_state is None
            and self.truncate_from is None
            and not self.entries
            and self.snapshot is None
            and not self.messages
            and self.apply_snapshot is None
            and not self.committed_entries
            and not self.read_states
        )


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerProgress:
    match: Index
    next: Index
    state: str
    """Backend-specific replication state, e.g. "probe", "replicate", "snapshot"."""
    recent_active: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    node_id: NodeId
    group_id: GroupId
    role: Role
    term: Term
    """Raft term, or the packed promised ballot for Multi-Paxos."""
    leader: NodeId
    commit: Index
    applied: Index
    last_index: Index
    first_index: Index
    """Lowest index still in the in-memory log (snapshot index + 1 after compaction)."""
    conf: ConfState
    transferring_to: NodeId = NO_NODE
    progress: dict[NodeId, PeerProgress] = field(default_factory=dict)
    """Per-peer replication progress; filled only on the leader."""


# --------------------------------------------------------------------------- seams


class Logger(Protocol):
    """The slice of a structlog ``BoundLogger`` the cores use; tests inject a recorder."""

    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...


class ConsensusCore(Protocol):
    """Implemented by ``consensus.raft.RaftCore`` and ``consensus.paxos.PaxosCore``."""

    def tick(self) -> None: ...
    def step(self, message: Message) -> None: ...
    def campaign(self) -> None:
        """Start an election now instead of waiting for the timeout (operators, tests)."""

    def propose(self, command: bytes) -> Proposed: ...
    def read_index(self, request_id: int, *, mode: ReadMode = ReadMode.SAFE) -> None: ...
    def change_membership(self, change: MembershipChange) -> Proposed: ...
    def transfer_leadership(self, target: NodeId) -> None: ...
    def report_unreachable(self, peer: NodeId) -> None: ...
    def compact(self, index: Index, data: bytes) -> None: ...
    def has_ready(self) -> bool: ...
    def ready(self) -> Ready: ...
    def advance(self, ready: Ready) -> None: ...
    def status(self) -> Status: ...


class CoreFactory(Protocol):
    """How the simulator, the host and the runtime build a core of either backend."""

    def __call__(
        self,
        config: CoreConfig,
        *,
        rng: random.Random,
        persisted: PersistedState | None = None,
        initial_conf: ConfState | None = None,
        logger: Logger | None = None,
    ) -> ConsensusCore:
        """``initial_conf`` is the membership at index 0 (the bootstrap configuration): pass
        the same value on every start; a persisted snapshot or config entries supersede it.
        A node joining an existing group passes an empty ``ConfState`` and learns the
        membership from the leader."""
        ...
