"""The client/admin endpoint of a node (protocol in ``consensus.runtime.protocol``).

Each connection runs a reader that parses requests, a task per request (bounded per
connection) that awaits the node, and one writer (``protocol.CoalescingWriter``) that sends
replies in completion order. Replies that complete together -- one node loop resolves every
proposal it applied at once -- are queued by their tasks and leave in ONE ``send_all``: with
64 clients multiplexed on one connection that is one syscall per loop instead of 64 (the
profile of the 1-group benchmark showed per-reply sends as the largest cost of the leader's
trio thread). Nothing a client sends can crash the node: protocol violations close that
connection, request failures become error replies, and an unexpected exception in a handler
is logged and answered as ``internal``.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from functools import partial
from typing import Any, Final

import msgpack
import trio

from consensus.api import (
    ChangeKind,
    ChangeOp,
    MembershipChange,
    NotLeader,
    ProposalDropped,
    ReadMode,
)
from consensus.backends import Backend
from consensus.host import UnknownGroup
from consensus.runtime import protocol as p
from consensus.runtime.errors import ApplicationError, NodeError
from consensus.runtime.node import GroupStatus, Node
from consensus.runtime.statemachine import (
    decode_result,
    encode_cas,
    encode_delete,
    encode_get,
    encode_put,
)
from consensus.types import ConfState, GroupId, NodeId

MAX_INFLIGHT_PER_CONNECTION: Final = 1024
HELLO_TIMEOUT_S: Final = 10.0
DEFAULT_REQUEST_TIMEOUT_S: Final = 5.0
MAX_REQUEST_TIMEOUT_S: Final = 60.0


_Call = Callable[[], Awaitable[dict[str, Any]]]
OpHandler = Callable[[dict[str, Any]], _Call]
"""An application op served beside the node's own: validates ``args`` at once (raising
``BadRequest`` closes the connection, as for the built-in ops) and returns the call that does
the work. The call's ``ApplicationError`` becomes an error reply with its code and details."""
LINGER_S: Final = 1.0
LINGER_MAX_BYTES: Final = 8 << 20


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close, then read and discard what the client is still sending (bounded in time
    and bytes) before closing. Closing a socket with unread input sends a TCP reset, which
    can destroy the error reply before the client reads it."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_eof()
        discarded = 0
        with trio.move_on_after(LINGER_S):
            while discarded < LINGER_MAX_BYTES:
                data = await stream.receive_some(64 << 10)
                if not data:
                    break
                discarded += len(data)


class BadRequest(Exception):
    """The client broke the protocol: reply once and close the connection."""


_BadRequest = BadRequest


def arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``args[name]`` if it is a ``kind`` (bool is not an int), else ``BadRequest``."""
    return _arg(args, name, kind)


def timeout_arg(args: dict[str, Any]) -> float:
    """The request's ``timeout_ms`` in seconds (default and ceiling applied)."""
    return _timeout(args)


def _arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = args.get(name)
    if isinstance(value, bool) and kind is int:
        raise _BadRequest(f"argument {name!r} must be {kind}")
    if not isinstance(value, kind):
        raise _BadRequest(f"argument {name!r} must be {kind}, got {type(value).__name__}")
    return value


def _group(args: dict[str, Any]) -> GroupId:
    group = _arg(args, "group", int)
    if group <= 0:
        raise _BadRequest("group ids start at 1")
    return GroupId(group)


def _timeout(args: dict[str, Any]) -> float:
    raw = args.get("timeout_ms")
    if raw is None:
        return DEFAULT_REQUEST_TIMEOUT_S
    if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
        raise _BadRequest("timeout_ms must be a positive integer")
    return min(raw / 1000.0, MAX_REQUEST_TIMEOUT_S)


FAULT_KINDS: Final = ("block", "unblock", "heal", "delay", "clock_jump")
MAX_FAULT_MS: Final = 3_600_000


