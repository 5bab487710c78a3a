"""A table split across several real SQLite databases, driven through shardb.sql.

Each "range" of the RangeMap is its own in-memory SQLite database holding only the rows of its
range; a second, plain SQLite database holds the whole table. ``run`` executes a statement both
ways (plan, run the sub-statements on the shards, merge; versus the single database), so tests
can compare the two results exactly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from consensus.types import GroupId, NodeId
from shardb.placement import Key, RangeDescriptor, RangeMap
from shardb.sql import (
    Catalog,
    CreateTable,
    ResultSet,
    Select,
    analyze,
    apply_ddl,
    merge_rowcounts,
    merge_select,
    route,
)
from shardb.sql.values import Value


def range_map(table: str, splits: Sequence[Key]) -> RangeMap:
    """Ranges cut at the sorted, distinct ``splits``."""
    bounds: list[Key | None] = [None, *sorted(set(splits)), None]
    descriptors = [
        RangeDescriptor(
            range_id=index + 1,
            table=table,
            start_key=bounds[index],
            end_key=bounds[index + 1],
            group_id=GroupId(100 + index),
            replicas=(NodeId(1), NodeId(2), NodeId(3)),
            backend="raft",
        )
        for index in range(len(bounds) - 1)
    ]
    return RangeMap.build(table, descriptors)


@dataclass
class Outcome:
    columns: tuple[str, ...]
    rows: list[tuple[Value, ...]]
    rowcount: int


class ShardedTable:
    def __init__(self, create_sql: str, splits: Sequence[Key]) -> None:
        statement = analyze(create_sql, Catalog())
        assert isinstance(statement, CreateTable)
        self.schema = statement.schema
        self.catalog = apply_ddl(Catalog(), statement)
        self.ranges = range_map(self.schema.name, splits)
        self.reference = sqlite3.connect(":memory:", isolation_level=None)
        self.reference.execute(create_sql_without_options(statement))
        self.shards: dict[int, sqlite3.Connection] = {}
        for descriptor in self.ranges.ranges:
            self.shards[descriptor.range_id] = sqlite3.connect(":memory:", isolation_level=None)
        planned = route(statement, (), self.ranges)
        for target in planned.targets:
            self.shards[target.range.range_id].execute(target.sql, target.params)

    def sharded(self, sql: str, params: Sequence[Value] = ()) -> Outcome:
        statement = analyze(sql, self.catalog)
        planned = route(statement, params, self.ranges)
        if isinstance(statement, Select):
            assert planned.select is not None
            results = [
                self.shards[t.range.range_id].execute(t.sql, t.params).fetchall()
                for t in planned.targets
            ]
            merged: ResultSet = merge_select(planned.select, results)
            return Outcome(merged.columns, list(merged.rows), -1)
        counts = [
            self.shards[t.range.range_id].execute(t.sql, t.params).rowcount for t in planned.targets
        ]
        return Outcome((), [], merge_rowcounts(counts))

    def single(self, sql: str, params: Sequence[Value] = ()) -> Outcome:
        cursor = self.reference.execute(sql, params)
        if cursor.description is None:
            return Outcome((), [], cursor.rowcount)
        columns = tuple(d[0] for d in cursor.description)
        return Outcome(columns, cursor.fetchall(), -1)

    def shard_rows(self) -> dict[int, list[tuple[Value, ...]]]:
        key = self.schema.primary_key
        return {
            range_id: connection.execute(
                f'SELECT * FROM {self.schema.name} ORDER BY "{key}"'
            ).fetchall()
            for range_id, connection in self.shards.items()
        }

    def all_rows(self) -> tuple[list[tuple[Value, ...]], list[tuple[Value, ...]]]:
        """(rows of all shards, rows of the single database), both in key order."""
        key = self.schema.primary_key
        sharded = sorted(
            (row for rows in self.shard_rows().values() for row in rows),
            key=lambda row: row[self.schema.key_index],  # type: ignore[arg-type,return-value]
        )
        single = self.reference.execute(
            f'SELECT * FROM {self.schema.name} ORDER BY "{key}"'
        ).fetchall()
        return sharded, single


def create_sql_without_options(statement: CreateTable) -> str:
    return statement.schema.create_sql
