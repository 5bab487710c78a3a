"""Compaction and snapshot transfer (Raft §7; Paxos catch-up "by snapshot", PML §5.5)."""

from __future__ import annotations

from support.cluster import MemStorage

from consensus.api import ChangeKind
from consensus.types import NodeId

from .harness import CheckedCluster, change, commit_change


def _compacted_cluster(backend: str) -> CheckedCluster:
    c = CheckedCluster(3, backend=backend, max_snapshot_chunk_bytes=32)
    c.keep_readies = True
    c.elect(1)
    for i in range(8):
        c.propose(1, b"before-%d" % i)
    c.settle()
    return c


def _snapshot_readies(c: CheckedCluster, node_id: int) -> list[int]:
    """Indexes of the Readys of ``node_id`` that both persist and apply a snapshot."""
    return [
        i
        for i, (nid, rd) in enumerate(c.readies_seen)
        if nid == node_id
        and rd.snapshot is not None
        and rd.apply_snapshot is not None
        and rd.snapshot.meta == rd.apply_snapshot.meta
    ]


def test_compaction_on_every_node_moves_first_index(backend: str) -> None:
    """Raft §7: a node may compact everything it has applied; the log then starts after the
    snapshot and the snapshot is handed to storage (Ready.snapshot)."""
    c = _compacted_cluster(backend)
    commit = c.commit_index(1)
    for node_id in (1, 2, 3):
        snap = c.compact(node_id)
        assert snap is not None and snap.meta.index == commit
        assert c.core(node_id).status().first_index == commit + 1


def _wipe_and_restart(c: CheckedCluster, node_id: int) -> None:
    c.crash(node_id)
    c.nodes[NodeId(node_id)].storage = MemStorage()  # the disk was replaced
    c.restart(node_id)


def test_follower_restarted_with_an_empty_disk_receives_the_snapshot(backend: str) -> None:
    """Raft §7: once the leader compacted the entries a follower lacks, it sends its
    snapshot; the follower persists it (Ready.snapshot), restores from it
    (Ready.apply_snapshot), then applies the same later entries as everyone else. Here the
    follower lost its disk and rejoins under a new leader, whose view of it starts afresh
    (Raft: probing from its last index; Paxos: from its commit point)."""
    c = _compacted_cluster(backend)
    for node_id in (1, 2, 3):
        c.compact(node_id)
    _wipe_and_restart(c, 3)
    c.readies_seen.clear()
    c.crash(1)
    leader = c.wait_for_leader()
    c.restart(1)
    c.settle(5)
    assert _snapshot_readies(c, 3), "node 3 never received and restored the snapshot"
    for i in range(3):
        c.propose(leader, b"after-%d" % i)
    c.settle()
    assert c.applied(3) == c.applied(1) == c.applied(2)
    assert c.applied(3)[-3:] == [b"after-0", b"after-1", b"after-2"]


def test_a_follower_that_lost_its_disk_rejoins_as_a_new_member(backend: str) -> None:
    """Raft Figure 2 and PMS §2.3 assume a node never forgets what it persisted: a node that
    lost its disk may have forgotten votes, promises and acceptances that others counted on,
    so quietly re-replicating it in place would hide a broken assumption (and, in the
    meantime, let it vote twice in one term or accept below a forgotten promise). The
    supported recovery (thesis §4.2, etcd's runbook): keep it down, remove it, then add it
    back with an empty disk as a learner, let it catch up (here by snapshot, §7) and promote
    it. See docs/raft-vs-paxos.md, "Limitations"."""
    c = _compacted_cluster(backend)
    for node_id in (1, 2, 3):
        c.compact(node_id)
    c.crash(3)  # its disk is gone: it stays down until it is no longer a member
    commit_change(c, 1, change((ChangeKind.REMOVE, 3)))
    c.add_node(3)  # empty disk and empty bootstrap configuration: a brand-new member
    c.readies_seen.clear()
    commit_change(c, 1, change((ChangeKind.ADD_LEARNER, 3)))
    c.settle(5)
    assert _snapshot_readies(c, 3), "the new member was not caught up by snapshot"
    assert c.applied(3) == c.applied(1)
    commit_change(c, 1, change((ChangeKind.ADD_VOTER, 3)))
    c.propose(1, b"after-rejoin")
    c.settle()
    assert c.applied(3) == c.applied(1) == c.applied(2)
    assert c.applied(3)[-1] == b"after-rejoin"
    assert c.core(3).status().conf.voters == (1, 2, 3)


def test_far_behind_follower_receives_the_snapshot_and_then_entries(backend: str) -> None:
    """A follower cut off while the others commit and compact catches up through the
    snapshot plus the entries after it, and ends up with the identical state machine."""
    c = _compacted_cluster(backend)
    c.isolate(3)
    for i in range(6):
        c.propose(1, b"missed-%d" % i)
    c.settle()
    c.compact(1)
    c.compact(2)
    for i in range(2):
        c.propose(1, b"tail-%d" % i)  # entries above the snapshot too
    c.deliver_all()
    c.readies_seen.clear()
    c.heal()
    c.settle(8)
    assert _snapshot_readies(c, 3)
    assert c.applied(3) == c.applied(1)
    assert c.nodes[NodeId(3)].state == c.nodes[NodeId(1)].state
    c.propose(1, b"later")
    c.settle()
    assert c.applied(3)[-1] == b"later"


def test_snapshot_travels_in_chunks_within_the_limit(backend: str) -> None:
    """Snapshots move in chunks of at most max_snapshot_chunk_bytes (CheckedCluster checks
    the bound on every message); a snapshot larger than one chunk needs several."""
    c = _compacted_cluster(backend)
    c.isolate(3)
    for i in range(6):
        c.propose(1, b"missed-%d" % i)
    c.settle()
    snap = c.compact(1)
    assert snap is not None and len(snap.data) > 3 * 32
    c.kinds_delivered.clear()
    c.heal()
    c.settle(8)
    chunks = [
        m
        for nid, rd in c.readies_seen
        if nid == 1
        for m in rd.messages
        if m.dst == 3 and getattr(m.body, "meta", None) == snap.meta
    ]
    assert len(chunks) >= 4
    assert c.applied(3) == c.applied(1)
