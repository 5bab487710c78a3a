"""The durable consensus log of every group on one node, in one SQLite file.

One node hosts many consensus groups. The host merges the ``Ready`` batches of all groups from
one loop iteration and hands them to ``SQLiteLogStore.write_batch``, which applies them in ONE
SQLite transaction, so the node pays one fsync per loop however many groups spoke (group
commit, as in etcd's multi-raft users and TiKV's raftstore).

Durability. The file runs in WAL mode with ``synchronous=FULL``: SQLite fsyncs the WAL on
every commit, so when ``write_batch`` returns, the batch survives power loss and a vote,
promise or acknowledgement that depends on it may leave (Raft Figure 2, "respond to RPCs
only after updating stable storage"; Paxos Made Simple §2.3). No extra fsync call is needed;
the VFS shim below counts the fsyncs SQLite actually issues so this is measured, not assumed
(one per commit, plus two per automatic checkpoint). ``Ready.must_sync`` is therefore always
honoured. A batch that holds only hard states none of which has ``must_sync`` (Raft's
commit-index-only change: commit is volatile state, Figure 2) commits with
``synchronous=NORMAL``: no fsync, but its WAL frames precede every later commit's, so the
next synced commit makes it durable too and a crash can only lose a suffix of such unsynced
batches, never a synced one after them. Batches with entries, truncation or a snapshot are
always synced, whatever ``must_sync`` says (defence in depth: they are promises).

Integrity. Every row carries a crc32 over a canonical encoding (see ``records``); ``load``
verifies all of them and the ordering of the log, and raises ``CorruptRecord`` naming the
table, group and index. Torn WAL frames are discarded by SQLite's own frame checksums; a file
that is not a database, or fails ``PRAGMA quick_check`` on open, raises ``CorruptDatabase``.

Bounded size. Compaction arrives as ``Ready.snapshot``: covered log rows are deleted in the
same transaction and their pages go to SQLite's freelist, which later inserts reuse, so the
main file stops growing. The WAL is checkpointed automatically every 1000 pages and truncated
back to ``journal_size_limit`` after a checkpoint, so it is bounded too. ``reclaim_space``
additionally returns free pages to the OS (``auto_vacuum=INCREMENTAL``), e.g. after
``delete_group``.

Exclusivity. ``locking_mode=EXCLUSIVE`` holds the file lock for the life of the connection,
so two processes can never write one node's log; it also lets WAL work without a shared
memory index, which a Python VFS cannot provide.

Failure. Any SQLite error during a write (disk full, IO error, failed fsync) raises
``StorageFailed`` and the store refuses every later write: after a failed fsync the kernel may
have dropped the dirty pages, so a node that kept going could acknowledge state that is not on
disk. The node must stop and restart from what ``load`` finds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import apsw
import structlog

from consensus.api import Logger, PersistedState, Ready
from consensus.backends import Backend
from consensus.storage.errors import (
    CorruptDatabase,
    CorruptRecord,
    GroupExists,
    IdentityMismatch,
    StorageError,
    StorageFailed,
    StoreLocked,
    StoreNotFound,
    UnknownGroup,
)
from consensus.storage.records import decode_conf, encode_conf, row_crc
from consensus.types import (
    ConfState,
    Entry,
    EntryKind,
    GroupId,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)

SCHEMA_VERSION: Final = 1

JOURNAL_SIZE_LIMIT_BYTES: Final = 8 << 20
"""After a checkpoint the WAL file is truncated to at most this, so one large transaction (a
big snapshot) does not leave a large WAL behind for ever."""

# SQLite integers are signed 64-bit; ids, indexes and terms are never negative.
_MAX_SQL_INT: Final = (1 << 63) - 1

_SCHEMA: Final = (
    "CREATE TABLE schema_version(version INTEGER NOT NULL) STRICT",
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value ANY NOT NULL) WITHOUT ROWID, STRICT",
    """CREATE TABLE groups(
        group_id INTEGER PRIMARY KEY,
        backend TEXT NOT NULL,
        conf BLOB NOT NULL,
        created INTEGER NOT NULL,
        crc INTEGER NOT NULL) STRICT""",
    """CREATE TABLE log(
        group_id INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        term INTEGER NOT NULL,
        accepted_ballot INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        data BLOB NOT NULL,
        crc INTEGER NOT NULL,
        PRIMARY KEY (group_id, idx)) WITHOUT ROWID, STRICT""",
    """CREATE TABLE hard_state(
        group_id INTEGER PRIMARY KEY,
        term INTEGER NOT NULL,
        vote INTEGER NOT NULL,
        "commit" INTEGER NOT NULL,
        crc INTEGER NOT NULL) STRICT""",
    """CREATE TABLE snapshot(
        group_id INTEGER PRIMARY KEY,
        idx INTEGER NOT NULL,
        term INTEGER NOT NULL,
        conf BLOB NOT NULL,
        data BLOB NOT NULL,
        crc INTEGER NOT NULL) STRICT""",
)
_TABLES: Final = ("groups", "hard_state", "log", "meta", "schema_version", "snapshot")

_SQL_TRUNCATE: Final = "DELETE FROM log WHERE group_id = ? AND idx >= ?"
_SQL_PUT_ENTRY: Final = (
    "INSERT OR REPLACE INTO log(group_id, idx, term, accepted_ballot, kind, data, crc)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_PUT_SNAPSHOT: Final = (
    "INSERT OR REPLACE INTO snapshot(group_id, idx, term, conf, data, crc)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SQL_COMPACT: Final = "DELETE FROM log WHERE group_id = ? AND idx <= ?"
_SQL_PUT_HARD_STATE: Final = (
    'INSERT OR REPLACE INTO hard_state(group_id, term, vote, "commit", crc) VALUES (?, ?, ?, ?, ?)'
)

_vfs_sequence = itertools.count(1)

_Row = tuple[int | str | bytes, ...]
_Ops = list[tuple[str, list[_Row]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStats:
    """Counters since the store was opened (a frozen record, like trio's ``statistics()``)."""

    transactions: int
    """Commits seen by SQLite's commit hook: write batches plus group creations/deletions."""
    batches: int
    """``write_batch`` calls that committed (calls with nothing to persist are not counted)."""
    groups_written: int
    entries_written: int
    bytes_written: int
    """Bytes of canonical row encodings handed to SQLite (headers plus blobs)."""
    fsyncs: int
    """fsyncs SQLite completed through the VFS, on the WAL and the main file."""
    failed: bool
    """True once a write failed; the store then refuses writes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupInfo:
    """A group this node hosts, so a restarting node knows which cores to rebuild."""

    group_id: GroupId
    backend: Backend
    conf: ConfState
    """The bootstrap membership passed to the core as ``initial_conf`` on every start."""
    created_ms: int
    """Wall-clock creation time in Unix milliseconds (informational only)."""


class _Counters:
    __slots__ = ("batches", "bytes", "entries", "fsyncs", "groups", "transactions")

    def __init__(self) -> None:
        self.transactions = 0
        self.batches = 0
        self.groups = 0
        self.entries = 0
        self.bytes = 0
        self.fsyncs = 0


class _SyncCountingFile(apsw.VFSFile):
    """Forwards everything to the default VFS and counts completed fsyncs."""

    def __init__(
        self, name: str | apsw.URIFilename | None, flags: list[int], counters: _Counters
    ) -> None:
        super().__init__("", name, flags)
        self._counters = counters

    def xSync(self, flags: int) -> None:
        super().xSync(flags)
        self._counters.fsyncs += 1


class _SyncCountingVFS(apsw.VFS):
    def __init__(self, name: str, counters: _Counters) -> None:
        self._counters = counters
        super().__init__(name, "")

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> apsw.VFSFile:
        return _SyncCountingFile(name, flags, self._counters)


def _new_phases() -> dict[str, list[_Row]]:
    """One row list per statement, in the order a Ready is applied (dicts keep insertion
    order): truncate, entries, snapshot, compaction, hard state."""
    return {
        sql: []
        for sql in (
            _SQL_TRUNCATE,
            _SQL_PUT_ENTRY,
            _SQL_PUT_SNAPSHOT,
            _SQL_COMPACT,
            _SQL_PUT_HARD_STATE,
        )
    }


def _check_sql_int(what: str, value: int) -> int:
    if not 0 <= value <= _MAX_SQL_INT:
        raise ValueError(f"{what}={value} does not fit a non-negative SQLite integer")
    return int(value)


class SQLiteLogStore:
    """The consensus log, hard state, snapshots and group registry of one node.

    Synchronous and not thread-safe: call it from one thread at a time (``StorageWriter``
    runs it in a worker thread behind a ``CapacityLimiter(1)``).

    ``create=True`` initialises a new store when the file is missing or empty; without it a
    missing file is ``StoreNotFound``, so a mistyped data dir can never silently become an
    empty log (a node that forgot its votes could vote twice in one term, Raft §5.2).
    ``max_db_bytes`` caps the main file (``PRAGMA max_page_count``); reaching it is a
    ``StorageFailed`` like a full disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cluster_id: str,
        node_id: NodeId,
        create: bool = False,
        max_db_bytes: int | None = None,
        verify_on_open: bool = True,
        fsync: bool = True,
        logger: Logger | None = None,
    ) -> None:
        self._path = Path(path)
        self._cluster_id = cluster_id
        self._node_id = node_id
        self._log: Logger = logger or structlog.get_logger("consensus.storage").bind(
            node_id=int(node_id), cluster_id=cluster_id
        )
        self._synced_commits = True
        """Whether commits currently fsync (synchronous=FULL, set by _configure)."""
        self._fsync = fsync
        """False: never fsync on commit (synchronous=NORMAL in WAL mode: consistent after a
        crash, but the last commits may be lost). Only for measuring what fsync costs
        (``--unsafe-no-fsync``): votes and acknowledgements then promise state a power loss
        can take back, which breaks Raft's and Paxos's safety arguments."""
        self._failure: str | None = None
        self._closed = False
        self._groups: dict[GroupId, GroupInfo] = {}
        # Snapshot index per group, to refuse entries the snapshot already covers.
        self._snapshot_index: dict[GroupId, int] = {}
        self._counters = _Counters()

        fresh = not self._path.exists() or self._path.stat().st_size == 0
        if fresh and not create:
            raise StoreNotFound(f"no log store at {self._path}; pass create=True to initialise")

        self._vfs_name = f"shardb-log-{os.getpid()}-{next(_vfs_sequence)}"
        self._vfs = _SyncCountingVFS(self._vfs_name, self._counters)
        try:
            self._conn = apsw.Connection(
                str(self._path),
                flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE,
                vfs=self._vfs_name,
            )
        except apsw.Error as exc:
            self._vfs.unregister()
            raise StorageFailed(f"cannot open {self._path}: {exc}") from exc
        try:
            self._open(create=create, max_db_bytes=max_db_bytes, verify=verify_on_open)
        except BaseException:
            self._close_connection()
            raise
        self._conn.set_commit_hook(self._on_commit)
        self._log.info(
            "log_store_opened", path=str(self._path), groups=len(self._groups), created=fresh
        )

    # ----------------------------------------------------------------------- lifecycle

    def _open(self, *, create: bool, max_db_bytes: int | None, verify: bool) -> None:
        try:
            self._configure(max_db_bytes)
            # Take the exclusive lock now, before looking at the schema, so that two processes
            # racing to initialise one file cannot both see it empty.
            self._conn.execute("BEGIN EXCLUSIVE")
            try:
                self._init_or_check_schema(create=create)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            if verify:
                self._quick_check()
            self._groups = {info.group_id: info for info in self._read_groups()}
            self._snapshot_index = {g: 0 for g in self._groups}
            for group_id, index in self._conn.execute("SELECT group_id, idx FROM snapshot"):
                if group_id in self._groups and isinstance(index, int):
                    self._snapshot_index[GroupId(group_id)] = index
        except apsw.BusyError as exc:
            raise StoreLocked(f"{self._path} is in use by another process: {exc}") from exc
        except (apsw.NotADBError, apsw.CorruptError) as exc:
            raise CorruptDatabase(f"{self._path} is not a readable database: {exc}") from exc
        except apsw.Error as exc:
            raise StorageFailed(f"cannot open {self._path}: {exc}") from exc

    def _configure(self, max_db_bytes: int | None) -> None:
        conn = self._conn
        # Only takes effect on a file without tables; ours are always created this way.
        conn.pragma("auto_vacuum", "INCREMENTAL")
        conn.pragma("locking_mode", "EXCLUSIVE")
        mode = conn.pragma("journal_mode", "WAL")
        if str(mode).lower() != "wal":
            raise StorageFailed(f"{self._path}: cannot enable WAL (journal_mode={mode})")
        conn.pragma("synchronous", "FULL")
        if conn.pragma("synchronous") != 2:
            raise StorageFailed(f"{self._path}: synchronous=FULL did not take effect")
        conn.pragma("journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES)
        if max_db_bytes is not None:
            page_size = int(conn.pragma("page_size"))
            conn.pragma("max_page_count", max(1, max_db_bytes // page_size))

    def _init_or_check_schema(self, *, create: bool) -> None:
        tables = {
            str(name)
            for (name,) in self._conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        }
        if not tables:
            if not create:
                raise StoreNotFound(f"{self._path} is empty; pass create=True to initialise")
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
            self._conn.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [("cluster_id", self._cluster_id), ("node_id", int(self._node_id))],
            )
            return
        if "schema_version" not in tables:
            raise CorruptDatabase(f"{self._path} is a SQLite database but not a shardb log store")
        versions = [row[0] for row in self._conn.execute("SELECT version FROM schema_version")]
        if versions != [SCHEMA_VERSION]:
            raise StorageError(
                f"{self._path} has schema version {versions}; this code reads {SCHEMA_VERSION}"
            )
        missing = sorted(set(_TABLES) - tables)
        if missing:
            raise CorruptDatabase(f"{self._path} lacks tables {missing}")
        meta: dict[object, object] = {
            row[0]: row[1] for row in self._conn.execute("SELECT key, value FROM meta")
        }
        found = (meta.get("cluster_id"), meta.get("node_id"))
        if found != (self._cluster_id, int(self._node_id)):
            raise IdentityMismatch(
                f"{self._path} belongs to cluster {found[0]!r} node {found[1]}, not cluster "
                f"{self._cluster_id!r} node {self._node_id}: refusing to open another "
                "node's log"
            )

    def _quick_check(self) -> None:
        problems = [str(row[0]) for row in self._conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise CorruptDatabase(f"{self._path} failed quick_check: {'; '.join(problems)}")

    def close(self) -> None:
        """Checkpoint and close. Idempotent."""
        if self._closed:
            return
        self._close_connection()
        self._log.info("log_store_closed", path=str(self._path))

    def _close_connection(self) -> None:
        self._closed = True
        try:
            self._conn.close()
        finally:
            self._vfs.unregister()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    # ----------------------------------------------------------------------- writes

    def write_batch(self, batch: Sequence[tuple[GroupId, Ready]]) -> None:
        """Persist the Readys of many groups in one transaction (one fsync).

        Per group, in this order: ``truncate_from`` (delete idx >= n), ``entries`` (insert or
        overwrite by index), ``snapshot`` (replace, then delete log rows at or below its
        index), ``hard_state`` (upsert). Fields that are not persistent state (messages,
        committed entries, ...) are ignored. Returns once the batch is durable.

        Raises ``UnknownGroup`` or ``ValueError`` (an entry at or below the group's persisted
        snapshot index, an integer SQLite cannot hold) before writing anything, and
        ``StorageFailed`` if SQLite fails (nothing of the batch is then persisted).
        """
        self._require_writable()
        for group_id, _ in batch:
            if group_id not in self._groups:
                raise UnknownGroup(group_id)
        # Rows of different groups have disjoint keys, so the per-group order only has to hold
        # within a group: with each group listed once, one statement per phase covers every
        # group (a few executemany calls per batch instead of several per group).
        distinct = len({group_id for group_id, _ in batch}) == len(batch)
        ops: _Ops = []
        phases = _new_phases()
        entries = written = groups = 0
        snapshot_index: dict[GroupId, int] = {}
        for group_id, ready in batch:
            if not distinct:
                phases = _new_phases()
            covered = snapshot_index.get(group_id, self._snapshot_index[group_id])
            for entry in ready.entries:
                if entry.index <= covered:
                    raise ValueError(
                        f"group {group_id}: entry {entry.index} is at or below the persisted "
                        f"snapshot index {covered}; the core must not write compacted entries"
                    )
            if ready.snapshot is not None:
                snapshot_index[group_id] = ready.snapshot.meta.index
            size, touched = self._encode_ready(group_id, ready, phases)
            if not distinct:
                ops.extend((sql, rows) for sql, rows in phases.items() if rows)
            entries += len(ready.entries)
            written += size
            groups += touched
        if distinct:
            ops = [(sql, rows) for sql, rows in phases.items() if rows]
        if not ops:
            return
        sync = any(
            ready.must_sync
            or ready.entries
            or ready.truncate_from is not None
            or ready.snapshot is not None
            for _, ready in batch
        )
        self._transact(ops, during="write_batch", sync=sync)
        self._snapshot_index.update(snapshot_index)
        self._counters.batches += 1
        self._counters.groups += groups
        self._counters.entries += entries
        self._counters.bytes += written

    def _encode_ready(
        self, group_id: GroupId, ready: Ready, phases: dict[str, list[_Row]]
    ) -> tuple[int, bool]:
        """Add one group's rows to ``phases``; return the bytes encoded and whether any were."""
        gid = _check_sql_int("group_id", group_id)
        written = 0
        touched = False
        if ready.truncate_from is not None:
            phases[_SQL_TRUNCATE].append(
                (gid, _check_sql_int("truncate_from", ready.truncate_from))
            )
            touched = True
        if ready.entries:
            rows = phases[_SQL_PUT_ENTRY]
            for entry in ready.entries:
                index, term, ballot = entry.index, entry.term, entry.accepted_ballot
                # Hot path: one test covers negative and too-large values of all three.
                if (index | term | ballot) >> 63:
                    _check_sql_int("index", index)
                    _check_sql_int("term", term)
                    _check_sql_int("accepted_ballot", ballot)
                key = (gid, index, term, ballot, entry.kind.value)
                crc, size = row_crc("log", key, entry.data)
                rows.append((*key, entry.data, crc))
                written += size
            touched = True
        if ready.snapshot is not None:
            meta = ready.snapshot.meta
            snap_index = _check_sql_int("snapshot index", meta.index)
            conf = encode_conf(meta.conf)
            key_s = (gid, snap_index, _check_sql_int("snapshot term", meta.term), conf)
            crc, size = row_crc("snapshot", key_s, ready.snapshot.data)
            phases[_SQL_PUT_SNAPSHOT].append((*key_s, ready.snapshot.data, crc))
            phases[_SQL_COMPACT].append((gid, snap_index))
            written += size
            touched = True
        if ready.hard_state is not None:
            hs = ready.hard_state
            key_h = (
                gid,
                _check_sql_int("term", hs.term),
                _check_sql_int("vote", hs.vote),
                _check_sql_int("commit", hs.commit),
            )
            crc, size = row_crc("hard_state", key_h, b"")
            phases[_SQL_PUT_HARD_STATE].append((*key_h, crc))
            written += size
            touched = True
        return written, touched

    def create_group(
        self,
        group_id: GroupId,
        backend: Backend | str,
        conf: ConfState,
        *,
        initial: PersistedState | None = None,
    ) -> GroupInfo:
        """Register a group this node hosts, with its backend and bootstrap membership.

        ``initial`` (hard state, snapshot, entries) is written in the SAME transaction: a
        group that must start from a snapshot (a seeded range, see
        ``consensus.runtime.node.SEED_INDEX``) is never found registered without it after a
        crash, which would let its core start from an empty log at index 1."""
        self._require_writable()
        if group_id in self._groups:
            raise GroupExists(group_id)
        info = GroupInfo(
            group_id=group_id,
            backend=Backend(backend),
            conf=conf,
            created_ms=time.time_ns() // 1_000_000,
        )
        conf_bytes = encode_conf(conf)
        key = (
            _check_sql_int("group_id", group_id),
            info.backend.value,
            conf_bytes,
            info.created_ms,
        )
        crc, _ = row_crc("groups", key, b"")
        ops: _Ops = [
            (
                "INSERT INTO groups(group_id, backend, conf, created, crc) VALUES (?, ?, ?, ?, ?)",
                [(*key, crc)],
            )
        ]
        snapshot_index = 0
        if initial is not None:
            snap = initial.snapshot
            snapshot_index = snap.meta.index if snap is not None else 0
            for entry in initial.entries:
                if entry.index <= snapshot_index:
                    raise ValueError(
                        f"group {group_id}: initial entry {entry.index} is at or below the "
                        f"initial snapshot index {snapshot_index}"
                    )
            phases = _new_phases()
            ready = Ready(hard_state=initial.hard_state, entries=initial.entries, snapshot=snap)
            self._encode_ready(group_id, ready, phases)
            ops.extend((sql, rows) for sql, rows in phases.items() if rows)
        self._transact(ops, during="create_group")
        self._groups[group_id] = info
        self._snapshot_index[group_id] = snapshot_index
        return info

    def delete_group(self, group_id: GroupId) -> None:
        """Forget a group and all its state in one transaction (after it left this node)."""
        self._require_writable()
        if group_id not in self._groups:
            raise UnknownGroup(group_id)
        gid: list[_Row] = [(int(group_id),)]
        self._transact(
            [
                (f"DELETE FROM {table} WHERE group_id = ?", gid)
                for table in ("log", "snapshot", "hard_state", "groups")
            ],
            during="delete_group",
        )
        del self._groups[group_id]
        del self._snapshot_index[group_id]

    def reclaim_space(self) -> None:
        """Return free pages to the OS and empty the WAL.

        Not needed for boundedness (freed pages are reused); useful after ``delete_group`` or
        a large compaction. Runs ``PRAGMA incremental_vacuum`` then
        ``PRAGMA wal_checkpoint(TRUNCATE)``.
        """
        self._require_writable()
        try:
            self._conn.execute("PRAGMA incremental_vacuum").fetchall()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except apsw.Error as exc:
            raise self._fail(exc, during="reclaim_space") from exc

    def _transact(self, ops: _Ops, *, during: str, sync: bool = True) -> None:
        conn = self._conn
        sync = sync and self._fsync
        try:
            if sync != self._synced_commits:
                # Outside a transaction, as SQLite requires; 2 = FULL, 1 = NORMAL.
                conn.execute(f"PRAGMA synchronous={2 if sync else 1}")
                self._synced_commits = sync
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in ops:
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except apsw.Error as exc:
            raise self._fail(exc, during=during) from exc

    def _fail(self, exc: apsw.Error, *, during: str) -> StorageFailed:
        kind = type(exc).__name__
        self._failure = f"{during} failed with {kind}: {exc}"
        self._log.warning("storage_failed", path=str(self._path), during=during, error=str(exc))
        return StorageFailed(
            f"{self._path}: {self._failure}; the store now refuses writes, restart the node"
        )

    def _require_writable(self) -> None:
        if self._closed:
            raise StorageError(f"{self._path}: store is closed")
        if self._failure is not None:
            raise StorageFailed(
                f"{self._path}: refusing writes after an earlier failure ({self._failure}); "
                "restart the node"
            )

    def _on_commit(self) -> bool:
        self._counters.transactions += 1
        return False  # False lets the commit proceed.

    # ----------------------------------------------------------------------- reads

    def list_groups(self) -> tuple[GroupInfo, ...]:
        """The groups this node hosts, by ascending id."""
        return tuple(self._groups[g] for g in sorted(self._groups))

    def load(self, group_id: GroupId) -> PersistedState:
        """Everything persisted for ``group_id``, every row's checksum verified.

        Raises ``CorruptRecord`` naming the table, group and index of a damaged row, or of a
        log row out of order (at or below the snapshot index).
        """
        if self._closed:
            raise StorageError(f"{self._path}: store is closed")
        if group_id not in self._groups:
            raise UnknownGroup(group_id)
        try:
            hard_state = self._read_hard_state(group_id)
            snapshot = self._read_snapshot(group_id)
            entries = self._read_entries(group_id, snapshot.meta.index if snapshot else 0)
        except (apsw.NotADBError, apsw.CorruptError) as exc:
            raise CorruptDatabase(f"{self._path}: {exc}") from exc
        except apsw.Error as exc:
            raise StorageFailed(f"{self._path}: cannot read group {group_id}: {exc}") from exc
        return PersistedState(hard_state=hard_state, snapshot=snapshot, entries=entries)

    def load_all(self) -> dict[GroupId, PersistedState]:
        """``load`` for every hosted group; what a node calls on start (it refuses to start
        if this raises)."""
        return {info.group_id: self.load(info.group_id) for info in self.list_groups()}

    def statistics(self) -> StoreStats:
        c = self._counters
        return StoreStats(
            transactions=c.transactions,
            batches=c.batches,
            groups_written=c.groups,
            entries_written=c.entries,
            bytes_written=c.bytes,
            fsyncs=c.fsyncs,
            failed=self._failure is not None,
        )

    def _corrupt(
        self, table: str, group_id: GroupId, index: int | None, reason: str
    ) -> CorruptRecord:
        error = CorruptRecord(table=table, group_id=group_id, index=index, reason=reason)
        self._log.warning("corrupt_record_found", path=str(self._path), error=str(error))
        return error

    def _verify(
        self,
        table: str,
        group_id: GroupId,
        index: int | None,
        key: tuple[object, ...],
        data: object,
        stored_crc: object,
    ) -> tuple[tuple[int | str | bytes, ...], bytes]:
        """Check column types and the checksum; return the typed key and blob."""
        typed: list[int | str | bytes] = []
        for value in key:
            if not isinstance(value, int | str | bytes):
                raise self._corrupt(table, group_id, index, f"unexpected column value {value!r}")
            typed.append(value)
        if not isinstance(data, bytes) or not isinstance(stored_crc, int):
            raise self._corrupt(table, group_id, index, "unexpected column types")
        computed, _ = row_crc(table, tuple(typed), data)
        if computed != stored_crc:
            raise self._corrupt(
                table,
                group_id,
                index,
                f"checksum mismatch (stored {stored_crc:#010x}, computed {computed:#010x})",
            )
        return tuple(typed), data

    def _read_hard_state(self, group_id: GroupId) -> HardState:
        row = self._conn.execute(
            'SELECT term, vote, "commit", crc FROM hard_state WHERE group_id = ?', (group_id,)
        ).fetchone()
        if row is None:
            return HardState()
        term, vote, commit, crc = row
        (_, t, v, c), _ = self._verify(
            "hard_state", group_id, None, (int(group_id), term, vote, commit), b"", crc
        )
        return HardState(term=Term(_as_int(t)), vote=NodeId(_as_int(v)), commit=Index(_as_int(c)))

    def _read_snapshot(self, group_id: GroupId) -> Snapshot | None:
        row = self._conn.execute(
            "SELECT idx, term, conf, data, crc FROM snapshot WHERE group_id = ?", (group_id,)
        ).fetchone()
        if row is None:
            return None
        idx, term, conf, data, crc = row
        index = idx if isinstance(idx, int) else None
        (_, i, t, c), blob = self._verify(
            "snapshot", group_id, index, (int(group_id), idx, term, conf), data, crc
        )
        try:
            conf_state = decode_conf(_as_bytes(c))
        except ValueError as exc:
            raise self._corrupt("snapshot", group_id, index, str(exc)) from exc
        meta = SnapshotMeta(index=Index(_as_int(i)), term=Term(_as_int(t)), conf=conf_state)
        return Snapshot(meta=meta, data=blob)

    def _read_entries(self, group_id: GroupId, snapshot_index: int) -> tuple[Entry, ...]:
        entries: list[Entry] = []
        previous = snapshot_index
        cursor = self._conn.execute(
            "SELECT idx, term, accepted_ballot, kind, data, crc FROM log"
            " WHERE group_id = ? ORDER BY idx",
            (group_id,),
        )
        for idx, term, ballot, kind, data, crc in cursor:
            index = idx if isinstance(idx, int) else None
            (_, i, t, b, k), blob = self._verify(
                "log", group_id, index, (int(group_id), idx, term, ballot, kind), data, crc
            )
            position = _as_int(i)
            # Compaction deletes covered rows in the snapshot's own transaction, so a row at or
            # below the snapshot index means the file was changed behind our back.
            if position <= previous or position < 1:
                raise self._corrupt(
                    "log", group_id, position, f"out of order (after index {previous})"
                )
            previous = position
            try:
                entry_kind = EntryKind(k)
            except ValueError as exc:
                raise self._corrupt("log", group_id, position, f"unknown kind {k!r}") from exc
            entries.append(
                Entry(
                    index=Index(position),
                    term=Term(_as_int(t)),
                    kind=entry_kind,
                    data=blob,
                    accepted_ballot=Term(_as_int(b)),
                )
            )
        return tuple(entries)

    def _read_groups(self) -> list[GroupInfo]:
        groups: list[GroupInfo] = []
        cursor = self._conn.execute(
            "SELECT group_id, backend, conf, created, crc FROM groups ORDER BY group_id"
        )
        for group_id, backend, conf, created, crc in cursor:
            gid = GroupId(group_id if isinstance(group_id, int) else -1)
            (_, name, c, made), _ = self._verify(
                "groups", gid, None, (group_id, backend, conf, created), b"", crc
            )
            try:
                info = GroupInfo(
                    group_id=gid,
                    backend=Backend(name),
                    conf=decode_conf(_as_bytes(c)),
                    created_ms=_as_int(made),
                )
            except ValueError as exc:
                raise self._corrupt("groups", gid, None, str(exc)) from exc
            groups.append(info)
        return groups

    # ----------------------------------------------------------------------- introspection

    def file_size_bytes(self) -> int:
        """Bytes on disk: the main file plus the WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self._path}{suffix}").st_size
        return total


def _as_int(value: int | str | bytes) -> int:
    # _verify has already checked the checksum over these exact values, so a wrong type here
    # is a bug in this module, not damage on disk.
    if not isinstance(value, int):
        raise TypeError(f"expected int, got {value!r}")
    return value


def _as_bytes(value: int | str | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes, got {value!r}")
    return value
