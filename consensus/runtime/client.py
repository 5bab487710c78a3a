"""A small async client for the node client protocol (tests, benchmarks, tools).

``open_client({node_id: (host, port), ...})`` yields a ``Client`` that keeps one connection
per node (opened lazily, with the hello), multiplexes concurrent requests over it by request
id, remembers the leader of each group and follows ``not_leader`` hints across nodes. When a
node gives no hint, or cannot be reached, the client tries the next node after a short,
growing pause, until the request's deadline.

Retries are only automatic where they cannot apply a command twice: ``not_leader``,
``dropped``, ``overloaded`` and ``unknown_group`` mean nothing was proposed, and a
connection that could not be opened carried nothing. A request in flight on a connection
that breaks, or one that times out, raises ``ClientError`` with code ``unknown_outcome`` /
``timeout``: the caller decides whether its command is safe to repeat.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import msgpack
import trio

from consensus.runtime import protocol as p

_RETRYABLE: Final = frozenset({p.NOT_LEADER, p.DROPPED, "overloaded", p.UNKNOWN_GROUP})
_DIAL_TIMEOUT_S: Final = 2.0


class ClientError(Exception):
    """A request failed; ``code`` is the protocol error code."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        leader: int = 0,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.leader = leader
        self.details: dict[str, Any] = dict(details or {})
        """Every other field of the error reply (application errors carry theirs here)."""
        super().__init__(f"{code}: {message}")


class _Connection:
    def __init__(self, node_id: int, stream: trio.SocketStream) -> None:
        self.node_id = node_id
        self.stream = stream
        # Requests of concurrent callers queued together leave in one write.
        self.writer = p.CoalescingWriter(stream)
        self.waiting: dict[int, tuple[trio.Event, list[Any]]] = {}
        self.broken = False

    async def write_loop(self) -> None:
        try:
            await self.writer.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # The read loop sees the closed stream and fails every waiting request with
            # "connection lost" (their outcome is unknown: some may have left).
            self.broken = True
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
                    request_id = reply.get("id") if isinstance(reply, dict) else None
                    slot = (
                        self.waiting.pop(request_id, None) if isinstance(request_id, int) else None
                    )
                    if slot is not None:
                        slot[1].append(reply)
                        slot[0].set()
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
            for event, _ in self.waiting.values():
                event.set()  # with no reply: the caller sees the broken connection
            self.waiting.clear()
            await self.stream.aclose()


