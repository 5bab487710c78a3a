"""A new leader's recovery (Paxos Made Simple §2.2-§3): re-propose the highest-ballot value
per slot, fill holes with no-ops, keep each value's identity."""

from __future__ import annotations

from consensus.api import Role
from consensus.paxos import make_ballot
from consensus.paxos.messages import Accept, Prepare, Promise
from consensus.types import Entry, EntryKind, Index, NodeId

from .harness import bodies, cluster, core, drain, envelope


def test_new_leader_reproposes_highest_ballot_value_and_fills_holes() -> None:
    """PMS §2.3/§3: per slot the value with the highest accepted ballot among the promises
    wins; a slot nobody accepted gets a no-op; identities (term) are kept, accepted_ballot
    becomes the new ballot."""
    c = core(3, voters=(1, 2, 3, 4, 5), pre_vote=False)  # quorum: self + 1 + 2
    c.campaign()
    rd = drain(c)
    (prepare,) = bodies(rd, Prepare, dst=1)
    b = prepare.ballot
    old1, old2 = make_ballot(1, NodeId(1)), make_ballot(2, NodeId(2))
    stale = Entry(index=Index(1), term=old1, data=b"stale", accepted_ballot=old1)
    fresh = Entry(index=Index(1), term=old2, data=b"fresh", accepted_ballot=old2)
    third = Entry(index=Index(3), term=old1, data=b"third", accepted_ballot=old1)
    c.step(
        envelope(
            1,
            3,
            Promise(
                ballot=b,
                from_slot=Index(1),
                entries=(stale, third),
                next_slot=Index(0),
                commit=Index(0),
            ),
        )
    )
    c.step(
        envelope(
            2,
            3,
            Promise(
                ballot=b, from_slot=Index(1), entries=(fresh,), next_slot=Index(0), commit=Index(0)
            ),
        )
    )
    assert c.status().role is Role.LEADER
    rd = drain(c)
    got = {e.index: e for e in rd.entries}
    assert (got[1].data, got[1].term, got[1].accepted_ballot) == (b"fresh", old2, b)
    assert (got[2].kind, got[2].term, got[2].accepted_ballot) == (EntryKind.NOOP, b, b)
    assert (got[3].data, got[3].term, got[3].accepted_ballot) == (b"third", old1, b)
    accepts = bodies(rd, Accept, dst=1)
    assert [e.index for a in accepts for e in a.entries] == [1, 2, 3]


def test_value_accepted_by_a_minority_is_recovered_with_its_identity() -> None:
    """Brief item 7 end to end: the leader dies after a minority accepted its value; the next
    leader recovers it through phase 1 and gets it chosen with the original ``term``, so the
    client holding Proposed(index, term) correctly learns its proposal succeeded. The stored
    entry carries both ballots."""
    # Electing a chosen node right after a crash needs no lease wait: no pre-check / lease.
    c = cluster(5, seed=2, pre_vote=False, check_quorum=False)
    c.elect(1)
    b1 = c.core(1).status().term
    for dst in (3, 4, 5):
        c.drop(1, dst)
    proposed = c.propose(1, b"minority")
    c.deliver_all()
    assert c.core(1).status().commit == 0  # 2 of 5 accepted: not chosen
    c.crash(1)
    c.heal()
    c.elect(2)
    b2 = c.core(2).status().term
    c.run(3)
    for n in (2, 3, 4, 5):
        entry = c.nodes[NodeId(n)].applied_entries[proposed.index - 1]
        assert (entry.index, entry.term, entry.data) == (proposed.index, proposed.term, b"minority")
        stored = c.nodes[NodeId(n)].storage.entries[proposed.index]
        assert (stored.term, stored.accepted_ballot) == (b1, b2)
    assert proposed.term == b1


def test_a_chosen_value_survives_a_leader_that_never_learned_it() -> None:
    """PMS §2.2 (P2c): a value accepted by a majority is chosen even if its proposer dies
    before counting; any later leader's promise quorum intersects that majority."""
    c = cluster(5, seed=4, pre_vote=False, check_quorum=False)
    c.elect(1)
    c.drop(1, 4)
    c.drop(1, 5)
    for src in (2, 3):
        c.drop(src, 1)  # the leader never hears the Accepted
    proposed = c.propose(1, b"chosen")
    c.deliver_all()
    assert c.core(1).status().commit == 0
    c.crash(1)
    c.heal()
    c.elect(4)  # 4 never saw the value
    c.run(3)
    entry = c.nodes[NodeId(4)].applied_entries[proposed.index - 1]
    assert (entry.term, entry.data) == (proposed.term, b"chosen")


def test_only_a_quorum_chooses() -> None:
    """PMS §2.2: a value is chosen only when a majority accepted it."""
    c = cluster(3)
    c.elect(1)
    c.drop(1, 2)
    c.drop(1, 3)
    c.propose(1, b"x")
    c.run(3)
    assert c.core(1).status().commit == 0 and c.applied(1) == []
    c.heal()
    c.run(3)
    assert c.applied(1) == [b"x"]


def test_commit_stream_is_gap_free_when_slots_are_chosen_out_of_order() -> None:
    """Slot 2 chosen before slot 1: nothing is applied until slot 1 is chosen too, then both
    in order (Ready.committed_entries is gap-free)."""
    c = cluster(3)
    c.elect(1)
    c.propose(1, b"one")
    lost = c.take_messages()
    assert all(isinstance(m.body, Accept) for m in lost)
    c.propose(1, b"two")
    c.deliver_all()
    assert c.core(1).status().commit == 0
    assert c.applied(1) == []
    c.run(4)  # heartbeat acks show no progress at slot 1: the leader resends it
    for n in (1, 2, 3):
        assert c.applied(n) == [b"one", b"two"]
        assert [e.index for e in c.nodes[NodeId(n)].applied_entries] == [1, 2]


def test_new_leader_pages_through_a_large_promise() -> None:
    """A promise larger than max_msg_bytes arrives in pages; the new leader asks for each
    next page with the same ballot and recovers every value, identities intact."""
    c = cluster(3, pre_vote=False, check_quorum=False, max_msg_bytes=120)
    c.elect(1)
    c.drop(1, 3)
    c.drop(2, 1)  # 2 accepts everything, the leader never learns it
    proposed = [c.propose(1, b"v%02d" % i + b"." * 40) for i in range(8)]
    c.deliver_all()
    assert c.core(1).status().commit == 0
    c.crash(1)
    c.heal()
    c.take_messages()
    c.core(3).campaign()
    c.process(3)
    pages = 0
    while c.network:
        body = c.network[0].body
        if isinstance(body, Promise):
            pages += 1
            assert sum(e.size_bytes() for e in body.entries) <= 120
        c.deliver_one()
    assert pages >= 4
    assert c.leader() == 3
    c.run(3)
    applied = c.nodes[NodeId(3)].applied_entries
    assert [(e.index, e.term) for e in applied] == [(p.index, p.term) for p in proposed]
