"""What the async client and the DB-API driver share: addresses, requests, replies.

The transport is the node client protocol (``consensus.runtime.protocol``: msgpack objects,
a hello each way, requests multiplexed by id); on top of it the gateway serves op ``sql``
(one statement) and op ``meta`` (the cluster view). This module turns Python values into
those requests and checks the replies, with no IO, so both clients behave the same.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from consensus.runtime import protocol as p
from shardb.client.errors import (
    BAD_REPLY,
    CLUSTER_MISMATCH,
    DATA_ERROR,
    PARAMETER_ERROR,
    TIMEOUT,
    UNKNOWN_OUTCOME,
    UNREACHABLE,
    DataError,
    Error,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    error_from_reply,
)

Value: TypeAlias = int | float | str | bytes | None
"""A SQL value on the wire (SQLite's storage classes)."""

Address: TypeAlias = tuple[str, int]
AddressLike: TypeAlias = str | tuple[str, int]

CONSISTENCIES: Final = ("linearizable", "lease", "stale")
KINDS: Final = ("select", "write", "ddl", "admin", "explain")
ROW_KINDS: Final = ("select", "admin", "explain")
"""Result kinds that carry a result set (DB-API ``description`` is set for them)."""

DEFAULT_TIMEOUT_S: Final = 10.0
REPLY_GRACE_S: Final = 1.0
"""How long past the request's deadline a client still waits for the reply: the gateway
enforces the deadline itself (``timeout_ms``) and answers ``timeout``, which is more precise
than the client giving up on its own."""
DIAL_TIMEOUT_S: Final = 2.0
"""Per address, so that one black-holed gateway does not eat a whole request's deadline."""
MAX_PARAMS: Final = 10_000
"""Parameters per statement the gateway accepts (``shardb.server.ops.MAX_PARAMS``); more is
a protocol violation that closes the connection, so the client refuses it first."""

_READ_KEYWORDS: Final = frozenset({"SELECT", "EXPLAIN", "SHOW", "VALUES"})
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """The answer to one statement (op ``sql``)."""

    kind: str
    """``select`` | ``write`` | ``ddl`` | ``admin`` | ``explain``."""
    columns: tuple[str, ...]
    rows: tuple[tuple[Value, ...], ...]
    rowcount: int
    """Rows changed by a write; -1 for select and ddl."""
    trace: dict[str, Any] | None = None
    """Routing and timing (route, ranges, groups, leaders, retries, ``*_ms``) when asked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    node_id: int
    cluster_id: str


# --------------------------------------------------------------------------- addresses


def parse_addresses(address: AddressLike | Sequence[AddressLike]) -> tuple[Address, ...]:
    """``"host:port"``, ``"[v6]:port"``, ``(host, port)`` or a non-empty list of them."""
    if isinstance(address, str) or _is_pair(address):
        items: list[Any] = [address]
    elif isinstance(address, Sequence):
        items = list(address)
    else:
        raise InterfaceError(f"not an address or list of addresses: {address!r}")
    if not items:
        raise InterfaceError("need at least one gateway address")
    return tuple(_parse_address(item) for item in items)


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def _parse_address(item: Any) -> Address:
    if _is_pair(item):
        host, port = item
    elif isinstance(item, str):
        host, sep, port_text = item.rpartition(":")
        if not sep or not port_text.isdigit():
            raise InterfaceError(f"address {item!r} is not host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = int(port_text)
    else:
        raise InterfaceError(f"address {item!r} is not host:port or a (host, port) pair")
    if not host or not 0 < port < 65536:
        raise InterfaceError(f"address {item!r} has no host or a port out of range")
    return host, port


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------- requests


def check_consistency(consistency: str) -> str:
    if consistency not in CONSISTENCIES:
        raise ProgrammingError(
            f"consistency must be one of {', '.join(CONSISTENCIES)}, not {consistency!r}",
            code=PARAMETER_ERROR,
        )
    return consistency


def check_timeout(timeout: float) -> float:
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ProgrammingError(
            f"timeout must be a positive number of seconds, not {timeout!r}", code=PARAMETER_ERROR
        )
    return float(timeout)


def to_value(value: object) -> Value:
    """One bound parameter as it goes on the wire.

    ``bool`` becomes 0/1 and ``bytearray``/``memoryview`` bytes, as SQLite stores them;
    ``date``/``time``/``datetime`` become ISO-8601 text, SQLite's own date convention (its
    date functions read it), since the protocol has no date type.
    """
    match value:
        case None | str() | bytes():
            return value
        case bool():
            return int(value)
        case int():
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise DataError(f"integer {value} does not fit in 64 bits", code=DATA_ERROR)
            return value
        case float():
            return value
        case bytearray() | memoryview():
            return bytes(value)
        case datetime.datetime():
            return value.isoformat(sep=" ")
        case datetime.date() | datetime.time():
            return value.isoformat()
        case _:
            raise ProgrammingError(
                f"parameter of type {type(value).__name__} is not supported "
                "(use None, int, float, str, bytes, or a date/time)",
                code=PARAMETER_ERROR,
            )


def to_params(params: Sequence[object] | None) -> list[Value]:
    if params is None:
        return []
    if isinstance(params, str | bytes | bytearray | Mapping):
        # A string is a sequence too: binding "abc" as three parameters is never meant.
        raise ProgrammingError(
            "parameters must be a sequence (list or tuple) for qmark placeholders",
            code=PARAMETER_ERROR,
        )
    if not isinstance(params, Sequence):
        raise ProgrammingError(
            f"parameters must be a sequence, not {type(params).__name__}", code=PARAMETER_ERROR
        )
    if len(params) > MAX_PARAMS:
        raise ProgrammingError(
            f"{len(params)} parameters; at most {MAX_PARAMS} per statement",
            code=PARAMETER_ERROR,
        )
    return [to_value(value) for value in params]


def sql_args(
    sql: str,
    params: Sequence[object] | None,
    *,
    consistency: str,
    trace: bool,
    max_staleness_ms: int | None,
) -> dict[str, Any]:
    """The ``args`` of an op ``sql`` request, without ``timeout_ms`` (set per attempt)."""
    if not isinstance(sql, str):
        raise ProgrammingError(
            f"a statement is a str, not {type(sql).__name__}", code=PARAMETER_ERROR
        )
    args: dict[str, Any] = {
        "sql": sql,
        "params": to_params(params),
        "consistency": check_consistency(consistency),
    }
    if trace:
        args["trace"] = True
    if consistency == "stale" and max_staleness_ms is not None:
        args["max_staleness_ms"] = int(max_staleness_ms)
    return args


def encode_request(request_id: int, op: str, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The request object and its encoded size, refused locally when it is over the limit
    every node enforces (a node would close the connection on it)."""
    request = {"id": request_id, "op": op, "args": args}
    size = len(p.pack(request))
    if size > p.MAX_REQUEST_BYTES:
        raise DataError(
            f"request is {size} bytes; the limit is {p.MAX_REQUEST_BYTES} bytes "
            "(split the statement or its parameters into smaller ones)",
            code=DATA_ERROR,
            details={"size": size, "limit": p.MAX_REQUEST_BYTES},
        )
    return request, size


