"""``PaxosCore``: one Multi-Paxos replica (proposer, acceptor and learner in one).

Read the package docstring (``consensus.paxos``) first: it states the mapping onto the shared
types and the safety arguments this file relies on. Structure follows the house style: roles
swap ``self._step`` and ``self._tick`` only in ``_become_*``; ballot checks common to every
role sit once in ``step``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import structlog

from consensus.api import (
    CoreConfig,
    Logger,
    MembershipChange,
    NotLeader,
    PeerProgress,
    PersistedState,
    ProposalDropped,
    Proposed,
    ReadMode,
    ReadState,
    Ready,
    Role,
    Status,
    UsageError,
)
from consensus.invariants import InvariantViolation, require
from consensus.membership import decode_conf_entry, encode_conf_entry, is_quorum, tally
from consensus.paxos.ballot import (
    MAX_NODE_ID,
    NO_BALLOT,
    ballot_node,
    ballot_round,
    format_ballot,
    make_ballot,
)
from consensus.paxos.log import PaxosLog
from consensus.paxos.membership import apply_change
from consensus.paxos.messages import (
    Accept,
    Accepted,
    Heartbeat,
    HeartbeatAck,
    InstallSnapshot,
    InstallSnapshotResponse,
    Learn,
    Nack,
    NackReason,
    PaxosMessage,
    PreCheck,
    PreCheckResponse,
    Prepare,
    Promise,
    TimeoutNow,
)
from consensus.paxos.progress import PeerState, Progress
from consensus.quorum import VoteResult, committed_index
from consensus.types import (
    NO_NODE,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Index,
    Message,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)

_ENTRY_OVERHEAD_BYTES = Entry(index=Index(0), term=Term(0)).size_bytes()


def _same_value(a: Entry, b: Entry) -> bool:
    """Whether two entries carry the same value (identity), whatever ballot accepted them."""
    return a.term == b.term and a.kind == b.kind and a.data == b.data


class PaxosCore:
    """Multi-Paxos behind ``consensus.api.ConsensusCore``; see the package docstring."""

    def __init__(
        self,
        config: CoreConfig,
        *,
        rng: random.Random,
        persisted: PersistedState | None = None,
        initial_conf: ConfState | None = None,
        logger: Logger | None = None,
    ) -> None:
        config.validate()
        if config.node_id > MAX_NODE_ID:
            raise UsageError(f"node ids must be <= {MAX_NODE_ID} to fit in a ballot")
        self._cfg = config
        self._id = config.node_id
        self._rng = rng
        self._logger: Logger = (
            logger
            if logger is not None
            else structlog.get_logger(__name__).bind(
                node_id=int(config.node_id), group_id=int(config.group_id)
            )
        )
        state = persisted if persisted is not None else PersistedState()

        # --- acceptor state (durable) -----------------------------------------------------
        self._promised: Term = state.hard_state.term
        self._log = PaxosLog(state.snapshot, state.entries)
        snap_index = self._log.snapshot_index
        self._commit = Index(max(state.hard_state.commit, snap_index))
        base_conf = (
            state.snapshot.meta.conf
            if state.snapshot is not None
            else (initial_conf if initial_conf is not None else ConfState())
        )
        self._conf = base_conf
        self._conf_history: list[tuple[Index, ConfState]] = [(snap_index, base_conf)]
        for slot in range(snap_index + 1, self._commit + 1):
            entry = self._log.get(slot)
            require(entry is not None, f"persisted commit {self._commit} covers hole {slot}")
            if entry is not None and entry.kind is EntryKind.CONFIG:
                self._apply_conf_entry(entry)
        self._persisted_hs = state.hard_state

        # --- learner / application side ---------------------------------------------------
        self._applied = snap_index
        self._handed = snap_index  # committed entries already given out in a Ready
        self._through_ballot = NO_BALLOT
        self._through = self._commit

        # --- pending side effects (the next Ready) ------------------------------------------
        self._pending_entries: dict[int, Entry] = {}
        self._pending_snapshot: Snapshot | None = None
        self._pending_apply_snapshot: Snapshot | None = None
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._outstanding: Ready | None = None

        # --- timing (logical ticks) ---------------------------------------------------------
        self._now = 0
        self._election_elapsed = 0
        self._leader_elapsed = 0
        self._randomized_timeout = 0
        self._max_round_seen = ballot_round(self._promised)
        self._restart_guard = self._promised != NO_BALLOT

        # --- role state -----------------------------------------------------------------------
        self._role = Role.FOLLOWER
        self._leader = NO_NODE
        self._step: Callable[[NodeId, PaxosMessage], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        # pre-candidate / candidate
        self._ballot: Term = NO_BALLOT
        self._votes: dict[NodeId, bool] = {}
        self._recovered: dict[int, Entry] = {}
        self._prepare_sent: set[NodeId] = set()
        self._transfer_campaign = False
        self._lagging = False
        # leader
        self._progress: dict[NodeId, Progress] = {}
        self._accepts: dict[int, set[NodeId]] = {}
        self._uncommitted_bytes = 0
        self._recovered_through = Index(0)
        self._pending_conf_slot = Index(0)
        self._heartbeat_elapsed = 0
        self._quorum_elapsed = 0
        self._heartbeat_round = 0
        self._heartbeat_due = False
        self._round_sent_tick: dict[int, int] = {}
        self._round_acks: dict[NodeId, int] = {}
        self._quorum_round = 0
        self._lease_until: int | None = None
        self._lease_disabled = False
        self._reads_pending: list[tuple[int, Index, int]] = []
        self._reads_awaiting_recovery: list[int] = []
        self._transfer_to = NO_NODE
        self._transfer_elapsed = 0
        # follower: snapshot being received
        self._snapshot_recv: tuple[SnapshotMeta, bytearray] | None = None

        self._become_follower(NO_NODE)

    # ================================================================== public API

    def tick(self) -> None:
        self._now += 1
        self._tick()

    def step(self, message: Message) -> None:
        if message.group_id != self._cfg.group_id or message.dst != self._id:
            # Local misuse, not a misbehaving peer: the caller routes by (dst, group_id).
            # Same contract as RaftCore.step.
            raise UsageError(
                f"message for node {message.dst} group {message.group_id} delivered to "
                f"node {self._id} group {self._cfg.group_id}"
            )
        src = message.src
        body = message.body
        match body:
            case PreCheck():
                self._on_pre_check(src, body)
            case Prepare():
                self._on_prepare(src, body)
            case Accept() | Learn() | Heartbeat() | InstallSnapshot() | TimeoutNow():
                if ballot_node(body.ballot) != src:
                    self._logger.warning("ballot_owner_mismatch", src=int(src))
                    return
                if body.ballot < self._promised:
                    # PMS §2.3: never act on a ballot below the promise; tell the stale leader.
                    self._send_nack(src, body.ballot, NackReason.HIGHER_BALLOT)
                    return
                if body.ballot > self._promised:
                    # Only a leader that completed phase 1 sends these, and promising a higher
                    # ballot is always safe; accepting at b implies promising b (PMS §2.3).
                    self._promised = body.ballot
                    self._note_round(body.ballot)
                if self._role is not Role.FOLLOWER or self._leader != src:
                    self._become_follower(src)
                self._election_elapsed = 0
                self._leader_elapsed = 0
                self._step(src, body)
            case (
                Promise()
                | Nack()
                | PreCheckResponse()
                | Accepted()
                | HeartbeatAck()
                | InstallSnapshotResponse()
            ):
                self._step(src, body)
            case _:
                raise UsageError(f"not a Multi-Paxos message: {type(body).__name__}")

    def campaign(self) -> None:
        """Start an election now (with the pre-check when ``pre_vote`` is on)."""
        if self._role is Role.LEADER:
            return
        self._start_election(transfer=False)

    def propose(self, command: bytes) -> Proposed:
        self._require_leader()
        if self._transfer_to != NO_NODE:
            raise ProposalDropped("leadership transfer in progress")
        return self._append(EntryKind.NORMAL, command)

    def read_index(self, request_id: int, *, mode: ReadMode = ReadMode.SAFE) -> None:
        self._require_leader()
        if mode is ReadMode.LEASE and self._lease_valid():
            self._read_states.append(ReadState(request_id=request_id, index=self._commit))
            return
        if not self._recovery_done():
            # Like Raft's no-op rule: our commit point is only known to be current once the
            # values recovered in phase 1 are chosen again (PMS §3).
            self._reads_awaiting_recovery.append(request_id)
            return
        self._start_safe_read(request_id)

    def change_membership(self, change: MembershipChange) -> Proposed:
        self._require_leader()
        if self._transfer_to != NO_NODE:
            raise ProposalDropped("leadership transfer in progress")
        if self._pending_conf_slot > self._commit:
            raise ProposalDropped("a membership change is already pending")
        nodes = [op.node for op in change.ops]
        if not nodes or len(set(nodes)) != len(nodes):
            raise ProposalDropped("a change needs one operation per distinct node")
        if any(not 0 < n <= MAX_NODE_ID for n in nodes):
            raise ProposalDropped("node id out of range")
        new_conf = apply_change(self._conf, change)
        if not new_conf.voters:
            raise ProposalDropped("the change would leave no voters")
        if new_conf == self._conf:
            raise ProposalDropped("the change does not alter the configuration")
        # The entry carries the resulting configuration, not only the ops: every node adopts
        # it as written, so a joiner with an empty bootstrap configuration ends up with the
        # group's membership (consensus.membership). Alpha = 1 makes ``self._conf`` the
        # configuration of the new slot, so this is the configuration after it.
        return self._append(EntryKind.CONFIG, encode_conf_entry(change, new_conf))

    def transfer_leadership(self, target: NodeId) -> None:
        self._require_leader()
        if target == self._id or target == self._transfer_to:
            return
        if not self._conf.is_voter(target) or target not in self._progress:
            raise ProposalDropped(f"node {target} is not a voter")
        self._transfer_to = target
        self._transfer_elapsed = 0
        self._logger.info("transfer_started", target=int(target))
        self._maybe_send_timeout_now(resend=True)

    def report_unreachable(self, peer: NodeId) -> None:
        pr = self._progress.get(peer)
        if self._role is not Role.LEADER or pr is None:
            return
        # Pipelined messages were probably lost: fall back to one at a time from what the peer
        # is known to hold (etcd's probe state).
        pr.state = PeerState.PROBE
        pr.inflight = 0
        pr.next = Index(pr.match + 1)

    def compact(self, index: Index, data: bytes) -> None:
        if index <= self._log.snapshot_index:
            raise UsageError(f"slot {index} is already compacted")
        if index > self._applied:
            raise UsageError(f"cannot compact slot {index} beyond applied {self._applied}")
        entry = self._log.get(index)
        if entry is None:
            raise InvariantViolation(f"applied slot {index} missing from the log")
        snap = Snapshot(
            meta=SnapshotMeta(index=index, term=entry.term, conf=self._conf_at(index)), data=data
        )
        self._log.compact(snap)
        self._forget_below(index)
        self._conf_history = [(index, self._conf_at(index))] + [
            (s, c) for s, c in self._conf_history if s > index
        ]
        self._pending_snapshot = snap
        self._logger.info("compacted", index=int(index))

    def has_ready(self) -> bool:
        """Whether ``ready()`` would hand out anything. Side-effect free: it only predicts
        what ``ready()``'s flush would produce (same contract as Raft), and it is False
        while a Ready is outstanding, since ``ready()`` may not be called then."""
        if self._outstanding is not None:
            return False
        return (
            self._flush_due()
            or bool(self._pending_entries or self._msgs or self._read_states)
            or self._pending_snapshot is not None
            or self._pending_apply_snapshot is not None
            or self._commit > self._handed
            or self._hard_state() != self._persisted_hs
        )

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise UsageError("ready() called again before advance()")
        self._flush()
        hs = self._hard_state()
        hard_state = hs if hs != self._persisted_hs else None
        start = self._handed + 1
        if self._pending_apply_snapshot is not None:
            start = max(start, self._pending_apply_snapshot.meta.index + 1)
        committed = []
        for slot in range(start, self._commit + 1):
            entry = self._log.get(slot)
            require(entry is not None, f"committed slot {slot} is a hole")
            if entry is not None:
                committed.append(entry)
        entries = tuple(self._pending_entries[s] for s in sorted(self._pending_entries))
        promised_changed = hard_state is not None and hard_state.term != self._persisted_hs.term
        rd = Ready(
            hard_state=hard_state,
            entries=entries,
            snapshot=self._pending_snapshot,
            # PMS §2.3 / PML §4: promises and acceptances leave only after they are durable.
            must_sync=bool(entries) or self._pending_snapshot is not None or promised_changed,
            messages=tuple(self._msgs),
            apply_snapshot=self._pending_apply_snapshot,
            committed_entries=tuple(committed),
            read_states=tuple(self._read_states),
        )
        self._pending_entries = {}
        self._pending_snapshot = None
        self._pending_apply_snapshot = None
        self._msgs = []
        self._read_states = []
        self._handed = self._commit
        self._outstanding = rd
        return rd

    def advance(self, ready: Ready) -> None:
        if self._outstanding is None or ready is not self._outstanding:
            raise UsageError("advance() needs the Ready returned by the last ready()")
        self._outstanding = None
        if ready.hard_state is not None:
            self._persisted_hs = ready.hard_state
        if ready.apply_snapshot is not None:
            self._applied = max(self._applied, ready.apply_snapshot.meta.index)
        if ready.committed_entries:
            self._applied = max(self._applied, ready.committed_entries[-1].index)

    def status(self) -> Status:
        progress: dict[NodeId, PeerProgress] = {}
        if self._role is Role.LEADER:
            # The leader lists itself too (as RaftCore does): it accepts every slot it
            # proposes at once (``_append`` counts its own vote), so it matches its whole log.
            rows = dict(self._progress)
            rows[self._id] = Progress(
                next=Index(self._log.last_index + 1),
                match=self._log.last_index,
                state=PeerState.REPLICATE,
                recent_active=True,
            )
            for peer in sorted(rows):
                pr = rows[peer]
                progress[peer] = PeerProgress(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state.value,
                    recent_active=pr.recent_active,
                )
        return Status(
            node_id=self._id,
            group_id=self._cfg.group_id,
            role=self._role,
            term=self._promised,
            leader=self._leader,
            commit=self._commit,
            applied=self._applied,
            last_index=self._log.last_index,
            first_index=self._log.first_index,
            conf=self._conf,
            transferring_to=self._transfer_to,
            progress=progress,
        )

    # ================================================================== role changes

    def _become_follower(self, leader: NodeId) -> None:
        was = self._role
        self._reset_role_state()
        self._role = Role.FOLLOWER
        self._leader = leader
        self._step = self._step_follower
        self._tick = self._tick_election
        self._reset_election_timer()
        if was is not Role.FOLLOWER:
            self._logger.info(
                "became_follower", ballot=format_ballot(self._promised), leader=int(leader)
            )
        else:
            self._logger.debug("leader_changed", leader=int(leader))

    def _become_pre_candidate(self) -> None:
        self._reset_role_state()
        self._role = Role.PRE_CANDIDATE
        self._leader = NO_NODE
        self._step = self._step_pre_candidate
        self._tick = self._tick_election
        self._reset_election_timer()
        self._ballot = make_ballot(self._next_round(), self._id)
        self._votes = {self._id: True}
        self._logger.info("became_pre_candidate", ballot=format_ballot(self._ballot))
        for peer in self._conf.all_nodes():
            if peer != self._id and self._conf.is_voter(peer):
                self._send(peer, PreCheck(ballot=self._ballot, commit=self._commit))
        self._tally_pre_check()

    def _become_candidate(self, *, transfer: bool) -> None:
        self._reset_role_state()
        self._role = Role.CANDIDATE
        self._leader = NO_NODE
        self._step = self._step_candidate
        self._tick = self._tick_election
        self._reset_election_timer()
        self._ballot = make_ballot(self._next_round(), self._id)
        # The candidate is an acceptor too: it promises its own ballot (persisted before any
        # Prepare leaves, same Ready) and reports its own accepted values.
        self._promised = self._ballot
        self._transfer_campaign = transfer
        self._votes = {self._id: True}
        own, _ = self._log.above(self._commit + 1, 1 << 62)
        self._recovered = {e.index: e for e in own}
        self._prepare_sent = set()
        self._logger.info(
            "phase1_started",
            ballot=format_ballot(self._ballot),
            from_slot=int(self._commit + 1),
            transfer=transfer,
        )
        self._check_phase1()

    def _become_leader(self) -> None:
        ballot = self._ballot
        recovered = self._recovered
        self._reset_role_state()
        self._role = Role.LEADER
        self._leader = self._id
        self._ballot = ballot
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        self._leader_elapsed = 0
        # PMS §3: re-propose, per slot, the value with the highest accepted ballot; fill holes
        # with no-ops. The value keeps its identity (``term``); only accepted_ballot rises.
        last = max([self._commit, *recovered])
        for slot in range(self._commit + 1, last + 1):
            found = recovered.get(slot)
            if found is None:
                entry = Entry(
                    index=Index(slot), term=ballot, kind=EntryKind.NOOP, accepted_ballot=ballot
                )
            else:
                entry = replace(found, accepted_ballot=ballot)
            self._store(entry)
            self._accepts[slot] = {self._id}
            self._uncommitted_bytes += entry.size_bytes()
            if entry.kind is EntryKind.CONFIG:
                self._pending_conf_slot = Index(slot)
        self._recovered_through = Index(last)
        for peer in self._conf.all_nodes():
            if peer != self._id:
                self._progress[peer] = Progress(next=Index(self._commit + 1))
        self._logger.info(
            "became_leader",
            ballot=format_ballot(ballot),
            recovered_through=int(last),
            commit=int(self._commit),
        )
        self._maybe_commit()
        self._heartbeat_due = True

    def _reset_role_state(self) -> None:
        self._ballot = NO_BALLOT
        self._votes = {}
        self._recovered = {}
        self._prepare_sent = set()
        self._transfer_campaign = False
        self._lagging = False
        self._progress = {}
        self._accepts = {}
        self._uncommitted_bytes = 0
        self._recovered_through = Index(0)
        self._pending_conf_slot = Index(0)
        self._heartbeat_elapsed = 0
        self._quorum_elapsed = 0
        self._heartbeat_due = False
        self._round_sent_tick = {}
        self._round_acks = {}
        self._quorum_round = 0
        self._heartbeat_round = 0
        self._lease_until = None
        self._lease_disabled = False
        if self._reads_pending or self._reads_awaiting_recovery:
            # Reads in flight die with the leadership: the client retries at the new leader.
            self._logger.info("reads_dropped", count=len(self._reads_pending))
        self._reads_pending = []
        self._reads_awaiting_recovery = []
        if self._transfer_to != NO_NODE:
            self._logger.info("transfer_ended", target=int(self._transfer_to))
        self._transfer_to = NO_NODE
        self._transfer_elapsed = 0

    # ================================================================== ticks

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        self._leader_elapsed += 1
        if self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self._start_election(transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= self._cfg.heartbeat_interval_ticks:
            self._heartbeat_elapsed = 0
            self._heartbeat_due = True
        self._quorum_elapsed += 1
        if self._quorum_elapsed >= self._cfg.election_timeout_ticks:
            self._quorum_elapsed = 0
            active = [self._id] + [
                p for p in sorted(self._progress) if self._progress[p].recent_active
            ]
            for pr in self._progress.values():
                pr.recent_active = False
            if self._cfg.check_quorum and not is_quorum(self._conf, active):
                # Raft thesis §6.2 (CheckQuorum): a leader cut off from a quorum steps down so
                # that clients find the new leader; its lease has expired by now anyway.
                self._logger.info("stepped_down", reason="quorum_inactive")
                self._become_follower(NO_NODE)
                return
        if self._transfer_to != NO_NODE:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._cfg.election_timeout_ticks:
                self._logger.info("transfer_aborted", target=int(self._transfer_to))
                self._transfer_to = NO_NODE
                self._transfer_elapsed = 0

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        # Randomised in [T, 2T): separates duelling proposers (PMS §3 "a different proposer
        # ... can be elected", PML §2.2 leader backoff).
        timeout = self._cfg.election_timeout_ticks
        self._randomized_timeout = self._rng.randrange(timeout, 2 * timeout)

    # ================================================================== elections

    def _start_election(self, *, transfer: bool) -> None:
        if not self._conf.is_voter(self._id):
            self._logger.debug("campaign_skipped", reason="not_a_voter")
            self._reset_election_timer()
            return
        if self._cfg.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer=transfer)

    def _next_round(self) -> int:
        return max(ballot_round(self._promised), self._max_round_seen) + 1

    def _note_round(self, ballot: Term) -> None:
        self._max_round_seen = max(self._max_round_seen, ballot_round(ballot))

    def _heard_from_leader(self, src: NodeId) -> bool:
        """Whether a live leader other than ``src`` spoke within an election timeout."""
        if self._role is Role.LEADER:
            return src != self._id
        if self._leader_elapsed >= self._cfg.election_timeout_ticks:
            self._restart_guard = False
            return False
        # After a restart we may have acknowledged a leader's lease just before crashing
        # and forgotten when: treat that unknown leader as heard at start-up.
        return self._restart_guard or self._leader not in (NO_NODE, src)

    def _removed(self, candidate: NodeId, candidate_commit: Index) -> bool:
        """Whether ``candidate`` is not a voter in our configuration, which we committed
        beyond the candidate's commit point (so the candidate's view is the stale one)."""
        return candidate_commit < self._commit and not self._conf.is_voter(candidate)

    def _on_pre_check(self, src: NodeId, m: PreCheck) -> None:
        granted = (
            m.ballot > self._promised
            # Parity with Raft, which ignores (pre-)votes while ``_in_lease()``: the "I heard
            # from a live leader" refusal exists to protect CheckQuorum's lease (thesis §6.2,
            # §4.2.3), so it applies exactly when check_quorum is on, as in ``_on_prepare``.
            and not (self._cfg.check_quorum and self._heard_from_leader(src))
            and m.commit >= self._log.snapshot_index
            and not self._removed(src, m.commit)
        )
        self._logger.debug("pre_check_answered", candidate=int(src), granted=granted)
        self._send(src, PreCheckResponse(ballot=m.ballot, granted=granted, promised=self._promised))

    def _on_prepare(self, src: NodeId, m: Prepare) -> None:
        if ballot_node(m.ballot) != src:
            self._logger.warning("ballot_owner_mismatch", src=int(src))
            return
        if m.ballot < self._promised:
            self._send_nack(src, m.ballot, NackReason.HIGHER_BALLOT)
            return
        if (
            m.ballot > self._promised
            and self._cfg.check_quorum
            and not m.transfer
            and self._heard_from_leader(src)
        ):
            # Leader lease (Raft thesis §6.4.1 analogue): within an election timeout of
            # hearing from the leader we promise nobody else, so its lease stays valid.
            self._send_nack(src, m.ballot, NackReason.LEASE)
            return
        if self._removed(src, Index(m.from_slot - 1)):
            # Raft thesis §4.2.3's disruptive removed server: it never learned its removal
            # and would otherwise depose leaders forever. Refusing is always safe.
            self._send_nack(src, m.ballot, NackReason.NOT_MEMBER)
            return
        if m.from_slot <= self._log.snapshot_index:
            # The candidate asks about slots we compacted: we cannot report them, so we do
            # not promise (refusing is always safe); an up-to-date node will win instead.
            self._send_nack(src, m.ballot, NackReason.BEHIND)
            return
        if m.ballot > self._promised:
            self._promised = m.ballot
            self._note_round(m.ballot)
            if self._role is not Role.FOLLOWER or self._leader != NO_NODE:
                self._become_follower(NO_NODE)
            self._election_elapsed = 0
            self._logger.debug("promised", ballot=format_ballot(m.ballot), candidate=int(src))
        entries, next_slot = self._log.above(m.from_slot, self._cfg.max_msg_bytes)
        # The promise goes out in the Ready that persists ``promised`` (PMS §2.3).
        self._send(
            src,
            Promise(
                ballot=m.ballot,
                from_slot=m.from_slot,
                entries=tuple(entries),
                next_slot=next_slot,
                commit=self._commit,
            ),
        )

    def _step_pre_candidate(self, src: NodeId, m: PaxosMessage) -> None:
        match m:
            case PreCheckResponse() if m.ballot == self._ballot:
                self._note_round(m.promised)
                self._votes[src] = m.granted
                self._tally_pre_check()
            case _:
                pass

    def _tally_pre_check(self) -> None:
        result = tally(self._conf, self._votes)
        if result is VoteResult.WON:
            self._become_candidate(transfer=False)
        elif result is VoteResult.LOST:
            self._logger.info("pre_check_lost", ballot=format_ballot(self._ballot))
            self._become_follower(NO_NODE)

    def _step_candidate(self, src: NodeId, m: PaxosMessage) -> None:
        match m:
            case Promise() if m.ballot == self._ballot:
                self._on_promise(src, m)
            case Nack() if m.ballot == self._ballot:
                self._on_nack_candidate(src, m)
            case _:
                pass

    def _on_promise(self, src: NodeId, m: Promise) -> None:
        if self._votes.get(src) is not None:
            return
        self._logger.debug(
            "promise_received", peer=int(src), entries=len(m.entries), more=bool(m.next_slot)
        )
        for entry in m.entries:
            if entry.index <= self._commit:
                continue
            current = self._recovered.get(entry.index)
            if current is None or entry.accepted_ballot > current.accepted_ballot:
                self._recovered[entry.index] = entry
            elif entry.accepted_ballot == current.accepted_ballot:
                # One proposer, one value per slot per ballot (PMS §2.2).
                require(
                    _same_value(entry, current),
                    f"two values accepted at one ballot, slot {entry.index}",
                )
        if m.next_slot:
            # Page the rest of the promise: same ballot, continue from where it stopped.
            self._send(
                src,
                Prepare(
                    ballot=self._ballot, from_slot=m.next_slot, transfer=self._transfer_campaign
                ),
            )
            return
        self._votes[src] = True
        self._check_phase1()

    def _on_nack_candidate(self, src: NodeId, m: Nack) -> None:
        self._note_round(m.promised)
        self._logger.debug("nack_received", peer=int(src), reason=m.reason.name)
        if m.reason is NackReason.HIGHER_BALLOT:
            # PMS §3: a proposer that learns of a higher ballot abandons; the randomized
            # election timer is the backoff, the next round will exceed m.promised.
            self._logger.info("phase1_abandoned", promised=format_ballot(m.promised))
            self._become_follower(NO_NODE)
            return
        if m.reason in (NackReason.BEHIND, NackReason.NOT_MEMBER):
            self._lagging = True
        self._votes[src] = False
        self._check_phase1()

    def _conf_chain(self) -> list[ConfState]:
        """Every configuration that may govern a slot above our commit point.

        The configuration at ``commit + 1`` is known; a CONFIG value recovered at slot s
        governs slots above s if it was (or will now be) chosen, so phase 1 must also hold a
        quorum of that configuration (see the package docstring, "Reconfiguration").
        """
        chain = [self._conf]
        for slot in sorted(self._recovered):
            entry = self._recovered[slot]
            if entry.kind is EntryKind.CONFIG:
                chain.append(decode_conf_entry(entry.data)[1])
        return chain

    def _check_phase1(self) -> None:
        chain = self._conf_chain()
        targets = sorted({n for conf in chain for n in conf.all_nodes() if conf.is_voter(n)})
        for peer in targets:
            if peer != self._id and peer not in self._prepare_sent:
                self._prepare_sent.add(peer)
                self._send(
                    peer,
                    Prepare(
                        ballot=self._ballot,
                        from_slot=Index(self._commit + 1),
                        transfer=self._transfer_campaign,
                    ),
                )
        results = [tally(conf, self._votes) for conf in chain]
        if any(r is VoteResult.LOST for r in results):
            lagging = self._lagging
            self._logger.info("phase1_lost", ballot=format_ballot(self._ballot), lagging=lagging)
            self._become_follower(NO_NODE)
            if lagging:
                # Peers compacted past us (or removed us): we cannot win, but our ever higher
                # self-promises would keep outbidding candidates that can. Stand back for
                # several timeouts so an up-to-date node wins and catches us up.
                timeout = self._cfg.election_timeout_ticks
                self._randomized_timeout += self._rng.randrange(2 * timeout, 4 * timeout)
        elif all(r is VoteResult.WON for r in results):
            self._become_leader()

    # ================================================================== follower

    def _step_follower(self, src: NodeId, m: PaxosMessage) -> None:
        match m:
            case Accept() | Learn():
                self._on_accept(src, m)
            case Heartbeat():
                self._on_heartbeat(src, m)
            case InstallSnapshot():
                self._on_install_snapshot(src, m)
            case TimeoutNow():
                self._logger.info("timeout_now_received", leader=int(src))
                self._start_election(transfer=True)
            case _:
                pass  # responses to a role we no longer hold

    def _on_accept(self, src: NodeId, m: Accept | Learn) -> None:
        ballot = m.ballot
        for entry in m.entries:
            if entry.index <= self._commit:
                known = self._log.get(entry.index)
                if known is not None:
                    require(
                        _same_value(known, entry),
                        f"leader sent a different chosen value at {entry.index}",
                    )
                continue
            if isinstance(m, Learn):
                require(entry.index <= m.commit, "Learn carries an unchosen slot")
            accepted = replace(entry, accepted_ballot=ballot)
            if self._log.get(entry.index) != accepted:
                self._store(accepted)
        self._advance_commit_from(ballot, m.commit)
        first = m.entries[0].index if m.entries else Index(0)
        last = m.entries[-1].index if m.entries else Index(0)
        self._send(
            src,
            Accepted(
                ballot=ballot,
                from_slot=first,
                to_slot=last,
                commit=self._commit,
                accepted_through=self._accepted_through(ballot),
            ),
        )

    def _on_heartbeat(self, src: NodeId, m: Heartbeat) -> None:
        self._advance_commit_from(m.ballot, m.commit)
        self._send(
            src,
            HeartbeatAck(
                ballot=m.ballot,
                round=m.round,
                commit=self._commit,
                accepted_through=self._accepted_through(m.ballot),
            ),
        )

    def _accepted_through(self, ballot: Term) -> Index:
        """Highest t such that every slot in (commit, t] is accepted at ``ballot``."""
        if self._through_ballot != ballot:
            self._through_ballot = ballot
            self._through = self._commit
        through = int(max(self._through, self._commit))
        while True:
            entry = self._log.get(through + 1)
            if entry is None or entry.accepted_ballot != ballot:
                break
            through += 1
        self._through = Index(through)
        return self._through

    def _advance_commit_from(self, ballot: Term, leader_commit: Index) -> None:
        """Learn chosen slots from the leader of ``ballot`` (see "Followers learn" in the
        package docstring): slot s is chosen and we hold its value iff s <= the leader's
        commit and we accepted s at the leader's own ballot."""
        known = min(leader_commit, self._accepted_through(ballot))
        if known > self._commit:
            self._commit_to(known)

    def _on_install_snapshot(self, src: NodeId, m: InstallSnapshot) -> None:
        index = m.meta.index
        if index <= self._commit:
            self._snapshot_recv = None
            self._send_snapshot_response(src, m.ballot, index, 0, done=True)
            return
        recv = self._snapshot_recv
        if recv is None or recv[0] != m.meta:
            if m.offset != 0:
                self._send_snapshot_response(src, m.ballot, index, 0, done=False)
                return
            recv = (m.meta, bytearray())
            self._snapshot_recv = recv
        buffer = recv[1]
        if m.offset != len(buffer):
            self._send_snapshot_response(src, m.ballot, index, len(buffer), done=False)
            return
        buffer.extend(m.data)
        if not m.done:
            self._send_snapshot_response(src, m.ballot, index, len(buffer), done=False)
            return
        self._snapshot_recv = None
        self._install_snapshot(Snapshot(meta=m.meta, data=bytes(buffer)))
        self._send_snapshot_response(src, m.ballot, index, len(buffer), done=True)

    def _install_snapshot(self, snap: Snapshot) -> None:
        index = snap.meta.index
        self._log.compact(snap)
        self._forget_below(index)
        self._commit = index
        self._handed = max(self._handed, index)
        self._conf = snap.meta.conf
        self._conf_history = [(index, snap.meta.conf)]
        self._pending_snapshot = snap
        self._pending_apply_snapshot = snap
        self._logger.info("snapshot_installed", index=int(index))

    def _send_snapshot_response(
        self, dst: NodeId, ballot: Term, index: Index, offset: int, *, done: bool
    ) -> None:
        self._send(
            dst,
            InstallSnapshotResponse(
                ballot=ballot,
                snapshot_index=index,
                next_offset=offset,
                done=done,
                commit=self._commit,
            ),
        )

    # ================================================================== leader

    def _step_leader(self, src: NodeId, m: PaxosMessage) -> None:
        match m:
            case Accepted() if m.ballot == self._ballot:
                self._on_accepted(src, m)
            case HeartbeatAck() if m.ballot == self._ballot:
                self._on_heartbeat_ack(src, m)
            case InstallSnapshotResponse() if m.ballot == self._ballot:
                self._on_snapshot_response(src, m)
            case Nack() if m.ballot == self._ballot and m.promised > self._ballot:
                self._note_round(m.promised)
                self._logger.info(
                    "stepped_down", reason="higher_ballot", promised=format_ballot(m.promised)
                )
                self._become_follower(NO_NODE)
            case _:
                pass

    def _append(self, kind: EntryKind, data: bytes) -> Proposed:
        size = len(data) + _ENTRY_OVERHEAD_BYTES
        if self._pending_conf_slot > self._commit:
            # Alpha = 1 at configuration changes: nothing is proposed beyond a pending CONFIG
            # slot until it is chosen, so every slot has exactly one configuration.
            raise ProposalDropped("a membership change is pending; retry once it commits")
        self._cfg.check_entry_limits(size, self._uncommitted_bytes)
        slot = Index(self._log.last_index + 1)
        entry = Entry(
            index=slot, term=self._ballot, kind=kind, data=data, accepted_ballot=self._ballot
        )
        self._store(entry)
        self._accepts[slot] = {self._id}
        self._uncommitted_bytes += size
        if kind is EntryKind.CONFIG:
            self._pending_conf_slot = slot
            self._logger.info("membership_proposed", slot=int(slot))
        self._maybe_commit()
        return Proposed(index=slot, term=self._ballot)

    def _maybe_commit(self) -> None:
        """Advance the commit point over the gap-free prefix of chosen slots.

        A slot is chosen once a quorum accepted it at our ballot (PMS §2.2); later slots may
        be chosen first, but the commit point, and so the applied stream, never skips a slot.
        """
        target = self._commit
        while True:
            voters = self._accepts.get(target + 1)
            if voters is None or not is_quorum(self._conf, voters):
                break
            target = Index(target + 1)
        if target > self._commit:
            self._commit_to(target)

    def _commit_to(self, target: Index) -> None:
        conf_before = self._conf
        for slot in range(self._commit + 1, target + 1):
            entry = self._log.get(slot)
            require(entry is not None, f"cannot commit hole {slot}")
            if entry is None:
                continue
            if self._accepts.pop(slot, None) is not None:
                self._uncommitted_bytes -= entry.size_bytes()
            if entry.kind is EntryKind.CONFIG:
                # The configuration at slot s+1 is the one after the CONFIG value at s.
                self._commit = Index(slot)
                self._apply_conf_entry(entry)
        self._commit = target
        if self._role is not Role.LEADER:
            return
        if self._conf != conf_before:
            self._on_leader_conf_changed()
            if self._role is not Role.LEADER:
                return
        if self._reads_awaiting_recovery and self._recovery_done():
            waiting, self._reads_awaiting_recovery = self._reads_awaiting_recovery, []
            for request_id in waiting:
                self._start_safe_read(request_id)

    def _apply_conf_entry(self, entry: Entry) -> None:
        # Adopt the resulting configuration as written; never replay the ops on our own base
        # (a joiner's base is empty, and replaying would invent a membership).
        self._conf = decode_conf_entry(entry.data)[1]
        self._conf_history.append((entry.index, self._conf))
        self._logger.info(
            "membership_applied",
            slot=int(entry.index),
            voters=[int(v) for v in self._conf.voters],
            learners=[int(n) for n in self._conf.learners],
        )

    def _on_leader_conf_changed(self) -> None:
        members = set(self._conf.all_nodes())
        for peer in sorted(self._progress):
            if peer not in members:
                del self._progress[peer]
                self._round_acks.pop(peer, None)
        for peer in sorted(members):
            if peer != self._id and peer not in self._progress:
                self._progress[peer] = Progress(next=Index(self._commit + 1))
        if self._transfer_to != NO_NODE and not self._conf.is_voter(self._transfer_to):
            self._transfer_to = NO_NODE
        if not self._conf.is_voter(self._id):
            self._logger.info("stepped_down", reason="removed_from_configuration")
            self._become_follower(NO_NODE)

    def _recovery_done(self) -> bool:
        return self._role is Role.LEADER and self._commit >= self._recovered_through

    def _on_accepted(self, src: NodeId, m: Accepted) -> None:
        pr = self._progress.get(src)
        if pr is None:
            return
        pr.recent_active = True
        pr.inflight = max(0, pr.inflight - 1)
        if pr.state is PeerState.PROBE:
            pr.state = PeerState.REPLICATE
        self._update_match(src, pr, m.accepted_through, m.commit)
        for slot in range(max(m.from_slot, self._commit + 1), m.to_slot + 1):
            voters = self._accepts.get(slot)
            if voters is not None:
                voters.add(src)
        self._maybe_commit()
        if self._role is Role.LEADER:
            self._maybe_send_timeout_now(resend=False)

    def _update_match(self, src: NodeId, pr: Progress, through: Index, commit: Index) -> None:
        pr.commit = max(pr.commit, commit)
        pr.match = max(pr.match, through)
        pr.next = max(pr.next, Index(pr.match + 1))
        # Slots in (commit, match] are accepted at our ballot by ``src``: count them even if
        # the Accepted that carried them was lost.
        for slot in range(max(pr.voted_through, self._commit) + 1, pr.match + 1):
            voters = self._accepts.get(slot)
            if voters is not None:
                voters.add(src)
        pr.voted_through = max(pr.voted_through, pr.match)

    def _on_heartbeat_ack(self, src: NodeId, m: HeartbeatAck) -> None:
        pr = self._progress.get(src)
        if pr is None:
            return
        pr.recent_active = True
        self._update_match(src, pr, m.accepted_through, m.commit)
        if m.round > self._round_acks.get(src, 0):
            self._round_acks[src] = m.round
        if pr.state is PeerState.SNAPSHOT:
            if pr.snapshot_stalled:
                self._send_snapshot_chunk(src, pr)
            pr.snapshot_stalled = True
        elif pr.match < self._log.last_index and (
            pr.inflight == 0 or pr.match == pr.last_heartbeat_match
        ):
            # Paxos acceptors never reject a gap, so loss shows only as no progress between
            # two heartbeat acks: resend from what the peer holds (duplicates are harmless).
            pr.next = Index(pr.match + 1)
            pr.inflight = 0
        pr.last_heartbeat_match = pr.match
        self._maybe_commit()
        if self._role is not Role.LEADER:
            return
        self._update_lease_and_reads()
        self._maybe_send_timeout_now(resend=True)

    def _on_snapshot_response(self, src: NodeId, m: InstallSnapshotResponse) -> None:
        pr = self._progress.get(src)
        if pr is None:
            return
        pr.recent_active = True
        pr.snapshot_stalled = False
        pr.commit = max(pr.commit, m.commit)
        if m.done:
            if pr.state is PeerState.SNAPSHOT:
                pr.state = PeerState.REPLICATE
                pr.inflight = 0
            pr.match = max(pr.match, m.commit)
            pr.voted_through = max(pr.voted_through, pr.match)
            pr.next = Index(max(pr.next, pr.match + 1))
            self._logger.debug("snapshot_sent", peer=int(src), index=int(m.snapshot_index))
            return
        if pr.state is PeerState.SNAPSHOT and m.snapshot_index == pr.snapshot_index:
            pr.snapshot_offset = m.next_offset
            self._send_snapshot_chunk(src, pr)

    def _send_append(self, peer: NodeId) -> None:
        pr = self._progress[peer]
        last = self._log.last_index
        while self._append_due(pr):
            if pr.next < self._log.first_index:
                self._start_snapshot(peer, pr)
                return
            entries = self._log.run(pr.next, last, self._cfg.max_msg_bytes)
            require(bool(entries), f"leader log has a hole at {pr.next}")
            body: Accept | Learn
            if entries[0].index <= self._commit:
                # Catch-up by chosen-value transfer: everything here is already chosen.
                entries = [e for e in entries if e.index <= self._commit]
                body = Learn(ballot=self._ballot, entries=tuple(entries), commit=self._commit)
            else:
                body = Accept(ballot=self._ballot, entries=tuple(entries), commit=self._commit)
            self._send(peer, body)
            pr.next = Index(entries[-1].index + 1)
            pr.inflight += 1
            if pr.state is PeerState.PROBE:
                return

    def _start_snapshot(self, peer: NodeId, pr: Progress) -> None:
        snap = self._log.snapshot
        if snap is None:
            raise InvariantViolation("slots below first_index without a snapshot")
        pr.state = PeerState.SNAPSHOT
        pr.snapshot_index = snap.meta.index
        pr.snapshot_offset = 0
        pr.snapshot_stalled = False
        self._logger.info("snapshot_transfer_started", peer=int(peer), index=int(snap.meta.index))
        self._send_snapshot_chunk(peer, pr)

    def _send_snapshot_chunk(self, peer: NodeId, pr: Progress) -> None:
        snap = self._log.snapshot
        if snap is None:
            return
        if snap.meta.index != pr.snapshot_index:
            # We compacted again meanwhile: restart with the newer snapshot.
            pr.snapshot_index = snap.meta.index
            pr.snapshot_offset = 0
        offset = pr.snapshot_offset
        chunk = snap.data[offset : offset + self._cfg.max_snapshot_chunk_bytes]
        self._send(
            peer,
            InstallSnapshot(
                ballot=self._ballot,
                meta=snap.meta,
                offset=offset,
                data=chunk,
                done=offset + len(chunk) >= len(snap.data),
            ),
        )

    def _broadcast_heartbeat(self) -> None:
        self._heartbeat_due = False
        self._heartbeat_round += 1
        self._round_sent_tick[self._heartbeat_round] = self._now
        for peer in sorted(self._progress):
            self._send(
                peer,
                Heartbeat(ballot=self._ballot, commit=self._commit, round=self._heartbeat_round),
            )
        self._update_lease_and_reads()

    def _update_lease_and_reads(self) -> None:
        acks = {peer: Index(r) for peer, r in self._round_acks.items()}
        acks[self._id] = Index(self._heartbeat_round)
        # Rounds increase, so "the highest round a quorum acknowledged" is the same order
        # statistic as a commit index over match indexes.
        round_ = int(committed_index(self._conf, acks))
        if round_ <= self._quorum_round:
            return
        self._quorum_round = round_
        sent = self._round_sent_tick.get(round_)
        if sent is not None and self._cfg.check_quorum and not self._lease_disabled:
            # The lease runs from when the leader SENT the round: acceptors start their own
            # election-timeout wait only on receipt, which is later (see "Leases").
            span = int(self._cfg.election_timeout_ticks * (1 - self._cfg.lease_clock_drift_ratio))
            self._lease_until = sent + span
        for r in [r for r in self._round_sent_tick if r < round_]:
            del self._round_sent_tick[r]
        done = [p for p in self._reads_pending if p[2] <= round_]
        self._reads_pending = [p for p in self._reads_pending if p[2] > round_]
        for request_id, index, _ in done:
            self._read_states.append(ReadState(request_id=request_id, index=index))

    def _lease_valid(self) -> bool:
        return (
            self._cfg.check_quorum
            and not self._lease_disabled
            and self._transfer_to == NO_NODE
            and self._recovery_done()
            and self._lease_until is not None
            and self._now < self._lease_until
        )

    def _start_safe_read(self, request_id: int) -> None:
        # The next heartbeat round confirms we still lead: acceptors that promised a higher
        # ballot answer with a Nack instead of an ack (PMS §2.3).
        self._reads_pending.append((request_id, self._commit, self._heartbeat_round + 1))
        self._heartbeat_due = True

    def _maybe_send_timeout_now(self, *, resend: bool) -> None:
        target = self._transfer_to
        if target == NO_NODE:
            return
        pr = self._progress.get(target)
        if pr is None:
            return
        if pr.match >= self._log.last_index and pr.state is not PeerState.SNAPSHOT:
            if resend or not self._lease_disabled:
                # From here on the target may win without waiting out our lease, so we stop
                # trusting the lease for the rest of this ballot.
                self._lease_disabled = True
                self._lease_until = None
                self._send(target, TimeoutNow(ballot=self._ballot))
        else:
            self._send_append(target)

    # ================================================================== plumbing

    def _require_leader(self) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)

    def _flush(self) -> None:
        """Turn leader bookkeeping into messages, batching everything since the last Ready:
        one heartbeat round and, per peer, Accepts covering all new slots. Only ``ready()``
        calls this; ``has_ready()`` asks ``_flush_due`` instead."""
        if self._role is not Role.LEADER:
            return
        if self._heartbeat_due:
            self._broadcast_heartbeat()
        for peer in sorted(self._progress):
            self._send_append(peer)

    def _flush_due(self) -> bool:
        """Whether ``_flush`` would produce a message or a read state (no side effects).

        A heartbeat round produces a message per peer; with no peers (a single-member group)
        it can still confirm pending reads at once. Otherwise a peer gets an Accept, Learn
        or snapshot chunk exactly when ``_send_append`` would send one."""
        if self._role is not Role.LEADER:
            return False
        if self._heartbeat_due and (self._progress or self._reads_pending):
            return True
        return any(self._append_due(self._progress[peer]) for peer in sorted(self._progress))

    def _append_due(self, pr: Progress) -> bool:
        """Whether ``_send_append`` would send this peer something now."""
        return (
            pr.state is not PeerState.SNAPSHOT
            and pr.inflight < self._cfg.max_inflight_msgs
            and pr.next <= self._log.last_index
        )

    def _store(self, entry: Entry) -> None:
        self._log.put(entry)
        self._pending_entries[entry.index] = entry

    def _forget_below(self, index: Index) -> None:
        for slot in [s for s in self._pending_entries if s <= index]:
            del self._pending_entries[slot]

    def _conf_at(self, index: Index) -> ConfState:
        conf = self._conf_history[0][1]
        for slot, c in self._conf_history:
            if slot <= index:
                conf = c
        return conf

    def _hard_state(self) -> HardState:
        return HardState(term=self._promised, vote=NO_NODE, commit=self._commit)

    def _send_nack(self, dst: NodeId, ballot: Term, reason: NackReason) -> None:
        self._send(
            dst, Nack(ballot=ballot, promised=self._promised, reason=reason, commit=self._commit)
        )

    def _send(self, dst: NodeId, body: PaxosMessage) -> None:
        self._msgs.append(Message(group_id=self._cfg.group_id, src=self._id, dst=dst, body=body))
