"""The Raft state machine (Ongaro & Ousterhout 2014; Ongaro's thesis 2014), pure and
deterministic, in etcd's shape: ``step``/``tick`` in, one ``Ready`` of effects out.

Roles swap ``self._step`` and ``self._tick`` only in ``_become_*``; the term rules of §5.1
that apply to every message live once in ``step``. Time is ``tick()``; randomness is the
injected ``random.Random``.

Linearizable reads (``read_index``)
-----------------------------------
SAFE (ReadIndex, thesis §6.4): the leader (1) must have committed an entry of its current
term, so that its commit index covers every write acknowledged by any earlier leader (the
no-op appended on election makes this happen promptly, §8); reads arriving earlier are
queued until then. (2) It records the commit index as the read index. (3) It broadcasts a
new heartbeat round and waits for a quorum to answer it: then nobody else can have been
leader of a newer term when that round left, so no write newer than the read index can have
been acknowledged before the read. (4) The read is answered by a ``ReadState``; the caller
serves it once the state machine has applied ``index``.

LEASE (thesis §6.4.1) skips step (3) within a lease, and needs ``check_quorum``. The timing
assumption: no follower's tick runs more than ``lease_clock_drift_ratio`` faster than the
leader's, relative to the same real time (a fast follower's election timer expires early in
real time; ``T * (1 - r) <= T / (1 + r)`` keeps the lease inside it). The lease starts at
the tick when the leader *sent* the heartbeat round that a quorum acknowledged, not when the
acks arrived: a follower resets its election timer when the heartbeat arrives, which is after
it was sent, so counting from the send time only under-estimates how long the follower will
stay loyal.
It lasts ``election_timeout_ticks * (1 - lease_clock_drift_ratio)`` leader ticks. Why no
other leader can appear meanwhile: with CheckQuorum, a follower that heard from a live
leader within its election timeout ignores RequestVote and PreVote (unless they carry the
transfer flag, which only this leader can cause by sending TimeoutNow; the lease is dropped
the moment a transfer starts). Any new leader needs a vote from a quorum, which intersects
the quorum that acknowledged the round, and each member of that quorum refuses votes for a
full election timeout of its own ticks after receiving the round. Outside the lease, a LEASE
read falls back to SAFE.

That refusal must survive a crash. The member's memory of the leader (``_leader``,
``_election_elapsed``) is volatile: a member that acknowledged the round and restarted at
once would otherwise grant votes immediately, a candidate cut off from the leader could win
with it and commit, and the old leader would still answer LEASE reads at an older index
(a stale read). So a node restarted from persisted state (a term above 0 or any log or
snapshot) treats itself as having heard from a leader at start-up and refuses non-transfer
(pre-)votes for one election timeout of its own ticks (``_restart_guard_until_tick``).
Restarting happens after the acknowledgement, so the refusal window it opens ends later than
the one the crash cut short; the lease argument needs exactly "every member of the
acknowledging quorum refuses for a full timeout after acking", across restarts. Nothing is
persisted for this, and a freshly restarted cluster is not slowed down: a follower's own
election timer is randomized in [T, 2T), so by the time anyone campaigns the guard has
expired everywhere that ticks at the same rate. A brand-new node (empty state) never
acknowledged anything and is not guarded.
"""

from __future__ import annotations

import random
from collections.abc import Callable

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
from consensus.invariants import require
from consensus.membership import decode_conf_entry, encode_conf_entry, is_quorum, tally
from consensus.quorum import VoteResult, committed_index
from consensus.raft.conf import ConfChangeError, ConfHistory, apply_change
from consensus.raft.log import RaftLog
from consensus.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RaftBody,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from consensus.raft.progress import Progress, ProgressState
from consensus.raft.read_only import ReadOnly
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

MAX_PENDING_READS = 4096
"""Reads waiting for a quorum round or for the first commit of a term; more are refused."""

_LEADER_TRAFFIC = (AppendEntries, Heartbeat, InstallSnapshot)


class _SnapshotAssembly:
    """Chunks of one incoming snapshot, received in order."""

    __slots__ = ("buffer", "meta")

    def __init__(self, meta: SnapshotMeta) -> None:
        self.meta = meta
        self.buffer = bytearray()


