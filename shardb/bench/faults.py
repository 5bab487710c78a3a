"""The fault timeline of a scenario, applied to real node processes.

Process-level faults go through ``LocalCluster``: ``kill_leader`` (kill -9 the current leader
of a range, found by asking every live node for its ``status``; heal = start it again),
``pause_node`` (SIGSTOP, heal = SIGCONT) and ``restart`` (kill -9, then start after
``heal_after_s``, default at once). Network and clock faults go through each node's ``fault``
admin op (docs/client-protocol.md): ``partition`` is ``block`` sent to both sides of every cut
link, ``slow_link`` is ``delay`` on both directions (with its ``jitter_ms``: each batch waits
``delay +- jitter``, per-link FIFO kept; see ``consensus.runtime.faults``), ``clock_skew`` is
``clock_jump``; heal sends ``unblock``/``heal``. A node that refuses the op (started without
``--allow-faults``, or a build without the op) makes that fault *not applied*: the event
carries the error and the run goes on, so the report shows it instead of a silently healthy
run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from consensus.runtime.client import Client, ClientError
from shardb.cluster.local import ClusterError, LocalCluster
from shardb.workload.scenario import FaultKind, FaultSpec

NS_PER_S: Final = 1_000_000_000
ADMIN_TIMEOUT_S: Final = 2.0
RESTART_READY_TIMEOUT_S: Final = 20.0


class FaultError(Exception):
    """A fault could not be applied (no leader to kill, the node refused the op, ...)."""


@dataclass(slots=True)
class FaultEvent:
    label: str
    kind: str
    planned_at_s: float
    nodes: list[int] = field(default_factory=list)
    ranges: list[int] = field(default_factory=list)
    at_ns: int | None = None
    """When it was applied, ns since the run start."""
    healed_ns: int | None = None
    error: str | None = None
    note: str = ""
    out_by_range: dict[int, list[int]] = field(default_factory=dict)
    """For a partition: range id -> the replicas it cut off from a majority of that range's
    replicas (they can neither lead it nor commit on it until the heal). Empty for a range
    means the partition took no replica of it out."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "planned_at_s": self.planned_at_s,
            "nodes": list(self.nodes),
            "ranges": list(self.ranges),
            "at_ns": self.at_ns,
            "healed_ns": self.healed_ns,
            "error": self.error,
            "note": self.note,
            "out_by_range": {str(r): list(n) for r, n in sorted(self.out_by_range.items())},
        }


def fault_label(spec: FaultSpec) -> str:
    args = ",".join(f"{k}={_fmt(v)}" for k, v in spec.args)
    return f"{spec.kind.value}({args})" if args else spec.kind.value


