"""``shardb node start --join ADDR``: how a new node learns its place in a running cluster.

Before its consensus node starts, a joining node asks the node at ``ADDR`` (its client port)
for the ``join`` op: the cluster id, a node id (reserved by the meta group, never reused) and
every node's node-to-node and client addresses. It then starts with no bootstrap peers (it
hosts no meta replica at first), announces itself with ``NodeJoined`` like every node, and the
other nodes dial it once the meta group lists its address; the placement driver gives it
replicas.

A restarted node keeps the id and cluster id its log store was created with (read from the
store, never reserved again); it still asks ``ADDR`` for the current addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import apsw
import trio

from consensus.runtime.layout import LOG_FILE
from consensus.runtime.process import parse_address
from shardb.client.aio import open_connection
from shardb.client.errors import Error as ClientFailure

JOIN_TIMEOUT_S = 30.0


class JoinError(Exception):
    """The cluster could not be reached or refused the join."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Joined:
    cluster_id: str
    node_id: int
    peers: dict[int, tuple[str, int]]
    clients: dict[int, tuple[str, int]]


def stored_identity(data_dir: Path) -> tuple[str, int] | None:
    """(cluster id, node id) of the log store in ``data_dir``, or None for a fresh directory."""
    path = data_dir / LOG_FILE
    if not path.exists():
        return None
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            rows: dict[object, object] = {
                row[0]: row[1] for row in conn.execute("SELECT key, value FROM meta")
            }
        finally:
            conn.close()
    except apsw.Error as exc:
        raise JoinError(f"cannot read {path}: {exc}") from exc
    cluster, node = rows.get("cluster_id"), rows.get("node_id")
    if not isinstance(cluster, str) or not isinstance(node, int):
        raise JoinError(f"{path} has no node identity")
    return cluster, node


def join_cluster(address: str, data_dir: Path, node_id: int | None, token: str | None) -> Joined:
    stored = stored_identity(data_dir)
    if stored is not None:
        if node_id is not None and node_id != stored[1]:
            raise JoinError(f"{data_dir} belongs to node {stored[1]}, not --id {node_id}")
        node_id = stored[1]
    try:
        joined = trio.run(_ask, address, node_id, token)
    except (ClientFailure, OSError, ValueError, KeyError, TypeError) as exc:
        raise JoinError(str(exc)) from exc
    if stored is not None and stored[0] != joined.cluster_id:
        raise JoinError(
            f"{data_dir} belongs to cluster {stored[0]!r}; {address} is in {joined.cluster_id!r}"
        )
    return joined


async def _ask(address: str, node_id: int | None, token: str | None) -> Joined:
    addresses = [a.strip() for a in address.split(",") if a.strip()]
    async with open_connection(addresses, timeout=JOIN_TIMEOUT_S, token=token) as conn:
        args = {} if node_id is None else {"node_id": node_id}
        reply = await conn.admin("join", args)
    return Joined(
        cluster_id=str(reply["cluster_id"]),
        node_id=int(reply["node_id"]),
        peers={int(k): parse_address(str(v)) for k, v in reply["peers"].items()},
        clients={int(k): parse_address(str(v)) for k, v in reply["clients"].items()},
    )
