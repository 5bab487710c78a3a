"""The application side of a node: what committed entries do.

A ``StateMachine`` receives each group's committed, gap-free entry stream (hashicorp/raft's
FSM shape: apply / snapshot / restore) and remembers, per group, the last index it applied.
``KVStateMachine`` is the replicated key-value store the runtime ships with: one SQLite file
per node for user data, separate from the consensus log.

Exactly-once apply. The rows a batch writes and the group's ``applied`` index are committed
in the same SQLite transaction, and entries at or below ``applied`` are skipped. The cores
re-deliver committed entries after a restart (a Raft or Paxos core only knows that its
snapshot is applied), so a crash at any point neither applies an entry twice nor skips one.

Durability. The file runs in WAL mode with ``synchronous=NORMAL``: a commit survives a
process crash (``kill -9``) but the last few may be lost on power failure. That is safe
because the consensus log is the source of truth: a rolled-back apply rolls back its
``applied`` index with it, and the entries are re-delivered from the log. The only entries
the log may no longer hold are those covered by a snapshot, and the node restores the state
machine from the persisted snapshot on start whenever ``applied`` is behind it
(``consensus.runtime.node``). Not paying an fsync per apply keeps the node at one fsync per
loop.

Commands and results are msgpack; see ``encode_put`` and friends. A command that does not
decode is a deterministic error: every replica returns the same error result and the entry
still counts as applied (ARCHITECTURE.md, "State machine").
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any, Final, Protocol

import apsw
import msgpack

from consensus.types import Entry, EntryKind, GroupId, Index, Snapshot

SNAPSHOT_FORMAT: Final = 1
MAX_KEY_BYTES: Final = 4096
"""Keys are bounded so one command cannot bloat the primary-key index of every replica."""


class StateMachineError(Exception):
    """The state machine was driven against its contract (a gap in the entry stream, a
    snapshot in an unknown format): a bug or damaged data, never a client error."""


def require(condition: bool, message: str) -> None:
    """Invariant check that stays on under ``python -O`` (TigerStyle)."""
    if not condition:
        raise StateMachineError(message)


def fresh_entries(group_id: GroupId, applied: Index, entries: Sequence[Entry]) -> list[Entry]:
    """The part of ``entries`` not yet applied, checked to continue ``applied`` without a gap.

    Cores re-deliver committed entries after a restart, so a batch may start at or below the
    applied index; those are skipped (exactly-once apply). A gap is a broken contract, not a
    client error, and raises ``StateMachineError``.
    """
    fresh = [e for e in entries if e.index > applied]
    if fresh:
        require(
            fresh[0].index == applied + 1,
            f"group {group_id}: entry stream jumps from applied {applied} to {fresh[0].index}",
        )
        for before, after in itertools.pairwise(fresh):
            require(after.index == before.index + 1, f"group {group_id}: gap at {after.index}")
    return fresh


class StateMachine(Protocol):
    """What the runtime needs from an application. Calls come from one worker thread at a
    time (the runtime serialises them behind a ``trio.CapacityLimiter(1)``)."""

    def apply(self, group_id: GroupId, entries: Sequence[Entry]) -> tuple[bytes | None, ...]:
        """Apply ``entries`` (ascending, gap-free, possibly starting at or below the applied
        index) and return one result per entry: the command's result for a NORMAL entry
        applied now, None for a NOOP/CONFIG entry or an entry that was already applied."""
        ...

    def applied_index(self, group_id: GroupId) -> Index: ...

    def snapshot(self, group_id: GroupId) -> bytes:
        """The group's state at exactly ``applied_index(group_id)``."""
        ...

    def restore(self, group_id: GroupId, snapshot: Snapshot) -> None:
        """Replace the group's state by ``snapshot``; applied becomes its index."""
        ...

    def query(self, group_id: GroupId, query: bytes) -> bytes:
        """Answer a read locally (after a read barrier); never changes state."""
        ...

    def drop_group(self, group_id: GroupId) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- commands


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def encode_put(key: bytes, value: bytes) -> bytes:
    return _pack(["put", key, value])


def encode_get(key: bytes) -> bytes:
    """A read that goes through the log (serialised with writes); ``query`` is the cheaper
    read-index path."""
    return _pack(["get", key])


