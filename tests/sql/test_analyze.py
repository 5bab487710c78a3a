"""Analysis: the statement whitelist, determinism, the catalog, parameters, clear errors."""

from __future__ import annotations

import pytest

from shardb.sql import (
    Catalog,
    CreateIndex,
    CreateTable,
    Delete,
    DropIndex,
    DropTable,
    Explain,
    Insert,
    NonDeterministic,
    ParamRef,
    RoutingError,
    SchemaError,
    Select,
    ShowRangeForRow,
    ShowRanges,
    SplitAt,
    SqlError,
    SqlSyntaxError,
    UnknownIndex,
    UnknownTable,
    UnsupportedFeature,
    UnsupportedStatement,
    Update,
    analyze,
    analyze_script,
    apply_ddl,
)


@pytest.fixture
def catalog() -> Catalog:
    statements = analyze_script(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, v REAL, n INTEGER);"
        "CREATE TABLE u (k TEXT PRIMARY KEY, x INTEGER);"
        "CREATE INDEX t_name ON t (name)",
        Catalog(),
    )
    result = Catalog()
    for statement in statements:
        result = apply_ddl(result, statement)
    return result


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT * FROM t WHERE id = 1", Select),
        ("INSERT INTO t (id, name) VALUES (1, 'a')", Insert),
        ("REPLACE INTO t (id) VALUES (1)", Insert),
        ("UPDATE t SET v = 1 WHERE id = 2", Update),
        ("DELETE FROM t WHERE id > 3", Delete),
        ("CREATE TABLE w (id INTEGER PRIMARY KEY)", CreateTable),
        ("DROP TABLE t", DropTable),
        ("CREATE INDEX t_v ON t (v)", CreateIndex),
        ("DROP INDEX t_name", DropIndex),
        ("EXPLAIN SELECT * FROM t", Explain),
        ("SHOW RANGES FROM TABLE t", ShowRanges),
        ("SHOW RANGE FROM TABLE t FOR ROW (5)", ShowRangeForRow),
        ("ALTER TABLE t SPLIT AT VALUES (10), (20)", SplitAt),
    ],
)
def test_whitelisted_statements_are_accepted(catalog: Catalog, sql: str, kind: type) -> None:
    """Every whitelisted statement kind analyzes to its statement class."""
    assert isinstance(analyze(sql, catalog), kind)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("PRAGMA journal_mode", "PRAGMA"),
        ("VACUUM", "VACUUM"),
        ("ATTACH DATABASE 'x' AS y", "ATTACH"),
        ("BEGIN", "BEGIN"),
        ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
        ("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", "CREATE TRIGGER"),
        ("DROP VIEW v", "DROP VIEW"),
        ("ALTER TABLE t ADD COLUMN z", "ALTER TABLE"),
        ("SHOW TABLES", "SHOW TABLES"),
        ("EXPLAIN QUERY PLAN SELECT * FROM t", "EXPLAIN QUERY PLAN"),
    ],
)
def test_other_statements_are_refused_naming_the_kind(
    catalog: Catalog, sql: str, kind: str
) -> None:
    """Anything outside the whitelist raises UnsupportedStatement naming its kind."""
    with pytest.raises(UnsupportedStatement) as caught:
        analyze(sql, catalog)
    assert caught.value.kind == kind
    assert kind.split()[0] in caught.value.message


