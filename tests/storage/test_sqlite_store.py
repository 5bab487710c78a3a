"""SQLiteLogStore: what a Ready batch persists is exactly what load returns after a restart."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from consensus.api import PersistedState, ReadState, Ready
from consensus.backends import Backend
from consensus.storage import (
    CorruptDatabase,
    CorruptRecord,
    GroupExists,
    IdentityMismatch,
    StorageCorrupt,
    StorageFailed,
    StoreNotFound,
    UnknownGroup,
)
from consensus.storage.records import row_crc
from consensus.types import (
    ConfState,
    EntryKind,
    GroupId,
    HardState,
    Index,
    Message,
    NodeId,
    Term,
)

from .helpers import CLUSTER, CONF, G1, G2, NODE, OpenStore, entry, snapshot


def tamper(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Change the file behind the store's back, as a disk or an operator might."""
    conn = sqlite3.connect(path)
    try:
        changed = conn.execute(sql, params).rowcount
        conn.commit()
    finally:
        conn.close()
    assert changed == 1, f"tamper matched {changed} rows"


def flip_byte(blob: bytes, position: int = 0) -> bytes:
    return blob[:position] + bytes([blob[position] ^ 0x01]) + blob[position + 1 :]


# --------------------------------------------------------------------------- round trips


def test_raft_log_and_hard_state_round_trip_across_reopen(open_store: OpenStore) -> None:
    """Raft Figure 2: currentTerm, votedFor and log[] are persistent state on all servers;
    after a restart the node resumes from exactly what it stored."""
    store = open_store()
    store.create_group(G1, Backend.RAFT, CONF)
    written = (
        entry(1, 1, b"", kind=EntryKind.NOOP),
        entry(2, 1, b"\x00\xff binary"),
        entry(3, 2, b"conf-change", kind=EntryKind.CONFIG),
        entry(4, 2, b"x" * 70_000),
    )
    hard = HardState(term=Term(2), vote=NodeId(3), commit=Index(3))
    store.write_batch([(G1, Ready(entries=written[:2], hard_state=hard, must_sync=True))])
    store.write_batch([(G1, Ready(entries=written[2:]))])
    store.close()

    state = open_store(create=False).load(G1)
    assert state.entries == written
    assert state.hard_state == hard
    assert state.snapshot is None


def test_truncate_from_deletes_the_conflicting_suffix_before_new_entries(
    open_store: OpenStore,
) -> None:
    """Raft §5.3: a follower deletes an existing entry that conflicts with a new one and all
    that follow it, then appends the leader's entries."""
    store = open_store()
    store.create_group(G1, "raft", CONF)
    store.write_batch([(G1, Ready(entries=tuple(entry(i, 1) for i in range(1, 11))))])

    replacement = (entry(5, 3), entry(6, 3))
    store.write_batch([(G1, Ready(truncate_from=Index(5), entries=replacement))])

    loaded = store.load(G1).entries
    assert [e.index for e in loaded] == [1, 2, 3, 4, 5, 6]
    assert loaded[4:] == replacement


def test_paxos_log_with_holes_round_trips(open_store: OpenStore) -> None:
    """Multi-Paxos acceptors accept slots out of order, so the log has holes (Paxos Made
    Simple §3); storage keeps them and returns the slots ascending."""
    store = open_store()
    store.create_group(G1, Backend.PAXOS, CONF)
    slots = (entry(9, 5, ballot=7), entry(2, 5, ballot=5), entry(5, 5, ballot=6))
    promised = HardState(term=Term(7))
    store.write_batch([(G1, Ready(entries=slots, hard_state=promised, must_sync=True))])
    store.close()

    state = open_store(create=False).load(G1)
    assert [e.index for e in state.entries] == [2, 5, 9]
    assert {e.index: e for e in state.entries} == {e.index: e for e in slots}
    assert state.hard_state == promised


def test_paxos_slot_is_overwritten_by_a_higher_accepted_ballot(open_store: OpenStore) -> None:
    """Paxos Made Simple §2.3: an acceptor that accepts a proposal in a higher ballot replaces
    what it accepted before; phase 1 must then report the higher accepted ballot. The value's
    identity (term) survives a re-proposal."""
    store = open_store()
    store.create_group(G1, "paxos", CONF)
    store.write_batch([(G1, Ready(entries=(entry(4, 3, b"v", ballot=3),)))])
    store.write_batch([(G1, Ready(entries=(entry(4, 3, b"v", ballot=8),)))])

    (slot,) = store.load(G1).entries
    assert (slot.index, slot.term, slot.accepted_ballot, slot.data) == (4, 3, 8, b"v")


