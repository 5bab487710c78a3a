"""How promptly followers learn the commit index (Raft §5.3: "the leader keeps track of the
highest index it knows to be committed, and it includes that index in future AppendEntries
RPCs ... so that the other servers eventually find out"). Like etcd, the leader tells a
follower the new commit index right away -- with an empty append -- when that follower's
acknowledgement arrives after the commit already covers it, but only when it has something
new to tell."""

from __future__ import annotations

from support.cluster import Cluster

from consensus.raft.messages import AppendEntries, AppendEntriesResponse, Heartbeat
from consensus.types import Index, Term
from raft.helpers import env, flush, make_leader, new_core, sent


def _ack(src: int, index: int, term: int = 1) -> object:
    return env(src, 1, AppendEntriesResponse(term=Term(term), success=True, index=Index(index)))


def test_late_acknowledgement_gets_the_commit_index_at_once() -> None:
    """A new leader's first append is a probe, so the follower is paused when a quorum's ack
    commits the no-op and the commit broadcast skips it. Its own ack, arriving after the
    commit, is answered at once by an empty append carrying the commit index rather than a
    heartbeat interval later."""
    core = new_core()
    make_leader(core)
    core.step(_ack(2, 1))  # commits the no-op (1 and 2 of 3)
    rd = flush(core)
    assert core.status().commit == 1
    assert [dst for dst, _ in sent(rd, AppendEntries)] == [2]  # 3 is paused (probe)
    core.step(_ack(3, 1))
    rd = flush(core)
    appends = sent(rd, AppendEntries)
    assert [(dst, m.commit, m.prev_index, m.entries) for dst, m in appends] == [(3, 1, 1, ())]


def test_no_extra_message_when_the_follower_already_knows_the_commit_index() -> None:
    """Once the commit broadcast reached both followers, the slower follower's ack of the
    same entry gets no reply: there is nothing new to tell it."""
    core = new_core()
    make_leader(core)
    for peer in (2, 3):
        core.step(_ack(peer, 1))
    flush(core)
    core.propose(b"x")
    flush(core)
    core.step(_ack(2, 2))  # commits index 2 and tells 2 and 3 (both replicating)
    rd = flush(core)
    assert sorted((dst, m.commit) for dst, m in sent(rd, AppendEntries)) == [(2, 2), (3, 2)]
    core.step(_ack(3, 2))
    assert not flush(core).messages


def test_commit_broadcast_skips_a_follower_a_heartbeat_just_told() -> None:
    """The no-op's commit releases a queued read (thesis §6.4), whose heartbeat round tells
    follower 2 the commit index; the commit broadcast right after it sends 2 no empty append
    (3 is still paused as a probe and hears nothing new either)."""
    core = new_core()
    make_leader(core)
    core.read_index(7)  # waits for the no-op of the term to commit
    core.step(_ack(2, 1))
    rd = flush(core)
    assert sorted((dst, m.commit) for dst, m in sent(rd, Heartbeat)) == [(2, 1), (3, 0)]
    assert not sent(rd, AppendEntries)


def test_followers_know_the_commit_index_once_the_network_is_quiet() -> None:
    """End to end with no tick after the election: every follower has learned that the new
    leader's no-op is committed, and after a proposal that the proposal is."""
    c = Cluster(3, pre_vote=True, check_quorum=True)
    c.elect(1)
    assert [c.core(n).status().commit for n in (1, 2, 3)] == [1, 1, 1]
    c.propose(1, b"x")
    c.deliver_all()
    assert [c.core(n).status().commit for n in (1, 2, 3)] == [2, 2, 2]
    assert c.applied(2) == c.applied(3) == [b"x"]
