"""Queries, splits, snapshots and replica determinism.

Reference: ARCHITECTURE.md "State machine" and "Placement driver" (splits are metadata only);
Raft §7 (snapshots carry the state at an index; restore replaces it).
"""

from __future__ import annotations

import random
from pathlib import Path

import apsw

from consensus.types import ConfState, GroupId, Index, Snapshot, SnapshotMeta, Term
from shardb.statemachine import (
    SEED_INDEX,
    decode_result,
    descriptor_to_wire,
    encode_ddl,
    encode_write,
)

from .helpers import apply_one, descriptor, entries, insert, open_sm, rows, select, split

G1 = descriptor(1, None, 100)
G2 = descriptor(2, 100, None)


def test_query_preserves_sqlite_types(tmp_path: Path) -> None:
    """int, float, str, bytes and NULL come back as themselves, with column names."""
    sm = open_sm(tmp_path / "sm.db", G1)
    sql = "INSERT INTO t(id, name, score, data) VALUES (?, ?, ?, ?)"
    apply_one(sm, 1, encode_write("t", sql, (1, "a", 2.5, b"\x00\xff"), 1))
    apply_one(sm, 1, encode_write("t", sql, (2, "b", None, None), 1))
    result = select(sm, 1, "SELECT id, name, score, data FROM t WHERE id < ? ORDER BY id", (100,))
    assert result == {
        "ok": True,
        "columns": ["id", "name", "score", "data"],
        "rows": [[1, "a", 2.5, b"\x00\xff"], [2, "b", None, None]],
    }
    empty = select(sm, 1, "SELECT id AS k FROM t WHERE id > 50")
    assert empty == {"ok": True, "columns": ["k"], "rows": []}


def test_query_refuses_writes(tmp_path: Path) -> None:
    """query never changes state: a write, DDL, PRAGMA or second statement is refused."""
    sm = open_sm(tmp_path / "sm.db", G1)
    apply_one(sm, 1, insert(1))
    for sql in (
        "DELETE FROM t",
        "UPDATE t SET name = 'q'",
        "DROP TABLE t",
        "SELECT 1; DELETE FROM t",
        "PRAGMA journal_mode = DELETE",
        "SELECT * FROM shardb_applied",
    ):
        result = select(sm, 1, sql)
        assert result["ok"] is False and result["code"] == "refused", (sql, result)
    assert rows(sm, 1) == [[1, "x", None, None]]


def test_query_with_stale_epoch_is_refused(tmp_path: Path) -> None:
    """A read routed before a split could see the sibling's rows: StaleEpoch."""
    sm = open_sm(tmp_path / "sm.db", descriptor(1, None, None))
    apply_one(sm, 1, split(descriptor(1, None, None), 50, 7))
    assert select(sm, 1, epoch=1)["code"] == "stale_epoch"
    assert select(sm, 1, epoch=2)["ok"]


def test_split_then_each_group_sees_exactly_its_rows(tmp_path: Path) -> None:
    """A split moves no data: the right-hand group, registered by the split itself, starts
    from the parent's rows at applied SEED_INDEX; each side then writes only its own keys."""
    sm = open_sm(tmp_path / "sm.db", descriptor(1, None, None))
    for key in (10, 40, 50, 60, 90):
        apply_one(sm, 1, insert(key))
    result = apply_one(sm, 1, split(descriptor(1, None, None), 50, 7))
    assert result["descriptor"]["end_key"] == 50 and result["descriptor"]["epoch"] == 2
    assert result["right"] == descriptor_to_wire(descriptor(7, 50, None, epoch=2))
    assert sm.applied_index(GroupId(7)) == SEED_INDEX
    assert [r[0] for r in rows(sm, 1)] == [10, 40]
    assert [r[0] for r in rows(sm, 7)] == [50, 60, 90]
    assert apply_one(sm, 1, insert(55, epoch=2))["code"] == "out_of_range"
    assert apply_one(sm, 7, insert(55, epoch=2))["ok"]
    assert apply_one(sm, 7, insert(45, epoch=2))["code"] == "out_of_range"
    assert apply_one(sm, 1, insert(5, epoch=1))["code"] == "stale_epoch"


def test_split_key_outside_range_is_refused(tmp_path: Path) -> None:
    sm = open_sm(tmp_path / "sm.db", G1)
    assert apply_one(sm, 1, split(G1, 100, 7))["code"] == "bad_split_key"
    assert apply_one(sm, 1, split(G1, "a", 7))["code"] == "bad_split_key"
    assert sm.descriptor(GroupId(1)).end_key == 100
    assert sm.group_ids() == (GroupId(1),)