def hello_request(token: str | None = None) -> dict[str, Any]:
    """The hello; ``token`` defaults to ``$SHARDB_TOKEN`` (sent only when set)."""
    return p.hello_request(token)


def check_hello(obj: Any, address: Address, expected_cluster: str | None) -> Hello:
    """The server's hello, or the error it sent instead (e.g. a version it does not speak)."""
    where = format_address(address)
    if isinstance(obj, dict) and obj.get("ok") is False:
        error = error_from_reply(obj.get("error"))
        error.details.setdefault("address", where)
        raise error
    if (
        not isinstance(obj, dict)
        or obj.get("hello") != p.PROTOCOL_NAME
        or obj.get("version") != p.CLIENT_PROTOCOL_VERSION
    ):
        raise InterfaceError(f"{where} is not a shardb node: hello was {obj!r}", code=BAD_REPLY)
    node_id = obj.get("node_id")
    cluster_id = obj.get("cluster_id", "")
    if not isinstance(node_id, int) or not isinstance(cluster_id, str):
        raise InterfaceError(f"{where} sent a malformed hello {obj!r}", code=BAD_REPLY)
    if expected_cluster is not None and cluster_id != expected_cluster:
        # Failing over into another cluster would run statements against the wrong data.
        raise InterfaceError(
            f"{where} belongs to cluster {cluster_id!r}, not {expected_cluster!r}",
            code=CLUSTER_MISMATCH,
        )
    return Hello(node_id=node_id, cluster_id=cluster_id)


# --------------------------------------------------------------------------- replies


def reply_result(reply: Any) -> Any:
    """The ``result`` of a reply, or raise its error as the matching exception."""
    if not isinstance(reply, dict):
        raise InterfaceError(f"malformed reply {reply!r}", code=BAD_REPLY)
    if reply.get("ok") is True:
        return reply.get("result")
    raise error_from_reply(reply.get("error"))