class Client:
    """Use through ``open_client``."""

    def __init__(
        self,
        addresses: Mapping[int, tuple[str, int]],
        nursery: trio.Nursery,
        *,
        timeout_s: float,
        token: str | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("need at least one node address")
        self._addresses = dict(addresses)
        self._nursery = nursery
        self._timeout_s = timeout_s
        self._token = token
        self._connections: dict[int, _Connection] = {}
        self._dialing: dict[int, trio.Event] = {}
        self._leaders: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._rotation = itertools.count()

    def set_addresses(self, addresses: Mapping[int, tuple[str, int]]) -> None:
        """Replace the node address book (nodes joined or left); open connections to nodes
        that are no longer listed are dropped when next used."""
        if not addresses:
            raise ValueError("need at least one node address")
        self._addresses = dict(addresses)
        for node in [n for n in self._connections if n not in self._addresses]:
            del self._connections[node]
        self._leaders = {g: n for g, n in self._leaders.items() if n in self._addresses}

    def forget_leader(self, group: int) -> None:
        """Drop the remembered leader of ``group`` (it stopped answering)."""
        self._leaders.pop(group, None)

    def leader_hint(self, group: int) -> int | None:
        """The node that last answered for ``group`` as its leader, if any."""
        return self._leaders.get(group)

    def note_leader(self, group: int, node: int) -> None:
        """Send ``group``'s next requests to ``node`` first (a fresher belief than the one
        cached here, e.g. a local replica's), if ``node`` is in the address book."""
        if node in self._addresses:
            self._leaders[group] = node

    # ----------------------------------------------------------------------- KV

    async def put(self, group: int, key: bytes | str, value: bytes | str) -> None:
        await self.request("put", group, {"key": _b(key), "value": _b(value)})

    async def get(self, group: int, key: bytes | str, *, consistency: str = "safe") -> bytes | None:
        result = await self.request("get", group, {"key": _b(key), "consistency": consistency})
        value = result.get("value")
        return value if isinstance(value, bytes) else None

    async def delete(self, group: int, key: bytes | str) -> bool:
        result = await self.request("delete", group, {"key": _b(key)})
        return bool(result.get("existed"))

    async def cas(
        self, group: int, key: bytes | str, expected: bytes | str | None, new: bytes | str | None
    ) -> tuple[bool, bytes | None]:
        result = await self.request(
            "cas",
            group,
            {
                "key": _b(key),
                "expected": None if expected is None else _b(expected),
                "new": None if new is None else _b(new),
            },
        )
        value = result.get("value")
        return bool(result.get("ok")), value if isinstance(value, bytes) else None

    # ----------------------------------------------------------------------- admin

    async def create_group(self, group: int, backend: str, voters: list[int]) -> None:
        """Create a replica of ``group`` on every member (idempotent)."""
        for node in sorted(voters):
            await self.call(
                node, "create_group", {"group": group, "backend": backend, "voters": sorted(voters)}
            )

    async def change_membership(
        self, group: int, changes: Sequence[tuple[str, int]], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Change ``group``'s membership through its leader (hints followed as for
        ``put``): ``changes`` are ``(kind, node)`` with kind ``"add_learner"``,
        ``"add_voter"`` or ``"remove"``. Returns ``{"voters", "learners",
        "voters_outgoing"}`` once the change committed and applied on the leader. A
        ``timeout`` / ``unknown_outcome`` error leaves it open whether the change happened:
        read ``group_status`` before retrying."""
        return await self.request(
            "change_membership",
            group,
            {"changes": [[kind, int(node)] for kind, node in changes]},
            timeout_s=timeout_s,
        )

    async def group_status(self, node: int, group: int) -> dict[str, Any]:
        """``group``'s status as node ``node`` sees it (never forwarded): role, leader,
        term, commit, applied, first/last index, voters, learners, and on the leader
        ``progress`` as ``[[node, match], ...]``."""
        return await self.call(node, "group_status", {"group": group})

    async def status(self, node: int) -> dict[str, Any]:
        return await self.call(node, "status", {})

    async def stats(self, node: int) -> dict[str, Any]:
        return await self.call(node, "stats", {})

    # ----------------------------------------------------------------------- core

    async def request(
        self, op: str, group: int, args: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send a group request to its leader, following hints until the deadline."""
        deadline = trio.current_time() + (self._timeout_s if timeout_s is None else timeout_s)
        nodes = sorted(self._addresses)
        target = self._leaders.get(group, nodes[next(self._rotation) % len(nodes)])
        pause_s = 0.005
        last: ClientError | None = None
        while trio.current_time() < deadline:
            remaining_ms = max(1, int((deadline - trio.current_time()) * 1000))
            try:
                result = await self.call(
                    target,
                    op,
                    {"group": group, **args, "timeout_ms": remaining_ms},
                    deadline=deadline,
                )
            except ClientError as exc:
                if exc.code not in _RETRYABLE and exc.code != "unreachable":
                    raise
                last = exc
                self._leaders.pop(group, None)
                if (
                    exc.code == p.NOT_LEADER
                    and exc.leader in self._addresses
                    and exc.leader != target
                ):
                    target = exc.leader  # a fresh hint: follow it at once
                    continue
                nodes = sorted(self._addresses)  # the address book may have changed
                position = nodes.index(target) if target in nodes else -1
                target = nodes[(position + 1) % len(nodes)]
                await trio.sleep(min(pause_s, max(0.0, deadline - trio.current_time())))
                pause_s = min(pause_s * 2, 0.2)
                continue
            self._leaders[group] = target
            return result
        raise ClientError("timeout", f"no leader answered in time (last error: {last})")

    async def call(
        self, node: int, op: str, args: dict[str, Any], *, deadline: float | None = None
    ) -> dict[str, Any]:
        """One request to one node; raises ``ClientError`` for an error reply, with code
        ``unreachable`` if no connection could be made and ``unknown_outcome`` if it broke
        while the request was in flight."""
        if deadline is None:
            deadline = trio.current_time() + self._timeout_s
        conn = await self._connection(node, deadline)
        request_id = next(self._ids)
        event = trio.Event()
        box: list[Any] = []
        conn.waiting[request_id] = (event, box)
        try:
            await conn.writer.send({"id": request_id, "op": op, "args": args})
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            conn.waiting.pop(request_id, None)
            self._drop(conn)
            raise ClientError("unknown_outcome", f"node {node}: connection broke: {exc}") from exc
        with trio.move_on_at(deadline + 1.0):  # the server enforces the deadline itself
            await event.wait()
        conn.waiting.pop(request_id, None)
        if not box:
            if conn.broken:
                self._drop(conn)
                raise ClientError("unknown_outcome", f"node {node}: connection lost")
            raise ClientError("timeout", f"node {node}: no reply")
        reply = box[0]
        if reply.get("ok"):
            result = reply.get("result", {})
            return result if isinstance(result, dict) else {}
        error = reply.get("error") or {}
        raise ClientError(
            str(error.get("code", p.INTERNAL)),
            str(error.get("message", "")),
            leader=int(error.get("leader", 0) or 0),
            details={k: v for k, v in error.items() if k not in ("code", "message", "leader")},
        )

    def _drop(self, conn: _Connection) -> None:
        if self._connections.get(conn.node_id) is conn:
            del self._connections[conn.node_id]

    async def _connection(self, node: int, deadline: float) -> _Connection:
        while True:
            conn = self._connections.get(node)
            if conn is not None and not conn.broken:
                return conn
            dialing = self._dialing.get(node)
            if dialing is None:
                break
            await dialing.wait()
        done = trio.Event()
        self._dialing[node] = done
        try:
            address = self._addresses.get(node)
            if address is None:
                raise ClientError("unreachable", f"no address for node {node}")
            try:
                with trio.fail_after(
                    max(0.01, min(_DIAL_TIMEOUT_S, deadline - trio.current_time()))
                ):
                    stream = await trio.open_tcp_stream(*address)
                    conn = await self._handshake(node, stream)
            except (
                OSError,
                trio.TooSlowError,
                trio.BrokenResourceError,
                ValueError,
                msgpack.UnpackException,
            ) as exc:
                raise ClientError("unreachable", f"node {node} at {address}: {exc!r}") from exc
            self._connections[node] = conn
            self._nursery.start_soon(conn.read_loop)
            self._nursery.start_soon(conn.write_loop)
            return conn
        finally:
            del self._dialing[node]
            done.set()

    async def _handshake(self, node: int, stream: trio.SocketStream) -> _Connection:
        await stream.send_all(p.pack(p.hello_request(self._token)))
        unpacker = p.new_unpacker(p.MAX_RESPONSE_BYTES)
        while True:
            data = await stream.receive_some(4096)
            if not data:
                raise ValueError("closed during hello")
            unpacker.feed(data)
            for hello in unpacker:
                if not isinstance(hello, dict) or hello.get("hello") != p.PROTOCOL_NAME:
                    raise ValueError(f"bad hello {hello!r}")
                if hello.get("node_id") != node:
                    raise ValueError(f"expected node {node}, reached {hello.get('node_id')}")
                return _Connection(node, stream)

    async def aclose(self) -> None:
        for node in sorted(self._connections):
            await self._connections[node].stream.aclose()
        self._connections.clear()


def _b(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


@asynccontextmanager
async def open_client(
    addresses: Mapping[int, tuple[str, int]],
    *,
    timeout_s: float = 10.0,
    token: str | None = None,
) -> AsyncIterator[Client]:
    """A client for the nodes at ``addresses``; ``token`` (default ``$SHARDB_TOKEN``) is sent
    in the hello to nodes that require one."""
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    async with trio.open_nursery() as nursery:
        client = Client(addresses, nursery, timeout_s=timeout_s, token=token)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await client.aclose()
