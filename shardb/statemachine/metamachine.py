"""``MetaMachine``: the meta group's replicated state (catalog, range descriptors, nodes) on
one node, durable in its own SQLite file.

The state itself is the pure ``shardb.placement.meta.MetaState``; this class makes it a
``consensus.runtime.statemachine.StateMachine`` for the one group ``META_GROUP_ID``.

Durability and exactly once (ARCHITECTURE.md "State machine"). The file (apsw, WAL,
``synchronous=NORMAL``, as ``SqlStateMachine`` and for the same reason: the consensus log is
the source of truth) holds one row: the applied index and ``MetaState.snapshot()`` bytes,
rewritten in ONE transaction per apply batch. Entries at or below applied are skipped. The
meta state is small (a descriptor is tens of bytes, so thousands of ranges are a few hundred
KB), so rewriting it whole per batch is cheaper than keeping a second, row-level schema in
step with ``MetaState``; a batch of only NOOP/CONFIG entries rewrites just the index.

A failed batch leaves the file as it was, and the in-memory state is rebuilt from the last
committed bytes, so memory never runs ahead of disk.

Commands are ``shardb.placement.encode_command`` bytes; an undecodable or invalid command is
a deterministic error result (``MetaState.apply_encoded``), never an exception. Results are
``encode_meta_result`` bytes; the one read is ``encode_meta_query()``, answered with the
applied index and the state's snapshot bytes (``decode_meta_answer``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Final

import apsw
import msgpack
import structlog

from consensus.api import Logger
from consensus.runtime.statemachine import StateMachineError, fresh_entries, require
from consensus.types import Entry, EntryKind, GroupId, Index, NodeId, Snapshot
from shardb.placement.meta import META_GROUP_ID, MetaErrorCode, MetaResult, MetaState
from shardb.placement.wire import WireError
from shardb.statemachine.commands import descriptor_from_wire, descriptor_to_wire, pack, unpack

META_SNAPSHOT_FORMAT: Final = 1

_SCHEMA: Final = """CREATE TABLE IF NOT EXISTS shardb_meta(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    applied INTEGER NOT NULL,
    state BLOB NOT NULL) STRICT"""

_QUERY_OP: Final = "meta_state"


# --------------------------------------------------------------------------- wire


def encode_meta_result(result: MetaResult) -> bytes:
    """A ``MetaResult`` as a msgpack map: ``ok``, ``error`` (code value or nil), ``message``,
    ``ranges`` (``descriptor_to_wire`` maps), ``retired_groups`` and, for a reserved node id
    only, ``node_id``."""
    wire: dict[str, Any] = {
        "ok": result.ok,
        "error": None if result.error is None else result.error.value,
        "message": result.message,
        "ranges": [descriptor_to_wire(d) for d in result.ranges],
        "retired_groups": [int(g) for g in result.retired_groups],
    }
    if result.node_id is not None:
        wire["node_id"] = int(result.node_id)
    return pack(wire)


def decode_meta_result(data: bytes) -> MetaResult:
    """Inverse of ``encode_meta_result``; raises ``ValueError`` on anything else."""
    obj = _unpack_map(data, "meta result")
    error_raw, message = obj.get("error"), obj.get("message")
    ranges, retired = obj.get("ranges"), obj.get("retired_groups")
    if not isinstance(message, str) or not isinstance(ranges, list):
        raise ValueError("meta result: message must be text and ranges an array")
    if not isinstance(retired, list) or not all(
        isinstance(g, int) and not isinstance(g, bool) for g in retired
    ):
        raise ValueError("meta result: retired_groups must be an array of integers")
    node_id = obj.get("node_id")
    if node_id is not None and (not isinstance(node_id, int) or isinstance(node_id, bool)):
        raise ValueError("meta result: node_id must be an integer")
    error = None if error_raw is None else MetaErrorCode(error_raw)
    if obj.get("ok") is not (error is None):
        raise ValueError("meta result: ok disagrees with error")
    return MetaResult(
        error=error,
        message=message,
        ranges=tuple(descriptor_from_wire(d) for d in ranges),
        retired_groups=tuple(GroupId(g) for g in retired),
        node_id=None if node_id is None else NodeId(node_id),
    )


def encode_meta_query() -> bytes:
    """The meta group's one read: its whole state (for ``StateMachine.query``)."""
    return pack({"op": _QUERY_OP})


def decode_meta_answer(data: bytes, *, logger: Logger | None = None) -> tuple[int, MetaState]:
    """``(applied index, state)`` from a query answer; raises ``ValueError`` for an error
    answer or bytes that are not one (``WireError`` for a damaged state)."""
    obj = _unpack_map(data, "meta answer")
    if obj.get("ok") is not True:
        raise ValueError(f"meta query failed: {obj.get('error')!r}")
    applied, state = obj.get("applied"), obj.get("state")
    if not isinstance(applied, int) or isinstance(applied, bool) or applied < 0:
        raise ValueError("meta answer: applied must be a non-negative integer")
    if not isinstance(state, bytes):
        raise ValueError("meta answer: state must be bytes")
    return applied, MetaState.restore(state, logger=logger)


