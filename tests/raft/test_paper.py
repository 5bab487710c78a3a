"""One test per claim of the Raft paper (Ongaro & Ousterhout, "In Search of an
Understandable Consensus Algorithm", 2014), in the spirit of etcd's raft_paper_test.go.

PreVote and CheckQuorum are off here (the paper has neither) unless a test says otherwise.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from support.cluster import Cluster, MemStorage

from consensus.api import ChangeKind, ChangeOp, MembershipChange, Role
from consensus.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
)
from consensus.types import EntryKind, Index, NodeId, Term
from raft.helpers import env, flush, log_of, make_leader, new_core, persisted, sent

PAPER: dict[str, Any] = {"pre_vote": False, "check_quorum": False}

# ---------------------------------------------------------------------------- §5.1 terms


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_higher_term_makes_any_server_a_follower(role: str) -> None:
    """Reference: Raft §5.1: "If a server's current term is smaller than the other's, it
    updates its current term ... If a candidate or leader discovers that its term is out of
    date, it immediately reverts to follower state"."""
    core = new_core()
    if role == "candidate":
        core.campaign()
    elif role == "leader":
        make_leader(core)
    core.step(env(2, 1, Heartbeat(term=Term(7), commit=Index(0))))
    st = core.status()
    assert (st.role, st.term, st.leader) == (Role.FOLLOWER, 7, 2)


def test_stale_term_request_is_rejected() -> None:
    """Reference: Raft §5.1: "If a server receives a request with a stale term number, it
    rejects the request" — a stale AppendEntries changes nothing."""
    core = new_core()
    core.step(env(2, 1, Heartbeat(term=Term(3), commit=Index(0))))
    flush(core)
    stale = AppendEntries(
        term=Term(2), prev_index=Index(0), prev_term=Term(0), entries=log_of(2), commit=Index(1)
    )
    core.step(env(3, 1, stale))
    st = core.status()
    assert (st.term, st.leader, st.last_index, st.commit) == (3, 2, 0, 0)
    assert not sent(flush(core), AppendEntriesResponse)


# ---------------------------------------------------------------------------- §5.2 election


def test_servers_start_as_followers() -> None:
    """Reference: Raft §5.2: "When servers start up, they begin as followers"."""
    st = new_core().status()
    assert (st.role, st.term, st.leader) == (Role.FOLLOWER, 0, 0)


def test_leader_sends_periodic_heartbeats() -> None:
    """Reference: Raft §5.2: "Leaders send periodic heartbeats ... to all followers"."""
    core = new_core(heartbeat_interval_ticks=2)
    make_leader(core)
    core.tick()
    assert not sent(flush(core), Heartbeat)
    core.tick()
    beats = sent(flush(core), Heartbeat)
    assert sorted(dst for dst, _ in beats) == [2, 3]
    assert all(b.term == 1 for _, b in beats)


def test_follower_starts_election_after_timeout() -> None:
    """Reference: Raft §5.2: a follower that hears nothing for an election timeout
    increments its term, votes for itself and sends RequestVote to every other server;
    the vote is persisted (must_sync) in the same Ready that carries the requests."""
    core = new_core()
    for _ in range(2 * 10):
        core.tick()
    st = core.status()
    assert (st.role, st.term) == (Role.CANDIDATE, 1)
    rd = flush(core)
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync
    requests = sent(rd, RequestVote)
    assert sorted(dst for dst, _ in requests) == [2, 3]
    assert all(r.term == 1 and not r.pre_vote for _, r in requests)


def test_election_timeouts_are_randomized_between_t_and_2t() -> None:
    """Reference: Raft §5.2: "election timeouts are chosen randomly from a fixed interval"
    ([T, 2T) here), drawn from the injected rng."""
    waits = set()
    for seed in range(30):
        core = new_core(seed=seed, election_timeout_ticks=10)
        ticks = 0
        while core.status().role is Role.FOLLOWER:
            core.tick()
            ticks += 1
        waits.add(ticks)
    assert min(waits) >= 10 and max(waits) < 20
    assert len(waits) > 3


