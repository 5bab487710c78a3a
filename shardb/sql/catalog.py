"""Table and index schemas, and the catalog the gateway checks statements against.

``CREATE TABLE`` is read by a small token-level grammar rather than by sqlglot's parser, for
three reasons found by trying: sqlglot rewrites declared types (``INT`` becomes ``INTEGER``, a
difference that decides whether a column is SQLite's rowid alias), it rejects valid SQLite
types such as ``UNSIGNED BIG INT`` and table-level ``PRIMARY KEY (id DESC)``, and it drops the
``WITH (shards = N, backend = '...')`` options with only a warning. Each shard therefore runs
the user's own text with the options clause cut off (``TableSchema.create_sql``), so SQLite on
the shards sees exactly the declared types.

What a sharded table may not use, and why (each refused with ``SchemaError``):

- a composite, missing, or non-INTEGER/TEXT primary key: ranges are intervals of one key;
- ``WITHOUT ROWID``, ``INTEGER PRIMARY KEY DESC`` (not a rowid alias), ``AUTOINCREMENT``
  (each shard would assign keys independently), ``TEMP`` tables;
- a non-BINARY collation on the key: range bounds compare in binary order;
- ``UNIQUE`` on other columns and ``REFERENCES``/``FOREIGN KEY``: each shard can only check
  its own rows, so the constraint would silently hold per range, not per table;
- generated columns (``AS (...)``): positional ``INSERT ... VALUES`` would misplace the key.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlglot.tokenizer_core import Token, TokenType

from consensus.backends import Backend
from shardb.sql.errors import SchemaError, SqlSyntaxError, UnknownIndex, UnknownTable
from shardb.sql.lexer import Cursor, is_name, matching_paren, tokenize, top_level_items, upper
from shardb.sql.values import Affinity, Collation, affinity_of, collation_named

MAX_SHARDS = 4096
"""Upper bound on ``WITH (shards = N)``: a typo must not create a million consensus groups."""


class KeyType(enum.Enum):
    INTEGER = "INTEGER"
    TEXT = "TEXT"


@dataclass(frozen=True, slots=True, kw_only=True)
class ColumnSchema:
    name: str
    declared_type: str
    """As written, e.g. ``"VARCHAR(10)"``; empty when no type was given."""
    collation: Collation = Collation.BINARY

    @property
    def affinity(self) -> Affinity:
        return affinity_of(self.declared_type)


@dataclass(frozen=True, slots=True, kw_only=True)
class TableSchema:
    name: str
    columns: tuple[ColumnSchema, ...]
    primary_key: str
    key_type: KeyType
    shards: int = 1
    """Initial number of ranges (``WITH (shards = N)``)."""
    backend: Backend | None = None
    """``WITH (backend = ...)``; None = the cluster's default backend."""
    create_sql: str
    """The CREATE TABLE each range's SQLite runs (the options clause removed)."""

    def column_index(self, name: str) -> int | None:
        folded = name.lower()
        for index, column in enumerate(self.columns):
            if column.name.lower() == folded:
                return index
        return None

    def column(self, name: str) -> ColumnSchema | None:
        index = self.column_index(name)
        return None if index is None else self.columns[index]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def key_index(self) -> int:
        index = self.column_index(self.primary_key)
        if index is None:  # pragma: no cover - guaranteed by parse_create_table
            raise SchemaError(f"primary key {self.primary_key} is not a column")
        return index

    def is_key(self, name: str) -> bool:
        return name.lower() == self.primary_key.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexSchema:
    name: str
    table: str
    create_sql: str


