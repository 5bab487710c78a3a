"""The async (trio) SQL client.

::

    async with open_connection(["127.0.0.1:7001", "127.0.0.1:7002"]) as conn:
        await conn.execute("INSERT INTO t (id, v) VALUES (?, ?)", (1, "a"))
        result = await conn.execute("SELECT v FROM t WHERE id = ?", (1,))

Any node is a gateway. The connection keeps at most one TCP connection per gateway address,
opened lazily with the hello, and multiplexes every concurrent ``execute`` over it by request
id (requests of concurrent callers leave in one write: ``CoalescingWriter``).

Failover never applies a statement twice:

- an address that refuses, times out or fails the hello carried nothing: the next one is
  tried, and the first that works becomes the preferred gateway;
- a request whose bytes had not been handed to the socket when its connection broke was not
  sent (a byte count, kept per connection, tells): it goes to the next address;
- a request in flight on a connection that breaks is re-sent elsewhere only if it is a read
  (``SELECT``, ``EXPLAIN``, ``SHOW``, op ``meta``); a write raises ``OperationalError`` with
  code ``unknown_outcome``: it may or may not have applied, and only the caller knows
  whether repeating it is safe;
- the error codes after which nothing applied (``not_leader``, ``dropped``, ``overloaded``,
  ``unavailable``) are retried on the next address after a short, growing pause, until the
  request's deadline.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import trio

from consensus.runtime import protocol as p
from shardb.client import wire
from shardb.client.errors import (
    BAD_REPLY,
    CLOSED,
    TIMEOUT,
    UNREACHABLE,
    Error,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    error_from_reply,
)
from shardb.client.wire import Address, AddressLike, Result

_FIRST_PAUSE_S: Final = 0.005
_MAX_PAUSE_S: Final = 0.2


class _CountingStream(trio.abc.SendStream):
    """Counts the bytes handed to the socket, so that after a break the client can tell a
    request that never left (safe to send elsewhere) from one that may have."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.attempted_bytes = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.attempted_bytes += len(data)
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


@dataclass(slots=True)
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    reply: Any = None
    answered: bool = False


class _Link:
    """One connection to one gateway address."""

    def __init__(
        self, index: int, address: Address, hello: wire.Hello, stream: trio.SocketStream
    ) -> None:
        self.index = index
        self.address = address
        self.hello = hello
        self.stream = stream
        self.counting = _CountingStream(stream)
        self.writer = p.CoalescingWriter(self.counting)
        self.queued_bytes = 0
        """Bytes of every request handed to the writer so far, in the order they leave."""
        self.waiting: dict[int, _Pending] = {}
        self.broken = False
        self.closing_error: Error | None = None
        """The error the server sent with id ``None`` before closing (e.g. an unknown op)."""

    async def write_loop(self) -> None:
        try:
            await self.writer.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.broken = True
            # The read loop then sees the closed stream and fails what is waiting.
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def read_loop(self) -> None:
        unpacker = p.new_unpacker(p.MAX_RESPONSE_BYTES)
        try:
            while True:
                data = await self.stream.receive_some(64 << 10)
                if not data:
                    break
                unpacker.feed(data)
                for reply in unpacker:
                    self._on_reply(reply)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
            ValueError,
            msgpack.UnpackException,
        ):
            pass
        finally:
            self.broken = True
            self.writer.close()
            for pending in self.waiting.values():
                pending.done.set()  # unanswered: the caller sees the broken connection
            self.waiting.clear()
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    def _on_reply(self, reply: Any) -> None:
        request_id = reply.get("id") if isinstance(reply, dict) else None
        if request_id is None and isinstance(reply, dict) and reply.get("ok") is False:
            self.closing_error = error_from_reply(reply.get("error"))
            return
        pending = self.waiting.pop(request_id, None) if isinstance(request_id, int) else None
        if pending is not None:  # else a reply to a request whose caller gave up
            pending.reply = reply
            pending.answered = True
            pending.done.set()

    async def aclose(self) -> None:
        self.broken = True
        self.writer.close()
        await self.stream.aclose()


class _NotSent(Exception):
    """The connection broke before the request's bytes were handed to the socket."""


class _Lost(Exception):
    """The connection broke while the request may have been on its way or being served."""