@pytest.mark.parametrize(
    ("voters", "grants", "rejects", "role"),
    [
        ((1,), (), (), Role.LEADER),
        ((1, 2, 3), (2,), (), Role.LEADER),
        ((1, 2, 3), (), (2, 3), Role.FOLLOWER),
        ((1, 2, 3, 4, 5), (2,), (3,), Role.CANDIDATE),
        ((1, 2, 3, 4, 5), (2, 3), (4,), Role.LEADER),
        ((1, 2, 3, 4, 5), (), (2, 3, 4), Role.FOLLOWER),
    ],
)
def test_candidate_wins_only_with_majority(
    voters: tuple[int, ...], grants: tuple[int, ...], rejects: tuple[int, ...], role: Role
) -> None:
    """Reference: Raft §5.2: "A candidate wins an election if it receives votes from a
    majority of the servers in the full cluster for the same term"."""
    core = new_core(voters=voters)
    core.campaign()
    for v in grants:
        core.step(env(v, 1, RequestVoteResponse(term=Term(1), granted=True)))
    for v in rejects:
        core.step(env(v, 1, RequestVoteResponse(term=Term(1), granted=False)))
    assert core.status().role is role


def test_server_votes_at_most_once_per_term() -> None:
    """Reference: Raft §5.2: "Each server will vote for at most one candidate in a given
    term, on a first-come-first-served basis"; a repeated request from the same candidate
    is granted again (an idempotent retry, §5.5)."""
    core = new_core()
    ask = RequestVote(term=Term(1), last_log_index=Index(0), last_log_term=Term(0))
    core.step(env(2, 1, ask))
    core.step(env(3, 1, ask))
    core.step(env(2, 1, ask))
    answers = [(dst, r.granted) for dst, r in sent(flush(core), RequestVoteResponse)]
    assert answers == [(2, True), (3, False), (2, True)]


def test_candidate_steps_down_when_a_leader_of_its_term_appears() -> None:
    """Reference: Raft §5.2: "If the leader's term ... is at least as large as the
    candidate's current term, then the candidate recognizes the leader as legitimate and
    returns to follower state"."""
    core = new_core()
    core.campaign()
    core.step(
        env(
            3,
            1,
            AppendEntries(term=Term(1), prev_index=Index(0), prev_term=Term(0), commit=Index(0)),
        )
    )
    st = core.status()
    assert (st.role, st.term, st.leader) == (Role.FOLLOWER, 1, 3)


def test_split_vote_starts_a_new_election_after_timeout() -> None:
    """Reference: Raft §5.2: when nobody wins, "each candidate will time out and start a new
    election by incrementing its term"."""
    core = new_core()
    core.campaign()
    for _ in range(2 * 10):
        core.tick()
    st = core.status()
    assert (st.role, st.term) == (Role.CANDIDATE, 2)


# ---------------------------------------------------------------------------- §5.3 replication


def test_leader_replicates_new_entry_with_consistency_check_fields() -> None:
    """Reference: Raft §5.3: the leader appends the command to its log and issues
    AppendEntries carrying the index and term of the entry that precedes the new ones."""
    core = new_core()
    make_leader(core)
    core.step(env(2, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(core)
    proposed = core.propose(b"cmd")
    assert (proposed.index, proposed.term) == (2, 1)
    appends = dict(sent(flush(core), AppendEntries))
    to_2 = appends[2]
    assert (to_2.prev_index, to_2.prev_term) == (1, 1)
    assert [(e.index, e.term, e.data) for e in to_2.entries] == [(2, 1, b"cmd")]


def test_entry_commits_once_a_majority_stored_it() -> None:
    """Reference: Raft §5.3: "A log entry is committed once the leader that created the
    entry has replicated it on a majority of the servers"."""
    core = new_core(voters=(1, 2, 3, 4, 5))
    make_leader(core, voters=(2, 3))
    core.propose(b"a")
    flush(core)  # the leader's own copy is now persisted
    core.step(env(2, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(2))))
    assert core.status().commit == 0
    core.step(env(3, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(2))))
    assert core.status().commit == 2
    rd = flush(core)
    assert [e.data for e in rd.committed_entries if e.kind is EntryKind.NORMAL] == [b"a"]