def test_hard_state_upsert_keeps_the_latest(open_store: OpenStore) -> None:
    """Only the newest term/vote/commit matters; an absent hard state loads as the zero one."""
    store = open_store()
    store.create_group(G1, "raft", CONF)
    store.create_group(G2, "raft", CONF)
    for term in (1, 2, 3):
        hs = HardState(term=Term(term), vote=NodeId(term), commit=Index(term * 10))
        store.write_batch([(G1, Ready(hard_state=hs, must_sync=True))])
    assert store.load(G1).hard_state == HardState(term=Term(3), vote=NodeId(3), commit=Index(30))
    assert store.load(G2).hard_state == HardState()


def test_snapshot_round_trips_and_deletes_the_covered_log(open_store: OpenStore) -> None:
    """Raft §7: once a snapshot covers a prefix of the log, those entries are discarded."""
    store = open_store()
    store.create_group(G1, "raft", CONF)
    store.write_batch([(G1, Ready(entries=tuple(entry(i, 1) for i in range(1, 11))))])
    joint = ConfState(
        voters=(NodeId(1), NodeId(4)),
        voters_outgoing=(NodeId(1), NodeId(2)),
        learners=(NodeId(9),),
    )
    snap = snapshot(6, 1, b"state-machine-image", conf=joint)
    store.write_batch([(G1, Ready(snapshot=snap))])
    store.close()

    state = open_store(create=False).load(G1)
    assert state.snapshot == snap
    assert [e.index for e in state.entries] == [7, 8, 9, 10]


def test_a_newer_snapshot_replaces_the_older_one(open_store: OpenStore) -> None:
    store = open_store()
    store.create_group(G1, "paxos", CONF)
    store.write_batch([(G1, Ready(entries=(entry(2, 1), entry(5, 1), entry(9, 1))))])
    store.write_batch([(G1, Ready(snapshot=snapshot(3, 1, b"old")))])
    store.write_batch([(G1, Ready(snapshot=snapshot(5, 1, b"new")))])

    state = store.load(G1)
    assert state.snapshot == snapshot(5, 1, b"new")
    assert [e.index for e in state.entries] == [9]


def test_one_ready_applies_truncate_entries_snapshot_hard_state_in_order(
    open_store: OpenStore,
) -> None:
    """The documented order: truncate, then write entries, then snapshot (deleting covered
    rows, including ones written in the same Ready), then hard state."""
    store = open_store()
    store.create_group(G1, "raft", CONF)
    store.write_batch([(G1, Ready(entries=tuple(entry(i, 1) for i in range(1, 11))))])
    hard = HardState(term=Term(2), vote=NodeId(2), commit=Index(7))
    ready = Ready(
        truncate_from=Index(4),
        entries=(entry(4, 2), entry(5, 2), entry(6, 2)),
        snapshot=snapshot(4, 2),
        hard_state=hard,
    )
    store.write_batch([(G1, ready)])

    state = store.load(G1)
    assert state.snapshot == snapshot(4, 2)
    assert state.entries == (entry(5, 2), entry(6, 2))
    assert state.hard_state == hard


def test_fields_that_are_not_persistent_state_write_nothing(open_store: OpenStore) -> None:
    """Messages, committed entries and read states are for the send and apply steps; a batch
    of only those opens no transaction."""
    store = open_store()
    store.create_group(G1, "raft", CONF)
    before = store.statistics()
    ready = Ready(
        messages=(Message(group_id=G1, src=NODE, dst=NodeId(2), body=None),),
        committed_entries=(entry(1, 1),),
        read_states=(ReadState(request_id=1, index=Index(1)),),
        apply_snapshot=snapshot(1, 1),
    )
    store.write_batch([(G1, ready)])
    after = store.statistics()
    assert (after.transactions, after.fsyncs, after.batches) == (
        before.transactions,
        before.fsyncs,
        before.batches,
    )
    assert store.load(G1).entries == ()
    assert store.load(G1).snapshot is None


