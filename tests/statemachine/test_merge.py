"""Seeded ranges, the freeze and the merge trigger, and retired groups.

A merge of the right range R into its left neighbour L: ``encode_freeze`` on R stops its
writes, then ``encode_merge`` on L carries all of frozen R's rows and extends L; R's group is
retired (a tombstone) on each node that applies the merge.

Reference: ARCHITECTURE.md "State machine" (exactly-once apply, deterministic results) and
"Placement driver" (splits and merges change descriptors); Raft §5 State Machine Safety (same
log, same state on every replica) and Raft §7 (snapshots for replicas that lack the log).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import apsw
import pytest

from consensus.types import ConfState, GroupId, Index, Snapshot, SnapshotMeta, Term
from shardb.statemachine import (
    MAX_MERGE_BYTES,
    SEED_INDEX,
    GroupRetired,
    ShardStateMachine,
    SqlStateMachine,
    decode_result,
    encode_ddl,
    encode_freeze,
    encode_merge,
    encode_query,
    encode_write,
)

from .helpers import (
    FIRST,
    SCHEMA,
    apply_one,
    descriptor,
    entries,
    insert,
    open_sm,
    right_half,
    rows,
    select,
    split,
)

WHOLE = descriptor(1, None, None)
LEFT = descriptor(1, None, 50, epoch=2)
RIGHT = right_half(WHOLE, 50, 7)
COLUMNS = ("id", "name", "score", "data")


def _snap(data: bytes, index: int) -> Snapshot:
    return Snapshot(
        meta=SnapshotMeta(index=Index(index), term=Term(1), conf=ConfState()), data=data
    )


def _split_node(path: Path, keys: tuple[int, ...] = (10, 40, 50, 60, 90)) -> SqlStateMachine:
    """A node hosting L = [None, 50) (group 1) and R = [50, None) (group 7), split from one
    range holding ``keys``."""
    sm = open_sm(path, WHOLE)
    for key in keys:
        apply_one(sm, 1, insert(key, f"v{key}"))
    assert apply_one(sm, 1, split(WHOLE, 50, 7))["ok"]
    return sm


def _right_rows(sm: SqlStateMachine) -> list[list[Any]]:
    """R's rows as the merge coordinator reads them from frozen R (every column)."""
    return rows(sm, 7)


def _merge(
    rows_: list[list[Any]], *, left_epoch: int = 2, new_epoch: int = 3, **right: Any
) -> bytes:
    """The merge of R (``RIGHT`` with ``right``'s changes) carrying ``rows_`` into L."""
    return encode_merge(left_epoch, new_epoch, replace(RIGHT, **right), COLUMNS, rows_)


def _groups_row(path: Path) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(str(path))
    try:
        return [
            tuple(r)
            for r in conn.execute(
                "SELECT group_id, start_key, end_key, epoch, frozen, retired FROM shardb_groups "
                "ORDER BY group_id"
            )
        ]
    finally:
        conn.close()


# --------------------------------------------------------------------------- seeding


def test_registered_range_starts_at_the_seed_index(tmp_path: Path) -> None:
    """A new table's range did not get its (empty) initial state from its log: it starts at
    SEED_INDEX, and its snapshot there is what a seeded group is started from."""
    sm = open_sm(tmp_path / "sm.db", WHOLE)
    assert sm.applied_index(GroupId(1)) == SEED_INDEX
    data = sm.snapshot(GroupId(1))
    target = SqlStateMachine(tmp_path / "other.db")
    target.restore(GroupId(1), _snap(data, SEED_INDEX))
    assert target.applied_index(GroupId(1)) == SEED_INDEX
    assert target.snapshot(GroupId(1)) == data


def test_split_right_half_starts_at_the_seed_index_and_survives_restart(tmp_path: Path) -> None:
    """The split trigger registers the right half at SEED_INDEX in the same transaction: its
    initial rows came from the parent, not from its own log."""
    path = tmp_path / "sm.db"
    _split_node(path).close()
    sm = SqlStateMachine(path)
    assert sm.applied_index(GroupId(7)) == SEED_INDEX
    (result,) = sm.apply(GroupId(7), entries(FIRST, insert(70, epoch=2)))
    assert result is not None and decode_result(result)["ok"]


# --------------------------------------------------------------------------- freeze


