"""The pure multi-group host: many consensus groups of either backend on one node.

A shardb node hosts thousands of groups, any mix of Raft and Multi-Paxos. The runtime (trio)
owns IO; this module is the deterministic layer between it and the cores, in the same
Sans-IO shape as a single core: ``tick``/``step``/requests in, one ``HostReady`` out,
``advance`` back. It does four things.

Routing
-------
``step`` routes an inbound ``Message`` by ``group_id``. Group 0 is the host's own channel
(``NodeHeartbeat``, ``Quiesce``, ``Unquiesce``). A message for a group this node does not host
(yet: the placement layer creates replicas later) is dropped, counted and logged at debug;
both protocols tolerate loss. A *request* for an unknown group is local misuse and raises
``UnknownGroup``.

Merging (group commit and batching)
-----------------------------------
Every call that may give a group something to do puts it in a *dirty* set. ``ready()`` asks
only the dirty groups for their ``Ready`` (ascending group id) and merges them into one
``HostReady``: the runtime writes all ``groups`` in one storage transaction with one fsync if
``must_sync``, and sends ``messages`` -- grouped per destination node -- as one BATCH frame per
peer. ``advance()`` advances exactly the groups in that ``HostReady``. So a node with a
thousand idle groups does no per-group work per loop, and a busy node pays one fsync per loop
for all of its groups.

Quiescence (CockroachDB's idea, adapted)
----------------------------------------
A group's leader ticks to send heartbeats and its followers tick to time the leader out.
Neither is needed while the group is idle and every node is alive, so idle groups stop
ticking:

* A leader quiesces its group once, for ``heartbeat_interval_ticks + 1`` consecutive ticks, it
  saw the group fully idle in ``status()``: it leads, no transfer, ``commit == last_index ==
  applied``, every live member (voter or learner) has ``match == last_index`` and is not being
  sent a snapshot, and no read this host asked for is outstanding. The extra ticks let one
  heartbeat carry the final commit index to the followers before the leader falls silent.
  Members this host's liveness detector suspects are ignored: a dead follower would otherwise
  keep every group it belongs to awake; the group is woken when the node is heard again.
* It then sends ``Quiesce(group_id, term, commit, leader)`` once to each live member and stops
  ticking the core. A follower host stops ticking its replica if its own status matches (a
  follower of the same term and leader, with the same commit index) and otherwise answers
  ``Unquiesce`` so that the leader resumes heartbeats until the follower has caught up. The
  follower does not insist on ``last_index == commit``: a Multi-Paxos acceptor may keep a
  value accepted under an older ballot above the new leader's log (never chosen, see
  ``consensus.paxos``) and only a future proposal at that slot replaces it; nothing about it
  needs ticks. (For Raft the leader's no-op truncates any such tail, so it never arises.)
* Any activity wakes a group: a successful request on it (``compact`` and
  ``report_unreachable`` excepted: they need no ticks), or any consensus message for it --
  except an acknowledgement (``HeartbeatResponse``/``AppendEntriesResponse``,
  ``HeartbeatAck``/``Accepted``) that leaves the quiesced core unchanged and with nothing to
  do, which is just the answer to the leader's last heartbeat arriving late; waking on it
  would make the leader flap between quiesced and awake forever. A quiesced follower woken by
  anything other than its leader sends ``Unquiesce`` to the leader, which resumes heartbeats
  and quiesces the whole group again once it is idle (a woken follower would otherwise tick
  into an election timeout against a silent but healthy leader).
* Liveness: every host sends one ``NodeHeartbeat`` to every peer node every
  ``node_heartbeat_ticks`` -- one message per node pair, not per group: the coalesced
  heartbeat. Any message from a peer counts as hearing from it. A peer unheard for
  ``node_dead_ticks`` is suspected, and every group quiesced here with that peer as leader
  wakes, times out and elects a new leader as usual. These counts are on a liveness clock
  that a late runtime loop advances by at most one tick per turn (``tick(liveness=...)``).
  A host answers a ``NodeHeartbeat`` from a node it does not count as a peer with one
  marked ``answer`` (never answered itself): a node that hosts nothing yet, or only a joined
  replica that has not learned its configuration, knows no member to beat, and without the
  answer a leader that added it as a learner would suspect it, quiesce without it and never
  catch it up.

Leases and quiescence. A quiesced core is not ticked, so its logical clock stands still.
Both backends measure the leader lease in their own ticks (Raft thesis §6.4.1): the followers
that acknowledged a heartbeat round refuse to vote for an election timeout *of their ticks*
after receiving it. While the leader is quiesced, real time passes but its lease does not
shrink; meanwhile its followers may have been woken by their liveness detectors (the leader
was partitioned, not dead), counted their election timeout and elected a new leader that
accepts writes. A lease read served from the old leader's frozen lease would then be stale.
So the host downgrades a ``LEASE`` read to ``SAFE`` while the group is quiesced and until it
has been awake for ``election_timeout_ticks`` ticks: by then every lease established before
the wake has run out by the core's own count (leases last less than an election timeout), and
a valid lease must come from a heartbeat round sent after the wake, for which the usual
argument holds (a quiesced follower does not tick either, so it refuses votes even longer).

Determinism: groups and peers are iterated in sorted order and every random choice comes from
the injected ``random.Random`` (each group's core gets its own ``Random`` seeded from it, in
``add_group`` order). Cost: ``ready()`` is O(dirty groups), ``tick()`` O(awake groups + peers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import structlog

from consensus.api import (
    ConsensusCore,
    ConsensusError,
    CoreConfig,
    Logger,
    MembershipChange,
    PersistedState,
    Proposed,
    ReadMode,
    Ready,
    Role,
    Status,
    UsageError,
)
from consensus.backends import Backend, core_factory
from consensus.paxos import messages as paxos_messages
from consensus.raft import messages as raft_messages
from consensus.types import NO_NODE, ConfState, EntryKind, GroupId, Index, Message, NodeId, Term

__all__ = [
    "HOST_GROUP",
    "GroupReady",
    "HostConfig",
    "HostReady",
    "HostStatistics",
    "MultiGroupHost",
    "NodeHeartbeat",
    "Quiesce",
    "TooManyGroups",
    "UnknownGroup",
    "Unquiesce",
]

HOST_GROUP = GroupId(0)
"""The envelope ``group_id`` of host-to-host messages (no consensus group has id 0)."""

# Answers to the leader's own traffic. Arriving after the leader quiesced (the answer to its
# last heartbeat, a duplicate), they change nothing and must not wake it; anything else
# (votes, pre-checks, appends, snapshots) means someone needs the group.
_ACKNOWLEDGEMENTS: tuple[type, ...] = (
    raft_messages.HeartbeatResponse,
    raft_messages.AppendEntriesResponse,
    paxos_messages.HeartbeatAck,
    paxos_messages.Accepted,
)


# --------------------------------------------------------------------------- errors


class UnknownGroup(ConsensusError, KeyError):
    """A request named a group this host does not host."""

    def __init__(self, group_id: GroupId) -> None:
        self.group_id = group_id
        super().__init__(f"group {group_id} is not hosted on this node")

    def __str__(self) -> str:
        # KeyError would render the message with quotes around it.
        return f"group {self.group_id} is not hosted on this node"


class TooManyGroups(ConsensusError):
    """``add_group`` beyond ``HostConfig.max_groups``."""


# --------------------------------------------------------------------------- host messages


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeHeartbeat:
    """The coalesced liveness beat: one per node pair every ``node_heartbeat_ticks``,
    however many groups the two nodes share."""

    answer: bool = False
    """Sent back to a node that beat us without being our peer (module docstring); an
    answer is never answered, so two nodes that do not count each other cannot ping-pong."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Quiesce:
    """The leader of ``group_id`` stopped ticking it: stop too if you agree."""

    group_id: GroupId
    term: Term
    """Raft term or packed Multi-Paxos ballot, as in ``Status.term``."""
    commit: Index
    leader: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Unquiesce:
    """Resume ticking ``group_id`` (sent to its leader by a follower that could not quiesce
    or was woken by something other than the leader)."""

    group_id: GroupId


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    node_id: NodeId
    node_heartbeat_ticks: int = 2
    """Host-level liveness beat, one per peer NODE."""
    node_dead_ticks: int = 20
    """A peer node unheard this long is suspected."""
    quiesce: bool = True
    """Let idle groups stop ticking. Enable on every node or none: a follower host that does
    not quiesce answers every ``Quiesce`` with ``Unquiesce``."""
    max_groups: int = 100_000

    def validate(self) -> None:
        if self.node_id == NO_NODE:
            raise UsageError("node id 0 is reserved for 'nobody'")
        if self.node_heartbeat_ticks < 1:
            raise UsageError("node_heartbeat_ticks must be >= 1")
        if self.node_dead_ticks <= self.node_heartbeat_ticks:
            raise UsageError("node_dead_ticks must exceed node_heartbeat_ticks")
        if self.max_groups < 1:
            raise UsageError("max_groups must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupReady:
    group_id: GroupId
    ready: Ready


@dataclass(frozen=True, slots=True, kw_only=True)
class HostReady:
    """One loop's worth of effects for every group on the node, processed like a core's
    ``Ready``: persist all ``groups`` (one transaction, one fsync if ``must_sync``), send
    ``messages`` (one frame per destination), apply, then ``advance``."""

    groups: tuple[GroupReady, ...]
    """Ascending group id; only groups that had something to do."""
    messages: tuple[tuple[NodeId, tuple[Message, ...]], ...]
    """Per destination node, ascending; host messages follow the group messages."""
    must_sync: bool
    """Any group's ``must_sync``."""

    def is_empty(self) -> bool:
        return not self.groups and not self.messages


@dataclass(frozen=True, slots=True, kw_only=True)
class HostStatistics:
    groups: int
    awake_groups: int
    """Groups ticked on every host tick."""
    quiesced_groups: int
    ticks: int
    """Host ticks so far."""
    group_ticks: int
    """Core ``tick()`` calls so far (what quiescence saves)."""
    messages_out: int
    """Messages handed out in ``HostReady``s, host messages included."""
    readys: int
    """``HostReady``s handed out."""
    peers: int
    suspected_peers: int
    unknown_group_messages: int
    """Inbound messages dropped because this node does not host their group."""
    misrouted_messages: int
    """Inbound messages dropped because they were addressed to another node."""


# --------------------------------------------------------------------------- internals


class _GroupLogger:
    """Adds ``group_id`` to every event of an injected host logger (structlog's ``bind``
    is not part of the ``Logger`` protocol)."""

    __slots__ = ("_group_id", "_inner")

    def __init__(self, inner: Logger, group_id: GroupId) -> None:
        self._inner = inner
        self._group_id = int(group_id)

    def debug(self, event: str, **kw: Any) -> Any:
        return self._inner.debug(event, **{"group_id": self._group_id, **kw})

    def info(self, event: str, **kw: Any) -> Any:
        return self._inner.info(event, **{"group_id": self._group_id, **kw})

    def warning(self, event: str, **kw: Any) -> Any:
        return self._inner.warning(event, **{"group_id": self._group_id, **kw})


class _Group:
    __slots__ = (
        "backend",
        "config",
        "core",
        "excluded",
        "group_id",
        "idle_ticks",
        "members",
        "pending_reads",
        "quiesced",
        "quiesced_leader",
        "read_term",
        "woke_at_tick",
    )

    def __init__(
        self, group_id: GroupId, backend: Backend, config: CoreConfig, core: ConsensusCore
    ) -> None:
        self.group_id = group_id
        self.backend = backend
        self.config = config
        self.core = core
        self.quiesced = False
        self.quiesced_leader = NO_NODE
        """Who led the group when it quiesced here (this node if it leads)."""
        self.excluded: tuple[NodeId, ...] = ()
        """Suspected members the leader ignored when it quiesced."""
        self.idle_ticks = 0
        self.woke_at_tick: int | None = None
        self.members: tuple[NodeId, ...] = ()
        """Other nodes in the group's configuration, as last seen."""
        self.pending_reads: dict[int, int] = {}
        """request id -> count of reads this host asked for and has not seen answered."""
        self.read_term = Term(0)
        """The term those reads were asked in: the core drops them when it changes."""


class _Peer:
    __slots__ = ("last_heard_tick", "suspected")

    def __init__(self, now: int) -> None:
        # A new peer gets a full grace period: we have not had the chance to hear it yet.
        self.last_heard_tick = now
        self.suspected = False


def _quiet_key(st: Status) -> tuple[object, ...]:
    """What must not change for a message to leave a quiesced group quiesced."""
    return (
        st.role,
        st.term,
        st.leader,
        st.commit,
        st.last_index,
        st.applied,
        st.transferring_to,
        st.conf,
    )


# --------------------------------------------------------------------------- the host


class MultiGroupHost:
    """Hosts many consensus groups on one node; see the module docstring."""

    def __init__(
        self, config: HostConfig, *, rng: random.Random, logger: Logger | None = None
    ) -> None:
        config.validate()
        self._cfg = config
        self._id = config.node_id
        self._rng = rng
        self._injected_logger = logger
        self._logger: Logger = (
            logger
            if logger is not None
            else structlog.get_logger(__name__).bind(node_id=int(config.node_id))
        )
        self._groups: dict[GroupId, _Group] = {}
        self._awake: set[GroupId] = set()
        self._dirty: set[GroupId] = set()
        self._quiesced_by_leader: dict[NodeId, set[GroupId]] = {}
        self._quiesced_excluding: dict[NodeId, set[GroupId]] = {}
        self._groups_by_node: dict[NodeId, set[GroupId]] = {}
        self._peers: dict[NodeId, _Peer] = {}
        self._outbox: list[Message] = []
        self._outstanding: HostReady | None = None
        self._outstanding_cores: dict[GroupId, ConsensusCore] = {}
        self._ticks = 0
        self._liveness_ticks = 0
        """The liveness detector's clock: ``tick(liveness=True)`` calls only."""
        self._group_ticks = 0
        self._messages_out = 0
        self._readys = 0
        self._unknown_group_messages = 0
        self._misrouted_messages = 0

    # ================================================================== groups

    def add_group(
        self,
        group_id: GroupId,
        backend: Backend | str,
        core_config: CoreConfig,
        *,
        persisted: PersistedState | None = None,
        initial_conf: ConfState | None = None,
    ) -> None:
        """Start hosting ``group_id``. ``persisted`` is what storage holds for it (restart);
        ``initial_conf`` is the bootstrap membership, as for ``CoreFactory``."""
        if group_id == HOST_GROUP:
            raise UsageError("group id 0 is reserved for host-to-host messages")
        if group_id in self._groups:
            raise UsageError(f"group {group_id} is already hosted")
        if len(self._groups) >= self._cfg.max_groups:
            raise TooManyGroups(f"this node already hosts max_groups={self._cfg.max_groups}")
        if core_config.node_id != self._id:
            raise UsageError(
                f"core config is for node {core_config.node_id}, this host is node {self._id}"
            )
        if core_config.group_id != group_id:
            raise UsageError(f"core config is for group {core_config.group_id}, not {group_id}")
        try:
            chosen = Backend(backend)
        except ValueError as exc:
            raise UsageError(f"unknown backend {backend!r}") from exc
        # One generator per group, drawn from the host's in add order: reproducible, and a
        # group's elections do not shift when another group is added or removed later.
        group_rng = random.Random(self._rng.getrandbits(64))
        core_logger = (
            _GroupLogger(self._injected_logger, group_id)
            if self._injected_logger is not None
            else None
        )
        core = core_factory(chosen)(
            core_config,
            rng=group_rng,
            persisted=persisted,
            initial_conf=initial_conf,
            logger=core_logger,
        )
        group = _Group(group_id, chosen, core_config, core)
        self._groups[group_id] = group
        self._awake.add(group_id)
        self._dirty.add(group_id)
        self._set_members(group, core.status().conf)
        self._logger.debug("group_added", group_id=int(group_id), backend=chosen.value)

    def remove_group(self, group_id: GroupId) -> None:
        group = self._group(group_id)
        self._unindex_quiesced(group)
        self._set_members(group, ConfState())
        del self._groups[group_id]
        self._awake.discard(group_id)
        self._dirty.discard(group_id)
        self._logger.debug("group_removed", group_id=int(group_id))

    def group_ids(self) -> tuple[GroupId, ...]:
        return tuple(sorted(self._groups))

    def backend(self, group_id: GroupId) -> Backend:
        return self._group(group_id).backend

    # ================================================================== time and messages

    def tick(self, *, liveness: bool = True) -> None:
        """One logical tick: the liveness detector, then every awake group (ascending).

        ``liveness=False`` ticks the groups only. A runtime whose loop ran late delivers the
        ticks it missed in one burst (groups must get every tick, for leases), but the
        messages that arrived meanwhile are still in its transport: counted on the liveness
        clock, that burst would be silence this node could not have heard through, and it
        would suspect every peer (waking, and re-electing, every group they lead) for its own
        lateness. So such a runtime passes ``liveness=False`` for the ticks beyond what one
        loop turn normally takes; suspicion is a liveness hint, never needed for safety."""
        self._ticks += 1
        if liveness:
            self._liveness_ticks += 1
            self._tick_liveness()
        self._tick_groups()

    def step(self, message: Message) -> None:
        if message.dst != self._id:
            self._misrouted_messages += 1
            self._logger.warning(
                "message_misrouted",
                src=int(message.src),
                dst=int(message.dst),
                group_id=int(message.group_id),
            )
            return
        self._heard_from(message.src)
        if message.group_id == HOST_GROUP:
            self._step_host(message)
            return
        group = self._groups.get(message.group_id)
        if group is None:
            self._drop_unknown(message.src, message.group_id, type(message.body).__name__)
            return
        if group.quiesced:
            if isinstance(message.body, _ACKNOWLEDGEMENTS) and (
                group.group_id not in self._outstanding_cores
            ):
                self._step_quiesced_acknowledgement(group, message)
                return
            self._wake(group, reason="message", notify_leader=message.src != group.quiesced_leader)
        group.core.step(message)
        self._dirty.add(group.group_id)

    # ================================================================== requests

    def campaign(self, group_id: GroupId) -> None:
        group = self._group(group_id)
        group.core.campaign()
        self._on_request(group)

    def propose(self, group_id: GroupId, command: bytes) -> Proposed:
        group = self._group(group_id)
        proposed = group.core.propose(command)
        self._on_request(group)
        return proposed

    def read_index(
        self, group_id: GroupId, request_id: int, *, mode: ReadMode = ReadMode.SAFE
    ) -> None:
        """A linearizable read barrier. A ``LEASE`` read on a group that was quiesced within
        the last election timeout runs as ``SAFE``: the lease counts ticks that did not
        happen (module docstring, "Leases and quiescence")."""
        group = self._group(group_id)
        effective = mode
        if mode is ReadMode.LEASE and self._lease_clock_stood_still(group):
            effective = ReadMode.SAFE
            self._logger.debug(
                "lease_read_downgraded", group_id=int(group_id), request_id=request_id
            )
        group.core.read_index(request_id, mode=effective)
        term = group.core.status().term
        if term != group.read_term:
            group.pending_reads = {}
            group.read_term = term
        group.pending_reads[request_id] = group.pending_reads.get(request_id, 0) + 1
        self._on_request(group)

    def change_membership(self, group_id: GroupId, change: MembershipChange) -> Proposed:
        group = self._group(group_id)
        proposed = group.core.change_membership(change)
        self._on_request(group)
        return proposed

    def transfer_leadership(self, group_id: GroupId, target: NodeId) -> None:
        group = self._group(group_id)
        group.core.transfer_leadership(target)
        self._on_request(group)

    def compact(self, group_id: GroupId, index: Index, data: bytes) -> None:
        """Compaction is local bookkeeping: it needs no ticks, so it does not wake the group
        (the application may compact idle groups in the background)."""
        group = self._group(group_id)
        group.core.compact(index, data)
        self._dirty.add(group_id)

    def report_unreachable(self, node: NodeId) -> None:
        """The transport dropped messages to ``node``: tell every group that has it. Does not
        wake quiesced groups; the liveness detector decides about dead nodes."""
        for group_id in sorted(self._groups_by_node.get(node, ())):
            self._groups[group_id].core.report_unreachable(node)
            self._dirty.add(group_id)

    def status(self, group_id: GroupId) -> Status:
        return self._group(group_id).core.status()

    def is_quiesced(self, group_id: GroupId) -> bool:
        return self._group(group_id).quiesced

    def suspected_peers(self) -> tuple[NodeId, ...]:
        return tuple(node for node in sorted(self._peers) if self._peers[node].suspected)

    # ================================================================== ready / advance

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        if self._outbox:
            return True
        clean = [gid for gid in sorted(self._dirty) if not self._groups[gid].core.has_ready()]
        self._dirty.difference_update(clean)
        return bool(self._dirty)

    def ready(self) -> HostReady:
        if self._outstanding is not None:
            raise UsageError("ready() called again before advance() of the previous HostReady")
        group_readies: list[GroupReady] = []
        by_dst: dict[NodeId, list[Message]] = {}
        must_sync = False
        for group_id in sorted(self._dirty):
            group = self._groups[group_id]
            if not group.core.has_ready():
                continue
            rd = group.core.ready()
            group_readies.append(GroupReady(group_id=group_id, ready=rd))
            self._outstanding_cores[group_id] = group.core
            must_sync = must_sync or rd.must_sync
            for msg in rd.messages:
                by_dst.setdefault(msg.dst, []).append(msg)
            for read in rd.read_states:
                self._read_answered(group, read.request_id)
        self._dirty.clear()
        # Host messages go last in each frame: a Quiesce then follows the group traffic
        # that carried the final commit index.
        for msg in self._outbox:
            by_dst.setdefault(msg.dst, []).append(msg)
        self._outbox = []
        messages = tuple((dst, tuple(by_dst[dst])) for dst in sorted(by_dst))
        host_ready = HostReady(groups=tuple(group_readies), messages=messages, must_sync=must_sync)
        self._outstanding = host_ready
        self._readys += 1
        self._messages_out += sum(len(msgs) for _, msgs in messages)
        return host_ready

    def advance(self, host_ready: HostReady) -> None:
        if self._outstanding is None or host_ready is not self._outstanding:
            raise UsageError("advance() must be given the HostReady last returned by ready()")
        self._outstanding = None
        cores, self._outstanding_cores = self._outstanding_cores, {}
        for group_ready in host_ready.groups:
            group_id = group_ready.group_id
            group = self._groups.get(group_id)
            if group is None or group.core is not cores.get(group_id):
                continue  # removed (or removed and re-added) while the Ready was out
            rd = group_ready.ready
            group.core.advance(rd)
            # Advancing may release more work (a leader counts its own persisted entries).
            self._dirty.add(group_id)
            if _may_change_conf(rd):
                self._set_members(group, group.core.status().conf)

    def statistics(self) -> HostStatistics:
        return HostStatistics(
            groups=len(self._groups),
            awake_groups=len(self._awake),
            quiesced_groups=len(self._groups) - len(self._awake),
            ticks=self._ticks,
            group_ticks=self._group_ticks,
            messages_out=self._messages_out,
            readys=self._readys,
            peers=len(self._peers),
            suspected_peers=sum(1 for p in self._peers.values() if p.suspected),
            unknown_group_messages=self._unknown_group_messages,
            misrouted_messages=self._misrouted_messages,
        )

    # ================================================================== tick

    def _tick_liveness(self) -> None:
        beat = self._liveness_ticks % self._cfg.node_heartbeat_ticks == 0
        for node in sorted(self._peers):
            if beat:
                self._send(node, NodeHeartbeat())
            peer = self._peers[node]
            if (
                not peer.suspected
                and self._liveness_ticks - peer.last_heard_tick >= self._cfg.node_dead_ticks
            ):
                self._suspect(node)

    def _tick_groups(self) -> None:
        for group_id in sorted(self._awake):
            group = self._groups[group_id]
            if self._cfg.quiesce:
                st = self._idle_leader_status(group)
                if st is None:
                    group.idle_ticks = 0
                else:
                    group.idle_ticks += 1
                    # One heartbeat interval of idleness lets a heartbeat carry the final
                    # commit index to the followers before the leader falls silent.
                    if group.idle_ticks > group.config.heartbeat_interval_ticks:
                        self._quiesce_as_leader(group, st)
                        continue
            group.core.tick()
            self._group_ticks += 1
            self._dirty.add(group_id)

    def _idle_leader_status(self, group: _Group) -> Status | None:
        """The group's status if this node leads it and it is fully idle, else None."""
        st = group.core.status()
        if group.pending_reads and (st.role is not Role.LEADER or st.term != group.read_term):
            # The core drops pending reads when it loses the leadership (new term or role).
            group.pending_reads = {}
        if (
            st.role is not Role.LEADER
            or st.transferring_to != NO_NODE
            or group.pending_reads
            or st.commit != st.last_index
            or st.applied != st.commit
            or st.conf.joint
        ):
            return None
        for node in st.conf.all_nodes():
            if node == self._id or self._is_suspected(node):
                continue
            pr = st.progress.get(node)
            if pr is None or pr.match != st.last_index or pr.state == "snapshot":
                return None
        return st

    # ================================================================== quiescence

    def _quiesce_as_leader(self, group: _Group, st: Status) -> None:
        group.quiesced = True
        group.idle_ticks = 0
        group.quiesced_leader = self._id
        group.excluded = tuple(
            node for node in st.conf.all_nodes() if node != self._id and self._is_suspected(node)
        )
        self._awake.discard(group.group_id)
        for node in group.excluded:
            self._quiesced_excluding.setdefault(node, set()).add(group.group_id)
        quiesce = Quiesce(group_id=group.group_id, term=st.term, commit=st.commit, leader=self._id)
        for node in st.conf.all_nodes():
            if node != self._id and node not in group.excluded:
                self._send(node, quiesce)
        self._logger.debug(
            "group_quiesced",
            group_id=int(group.group_id),
            term=int(st.term),
            commit=int(st.commit),
            role="leader",
        )

    def _on_quiesce(self, src: NodeId, m: Quiesce) -> None:
        group = self._groups.get(m.group_id)
        if group is None:
            self._drop_unknown(src, m.group_id, "Quiesce")
            return
        if group.quiesced:
            return
        st = group.core.status()
        agrees = (
            self._cfg.quiesce
            and m.leader == src
            and st.role is Role.FOLLOWER
            and st.term == m.term
            and st.leader == m.leader
            and st.commit == m.commit
            and src in self._peers
            and not self._peers[src].suspected
        )
        if not agrees:
            # Keep the leader heartbeating until we caught up (or learned it leads); it
            # will try to quiesce again once it sees the group idle.
            self._send(src, Unquiesce(group_id=m.group_id))
            self._logger.debug(
                "quiesce_refused",
                group_id=int(m.group_id),
                leader=int(src),
                term=int(m.term),
                our_term=int(st.term),
                commit=int(m.commit),
                our_commit=int(st.commit),
            )
            return
        group.quiesced = True
        group.idle_ticks = 0
        group.quiesced_leader = src
        group.excluded = ()
        self._awake.discard(group.group_id)
        self._quiesced_by_leader.setdefault(src, set()).add(group.group_id)
        self._logger.debug(
            "group_quiesced",
            group_id=int(group.group_id),
            term=int(st.term),
            commit=int(st.commit),
            role="follower",
        )

    def _on_unquiesce(self, src: NodeId, m: Unquiesce) -> None:
        group = self._groups.get(m.group_id)
        if group is None:
            self._drop_unknown(src, m.group_id, "Unquiesce")
            return
        if group.quiesced:
            self._wake(group, reason="unquiesce", notify_leader=False)
        else:
            # Awake already: restart the idle count so that the follower gets a heartbeat
            # interval to catch up before the next Quiesce.
            group.idle_ticks = 0

    def _step_quiesced_acknowledgement(self, group: _Group, message: Message) -> None:
        """A late answer to the leader's last heartbeat leaves the group quiesced if it
        changed nothing and left nothing to do; otherwise it wakes the group. (A group whose
        Ready is outstanding never gets here: ``has_ready`` says nothing until advance.)"""
        core = group.core
        before = _quiet_key(core.status())
        core.step(message)
        if not core.has_ready() and _quiet_key(core.status()) == before:
            return
        self._wake(group, reason="message", notify_leader=message.src != group.quiesced_leader)
        self._dirty.add(group.group_id)

    def _wake(self, group: _Group, *, reason: str, notify_leader: bool) -> None:
        if not group.quiesced:
            return
        leader = group.quiesced_leader
        self._unindex_quiesced(group)
        group.quiesced = False
        group.idle_ticks = 0
        group.woke_at_tick = self._ticks
        self._awake.add(group.group_id)
        if notify_leader and leader not in (NO_NODE, self._id):
            # CockroachDB's "unquiesce and wake the leader": otherwise this replica would
            # tick into an election timeout while a healthy leader stays silent.
            self._send(leader, Unquiesce(group_id=group.group_id))
        self._logger.debug("group_woke", group_id=int(group.group_id), reason=reason)

    def _unindex_quiesced(self, group: _Group) -> None:
        if not group.quiesced:
            return
        leader = group.quiesced_leader
        led = self._quiesced_by_leader.get(leader)
        if led is not None:
            led.discard(group.group_id)
            if not led:
                del self._quiesced_by_leader[leader]
        for node in group.excluded:
            excluding = self._quiesced_excluding.get(node)
            if excluding is not None:
                excluding.discard(group.group_id)
                if not excluding:
                    del self._quiesced_excluding[node]
        group.excluded = ()
        group.quiesced_leader = NO_NODE

    def _on_request(self, group: _Group) -> None:
        self._dirty.add(group.group_id)
        self._wake(group, reason="request", notify_leader=True)

    def _lease_clock_stood_still(self, group: _Group) -> bool:
        if group.quiesced:
            return True
        return (
            group.woke_at_tick is not None
            and self._ticks - group.woke_at_tick < group.config.election_timeout_ticks
        )

    def _read_answered(self, group: _Group, request_id: int) -> None:
        count = group.pending_reads.get(request_id)
        if count is None:
            return
        if count <= 1:
            del group.pending_reads[request_id]
        else:
            group.pending_reads[request_id] = count - 1

    # ================================================================== liveness

    def _heard_from(self, node: NodeId) -> None:
        peer = self._peers.get(node)
        if peer is None:
            return
        peer.last_heard_tick = self._liveness_ticks
        if peer.suspected:
            peer.suspected = False
            self._logger.info("node_recovered", peer=int(node))
            # Groups that quiesced without it must catch it up: wake their leaders here.
            for group_id in sorted(self._quiesced_excluding.get(node, ())):
                self._wake(self._groups[group_id], reason="peer_recovered", notify_leader=False)

    def _suspect(self, node: NodeId) -> None:
        self._peers[node].suspected = True
        led = sorted(self._quiesced_by_leader.get(node, ()))
        self._logger.info("node_suspected", peer=int(node), groups_woken=len(led))
        for group_id in led:
            self._wake(self._groups[group_id], reason="leader_suspected", notify_leader=False)

    def _is_suspected(self, node: NodeId) -> bool:
        peer = self._peers.get(node)
        return peer is not None and peer.suspected

    def _set_members(self, group: _Group, conf: ConfState) -> None:
        members = tuple(node for node in conf.all_nodes() if node != self._id)
        if members == group.members:
            return
        gid = group.group_id
        for node in group.members:
            if node in members:
                continue
            groups = self._groups_by_node[node]
            groups.discard(gid)
            if not groups:
                del self._groups_by_node[node]
                self._forget_peer(node)
        for node in members:
            if node not in self._groups_by_node:
                self._groups_by_node[node] = set()
                self._peers[node] = _Peer(self._liveness_ticks)
            self._groups_by_node[node].add(gid)
        group.members = members

    def _forget_peer(self, node: NodeId) -> None:
        del self._peers[node]
        # Nothing will ever suspect it now, so nothing may stay asleep waiting for that.
        for group_id in sorted(self._quiesced_by_leader.get(node, ())):
            self._wake(self._groups[group_id], reason="leader_forgotten", notify_leader=False)
        for group_id in sorted(self._quiesced_excluding.get(node, ())):
            group = self._groups[group_id]
            self._wake(group, reason="member_forgotten", notify_leader=False)

    # ================================================================== helpers

    def _step_host(self, message: Message) -> None:
        match message.body:
            case NodeHeartbeat() as body:
                # Hearing from the node was the point (``_heard_from``), unless it counts us
                # as a peer and we do not count it: then it hears from us only if we answer.
                if not body.answer and message.src not in self._peers:
                    self._send(message.src, NodeHeartbeat(answer=True))
            case Quiesce() as body:
                self._on_quiesce(message.src, body)
            case Unquiesce() as body:
                self._on_unquiesce(message.src, body)
            case body:
                self._misrouted_messages += 1
                self._logger.warning(
                    "host_message_unknown", src=int(message.src), kind=type(body).__name__
                )

    def _drop_unknown(self, src: NodeId, group_id: GroupId, kind: str) -> None:
        self._unknown_group_messages += 1
        self._logger.debug(
            "message_for_unknown_group_dropped", src=int(src), group_id=int(group_id), kind=kind
        )

    def _send(self, to: NodeId, body: object) -> None:
        self._outbox.append(Message(group_id=HOST_GROUP, src=self._id, dst=to, body=body))

    def _group(self, group_id: GroupId) -> _Group:
        group = self._groups.get(group_id)
        if group is None:
            raise UnknownGroup(group_id)
        return group


def _may_change_conf(rd: Ready) -> bool:
    """Raft adopts a configuration when its entry is appended (or truncated away), Multi-Paxos
    when it is chosen; a snapshot replaces it. Anything else leaves membership alone."""
    return (
        rd.truncate_from is not None
        or rd.snapshot is not None
        or rd.apply_snapshot is not None
        or any(e.kind is EntryKind.CONFIG for e in rd.entries)
        or any(e.kind is EntryKind.CONFIG for e in rd.committed_entries)
    )