def test_followers_apply_committed_entries_in_log_order() -> None:
    """Reference: Raft §5.3: "Once a follower learns that a log entry is committed, it
    applies the entry to its local state machine (in log order)"."""
    c = Cluster(3, **PAPER)
    c.elect(1)
    for i in range(5):
        c.propose(1, b"%d" % i)
    c.deliver_all()
    expected = [b"%d" % i for i in range(5)]
    assert c.applied(1) == c.applied(2) == c.applied(3) == expected


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "conflict_term", "conflict_index"),
    [
        (5, 3, 0, 4),  # follower too short: hint its last index + 1
        (3, 3, 2, 2),  # term mismatch at 3: follower's term there and where that term starts
    ],
)
def test_follower_refuses_append_when_prev_entry_does_not_match(
    prev_index: int, prev_term: int, conflict_term: int, conflict_index: int
) -> None:
    """Reference: Raft §5.3: "If the follower does not find an entry in its log with the
    same index and term, then it refuses the new entries", and reports the conflicting term
    and its first index so the leader can skip that term at once."""
    core = new_core(persisted=persisted(2, 1, 2, 2))
    body = AppendEntries(
        term=Term(3),
        prev_index=Index(prev_index),
        prev_term=Term(prev_term),
        entries=log_of(3, start=prev_index + 1),
        commit=Index(0),
    )
    core.step(env(2, 1, body))
    [(_, resp)] = sent(flush(core), AppendEntriesResponse)
    assert not resp.success
    assert (resp.index, resp.conflict_term, resp.conflict_index) == (
        prev_index,
        conflict_term,
        conflict_index,
    )
    assert core.status().last_index == 3


def test_follower_deletes_conflicting_suffix_and_appends() -> None:
    """Reference: Raft §5.3 / Figure 2: "If an existing entry conflicts with a new one (same
    index but different terms), delete the existing entry and all that follow it"."""
    core = new_core(persisted=persisted(2, 1, 2, 2, 2))
    body = AppendEntries(
        term=Term(3),
        prev_index=Index(1),
        prev_term=Term(1),
        entries=log_of(3, start=2),
        commit=Index(0),
    )
    core.step(env(2, 1, body))
    rd = flush(core)
    assert rd.truncate_from == 2
    assert [(e.index, e.term) for e in rd.entries] == [(2, 3)]
    assert core.status().last_index == 2
    [(_, resp)] = sent(rd, AppendEntriesResponse)
    assert resp.success and resp.index == 2


def test_stale_append_never_truncates_a_longer_matching_log() -> None:
    """Reference: Raft §5.3 / Figure 2 ("delete ... only if an existing entry conflicts"): a
    delayed or duplicated AppendEntries whose entries all match must not shorten the log."""
    core = new_core(persisted=persisted(1, 1, 1, 1, 1))
    delayed = AppendEntries(
        term=Term(1), prev_index=Index(0), prev_term=Term(0), entries=log_of(1, 1), commit=Index(0)
    )
    core.step(env(2, 1, delayed))
    rd = flush(core)
    assert core.status().last_index == 4
    assert rd.truncate_from is None and not rd.entries
    [(_, resp)] = sent(rd, AppendEntriesResponse)
    assert resp.success and resp.index == 2  # acknowledges only what the message covered