def test_freeze_refuses_writes_ddl_and_splits_but_serves_reads(tmp_path: Path) -> None:
    """After the freeze, R's rows cannot change any more (so the rows read for the merge are
    final): writes, DDL and splits get the retryable RANGE_FROZEN with the descriptor."""
    sm = _split_node(tmp_path / "sm.db")
    before = _right_rows(sm)
    frozen = apply_one(sm, 7, encode_freeze(2))
    assert frozen["ok"] and frozen["applied"] == sm.applied_index(GroupId(7))
    for command in (
        insert(70, epoch=2),
        encode_write("t", "DELETE FROM t WHERE id >= ?", (0,), 2),
        encode_ddl("t", "CREATE INDEX t_name ON t(name)"),
        encode_ddl("t", "DROP TABLE t"),
        split(RIGHT, 80, 9),
    ):
        result = apply_one(sm, 7, command)
        assert result["ok"] is False and result["code"] == "range_merging", result
        assert result["descriptor"]["group_id"] == 7
    assert _right_rows(sm) == before
    assert select(sm, 7, "SELECT count(*) FROM t WHERE id >= 50", epoch=2)["rows"] == [[3]]
    assert sm.is_frozen(GroupId(7)) and not sm.is_frozen(GroupId(1))
    assert apply_one(sm, 1, insert(20, epoch=2))["ok"]  # L is not affected


def test_freeze_is_idempotent(tmp_path: Path) -> None:
    """A second freeze succeeds with its own index and changes nothing else."""
    sm = _split_node(tmp_path / "sm.db")
    first = apply_one(sm, 7, encode_freeze(2))
    second = apply_one(sm, 7, encode_freeze(2))
    assert second["ok"] and second["applied"] == first["applied"] + 1
    assert second["descriptor"] == first["descriptor"]
    assert sm.is_frozen(GroupId(7))


def test_freeze_with_a_stale_epoch_is_refused(tmp_path: Path) -> None:
    """A freeze planned against an older descriptor (before a split) freezes nothing."""
    sm = _split_node(tmp_path / "sm.db")
    assert apply_one(sm, 1, encode_freeze(1))["code"] == "stale_epoch"
    assert not sm.is_frozen(GroupId(1))


def test_freeze_survives_restart_and_travels_in_snapshots(tmp_path: Path) -> None:
    """The freeze is persisted with the group, and a lagging replica that catches up by a
    snapshot taken after it is frozen too."""
    path = tmp_path / "sm.db"
    sm = _split_node(path)
    apply_one(sm, 7, encode_freeze(2))
    sm.close()
    sm = SqlStateMachine(path)
    assert sm.is_frozen(GroupId(7))
    assert apply_one(sm, 7, insert(70, epoch=2))["code"] == "range_merging"
    data = sm.snapshot(GroupId(7))
    lagging = SqlStateMachine(tmp_path / "lagging.db")
    lagging.restore(GroupId(7), _snap(data, sm.applied_index(GroupId(7))))
    assert lagging.is_frozen(GroupId(7))
    assert lagging.snapshot(GroupId(7)) == data
    assert apply_one(lagging, 7, insert(70, epoch=2))["code"] == "range_merging"


def test_a_file_without_the_new_columns_is_migrated(tmp_path: Path) -> None:
    """A data file written before freeze/merge existed opens: the columns are added with
    the defaults the old file meant (not frozen, not retired, no learners)."""
    path = tmp_path / "old.db"
    sm = _split_node(path)
    sm.close()
    conn = apsw.Connection(str(path))
    for column in ("frozen", "retired", "learners"):
        conn.execute(f"ALTER TABLE shardb_groups DROP COLUMN {column}")
    conn.close()
    sm = SqlStateMachine(path)
    assert [d.group_id for d in sm.live_descriptors()] == [1, 7]
    assert not sm.is_frozen(GroupId(7))
    assert apply_one(sm, 7, encode_freeze(2))["ok"]
    sm.close()
    assert SqlStateMachine(path).is_frozen(GroupId(7))


# --------------------------------------------------------------------------- merge


def _frozen_pair(tmp_path: Path) -> tuple[SqlStateMachine, list[list[Any]]]:
    """Node A: L and R, R written to after the split, then frozen; R's rows as read."""
    a = _split_node(tmp_path / "a.db")
    apply_one(a, 7, insert(70, "v70", epoch=2))
    apply_one(a, 1, insert(20, "v20", epoch=2))
    assert apply_one(a, 7, encode_freeze(2))["ok"]
    return a, _right_rows(a)


