"""Merging per-range results: SQLite's NULL rules, ordering, names, and what is refused."""

from __future__ import annotations

import pytest

from shardb.sql import (
    Catalog,
    MergeError,
    MergeMode,
    ParameterError,
    Select,
    SqlError,
    UnsupportedFeature,
    analyze,
    apply_ddl,
    merge_rowcounts,
    merge_select,
    route,
)
from shardb.sql.merge import plan_select
from shardb.sql.values import Collation, Value, compare, group_key
from sql.harness import ShardedTable

SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, g TEXT, n TEXT COLLATE NOCASE, v INTEGER, r REAL)"


@pytest.fixture
def table() -> ShardedTable:
    sharded = ShardedTable(SCHEMA, [10, 20])
    rows = [
        (1, "a", "x", 5, 0.5),
        (2, "b", "Y", None, None),
        (12, "a", "X", 7, 1.5),
        (15, None, "y", -3, None),
        (25, "b", None, 9223372036854775806, 2.0),
    ]
    for row in rows:
        sql = "INSERT INTO t VALUES (?, ?, ?, ?, ?)"
        sharded.sharded(sql, row)
        sharded.single(sql, row)
    return sharded


def _same(table: ShardedTable, sql: str, params: tuple[Value, ...] = ()) -> list[tuple[Value, ...]]:
    sharded = table.sharded(sql, params)
    single = table.single(sql, params)
    assert sharded.columns == single.columns
    assert sharded.rows == single.rows
    return sharded.rows


def test_aggregates_over_no_rows_follow_sqlite(table: ShardedTable) -> None:
    """SUM of no rows is NULL, COUNT is 0, TOTAL is 0.0, AVG/MIN/MAX are NULL: one row."""
    rows = _same(
        table,
        "SELECT COUNT(*), COUNT(v), SUM(v), TOTAL(v), AVG(v), MIN(v), MAX(n) FROM t WHERE v > 1e30",
    )
    assert rows == [(0, 0, None, 0.0, None, None, None)]


def test_aggregates_over_no_ranges_still_give_one_row(table: ShardedTable) -> None:
    """A contradiction routes to no range at all; the aggregate row is still produced."""
    statement = analyze("SELECT COUNT(*), SUM(v) FROM t WHERE id = 1 AND id = 2", table.catalog)
    planned = route(statement, (), table.ranges)
    assert planned.targets == ()
    assert planned.select is not None
    assert merge_select(planned.select, []).rows == ((0, None),)


def test_min_max_ignore_nulls_and_use_the_column_collation(table: ShardedTable) -> None:
    """MIN/MAX skip NULLs; on a NOCASE column 'x' and 'X' compare equal."""
    rows = _same(table, "SELECT MIN(v), MAX(v), MIN(r), MAX(n), MIN(g) FROM t")
    assert rows[0][0] == -3


def test_sum_of_reals_is_real_and_of_integers_integer(table: ShardedTable) -> None:
    rows = _same(table, "SELECT SUM(r), SUM(v) FROM t WHERE id < 20")
    assert isinstance(rows[0][0], float) and isinstance(rows[0][1], int)


def test_sum_overflow_across_ranges_is_an_error(table: ShardedTable) -> None:
    """SQLite raises "integer overflow" for SUM; so does the merge when partials overflow."""
    table.sharded("INSERT INTO t (id, v) VALUES (3, 9223372036854775806)")
    with pytest.raises(MergeError, match="integer overflow"):
        table.sharded("SELECT SUM(v) FROM t WHERE v > 100")


def test_group_by_with_having_and_order(table: ShardedTable) -> None:
    """HAVING filters merged groups; ORDER BY and LIMIT apply after it."""
    rows = _same(
        table,
        "SELECT g, COUNT(*) AS c, AVG(r) FROM t GROUP BY g HAVING c >= 1 AND g IS NOT NULL "
        "ORDER BY c DESC, g LIMIT 5",
    )
    assert rows == [("a", 2, 1.0), ("b", 2, 2.0)]