def test_leader_never_overwrites_its_own_entries() -> None:
    """Reference: Raft §5.3: "a leader never overwrites or deletes entries in its own log";
    a new leader holding uncommitted entries of an old term keeps and replicates them."""
    c = Cluster(3, **PAPER)
    c.elect(1)
    c.drop(1, 3)
    c.propose(1, b"only-on-1-and-2")
    c.deliver_all()
    c.crash(1)
    c.heal()
    c.elect(2)
    c.deliver_all()
    assert c.applied(2) == c.applied(3) == [b"only-on-1-and-2"]


def test_fast_backtracking_skips_a_whole_conflicting_term_per_round_trip() -> None:
    """Reference: Raft §5.3 (the optimization at the end of the section): with the
    conflicting term in the rejection, the leader needs one round trip per conflicting term,
    not one per conflicting entry."""
    c = Cluster(2, **PAPER)
    # Leader-to-be: entries of terms 1 and 3; follower: 50 uncommitted entries of term 2.
    c.nodes[NodeId(1)].storage = MemStorage(
        hard_state=persisted(3).hard_state, entries={e.index: e for e in log_of(1, 1, *[3] * 5)}
    )
    c.nodes[NodeId(2)].storage = MemStorage(
        hard_state=persisted(2).hard_state, entries={e.index: e for e in log_of(1, 1, *[2] * 50)}
    )
    c.restart(1)
    c.restart(2)
    c.elect(1)
    c.propose(1, b"x")
    seen_rejections = 0
    for _ in range(100):
        if not c.network:
            break
        message = c.network[0]
        if isinstance(message.body, AppendEntriesResponse) and not message.body.success:
            seen_rejections += 1
        c.deliver_one()
    assert c.core(2).status().last_index == c.core(1).status().last_index == 9
    # The election's own append was rejected once already; at most one more is needed.
    assert seen_rejections <= 2


# ---------------------------------------------------------------------------- §5.4 safety


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (3, 2, True),  # same last term, same length
        (4, 2, True),  # same last term, longer
        (2, 2, False),  # same last term, shorter
        (1, 3, True),  # higher last term wins even if shorter
        (9, 1, False),  # lower last term loses even if longer
    ],
)
def test_voter_denies_vote_to_less_up_to_date_candidate(
    last_index: int, last_term: int, granted: bool
) -> None:
    """Reference: Raft §5.4.1: "the voter denies its vote if its own log is more up-to-date
    than that of the candidate" (compare last terms, then lengths)."""
    core = new_core(persisted=persisted(2, 1, 2, 2))
    ask = RequestVote(term=Term(5), last_log_index=Index(last_index), last_log_term=Term(last_term))
    core.step(env(2, 1, ask))
    [(_, resp)] = sent(flush(core), RequestVoteResponse)
    assert resp.granted is granted


def test_figure_8_previous_term_entry_is_not_committed_by_counting_replicas() -> None:
    """Reference: Raft §5.4.2 / Figure 8: "Raft never commits log entries from previous terms
    by counting replicas"; once an entry of the current term commits, so do all before."""
    core = new_core(persisted=persisted(3, 1, 2, commit=1))
    make_leader(core)  # term 4, no-op at index 3, persisted by the flush
    assert core.status().term == 4
    core.step(env(2, 1, AppendEntriesResponse(term=Term(4), success=True, index=Index(2))))
    assert core.status().commit == 1  # a majority holds index 2 (term 2), still not committed
    core.step(env(2, 1, AppendEntriesResponse(term=Term(4), success=True, index=Index(3))))
    assert core.status().commit == 3


def test_new_leader_appends_a_noop_of_its_term() -> None:
    """Reference: Raft §8 (and §5.4.2): "each leader commit a blank no-op entry into the log
    at the start of its term"."""
    core = new_core(persisted=persisted(1, 1, 1))
    rd = make_leader(core)
    assert [(e.index, e.term, e.kind) for e in rd.entries] == [(3, 2, EntryKind.NOOP)]


# ---------------------------------------------------------------------------- §5.5 crashes