@pytest.mark.parametrize(
    ("sql", "feature"),
    [
        ("SELECT * FROM t JOIN u ON t.id = u.x", "JOIN"),
        ("SELECT * FROM t, u", "JOIN"),
        ("SELECT * FROM t WHERE id IN (SELECT x FROM u)", "subquery"),
        ("SELECT id FROM t UNION SELECT x FROM u", "compound SELECT"),
        ("WITH c AS (SELECT 1) SELECT * FROM c", "WITH"),
        ("SELECT DISTINCT name FROM t", "DISTINCT"),
        ("SELECT COUNT(DISTINCT name) FROM t", "DISTINCT"),
        ("SELECT group_concat(name) FROM t", "GROUP_CONCAT"),
        ("SELECT row_number() OVER () FROM t", "window function"),
        ("SELECT 1", "SELECT without FROM"),
        ("INSERT INTO t SELECT * FROM t", "INSERT ... SELECT"),
        ("UPDATE t SET v = 1 FROM u WHERE t.id = u.x", "JOIN"),
        ("DELETE FROM t WHERE id = 1 RETURNING *", "RETURNING"),
    ],
)
def test_features_that_cannot_run_across_ranges_are_refused(
    catalog: Catalog, sql: str, feature: str
) -> None:
    """Joins, subqueries and other cross-range features raise UnsupportedFeature."""
    with pytest.raises(UnsupportedFeature) as caught:
        analyze(sql, catalog)
    assert caught.value.feature == feature


def test_join_error_message_is_clear(catalog: Catalog) -> None:
    """The join refusal says joins are not supported."""
    with pytest.raises(UnsupportedFeature, match="joins are not supported"):
        analyze("SELECT * FROM t JOIN u ON t.id = u.x", catalog)


@pytest.mark.parametrize(
    ("sql", "function"),
    [
        ("INSERT INTO t (id, v) VALUES (1, random())", "random()"),
        ("INSERT INTO t (id, name) VALUES (1, hex(randomblob(4)))", "randomblob()"),
        ("UPDATE t SET n = changes()", "changes()"),
        ("UPDATE t SET n = last_insert_rowid()", "last_insert_rowid()"),
        ("UPDATE t SET name = sqlite_version()", "sqlite_version()"),
        ("UPDATE t SET name = CURRENT_TIMESTAMP", "CURRENT_TIMESTAMP"),
        ("UPDATE t SET name = current_date WHERE id = 1", "CURRENT_DATE"),
        ("UPDATE t SET name = date()", "date() without a time value"),
        ("UPDATE t SET name = datetime('now')", "datetime('now')"),
        ("DELETE FROM t WHERE v < julianday('NOW')", "julianday('now')"),
        ("UPDATE t SET n = strftime('%s')", "strftime() without a time value"),
        ("UPDATE t SET n = unixepoch('now')", "unixepoch('now')"),
        ("UPDATE t SET name = date('2020-01-01', 'localtime')", "date('localtime')"),
        (
            "CREATE TABLE w (id INTEGER PRIMARY KEY, at TEXT DEFAULT CURRENT_TIMESTAMP)",
            "CURRENT_TIMESTAMP",
        ),
    ],
)
def test_nondeterministic_writes_are_refused_naming_the_function(
    catalog: Catalog, sql: str, function: str
) -> None:
    """Writes and table definitions may not use values that differ between replicas."""
    with pytest.raises(NonDeterministic) as caught:
        analyze(sql, catalog)
    assert caught.value.function == function


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT random(), datetime('now'), CURRENT_TIMESTAMP FROM t",
        "UPDATE t SET name = date('2020-01-01', '+1 day')",
        "UPDATE t SET name = strftime('%Y', '2020-01-01')",
        "UPDATE t SET name = 'now'",
        "INSERT INTO t (id, name) VALUES (1, 'random()')",
    ],
)
def test_deterministic_uses_are_allowed(catalog: Catalog, sql: str) -> None:
    """Reads may use anything; fixed dates and strings that only look like calls are fine."""
    analyze(sql, catalog)


def test_time_function_parameter_bound_to_now_is_refused(catalog: Catalog) -> None:
    """A '?' given to a date function is checked against its bound value when routed."""
    from shardb.sql import route
    from sql.harness import range_map

    statement = analyze("UPDATE t SET name = date(?) WHERE id = ?", catalog)
    ranges = range_map("t", [10])
    route(statement, ["2024-01-01", 1], ranges)
    with pytest.raises(NonDeterministic):
        route(statement, ["now", 1], ranges)