class AsyncConnection(wire.StatementSettings):
    """A connection to a shardb cluster through its gateways; use ``open_connection``."""

    def __init__(
        self,
        addresses: Sequence[Address],
        nursery: trio.Nursery,
        *,
        consistency: str = "linearizable",
        timeout: float = wire.DEFAULT_TIMEOUT_S,
        trace: bool = False,
        max_staleness_ms: int | None = None,
        token: str | None = None,
    ) -> None:
        if not addresses:
            raise InterfaceError("need at least one gateway address")
        self.addresses: tuple[Address, ...] = tuple(addresses)
        self._nursery = nursery
        self._init_settings(consistency, timeout)
        self._token = token
        """Client token sent in the hello (None: ``$SHARDB_TOKEN`` if set)."""
        self.trace = trace
        """Ask the gateway for a routing and timing trace with every statement."""
        self.max_staleness_ms = max_staleness_ms
        """Bound on staleness for ``consistency="stale"`` (None: the gateway's default)."""
        self._links: dict[int, _Link] = {}
        self._dialing: dict[int, trio.Event] = {}
        self._preferred = 0
        self._cluster_id: str | None = None
        self._ids = itertools.count(1)
        self._closed = False

    # ------------------------------------------------------------------ settings

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def gateway(self) -> Address | None:
        """The address of the gateway statements go to first (None before any connected)."""
        link = self._links.get(self._preferred)
        return None if link is None or link.broken else link.address

    @property
    def node_id(self) -> int | None:
        """The node id of the preferred gateway, from its hello."""
        link = self._links.get(self._preferred)
        return None if link is None or link.broken else link.hello.node_id

    # ------------------------------------------------------------------ statements

    async def execute(self, sql: str, params: Sequence[object] | None = ()) -> Result:
        """Run one statement (it autocommits) and return its result."""
        self._check_open()
        args = wire.sql_args(
            sql,
            params,
            consistency=self._consistency,
            trace=self.trace,
            max_staleness_ms=self.max_staleness_ms,
        )
        result = await self._request("sql", args, idempotent=wire.is_read(sql))
        return wire.decode_result(result)

    async def executescript(self, text: str) -> list[Result]:
        """Run each statement of ``text`` in order, stopping at (and raising) the first error.
        Statements before the failing one stay applied: each autocommits."""
        self._check_open()
        from shardb.sql import SqlError, split_statements

        try:
            statements = split_statements(text)
        except SqlError as exc:
            raise ProgrammingError(exc.message, code="syntax_error") from exc
        return [await self.execute(statement) for statement in statements]

    async def meta(self) -> dict[str, Any]:
        """The cluster view: ``nodes``, ``ranges`` and ``tables``."""
        self._check_open()
        return wire.decode_meta(await self._request("meta", {}, idempotent=True))

    async def admin(self, op: str, args: dict[str, Any]) -> Any:
        """An administrative op of the node protocol (``join``, ``decommission``, ...; see
        docs/client-protocol.md), sent once: these change the cluster."""
        self._check_open()
        return await self._request(op, args, idempotent=False)

    async def aclose(self) -> None:
        self._closed = True
        for index in sorted(self._links):
            await self._links[index].aclose()
        self._links.clear()

    # ------------------------------------------------------------------ core

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed", code=CLOSED)

    async def _request(self, op: str, args: dict[str, Any], *, idempotent: bool) -> Any:
        deadline = trio.current_time() + self._timeout
        target = self._preferred
        pause_s = _FIRST_PAUSE_S
        lost_retries = 0
        last: Error | None = None
        while True:
            self._check_open()  # closed meanwhile: never dial again
            remaining_s = deadline - trio.current_time()
            if remaining_s <= 0:
                raise wire.deadline_error(self._timeout, last) from last
            link = await self._connect(target, deadline)
            target = link.index
            request_id = next(self._ids)
            request, size = wire.encode_request(
                request_id, op, {**args, "timeout_ms": max(1, math.ceil(remaining_s * 1000))}
            )
            try:
                reply = await self._call(link, request_id, request, size, deadline)
            except _NotSent:
                # Nothing left: safe anywhere. The pause keeps a gateway that accepts and
                # drops connections from turning this loop into a reconnect storm.
                self._drop(link)
                target = self._next_index(link.index)
                await trio.sleep(min(pause_s, max(0.0, deadline - trio.current_time())))
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
            try:
                result = wire.reply_result(reply)
            except Error as exc:
                if not exc.retryable:
                    raise
                # Nothing applied (protocol, "errors"): another gateway may do better.
                last = exc
                target = self._next_index(link.index)
                await trio.sleep(min(pause_s, max(0.0, deadline - trio.current_time())))
                pause_s = min(pause_s * 2, _MAX_PAUSE_S)
                continue
            self._preferred = link.index
            return result

    async def _call(
        self, link: _Link, request_id: int, request: dict[str, Any], size: int, deadline: float
    ) -> Any:
        pending = _Pending()
        link.waiting[request_id] = pending
        start = link.queued_bytes
        try:
            # No checkpoint between counting and queueing: the writer appends synchronously,
            # so queue order is count order.
            link.queued_bytes += size
            await link.writer.send(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            link.queued_bytes -= size  # refused before it was queued
            link.waiting.pop(request_id, None)
            raise _NotSent from exc
        try:
            with trio.move_on_at(deadline + wire.REPLY_GRACE_S):
                await pending.done.wait()
        finally:
            link.waiting.pop(request_id, None)
        if pending.answered:
            return pending.reply
        if link.broken:
            if start >= link.counting.attempted_bytes:
                raise _NotSent
            raise _Lost
        raise OperationalError(
            f"{wire.format_address(link.address)} did not answer within {self._timeout:g} s; "
            "a write may still apply",
            code=TIMEOUT,
        )

    def _next_index(self, index: int) -> int:
        return (index + 1) % len(self.addresses)

    def _drop(self, link: _Link) -> None:
        if self._links.get(link.index) is link:
            del self._links[link.index]

    async def _connect(self, start: int, deadline: float) -> _Link:
        """A working link, trying the addresses in order from ``start`` (each once)."""
        failures: list[str] = []
        protocol_errors: list[Error] = []
        count = len(self.addresses)
        for offset in range(count):
            index = (start + offset) % count
            try:
                return await self._link(index, deadline)
            except InterfaceError as exc:
                # The peer answered but refused us (version, cluster): not a reachability
                # problem, so when every address says so the caller sees it as it is.
                protocol_errors.append(exc)
                failures.append(f"{wire.format_address(self.addresses[index])}: {exc.message}")
            except OperationalError as exc:
                failures.append(exc.message)
        if len(protocol_errors) == count:
            raise protocol_errors[-1]
        raise wire.unreachable_error(self.addresses, failures)

    async def _link(self, index: int, deadline: float) -> _Link:
        while True:
            link = self._links.get(index)
            if link is not None and not link.broken:
                return link
            dialing = self._dialing.get(index)
            if dialing is None:
                break
            await dialing.wait()  # one dial per address however many callers wait on it
        done = trio.Event()
        self._dialing[index] = done
        try:
            link = await self._dial(index, deadline)
            self._links[index] = link
            self._nursery.start_soon(link.read_loop)
            self._nursery.start_soon(link.write_loop)
            return link
        finally:
            del self._dialing[index]
            done.set()

    async def _dial(self, index: int, deadline: float) -> _Link:
        address = self.addresses[index]
        where = wire.format_address(address)
        budget_s = max(0.01, min(wire.DIAL_TIMEOUT_S, deadline - trio.current_time()))
        stream: trio.SocketStream | None = None
        try:
            with trio.fail_after(budget_s):
                stream = await trio.open_tcp_stream(*address)
                await stream.send_all(p.pack(wire.hello_request(self._token)))
                unpacker = p.new_unpacker(p.MAX_RESPONSE_BYTES)
                hello: wire.Hello | None = None
                while hello is None:
                    data = await stream.receive_some(4096)
                    if not data:
                        raise OperationalError(
                            f"{where} closed the connection during the hello", code=UNREACHABLE
                        )
                    unpacker.feed(data)
                    for obj in unpacker:
                        hello = wire.check_hello(obj, address, self._cluster_id)
                        break
        except Error:
            if stream is not None:
                await stream.aclose()
            raise
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            if stream is not None:
                await stream.aclose()
            reason = "timed out" if isinstance(exc, trio.TooSlowError) else str(exc)
            raise OperationalError(f"{where}: {reason}", code=UNREACHABLE) from exc
        except (ValueError, msgpack.UnpackException) as exc:
            if stream is not None:
                await stream.aclose()
            raise InterfaceError(
                f"{where} sent a malformed hello: {exc!r}", code=BAD_REPLY
            ) from exc
        self._cluster_id = hello.cluster_id
        return _Link(index, address, hello, stream)

    async def _open(self) -> None:
        link = await self._connect(0, trio.current_time() + self._timeout)
        self._preferred = link.index


@asynccontextmanager
async def open_connection(
    address: AddressLike | Sequence[AddressLike],
    *,
    consistency: str = "linearizable",
    timeout: float = wire.DEFAULT_TIMEOUT_S,
    trace: bool = False,
    max_staleness_ms: int | None = None,
    token: str | None = None,
) -> AsyncIterator[AsyncConnection]:
    """Connect to the first reachable gateway of ``address`` (``"host:port"``, a
    ``(host, port)`` pair or a list of them, tried in order) and yield the connection.
    Raises ``OperationalError`` (code ``unreachable``) when none answers the hello."""
    addresses = wire.parse_addresses(address)
    try:
        async with trio.open_nursery() as nursery:
            conn = AsyncConnection(
                addresses,
                nursery,
                consistency=consistency,
                timeout=timeout,
                trace=trace,
                max_staleness_ms=max_staleness_ms,
                token=token,
            )
            try:
                await conn._open()
                yield conn
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await conn.aclose()
    except BaseExceptionGroup as group:
        # The connection's own tasks never raise, so a group holds the one exception of the
        # caller's block (or of connecting): raise it as it is, as a plain client would.
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise
