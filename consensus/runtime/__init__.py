"""The node runtime: the trio IO shell that hosts many consensus groups in one process.

``open_node`` runs the loop (persist -> send -> apply -> advance) around the pure
``consensus.host.MultiGroupHost``; ``KVStateMachine`` is the replicated key-value store it
applies to; ``open_client_server`` and ``open_client`` speak the client/admin protocol;
``consensus.runtime.process`` runs a node as an OS process (``shardb node start``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consensus.runtime.client import Client, ClientError, open_client
    from consensus.runtime.errors import (
        GroupConflict,
        GroupRemoved,
        NodeClosed,
        NodeError,
        NodeFailed,
        OutcomeUnknown,
        Overloaded,
        ProposalLost,
        RequestTimeout,
    )
    from consensus.runtime.node import (
        SEED_INDEX,
        SEED_TERM,
        GroupStatus,
        Node,
        NodeConfig,
        NodeStatistics,
        open_node,
    )
    from consensus.runtime.server import open_client_server
    from consensus.runtime.statemachine import (
        KVStateMachine,
        StateMachine,
        StateMachineError,
        decode_result,
        encode_cas,
        encode_delete,
        encode_get,
        encode_put,
    )

_EXPORTS: dict[str, str] = {
    "Client": "consensus.runtime.client",
    "ClientError": "consensus.runtime.client",
    "GroupConflict": "consensus.runtime.errors",
    "GroupRemoved": "consensus.runtime.errors",
    "GroupStatus": "consensus.runtime.node",
    "KVStateMachine": "consensus.runtime.statemachine",
    "Node": "consensus.runtime.node",
    "NodeClosed": "consensus.runtime.errors",
    "NodeConfig": "consensus.runtime.node",
    "NodeError": "consensus.runtime.errors",
    "NodeFailed": "consensus.runtime.errors",
    "NodeStatistics": "consensus.runtime.node",
    "OutcomeUnknown": "consensus.runtime.errors",
    "Overloaded": "consensus.runtime.errors",
    "ProposalLost": "consensus.runtime.errors",
    "RequestTimeout": "consensus.runtime.errors",
    "SEED_INDEX": "consensus.runtime.node",
    "SEED_TERM": "consensus.runtime.node",
    "StateMachine": "consensus.runtime.statemachine",
    "StateMachineError": "consensus.runtime.statemachine",
    "decode_result": "consensus.runtime.statemachine",
    "encode_cas": "consensus.runtime.statemachine",
    "encode_delete": "consensus.runtime.statemachine",
    "encode_get": "consensus.runtime.statemachine",
    "encode_put": "consensus.runtime.statemachine",
    "open_client": "consensus.runtime.client",
    "open_client_server": "consensus.runtime.server",
    "open_node": "consensus.runtime.node",
}

__all__ = [
    "SEED_INDEX",
    "SEED_TERM",
    "Client",
    "ClientError",
    "GroupConflict",
    "GroupRemoved",
    "GroupStatus",
    "KVStateMachine",
    "Node",
    "NodeClosed",
    "NodeConfig",
    "NodeError",
    "NodeFailed",
    "NodeStatistics",
    "OutcomeUnknown",
    "Overloaded",
    "ProposalLost",
    "RequestTimeout",
    "StateMachine",
    "StateMachineError",
    "decode_result",
    "encode_cas",
    "encode_delete",
    "encode_get",
    "encode_put",
    "open_client",
    "open_client_server",
    "open_node",
]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): ``shardb``'s CLI imports ``consensus.runtime.process`` at start-up and
    # should not pay for the node, the host and both cores until a node actually starts.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