def test_largest_sqlite_integers_round_trip_and_larger_ones_are_refused(
    open_store: OpenStore,
) -> None:
    """Packed Paxos ballots are large integers; they must survive, and one that cannot be
    stored is refused before anything is written."""
    store = open_store()
    store.create_group(G1, "paxos", CONF)
    top = (1 << 63) - 1
    store.write_batch([(G1, Ready(entries=(entry(top, top, ballot=top),)))])
    assert store.load(G1).entries == (entry(top, top, ballot=top),)

    before = store.statistics()
    with pytest.raises(ValueError, match="accepted_ballot"):
        store.write_batch([(G1, Ready(entries=(entry(1, 1, ballot=1 << 63),)))])
    assert store.statistics().transactions == before.transactions
    store.write_batch([(G1, Ready(hard_state=HardState(term=Term(1))))])  # still writable


# --------------------------------------------------------------------------- group commit


def test_many_groups_in_one_batch_are_one_transaction_and_one_fsync(
    open_store: OpenStore,
) -> None:
    """Group commit: the host merges every group's Ready of one loop into one batch, which
    costs one SQLite transaction and one fsync of the WAL, however many groups it holds."""
    store = open_store()
    groups = [GroupId(g) for g in range(1, 51)]
    for g in groups:
        store.create_group(g, "raft", CONF)
    hard = HardState(term=Term(1), vote=NODE)

    before = store.statistics()
    store.write_batch([(g, Ready(entries=(entry(1, 1),), hard_state=hard)) for g in groups])
    after = store.statistics()
    assert after.transactions - before.transactions == 1
    assert after.fsyncs - before.fsyncs == 1
    assert after.groups_written - before.groups_written == 50
    assert after.entries_written - before.entries_written == 50

    # The same work as one batch per group pays one transaction and one fsync each.
    for g in groups:
        store.write_batch([(g, Ready(entries=(entry(2, 1),)))])
    separate = store.statistics()
    assert separate.transactions - after.transactions == 50
    assert separate.fsyncs - after.fsyncs >= 50
    assert all(len(store.load(g).entries) == 2 for g in groups)


def test_a_batch_naming_an_unknown_group_writes_nothing(open_store: OpenStore) -> None:
    """A row for a group the registry does not list would be orphaned on restart."""
    store = open_store()
    store.create_group(G1, "raft", CONF)
    with pytest.raises(UnknownGroup):
        store.write_batch([(G1, Ready(entries=(entry(1, 1),))), (G2, Ready())])
    assert store.load(G1).entries == ()
    with pytest.raises(UnknownGroup):
        store.load(G2)