def _fmt(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + " ".join("-".join(str(n) for n in item) for item in value) + "]"
    return str(value)


def cut_off_replicas(links: Sequence[tuple[int, int]], replicas: Sequence[int]) -> list[int]:
    """The replicas that, with ``links`` cut, reach (directly, counting themselves) fewer than a
    majority of ``replicas``: they cannot lead or commit for that group until the heal. A
    partial partition (links 1-2 and 1-3 of five nodes) cuts nobody off from the whole
    cluster, but does cut node 1 off in a group whose replicas are 1, 2 and 3."""
    cut = {frozenset(link) for link in links}
    majority = len(replicas) // 2 + 1
    return sorted(
        r
        for r in replicas
        if sum(1 for o in replicas if o == r or frozenset((r, o)) not in cut) < majority
    )


class ClusterView:
    """Who leads which range, from the nodes themselves (``meta`` for range -> group,
    ``status`` of every live node for the group's leader)."""

    def __init__(self, cluster: LocalCluster, admin: Client) -> None:
        self.cluster = cluster
        self.admin = admin

    def live_nodes(self) -> list[int]:
        return [n for n in self.cluster.node_ids if self.cluster.running(n)]

    async def call(self, node: int, op: str, args: Mapping[str, Any]) -> dict[str, Any]:
        return await self.admin.call(
            node, op, dict(args), deadline=trio.current_time() + ADMIN_TIMEOUT_S
        )

    async def meta(self) -> dict[str, Any]:
        last: Exception | None = None
        for node in self.live_nodes():
            try:
                return await self.call(node, "meta", {})
            except ClientError as exc:
                last = exc
        raise FaultError(f"no live node answered meta: {last}")

    async def group_of_range(self, range_id: int) -> tuple[int, list[int]]:
        for descriptor in (await self.meta())["ranges"]:
            if int(descriptor["range_id"]) == range_id:
                return int(descriptor["group_id"]), [int(n) for n in descriptor["replicas"]]
        raise FaultError(f"range {range_id} is not in the meta group's range map")

    async def leader_of_range(self, range_id: int, *, timeout_s: float = 10.0) -> int:
        """The node that currently leads the range's group (highest term among the nodes that
        say they lead it), waiting up to ``timeout_s`` for one."""
        group, _ = await self.group_of_range(range_id)
        with trio.move_on_after(timeout_s):
            while True:
                best: tuple[int, int] | None = None
                for node in self.live_nodes():
                    try:
                        status = await self.call(node, "status", {})
                    except ClientError:
                        continue
                    for g in status.get("groups", []):
                        if int(g["group"]) == group and g["role"] == "leader":
                            candidate = (int(g["term"]), node)
                            best = candidate if best is None else max(best, candidate)
                if best is not None:
                    return best[1]
                await trio.sleep(0.05)
        raise FaultError(f"range {range_id} (group {group}) has no leader")

    async def resolve_node(self, ref: object, range_id: int | None) -> int:
        """A node id, or "leader"/"follower" of ``range_id`` (default range 1)."""
        if isinstance(ref, int):
            return ref
        rng = range_id or 1
        leader = await self.leader_of_range(rng)
        if ref == "leader":
            return leader
        _, replicas = await self.group_of_range(rng)
        followers = sorted(n for n in replicas if n != leader)
        if not followers:
            raise FaultError(f"range {rng} has no follower")
        return followers[0]


class FaultRunner:
    """Applies ``FaultSpec``s at their times and heals them; records ``FaultEvent``s."""

    def __init__(
        self,
        view: ClusterView,
        *,
        start_ns: int,
        now_ns: Callable[[], int],
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.view = view
        self.start_ns = start_ns
        self.now_ns = now_ns
        self.events: list[FaultEvent] = []
        self._log = log

    def _elapsed(self) -> int:
        return self.now_ns() - self.start_ns

    async def run(self, faults: Sequence[FaultSpec]) -> None:
        """Each fault in its own task: faults may overlap."""
        async with trio.open_nursery() as nursery:
            for spec in faults:
                event = FaultEvent(
                    label=fault_label(spec), kind=spec.kind.value, planned_at_s=spec.at_s
                )
                self.events.append(event)
                nursery.start_soon(self._one, spec, event)

    async def _sleep_until_s(self, at_s: float) -> None:
        await trio.sleep_until((self.start_ns + round(at_s * NS_PER_S)) / NS_PER_S)

    async def _one(self, spec: FaultSpec, event: FaultEvent) -> None:
        await self._sleep_until_s(spec.at_s)
        try:
            heal = await self._apply(spec, event)
        except (FaultError, ClusterError, ClientError) as exc:
            event.error = str(exc)
            self._log(f"fault {event.label} not applied: {exc}")
            return
        self._log(f"fault {event.label} applied to nodes {event.nodes}")
        if heal is None:
            return
        heal_after = spec.heal_after_s
        if heal_after is None:
            if spec.kind is not FaultKind.RESTART:
                return  # lasts until the end of the run
            heal_after = 0.0
        await self._sleep_until_s(spec.at_s + heal_after)
        try:
            await heal()
        except (FaultError, ClusterError, ClientError) as exc:
            event.note = f"heal failed: {exc}"
            return
        event.healed_ns = self._elapsed()
        self._log(f"fault {event.label} healed")

    async def _apply(self, spec: FaultSpec, event: FaultEvent) -> Callable[[], Any] | None:
        view = self.view
        cluster = view.cluster
        range_arg = spec.arg("range")
        range_id = int(range_arg) if isinstance(range_arg, int) else None
        if range_id is not None:
            event.ranges = [range_id]
        match spec.kind:
            case FaultKind.KILL_LEADER:
                node = await view.leader_of_range(range_id or 1)
                event.ranges = [range_id or 1]
                event.nodes = [node]
                event.at_ns = self._elapsed()
                cluster.kill9(node)
                return _starter(view, [node])
            case FaultKind.RESTART:
                ref = spec.arg("node")
                nodes = (
                    view.live_nodes() if ref == "all" else [await view.resolve_node(ref, range_id)]
                )
                event.nodes = nodes
                event.at_ns = self._elapsed()
                for node in nodes:
                    cluster.kill9(node)
                return _starter(view, nodes)
            case FaultKind.PAUSE_NODE:
                node = await view.resolve_node(spec.arg("node"), range_id)
                event.nodes = [node]
                event.at_ns = self._elapsed()
                cluster.pause(node)

                async def resume() -> None:
                    cluster.resume(node)

                return resume
            case FaultKind.PARTITION:
                links = await self._partition_links(spec, range_id)
                event.nodes = sorted({n for link in links for n in link})
                # Who is really out depends on each range's replica set: asked before the
                # block, while every node still answers.
                for descriptor in (await view.meta())["ranges"]:
                    replicas = [int(n) for n in descriptor["replicas"]]
                    event.out_by_range[int(descriptor["range_id"])] = cut_off_replicas(
                        links, replicas
                    )
                await self._fault_op_pairs(links, {"kind": "block"}, event)

                async def unblock() -> None:
                    await self._fault_op_pairs(links, {"kind": "unblock"}, None)

                return unblock
            case FaultKind.SLOW_LINK:
                links = await self._slow_links(spec, range_id)
                event.nodes = sorted({n for link in links for n in link})
                delay = spec.arg("delay_ms")
                jitter = spec.arg("jitter_ms", 0)
                await self._fault_op_pairs(
                    links, {"kind": "delay", "delay_ms": delay, "jitter_ms": jitter}, event
                )

                async def undelay() -> None:
                    await self._fault_op_pairs(links, {"kind": "delay", "delay_ms": 0}, None)

                return undelay
            case FaultKind.CLOCK_SKEW:
                node = await view.resolve_node(spec.arg("node"), range_id)
                skew = spec.arg("skew_ms")
                if not isinstance(skew, int) or skew <= 0:
                    raise FaultError(f"clock_jump only moves a clock forward; skew_ms={skew}")
                event.nodes = [node]
                await _wait_answers(view, node)  # it may be restarting (lagging-replica)
                event.at_ns = self._elapsed()
                await view.call(node, "fault", {"kind": "clock_jump", "jump_ms": skew})
                return None  # a jump forward is not undone; time simply goes on from there

    async def _partition_links(
        self, spec: FaultSpec, range_id: int | None
    ) -> list[tuple[int, int]]:
        nodes = list(self.view.cluster.node_ids)
        groups = spec.arg("groups")
        links = spec.arg("links")
        if isinstance(links, tuple):
            return [(int(a), int(b)) for a, b in links]
        if isinstance(groups, tuple):
            side = {n: i for i, group in enumerate(groups) for n in group}
            return [
                (a, b) for a in nodes for b in nodes if a < b and side.get(a, -1) != side.get(b, -2)
            ]
        isolated = await self.view.resolve_node(spec.arg("isolate"), range_id)
        return [(isolated, n) for n in nodes if n != isolated]

    async def _slow_links(self, spec: FaultSpec, range_id: int | None) -> list[tuple[int, int]]:
        links = spec.arg("links")
        if isinstance(links, tuple):
            return [(int(a), int(b)) for a, b in links]
        node = await self.view.resolve_node(spec.arg("node"), range_id)
        return [(node, n) for n in self.view.cluster.node_ids if n != node]

    async def _fault_op_pairs(
        self, links: Sequence[tuple[int, int]], args: dict[str, Any], event: FaultEvent | None
    ) -> None:
        """Send ``args`` to both ends of every link, each naming the other end as a peer."""
        peers: dict[int, set[int]] = {}
        for a, b in links:
            peers.setdefault(a, set()).add(b)
            peers.setdefault(b, set()).add(a)
        for node in sorted(peers):
            if self.view.cluster.running(node):
                await _wait_answers(self.view, node)  # it may be restarting
        if event is not None:
            event.at_ns = self._elapsed()
        for node in sorted(peers):
            try:
                await self.view.call(node, "fault", {**args, "peers": sorted(peers[node])})
            except ClientError as exc:
                if exc.code in ("unknown_outcome", "bad_request"):
                    raise FaultError(
                        f"node {node} does not serve the fault op ({exc.code}: {exc})"
                    ) from exc
                raise


def _starter(view: ClusterView, nodes: list[int]) -> Callable[[], Any]:
    """Heal for kill/restart: spawn the nodes again. It does not wait for them to answer
    (``healed_ns`` is the spawn); a fault op aimed at one of them waits instead."""

    async def start() -> None:
        for node in nodes:
            view.cluster.start(node)

    return start


async def _wait_answers(view: ClusterView, node: int) -> None:
    """Until ``node`` answers ``status``: a fault op sent to a node still starting up (a fault
    planned just after a restart heal, as lagging-replica's clock skew is under
    ``--duration``) would otherwise find its port closed and be recorded as not applied."""
    last: Exception | None = None
    with trio.move_on_after(RESTART_READY_TIMEOUT_S):
        while True:
            try:
                await view.call(node, "status", {})
                return
            except ClientError as exc:
                last = exc
                await trio.sleep(0.05)
    raise FaultError(f"node {node} did not answer within {RESTART_READY_TIMEOUT_S} s: {last}")


def wall_ns() -> int:
    """Monotonic ns for code outside trio (tests)."""
    return time.monotonic_ns()
