"""The PEP 249 (DB-API 2.0) driver: blocking sockets, no event loop.

::

    import shardb

    with shardb.connect(["127.0.0.1:7001", "127.0.0.1:7002"]) as conn:
        cur = conn.cursor()
        cur.execute("INSERT INTO t (id, v) VALUES (?, ?)", (1, "a"))
        cur.execute("SELECT v FROM t WHERE id = ?", (1,))
        print(cur.fetchall())

Every statement autocommits: shardb has no multi-statement transactions, so ``commit()`` does
nothing (there is never anything pending) and ``rollback()`` raises ``NotSupportedError``
(there is never anything to undo). The connection context manager closes the connection.

The driver speaks the same protocol as the async client (``shardb.client.aio``) over one
blocking socket, one request at a time, so it works inside any program (threads, asyncio,
trio) without starting an event loop; ``threadsafety = 1``: threads may share the module,
not a connection. Failover follows the same rules: an address that cannot be reached or a
connection found closed before a request is written is skipped for the next one; a write in
flight on a connection that breaks raises ``OperationalError`` (code ``unknown_outcome``) and
is never re-sent; a read is re-sent on the next gateway.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import select
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Final

import msgpack

from consensus.runtime import protocol as p
from shardb.client import wire
from shardb.client.dbtypes import (
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
)
from shardb.client.errors import (
    BAD_REPLY,
    CLOSED,
    NO_RESULT_SET,
    PARAMETER_ERROR,
    TIMEOUT,
    UNREACHABLE,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
    error_from_reply,
)
from shardb.client.wire import Address, AddressLike, Result, Value

apilevel: Final = "2.0"
threadsafety: Final = 1
paramstyle: Final = "qmark"

__all__ = [
    "BINARY",
    "DATETIME",
    "NUMBER",
    "ROWID",
    "STRING",
    "Binary",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Result",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "Warning",
    "apilevel",
    "connect",
    "paramstyle",
    "threadsafety",
]

_FIRST_PAUSE_S: Final = 0.005
_MAX_PAUSE_S: Final = 0.2
_RECEIVE_BYTES: Final = 64 << 10
_BATCH_MAX_ROWS: Final = 1000
_BATCH_MAX_BYTES: Final = p.MAX_REQUEST_BYTES // 2
"""A batch of ``executemany`` rows stays well under the request limit (the SQL text grows
with the rows, and the exact size is checked again before sending)."""

_SIMPLE_INSERT = re.compile(
    r"""^(?P<head>\s*(?:INSERT(?:\s+OR\s+[A-Z]+)?|REPLACE)\s+INTO\s[^;?]+?\sVALUES\s*)
        (?P<row>\(\s*\?(?:\s*,\s*\?)*\s*\))\s*;?\s*$""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
"""``INSERT INTO t (...) VALUES (?, ..., ?)`` with nothing after the one row of ``?``:
the statements ``executemany`` may send as one multi-row INSERT per batch."""


class _NotSent(Exception):
    """Nothing of the request reached the socket."""


class _Lost(Exception):
    """The connection broke after (part of) the request may have left."""


class _TimedOut(Exception):
    pass


