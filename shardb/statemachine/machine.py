"""``SqlStateMachine``: SQL groups on a node, as the runtime's ``StateMachine`` Protocol.

One SQLite file per node (apsw, WAL, ``synchronous=NORMAL``, as ``KVStateMachine`` and for
the same reasons: the consensus log is the source of truth). User tables are real SQLite
tables created from the user's CREATE TABLE text. All groups of table ``t`` on this node share
the one physical table ``t``: their ranges are disjoint, so a split copies no data, and the new
right-hand group starts from the parent's rows.

Bookkeeping lives in ``shardb_applied(group_id, idx)`` and ``shardb_groups(group_id, range_id,
table_name, start_key, end_key, epoch, replicas, backend, schema, key_column, dropped)``; user
tables named ``shardb_*`` are refused.

Exactly once (ARCHITECTURE.md, "State machine"): a batch's row changes and the group's applied
index commit in one transaction; entries at or below applied are skipped. Each command runs in
a SAVEPOINT: a deterministic error (constraint, type, SQLite error from the user's SQL, or a
refusal by ``shardb.statemachine.guard``) rolls back only that command and is returned as an
error result; the entry still counts as applied. Errors of the environment (disk full, I/O,
corruption, busy) are not deterministic: they propagate, the batch rolls back, and the entries
are applied again later.

Per-group DDL on a shared physical table. CREATE INDEX / DROP INDEX act on the shared object:
the first group on a node to apply one creates (drops) it, and the others find it already there
(gone) and succeed as no-ops, so a group's result never depends on which other groups a node
hosts. An index changes no query result, so the interval where some groups have applied it and
others have not is only a performance difference. DROP TABLE deletes the group's rows and marks
the group dropped; the physical table goes when no live group on the node uses it.

Splits. ``encode_split`` names the right half the meta group allocated; the parent shrinks and
the right group is registered (applied 0, the rows already in the shared table) in the SAME
transaction, so on every replica the right group exists exactly when its parent has applied
every entry before the split. Live groups of one table on a node never overlap:
``register_group`` refuses an overlapping range (``RangeOverlap``) and clears rows no live
group owns, and ``restore`` refuses a snapshot whose range overlaps another live group.
"""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import apsw
import msgpack
import structlog

from consensus.api import Logger
from consensus.runtime.statemachine import StateMachineError, fresh_entries, require
from consensus.types import Entry, EntryKind, GroupId, Index, Snapshot
from shardb.placement.descriptors import Key, RangeDescriptor
from shardb.placement.meta import FIRST_USER_GROUP_ID
from shardb.statemachine import guard
from shardb.statemachine.commands import (
    MAX_SQL_CHARS,
    ResultCode,
    Value,
    descriptor_from_wire,
    descriptor_to_wire,
    error_result,
    pack,
    unpack,
)
from shardb.statemachine.guard import quote_name

