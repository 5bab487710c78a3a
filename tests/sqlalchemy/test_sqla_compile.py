"""The shardb dialect without a cluster: URLs, the DDL it emits, and the DDL it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Uuid,
    exc,
)
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateTable

from shardb.sqlalchemy import ShardbDialect


def connect_args(url: str) -> dict[str, Any]:
    cargs, cparams = ShardbDialect().create_connect_args(make_url(url))
    assert list(cargs) == []
    return dict(cparams)


def ddl(table: Table) -> str:
    return " ".join(str(CreateTable(table).compile(dialect=ShardbDialect())).split())


def test_url_names_gateways_and_driver_options() -> None:
    assert connect_args("shardb://127.0.0.1:7001") == {"address": ["127.0.0.1:7001"]}
    assert connect_args(
        "shardb://h1:7001?host=h2:7002&host=h3:7003&consistency=stale&timeout=2.5"
        "&max_staleness_ms=900&trace=true"
    ) == {
        "address": ["h1:7001", "h2:7002", "h3:7003"],
        "consistency": "stale",
        "timeout": 2.5,
        "max_staleness_ms": 900,
        "trace": True,
    }
    assert connect_args("shardb://?host=h2:7002") == {"address": ["h2:7002"]}
    assert connect_args("shardb://[::1]:7001") == {"address": ["[::1]:7001"]}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "shardb://h1:7001?consistency=lease&color=red",
            r"unknown shardb URL option\(s\) color \(known: consistency, host",
        ),
        ("shardb://h1", "needs a port"),
        ("shardb://", "names no gateway"),
        ("shardb://h1:7001/mydb", "one database per cluster"),
        ("shardb://me:secret@h1:7001", "no authentication"),
    ],
)
def test_url_mistakes_are_explained(url: str, message: str) -> None:
    with pytest.raises(exc.ArgumentError, match=message):
        connect_args(url)


@pytest.mark.parametrize(
    ("key", "declared"),
    [
        (Column("id", Integer, primary_key=True), "id INTEGER NOT NULL"),
        (Column("id", BigInteger, primary_key=True), "id INTEGER NOT NULL"),
        (Column("id", String(36), primary_key=True), "id TEXT NOT NULL"),
        (Column("id", Uuid, primary_key=True), "id TEXT NOT NULL"),
    ],
)
def test_primary_keys_are_declared_with_a_key_type_ranges_are_cut_on(
    key: Column[Any], declared: str
) -> None:
    """The gateway accepts INTEGER and TEXT keys only (one key type per table's ranges)."""
    table = Table("t", MetaData(), key, Column("v", String(10)))
    text = ddl(table)
    assert text.startswith(f"CREATE TABLE t ( {declared}, v VARCHAR(10), PRIMARY KEY (id) )")


def test_other_columns_keep_sqlites_types() -> None:
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("n", BigInteger))
    assert "n BIGINT" in ddl(table)


def test_shardb_table_options_become_the_with_clause() -> None:
    table = Table(
        "t",
        MetaData(),
        Column("id", Integer, primary_key=True),
        shardb_shards=4,
        shardb_backend="paxos",
    )
    assert ddl(table).endswith(") WITH (shards = 4, backend = 'paxos')")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (Table("t", MetaData(), Column("v", Integer)), "needs a primary key"),
        (
            Table(
                "t",
                MetaData(),
                Column("a", Integer, primary_key=True),
                Column("b", Integer, primary_key=True),
            ),
            "composite primary keys are not supported",
        ),
        (
            Table("t", MetaData(), Column("id", Numeric, primary_key=True)),
            "use an integer or a string type",
        ),
        (
            Table(
                "t", MetaData(), Column("id", Integer, primary_key=True), sqlite_autoincrement=True
            ),
            "sqlite_autoincrement is not supported",
        ),
        (
            Table(
                "t", MetaData(), Column("id", Integer, primary_key=True), sqlite_with_rowid=False
            ),
            "WITHOUT ROWID",
        ),
        (
            Table(
                "t",
                MetaData(),
                Column("id", Integer, primary_key=True),
                shardb_backend="raft); DROP TABLE x; --",
            ),
            "must be a backend name",
        ),
    ],
)
def test_tables_a_range_cannot_hold_are_refused_when_compiled(table: Table, message: str) -> None:
    with pytest.raises(exc.CompileError, match=message):
        ddl(table)
