"""The acceptor's promises (Paxos Made Simple §2.3, Paxos Made Live §4), one core by hand."""

from __future__ import annotations

import pytest

from consensus.api import ReadMode
from consensus.paxos import InvariantViolation, make_ballot
from consensus.paxos.messages import (
    Accept,
    Accepted,
    Heartbeat,
    HeartbeatAck,
    Nack,
    NackReason,
    PreCheck,
    PreCheckResponse,
    Prepare,
    Promise,
)
from consensus.types import Entry, EntryKind, Index, NodeId, Term

from .harness import bodies, core, drain, envelope

B1 = make_ballot(1, NodeId(1))  # leader 1, round 1
B2 = make_ballot(2, NodeId(3))  # node 3, round 2: higher


def values(first: int, last: int, ballot: Term, size: int = 1) -> tuple[Entry, ...]:
    return tuple(
        Entry(index=Index(i), term=ballot, data=bytes([i]) * size, accepted_ballot=ballot)
        for i in range(first, last + 1)
    )


def test_promise_is_durable_before_it_is_sent() -> None:
    """PMS §2.3 / PML §4: the promised ballot is persisted (fsync) in the Ready that carries
    the Promise, and storage persists before sending."""
    c = core(2)
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(1))))
    rd = drain(c)
    assert rd.hard_state is not None and rd.hard_state.term == B2
    assert rd.must_sync
    assert bodies(rd, Promise, dst=3) == [
        Promise(ballot=B2, from_slot=Index(1), entries=(), next_slot=Index(0), commit=Index(0))
    ]


def test_acceptance_is_durable_before_it_is_acknowledged() -> None:
    """PMS §2.3: an acceptor's Accepted leaves only with the accepted value persisted."""
    c = core(2)
    c.step(envelope(1, 2, Accept(ballot=B1, entries=values(1, 2, B1), commit=Index(0))))
    rd = drain(c)
    assert [e.index for e in rd.entries] == [1, 2]
    assert all(e.accepted_ballot == B1 for e in rd.entries)
    assert rd.must_sync
    (ack,) = bodies(rd, Accepted)
    assert (ack.from_slot, ack.to_slot, ack.accepted_through) == (1, 2, 2)


def test_acceptor_never_accepts_below_its_promise() -> None:
    """PMS §2.3 (P1a): after promising b2, an Accept at b1 < b2 is refused, nothing stored."""
    c = core(2, check_quorum=False)
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(1))))
    drain(c)
    c.step(envelope(1, 2, Accept(ballot=B1, entries=values(1, 1, B1), commit=Index(0))))
    rd = drain(c)
    assert rd.entries == ()
    assert bodies(rd) == [
        Nack(ballot=B1, promised=B2, reason=NackReason.HIGHER_BALLOT, commit=Index(0))
    ]


def test_prepare_below_promise_is_refused() -> None:
    """PMS §2.3: an acceptor promises only ballots above every ballot it promised before."""
    c = core(2, check_quorum=False)
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(1))))
    drain(c)
    c.step(envelope(1, 2, Prepare(ballot=B1, from_slot=Index(1))))
    (nack,) = bodies(drain(c))
    assert isinstance(nack, Nack) and nack.promised == B2
    assert c.status().term == B2


def test_promise_reports_accepted_values_with_their_ballots() -> None:
    """PMS §2.3: the promise carries the acceptor's accepted values, each with the ballot it
    was accepted in, from the requested slot on."""
    c = core(2, check_quorum=False)
    c.step(envelope(1, 2, Accept(ballot=B1, entries=values(1, 3, B1), commit=Index(0))))
    drain(c)
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(2))))
    (promise,) = bodies(drain(c), Promise)
    assert [(e.index, e.accepted_ballot, e.term) for e in promise.entries] == [
        (2, B1, B1),
        (3, B1, B1),
    ]


def test_promise_is_paged_by_max_msg_bytes() -> None:
    """A promise never exceeds max_msg_bytes of entries: it says where it stopped and the
    candidate asks again with the same ballot; the pages add up to everything accepted."""
    c = core(2, check_quorum=False, max_msg_bytes=250)
    c.step(envelope(1, 2, Accept(ballot=B1, entries=values(1, 7, B1, size=100), commit=Index(0))))
    drain(c)
    seen: list[int] = []
    start = Index(1)
    pages = 0
    while True:
        c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=start)))
        (promise,) = bodies(drain(c), Promise)
        assert sum(e.size_bytes() for e in promise.entries) <= 250
        seen += [e.index for e in promise.entries]
        pages += 1
        if not promise.next_slot:
            break
        start = promise.next_slot
    assert seen == [1, 2, 3, 4, 5, 6, 7]
    assert pages == 4


def test_acceptor_protects_a_live_leaders_lease() -> None:
    """With check_quorum, an acceptor that heard from its leader within an election timeout
    promises no other proposer (the basis of lease reads); afterwards it does."""
    c = core(2, election_timeout_ticks=10)
    c.step(envelope(1, 2, Heartbeat(ballot=B1, commit=Index(0), round=1)))
    drain(c)
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(1))))
    (nack,) = bodies(drain(c))
    assert isinstance(nack, Nack) and nack.reason is NackReason.LEASE
    assert c.status().term == B1
    for _ in range(9):
        c.tick()
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(1))))
    assert isinstance(bodies(drain(c))[0], Nack)
    c.tick()
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(1))))
    assert isinstance(bodies(drain(c), Promise)[0], Promise)


