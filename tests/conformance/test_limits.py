"""Limits on everything (TigerStyle): entry size, uncommitted bytes, message and snapshot
chunk sizes, all from ``CoreConfig`` and identical for both backends."""

from __future__ import annotations

import pytest

from consensus.api import ProposalDropped
from consensus.types import Entry, Index, Term

from .harness import CheckedCluster

OVERHEAD = Entry(index=Index(0), term=Term(0)).size_bytes()


def test_entry_over_max_entry_bytes_is_dropped(backend: str) -> None:
    """A proposal larger than max_entry_bytes raises ProposalDropped and leaves the log
    untouched; one exactly at the limit is accepted."""
    c = CheckedCluster(3, backend=backend, max_entry_bytes=100)
    c.elect(1)
    c.settle()
    last = c.core(1).status().last_index
    with pytest.raises(ProposalDropped):
        c.core(1).propose(b"x" * (100 - OVERHEAD + 1))
    assert c.core(1).status().last_index == last
    fits = c.propose(1, b"y" * (100 - OVERHEAD))
    c.settle()
    assert c.proposal_succeeded(fits) is True


def test_proposals_past_max_uncommitted_bytes_are_dropped(backend: str) -> None:
    """While nothing commits, the leader accepts proposals only up to max_uncommitted_bytes,
    then raises ProposalDropped; once the backlog commits it accepts again."""
    c = CheckedCluster(3, backend=backend, max_uncommitted_bytes=1000)
    c.elect(1)
    c.settle()
    for peer in (2, 3):
        c.drop(1, peer)
    entry_bytes = 100
    accepted = 0
    with pytest.raises(ProposalDropped):
        for i in range(100):
            c.core(1).propose(b"%03d" % i + b"." * (entry_bytes - OVERHEAD - 3))
            accepted += 1
    assert accepted * entry_bytes <= 1000
    assert accepted >= 1000 // entry_bytes - 1
    c.heal()
    c.settle()
    assert len(c.applied(2)) == accepted
    c.propose(1, b"accepted-again")


def test_replication_messages_respect_max_msg_bytes(backend: str) -> None:
    """Catching up a lagging follower sends several messages, each carrying at most
    max_msg_bytes of entries (CheckedCluster checks every message); batching still puts more
    than one entry in a message when they fit."""
    c = CheckedCluster(3, backend=backend, max_msg_bytes=250)
    c.keep_readies = True
    c.elect(1)
    c.isolate(3)
    for i in range(20):
        c.propose(1, b"%02d" % i + b"." * 48)  # 74 bytes each: three fit in 250
    c.settle()
    c.readies_seen.clear()
    c.heal()
    c.settle(5)
    assert c.applied(3) == c.applied(1)
    carried = [
        getattr(m.body, "entries", None)
        for nid, rd in c.readies_seen
        if nid == 1
        for m in rd.messages
        if m.dst == 3
    ]
    batches = [len(entries) for entries in carried if isinstance(entries, tuple) and entries]
    assert len(batches) >= 20 * 74 // 250
    assert max(batches) > 1


def test_single_entry_larger_than_max_msg_bytes_still_replicates(backend: str) -> None:
    """An entry larger than max_msg_bytes (but within max_entry_bytes) travels alone in one
    message, as in etcd, instead of blocking replication forever."""
    c = CheckedCluster(3, backend=backend, max_msg_bytes=100)
    c.elect(1)
    c.settle()
    big = c.propose(1, b"B" * 500)
    small = c.propose(1, b"small")
    c.settle()
    assert c.proposal_succeeded(big) is True and c.proposal_succeeded(small) is True
    assert c.applied(2)[-2:] == [b"B" * 500, b"small"]