def encode_delete(key: bytes) -> bytes:
    return _pack(["delete", key])


def encode_cas(key: bytes, expected: bytes | None, new: bytes | None) -> bytes:
    """Set ``key`` to ``new`` (None deletes) iff it currently holds ``expected`` (None:
    absent)."""
    return _pack(["cas", key, expected, new])


def decode_result(data: bytes) -> dict[str, Any]:
    """A result map: always ``ok`` (bool); ``value`` for get/cas; ``existed`` for delete;
    ``error`` when the command was malformed."""
    obj = msgpack.unpackb(data, raw=False)
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ValueError(f"not a state machine result: {obj!r}")
    return obj


def _key(raw: object) -> bytes:
    if not isinstance(raw, bytes) or len(raw) > MAX_KEY_BYTES:
        raise ValueError("key must be bytes of at most 4096")
    return raw


def _optional_bytes(raw: object, what: str) -> bytes | None:
    if raw is not None and not isinstance(raw, bytes):
        raise ValueError(f"{what} must be bytes or nil")
    return raw


# --------------------------------------------------------------------------- the KV store

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS kv(
        group_id INTEGER NOT NULL,
        key BLOB NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (group_id, key)) WITHOUT ROWID, STRICT""",
    """CREATE TABLE IF NOT EXISTS applied(
        group_id INTEGER PRIMARY KEY,
        idx INTEGER NOT NULL) STRICT""",
)


class KVStateMachine:
    """A replicated key-value store: ``kv(group_id, key, value)`` plus ``applied(group_id,
    idx)`` in one SQLite file. Synchronous; one thread at a time."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = str(path)
        self._conn = apsw.Connection(self._path)
        # One writer process per file, like the log store; WAL without shared memory.
        self._conn.pragma("locking_mode", "EXCLUSIVE")
        self._conn.pragma("journal_mode", "WAL")
        self._conn.pragma("synchronous", "NORMAL")
        with self._conn:
            for statement in _SCHEMA:
                self._conn.execute(statement)
        self._applied: dict[GroupId, Index] = {
            GroupId(int(g)): Index(int(i))
            for g, i in self._conn.execute("SELECT group_id, idx FROM applied")
        }
        self._closed = False

    # ----------------------------------------------------------------------- apply

    def applied_index(self, group_id: GroupId) -> Index:
        return self._applied.get(group_id, Index(0))

    def apply(self, group_id: GroupId, entries: Sequence[Entry]) -> tuple[bytes | None, ...]:
        fresh = fresh_entries(group_id, self.applied_index(group_id), entries)
        results: list[bytes | None] = [None] * (len(entries) - len(fresh))
        if not fresh:
            return tuple(results)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for entry in fresh:
                if entry.kind is EntryKind.NORMAL:
                    results.append(self._execute(group_id, entry.data))
                else:
                    results.append(None)
            last = fresh[-1].index
            conn.execute(
                "INSERT OR REPLACE INTO applied(group_id, idx) VALUES (?, ?)", (group_id, last)
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._applied[group_id] = last
        return tuple(results)

    def _execute(self, group_id: GroupId, data: bytes) -> bytes:
        try:
            command = msgpack.unpackb(data, raw=False)
            if not isinstance(command, list) or not command:
                raise ValueError("command must be a non-empty array")
            match command:
                case ["put", key, value]:
                    k = _key(key)
                    v = _optional_bytes(value, "value")
                    if v is None:
                        raise ValueError("put needs a value")
                    self._set(group_id, k, v)
                    return _pack({"ok": True})
                case ["get", key]:
                    return _pack({"ok": True, "value": self._get(group_id, _key(key))})
                case ["delete", key]:
                    existed = self._get(group_id, _key(key)) is not None
                    self._delete(group_id, _key(key))
                    return _pack({"ok": True, "existed": existed})
                case ["cas", key, expected, new]:
                    k = _key(key)
                    exp = _optional_bytes(expected, "expected")
                    nv = _optional_bytes(new, "new")
                    current = self._get(group_id, k)
                    if current != exp:
                        return _pack({"ok": False, "value": current})
                    if nv is None:
                        self._delete(group_id, k)
                    else:
                        self._set(group_id, k, nv)
                    return _pack({"ok": True, "value": nv})
                case _:
                    raise ValueError(f"unknown command {command[0]!r}")
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # Deterministic: every replica decodes the same bytes the same way.
            return _pack({"ok": False, "error": f"malformed command: {exc}"})

    def _get(self, group_id: GroupId, key: bytes) -> bytes | None:
        row = self._conn.execute(
            "SELECT value FROM kv WHERE group_id = ? AND key = ?", (group_id, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def _set(self, group_id: GroupId, key: bytes, value: bytes) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO kv(group_id, key, value) VALUES (?, ?, ?)",
            (group_id, key, value),
        )

    def _delete(self, group_id: GroupId, key: bytes) -> None:
        self._conn.execute("DELETE FROM kv WHERE group_id = ? AND key = ?", (group_id, key))

    # ----------------------------------------------------------------------- reads

    def query(self, group_id: GroupId, query: bytes) -> bytes:
        """Only ``get`` is a query; anything else gets the malformed-command result."""
        try:
            command = msgpack.unpackb(query, raw=False)
            match command:
                case ["get", key]:
                    return _pack({"ok": True, "value": self._get(group_id, _key(key))})
                case _:
                    raise ValueError("only get can be served as a read")
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            return _pack({"ok": False, "error": f"malformed query: {exc}"})

    def get(self, group_id: GroupId, key: bytes) -> bytes | None:
        """Direct local lookup (tests and tools; not linearizable by itself)."""
        return self._get(group_id, key)

    def items(self, group_id: GroupId) -> list[tuple[bytes, bytes]]:
        return [
            (bytes(k), bytes(v))
            for k, v in self._conn.execute(
                "SELECT key, value FROM kv WHERE group_id = ? ORDER BY key", (group_id,)
            )
        ]

    # ----------------------------------------------------------------------- snapshots

    def snapshot(self, group_id: GroupId) -> bytes:
        # Rows in key order so that equal states give equal bytes on every replica.
        return _pack([SNAPSHOT_FORMAT, int(self.applied_index(group_id)), self.items(group_id)])

    def restore(self, group_id: GroupId, snapshot: Snapshot) -> None:
        try:
            fmt, index, rows = msgpack.unpackb(snapshot.data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise StateMachineError(f"group {group_id}: unreadable snapshot: {exc}") from exc
        require(fmt == SNAPSHOT_FORMAT, f"group {group_id}: snapshot format {fmt!r}")
        require(
            index == snapshot.meta.index,
            f"group {group_id}: snapshot data is at {index}, meta says {snapshot.meta.index}",
        )
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM kv WHERE group_id = ?", (group_id,))
            conn.executemany(
                "INSERT INTO kv(group_id, key, value) VALUES (?, ?, ?)",
                [(group_id, bytes(k), bytes(v)) for k, v in rows],
            )
            conn.execute(
                "INSERT OR REPLACE INTO applied(group_id, idx) VALUES (?, ?)",
                (group_id, snapshot.meta.index),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._applied[group_id] = snapshot.meta.index

    def seed_group(
        self,
        group_id: GroupId,
        index: Index,
        items: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Put a group that has no state here at ``applied == index`` holding ``items``,
        without any log entries: what a range inheriting rows it did not apply itself (the
        right half of a split) looks like before ``Node.create_group(..., seeded=True)``
        snapshots it at ``consensus.runtime.SEED_INDEX``. For the seeding step of
        applications and tests; never part of the replicated apply path."""
        require(index >= 1, f"group {group_id}: seed index must be >= 1, got {index}")
        require(
            self.applied_index(group_id) == 0 and not self.items(group_id),
            f"group {group_id}: already has state here (applied {self.applied_index(group_id)})",
        )
        rows = [(group_id, _key(k), v) for k, v in items]
        with self._conn:
            self._conn.executemany("INSERT INTO kv(group_id, key, value) VALUES (?, ?, ?)", rows)
            self._conn.execute(
                "INSERT OR REPLACE INTO applied(group_id, idx) VALUES (?, ?)", (group_id, index)
            )
        self._applied[group_id] = index

    def drop_group(self, group_id: GroupId) -> None:
        with self._conn:
            self._conn.execute("DELETE FROM kv WHERE group_id = ?", (group_id,))
            self._conn.execute("DELETE FROM applied WHERE group_id = ?", (group_id,))
        self._applied.pop(group_id, None)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()