def test_transfer_prepare_bypasses_the_lease() -> None:
    """A Prepare sent on the leader's TimeoutNow is honoured at once."""
    c = core(2)
    c.step(envelope(1, 2, Heartbeat(ballot=B1, commit=Index(0), round=1)))
    drain(c)
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(1), transfer=True)))
    assert bodies(drain(c), Promise)


def test_pre_check_persists_nothing_and_respects_a_live_leader() -> None:
    """The pre-check (PreVote analogue) changes no durable state, grants a higher ballot
    when no leader is live, and refuses while a leader was heard within the timeout."""
    c = core(2)
    c.step(envelope(3, 2, PreCheck(ballot=B2, commit=Index(0))))
    rd = drain(c)
    assert rd.hard_state is None and not rd.must_sync
    assert bodies(rd) == [PreCheckResponse(ballot=B2, granted=True, promised=Term(0))]
    c.step(envelope(1, 2, Heartbeat(ballot=B1, commit=Index(0), round=1)))
    drain(c)
    c.step(envelope(3, 2, PreCheck(ballot=B2, commit=Index(0))))
    (resp,) = bodies(drain(c), PreCheckResponse)
    assert not resp.granted and resp.promised == B1


def test_compacted_acceptor_refuses_a_candidate_that_is_behind() -> None:
    """An acceptor cannot report values it compacted, so it refuses (without promising) a
    Prepare that asks for them; refusing is always safe."""
    c = core(2, check_quorum=False)
    c.step(envelope(1, 2, Accept(ballot=B1, entries=values(1, 3, B1), commit=Index(3))))
    assert [e.index for e in drain(c).committed_entries] == [1, 2, 3]
    c.compact(Index(3), b"state")
    drain(c)
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(2))))
    (nack,) = bodies(drain(c))
    assert isinstance(nack, Nack) and nack.reason is NackReason.BEHIND
    assert c.status().term == B1


def test_follower_learns_only_values_accepted_at_the_leaders_ballot() -> None:
    """A slot is known chosen only if it is below the commit point of the leader of ballot b
    and was accepted at b: a value accepted at an older ballot may not be the chosen one."""
    c = core(2, check_quorum=False)
    c.step(envelope(1, 2, Accept(ballot=B1, entries=values(1, 1, B1), commit=Index(0))))
    drain(c)
    c.step(envelope(3, 2, Heartbeat(ballot=B2, commit=Index(1), round=1)))
    rd = drain(c)
    assert rd.committed_entries == ()
    assert bodies(rd, HeartbeatAck)[0].accepted_through == 0
    c.step(envelope(3, 2, Accept(ballot=B2, entries=values(1, 1, B1), commit=Index(1))))
    assert [e.index for e in drain(c).committed_entries] == [1]


def test_follower_does_not_learn_past_a_hole() -> None:
    """Commit points are gap-free: a missing slot stops the follower's commit point even if
    later slots are accepted and covered by the leader's commit."""
    c = core(2)
    c.step(envelope(1, 2, Accept(ballot=B1, entries=values(2, 3, B1), commit=Index(3))))
    rd = drain(c)
    assert rd.committed_entries == ()
    assert bodies(rd, Accepted)[0].accepted_through == 0
    c.step(envelope(1, 2, Accept(ballot=B1, entries=values(1, 1, B1), commit=Index(3))))
    assert [e.index for e in drain(c).committed_entries] == [1, 2, 3]


def test_a_different_value_for_a_chosen_slot_is_an_invariant_violation() -> None:
    """Paxos safety (PMS §2.2, only one value is chosen) is checked, not assumed."""
    c = core(2)
    c.step(envelope(1, 2, Accept(ballot=B1, entries=values(1, 1, B1), commit=Index(1))))
    drain(c)
    other = Entry(index=Index(1), term=B1, kind=EntryKind.NORMAL, data=b"other")
    with pytest.raises(InvariantViolation):
        c.step(envelope(1, 2, Accept(ballot=B1, entries=(other,), commit=Index(1))))


def test_non_leader_requests_raise_not_leader_with_hint() -> None:
    """Followers redirect: NotLeader carries the leader they follow."""
    from consensus.api import NotLeader

    c = core(2)
    c.step(envelope(1, 2, Heartbeat(ballot=B1, commit=Index(0), round=1)))
    drain(c)
    for call in (
        lambda: c.propose(b"x"),
        lambda: c.read_index(1, mode=ReadMode.SAFE),
        lambda: c.transfer_leadership(NodeId(3)),
    ):
        with pytest.raises(NotLeader) as info:
            call()
        assert info.value.leader_hint == 1


@pytest.mark.parametrize("check_quorum", [True, False])
def test_live_leader_refusal_is_tied_to_check_quorum_like_raft(check_quorum: bool) -> None:
    """Parity with RaftCore, which ignores (pre-)votes while ``_in_lease()`` and only with
    check_quorum (Raft thesis §6.2, §4.2.3): the refusal protects CheckQuorum's lease, so
    without check_quorum an acceptor that just heard from its leader still grants a higher
    ballot's pre-check and promises its Prepare; with it, it refuses both."""
    c = core(2, check_quorum=check_quorum)
    c.step(envelope(1, 2, Heartbeat(ballot=B1, commit=Index(0), round=1)))
    drain(c)
    c.step(envelope(3, 2, PreCheck(ballot=B2, commit=Index(0))))
    (resp,) = bodies(drain(c), PreCheckResponse)
    assert resp.granted is not check_quorum
    c.step(envelope(3, 2, Prepare(ballot=B2, from_slot=Index(1))))
    rd = drain(c)
    if check_quorum:
        assert [n.reason for n in bodies(rd, Nack)] == [NackReason.LEASE]
    else:
        assert len(bodies(rd, Promise)) == 1 and c.status().term == B2