def test_unknown_table_is_named(catalog: Catalog) -> None:
    """A statement on a table not in the catalog raises UnknownTable with its name."""
    with pytest.raises(UnknownTable) as caught:
        analyze("SELECT * FROM missing", catalog)
    assert caught.value.table == "missing"
    assert caught.value.message == "no such table: missing"


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO nope (id) VALUES (1)",
        "UPDATE nope SET a = 1",
        "DELETE FROM nope",
        "DROP TABLE nope",
        "SHOW RANGES FROM TABLE nope",
        "CREATE INDEX i ON nope (a)",
    ],
)
def test_every_statement_kind_checks_its_table(catalog: Catalog, sql: str) -> None:
    """Writes, DDL and shardb statements all refuse unknown tables."""
    with pytest.raises(UnknownTable):
        analyze(sql, catalog)


def test_names_are_case_insensitive_like_sqlite(catalog: Catalog) -> None:
    """SQLite identifiers are case-insensitive, quoted or not."""
    statement = analyze('SELECT "ID", Name FROM "T" WHERE ID = 1', catalog)
    assert isinstance(statement, Select)
    assert statement.table.name == "t"
    assert statement.columns == ("id", "name")


def test_unknown_index_is_named(catalog: Catalog) -> None:
    with pytest.raises(UnknownIndex, match="no such index: nope"):
        analyze("DROP INDEX nope", catalog)


def test_if_exists_and_if_not_exists_make_no_ops(catalog: Catalog) -> None:
    """DROP ... IF EXISTS of a missing name and CREATE ... IF NOT EXISTS of a present one."""
    dropped = analyze("DROP TABLE IF EXISTS nope", catalog)
    assert isinstance(dropped, DropTable) and dropped.table is None
    created = analyze("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)", catalog)
    assert isinstance(created, CreateTable) and created.exists
    assert apply_ddl(catalog, created) == catalog
    with pytest.raises(SchemaError, match="already exists"):
        analyze("CREATE TABLE t (id INTEGER PRIMARY KEY)", catalog)


@pytest.mark.parametrize(
    "sql",
    ["SELECT * FROM t WHERE", "SELEC * FROM t", "INSERT INTO t (id VALUES (1)", "SELECT (1 FROM t"],
)
def test_parse_errors_become_sql_syntax_errors(catalog: Catalog, sql: str) -> None:
    """sqlglot's parse errors surface as SqlSyntaxError, a SqlError with a message."""
    with pytest.raises(SqlError) as caught:
        analyze(sql, catalog)
    assert isinstance(caught.value, SqlSyntaxError | UnsupportedStatement)
    assert caught.value.message


def test_parameters_are_counted_in_textual_order(catalog: Catalog) -> None:
    """'?' parameters are numbered left to right, as SQLite numbers them."""
    statement = analyze("SELECT ? FROM t WHERE id = ? AND name = ? LIMIT ?", catalog)
    assert statement.param_count == 4


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t WHERE id = ?1",
        "SELECT * FROM t WHERE id = :id",
        "SELECT * FROM t WHERE id = @id",
        "SELECT * FROM t WHERE id = $id",
    ],
)
def test_named_and_numbered_parameters_are_refused(catalog: Catalog, sql: str) -> None:
    with pytest.raises(SqlSyntaxError, match="parameters"):
        analyze(sql, catalog)


