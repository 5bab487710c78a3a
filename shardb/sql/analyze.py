"""Parse and check statements: the whitelist, determinism, the catalog, bound parameters.

Whitelist: CREATE TABLE, DROP TABLE, CREATE INDEX, DROP INDEX, INSERT/REPLACE ... VALUES,
single-table SELECT (WHERE, GROUP BY, HAVING, ORDER BY, LIMIT/OFFSET, COUNT/SUM/TOTAL/AVG/
MIN/MAX), UPDATE, DELETE, ``EXPLAIN <statement>``, and shardb's own ``SHOW RANGES FROM TABLE
t``, ``SHOW RANGE FROM TABLE t FOR ROW (k)`` and ``ALTER TABLE t SPLIT AT VALUES (k), ...``.
Anything else raises ``UnsupportedStatement`` naming the kind. Inside whitelisted statements,
what cannot be computed correctly across ranges is refused (``UnsupportedFeature``): joins,
subqueries, compound SELECTs, CTEs, DISTINCT, window functions, GROUP_CONCAT and other
order-dependent aggregates, ``RETURNING``, ``UPDATE/DELETE ... LIMIT``, ``INSERT ... SELECT``.

Determinism. A write is replicated as its SQL text and applied by every replica's SQLite, so
anything whose value depends on *when* or *where* it runs would make replicas diverge. Refused
in INSERT/UPDATE/DELETE and in CREATE TABLE (a DEFAULT is evaluated at insert time on each
replica), with ``NonDeterministic`` naming the function:

- ``random()``, ``randomblob()``: a new value on each replica;
- ``changes()``, ``total_changes()``, ``last_insert_rowid()``: depend on the connection's
  history, which differs between replicas (and between a replica and its restart);
- ``sqlite_version()``, ``sqlite_source_id()``, ``sqlite_compileoption_used/get()``: replicas
  may run different SQLite builds during a rolling upgrade;
- ``sqlite_offset()``: a physical file offset, different on each replica;
- ``current_timestamp``, ``current_date``, ``current_time``, and ``date``/``time``/
  ``datetime``/``julianday``/``unixepoch``/``strftime``/``timediff`` called with no time value
  or with ``'now'`` (the wall clock of each replica), or with the ``'localtime'`` or ``'utc'``
  modifiers (each node's time zone). A ``?`` argument to these functions is checked against the
  bound value when the statement is planned. Not caught: a *column* holding the text 'now'.

Reads may use all of these: they run once, on one replica of each range.

Parameters: positional ``?`` only, numbered left to right as SQLite does; the values are bound
separately (``Statement.param_count`` says how many).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

from shardb.sql.catalog import (
    Catalog,
    IndexSchema,
    TableSchema,
    parse_create_index,
    parse_create_table,
)
from shardb.sql.errors import (
    NonDeterministic,
    RoutingError,
    SchemaError,
    SqlError,
    SqlSyntaxError,
    UnknownTable,
    UnsupportedFeature,
    UnsupportedStatement,
)
from shardb.sql.lexer import (
    DIALECT,
    PARAM_MARKER_PREFIX,
    Cursor,
    is_name,
    matching_paren,
    number_parameters,
    select_item_texts,
    split_statements,
    tokenize,
    top_level_items,
    upper,
)
from shardb.sql.values import Value


class StatementKind(enum.Enum):
    CREATE_TABLE = "CREATE TABLE"
    DROP_TABLE = "DROP TABLE"
    CREATE_INDEX = "CREATE INDEX"
    DROP_INDEX = "DROP INDEX"
    INSERT = "INSERT"
    SELECT = "SELECT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    EXPLAIN = "EXPLAIN"
    SHOW_RANGES = "SHOW RANGES"
    SHOW_RANGE = "SHOW RANGE"
    SPLIT = "SPLIT"


@dataclass(frozen=True, slots=True)
class ParamRef:
    """The ``index``-th bound parameter (0-based), where a custom statement takes a value."""

    index: int


KeyTerm: TypeAlias = Value | ParamRef
"""A value written in a statement: a literal, or a reference to a bound parameter."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateTable:
    kind: ClassVar[StatementKind] = StatementKind.CREATE_TABLE
    sql: str
    schema: TableSchema
    if_not_exists: bool
    exists: bool
    """The table is already in the catalog (only possible with IF NOT EXISTS): a no-op."""
    param_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DropTable:
    kind: ClassVar[StatementKind] = StatementKind.DROP_TABLE
    sql: str
    table: TableSchema | None
    """None when the table does not exist and IF EXISTS was given: a no-op."""
    param_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateIndex:
    kind: ClassVar[StatementKind] = StatementKind.CREATE_INDEX
    sql: str
    index: IndexSchema
    table: TableSchema
    exists: bool
    param_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DropIndex:
    kind: ClassVar[StatementKind] = StatementKind.DROP_INDEX
    sql: str
    index: IndexSchema | None
    table: TableSchema | None
    param_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Insert:
    kind: ClassVar[StatementKind] = StatementKind.INSERT
    sql: str
    table: TableSchema
    expression: exp.Insert
    """The parsed statement, ``?`` replaced by marker calls; never mutated (copy first)."""
    param_count: int
    keys: tuple[KeyTerm, ...]
    """The primary-key value of each row, in row order."""
    time_params: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Select:
    kind: ClassVar[StatementKind] = StatementKind.SELECT
    sql: str
    table: TableSchema
    expression: exp.Select
    param_count: int
    columns: tuple[str, ...]
    """Result column names as SQLite would give them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    kind: ClassVar[StatementKind] = StatementKind.UPDATE
    sql: str
    table: TableSchema
    expression: exp.Update
    param_count: int
    time_params: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    kind: ClassVar[StatementKind] = StatementKind.DELETE
    sql: str
    table: TableSchema
    expression: exp.Delete
    param_count: int
    time_params: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ShowRanges:
    kind: ClassVar[StatementKind] = StatementKind.SHOW_RANGES
    sql: str
    table: TableSchema
    param_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ShowRangeForRow:
    kind: ClassVar[StatementKind] = StatementKind.SHOW_RANGE
    sql: str
    table: TableSchema
    key: KeyTerm
    param_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitAt:
    kind: ClassVar[StatementKind] = StatementKind.SPLIT
    sql: str
    table: TableSchema
    keys: tuple[KeyTerm, ...]
    param_count: int
    unsplit: bool = False
    """``ALTER TABLE t UNSPLIT AT VALUES (k)`` (CockroachDB's spelling): merge the range that
    starts at ``k`` into its left neighbour."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Explain:
    kind: ClassVar[StatementKind] = StatementKind.EXPLAIN
    sql: str
    statement: Statement
    param_count: int


Statement: TypeAlias = (
    CreateTable
    | DropTable
    | CreateIndex
    | DropIndex
    | Insert
    | Select
    | Update
    | Delete
    | ShowRanges
    | ShowRangeForRow
    | SplitAt
    | Explain
)
Dml: TypeAlias = Insert | Select | Update | Delete

WRITE_KINDS = frozenset({StatementKind.INSERT, StatementKind.UPDATE, StatementKind.DELETE})


def analyze(sql: str, catalog: Catalog) -> Statement:
    """Parse and check exactly one statement against ``catalog``."""
    statements = split_statements(sql)
    if len(statements) != 1:
        if statements:
            # Name an unsupported kind (a trigger body has semicolons) before counting.
            _analyze_one(statements[0], catalog)
        raise SqlSyntaxError(f"expected one statement, found {len(statements)}")
    return _analyze_one(statements[0], catalog)


def analyze_script(sql: str, catalog: Catalog) -> list[Statement]:
    """Analyze every statement of a script; DDL earlier in it is visible to later statements."""
    analyzed: list[Statement] = []
    for text in split_statements(sql):
        statement = _analyze_one(text, catalog)
        catalog = apply_ddl(catalog, statement)
        analyzed.append(statement)
    return analyzed


def apply_ddl(catalog: Catalog, statement: Statement) -> Catalog:
    """The catalog after ``statement`` (unchanged for anything but DDL)."""
    match statement:
        case CreateTable(schema=schema, exists=False):
            return catalog.with_table(schema)
        case DropTable(table=TableSchema() as table):
            return catalog.without_table(table.name)
        case CreateIndex(index=index, exists=False):
            return catalog.with_index(index)
        case DropIndex(index=IndexSchema() as index):
            return catalog.without_index(index.name)
        case _:
            return catalog


def _analyze_one(sql: str, catalog: Catalog) -> Statement:
    tokens = tokenize(sql)
    if not tokens:
        raise SqlSyntaxError("empty statement")
    first = upper(tokens[0])
    second = upper(tokens[1]) if len(tokens) > 1 else ""
    if first == "EXPLAIN":
        return _analyze_explain(sql, tokens, catalog)
    if first == "SHOW":
        return _analyze_show(sql, catalog)
    if first == "ALTER":
        return _analyze_alter(sql, tokens, catalog)
    if first == "CREATE":
        return _analyze_create(sql, tokens, catalog)
    if first == "DROP":
        return _analyze_drop(sql, tokens, catalog)
    if first in ("SELECT", "INSERT", "REPLACE", "UPDATE", "DELETE"):
        return _analyze_dml(sql, tokens, catalog)
    if first == "WITH":
        raise UnsupportedFeature("WITH", "common table expressions (WITH ...) are not supported")
    raise UnsupportedStatement(f"{first} {second}" if first == "ALTER" else first)


# --- custom statements -------------------------------------------------------------------


def _analyze_explain(sql: str, tokens: Sequence[Token], catalog: Catalog) -> Explain:
    # The tokenizer swallows everything after EXPLAIN into one string; re-read the rest.
    rest = sql[tokens[0].end + 1 :].strip()
    rest_tokens = tokenize(rest)
    if not rest_tokens:
        raise SqlSyntaxError("EXPLAIN needs a statement")
    if upper(rest_tokens[0]) == "QUERY":
        raise UnsupportedStatement(
            "EXPLAIN QUERY PLAN",
            "EXPLAIN QUERY PLAN is SQLite's per-database plan; use EXPLAIN for shardb's plan",
        )
    if upper(rest_tokens[0]) == "EXPLAIN":
        raise SqlSyntaxError("EXPLAIN EXPLAIN is not meaningful")
    inner = _analyze_one(rest, catalog)
    return Explain(sql=sql, statement=inner, param_count=inner.param_count)


def _analyze_show(sql: str, catalog: Catalog) -> ShowRanges | ShowRangeForRow:
    words = sql.split(None, 1)
    tokens = tokenize(words[1] if len(words) > 1 else "")
    cur = Cursor(tokens, words[1] if len(words) > 1 else "")
    what = cur.word(0)
    if what not in ("RANGES", "RANGE"):
        raise UnsupportedStatement(f"SHOW {what}".strip())
    index = cur.expect(1, "FROM", "TABLE")
    table = catalog.table(_name(cur, index))
    index += 1
    if what == "RANGES":
        _expect_end(cur, index)
        return ShowRanges(sql=sql, table=table)
    index = cur.expect(index, "FOR", "ROW")
    key, index, count = _key_tuple(cur, index, 0)
    _expect_end(cur, index)
    return ShowRangeForRow(sql=sql, table=table, key=key, param_count=count)


def _analyze_alter(sql: str, tokens: Sequence[Token], catalog: Catalog) -> SplitAt:
    cur = Cursor(tokens, sql)
    index = cur.expect(0, "ALTER", "TABLE")
    name = _name(cur, index)
    verb = cur.word(index + 1)
    if verb not in ("SPLIT", "UNSPLIT"):
        raise UnsupportedStatement(
            "ALTER TABLE", "only ALTER TABLE t SPLIT AT / UNSPLIT AT VALUES are supported"
        )
    table = catalog.table(name)
    index = cur.expect(index + 1, verb, "AT", "VALUES")
    keys: list[KeyTerm] = []
    count = 0
    while True:
        key, index, count = _key_tuple(cur, index, count)
        keys.append(key)
        if cur.word(index) != ",":
            break
        index += 1
    _expect_end(cur, index)
    return SplitAt(
        sql=sql, table=table, keys=tuple(keys), param_count=count, unsplit=verb == "UNSPLIT"
    )


def _name(cur: Cursor, index: int) -> str:
    token = cur.at(index)
    if token is None or not is_name(token):
        raise SqlSyntaxError("expected a table name")
    return token.text


def _expect_end(cur: Cursor, index: int) -> None:
    token = cur.at(index)
    if token is not None:
        raise SqlSyntaxError(f"unexpected {token.text!r} at the end of the statement")


def _key_tuple(cur: Cursor, index: int, params: int) -> tuple[KeyTerm, int, int]:
    """Read ``( value )`` where value is a number, a string, or ``?``."""
    index = cur.expect(index, "(")
    token = cur.at(index)
    negative = token is not None and token.token_type is TokenType.DASH
    if negative:
        index += 1
        token = cur.at(index)
    if token is None:
        raise SqlSyntaxError("expected a key value")
    value: KeyTerm
    if token.token_type is TokenType.NUMBER:
        value = _number(token.text)
        if negative and isinstance(value, int | float):
            value = -value
    elif token.token_type is TokenType.STRING and not negative:
        value = token.text
    elif token.token_type is TokenType.PLACEHOLDER and token.text == "?" and not negative:
        value = ParamRef(params)
        params += 1
    else:
        raise SqlSyntaxError(f"expected a literal key or '?', found {token.text!r}")
    if cur.word(index + 1) == ",":
        raise SchemaError("keys have one column: composite keys are not supported")
    return value, cur.expect(index + 1, ")"), params


def _number(text: str) -> int | float:
    try:
        return int(text, 0) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return float(text)


# --- DDL ---------------------------------------------------------------------------------


def _analyze_create(sql: str, tokens: Sequence[Token], catalog: Catalog) -> Statement:
    _refuse_params(tokens, "CREATE")
    cur = Cursor(tokens, sql)
    position = 1
    if cur.word(position) in ("TEMP", "TEMPORARY"):
        position += 1
    what = cur.word(position)
    if what == "TABLE":
        _check_deterministic(tokens)
        parts = parse_create_table(sql)
        exists = catalog.find_table(parts.schema.name) is not None
        if exists and not parts.if_not_exists:
            raise SchemaError(f"table {parts.schema.name} already exists")
        return CreateTable(
            sql=sql, schema=parts.schema, if_not_exists=parts.if_not_exists, exists=exists
        )
    if what in ("INDEX", "UNIQUE"):
        index_parts = parse_create_index(sql)
        table = catalog.table(index_parts.index.table)
        index = IndexSchema(
            name=index_parts.index.name, table=table.name, create_sql=index_parts.index.create_sql
        )
        found = catalog.find_index(index.name)
        if found is not None and not index_parts.if_not_exists:
            raise SchemaError(f"index {index.name} already exists")
        return CreateIndex(sql=sql, index=index, table=table, exists=found is not None)
    raise UnsupportedStatement(f"CREATE {what}".strip())


def _analyze_drop(sql: str, tokens: Sequence[Token], catalog: Catalog) -> Statement:
    cur = Cursor(tokens, sql)
    what = cur.word(1)
    if what not in ("TABLE", "INDEX"):
        raise UnsupportedStatement(f"DROP {what}".strip())
    index = 2
    if_exists = cur.word(index) == "IF"
    if if_exists:
        index = cur.expect(index, "IF", "EXISTS")
    name = _name(cur, index)
    if cur.word(index + 1) == ".":
        raise SchemaError("schema-qualified names are not supported")
    _expect_end(cur, index + 1)
    if what == "TABLE":
        table = catalog.find_table(name)
        if table is None and not if_exists:
            raise UnknownTable(name)
        return DropTable(sql=sql, table=table)
    found = catalog.find_index(name)
    if found is None and not if_exists:
        catalog.index(name)  # raises UnknownIndex
    owner = None if found is None else catalog.table(found.table)
    return DropIndex(sql=sql, index=found, table=owner)


def _refuse_params(tokens: Sequence[Token], what: str) -> None:
    if any(t.token_type is TokenType.PLACEHOLDER for t in tokens):
        raise SqlSyntaxError(f"parameters are not allowed in {what} statements")


# --- determinism ---------------------------------------------------------------------------

_NONDETERMINISTIC: dict[str, str] = {
    "RANDOM": "a new random value on each replica",
    "RANDOMBLOB": "a new random value on each replica",
    "CHANGES": "depends on the connection's earlier statements",
    "TOTAL_CHANGES": "depends on the connection's earlier statements",
    "LAST_INSERT_ROWID": "depends on the connection's earlier statements",
    "SQLITE_VERSION": "replicas may run different SQLite versions",
    "SQLITE_SOURCE_ID": "replicas may run different SQLite versions",
    "SQLITE_COMPILEOPTION_USED": "replicas may run different SQLite builds",
    "SQLITE_COMPILEOPTION_GET": "replicas may run different SQLite builds",
    "SQLITE_OFFSET": "a file offset that differs between replicas",
    "LOAD_EXTENSION": "loads code that may differ between nodes",
}
_CURRENT = frozenset({"CURRENT_TIMESTAMP", "CURRENT_DATE", "CURRENT_TIME"})
TIME_FUNCTIONS = frozenset(
    {"DATE", "TIME", "DATETIME", "JULIANDAY", "UNIXEPOCH", "STRFTIME", "TIMEDIFF"}
)
CLOCK_WORDS = {"now": "the wall clock of each replica", "localtime": "each node's time zone"}
CLOCK_WORDS["utc"] = CLOCK_WORDS["localtime"]


def _check_deterministic(tokens: Sequence[Token]) -> tuple[int, ...]:
    """Raise NonDeterministic; return the parameter indexes used as time-function arguments."""
    time_params: list[int] = []
    param_positions = [i for i, t in enumerate(tokens) if t.token_type is TokenType.PLACEHOLDER]
    for index, token in enumerate(tokens):
        if token.token_type in (TokenType.STRING, TokenType.IDENTIFIER):
            continue
        word = upper(token)
        calls = index + 1 < len(tokens) and tokens[index + 1].token_type is TokenType.L_PAREN
        if word in _CURRENT and not calls:
            raise NonDeterministic(word, "the wall clock of each replica")
        if not calls:
            continue
        if word in _NONDETERMINISTIC:
            raise NonDeterministic(f"{word.lower()}()", _NONDETERMINISTIC[word])
        if word not in TIME_FUNCTIONS:
            continue
        close = matching_paren(tokens, index + 1)
        arguments = top_level_items(tokens, index + 2, close)
        # strftime(format, time-value, ...): its first argument is the format, not a time.
        needed = 2 if word == "STRFTIME" else 1
        if len(arguments) < needed:
            raise NonDeterministic(f"{word.lower()}() without a time value", "it means 'now'")
        for inner in range(index + 2, close):
            argument = tokens[inner]
            if argument.token_type is TokenType.STRING:
                text = argument.text.strip().lower()
                if text in CLOCK_WORDS:
                    raise NonDeterministic(f"{word.lower()}('{text}')", CLOCK_WORDS[text])
            elif argument.token_type is TokenType.PLACEHOLDER:
                time_params.append(param_positions.index(inner))
    return tuple(time_params)


def check_time_params(statement: Statement, params: Sequence[Value]) -> None:
    """Refuse a write whose time-function argument is bound to 'now', 'localtime' or 'utc'."""
    indexes: tuple[int, ...] = getattr(statement, "time_params", ())
    for index in indexes:
        value = params[index]
        if isinstance(value, str) and value.strip().lower() in CLOCK_WORDS:
            word = value.strip().lower()
            raise NonDeterministic(f"a time function bound to '{word}'", CLOCK_WORDS[word])


# --- DML -----------------------------------------------------------------------------------


def _analyze_dml(sql: str, tokens: Sequence[Token], catalog: Catalog) -> Statement:
    first = upper(tokens[0])
    if first == "REPLACE":
        # sqlglot only parses the INSERT OR REPLACE spelling of the same statement.
        sql_for_parse = "INSERT OR " + sql
        tokens = tokenize(sql_for_parse)
    else:
        sql_for_parse = sql
    is_write = first != "SELECT"
    time_params = _check_deterministic(tokens) if is_write else ()
    marked, param_count = number_parameters(sql_for_parse)
    tree = _parse(marked)
    if isinstance(tree, exp.Insert) and isinstance(tree.expression, exp.Query):
        raise UnsupportedFeature("INSERT ... SELECT", "INSERT ... SELECT is not supported yet")
    if isinstance(tree, exp.Union | exp.Intersect | exp.Except):
        raise UnsupportedFeature(
            "compound SELECT", "compound SELECTs (UNION, INTERSECT, EXCEPT) are not supported"
        )
    _refuse_nested_queries(tree)
    match tree:
        case exp.Select():
            return _analyze_select(sql, tree, catalog, param_count)
        case exp.Insert():
            return _analyze_insert(sql, tree, catalog, param_count, time_params)
        case exp.Update():
            table = _target_table(tree, catalog)
            _check_update(tree, table)
            return Update(
                sql=sql,
                table=table,
                expression=tree,
                param_count=param_count,
                time_params=time_params,
            )
        case exp.Delete():
            table = _target_table(tree, catalog)
            if tree.args.get("using"):
                raise UnsupportedFeature("JOIN", "DELETE ... USING (a join) is not supported")
            _refuse_write_clauses(tree, "DELETE")
            return Delete(
                sql=sql,
                table=table,
                expression=tree,
                param_count=param_count,
                time_params=time_params,
            )
        case _:
            raise UnsupportedStatement(first)


def _parse(sql: str) -> exp.Expr:
    try:
        tree = sqlglot.parse_one(sql, read=DIALECT)
    except SqlglotError as error:
        raise SqlSyntaxError(f"syntax error: {_first_line(str(error))}") from error
    if isinstance(tree, exp.Command):
        raise SqlSyntaxError(f"syntax error or unsupported syntax in: {sql[:80]}")
    if tree.args.get("with") or tree.args.get("with_"):
        raise UnsupportedFeature("WITH", "common table expressions (WITH ...) are not supported")
    return tree


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def _refuse_nested_queries(tree: exp.Expr) -> None:
    for node in tree.walk():
        if node is tree:
            continue
        if isinstance(node, exp.Select | exp.Subquery | exp.Union | exp.Exists):
            raise UnsupportedFeature(
                "subquery",
                "subqueries are not supported: each range would evaluate them over its own "
                "rows only",
            )
        if isinstance(node, exp.Window):
            raise UnsupportedFeature("window function", "window functions are not supported")


def _table_of(node: exp.Expr | None, catalog: Catalog) -> TableSchema:
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        raise UnsupportedFeature("FROM", "the statement must name exactly one table")
    if node.args.get("db") or node.args.get("catalog"):
        raise UnsupportedFeature("schema", "schema-qualified table names are not supported")
    return catalog.table(node.name)


def _target_table(tree: exp.Update | exp.Delete, catalog: Catalog) -> TableSchema:
    if tree.args.get("from") or tree.args.get("from_") or tree.args.get("joins"):
        raise UnsupportedFeature("JOIN", "UPDATE ... FROM (a join) is not supported")
    return _table_of(tree.this, catalog)


def _refuse_write_clauses(tree: exp.Expr, what: str) -> None:
    if tree.args.get("returning"):
        raise UnsupportedFeature("RETURNING", f"{what} ... RETURNING is not supported yet")
    if tree.args.get("order") or tree.args.get("limit"):
        raise UnsupportedFeature(
            "LIMIT", f"{what} ... ORDER BY/LIMIT cannot be applied across ranges"
        )


def _check_update(tree: exp.Update, table: TableSchema) -> None:
    _refuse_write_clauses(tree, "UPDATE")
    for assignment in tree.expressions:
        _refuse_key_assignment(assignment, table)


def _refuse_key_assignment(assignment: exp.Expr, table: TableSchema) -> None:
    target = assignment.this if isinstance(assignment, exp.EQ) else assignment
    columns = target.expressions if isinstance(target, exp.Tuple) else [target]
    for column in columns:
        if isinstance(column, exp.Column) and table.is_key(column.name):
            raise RoutingError(
                f"updating the primary key {table.primary_key} is not supported: the row "
                "would move to another range; DELETE it and INSERT it again"
            )


def _analyze_insert(
    sql: str,
    tree: exp.Insert,
    catalog: Catalog,
    param_count: int,
    time_params: tuple[int, ...],
) -> Insert:
    target = tree.this
    listed: list[str] | None = None
    if isinstance(target, exp.Schema):
        listed = [identifier.name for identifier in target.expressions]
        target = target.this
    table = _table_of(target, catalog)
    _refuse_write_clauses(tree, "INSERT")
    if tree.args.get("default"):
        raise RoutingError(
            f"INSERT ... DEFAULT VALUES gives no primary key; {table.primary_key} is required"
        )
    source = tree.expression
    if isinstance(source, exp.Select | exp.Union):
        raise UnsupportedFeature("INSERT ... SELECT", "INSERT ... SELECT is not supported yet")
    if not isinstance(source, exp.Values):
        raise SqlSyntaxError("INSERT needs VALUES")
    conflict = tree.args.get("conflict")
    if isinstance(conflict, exp.OnConflict):
        for assignment in conflict.expressions:
            _refuse_key_assignment(assignment, table)
    columns = listed if listed is not None else list(table.column_names)
    for column in columns:
        if table.column_index(column) is None:
            raise SqlError(f"table {table.name} has no column named {column}")
    key_position = next((i for i, c in enumerate(columns) if table.is_key(c)), None)
    if key_position is None:
        raise RoutingError(
            f"INSERT must give the primary key {table.primary_key}: a key assigned by each "
            "range on its own would not be unique, nor in that range"
        )
    keys: list[KeyTerm] = []
    for row in source.expressions:
        values = row.expressions if isinstance(row, exp.Tuple) else [row]
        if len(values) != len(columns):
            raise SqlError(f"{len(values)} values for {len(columns)} columns")
        keys.append(_key_term(values[key_position], table))
    return Insert(
        sql=sql,
        table=table,
        expression=tree,
        param_count=param_count,
        keys=tuple(keys),
        time_params=time_params,
    )


def marker_index(node: exp.Expr) -> int | None:
    """The parameter index if ``node`` is a ``?`` marker, else None."""
    if isinstance(node, exp.Anonymous) and not node.expressions:
        name = str(node.this)
        if name.lower().startswith(PARAM_MARKER_PREFIX):
            return int(name[len(PARAM_MARKER_PREFIX) :])
    return None


def literal_term(node: exp.Expr) -> KeyTerm | None:
    """A literal value, ``-literal``, NULL or a ``?`` marker as a KeyTerm; None otherwise."""
    while isinstance(node, exp.Paren):
        node = node.this
    marker = marker_index(node)
    if marker is not None:
        return ParamRef(marker)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Literal):
        return str(node.this) if node.is_string else _number(str(node.this))
    if isinstance(node, exp.Neg):
        inner = literal_term(node.this)
        if isinstance(inner, int | float) and not isinstance(inner, bool):
            return -inner
    raise _NotLiteral