def test_a_group_listed_twice_in_a_batch_is_applied_in_batch_order(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.create_group(G1, "raft", CONF)
    store.write_batch(
        [
            (G1, Ready(entries=(entry(1, 1), entry(2, 1)))),
            (G1, Ready(truncate_from=Index(2), entries=(entry(2, 2),))),
        ]
    )
    assert store.load(G1).entries == (entry(1, 1), entry(2, 2))


# --------------------------------------------------------------------------- group registry


def test_groups_are_registered_listed_and_deleted_durably(open_store: OpenStore) -> None:
    """A restarting node learns from the registry which groups, backends and bootstrap
    memberships it hosts; a deleted group leaves no rows behind."""
    store = open_store()
    paxos_conf = ConfState(voters=(NodeId(1), NodeId(5)), learners=(NodeId(7),))
    store.create_group(G2, Backend.PAXOS, paxos_conf)
    store.create_group(G1, "raft", CONF)
    with pytest.raises(GroupExists):
        store.create_group(G1, "raft", CONF)
    store.write_batch(
        [(G1, Ready(entries=(entry(1, 1),), snapshot=snapshot(0, 0), hard_state=HardState()))]
    )
    store.close()

    store = open_store(create=False)
    listed = store.list_groups()
    assert [(g.group_id, g.backend, g.conf) for g in listed] == [
        (G1, Backend.RAFT, CONF),
        (G2, Backend.PAXOS, paxos_conf),
    ]
    store.delete_group(G1)
    store.close()

    store = open_store(create=False)
    assert [g.group_id for g in store.list_groups()] == [G2]
    with pytest.raises(UnknownGroup):
        store.load(G1)
    store.create_group(G1, "raft", CONF)
    assert store.load(G1) == PersistedState()


def test_an_unknown_backend_name_is_refused(open_store: OpenStore) -> None:
    store = open_store()
    with pytest.raises(ValueError):
        store.create_group(G1, "zab", CONF)
    assert store.list_groups() == ()


# --------------------------------------------------------------------------- corruption


def _store_with_history(open_store: OpenStore) -> None:
    store = open_store()
    store.create_group(G1, "raft", CONF)
    store.create_group(G2, "paxos", CONF)
    store.write_batch(
        [
            (G1, Ready(entries=tuple(entry(i, 1) for i in range(1, 6)))),
            (G2, Ready(entries=(entry(3, 4, b"slot-three", ballot=4),))),
            (G2, Ready(snapshot=snapshot(2, 4, b"image"))),
            (G2, Ready(hard_state=HardState(term=Term(4), commit=Index(2)))),
        ]
    )
    store.close()


def test_a_flipped_byte_in_log_data_is_reported_with_its_location(
    open_store: OpenStore, db_path: Path
) -> None:
    """A corrupt record is detected on load and reported, never applied."""
    _store_with_history(open_store)
    original = entry(3, 1).data
    tamper(
        db_path, "UPDATE log SET data = ? WHERE group_id = 1 AND idx = 3", (flip_byte(original),)
    )

    store = open_store(create=False)
    with pytest.raises(CorruptRecord) as caught:
        store.load(G1)
    assert (caught.value.table, caught.value.group_id, caught.value.index) == ("log", 1, 3)
    assert "table 'log', group 1, index 3" in str(caught.value)
    with pytest.raises(CorruptRecord):
        store.load_all()  # what a node calls on start: it refuses to start
    assert store.load(G2).entries == (entry(3, 4, b"slot-three", ballot=4),)


@pytest.mark.parametrize(
    ("sql", "table", "group", "index"),
    [
        ("UPDATE log SET term = 9 WHERE group_id = 1 AND idx = 2", "log", 1, 2),
        ("UPDATE log SET accepted_ballot = 5 WHERE group_id = 2 AND idx = 3", "log", 2, 3),
        ("UPDATE log SET idx = 7 WHERE group_id = 1 AND idx = 5", "log", 1, 7),
        ("UPDATE snapshot SET data = x'00' WHERE group_id = 2", "snapshot", 2, 2),
        ("UPDATE snapshot SET conf = x'90' WHERE group_id = 2", "snapshot", 2, 2),
        ('UPDATE hard_state SET "commit" = 3 WHERE group_id = 2', "hard_state", 2, None),
    ],
    ids=["log-term", "log-ballot", "log-moved-row", "snapshot-data", "snapshot-conf", "hard"],
)
def test_any_changed_column_fails_the_checksum(
    open_store: OpenStore,
    db_path: Path,
    sql: str,
    table: str,
    group: int,
    index: int | None,
) -> None:
    """Every column, including the key, is covered: a row moved to another index is caught."""
    _store_with_history(open_store)
    tamper(db_path, sql)
    store = open_store(create=False)
    with pytest.raises(CorruptRecord) as caught:
        store.load(GroupId(group))
    assert (caught.value.table, caught.value.group_id, caught.value.index) == (table, group, index)


def test_a_corrupt_group_registry_row_refuses_the_open(
    open_store: OpenStore, db_path: Path
) -> None:
    _store_with_history(open_store)
    tamper(db_path, "UPDATE groups SET backend = 'raft' WHERE group_id = 2")
    with pytest.raises(CorruptRecord) as caught:
        open_store(create=False)
    assert (caught.value.table, caught.value.group_id) == ("groups", 2)


def test_a_log_row_below_the_snapshot_is_reported_as_out_of_order(
    open_store: OpenStore, db_path: Path
) -> None:
    """Compaction deletes covered rows in the snapshot's transaction, so a checksummed row at
    or below the snapshot index means the file was altered; ordering is verified too."""
    _store_with_history(open_store)
    key = (2, 1, 4, 4, 0)
    crc, _ = row_crc("log", key, b"stale")
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?)", (*key, b"stale", crc))
    conn.commit()
    conn.close()

    store = open_store(create=False)
    with pytest.raises(CorruptRecord, match="out of order") as caught:
        store.load(G2)
    assert (caught.value.table, caught.value.group_id, caught.value.index) == ("log", 2, 1)


def _big_store(open_store: OpenStore) -> None:
    store = open_store()
    store.create_group(G1, "raft", CONF)
    for batch in range(20):
        first = batch * 20 + 1
        entries = tuple(entry(i, 1, bytes([i % 251]) * 900) for i in range(first, first + 20))
        store.write_batch([(G1, Ready(entries=entries))])
    store.close()


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def _truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zero_a_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle : middle + page] = bytes(page)
    path.write_bytes(bytes(data))


