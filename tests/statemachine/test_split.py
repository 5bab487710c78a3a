"""The split trigger: the parent shrinks and the right-hand group is registered in ONE
transaction, so on every replica the right group exists iff the parent has applied the split.

Reference: ARCHITECTURE.md "Placement driver" (splits are metadata only: the new group starts
from the parent's rows) and "State machine" (exactly-once apply); Raft §5 State Machine Safety
(same log, same state on every replica).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import apsw
import pytest

from consensus.types import ConfState, GroupId, Index, NodeId, Snapshot, SnapshotMeta, Term
from shardb.placement.descriptors import RangeDescriptor
from shardb.statemachine import RangeOverlap, decode_result, encode_split, encode_write

from .helpers import (
    FIRST,
    apply_one,
    descriptor,
    entries,
    insert,
    open_sm,
    right_half,
    rows,
    split,
)
from .split_crash_worker import EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
SEED = FIRST - 1
WHOLE = descriptor(1, None, None)


def _loaded(path: Path, keys: tuple[int, ...] = (10, 40, 50, 60, 90)) -> Any:
    sm = open_sm(path, WHOLE)
    for key in keys:
        apply_one(sm, 1, insert(key))
    return sm


def _file_state(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Bookkeeping as it is on disk: (group_id, start, end, epoch) rows and applied rows."""
    conn = apsw.Connection(str(path))
    try:
        groups = conn.execute(
            "SELECT group_id, start_key, end_key, epoch FROM shardb_groups ORDER BY group_id"
        ).fetchall()
        applied = conn.execute("SELECT * FROM shardb_applied ORDER BY group_id").fetchall()
        return [tuple(g) for g in groups], [tuple(a) for a in applied]
    finally:
        conn.close()


def test_split_result_carries_both_descriptors_and_registers_right(tmp_path: Path) -> None:
    """The split's result is the left and right descriptors; the right group is hosted."""
    sm = _loaded(tmp_path / "sm.db")
    result = apply_one(sm, 1, split(WHOLE, 50, 7))
    assert result["ok"] and result["descriptor"]["end_key"] == 50
    assert result["right"]["group_id"] == 7 and result["right"]["start_key"] == 50
    assert sm.live_descriptors() == (
        descriptor(1, None, 50, epoch=2),
        descriptor(7, 50, None, epoch=2),
    )