def test_merge_moves_exactly_rs_rows_into_l_whether_or_not_the_node_hosts_r(
    tmp_path: Path,
) -> None:
    """Node A hosts R; node B does not (it caught up on L by a snapshot and holds leftover
    rows in R's span that no live group owns). After the same merge entry both L replicas
    hold exactly L's rows plus the carried rows, and their snapshots are identical."""
    a, carried = _frozen_pair(tmp_path)
    b = open_sm(tmp_path / "b.db", WHOLE)
    for key in (10, 55, 99):
        apply_one(b, 1, insert(key, "stale"))
    # B's L skipped the split via a snapshot: it shrinks and leaves 55 and 99 behind, rows
    # no live group owns; B never hosts R.
    b.restore(GroupId(1), _snap(a.snapshot(GroupId(1)), a.applied_index(GroupId(1))))
    assert b._conn.execute("SELECT count(*) FROM t WHERE id >= 50").fetchone() == (2,)
    assert not b.hosts(GroupId(7))
    index = a.applied_index(GroupId(1)) + 1
    command = _merge(carried)
    results = [sm.apply(GroupId(1), entries(index, command))[0] for sm in (a, b)]
    assert results[0] == results[1]
    assert results[0] is not None
    result = decode_result(results[0])
    assert result["ok"] and result["rows"] == 4
    assert result["descriptor"]["end_key"] is None and result["descriptor"]["epoch"] == 3
    expected = [[10, "v10"], [20, "v20"], [40, "v40"], [50, "v50"], [60, "v60"]]
    expected += [[70, "v70"], [90, "v90"]]
    for sm in (a, b):
        assert [r[:2] for r in rows(sm, 1)] == expected
        assert sm.descriptor(GroupId(1)) == replace(LEFT, end_key=None, epoch=3)
        assert [d.group_id for d in sm.live_descriptors()] == [1]
        assert sm.retired_group_ids() == (GroupId(7),)
        count = sm._conn.execute("SELECT count(*) FROM t").fetchone()
        assert count == (7,)  # nothing left over in R's span
    assert a.snapshot(GroupId(1)) == b.snapshot(GroupId(1))


def test_merge_is_applied_exactly_once(tmp_path: Path) -> None:
    """Re-delivering the merge entry after a restart (the core re-sends committed entries)
    skips it; a merge proposed again as a new entry names an old epoch and is refused. L's
    state is unchanged either way."""
    path = tmp_path / "a.db"
    a, carried = _frozen_pair(tmp_path)
    index = a.applied_index(GroupId(1)) + 1
    batch = entries(index, _merge(carried))
    (first,) = a.apply(GroupId(1), batch)
    assert first is not None and decode_result(first)["ok"]
    merged_rows, snapshot = rows(a, 1), a.snapshot(GroupId(1))
    a.close()
    a = SqlStateMachine(path)
    assert a.apply(GroupId(1), batch) == (None,)
    assert a.snapshot(GroupId(1)) == snapshot
    again = apply_one(a, 1, _merge(carried))
    assert again["code"] == "stale_epoch"
    assert rows(a, 1) == merged_rows and len(merged_rows) == 7
    assert a.descriptor(GroupId(1)) == replace(LEFT, end_key=None, epoch=3)
    assert a.retired_group_ids() == (GroupId(7),)


@pytest.mark.parametrize(
    ("why", "command", "code"),
    [
        ("stale left epoch", lambda c: _merge(c, left_epoch=1), "stale_epoch"),
        ("not adjacent", lambda c: _merge(c, start_key=60), "refused"),
        ("other table", lambda c: _merge(c, table="u"), "refused"),
        ("new epoch not above", lambda c: _merge(c, new_epoch=2), "refused"),
        ("new epoch not above right", lambda c: _merge(c, epoch=3), "refused"),
        ("the left group itself", lambda c: _merge(c, group_id=GroupId(1)), "refused"),
        ("a row outside R", lambda c: _merge([*c, [30, "x", None, None]]), "out_of_range"),
        ("a duplicate row", lambda c: _merge([*c, c[0]]), "constraint"),
        ("unknown column", lambda c: encode_merge(2, 3, RIGHT, ["id", "nope"], []), "refused"),
        ("no key column", lambda c: encode_merge(2, 3, RIGHT, ["name"], []), "refused"),
        ("ragged row", lambda c: encode_merge(2, 3, RIGHT, COLUMNS, [[51]]), "malformed"),
    ],
)
def test_bad_merge_is_refused_and_changes_nothing(
    tmp_path: Path, why: str, command: Any, code: str
) -> None:
    """Every check uses only L's replicated state and the command, and the changes run in one
    savepoint: a refused merge (even one failing on its last row) leaves L, R and the rows as
    they were, and the entry still counts as applied."""
    a, carried = _frozen_pair(tmp_path)
    data = command(carried)
    right_snapshot = a.snapshot(GroupId(7))
    left_rows, right_rows = rows(a, 1), rows(a, 7)
    applied = a.applied_index(GroupId(1))
    result = apply_one(a, 1, data)
    assert result["ok"] is False and result["code"] == code, (why, result)
    assert a.applied_index(GroupId(1)) == applied + 1
    assert (rows(a, 1), rows(a, 7)) == (left_rows, right_rows)
    assert a.descriptor(GroupId(1)) == LEFT
    assert a.retired_group_ids() == () and a.snapshot(GroupId(7)) == right_snapshot