def _smash_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"definitely-not-S"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_garbage, _truncate_half, _zero_a_page, _smash_header])
def test_a_torn_or_garbage_file_is_reported_not_crashed_on(
    open_store: OpenStore, db_path: Path, damage: object
) -> None:
    """A damaged file raises StorageCorrupt from open or load; the node refuses to start."""
    _big_store(open_store)
    assert callable(damage)
    damage(db_path)
    with pytest.raises(StorageCorrupt):
        open_store(create=False).load_all()


def test_a_sqlite_file_that_is_not_a_log_store_is_refused(
    open_store: OpenStore, db_path: Path
) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE users(id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptDatabase, match="not a shardb log store"):
        open_store()


# --------------------------------------------------------------------------- identity, locking


def test_another_clusters_or_nodes_file_is_refused(open_store: OpenStore) -> None:
    """Term and vote belong to one server (Raft Figure 2): a node must never adopt another
    node's promises by opening its data dir."""
    open_store().close()
    with pytest.raises(IdentityMismatch, match="cluster 'test-cluster' node 1"):
        open_store(cluster_id="other-cluster")
    with pytest.raises(IdentityMismatch):
        open_store(node_id=NodeId(2))
    open_store(create=False).close()


def test_a_missing_store_is_not_created_unless_asked(tmp_path: Path) -> None:
    """A mistyped data dir must not silently become an empty log (a node that forgot its vote
    could vote twice in one term, Raft §5.2)."""
    from consensus.storage import SQLiteLogStore

    with pytest.raises(StoreNotFound):
        SQLiteLogStore(tmp_path / "absent.db", cluster_id=CLUSTER, node_id=NODE)
    assert not (tmp_path / "absent.db").exists()