def test_duplicate_append_is_idempotent() -> None:
    """Reference: Raft §5.5: "If a follower ... receives an AppendEntries request that
    includes log entries already present in its log, it ignores those entries"."""
    core = new_core()
    body = AppendEntries(
        term=Term(1), prev_index=Index(0), prev_term=Term(0), entries=log_of(1, 1), commit=Index(1)
    )
    core.step(env(2, 1, body))
    first = flush(core)
    core.step(env(2, 1, body))
    second = flush(core)
    assert [e.index for e in first.entries] == [1, 2] and not second.entries
    acks = [r for _, r in sent(first, AppendEntriesResponse) + sent(second, AppendEntriesResponse)]
    # The retry is acknowledged again (here up to the commit index the follower is sure of).
    assert [(r.success, r.index) for r in acks] == [(True, 2), (True, 1)]
    assert core.status().commit == 1 and core.status().last_index == 2


def test_crashed_follower_catches_up_after_restart() -> None:
    """Reference: Raft §5.5: "If a follower or candidate crashes ... Raft just retries
    indefinitely; if the crashed server restarts, then the RPC will complete"."""
    c = Cluster(3, **PAPER)
    c.elect(1)
    c.propose(1, b"before")
    c.deliver_all()
    c.crash(3)
    c.propose(1, b"during")
    c.deliver_all()
    c.restart(3)
    c.run(3)
    assert c.applied(3) == [b"before", b"during"]


@pytest.mark.parametrize("seed", range(6))
def test_state_machine_safety_under_random_faults(seed: int) -> None:
    """Reference: Raft §5.4.3 (State Machine Safety): with messages dropped, nodes isolated
    and crashed at random, no two servers ever apply different entries at the same index,
    and after healing every server catches up."""
    rng = random.Random(seed)
    c = Cluster(5, seed=seed, pre_vote=rng.random() < 0.5, check_quorum=rng.random() < 0.5)
    sent_count = 0
    for step in range(300):
        roll = rng.random()
        if roll < 0.03:
            c.isolate(rng.randint(1, 5))
        elif roll < 0.05:
            c.heal()
        elif roll < 0.06:
            victim = rng.randint(1, 5)
            c.crash(victim)
            c.restart(victim)
        leader = c.leader()
        if leader is not None and rng.random() < 0.3:
            try:
                c.propose(leader, b"s%d" % step)
                sent_count += 1
            except Exception:
                pass
        c.tick_all()
        for _ in range(rng.randint(0, 40)):
            if c.network and rng.random() < 0.1:
                c.network.pop(rng.randrange(len(c.network)))  # message loss
            if not c.deliver_one():
                break
        c.check_consistent()
    c.heal()
    c.run(60)
    c.check_consistent()
    leader = c.leader()
    assert leader is not None
    lengths = {len(c.applied(n)) for n in range(1, 6)}
    assert len(lengths) == 1, f"seed {seed}: nodes did not converge: {lengths}"


# ---------------------------------------------------------------------------- §6 membership


def test_joint_consensus_needs_majorities_of_both_configurations() -> None:
    """Reference: Raft §6: in C_old,new, "agreement (for elections and entry commitment)
    requires separate majorities from both the old and new configurations"; the leader then
    moves to C_new by itself."""
    c = Cluster(5, voters=(1, 2, 3), learners=(4, 5), **PAPER)
    c.elect(1)
    c.deliver_all()
    c.isolate(4)
    c.isolate(5)
    change = MembershipChange(
        ops=(
            ChangeOp(kind=ChangeKind.ADD_VOTER, node=NodeId(4)),
            ChangeOp(kind=ChangeKind.ADD_VOTER, node=NodeId(5)),
            ChangeOp(kind=ChangeKind.REMOVE, node=NodeId(2)),
            ChangeOp(kind=ChangeKind.REMOVE, node=NodeId(3)),
        )
    )
    proposed = c.core(1).change_membership(change)
    c.deliver_all()
    st = c.core(1).status()
    assert st.conf.joint and st.conf.voters == (1, 4, 5) and st.conf.voters_outgoing == (1, 2, 3)
    assert st.commit < proposed.index  # old majority {1,2,3} has it, new majority does not
    c.heal()
    c.run(3)
    st = c.core(1).status()
    assert st.commit > proposed.index
    assert not st.conf.joint and st.conf.voters == (1, 4, 5)