def _unpack_map(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = unpack(data)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"{what}: not msgpack: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ValueError(f"{what}: expected a map with ok, got {obj!r}")
    return obj


# --------------------------------------------------------------------------- machine


class MetaMachine:
    """The meta group's state on one node. Implements the runtime's ``StateMachine`` Protocol
    for ``META_GROUP_ID`` only. Synchronous; one thread at a time."""

    def __init__(self, path: str | os.PathLike[str], *, logger: Logger | None = None) -> None:
        self._path = str(path)
        self._log: Logger = logger or structlog.get_logger(__name__).bind(
            group_id=int(META_GROUP_ID)
        )
        self._conn = apsw.Connection(self._path)
        # One writer process per file, like the log store; WAL without shared memory.
        self._conn.pragma("locking_mode", "EXCLUSIVE")
        self._conn.pragma("journal_mode", "WAL")
        self._conn.pragma("synchronous", "NORMAL")
        with self._conn:
            self._conn.execute(_SCHEMA)
        row = self._conn.execute("SELECT applied, state FROM shardb_meta WHERE id = 1").fetchone()
        self._applied = Index(0)
        self._committed: bytes | None = None
        """The state bytes of the last committed batch (None: never applied anything)."""
        if row is not None:
            self._applied = Index(int(row[0]))
            self._committed = bytes(row[1])
        self._state = self._rebuild()
        self._closed = False

    def _rebuild(self) -> MetaState:
        if self._committed is None:
            return MetaState(logger=self._log)
        try:
            return MetaState.restore(self._committed, logger=self._log)
        except WireError as exc:
            raise StateMachineError(f"{self._path}: damaged meta state: {exc}") from exc

    def _check_group(self, group_id: GroupId) -> None:
        require(
            group_id == META_GROUP_ID,
            f"the meta machine serves group {META_GROUP_ID}, not {group_id}",
        )

    # ----------------------------------------------------------------------- reads

    def applied_index(self, group_id: GroupId = META_GROUP_ID) -> Index:
        self._check_group(group_id)
        return self._applied

    def state(self) -> MetaState | None:
        """A copy of the replica's state (None before anything was applied): callers may
        keep it while applies continue."""
        if self._committed is None:
            return None
        return MetaState.restore(self._committed, logger=self._log)

    def query(self, group_id: GroupId, query: bytes) -> bytes:
        self._check_group(group_id)
        try:
            command = unpack(query)
            if not isinstance(command, dict) or command.get("op") != _QUERY_OP:
                raise ValueError(f"the meta group answers only {{'op': {_QUERY_OP!r}}}")
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            return pack({"ok": False, "error": f"malformed query: {exc}"})
        return pack({"ok": True, "applied": int(self._applied), "state": self._state.snapshot()})

    # ----------------------------------------------------------------------- apply

    def apply(self, group_id: GroupId, entries: Sequence[Entry]) -> tuple[bytes | None, ...]:
        self._check_group(group_id)
        fresh = fresh_entries(group_id, self._applied, entries)
        results: list[bytes | None] = [None] * (len(entries) - len(fresh))
        if not fresh:
            return tuple(results)
        changed = False
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for entry in fresh:
                if entry.kind is EntryKind.NORMAL:
                    results.append(encode_meta_result(self._state.apply_encoded(entry.data)))
                    changed = True
                else:
                    # NOOP / CONFIG carry nothing for the state; they only advance applied.
                    results.append(None)
            last = fresh[-1].index
            committed = self._committed
            if changed or committed is None:
                committed = self._state.snapshot()
            self._write(last, committed)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # MetaState.apply changed memory in place; put back what the file still holds.
            self._state = self._rebuild()
            raise
        self._applied = last
        self._committed = committed
        return tuple(results)

    def _write(self, applied: Index, state: bytes) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO shardb_meta(id, applied, state) VALUES (1, ?, ?)",
            (int(applied), state),
        )

    # ----------------------------------------------------------------------- snapshots

    def snapshot(self, group_id: GroupId = META_GROUP_ID) -> bytes:
        """``{format, applied, state}``; equal states give equal bytes on every replica."""
        self._check_group(group_id)
        return pack(
            {
                "format": META_SNAPSHOT_FORMAT,
                "applied": int(self._applied),
                "state": self._state.snapshot(),
            }
        )

    def restore(self, group_id: GroupId, snapshot: Snapshot) -> None:
        self._check_group(group_id)
        try:
            obj = unpack(snapshot.data)
            fmt, applied, data = obj["format"], obj["applied"], obj["state"]
            if not isinstance(data, bytes):
                raise TypeError("state must be bytes")
            state = MetaState.restore(data, logger=self._log)
        except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
            raise StateMachineError(f"meta group: unreadable snapshot: {exc}") from exc
        require(fmt == META_SNAPSHOT_FORMAT, f"meta group: snapshot format {fmt!r}")
        require(
            applied == snapshot.meta.index,
            f"meta group: snapshot data is at {applied}, meta says {snapshot.meta.index}",
        )
        with self._conn:
            self._write(snapshot.meta.index, data)
        self._state = state
        self._committed = data
        self._applied = snapshot.meta.index
        self._log.info("meta_restored", index=int(snapshot.meta.index))

    # ----------------------------------------------------------------------- lifecycle

    def drop_group(self, group_id: GroupId = META_GROUP_ID) -> None:
        """Forget the replica (this node left the meta group)."""
        self._check_group(group_id)
        with self._conn:
            self._conn.execute("DELETE FROM shardb_meta")
        self._applied = Index(0)
        self._committed = None
        self._state = MetaState(logger=self._log)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()


__all__ = [
    "META_SNAPSHOT_FORMAT",
    "MetaMachine",
    "decode_meta_answer",
    "decode_meta_result",
    "encode_meta_query",
    "encode_meta_result",
]
