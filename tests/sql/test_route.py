"""Routing: route kinds, range confinement, INSERT splitting, and properties over random maps."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardb.sql import (
    Catalog,
    ParameterError,
    RouteKind,
    RoutingError,
    SqlError,
    analyze,
    analyze_script,
    apply_ddl,
    normalize_key,
    route,
)
from shardb.sql.catalog import KeyType
from sql.harness import range_map

SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, name TEXT)"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    result = Catalog()
    for statement in analyze_script(
        SCHEMA + "; CREATE TABLE s (k TEXT PRIMARY KEY, x INTEGER)", Catalog()
    ):
        result = apply_ddl(result, statement)
    return result


RANGES = range_map("t", [10, 20, 30])  # (-inf,10) [10,20) [20,30) [30,+inf)


def _route(
    catalog: Catalog, sql: str, params: tuple[object, ...] = ()
) -> tuple[RouteKind, list[int]]:
    planned = route(analyze(sql, catalog), params, RANGES)
    return planned.kind, [t.range.range_id for t in planned.targets]


@pytest.mark.parametrize(
    ("sql", "params", "kind", "ranges"),
    [
        ("SELECT * FROM t WHERE id = 15", (), RouteKind.POINT, [2]),
        ("SELECT * FROM t WHERE id = ?", (35,), RouteKind.POINT, [4]),
        ("SELECT * FROM t WHERE 25 = id AND v > 3", (), RouteKind.POINT, [3]),
        ("SELECT * FROM t WHERE t.id IS 10", (), RouteKind.POINT, [2]),
        ("SELECT * FROM t AS x WHERE x.id = '12'", (), RouteKind.POINT, [2]),
        ("SELECT * FROM t WHERE id IN (1, 35)", (), RouteKind.MULTI_POINT, [1, 4]),
        ("SELECT * FROM t WHERE id = 1 OR id = ?", (2,), RouteKind.MULTI_POINT, [1]),
        ("SELECT * FROM t WHERE id IN ()", (), RouteKind.MULTI_POINT, []),
        ("SELECT * FROM t WHERE id = 1 AND id = 2", (), RouteKind.MULTI_POINT, []),
        ("SELECT * FROM t WHERE id = NULL", (), RouteKind.MULTI_POINT, []),
        ("SELECT * FROM t WHERE id = 2.5", (), RouteKind.MULTI_POINT, []),
        ("SELECT * FROM t WHERE id >= 20", (), RouteKind.RANGE, [3, 4]),
        ("SELECT * FROM t WHERE id < 10", (), RouteKind.RANGE, [1]),
        ("SELECT * FROM t WHERE id <= 10", (), RouteKind.RANGE, [1, 2]),
        ("SELECT * FROM t WHERE id > 9.5 AND id < 19.5", (), RouteKind.RANGE, [2]),
        ("SELECT * FROM t WHERE id BETWEEN ? AND ?", (12, 25), RouteKind.RANGE, [2, 3]),
        ("SELECT * FROM t WHERE id > 5 AND id < 15 AND v = 1", (), RouteKind.RANGE, [1, 2]),
        ("SELECT * FROM t WHERE (id < 5 OR id > 32) AND v = 1", (), RouteKind.RANGE, [1, 4]),
        ("SELECT * FROM t", (), RouteKind.SCATTER, [1, 2, 3, 4]),
        ("SELECT * FROM t WHERE v = 3", (), RouteKind.SCATTER, [1, 2, 3, 4]),
        ("SELECT * FROM t WHERE id = 3 OR v = 3", (), RouteKind.SCATTER, [1, 2, 3, 4]),
        ("SELECT * FROM t WHERE NOT id = 3", (), RouteKind.SCATTER, [1, 2, 3, 4]),
        ("SELECT * FROM t WHERE id + 0 = 3", (), RouteKind.SCATTER, [1, 2, 3, 4]),
        ("SELECT * FROM t WHERE id = 'abc'", (), RouteKind.SCATTER, [1, 2, 3, 4]),
        ("UPDATE t SET v = 1 WHERE id = 21", (), RouteKind.POINT, [3]),
        ("DELETE FROM t WHERE id IN (?, ?)", (0, 30), RouteKind.MULTI_POINT, [1, 4]),
    ],
)
def test_route_kinds(
    catalog: Catalog,
    sql: str,
    params: tuple[object, ...],
    kind: RouteKind,
    ranges: list[int],
) -> None:
    """point / multi_point / range / scatter, and only the ranges that can hold matches."""
    assert _route(catalog, sql, params) == (kind, ranges)


def test_sub_statements_are_confined_to_their_range(catalog: Catalog) -> None:
    """Each sub-statement carries its range's bounds, as bound parameters after the user's."""
    planned = route(analyze("DELETE FROM t WHERE v = ? OR id > 25", catalog), (7,), RANGES)
    by_range = {t.range.range_id: (t.sql, t.params) for t in planned.targets}
    assert by_range[1] == ('DELETE FROM t WHERE (v = ? OR id > 25) AND "id" < ?', (7, 10))
    assert by_range[2] == (
        'DELETE FROM t WHERE (v = ? OR id > 25) AND "id" >= ? AND "id" < ?',
        (7, 10, 20),
    )
    assert by_range[4] == ('DELETE FROM t WHERE (v = ? OR id > 25) AND "id" >= ?', (7, 30))


def test_confinement_keeps_rows_outside_the_range_untouched(catalog: Catalog) -> None:
    """A range whose SQLite holds extra rows (e.g. before a split is cleaned) ignores them."""
    db = sqlite3.connect(":memory:")
    db.execute(SCHEMA)
    db.executemany("INSERT INTO t VALUES (?, 0, 'x')", [(i,) for i in range(40)])
    planned = route(analyze("UPDATE t SET v = 1", catalog), (), RANGES)
    second = next(t for t in planned.targets if t.range.range_id == 2)
    assert db.execute(second.sql, second.params).rowcount == 10
    assert [r[0] for r in db.execute("SELECT id FROM t WHERE v = 1")] == list(range(10, 20))


def test_insert_rows_are_split_by_range_with_their_parameters(catalog: Catalog) -> None:
    statement = analyze(
        "INSERT INTO t (id, v, name) VALUES (?, ?, 'a'), (31, 1, ?), (?, 2, 'c'), (5, ?, 'd')",
        catalog,
    )
    planned = route(statement, (25, 100, "bee", "12", 200), RANGES)
    assert planned.kind is RouteKind.MULTI_POINT
    assert [(t.range.range_id, t.sql, t.params) for t in planned.targets] == [
        (1, "INSERT INTO t (id, v, name) VALUES (5, ?, 'd')", (200,)),
        (2, "INSERT INTO t (id, v, name) VALUES (?, 2, 'c')", ("12",)),
        (3, "INSERT INTO t (id, v, name) VALUES (?, ?, 'a')", (25, 100)),
        (4, "INSERT INTO t (id, v, name) VALUES (31, 1, ?)", ("bee",)),
    ]


def test_insert_of_one_row_is_a_point(catalog: Catalog) -> None:
    assert _route(catalog, "INSERT INTO t VALUES (3, 1, 'x')") == (RouteKind.POINT, [1])


@pytest.mark.parametrize("key", ["abc", 2.5, b"\x01", 2**70, None])
def test_insert_refuses_keys_the_range_map_cannot_order(catalog: Catalog, key: object) -> None:
    with pytest.raises(RoutingError):
        route(analyze("INSERT INTO t (id) VALUES (?)", catalog), (key,), RANGES)


def test_key_normalization_follows_sqlite_affinity() -> None:
    """INTEGER keys take integral REALs and integer text; TEXT keys take integers as text."""
    assert normalize_key("42", KeyType.INTEGER) == 42
    assert normalize_key(7.0, KeyType.INTEGER) == 7
    assert normalize_key(True, KeyType.INTEGER) == 1
    assert normalize_key(5, KeyType.TEXT) == "5"
    with pytest.raises(RoutingError):
        normalize_key(1.5, KeyType.TEXT)


def test_text_keys_compare_integers_as_text(catalog: Catalog) -> None:
    """A TEXT key column applies TEXT affinity to a numeric value before comparing."""
    ranges = range_map("s", ["5", "m"])
    planned = route(analyze("SELECT * FROM s WHERE k = 7", catalog), (), ranges)
    assert [t.range.range_id for t in planned.targets] == [2]


def test_parameter_count_and_types_are_checked(catalog: Catalog) -> None:
    statement = analyze("SELECT * FROM t WHERE id = ?", catalog)
    with pytest.raises(ParameterError, match="1 parameters, 2 were given"):
        route(statement, (1, 2), RANGES)
    with pytest.raises(ParameterError, match="unsupported parameter type"):
        route(statement, ([1],), RANGES)


def test_range_map_of_another_table_is_refused(catalog: Catalog) -> None:
    with pytest.raises(SqlError, match="range map of s"):
        route(analyze("SELECT * FROM t", catalog), (), range_map("s", []))


def test_ddl_goes_to_every_range(catalog: Catalog) -> None:
    planned = route(analyze("CREATE INDEX t_v ON t (v)", catalog), (), RANGES)
    assert [t.sql for t in planned.targets] == ["CREATE INDEX t_v ON t (v)"] * 4
    noop = route(analyze("DROP TABLE IF EXISTS gone", catalog), (), None)
    assert noop.targets == ()


# --- properties ----------------------------------------------------------------------------------

# Small domains make split points and predicate bounds collide often, which is where an
# off-by-one in narrowing would show.
KEYS = range(-1, 12)
POOL = list(range(-2, 14))
split_points = st.lists(st.sampled_from(POOL), min_size=1, max_size=6, unique=True).map(sorted)


@settings(max_examples=100, deadline=None)
@given(splits=split_points, keys=st.lists(st.integers(-100, 100), max_size=20))
def test_every_key_lives_in_exactly_one_range(splits: list[int], keys: list[int]) -> None:
    """Random range maps tile the key space: each key is in one range, the one lookup finds,
    and a point query routes to exactly that range."""
    ranges = range_map("t", splits)
    catalog = apply_ddl(Catalog(), analyze(SCHEMA, Catalog()))
    statement = analyze("SELECT * FROM t WHERE id = ?", catalog)
    for key in keys:
        holders = [r for r in ranges.ranges if r.contains(key)]
        assert holders == [ranges.lookup(key)]
        planned = route(statement, (key,), ranges)
        assert [t.range for t in planned.targets] == holders


def _atom() -> st.SearchStrategy[str]:
    value = st.one_of(
        st.sampled_from(POOL).map(str),
        st.sampled_from(["2.5", "'7'", "-1", "NULL", "9.0", "-0.5"]),
    )
    return st.one_of(
        st.tuples(st.sampled_from(["=", "<", "<=", ">", ">=", "IS"]), value).map(
            lambda p: f"id {p[0]} {p[1]}"
        ),
        st.tuples(value, st.sampled_from(["<", ">="])).map(lambda p: f"{p[0]} {p[1]} id"),
        st.lists(value, max_size=4).map(lambda vs: f"id IN ({', '.join(vs)})"),
        st.tuples(value, value).map(lambda p: f"id BETWEEN {p[0]} AND {p[1]}"),
        st.integers(0, 9).map(lambda n: f"v > {n}"),
    )


def _combined(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    both = st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(
        lambda p: f"({p[0]}) {p[1]} ({p[2]})"
    )
    # NOT makes the router give up (scatter), so keep it rare to exercise narrowing.
    return st.one_of(both, both, both, inner.map(lambda p: f"NOT ({p})"))


predicates = st.recursive(_atom(), _combined, max_leaves=5)

_FULL = sqlite3.connect(":memory:")
_FULL.execute(SCHEMA)
_FULL.executemany("INSERT INTO t VALUES (?, ?, 'x')", [(k, (k * 7) % 10) for k in KEYS])


@settings(max_examples=200, deadline=None)
@given(splits=split_points, predicate=predicates)
def test_routed_sub_statements_cover_exactly_the_full_scan(
    splits: list[int], predicate: str
) -> None:
    """Over any range map, the routed sub-statements (run where every range could see every
    row, so only confinement separates them) return exactly the rows of a full scan, each
    once; and no range left out holds a matching row."""
    ranges = range_map("t", splits)
    catalog = apply_ddl(Catalog(), analyze(SCHEMA, Catalog()))
    sql = f"SELECT id FROM t WHERE {predicate}"
    expected = sorted(r[0] for r in _FULL.execute(sql))
    planned = route(analyze(sql, catalog), (), ranges)
    got = sorted(r[0] for t in planned.targets for r in _FULL.execute(t.sql, t.params))
    assert got == expected
    targeted = {t.range.range_id for t in planned.targets}
    for descriptor in ranges.ranges:
        if descriptor.range_id not in targeted:
            assert not any(descriptor.contains(k) for k in expected)