def decode_result(result: Any) -> Result:
    """Check an op ``sql`` result and turn it into a ``Result``."""
    if not isinstance(result, dict):
        raise InterfaceError(f"malformed sql result {result!r}", code=BAD_REPLY)
    kind = result.get("kind")
    columns = result.get("columns", [])
    rows = result.get("rows", [])
    rowcount = result.get("rowcount", -1)
    trace = result.get("trace")
    if not isinstance(kind, str) or not kind:
        raise InterfaceError(f"sql result without a kind: {result!r}", code=BAD_REPLY)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InterfaceError(f"sql result columns malformed: {columns!r}", code=BAD_REPLY)
    if not isinstance(rowcount, int) or isinstance(rowcount, bool):
        raise InterfaceError(f"sql result rowcount malformed: {rowcount!r}", code=BAD_REPLY)
    if trace is not None and not isinstance(trace, dict):
        raise InterfaceError(f"sql result trace malformed: {trace!r}", code=BAD_REPLY)
    if not isinstance(rows, list):
        raise InterfaceError(f"sql result rows malformed: {rows!r}", code=BAD_REPLY)
    width = len(columns)
    decoded: list[tuple[Value, ...]] = []
    for row in rows:
        if not isinstance(row, list) or len(row) != width:
            raise InterfaceError(
                f"row {row!r} does not have the {width} columns {columns!r}", code=BAD_REPLY
            )
        for value in row:
            if value is not None and not isinstance(value, int | float | str | bytes):
                raise InterfaceError(f"value {value!r} is not a SQL value", code=BAD_REPLY)
        decoded.append(tuple(row))
    return Result(
        kind=kind,
        columns=tuple(columns),
        rows=tuple(decoded),
        rowcount=rowcount,
        trace=trace,
    )


def decode_meta(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise InterfaceError(f"malformed meta result {result!r}", code=BAD_REPLY)
    for key in ("nodes", "ranges", "tables"):
        if not isinstance(result.get(key, []), list):
            raise InterfaceError(f"meta result {key!r} is not a list", code=BAD_REPLY)
    return result


# --------------------------------------------------------------------------- statements


def is_read(sql: str) -> bool:
    """Whether the statement only reads, so that re-sending it after a broken connection
    cannot apply anything twice. Conservative: anything not plainly a read (including
    ``WITH``, which may lead a write) counts as a write."""
    return first_keyword(sql) in _READ_KEYWORDS


def first_keyword(sql: str) -> str:
    """The first word of a statement, upper-cased, skipping space, comments and ``(``."""
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace() or ch == "(":
            i += 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            i = n if close < 0 else close + 2
        else:
            break
    start = i
    while i < n and (sql[i].isalnum() or sql[i] == "_"):
        i += 1
    return sql[start:i].upper()


# --------------------------------------------------------------------------- failures
# Built here so that both clients say the same thing about the same failure.


def lost_error(address: Address, closing: Error | None, *, idempotent: bool) -> Error | None:
    """What a request in flight on a broken connection raises, or None if it may simply be
    sent again elsewhere (a read)."""
    where = format_address(address)
    if closing is not None and closing.code == "bad_request":
        # The server refused something on this connection and closed it: re-sending a read
        # elsewhere would get the same answer; a write may still have been under way.
        if idempotent:
            return closing
        return OperationalError(
            f"{where} closed the connection ({closing.message}) while the statement was in "
            "flight; it may or may not have applied",
            code=UNKNOWN_OUTCOME,
            details={"address": where},
        )
    if idempotent:
        return None
    return OperationalError(
        f"connection to {where} lost while the statement was in flight; it may or may not "
        "have applied",
        code=UNKNOWN_OUTCOME,
        details={"address": where},
    )


def lost_everywhere_error(address: Address) -> Error:
    return OperationalError(
        f"connection to {format_address(address)} lost while reading, as on every gateway "
        "tried before it",
        code=UNREACHABLE,
    )


def unreachable_error(addresses: Sequence[Address], failures: Sequence[str]) -> Error:
    return OperationalError(
        "no gateway reachable: " + "; ".join(failures),
        code=UNREACHABLE,
        details={"addresses": [format_address(a) for a in addresses]},
    )


def deadline_error(timeout_s: float, last: Error | None) -> Error:
    message = f"no answer within {timeout_s:g} s"
    if last is not None:
        message += f" (last error: {last.code}: {last.message})"
    return OperationalError(message, code=TIMEOUT)


class StatementSettings:
    """What every statement of a connection is sent with; shared by the async client and the
    DB-API driver so both validate their settings the same way."""

    _consistency: str
    _timeout: float

    def _init_settings(self, consistency: str, timeout: float) -> None:
        self._consistency = check_consistency(consistency)
        self._timeout = check_timeout(timeout)

    @property
    def consistency(self) -> str:
        """``linearizable`` (default), ``lease`` or ``stale``; applies to later statements."""
        return self._consistency

    @consistency.setter
    def consistency(self, value: str) -> None:
        self._consistency = check_consistency(value)

    @property
    def timeout(self) -> float:
        """Seconds one statement may take, failover and retries included."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = check_timeout(value)
