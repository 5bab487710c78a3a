"""Apply: exactly once, deterministic errors, range confinement, epochs, DDL.

Reference: ARCHITECTURE.md "State machine"; Raft §5.3 / thesis §3.5 (a state machine applies
each committed entry once, in log order, and the same way on every server).
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from consensus.runtime.statemachine import StateMachineError
from consensus.types import Entry, EntryKind, GroupId, Index, Term
from shardb.statemachine import (
    ResultCode,
    TableRefused,
    decode_result,
    encode_ddl,
    encode_write,
)

from .helpers import FIRST, apply_one, descriptor, entries, insert, open_sm, rows, split

SEED = FIRST - 1

G1 = descriptor(1, None, 100)
G2 = descriptor(2, 100, None)


def test_apply_returns_rowcount_and_deterministic_lastrowid(tmp_path: Path) -> None:
    """A write's result carries its rowcount; lastrowid is the given integer key."""
    sm = open_sm(tmp_path / "sm.db", G1)
    result = apply_one(sm, 1, insert(7))
    assert result == {"ok": True, "rowcount": 1, "lastrowid": 7}
    update = apply_one(sm, 1, encode_write("t", "UPDATE t SET name = 'y' WHERE id < ?", (50,), 1))
    assert update == {"ok": True, "rowcount": 1}


def test_entries_at_or_below_applied_are_skipped(tmp_path: Path) -> None:
    """Re-delivered entries (after a restart) return None and change nothing.

    Reference: Raft thesis §3.5 (lastApplied); apply is idempotent by index."""
    path = tmp_path / "sm.db"
    sm = open_sm(path, G1)
    batch = entries(FIRST, insert(1), insert(2), insert(3))
    assert all(r is not None for r in sm.apply(GroupId(1), batch))
    sm.close()
    sm = open_sm(path, G1)
    assert sm.applied_index(GroupId(1)) == SEED + 3
    again = sm.apply(GroupId(1), [*batch, *entries(FIRST + 3, insert(4))])
    assert again[:3] == (None, None, None)
    assert again[3] is not None and decode_result(again[3])["ok"]
    assert [r[0] for r in rows(sm, 1)] == [1, 2, 3, 4]


def test_gap_in_entry_stream_is_a_contract_violation(tmp_path: Path) -> None:
    """A gap means the runtime lost an entry: raise, apply nothing."""
    sm = open_sm(tmp_path / "sm.db", G1)
    with pytest.raises(StateMachineError):
        sm.apply(GroupId(1), entries(FIRST + 1, insert(1)))
    assert sm.applied_index(GroupId(1)) == SEED


def test_noop_entries_advance_applied(tmp_path: Path) -> None:
    """NOOP/CONFIG entries count as applied and return None."""
    sm = open_sm(tmp_path / "sm.db", G1)
    noop = Entry(index=Index(FIRST), term=Term(1), kind=EntryKind.NOOP)
    assert sm.apply(GroupId(1), [noop]) == (None,)
    assert sm.applied_index(GroupId(1)) == FIRST


def test_constraint_violation_is_returned_and_counted_as_applied(tmp_path: Path) -> None:
    """A UNIQUE / NOT NULL failure gives SQLite's message verbatim, rolls back only that
    command, and the entry still counts as applied."""
    sm = open_sm(tmp_path / "sm.db", G1)
    results = sm.apply(
        GroupId(1),
        entries(
            FIRST,
            insert(1),
            encode_write("t", "INSERT INTO t(id, name) VALUES (2, 'a'), (1, 'dup')", (), 1),
            encode_write("t", "INSERT INTO t(id, name) VALUES (3, NULL)", (), 1),
            insert(4),
        ),
    )
    decoded = [decode_result(r) for r in results if r is not None]
    assert decoded[1] == {
        "ok": False,
        "code": "constraint",
        "error": "UNIQUE constraint failed: t.id",
    }
    assert decoded[2]["error"] == "NOT NULL constraint failed: t.name"
    assert decoded[3]["ok"]
    assert sm.applied_index(GroupId(1)) == SEED + 4
    assert [r[0] for r in rows(sm, 1)] == [1, 4]  # row 2 of the failed command rolled back