class _NotLiteral(Exception):
    pass


def _key_term(node: exp.Expr, table: TableSchema) -> KeyTerm:
    try:
        term = literal_term(node)
    except _NotLiteral:
        raise RoutingError(
            f"the primary key {table.primary_key} must be a literal or a '?' parameter in "
            f"INSERT, not {node.sql(dialect=DIALECT)}"
        ) from None
    if term is None:
        raise RoutingError(
            f"the primary key {table.primary_key} cannot be NULL: SQLite would assign a key "
            "on each range independently"
        )
    return term


def try_literal(node: exp.Expr) -> tuple[bool, KeyTerm]:
    """(True, term) when ``node`` is a literal, NULL or parameter; (False, None) otherwise."""
    try:
        return True, literal_term(node)
    except _NotLiteral:
        return False, None


_ORDER_DEPENDENT = frozenset(
    {
        "GROUP_CONCAT",
        "STRING_AGG",
        "JSON_GROUP_ARRAY",
        "JSON_GROUP_OBJECT",
        "JSONB_GROUP_ARRAY",
        "JSONB_GROUP_OBJECT",
    }
)


def aggregate_name(node: exp.Expr) -> str | None:
    """COUNT/SUM/AVG/MIN/MAX/TOTAL for a supported aggregate call; None if not an aggregate.

    Raises UnsupportedFeature for aggregates that cannot be merged from per-range partials.
    """
    if isinstance(node, exp.Count):
        if isinstance(node.this, exp.Distinct):
            raise UnsupportedFeature("DISTINCT", "COUNT(DISTINCT ...) is not supported yet")
        return "COUNT"
    for kind, name in ((exp.Sum, "SUM"), (exp.Avg, "AVG"), (exp.Min, "MIN"), (exp.Max, "MAX")):
        if isinstance(node, kind):
            if isinstance(node.this, exp.Distinct):
                raise UnsupportedFeature("DISTINCT", f"{name}(DISTINCT ...) is not supported yet")
            if node.expressions:
                return None  # min(a, b) with several arguments is the scalar function
            return name
    if isinstance(node, exp.Anonymous):
        name = str(node.this).upper()
        if name == "TOTAL" and len(node.expressions) == 1:
            return "TOTAL"
        if name in _ORDER_DEPENDENT:
            raise UnsupportedFeature(name, f"{name.lower()}() is not supported across ranges")
        return None
    if isinstance(node, exp.AggFunc):
        name = node.sql_name()
        raise UnsupportedFeature(name, f"the aggregate {name.lower()}() is not supported")
    return None


def _analyze_select(sql: str, tree: exp.Select, catalog: Catalog, param_count: int) -> Select:
    if tree.args.get("joins") or tree.args.get("laterals"):
        raise UnsupportedFeature(
            "JOIN",
            "joins are not supported: statements read one table (its ranges are "
            "on different groups)",
        )
    source = tree.args.get("from_") or tree.args.get("from")
    if not isinstance(source, exp.From):
        raise UnsupportedFeature("SELECT without FROM", "SELECT needs FROM <table>")
    if source.expressions:
        raise UnsupportedFeature("JOIN", "joins are not supported: select from one table")
    table = _table_of(source.this, catalog)
    if tree.args.get("distinct"):
        raise UnsupportedFeature(
            "DISTINCT", "SELECT DISTINCT is not supported yet; use GROUP BY the columns"
        )
    for clause in ("qualify", "windows", "into", "locks", "sample", "prewhere", "connect"):
        if tree.args.get(clause):
            raise UnsupportedFeature(clause.upper(), f"{clause.upper()} is not supported")
    for node in tree.walk():
        aggregate_name(node)  # raises on aggregates that cannot be merged
    columns = _result_names(sql, tree, table)
    return Select(sql=sql, table=table, expression=tree, param_count=param_count, columns=columns)


def _result_names(sql: str, tree: exp.Select, table: TableSchema) -> tuple[str, ...]:
    texts = select_item_texts(sql)
    if len(texts) != len(tree.expressions):
        texts = [e.sql(dialect=DIALECT) for e in tree.expressions]
    names: list[str] = []
    for text, node in zip(texts, tree.expressions, strict=True):
        if isinstance(node, exp.Star) or (
            isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
        ):
            names.extend(table.column_names)
            continue
        if isinstance(node, exp.Alias):
            names.append(node.alias)
            continue
        inner = node
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Column) and (column := table.column(inner.name)) is not None:
            names.append(column.name)  # SQLite names a column reference by its declared name
            continue
        names.append(text)
    return tuple(names)
