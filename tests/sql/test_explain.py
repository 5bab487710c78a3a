"""EXPLAIN rows, SHOW RANGES / SHOW RANGE FOR ROW, SPLIT AT keys, statement splitting."""

from __future__ import annotations

import pytest

from shardb.sql import (
    EXPLAIN_COLUMNS,
    RANGE_COLUMNS,
    Catalog,
    Explain,
    RoutingError,
    ShowRangeForRow,
    ShowRanges,
    SplitAt,
    analyze,
    apply_ddl,
    explain,
    show_range_for_row,
    show_ranges,
    split_keys,
    split_statements,
)
from sql.harness import range_map


@pytest.fixture
def catalog() -> Catalog:
    return apply_ddl(
        Catalog(), analyze("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)", Catalog())
    )


RANGES = range_map("t", [10, 20])


def test_explain_lists_route_merge_and_each_range_sql(catalog: Catalog) -> None:
    statement = analyze(
        "EXPLAIN SELECT v, COUNT(*) FROM t WHERE id >= ? GROUP BY v ORDER BY 2 DESC", catalog
    )
    assert isinstance(statement, Explain)
    result = explain(statement, (15,), RANGES)
    assert result.columns == EXPLAIN_COLUMNS
    steps = [row[0] for row in result.rows]
    assert steps == ["route", "merge", "range", "range"]
    assert result.rows[0][3] == "range SELECT on t: 2 of 3 ranges; keys [15, +inf)"
    merge = result.rows[1][3]
    assert isinstance(merge, str) and merge.startswith("combine partial aggregates (COUNT)")
    assert result.rows[2][1:3] == (2, 101)
    assert result.rows[3][3] == (
        'SELECT v AS __shardb_g0, COUNT(*) AS __shardb_a0 FROM t WHERE (id >= ?) AND "id" >= ? '
        "GROUP BY v -- params (15, 20)"
    )


def test_explain_of_a_write_has_no_merge_step(catalog: Catalog) -> None:
    statement = analyze("EXPLAIN DELETE FROM t WHERE id IN (1, 25)", catalog)
    assert isinstance(statement, Explain)
    rows = explain(statement, (), RANGES).rows
    assert [row[0] for row in rows] == ["route", "range", "range"]
    assert rows[0][3] == "multi_point DELETE on t: 2 of 3 ranges; keys 1, 25"


def test_show_ranges_lists_descriptors(catalog: Catalog) -> None:
    statement = analyze("SHOW RANGES FROM TABLE t", catalog)
    assert isinstance(statement, ShowRanges)
    result = show_ranges(statement, RANGES)
    assert result.columns == RANGE_COLUMNS
    assert result.rows == (
        (1, None, 10, 100, "1,2,3", "raft", 1),
        (2, 10, 20, 101, "1,2,3", "raft", 1),
        (3, 20, None, 102, "1,2,3", "raft", 1),
    )


def test_show_range_for_row_finds_the_holder(catalog: Catalog) -> None:
    statement = analyze("SHOW RANGE FROM TABLE t FOR ROW (?)", catalog)
    assert isinstance(statement, ShowRangeForRow)
    assert show_range_for_row(statement, ("10",), RANGES).rows[0][0] == 2


def test_split_keys_are_normalized_sorted_and_new(catalog: Catalog) -> None:
    statement = analyze("ALTER TABLE t SPLIT AT VALUES (15), (?), (5)", catalog)
    assert isinstance(statement, SplitAt)
    assert split_keys(statement, ("30",), RANGES) == (5, 15, 30)
    existing = analyze("ALTER TABLE t SPLIT AT VALUES (20)", catalog)
    assert isinstance(existing, SplitAt)
    with pytest.raises(RoutingError, match="already the start"):
        split_keys(existing, (), RANGES)


def test_statements_split_on_semicolons_outside_strings_and_comments() -> None:
    script = "SELECT ';' FROM t; -- a comment; here\nSHOW RANGES FROM TABLE t;;EXPLAIN SELECT 1"
    assert split_statements(script) == [
        "SELECT ';' FROM t",
        "SHOW RANGES FROM TABLE t",
        "EXPLAIN SELECT 1",
    ]
