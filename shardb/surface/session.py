"""The shell's :class:`~shardb.shell.Session` over the async client: one cluster connection.

Statements and ``meta`` go through ``shardb.client.aio`` (any node is a gateway, failover
included). Admin ops that must reach one particular node (``status``, ``transfer_leader``,
``fault``) go through the node client (``consensus.runtime.client``), whose address book is the
``meta`` node list. ``.crash``/``.restart`` are process-level: they need the cluster's
processes (``NodeProcesses``), which only a session opened by ``shardb demo`` or on a
``shardb up`` directory has.

Network faults are sent with ``heal_after_ms`` (default 30 s): each node lifts the fault by
itself when that time is up, so a partition typed into a demo and forgotten, or a shell that
died, does not leave the cluster cut for good. ``.heal`` lifts everything at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import structlog
import trio

from consensus.api import Logger
from consensus.runtime.client import Client, ClientError, open_client
from consensus.types import GroupId, NodeId
from shardb.client.aio import AsyncConnection, open_connection
from shardb.client.errors import Error
from shardb.client.wire import Address, Result, format_address, parse_addresses
from shardb.shell.session import (
    Cell,
    Crash,
    FaultCommand,
    FaultsDisabled,
    Heal,
    Isolate,
    Partition,
    Restart,
    Skew,
    Slow,
)
from shardb.surface.processes import NodeProcesses, ProcessControlError

DEFAULT_HEAL_AFTER_MS: Final = 30_000
"""Network faults lift themselves after this long unless healed earlier (0: never)."""
TRANSFER_CONFIRM_S: Final = 3.0
"""How long ``transfer_leader`` waits to see the new leader before reporting "asked"."""
ADMIN_TIMEOUT_S: Final = 5.0
_LEADER_ROLE: Final = "leader"


class AdminError(Exception):
    """An admin request the cluster refused or this session cannot make; ``code`` sorts it like
    a server error (:func:`shardb.shell.classify_error`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _address(text: str) -> Address:
    return parse_addresses(text)[0]


def _sides_text(sides: Sequence[Sequence[int]]) -> str:
    return " | ".join(" ".join(f"n{n}" for n in side) for side in sides)


class ClusterSession:
    """A :class:`shardb.shell.Session` on a real cluster; build it with :func:`open_session`."""

    def __init__(
        self,
        conn: AsyncConnection,
        admin: Client,
        *,
        processes: NodeProcesses | None = None,
        heal_after_ms: int = DEFAULT_HEAL_AFTER_MS,
        default_backend: str | None = None,
        log: Logger | None = None,
    ) -> None:
        self._conn = conn
        self._admin = admin
        self.processes = processes
        self.heal_after_ms = heal_after_ms
        self._default_backend = default_backend
        self._backend = default_backend or "?"
        self._nodes: dict[int, Address] = {}
        self._log: Logger = log or structlog.get_logger(__name__)

    # --- Session ----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        gateway = self._conn.gateway or self._conn.addresses[0]
        return format_address(gateway)

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def consistency(self) -> str:
        return self._conn.consistency

    @consistency.setter
    def consistency(self, value: str) -> None:
        self._conn.consistency = value

    @property
    def trace(self) -> bool:
        return self._conn.trace

    @trace.setter
    def trace(self, value: bool) -> None:
        self._conn.trace = value

    @property
    def connection(self) -> AsyncConnection:
        return self._conn

    async def execute(self, sql: str, params: Sequence[Cell] = ()) -> Result:
        return await self._conn.execute(sql, params)

    async def admin(self, op: str, args: dict[str, Any]) -> Any:
        """A cluster-changing op of the node protocol (``join``, ``decommission``)."""
        return await self._conn.admin(op, args)

    async def meta(self) -> dict[str, Any]:
        meta = await self._conn.meta()
        self._learn(meta)
        return meta

    def _learn(self, meta: Mapping[str, Any]) -> None:
        """Keep the node address book and the prompt's backend in step with ``meta``."""
        nodes: dict[int, Address] = {}
        for node in meta.get("nodes", []):
            try:
                nodes[int(node["node_id"])] = _address(str(node["address"]))
            except (KeyError, ValueError, TypeError, Error):
                continue  # a node that has not announced its address yet
        if nodes:
            self._nodes = nodes
            self._admin.set_addresses(nodes)
        if self._default_backend is None:
            # The cluster's default is not in meta; the backend most ranges run is what a
            # user of this cluster mostly talks to (ties: alphabetical, for a stable prompt).
            counts = Counter(str(r.get("backend")) for r in meta.get("ranges", []))
            if counts:
                self._backend = min(counts, key=lambda b: (-counts[b], b))

    async def _node_ids(self) -> list[int]:
        if not self._nodes:
            await self.meta()
        return sorted(self._nodes)

    # --- admin ops --------------------------------------------------------------------------

    async def status(self, node_id: int) -> dict[str, Any]:
        """The node's ``status`` op (its groups, roles, terms, indexes)."""
        if not self._nodes:
            await self.meta()
        return await self._call(node_id, "status", {})

    async def _call(self, node_id: int, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if node_id not in self._nodes:
            known = ", ".join(str(n) for n in sorted(self._nodes)) or "none"
            raise AdminError("unknown_node", f"no node {node_id} in this cluster (nodes: {known})")
        deadline = trio.current_time() + ADMIN_TIMEOUT_S
        try:
            return await self._admin.call(node_id, op, args, deadline=deadline)
        except ClientError as error:
            if error.code == "bad_request" and "unknown op" in error.message:
                raise AdminError(
                    "unsupported", f"node {node_id} does not serve the {op!r} admin op"
                ) from error
            if error.code == "unknown_outcome" and op != "fault":
                # A node answers an op it does not know with an id-less error and closes the
                # connection, which the node client sees only as a lost connection.
                raise AdminError(
                    error.code,
                    f"node {node_id} closed the connection on the {op!r} op: it does not serve "
                    "it (older build) or it went down",
                ) from error
            raise

    async def _find_leader(self, group_id: int) -> int | None:
        meta = await self.meta()
        for descriptor in meta.get("ranges", []):
            if int(descriptor.get("group_id", 0)) == group_id and descriptor.get("leader"):
                return int(descriptor["leader"])
        # Not a range group (the meta group), or meta does not know its leader yet: ask the
        # nodes themselves.
        for node_id in sorted(self._nodes):
            try:
                status = await self._call(node_id, "status", {})
            except ClientError:
                continue
            for group in status.get("groups", []):
                if int(group.get("group", 0)) == group_id and group.get("leader"):
                    return int(group["leader"])
        return None

    async def _leads(self, node_id: int, group_id: int) -> bool:
        try:
            status = await self._call(node_id, "status", {})
        except ClientError:
            return False
        return any(
            int(g.get("group", 0)) == group_id and g.get("role") == _LEADER_ROLE
            for g in status.get("groups", [])
        )

    async def transfer_leader(self, group_id: GroupId, node_id: NodeId) -> str:
        leader = await self._find_leader(int(group_id))
        is_range = any(
            int(r.get("group_id", 0)) == group_id for r in (await self.meta()).get("ranges", [])
        )
        if int(node_id) not in self._nodes:
            raise AdminError("unknown_node", f"no node {node_id} in this cluster")
        if leader is None:
            raise AdminError(
                "unavailable", f"group {group_id} has no known leader (unknown group, or electing)"
            )
        if leader == node_id:
            return f"node {node_id} already leads group {group_id}"
        target = leader
        for _ in range(3):
            try:
                await self._call(target, "transfer_leader", {"group": group_id, "node": node_id})
                break
            except ClientError as error:
                # Leadership moved between our look-up and the request: follow the hint once.
                if error.code == "not_leader" and error.leader and error.leader != target:
                    if error.leader == node_id:
                        return f"node {node_id} already leads group {group_id}"
                    target = error.leader
                    continue
                raise
        with trio.move_on_after(TRANSFER_CONFIRM_S):
            while not await self._leads(int(node_id), int(group_id)):
                await trio.sleep(0.05)
            moved = f"group {group_id}: leadership moved from node {target} to node {node_id}"
            if is_range:
                # The nodes' leader balancer hands range leaders to the meta group's placement
                # hint (shardb.server.service): say so, or the move looks lost later.
                moved += " (the leader balancer may move it back to its placement hint)"
            return moved
        return (
            f"group {group_id}: node {target} was asked to hand leadership to node {node_id} "
            f"(not confirmed within {TRANSFER_CONFIRM_S:g} s)"
        )

    # --- faults -----------------------------------------------------------------------------

    async def faults(self, command: FaultCommand) -> str:
        match command:
            case Crash(node=node):
                return await self._crash(int(node))
            case Restart(node=node):
                return await self._restart(int(node))
            case Partition(sides=sides):
                plan = self._partition_plan([[int(n) for n in side] for side in sides])
                await self._send_faults(plan)
                return f"partitioned {_sides_text(sides)}{self._heal_note()}"
            case Isolate(node=node):
                everyone = await self._node_ids()
                self._check_nodes([int(node)])
                others = [n for n in everyone if n != node]
                await self._send_faults(self._partition_plan([[int(node)], others]))
                return f"isolated n{node}{self._heal_note()}"
            case Heal():
                healed = await self._send_faults(
                    {n: {"kind": "heal"} for n in await self._node_ids()}, best_effort=True
                )
                return f"healed {', '.join(f'n{n}' for n in healed) or 'no node'}"
            case Slow(node=node, delay_ms=delay_ms):
                everyone = await self._node_ids()
                self._check_nodes([int(node)])
                peers = [n for n in everyone if n != node]
                await self._send_faults(
                    {
                        int(node): {
                            "kind": "delay",
                            "peers": peers,
                            "delay_ms": delay_ms,
                            "heal_after_ms": self.heal_after_ms,
                        }
                    }
                )
                return f"n{node} delays its messages by {delay_ms} ms{self._heal_note()}"
            case Skew(node=node, offset_ms=offset_ms):
                return await self._skew(int(node), offset_ms)

    def _heal_note(self) -> str:
        if self.heal_after_ms <= 0:
            return " (until .heal)"
        return f" (heals by itself in {self.heal_after_ms / 1000:g} s, or .heal)"

    def _check_nodes(self, nodes: Sequence[int]) -> None:
        for node in nodes:
            if node not in self._nodes:
                known = ", ".join(f"n{n}" for n in sorted(self._nodes)) or "none"
                raise AdminError("unknown_node", f"no node n{node} in this cluster ({known})")

    def _partition_plan(self, sides: list[list[int]]) -> dict[int, dict[str, Any]]:
        """``block`` at every node of every side, against every node of the other sides
        (the protocol's partition: ``block`` sent to both sides)."""
        self._check_nodes([n for side in sides for n in side])
        plan: dict[int, dict[str, Any]] = {}
        for index, side in enumerate(sides):
            others = sorted(n for i, other in enumerate(sides) if i != index for n in other)
            for node in side:
                plan[node] = {"kind": "block", "peers": others, "heal_after_ms": self.heal_after_ms}
        return plan

    async def _skew(self, node: int, offset_ms: int) -> str:
        everyone = await self._node_ids()
        self._check_nodes([node])
        if offset_ms >= 0:
            await self._send_faults({node: {"kind": "clock_jump", "jump_ms": offset_ms}})
            return f"n{node}'s clock jumped {offset_ms} ms ahead"
        # Clocks only jump forward; a node behind by X is every other node ahead by X, which
        # is the same skew as far as leases and election timers can tell.
        others = [n for n in everyone if n != node]
        await self._send_faults({n: {"kind": "clock_jump", "jump_ms": -offset_ms} for n in others})
        return f"n{node}'s clock is {-offset_ms} ms behind (the others jumped ahead)"

    async def _send_faults(
        self, plan: Mapping[int, dict[str, Any]], *, best_effort: bool = False
    ) -> list[int]:
        """Send each node its ``fault`` op, in node order; return the nodes that took it.

        Unless ``best_effort``, a node that cannot be reached fails the command: a partition
        with one side missing is not the partition the user asked for.
        """
        done: list[int] = []
        for node in sorted(plan):
            try:
                await self._call(node, "fault", plan[node])
            except ClientError as error:
                if error.code == "faults_disabled":
                    raise FaultsDisabled(
                        f"node {node} refuses fault injection ({error.message}); start the "
                        "cluster with shardb demo, or shardb up --allow-faults"
                    ) from error
                if best_effort and error.code in ("unreachable", "unknown_outcome", "timeout"):
                    self._log.warning("fault_skipped", node=node, error=error.message)
                    continue
                if error.code == "unknown_outcome":
                    # A node answers an op it does not know with an id-less error and closes
                    # the connection, which the node client sees only as a lost connection.
                    raise FaultsDisabled(
                        f"node {node} closed the connection on the fault op: it does not serve "
                        "it (older build) or it went down"
                    ) from error
                applied = (
                    f" (already applied on {', '.join(f'n{n}' for n in done)})" if done else ""
                )
                raise AdminError(error.code, f"node {node}: {error.message}{applied}") from error
            except AdminError as error:
                if error.code == "unsupported":
                    raise FaultsDisabled(
                        f"{error.message}: this node build has no fault injection"
                    ) from error
                raise
            done.append(node)
        return done

    def _processes_for(self, what: str) -> NodeProcesses:
        processes = self.processes
        if processes is None:
            raise FaultsDisabled(
                f".{what} needs the node processes: open the shell with shardb demo, or with "
                "shardb sql --data-dir DIR on a cluster started by shardb up --allow-faults"
            )
        if not processes.allow_faults:
            raise FaultsDisabled(
                f"this cluster was started without fault injection; .{what} needs "
                "shardb up --allow-faults (or shardb demo)"
            )
        return processes

    async def _crash(self, node: int) -> str:
        processes = self._processes_for("crash")
        try:
            pid = await trio.to_thread.run_sync(processes.crash, node)
        except ProcessControlError as error:
            raise AdminError(error.code, error.message) from error
        return f"n{node} killed (SIGKILL, pid {pid}); .restart {node} brings it back"

    async def _restart(self, node: int) -> str:
        processes = self._processes_for("restart")
        try:
            pid = await trio.to_thread.run_sync(processes.restart, node)
        except ProcessControlError as error:
            raise AdminError(error.code, error.message) from error
        return f"n{node} restarted (pid {pid}); it catches up from its log and the leaders"


@asynccontextmanager
async def open_session(
    addresses: str | Sequence[str],
    *,
    consistency: str = "linearizable",
    timeout_s: float = 10.0,
    trace: bool = False,
    processes: NodeProcesses | None = None,
    heal_after_ms: int = DEFAULT_HEAL_AFTER_MS,
) -> AsyncIterator[ClusterSession]:
    """Connect to the first reachable gateway of ``addresses`` and yield a session.

    Raises the client's ``OperationalError`` (code ``unreachable``) when no address answers.
    ``processes`` enables ``.crash``/``.restart``; the prompt's backend is the local cluster's
    default when there is one, else the backend most ranges run.
    """
    default_backend = processes.cluster.layout.backend if processes is not None else None
    async with open_connection(
        addresses, consistency=consistency, timeout=timeout_s, trace=trace
    ) as conn:
        gateway = conn.gateway or conn.addresses[0]
        book = {int(conn.node_id or 0): gateway}
        try:
            async with open_client(book, timeout_s=ADMIN_TIMEOUT_S) as admin:
                session = ClusterSession(
                    conn,
                    admin,
                    processes=processes,
                    heal_after_ms=heal_after_ms,
                    default_backend=default_backend,
                )
                try:
                    await session.meta()
                except Error as error:
                    # Statements report it with their own error; the prompt shows "?" meanwhile.
                    structlog.get_logger(__name__).warning("meta_unavailable", error=error.message)
                yield session
        except BaseExceptionGroup as group:
            # The admin client's tasks never raise, so the group holds the caller's one
            # exception: raise it as it is (an exit code is chosen by its type and code).
            if len(group.exceptions) == 1:
                exc = group.exceptions[0]
                raise exc from exc.__cause__
            raise


__all__ = [
    "DEFAULT_HEAL_AFTER_MS",
    "AdminError",
    "ClusterSession",
    "open_session",
]
