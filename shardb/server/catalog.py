"""SQLite catalog queries, answered by the gateway from the cluster's SQL catalog.

SQLAlchemy's SQLite dialect (which ``shardb.sqlalchemy`` subclasses) reflects a database with
``PRAGMA main.table_xinfo("t")``, ``PRAGMA main.index_list("t")``, ``PRAGMA
main.index_info("ix")``, ``PRAGMA main.foreign_key_list("t")``, ``PRAGMA database_list`` and
SELECTs over ``sqlite_master`` / ``sqlite_temp_master`` (table names, a table's CREATE TABLE
text). No single SQLite database of the cluster holds every table (a node holds only the ranges
it replicates), so the gateway answers them from the catalog instead: every table's CREATE
TABLE as each range's SQLite runs it (shardb's ``WITH (...)`` options cut off:
``TableSchema.create_sql``) and every CREATE INDEX are loaded into an in-memory SQLite database
and the statement runs there unchanged. The answers are therefore SQLite's own (declared types,
NOT NULL, defaults, primary key, index columns), exactly what the dialect expects to parse.

The in-memory database holds the catalog only, never rows, so a statement that reads anything
but the catalog would silently see empty tables. Two guards keep it to the catalog: an
authorizer allows only reads of ``sqlite_master``-like tables and ``pragma_*`` table-valued
functions, the PRAGMAs of ``CATALOG_PRAGMAS`` and function calls; and an exec trace refuses any
statement SQLite does not call read-only. Everything else is not recognised here and takes the
gateway's normal path (where a PRAGMA is refused as an unsupported statement).

One database is kept per catalog value (a small LRU), so a burst of reflection queries after
the same DDL loads the schema once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any, Final

import apsw
from sqlglot.tokenizer_core import Token, TokenType

from consensus.runtime.errors import ApplicationError
from shardb.sql import Catalog, SqlError, split_statements
from shardb.sql.lexer import tokenize

CATALOG_PRAGMAS: Final = (
    "database_list",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "table_info",
    "table_list",
    "table_xinfo",
)
"""The read-only PRAGMAs that describe the schema (the ones SQLAlchemy's reflection issues)."""

SYSTEM_TABLES: Final = (
    "sqlite_master",
    "sqlite_schema",
    "sqlite_temp_master",
    "sqlite_temp_schema",
)
SCHEMAS: Final = ("main", "temp")
CACHED_CATALOGS: Final = 8

_HINT: Final = re.compile(r"pragma|sqlite_", re.IGNORECASE)
"""Every catalog query contains one of these; the common statement is not tokenized twice."""

_NAME_TYPES: Final = (TokenType.VAR, TokenType.IDENTIFIER)
_ARGUMENT_TYPES: Final = (TokenType.VAR, TokenType.IDENTIFIER, TokenType.STRING)
_BEFORE_TABLE: Final = (TokenType.FROM, TokenType.JOIN, TokenType.COMMA)


def is_catalog_query(sql: str) -> bool:
    """One statement this module answers: a PRAGMA of ``CATALOG_PRAGMAS`` (``PRAGMA
    [main.|temp.]name`` or ``name(argument)``), a SELECT that reads one of ``SYSTEM_TABLES``,
    or ``SELECT sqlite_version()`` (the dialect asks which SQLite the cluster runs)."""
    if _HINT.search(sql) is None:
        return False
    try:
        statements = split_statements(sql)
        if len(statements) != 1:
            return False
        tokens = tokenize(statements[0])
    except SqlError:
        return False
    if not tokens:
        return False
    match tokens[0].token_type:
        case TokenType.PRAGMA:
            return _is_catalog_pragma(tokens)
        case TokenType.SELECT:
            return _reads_system_table(tokens) or _is_version_query(tokens)
        case _:
            return False


def _is_catalog_pragma(tokens: Sequence[Token]) -> bool:
    index = 1
    if (
        len(tokens) > 3
        and tokens[2].token_type is TokenType.DOT
        and tokens[1].text.lower() in SCHEMAS
    ):
        index = 3
    if index >= len(tokens) or tokens[index].token_type not in _NAME_TYPES:
        return False
    if tokens[index].text.lower() not in CATALOG_PRAGMAS:
        return False
    rest = [t.token_type for t in tokens[index + 1 :]]
    if not rest:
        return True
    return (
        len(rest) == 3
        and rest[0] is TokenType.L_PAREN
        and rest[1] in _ARGUMENT_TYPES
        and rest[2] is TokenType.R_PAREN
    )


def _reads_system_table(tokens: Sequence[Token]) -> bool:
    for index, token in enumerate(tokens):
        if token.token_type not in _NAME_TYPES or token.text.lower() not in SYSTEM_TABLES:
            continue
        before = tokens[index - 1].token_type
        if before in _BEFORE_TABLE:
            return True
        # main.sqlite_master: the schema name follows FROM or JOIN.
        if before is TokenType.DOT and index >= 3 and tokens[index - 3].token_type in _BEFORE_TABLE:
            return True
    return False


def _is_version_query(tokens: Sequence[Token]) -> bool:
    return [t.text.lower() for t in tokens] == ["select", "sqlite_version", "(", ")"]


def run_catalog_query(
    sql: str, params: Sequence[Any], catalog: Catalog
) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    """Run a statement ``is_catalog_query`` accepted over ``catalog``: (columns, rows).

    Raises ``ApplicationError`` with the protocol's codes: ``unsupported`` for anything but a
    read of the catalog, ``parameter_error`` for wrong bindings, ``sql_error`` for SQLite's
    own errors (e.g. a syntax error inside the SELECT)."""
    db = _database(catalog)
    cursor = db.cursor()
    names: list[str] = []

    def trace(c: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
        if not c.is_readonly:
            return False
        # The description exists only while the statement runs (also when it has no rows).
        names[:] = [name for name, _ in c.get_description()]
        return True

    cursor.exec_trace = trace
    try:
        rows = tuple(tuple(row) for row in cursor.execute(sql, tuple(params)))
    except (apsw.ExecTraceAbort, apsw.AuthError) as exc:
        raise ApplicationError(
            "unsupported",
            "catalog queries may only read sqlite_master and the schema PRAGMAs "
            f"({', '.join(CATALOG_PRAGMAS)})",
            statement=sql,
        ) from exc
    except apsw.BindingsError as exc:
        raise ApplicationError("parameter_error", str(exc), statement=sql) from exc
    except apsw.Error as exc:
        raise ApplicationError("sql_error", str(exc), statement=sql) from exc
    finally:
        cursor.close()
    return tuple(names), rows


@functools.lru_cache(maxsize=CACHED_CATALOGS)
def _database(catalog: Catalog) -> apsw.Connection:
    """An in-memory SQLite database holding ``catalog``'s tables and indexes (no rows).

    Catalogs are immutable values, so the cache key is the catalog itself: gateways that
    see the same schema share one database, and DDL makes a new one."""
    db = apsw.Connection(":memory:")
    try:
        with db:
            for table in catalog.tables:
                db.execute(table.create_sql)
            for index in catalog.indexes:
                db.execute(index.create_sql)
    except apsw.Error as exc:
        db.close()
        # Every range's SQLite ran these very statements: failing here is a bug, not input.
        raise ApplicationError("internal", f"cannot load the catalog: {exc}") from exc
    db.authorizer = _authorize
    return db


def _authorize(
    action: int, first: str | None, second: str | None, _schema: str | None, _trigger: str | None
) -> int:
    """Allow reads of the catalog only (module docstring): the tables in memory are empty, so
    a read of one of them would be a wrong answer, not an answer."""
    del second
    if action in (apsw.SQLITE_SELECT, apsw.SQLITE_FUNCTION):
        return apsw.SQLITE_OK
    if action == apsw.SQLITE_READ and first is not None:
        name = first.lower()
        if name in SYSTEM_TABLES or name.removeprefix("pragma_") in CATALOG_PRAGMAS:
            return apsw.SQLITE_OK
    if action == apsw.SQLITE_PRAGMA and first is not None and first.lower() in CATALOG_PRAGMAS:
        return apsw.SQLITE_OK
    return apsw.SQLITE_DENY
