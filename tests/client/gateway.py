"""``ScriptedGateway``: a peer double that speaks the node client protocol over real TCP.

It answers the hello like a node (``consensus.runtime.protocol``), records every request,
and answers each one with what the test's script returns: a result, an error, a raw object,
no answer at all (``HANG``), or a dropped connection (``CLOSE``). The clients under test
cannot tell it from a node, which is what makes it a fair double for protocol edge cases
(broken connections mid-request, refused addresses, malformed replies) that a real cluster
cannot produce on demand. End-to-end behaviour against real nodes is tested elsewhere.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from consensus.runtime import protocol as p


class Action(enum.Enum):
    HANG = "hang"
    """Never answer (the request's caller waits until its deadline)."""
    CLOSE = "close"
    """Close the connection without answering (the request was received)."""


HANG = Action.HANG
CLOSE = Action.CLOSE


@dataclass(frozen=True, slots=True)
class Raw:
    """Send exactly this object as the reply (for malformed or id-less replies)."""

    obj: Any
    close_after: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    op: str
    args: dict[str, Any]
    connection: int
    """Which accepted connection (1, 2, ...) it arrived on."""

    @property
    def sql(self) -> str:
        return str(self.args.get("sql", ""))

    @property
    def params(self) -> list[Any]:
        return list(self.args.get("params", []))


Reply = dict[str, Any] | Action | Raw
Script = Callable[[Request], Awaitable[Reply]]


def rows(columns: list[str], data: list[list[Any]], *, kind: str = "select") -> dict[str, Any]:
    return {"result": {"kind": kind, "columns": columns, "rows": data, "rowcount": -1}}


def written(count: int) -> dict[str, Any]:
    return {"result": {"kind": "write", "columns": [], "rows": [], "rowcount": count}}


def error(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


async def ok_script(request: Request) -> Reply:
    """Answers any statement as a write of one row and ``meta`` with an empty view."""
    if request.op == "meta":
        return {"result": {"nodes": [], "ranges": [], "tables": []}}
    return written(1)


class ScriptedGateway:
    """A TCP server on 127.0.0.1 that behaves like a node's client port; use through
    ``scripted_gateways``."""

    def __init__(
        self,
        script: Script = ok_script,
        *,
        node_id: int = 1,
        cluster_id: str = "test-cluster",
        hello: Any = None,
        close_after_reply: bool = False,
    ) -> None:
        self.script = script
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.hello = hello
        """Sent instead of the normal hello when set (then the connection is closed)."""
        self.close_after_reply = close_after_reply
        """Close each connection after answering its first request (idle close)."""
        self.requests: list[Request] = []
        self.connections = 0
        self.closed_connections = 0
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self._scope = trio.CancelScope()
        self._connection_scopes: list[trio.CancelScope] = []

    @property
    def ops(self) -> list[str]:
        return [r.op for r in self.requests]

    @property
    def statements(self) -> list[str]:
        return [r.sql for r in self.requests if r.op == "sql"]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.address = listeners[0].socket.getsockname()[:2]
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    def stop(self) -> None:
        """Stop listening and drop every connection (a gateway that went away)."""
        self._scope.cancel()

    def drop_connections(self) -> None:
        """Close every open connection but keep listening (a restarted gateway)."""
        for scope in self._connection_scopes:
            scope.cancel()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        scope = trio.CancelScope()
        self._connection_scopes.append(scope)
        send_lock = trio.Lock()

        async def send(obj: Any) -> None:
            async with send_lock:
                await stream.send_all(p.pack(obj))

        async def answer(request: Request) -> None:
            reply = await self.script(request)
            match reply:
                case Action.HANG:
                    await trio.sleep_forever()
                case Action.CLOSE:
                    scope.cancel()
                case Raw(obj=obj, close_after=close_after):
                    await send(obj)
                    if close_after:
                        scope.cancel()
                case {"error": body}:
                    await send({"id": request.id, "ok": False, "error": body})
                case {"result": body}:
                    await send({"id": request.id, "ok": True, "result": body})
                case _:
                    raise AssertionError(f"script returned {reply!r}")
            if self.close_after_reply:
                scope.cancel()

        try:
            with scope:
                async with stream, trio.open_nursery() as nursery:
                    unpacker = p.new_unpacker(p.MAX_REQUEST_BYTES)
                    objects = _objects(stream, unpacker)
                    hello = await anext(objects)
                    assert hello == {"hello": p.PROTOCOL_NAME, "version": 1}, hello
                    if self.hello is not None:
                        await send(self.hello)
                        return
                    await send(
                        {
                            "hello": p.PROTOCOL_NAME,
                            "version": p.CLIENT_PROTOCOL_VERSION,
                            "node_id": self.node_id,
                            "cluster_id": self.cluster_id,
                        }
                    )
                    async for obj in objects:
                        request = Request(
                            id=obj["id"], op=obj["op"], args=obj["args"], connection=number
                        )
                        self.requests.append(request)
                        nursery.start_soon(answer, request)
        except (trio.BrokenResourceError, trio.ClosedResourceError, StopAsyncIteration):
            pass
        finally:
            self.closed_connections += 1


async def _objects(stream: trio.SocketStream, unpacker: msgpack.Unpacker) -> AsyncIterator[Any]:
    while True:
        for obj in unpacker:
            yield obj
        data = await stream.receive_some(1 << 16)
        if not data:
            return
        unpacker.feed(data)


@asynccontextmanager
async def scripted_gateways(*gateways: ScriptedGateway) -> AsyncIterator[list[ScriptedGateway]]:
    async with trio.open_nursery() as nursery:
        for gateway in gateways:
            await nursery.start(gateway.serve)
        yield list(gateways)
        nursery.cancel_scope.cancel()


@contextmanager
def refusing_address() -> Iterator[tuple[str, int]]:
    """An address that refuses connections: a bound port nobody listens on (held bound for
    the test so no other process can take it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[:2]
    finally:
        sock.close()
