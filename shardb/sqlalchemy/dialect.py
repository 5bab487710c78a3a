"""The SQLAlchemy 2.x dialect for shardb: SQLite's dialect over shardb's DB-API driver.

::

    from sqlalchemy import create_engine

    engine = create_engine("shardb://127.0.0.1:7001?host=127.0.0.1:7002&consistency=lease")

Every shard is a SQLite database and the gateway passes SQLite's SQL through, so the dialect
is ``SQLiteDialect`` (compilers, types, reflection) with these differences:

**Transactions.** shardb autocommits every statement: there are no multi-statement
transactions (ARCHITECTURE.md, "SQL, server and client"). ``COMMIT`` therefore has nothing to
do and is a no-op. A ``ROLLBACK`` is a no-op as long as nothing was written since the last
commit (a read-only transaction, a statement that failed and applied nothing, the pool's reset
of a returned connection). An explicit rollback that would have to undo writes which already
applied raises ``sqlalchemy.exc.NotSupportedError`` naming them, instead of pretending they were
undone: commit instead, or create the engine with ``isolation_level="AUTOCOMMIT"``, which says
that rollbacks undo nothing and makes them no-ops. A rollback caused by an error (a failed
flush, an exception inside ``engine.begin()``) does not replace that error: it propagates with
a note that the earlier writes stayed applied, and a ``RollbackWarning`` is issued.
Savepoints (``begin_nested``) and two-phase commit are refused. The default isolation level is
reported as ``READ UNCOMMITTED``, the standard name for the one anomaly that matters here:
other connections see a write as soon as its statement returns, before the "transaction"
commits.

**DDL.** Refused at compile time with ``sqlalchemy.exc.CompileError``, each for the reason the
gateway gives (``shardb.sql.catalog``): a table without a primary key or with a composite one,
a primary key that is not an integer or a string, ``sqlite_autoincrement``, ``WITHOUT ROWID``,
``UNIQUE`` constraints and unique indexes (each range can check only its own rows), and foreign
keys (the referenced rows live in other ranges; declare ORM relationships with
``primaryjoin``/``foreign()`` instead). A single-column primary key is declared ``INTEGER``
(any SQLAlchemy integer type) or ``TEXT`` (strings, ``Uuid``), the two key types ranges are cut
on. ``Table(..., shardb_shards=N, shardb_backend="paxos")`` adds shardb's ``WITH (...)``.

**Statements.** Refused when compiled (``CompileError``, nothing sent): ``RETURNING`` (the
gateway cannot merge it across ranges), and an INSERT that leaves the primary key to the
database (autoincrement): a key assigned by each range on its own would be neither unique nor
inside that range, so give the key (a Python-side ``default=`` on the key column works; the
gateway refuses such an INSERT too). Joins, subqueries (also ``Query.count()``; use
``select(func.count()).select_from(...)``), DISTINCT and the other refusals of
``shardb.sql.analyze`` come back from the gateway as ``NotSupportedError``.

**Reflection** is SQLite's: the gateway answers the catalog PRAGMAs and ``sqlite_master``
queries from the cluster's catalog (``shardb.server.catalog``).

URL: ``shardb://HOST:PORT`` plus any number of ``host=HOST:PORT`` query arguments for more
gateways (SQLAlchemy's URL parser cannot read a comma-separated host list), and the DB-API
options ``consistency`` (``linearizable`` | ``lease`` | ``stale``), ``timeout`` (seconds),
``max_staleness_ms`` and ``trace``.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import exc, util
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler, SQLiteDDLCompiler, SQLiteDialect
from sqlalchemy.engine import default
from sqlalchemy.schema import Column, Table

import shardb
from shardb.client.dbapi import Connection
from shardb.client.errors import CLOSED
from shardb.client.wire import first_keyword

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.engine.interfaces import (
        ConnectArgsType,
        DBAPIConnection,
        DBAPICursor,
        DBAPIModule,
        ExecutionContext,
        IsolationLevel,
    )
    from sqlalchemy.pool import PoolProxiedConnection
    from sqlalchemy.sql.ddl import CreateIndex, CreateTable
    from sqlalchemy.sql.dml import Insert, UpdateBase
    from sqlalchemy.sql.schema import ForeignKeyConstraint, UniqueConstraint
    from sqlalchemy.sql.selectable import _ColumnsClauseElement

DEFAULT_ISOLATION_LEVEL: Final[IsolationLevel] = "READ UNCOMMITTED"
AUTOCOMMIT: Final[IsolationLevel] = "AUTOCOMMIT"
URL_OPTIONS: Final = ("consistency", "host", "max_staleness_ms", "timeout", "trace")

_READ_KEYWORDS: Final = frozenset({"SELECT", "PRAGMA", "EXPLAIN", "SHOW", "VALUES"})
_MAYBE_APPLIED: Final = frozenset({"partial", "unknown_outcome", "timeout"})
"""Error codes after which a write may have applied (SQL client protocol, "errors")."""
_VERSION: Final = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


class RollbackWarning(exc.SAWarning):
    """A rollback during error handling could not undo the writes before the error."""


class ShardbConnection(Connection):
    """shardb's DB-API connection plus what the dialect tracks to keep ``rollback`` honest:
    the writes applied since the last commit or rollback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.autocommit = False
        """``isolation_level="AUTOCOMMIT"``: rollbacks are no-ops even after writes."""
        self.applied: list[str] = []
        """Writes (and writes that may have applied) since the last commit or rollback."""


class ShardbCompiler(SQLiteCompiler):
    """SQLite's statement compiler, refusing what the gateway would refuse anyway, before
    anything is sent."""

    def visit_insert(
        self,
        insert_stmt: Insert,
        visited_bindparam: Any = None,
        visiting_cte: Any = None,
        **kw: Any,
    ) -> str:
        text = str(
            super().visit_insert(  # type: ignore[no-untyped-call]  # unannotated in SQLAlchemy
                insert_stmt, visited_bindparam, visiting_cte, **kw
            )
        )
        if self.postfetch_lastrowid:
            # SQLAlchemy left the key to the database (it would read cursor.lastrowid).
            table = insert_stmt.table
            keys = ", ".join(c.name for c in getattr(table, "primary_key", ()))
            raise exc.CompileError(
                f"INSERT INTO {getattr(table, 'name', table)} must give its primary key "
                f"({keys}) as a value: shardb does not assign keys, since a key assigned by "
                "each range on its own would be neither unique nor inside that range; give "
                "the key (or a Python-side default= on the column)"
            )
        return text

    def returning_clause(
        self,
        stmt: UpdateBase,
        returning_cols: Sequence[_ColumnsClauseElement],
        *,
        populate_result_map: bool,
        **kw: Any,
    ) -> str:
        raise exc.CompileError("RETURNING is not supported by shardb: run a SELECT after the write")


class ShardbDDLCompiler(SQLiteDDLCompiler):
    """SQLite's DDL, minus what a range cannot enforce on its own (module docstring)."""

    def visit_create_table(self, create: CreateTable, **kw: Any) -> str:
        table = create.element
        keys = list(table.primary_key.columns)
        if not keys:
            raise exc.CompileError(
                f"shardb table {table.name!r} needs a primary key: ranges are intervals of it"
            )
        if len(keys) > 1:
            raise exc.CompileError(
                f"shardb table {table.name!r}: composite primary keys are not supported "
                "(ranges are intervals of one key column)"
            )
        sqlite_options = table.dialect_options["sqlite"]
        if sqlite_options["autoincrement"]:
            raise exc.CompileError(
                "sqlite_autoincrement is not supported by shardb: each range would assign keys "
                "on its own; give primary-key values explicitly (or a Python-side default=)"
            )
        if not sqlite_options["with_rowid"]:
            raise exc.CompileError("WITHOUT ROWID tables are not supported by shardb")
        return str(super().visit_create_table(create, **kw))  # type: ignore[no-untyped-call]  # SQLAlchemy's DDL compiler is unannotated

    def get_column_specification(self, column: Column[Any], **kwargs: Any) -> str:
        spec = str(super().get_column_specification(column, **kwargs))  # type: ignore[no-untyped-call]  # unannotated in SQLAlchemy
        if not column.primary_key:
            return spec
        declared = str(
            self.dialect.type_compiler_instance.process(column.type, type_expression=column)
        )
        head = f"{self.preparer.format_column(column)} {declared}"
        key_type = _key_type(column)
        if not spec.startswith(head):  # pragma: no cover - SQLite's spec starts so
            raise exc.CompileError(f"cannot declare the key type of {column.name!r}")
        return f"{self.preparer.format_column(column)} {key_type}{spec[len(head) :]}"

    def visit_unique_constraint(self, constraint: UniqueConstraint, **kw: Any) -> str:
        columns = ", ".join(c.name for c in constraint.columns)
        raise exc.CompileError(
            f"UNIQUE ({columns}) is not supported by shardb: each range can check only its own "
            "rows, so the constraint would not hold across the table (only the primary key is "
            "unique, because each key lives in exactly one range)"
        )

    def visit_foreign_key_constraint(self, constraint: ForeignKeyConstraint, **kw: Any) -> str:
        columns = ", ".join(constraint.column_keys)
        raise exc.CompileError(
            f"FOREIGN KEY ({columns}) is not supported by shardb: the referenced rows live in "
            "other ranges; drop ForeignKey() and declare ORM relationships with "
            "primaryjoin=... and foreign()"
        )

    def visit_create_index(
        self,
        create: CreateIndex,
        include_schema: bool = False,
        include_table_schema: bool = True,
        **kw: Any,
    ) -> str:
        index = create.element
        if index.unique:
            raise exc.CompileError(
                f"unique index {index.name!r} is not supported by shardb: each range can check "
                "only its own rows"
            )
        return str(
            super().visit_create_index(  # type: ignore[no-untyped-call]  # unannotated in SQLAlchemy
                create,
                include_schema=include_schema,
                include_table_schema=include_table_schema,
                **kw,
            )
        )

    def post_create_table(self, table: Table) -> str:
        text = str(super().post_create_table(table))  # type: ignore[no-untyped-call]  # unannotated in SQLAlchemy
        options = table.dialect_options["shardb"]
        items: list[str] = []
        if options["shards"] is not None:
            items.append(f"shards = {int(options['shards'])}")
        if options["backend"] is not None:
            backend = str(options["backend"])
            if not backend.isalnum():
                raise exc.CompileError(f"shardb_backend must be a backend name, not {backend!r}")
            items.append(f"backend = '{backend}'")
        if items:
            text += " WITH (" + ", ".join(items) + ")"
        return text


def _key_type(column: Column[Any]) -> str:
    """``INTEGER`` or ``TEXT``: the declared type of a primary key the ranges can be cut on."""
    type_ = column.type
    if isinstance(type_, sqltypes.TypeDecorator):
        type_ = type_.impl_instance
    if isinstance(type_, sqltypes.Integer):
        return "INTEGER"
    if isinstance(type_, sqltypes.String | sqltypes.Uuid):
        return "TEXT"
    raise exc.CompileError(
        f"primary key {column.name!r} of type {column.type} is not supported by shardb: "
        "use an integer or a string type (ranges are cut on INTEGER or TEXT keys)"
    )


