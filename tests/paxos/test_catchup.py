"""Catch-up of lagging acceptors (chosen-value transfer and snapshots), compaction, and
restart from persisted state."""

from __future__ import annotations

import pytest

from consensus.api import PersistedState, Role, UsageError
from consensus.paxos import make_ballot
from consensus.paxos.messages import InstallSnapshot, Learn, Nack, Prepare
from consensus.types import Index, NodeId

from .harness import bodies, cluster, core, drain, envelope


def _deliver_recording(c, kinds):  # type: ignore[no-untyped-def]
    """Deliver everything, returning the bodies of the given kinds that were delivered."""
    seen = []
    while True:
        c.process_all()
        if not c.network:
            return seen
        message = c.network[0]
        if isinstance(message.body, kinds) and (message.src, message.dst) not in c.blocked:
            seen.append(message.body)
        c.deliver_one()


def _run_recording(c, ticks, kinds):  # type: ignore[no-untyped-def]
    seen = []
    for _ in range(ticks):
        c.tick_all()
        seen += _deliver_recording(c, kinds)
    return seen


def test_lagging_follower_learns_chosen_values_in_bounded_messages() -> None:
    """Catch-up by chosen-value transfer: a follower that missed committed slots receives
    them as Learn messages, each within max_msg_bytes, and applies them in order."""
    c = cluster(3, max_msg_bytes=200)
    c.elect(1)
    c.isolate(3)
    for i in range(20):
        c.propose(1, b"%02d" % i + b"." * 48)
        c.deliver_all()
    c.run(2)
    assert len(c.applied(1)) == 20 and c.applied(3) == []
    c.heal()
    learned = _run_recording(c, 10, Learn)
    assert learned, "catch-up should use Learn for already-chosen slots"
    for body in learned:
        assert sum(e.size_bytes() for e in body.entries) <= 200
        assert all(e.index <= body.commit for e in body.entries)
    assert c.applied(3) == c.applied(1)


def test_compacted_values_are_sent_as_a_chunked_snapshot() -> None:
    """A follower needing compacted slots gets the snapshot in chunks of at most
    max_snapshot_chunk_bytes, persists it (Ready.snapshot) and restores from it
    (Ready.apply_snapshot), then continues with later slots."""
    c = cluster(3, max_snapshot_chunk_bytes=16)
    c.elect(1)
    c.isolate(3)
    for i in range(10):
        c.propose(1, b"cmd-%d" % i)
    c.deliver_all()
    c.run(2)
    c.compact(1)
    c.compact(2)
    assert c.core(1).status().first_index == 11
    c.heal()
    chunks = _run_recording(c, 10, InstallSnapshot)
    assert len(chunks) > 2
    assert all(len(chunk.data) <= 16 for chunk in chunks)
    node3 = c.nodes[NodeId(3)]
    assert node3.storage.snapshot is not None and node3.storage.snapshot.meta.index == 10
    assert c.applied(3) == c.applied(1)
    c.propose(1, b"after")
    c.deliver_all()
    c.run(2)
    assert c.applied(3)[-1] == b"after"
    c.check_consistent()


def test_compaction_drops_slots_and_reports_the_snapshot() -> None:
    """compact(index, data): keep Snapshot(meta(index, term, conf), data), drop slots at or
    below index, report it in the next Ready; compacting beyond applied is misuse."""
    c = cluster(3)
    c.elect(1)
    for i in range(4):
        c.propose(1, b"%d" % i)
    c.deliver_all()
    c.run(2)
    leader = c.core(1)
    with pytest.raises(UsageError):
        leader.compact(Index(99), b"")
    leader.compact(Index(3), b"image")
    rd = leader.ready()
    leader.advance(rd)
    assert rd.snapshot is not None
    assert rd.snapshot.meta.index == 3 and rd.snapshot.data == b"image"
    assert rd.snapshot.meta.term == make_ballot(1, NodeId(1))
    assert rd.snapshot.meta.conf.voters == (1, 2, 3)
    st = leader.status()
    assert (st.first_index, st.last_index) == (4, 4)
    with pytest.raises(UsageError):
        leader.compact(Index(2), b"")


def test_restart_resumes_exactly_from_persisted_state() -> None:
    """Every node crashes; rebuilt from PersistedState they keep promises, commit points and
    values, re-apply from the snapshot, elect a leader with a higher ballot and go on."""
    c = cluster(3, seed=5)
    c.elect(1)
    for i in range(6):
        c.propose(1, b"p%d" % i)
    c.deliver_all()
    c.run(2)
    c.compact(2, 3)
    before = {n: c.core(n).status() for n in (1, 2, 3)}
    for n in (1, 2, 3):
        c.crash(n)
        c.restart(n)
    c.process_all()
    for n in (1, 2, 3):
        st = c.core(n).status()
        assert (st.term, st.commit) == (before[n].term, before[n].commit)
        assert st.role is Role.FOLLOWER
        assert c.applied(n) == [b"p%d" % i for i in range(6)]
    c.run(40)
    leader = c.leader()
    assert leader is not None
    assert c.core(leader).status().term > before[1].term
    c.propose(leader, b"later")
    c.deliver_all()
    c.run(2)
    for n in (1, 2, 3):
        assert c.applied(n)[-1] == b"later"
    c.check_consistent()


def test_promise_survives_a_restart() -> None:
    """PMS §2.3: the promise is stable storage; after a restart the acceptor still refuses
    lower ballots."""
    c = core(2, check_quorum=False)
    high = make_ballot(3, NodeId(3))
    c.step(envelope(3, 2, Prepare(ballot=high, from_slot=Index(1))))
    rd = drain(c)
    assert rd.hard_state is not None
    again = core(2, check_quorum=False, persisted=PersistedState(hard_state=rd.hard_state))
    again.step(envelope(1, 2, Prepare(ballot=make_ballot(2, NodeId(1)), from_slot=Index(1))))
    (nack,) = bodies(drain(again))
    assert isinstance(nack, Nack) and nack.promised == high