def test_a_second_process_cannot_open_a_store_in_use(open_store: OpenStore, db_path: Path) -> None:
    """Two processes writing one node's log would interleave two histories."""
    store = open_store()
    script = (
        "import sys\n"
        "from consensus.storage import SQLiteLogStore, StoreLocked\n"
        "from consensus.types import NodeId\n"
        "try:\n"
        f"    SQLiteLogStore(sys.argv[1], cluster_id={CLUSTER!r}, node_id=NodeId(1)).close()\n"
        "    print('opened')\n"
        "except StoreLocked:\n"
        "    print('locked')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(db_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines()[-1] == "locked", done.stderr
    store.close()
    done = subprocess.run(
        [sys.executable, "-c", script, str(db_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines()[-1] == "opened", done.stderr


# --------------------------------------------------------------------------- failure


def test_disk_full_fails_the_batch_and_the_store_then_refuses_writes(
    open_store: OpenStore,
) -> None:
    """A node whose disk is full must stop accepting writes rather than continue silently;
    the failed batch is absent (atomic) and every acknowledged one survives."""
    store = open_store(max_db_bytes=96 * 1024)
    store.create_group(G1, "raft", CONF)
    acked = 0
    with pytest.raises(StorageFailed, match="FullError"):
        for batch in range(1, 200):
            entries = tuple(entry(batch * 4 + k, 1, b"z" * 3000) for k in range(4))
            hs = HardState(term=Term(1), commit=Index(batch * 4 + 3))
            store.write_batch([(G1, Ready(entries=entries, hard_state=hs))])
            acked = batch
    assert acked > 0
    assert store.statistics().failed
    with pytest.raises(StorageFailed, match="refusing writes"):
        store.write_batch([(G1, Ready(hard_state=HardState(term=Term(2))))])
    with pytest.raises(StorageFailed):
        store.create_group(G2, "raft", CONF)
    store.close()

    state = open_store(create=False).load(G1)
    assert [e.index for e in state.entries] == list(range(4, acked * 4 + 4))
    assert state.hard_state == HardState(term=Term(1), commit=Index(acked * 4 + 3))


# --------------------------------------------------------------------------- bounded size


def test_repeated_write_and_compact_cycles_keep_the_files_bounded(
    open_store: OpenStore,
) -> None:
    """Compaction through Ready.snapshot frees the covered rows; SQLite reuses the freed
    pages and the WAL is checkpointed and truncated automatically, so disk use levels off
    although far more bytes are written than the files ever hold."""
    store = open_store()
    groups = [GroupId(g) for g in range(1, 5)]
    for g in groups:
        store.create_group(g, "raft", CONF)
    next_index = 1
    sizes: list[int] = []
    for _cycle in range(60):
        for _ in range(2):
            entries = tuple(entry(next_index + k, 1, bytes(512)) for k in range(50))
            store.write_batch([(g, Ready(entries=entries)) for g in groups])
            next_index += 50
        compact = Ready(snapshot=snapshot(next_index - 1, 1, bytes(1024)))
        store.write_batch([(g, compact) for g in groups])
        sizes.append(store.file_size_bytes())

    assert max(sizes[30:]) <= max(sizes[:30]), sizes
    assert store.statistics().bytes_written > 2 * max(sizes)
    assert all(store.load(g).entries == () for g in groups)


def test_reclaim_space_empties_the_wal_and_returns_free_pages(
    open_store: OpenStore, db_path: Path
) -> None:
    """PRAGMA wal_checkpoint(TRUNCATE) plus incremental_vacuum give space back to the OS,
    e.g. after a group moved away."""
    store = open_store()
    store.create_group(G1, "raft", CONF)
    store.create_group(G2, "raft", CONF)
    for batch in range(10):
        entries = tuple(entry(batch * 50 + k + 1, 1, bytes(1000)) for k in range(50))
        store.write_batch([(G1, Ready(entries=entries))])
    store.write_batch([(G2, Ready(entries=(entry(1, 1),)))])
    store.reclaim_space()
    full = store.file_size_bytes()
    store.delete_group(G1)
    store.reclaim_space()

    assert Path(f"{db_path}-wal").stat().st_size == 0
    assert store.file_size_bytes() < full // 5
    assert store.load(G2).entries == (entry(1, 1),)


def test_a_hard_state_batch_without_must_sync_commits_without_an_fsync(
    open_store: OpenStore,
) -> None:
    """Raft Figure 2 lists commitIndex as volatile: a commit-only hard state change carries
    ``must_sync=False`` and is committed without an fsync; the next synced batch makes it
    durable along with its own rows, and term/vote changes (``must_sync=True``) still sync."""
    store = open_store()
    store.create_group(G1, "raft", CONF)
    store.write_batch([(G1, Ready(entries=(entry(1, 1),), must_sync=True))])
    before = store.statistics()
    commit_only = HardState(term=Term(1), vote=NODE, commit=Index(1))
    store.write_batch([(G1, Ready(hard_state=commit_only))])
    unsynced = store.statistics()
    assert unsynced.transactions - before.transactions == 1
    assert unsynced.fsyncs == before.fsyncs
    assert store.load(G1).hard_state == commit_only

    new_term = HardState(term=Term(2), vote=NODE, commit=Index(1))
    store.write_batch([(G1, Ready(hard_state=new_term, must_sync=True))])
    assert store.statistics().fsyncs - unsynced.fsyncs == 1


def test_entries_are_synced_even_when_must_sync_is_not_set(open_store: OpenStore) -> None:
    """Entries, truncations and snapshots are promises to other nodes (Raft Figure 2,
    "before responding to RPCs"): the store fsyncs them whatever the flag says."""
    store = open_store()
    store.create_group(G1, "raft", CONF)
    before = store.statistics()
    store.write_batch([(G1, Ready(entries=(entry(1, 1),), must_sync=False))])
    assert store.statistics().fsyncs - before.fsyncs == 1


def test_a_store_opened_without_fsync_never_fsyncs_and_still_round_trips(
    open_store: OpenStore,
) -> None:
    """``fsync=False`` (``--unsafe-no-fsync``, for measuring what durability costs): even a
    batch that must be synced commits without an fsync, and the data reads back."""
    store = open_store(fsync=False)
    store.create_group(G1, Backend.RAFT, CONF)
    before = store.statistics().fsyncs
    for i in range(1, 6):
        ready = Ready(entries=(entry(i, 1),), hard_state=HardState(term=Term(1)), must_sync=True)
        store.write_batch([(G1, ready)])
    assert store.statistics().fsyncs == before
    assert [e.index for e in store.load(G1).entries] == [1, 2, 3, 4, 5]


def test_a_durable_store_fsyncs_every_synced_batch(open_store: OpenStore) -> None:
    store = open_store()
    store.create_group(G1, Backend.RAFT, CONF)
    before = store.statistics().fsyncs
    for i in range(1, 6):
        ready = Ready(entries=(entry(i, 1),), hard_state=HardState(term=Term(1)), must_sync=True)
        store.write_batch([(G1, ready)])
    assert store.statistics().fsyncs >= before + 5
