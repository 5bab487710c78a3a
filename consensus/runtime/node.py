"""A node: the trio loop that hosts many consensus groups and carries out their Readys.

The runtime is the IO shell around the pure ``MultiGroupHost``. It makes no protocol
decisions: it feeds the host time, messages and requests, and carries out each merged
``HostReady`` in the order ``consensus.api`` prescribes:

1. **persist** every group's hard state / entries / snapshot in ONE
   ``StorageWriter.write_batch`` (one SQLite transaction, one fsync for all groups);
2. **send** the messages (the transport writes one frame per peer per call);
3. **apply** snapshots and committed entries to the state machine (worker thread), resolve
   proposal futures, serve reads whose read index is applied;
4. **advance** the host; then compact groups whose log grew past the snapshot interval.

Apply is pipelined. Step 3 hands the batch to the apply task (``_apply_loop``, through a
bounded channel, ``NodeConfig.max_apply_backlog``) and the loop advances at once, so applying
batch N in the state machine's thread overlaps persisting batch N+1 in the log store's
thread: two files, two threads, two fsync-or-not waits that used to add up. This is what
etcd's server does (raft ``Ready`` -> apply channel -> ``Advance`` before the apply finishes).
It keeps every ordering the protocol needs: a batch is only queued for apply after it was
persisted and its messages sent; batches apply in order (one task, FIFO); a proposal resolves,
and a read is served, only once the *state machine* reports the index applied; snapshots are
restored in their place in the stream. The cores believe the entries applied a little early,
which only their own bookkeeping sees (configuration entries are applied by the cores
themselves and carry nothing for the state machine). Compaction, which needs the host, is
handed back to the loop. In a 1-group, 64-client benchmark this took apply (~1 ms per batch,
thread hop included) off the leader loop's critical path.

Votes, promises and acks leave only after step 1 returned, so they never promise state that
is not durable (Raft Figure 2; Paxos Made Simple §2.3).

One task owns the host (``_run_loop``), so host calls never interleave. Other tasks only
queue work and wake it: the inbound pump (messages from the transport), request callers
(``propose``, ``read``, ``create_group``) and the transport's unreachable callback. Each loop
drains what is there with bounded counts, so many requests share one fsync (group commit)
and one frame per peer (batching).

Time. The loop turns trio's clock into logical ticks: one tick per ``tick_interval_ms``,
scheduled on a fixed grid so a slow loop delivers the ticks it missed instead of stretching
time. Dropping ticks would be unsafe for lease reads: a leader whose clock ran slow would
hold its lease longer in real time than its followers wait before electing (Raft thesis
§6.4.1). The host's node-liveness clock is the exception: it takes at most one turn's usual
ticks from a burst (``MultiGroupHost.tick``), so a late loop does not suspect its peers for
its own lateness. With the defaults (10 ms ticks, ``election_timeout_ticks=20``,
``heartbeat_interval_ticks=2``) a follower campaigns after 200-400 ms of silence, leaders
heartbeat every 20 ms, and a lease lasts ``20 * (1 - 0.1) = 18`` ticks = 180 ms. A group
the host quiesced wakes when the host's node-liveness detector suspects its leader's node
(``HostConfig.node_dead_ticks``, 20 ticks = 200 ms), so the worst case from a leader crash to
a new leader is about ``node_dead + 2 * election_timeout`` plus a pre-vote and a vote round
trip: under a second on a LAN.

Requests. ``propose`` resolves with the state machine's result when the entry at the
proposed ``(index, term)`` applies (``consensus.api.Proposed``), fails at once with
``NotLeader(hint)`` / ``ProposalDropped`` / ``UnknownGroup``, with ``ProposalLost`` when
another entry applies at that index, with ``OutcomeUnknown`` when a snapshot skips over the
index, and with ``RequestTimeout`` (outcome unknown) at the deadline. ``read`` passes a read
barrier (``read_index``) and answers from the local state machine once it has applied the
barrier's index (Raft thesis §6.4). The number of queued plus in-flight requests is bounded;
beyond it requests fail with ``Overloaded``.

Membership. ``create_group(..., seeded=True)`` starts a group from a snapshot of what the
state machine already holds at ``SEED_INDEX`` (a range that inherited its rows), so no
replica can ever rebuild it from index 1; ``join_group`` hosts an empty replica that learns
the configuration from the leader (``consensus.api.CoreFactory``); ``change_membership``
proposes a ``MembershipChange`` on the leader and resolves like a proposal, when its CONFIG
entry applies; ``remove_group`` takes a replica off the node, its log state off the log
store and, in apply order, its data off the state machine. ``add_peer``/``remove_peer``
change the TCP transport's address book for nodes that join or leave.

Storage failure. ``StorageFailed`` (disk full, IO error, failed fsync) stops the loop: after
a failed fsync nothing we say can be trusted to be durable, so the node fails every pending
request and refuses new ones with ``NodeFailed`` until it is restarted from disk.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
import trio

from consensus.api import (
    ConsensusError,
    CoreConfig,
    Logger,
    MembershipChange,
    NotLeader,
    PersistedState,
    ProposalDropped,
    Proposed,
    ReadMode,
    Ready,
    Role,
    Status,
    UsageError,
)
from consensus.backends import Backend
from consensus.codec import register_default_bodies
from consensus.host import (
    GroupReady,
    HostConfig,
    HostReady,
    HostStatistics,
    MultiGroupHost,
    UnknownGroup,
)
from consensus.runtime.errors import (
    GroupConflict,
    GroupRemoved,
    NodeClosed,
    NodeFailed,
    OutcomeUnknown,
    Overloaded,
    ProposalLost,
    RequestTimeout,
)
from consensus.runtime.faults import FaultyTransport
from consensus.runtime.layout import DATA_FILE, LOG_FILE
from consensus.runtime.statemachine import KVStateMachine, StateMachine, StateMachineError
from consensus.storage import StorageFailed, StorageWriter, open_storage_writer
from consensus.transport import (
    MemoryNetwork,
    TcpTransport,
    TcpTransportConfig,
    Transport,
    open_tcp_transport,
)
from consensus.types import (
    ConfState,
    Entry,
    GroupId,
    HardState,
    Index,
    Message,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)

_T = TypeVar("_T")

SEED_INDEX = Index(5)
"""Where a seeded group's log starts (``Node.create_group(..., seeded=True)``): its replicas
begin from a snapshot at this index, so the log holds nothing at or below it and any replica
added later must receive a snapshot. A range whose first rows did not come from its own log
(the right half of a split inherits the parent's rows) must never be rebuilt by replaying
from index 1 on a new replica, which would start it empty; CockroachDB starts such ranges at
a raised initial log index for the same reason. Above 0 so no real entry can sit there."""
SEED_TERM = Term(1)
"""The term of the seed snapshot and of the seeded hard state (for Multi-Paxos, the packed
ballot ``0.1``: below every ballot a leader ever uses, so it rules nothing out)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    node_id: NodeId
    cluster_id: str
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    """Port of the node-to-node transport (0 picks a free one; see ``Node.listen_address``)."""
    peers: Mapping[NodeId, tuple[str, int]] = field(default_factory=dict)
    secret: bytes | None = None
    create: bool = True
    """Initialise a new log store when none exists (``False``: refuse to start without one)."""
    tick_interval_ms: int = 10
    election_timeout_ticks: int = 20
    heartbeat_interval_ticks: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    snapshot_interval_entries: int = 10_000
    """Compact a group's log once this many entries were applied since its last snapshot."""
    max_pending_requests: int = 10_000
    """Queued plus in-flight requests; more fail with ``Overloaded``."""
    max_messages_per_loop: int = 8192
    max_requests_per_loop: int = 4096
    max_readys_per_loop: int = 4
    """How many persist/send/apply rounds a loop runs before looking at new input again."""
    max_apply_backlog: int = 4
    node_heartbeat_ticks: int = 2
    """Host liveness beat per peer node (``HostConfig.node_heartbeat_ticks``). Every beat
    wakes the receiver's loop, so with ``idle_tick_stride`` this sets a quiet node's cost."""
    node_dead_ticks: int = 20
    idle_tick_stride: int = 1
    """While the host has no awake group, the loop sleeps this many ticks between wake-ups
    (any message or request still wakes it at once) and then delivers every tick that
    passed: ticks are late, never dropped, and no lease can be in use while every group is
    quiesced (the host downgrades lease reads until a woken group has been awake for an
    election timeout). Saves ~100 empty loop turns a second on a quiet node. 1 (off) by
    default until it has been validated end to end: the 1,000-idle-group benchmark runs made
    with 5 (and node_heartbeat_ticks=5) did not converge on a loaded machine, for reasons
    not yet separated from the load (see benchmarks/results/runtime-2026-11-22.md)."""
    """Persisted batches queued for the state machine; when full the loop waits (backpressure)."""
    max_inbox_messages: int = 16384
    """Messages the inbound pump buffers before it stops reading (backpressure to peers)."""
    max_log_db_bytes: int | None = None
    fsync: bool = True
    """False: the log store never fsyncs (benchmarks of what durability costs only; a crash
    of the machine may then lose acknowledged writes)."""
    allow_faults: bool = False
    """Wrap the transport in ``FaultyTransport`` so that links can be blocked or slowed on
    command (experiments and tests only)."""
    seed: int | None = None
    """Seed of the host's random generator (election jitter); None draws one from the OS."""

    def validate(self) -> None:
        if self.node_id <= 0:
            raise ValueError("node ids start at 1")
        if self.tick_interval_ms < 1:
            raise ValueError("tick_interval_ms must be >= 1")
        if self.snapshot_interval_entries < 1:
            raise ValueError("snapshot_interval_entries must be >= 1")
        for name in (
            "max_pending_requests",
            "max_messages_per_loop",
            "max_requests_per_loop",
            "max_readys_per_loop",
            "max_apply_backlog",
            "idle_tick_stride",
            "max_inbox_messages",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def core_config(self, group_id: GroupId) -> CoreConfig:
        return CoreConfig(
            node_id=self.node_id,
            group_id=group_id,
            election_timeout_ticks=self.election_timeout_ticks,
            heartbeat_interval_ticks=self.heartbeat_interval_ticks,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatistics:
    loops: int
    ticks: int
    readys: int
    batches_persisted: int
    fsyncs: int
    """fsyncs SQLite completed on the log store (measured by its VFS shim)."""
    frames_sent: int
    messages_sent: int
    messages_received: int
    entries_committed: int
    """Committed entries handed to the state machine (including re-deliveries)."""
    entries_applied: int
    """Entries the state machine applied for the first time."""
    proposals: int
    reads: int
    snapshots_taken: int
    snapshots_restored: int
    pending_requests: int
    failed: bool
    persist_us: int = 0
    """Wall time the loop waited for ``write_batch`` (thread hop + commit + fsync)."""
    apply_us: int = 0
    """Wall time the apply task waited for the state machine (thread hop + apply + reads);
    it overlaps the loop's persists."""
    loop_busy_us: int = 0
    """Wall time spent in loop iterations (the rest of the time the loop was idle)."""
    messages_per_loop_max: int = 0
    requests_per_loop_max: int = 0
    messages_rejected: int = 0
    """Peer messages a group could not take (wrong backend's body, misrouted) and dropped."""
    messages_dropped: int = 0
    """Messages the transport dropped (queue full, no route, connection lost)."""
    persist_us_max: int = 0
    """Longest single ``write_batch`` wait."""
    apply_wait_us: int = 0
    """Wall time the loop waited for room in the apply backlog (the state machine behind)."""
    ticks_per_loop_max: int = 0
    """Most ticks one loop turn delivered (a burst means the loop ran late)."""
    loop_us_max: int = 0
    """Longest loop turn (wall time)."""
    term_changes: int = 0
    """Times a hosted group persisted a new term (Raft) or promised ballot (Multi-Paxos):
    elections and ballot bumps, the measure of leader churn."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupStatus:
    group_id: GroupId
    backend: Backend
    role: Role
    term: Term
    leader: NodeId
    commit: Index
    applied: Index
    """What the state machine has applied (may run ahead of the core's view after restart)."""
    last_index: Index
    first_index: Index
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    progress: tuple[tuple[NodeId, Index], ...] = ()
    """On the leader: each other member's match index, ascending by node (a learner has
    caught up once its match reaches the leader's ``commit``); empty on followers."""


class _Waiter:
    """One request's completion slot (a tiny future)."""

    __slots__ = ("_event", "error", "result")

    def __init__(self) -> None:
        self._event = trio.Event()
        self.result: bytes | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def succeed(self, result: bytes | None) -> None:
        if not self.done:
            self.result = result
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.error = error
            self._event.set()

    async def wait(self, timeout_s: float | None) -> bytes | None:
        with trio.move_on_after(math.inf if timeout_s is None else timeout_s):
            await self._event.wait()
        if not self.done:
            self.fail(RequestTimeout(f"no outcome within {timeout_s} s; the outcome is unknown"))
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(slots=True)
class _Propose:
    group_id: GroupId
    command: bytes
    waiter: _Waiter


@dataclass(slots=True)
class _Read:
    group_id: GroupId
    query: bytes
    mode: ReadMode
    waiter: _Waiter
    index: Index | None = None
    """Set when the read barrier passed: serve once applied reaches it."""
    term: Term | None = None
    """The leader's term (Paxos: promised ballot) when the barrier was requested: a read
    outlives only the leadership it was asked of (``Node._fail_deposed_reads``)."""


@dataclass(slots=True)
class _AddGroup:
    group_id: GroupId
    backend: Backend
    conf: ConfState
    persisted: PersistedState | None
    waiter: _Waiter


@dataclass(slots=True)
class _Transfer:
    group_id: GroupId
    target: NodeId
    waiter: _Waiter


@dataclass(slots=True)
class _ChangeMembership:
    group_id: GroupId
    change: MembershipChange
    waiter: _Waiter


@dataclass(slots=True)
class _RemoveGroup:
    group_id: GroupId
    waiter: _Waiter


_Request = _Propose | _Read | _AddGroup | _Transfer | _ChangeMembership | _RemoveGroup


@dataclass(slots=True)
class _ApplyWork:
    """What the worker thread does for one group in one loop."""

    group_id: GroupId
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    compact_candidate: bool
    results: tuple[bytes | None, ...] = ()
    applied_after: Index = Index(0)
    snapshot_data: bytes | None = None
    dropped: _Waiter | None = None
    """Set on the marker ``remove_group`` queues: drop the group's state machine data here,
    in the apply order, after every batch queued for it before it was removed."""


class Node:
    """Use through ``open_node``. All public coroutines may be called from any task."""

    def __init__(
        self, config: NodeConfig, writer: StorageWriter, sm: StateMachine, log: Logger
    ) -> None:
        self._config = config
        self._writer = writer
        self._sm = sm
        self._log = log
        seed = config.seed if config.seed is not None else random.SystemRandom().getrandbits(64)
        self._host = MultiGroupHost(
            HostConfig(
                node_id=config.node_id,
                node_heartbeat_ticks=config.node_heartbeat_ticks,
                node_dead_ticks=config.node_dead_ticks,
            ),
            rng=random.Random(seed),
            logger=log,
        )
        self._transport: Transport | None = None
        self._tcp: TcpTransport | None = None
        """The TCP transport under any fault wrapper (peers are added and removed on it)."""
        self._listen_address: tuple[str, int] | None = None
        self._sm_limiter = trio.CapacityLimiter(1)
        self._wakeup = trio.Event()
        self._inbox: deque[Message] = deque()
        self._inbox_space = trio.Event()
        self._requests: deque[_Request] = deque()
        self._unreachable: set[NodeId] = set()
        # group -> index -> (term, waiter): proposals waiting for their index to apply.
        self._proposals: dict[GroupId, dict[Index, tuple[Term, _Waiter]]] = {}
        self._reads: dict[int, _Read] = {}
        self._barrier_passed: dict[GroupId, list[_Read]] = {}
        self._read_ids = itertools.count(1)
        self._last_compact: dict[GroupId, Index] = {}
        self._clock_jump_s = 0.0
        self.faults: FaultyTransport | None = None
        """Link fault controls, when the node runs with ``allow_faults``."""
        # Last persisted term per group, to count term changes (leader churn) cheaply.
        self._terms: dict[GroupId, Term] = {}
        # Batches persisted and sent, waiting for the apply task, in order.
        self._apply_tx, self._apply_rx = trio.open_memory_channel[
            tuple[list[_ApplyWork], list[_Read]]
        ](config.max_apply_backlog)
        # Snapshots the apply task took, for the loop to hand to the host (it owns the host).
        self._compactions: list[_ApplyWork] = []
        # remove_group markers queued for the apply task, failed with everything else.
        self._drops: list[_Waiter] = []
        self._admin_lock = trio.Lock()
        self._failure: str | None = None
        self._closed = False
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "loops",
                "ticks",
                "readys",
                "batches",
                "committed",
                "applied",
                "proposals",
                "reads",
                "snapshots_taken",
                "snapshots_restored",
                "persist_us",
                "apply_us",
                "loop_busy_us",
                "messages_per_loop_max",
                "requests_per_loop_max",
                "messages_rejected",
                "ticks_per_loop_max",
                "loop_us_max",
                "persist_us_max",
                "apply_wait_us",
                "term_changes",
            ),
            0,
        )

    # ----------------------------------------------------------------------- public API

    @property
    def node_id(self) -> NodeId:
        return self._config.node_id

    @property
    def config(self) -> NodeConfig:
        return self._config

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """Where the TCP transport listens (None on a memory network)."""
        return self._listen_address

    @property
    def failure(self) -> str | None:
        """Why the node stopped accepting requests, or None while healthy."""
        return self._failure

    @property
    def state_machine(self) -> StateMachine:
        return self._sm

    async def propose(
        self, group_id: GroupId, command: bytes, *, timeout: float | None = None
    ) -> bytes | None:
        """Replicate ``command`` in ``group_id``; the state machine's result once applied."""
        waiter = self._submit(_Propose(group_id=group_id, command=command, waiter=_Waiter()))
        return await waiter.wait(timeout)

    async def read(
        self,
        group_id: GroupId,
        query: bytes,
        *,
        mode: ReadMode = ReadMode.SAFE,
        timeout: float | None = None,
    ) -> bytes:
        """A linearizable read: ``StateMachine.query`` after a read barrier (ReadIndex, or
        the leader lease in ``LEASE`` mode; Raft thesis §6.4)."""
        read = _Read(group_id=group_id, query=query, mode=mode, waiter=_Waiter())
        result = await self._submit(read).wait(timeout)
        if result is None:  # query always returns bytes; None would be a runtime bug
            raise NodeFailed("read completed without a result")
        return result

    async def create_group(
        self,
        group_id: GroupId,
        backend: Backend | str,
        voters: Sequence[int],
        *,
        seeded: bool = False,
    ) -> bool:
        """Host a replica of a new group (call it on every member). Persisted in the log
        store's group table so a restart re-hosts it. Returns False if the group already
        exists with the same backend and voters (idempotent), raises ``GroupConflict`` if
        it exists with others.

        ``seeded=True``: the replica starts from a snapshot at ``(SEED_INDEX, SEED_TERM)``
        with configuration ``voters`` whose data is the state machine's current state of the
        group, which must be at ``applied_index == SEED_INDEX`` (else ``ValueError``; see
        ``KVStateMachine.seed_group``). The snapshot and a hard state (term ``SEED_TERM``,
        commit ``SEED_INDEX``) are persisted with the group's registration in one
        transaction before the core starts, so a restart comes back identically, and the
        log starts after ``SEED_INDEX``: a replica added later is sent a snapshot and never
        replays the group from index 1 (see ``SEED_INDEX``)."""
        chosen = Backend(backend)
        conf = ConfState(voters=tuple(sorted({NodeId(v) for v in voters})))
        if not conf.voters or any(v <= 0 for v in conf.voters):
            raise ValueError("a group needs at least one voter, ids >= 1")
        self._check_accepting()
        async with self._admin_lock:
            if not await self._check_new_group(group_id, chosen, conf):
                return False
            persisted: PersistedState | None = None
            if seeded:
                applied, data = await self._sm_call(self._seed_image, group_id)
                if applied != SEED_INDEX:
                    raise ValueError(
                        f"group {group_id} cannot be seeded: its state machine is at applied "
                        f"index {applied}, a seeded group must be at SEED_INDEX={SEED_INDEX}"
                    )
                persisted = PersistedState(
                    hard_state=HardState(term=SEED_TERM, commit=SEED_INDEX),
                    snapshot=Snapshot(
                        meta=SnapshotMeta(index=SEED_INDEX, term=SEED_TERM, conf=conf), data=data
                    ),
                )
            await self._host_new_group(group_id, chosen, conf, persisted)
        self._log.info("group_created", group_id=int(group_id), backend=chosen.value, seeded=seeded)
        return True

    async def join_group(self, group_id: GroupId, backend: Backend | str) -> bool:
        """Host an empty replica of an existing group, for its leader to add with
        ``change_membership`` (ADD_LEARNER, then ADD_VOTER). The core starts with an empty
        configuration and learns the membership from the leader's log or snapshot
        (``consensus.api.CoreFactory``); being in no configuration, it never campaigns.
        Persisted in the group table, so a restart re-hosts it with what it has learned.
        Returns False if it is already hosted as a joined replica of that backend; raises
        ``GroupConflict`` if the group is hosted otherwise.

        State machine data this node still holds for the group (left over from a replica
        removed earlier whose ``remove_group`` was cut short by a crash) is dropped first:
        a new replica's state must come entirely from the leader, and stale applied indexes
        would make it skip entries."""
        chosen = Backend(backend)
        conf = ConfState()
        self._check_accepting()
        async with self._admin_lock:
            if not await self._check_new_group(group_id, chosen, conf):
                return False
            await self._sm_call(self._sm.drop_group, group_id)
            await self._host_new_group(group_id, chosen, conf, None)
        self._log.info("group_joined", group_id=int(group_id), backend=chosen.value)
        return True

    async def change_membership(
        self, group_id: GroupId, change: MembershipChange, *, timeout: float | None = None
    ) -> ConfState:
        """Propose ``change`` through this node's replica, which must lead ``group_id``, and
        return the group's configuration once the change's entry has committed and this
        node has applied it (Raft §6 / thesis §4; Multi-Paxos CONFIG slots).

        A Raft change that alters several voters at once commits a joint configuration
        first (Raft §6): the configuration returned is then still joint (``voters_outgoing``
        set), and the leader proposes leaving it by itself; a caller that needs the final
        configuration waits for ``status(group_id)`` to show it. Raises ``NotLeader`` (with
        the hint), ``ProposalDropped`` (another change in flight, an invalid change),
        ``UnknownGroup``; ``RequestTimeout`` (outcome unknown) at the deadline, like
        ``propose``."""
        waiter = self._submit(
            _ChangeMembership(group_id=group_id, change=change, waiter=_Waiter()), admin=True
        )
        await waiter.wait(timeout)
        return self._host.status(group_id).conf

    async def remove_group(self, group_id: GroupId) -> bool:
        """Stop hosting this node's replica of ``group_id`` and delete its state: the
        replica leaves the host (requests pending on it fail with ``GroupRemoved``), its log
        state leaves the log store (a restart does not re-host it), then the state machine
        drops its data (``StateMachine.drop_group``) after every batch already queued for
        it has applied. Returns False if the group is not hosted (idempotent). Call it once
        the group's configuration no longer includes this node; removing a voter that the
        group still counts on costs the group that vote."""
        self._check_accepting()
        async with self._admin_lock:
            if not any(info.group_id == group_id for info in await self._writer.list_groups()):
                return False
            await self._submit(_RemoveGroup(group_id=group_id, waiter=_Waiter()), admin=True).wait(
                None
            )
            try:
                await self._writer.delete_group(group_id)
            except StorageFailed as exc:
                self._fail(f"storage failed: {exc}")
                raise NodeFailed(self._failure or str(exc)) from exc
            dropped = _Waiter()
            self._drops.append(dropped)
            marker = _ApplyWork(
                group_id=group_id,
                snapshot=None,
                entries=(),
                compact_candidate=False,
                dropped=dropped,
            )
            try:
                await self._apply_tx.send(([marker], []))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise NodeFailed(f"node {self.node_id}: the apply task stopped") from exc
            try:
                await dropped.wait(None)
            finally:
                self._drops.remove(dropped)
        self._log.info("group_removed", group_id=int(group_id))
        return True

    def add_peer(self, node_id: int, host: str, port: int) -> None:
        """Learn (or change) the transport address of node ``node_id`` (a node that joined
        the cluster). A no-op on a memory network, where every node is reachable."""
        if node_id == self.node_id:
            return
        if self._tcp is not None:
            self._tcp.add_peer(NodeId(node_id), host, port)

    def remove_peer(self, node_id: int) -> None:
        """Forget node ``node_id``'s address and drop what is queued for it (it left the
        cluster). A no-op on a memory network."""
        if self._tcp is not None and node_id != self.node_id:
            self._tcp.remove_peer(NodeId(node_id))

    async def _check_new_group(self, group_id: GroupId, backend: Backend, conf: ConfState) -> bool:
        """False if ``group_id`` is registered with this backend and bootstrap conf (the
        call is a repeat), ``GroupConflict`` if with others, True if unknown."""
        for info in await self._writer.list_groups():
            if info.group_id == group_id:
                if info.backend is backend and info.conf == conf:
                    return False
                raise GroupConflict(
                    f"group {group_id} exists as {info.backend.value} with voters "
                    f"{list(info.conf.voters)}"
                )
        return True

    async def _host_new_group(
        self,
        group_id: GroupId,
        backend: Backend,
        conf: ConfState,
        persisted: PersistedState | None,
    ) -> None:
        try:
            await self._writer.create_group(group_id, backend, conf, initial=persisted)
        except StorageFailed as exc:
            self._fail(f"storage failed: {exc}")
            raise NodeFailed(self._failure or str(exc)) from exc
        add = _AddGroup(
            group_id=group_id, backend=backend, conf=conf, persisted=persisted, waiter=_Waiter()
        )
        await self._submit(add, admin=True).wait(None)

    def _seed_image(self, group_id: GroupId) -> tuple[Index, bytes]:
        """State machine thread: the applied index and the snapshot taken at it, together."""
        return self._sm.applied_index(group_id), self._sm.snapshot(group_id)

    async def transfer_leadership(
        self, group_id: GroupId, target: int, *, timeout: float | None = None
    ) -> None:
        """Ask this node's replica, which must lead ``group_id``, to hand leadership to
        ``target`` (Raft thesis §3.10; Multi-Paxos the same way). Returns once the transfer
        has started; the target takes over within an election timeout, or the leader gives
        up and keeps leading. Raises ``NotLeader`` (with a hint) on a follower."""
        waiter = self._submit(
            _Transfer(group_id=group_id, target=NodeId(target), waiter=_Waiter()), admin=True
        )
        await waiter.wait(timeout)

    def jump_clock(self, seconds: float) -> None:
        """Fault injection: this node's clock jumps ``seconds`` forward, so the ticks of that
        interval are delivered at once on the next loop turn (timers fire early relative to
        the other nodes, as after a VM pause or a clock step)."""
        if seconds < 0:
            raise ValueError("the clock only jumps forward")
        self._clock_jump_s += seconds
        self._wake()

    def suspected_peers(self) -> tuple[NodeId, ...]:
        """Peer nodes this node has not heard from for ``node_dead_ticks`` (host liveness)."""
        return self._host.suspected_peers()

    def group_ids(self) -> tuple[GroupId, ...]:
        return self._host.group_ids()

    def status(self, group_id: GroupId) -> GroupStatus:
        st = self._host.status(group_id)
        return GroupStatus(
            group_id=group_id,
            backend=self._host.backend(group_id),
            role=st.role,
            term=st.term,
            leader=st.leader,
            commit=st.commit,
            applied=self._sm.applied_index(group_id),
            last_index=st.last_index,
            first_index=st.first_index,
            voters=st.conf.voters,
            learners=st.conf.learners,
            progress=tuple(
                (node, st.progress[node].match)
                for node in sorted(st.progress)
                if node != self.node_id
            ),
        )

    def statistics(self) -> NodeStatistics:
        c = self._counts
        store = self._writer.statistics()
        transport = self._transport.statistics() if self._transport is not None else None
        return NodeStatistics(
            loops=c["loops"],
            ticks=c["ticks"],
            readys=c["readys"],
            batches_persisted=c["batches"],
            fsyncs=store.fsyncs,
            frames_sent=transport.frames_sent if transport else 0,
            messages_sent=transport.messages_sent if transport else 0,
            messages_received=transport.messages_received if transport else 0,
            entries_committed=c["committed"],
            entries_applied=c["applied"],
            proposals=c["proposals"],
            reads=c["reads"],
            snapshots_taken=c["snapshots_taken"],
            snapshots_restored=c["snapshots_restored"],
            pending_requests=self._pending_requests(),
            failed=self._failure is not None,
            persist_us=c["persist_us"],
            apply_us=c["apply_us"],
            loop_busy_us=c["loop_busy_us"],
            messages_per_loop_max=c["messages_per_loop_max"],
            requests_per_loop_max=c["requests_per_loop_max"],
            messages_rejected=c["messages_rejected"],
            messages_dropped=transport.messages_dropped if transport else 0,
            persist_us_max=c["persist_us_max"],
            apply_wait_us=c["apply_wait_us"],
            ticks_per_loop_max=c["ticks_per_loop_max"],
            loop_us_max=c["loop_us_max"],
            term_changes=c["term_changes"],
        )

    def host_statistics(self) -> HostStatistics:
        return self._host.statistics()

    def _pending_requests(self) -> int:
        return (
            len(self._requests)
            + sum(len(p) for p in self._proposals.values())
            + len(self._reads)
            + sum(len(r) for r in self._barrier_passed.values())
        )

    # ----------------------------------------------------------------------- queueing

    def _check_accepting(self) -> None:
        if self._failure is not None:
            raise NodeFailed(f"node {self.node_id} stopped accepting requests: {self._failure}")
        if self._closed:
            raise NodeClosed(f"node {self.node_id} is shutting down")

    def _submit(self, request: _Request, *, admin: bool = False) -> _Waiter:
        self._check_accepting()
        # Admin work (a group joining) is never refused for load: it is rare and bounded.
        if not admin and self._pending_requests() >= self._config.max_pending_requests:
            raise Overloaded(
                f"node {self.node_id} is overloaded: {self._config.max_pending_requests} "
                "requests pending; retry later"
            )
        self._requests.append(request)
        self._wake()
        return request.waiter

    def _wake(self) -> None:
        self._wakeup.set()

    def _on_unreachable(self, peer: NodeId) -> None:
        # Called from the transport, possibly while the loop is between ready() and
        # advance(). Recorded and handed to the host with the next tick, not at once: a core
        # may answer the report with a retransmission to the same dead peer, which would be
        # dropped and reported again, spinning the loop without end. Once per tick bounds it.
        self._unreachable.add(peer)

    # ----------------------------------------------------------------------- start-up

    async def _recover(self) -> None:
        """Re-host every group in the store with its persisted state (raises
        ``StorageCorrupt`` for a damaged log: the node must not start on it)."""
        infos = await self._writer.list_groups()
        states = await self._writer.load_all()
        for info in infos:
            persisted = states[info.group_id]
            snap = persisted.snapshot
            applied = self._sm.applied_index(info.group_id)
            if snap is not None and applied < snap.meta.index:
                # The state machine lost applies the log no longer holds (power loss with
                # synchronous=NORMAL, or a crash between persisting a leader's snapshot and
                # installing it): restore it from the durable snapshot.
                await self._sm_call(self._sm.restore, info.group_id, snap)
                self._counts["snapshots_restored"] += 1
            self._last_compact[info.group_id] = snap.meta.index if snap else Index(0)
            self._terms[info.group_id] = persisted.hard_state.term
            self._host.add_group(
                info.group_id,
                info.backend,
                self._config.core_config(info.group_id),
                persisted=persisted,
                initial_conf=info.conf,
            )
        self._log.info(
            "node_recovered",
            groups=len(infos),
            entries=sum(len(s.entries) for s in states.values()),
        )

    # ----------------------------------------------------------------------- tasks

    async def _pump_inbound(self, inbound: trio.MemoryReceiveChannel[Message]) -> None:
        # Everything already queued moves in one go. ``async for`` costs one scheduler round
        # per message, which capped a node's inbound rate at a few thousand messages a
        # second: 64 busy groups send more (heartbeats alone are 64 x 2 x 50/s per leader
        # node), the backlog grew to seconds, and leaders that were alive looked dead to
        # their followers (elections, CheckQuorum step-downs): the 64-group collapse.
        inbox = self._inbox
        limit = self._config.max_inbox_messages
        while True:
            try:
                message = inbound.receive_nowait()
            except trio.WouldBlock:
                try:
                    message = await inbound.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return  # the transport closed its side (shutdown) with nothing left queued
            inbox.append(message)
            self._wake()
            while len(inbox) >= limit:
                self._inbox_space = trio.Event()
                await self._inbox_space.wait()

    async def _run_loop(self) -> None:
        interval_s = self._config.tick_interval_ms / 1000.0
        next_tick = trio.current_time() + interval_s
        try:
            while self._failure is None:
                if not (self._inbox or self._requests):
                    deadline = next_tick
                    if self._host.statistics().awake_groups == 0:
                        deadline += (self._config.idle_tick_stride - 1) * interval_s
                    with trio.move_on_at(deadline):
                        await self._wakeup.wait()
                # A fresh event before draining: a wake during this loop is not lost.
                self._wakeup = trio.Event()
                now = trio.current_time()
                if self._clock_jump_s:
                    next_tick -= self._clock_jump_s
                    self._clock_jump_s = 0.0
                ticks = 0
                while next_tick <= now:
                    ticks += 1
                    next_tick += interval_s
                await self._loop_once(ticks)
                busy_us = int((trio.current_time() - now) * 1e6)
                c = self._counts
                c["loop_busy_us"] += busy_us
                c["loop_us_max"] = max(c["loop_us_max"], busy_us)
                c["ticks_per_loop_max"] = max(c["ticks_per_loop_max"], ticks)
        except (StorageFailed, StateMachineError) as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
        except trio.BrokenResourceError:
            pass  # the apply task stopped on a state machine failure it recorded

    async def _loop_once(self, ticks: int) -> None:
        host = self._host
        self._counts["loops"] += 1
        if self._compactions:
            self._compact()
        if ticks:
            for peer in sorted(self._unreachable):
                host.report_unreachable(peer)
            self._unreachable.clear()
        inbox = self._inbox
        steps = min(len(inbox), self._config.max_messages_per_loop)
        for _ in range(steps):
            self._step_inbound(inbox.popleft())
        c = self._counts
        c["messages_per_loop_max"] = max(c["messages_per_loop_max"], steps)
        if len(inbox) < self._config.max_inbox_messages:
            self._inbox_space.set()
        # A turn normally carries one tick (``idle_tick_stride`` while idle); more means the
        # loop ran late: the groups get every tick, the liveness detector only the usual
        # share, since what peers sent meanwhile is still waiting in the transport.
        usual = self._config.idle_tick_stride
        for i in range(ticks):
            host.tick(liveness=i < usual)
        self._counts["ticks"] += ticks
        if ticks and self._reads:
            self._fail_deposed_reads()
        requests = self._requests
        starts = min(len(requests), self._config.max_requests_per_loop)
        for _ in range(starts):
            self._start_request(requests.popleft())
        c["requests_per_loop_max"] = max(c["requests_per_loop_max"], starts)
        if requests or inbox or self._compactions:
            self._wake()  # bounded per loop: the rest waits for the next iteration
        for _ in range(self._config.max_readys_per_loop):
            if not host.has_ready():
                break
            await self._handle_ready(host.ready())

    def _fail_deposed_reads(self) -> None:
        """Fail the read barriers of groups this node no longer leads, or leads in a later
        term than when the read was asked. A leader that steps down (CheckQuorum, a higher
        term) forgets its pending ReadIndex requests: without this they would wait for their
        deadline although they can never pass here, and a client cut off from the new
        leader's side would not learn to go there. Once per tick, only for groups with reads
        pending."""
        roles: dict[GroupId, Status | None] = {}
        for request_id, read in list(self._reads.items()):
            group_id = read.group_id
            if group_id not in roles:
                try:
                    roles[group_id] = self._host.status(group_id)
                except UnknownGroup:
                    roles[group_id] = None
            st = roles[group_id]
            # Not leading now, or leading again after a step-down in between: either way the
            # core dropped this barrier with the leadership it was asked of.
            if st is None or st.role is not Role.LEADER or st.term != read.term:
                del self._reads[request_id]
                hint = st.leader if st is not None else NodeId(0)
                read.waiter.fail(NotLeader(hint))

    def _step_inbound(self, message: Message) -> None:
        """Hand one peer message to the host. A message a group cannot take -- a body of
        the other backend (a peer configured with a different backend for this group) or a
        misrouted envelope -- is refused by the core with ``UsageError`` before it changes
        anything; drop it like a malformed frame instead of letting one peer stop the node."""
        try:
            self._host.step(message)
        except UsageError as exc:
            self._counts["messages_rejected"] += 1
            self._log.warning(
                "peer_message_rejected",
                src=int(message.src),
                group_id=int(message.group_id),
                body=type(message.body).__name__,
                reason=str(exc),
            )

    def _start_request(self, request: _Request) -> None:
        host = self._host
        match request:
            case _Propose(group_id=group_id, command=command, waiter=waiter):
                if waiter.done:  # timed out while queued
                    return
                self._counts["proposals"] += 1
                try:
                    proposed = host.propose(group_id, command)
                except (NotLeader, ProposalDropped, UnknownGroup) as exc:
                    waiter.fail(exc)
                    return
                self._await_entry(group_id, proposed, waiter)
            case _Read(group_id=group_id, mode=mode, waiter=waiter):
                if waiter.done:
                    return
                self._counts["reads"] += 1
                request_id = next(self._read_ids)
                try:
                    host.read_index(group_id, request_id, mode=mode)
                except (NotLeader, ProposalDropped, UnknownGroup) as exc:
                    waiter.fail(exc)
                    return
                request.term = host.status(group_id).term
                self._reads[request_id] = request
            case _AddGroup(group_id=group_id, backend=backend, conf=conf, waiter=waiter):
                try:
                    host.add_group(
                        group_id,
                        backend,
                        self._config.core_config(group_id),
                        persisted=request.persisted,
                        initial_conf=conf,
                    )
                except (ConsensusError, ValueError) as exc:
                    waiter.fail(exc)
                    return
                persisted = request.persisted
                snap = persisted.snapshot if persisted else None
                # A seeded group starts compacted at its seed snapshot.
                self._last_compact[group_id] = snap.meta.index if snap else Index(0)
                self._terms[group_id] = persisted.hard_state.term if persisted else Term(0)
                waiter.succeed(None)
            case _Transfer(group_id=group_id, target=target, waiter=waiter):
                if waiter.done:
                    return
                try:
                    host.transfer_leadership(group_id, target)
                except (NotLeader, ProposalDropped, UnknownGroup) as exc:
                    waiter.fail(exc)
                    return
                waiter.succeed(None)
            case _ChangeMembership(group_id=group_id, change=change, waiter=waiter):
                if waiter.done:
                    return
                try:
                    proposed = host.change_membership(group_id, change)
                except (NotLeader, ProposalDropped, UnknownGroup) as exc:
                    waiter.fail(exc)
                    return
                # The CONFIG entry resolves like a proposal: when the entry at (index, term)
                # applies here (the state machine counts it applied, with no result).
                self._await_entry(group_id, proposed, waiter)
            case _RemoveGroup(group_id=group_id, waiter=waiter):
                self._remove_hosted(group_id)
                waiter.succeed(None)

    def _await_entry(self, group_id: GroupId, proposed: Proposed, waiter: _Waiter) -> None:
        """Resolve ``waiter`` when the entry at ``proposed`` applies (``_finish_apply``)."""
        pending = self._proposals.setdefault(group_id, {})
        previous = pending.get(proposed.index)
        if previous is not None:
            # Our earlier entry at this index was truncated by a new leader's log
            # before it committed (Raft §5.3): it can never apply.
            previous[1].fail(ProposalLost("overwritten before it committed"))
        pending[proposed.index] = (proposed.term, waiter)

    def _remove_hosted(self, group_id: GroupId) -> None:
        """Take ``group_id`` off the host and fail what is pending on it: its core is gone,
        so none of it can complete here (reads asked of it, proposals waiting for their
        entry to apply, reads waiting for their index)."""
        with contextlib.suppress(UnknownGroup):
            self._host.remove_group(group_id)
        error = GroupRemoved(f"group {group_id} was removed from node {self.node_id}")
        pending = self._proposals.pop(group_id, {})
        for index in sorted(pending):
            pending[index][1].fail(error)
        for request_id in sorted(self._reads):
            if self._reads[request_id].group_id == group_id:
                self._reads.pop(request_id).waiter.fail(error)
        for read in self._barrier_passed.pop(group_id, []):
            read.waiter.fail(error)
        self._compactions = [c for c in self._compactions if c.group_id != group_id]
        self._last_compact.pop(group_id, None)
        self._terms.pop(group_id, None)

    # ----------------------------------------------------------------------- one Ready

    async def _handle_ready(self, hr: HostReady) -> None:
        self._counts["readys"] += 1
        # 1. persist: one transaction and one fsync for every group that has state to keep.
        batch = [(gr.group_id, gr.ready) for gr in hr.groups if _has_durable_state(gr.ready)]
        terms = self._terms
        for group_id, rd in batch:
            hs = rd.hard_state
            if hs is not None and hs.term != terms.get(group_id, hs.term):
                self._counts["term_changes"] += 1
            if hs is not None:
                terms[group_id] = hs.term
        if batch:
            started = trio.current_time()
            await self._writer.write_batch(batch)
            persist_us = int((trio.current_time() - started) * 1e6)
            self._counts["persist_us"] += persist_us
            self._counts["persist_us_max"] = max(self._counts["persist_us_max"], persist_us)
            self._counts["batches"] += 1
        # 2. send: only now may votes, promises and acks leave.
        if hr.messages and self._transport is not None:
            self._transport.send(msg for _, msgs in hr.messages for msg in msgs)
        # 3. apply.
        self._collect_read_states(hr.groups)
        work = [
            _ApplyWork(
                group_id=gr.group_id,
                snapshot=gr.ready.apply_snapshot,
                entries=gr.ready.committed_entries,
                compact_candidate=bool(gr.ready.committed_entries),
            )
            for gr in hr.groups
            if gr.ready.apply_snapshot is not None or gr.ready.committed_entries
        ]
        reads = self._servable_reads()
        if work or reads:
            # In order, after persist and send; the loop only waits here when the state
            # machine is max_apply_backlog batches behind.
            started = trio.current_time()
            await self._apply_tx.send((work, reads))
            self._counts["apply_wait_us"] += int((trio.current_time() - started) * 1e6)
        # 4. advance; compaction follows once the apply task has taken the snapshot.
        self._host.advance(hr)

    async def _apply_loop(self) -> None:
        """Applies persisted batches in order in the state machine's thread (see the module
        docstring: apply overlaps the loop's next persist)."""
        try:
            async for work, reads in self._apply_rx:
                started = trio.current_time()
                answers = await self._sm_call(self._apply_in_thread, work, reads)
                self._counts["apply_us"] += int((trio.current_time() - started) * 1e6)
                self._finish_apply(work, reads, answers)
                for item in work:
                    if item.dropped is not None:
                        # Snapshots of the removed replica taken in batches before this
                        # marker must not reach the host (the group may be re-added).
                        self._compactions = [
                            c for c in self._compactions if c.group_id != item.group_id
                        ]
                        item.dropped.succeed(None)
                    elif item.snapshot_data is not None:
                        # Recorded now so a batch already queued does not snapshot again.
                        self._last_compact[item.group_id] = item.entries[-1].index
                        self._compactions.append(item)
                        self._wake()
        except StateMachineError as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            self._apply_rx.close()
            self._wake()  # the loop sees the failure (or its send fails) and stops

    def _compact(self) -> None:
        # The core only accepts indexes it knows are applied: true, since it advanced past
        # them before the batch was queued for apply.
        for item in self._compactions:
            index = item.entries[-1].index
            try:
                self._host.compact(item.group_id, index, item.snapshot_data or b"")
            except UnknownGroup:
                continue  # removed after the apply task took the snapshot
            self._counts["snapshots_taken"] += 1
            self._log.debug("group_compacted", group_id=int(item.group_id), index=int(index))
        self._compactions.clear()

    def _collect_read_states(self, groups: tuple[GroupReady, ...]) -> None:
        for gr in groups:
            for rs in gr.ready.read_states:
                read = self._reads.pop(rs.request_id, None)
                if read is None or read.waiter.done:
                    continue
                read.index = rs.index
                self._barrier_passed.setdefault(gr.group_id, []).append(read)

    def _servable_reads(self) -> list[_Read]:
        """Reads whose barrier passed; the thread serves those whose index is applied."""
        reads: list[_Read] = []
        for group_id in sorted(self._barrier_passed):
            reads.extend(self._barrier_passed[group_id])
        self._barrier_passed.clear()
        return reads

    def _apply_in_thread(self, work: list[_ApplyWork], reads: list[_Read]) -> list[bytes | None]:
        """Runs in the state machine's worker thread: restore, apply, snapshot, serve reads."""
        sm = self._sm
        interval = self._config.snapshot_interval_entries
        for item in work:
            if item.dropped is not None:
                sm.drop_group(item.group_id)
                continue
            if item.snapshot is not None:
                sm.restore(item.group_id, item.snapshot)
            if item.entries:
                item.results = sm.apply(item.group_id, item.entries)
            item.applied_after = sm.applied_index(item.group_id)
            last_compact = self._last_compact.get(item.group_id, Index(0))
            if (
                item.compact_candidate
                # Only when the machine is exactly at the core's applied index: after a
                # restart it may run ahead while the core re-delivers old entries.
                and item.applied_after == item.entries[-1].index
                and item.applied_after - last_compact >= interval
            ):
                item.snapshot_data = sm.snapshot(item.group_id)
        answers: list[bytes | None] = []
        for read in reads:
            index = read.index if read.index is not None else Index(0)
            if sm.applied_index(read.group_id) >= index:
                answers.append(sm.query(read.group_id, read.query))
            else:
                answers.append(None)
        return answers

    def _finish_apply(
        self, work: list[_ApplyWork], reads: list[_Read], answers: list[bytes | None]
    ) -> None:
        for item in work:
            if item.dropped is not None:
                continue
            pending = self._proposals.get(item.group_id)
            if item.snapshot is not None:
                self._counts["snapshots_restored"] += 1
                if pending:
                    # The entries up to the snapshot never reach us one by one: whether our
                    # proposal is among them cannot be told from here.
                    for index in sorted(i for i in pending if i <= item.snapshot.meta.index):
                        _, waiter = pending.pop(index)
                        waiter.fail(OutcomeUnknown("a snapshot replaced the log over it"))
            self._counts["committed"] += len(item.entries)
            self._counts["applied"] += sum(1 for r in item.results if r is not None)
            if not pending:
                self._proposals.pop(item.group_id, None)
                continue
            for entry, result in zip(item.entries, item.results, strict=True):
                slot = pending.pop(entry.index, None)
                if slot is None:
                    continue
                term, waiter = slot
                if entry.term == term:
                    waiter.succeed(result)
                else:
                    waiter.fail(ProposalLost(f"entry {entry.index} committed with another value"))
        for read, answer in zip(reads, answers, strict=True):
            if answer is None and not self._hosts(read.group_id):
                read.waiter.fail(GroupRemoved(f"group {read.group_id} was removed"))
            elif answer is None:
                self._barrier_passed.setdefault(read.group_id, []).append(read)
            else:
                read.waiter.succeed(answer)

    def _hosts(self, group_id: GroupId) -> bool:
        try:
            self._host.backend(group_id)
        except UnknownGroup:
            return False
        return True

    async def call_state_machine(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the state machine's thread, serialised with apply, restore
        and reads (the state machine is single-threaded; an application that needs it outside
        the consensus path, e.g. to register a new range, goes through here)."""
        return await self._sm_call(fn, *args)

    async def _sm_call(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._sm_limiter)

    # ----------------------------------------------------------------------- failure

    def _fail(self, reason: str) -> None:
        if self._failure is not None:
            return
        self._failure = reason
        self._log.warning("node_failed", reason=reason)
        self._fail_all(NodeFailed(f"node {self.node_id} stopped accepting requests: {reason}"))

    def _fail_all(self, error: Exception) -> None:
        for request in self._requests:
            request.waiter.fail(error)
        self._requests.clear()
        for group_id in sorted(self._proposals):
            for index in sorted(self._proposals[group_id]):
                self._proposals[group_id][index][1].fail(error)
        self._proposals.clear()
        for read in self._reads.values():
            read.waiter.fail(error)
        self._reads.clear()
        for reads in self._barrier_passed.values():
            for read in reads:
                read.waiter.fail(error)
        self._barrier_passed.clear()
        for dropped in self._drops:
            dropped.fail(error)

    def _close(self) -> None:
        self._closed = True
        self._fail_all(NodeClosed(f"node {self.node_id} shut down; the outcome is unknown"))


def _has_durable_state(ready: Ready) -> bool:
    return (
        ready.hard_state is not None
        or ready.truncate_from is not None
        or bool(ready.entries)
        or ready.snapshot is not None
    )


@asynccontextmanager
async def open_node(
    config: NodeConfig,
    *,
    network: MemoryNetwork | None = None,
    state_machine: StateMachine | None = None,
    logger: Logger | None = None,
) -> AsyncIterator[Node]:
    """Open the log store and state machine in ``config.data_dir``, re-host the persisted
    groups, connect the transport (TCP, or ``network`` when given) and run the loop. On exit
    every task is cancelled, pending requests fail with ``NodeClosed``, and the files close.

    Raises ``StorageCorrupt`` (damaged log), ``StoreLocked`` (another process has the data
    dir), ``StoreNotFound`` (no log and ``create=False``) before anything is served."""
    config.validate()
    # The codec learns the backends' and the host's message bodies here (idempotent): the
    # TCP transport cannot frame a body it has no tag for.
    register_default_bodies()
    log: Logger = logger or structlog.get_logger("consensus.runtime").bind(
        node_id=int(config.node_id)
    )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    async with open_storage_writer(
        config.data_dir / LOG_FILE,
        cluster_id=config.cluster_id,
        node_id=config.node_id,
        create=config.create,
        max_db_bytes=config.max_log_db_bytes,
        fsync=config.fsync,
        logger=log,
    ) as writer:
        sm: StateMachine
        if state_machine is not None:
            sm = state_machine
        else:
            sm = await trio.to_thread.run_sync(KVStateMachine, config.data_dir / DATA_FILE)
        try:
            node = Node(config, writer, sm, log)
            await node._recover()
            async with _open_transport(config, node, network) as transport:
                node._transport = transport
                async with trio.open_nursery() as nursery:
                    if config.allow_faults:
                        faulty = FaultyTransport(
                            transport, nursery, capacity=config.max_inbox_messages
                        )
                        node._transport = transport = faulty
                        node.faults = faulty
                        nursery.start_soon(faulty.pump)
                    nursery.start_soon(node._pump_inbound, transport.inbound)
                    nursery.start_soon(node._run_loop)
                    nursery.start_soon(node._apply_loop)
                    log.info("node_started", groups=len(node.group_ids()))
                    try:
                        yield node
                    finally:
                        node._close()
                        nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(sm.close)
            log.info("node_stopped")


@asynccontextmanager
async def _open_transport(
    config: NodeConfig, node: Node, network: MemoryNetwork | None
) -> AsyncIterator[Transport]:
    if network is not None:
        async with network.open_transport(
            config.node_id, on_unreachable=node._on_unreachable
        ) as memory:
            yield memory
        return
    peers = {n: addr for n, addr in config.peers.items() if n != config.node_id}
    tcp_config = TcpTransportConfig(
        node_id=config.node_id,
        cluster_id=config.cluster_id,
        host=config.listen_host,
        port=config.listen_port,
        peers=peers,
        secret=config.secret,
    )
    rng = random.Random(config.seed)
    async with open_tcp_transport(
        tcp_config, rng=rng, on_unreachable=node._on_unreachable, logger=node._log
    ) as tcp:
        node._listen_address = tcp.listen_address
        node._tcp = tcp
        yield tcp