def test_primary_key_update_is_refused(catalog: Catalog) -> None:
    """SET pk = ... would move the row to another range; it is refused."""
    with pytest.raises(RoutingError, match="primary key"):
        analyze("UPDATE t SET name = 'a', id = id + 1 WHERE id = 3", catalog)
    with pytest.raises(RoutingError):
        analyze("INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = 2", catalog)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("INSERT INTO t (name) VALUES ('a')", "must give the primary key"),
        ("INSERT INTO t (id, name) VALUES (NULL, 'a')", "cannot be NULL"),
        ("INSERT INTO t (id) VALUES (1 + 1)", "literal or a '\\?' parameter"),
        ("INSERT INTO t DEFAULT VALUES", "DEFAULT VALUES"),
    ],
)
def test_inserts_need_a_literal_primary_key(catalog: Catalog, sql: str, message: str) -> None:
    """An omitted or computed key would be assigned by each range on its own: refused."""
    with pytest.raises(RoutingError, match=message):
        analyze(sql, catalog)


def test_insert_without_column_list_finds_the_key_by_position(catalog: Catalog) -> None:
    statement = analyze("INSERT INTO u VALUES ('k1', 1), (?, 2)", catalog)
    assert isinstance(statement, Insert)
    assert statement.keys == ("k1", ParamRef(0))


def test_insert_checks_columns_and_value_counts(catalog: Catalog) -> None:
    with pytest.raises(SqlError, match="no column named zz"):
        analyze("INSERT INTO t (id, zz) VALUES (1, 2)", catalog)
    with pytest.raises(SqlError, match="2 values for 3 columns"):
        analyze("INSERT INTO t (id, name, v) VALUES (1, 2)", catalog)


def test_result_column_names_follow_sqlite(catalog: Catalog) -> None:
    """Aliases, declared names for column references, source text for expressions."""
    statement = analyze(
        "SELECT ID, t.name, count( * ), v  +  1, n AS total, (v), * FROM t", catalog
    )
    assert isinstance(statement, Select)
    assert statement.columns == (
        "id",
        "name",
        "count( * )",
        "v  +  1",
        "total",
        "v",
        "id",
        "name",
        "v",
        "n",
    )


def test_explain_wraps_the_analyzed_statement(catalog: Catalog) -> None:
    statement = analyze("EXPLAIN UPDATE t SET v = ? WHERE id = ?", catalog)
    assert isinstance(statement, Explain)
    assert isinstance(statement.statement, Update)
    assert statement.param_count == 2


def test_script_sees_its_own_ddl() -> None:
    """In a script, a table created earlier can be used by later statements."""
    statements = analyze_script(
        "CREATE TABLE a (id INTEGER PRIMARY KEY, x); INSERT INTO a VALUES (1, 'x;y'); "
        "SELECT * FROM a -- done;",
        Catalog(),
    )
    assert [type(s) for s in statements] == [CreateTable, Insert, Select]


def test_one_statement_expected(catalog: Catalog) -> None:
    with pytest.raises(SqlSyntaxError, match="one statement"):
        analyze("SELECT * FROM t; SELECT * FROM t", catalog)


def test_custom_statements_take_literal_or_parameter_keys(catalog: Catalog) -> None:
    split = analyze("ALTER TABLE u SPLIT AT VALUES ('m'), (?), (-5)", catalog)
    assert isinstance(split, SplitAt)
    assert split.keys == ("m", ParamRef(0), -5)
    assert split.param_count == 1
    row = analyze("SHOW RANGE FROM TABLE t FOR ROW (?)", catalog)
    assert isinstance(row, ShowRangeForRow) and row.key == ParamRef(0)


@pytest.mark.parametrize(
    "sql",
    [
        "SHOW RANGES FROM t",
        "SHOW RANGES FROM TABLE t extra",
        "SHOW RANGE FROM TABLE t FOR ROW 5",
        "SHOW RANGE FROM TABLE t FOR ROW (1, 2)",
        "ALTER TABLE t SPLIT AT VALUES",
        "ALTER TABLE t SPLIT AT VALUES (x)",
    ],
)
def test_custom_grammar_rejects_malformed_statements(catalog: Catalog, sql: str) -> None:
    with pytest.raises(SqlError):
        analyze(sql, catalog)