class _Link:
    """One blocking connection to one gateway."""

    def __init__(self, index: int, address: Address, hello: wire.Hello, sock: socket.socket):
        self.index = index
        self.address = address
        self.hello = hello
        self.sock = sock
        self.unpacker = p.new_unpacker(p.MAX_RESPONSE_BYTES)
        self.broken = False
        self.closing_error: Error | None = None

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError):
            self.sock.close()

    def check_idle(self) -> None:
        """Notice a connection the server closed while we were idle, before writing to it:
        the kernel would accept the write and only the reply would be missing, which would
        make a request that never reached anyone look lost."""
        while not self.broken:
            try:
                readable, _, _ = select.select([self.sock], [], [], 0)
            except (OSError, ValueError):
                self.close()
                return
            if not readable:
                return
            try:
                self.sock.setblocking(False)
                data = self.sock.recv(_RECEIVE_BYTES)
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            finally:
                if not self.broken:
                    self.sock.setblocking(True)
            if not data:
                self.close()
                return
            try:
                self._feed(data)
                for obj in self._objects():
                    self._on_unrequested(obj)
            except _Lost:
                return

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                sent += self.sock.send(view[sent:])
            except OSError as exc:
                self.close()
                raise (_NotSent if sent == 0 else _Lost) from exc

    def receive(self, request_id: int, wait_until: float) -> Any:
        while True:
            for obj in self._objects():
                if isinstance(obj, dict) and obj.get("id") == request_id:
                    return obj
                self._on_unrequested(obj)
            remaining_s = wait_until - time.monotonic()
            if remaining_s <= 0:
                raise _TimedOut
            self.sock.settimeout(remaining_s)
            try:
                data = self.sock.recv(_RECEIVE_BYTES)
            except TimeoutError as exc:
                raise _TimedOut from exc
            except OSError as exc:
                self.close()
                raise _Lost from exc
            if not data:
                self.close()
                raise _Lost
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.unpacker.feed(data)
        except msgpack.BufferFull as exc:
            # A peer breaking the protocol: the connection is unusable, like a broken one.
            self.close()
            raise _Lost from exc

    def _objects(self) -> Iterator[Any]:
        try:
            yield from self.unpacker
        except (ValueError, msgpack.UnpackException) as exc:
            self.close()
            raise _Lost from exc

    def _on_unrequested(self, obj: Any) -> None:
        # Replies to requests given up on (timeout) are dropped; an error with id None is
        # the server's reason for closing the connection.
        if isinstance(obj, dict) and obj.get("id") is None and obj.get("ok") is False:
            self.closing_error = error_from_reply(obj.get("error"))