def test_sqlite_error_from_user_sql_is_deterministic_result(tmp_path: Path) -> None:
    """A syntax error or unknown column is an error result, not an exception."""
    sm = open_sm(tmp_path / "sm.db", G1)
    result = apply_one(sm, 1, encode_write("t", "UPDATE t SET nope = 1 WHERE id < 5", (), 1))
    assert result["code"] == "sqlite"
    assert result["error"] == "no such column: nope"
    assert sm.applied_index(GroupId(1)) == FIRST


def test_out_of_range_insert_is_refused(tmp_path: Path) -> None:
    """Every inserted row's key is checked: one row outside the range refuses the whole
    statement (the in-range rows roll back with it)."""
    sm = open_sm(tmp_path / "sm.db", G1, G2)
    sql = "INSERT INTO t(id, name) VALUES (5, 'in'), (150, 'out')"
    result = apply_one(sm, 1, encode_write("t", sql, (), 1))
    assert result["code"] == ResultCode.OUT_OF_RANGE.value
    assert rows(sm, 1) == [] and rows(sm, 2) == []


def test_out_of_range_update_of_key_is_refused(tmp_path: Path) -> None:
    """An UPDATE that moves a row's key out of the range is refused."""
    sm = open_sm(tmp_path / "sm.db", G1, G2)
    apply_one(sm, 1, insert(5))
    sql = 'UPDATE t SET id = 500 WHERE ("id" = 5) AND "id" < ?'
    result = apply_one(sm, 1, encode_write("t", sql, (100,), 1))
    assert result["code"] == "out_of_range"
    assert [r[0] for r in rows(sm, 1)] == [5]


def test_unconfined_update_and_delete_touch_only_the_range(tmp_path: Path) -> None:
    """A write without the range predicate is confined to the group's range, so its effect
    does not depend on which other groups share the physical table on this node."""
    sm = open_sm(tmp_path / "sm.db", G1, G2)
    apply_one(sm, 1, insert(5))
    apply_one(sm, 2, insert(150))
    upd = apply_one(sm, 1, encode_write("t", "UPDATE t SET name = 'z'", (), 1))
    assert upd["rowcount"] == 1
    deleted = apply_one(sm, 1, encode_write("t", "DELETE FROM t", (), 1))
    assert deleted["rowcount"] == 1
    assert rows(sm, 2) == [[150, "x", None, None]]


def test_auto_assigned_key_is_refused(tmp_path: Path) -> None:
    """SQLite would assign max(rowid)+1 over the whole physical table, which depends on the
    groups a node hosts: refuse a missing key."""
    sm = open_sm(tmp_path / "sm.db", G1)
    result = apply_one(sm, 1, encode_write("t", "INSERT INTO t(name) VALUES ('a')", (), 1))
    assert result["code"] == "refused"
    assert rows(sm, 1) == []
    ok = apply_one(sm, 1, insert(-1))  # an explicit -1 is a real key, not an assignment
    assert ok["ok"]


def test_stale_epoch_returns_current_descriptor(tmp_path: Path) -> None:
    """A command routed with an older epoch gets StaleEpoch with the group's descriptor."""
    sm = open_sm(tmp_path / "sm.db", descriptor(1, None, None, epoch=3))
    result = apply_one(sm, 1, insert(1, epoch=2))
    assert result["code"] == "stale_epoch"
    assert result["descriptor"]["epoch"] == 3 and result["descriptor"]["end_key"] is None
    assert apply_one(sm, 1, insert(1, epoch=3))["ok"]


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("INSERT INTO t(id, name) VALUES (1, random())", ()),
        ("INSERT INTO t(id, name) VALUES (1, hex(randomblob(4)))", ()),
        ('INSERT INTO t(id, name) VALUES (1, "RANDOM"())', ()),
        ("INSERT INTO t(id, name) VALUES (1, datetime('now'))", ()),
        ("INSERT INTO t(id, name) VALUES (1, date(?))", ("now",)),
        ("INSERT INTO t(id, name) VALUES (1, last_insert_rowid())", ()),
        ("UPDATE t SET name = (SELECT max(name) FROM t) WHERE id < 100", ()),
        ("INSERT INTO t(id, name) VALUES (1, 'a'); DELETE FROM t", ()),
        ("CREATE TABLE u(x)", ()),
        ("PRAGMA user_version = 3", ()),
        ("INSERT INTO shardb_applied VALUES (9, 9)", ()),
    ],
)
def test_non_deterministic_or_foreign_statements_are_refused(
    tmp_path: Path, sql: str, params: tuple[object, ...]
) -> None:
    """Defence in depth behind the gateway: the statement changes nothing and the entry is
    applied with a refusal."""
    sm = open_sm(tmp_path / "sm.db", G1)
    result = apply_one(sm, 1, encode_write("t", sql, params, 1))
    assert result["ok"] is False and result["code"] == "refused", result
    assert rows(sm, 1) == []
    assert sm.applied_index(GroupId(1)) == FIRST