def _parse_fault(args: dict[str, Any]) -> dict[str, Any]:
    kind = args.get("kind")
    if kind not in FAULT_KINDS:
        raise _BadRequest(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
    peers = args.get("peers", [])
    if not isinstance(peers, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in peers
    ):
        raise _BadRequest("peers must be a list of node ids")
    fault: dict[str, Any] = {"kind": kind, "peers": peers}
    for name in ("delay_ms", "jitter_ms", "jump_ms", "heal_after_ms"):
        raw = args.get(name, 0)
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= MAX_FAULT_MS:
            raise _BadRequest(f"{name} must be an integer between 0 and {MAX_FAULT_MS}")
        fault[name] = raw
    return fault


def _apply_fault(node: Node, fault: dict[str, Any]) -> dict[str, Any]:
    faults = node.faults
    if faults is None:
        raise ApplicationError(
            "faults_disabled",
            f"node {node.node_id} was not started with faults allowed (--allow-faults)",
        )
    match fault["kind"]:
        case "block":
            faults.block(fault["peers"])
        case "unblock":
            faults.unblock(fault["peers"])
        case "heal":
            faults.heal()
        case "delay":
            faults.delay(fault["peers"], fault["delay_ms"] / 1000.0, fault["jitter_ms"] / 1000.0)
        case "clock_jump":
            node.jump_clock(fault["jump_ms"] / 1000.0)
    if fault["heal_after_ms"] and fault["kind"] in ("block", "delay"):
        faults.heal_later(fault["heal_after_ms"] / 1000.0)
    node._log.info("fault_injected", **fault)
    return {"faults": faults.describe()}


_CHANGE_KINDS: Final = {
    "add_learner": ChangeKind.ADD_LEARNER,
    "add_voter": ChangeKind.ADD_VOTER,
    "remove": ChangeKind.REMOVE,
}
MAX_CHANGE_OPS: Final = 64


def _membership_change(args: dict[str, Any]) -> MembershipChange:
    changes = args.get("changes")
    if not isinstance(changes, list) or not 0 < len(changes) <= MAX_CHANGE_OPS:
        raise _BadRequest(f"changes must be a list of 1 to {MAX_CHANGE_OPS} [kind, node] pairs")
    ops = []
    for item in changes:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or item[0] not in _CHANGE_KINDS
            or not isinstance(item[1], int)
            or isinstance(item[1], bool)
            or item[1] <= 0
        ):
            raise _BadRequest(
                f"a change is [kind, node] with kind one of {', '.join(p.CHANGE_KINDS)} and "
                f"a node id >= 1, got {item!r}"
            )
        ops.append(ChangeOp(kind=_CHANGE_KINDS[item[0]], node=NodeId(item[1])))
    return MembershipChange(ops=tuple(ops))


def conf_body(conf: ConfState) -> dict[str, Any]:
    return {
        "voters": [int(v) for v in conf.voters],
        "learners": [int(n) for n in conf.learners],
        "voters_outgoing": [int(v) for v in conf.voters_outgoing],
    }


def group_status_body(st: GroupStatus) -> dict[str, Any]:
    return {
        "group": int(st.group_id),
        "backend": st.backend.value,
        "role": st.role.value,
        "leader": int(st.leader),
        "term": int(st.term),
        "commit": int(st.commit),
        "applied": int(st.applied),
        "first_index": int(st.first_index),
        "last_index": int(st.last_index),
        "voters": [int(v) for v in st.voters],
        "learners": [int(n) for n in st.learners],
        "progress": [[int(node), int(match)] for node, match in st.progress],
    }


def _read_mode(args: dict[str, Any]) -> ReadMode:
    consistency = args.get("consistency", "safe")
    if consistency not in ("safe", "lease"):
        raise _BadRequest("consistency must be 'safe' or 'lease'")
    return ReadMode.LEASE if consistency == "lease" else ReadMode.SAFE


