"""Commands, queries and results of the SQL state machine: msgpack maps, never pickle.

A command is one routed sub-statement (or a range/DDL change) for one group. Every field is a
msgpack primitive, so a command is the same bytes on every replica and decodes the same way
everywhere; a command that does not decode is a deterministic error (``ResultCode.MALFORMED``).

Results are maps with ``ok`` (bool) and, on failure, ``code`` (a ``ResultCode`` value) and
``error`` (for SQLite errors: SQLite's own message, verbatim). A ``STALE_EPOCH`` or
``RANGE_FROZEN`` result carries the group's current ``descriptor`` so the gateway can refresh
its range cache.

Merges take two commands (see ``SqlStateMachine``): ``encode_freeze`` on the right-hand range R
stops its writes; ``encode_merge`` on the left range L carries all of frozen R's rows into L.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack

from consensus.runtime.node import SEED_INDEX as RUNTIME_SEED_INDEX
from consensus.types import GroupId, NodeId
from shardb.placement.descriptors import Key, RangeDescriptor

Value = int | float | str | bytes | None
"""A SQLite value as it crosses the wire."""

MAX_SQL_CHARS: Final = 1 << 20
"""A replicated statement is bounded so one command cannot bloat every replica's log."""

MAX_MERGE_BYTES: Final = 4 << 20
"""A merge command (all of R's rows) larger than this is refused: a log entry is at most
8 MiB, and half of it leaves room for the framing and a batch's other entries. Callers check
``len(encode_merge(...))`` before proposing; bigger ranges must shrink (or not merge) first."""

# The applied index a range's group starts at when its initial rows did not come from its own
# log (a new table's ranges, the right half of a split): the runtime starts such a group from
# ``snapshot(group_id)`` at SEED_INDEX, so a replica added later gets a snapshot, never entries
# from index 1 that would rebuild the range without its initial rows.
SEED_INDEX: Final = RUNTIME_SEED_INDEX


class ResultCode(enum.Enum):
    STALE_EPOCH = "stale_epoch"
    """The command was routed with an older descriptor than the group's."""
    OUT_OF_RANGE = "out_of_range"
    """A row the statement writes lies outside the group's range."""
    CONSTRAINT = "constraint"
    """SQLite refused the row (UNIQUE, NOT NULL, CHECK, ...)."""
    SQLITE = "sqlite"
    """Any other deterministic SQLite error from the user's SQL."""
    REFUSED = "refused"
    """The state machine refuses the statement (non-deterministic, wrong table, not a write,
    more than one statement, ...)."""
    NO_TABLE = "no_table"
    """The group's table was dropped."""
    BAD_SPLIT_KEY = "bad_split_key"
    MALFORMED = "malformed"
    RANGE_FROZEN = "range_merging"
    """Retryable: the range is frozen for a merge into its left neighbour; writes, DDL and
    splits are refused until the meta group routes its keys to the merged range. Carries
    ``descriptor``; reads still work."""
    RANGE_RETIRED = "range_retired"
    """Retryable elsewhere: the group was merged into its left neighbour on this node; route
    by a fresh meta view."""


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


# --------------------------------------------------------------------------- descriptors


def descriptor_to_wire(descriptor: RangeDescriptor) -> dict[str, Any]:
    """A descriptor as a msgpack map; ``learners`` only when there are some, so the bytes of
    a descriptor without learners are what they were before learners existed."""
    wire: dict[str, Any] = {
        "range_id": descriptor.range_id,
        "table": descriptor.table,
        "start_key": descriptor.start_key,
        "end_key": descriptor.end_key,
        "group_id": int(descriptor.group_id),
        "replicas": [int(n) for n in descriptor.replicas],
        "backend": descriptor.backend,
        "epoch": descriptor.epoch,
    }
    if descriptor.learners:
        wire["learners"] = [int(n) for n in descriptor.learners]
    return wire


