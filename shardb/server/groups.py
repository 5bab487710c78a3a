"""Reaching a consensus group from any node: locally when this node leads it, else by
forwarding the command or query bytes to the leader's client port (``propose``/``read`` ops of
``consensus.runtime.server``).

The gateway never decides which node leads a group; it asks its own node first (a local leader
costs no hop), then follows the runtime client's leader cache and ``not_leader`` hints. Only
errors that mean "nothing was proposed" are retried (``consensus.runtime.client``); a write
whose outcome is unknown surfaces as such.
"""

from __future__ import annotations

from typing import Any, Final

import trio

from consensus.api import ChangeKind, MembershipChange, NotLeader, ProposalDropped, ReadMode, Role
from consensus.host import UnknownGroup
from consensus.runtime.client import Client, ClientError
from consensus.runtime.errors import ProposalLost
from consensus.runtime.node import Node
from consensus.runtime.server import group_status_body
from consensus.types import GroupId

# A local refusal that says nothing was proposed: go through the client path, which follows
# leader hints and retries "dropped" (a transfer in progress) with backoff until the deadline.
_LOCAL_FALLBACK: Final = (NotLeader, UnknownGroup, ProposalDropped)
_READ_RETRY: Final = frozenset({"unknown_outcome", "unreachable"})
_REELECTION_WAIT_S: Final = 2.0
"""How long a write waits for the local replica to see a new leader when its current one is
suspected (a few election timeouts)."""


