"""``SqlStateMachine``: SQL groups on a node, as the runtime's ``StateMachine`` Protocol.

One SQLite file per node (apsw, WAL, ``synchronous=NORMAL``, as ``KVStateMachine`` and for
the same reasons: the consensus log is the source of truth). User tables are real SQLite
tables created from the user's CREATE TABLE text. All groups of table ``t`` on this node share
the one physical table ``t``: their ranges are disjoint, so a split copies no data, and the new
right-hand group starts from the parent's rows.

Bookkeeping lives in ``shardb_applied(group_id, idx)`` and ``shardb_groups(group_id, range_id,
table_name, start_key, end_key, epoch, replicas, backend, schema, key_column, dropped, frozen,
retired, learners)`` (the last three added by ``ALTER TABLE`` when an older file is opened);
user tables named ``shardb_*`` are refused.

Seeded ranges. A group whose initial rows did not come from its own log (a new table's range,
registered empty by ``register_group``; the right half of a split, registered from the
parent's rows) starts at applied ``SEED_INDEX``, not 0. Its log from index 1 is not its
history, so a replica added later must start from a snapshot: the runtime starts such a group
from ``snapshot(group_id)`` at ``SEED_INDEX``, and entries at or below it are never applied.

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
the right group is registered (applied ``SEED_INDEX``, the rows already in the shared table) in
the SAME transaction, so on every replica the right group exists exactly when its parent has applied
every entry before the split. Live groups of one table on a node never overlap:
``register_group`` refuses an overlapping range (``RangeOverlap``) and clears rows no live
group owns, and ``restore`` refuses a snapshot whose range overlaps another live group.

Merges (right range R into its left neighbour L, same table, R starting at L's end). First
``encode_freeze`` on R: R is frozen (persisted, and carried by its snapshots) and refuses every
later write, DDL and split with the retryable ``RANGE_FROZEN``; reads still work, so the
coordinator reads all of R's rows at or after the freeze. Then ``encode_merge`` on L carries
those rows. Its apply depends only on L's replicated state and the command, never on which
other groups the node hosts: in ONE transaction it deletes every row of the shared table in
R's span (on a node hosting R they are R's replica's rows, now superseded by the carried ones;
elsewhere they are leftovers no live group owns), retires R's group id on this node, inserts
the carried rows and extends L to ``[L.start, R.end)``. So L ends identical on every replica,
whether or not the node hosts R, and whatever R's replica here had applied.

A retired group id is a tombstone (bookkeeping only, no rows: its keys belong to L now):
``apply`` answers ``RANGE_RETIRED`` for every command and only advances applied, ``snapshot``
carries no rows, ``restore`` is ignored with a warning (a lagging replica of R may still be
sent a snapshot before its group is removed), ``register_group`` refuses it (``GroupRetired``)
and ``drop_group`` deletes only the bookkeeping. ``restore`` of a range that covers a FROZEN
live group retires that group the same way: only a merge makes another range cover a frozen
one's keys.
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
    MAX_MERGE_BYTES,
    MAX_SQL_CHARS,
    SEED_INDEX,
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

# Columns added after files were written: added on open if missing (older files), so the
# CREATE TABLE above stays what those files hold. Defaults are what an older file meant.
_ADDED_COLUMNS: Final = (
    ("frozen", "frozen INTEGER NOT NULL DEFAULT 0"),
    ("retired", "retired INTEGER NOT NULL DEFAULT 0"),
    ("learners", "learners BLOB"),
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


class GroupRetired(StateMachineError):
    """register_group was given a group this node retired (merged into its left neighbour)."""


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
    frozen: bool = False
    """Frozen for a merge into the left neighbour: no more writes, DDL or splits."""
    retired: bool = False
    """Merged into the left neighbour on this node: a tombstone, it owns no rows."""

    @property
    def live(self) -> bool:
        """Owns rows of its range on this node (not dropped, not retired)."""
        return not self.dropped and not self.retired

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
            present = {
                str(row[1]) for row in self._conn.execute("PRAGMA main.table_info(shardb_groups)")
            }
            for name, definition in _ADDED_COLUMNS:
                if name not in present:
                    self._conn.execute(f"ALTER TABLE shardb_groups ADD COLUMN {definition}")
        self._applied: dict[GroupId, Index] = {
            GroupId(int(g)): Index(int(i))
            for g, i in self._conn.execute("SELECT group_id, idx FROM shardb_applied")
        }
        self._groups: dict[GroupId, _Group] = {
            group.descriptor.group_id: group for group in self._load_groups()
        }
        for group in self._groups.values():
            if group.live:
                self._ensure_guard(group)
        self._closed = False

    # ----------------------------------------------------------------------- groups

    def _load_groups(self) -> Iterator[_Group]:
        rows = self._conn.execute(
            """SELECT group_id, range_id, table_name, start_key, end_key, epoch, replicas,
                      backend, schema, key_column, dropped, frozen, retired, learners
               FROM shardb_groups ORDER BY group_id"""
        ).fetchall()
        for row in rows:
            gid, rid, table, start, end, epoch, replicas, backend, schema, key, dropped = row[:11]
            frozen, retired, learners = row[11:]
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
                    "learners": [] if learners is None else unpack(bytes(learners)),  # type: ignore[arg-type]  # BLOB column
                }
            )
            live = not dropped and not retired
            yield _Group(
                descriptor=descriptor,
                schema=str(schema),
                key_column=str(key),
                integer_key=self._integer_key(str(table), str(key)) if live else False,
                dropped=bool(dropped),
                frozen=bool(frozen),
                retired=bool(retired),
            )

    def register_group(
        self, group_id: GroupId, descriptor: RangeDescriptor, schema_sql: str
    ) -> RangeDescriptor:
        """Host ``group_id`` owning ``descriptor``'s range of its table, creating the table
        from ``schema_sql`` (the user's CREATE TABLE) if this node has none. The group starts
        empty at applied ``SEED_INDEX`` (a seeded range, see the module docstring). Idempotent:
        a registered group keeps its stored descriptor (its range changes only through
        replicated commands), which is returned. Raises ``GroupRetired`` for a group this node
        merged away."""
        require(descriptor.group_id == group_id, "descriptor is for another group")
        existing = self._groups.get(group_id)
        if existing is not None and existing.retired:
            raise GroupRetired(f"group {group_id} was merged into its left neighbour here")
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
            # applied SEED_INDEX, whose state is an empty range: stale rows would diverge.
            orphans = self._delete_range(group, descriptor)
            conn.execute(
                "INSERT OR REPLACE INTO shardb_applied(group_id, idx) VALUES (?, ?)",
                (group_id, SEED_INDEX),
            )
            self._clear_bounds()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._groups[group_id] = group
        self._applied[group_id] = SEED_INDEX
        self._log.info(
            "group_registered", group_id=group_id, table=descriptor.table, orphans_deleted=orphans
        )
        return group.descriptor

    def hosts(self, group_id: GroupId) -> bool:
        """Whether ``group_id`` is registered here (a dropped table's group and a retired
        group still are)."""
        return group_id in self._groups

    def live_descriptors(self) -> tuple[RangeDescriptor, ...]:
        """Current descriptors of the registered groups whose table is not dropped and that
        were not merged away, by id."""
        return tuple(
            self._groups[g].descriptor for g in sorted(self._groups) if self._groups[g].live
        )

    def retired_group_ids(self) -> tuple[GroupId, ...]:
        """Groups merged into their left neighbour on this node, ascending: their consensus
        groups can go (``drop_group`` then deletes only their bookkeeping)."""
        return tuple(g for g in sorted(self._groups) if self._groups[g].retired)

    def is_frozen(self, group_id: GroupId) -> bool:
        """Whether the group applied a freeze (first step of a merge)."""
        return self._group(self._groups, group_id).frozen

    def _overlapping_group(
        self, descriptor: RangeDescriptor, *, ignore: Sequence[_Group] = ()
    ) -> _Group | None:
        """A live group of another id on the same table whose range shares a key with
        ``descriptor``'s (groups in ``ignore`` aside). Invariant: live groups of one table on
        a node are disjoint, since they share the physical table."""
        skip = {g.descriptor.group_id for g in ignore}
        for gid in sorted(self._groups):
            other = self._groups[gid]
            if (
                gid != descriptor.group_id
                and gid not in skip
                and other.live
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
                   end_key, epoch, replicas, backend, schema, key_column, dropped, frozen,
                   retired, learners)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
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
                int(group.frozen),
                int(group.retired),
                pack([int(n) for n in d.learners]) if d.learners else None,
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
        # Commands may change groups (split, drop, freeze, merge): work on a copy, publish on
        # commit; ``seeded`` holds the applied index of groups a split registered.
        groups = dict(self._groups)
        seeded: dict[GroupId, Index] = {}
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for entry in fresh:
                if entry.kind is EntryKind.NORMAL:
                    results.append(self._execute(groups, seeded, group_id, entry))
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
        for new_group in sorted(seeded):
            self._applied[new_group] = seeded[new_group]
        self._groups = groups
        self._applied[group_id] = last
        return tuple(results)

    def _execute(
        self,
        groups: dict[GroupId, _Group],
        seeded: dict[GroupId, Index],
        group_id: GroupId,
        entry: Entry,
    ) -> bytes:
        group = groups[group_id]
        if group.retired:
            # The tombstone of a merged-away range: its keys are the left range's now. The
            # entry still counts as applied, so the group's log can be replayed or dropped.
            return error_result(
                ResultCode.RANGE_RETIRED,
                f"group {group_id} was merged into its left neighbour",
                descriptor=descriptor_to_wire(group.descriptor),
            )
        data = entry.data
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
                    return self._on_split(groups, seeded, group, command)
                case "freeze":
                    return self._on_freeze(groups, group, command, entry.index)
                case "merge":
                    return self._on_merge(groups, group, command, len(data))
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

    def _check_bounds(self, group: _Group, raw: object) -> None:
        """The gateway routed by bounds this group does not cover yet: the meta group merged
        a neighbour into this range and its merge trigger has not applied here. Confining
        the statement to our narrower bounds would silently skip rows, so refuse it as stale
        (retryable: the trigger follows)."""
        if raw is None:
            return
        if not isinstance(raw, list) or len(raw) != 2:
            raise ValueError("bounds must be [start, end]")
        lo, hi = raw
        own = group.descriptor
        covers_start = own.start_key is None or (lo is not None and not lo < own.start_key)
        covers_end = own.end_key is None or (hi is not None and not own.end_key < hi)
        if not (covers_start and covers_end):
            raise _Refusal(
                ResultCode.STALE_EPOCH,
                f"routed for [{lo!r}, {hi!r}), this range is [{own.start_key!r}, "
                f"{own.end_key!r}) (a merge is being applied)",
                descriptor=descriptor_to_wire(own),
            )

    def _check_table(self, group: _Group, raw: object) -> None:
        table = _str_field(raw, "table")
        if group.dropped:
            raise _Refusal(ResultCode.NO_TABLE, f"no such table: {table}")
        if table.lower() != group.table.lower():
            raise _Refusal(
                ResultCode.REFUSED, f"group {group.descriptor.group_id} owns {group.table}"
            )

    def _check_not_frozen(self, group: _Group) -> None:
        # A frozen range's rows are being carried into its left neighbour: a change now
        # would be lost by the merge. Retryable: the gateway retries once meta routes the
        # keys to the merged range.
        if group.frozen:
            raise _Refusal(
                ResultCode.RANGE_FROZEN,
                f"range {group.descriptor.range_id} is being merged into its left neighbour",
                descriptor=descriptor_to_wire(group.descriptor),
            )

    def _on_write(self, group: _Group, command: dict[str, Any]) -> bytes:
        self._check_table(group, command.get("table"))
        self._check_not_frozen(group)
        self._check_epoch(group, command.get("range_epoch"))
        self._check_bounds(group, command.get("bounds"))
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
        self._check_not_frozen(group)
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
            "AND dropped = 0 AND retired = 0 AND group_id != ?",
            (table, except_group),
        ).fetchone()
        if users is None and self._table_sql(table) is not None:
            self._conn.execute(f"DROP TABLE main.{quote_name(table)}")

    # ----------------------------------------------------------------------- split

    def _on_split(
        self,
        groups: dict[GroupId, _Group],
        seeded: dict[GroupId, Index],
        group: _Group,
        command: dict[str, Any],
    ) -> bytes:
        """Shrink the group to ``[start, key)`` and, in the same transaction, register the
        right-hand group ``[key, end)`` on this node, starting at applied ``SEED_INDEX`` from
        the rows already in the shared table (ARCHITECTURE.md "Placement driver": no data
        copy). Seeded, not 0: the right group's log never held those rows, so a replica added
        later must start from its snapshot.

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
        self._check_not_frozen(group)
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
        left = replace(
            old, end_key=key, epoch=new_epoch, replicas=right.replicas, learners=right.learners
        )
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
                "INSERT OR REPLACE INTO shardb_applied(group_id, idx) VALUES (?, ?)",
                (right.group_id, SEED_INDEX),
            )
            groups[right.group_id] = born
            seeded[right.group_id] = SEED_INDEX
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

    # ----------------------------------------------------------------------- merge

    def _on_freeze(
        self, groups: dict[GroupId, _Group], group: _Group, command: dict[str, Any], index: Index
    ) -> bytes:
        """First step of a merge, on the right range: from this entry on the range refuses
        writes, DDL and splits, so its rows read at or after ``index`` are final and can be
        carried into the left range by ``encode_merge``. Idempotent; persisted with the
        group (and in its snapshots), so it survives restarts and reaches lagging replicas."""
        if group.dropped:
            raise _Refusal(ResultCode.NO_TABLE, f"no such table: {group.table}")
        self._check_epoch(group, command.get("range_epoch"))
        if not group.frozen:
            group = replace(group, frozen=True)
            self._store_group(group)
            groups[group.descriptor.group_id] = group
            self._log.info("range_frozen", group_id=group.descriptor.group_id, index=index)
        return pack(
            {"ok": True, "applied": int(index), "descriptor": descriptor_to_wire(group.descriptor)}
        )

    def _on_merge(
        self, groups: dict[GroupId, _Group], group: _Group, command: dict[str, Any], size: int
    ) -> bytes:
        """Absorb the frozen right neighbour named by the command, carrying its rows (module
        docstring, "Merges"). Every check runs before anything is written and uses only this
        group's replicated state and the command, so every replica of L decides alike; the
        changes then happen in one savepoint, so a failing row leaves nothing behind."""
        if group.dropped:
            raise _Refusal(ResultCode.NO_TABLE, f"no such table: {group.table}")
        self._check_not_frozen(group)
        self._check_epoch(group, command.get("range_epoch"))
        if size > MAX_MERGE_BYTES:
            raise _Refusal(
                ResultCode.REFUSED,
                f"merge command of {size} bytes exceeds {MAX_MERGE_BYTES}: the right range is "
                "too large to carry in one entry",
            )
        new_epoch = _int_field(command.get("new_epoch"), "new_epoch")
        right = descriptor_from_wire(command.get("right"))
        left = group.descriptor
        _check_right_neighbour(left, right, new_epoch)
        columns = self._merge_columns(group, command.get("columns"))
        carried = _rows_field(command.get("rows"), len(columns))
        merged = replace(left, end_key=right.end_key, epoch=new_epoch)
        tombstone = _Group(
            descriptor=right,
            schema=group.schema,
            key_column=group.key_column,
            integer_key=group.integer_key,
            frozen=True,
            retired=True,
        )
        grown = replace(group, descriptor=merged)
        done = False

        def run() -> bytes:
            nonlocal done
            # R's span on this node: R's replica's rows (if it hosts R), which the carried
            # rows supersede, or leftovers no live group owns. Either way they go, so every
            # replica of L ends with exactly the carried rows there.
            self._delete_range(group, right)  # also installs R's bounds for the inserts
            names = ", ".join(quote_name(c) for c in columns)
            marks = ", ".join("?" for _ in columns)
            self._conn.executemany(
                f"INSERT INTO main.{quote_name(group.table)}({names}) VALUES ({marks})", carried
            )
            self._store_group(tombstone)
            self._store_group(grown)
            done = True
            return pack(
                {"ok": True, "descriptor": descriptor_to_wire(merged), "rows": len(carried)}
            )

        result = self._in_savepoint(run, None)
        if done:
            groups[right.group_id] = tombstone
            groups[left.group_id] = grown
            for gid in sorted(groups):
                other = groups[gid]
                if (
                    gid != left.group_id
                    and other.live
                    and other.table.lower() == left.table.lower()
                    and _overlaps(other.descriptor, merged)
                ):
                    # Live groups of a table are disjoint on a node; another one inside R's
                    # span means this node's groups disagree with the meta history. The merge
                    # must not depend on it (replicas differ), so say so rather than hide it.
                    self._log.warning(
                        "merged_range_overlaps_group", group_id=left.group_id, other=gid
                    )
            self._log.info(
                "ranges_merged",
                group_id=left.group_id,
                absorbed_group_id=right.group_id,
                epoch=new_epoch,
                rows=len(carried),
            )
        return result

    def _merge_columns(self, group: _Group, raw: object) -> list[str]:
        """The carried rows' column names: distinct columns of the table, the key among them."""
        if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
            raise ValueError("columns must be an array of text")
        known = {
            str(row[1]).lower()
            for row in self._conn.execute(f"PRAGMA main.table_info({quote_name(group.table)})")
        }
        folded = [c.lower() for c in raw]
        if len(set(folded)) != len(folded):
            raise _Refusal(ResultCode.REFUSED, "merge columns repeat a name")
        unknown = [c for c in raw if c.lower() not in known]
        if unknown:
            raise _Refusal(ResultCode.REFUSED, f"merge columns {unknown} are not in {group.table}")
        if group.key_column.lower() not in folded:
            raise _Refusal(ResultCode.REFUSED, f"merge columns lack the key {group.key_column}")
        return list(raw)

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
            if group.retired:
                raise _Refusal(
                    ResultCode.RANGE_RETIRED,
                    f"group {group_id} was merged into its left neighbour",
                    descriptor=descriptor_to_wire(group.descriptor),
                )
            if group.dropped:
                raise _Refusal(ResultCode.NO_TABLE, f"no such table: {group.table}")
            self._check_epoch(group, command.get("range_epoch"))
            self._check_bounds(group, command.get("bounds"))
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
        if not group.live:
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
            if group.live:
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
            # Only when set, so a snapshot of a group that never froze is the bytes it was.
            if group.frozen:
                header["frozen"] = True
            if group.retired:
                header["retired"] = True
            out.write(packer.pack(header))
            if group.live:
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
        groups that now own them.

        A group retired here is not restored (its keys are its left neighbour's now): only its
        applied index moves, with a warning. A retired snapshot installs a tombstone. A frozen
        live group the snapshot's range covers is retired (only a merge covers a frozen
        range)."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=0)
        unpacker.feed(snapshot.data)
        try:
            header = next(unpacker)
            fmt = header["format"]
            descriptor = descriptor_from_wire(header["descriptor"])
            applied, schema, dropped = header["applied"], header["schema"], header["dropped"]
            columns, indexes, count = header["columns"], header["indexes"], header["rows"]
            frozen, retired = header.get("frozen", False), header.get("retired", False)
            if not isinstance(frozen, bool) or not isinstance(retired, bool):
                raise TypeError("frozen and retired must be booleans")
        except (StopIteration, KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
            raise StateMachineError(f"group {group_id}: unreadable snapshot: {exc}") from exc
        require(fmt == SNAPSHOT_FORMAT, f"group {group_id}: snapshot format {fmt!r}")
        existing = self._groups.get(group_id)
        if existing is not None and existing.retired:
            # A lagging replica of a merged-away range: the leader sent a snapshot before the
            # group was removed here. Raising would stop the node; the data is L's now.
            self._log.warning(
                "retired_group_restore_ignored", group_id=group_id, index=snapshot.meta.index
            )
            self._set_applied(group_id, snapshot.meta.index)
            return
        require(descriptor.group_id == group_id, f"group {group_id}: snapshot of another group")
        require(
            not descriptor.table.lower().startswith(RESERVED_PREFIX),
            f"group {group_id}: snapshot of reserved table {descriptor.table!r}",
        )
        covered_frozen = [] if dropped or retired else self._covered_frozen(descriptor)
        overlapping = (
            None
            if dropped or retired
            else self._overlapping_group(descriptor, ignore=covered_frozen)
        )
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
            retiring = [replace(g, frozen=True, retired=True) for g in covered_frozen]
            for tombstone in retiring:
                self._store_group(tombstone)
            if retired:
                group = _Group(
                    descriptor=descriptor,
                    schema=schema,
                    key_column="",
                    integer_key=False,
                    frozen=True,
                    retired=True,
                )
                self._store_group(group)
                require(count == 0, f"group {group_id}: retired snapshot holds {count} rows")
            else:
                group = self._restore_rows(
                    descriptor, schema, dropped, columns, indexes, count, unpacker
                )
                if frozen:
                    group = replace(group, frozen=True)
                    self._store_group(group)
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
        for tombstone in retiring:
            self._groups[tombstone.descriptor.group_id] = tombstone
            self._log.info(
                "frozen_group_retired_by_restore",
                group_id=tombstone.descriptor.group_id,
                by_group_id=group_id,
            )
        self._groups[group_id] = group
        self._applied[group_id] = snapshot.meta.index
        self._log.info("group_restored", group_id=group_id, index=snapshot.meta.index, rows=count)

    def _set_applied(self, group_id: GroupId, index: Index) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO shardb_applied(group_id, idx) VALUES (?, ?)",
                (group_id, index),
            )
        self._applied[group_id] = index

    def _covered_frozen(self, descriptor: RangeDescriptor) -> list[_Group]:
        """Live frozen groups of another id whose whole range ``descriptor``'s covers: merged
        into it by a merge this node's replica of it skipped via a snapshot."""
        covered = []
        for gid in sorted(self._groups):
            other = self._groups[gid]
            if (
                gid != descriptor.group_id
                and other.live
                and other.frozen
                and other.table.lower() == descriptor.table.lower()
                and _covers(descriptor, other.descriptor)
            ):
                covered.append(other)
        return covered

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
        the physical table goes when no other group on the node uses it. A retired group
        owns no rows (its keys are its left neighbour's): only its bookkeeping goes."""
        group = self._groups.get(group_id)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if group is not None and group.live:
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


def _check_right_neighbour(left: RangeDescriptor, right: RangeDescriptor, new_epoch: int) -> None:
    """The range a merge absorbs must be the right neighbour of ``left`` in the same table (it
    starts exactly where ``left`` ends), another user group, and the merged epoch must be above
    both ranges' epochs."""
    problems = []
    if right.table != left.table:
        problems.append(f"table {right.table!r} is not {left.table!r}")
    if left.end_key is None:
        problems.append("the left range is unbounded above")
    elif type(right.start_key) is not type(left.end_key) or right.start_key != left.end_key:
        problems.append(f"it starts at {right.start_key!r}, not at the left end {left.end_key!r}")
    elif right.end_key is not None and not right.start_key < right.end_key:  # type: ignore[operator]  # one key type per table
        problems.append("it is empty")
    if right.group_id == left.group_id or right.group_id < FIRST_USER_GROUP_ID:
        problems.append(f"group {right.group_id} is not another user group")
    if right.range_id == left.range_id:
        problems.append("it is the left range")
    if new_epoch <= left.epoch or new_epoch <= right.epoch:
        problems.append(f"new epoch {new_epoch} is not above {left.epoch} and {right.epoch}")
    if problems:
        raise _Refusal(ResultCode.REFUSED, "right range of the merge: " + "; ".join(problems))


def _rows_field(raw: object, width: int) -> list[tuple[Value, ...]]:
    if not isinstance(raw, list):
        raise ValueError("rows must be an array")
    rows = [_params_field(row) for row in raw]
    if any(len(row) != width for row in rows):
        raise ValueError(f"every row must have {width} values")
    return rows


def _covers(outer: RangeDescriptor, inner: RangeDescriptor) -> bool:
    """Whether ``outer``'s range holds every key of ``inner``'s (None = unbounded)."""
    low_ok = outer.start_key is None or (
        inner.start_key is not None and outer.start_key <= inner.start_key  # type: ignore[operator]  # one key type per table
    )
    high_ok = outer.end_key is None or (
        inner.end_key is not None and inner.end_key <= outer.end_key  # type: ignore[operator]  # one key type per table
    )
    return low_ok and high_ok


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
    "GroupRetired",
    "RangeOverlap",
    "RangeStats",
    "SqlStateMachine",
    "TableRefused",
]
