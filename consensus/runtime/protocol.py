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

from typing import Any, Final

import msgpack

CLIENT_PROTOCOL_VERSION: Final = 1
PROTOCOL_NAME: Final = "shardb"
MAX_REQUEST_BYTES: Final = 1 << 20
MAX_RESPONSE_BYTES: Final = 64 << 20

OPS: Final = ("put", "get", "delete", "cas", "create_group", "status", "stats")

# Error codes (``error.code``). The runtime's own codes are on ``consensus.runtime.errors``.
NOT_LEADER: Final = "not_leader"
DROPPED: Final = "dropped"
UNKNOWN_GROUP: Final = "unknown_group"
BAD_REQUEST: Final = "bad_request"
VERSION_MISMATCH: Final = "version_mismatch"
INTERNAL: Final = "internal"


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def new_unpacker(max_bytes: int) -> msgpack.Unpacker:
    # strict_map_key keeps keys str/bytes; max_buffer_size bounds one message in memory.
    return msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max_bytes)
