"""Differential tests: a table split across K SQLite databases answers like one SQLite database.

Rows are inserted through shardb's INSERT splitting into shards cut by a random RangeMap, and
into one plain SQLite database. Generated statements (filters on the key and on other columns,
ORDER BY, LIMIT/OFFSET, aggregates, GROUP BY, HAVING, UPDATE, DELETE) run both ways and must
give the same result. Order is compared only where ORDER BY fully determines it. A failure
names the seed and the statement; ``pytest tests/sql/test_differential.py -k 'seed_N'`` replays.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from shardb.sql.values import Value
from sql.harness import Outcome, ShardedTable

INT_TABLE = (
    "CREATE TABLE t (id INTEGER PRIMARY KEY, grp TEXT, name TEXT COLLATE NOCASE, "
    "v INTEGER, r REAL) WITH (shards = 4)"
)
TEXT_TABLE = "CREATE TABLE s (k TEXT PRIMARY KEY, g INTEGER, v INTEGER)"
SEEDS = range(6)
QUERIES_PER_SEED = 60


def _int_row(rng: random.Random, key: int) -> tuple[Value, ...]:
    return (
        key,
        rng.choice(["a", "b", "c", None]),
        rng.choice(["x", "X", "y", "Y", "zz", None]),
        rng.choice([*range(-5, 20), None]),
        rng.choice([n / 2 for n in range(-6, 12)] + [None]),
    )


def _populate_int(rng: random.Random) -> ShardedTable:
    splits = sorted(rng.sample(range(-5, 110), rng.randint(1, 6)))
    table = ShardedTable(INT_TABLE, splits)
    keys = rng.sample(range(0, 100), 60)
    for start in range(0, len(keys), 7):
        batch = [_int_row(rng, key) for key in keys[start : start + 7]]
        placeholders = ", ".join("(?, ?, ?, ?, ?)" for _ in batch)
        sql = f"INSERT INTO t (id, grp, name, v, r) VALUES {placeholders}"
        params = [value for row in batch for value in row]
        assert table.sharded(sql, params).rowcount == table.single(sql, params).rowcount
    return table


def _key_predicate(rng: random.Random) -> tuple[str, list[Value]]:
    k = rng.randint(-5, 105)
    match rng.randrange(11):
        case 0:
            return f"id = {k}", []
        case 1:
            return "id = ?", [k]
        case 2:
            keys = rng.sample(range(-5, 105), rng.randint(0, 5))
            return f"id IN ({', '.join(map(str, keys))})", []
        case 3:
            return f"id BETWEEN {k} AND {k + rng.randint(-3, 30)}", []
        case 4:
            return f"id {rng.choice(['<', '<=', '>', '>='])} {k}", []
        case 5:
            return f"{k} {rng.choice(['<', '<=', '>', '>='])} id", []
        case 6:
            return f"id {rng.choice(['<', '>='])} {k + 0.5}", []
        case 7:
            return f"id = '{k}'", []
        case 8:
            return "id > ? AND id < ?", [k, k + rng.randint(0, 40)]
        case 9:
            return f"id = {k} OR id = {rng.randint(-5, 105)}", []
        case _:
            return f"NOT (id > {k})", []


def _other_predicate(rng: random.Random) -> tuple[str, list[Value]]:
    match rng.randrange(6):
        case 0:
            return f"v > {rng.randint(-5, 20)}", []
        case 1:
            return f"grp = '{rng.choice('abc')}'", []
        case 2:
            return f"name = '{rng.choice(['x', 'y', 'Y'])}'", []
        case 3:
            return "r IS NULL", []
        case 4:
            return "v = ?", [rng.randint(-5, 20)]
        case _:
            return f"r < {rng.randint(-3, 6)}", []


def _predicate(rng: random.Random, depth: int = 0) -> tuple[str, list[Value]]:
    choice = rng.randrange(10 if depth < 2 else 6)
    if choice < 4:
        return _key_predicate(rng)
    if choice < 6:
        return _other_predicate(rng)
    left, left_params = _predicate(rng, depth + 1)
    right, right_params = _predicate(rng, depth + 1)
    joiner = "AND" if choice < 8 else "OR"
    return f"({left}) {joiner} ({right})", left_params + right_params


def _where(rng: random.Random) -> tuple[str, list[Value]]:
    if rng.random() < 0.15:
        return "", []
    text, params = _predicate(rng)
    return f" WHERE {text}", params


def _limit(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return ""
    limit = rng.choice([0, 1, 3, 10, -1])
    return f" LIMIT {limit}" + (f" OFFSET {rng.randint(0, 6)}" if rng.random() < 0.5 else "")


def _plain_query(rng: random.Random) -> tuple[str, list[Value], bool]:
    columns = rng.choice(["*", "id, v", "id, name, r * 2 AS twice", "v + 1, id", "id AS x, grp"])
    where, params = _where(rng)
    if rng.random() < 0.3:
        return f"SELECT {columns} FROM t{where}", params, False
    term = rng.choice(["v", "name", "r DESC", "grp DESC", "v * -1", "r NULLS LAST", "2"])
    order = f" ORDER BY {term}, id {rng.choice(['ASC', 'DESC'])}"
    return f"SELECT {columns} FROM t{where}{order}{_limit(rng)}", params, True


def _aggregate_query(rng: random.Random) -> tuple[str, list[Value], bool]:
    where, params = _where(rng)
    aggregates = rng.sample(
        ["COUNT(*)", "COUNT(v)", "SUM(v)", "AVG(r)", "MIN(v)", "MAX(r)", "TOTAL(v)", "SUM(r)"],
        3,
    )
    if rng.random() < 0.4:
        return f"SELECT {', '.join(aggregates)} FROM t{where}", params, True
    key = rng.choice(["grp", "v % 3"])
    select = f"SELECT {key} AS g, {', '.join(aggregates)}, SUM(v) * 2 AS s2 FROM t{where}"
    sql = f"{select} GROUP BY {rng.choice([key, 'g', '1'])}"
    if rng.random() < 0.5:
        sql += f" HAVING COUNT(*) > {rng.randint(0, 6)}"
    if rng.random() < 0.6:
        order = rng.choice(["s2 DESC", "COUNT(*)", "3 DESC", "MAX(v) - MIN(v)"])
        sql += f" ORDER BY {order}, g" + _limit(rng)
        return sql, params, True
    return sql, params, False


def _canonical(rows: Sequence[tuple[Value, ...]]) -> list[tuple[Value, ...]]:
    return sorted(rows, key=repr)


def _check(table: ShardedTable, sql: str, params: list[Value], ordered: bool, seed: int) -> None:
    single = table.single(sql, params)
    sharded = table.sharded(sql, params)
    where = f"seed {seed}: {sql} {params}"
    assert sharded.columns == single.columns, where
    if ordered:
        assert sharded.rows == single.rows, where
    else:
        assert _canonical(sharded.rows) == _canonical(single.rows), where


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed_{s}")
def test_selects_match_single_database(seed: int) -> None:
    """SELECTs over a range-split table return what one SQLite database returns."""
    rng = random.Random(seed)
    table = _populate_int(rng)
    for _ in range(QUERIES_PER_SEED):
        if rng.random() < 0.5:
            sql, params, ordered = _plain_query(rng)
        else:
            sql, params, ordered = _aggregate_query(rng)
        _check(table, sql, params, ordered, seed)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed_{s}")
def test_limit_without_order_returns_a_subset_of_the_right_size(seed: int) -> None:
    """Without ORDER BY, LIMIT/OFFSET may pick any rows, but as many as SQLite picks."""
    rng = random.Random(1000 + seed)
    table = _populate_int(rng)
    for _ in range(10):
        where, params = _where(rng)
        base = f"SELECT id, v FROM t{where}"
        limit = f" LIMIT {rng.randint(0, 8)} OFFSET {rng.randint(0, 5)}"
        sharded = table.sharded(base + limit, params)
        single = table.single(base + limit, params)
        everything = table.single(base, params).rows
        assert len(sharded.rows) == len(single.rows), f"seed {seed}: {base + limit}"
        assert all(row in everything for row in sharded.rows)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed_{s}")
def test_writes_match_single_database(seed: int) -> None:
    """UPDATE, DELETE and INSERT OR REPLACE change the same rows as on one database, and every
    shard still holds only keys of its own range."""
    rng = random.Random(2000 + seed)
    table = _populate_int(rng)
    for _ in range(25):
        where, params = _where(rng)
        match rng.randrange(4):
            case 0:
                sql = f"UPDATE t SET v = v + 1, name = 'w'{where}"
            case 1:
                sql = f"DELETE FROM t{where}"
            case 2:
                sql = f"UPDATE t SET r = r * 2, grp = ?{where}"
                params = ["q", *params]
            case _:
                keys = rng.sample(range(-5, 110), 3)
                sql = "INSERT OR REPLACE INTO t (id, v) VALUES " + ", ".join(
                    f"({k}, {rng.randint(0, 9)})" for k in keys
                )
                params = []
        assert table.sharded(sql, params).rowcount == table.single(sql, params).rowcount, sql
        sharded_rows, single_rows = table.all_rows()
        assert sharded_rows == single_rows, f"seed {seed}: {sql} {params}"
    for descriptor in table.ranges.ranges:
        for row in table.shard_rows()[descriptor.range_id]:
            assert descriptor.contains(row[0])  # type: ignore[arg-type]


def _text_table(rng: random.Random) -> tuple[ShardedTable, list[str]]:
    alphabet = "abcXYZ019"
    keys = sorted({"".join(rng.choices(alphabet, k=rng.randint(1, 3))) for _ in range(50)})
    splits = rng.sample(keys, min(4, len(keys)))
    table = ShardedTable(TEXT_TABLE, splits)
    for key in keys:
        sql = "INSERT INTO s (k, g, v) VALUES (?, ?, ?)"
        params: list[Value] = [key, rng.randint(0, 3), rng.choice([None, *range(10)])]
        table.sharded(sql, params)
        table.single(sql, params)
    return table, keys


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed_{s}")
def test_text_keys_match_single_database(seed: int) -> None:
    """A TEXT primary key routes by binary order, and integer literals compare as text."""
    rng = random.Random(3000 + seed)
    table, keys = _text_table(rng)
    for _ in range(30):
        key = rng.choice([*keys, "b", "Z", "0"])
        predicate = rng.choice(
            [
                f"k = '{key}'",
                f"k >= '{key}'",
                f"k < '{key}' AND v > 3",
                f"k BETWEEN '{key}' AND 'c'",
                "k = 1",
                "k > 5",
                f"k IN ('{key}', 'a', '9')",
                "g = 2",
            ]
        )
        sql = rng.choice(
            [
                f"SELECT k, v FROM s WHERE {predicate} ORDER BY k DESC",
                f"SELECT g, COUNT(*), MAX(k) FROM s WHERE {predicate} GROUP BY g ORDER BY g",
            ]
        )
        _check(table, sql, [], True, seed)


def test_outcome_comparison_sees_differences() -> None:
    """The comparison used above does fail on a wrong answer (guards against a vacuous test)."""
    rng = random.Random(7)
    table = _populate_int(rng)
    sql = "SELECT id FROM t ORDER BY id"
    single = table.single(sql)
    wrong = Outcome(single.columns, single.rows[1:], -1)
    assert wrong.rows != single.rows
    assert table.sharded(sql).rows == single.rows