def _snap(sm_data: bytes, index: int) -> Snapshot:
    meta = SnapshotMeta(index=Index(index), term=Term(1), conf=ConfState())
    return Snapshot(meta=meta, data=sm_data)


def test_snapshot_restore_leaves_other_groups_rows_alone(tmp_path: Path) -> None:
    """restore replaces exactly the group's range; the sibling's rows are untouched."""
    source = open_sm(tmp_path / "a.db", G1)
    apply_one(source, 1, encode_ddl("t", "CREATE INDEX t_name ON t(name)"))
    for key in (1, 2, 3):
        apply_one(source, 1, insert(key, f"v{key}"))
    data = source.snapshot(GroupId(1))
    target = open_sm(tmp_path / "b.db", G1, G2)
    apply_one(target, 1, insert(50, "stale"))
    apply_one(target, 2, insert(150, "sibling"))
    target.restore(GroupId(1), _snap(data, SEED_INDEX + 4))
    assert rows(target, 1) == rows(source, 1)
    assert rows(target, 2) == [[150, "sibling", None, None]]
    assert target.applied_index(GroupId(1)) == SEED_INDEX + 4
    assert target.snapshot(GroupId(1)) == data


def test_restore_on_a_fresh_node_creates_table_and_indexes(tmp_path: Path) -> None:
    source = open_sm(tmp_path / "a.db", descriptor(1, None, None))
    apply_one(source, 1, encode_ddl("t", "CREATE INDEX t_name ON t(name)"))
    apply_one(source, 1, insert(5))
    target = open_sm(tmp_path / "b.db")
    target.restore(GroupId(1), _snap(source.snapshot(GroupId(1)), SEED_INDEX + 2))
    assert rows(target, 1) == [[5, "x", None, None]]
    assert apply_one(target, 1, insert(6))["ok"]
    target.close()
    conn = apsw.Connection(str(tmp_path / "b.db"))
    assert conn.execute("SELECT name FROM sqlite_master WHERE type='index'").fetchall() == [
        ("t_name",)
    ]


def _dump(path: Path) -> list[tuple[object, ...]]:
    conn = apsw.Connection(str(path))
    try:
        out = [tuple(r) for r in conn.execute("SELECT * FROM t ORDER BY id")]
        out += [tuple(r) for r in conn.execute("SELECT * FROM shardb_applied ORDER BY group_id")]
        out += [tuple(r) for r in conn.execute("SELECT * FROM shardb_groups ORDER BY group_id")]
        return out
    finally:
        conn.close()


def test_three_replicas_end_identical(tmp_path: Path) -> None:
    """The same command stream, failures included, applied in different batchings on three
    replicas, gives identical tables, results and snapshots.

    Reference: Raft §5 (State Machine Safety: same log, same state)."""
    rng = random.Random(7)
    commands: list[bytes] = []
    for _ in range(300):
        key = rng.randrange(-20, 140)
        match rng.randrange(5):
            case 0 | 1:
                commands.append(insert(key, f"n{rng.randrange(100)}"))
            case 2:
                sql = "UPDATE t SET score = coalesce(score, 0) + ? WHERE id >= ? AND id < ?"
                commands.append(encode_write("t", sql, (1.5, key, key + 10), 1))
            case 3:
                commands.append(encode_write("t", "DELETE FROM t WHERE id = ?", (key,), 1))
            case _:
                sql = "UPDATE t SET id = ? WHERE id = ?"
                commands.append(encode_write("t", sql, (key, rng.randrange(0, 100)), 1))
    results = []
    snapshots = []
    for replica in range(3):
        sm = open_sm(tmp_path / f"r{replica}.db", G1)
        out: list[bytes | None] = []
        index = 1
        while index <= len(commands):
            size = rng.randrange(1, 40)
            batch = commands[index - 1 : index - 1 + size]
            out.extend(sm.apply(GroupId(1), entries(SEED_INDEX + index, *batch)))
            index += size
        results.append(out)
        snapshots.append(sm.snapshot(GroupId(1)))
        sm.close()
    assert results[0] == results[1] == results[2]
    decoded = [decode_result(r) for r in results[0] if r is not None]
    assert {d.get("code") for d in decoded} >= {None, "constraint", "out_of_range"}
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert _dump(tmp_path / "r0.db") == _dump(tmp_path / "r1.db") == _dump(tmp_path / "r2.db")
