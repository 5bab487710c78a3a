"""The SQL ops a node serves on its client port (protocol: docs/client-protocol.md).

``sql`` runs one statement through the node's gateway; ``meta`` returns the cluster view
(nodes, ranges with their leaders, tables) for tools such as the shell and ``shardb cluster``;
``range_stats`` the size of this node's replica of a range (for the placement driver);
``join`` reserves a node id for a new node and tells it the cluster id and every node's
addresses (``shardb node start --join``); ``decommission`` marks a node to be drained by the
placement driver, or with ``remove`` forgets a drained node.
Arguments are validated before any work starts: a malformed request closes the connection
(``BadRequest``), a bad statement is an error reply and changes nothing.
"""

from __future__ import annotations

from typing import Any, Final

import trio

from consensus.runtime.errors import ApplicationError
from consensus.runtime.server import BadRequest, OpHandler, arg
from consensus.types import GroupId, NodeId
from shardb.placement.meta import META_GROUP_ID, DecommissionNode, RemoveNode, ReserveNodeId
from shardb.server.gateway import Consistency, Gateway, Trace

DEFAULT_TIMEOUT_MS: Final = 10_000
MAX_TIMEOUT_MS: Final = 120_000
MAX_PARAMS: Final = 10_000
_PARAM_TYPES: Final = (type(None), int, float, str, bytes)


def _params(args: dict[str, Any]) -> list[Any]:
    params = args.get("params", [])
    if not isinstance(params, list):
        raise BadRequest("params must be a list")
    if len(params) > MAX_PARAMS:
        raise BadRequest(f"at most {MAX_PARAMS} parameters per statement")
    for value in params:
        if isinstance(value, bool) or not isinstance(value, _PARAM_TYPES):
            raise BadRequest(f"parameter of type {type(value).__name__} is not supported")
    return params


def _consistency(args: dict[str, Any]) -> Consistency:
    raw = args.get("consistency", Consistency.LINEARIZABLE.value)
    try:
        return Consistency(raw)
    except ValueError:
        names = ", ".join(c.value for c in Consistency)
        raise BadRequest(f"consistency must be one of {names}") from None


def _timeout_s(args: dict[str, Any]) -> float:
    raw = args.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
        raise BadRequest("timeout_ms must be a positive integer")
    return min(raw, MAX_TIMEOUT_MS) / 1000.0


def sql_ops(gateway: Gateway) -> dict[str, OpHandler]:
    def sql(args: dict[str, Any]) -> Any:
        text = arg(args, "sql", str)
        params = _params(args)
        consistency = _consistency(args)
        timeout = _timeout_s(args)
        want_trace = bool(args.get("trace", False))
        staleness = args.get("max_staleness_ms")
        if staleness is not None and (
            not isinstance(staleness, int) or isinstance(staleness, bool) or staleness < 0
        ):
            raise BadRequest("max_staleness_ms must be a non-negative integer")

        async def run() -> dict[str, Any]:
            trace = Trace()
            answer = await gateway.execute(
                text,
                params,
                consistency=consistency,
                timeout=timeout,
                trace=trace,
                max_staleness_ms=staleness,
            )
            result = answer.as_dict()
            if want_trace:
                result["trace"] = trace.as_dict()
            return result

        return run

    def meta(args: dict[str, Any]) -> Any:
        del args

        async def run() -> dict[str, Any]:
            return await gateway.describe(timeout=_timeout_s({}))

        return run

    def range_stats(args: dict[str, Any]) -> Any:
        group = arg(args, "group", int)
        if group < 1:
            raise BadRequest("group ids start at 1")
        access = gateway.access

        async def run() -> dict[str, Any]:
            if GroupId(group) not in access.node.group_ids():
                raise ApplicationError("unknown_group", f"group {group} is not hosted here")
            return await access.range_stats(GroupId(group), int(access.node.node_id), timeout=5.0)

        return run

    def join(args: dict[str, Any]) -> Any:
        raw = args.get("node_id")
        if raw is not None and (not isinstance(raw, int) or isinstance(raw, bool) or raw < 1):
            raise BadRequest("node_id must be a positive integer or absent")
        node = gateway.access.node

        async def run() -> dict[str, Any]:
            deadline = trio.current_time() + _timeout_s({})
            node_id = raw
            if node_id is None:
                result = await gateway.propose_meta(ReserveNodeId(), deadline)
                if not result.ok or result.node_id is None:
                    raise ApplicationError("unavailable", f"no node id reserved: {result.message}")
                node_id = int(result.node_id)
            meta = await gateway.refresh_meta(timeout=max(0.1, deadline - trio.current_time()))
            peers = {int(n.node_id): n.peer_address for n in meta.nodes() if n.peer_address}
            listen = node.listen_address
            if listen is not None:
                peers[int(node.node_id)] = f"{listen[0]}:{listen[1]}"
            return {
                "cluster_id": node.config.cluster_id,
                "node_id": node_id,
                "peers": {str(k): v for k, v in sorted(peers.items()) if k != node_id},
                "clients": {
                    str(int(n.node_id)): n.address
                    for n in meta.nodes()
                    if n.address and int(n.node_id) != node_id
                },
            }

        return run

    def decommission(args: dict[str, Any]) -> Any:
        target = arg(args, "node", int)
        action = args.get("action", "start")
        if action not in ("start", "status", "remove"):
            raise BadRequest("action must be start, status or remove")
        access = gateway.access

        async def drained() -> dict[str, Any]:
            meta = await gateway.refresh_meta(timeout=5.0)
            replicas = sum(
                1
                for d in meta.ranges()
                if NodeId(target) in d.replicas or NodeId(target) in d.learners
            )
            status = await access.leader_status(META_GROUP_ID, None, timeout=5.0)
            meta_member = status is None or target in (
                *status.get("voters", ()),
                *status.get("learners", ()),
            )
            known = any(int(n.node_id) == target for n in meta.nodes())
            return {
                "node": target,
                "known": known,
                "replicas": replicas,
                "meta_member": meta_member,
            }

        async def run() -> dict[str, Any]:
            deadline = trio.current_time() + _timeout_s({})
            if action == "status":
                return await drained()
            if action == "remove":
                state = await drained()
                if state["replicas"] or state["meta_member"]:
                    raise ApplicationError(
                        "refused",
                        f"node {target} still holds {state['replicas']} range replicas"
                        + (" and a meta group replica" if state["meta_member"] else "")
                        + ": decommission it and wait until it is drained",
                    )
                command: Any = RemoveNode(node_id=NodeId(target))
            else:
                command = DecommissionNode(node_id=NodeId(target))
            result = await gateway.propose_meta(command, deadline)
            if not result.ok:
                raise ApplicationError("refused", result.message)
            return await drained()

        return run

    def join_group(args: dict[str, Any]) -> Any:
        group = arg(args, "group", int)
        backend = arg(args, "backend", str)
        if group < 1 or backend not in ("raft", "paxos"):
            raise BadRequest("group ids start at 1; backend is raft or paxos")
        node = gateway.access.node

        async def run() -> dict[str, Any]:
            created = await node.join_group(GroupId(group), backend)
            return {"created": created}

        return run

    return {
        "join_group": join_group,
        "sql": sql,
        "meta": meta,
        "range_stats": range_stats,
        "join": join,
        "decommission": decommission,
    }
