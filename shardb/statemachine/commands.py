"""Commands, queries and results of the SQL state machine: msgpack maps, never pickle.

A command is one routed sub-statement (or a range/DDL change) for one group. Every field is a
msgpack primitive, so a command is the same bytes on every replica and decodes the same way
everywhere; a command that does not decode is a deterministic error (``ResultCode.MALFORMED``).

Results are maps with ``ok`` (bool) and, on failure, ``code`` (a ``ResultCode`` value) and
``error`` (for SQLite errors: SQLite's own message, verbatim). A ``STALE_EPOCH`` result carries
the group's current ``descriptor`` so the gateway can refresh its range cache.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack

from consensus.types import GroupId, NodeId
from shardb.placement.descriptors import Key, RangeDescriptor

Value = int | float | str | bytes | None
"""A SQLite value as it crosses the wire."""

MAX_SQL_CHARS: Final = 1 << 20
"""A replicated statement is bounded so one command cannot bloat every replica's log."""


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


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


# --------------------------------------------------------------------------- descriptors


def descriptor_to_wire(descriptor: RangeDescriptor) -> dict[str, Any]:
    return {
        "range_id": descriptor.range_id,
        "table": descriptor.table,
        "start_key": descriptor.start_key,
        "end_key": descriptor.end_key,
        "group_id": int(descriptor.group_id),
        "replicas": [int(n) for n in descriptor.replicas],
        "backend": descriptor.backend,
        "epoch": descriptor.epoch,
    }


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
    replicas = raw.get("replicas")
    if not isinstance(replicas, Sequence) or isinstance(replicas, str | bytes):
        raise ValueError("replicas must be an array")
    return RangeDescriptor(
        range_id=_int(raw.get("range_id"), "range_id"),
        table=_str(raw.get("table"), "table"),
        start_key=_key_or_none(raw.get("start_key"), "start_key"),
        end_key=_key_or_none(raw.get("end_key"), "end_key"),
        group_id=GroupId(_int(raw.get("group_id"), "group_id")),
        replicas=tuple(NodeId(_int(n, "replica")) for n in replicas),
        backend=_str(raw.get("backend"), "backend"),
        epoch=_int(raw.get("epoch"), "epoch"),
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


def encode_write(table: str, sql: str, params: Sequence[object], range_epoch: int) -> bytes:
    """An INSERT/UPDATE/DELETE sub-statement routed to one range (``shardb.sql.Target``)."""
    return pack(
        {
            "op": "write",
            "table": table,
            "sql": sql,
            "params": _params(params),
            "range_epoch": range_epoch,
        }
    )


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


def encode_query(sql: str, params: Sequence[object], range_epoch: int) -> bytes:
    """A read-only SELECT sub-statement for ``SqlStateMachine.query``."""
    return pack({"op": "query", "sql": sql, "params": _params(params), "range_epoch": range_epoch})


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
    "MAX_SQL_CHARS",
    "ResultCode",
    "Value",
    "decode_result",
    "descriptor_from_wire",
    "descriptor_to_wire",
    "encode_ddl",
    "encode_query",
    "encode_split",
    "encode_write",
    "error_result",
    "pack",
    "unpack",
]