class ShardbDialect(SQLiteDialect):
    """SQLite's dialect over ``shardb``'s DB-API driver (module docstring)."""

    name = "shardb"
    driver = "shardb"
    supports_statement_cache = True

    insert_returning = False
    update_returning = False
    update_returning_multifrom = False
    delete_returning = False
    delete_returning_multifrom = False
    insert_executemany_returning = False
    insert_null_pk_still_autoincrements = False
    """The gateway refuses a NULL key rather than letting a range assign one."""
    supports_sane_rowcount = True
    supports_sane_multi_rowcount = True
    supports_server_side_cursors = False
    statement_compiler = ShardbCompiler
    ddl_compiler = ShardbDDLCompiler

    construct_arguments = [(Table, {"shards": None, "backend": None})]

    def __init__(
        self,
        json_serializer: Any = None,
        json_deserializer: Any = None,
        **kwargs: Any,
    ) -> None:
        # SQLiteDialect.__init__ reads the version of the sqlite3 module it would run on; the
        # SQLite that matters here is the cluster's, read in _get_server_version_info.
        default.DefaultDialect.__init__(self, **kwargs)
        self._json_serializer = json_serializer
        self._json_deserializer = json_deserializer
        self.native_datetime = False

    @classmethod
    def import_dbapi(cls) -> DBAPIModule:
        return cast("DBAPIModule", shardb)

    def create_connect_args(self, url: URL) -> ConnectArgsType:
        unknown = sorted(set(url.query) - set(URL_OPTIONS))
        if unknown:
            raise exc.ArgumentError(
                f"unknown shardb URL option(s) {', '.join(unknown)} "
                f"(known: {', '.join(URL_OPTIONS)})"
            )
        if url.username or url.password:
            raise exc.ArgumentError("shardb has no authentication: remove user:password@")
        if url.database:
            raise exc.ArgumentError(
                f"shardb serves one database per cluster: remove /{url.database} from the URL"
            )
        addresses: list[str] = []
        if url.host:
            if url.port is None:
                raise exc.ArgumentError("the shardb URL needs a port: shardb://HOST:PORT")
            host = f"[{url.host}]" if ":" in url.host else url.host
            addresses.append(f"{host}:{url.port}")
        extra = url.query.get("host", ())
        addresses.extend([extra] if isinstance(extra, str) else extra)
        if not addresses:
            raise exc.ArgumentError("the shardb URL names no gateway: shardb://HOST:PORT")
        options: dict[str, Any] = {}
        query = url.normalized_query
        if "consistency" in query:
            options["consistency"] = query["consistency"][-1]
        if "timeout" in query:
            options["timeout"] = float(query["timeout"][-1])
        if "max_staleness_ms" in query:
            options["max_staleness_ms"] = int(query["max_staleness_ms"][-1])
        if "trace" in query:
            options["trace"] = util.asbool(query["trace"][-1])
        options["address"] = addresses
        return [], options

    def connect(self, *cargs: Any, **cparams: Any) -> DBAPIConnection:
        return cast("DBAPIConnection", ShardbConnection(*cargs, **cparams))

    def _get_server_version_info(self, connection: SAConnection) -> tuple[int, ...]:
        # Answered by the gateway's SQLite (shardb.server.catalog), the build the shards run.
        version = str(connection.exec_driver_sql("SELECT sqlite_version()").scalar())
        found = _VERSION.match(version)
        if found is None:
            raise exc.InvalidRequestError(f"cannot read the SQLite version {version!r}")
        return tuple(int(part) for part in found.groups() if part is not None)

    def do_ping(self, dbapi_connection: DBAPIConnection) -> bool:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT sqlite_version()")
        finally:
            cursor.close()
        return True

    def is_disconnect(
        self,
        e: Exception,
        connection: PoolProxiedConnection | DBAPIConnection | None,
        cursor: DBAPICursor | None,
    ) -> bool:
        # The driver dials a gateway afresh when one goes away; only a closed connection is
        # beyond repair.
        return isinstance(e, shardb.InterfaceError) and e.code == CLOSED

    # ------------------------------------------------------------------ isolation

    def get_isolation_level_values(self, dbapi_connection: DBAPIConnection) -> list[IsolationLevel]:
        return [DEFAULT_ISOLATION_LEVEL, AUTOCOMMIT]

    def get_isolation_level(self, dbapi_connection: DBAPIConnection) -> IsolationLevel:
        return AUTOCOMMIT if _tracked(dbapi_connection).autocommit else DEFAULT_ISOLATION_LEVEL

    def set_isolation_level(self, dbapi_connection: DBAPIConnection, level: str) -> None:
        _tracked(dbapi_connection).autocommit = level == AUTOCOMMIT

    def detect_autocommit_setting(self, dbapi_conn: DBAPIConnection) -> bool:
        return _tracked(dbapi_conn).autocommit

    # ------------------------------------------------------------------ transactions

    def do_begin(self, dbapi_connection: PoolProxiedConnection) -> None:
        _tracked(dbapi_connection).applied.clear()

    def do_commit(self, dbapi_connection: PoolProxiedConnection) -> None:
        # Every statement committed when it returned: nothing is pending.
        _tracked(dbapi_connection).applied.clear()

    def do_rollback(self, dbapi_connection: PoolProxiedConnection) -> None:
        connection = _tracked(dbapi_connection)
        applied, connection.applied = connection.applied, []
        if not applied or connection.autocommit:
            return
        first = " ".join(applied[0].split())
        what = (
            f"shardb autocommits every statement, and {len(applied)} write(s) since the last "
            f"commit already applied (first: {first[:200]})"
        )
        failure = sys.exc_info()[1]
        if failure is not None:
            # Rolling back because of an error (a failed flush, an exception in a begin()
            # block): that error is what the caller must see, so it is not replaced; it and
            # a warning say that the writes before it were not undone.
            failure.add_note(f"shardb: the rollback undid nothing: {what}")
            warnings.warn(f"rollback undid nothing: {what}", RollbackWarning, stacklevel=2)
            return
        raise shardb.NotSupportedError(
            f"cannot roll back: {what}. Commit instead, or create the engine with "
            "isolation_level='AUTOCOMMIT' to make rollbacks no-ops",
            code="unsupported",
        )

    def do_savepoint(self, connection: SAConnection, name: str) -> None:
        raise exc.NotSupportedError(
            f"SAVEPOINT {name}",
            None,
            shardb.NotSupportedError(
                "savepoints (begin_nested) are not supported: shardb autocommits every "
                "statement and has no transactions to nest",
                code="unsupported",
            ),
        )

    def do_begin_twophase(self, connection: SAConnection, xid: Any) -> None:
        raise exc.NotSupportedError(
            "BEGIN TWO PHASE",
            None,
            shardb.NotSupportedError(
                "two-phase commit is not supported: shardb has no transactions",
                code="unsupported",
            ),
        )

    # ------------------------------------------------------------------ execution

    def do_execute(
        self,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None = None,
    ) -> None:
        try:
            cursor.execute(statement, parameters)
        except shardb.Error as error:
            _note_failure(cursor, statement, error)
            raise
        _note_success(cursor, statement)

    def do_executemany(
        self,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None = None,
    ) -> None:
        try:
            cursor.executemany(statement, parameters)
        except shardb.Error as error:
            # Not atomic: the batches before the failing one stay applied (rowcount says so).
            if cursor.rowcount > 0:
                _note_written(cursor, f"{statement} ({cursor.rowcount} row(s) applied)")
            else:
                _note_failure(cursor, statement, error)
            raise
        _note_success(cursor, statement)

    def do_execute_no_params(
        self,
        cursor: DBAPICursor,
        statement: str,
        context: ExecutionContext | None = None,
    ) -> None:
        self.do_execute(cursor, statement, (), context)


def _tracked(connection: Any) -> ShardbConnection:
    """The ``ShardbConnection`` behind a pool proxy (or the connection itself)."""
    raw = getattr(connection, "dbapi_connection", connection)
    if not isinstance(raw, ShardbConnection):
        raise exc.InvalidRequestError(
            f"the shardb dialect runs on its own DB-API connections, not {type(raw).__name__} "
            "(a creator= must return shardb.sqlalchemy.ShardbConnection(...))"
        )
    return raw


def _note_success(cursor: DBAPICursor, statement: str) -> None:
    if first_keyword(statement) not in _READ_KEYWORDS:
        _note_written(cursor, statement)


def _note_failure(cursor: DBAPICursor, statement: str, error: shardb.Error) -> None:
    if error.code in _MAYBE_APPLIED:
        _note_written(cursor, f"{statement} (failed with {error.code}: may have applied)")


def _note_written(cursor: DBAPICursor, statement: str) -> None:
    _tracked(cast("Any", cursor).connection).applied.append(statement)