def test_order_by_respects_nulls_and_collations(table: ShardedTable) -> None:
    _same(table, "SELECT id, n FROM t ORDER BY n, id")
    _same(table, "SELECT id, r FROM t ORDER BY r DESC, id")
    _same(table, "SELECT id, r FROM t ORDER BY r NULLS LAST, id DESC")
    _same(table, "SELECT id, n FROM t ORDER BY n COLLATE BINARY DESC, id")


def test_order_by_an_alias_and_a_hidden_expression(table: ShardedTable) -> None:
    """ORDER BY resolves aliases before columns, and sorts by expressions not selected."""
    _same(table, "SELECT v AS id, id AS v FROM t ORDER BY id, v")
    _same(table, "SELECT id FROM t ORDER BY -id LIMIT 2 OFFSET 1")
    _same(table, "SELECT id, v * 2 AS w FROM t ORDER BY w + 1 DESC, id")


def test_limit_and_offset_may_be_parameters(table: ShardedTable) -> None:
    rows = _same(table, "SELECT id FROM t ORDER BY id LIMIT ? OFFSET ?", (2, 1))
    assert rows == [(2,), (12,)]
    with pytest.raises(ParameterError, match="LIMIT must be an integer"):
        table.sharded("SELECT id FROM t LIMIT ?", ("x",))


def test_negative_limit_means_no_limit(table: ShardedTable) -> None:
    assert len(_same(table, "SELECT id FROM t ORDER BY id LIMIT -1 OFFSET 1")) == 4


def test_plain_rows_are_concatenated_in_range_order(table: ShardedTable) -> None:
    statement = analyze("SELECT id FROM t", table.catalog)
    assert isinstance(statement, Select)
    assert plan_select(statement, ()).mode is MergeMode.CONCAT
    assert table.sharded("SELECT id FROM t").rows == [(1,), (2,), (12,), (15,), (25,)]


def test_order_by_out_of_range_is_an_error(table: ShardedTable) -> None:
    with pytest.raises(SqlError, match="ORDER BY term out of range"):
        table.sharded("SELECT id FROM t ORDER BY 3")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id, COUNT(*) FROM t",
        "SELECT g, v FROM t GROUP BY g",
        "SELECT g, upper(g) || COUNT(*) FROM t GROUP BY g",
    ],
)
def test_what_cannot_be_merged_is_refused_when_planned(table: ShardedTable, sql: str) -> None:
    """Bare columns and functions over aggregates are refused before anything runs."""
    with pytest.raises(UnsupportedFeature):
        table.sharded(sql)


def test_expressions_over_aggregates_follow_sqlite_arithmetic(table: ShardedTable) -> None:
    """Integer division truncates, division by zero is NULL, comparisons give 0/1/NULL."""
    _same(
        table,
        "SELECT g, SUM(v) / 2, SUM(v) % 3, COUNT(*) / 0, MAX(r) > 1, MIN(v) IN (5, NULL), "
        "-COUNT(*), COUNT(*) BETWEEN 1 AND 1 FROM t GROUP BY g ORDER BY g",
    )


def test_rowcounts_add_up() -> None:
    """Each row lives in one range, so the rows changed add up across ranges."""
    assert merge_rowcounts([2, 0, 5]) == 7


def test_sqlite_value_order() -> None:
    """NULL < numbers (int and real compared exactly) < text < blob; collations fold text."""
    ordered = [None, -1, 0.5, 1, 2**62, "A", "a", b"\x00"]
    for i, left in enumerate(ordered):
        for right in ordered[i + 1 :]:
            assert compare(left, right) == -1
            assert compare(right, left) == 1
    assert compare(1, 1.0) == 0
    assert compare("ABC", "abc", Collation.NOCASE) == 0
    assert compare("a  ", "a", Collation.RTRIM) == 0
    assert compare("É", "é", Collation.NOCASE) != 0  # NOCASE folds ASCII only
    assert group_key(1) == group_key(1.0)


def test_catalog_fixture_is_built_through_analysis() -> None:
    """The harness builds its catalog with the public API (guards the fixtures above)."""
    catalog = apply_ddl(Catalog(), analyze(SCHEMA, Catalog()))
    assert catalog.table("t").primary_key == "id"
