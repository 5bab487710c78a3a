"""RaftCore beyond the paper's Figure 2: PreVote, CheckQuorum, reads and leases, limits
and errors, Ready rules, chunked snapshots, restart, learners, membership and transfer."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from support.cluster import Cluster

from consensus.api import (
    ChangeKind,
    ChangeOp,
    MembershipChange,
    NotLeader,
    ProposalDropped,
    ReadMode,
    Role,
    UsageError,
)
from consensus.backends import core_factory
from consensus.raft import RaftCore
from consensus.raft import messages as raft_messages
from consensus.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from consensus.types import ConfState, Entry, Index, NodeId, SnapshotMeta, Term
from raft.helpers import env, flush, make_leader, new_core, persisted, sent


def committed_leader(**config: object) -> RaftCore:
    """A 3-voter leader at term 1 whose no-op (index 1) is committed."""
    core = new_core(**config)  # type: ignore[arg-type]  # test-only keyword passthrough
    make_leader(core)
    core.step(env(2, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(core)
    assert core.status().commit == 1
    return core


def op(kind: ChangeKind, node: int) -> ChangeOp:
    return ChangeOp(kind=kind, node=NodeId(node))


# ---------------------------------------------------------------------------- PreVote


def test_pre_candidate_does_not_bump_its_term() -> None:
    """Reference: Raft thesis §9.6: a pre-candidate asks with term+1 but keeps its term, so
    its hard state does not change until it wins the pre-vote."""
    core = new_core(pre_vote=True)
    core.campaign()
    rd = flush(core)
    assert core.status().role is Role.PRE_CANDIDATE and core.status().term == 0
    assert rd.hard_state is None and not rd.must_sync
    asks = sent(rd, RequestVote)
    assert all(r.pre_vote and r.term == 1 for _, r in asks)
    core.step(env(2, 1, RequestVoteResponse(term=Term(1), pre_vote=True, granted=True)))
    st = core.status()
    assert (st.role, st.term) == (Role.CANDIDATE, 1)
    assert all(not r.pre_vote for _, r in sent(flush(core), RequestVote))


def test_partitioned_node_rejoins_without_disrupting_the_leader() -> None:
    """Reference: Raft thesis §9.6: with PreVote a node cut off from the group cannot raise
    its term, so when it comes back the leader is not deposed."""
    c = Cluster(3, pre_vote=True, check_quorum=True)
    c.elect(1)
    term = c.core(1).status().term
    c.isolate(3)
    c.run(60)
    assert c.core(3).status().term == term
    c.heal()
    c.run(30)
    assert c.leader() == 1 and c.core(1).status().term == term


def test_pre_vote_lost_returns_to_follower() -> None:
    """Reference: Raft thesis §9.6 and §5.4.1: voters refuse a pre-vote from a log that is
    behind theirs; losing the pre-vote makes the node a follower again at the same term."""
    core = new_core(pre_vote=True)
    core.campaign()
    core.step(env(2, 1, RequestVoteResponse(term=Term(0), pre_vote=True, granted=False)))
    core.step(env(3, 1, RequestVoteResponse(term=Term(0), pre_vote=True, granted=False)))
    st = core.status()
    assert (st.role, st.term) == (Role.FOLLOWER, 0)


# ---------------------------------------------------------------------------- CheckQuorum


def test_leader_without_quorum_steps_down() -> None:
    """Reference: Raft thesis §6.2: a leader that has not heard from a quorum within an
    election timeout steps down."""
    c = Cluster(3, check_quorum=True, pre_vote=True)
    c.elect(1)
    c.isolate(1)
    for _ in range(2 * 10 + 1):
        c.tick(1)
    assert c.core(1).status().role is Role.FOLLOWER
    assert "1 leader_stepped_down reason=check_quorum term=1" in c.log_lines


def test_follower_hearing_from_leader_ignores_vote_requests() -> None:
    """Reference: Raft thesis §4.2.3/§6.2: with CheckQuorum, a follower that heard from a
    live leader within the election timeout ignores RequestVote of a higher term."""
    core = new_core(check_quorum=True)
    core.step(env(2, 1, Heartbeat(term=Term(1), commit=Index(0))))
    flush(core)
    ask = RequestVote(term=Term(5), last_log_index=Index(9), last_log_term=Term(4))
    core.step(env(3, 1, ask))
    assert core.status().term == 1
    assert not sent(flush(core), RequestVoteResponse)
    for _ in range(10):
        core.tick()
    core.step(env(3, 1, ask))
    assert core.status().term == 5
    assert [r.granted for _, r in sent(flush(core), RequestVoteResponse)] == [True]


@pytest.mark.parametrize("check_quorum", [True, False])
def test_live_leader_refusal_of_pre_votes_is_tied_to_check_quorum(check_quorum: bool) -> None:
    """Reference: Raft thesis §4.2.3/§6.2: ignoring (pre-)votes because a live leader was
    heard is CheckQuorum's lease protection, so it happens only with check_quorum; without
    it an up-to-date pre-candidate gets the pre-vote (thesis §9.6). PaxosCore's pre-check and
    Prepare follow the same rule (tests/paxos/test_acceptor.py)."""
    core = new_core(check_quorum=check_quorum, pre_vote=True)
    core.step(env(2, 1, Heartbeat(term=Term(1), commit=Index(0))))
    flush(core)
    ask = RequestVote(term=Term(2), pre_vote=True, last_log_index=Index(0), last_log_term=Term(0))
    core.step(env(3, 1, ask))
    granted = [r.granted for _, r in sent(flush(core), RequestVoteResponse)]
    assert granted == ([] if check_quorum else [True])
    assert core.status().term == 1


def test_transfer_flag_bypasses_the_lease_check() -> None:
    """Reference: Raft thesis §3.10: an election started by TimeoutNow is legitimate even
    though followers still hear from the (old) leader."""
    core = new_core(check_quorum=True)
    core.step(env(2, 1, Heartbeat(term=Term(1), commit=Index(0))))
    flush(core)
    ask = RequestVote(term=Term(2), transfer=True, last_log_index=Index(0), last_log_term=Term(0))
    core.step(env(3, 1, ask))
    assert core.status().term == 2
    assert [r.granted for _, r in sent(flush(core), RequestVoteResponse)] == [True]


def test_zombie_leader_learns_higher_term_from_followers() -> None:
    """With CheckQuorum or PreVote, a follower answers a stale leader's heartbeat with its
    higher term, so the stale leader steps down instead of staying a zombie."""
    follower = new_core(2, check_quorum=True)
    follower.step(env(3, 2, Heartbeat(term=Term(4), commit=Index(0))))
    flush(follower)
    follower.step(env(1, 2, Heartbeat(term=Term(1), commit=Index(0))))
    [(dst, resp)] = sent(flush(follower), HeartbeatResponse)
    assert dst == 1 and resp.term == 4


# ---------------------------------------------------------------------------- reads


def test_read_index_waits_for_the_first_commit_of_the_term() -> None:
    """Reference: Raft thesis §6.4 step 1: a new leader answers reads only after it has
    committed an entry of its term (its no-op)."""
    core = new_core()
    make_leader(core)
    core.read_index(7)
    rd = flush(core)
    assert not rd.read_states and not [b for _, b in sent(rd, Heartbeat) if b.context]
    core.step(env(2, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    rd = flush(core)
    [(_, beat), *_] = sent(rd, Heartbeat)
    core.step(env(3, 1, HeartbeatResponse(term=Term(1), context=beat.context)))
    assert [(r.request_id, r.index) for r in flush(core).read_states] == [(7, 1)]


def test_single_voter_answers_reads_immediately() -> None:
    """Reference: Raft thesis §6.4: a one-voter group is its own quorum."""
    core = new_core(voters=(1,))
    core.campaign()
    flush(core)  # persists the no-op; the leader counts itself and commits it
    core.read_index(3)
    rd = flush(core)
    assert [(r.request_id, r.index) for r in rd.read_states] == [(3, 1)]
    assert not rd.messages


def test_reads_and_proposals_on_a_follower_raise_not_leader_with_hint() -> None:
    """No forwarding: a follower names the leader it knows; a candidate knows none."""
    core = new_core()
    core.step(env(2, 1, Heartbeat(term=Term(1), commit=Index(0))))
    with pytest.raises(NotLeader) as exc:
        core.propose(b"x")
    assert exc.value.leader_hint == 2
    with pytest.raises(NotLeader):
        core.read_index(1)
    core.campaign()
    with pytest.raises(NotLeader) as exc:
        core.propose(b"x")
    assert exc.value.leader_hint == 0


def test_lease_read_is_answered_without_a_round_inside_the_lease() -> None:
    """Reference: Raft thesis §6.4.1: within the lease the leader answers at once."""
    core = committed_leader(check_quorum=True)
    core.tick()
    [(_, beat), *_] = sent(flush(core), Heartbeat)
    core.step(env(2, 1, HeartbeatResponse(term=Term(1), context=beat.context)))
    flush(core)
    core.read_index(5, mode=ReadMode.LEASE)
    rd = flush(core)
    assert [(r.request_id, r.index) for r in rd.read_states] == [(5, 1)]
    assert not rd.messages


def test_lease_counts_from_when_the_acknowledged_round_was_sent() -> None:
    """Reference: Raft thesis §6.4.1: the lease runs election_timeout * (1 - drift) ticks
    from the moment the leader *sent* the round a quorum acknowledged, not from the ack."""
    core = committed_leader(check_quorum=True, election_timeout_ticks=10)
    core.tick()  # round r1 leaves at this tick
    [(_, r1), *_] = sent(flush(core), Heartbeat)
    for _ in range(3):
        core.tick()  # later rounds, never answered
    flush(core)
    core.step(env(2, 1, HeartbeatResponse(term=Term(1), context=r1.context)))  # late ack
    flush(core)
    for _ in range(5):
        core.tick()
    flush(core)  # now 8 ticks after r1 was sent; the lease is 9 ticks
    core.read_index(1, mode=ReadMode.LEASE)
    assert [r.request_id for r in flush(core).read_states] == [1]
    core.tick()  # 9 ticks after r1: expired although the ack came only 6 ticks ago
    flush(core)
    core.read_index(2, mode=ReadMode.LEASE)
    rd = flush(core)
    assert not rd.read_states
    assert [b for _, b in sent(rd, Heartbeat) if b.context]  # fell back to a SAFE round


def test_lease_read_without_check_quorum_falls_back_to_safe() -> None:
    """Reference: Raft thesis §6.4.1: the lease is only sound with CheckQuorum (followers
    refusing votes); without it a LEASE read takes the SAFE path."""
    core = committed_leader(check_quorum=False)
    core.tick()
    [(_, beat), *_] = sent(flush(core), Heartbeat)
    core.step(env(2, 1, HeartbeatResponse(term=Term(1), context=beat.context)))
    flush(core)
    core.read_index(5, mode=ReadMode.LEASE)
    rd = flush(core)
    assert not rd.read_states and sent(rd, Heartbeat)


def test_lease_ends_when_a_transfer_starts() -> None:
    """The transfer flag lets the target bypass followers' lease checks, so the old
    leader's lease must end the moment it starts a transfer."""
    core = committed_leader(check_quorum=True)
    core.tick()
    [(_, beat), *_] = sent(flush(core), Heartbeat)
    core.step(env(2, 1, HeartbeatResponse(term=Term(1), context=beat.context)))
    flush(core)
    core.transfer_leadership(NodeId(3))
    core.read_index(5, mode=ReadMode.LEASE)
    assert not flush(core).read_states