def test_configuration_takes_effect_when_appended_and_rolls_back_on_truncation() -> None:
    """Reference: Raft §6 / thesis §4.1: "a server always uses the latest configuration in
    its log, regardless of whether the entry is committed"; an overwritten configuration
    entry is no longer in force."""
    leader = new_core(voters=(1, 2, 3))
    make_leader(leader)
    leader.step(env(2, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(leader)
    leader.change_membership(
        MembershipChange(ops=(ChangeOp(kind=ChangeKind.ADD_LEARNER, node=NodeId(4)),))
    )
    conf_entry = next(m.body for m in leader.ready().messages if isinstance(m.body, AppendEntries))
    follower = new_core(2, voters=(1, 2, 3))
    follower.step(
        env(
            1,
            2,
            AppendEntries(
                term=Term(1),
                prev_index=Index(0),
                prev_term=Term(0),
                entries=log_of(1),
                commit=Index(0),
            ),
        )
    )
    assert isinstance(conf_entry, AppendEntries)
    follower_body = AppendEntries(
        term=Term(1),
        prev_index=Index(1),
        prev_term=Term(1),
        entries=tuple(e for e in conf_entry.entries if e.index == 2),
        commit=Index(0),
    )
    follower.step(env(1, 2, follower_body))
    assert follower.status().conf.learners == (4,)  # in force, though uncommitted
    newer = AppendEntries(
        term=Term(2),
        prev_index=Index(1),
        prev_term=Term(1),
        entries=log_of(2, start=2),
        commit=Index(0),
    )
    follower.step(env(3, 2, newer))
    assert follower.status().conf.learners == ()


# ---------------------------------------------------------------------------- §7 snapshots


def test_leader_sends_snapshot_to_follower_that_needs_compacted_entries() -> None:
    """Reference: Raft §7: "the leader must occasionally send snapshots to followers that
    lag behind" — when the next entry a follower needs was discarded by compaction."""
    c = Cluster(3, max_snapshot_chunk_bytes=16, **PAPER)
    c.elect(1)
    c.isolate(3)
    for i in range(10):
        c.propose(1, b"value-%d" % i)
    c.deliver_all()
    c.compact(1)
    c.heal()
    chunks: list[InstallSnapshot] = []
    c.tick_all()
    for _ in range(1000):
        if not c.network:
            break
        if isinstance(c.network[0].body, InstallSnapshot):
            chunks.append(c.network[0].body)
        c.deliver_one()
    assert len(chunks) > 1 and all(len(ch.data) <= 16 for ch in chunks)
    c.propose(1, b"after")
    c.deliver_all()
    assert c.applied(3) == c.applied(1) == [*(b"value-%d" % i for i in range(10)), b"after"]


# ---------------------------------------------------------------------------- §8 clients


def test_read_only_query_waits_for_a_heartbeat_quorum() -> None:
    """Reference: Raft §8: "a leader must check whether it has been deposed before
    processing a read-only request ... by exchanging heartbeat messages with a majority"."""
    core = new_core()
    make_leader(core)
    core.step(env(2, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(core)
    core.read_index(42)
    rd = flush(core)
    assert not rd.read_states
    beats = sent(rd, Heartbeat)
    assert sorted(d for d, _ in beats) == [2, 3]
    context = beats[0][1].context
    assert context != 0
    core.step(env(2, 1, HeartbeatResponse(term=Term(1), context=context)))
    rd = flush(core)
    assert [(r.request_id, r.index) for r in rd.read_states] == [(42, 1)]
