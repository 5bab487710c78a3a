"""The client/admin wire protocol: msgpack objects over TCP, one after another.

Shared by ``consensus.runtime.server`` and ``consensus.runtime.client``. Every connection
starts with a hello each way; then the client sends requests and the server answers them,
possibly out of order, matched by request id::

    client -> {"hello": "shardb", "version": 1}
    server -> {"hello": "shardb", "version": 1, "node_id": 2, "cluster_id": "c1"}
    client -> {"id": 7, "op": "put", "args": {"group": 1, "key": b"k", "value": b"v"}}
    server -> {"id": 7, "ok": True, "result": {}}
    server -> {"id": 8, "ok": False, "error": {"code": "not_leader", "message": "...",
                                               "leader": 3}}

Keys and values are msgpack ``bin``. A request larger than ``MAX_REQUEST_BYTES``, anything
that is not such a map, an unknown op or ill-typed arguments get one error reply (id
``None`` when it could not be read) and the connection is closed: a client that speaks
nonsense is buggy or hostile, and the node must not spend more on it.
"""

from __future__ import annotations

import os
from typing import Any, Final

import msgpack
import trio

CLIENT_PROTOCOL_VERSION: Final = 1
PROTOCOL_NAME: Final = "shardb"
MAX_REQUEST_BYTES: Final = 1 << 20
MAX_RESPONSE_BYTES: Final = 64 << 20
MAX_QUEUED_BYTES: Final = 4 << 20
"""Objects queued on one connection beyond this make their senders wait for the writer (a
peer that does not read must not grow our memory)."""

OPS: Final = (
    "put",
    "get",
    "delete",
    "cas",
    "propose",
    "read",
    "create_group",
    "transfer_leader",
    "change_membership",
    "group_status",
    "fault",
    "status",
    "stats",
)
"""The node's own ops. ``propose``/``read`` carry an application's opaque command/query bytes
for one group (``{"group", "command"}`` / ``{"group", "query", "consistency"}``) and answer
``{"result": bytes}``: how another node's gateway reaches a group led elsewhere.

``change_membership`` ``{"group", "changes": [[kind, node], ...]}`` with ``kind`` one of
``CHANGE_KINDS`` is answered by the group's leader (``not_leader`` with a hint elsewhere)
once the change committed and applied there: ``{"voters", "learners", "voters_outgoing"}``
(the last non-empty only while a Raft joint configuration is in force). ``group_status``
``{"group"}`` answers from the node asked, never forwarded: ``{"role", "leader", "term",
"commit", "applied", "first_index", "last_index", "voters", "learners", "progress":
[[node, match], ...]}`` (``progress`` only on the leader)."""

CHANGE_KINDS: Final = ("add_learner", "add_voter", "remove")

# Error codes (``error.code``). The runtime's own codes are on ``consensus.runtime.errors``.
NOT_LEADER: Final = "not_leader"
DROPPED: Final = "dropped"
UNKNOWN_GROUP: Final = "unknown_group"
BAD_REQUEST: Final = "bad_request"
VERSION_MISMATCH: Final = "version_mismatch"
INTERNAL: Final = "internal"


TOKEN_ENV: Final = "SHARDB_TOKEN"
"""Environment variable holding the client token (nodes started with one refuse clients
without it; clients send it when set)."""


def hello_request(token: str | None = None) -> dict[str, Any]:
    """A client's hello; ``token`` defaults to ``$SHARDB_TOKEN`` (sent only when set)."""
    hello: dict[str, Any] = {"hello": PROTOCOL_NAME, "version": CLIENT_PROTOCOL_VERSION}
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is not None:
        hello["token"] = token
    return hello


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def new_unpacker(max_bytes: int) -> msgpack.Unpacker:
    # strict_map_key keeps keys str/bytes; max_buffer_size bounds one message in memory.
    return msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max_bytes)


class CoalescingWriter:
    """Queues packed objects for one stream and writes everything queued in one
    ``send_all``. ``run`` is the connection's only writer; ``send`` may be called by any
    task and returns once the object is queued (or waits while the queue is over its byte
    bound). Objects leave in the order ``send`` was called. Used by both ends: the server
    for replies (a node loop resolves many requests at once), the client for requests (many
    closed-loop callers share one connection)."""

    def __init__(
        self, stream: trio.abc.SendStream, *, max_queued_bytes: int = MAX_QUEUED_BYTES
    ) -> None:
        self._stream = stream
        self._max_queued_bytes = max_queued_bytes
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._wakeup = trio.Event()
        self._drained = trio.Event()
        self._send_lock = trio.Lock()  # run() and flush() never interleave on the stream
        self._closed = False
        self.writes = 0
        """``send_all`` calls made (a test and the benchmark read the coalescing from it)."""
        self.objects = 0

    async def send(self, obj: dict[str, Any]) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the connection's writer stopped")
        data = pack(obj)
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._wakeup.set()
        while self._queued_bytes > self._max_queued_bytes and not self._closed:
            await self._drained.wait()

    async def run(self) -> None:
        """Write until ``close`` (returns) or the stream fails (raises)."""
        try:
            while not self._closed:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                await self._flush()
        finally:
            self.close()

    def close(self) -> None:
        """Refuse further objects and let ``run`` return (what is queued is dropped)."""
        self._closed = True
        self._wakeup.set()
        self._drained.set()

    async def flush(self) -> None:
        """Write what is queued now (used before closing the connection)."""
        await self._flush()

    async def _flush(self) -> None:
        async with self._send_lock:
            while self._queue:
                batch, self._queue = self._queue, []
                self._queued_bytes = 0
                drained, self._drained = self._drained, trio.Event()
                drained.set()
                self.writes += 1
                self.objects += len(batch)
                await self._stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