@dataclass(frozen=True, slots=True)
class Catalog:
    """Immutable: DDL produces a new catalog, so it can be replicated and compared by value.

    Names compare case-insensitively, as SQLite identifiers do (quoted or not).
    """

    tables: tuple[TableSchema, ...] = ()
    indexes: tuple[IndexSchema, ...] = ()

    def find_table(self, name: str) -> TableSchema | None:
        folded = name.lower()
        return next((t for t in self.tables if t.name.lower() == folded), None)

    def table(self, name: str) -> TableSchema:
        found = self.find_table(name)
        if found is None:
            raise UnknownTable(name)
        return found

    def find_index(self, name: str) -> IndexSchema | None:
        folded = name.lower()
        return next((i for i in self.indexes if i.name.lower() == folded), None)

    def index(self, name: str) -> IndexSchema:
        found = self.find_index(name)
        if found is None:
            raise UnknownIndex(name)
        return found

    def with_table(self, schema: TableSchema) -> Catalog:
        if self.find_table(schema.name) is not None:
            raise SchemaError(f"table {schema.name} already exists")
        tables = sorted((*self.tables, schema), key=lambda t: t.name.lower())
        return replace(self, tables=tuple(tables))

    def without_table(self, name: str) -> Catalog:
        schema = self.table(name)
        folded = schema.name.lower()
        return Catalog(
            tables=tuple(t for t in self.tables if t is not schema),
            indexes=tuple(i for i in self.indexes if i.table.lower() != folded),
        )

    def with_index(self, index: IndexSchema) -> Catalog:
        if self.find_index(index.name) is not None:
            raise SchemaError(f"index {index.name} already exists")
        self.table(index.table)
        indexes = sorted((*self.indexes, index), key=lambda i: i.name.lower())
        return replace(self, indexes=tuple(indexes))

    def without_index(self, name: str) -> Catalog:
        found = self.index(name)
        return replace(self, indexes=tuple(i for i in self.indexes if i is not found))


# Words that end a column's type name and start its constraints (SQLite "column-constraint").
_CONSTRAINT_WORDS = frozenset(
    {
        "CONSTRAINT",
        "PRIMARY KEY",
        "PRIMARY",
        "NOT",
        "NULL",
        "UNIQUE",
        "CHECK",
        "DEFAULT",
        "COLLATE",
        "REFERENCES",
        "GENERATED",
        "AS",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateTableParts:
    schema: TableSchema
    if_not_exists: bool


def parse_create_table(sql: str) -> CreateTableParts:
    """Read ``CREATE TABLE`` (with shardb's ``WITH (...)`` options) into a TableSchema."""
    tokens = tokenize(sql)
    cur = Cursor(tokens, sql)
    index = cur.expect(0, "CREATE")
    if cur.word(index) in ("TEMP", "TEMPORARY"):
        raise SchemaError("temporary tables are not supported: each node would hold its own")
    index = cur.expect(index, "TABLE")
    if_not_exists = cur.word(index) == "IF"
    if if_not_exists:
        index = cur.expect(index, "IF", "NOT", "EXISTS")
    name_token = cur.at(index)
    if name_token is None or not is_name(name_token):
        raise SqlSyntaxError("expected a table name after CREATE TABLE")
    if cur.at(index + 1) is not None and cur.word(index + 1) == ".":
        raise SchemaError("schema-qualified table names are not supported")
    table = name_token.text
    index += 1
    if cur.word(index) == "AS":
        raise SchemaError("CREATE TABLE ... AS SELECT is not supported; create, then insert")
    if cur.at(index) is None or tokens[index].token_type is not TokenType.L_PAREN:
        raise SqlSyntaxError("expected '(' and column definitions after the table name")
    close = matching_paren(tokens, index)
    columns: list[ColumnSchema] = []
    key_columns: list[str] = []
    for first, last in top_level_items(tokens, index + 1, close):
        _read_definition(cur, first, last, table, columns, key_columns)
    if not columns:
        raise SchemaError(f"table {table} has no columns")
    sql_end, shards, backend = _read_table_options(cur, close + 1)
    key = _check_key(table, columns, key_columns)
    schema = TableSchema(
        name=table,
        columns=tuple(columns),
        primary_key=key.name,
        key_type=KeyType(key.declared_type.upper()),
        shards=shards,
        backend=backend,
        create_sql=sql[: tokens[sql_end].end + 1],
    )
    return CreateTableParts(schema=schema, if_not_exists=if_not_exists)


def _read_definition(
    cur: Cursor,
    first: int,
    last: int,
    table: str,
    columns: list[ColumnSchema],
    key_columns: list[str],
) -> None:
    tokens = cur.tokens
    word = cur.word(first)
    if word == "CONSTRAINT":
        first += 2
        word = cur.word(first)
    if word in ("PRIMARY KEY", "PRIMARY"):
        open_index = first + (1 if word == "PRIMARY KEY" else 2)
        if open_index > last or tokens[open_index].token_type is not TokenType.L_PAREN:
            raise SqlSyntaxError("expected '(' after PRIMARY KEY")
        close = matching_paren(tokens, open_index)
        for a, b in top_level_items(tokens, open_index + 1, close):
            words = [upper(t) for t in tokens[a + 1 : b + 1]]
            if "DESC" in words:
                raise SchemaError("PRIMARY KEY (... DESC) is not supported (not a rowid alias)")
            if "COLLATE" in words:
                raise SchemaError("a collation on the primary key is not supported")
            key_columns.append(tokens[a].text)
        _refuse_common(cur, close + 1, last, table)
        return
    if word in ("UNIQUE", "FOREIGN KEY", "FOREIGN"):
        raise SchemaError(
            f"{word} table constraints are not supported: each range can check only its own "
            "rows, so the constraint would not hold across the table"
        )
    if word == "CHECK":
        return
    name_token = tokens[first]
    if not is_name(name_token):
        raise SqlSyntaxError(f"expected a column name, found {name_token.text!r}")
    type_end = first + 1
    while type_end <= last and cur.word(type_end) not in _CONSTRAINT_WORDS:
        if tokens[type_end].token_type is TokenType.L_PAREN:
            type_end = matching_paren(tokens, type_end)
        type_end += 1
    declared = cur.text(first + 1, type_end - 1) if type_end > first + 1 else ""
    collation = Collation.BINARY
    position = type_end
    while position <= last:
        word = cur.word(position)
        kind = tokens[position].token_type
        if kind is TokenType.L_PAREN:
            position = matching_paren(tokens, position) + 1
            continue
        if kind in (TokenType.STRING, TokenType.IDENTIFIER):
            position += 1  # a value or a quoted name, never a constraint keyword
            continue
        if word in ("PRIMARY KEY", "PRIMARY"):
            key_columns.append(name_token.text)
            following = cur.word(position + (1 if word == "PRIMARY KEY" else 2))
            if following == "DESC":
                raise SchemaError("PRIMARY KEY DESC is not supported (not a rowid alias)")
        elif word == "COLLATE":
            named = cur.word(position + 1)
            found = collation_named(named)
            if found is None:
                raise SchemaError(f"unknown collation {named}")
            collation = found
        elif word in ("GENERATED", "AS"):
            raise SchemaError("generated columns are not supported")
        _refuse_word(word, table)
        position += 1
    columns.append(ColumnSchema(name=name_token.text, declared_type=declared, collation=collation))


def _refuse_word(word: str, table: str) -> None:
    if word == "UNIQUE":
        raise SchemaError(
            f"UNIQUE columns are not supported in {table}: each range can check only its own "
            "rows (the primary key is unique because each key lives in exactly one range)"
        )
    if word == "REFERENCES":
        raise SchemaError("foreign keys are not supported: the rows live in other ranges")
    if word == "AUTOINCREMENT":
        raise SchemaError(
            "AUTOINCREMENT is not supported: each range would assign keys on its own; "
            "supply primary-key values explicitly"
        )


def _refuse_common(cur: Cursor, first: int, last: int, table: str) -> None:
    for position in range(first, last + 1):
        _refuse_word(cur.word(position), table)


def _read_table_options(cur: Cursor, index: int) -> tuple[int, int, Backend | None]:
    """Check SQLite table options and read shardb's; return (last token of SQL, shards, backend)."""
    tokens = cur.tokens
    sql_end = index - 1
    shards = 1
    backend: Backend | None = None
    while index < len(tokens):
        word = cur.word(index)
        if word == "WITHOUT":
            raise SchemaError("WITHOUT ROWID tables are not supported")
        if word == "STRICT":
            sql_end = index
            index += 1
        elif word == "," and tokens[index].token_type is TokenType.COMMA:
            index += 1
        elif word == "WITH":
            shards, backend = _read_with_options(cur, index + 1)
            break
        else:
            raise SqlSyntaxError(f"unexpected {tokens[index].text!r} after the column list")
    return sql_end, shards, backend


def _read_with_options(cur: Cursor, index: int) -> tuple[int, Backend | None]:
    tokens = cur.tokens
    if cur.at(index) is None or tokens[index].token_type is not TokenType.L_PAREN:
        raise SqlSyntaxError("expected '(' after WITH")
    close = matching_paren(tokens, index)
    if close != len(tokens) - 1:
        raise SqlSyntaxError("the WITH (...) options must end the CREATE TABLE statement")
    shards = 1
    backend: Backend | None = None
    seen: list[str] = []
    for first, last in top_level_items(tokens, index + 1, close):
        if last != first + 2 or tokens[first + 1].token_type is not TokenType.EQ:
            raise SqlSyntaxError("table options are written name = value")
        option = tokens[first].text.lower()
        value = tokens[last]
        if option in seen:
            raise SchemaError(f"option {option} given twice")
        seen.append(option)
        if option == "shards":
            if value.token_type is not TokenType.NUMBER or not value.text.isdigit():
                raise SchemaError("shards must be a positive integer")
            shards = int(value.text)
            if not 1 <= shards <= MAX_SHARDS:
                raise SchemaError(f"shards must be between 1 and {MAX_SHARDS}")
        elif option == "backend":
            try:
                backend = Backend(value.text.lower())
            except ValueError:
                names = ", ".join(b.value for b in Backend)
                raise SchemaError(f"backend must be one of {names}") from None
        else:
            raise SchemaError(f"unknown table option {option} (known: shards, backend)")
    return shards, backend


def _check_key(table: str, columns: Sequence[ColumnSchema], keys: list[str]) -> ColumnSchema:
    if not keys:
        raise SchemaError(
            f"table {table} needs a PRIMARY KEY: ranges are intervals of the primary key"
        )
    if len(keys) > 1:
        raise SchemaError(f"table {table}: composite primary keys are not supported")
    folded = keys[0].lower()
    key = next((c for c in columns if c.name.lower() == folded), None)
    if key is None:
        raise SchemaError(f"primary key column {keys[0]} is not a column of {table}")
    if key.declared_type.upper() not in ("INTEGER", "TEXT"):
        raise SchemaError(
            f"primary key {key.name} must be declared INTEGER or TEXT, not "
            f"{key.declared_type or 'untyped'!r} (ranges need one key type)"
        )
    if key.collation is not Collation.BINARY:
        raise SchemaError("a collation on the primary key is not supported")
    return key


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateIndexParts:
    index: IndexSchema
    if_not_exists: bool


def parse_create_index(sql: str) -> CreateIndexParts:
    tokens = tokenize(sql)
    cur = Cursor(tokens, sql)
    index = cur.expect(0, "CREATE")
    if cur.word(index) == "UNIQUE":
        raise SchemaError(
            "UNIQUE indexes are not supported: each range can check only its own rows"
        )
    index = cur.expect(index, "INDEX")
    if_not_exists = cur.word(index) == "IF"
    if if_not_exists:
        index = cur.expect(index, "IF", "NOT", "EXISTS")
    name = _name_at(tokens, index, "index name")
    index = cur.expect(index + 1, "ON")
    table = _name_at(tokens, index, "table name")
    if cur.at(index + 1) is None or tokens[index + 1].token_type is not TokenType.L_PAREN:
        raise SqlSyntaxError("expected '(' and indexed columns after the table name")
    return CreateIndexParts(
        index=IndexSchema(name=name, table=table, create_sql=sql.strip()),
        if_not_exists=if_not_exists,
    )


def _name_at(tokens: Sequence[Token], index: int, what: str) -> str:
    if index >= len(tokens) or not is_name(tokens[index]):
        raise SqlSyntaxError(f"expected {what}")
    if index + 1 < len(tokens) and tokens[index + 1].token_type is TokenType.DOT:
        raise SchemaError("schema-qualified names are not supported")
    return tokens[index].text
