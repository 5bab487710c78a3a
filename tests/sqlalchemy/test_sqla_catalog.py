"""The gateway's answers to SQLite catalog queries (``shardb.server.catalog``), without a
cluster: which statements are catalog queries, and what SQLite answers over the catalog."""

from __future__ import annotations

import pytest

from consensus.runtime.errors import ApplicationError
from shardb.server.catalog import is_catalog_query, run_catalog_query
from shardb.sql import Catalog
from shardb.sql.catalog import parse_create_index, parse_create_table

USERS = (
    "CREATE TABLE users (id INTEGER NOT NULL, name VARCHAR(40) NOT NULL, score REAL "
    "DEFAULT 0.5, PRIMARY KEY (id)) WITH (shards = 4, backend = 'paxos')"
)
ITEMS = "CREATE TABLE items (sku TEXT PRIMARY KEY, qty INTEGER)"


def catalog(*tables: str, indexes: tuple[str, ...] = ()) -> Catalog:
    return Catalog(
        tables=tuple(parse_create_table(sql).schema for sql in tables),
        indexes=tuple(parse_create_index(sql).index for sql in indexes),
    )


@pytest.mark.parametrize(
    "sql",
    [
        'PRAGMA main.table_xinfo("users")',
        'PRAGMA temp.table_info("users")',
        "pragma table_info(users);",
        "PRAGMA main.index_list('users')",
        'PRAGMA main.index_info("ix_users_name")',
        'PRAGMA main.foreign_key_list("users")',
        "PRAGMA database_list",
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite~_%' "
        "ESCAPE '~' ORDER BY name",
        "SELECT sql FROM  (SELECT * FROM sqlite_master UNION ALL   SELECT * FROM "
        "sqlite_temp_master) WHERE name = ? AND type in ('table', 'view')",
        'SELECT name FROM main."sqlite_schema"',
        "SELECT sqlite_version()",
    ],
)
def test_recognises_the_queries_sqlalchemys_sqlite_reflection_issues(sql: str) -> None:
    assert is_catalog_query(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM users WHERE id = 1",
        "INSERT INTO users VALUES (1, 'sqlite_master', 0)",
        "SELECT sqlite_master FROM users",
        "PRAGMA journal_mode",
        "PRAGMA journal_mode = WAL",
        "PRAGMA table_info(users) = 1",
        "PRAGMA other.table_info(users)",
        "PRAGMA table_info(users); DROP TABLE users",
        "SELECT sqlite_version() FROM users",
    ],
)
def test_leaves_every_other_statement_to_the_normal_path(sql: str) -> None:
    assert not is_catalog_query(sql)


def test_table_info_reports_the_declared_columns_of_a_table() -> None:
    columns, rows = run_catalog_query('PRAGMA main.table_xinfo("users")', [], catalog(USERS))
    assert columns == ("cid", "name", "type", "notnull", "dflt_value", "pk", "hidden")
    assert rows == (
        (0, "id", "INTEGER", 1, None, 1, 0),
        (1, "name", "VARCHAR(40)", 1, None, 0, 0),
        (2, "score", "REAL", 0, "0.5", 0, 0),
    )


def test_sqlite_master_holds_the_create_table_each_range_runs() -> None:
    """shardb's WITH (...) options are cut off: SQLAlchemy parses this text."""
    sql = "SELECT type, name, sql FROM sqlite_master WHERE name = ? ORDER BY name"
    columns, rows = run_catalog_query(sql, ["users"], catalog(USERS, ITEMS))
    assert columns == ("type", "name", "sql")
    assert rows == (("table", "users", USERS[: USERS.index(" WITH")]),)


def test_index_pragmas_describe_secondary_indexes() -> None:
    schema = catalog(USERS, indexes=("CREATE INDEX ix_users_name ON users (name, score)",))
    _, indexes = run_catalog_query("PRAGMA main.index_list('users')", [], schema)
    assert indexes == ((0, "ix_users_name", 0, "c", 0),)
    _, columns = run_catalog_query('PRAGMA index_info("ix_users_name")', [], schema)
    assert columns == ((0, 1, "name"), (1, 2, "score"))


def test_an_empty_answer_still_names_its_columns() -> None:
    """SQLAlchemy needs the description of a PRAGMA that returns no rows."""
    columns, rows = run_catalog_query('PRAGMA temp.table_info("users")', [], catalog(USERS))
    assert columns == ("cid", "name", "type", "notnull", "dflt_value", "pk")
    assert rows == ()


def test_answers_follow_the_catalog_they_are_given() -> None:
    """The in-memory database is cached per catalog value: DDL (a new catalog) is seen, and
    an older catalog still answers as itself."""
    sql = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    assert run_catalog_query(sql, [], catalog(USERS))[1] == (("users",),)
    assert run_catalog_query(sql, [], catalog(USERS, ITEMS))[1] == (("items",), ("users",))
    assert run_catalog_query(sql, [], catalog(USERS))[1] == (("users",),)


def test_a_catalog_query_that_reads_a_user_table_is_refused() -> None:
    """The in-memory tables have no rows: reading one would be a wrong answer, not an answer."""
    with pytest.raises(ApplicationError) as refused:
        run_catalog_query("SELECT * FROM sqlite_master, users", [], catalog(USERS))
    assert refused.value.code == "unsupported"
    assert "may only read sqlite_master" in refused.value.message


def test_statements_that_write_are_refused() -> None:
    for sql in (
        "CREATE TABLE x (a INTEGER)",
        "INSERT INTO users (id, name) VALUES (1, 'a')",
        "DROP TABLE users",
        "PRAGMA user_version = 3",
    ):
        with pytest.raises(ApplicationError) as refused:
            run_catalog_query(sql, [], catalog(USERS))
        assert refused.value.code == "unsupported", sql


def test_wrong_parameters_are_a_parameter_error() -> None:
    with pytest.raises(ApplicationError) as refused:
        run_catalog_query("SELECT sql FROM sqlite_master WHERE name = ?", [], catalog(USERS))
    assert refused.value.code == "parameter_error"