def test_literal_text_that_looks_like_sql_is_data(tmp_path: Path) -> None:
    """String literals are not scanned for keywords."""
    sm = open_sm(tmp_path / "sm.db", G1)
    sql = "INSERT INTO t(id, name) VALUES (1, 'select random() from now')"
    assert apply_one(sm, 1, encode_write("t", sql, (), 1))["ok"]


def test_malformed_command_is_applied_with_error(tmp_path: Path) -> None:
    sm = open_sm(tmp_path / "sm.db", G1)
    assert apply_one(sm, 1, b"\xc1")["code"] == "malformed"
    assert apply_one(sm, 1, encode_write("u", "DELETE FROM u", (), 1))["code"] == "refused"


def test_reserved_table_names_are_refused(tmp_path: Path) -> None:
    sm = open_sm(tmp_path / "sm.db")
    with pytest.raises(TableRefused):
        sm.register_group(
            GroupId(5),
            descriptor(5, None, None, table="shardb_x"),
            "CREATE TABLE shardb_x(id INTEGER PRIMARY KEY)",
        )


def test_register_group_is_idempotent_and_keeps_applied_range(tmp_path: Path) -> None:
    """Re-registering after a split does not widen the range back."""
    path = tmp_path / "sm.db"
    sm = open_sm(path, descriptor(1, None, None))
    apply_one(sm, 1, split(descriptor(1, None, None), 50, 7))
    sm.close()
    sm = open_sm(path, descriptor(1, None, None))
    assert sm.descriptor(GroupId(1)).end_key == 50


def test_create_and_drop_index_per_group_on_shared_table(tmp_path: Path) -> None:
    """The index is one physical object: the first group creates it, the others succeed as
    no-ops; DROP INDEX likewise."""
    path = tmp_path / "sm.db"
    sm = open_sm(path, G1, G2)
    create = encode_ddl("t", "CREATE INDEX t_name ON t(name)")
    assert apply_one(sm, 1, create)["ok"]
    assert apply_one(sm, 2, create)["ok"]
    assert apply_one(sm, 1, encode_ddl("t", "CREATE UNIQUE INDEX u ON t(name)"))["code"] == (
        "refused"
    )
    drop = encode_ddl("t", "DROP INDEX t_name")
    assert apply_one(sm, 2, drop)["ok"]
    assert apply_one(sm, 1, drop)["ok"]
    sm.close()
    conn = apsw.Connection(str(path))
    assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall() == []


def test_drop_table_per_group(tmp_path: Path) -> None:
    """DROP TABLE removes the group's rows; the table goes with the last group using it."""
    path = tmp_path / "sm.db"
    sm = open_sm(path, G1, G2)
    apply_one(sm, 1, insert(1))
    apply_one(sm, 2, insert(200))
    drop = encode_ddl("t", "DROP TABLE t")
    assert apply_one(sm, 1, drop) == {"ok": True, "rowcount": 1}
    assert apply_one(sm, 1, insert(2))["code"] == "no_table"
    assert rows(sm, 2) == [[200, "x", None, None]]
    assert apply_one(sm, 2, drop)["ok"]
    sm.close()
    conn = apsw.Connection(str(path))
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchall() == []


def test_text_primary_key_table(tmp_path: Path) -> None:
    """TEXT keys: ranges compare as text; a NULL key is refused."""
    schema = "CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT NOT NULL, score REAL, data BLOB)"
    sm = open_sm(tmp_path / "sm.db", descriptor(1, "b", "m"), schema=schema)
    assert apply_one(sm, 1, insert("c"))["ok"]
    assert "lastrowid" not in apply_one(sm, 1, insert("d"))
    assert apply_one(sm, 1, insert("z"))["code"] == "out_of_range"
    assert apply_one(sm, 1, insert(None))["code"] == "refused"  # type: ignore[arg-type]
