"""Shared fixtures-free helpers for the SQL state machine tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from consensus.types import Entry, GroupId, Index, NodeId, Term
from shardb.placement.descriptors import Key, RangeDescriptor
from shardb.statemachine import (
    SEED_INDEX,
    SqlStateMachine,
    decode_result,
    encode_query,
    encode_split,
    encode_write,
)

FIRST = int(SEED_INDEX) + 1
"""The first entry a registered (seeded) group applies."""

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, data BLOB)"


def descriptor(
    group: int, start: Key | None, end: Key | None, *, table: str = "t", epoch: int = 1
) -> RangeDescriptor:
    return RangeDescriptor(
        range_id=group,
        table=table,
        start_key=start,
        end_key=end,
        group_id=GroupId(group),
        replicas=(NodeId(1), NodeId(2), NodeId(3)),
        backend="raft",
        epoch=epoch,
    )


def open_sm(path: Path, *groups: RangeDescriptor, schema: str = SCHEMA) -> SqlStateMachine:
    sm = SqlStateMachine(path)
    for d in groups:
        sm.register_group(d.group_id, d, schema)
    return sm


def right_half(parent: RangeDescriptor, key: Key, group: int) -> RangeDescriptor:
    """The right half the meta group's SplitRange allocates for ``parent`` split at ``key``."""
    return replace(
        parent, range_id=group, group_id=GroupId(group), start_key=key, epoch=parent.epoch + 1
    )


def split(parent: RangeDescriptor, key: Key, right_group: int) -> bytes:
    """The split command for ``parent`` at ``key`` naming right group ``right_group``."""
    right = right_half(parent, key, right_group)
    return encode_split(key, parent.epoch, right.epoch, right)


def entries(first: int, *commands: bytes) -> list[Entry]:
    return [Entry(index=Index(first + i), term=Term(1), data=c) for i, c in enumerate(commands)]


def insert(key: Key, name: str = "x", *, epoch: int = 1) -> bytes:
    return encode_write("t", "INSERT INTO t(id, name) VALUES (?, ?)", (key, name), epoch)


def apply_one(sm: SqlStateMachine, group: int, command: bytes) -> dict[str, Any]:
    index = sm.applied_index(GroupId(group)) + 1
    (result,) = sm.apply(GroupId(group), entries(index, command))
    assert result is not None
    return decode_result(result)


def select(
    sm: SqlStateMachine,
    group: int,
    sql: str = "SELECT id, name FROM t ORDER BY id",
    params: tuple[object, ...] = (),
    *,
    epoch: int = 1,
) -> dict[str, Any]:
    return decode_result(sm.query(GroupId(group), encode_query(sql, params, epoch)))


def rows(sm: SqlStateMachine, group: int) -> list[list[Any]]:
    """Every row the group owns (a full-table scan, confined like a routed query)."""
    d = sm.descriptor(GroupId(group))
    clauses, params = ["1"], []
    if d.start_key is not None:
        clauses.append("id >= ?")
        params.append(d.start_key)
    if d.end_key is not None:
        clauses.append("id < ?")
        params.append(d.end_key)
    sql = f"SELECT * FROM t WHERE {' AND '.join(clauses)} ORDER BY id"
    result = select(sm, group, sql, tuple(params), epoch=d.epoch)
    assert result["ok"], result
    return [list(r) for r in result["rows"]]