def test_merge_larger_than_the_bound_is_refused(tmp_path: Path) -> None:
    """A merge carrying more than MAX_MERGE_BYTES is refused before anything is written."""
    a, carried = _frozen_pair(tmp_path)
    blob = b"x" * (1 << 20)
    big = [[50 + i, "big", None, blob] for i in range(MAX_MERGE_BYTES // len(blob) + 1)]
    result = apply_one(a, 1, _merge(big))
    assert result["code"] == "refused" and "exceeds" in result["error"]
    assert rows(a, 7) == carried and a.descriptor(GroupId(1)) == LEFT


# --------------------------------------------------------------------------- retired


def _merged(tmp_path: Path) -> SqlStateMachine:
    a, carried = _frozen_pair(tmp_path)
    assert apply_one(a, 1, _merge(carried))["ok"]
    return a


def test_retired_group_apply_is_an_error_result_that_counts_as_applied(tmp_path: Path) -> None:
    """Entries of a retired group (its lagging log) change nothing: RANGE_RETIRED, and the
    applied index advances so the log can go on or be dropped."""
    a = _merged(tmp_path)
    before = rows(a, 1)
    applied = a.applied_index(GroupId(7))
    result = apply_one(a, 7, insert(75, epoch=9))
    assert result["ok"] is False and result["code"] == "range_retired"
    assert a.applied_index(GroupId(7)) == applied + 1
    assert rows(a, 1) == before
    assert select(a, 7, epoch=9)["code"] == "range_retired"
    assert a.range_stats(GroupId(7)).rows == 0


def test_retired_group_restore_is_ignored_without_raising(tmp_path: Path) -> None:
    """A lagging replica of R may be sent R's snapshot before its group is removed: it must
    not stop the node nor bring R's rows back over L's."""
    a, _ = _frozen_pair(tmp_path)
    old_r = a.snapshot(GroupId(7))
    old_index = a.applied_index(GroupId(7))
    carried = _right_rows(a)
    assert apply_one(a, 1, _merge(carried))["ok"]
    apply_one(a, 1, encode_write("t", "UPDATE t SET name = 'new' WHERE id >= 50", (), 3))
    before = rows(a, 1)
    a.restore(GroupId(7), _snap(old_r, old_index + 3))
    assert rows(a, 1) == before
    assert a.applied_index(GroupId(7)) == old_index + 3
    assert a.retired_group_ids() == (GroupId(7),)


def test_retired_group_cannot_be_registered_again(tmp_path: Path) -> None:
    """register refuses a group this node merged away (its keys are L's now)."""
    a = _merged(tmp_path)
    with pytest.raises(GroupRetired):
        a.register_group(GroupId(7), RIGHT, SCHEMA)


def test_drop_of_a_retired_group_deletes_only_bookkeeping(tmp_path: Path) -> None:
    """Removing R's consensus group later must not delete the rows L now owns."""
    path = tmp_path / "a.db"
    a = _merged(tmp_path)
    before = rows(a, 1)
    a.drop_group(GroupId(7))
    assert rows(a, 1) == before
    assert not a.hosts(GroupId(7)) and a.retired_group_ids() == ()
    a.close()
    assert [g[0] for g in _groups_row(path)] == [1]


def test_retirement_survives_restart(tmp_path: Path) -> None:
    """The tombstone is persisted with the merge: after a restart R is still retired."""
    path = tmp_path / "a.db"
    _merged(tmp_path).close()
    a = SqlStateMachine(path)
    assert a.retired_group_ids() == (GroupId(7),)
    assert [d.group_id for d in a.live_descriptors()] == [1]
    assert apply_one(a, 7, insert(75, epoch=2))["code"] == "range_retired"


def test_restore_of_the_merged_range_retires_a_covered_frozen_group(tmp_path: Path) -> None:
    """A node whose replica of L skipped the merge via a snapshot while it still hosts frozen
    R: only a merge makes a range cover a frozen one, so R is retired, not an overlap error."""
    a, _ = _frozen_pair(tmp_path)
    b = SqlStateMachine(tmp_path / "b.db")
    for gid in (1, 7):
        b.restore(GroupId(gid), _snap(a.snapshot(GroupId(gid)), a.applied_index(GroupId(gid))))
    assert apply_one(a, 1, _merge(_right_rows(a)))["ok"]
    b.restore(GroupId(1), _snap(a.snapshot(GroupId(1)), a.applied_index(GroupId(1))))
    assert b.retired_group_ids() == (GroupId(7),)
    assert rows(b, 1) == rows(a, 1)
    assert b.snapshot(GroupId(1)) == a.snapshot(GroupId(1))


def test_restore_over_a_live_unfrozen_group_is_still_refused(tmp_path: Path) -> None:
    """Covering a range that was never frozen is not a merge: restore refuses the overlap."""
    a = _merged(tmp_path)
    b = _split_node(tmp_path / "b.db")
    with pytest.raises(Exception, match="overlaps live group 7"):
        b.restore(GroupId(1), _snap(a.snapshot(GroupId(1)), a.applied_index(GroupId(1))))
    assert [d.group_id for d in b.live_descriptors()] == [1, 7]


def test_retired_snapshot_installs_a_tombstone(tmp_path: Path) -> None:
    """R's snapshot taken after its retirement carries no rows and makes the receiving
    replica retire R too, leaving other groups' rows alone."""
    a = _merged(tmp_path)
    data = a.snapshot(GroupId(7))
    b = _split_node(tmp_path / "b.db")
    before = b._conn.execute("SELECT count(*) FROM t").fetchone()
    b.restore(GroupId(7), _snap(data, a.applied_index(GroupId(7))))
    assert b.retired_group_ids() == (GroupId(7),)
    assert b._conn.execute("SELECT count(*) FROM t").fetchone() == before


def test_shard_state_machine_hides_retired_groups_from_hosted_ranges(tmp_path: Path) -> None:
    """The node service starts a group for every hosted range: a retired one must not be
    among them; ``retired_groups`` names it so its consensus group can be removed."""
    sm = ShardStateMachine(tmp_path / "node")
    left, right = descriptor(2, None, 50), descriptor(3, 50, None)
    for d in (left, right):
        sm.register_range(d, SCHEMA)
        assert sm.applied_index(d.group_id) == SEED_INDEX
    (done,) = sm.apply(right.group_id, entries(FIRST, insert(60, epoch=1), encode_freeze(1)))[1:]
    assert done is not None and decode_result(done)["ok"]
    merge = encode_merge(1, 2, right, COLUMNS, [[60, "x", None, None]])
    (merged,) = sm.apply(left.group_id, entries(FIRST, merge))
    assert merged is not None and decode_result(merged)["ok"]
    assert sm.hosted_ranges() == (replace(left, end_key=None, epoch=2),)
    assert sm.retired_groups() == (right.group_id,)
    with pytest.raises(GroupRetired):
        sm.register_range(right, SCHEMA)
    sm.drop_group(right.group_id)
    assert sm.retired_groups() == ()
    assert sm.range_stats(left.group_id).rows == 1


# --------------------------------------------------------------------------- routed bounds


def test_a_write_routed_for_wider_bounds_is_refused_as_stale_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """Between the meta group's MergeRanges and the merge trigger, a gateway routes the right
    range's keys to the left group with the merged bounds. Confining the statement to the
    left range's narrower bounds would silently skip those rows (an UPDATE would report 0
    rows), so the group refuses it as stale and the gateway retries after the trigger."""
    sm = open_sm(tmp_path / "d.db", descriptor(2, None, 100))
    apply_one(sm, 2, insert(5))
    wide = encode_write("t", "UPDATE t SET name = 'y' WHERE id >= ?", (0,), 2, bounds=(None, 200))
    result = apply_one(sm, 2, wide)
    assert result["code"] == "stale_epoch"
    assert rows(sm, 2) == [[5, "x", None, None]]
    narrow = encode_write("t", "UPDATE t SET name = 'y' WHERE id >= ?", (0,), 2, bounds=(None, 50))
    assert apply_one(sm, 2, narrow)["rowcount"] == 1


def test_a_query_routed_for_wider_bounds_is_refused_as_stale(tmp_path: Path) -> None:
    sm = open_sm(tmp_path / "d.db", descriptor(2, 100, None))
    query = encode_query("SELECT id FROM t", (), 1, bounds=(50, None))
    assert decode_result(sm.query(GroupId(2), query))["code"] == "stale_epoch"
    inside = encode_query("SELECT id FROM t", (), 1, bounds=(150, 300))
    assert decode_result(sm.query(GroupId(2), inside))["ok"]