SNAPSHOT_FORMAT: Final = 1
RESERVED_PREFIX: Final = "shardb_"
STATS_SAMPLE_ROWS: Final = 256
STATS_SAMPLE_POINTS: Final = 16
ROW_OVERHEAD_BYTES: Final = 8
"""Per-row bookkeeping (record header, cell pointer) added to a row's column bytes."""

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS shardb_applied(
        group_id INTEGER PRIMARY KEY,
        idx INTEGER NOT NULL) STRICT""",
    """CREATE TABLE IF NOT EXISTS shardb_groups(
        group_id INTEGER PRIMARY KEY,
        range_id INTEGER NOT NULL,
        table_name TEXT NOT NULL,
        start_key ANY,
        end_key ANY,
        epoch INTEGER NOT NULL,
        replicas BLOB NOT NULL,
        backend TEXT NOT NULL,
        schema TEXT NOT NULL,
        key_column TEXT NOT NULL,
        dropped INTEGER NOT NULL) STRICT""",
)

# Errors of the machine, not of the statement: never recorded as an applied result.
_ENVIRONMENTAL: Final = (
    apsw.IOError,
    apsw.FullError,
    apsw.CorruptError,
    apsw.NotADBError,
    apsw.BusyError,
    apsw.LockedError,
    apsw.NoMemError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.InterruptError,
    apsw.ProtocolError,
    apsw.ConnectionClosedError,
    apsw.ThreadingViolationError,
)

_NAME = r'(?:"(?:[^"]|"")+"|`(?:[^`]|``)+`|\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE_INDEX = re.compile(
    rf"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})\s+ON\s+({_NAME})\s*\(",
    re.IGNORECASE,
)
_DROP_INDEX = re.compile(rf"^\s*DROP\s+INDEX\s+(IF\s+EXISTS\s+)?({_NAME})\s*;?\s*$", re.IGNORECASE)
_DROP_TABLE = re.compile(rf"^\s*DROP\s+TABLE\s+(IF\s+EXISTS\s+)?({_NAME})\s*;?\s*$", re.IGNORECASE)


class TableRefused(StateMachineError):
    """register_group was given a table the state machine cannot host."""


class RangeOverlap(StateMachineError):
    """register_group was given a range that shares keys with a live group on this node (for
    the right half of a split: retry after the parent applied the split, which registers it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeStats:
    """Size of one group's range on this node, for size-based split decisions."""

    rows: int
    """Exact number of rows in the range."""
    approx_bytes: int
    """``rows`` times the mean logical size of a bounded sample of the range's rows (sum of
    ``octet_length`` of every column, numbers in their text form, plus ``ROW_OVERHEAD_BYTES``):
    the payload, not SQLite pages or indexes."""


def _unquote(name: str) -> str:
    if name[:1] in ('"', "`") and name[-1:] == name[:1]:
        return name[1:-1].replace(name[0] * 2, name[0])
    if name[:1] == "[" and name[-1:] == "]":
        return name[1:-1]
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class _Group:
    descriptor: RangeDescriptor
    schema: str
    """The CREATE TABLE text of the group's table."""
    key_column: str
    integer_key: bool
    dropped: bool = False

    @property
    def table(self) -> str:
        return self.descriptor.table


class _Refusal(Exception):
    """A deterministic refusal raised inside a command; becomes an error result."""

    def __init__(self, code: ResultCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class SqlStateMachine:
    """SQL groups of one node in one SQLite file. Synchronous; one thread at a time."""

    def __init__(self, path: str | os.PathLike[str], *, logger: Logger | None = None) -> None:
        self._path = str(path)
        self._log: Logger = logger or structlog.get_logger(__name__).bind(path=self._path)
        self._conn = apsw.Connection(self._path)
        # One writer process per file, like the log store; WAL without shared memory.
        self._conn.pragma("locking_mode", "EXCLUSIVE")
        self._conn.pragma("journal_mode", "WAL")
        self._conn.pragma("synchronous", "NORMAL")
        with self._conn:
            for statement in (*_SCHEMA, *guard.TEMP_SCHEMA):
                self._conn.execute(statement)
        self._applied: dict[GroupId, Index] = {
            GroupId(int(g)): Index(int(i))
            for g, i in self._conn.execute("SELECT group_id, idx FROM shardb_applied")
        }
        self._groups: dict[GroupId, _Group] = {
            group.descriptor.group_id: group for group in self._load_groups()
        }
        for group in self._groups.values():
            if not group.dropped:
                self._ensure_guard(group)
        self._closed = False

    # ----------------------------------------------------------------------- groups

    def _load_groups(self) -> Iterator[_Group]:
        rows = self._conn.execute(
            """SELECT group_id, range_id, table_name, start_key, end_key, epoch, replicas,
                      backend, schema, key_column, dropped
               FROM shardb_groups ORDER BY group_id"""
        ).fetchall()
        for gid, rid, table, start, end, epoch, replicas, backend, schema, key, dropped in rows:
            descriptor = descriptor_from_wire(
                {
                    "range_id": rid,
                    "table": table,
                    "start_key": start,
                    "end_key": end,
                    "group_id": gid,
                    "replicas": unpack(bytes(replicas)),  # type: ignore[arg-type]  # BLOB column
                    "backend": backend,
                    "epoch": epoch,
                }
            )
            yield _Group(
                descriptor=descriptor,
                schema=str(schema),
                key_column=str(key),
                integer_key=self._integer_key(str(table), str(key)) if not dropped else False,
                dropped=bool(dropped),
            )

    def register_group(
        self, group_id: GroupId, descriptor: RangeDescriptor, schema_sql: str
    ) -> RangeDescriptor:
        """Host ``group_id`` owning ``descriptor``'s range of its table, creating the table
        from ``schema_sql`` (the user's CREATE TABLE) if this node has none. Idempotent: a
        registered group keeps its stored descriptor (its range changes only through
        replicated commands), which is returned."""
        require(descriptor.group_id == group_id, "descriptor is for another group")
        existing = self._groups.get(group_id)
        if existing is not None:
            return existing.descriptor
        if descriptor.table.lower().startswith(RESERVED_PREFIX):
            raise TableRefused(f"table names starting with {RESERVED_PREFIX} are reserved")
        overlapping = self._overlapping_group(descriptor)
        if overlapping is not None:
            # Typically the right half of a split whose parent has not applied the split here
            # yet: hosting it now would let the parent's pre-split writes land in rows the new
            # group already owns. The split registers it itself when it applies.
            raise RangeOverlap(
                f"group {group_id} {_bounds(descriptor)} overlaps live group "
                f"{overlapping.descriptor.group_id} {_bounds(overlapping.descriptor)} "
                f"of {descriptor.table}"
            )
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            group = self._create_table(descriptor, schema_sql)
            self._store_group(group)
            # No live group owns these keys (checked above), so rows here are leftovers of a
            # group that no longer covers them (a snapshot that skipped a split shrinks the
            # range and leaves its old right part behind). A registered group starts at
            # applied 0, whose state is an empty range: stale rows would diverge from it.
            orphans = self._delete_range(group, descriptor)
            conn.execute(
                "INSERT OR REPLACE INTO shardb_applied(group_id, idx) VALUES (?, 0)", (group_id,)
            )
            self._clear_bounds()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._groups[group_id] = group
        self._applied[group_id] = Index(0)
        self._log.info(
            "group_registered", group_id=group_id, table=descriptor.table, orphans_deleted=orphans
        )
        return group.descriptor

    def hosts(self, group_id: GroupId) -> bool:
        """Whether ``group_id`` is registered here (a dropped table's group still is)."""
        return group_id in self._groups

    def live_descriptors(self) -> tuple[RangeDescriptor, ...]:
        """Current descriptors of the registered groups whose table is not dropped, by id."""
        return tuple(
            self._groups[g].descriptor for g in sorted(self._groups) if not self._groups[g].dropped
        )

    def _overlapping_group(self, descriptor: RangeDescriptor) -> _Group | None:
        """A live group of another id on the same table whose range shares a key with
        ``descriptor``'s. Invariant: live groups of one table on a node are disjoint, since
        they share the physical table."""
        for gid in sorted(self._groups):
            other = self._groups[gid]
            if (
                gid != descriptor.group_id
                and not other.dropped
                and other.table.lower() == descriptor.table.lower()
                and _overlaps(other.descriptor, descriptor)
            ):
                return other
        return None

    def descriptor(self, group_id: GroupId) -> RangeDescriptor:
        """The group's current descriptor (after the splits it has applied)."""
        return self._group(self._groups, group_id).descriptor

    def group_ids(self) -> tuple[GroupId, ...]:
        return tuple(sorted(self._groups))

    def _group(self, groups: Mapping[GroupId, _Group], group_id: GroupId) -> _Group:
        group = groups.get(group_id)
        if group is None:
            raise StateMachineError(f"group {group_id} is not registered on this node")
        return group

    def _table_sql(self, table: str) -> str | None:
        row = self._conn.execute(
            "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
            (table,),
        ).fetchone()
        return None if row is None else str(row[0])

    def _create_table(self, descriptor: RangeDescriptor, schema_sql: str) -> _Group:
        """Inside a transaction: the table exists afterwards; return the group's record."""
        table = descriptor.table
        existing = self._table_sql(table)
        if existing is None:
            policy = guard.DdlPolicy(table, apsw.SQLITE_CREATE_TABLE)
            try:
                self._run(schema_sql, (), policy, readonly=False)
            except apsw.Error as exc:
                raise TableRefused(f"cannot create table {table}: {policy.denied or exc}") from exc
            existing = self._table_sql(table)
            require(existing is not None, f"{schema_sql!r} did not create table {table}")
        elif " ".join(existing.split()) != " ".join(schema_sql.split()):
            # Another group of the table created it; the node keeps the one physical table.
            self._log.warning("table_schema_differs", table=table)
        key = self._key_column(table)
        group = _Group(
            descriptor=descriptor,
            schema=str(existing),
            key_column=key,
            integer_key=self._integer_key(table, key),
        )
        self._ensure_guard(group)
        return group

    def _key_column(self, table: str) -> str:
        keys = [
            (int(pk), str(name))
            for _, name, _, _, _, pk in self._conn.execute(
                f"PRAGMA main.table_info({quote_name(table)})"
            )
            if pk
        ]
        if len(keys) != 1:
            raise TableRefused(f"table {table} must have a primary key of exactly one column")
        return keys[0][1]

    def _integer_key(self, table: str, key: str) -> bool:
        for _, name, declared, _, _, _ in self._conn.execute(
            f"PRAGMA main.table_info({quote_name(table)})"
        ):
            if str(name) == key:
                # SQLite's affinity rule 1: a declared type containing INT is INTEGER.
                return "INT" in str(declared).upper()
        return False

    def _store_group(self, group: _Group) -> None:
        d = group.descriptor
        self._conn.execute(
            """INSERT OR REPLACE INTO shardb_groups(group_id, range_id, table_name, start_key,
                   end_key, epoch, replicas, backend, schema, key_column, dropped)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                d.group_id,
                d.range_id,
                d.table,
                d.start_key,
                d.end_key,
                d.epoch,
                pack([int(n) for n in d.replicas]),
                d.backend,
                group.schema,
                group.key_column,
                int(group.dropped),
            ),
        )

    def _ensure_guard(self, group: _Group) -> None:
        installed = self._conn.execute(
            "SELECT 1 FROM temp.sqlite_master WHERE type = 'trigger' AND name = ?",
            (guard.trigger_name_of(group.table),),
        ).fetchone()
        if installed is None:
            for statement in guard.guard_triggers(group.table, group.key_column):
                self._conn.execute(statement)

    def _set_bounds(self, descriptor: RangeDescriptor) -> None:
        self._conn.execute(f"DELETE FROM temp.{guard.BOUNDS_TABLE}")
        self._conn.execute(f"DELETE FROM temp.{guard.AUTOKEY_TABLE}")
        self._conn.execute(
            f"INSERT INTO temp.{guard.BOUNDS_TABLE}(tbl, lo, hi) VALUES (?, ?, ?)",
            (descriptor.table.lower(), descriptor.start_key, descriptor.end_key),
        )

    def _clear_bounds(self) -> None:
        self._conn.execute(f"DELETE FROM temp.{guard.BOUNDS_TABLE}")

    def _range_where(self, group: _Group, descriptor: RangeDescriptor) -> tuple[str, list[Key]]:
        key = quote_name(group.key_column)
        clauses, params = ["1"], []
        if descriptor.start_key is not None:
            clauses.append(f"{key} >= ?")
            params.append(descriptor.start_key)
        if descriptor.end_key is not None:
            clauses.append(f"{key} < ?")
            params.append(descriptor.end_key)
        return " AND ".join(clauses), params

    # ----------------------------------------------------------------------- apply

    def applied_index(self, group_id: GroupId) -> Index:
        return self._applied.get(group_id, Index(0))

    def apply(self, group_id: GroupId, entries: Sequence[Entry]) -> tuple[bytes | None, ...]:
        fresh = fresh_entries(group_id, self.applied_index(group_id), entries)
        results: list[bytes | None] = [None] * (len(entries) - len(fresh))
        if not fresh:
            return tuple(results)
        self._group(self._groups, group_id)
        # Commands may change the group (split, drop): work on a copy, publish on commit.
        groups = dict(self._groups)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for entry in fresh:
                if entry.kind is EntryKind.NORMAL:
                    results.append(self._execute(groups, group_id, entry.data))
                else:
                    results.append(None)
            last = fresh[-1].index
            conn.execute(
                "INSERT OR REPLACE INTO shardb_applied(group_id, idx) VALUES (?, ?)",
                (group_id, last),
            )
            self._clear_bounds()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for new_group in sorted(groups.keys() - self._groups.keys()):
            self._applied[new_group] = Index(0)  # registered by a split in this batch
        self._groups = groups
        self._applied[group_id] = last
        return tuple(results)

    def _execute(self, groups: dict[GroupId, _Group], group_id: GroupId, data: bytes) -> bytes:
        group = groups[group_id]
        try:
            command = unpack(data)
            if not isinstance(command, dict):
                raise ValueError("command must be a map")
            match command.get("op"):
                case "write":
                    return self._on_write(group, command)
                case "ddl":
                    result, groups[group_id] = self._on_ddl(group, command)
                    return result
                case "split":
                    return self._on_split(groups, group, command)
                case other:
                    raise ValueError(f"unknown command {other!r}")
        except _Refusal as refusal:
            return error_result(refusal.code, str(refusal), **refusal.extra)
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
            # Deterministic: every replica decodes the same bytes the same way.
            return error_result(ResultCode.MALFORMED, f"malformed command: {exc}")

    def _check_epoch(self, group: _Group, raw: object) -> None:
        epoch = _int_field(raw, "range_epoch")
        # Older means the sender's bounds may be wider than ours (a split it has not seen);
        # newer is harmless: replica changes bump the epoch without touching our bounds.
        if epoch < group.descriptor.epoch:
            raise _Refusal(
                ResultCode.STALE_EPOCH,
                f"range epoch {epoch} is older than {group.descriptor.epoch}",
                descriptor=descriptor_to_wire(group.descriptor),
            )

    def _check_table(self, group: _Group, raw: object) -> None:
        table = _str_field(raw, "table")
        if group.dropped:
            raise _Refusal(ResultCode.NO_TABLE, f"no such table: {table}")
        if table.lower() != group.table.lower():
            raise _Refusal(
                ResultCode.REFUSED, f"group {group.descriptor.group_id} owns {group.table}"
            )

    def _on_write(self, group: _Group, command: dict[str, Any]) -> bytes:
        self._check_table(group, command.get("table"))
        self._check_epoch(group, command.get("range_epoch"))
        sql = _sql_field(command.get("sql"))
        params = _params_field(command.get("params"))
        reason = guard.check_write_text(sql, params)
        if reason is not None:
            raise _Refusal(ResultCode.REFUSED, reason)
        self._ensure_guard(group)
        self._set_bounds(group.descriptor)
        policy = guard.WritePolicy(group.table)
        # A value SQLite never assigns, so a statement that inserts nothing is recognisable
        # and the result never leaks the previous statement's (another group's) rowid.
        self._conn.set_last_insert_rowid(0)

        def run() -> bytes:
            self._run(sql, params, policy, readonly=False)
            rowcount = self._conn.changes()
            result: dict[str, Any] = {"ok": True, "rowcount": rowcount}
            lastrowid = self._conn.last_insert_rowid()
            # Deterministic only when the key is the rowid and was given by the statement.
            if group.integer_key and "insert" in policy.actions and lastrowid != 0:
                result["lastrowid"] = lastrowid
            return pack(result)

        return self._in_savepoint(run, policy)

    def _in_savepoint(self, run: Any, policy: guard._Policy | None) -> bytes:
        conn = self._conn
        conn.execute("SAVEPOINT shardb_command")
        try:
            result: bytes = run()
        except _ENVIRONMENTAL:
            raise
        except (apsw.Error, _Refusal, ValueError, TypeError, OverflowError) as exc:
            conn.execute("ROLLBACK TO shardb_command")
            conn.execute("RELEASE shardb_command")
            if isinstance(exc, _Refusal):
                return error_result(exc.code, str(exc), **exc.extra)
            return _error_of(exc, policy)
        conn.execute("RELEASE shardb_command")
        return result

    def _run(
        self, sql: str, params: Sequence[Value], policy: guard._Policy, *, readonly: bool
    ) -> tuple[list[str], list[tuple[Value, ...]]]:
        """Run exactly one user statement under ``policy``: (column names, rows)."""
        if len(sql) > MAX_SQL_CHARS:
            raise _Refusal(ResultCode.REFUSED, "statement too long")
        columns: list[str] = []
        statements = 0

        def trace(cursor: Any, _sql: str, _bindings: Any) -> bool:
            nonlocal statements
            statements += 1
            if statements > 1:
                policy.denied = policy.denied or "one statement per command"
                return False
            if readonly and not cursor.is_readonly:
                policy.denied = policy.denied or "a query may not write"
                return False
            columns.extend(str(name) for name, _ in cursor.get_description())
            return True

        cursor = self._conn.cursor()
        cursor.exec_trace = trace
        self._conn.authorizer = policy
        try:
            # Never cached: the authorizer runs at prepare time, so every user statement
            # must be prepared while its own policy is installed.
            cursor.execute(sql, tuple(params), can_cache=False)
            rows = [tuple(row) for row in cursor]
        finally:
            self._conn.authorizer = None
        return columns, rows

    # ----------------------------------------------------------------------- DDL

    def _on_ddl(self, group: _Group, command: dict[str, Any]) -> tuple[bytes, _Group]:
        table = _str_field(command.get("table"), "table")
        if table.lower() != group.table.lower():
            raise _Refusal(
                ResultCode.REFUSED, f"group {group.descriptor.group_id} owns {group.table}"
            )
        sql = _sql_field(command.get("sql"))
        if guard.check_write_text(sql, ()) is not None:
            raise _Refusal(ResultCode.REFUSED, str(guard.check_write_text(sql, ())))
        if match := _DROP_TABLE.match(sql):
            return self._drop_table(group, _unquote(match[2]), if_exists=bool(match[1]))
        if group.dropped:
            raise _Refusal(ResultCode.NO_TABLE, f"no such table: {group.table}")
        if match := _CREATE_INDEX.match(sql):
            if match[1]:
                raise _Refusal(
                    ResultCode.REFUSED,
                    "UNIQUE indexes are not supported: each range can only check its own rows",
                )
            if _unquote(match[3]).lower() != group.table.lower():
                raise _Refusal(ResultCode.REFUSED, f"the index must be on {group.table}")
            owner = self._index_table(_unquote(match[2]))
            if owner is None:
                policy = guard.DdlPolicy(group.table, apsw.SQLITE_CREATE_INDEX)
                return self._in_savepoint(lambda: self._ddl_run(sql, policy), policy), group
            if owner.lower() != group.table.lower():
                raise _Refusal(ResultCode.SQLITE, f"index {_unquote(match[2])} already exists")
            return pack({"ok": True, "rowcount": 0}), group  # created by a sibling group
        if match := _DROP_INDEX.match(sql):
            owner = self._index_table(_unquote(match[2]))
            if owner is None:
                return pack({"ok": True, "rowcount": 0}), group  # dropped by a sibling group
            if owner.lower() != group.table.lower():
                raise _Refusal(ResultCode.REFUSED, f"the index is not on {group.table}")
            policy = guard.DdlPolicy(group.table, apsw.SQLITE_DROP_INDEX)
            return self._in_savepoint(lambda: self._ddl_run(sql, policy), policy), group
        raise _Refusal(
            ResultCode.REFUSED, "only CREATE INDEX, DROP INDEX and DROP TABLE are replicated DDL"
        )

    def _ddl_run(self, sql: str, policy: guard._Policy) -> bytes:
        self._run(sql, (), policy, readonly=False)
        return pack({"ok": True, "rowcount": 0})

    def _index_table(self, index: str) -> str | None:
        row = self._conn.execute(
            "SELECT tbl_name FROM main.sqlite_master WHERE type = 'index' AND name = ? "
            "COLLATE NOCASE",
            (index,),
        ).fetchone()
        return None if row is None else str(row[0])

    def _drop_table(self, group: _Group, table: str, *, if_exists: bool) -> tuple[bytes, _Group]:
        if table.lower() != group.table.lower():
            raise _Refusal(
                ResultCode.REFUSED, f"group {group.descriptor.group_id} owns {group.table}"
            )
        if group.dropped:
            if if_exists:
                return pack({"ok": True, "rowcount": 0}), group
            raise _Refusal(ResultCode.NO_TABLE, f"no such table: {table}")
        deleted = self._delete_range(group, group.descriptor)
        dropped = replace(group, dropped=True)
        self._store_group(dropped)
        self._drop_table_if_unused(group.table, except_group=group.descriptor.group_id)
        self._log.info("table_dropped", group_id=group.descriptor.group_id, table=table)
        return pack({"ok": True, "rowcount": deleted}), dropped

    def _delete_range(self, group: _Group, descriptor: RangeDescriptor) -> int:
        self._set_bounds(descriptor)
        where, params = self._range_where(group, descriptor)
        self._conn.execute(f"DELETE FROM main.{quote_name(group.table)} WHERE {where}", params)
        changes: int = self._conn.changes()
        return changes

    def _drop_table_if_unused(self, table: str, *, except_group: GroupId) -> None:
        users = self._conn.execute(
            "SELECT 1 FROM shardb_groups WHERE table_name = ? COLLATE NOCASE "
            "AND dropped = 0 AND group_id != ?",
            (table, except_group),
        ).fetchone()
        if users is None and self._table_sql(table) is not None:
            self._conn.execute(f"DROP TABLE main.{quote_name(table)}")

    # ----------------------------------------------------------------------- split

    def _on_split(
        self, groups: dict[GroupId, _Group], group: _Group, command: dict[str, Any]
    ) -> bytes:
        """Shrink the group to ``[start, key)`` and, in the same transaction, register the
        right-hand group ``[key, end)`` on this node, starting at applied 0 from the rows
        already in the shared table (ARCHITECTURE.md "Placement driver": no data copy).

        Same transaction, because the right group must not exist on a replica before that
        replica's parent has applied every entry before the split: otherwise a pre-split write
        to a right-half key could apply after a post-split write of the right group, and the
        replicas would diverge. A crash either keeps both changes or neither; the entry is
        then re-delivered and the split happens exactly once.

        Every check runs before anything is written, so a refusal changes nothing. Checks use
        only the parent's replicated bounds and the command: never which other groups this node
        hosts, which differs between replicas."""
        if group.dropped:
            raise _Refusal(ResultCode.NO_TABLE, f"no such table: {group.table}")
        self._check_epoch(group, command.get("range_epoch"))
        new_epoch = _int_field(command.get("new_epoch"), "new_epoch")
        old = group.descriptor
        if new_epoch <= old.epoch:
            raise _Refusal(ResultCode.REFUSED, f"new epoch {new_epoch} is not above {old.epoch}")
        raw_key = command.get("key")
        key_type: type = int if group.integer_key else str
        if not isinstance(raw_key, key_type) or isinstance(raw_key, bool):
            raise _Refusal(
                ResultCode.BAD_SPLIT_KEY, f"split key {raw_key!r} is not {key_type.__name__}"
            )
        key: Key = raw_key  # type: ignore[assignment]  # checked just above
        inside = (old.start_key is None or old.start_key < key) and (  # type: ignore[operator]  # one key type per table
            old.end_key is None or key < old.end_key  # type: ignore[operator]  # one key type per table
        )
        if not inside:
            raise _Refusal(
                ResultCode.BAD_SPLIT_KEY,
                f"split key {key!r} is not inside [{old.start_key!r}, {old.end_key!r})",
            )
        right = descriptor_from_wire(command.get("right"))
        _check_right_half(old, right, key, new_epoch)
        # The meta group is the authority on replicas (SetReplicas changes them there, not in
        # this group's log), so both halves take the command's: the right group is created on
        # exactly these nodes.
        left = replace(old, end_key=key, epoch=new_epoch, replicas=right.replicas)
        shrunk = replace(group, descriptor=left)
        self._store_group(shrunk)
        groups[old.group_id] = shrunk
        if right.group_id in groups:
            # Only possible if something registered it outside the split; the result must
            # not depend on it (it differs between replicas), so keep it and say so.
            self._log.warning(
                "split_right_group_exists", group_id=old.group_id, right_group_id=right.group_id
            )
        else:
            born = replace(group, descriptor=right)
            self._store_group(born)
            self._conn.execute(
                "INSERT OR REPLACE INTO shardb_applied(group_id, idx) VALUES (?, 0)",
                (right.group_id,),
            )
            groups[right.group_id] = born
        self._log.info(
            "range_split",
            group_id=old.group_id,
            split_key=key,
            epoch=new_epoch,
            right_group_id=right.group_id,
        )
        return pack(
            {"ok": True, "descriptor": descriptor_to_wire(left), "right": descriptor_to_wire(right)}
        )

    # ----------------------------------------------------------------------- reads

    def query(self, group_id: GroupId, query: bytes) -> bytes:
        """Run one read-only SELECT on the group's table: ``columns`` and ``rows`` with SQLite
        types preserved. Anything that would write is refused before it runs."""
        group = self._group(self._groups, group_id)
        policy = guard.ReadPolicy(group.table)
        try:
            command = unpack(query)
            if not isinstance(command, dict) or command.get("op") != "query":
                raise ValueError("not a query")
            if group.dropped:
                raise _Refusal(ResultCode.NO_TABLE, f"no such table: {group.table}")
            self._check_epoch(group, command.get("range_epoch"))
            sql = _sql_field(command.get("sql"))
            columns, rows = self._run(
                sql, _params_field(command.get("params")), policy, readonly=True
            )
        except _ENVIRONMENTAL:
            raise
        except _Refusal as refusal:
            return error_result(refusal.code, str(refusal), **refusal.extra)
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
            return error_result(ResultCode.MALFORMED, f"malformed query: {exc}")
        except apsw.Error as exc:
            return _error_of(exc, policy)
        return pack({"ok": True, "columns": columns, "rows": rows})

    # ----------------------------------------------------------------------- stats

    def range_stats(self, group_id: GroupId) -> RangeStats:
        """Rows and approximate bytes of the group's range on this node.

        ``rows`` is an exact ``count(*)`` over the range of the primary key: SQLite walks the
        range's leaf pages without decoding columns (about 17 ms for 300k rows on a laptop).
        ``approx_bytes`` is ``rows`` times the mean size of at most ``STATS_SAMPLE_ROWS``
        sampled rows; for an INTEGER key the sample is taken at ``STATS_SAMPLE_POINTS``
        evenly spaced keys across the range (index seeks), for a TEXT key from the start of
        the range. Decoding every row instead costs about 8x the count."""
        group = self._group(self._groups, group_id)
        if group.dropped:
            return RangeStats(rows=0, approx_bytes=0)
        conn = self._conn
        table = f"main.{quote_name(group.table)}"
        key = quote_name(group.key_column)
        where, params = self._range_where(group, group.descriptor)
        conn.execute("BEGIN")
        try:
            counted = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params)
            rows = int(counted.fetchone()[0])  # type: ignore[index]  # count(*) has a row
            if rows == 0:
                return RangeStats(rows=0, approx_bytes=0)
            columns = [
                str(row[1])
                for row in conn.execute(f"PRAGMA main.table_info({quote_name(group.table)})")
            ]
            size = " + ".join(f"coalesce(octet_length({quote_name(c)}), 0)" for c in columns)
            sample = (
                f"SELECT {size} FROM {table} WHERE {where} AND {key} >= ? ORDER BY {key} LIMIT ?"
            )
            starts: list[Key] = []
            if group.integer_key and rows > STATS_SAMPLE_ROWS:
                lo = conn.execute(f"SELECT min({key}) FROM {table} WHERE {where}", params)
                hi = conn.execute(f"SELECT max({key}) FROM {table} WHERE {where}", params)
                low, high = int(lo.fetchone()[0]), int(hi.fetchone()[0])  # type: ignore[index]  # rows > 0
                step = (high - low) // STATS_SAMPLE_POINTS or 1
                starts = [low + i * step for i in range(STATS_SAMPLE_POINTS)]
                per_point = STATS_SAMPLE_ROWS // STATS_SAMPLE_POINTS
            else:
                first = conn.execute(f"SELECT min({key}) FROM {table} WHERE {where}", params)
                starts = [first.fetchone()[0]]  # type: ignore[index]  # rows > 0
                per_point = STATS_SAMPLE_ROWS
            sizes = [
                int(row[0])
                for start in starts
                for row in conn.execute(sample, [*params, start, per_point])
            ]
        finally:
            conn.execute("COMMIT")
        mean = sum(sizes) / len(sizes) + ROW_OVERHEAD_BYTES
        return RangeStats(rows=rows, approx_bytes=round(rows * mean))

    # ----------------------------------------------------------------------- snapshots

    def snapshot(self, group_id: GroupId) -> bytes:
        """msgpack stream: a header map, then one array per row of the range in key order
        (equal states give equal bytes on every replica). Rows are streamed from SQLite into
        the buffer; the Protocol returns bytes, so the whole snapshot is in memory once."""
        group = self._group(self._groups, group_id)
        packer = msgpack.Packer(use_bin_type=True)
        out = io.BytesIO()
        conn = self._conn
        conn.execute("BEGIN")
        try:
            columns: list[str] = []
            indexes: list[str] = []
            count = 0
            where, params = self._range_where(group, group.descriptor)
            table = f"main.{quote_name(group.table)}"
            if not group.dropped:
                columns = [
                    str(row[1])
                    for row in conn.execute(f"PRAGMA main.table_info({quote_name(group.table)})")
                ]
                indexes = [
                    str(row[0])
                    for row in conn.execute(
                        "SELECT sql FROM main.sqlite_master WHERE type = 'index' AND "
                        "tbl_name = ? COLLATE NOCASE AND sql IS NOT NULL ORDER BY name",
                        (group.table,),
                    )
                ]
                counted = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params)
                count = int(counted.fetchone()[0])  # type: ignore[index]  # count(*) has a row
            header = {
                "format": SNAPSHOT_FORMAT,
                "applied": int(self.applied_index(group_id)),
                "descriptor": descriptor_to_wire(group.descriptor),
                "schema": group.schema,
                "indexes": indexes,
                "dropped": group.dropped,
                "columns": columns,
                "rows": count,
            }
            out.write(packer.pack(header))
            if not group.dropped:
                names = ", ".join(quote_name(c) for c in columns)
                key = quote_name(group.key_column)
                for row in conn.execute(
                    f"SELECT {names} FROM {table} WHERE {where} ORDER BY {key}", params
                ):
                    out.write(packer.pack(list(row)))
        finally:
            conn.execute("COMMIT")
        return out.getvalue()

    def restore(self, group_id: GroupId, snapshot: Snapshot) -> None:
        """Replace exactly the snapshot's range of rows (other groups' rows untouched), adopt
        its descriptor and schema, and set applied to its index. Rows are inserted as they are
        unpacked. Rows this node held for a wider, older range of the group are left for the
        groups that now own them."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=0)
        unpacker.feed(snapshot.data)
        try:
            header = next(unpacker)
            fmt = header["format"]
            descriptor = descriptor_from_wire(header["descriptor"])
            applied, schema, dropped = header["applied"], header["schema"], header["dropped"]
            columns, indexes, count = header["columns"], header["indexes"], header["rows"]
        except (StopIteration, KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
            raise StateMachineError(f"group {group_id}: unreadable snapshot: {exc}") from exc
        require(fmt == SNAPSHOT_FORMAT, f"group {group_id}: snapshot format {fmt!r}")
        require(descriptor.group_id == group_id, f"group {group_id}: snapshot of another group")
        require(
            not descriptor.table.lower().startswith(RESERVED_PREFIX),
            f"group {group_id}: snapshot of reserved table {descriptor.table!r}",
        )
        overlapping = None if dropped else self._overlapping_group(descriptor)
        require(
            overlapping is None,
            f"group {group_id}: snapshot range {_bounds(descriptor)} overlaps live group "
            f"{overlapping and overlapping.descriptor.group_id} on this node",
        )
        require(
            applied == snapshot.meta.index,
            f"group {group_id}: snapshot data is at {applied}, meta says {snapshot.meta.index}",
        )
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            group = self._restore_rows(
                descriptor, schema, dropped, columns, indexes, count, unpacker
            )
            conn.execute(
                "INSERT OR REPLACE INTO shardb_applied(group_id, idx) VALUES (?, ?)",
                (group_id, snapshot.meta.index),
            )
            self._clear_bounds()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._groups[group_id] = group
        self._applied[group_id] = snapshot.meta.index
        self._log.info("group_restored", group_id=group_id, index=snapshot.meta.index, rows=count)

    def _restore_rows(
        self,
        descriptor: RangeDescriptor,
        schema: str,
        dropped: bool,
        columns: list[str],
        indexes: list[str],
        count: int,
        unpacker: msgpack.Unpacker,
    ) -> _Group:
        conn = self._conn
        if dropped:
            previous = self._groups.get(descriptor.group_id)
            if previous is not None and not previous.dropped:
                self._delete_range(previous, descriptor)
            group = _Group(
                descriptor=descriptor, schema=schema, key_column="", integer_key=False, dropped=True
            )
            self._store_group(group)
            self._drop_table_if_unused(descriptor.table, except_group=descriptor.group_id)
            return group
        group = self._create_table(descriptor, schema)
        for index_sql in indexes:
            match = _CREATE_INDEX.match(index_sql)
            require(match is not None, f"snapshot index {index_sql!r}")
            if match is not None and self._index_table(_unquote(match[2])) is None:
                conn.execute(index_sql)
        self._store_group(group)
        self._delete_range(group, descriptor)  # also installs the bounds for the inserts
        names = ", ".join(quote_name(str(c)) for c in columns)
        marks = ", ".join("?" for _ in columns)
        inserted = 0

        def rows() -> Iterator[Sequence[Value]]:
            nonlocal inserted
            for row in itertools.islice(unpacker, count):
                inserted += 1
                yield row

        conn.executemany(
            f"INSERT INTO main.{quote_name(descriptor.table)}({names}) VALUES ({marks})", rows()
        )
        require(inserted == count, f"snapshot holds {inserted} rows, header says {count}")
        require(next(unpacker, None) is None, "trailing data after the snapshot rows")
        return group

    # ----------------------------------------------------------------------- lifecycle

    def drop_group(self, group_id: GroupId) -> None:
        """Forget the group on this node: delete its rows (its range only) and bookkeeping;
        the physical table goes when no other group on the node uses it."""
        group = self._groups.get(group_id)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if group is not None and not group.dropped:
                self._delete_range(group, group.descriptor)
                self._drop_table_if_unused(group.table, except_group=group_id)
            conn.execute("DELETE FROM shardb_groups WHERE group_id = ?", (group_id,))
            conn.execute("DELETE FROM shardb_applied WHERE group_id = ?", (group_id,))
            self._clear_bounds()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._groups.pop(group_id, None)
        self._applied.pop(group_id, None)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()


# --------------------------------------------------------------------------- helpers


def _check_right_half(old: RangeDescriptor, right: RangeDescriptor, key: Key, epoch: int) -> None:
    """The right half named by a split must be what the meta group's SplitRange allocates for
    this parent: same table and backend, ``[key, old end)``, the new epoch, a new range and a
    new user group (the meta group allocates user groups from ``FIRST_USER_GROUP_ID``)."""
    problems = []
    if right.table != old.table:
        problems.append(f"table {right.table!r} is not {old.table!r}")
    if right.backend != old.backend:
        problems.append(f"backend {right.backend!r} is not {old.backend!r}")
    if type(right.start_key) is not type(key) or right.start_key != key:
        problems.append(f"start {right.start_key!r} is not the split key {key!r}")
    if type(right.end_key) is not type(old.end_key) or right.end_key != old.end_key:
        problems.append(f"end {right.end_key!r} is not the parent's end {old.end_key!r}")
    if right.epoch != epoch:
        problems.append(f"epoch {right.epoch} is not the new epoch {epoch}")
    if right.range_id == old.range_id:
        problems.append("it reuses the parent's range id")
    if right.group_id == old.group_id or right.group_id < FIRST_USER_GROUP_ID:
        problems.append(f"group {right.group_id} is not a new user group")
    if not right.replicas or len(set(right.replicas)) != len(right.replicas):
        problems.append("replicas must be distinct and at least one")
    elif min(right.replicas) < 1:
        problems.append("replica ids start at 1")
    if problems:
        raise _Refusal(ResultCode.REFUSED, "right half of the split: " + "; ".join(problems))


def _overlaps(a: RangeDescriptor, b: RangeDescriptor) -> bool:
    """Whether two half-open ranges of one table share a key (None = unbounded)."""
    a_below_b = a.end_key is not None and b.start_key is not None and a.end_key <= b.start_key  # type: ignore[operator]  # one key type per table
    b_below_a = b.end_key is not None and a.start_key is not None and b.end_key <= a.start_key  # type: ignore[operator]  # one key type per table
    return not (a_below_b or b_below_a)


def _bounds(descriptor: RangeDescriptor) -> str:
    return f"[{descriptor.start_key!r}, {descriptor.end_key!r})"


def _error_of(exc: BaseException, policy: guard._Policy | None) -> bytes:
    """The result of a deterministic failure; SQLite's message verbatim."""
    message = str(exc)
    match exc:
        case apsw.AuthError() | apsw.ExecTraceAbort():
            return error_result(ResultCode.REFUSED, (policy and policy.denied) or message)
        case apsw.ConstraintError() if message == guard.OUT_OF_RANGE_MESSAGE:
            return error_result(ResultCode.OUT_OF_RANGE, message)
        case apsw.ConstraintError() if message == guard.AUTOKEY_MESSAGE:
            return error_result(ResultCode.REFUSED, message)
        case apsw.ConstraintError():
            return error_result(ResultCode.CONSTRAINT, message)
        case apsw.Error():
            if policy is not None and policy.denied is not None:
                return error_result(ResultCode.REFUSED, policy.denied)
            return error_result(ResultCode.SQLITE, message)
        case _:
            return error_result(ResultCode.MALFORMED, f"malformed command: {message}")


def _int_field(raw: object, what: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    raise ValueError(f"{what} must be an integer")


def _str_field(raw: object, what: str) -> str:
    if isinstance(raw, str):
        return raw
    raise ValueError(f"{what} must be text")


def _sql_field(raw: object) -> str:
    sql = _str_field(raw, "sql")
    if len(sql) > MAX_SQL_CHARS:
        raise ValueError("statement too long")
    return sql


def _params_field(raw: object) -> tuple[Value, ...]:
    if not isinstance(raw, list):
        raise ValueError("params must be an array")
    for value in raw:
        if isinstance(value, bool) or not (
            value is None or isinstance(value, int | float | str | bytes)
        ):
            raise ValueError(f"unsupported parameter {value!r}")
    return tuple(raw)


__all__ = [
    "RESERVED_PREFIX",
    "SNAPSHOT_FORMAT",
    "RangeOverlap",
    "RangeStats",
    "SqlStateMachine",
    "TableRefused",
]