def error_body(exc: BaseException) -> dict[str, Any]:
    match exc:
        case ApplicationError():
            return {**exc.details, "code": exc.code, "message": exc.message}
        case NotLeader(leader_hint=hint):
            return {"code": p.NOT_LEADER, "message": str(exc), "leader": int(hint)}
        case ProposalDropped():
            return {"code": p.DROPPED, "message": str(exc)}
        case UnknownGroup():
            return {"code": p.UNKNOWN_GROUP, "message": str(exc)}
        case NodeError():
            return {"code": exc.code, "message": str(exc)}
        case ValueError():
            return {"code": p.BAD_REQUEST, "message": str(exc)}
        case _:
            return {"code": p.INTERNAL, "message": f"{type(exc).__name__}: {exc}"}


class ClientServer:
    """Serves one node's client port; use through ``open_client_server``."""

    def __init__(
        self,
        node: Node,
        *,
        max_request_bytes: int = p.MAX_REQUEST_BYTES,
        ops: Mapping[str, OpHandler] | None = None,
        token: str | None = None,
    ) -> None:
        self._node = node
        self._token = token
        self._ops: dict[str, OpHandler] = dict(ops or {})
        clash = sorted(set(self._ops) & set(p.OPS))
        if clash:
            raise ValueError(f"application ops {clash} shadow the node's own ops")
        self._max_request_bytes = max_request_bytes
        self._log = node._log
        self.connections = 0
        self.closed_malformed = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection. Nothing that happens on it may stop the node: the peer
        going away (reset, EOF) ends it quietly, and any other error is logged and ends only
        this connection. The tasks of a connection run in a nursery, so errors arrive as
        exception groups (hence ``except*``)."""
        try:
            await self._handle(stream)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away; its in-flight requests simply lose their replies
        except* Exception as group:
            self._log.warning(
                "client_connection_failed",
                error=repr(group.exceptions[0]),
                exc_info=group.exceptions[0],
            )

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        unpacker = p.new_unpacker(self._max_request_bytes)
        writer = p.CoalescingWriter(stream)
        reply = writer.send

        try:
            async with stream, trio.open_nursery() as nursery:
                limiter = trio.CapacityLimiter(MAX_INFLIGHT_PER_CONNECTION)
                nursery.start_soon(writer.run)
                try:
                    with trio.fail_after(HELLO_TIMEOUT_S):
                        hello = await self._next(stream, unpacker)
                    self._check_hello(hello)
                    await reply(
                        {
                            "hello": p.PROTOCOL_NAME,
                            "version": p.CLIENT_PROTOCOL_VERSION,
                            "node_id": int(self._node.node_id),
                            "cluster_id": self._node.config.cluster_id,
                        }
                    )
                    while True:
                        request = await self._next(stream, unpacker)
                        if request is None:
                            break
                        request_id, op, args = self._parse(request)
                        call = self._prepare(op, args)
                        try:
                            limiter.acquire_on_behalf_of_nowait(request_id)
                        except trio.WouldBlock:
                            await reply(
                                {
                                    "id": request_id,
                                    "ok": False,
                                    "error": {
                                        "code": "overloaded",
                                        "message": "too many requests in flight on this connection",
                                    },
                                }
                            )
                            continue
                        nursery.start_soon(self._serve, request_id, op, call, reply, limiter)
                except (_BadRequest, trio.TooSlowError) as exc:
                    self.closed_malformed += 1
                    reason = "hello timed out" if isinstance(exc, trio.TooSlowError) else str(exc)
                    self._log.info("client_connection_closed_malformed", reason=reason)
                    await reply(
                        {
                            "id": None,
                            "ok": False,
                            "error": {"code": p.BAD_REQUEST, "message": reason},
                        }
                    )
                    await writer.flush()
                    await _linger(stream)
                finally:
                    nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # raised outside the nursery (closing the stream): the client went away

    async def _next(self, stream: trio.SocketStream, unpacker: msgpack.Unpacker) -> Any:
        """The next msgpack object, or None when the client closed cleanly."""
        while True:
            try:
                return unpacker.unpack()
            except msgpack.OutOfData:
                pass
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise _BadRequest(f"malformed msgpack: {exc!r}") from exc
            data = await stream.receive_some(64 << 10)
            if not data:
                return None
            try:
                unpacker.feed(data)
            except msgpack.BufferFull as exc:
                raise _BadRequest(f"request larger than {self._max_request_bytes} bytes") from exc

    def _check_hello(self, hello: Any) -> None:
        if not isinstance(hello, dict) or hello.get("hello") != p.PROTOCOL_NAME:
            raise _BadRequest("expected a hello")
        if self._token is not None:
            supplied = hello.get("token")
            # Constant-time compare: the reply must not reveal how much of a guess matched.
            if not isinstance(supplied, str) or not hmac.compare_digest(
                supplied.encode(), self._token.encode()
            ):
                carried = "a wrong" if supplied else "no"
                raise _BadRequest(
                    f"authentication failed: this node requires a client token "
                    f"(${p.TOKEN_ENV}) and the hello carried {carried} token"
                )
        if hello.get("version") != p.CLIENT_PROTOCOL_VERSION:
            raise _BadRequest(
                f"client protocol version {hello.get('version')!r} is not supported; "
                f"this node speaks {p.CLIENT_PROTOCOL_VERSION}"
            )

    def _parse(self, request: Any) -> tuple[int, str, dict[str, Any]]:
        if not isinstance(request, dict):
            raise _BadRequest("a request is a map")
        request_id = request.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            raise _BadRequest("request id must be an integer")
        op = request.get("op")
        if op not in p.OPS and op not in self._ops:
            raise _BadRequest(f"unknown op {op!r}")
        args = request.get("args", {})
        if not isinstance(args, dict):
            raise _BadRequest("args must be a map")
        return request_id, str(op), args

    async def _serve(
        self,
        request_id: int,
        op: str,
        call: _Call,
        reply: Any,
        limiter: trio.CapacityLimiter,
    ) -> None:
        try:
            try:
                result = await call()
            except Exception as exc:
                body = error_body(exc)
                if body["code"] == p.INTERNAL:
                    self._log.warning("client_request_failed", op=op, error=body["message"])
                await reply({"id": request_id, "ok": False, "error": body})
            else:
                await reply({"id": request_id, "ok": True, "result": result})
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            limiter.release_on_behalf_of(request_id)

    def _prepare(self, op: str, args: dict[str, Any]) -> _Call:
        """Validate ``args`` now (a bad request closes the connection) and return the call
        that does the work."""
        node = self._node
        handler = self._ops.get(op)
        if handler is not None:
            return handler(args)
        match op:
            case "propose":
                raw_command = _arg(args, "command", bytes)
                group, timeout = _group(args), _timeout(args)

                async def propose_raw() -> dict[str, Any]:
                    return {"result": await node.propose(group, raw_command, timeout=timeout)}

                return propose_raw
            case "read":
                raw_query = _arg(args, "query", bytes)
                read_mode = _read_mode(args)
                group, timeout = _group(args), _timeout(args)

                async def read_raw() -> dict[str, Any]:
                    answer = await node.read(group, raw_query, mode=read_mode, timeout=timeout)
                    return {"result": answer}

                return read_raw
            case "put" | "delete" | "cas":
                if op == "put":
                    command = encode_put(_arg(args, "key", bytes), _arg(args, "value", bytes))
                elif op == "delete":
                    command = encode_delete(_arg(args, "key", bytes))
                else:
                    command = encode_cas(
                        _arg(args, "key", bytes),
                        _arg(args, "expected", (bytes, type(None))),
                        _arg(args, "new", (bytes, type(None))),
                    )
                group, timeout = _group(args), _timeout(args)

                async def propose() -> dict[str, Any]:
                    return self._result(await node.propose(group, command, timeout=timeout))

                return propose
            case "get":
                mode = _read_mode(args)
                query = encode_get(_arg(args, "key", bytes))
                group, timeout = _group(args), _timeout(args)

                async def read() -> dict[str, Any]:
                    answer = await node.read(group, query, mode=mode, timeout=timeout)
                    return self._result(answer)

                return read
            case "create_group":
                backend = _arg(args, "backend", str)
                if backend not in {b.value for b in Backend}:
                    raise _BadRequest(f"unknown backend {backend!r}")
                voters = _arg(args, "voters", list)
                if not voters or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in voters
                ):
                    raise _BadRequest("voters must be a non-empty list of node ids")
                group = _group(args)

                async def create() -> dict[str, Any]:
                    return {"created": await node.create_group(group, backend, voters)}

                return create
            case "transfer_leader":
                group = _group(args)
                target = _arg(args, "node", int)
                if target <= 0:
                    raise _BadRequest("node ids start at 1")
                timeout = _timeout(args)

                async def transfer() -> dict[str, Any]:
                    await node.transfer_leadership(group, target, timeout=timeout)
                    return {}

                return transfer
            case "change_membership":
                change = _membership_change(args)
                group, timeout = _group(args), _timeout(args)

                async def change_membership() -> dict[str, Any]:
                    conf = await node.change_membership(group, change, timeout=timeout)
                    return conf_body(conf)

                return change_membership
            case "group_status":
                group = _group(args)

                async def group_status() -> dict[str, Any]:
                    return group_status_body(node.status(group))

                return group_status
            case "fault":
                fault = _parse_fault(args)

                async def inject() -> dict[str, Any]:
                    return _apply_fault(node, fault)

                return inject
            case "status":

                async def status() -> dict[str, Any]:
                    return self._status()

                return status
            case "stats":

                async def stats() -> dict[str, Any]:
                    # The transport's own counters too: bytes on the wire (the comparison's
                    # bytes per committed entry) are not among the node's counters.
                    transport = node._transport
                    return {
                        "node": asdict(node.statistics()),
                        "transport": None if transport is None else asdict(transport.statistics()),
                    }

                return stats
        raise _BadRequest(f"unknown op {op!r}")

    @staticmethod
    def _result(raw: bytes | None) -> dict[str, Any]:
        if raw is None:
            return {}
        result = decode_result(raw)
        if not result["ok"] and "error" in result:
            raise ValueError(result["error"])
        return result

    def _status(self) -> dict[str, Any]:
        node = self._node
        groups = []
        for group_id in node.group_ids():
            st = node.status(group_id)
            groups.append(
                {
                    "group": int(st.group_id),
                    "backend": st.backend.value,
                    "role": st.role.value,
                    "term": int(st.term),
                    "leader": int(st.leader),
                    "commit": int(st.commit),
                    "applied": int(st.applied),
                    "last_index": int(st.last_index),
                    "first_index": int(st.first_index),
                    "voters": [int(v) for v in st.voters],
                    "learners": [int(n) for n in st.learners],
                }
            )
        return {
            "node_id": int(node.node_id),
            "cluster_id": node.config.cluster_id,
            "failure": node.failure,
            "groups": groups,
        }


@asynccontextmanager
async def open_client_server(
    node: Node,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_request_bytes: int = p.MAX_REQUEST_BYTES,
    ops: Mapping[str, OpHandler] | None = None,
    token: str | None = None,
) -> AsyncIterator[tuple[str, int]]:
    """Serve ``node``'s client port (plus the application ``ops``); yields the bound
    address. Connections are cancelled on exit."""
    server = ClientServer(node, max_request_bytes=max_request_bytes, ops=ops, token=token)
    listeners = await trio.open_tcp_listeners(port, host=host)
    sockname = listeners[0].socket.getsockname()
    address = (str(sockname[0]), int(sockname[1]))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(trio.serve_listeners, server.handle, listeners))
        node._log.info("client_endpoint_listening", host=address[0], port=address[1])
        try:
            yield address
        finally:
            nursery.cancel_scope.cancel()