# ---------------------------------------------------------------------------- limits


def test_oversized_proposal_is_dropped() -> None:
    core = committed_leader(max_entry_bytes=100)
    with pytest.raises(ProposalDropped, match="max_entry_bytes"):
        core.propose(b"x" * 200)


def test_uncommitted_bytes_are_bounded() -> None:
    """Proposals beyond max_uncommitted_bytes are refused until the log commits."""
    core = committed_leader(max_uncommitted_bytes=300)
    core.propose(b"a" * 100)
    core.propose(b"b" * 100)
    with pytest.raises(ProposalDropped, match="max_uncommitted_bytes"):
        core.propose(b"c" * 100)
    flush(core)
    core.step(env(2, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(3))))
    assert core.status().commit == 3
    core.propose(b"c" * 100)


def test_append_messages_respect_max_msg_bytes_but_carry_at_least_one_entry() -> None:
    core = committed_leader(max_msg_bytes=250)
    core.step(env(3, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(core)
    core.report_unreachable(NodeId(2))  # 2 probes; 3 replicates
    for data in (b"a" * 100, b"b" * 100, b"c" * 100, b"d" * 400):
        core.propose(data)
    flush(core)
    core.step(env(2, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    appends = [b for _, b in sent(flush(core), AppendEntries) if b.entries]
    sizes = [sum(e.size_bytes() for e in b.entries) for b in appends]
    assert all(s <= 250 or len(b.entries) == 1 for s, b in zip(sizes, appends, strict=True))
    assert [len(b.entries) for b in appends] == [2, 1, 1]


def test_inflight_window_bounds_pipelined_appends() -> None:
    """At most max_inflight_msgs unacknowledged appends per follower (pipelining); an ack
    frees the window and the rest follows at the next Ready."""
    core = committed_leader(max_inflight_msgs=2, max_msg_bytes=1)  # one entry per message
    core.step(env(3, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(core)
    for i in range(5):
        core.propose(b"%d" % i)
    to_3 = [b for d, b in sent(flush(core), AppendEntries) if d == 3 and b.entries]
    assert [[e.index for e in b.entries] for b in to_3] == [[2], [3]]
    core.step(env(3, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(3))))
    to_3 = [b for d, b in sent(flush(core), AppendEntries) if d == 3 and b.entries]
    assert [[e.index for e in b.entries] for b in to_3] == [[4], [5]]


def test_proposals_between_two_readys_leave_as_one_append_per_follower() -> None:
    """Batching (parity with PaxosCore's one Accept per peer per Ready): K proposals made
    between two ready() calls reach each follower in a single AppendEntries (§5.3 allows
    any number of entries per RPC)."""
    core = committed_leader()
    core.step(env(3, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(core)
    for i in range(5):
        core.propose(b"%d" % i)
    appends = sent(flush(core), AppendEntries)
    assert [(d, [e.index for e in b.entries]) for d, b in appends] == [
        (2, [2, 3, 4, 5, 6]),
        (3, [2, 3, 4, 5, 6]),
    ]


def test_replication_waits_for_ready_and_has_ready_predicts_it() -> None:
    """propose() only queues: nothing is sent until ready(), has_ready() reports the pending
    flush without performing it (asking twice changes nothing), and is False while a Ready
    is outstanding."""
    core = committed_leader()
    core.step(env(3, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(core)
    assert not core.has_ready()
    core.propose(b"x")
    assert core.has_ready() and core.has_ready()
    rd = core.ready()
    assert not core.has_ready()
    assert [d for d, _ in sent(rd, AppendEntries)] == [2, 3]
    core.advance(rd)
    assert not core.has_ready()


def test_commit_advances_are_coalesced_with_new_entries() -> None:
    """A commit advance and proposals made before the next Ready travel together: the
    follower learns the new commit index from the append carrying the new entries (§5.3),
    not from a separate empty append per advance."""
    core = committed_leader()
    core.step(env(3, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(core)
    core.propose(b"a")
    flush(core)
    core.step(env(2, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(2))))
    assert core.status().commit == 2
    core.propose(b"b")
    appends = sent(flush(core), AppendEntries)
    assert [(d, [e.index for e in b.entries], b.commit) for d, b in appends] == [
        (2, [3], 2),
        (3, [3], 2),
    ]


def test_a_paused_follower_makes_no_ready() -> None:
    """has_ready() is True only if the flush would send something: a follower whose
    inflight window is full gets nothing, so a proposal alone does not make a Ready once
    the leader's own write is out of the way."""
    core = committed_leader(max_inflight_msgs=1, voters=(1, 2))
    core.propose(b"a")
    flush(core)  # 2's window is now full
    core.propose(b"b")
    rd = core.ready()
    assert sent(rd, AppendEntries) == [] and rd.entries
    core.advance(rd)
    assert not core.has_ready()


def test_report_unreachable_moves_a_replicating_follower_to_probe() -> None:
    core = committed_leader()
    assert core.status().progress[NodeId(2)].state == "replicate"
    core.report_unreachable(NodeId(2))
    assert core.status().progress[NodeId(2)].state == "probe"


# ---------------------------------------------------------------------------- Ready rules


def test_ready_twice_and_wrong_advance_are_usage_errors() -> None:
    core = new_core()
    core.campaign()
    rd = core.ready()
    with pytest.raises(UsageError):
        core.ready()
    with pytest.raises(UsageError):
        core.advance(dataclasses.replace(rd))
    core.advance(rd)
    with pytest.raises(UsageError):
        core.advance(rd)


def test_commit_only_change_needs_no_sync() -> None:
    """Figure 2 lists commitIndex as volatile: a Ready changing only the commit index does
    not need an fsync; term, vote and entries do."""
    core = new_core()
    core.step(
        env(
            2,
            1,
            AppendEntries(
                term=Term(1),
                prev_index=Index(0),
                prev_term=Term(0),
                entries=(Entry(index=Index(1), term=Term(1)),),
                commit=Index(0),
            ),
        )
    )
    rd = flush(core)
    assert rd.must_sync and rd.entries
    core.step(env(2, 1, Heartbeat(term=Term(1), commit=Index(1))))
    rd = flush(core)
    assert rd.hard_state is not None and rd.hard_state.commit == 1
    assert not rd.must_sync


def test_vote_travels_in_the_ready_that_persists_it() -> None:
    """Votes must not leave before the vote is durable: the grant and the new hard state
    are in one Ready, flagged must_sync."""
    core = new_core()
    core.step(env(2, 1, RequestVote(term=Term(3), last_log_index=Index(0), last_log_term=Term(0))))
    rd = flush(core)
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (3, 2)
    assert rd.must_sync and [r.granted for _, r in sent(rd, RequestVoteResponse)] == [True]


def test_leader_counts_itself_only_after_its_write_is_advanced() -> None:
    """As in etcd: the leader may send before persisting, but its own match index only
    counts for entries acknowledged through advance()."""
    core = new_core(voters=(1,))
    core.campaign()
    rd = core.ready()
    assert core.status().commit == 0 and rd.entries
    core.advance(rd)
    assert core.status().commit == 1


# ---------------------------------------------------------------------------- snapshots


def snapshot_chunk(meta: SnapshotMeta, offset: int, data: bytes, done: bool) -> InstallSnapshot:
    return InstallSnapshot(term=Term(1), meta=meta, offset=offset, data=data, done=done)


META = SnapshotMeta(
    index=Index(10), term=Term(1), conf=ConfState(voters=(NodeId(1), NodeId(2), NodeId(3)))
)


def test_follower_rejects_out_of_order_snapshot_chunk() -> None:
    core = new_core()
    core.step(env(2, 1, snapshot_chunk(META, 8, b"later", False)))
    [(_, resp)] = sent(flush(core), InstallSnapshotResponse)
    assert resp.reject and resp.offset == 0


def test_follower_assembles_chunks_and_restores() -> None:
    """Reference: Raft §7: the follower writes chunks at their offsets, and on the last one
    discards its log and restores from the snapshot, reporting it for persistence and for
    the state machine."""
    core = new_core()
    core.step(env(2, 1, snapshot_chunk(META, 0, b"abc", False)))
    core.step(env(2, 1, snapshot_chunk(META, 3, b"def", True)))
    rd = flush(core)
    assert rd.snapshot is not None and rd.apply_snapshot is not None
    assert rd.apply_snapshot.data == b"abcdef" and rd.snapshot.meta == META
    assert rd.truncate_from == 11 and rd.must_sync
    st = core.status()
    assert (st.commit, st.applied, st.first_index, st.last_index) == (10, 10, 11, 10)
    assert [r.done for _, r in sent(rd, InstallSnapshotResponse)] == [False, True]


def test_follower_restarts_assembly_on_a_new_snapshot() -> None:
    core = new_core()
    core.step(env(2, 1, snapshot_chunk(META, 0, b"old", False)))
    newer = dataclasses.replace(META, index=Index(12))
    core.step(env(2, 1, snapshot_chunk(newer, 0, b"new", True)))
    rd = flush(core)
    assert rd.apply_snapshot is not None and rd.apply_snapshot.data == b"new"
    assert core.status().commit == 12


def test_lost_snapshot_chunk_is_retransmitted() -> None:
    """Chunks may be lost; the leader resends the unconfirmed chunk on the next heartbeat
    response, and the follower still ends up with the exact snapshot."""
    c = Cluster(3, max_snapshot_chunk_bytes=8, pre_vote=False, check_quorum=False)
    c.elect(1)
    c.isolate(3)
    for i in range(6):
        c.propose(1, b"v%d" % i)
    c.deliver_all()
    c.compact(1)
    c.heal()
    c.tick_all()
    dropped = False
    for _ in range(500):
        if not c.network:
            c.tick_all()
            if not c.network:
                break
        m = c.network[0]
        if not dropped and isinstance(m.body, InstallSnapshot) and m.body.offset == 8:
            c.network.pop(0)
            dropped = True
            continue
        c.deliver_one()
        if c.core(3).status().commit >= 7:
            break
    assert dropped
    c.run(3)
    assert c.applied(3) == [b"v%d" % i for i in range(6)]


def test_restart_from_persisted_state_resumes_exactly() -> None:
    """Reference: Raft Figure 2 (persistent state): a core rebuilt from what it persisted
    (hard state, snapshot, entries) resumes with the same term, vote, log and membership."""
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect(1)
    for i in range(4):
        c.propose(1, b"%d" % i)
    c.deliver_all()
    c.compact(2, 3)
    c.propose(1, b"tail")
    c.deliver_all()
    for n in (1, 2):
        before = c.core(n).status()
        c.crash(n)
        c.restart(n)
        after = c.core(n).status()
        assert (after.term, after.commit, after.last_index, after.first_index, after.conf) == (
            before.term,
            before.commit,
            before.last_index,
            before.first_index,
            before.conf,
        )
    c.process_all()
    assert c.applied(2) == [b"0", b"1", b"2", b"3", b"tail"]
    c.run(25)
    assert c.leader() is not None
    c.check_consistent()


# ---------------------------------------------------------------------------- membership


def test_learner_receives_the_log_but_never_counts_or_campaigns() -> None:
    """Learners are replicated to but are not part of any quorum, and never campaign."""
    c = Cluster(4, voters=(1, 2, 3), learners=(4,), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.propose(1, b"a")
    c.deliver_all()
    assert c.applied(4) == [b"a"]
    c.isolate(2)
    c.isolate(3)
    proposed = c.propose(1, b"b")
    c.deliver_all()
    assert c.core(4).status().last_index >= proposed.index
    assert c.core(1).status().commit < proposed.index
    c.heal()
    for _ in range(50):
        c.tick(4)
    assert c.core(4).status().role is Role.FOLLOWER


def test_learner_is_promoted_with_add_voter() -> None:
    c = Cluster(4, voters=(1, 2, 3), learners=(4,), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.core(1).change_membership(MembershipChange(ops=(op(ChangeKind.ADD_VOTER, 4),)))
    c.deliver_all()
    conf = c.core(4).status().conf
    assert conf.voters == (1, 2, 3, 4) and conf.learners == () and not conf.joint


def test_new_node_learns_membership_from_the_leader() -> None:
    """A node started with an empty configuration follows the leader and adopts the
    membership from the configuration entries it replicates."""
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect(1)
    c.add_node(4)
    c.core(1).change_membership(MembershipChange(ops=(op(ChangeKind.ADD_VOTER, 4),)))
    c.run(3)
    assert c.core(4).status().conf == c.core(1).status().conf
    assert c.core(4).status().conf.voters == (1, 2, 3, 4)


def test_membership_change_refused_before_committing_an_entry_of_the_term() -> None:
    """Ongaro's single-server change fix (raft-dev, 2015): a new leader may not propose a
    configuration change until it has committed an entry of its own term."""
    core = new_core()
    make_leader(core)
    with pytest.raises(ProposalDropped, match="own term"):
        core.change_membership(MembershipChange(ops=(op(ChangeKind.ADD_VOTER, 4),)))


def test_only_one_membership_change_at_a_time() -> None:
    """Reference: Raft thesis §4.1: a leader does not start a change until the previous one
    is committed."""
    core = committed_leader()
    core.change_membership(MembershipChange(ops=(op(ChangeKind.ADD_LEARNER, 4),)))
    with pytest.raises(ProposalDropped, match="pending"):
        core.change_membership(MembershipChange(ops=(op(ChangeKind.ADD_LEARNER, 5),)))


@pytest.mark.parametrize(
    "ops",
    [
        (),
        (op(ChangeKind.REMOVE, 9),),
        (op(ChangeKind.ADD_VOTER, 2),),
        (op(ChangeKind.REMOVE, 1), op(ChangeKind.REMOVE, 2), op(ChangeKind.REMOVE, 3)),
        (op(ChangeKind.ADD_VOTER, 4), op(ChangeKind.REMOVE, 4)),
    ],
)
def test_invalid_membership_changes_are_refused(ops: tuple[ChangeOp, ...]) -> None:
    core = committed_leader()
    with pytest.raises(ProposalDropped):
        core.change_membership(MembershipChange(ops=ops))


def test_removed_leader_steps_down_once_the_change_commits() -> None:
    """Reference: Raft thesis §4.2.2: a leader removed from the configuration steps down
    after the change commits; the rest elect a new leader."""
    c = Cluster(3, pre_vote=True, check_quorum=True)
    c.elect(1)
    c.core(1).change_membership(MembershipChange(ops=(op(ChangeKind.REMOVE, 1),)))
    c.deliver_all()
    assert c.core(1).status().role is Role.FOLLOWER
    assert any("leader_stepped_down reason=removed_from_config" in line for line in c.log_lines)
    c.run(40)
    assert c.leader() in (2, 3)
    c.propose(c.leader() or 2, b"after")
    c.deliver_all()
    assert c.applied(2) == c.applied(3) == [b"after"]


def test_snapshot_records_the_configuration_at_its_index() -> None:
    c = Cluster(4, voters=(1, 2, 3), learners=(4,), pre_vote=False, check_quorum=False)
    c.elect(1)
    c.propose(1, b"a")
    c.deliver_all()
    at = c.core(1).status().applied
    c.core(1).change_membership(MembershipChange(ops=(op(ChangeKind.ADD_VOTER, 4),)))
    c.deliver_all()
    snap = c.compact(1, at)
    assert snap is not None and snap.meta.conf.voters == (1, 2, 3)
    snap = c.compact(1)
    assert snap is not None and snap.meta.conf.voters == (1, 2, 3, 4)


# ---------------------------------------------------------------------------- transfer


def test_leadership_transfer_hands_over_to_an_up_to_date_target() -> None:
    """Reference: Raft thesis §3.10: the leader stops accepting proposals, brings the target
    up to date, sends TimeoutNow; the target wins at once even with PreVote and
    CheckQuorum on."""
    c = Cluster(3, pre_vote=True, check_quorum=True)
    c.elect(1)
    c.drop(1, 3)
    c.propose(1, b"x")
    c.deliver_all()
    c.heal()
    term = c.core(1).status().term
    c.core(1).transfer_leadership(NodeId(3))
    assert c.core(1).status().transferring_to == 3
    with pytest.raises(ProposalDropped, match="transfer"):
        c.core(1).propose(b"y")
    c.deliver_all()
    assert c.leader() == 3 and c.core(3).status().term == term + 1
    c.propose(3, b"z")
    c.deliver_all()
    assert c.applied(1) == c.applied(2) == c.applied(3) == [b"x", b"z"]


def test_leadership_transfer_aborts_after_an_election_timeout() -> None:
    c = Cluster(3, pre_vote=True, check_quorum=True)
    c.elect(1)
    c.isolate(3)
    c.core(1).transfer_leadership(NodeId(3))
    c.run(10)
    st = c.core(1).status()
    assert st.role is Role.LEADER and st.transferring_to == 0
    assert any("transfer_aborted" in line and "reason=timeout" in line for line in c.log_lines)
    c.propose(1, b"ok")


def test_timeout_now_makes_the_target_campaign_without_pre_vote() -> None:
    core = new_core(2, pre_vote=True, check_quorum=True)
    core.step(env(1, 2, Heartbeat(term=Term(1), commit=Index(0))))
    flush(core)
    core.step(env(1, 2, TimeoutNow(term=Term(1))))
    st = core.status()
    assert (st.role, st.term) == (Role.CANDIDATE, 2)
    asks = [r for _, r in sent(flush(core), RequestVote)]
    assert asks and all(r.transfer and not r.pre_vote for r in asks)


# ---------------------------------------------------------------------------- misc


def test_status_reports_progress_only_on_the_leader() -> None:
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect(1)
    progress = c.core(1).status().progress
    assert sorted(progress) == [1, 2, 3]
    assert all(p.match == 1 and p.state == "replicate" for p in progress.values())
    assert c.core(2).status().progress == {}


def test_runs_replay_bit_for_bit_from_a_seed() -> None:
    """Determinism: the same seed and the same script give the same log lines."""

    def script(seed: int) -> list[str]:
        c = Cluster(5, seed=seed)
        c.run(40)
        leader = c.leader()
        assert leader is not None
        c.propose(leader, b"x")
        c.isolate(leader)
        c.run(40)
        return c.log_lines

    assert script(7) == script(7)


def test_backend_registry_builds_raft_core() -> None:
    assert core_factory("raft") is RaftCore


ALLOWED_FIELD_TYPES = {"Term", "Index", "NodeId", "int", "bool", "bytes", "SnapshotMeta"}


@pytest.mark.parametrize("name", raft_messages.__all__)
def test_message_bodies_are_frozen_slotted_kw_only_with_codec_friendly_fields(name: str) -> None:
    cls = getattr(raft_messages, name)
    if not dataclasses.is_dataclass(cls):
        return  # the RaftBody union alias
    params = getattr(cls, "__dataclass_params__")  # noqa: B009 - dataclass internals
    assert params.frozen and hasattr(cls, "__slots__")
    fields = dataclasses.fields(cls)
    assert all(f.kw_only for f in fields)
    assert fields[0].name == "term"
    hints = typing.get_type_hints(cls)
    for f in fields:
        hint = hints[f.name]
        if typing.get_origin(hint) is tuple:
            assert typing.get_args(hint) == (Entry, Ellipsis)
        else:
            assert hint.__name__ in ALLOWED_FIELD_TYPES, (name, f.name, hint)


def test_snapshot_chunk_gap_is_rejected_and_duplicate_is_ignored() -> None:
    """Chunks must arrive in order: a gap is rejected with the offset the follower needs, a
    duplicate is answered with it but not appended twice."""
    core = new_core()
    core.step(env(2, 1, snapshot_chunk(META, 0, b"abc", False)))
    core.step(env(2, 1, snapshot_chunk(META, 6, b"ghi", False)))
    core.step(env(2, 1, snapshot_chunk(META, 0, b"abc", False)))
    answers = [(r.offset, r.reject) for _, r in sent(flush(core), InstallSnapshotResponse)]
    assert answers == [(3, False), (3, True), (3, False)]
    core.step(env(2, 1, snapshot_chunk(META, 3, b"def", True)))
    rd = flush(core)
    assert rd.apply_snapshot is not None and rd.apply_snapshot.data == b"abcdef"


def test_leader_jumps_to_its_last_entry_of_the_conflicting_term() -> None:
    """Reference: Raft §5.3 (optimization): when the rejection names a term the leader also
    has, the leader resumes right after its own last entry of that term."""
    core = new_core(persisted=persisted(4, 1, 2, 2, 2, 4, 4, 4))
    make_leader(core)  # term 5; probes every follower at prev_index 7
    reject = AppendEntriesResponse(
        term=Term(5),
        success=False,
        index=Index(7),
        conflict_term=Term(2),
        conflict_index=Index(2),
    )
    core.step(env(2, 1, reject))
    [(_, retry)] = [(d, b) for d, b in sent(flush(core), AppendEntries) if d == 2]
    assert (retry.prev_index, retry.prev_term) == (4, 2)