def _nodes(raw: object, what: str) -> tuple[NodeId, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise ValueError(f"{what} must be an array")
    return tuple(NodeId(_int(n, what)) for n in raw)


def _key_or_none(raw: object, what: str) -> Key | None:
    if raw is None or (isinstance(raw, int | str) and not isinstance(raw, bool)):
        return raw
    raise ValueError(f"{what} must be an integer, text or nil")


def _int(raw: object, what: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    raise ValueError(f"{what} must be an integer")


def _str(raw: object, what: str) -> str:
    if isinstance(raw, str):
        return raw
    raise ValueError(f"{what} must be text")


def descriptor_from_wire(raw: object) -> RangeDescriptor:
    if not isinstance(raw, Mapping):
        raise ValueError("a descriptor must be a map")
    return RangeDescriptor(
        range_id=_int(raw.get("range_id"), "range_id"),
        table=_str(raw.get("table"), "table"),
        start_key=_key_or_none(raw.get("start_key"), "start_key"),
        end_key=_key_or_none(raw.get("end_key"), "end_key"),
        group_id=GroupId(_int(raw.get("group_id"), "group_id")),
        replicas=_nodes(raw.get("replicas"), "replicas"),
        backend=_str(raw.get("backend"), "backend"),
        epoch=_int(raw.get("epoch"), "epoch"),
        learners=_nodes(raw.get("learners", []), "learners"),
    )


# --------------------------------------------------------------------------- encoders


def _params(params: Sequence[object]) -> list[Value]:
    checked: list[Value] = []
    for value in params:
        if isinstance(value, bool):
            checked.append(int(value))  # as sqlite3/apsw bind it
        elif value is None or isinstance(value, int | float | str | bytes):
            checked.append(value)
        else:
            raise TypeError(f"unsupported parameter type {type(value).__name__}")
    return checked


Bounds = tuple[Key | None, Key | None]
"""``[start, end)`` of the range a gateway routed a sub-statement to (None: unbounded)."""


def encode_write(
    table: str,
    sql: str,
    params: Sequence[object],
    range_epoch: int,
    bounds: Bounds | None = None,
) -> bytes:
    """An INSERT/UPDATE/DELETE sub-statement routed to one range (``shardb.sql.Target``).
    ``bounds`` are the range's bounds as the gateway saw them: a group whose own bounds do not
    cover them refuses the command (``STALE_EPOCH``) instead of silently confining it."""
    command: dict[str, Any] = {
        "op": "write",
        "table": table,
        "sql": sql,
        "params": _params(params),
        "range_epoch": range_epoch,
    }
    if bounds is not None:
        command["bounds"] = list(bounds)
    return pack(command)


def encode_ddl(table: str, sql: str) -> bytes:
    """CREATE INDEX / DROP INDEX / DROP TABLE, applied per group (see ``SqlStateMachine``)."""
    return pack({"op": "ddl", "table": table, "sql": sql})


def encode_split(split_key: Key, range_epoch: int, new_epoch: int, right: RangeDescriptor) -> bytes:
    """Shrink this group's range to ``[start, split_key)`` with epoch ``new_epoch`` and, in
    the same transaction, register ``right`` (``[split_key, end)``, the descriptor the meta
    group's ``SplitRange`` allocated) as a new group on every replica that applies it.
    The result carries ``descriptor`` (the left half) and ``right``."""
    return pack(
        {
            "op": "split",
            "key": split_key,
            "range_epoch": range_epoch,
            "new_epoch": new_epoch,
            "right": descriptor_to_wire(right),
        }
    )


def encode_freeze(range_epoch: int) -> bytes:
    """First step of a merge, on the right-hand range R: from this entry on, R refuses
    writes, DDL and splits (``RANGE_FROZEN``) and still serves reads, so rows read from R at
    or after the freeze's index are all of R's rows, for good. Idempotent. The result carries
    ``applied`` (the freeze entry's index) and ``descriptor``."""
    return pack({"op": "freeze", "range_epoch": range_epoch})


def encode_merge(
    range_epoch: int,
    new_epoch: int,
    right: RangeDescriptor,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
) -> bytes:
    """Second step of a merge, on the left range L: absorb the frozen right neighbour
    ``right`` (its descriptor at the freeze) whose rows are ``rows`` (every one of them,
    values in ``columns`` order, read from frozen R). L becomes ``[L.start, right.end)`` with
    ``new_epoch``; this node's group of R, if any, is retired. The result carries the merged
    ``descriptor`` and ``rows`` (how many were carried). Refused when larger than
    ``MAX_MERGE_BYTES``."""
    return pack(
        {
            "op": "merge",
            "range_epoch": range_epoch,
            "new_epoch": new_epoch,
            "right": descriptor_to_wire(right),
            "columns": list(columns),
            "rows": [_params(row) for row in rows],
        }
    )


def encode_query(
    sql: str, params: Sequence[object], range_epoch: int, bounds: Bounds | None = None
) -> bytes:
    """A read-only SELECT sub-statement for ``SqlStateMachine.query`` (``bounds`` as for
    ``encode_write``)."""
    command: dict[str, Any] = {
        "op": "query",
        "sql": sql,
        "params": _params(params),
        "range_epoch": range_epoch,
    }
    if bounds is not None:
        command["bounds"] = list(bounds)
    return pack(command)


def decode_result(data: bytes) -> dict[str, Any]:
    """A result map: always ``ok``; ``rowcount`` (and ``lastrowid`` when deterministic) for a
    write; ``columns`` and ``rows`` for a query; ``code`` and ``error`` on failure;
    ``descriptor`` for a split (the left half; ``right`` too) or a stale epoch."""
    obj = unpack(data)
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ValueError(f"not a SQL state machine result: {obj!r}")
    return obj


def error_result(code: ResultCode, message: str, **extra: Any) -> bytes:
    return pack({"ok": False, "code": code.value, "error": message, **extra})


__all__ = [
    "MAX_MERGE_BYTES",
    "MAX_SQL_CHARS",
    "SEED_INDEX",
    "ResultCode",
    "Value",
    "decode_result",
    "descriptor_from_wire",
    "descriptor_to_wire",
    "encode_ddl",
    "encode_freeze",
    "encode_merge",
    "encode_query",
    "encode_split",
    "encode_write",
    "error_result",
    "pack",
    "unpack",
]