def test_split_is_atomic_when_the_transaction_fails_after_the_parent_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error while registering the right group (the parent's new bounds already
    written) rolls back both: neither is visible in memory or on disk, and re-delivering the
    entry splits exactly once."""
    path = tmp_path / "sm.db"
    _loaded(path).close()
    before = _file_state(path)
    sm = open_sm(path, WHOLE)
    store = sm._store_group

    def failing(group: Any) -> None:
        if group.descriptor.group_id == GroupId(7):
            raise apsw.IOError("disk went away")
        store(group)

    monkeypatch.setattr(sm, "_store_group", failing)
    command = split(WHOLE, 50, 7)
    with pytest.raises(apsw.IOError):
        sm.apply(GroupId(1), entries(SEED + 6, command))
    assert sm.descriptor(GroupId(1)) == WHOLE
    assert not sm.hosts(GroupId(7))
    assert sm.applied_index(GroupId(1)) == SEED + 5
    sm.close()
    assert _file_state(path) == before
    sm = open_sm(path, WHOLE)
    (result,) = sm.apply(GroupId(1), entries(SEED + 6, command))
    assert result is not None and decode_result(result)["ok"]
    assert [r[0] for r in rows(sm, 7)] == [50, 60, 90]


def test_crash_inside_the_split_transaction_leaves_neither(tmp_path: Path) -> None:
    """A process that dies mid-transaction (after the parent's update, while registering the
    right group) leaves the file as before the split; the re-delivered entry then does both."""
    path = tmp_path / "sm.db"
    _loaded(path).close()
    before = _file_state(path)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.statemachine.split_crash_worker", str(path), str(SEED + 5)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == EXIT_CODE, proc.stdout + proc.stderr
    assert _file_state(path) == before
    sm = open_sm(path, WHOLE)
    assert sm.descriptor(GroupId(1)) == WHOLE and not sm.hosts(GroupId(7))
    assert apply_one(sm, 1, split(WHOLE, 50, 7))["ok"]
    assert [r[0] for r in rows(sm, 1)] == [10, 40]
    assert [r[0] for r in rows(sm, 7)] == [50, 60, 90]


def test_restart_keeps_both_halves(tmp_path: Path) -> None:
    """After close and reopen both groups are there with their bounds and applied indexes,
    and the right group goes on applying from the entry after SEED_INDEX."""
    path = tmp_path / "sm.db"
    sm = _loaded(path)
    apply_one(sm, 1, split(WHOLE, 50, 7))
    sm.close()
    sm = open_sm(path)
    assert sm.live_descriptors() == (
        descriptor(1, None, 50, epoch=2),
        descriptor(7, 50, None, epoch=2),
    )
    assert (sm.applied_index(GroupId(1)), sm.applied_index(GroupId(7))) == (SEED + 6, SEED)
    assert apply_one(sm, 7, insert(70, epoch=2))["ok"]
    assert sm.applied_index(GroupId(7)) == FIRST
    assert [r[0] for r in rows(sm, 7)] == [50, 60, 70, 90]
    assert apply_one(sm, 1, insert(75, epoch=2))["code"] == "out_of_range"


def test_right_group_writes_stay_in_its_range(tmp_path: Path) -> None:
    """A statement of the right group touches only its keys: an UPDATE over every row skips
    the parent's, a write that would move a row into the parent's range is refused."""
    sm = _loaded(tmp_path / "sm.db")
    apply_one(sm, 1, split(WHOLE, 50, 7))
    update = encode_write("t", "UPDATE t SET name = 'r'", (), 2)
    assert apply_one(sm, 7, update) == {"ok": True, "rowcount": 3}
    assert {r[1] for r in rows(sm, 1)} == {"x"}
    move = encode_write("t", "UPDATE t SET id = 5 WHERE id = 60", (), 2)
    assert apply_one(sm, 7, move)["code"] == "out_of_range"
    assert apply_one(sm, 1, encode_write("t", "DELETE FROM t", (), 2))["rowcount"] == 2
    assert [r[0] for r in rows(sm, 7)] == [50, 60, 90]


def _bad_rights() -> list[tuple[str, RangeDescriptor]]:
    good = right_half(WHOLE, 50, 7)
    return [
        ("other table", replace(good, table="u")),
        ("other backend", replace(good, backend="paxos")),
        ("start is not the split key", replace(good, start_key=51)),
        ("text start", replace(good, start_key="50")),
        ("end is not the parent's", replace(good, end_key=1000)),
        ("epoch is not the new one", replace(good, epoch=3)),
        ("parent's group", replace(good, group_id=GroupId(1))),
        ("reserved group", replace(good, group_id=GroupId(0))),
        ("parent's range id", replace(good, range_id=1)),
        ("no replicas", replace(good, replicas=())),
        ("duplicate replicas", replace(good, replicas=(NodeId(1), NodeId(1)))),
    ]


@pytest.mark.parametrize(("why", "right"), _bad_rights(), ids=[w for w, _ in _bad_rights()])
def test_inconsistent_right_half_is_refused(
    tmp_path: Path, why: str, right: RangeDescriptor
) -> None:
    """A right descriptor that is not what SplitRange allocates for this parent is a
    deterministic refusal: nothing changes, the entry still counts as applied."""
    sm = _loaded(tmp_path / "sm.db")
    result = apply_one(sm, 1, encode_split(50, 1, 2, right))
    assert result["ok"] is False and result["code"] == "refused", (why, result)
    assert sm.live_descriptors() == (WHOLE,)
    assert sm.applied_index(GroupId(1)) == SEED + 6


def test_undecodable_right_half_is_malformed(tmp_path: Path) -> None:
    sm = _loaded(tmp_path / "sm.db")
    command = bytearray(split(WHOLE, 50, 7))
    command = command.replace(b"\xa8replicas", b"\xa8replicaz")
    assert apply_one(sm, 1, bytes(command))["code"] == "malformed"
    assert sm.live_descriptors() == (WHOLE,)


def test_right_half_takes_the_commands_replicas(tmp_path: Path) -> None:
    """The meta group owns replica sets (SetReplicas changes them there, not in the group's
    log), so a split after a move names replicas the local parent never saw: both halves
    adopt them."""
    sm = _loaded(tmp_path / "sm.db")
    moved = (NodeId(2), NodeId(3), NodeId(4))
    right = replace(right_half(WHOLE, 50, 7), replicas=moved)
    assert apply_one(sm, 1, encode_split(50, 1, 2, right))["ok"]
    assert [d.replicas for d in sm.live_descriptors()] == [moved, moved]


def test_registering_the_right_half_before_the_split_is_refused(tmp_path: Path) -> None:
    """A right group hosted before its parent applied the split could see the parent's later
    pre-split writes land in its rows: register refuses an overlapping range, and once the
    split applied, registering is the idempotent no-op the node service expects."""
    sm = _loaded(tmp_path / "sm.db")
    right = right_half(WHOLE, 50, 7)
    with pytest.raises(RangeOverlap):
        sm.register_group(GroupId(7), right, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    apply_one(sm, 1, split(WHOLE, 50, 7))
    apply_one(sm, 7, insert(70, epoch=2))
    assert sm.register_group(GroupId(7), right, "CREATE TABLE t(id INTEGER PRIMARY KEY)") == right
    assert sm.applied_index(GroupId(7)) == FIRST


def _snap(data: bytes, index: int) -> Snapshot:
    return Snapshot(
        meta=SnapshotMeta(index=Index(index), term=Term(1), conf=ConfState()), data=data
    )


def test_registration_clears_rows_no_group_owns(tmp_path: Path) -> None:
    """A parent that catches up by a snapshot taken after the split never applies the split:
    it shrinks and leaves its old right part's rows behind. Registering the right group then
    starts it from an empty range (its state at SEED_INDEX), not from those stale rows."""
    source = _loaded(tmp_path / "a.db", keys=(10, 60))
    apply_one(source, 1, split(WHOLE, 50, 7))
    target = _loaded(tmp_path / "b.db", keys=(10, 60, 70))
    target.restore(GroupId(1), _snap(source.snapshot(GroupId(1)), SEED + 3))
    assert not target.hosts(GroupId(7))
    target.register_group(GroupId(7), right_half(WHOLE, 50, 7), "CREATE TABLE t(id INTEGER)")
    assert rows(target, 7) == []
    assert target.range_stats(GroupId(7)).rows == 0


def test_replicas_with_different_batching_end_identical(tmp_path: Path) -> None:
    """Writes on both sides of the split key before and after the split, applied in different
    batchings on three replicas, give identical results, rows and bookkeeping on all three.

    Reference: Raft §5 (State Machine Safety)."""
    rng = random.Random(11)
    parent: list[bytes] = []
    for i in range(120):
        if i == 60:
            parent.append(split(WHOLE, 50, 7))
        key = rng.randrange(0, 100)
        epoch = 1 if i < 60 else 2
        parent.append(insert(key, f"p{i}", epoch=epoch))
    right = [insert(rng.randrange(0, 100), f"r{i}", epoch=2) for i in range(60)]
    dumps, results = [], []
    for replica in range(3):
        path = tmp_path / f"r{replica}.db"
        sm = open_sm(path, WHOLE)
        out: list[bytes | None] = []
        for group, stream in ((1, parent), (7, right)):
            index = 1
            while index <= len(stream):
                size = rng.randrange(1, 30)
                batch = entries(SEED + index, *stream[index - 1 : index - 1 + size])
                out.extend(sm.apply(GroupId(group), batch))
                index += size
        results.append(out)
        sm.close()
        conn = apsw.Connection(str(path))
        dumps.append(
            [tuple(r) for r in conn.execute("SELECT * FROM t ORDER BY id")]
            + [tuple(r) for r in conn.execute("SELECT * FROM shardb_groups ORDER BY group_id")]
            + [tuple(r) for r in conn.execute("SELECT * FROM shardb_applied ORDER BY group_id")]
        )
        conn.close()
    assert results[0] == results[1] == results[2]
    assert dumps[0] == dumps[1] == dumps[2]
    codes = {decode_result(r).get("code") for r in results[0] if r is not None}
    assert {None, "out_of_range", "constraint"} <= codes