class GroupAccess:
    """Propose to / read from any group of the cluster, through ``node`` and ``client``."""

    def __init__(self, node: Node, client: Client) -> None:
        self._node = node
        self._client = client
        self._book: dict[int, tuple[str, int]] = {}

    @property
    def node(self) -> Node:
        return self._node

    def set_addresses(self, addresses: dict[int, tuple[str, int]]) -> None:
        """Client ports of nodes (from the meta group's node list, or configured at start);
        merged into the address book: a node the meta group has not listed yet stays
        reachable at its configured address."""
        self._book.update(addresses)
        self._client.set_addresses(self._book)

    def leader_of(self, group_id: GroupId) -> int | None:
        """This node's belief of the group's leader (None when unknown here)."""
        if group_id in self._node.group_ids():
            leader = int(self._node.status(group_id).leader)
            if leader:
                return leader
        return self._client.leader_hint(int(group_id))

    def _leads(self, group_id: GroupId) -> bool:
        if group_id not in self._node.group_ids():
            return False
        return self._node.status(group_id).role is Role.LEADER

    async def propose(self, group_id: GroupId, command: bytes, *, timeout: float) -> bytes:
        """The state machine's result. A proposal that lost its log slot to another leader's
        entry (``ProposalLost``: it will never apply) is proposed again until ``timeout``."""
        deadline = trio.current_time() + timeout
        while True:
            try:
                return await self._propose_once(
                    group_id, command, timeout=max(0.01, deadline - trio.current_time())
                )
            except (ProposalLost, ClientError) as exc:
                lost = isinstance(exc, ProposalLost) or exc.code == ProposalLost.code
                if not lost or trio.current_time() >= deadline:
                    raise

    async def _propose_once(self, group_id: GroupId, command: bytes, *, timeout: float) -> bytes:
        if self._leads(group_id):
            try:
                result = await self._node.propose(group_id, command, timeout=timeout)
                return result or b""
            except _LOCAL_FALLBACK:
                pass  # leadership moved between the check and the proposal: forward
        await self._follow_local_replica(group_id, timeout)
        reply = await self._client.request(
            "propose", int(group_id), {"command": command}, timeout_s=timeout
        )
        return _bytes(reply)

    async def _follow_local_replica(self, group_id: GroupId, timeout: float) -> None:
        """Before forwarding, prefer this node's replica's view of the leader to the client's
        cache: the cache may name a leader that has since been cut off. A write forwarded to a
        cut-off leader is accepted there and can then only time out with an unknown outcome,
        while the majority has long elected another. If the local replica follows a leader
        this node suspects (no node heartbeat), wait a little for the re-election it will see
        (its group wakes when the leader is suspected)."""
        if group_id not in self._node.group_ids():
            return
        deadline = trio.current_time() + min(timeout / 2, _REELECTION_WAIT_S)
        while True:
            leader = int(self._node.status(group_id).leader)
            suspected = {int(n) for n in self._node.suspected_peers()}
            if leader and leader not in suspected:
                if leader != int(self._node.node_id):
                    self._client.note_leader(int(group_id), leader)
                return
            if trio.current_time() >= deadline:
                return
            await trio.sleep(0.02)

    async def read(
        self, group_id: GroupId, query: bytes, *, mode: ReadMode, timeout: float
    ) -> bytes:
        if self._leads(group_id):
            try:
                return await self._node.read(group_id, query, mode=mode, timeout=timeout)
            except _LOCAL_FALLBACK:
                pass
        consistency = "lease" if mode is ReadMode.LEASE else "safe"
        deadline = trio.current_time() + timeout
        pause = 0.01
        while True:
            try:
                reply = await self._client.request(
                    "read",
                    int(group_id),
                    {"query": query, "consistency": consistency},
                    timeout_s=max(0.01, deadline - trio.current_time()),
                )
                return _bytes(reply)
            except ClientError as exc:
                # A read changes nothing: one lost with its connection (the node died while
                # it was in flight) is simply asked again elsewhere, until the deadline.
                if exc.code not in _READ_RETRY or trio.current_time() + pause >= deadline:
                    raise
                self._client.forget_leader(int(group_id))
                await trio.sleep(pause)
                pause = min(pause * 2, 0.2)

    def staleness_bound_ms(self) -> float:
        """How far behind its leader a replica that passes ``_fresh_enough`` can be: it has
        heard from the leader's node within the host's dead-node time, and it has applied
        everything it knows to be committed."""
        config = self._node.config
        return float(
            (config.node_dead_ticks + config.heartbeat_interval_ticks) * config.tick_interval_ms
        )

    def _fresh_enough(self, group_id: GroupId) -> bool:
        st = self._node.status(group_id)
        if st.leader == 0 or st.applied < st.commit:
            return False
        if st.leader == self._node.node_id:
            return True
        return st.leader not in self._node.suspected_peers()

    async def read_local(
        self, group_id: GroupId, query: bytes, *, max_staleness_ms: float | None = None
    ) -> bytes | None:
        """A stale read of this node's own replica (no barrier), or None when it has none or
        cannot promise ``max_staleness_ms`` (a replica that lost its leader, or is applying
        behind its commit index, or a bound tighter than ``staleness_bound_ms``)."""
        if group_id not in self._node.group_ids():
            return None
        if max_staleness_ms is not None and (
            max_staleness_ms < self.staleness_bound_ms() or not self._fresh_enough(group_id)
        ):
            return None
        sm = self._node.state_machine
        return await self._node.call_state_machine(sm.query, group_id, query)

    # ----------------------------------------------------------------- membership

    async def group_status(self, group_id: GroupId, node: int, *, timeout: float) -> dict[str, Any]:
        """What ``node``'s replica of the group reports (runtime ``group_status`` op): role,
        leader, commit, applied, voters, learners and, on the leader, each peer's match."""
        if node == int(self._node.node_id):
            if group_id not in self._node.group_ids():
                raise ClientError("unknown_group", f"group {group_id} is not hosted here")
            return group_status_body(self._node.status(group_id))
        deadline = trio.current_time() + timeout
        return await self._client.call(
            node, "group_status", {"group": int(group_id)}, deadline=deadline
        )

    async def leader_status(
        self, group_id: GroupId, hint: int | None, *, timeout: float
    ) -> dict[str, Any] | None:
        """The group's status as its leader reports it, or None if no leader answered: ask
        ``hint`` (or this node's belief), then the leader that node names, once."""
        candidates = [n for n in (self.leader_of(group_id), hint) if n]
        tried: set[int] = set()
        for _ in range(3):
            node = next((n for n in candidates if n not in tried), None)
            if node is None:
                return None
            tried.add(node)
            try:
                status = await self.group_status(group_id, node, timeout=timeout)
            except ClientError:
                continue
            if status.get("role") == "leader":
                return status
            leader = int(status.get("leader") or 0)
            if leader:
                candidates.insert(0, leader)
        return None

    async def range_stats(self, group_id: GroupId, node: int, *, timeout: float) -> dict[str, Any]:
        """Rows and approximate bytes of ``node``'s replica of the range (``range_stats`` op)."""
        if node == int(self._node.node_id):
            sm: Any = self._node.state_machine
            stats = await self._node.call_state_machine(sm.range_stats, group_id)
            return {"rows": stats.rows, "approx_bytes": stats.approx_bytes}
        deadline = trio.current_time() + timeout
        return await self._client.call(
            node, "range_stats", {"group": int(group_id)}, deadline=deadline
        )

    async def join_group(
        self, group_id: GroupId, backend: str, node: int, *, timeout: float
    ) -> None:
        """Have ``node`` host an empty replica of the group, to be added as a learner."""
        if node == int(self._node.node_id):
            await self._node.join_group(group_id, backend)
            return
        deadline = trio.current_time() + timeout
        await self._client.call(
            node, "join_group", {"group": int(group_id), "backend": backend}, deadline=deadline
        )

    async def change_membership(
        self, group_id: GroupId, change: MembershipChange, *, timeout: float
    ) -> None:
        """Propose ``change`` through the group's leader; returns once it committed."""
        if self._leads(group_id):
            try:
                await self._node.change_membership(group_id, change, timeout=timeout)
                return
            except _LOCAL_FALLBACK:
                pass
        changes = [[_CHANGE_NAMES[op.kind], int(op.node)] for op in change.ops]
        await self._client.request(
            "change_membership", int(group_id), {"changes": changes}, timeout_s=timeout
        )

    async def transfer_leader(self, group_id: GroupId, target: int, *, timeout: float) -> None:
        """Ask the group's leader to hand leadership to ``target`` (best effort)."""
        if self._leads(group_id):
            await self._node.transfer_leadership(group_id, target, timeout=timeout)
            return
        await self._client.request(
            "transfer_leader", int(group_id), {"node": target}, timeout_s=timeout
        )


_CHANGE_NAMES: Final = {
    ChangeKind.ADD_LEARNER: "add_learner",
    ChangeKind.ADD_VOTER: "add_voter",
    ChangeKind.REMOVE: "remove",
}


def _bytes(reply: dict[str, object]) -> bytes:
    result = reply.get("result")
    if not isinstance(result, bytes):
        raise ClientError("internal", f"a group answered {type(result).__name__}, not bytes")
    return result