class RaftCore:
    """One member of one Raft group. Implements ``consensus.api.ConsensusCore``."""

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
        snap = state.snapshot
        if snap is not None:
            self._log = RaftLog(
                snapshot_index=snap.meta.index, snapshot_term=snap.meta.term, entries=state.entries
            )
            self._confs = ConfHistory(snap.meta.index, snap.meta.conf)
        else:
            self._log = RaftLog(entries=state.entries)
            self._confs = ConfHistory(Index(0), initial_conf or ConfState())
        # Append-time rule (see conf.py): every configuration entry in the log is in force.
        for entry in state.entries:
            if entry.kind is EntryKind.CONFIG:
                self._confs.append(entry.index, decode_conf_entry(entry.data)[1])
        hs = state.hard_state
        require(
            hs.commit <= self._log.last_index,
            f"persisted commit {hs.commit} is beyond the persisted log",
        )
        self._term = hs.term
        self._vote = hs.vote
        self._commit = Index(max(hs.commit, self._log.snapshot_index))
        self._applied = self._log.snapshot_index
        self._snapshot: Snapshot | None = snap
        self._prev_hard_state = hs

        # Effects waiting for the next Ready.
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._snapshot_to_persist: Snapshot | None = None
        self._snapshot_to_apply: Snapshot | None = None
        self._outstanding: Ready | None = None

        # Role state.
        self._role = Role.FOLLOWER
        self._leader = NO_NODE
        self._step: Callable[[NodeId, RaftBody], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._ticks = 0
        """Logical clock: ticks since this core was built (lease arithmetic)."""
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = config.election_timeout_ticks
        self._votes: dict[NodeId, bool] = {}
        self._progress: dict[NodeId, Progress] = {}
        self._read_only = ReadOnly()
        self._reads_awaiting_term_commit: list[tuple[int, ReadMode]] = []
        self._lease_start_tick: int | None = None
        self._transferee = NO_NODE
        self._transfer_elapsed = 0
        self._uncommitted_bytes = 0
        self._incoming_snapshot: _SnapshotAssembly | None = None
        self._replication_due = False
        """Leader: appends or a commit advance wait for the next ``ready()`` to be sent, so
        that everything between two Readys leaves as one AppendEntries per follower."""
        restarted = hs.term > 0 or snap is not None or bool(state.entries)
        self._restart_guard_until_tick = config.election_timeout_ticks if restarted else 0
        """A restarted node may have acknowledged a leader's lease round just before it
        crashed and forgotten when: it behaves as if it heard from a leader at start-up and
        refuses non-transfer (pre-)votes until this tick (see the module docstring)."""

        self._become_follower(self._term, NO_NODE)

    # ================================================================== public API

    def tick(self) -> None:
        self._ticks += 1
        self._tick()

    def step(self, message: Message) -> None:
        if message.dst != self._id or message.group_id != self._cfg.group_id:
            raise UsageError(
                f"message for node {message.dst} group {message.group_id} delivered to "
                f"node {self._id} group {self._cfg.group_id}"
            )
        body = message.body
        if not isinstance(
            body,
            RequestVote
            | RequestVoteResponse
            | AppendEntries
            | AppendEntriesResponse
            | Heartbeat
            | HeartbeatResponse
            | InstallSnapshot
            | InstallSnapshotResponse
            | TimeoutNow,
        ):
            raise UsageError(f"not a Raft message body: {type(body).__name__}")
        src = message.src
        # §5.1: terms act as a logical clock, checked once here for every message kind.
        if body.term > self._term:
            if isinstance(body, RequestVote) and not body.transfer and self._in_lease():
                # Thesis §4.2.3 / §6.2: we heard from a live leader less than an election
                # timeout ago, so this candidate is disruptive (or partitioned). Ignoring it
                # is also what makes the leader lease safe.
                self._logger.debug(
                    "vote_ignored_in_lease",
                    term=int(self._term),
                    candidate=int(src),
                    candidate_term=int(body.term),
                    pre_vote=body.pre_vote,
                )
                return
            if isinstance(body, RequestVote) and body.pre_vote:
                pass  # a pre-vote never changes our term (thesis §9.6)
            elif isinstance(body, RequestVoteResponse) and body.pre_vote and body.granted:
                pass  # a granted pre-vote echoes the term we would campaign in
            else:
                leader = src if isinstance(body, _LEADER_TRAFFIC) else NO_NODE
                self._become_follower(body.term, leader)
        elif body.term < self._term:
            if (self._cfg.check_quorum or self._cfg.pre_vote) and isinstance(
                body, AppendEntries | Heartbeat
            ):
                # A leader cut off by a partition may have a lower term than us forever when
                # PreVote or CheckQuorum keep our elections from reaching it; tell it our term
                # so it steps down instead of staying a zombie leader (etcd does the same).
                self._send(src, HeartbeatResponse(term=self._term))
            elif isinstance(body, RequestVote) and body.pre_vote:
                # Let the pre-candidate learn our term, otherwise it would retry forever.
                self._send(src, RequestVoteResponse(term=self._term, pre_vote=True, granted=False))
            else:
                self._logger.debug(
                    "stale_message_ignored",
                    term=int(self._term),
                    src=int(src),
                    kind=type(body).__name__,
                    msg_term=int(body.term),
                )
            return
        if isinstance(body, RequestVote):
            self._on_request_vote(src, body)
            return
        self._step(src, body)

    def campaign(self) -> None:
        if self._role is Role.LEADER:
            return
        self._campaign(transfer=False)

    def propose(self, command: bytes) -> Proposed:
        self._require_leader()
        self._refuse_during_transfer()
        entry = Entry(
            index=Index(self._log.last_index + 1),
            term=self._term,
            kind=EntryKind.NORMAL,
            data=bytes(command),
        )
        self._check_entry_limits(entry)
        self._append_as_leader(entry)
        return Proposed(index=entry.index, term=entry.term)

    def read_index(self, request_id: int, *, mode: ReadMode = ReadMode.SAFE) -> None:
        self._require_leader()
        pending = self._read_only.pending_count + len(self._reads_awaiting_term_commit)
        if pending >= MAX_PENDING_READS:
            raise ProposalDropped(f"too many pending reads ({pending})")
        if not self._committed_in_current_term():
            # Thesis §6.4 step 1: until the no-op of this term commits, our commit index may
            # lag behind writes an earlier leader acknowledged.
            self._reads_awaiting_term_commit.append((request_id, mode))
            return
        self._serve_read(request_id, mode)

    def change_membership(self, change: MembershipChange) -> Proposed:
        self._require_leader()
        self._refuse_during_transfer()
        if not self._committed_in_current_term():
            raise ProposalDropped(
                "membership change refused: this leader has not yet committed an entry of "
                "its own term (Ongaro's single-server change fix, raft-dev 2015)"
            )
        if self._confs.current_index > self._commit or self._confs.current.joint:
            raise ProposalDropped(
                "membership change refused: a previous configuration change is still pending"
            )
        try:
            new_conf = apply_change(self._confs.current, change)
        except ConfChangeError as exc:
            raise ProposalDropped(f"membership change refused: {exc}") from exc
        entry = Entry(
            index=Index(self._log.last_index + 1),
            term=self._term,
            kind=EntryKind.CONFIG,
            data=encode_conf_entry(change, new_conf),
        )
        self._check_entry_limits(entry)
        self._append_as_leader(entry)
        return Proposed(index=entry.index, term=entry.term)

    def transfer_leadership(self, target: NodeId) -> None:
        self._require_leader()
        if target == self._id:
            return
        if not self._confs.current.is_voter(target):
            raise ProposalDropped(f"cannot transfer leadership to {target}: not a voter")
        if self._transferee == target:
            return
        if self._transferee != NO_NODE:
            self._abort_transfer("superseded")
        self._transferee = target
        self._transfer_elapsed = 0
        # TimeoutNow lets the target bypass the followers' lease check, so the lease must
        # end now (see the module docstring).
        self._lease_start_tick = None
        self._logger.info("transfer_started", term=int(self._term), target=int(target))
        if self._progress[target].match == self._log.last_index:
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def report_unreachable(self, peer: NodeId) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._progress.get(peer)
        if pr is not None and pr.state is ProgressState.REPLICATE:
            # Messages may have been dropped: stop pipelining into the void, probe instead.
            pr.become_probe()
            self._logger.debug("peer_unreachable", term=int(self._term), peer=int(peer))

    def compact(self, index: Index, data: bytes) -> None:
        if index <= self._log.snapshot_index:
            raise UsageError(f"index {index} is already compacted")
        if index > self._applied:
            raise UsageError(f"cannot compact to {index}: only {self._applied} is applied")
        term = self._log.term(index)
        require(term is not None, "an applied index above the snapshot has a term")
        snap = Snapshot(
            meta=SnapshotMeta(
                index=index,
                term=term if term is not None else Term(0),
                conf=self._confs.at(index),
            ),
            data=bytes(data),
        )
        self._log.compact(index)
        self._confs.compact(index)
        self._snapshot = snap
        self._snapshot_to_persist = snap
        self._logger.debug("log_compacted", index=int(index), term=int(snap.meta.term))

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        return bool(
            self._msgs
            or self._read_states
            or self._flush_due()
            or self._log.has_unstable()
            or self._snapshot_to_persist is not None
            or self._snapshot_to_apply is not None
            or self._hard_state() != self._prev_hard_state
            or self._commit > self._apply_from()
        )

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise UsageError("ready() called again before advance() of the previous Ready")
        self._flush()
        truncate_from, entries = self._log.take_unstable()
        hs = self._hard_state()
        prev = self._prev_hard_state
        hard_state = hs if hs != prev else None
        apply_from = self._apply_from()
        committed = (
            self._log.slice(apply_from + 1, self._commit) if self._commit > apply_from else ()
        )
        rd = Ready(
            hard_state=hard_state,
            truncate_from=truncate_from,
            entries=entries,
            snapshot=self._snapshot_to_persist,
            # A commit-only change needs no fsync: commit can be recovered (Figure 2 lists
            # it as volatile state); term, vote and entries are promises to other nodes.
            must_sync=(
                hs.term != prev.term
                or hs.vote != prev.vote
                or bool(entries)
                or truncate_from is not None
                or self._snapshot_to_persist is not None
            ),
            messages=tuple(self._msgs),
            apply_snapshot=self._snapshot_to_apply,
            committed_entries=committed,
            read_states=tuple(self._read_states),
        )
        self._msgs = []
        self._read_states = []
        self._snapshot_to_persist = None
        self._snapshot_to_apply = None
        self._prev_hard_state = hs
        self._outstanding = rd
        return rd

    def advance(self, ready: Ready) -> None:
        if self._outstanding is None or ready is not self._outstanding:
            raise UsageError("advance() must be given the Ready last returned by ready()")
        self._outstanding = None
        if ready.entries:
            self._log.persisted_to(ready.entries[-1].index)
        if ready.apply_snapshot is not None:
            self._applied = Index(max(self._applied, ready.apply_snapshot.meta.index))
        if ready.committed_entries:
            self._applied = Index(max(self._applied, ready.committed_entries[-1].index))
        if self._role is Role.LEADER and ready.entries:
            # etcd's rule: the leader sends appends before its own disk write, but counts
            # itself toward a quorum only for entries storage has confirmed.
            self._progress[self._id].maybe_update(self._log.persisted)
            self._maybe_commit()

    def status(self) -> Status:
        progress: dict[NodeId, PeerProgress] = {}
        if self._role is Role.LEADER:
            for node in sorted(self._progress):
                pr = self._progress[node]
                progress[node] = PeerProgress(
                    match=pr.match, next=pr.next, state=pr.label(), recent_active=pr.recent_active
                )
        return Status(
            node_id=self._id,
            group_id=self._cfg.group_id,
            role=self._role,
            term=self._term,
            leader=self._leader,
            commit=self._commit,
            applied=self._applied,
            last_index=self._log.last_index,
            first_index=self._log.first_index,
            conf=self._confs.current,
            transferring_to=self._transferee,
            progress=progress,
        )

    # ================================================================== roles

    def _reset(self, term: Term) -> None:
        if term != self._term:
            self._term = term
            self._vote = NO_NODE
        self._leader = NO_NODE
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        # §5.2: randomized timeouts in [T, 2T) make split votes rare.
        t = self._cfg.election_timeout_ticks
        self._randomized_election_timeout = self._rng.randrange(t, 2 * t)
        self._votes = {}
        self._progress = {}
        self._read_only.reset()
        self._reads_awaiting_term_commit = []
        self._lease_start_tick = None
        self._transferee = NO_NODE
        self._transfer_elapsed = 0
        self._uncommitted_bytes = 0
        self._replication_due = False

    def _become_follower(self, term: Term, leader: NodeId) -> None:
        self._reset(term)
        self._role = Role.FOLLOWER
        self._leader = leader
        self._step = self._step_follower
        self._tick = self._tick_election
        self._logger.info("became_follower", term=int(self._term), leader=int(leader))

    def _become_pre_candidate(self) -> None:
        require(self._role is not Role.LEADER, "a leader cannot become a pre-candidate")
        # Thesis §9.6: the term stays unchanged, so a node that cannot win disrupts nobody.
        self._reset(self._term)
        self._role = Role.PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election
        self._logger.info("became_pre_candidate", term=int(self._term), leader=int(NO_NODE))

    def _become_candidate(self) -> None:
        require(self._role is not Role.LEADER, "a leader cannot become a candidate")
        # §5.2: increment the term and vote for ourselves.
        self._reset(Term(self._term + 1))
        self._vote = self._id
        self._role = Role.CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election
        self._logger.info("became_candidate", term=int(self._term), leader=int(NO_NODE))

    def _become_leader(self) -> None:
        require(self._role is Role.CANDIDATE, "only a candidate can become leader")
        self._reset(self._term)
        self._role = Role.LEADER
        self._leader = self._id
        self._step = self._step_leader
        self._tick = self._tick_leader
        self._sync_progress()
        own = self._progress.get(self._id)
        if own is not None:
            own.maybe_update(self._log.persisted)
            own.become_replicate()
        self._logger.info("became_leader", term=int(self._term), leader=int(self._id))
        # §5.4.2 and §8: a new leader cannot count replicas of older-term entries to commit
        # them; committing a no-op of its own term commits them all and tells it the commit
        # index (needed before serving reads, thesis §6.4).
        self._append_as_leader(
            Entry(index=Index(self._log.last_index + 1), term=self._term, kind=EntryKind.NOOP)
        )

    # ================================================================== elections

    def _promotable(self) -> bool:
        return self._confs.current.is_voter(self._id)

    def _campaign(self, *, transfer: bool) -> None:
        if not self._promotable():
            self._logger.debug("campaign_skipped_not_voter", term=int(self._term))
            return
        self._start_election(pre_vote=self._cfg.pre_vote and not transfer, transfer=transfer)

    def _start_election(self, *, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            election_term = Term(self._term + 1)
        else:
            self._become_candidate()
            election_term = self._term
        self._logger.info(
            "election_started", term=int(election_term), pre_vote=pre_vote, transfer=transfer
        )
        self._votes[self._id] = True
        if tally(self._confs.current, self._votes) is VoteResult.WON:
            self._won_election(transfer=transfer)
            return
        request = RequestVote(
            term=election_term,
            pre_vote=pre_vote,
            transfer=transfer,
            last_log_index=self._log.last_index,
            last_log_term=self._log.last_term,
        )
        for voter in self._voters():
            if voter != self._id:
                self._send(voter, request)

    def _won_election(self, *, transfer: bool) -> None:
        if self._role is Role.PRE_CANDIDATE:
            # The pre-vote was won: now run the real election (§5.2).
            self._start_election(pre_vote=False, transfer=transfer)
        else:
            self._become_leader()

    def _on_request_vote(self, src: NodeId, m: RequestVote) -> None:
        # §5.2: at most one vote per term, first come first served; a pre-vote for a future
        # term commits to nothing (thesis §9.6). §5.4.1: only for an up-to-date log.
        can_vote = (
            self._vote == src
            or (self._vote == NO_NODE and self._leader == NO_NODE)
            or (m.pre_vote and m.term > self._term)
        )
        up_to_date = self._log.is_up_to_date(m.last_log_index, m.last_log_term)
        if can_vote and up_to_date:
            self._send(src, RequestVoteResponse(term=m.term, pre_vote=m.pre_vote, granted=True))
            if not m.pre_vote:
                self._vote = src
                self._election_elapsed = 0
            self._logger.info(
                "vote_granted", term=int(m.term), candidate=int(src), pre_vote=m.pre_vote
            )
        else:
            self._send(
                src, RequestVoteResponse(term=self._term, pre_vote=m.pre_vote, granted=False)
            )
            self._logger.info(
                "vote_rejected",
                term=int(self._term),
                candidate=int(src),
                pre_vote=m.pre_vote,
                reason="log_behind" if can_vote else "already_voted",
            )

    def _in_lease(self) -> bool:
        """We heard from a live leader within an election timeout, or restarted less than
        an election timeout ago and so cannot rule that out (CheckQuorum only: the refusal
        protects CheckQuorum's lease; PaxosCore's pre-check and Prepare refusals follow the
        same rule, with its ``_restart_guard``)."""
        if not self._cfg.check_quorum:
            return False
        if self._ticks < self._restart_guard_until_tick:
            return True
        return self._leader != NO_NODE and self._election_elapsed < self._cfg.election_timeout_ticks

    # ================================================================== tick

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_election_timeout:
            self._election_elapsed = 0
            if self._promotable():
                self._campaign(transfer=False)

    def _tick_leader(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed >= self._cfg.election_timeout_ticks:
            self._election_elapsed = 0
            if self._cfg.check_quorum and not self._tick_check_quorum():
                return
        if self._transferee != NO_NODE:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._cfg.election_timeout_ticks:
                # Thesis §3.10: abort if the target has not taken over within an election
                # timeout, so that the group accepts proposals again.
                self._abort_transfer("timeout")
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= self._cfg.heartbeat_interval_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _tick_check_quorum(self) -> bool:
        """Thesis §6.2: step down unless a quorum was heard from in the last election
        timeout. Returns whether we are still leader."""
        active = [
            node
            for node, pr in sorted(self._progress.items())
            if node == self._id or pr.recent_active
        ]
        if not is_quorum(self._confs.current, active):
            self._logger.info("leader_stepped_down", term=int(self._term), reason="check_quorum")
            self._become_follower(self._term, NO_NODE)
            return False
        for node, pr in self._progress.items():
            if node != self._id:
                pr.recent_active = False
        return True

    # ================================================================== per-role step

    def _step_follower(self, src: NodeId, body: RaftBody) -> None:
        match body:
            case AppendEntries():
                self._heard_from_leader(src)
                self._on_append_entries(src, body)
            case Heartbeat():
                self._heard_from_leader(src)
                self._on_heartbeat(src, body)
            case InstallSnapshot():
                self._heard_from_leader(src)
                self._on_install_snapshot(src, body)
            case TimeoutNow():
                self._on_timeout_now(src)
            case _:
                self._logger.debug(
                    "message_ignored", role="follower", src=int(src), kind=type(body).__name__
                )

    def _step_candidate(self, src: NodeId, body: RaftBody) -> None:
        """Shared by PRE_CANDIDATE and CANDIDATE, as in etcd."""
        match body:
            case AppendEntries() | Heartbeat() | InstallSnapshot():
                # §5.2: a leader of our term exists (a term ahead was handled in step()).
                self._become_follower(self._term, src)
                self._step_follower(src, body)
            case RequestVoteResponse():
                self._on_vote_response(src, body)
            case _:
                self._logger.debug(
                    "message_ignored", role=self._role.value, src=int(src), kind=type(body).__name__
                )

    def _step_leader(self, src: NodeId, body: RaftBody) -> None:
        match body:
            case AppendEntriesResponse():
                self._on_append_entries_response(src, body)
            case HeartbeatResponse():
                self._on_heartbeat_response(src, body)
            case InstallSnapshotResponse():
                self._on_install_snapshot_response(src, body)
            case _:
                self._logger.debug(
                    "message_ignored", role="leader", src=int(src), kind=type(body).__name__
                )

    # ================================================================== follower handlers

    def _heard_from_leader(self, src: NodeId) -> None:
        self._election_elapsed = 0
        self._leader = src

    def _on_append_entries(self, src: NodeId, m: AppendEntries) -> None:
        if m.prev_index < self._commit:
            # Everything up to our commit index matches the leader (§5.4.3); say so, and let
            # the leader continue from there.
            self._send(
                src, AppendEntriesResponse(term=self._term, success=True, index=self._commit)
            )
            return
        if self._log.match_term(m.prev_index, m.prev_term):
            conflict = self._log.find_conflict(m.entries)
            if conflict:
                self._append_to_log(m.entries[conflict - m.entries[0].index :])
            last_new = Index(m.prev_index + len(m.entries))
            # §5.3: commit = min(leaderCommit, index of last new entry).
            self._commit_to(Index(min(m.commit, last_new)))
            self._send(src, AppendEntriesResponse(term=self._term, success=True, index=last_new))
            return
        # §5.3 consistency check failed: hint where our log diverges.
        if m.prev_index > self._log.last_index:
            conflict_term = Term(0)
            conflict_index = Index(self._log.last_index + 1)
        else:
            term = self._log.term(m.prev_index)
            require(term is not None, "prev_index >= commit >= snapshot index has a term")
            conflict_term = term if term is not None else Term(0)
            conflict_index = self._log.first_index_of_term(m.prev_index)
        self._logger.debug(
            "append_rejected",
            term=int(self._term),
            prev_index=int(m.prev_index),
            conflict_term=int(conflict_term),
            conflict_index=int(conflict_index),
        )
        self._send(
            src,
            AppendEntriesResponse(
                term=self._term,
                success=False,
                index=m.prev_index,
                conflict_term=conflict_term,
                conflict_index=conflict_index,
            ),
        )

    def _on_heartbeat(self, src: NodeId, m: Heartbeat) -> None:
        # The leader sends at most what we are known to match, so this commits nothing we
        # have not been shown to hold.
        self._commit_to(Index(min(m.commit, self._log.last_index)))
        self._send(src, HeartbeatResponse(term=self._term, context=m.context))

    def _on_install_snapshot(self, src: NodeId, m: InstallSnapshot) -> None:
        meta = m.meta
        if meta.index <= self._commit:
            # We already hold (committed) everything the snapshot covers.
            self._incoming_snapshot = None
            self._send(
                src,
                InstallSnapshotResponse(
                    term=self._term, index=meta.index, offset=m.offset + len(m.data), done=True
                ),
            )
            return
        asm = self._incoming_snapshot
        if asm is None or asm.meta != meta:
            if m.offset != 0:
                self._send(
                    src,
                    InstallSnapshotResponse(
                        term=self._term, index=meta.index, offset=0, reject=True
                    ),
                )
                return
            # A new snapshot (or a newer one replacing a half-received one): start over.
            asm = _SnapshotAssembly(meta)
            self._incoming_snapshot = asm
        if m.offset != len(asm.buffer):
            # Out of order (ahead) or a duplicate (behind): say where we are.
            self._send(
                src,
                InstallSnapshotResponse(
                    term=self._term,
                    index=meta.index,
                    offset=len(asm.buffer),
                    reject=m.offset > len(asm.buffer),
                ),
            )
            return
        asm.buffer += m.data
        if not m.done:
            self._send(
                src,
                InstallSnapshotResponse(term=self._term, index=meta.index, offset=len(asm.buffer)),
            )
            return
        self._incoming_snapshot = None
        self._restore(Snapshot(meta=meta, data=bytes(asm.buffer)))
        self._send(
            src,
            InstallSnapshotResponse(
                term=self._term, index=meta.index, offset=len(asm.buffer), done=True
            ),
        )

    def _restore(self, snap: Snapshot) -> None:
        meta = snap.meta
        if self._log.match_term(meta.index, meta.term):
            # Our log already has the snapshot's last entry: keep the log, only commit (§7:
            # "if existing log entry has same index and term ... retain log entries").
            self._commit_to(meta.index)
            return
        self._log.restore(meta.index, meta.term)
        self._confs.reset(meta.index, meta.conf)
        self._commit = meta.index
        self._snapshot = snap
        self._snapshot_to_persist = snap
        self._snapshot_to_apply = snap
        self._logger.info(
            "snapshot_restored",
            term=int(self._term),
            index=int(meta.index),
            snap_term=int(meta.term),
        )

    def _on_timeout_now(self, src: NodeId) -> None:
        if not self._promotable():
            return
        self._logger.info("transfer_timeout_now_received", term=int(self._term), src=int(src))
        # Thesis §3.10: campaign at once, skipping PreVote; the transfer flag lets voters
        # bypass their lease check.
        self._campaign(transfer=True)

    # ================================================================== candidate handlers

    def _on_vote_response(self, src: NodeId, m: RequestVoteResponse) -> None:
        if m.pre_vote != (self._role is Role.PRE_CANDIDATE):
            return  # an answer to an earlier phase of the election
        if src not in self._votes:
            self._votes[src] = m.granted
        result = tally(self._confs.current, self._votes)
        if result is VoteResult.WON:
            self._won_election(transfer=False)
        elif result is VoteResult.LOST:
            self._logger.info("election_lost", term=int(self._term), pre_vote=m.pre_vote)
            self._become_follower(self._term, NO_NODE)

    # ================================================================== leader handlers

    def _on_append_entries_response(self, src: NodeId, m: AppendEntriesResponse) -> None:
        pr = self._progress.get(src)
        if pr is None:
            return
        pr.recent_active = True
        if not m.success:
            if self._on_append_rejected(pr, m):
                self._send_append(src)
            return
        updated = pr.maybe_update(m.index)
        # A probe answered at exactly our match index (e.g. right after a snapshot set the
        # match) still proves where the follower is: switch to replicating.
        if not updated and not (pr.state is ProgressState.PROBE and pr.match == m.index):
            return
        match pr.state:
            case ProgressState.PROBE:
                pr.become_replicate()
            case ProgressState.SNAPSHOT:
                if pr.match >= pr.pending_snapshot:
                    pr.become_probe()
            case ProgressState.REPLICATE:
                pr.inflights.free_le(m.index)
        if self._maybe_commit() and self._role is not Role.LEADER:
            return
        # The ack may have freed the inflight window, and the commit index may now cover
        # what this follower holds although nothing we sent it says so: the flush at the
        # next ready() sends it what it lacks and the commit index (see ``_flush``).
        self._replication_due = True
        if src == self._transferee and pr.match == self._log.last_index:
            self._send_timeout_now(src)

    def _on_append_rejected(self, pr: Progress, m: AppendEntriesResponse) -> bool:
        """Move ``next`` back after a rejection; False if the rejection is stale."""
        if pr.state is ProgressState.REPLICATE:
            if m.index <= pr.match:
                return False
            # The follower lost or refused part of the pipeline; the prefix up to match is
            # certain, so probe from there.
            pr.become_probe()
            return True
        if pr.state is ProgressState.SNAPSHOT:
            return False
        if m.index != pr.next - 1:
            return False  # an answer to an earlier probe
        # Fast backtracking (§5.3): skip the follower's whole conflicting term at once. If we
        # hold entries of that term, the logs agree up to our last one of them (Log
        # Matching), else skip to where the follower's run of that term starts.
        hint = m.conflict_index
        if m.conflict_term != 0:
            ours = self._log.last_index_of_term(m.conflict_term, m.index)
            if ours is not None:
                hint = Index(ours + 1)
        pr.move_next_back(Index(max(min(m.index, hint), pr.match + 1)))
        pr.probe_sent = False
        return True

    def _on_heartbeat_response(self, src: NodeId, m: HeartbeatResponse) -> None:
        pr = self._progress.get(src)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            # The follower is alive, so an append may have been lost: free one slot so that
            # replication cannot stall forever on a lost message.
            pr.inflights.free_first_one()
        if pr.state is ProgressState.SNAPSHOT:
            self._send_snapshot_chunk(src)  # retransmit a chunk that may have been lost
        elif pr.match < self._log.last_index:
            self._send_append(src)
        # Confirming costs a quorum computation over every peer's round: skip it for a
        # duplicate or stale answer, which cannot confirm anything new.
        if m.context and self._read_only.ack(src, m.context):
            self._confirm_reads()

    def _on_install_snapshot_response(self, src: NodeId, m: InstallSnapshotResponse) -> None:
        pr = self._progress.get(src)
        if pr is None:
            return
        pr.recent_active = True
        if m.done:
            pr.maybe_update(m.index)
            if pr.state is ProgressState.SNAPSHOT and m.index >= pr.pending_snapshot:
                self._logger.info(
                    "snapshot_installed", term=int(self._term), peer=int(src), index=int(m.index)
                )
                pr.become_probe()
            if self._maybe_commit() and self._role is not Role.LEADER:
                return
            self._send_append(src)
            return
        if pr.state is not ProgressState.SNAPSHOT or m.index != pr.pending_snapshot:
            return
        if m.reject or m.offset > pr.snapshot_offset:
            pr.snapshot_offset = m.offset
            self._send_snapshot_chunk(src)

    # ================================================================== replication

    def _send_append(self, peer: NodeId, *, send_if_empty: bool = True) -> bool:
        """Send ``peer`` the entries after its ``next`` (or the snapshot if they are
        compacted). Returns whether a message was sent."""
        pr = self._progress[peer]
        if pr.is_paused():
            return False
        prev_index = Index(pr.next - 1)
        prev_term = self._log.term(prev_index)
        if prev_term is None:
            # §7: the entries this follower needs are gone; send the snapshot instead.
            self._send_snapshot_chunk(peer)
            return True
        entries = self._log.slice(pr.next, self._log.last_index, max_bytes=self._cfg.max_msg_bytes)
        if not entries and not send_if_empty:
            return False
        # The follower commits min(commit, last new entry) from this message (§5.3).
        pr.sent_commit_through(
            Index(min(self._commit, entries[-1].index if entries else prev_index))
        )
        self._send(
            peer,
            AppendEntries(
                term=self._term,
                prev_index=prev_index,
                prev_term=prev_term,
                entries=entries,
                commit=self._commit,
            ),
        )
        if entries:
            pr.sent_entries(entries[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot_chunk(self, peer: NodeId) -> None:
        snap = self._snapshot
        require(snap is not None, "a compacted log always has a snapshot")
        if snap is None:
            return
        pr = self._progress[peer]
        if pr.state is not ProgressState.SNAPSHOT or pr.pending_snapshot != snap.meta.index:
            pr.become_snapshot(snap.meta.index)
            self._logger.info(
                "snapshot_sent",
                term=int(self._term),
                peer=int(peer),
                index=int(snap.meta.index),
                bytes=len(snap.data),
            )
        chunk_bytes = max(1, self._cfg.max_snapshot_chunk_bytes)
        offset = pr.snapshot_offset
        chunk = snap.data[offset : offset + chunk_bytes]
        self._send(
            peer,
            InstallSnapshot(
                term=self._term,
                meta=snap.meta,
                offset=offset,
                data=chunk,
                done=offset + len(chunk) >= len(snap.data),
            ),
        )

    def _flush(self) -> None:
        """Send what proposals, acks and commit advances since the last Ready made due, once
        per follower (only ``ready()`` calls this; ``has_ready()`` asks ``_flush_due``).

        Deferring to here batches like PaxosCore: K proposals between two Readys leave as
        one AppendEntries per follower (more only past ``max_msg_bytes``, and never beyond
        the inflight window), and a commit advance rides on the entries that follow it or,
        if there are none, on one empty append (§5.3: followers learn the commit index from
        AppendEntries) instead of one broadcast per advance. An empty append goes only to a
        follower it could tell a higher commit index (etcd's ``CanBumpCommit``)."""
        if not self._replication_due:
            return
        self._replication_due = False
        if self._role is not Role.LEADER:
            return
        for peer in sorted(self._progress):
            if peer == self._id:
                continue
            while self._send_append(peer, send_if_empty=False):
                pass
            if self._progress[peer].can_bump_commit(self._commit):
                self._send_append(peer)

    def _flush_due(self) -> bool:
        """Whether ``_flush`` would send anything (no side effects): some follower is not
        paused and lacks entries, needs the snapshot, or could learn a higher commit index."""
        if not self._replication_due or self._role is not Role.LEADER:
            return False
        for peer in sorted(self._progress):
            pr = self._progress[peer]
            if peer == self._id or pr.is_paused():
                continue
            if (
                pr.next <= self._log.last_index
                or self._log.term(Index(pr.next - 1)) is None
                or pr.can_bump_commit(self._commit)
            ):
                return True
        return False

    def _broadcast_heartbeat(self) -> None:
        round_ = self._read_only.new_round(self._ticks)
        for peer in sorted(self._progress):
            if peer == self._id:
                continue
            self._send_heartbeat(peer, round_)
        self._confirm_reads()  # a single-voter group confirms its own round at once

    def _send_heartbeat(self, peer: NodeId, round_: int) -> None:
        pr = self._progress[peer]
        # Only what the follower is known to hold may be committed by a heartbeat (it carries
        # no entries to check against, §5.3).
        commit = Index(min(pr.match, self._commit))
        pr.sent_commit_through(commit)
        self._send(peer, Heartbeat(term=self._term, commit=commit, context=round_))

    def _send_timeout_now(self, target: NodeId) -> None:
        self._logger.info("transfer_timeout_now_sent", term=int(self._term), target=int(target))
        self._send(target, TimeoutNow(term=self._term))

    def _abort_transfer(self, reason: str) -> None:
        self._logger.info(
            "transfer_aborted", term=int(self._term), target=int(self._transferee), reason=reason
        )
        self._transferee = NO_NODE
        self._transfer_elapsed = 0

    def _append_as_leader(self, entry: Entry) -> None:
        self._append_to_log((entry,))
        if entry.kind is not EntryKind.NOOP:
            self._uncommitted_bytes += entry.size_bytes()
        self._replication_due = True  # sent by ``_flush`` at the next ready()
        # A single-voter leader can only commit once its own write is persisted (advance).

    def _maybe_commit(self) -> bool:
        """§5.3/§5.4.2: commit the highest index a quorum holds, but only if it is from our
        own term (Figure 8: counting replicas of an older term's entry is unsafe)."""
        match = {node: pr.match for node, pr in self._progress.items()}
        candidate = committed_index(self._confs.current, match)
        if candidate <= self._commit or self._log.term(candidate) != self._term:
            return False
        old = self._commit
        self._commit_to(candidate)
        self._after_leader_commit(old)
        return True

    def _after_leader_commit(self, old_commit: Index) -> None:
        for entry in self._log.slice(old_commit + 1, self._commit):
            if entry.term == self._term and entry.kind is not EntryKind.NOOP:
                self._uncommitted_bytes = max(0, self._uncommitted_bytes - entry.size_bytes())
        if self._reads_awaiting_term_commit and self._committed_in_current_term():
            waiting = self._reads_awaiting_term_commit
            self._reads_awaiting_term_commit = []
            for request_id, mode in waiting:
                self._serve_read(request_id, mode)
        conf = self._confs.current
        if self._commit >= self._confs.current_index:
            if conf.joint:
                # §6: once C_old,new is committed, the leader moves on to C_new.
                leave = MembershipChange(ops=())
                self._append_as_leader(
                    Entry(
                        index=Index(self._log.last_index + 1),
                        term=self._term,
                        kind=EntryKind.CONFIG,
                        data=encode_conf_entry(leave, apply_change(conf, leave)),
                    )
                )
                return
            if not conf.is_voter(self._id):
                self._step_down_removed()
                return
        # Tell followers the new commit index promptly, coalesced with anything else due
        # before the next Ready (``_flush``).
        self._replication_due = True

    def _step_down_removed(self) -> None:
        """Thesis §4.2.2: a leader removed from the configuration manages the group until the
        change commits, then steps down. Stepping down silently would leave the group
        leaderless for an election timeout, so it first hands off (§3.10, which names
        removal as a reason to transfer): TimeoutNow to the remaining voter with the longest
        log, after pushing it whatever it still lacks (links are FIFO per pair, so the
        entries arrive first). That voter's match is at least the commit index, so it holds
        the configuration entry and every committed entry and can win under the new
        configuration. This is best effort and changes nothing for safety: TimeoutNow only
        starts an ordinary election; if it is lost or the target loses, the group falls back
        to the election timeout. No lease outlives this: we stop leading in this step."""
        voters = [v for v in self._voters() if v != self._id]
        # Defined order: the longest log first, the lowest id among equals.
        target = min(voters, key=lambda v: (-self._progress[v].match, v))
        while self._send_append(target, send_if_empty=False):
            pass
        self._send_timeout_now(target)
        self._logger.info(
            "leader_stepped_down",
            term=int(self._term),
            reason="removed_from_config",
            successor=int(target),
        )
        self._become_follower(self._term, NO_NODE)

    # ================================================================== reads

    def _serve_read(self, request_id: int, mode: ReadMode) -> None:
        conf = self._confs.current
        if is_quorum(conf, [self._id]) or (mode is ReadMode.LEASE and self._lease_valid()):
            self._read_states.append(ReadState(request_id=request_id, index=self._commit))
            return
        round_ = self._read_only.new_round(self._ticks)
        self._read_only.add_read(request_id, self._commit, round_)
        for peer in sorted(self._progress):
            if peer != self._id:
                self._send_heartbeat(peer, round_)

    def _confirm_reads(self) -> None:
        released, sent_tick = self._read_only.confirm(self._confs.current, self._id)
        self._read_states.extend(released)
        if sent_tick is not None and self._cfg.check_quorum and self._transferee == NO_NODE:
            start = (
                sent_tick
                if self._lease_start_tick is None
                else max(self._lease_start_tick, sent_tick)
            )
            self._lease_start_tick = start

    def _lease_ticks(self) -> int:
        return int(self._cfg.election_timeout_ticks * (1.0 - self._cfg.lease_clock_drift_ratio))

    def _lease_valid(self) -> bool:
        return (
            self._cfg.check_quorum
            and self._transferee == NO_NODE
            and self._lease_start_tick is not None
            and self._ticks < self._lease_start_tick + self._lease_ticks()
        )

    # ================================================================== helpers

    def _append_to_log(self, entries: tuple[Entry, ...]) -> None:
        """Append (possibly overwriting a conflicting suffix) and apply the append-time
        configuration rule (conf.py)."""
        first = entries[0].index
        if first <= self._log.last_index:
            self._confs.truncate_from(first)
        self._log.append(entries)
        for entry in entries:
            if entry.kind is EntryKind.CONFIG:
                _, conf = decode_conf_entry(entry.data)
                self._confs.append(entry.index, conf)
                self._logger.info(
                    "conf_changed",
                    term=int(self._term),
                    index=int(entry.index),
                    voters=[int(n) for n in conf.voters],
                    voters_outgoing=[int(n) for n in conf.voters_outgoing],
                    learners=[int(n) for n in conf.learners],
                )
        if self._role is Role.LEADER and any(e.kind is EntryKind.CONFIG for e in entries):
            self._sync_progress()

    def _sync_progress(self) -> None:
        """Track exactly the members of the current configuration (leader only)."""
        members = self._confs.current.all_nodes()
        for node in list(self._progress):
            if node not in members and node != self._id:
                del self._progress[node]
        for node in members:
            if node not in self._progress:
                self._progress[node] = Progress(
                    next_index=Index(self._log.last_index + 1),
                    max_inflight=self._cfg.max_inflight_msgs,
                )
        if self._id not in self._progress:
            # A leader being removed still tracks its own log (it does not count toward
            # quorums of a configuration it is not in; committed_index ignores non-voters).
            self._progress[self._id] = Progress(
                next_index=Index(self._log.last_index + 1),
                max_inflight=self._cfg.max_inflight_msgs,
            )
        if self._transferee != NO_NODE and not self._confs.current.is_voter(self._transferee):
            self._abort_transfer("target_removed")

    def _commit_to(self, index: Index) -> None:
        if index > self._commit:
            require(index <= self._log.last_index, f"commit {index} beyond last index")
            self._commit = index

    def _committed_in_current_term(self) -> bool:
        return self._log.term(self._commit) == self._term

    def _apply_from(self) -> Index:
        """Last index the application has (or will have, once the outstanding snapshot is
        applied): committed entries are handed out from the next one."""
        if self._snapshot_to_apply is not None:
            return Index(max(self._applied, self._snapshot_to_apply.meta.index))
        return self._applied

    def _hard_state(self) -> HardState:
        return HardState(term=self._term, vote=self._vote, commit=self._commit)

    def _voters(self) -> tuple[NodeId, ...]:
        conf = self._confs.current
        return tuple(sorted(set(conf.voters) | set(conf.voters_outgoing)))

    def _require_leader(self) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)

    def _refuse_during_transfer(self) -> None:
        if self._transferee != NO_NODE:
            raise ProposalDropped(f"leadership transfer to node {self._transferee} in progress")

    def _check_entry_limits(self, entry: Entry) -> None:
        self._cfg.check_entry_limits(entry.size_bytes(), self._uncommitted_bytes)

    def _send(self, to: NodeId, body: RaftBody) -> None:
        self._msgs.append(Message(group_id=self._cfg.group_id, src=self._id, dst=to, body=body))
