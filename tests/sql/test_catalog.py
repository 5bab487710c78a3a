"""CREATE TABLE / CREATE INDEX parsing into schemas, the WITH options pre-parser, the catalog."""

from __future__ import annotations

import sqlite3

import pytest

from consensus.backends import Backend
from shardb.sql import Catalog, KeyType, SchemaError, SqlSyntaxError, UnknownTable
from shardb.sql.catalog import IndexSchema, parse_create_index, parse_create_table
from shardb.sql.values import Affinity, Collation


def test_columns_keep_their_declared_types_as_written() -> None:
    """Declared types decide SQLite affinity, so they are kept verbatim (not normalized)."""
    parts = parse_create_table(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a UNSIGNED BIG INT, b VARCHAR(10) NOT NULL, "
        "c, d DOUBLE PRECISION DEFAULT 0.5, e BLOB, f DATETIME)"
    )
    schema = parts.schema
    assert [c.declared_type for c in schema.columns] == [
        "INTEGER",
        "UNSIGNED BIG INT",
        "VARCHAR(10)",
        "",
        "DOUBLE PRECISION",
        "BLOB",
        "DATETIME",
    ]
    assert [c.affinity for c in schema.columns] == [
        Affinity.INTEGER,
        Affinity.INTEGER,
        Affinity.TEXT,
        Affinity.BLOB,
        Affinity.REAL,
        Affinity.BLOB,
        Affinity.NUMERIC,
    ]


def test_with_options_are_read_and_cut_from_the_shard_sql() -> None:
    """WITH (shards = N, backend = '...') configures shardb; SQLite never sees it."""
    sql = "CREATE TABLE t (id TEXT PRIMARY KEY, x) WITH (shards = 8, backend = 'paxos')"
    schema = parse_create_table(sql).schema
    assert schema.shards == 8
    assert schema.backend is Backend.PAXOS
    assert schema.key_type is KeyType.TEXT
    assert schema.create_sql == "CREATE TABLE t (id TEXT PRIMARY KEY, x)"
    sqlite3.connect(":memory:").execute(schema.create_sql)  # the shard text is valid SQLite


def test_options_default_to_one_raft_range() -> None:
    schema = parse_create_table("CREATE TABLE t (id INTEGER PRIMARY KEY) STRICT").schema
    assert (schema.shards, schema.backend) == (1, None)  # the cluster's default
    assert schema.create_sql == "CREATE TABLE t (id INTEGER PRIMARY KEY) STRICT"


def test_table_level_primary_key_and_collations_are_read() -> None:
    schema = parse_create_table(
        "CREATE TABLE t (k TEXT NOT NULL, n TEXT COLLATE NOCASE, r TEXT COLLATE rtrim, "
        "CONSTRAINT pk PRIMARY KEY (k), CHECK (n <> ''))"
    ).schema
    assert schema.primary_key == "k"
    assert [c.collation for c in schema.columns] == [
        Collation.BINARY,
        Collation.NOCASE,
        Collation.RTRIM,
    ]


def test_defaults_that_spell_keywords_are_not_constraints() -> None:
    """A DEFAULT 'UNIQUE' string is a value, not a UNIQUE constraint."""
    schema = parse_create_table(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT DEFAULT 'UNIQUE')"
    ).schema
    assert schema.column_names == ("id", "a")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("CREATE TABLE t (a INTEGER, b INTEGER, PRIMARY KEY (a, b))", "composite"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY, b INTEGER PRIMARY KEY)", "composite"),
        ("CREATE TABLE t (a INTEGER)", "needs a PRIMARY KEY"),
        ("CREATE TABLE t (a INT PRIMARY KEY)", "INTEGER or TEXT"),
        ("CREATE TABLE t (a REAL PRIMARY KEY)", "INTEGER or TEXT"),
        ("CREATE TABLE t (a PRIMARY KEY)", "INTEGER or TEXT"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY) WITHOUT ROWID", "WITHOUT ROWID"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY DESC)", "DESC"),
        ("CREATE TABLE t (a INTEGER, PRIMARY KEY (a DESC))", "DESC"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT)", "AUTOINCREMENT"),
        ("CREATE TABLE t (a TEXT PRIMARY KEY COLLATE NOCASE)", "collation"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT UNIQUE)", "UNIQUE"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY, b, UNIQUE (b))", "UNIQUE"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY, b REFERENCES u (x))", "foreign keys"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY, b, FOREIGN KEY (b) REFERENCES u)", "FOREIGN"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY, b AS (a + 1))", "generated"),
        ("CREATE TEMP TABLE t (a INTEGER PRIMARY KEY)", "temporary"),
        ("CREATE TABLE t AS SELECT 1", "AS SELECT"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY) WITH (shards = 0)", "between 1 and"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY) WITH (shards = 'x')", "positive integer"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY) WITH (backend = 'zab')", "backend must be"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY) WITH (color = 1)", "unknown table option"),
        ("CREATE TABLE t (a INTEGER PRIMARY KEY) WITH (shards = 1, shards = 2)", "twice"),
    ],
)
def test_unshardable_tables_are_refused_with_a_reason(sql: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        parse_create_table(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (a INTEGER PRIMARY KEY) WITH shards = 2",
        "CREATE TABLE t (a INTEGER PRIMARY KEY) WITH (shards 2)",
        "CREATE TABLE t (a INTEGER PRIMARY KEY) WITH (shards = 2) STRICT",
        "CREATE TABLE t (a INTEGER PRIMARY KEY) FOO",
        "CREATE TABLE t",
        "CREATE TABLE (a INTEGER PRIMARY KEY)",
    ],
)
def test_malformed_options_are_syntax_errors(sql: str) -> None:
    with pytest.raises(SqlSyntaxError):
        parse_create_table(sql)


def test_unique_indexes_are_refused_and_plain_ones_read() -> None:
    """A UNIQUE index could only be checked per range, so it is refused."""
    with pytest.raises(SchemaError, match="UNIQUE"):
        parse_create_index("CREATE UNIQUE INDEX i ON t (a)")
    parts = parse_create_index("CREATE INDEX IF NOT EXISTS i ON t (a, b) WHERE a > 0")
    assert parts.if_not_exists
    assert parts.index == IndexSchema(
        name="i", table="t", create_sql="CREATE INDEX IF NOT EXISTS i ON t (a, b) WHERE a > 0"
    )


def test_catalog_is_immutable_and_case_insensitive() -> None:
    schema = parse_create_table("CREATE TABLE Items (id INTEGER PRIMARY KEY)").schema
    empty = Catalog()
    catalog = empty.with_table(schema)
    assert empty.tables == ()
    assert catalog.table("ITEMS") is schema
    index = IndexSchema(name="i", table="Items", create_sql="CREATE INDEX i ON Items (id)")
    with_index = catalog.with_index(index)
    assert with_index.index("I") is index
    dropped = with_index.without_table("items")
    assert dropped == Catalog()  # dropping a table drops its indexes
    with pytest.raises(UnknownTable):
        dropped.table("items")
    with pytest.raises(SchemaError, match="already exists"):
        catalog.with_table(schema)