class Connection(wire.StatementSettings):
    """A DB-API connection; create with ``connect``."""

    # PEP 249 optional extension: the exceptions as connection attributes.
    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(
        self,
        address: AddressLike | Sequence[AddressLike],
        *,
        consistency: str = "linearizable",
        timeout: float = wire.DEFAULT_TIMEOUT_S,
        trace: bool = False,
        max_staleness_ms: int | None = None,
        token: str | None = None,
    ) -> None:
        self.addresses: tuple[Address, ...] = wire.parse_addresses(address)
        self._init_settings(consistency, timeout)
        self._token = token
        """Client token sent in the hello (None: ``$SHARDB_TOKEN`` if set)."""
        self.trace = trace
        """Ask the gateway for a routing and timing trace with every statement."""
        self.max_staleness_ms = max_staleness_ms
        self._link: _Link | None = None
        self._preferred = 0
        self._cluster_id: str | None = None
        self._ids = itertools.count(1)
        self._closed = False
        self._connect(0, time.monotonic() + self._timeout)

    # ------------------------------------------------------------------ PEP 249

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def commit(self) -> None:
        """Nothing to do: every statement commits on its own (shardb has no transactions)."""
        self._check_open()

    def rollback(self) -> None:
        """Always raises ``NotSupportedError``: statements autocommit, so there is nothing a
        rollback could undo, and pretending otherwise would lose data silently."""
        self._check_open()
        raise NotSupportedError(
            "shardb has no transactions: every statement autocommits, nothing can be rolled back",
            code="unsupported",
        )

    def close(self) -> None:
        """Close the connection (again is a no-op); its cursors become unusable."""
        self._closed = True
        if self._link is not None:
            self._link.close()
            self._link = None

    def __enter__(self) -> Connection:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ extensions

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def gateway(self) -> Address | None:
        """The address of the gateway currently connected to."""
        return None if self._link is None else self._link.address

    @property
    def node_id(self) -> int | None:
        return None if self._link is None else self._link.hello.node_id

    def execute(self, sql: str, params: Sequence[object] | None = ()) -> Cursor:
        """Shortcut: a new cursor that has executed ``sql``."""
        cursor = self.cursor()
        cursor.execute(sql, params)
        return cursor

    def meta(self) -> dict[str, Any]:
        """The cluster view: ``nodes``, ``ranges`` and ``tables``."""
        self._check_open()
        return wire.decode_meta(self._request("meta", {}, idempotent=True))

    # ------------------------------------------------------------------ core

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed", code=CLOSED)

    def _run(self, sql: str, params: Sequence[object] | None) -> Result:
        self._check_open()
        args = wire.sql_args(
            sql,
            params,
            consistency=self._consistency,
            trace=self.trace,
            max_staleness_ms=self.max_staleness_ms,
        )
        return wire.decode_result(self._request("sql", args, idempotent=wire.is_read(sql)))

    def _request(self, op: str, args: dict[str, Any], *, idempotent: bool) -> Any:
        deadline = time.monotonic() + self._timeout
        target = self._preferred
        pause_s = _FIRST_PAUSE_S
        lost_retries = 0
        last: Error | None = None
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise wire.deadline_error(self._timeout, last) from last
            link = self._connect(target, deadline)
            request_id = next(self._ids)
            request, _ = wire.encode_request(
                request_id, op, {**args, "timeout_ms": max(1, math.ceil(remaining_s * 1000))}
            )
            try:
                link.send(p.pack(request), deadline)
                reply = link.receive(request_id, deadline + wire.REPLY_GRACE_S)
            except _NotSent:
                # Nothing left: safe anywhere. The pause keeps a gateway that accepts and
                # drops connections from turning this loop into a reconnect storm.
                self._drop(link)
                target = self._next_index(link.index)
                time.sleep(min(pause_s, max(0.0, deadline - time.monotonic())))
                pause_s = min(pause_s * 2, _MAX_PAUSE_S)
                continue
            except _Lost as exc:
                self._drop(link)
                error = wire.lost_error(link.address, link.closing_error, idempotent=idempotent)
                if error is not None:
                    raise error from exc
                lost_retries += 1
                if lost_retries > len(self.addresses):
                    raise wire.lost_everywhere_error(link.address) from exc
                target = self._next_index(link.index)
                continue
            except _TimedOut as exc:
                # A gateway that let the deadline pass may be stuck: the next request dials
                # afresh (a late reply on this socket is never read).
                link.close()
                self._drop(link)
                raise OperationalError(
                    f"{wire.format_address(link.address)} did not answer within "
                    f"{self._timeout:g} s; a write may still apply",
                    code=TIMEOUT,
                ) from exc
            try:
                result = wire.reply_result(reply)
            except Error as exc:
                if not exc.retryable:
                    raise
                last = exc
                target = self._next_index(link.index)
                time.sleep(min(pause_s, max(0.0, deadline - time.monotonic())))
                pause_s = min(pause_s * 2, _MAX_PAUSE_S)
                continue
            self._preferred = link.index
            return result

    def _next_index(self, index: int) -> int:
        return (index + 1) % len(self.addresses)

    def _drop(self, link: _Link) -> None:
        link.close()
        if self._link is link:
            self._link = None

    def _connect(self, start: int, deadline: float) -> _Link:
        """The open link if it is to ``start`` and healthy, else the first address from
        ``start`` on that answers the hello (one connection at a time: one request at a
        time needs no more)."""
        self._check_open()
        link = self._link
        if link is not None:
            link.check_idle()
            if not link.broken and link.index == start:
                return link
            self._drop(link)
        failures: list[str] = []
        protocol_errors: list[Error] = []
        count = len(self.addresses)
        for offset in range(count):
            index = (start + offset) % count
            try:
                link = self._dial(index, deadline)
            except InterfaceError as exc:
                protocol_errors.append(exc)
                failures.append(f"{wire.format_address(self.addresses[index])}: {exc.message}")
                continue
            except OperationalError as exc:
                failures.append(exc.message)
                continue
            self._link = link
            self._preferred = index
            return link
        if len(protocol_errors) == count:
            raise protocol_errors[-1]
        raise wire.unreachable_error(self.addresses, failures)

    def _dial(self, index: int, deadline: float) -> _Link:
        address = self.addresses[index]
        where = wire.format_address(address)
        budget_s = max(0.01, min(wire.DIAL_TIMEOUT_S, deadline - time.monotonic()))
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection(address, timeout=budget_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(p.pack(wire.hello_request(self._token)))
            unpacker = p.new_unpacker(p.MAX_RESPONSE_BYTES)
            while True:
                data = sock.recv(4096)
                if not data:
                    raise OperationalError(
                        f"{where} closed the connection during the hello", code=UNREACHABLE
                    )
                unpacker.feed(data)
                for obj in unpacker:
                    hello = wire.check_hello(obj, address, self._cluster_id)
                    self._cluster_id = hello.cluster_id
                    sock.settimeout(None)
                    return _Link(index, address, hello, sock)
        except Error:
            if sock is not None:
                sock.close()
            raise
        except OSError as exc:
            if sock is not None:
                sock.close()
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise OperationalError(f"{where}: {reason}", code=UNREACHABLE) from exc
        except (ValueError, msgpack.UnpackException) as exc:
            if sock is not None:
                sock.close()
            raise InterfaceError(
                f"{where} sent a malformed hello: {exc!r}", code=BAD_REPLY
            ) from exc


class Cursor:
    """A DB-API cursor. Results arrive whole (the gateway answers with every row), so
    ``fetch*`` never talk to the server."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        """Rows ``fetchmany()`` returns when no size is given (PEP 249 default 1)."""
        self.lastrowid: None = None
        """Always None: a sharded table has no single rowid sequence."""
        self._result: Result | None = None
        self._position = 0
        self._rowcount = -1
        self._closed = False

    # ------------------------------------------------------------------ results

    @property
    def description(self) -> tuple[tuple[str, None, None, None, None, None, None], ...] | None:
        """One 7-tuple per result column (name, then None: the protocol has no column
        types); None when the last statement returned no rows."""
        result = self._result
        if result is None or not _has_rows(result):
            return None
        return tuple((name, None, None, None, None, None, None) for name in result.columns)

    @property
    def rowcount(self) -> int:
        """Rows changed by the last write (summed over ``executemany``); -1 otherwise."""
        return self._rowcount

    @property
    def result(self) -> Result | None:
        """The last statement's whole ``Result`` (kind, columns, rows, trace)."""
        return self._result

    @property
    def trace(self) -> dict[str, Any] | None:
        return None if self._result is None else self._result.trace

    # ------------------------------------------------------------------ execute

    def execute(self, operation: str, parameters: Sequence[object] | None = ()) -> Cursor:
        self._check_open()
        self._reset()
        result = self.connection._run(operation, parameters)
        self._result = result
        self._rowcount = result.rowcount
        return self

    def executemany(
        self,
        operation: str,
        seq_of_parameters: Iterable[Sequence[object]],
    ) -> Cursor:
        """Run ``operation`` once per parameter sequence. A plain ``INSERT ... VALUES (?, ...)``
        goes as one multi-row INSERT per batch of rows; anything else one statement at a time.
        Not atomic (each request autocommits): on an error the earlier batches stay applied
        and ``rowcount`` counts them."""
        self._check_open()
        self._reset()
        rows = [wire.to_params(params) for params in seq_of_parameters]
        match = _SIMPLE_INSERT.match(operation) if rows else None
        width = match.group("row").count("?") if match else 0
        self._rowcount = 0
        if match is not None and all(len(row) == width for row in rows):
            head = match.group("head")
            row_text = match.group("row")
            for batch in _batches(rows, width, len(row_text) + 2):
                sql = head + ", ".join([row_text] * len(batch))
                result = self.connection._run(sql, [v for row in batch for v in row])
                self._rowcount += max(0, result.rowcount)
            self._result = None
            return self
        for params in rows:
            result = self.connection._run(operation, params)
            self._rowcount += max(0, result.rowcount)
            self._result = result if _has_rows(result) else None
        return self

    # ------------------------------------------------------------------ fetch

    def fetchone(self) -> tuple[Value, ...] | None:
        rows = self._rows()
        if self._position >= len(rows):
            return None
        self._position += 1
        return rows[self._position - 1]

    def fetchmany(self, size: int | None = None) -> list[tuple[Value, ...]]:
        """Up to ``size`` rows (default ``arraysize``); fewer or none at the end."""
        rows = self._rows()
        count = self.arraysize if size is None else size
        if not isinstance(count, int) or count < 0:
            raise ProgrammingError(
                f"fetchmany size must be a non-negative int, not {count!r}", code=PARAMETER_ERROR
            )
        chunk = rows[self._position : self._position + count]
        self._position += len(chunk)
        return list(chunk)

    def fetchall(self) -> list[tuple[Value, ...]]:
        rows = self._rows()
        chunk = rows[self._position :]
        self._position = len(rows)
        return list(chunk)

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> tuple[Value, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    # ------------------------------------------------------------------ rest

    def close(self) -> None:
        """Close the cursor (again is a no-op); later use raises ``InterfaceError``."""
        self._closed = True
        self._result = None

    def setinputsizes(self, sizes: object) -> None:
        """Accepted and ignored (PEP 249 allows it)."""

    def setoutputsize(self, size: int, column: int | None = None) -> None:
        """Accepted and ignored (PEP 249 allows it)."""

    def __enter__(self) -> Cursor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed", code=CLOSED)
        if self.connection.closed:
            raise InterfaceError("the cursor's connection is closed", code=CLOSED)

    def _reset(self) -> None:
        self._result = None
        self._position = 0
        self._rowcount = -1

    def _rows(self) -> tuple[tuple[Value, ...], ...]:
        self._check_open()
        result = self._result
        if result is None or not _has_rows(result):
            raise ProgrammingError(
                "no result set: the last statement returned no rows (or none was executed)",
                code=NO_RESULT_SET,
            )
        return result.rows


def _has_rows(result: Result) -> bool:
    return result.kind in wire.ROW_KINDS or bool(result.columns)


def _batches(
    rows: list[list[Value]], width: int, row_text_bytes: int
) -> Iterator[list[list[Value]]]:
    """Consecutive rows, as many per batch as the gateway's parameter limit, a row cap and a
    byte budget allow (a single row over the budget goes alone and the size check says so)."""
    max_rows = min(_BATCH_MAX_ROWS, max(1, wire.MAX_PARAMS // max(1, width)))
    batch: list[list[Value]] = []
    batch_bytes = 0
    for row in rows:
        row_bytes = len(p.pack(row)) + row_text_bytes
        if batch and (len(batch) >= max_rows or batch_bytes + row_bytes > _BATCH_MAX_BYTES):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(row)
        batch_bytes += row_bytes
    if batch:
        yield batch


def connect(
    address: AddressLike | Sequence[AddressLike],
    *,
    consistency: str = "linearizable",
    timeout: float = wire.DEFAULT_TIMEOUT_S,
    trace: bool = False,
    max_staleness_ms: int | None = None,
    token: str | None = None,
) -> Connection:
    """Connect to the first reachable gateway of ``address`` (``"host:port"``, a
    ``(host, port)`` pair or a list of them, tried in order). Raises ``OperationalError``
    (code ``unreachable``) when none answers."""
    return Connection(
        address,
        consistency=consistency,
        timeout=timeout,
        trace=trace,
        max_staleness_ms=max_staleness_ms,
        token=token,
    )
