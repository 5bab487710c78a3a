"""A deterministic in-memory cluster of ``MultiGroupHost``s, for tests.

Each node is one ``MultiGroupHost`` hosting every group. Nothing happens unless a test ticks,
steps or delivers. A node's ``HostReady`` is processed in the documented order: persist every
group (into per-group in-memory storage, counting one fsync per ``HostReady`` with
``must_sync``) -> send (one *frame* per destination: the messages tuple of that peer) ->
apply (checked against a per-group oracle of what was committed at each index, so any two
replicas that ever apply different entries at one index fail at once) -> advance.

Faults: cut paths (``block``/``isolate``/``heal``), random loss, a per-message drop filter,
crashes (in-flight frames to and from the node vanish, memory is lost, storage survives) and
restarts from storage. One seed drives everything; ``trace`` records every frame so two runs
of one seed can be compared for bit-for-bit replay.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from support.cluster import DriverError, MemStorage, RecordingLogger

from consensus.api import CoreConfig, Proposed, ReadState, Role
from consensus.host import HostConfig, HostReady, MultiGroupHost
from consensus.types import ConfState, Entry, EntryKind, GroupId, Index, Message, NodeId


def kind_of(message: Message) -> str:
    """``"raft.Heartbeat"``, ``"paxos.Accept"``, ``"host.NodeHeartbeat"``, ..."""
    module = type(message.body).__module__
    prefix = {"consensus.raft.messages": "raft", "consensus.paxos.messages": "paxos"}.get(
        module, "host" if module == "consensus.host" else module
    )
    return f"{prefix}.{type(message.body).__name__}"


@dataclass
class Replica:
    """One node's copy of one group: its storage and its state machine."""

    storage: MemStorage = field(default_factory=MemStorage)
    applied_index: Index = Index(0)
    commands: list[tuple[int, bytes]] = field(default_factory=list)
    """(index, data) of every NORMAL entry applied since the last (re)start."""
    read_states: list[ReadState] = field(default_factory=list)


@dataclass
class Node:
    node_id: NodeId
    host: MultiGroupHost
    replicas: dict[GroupId, Replica]
    alive: bool = True
    incarnation: int = 0
    host_readies: int = 0
    syncs: int = 0


@dataclass(frozen=True)
class Frame:
    src: NodeId
    dst: NodeId
    messages: tuple[Message, ...]


class HostCluster:
    def __init__(
        self,
        n: int = 3,
        *,
        groups: Mapping[int, str],
        seed: int = 0,
        loss: float = 0.0,
        host: Mapping[str, Any] | None = None,
        core: Mapping[str, Any] | None = None,
        voters: Iterable[int] | None = None,
    ) -> None:
        """``n`` nodes with ids 1..n, each hosting every group in ``groups`` (group id ->
        backend name); ``voters`` (default: all nodes) is every group's bootstrap
        configuration. ``host`` and ``core`` override fields of ``HostConfig`` and
        ``CoreConfig``."""
        self.seed = seed
        self.loss = loss
        self.backends = {GroupId(g): b for g, b in sorted(groups.items())}
        self.host_overrides = dict(host or {})
        self.core_overrides = dict(core or {})
        self.node_ids = [NodeId(i) for i in range(1, n + 1)]
        chosen = self.node_ids if voters is None else [NodeId(v) for v in voters]
        self.initial_conf = ConfState(voters=tuple(sorted(chosen)))
        self.net_rng = random.Random(f"{seed}/network")
        self.frames: list[Frame] = []
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.drop_filter: Callable[[Message], bool] | None = None
        self.sent: Counter[str] = Counter()
        """Messages handed to the network, by kind (``kind_of``)."""
        self.trace: list[str] = []
        self.log_lines: list[str] = []
        """Info and warning events of every host and core: ``"<node> <event> k=v ..."``."""
        self.committed: dict[GroupId, dict[Index, tuple[int, EntryKind, bytes]]] = {
            g: {} for g in self.backends
        }
        self.nodes: dict[NodeId, Node] = {}
        for node_id in self.node_ids:
            replicas = {g: Replica() for g in self.backends}
            self.nodes[node_id] = Node(
                node_id=node_id, host=self._build_host(node_id, 0, replicas), replicas=replicas
            )

    # ------------------------------------------------------------------ construction

    def host_config(self, node_id: NodeId) -> HostConfig:
        return dataclasses.replace(HostConfig(node_id=node_id), **self.host_overrides)

    def core_config(self, node_id: NodeId, group_id: GroupId) -> CoreConfig:
        return dataclasses.replace(
            CoreConfig(node_id=node_id, group_id=group_id), **self.core_overrides
        )

    def _build_host(
        self, node_id: NodeId, incarnation: int, replicas: dict[GroupId, Replica]
    ) -> MultiGroupHost:
        host = MultiGroupHost(
            self.host_config(node_id),
            rng=random.Random(f"{self.seed}/{node_id}/{incarnation}"),
            logger=RecordingLogger(node_id, self.log_lines),
        )
        for group_id, backend in self.backends.items():
            host.add_group(
                group_id,
                backend,
                self.core_config(node_id, group_id),
                persisted=replicas[group_id].storage.persisted_state(),
                initial_conf=self.initial_conf,
            )
        return host

    # ------------------------------------------------------------------ access

    def host(self, node_id: int) -> MultiGroupHost:
        return self.nodes[NodeId(node_id)].host

    def live(self) -> list[Node]:
        return [self.nodes[n] for n in sorted(self.nodes) if self.nodes[n].alive]

    def leader(self, group_id: int) -> NodeId | None:
        """The live leader of ``group_id`` with the highest term, if any."""
        best: tuple[int, NodeId] | None = None
        for node in self.live():
            if GroupId(group_id) not in node.host.group_ids():
                continue
            st = node.host.status(GroupId(group_id))
            if st.role is Role.LEADER and (best is None or st.term > best[0]):
                best = (st.term, node.node_id)
        return best[1] if best is not None else None

    def commands(self, node_id: int, group_id: int) -> list[bytes]:
        return [d for _, d in self.nodes[NodeId(node_id)].replicas[GroupId(group_id)].commands]

    def all_quiesced(self, nodes: Iterable[int] | None = None) -> bool:
        chosen = [self.nodes[NodeId(n)] for n in nodes] if nodes is not None else self.live()
        return all(n.host.statistics().awake_groups == 0 for n in chosen)

    def group_ticks(self) -> int:
        return sum(node.host.statistics().group_ticks for node in self.live())

    # ------------------------------------------------------------------ driving

    def process(self, node_id: NodeId) -> None:
        """Drain ``node_id``'s HostReadys: persist -> send -> apply -> advance."""
        node = self.nodes[node_id]
        if not node.alive:
            return
        while node.host.has_ready():
            hr = node.host.ready()
            self.carry_out(node, hr)
            node.host.advance(hr)

    def carry_out(self, node: Node, hr: HostReady) -> None:
        node.host_readies += 1
        for gr in hr.groups:
            node.replicas[gr.group_id].storage.persist(gr.ready)
        if hr.must_sync:
            node.syncs += 1  # one fsync for every group in the HostReady
        for dst, messages in hr.messages:
            for message in messages:
                if message.src != node.node_id or message.dst != dst:
                    raise DriverError(f"message {message} filed under destination {dst}")
                self.sent[kind_of(message)] += 1
            self.trace.append(f"{node.node_id}->{dst} {[repr(m.body) for m in messages]}")
            if node.alive and (node.node_id, dst) not in self.blocked:
                self.frames.append(Frame(node.node_id, dst, messages))
        for gr in hr.groups:
            self._apply(node, gr.group_id, gr.ready.committed_entries, gr.ready.read_states)
            snap = gr.ready.apply_snapshot
            if snap is not None:
                raise DriverError("host tests do not compact; no snapshot expected")

    def _apply(
        self,
        node: Node,
        group_id: GroupId,
        entries: tuple[Entry, ...],
        read_states: tuple[ReadState, ...],
    ) -> None:
        replica = node.replicas[group_id]
        oracle = self.committed[group_id]
        for entry in entries:
            if entry.index != replica.applied_index + 1:
                raise DriverError(
                    f"node {node.node_id} group {group_id} applied {entry.index} after "
                    f"{replica.applied_index}"
                )
            identity = (int(entry.term), entry.kind, entry.data)
            first = oracle.setdefault(entry.index, identity)
            if first != identity:
                raise DriverError(
                    f"group {group_id} index {entry.index}: node {node.node_id} applied "
                    f"{identity}, another replica applied {first} (seed {self.seed})"
                )
            replica.applied_index = entry.index
            if entry.kind is EntryKind.NORMAL:
                replica.commands.append((int(entry.index), entry.data))
        replica.read_states.extend(read_states)

    def process_all(self) -> None:
        for node_id in sorted(self.nodes):
            self.process(node_id)

    def deliver_one(self) -> bool:
        if not self.frames:
            return False
        frame = self.frames.pop(0)
        node = self.nodes[frame.dst]
        if not node.alive or (frame.src, frame.dst) in self.blocked:
            return True
        for message in frame.messages:
            if self.loss and self.net_rng.random() < self.loss:
                continue
            if self.drop_filter is not None and self.drop_filter(message):
                continue
            node.host.step(message)
        self.process(frame.dst)
        return True

    def deliver_all(self, *, max_frames: int = 200_000) -> None:
        self.process_all()
        for _ in range(max_frames):
            if not self.deliver_one():
                return
        raise DriverError(f"network did not drain within {max_frames} frames")

    def tick_all(self) -> None:
        for node in self.live():
            node.host.tick()
        self.process_all()

    def run(self, ticks: int) -> None:
        """``ticks`` rounds of: tick every live host once, then deliver everything."""
        for _ in range(ticks):
            self.tick_all()
            self.deliver_all()

    def run_until(self, predicate: Callable[[], bool], *, max_ticks: int) -> int:
        """Run until ``predicate()`` holds; returns the ticks it took."""
        self.deliver_all()
        for ticks in range(max_ticks + 1):
            if predicate():
                return ticks
            self.run(1)
        raise DriverError(f"condition not reached within {max_ticks} ticks (seed {self.seed})")

    # ------------------------------------------------------------------ conveniences

    def elect_all(self, node_id: int) -> None:
        """Have ``node_id`` campaign in every group; it must win all of them."""
        for group_id in self.backends:
            self.host(node_id).campaign(group_id)
        self.deliver_all()
        self.run_until(lambda: all(self.leader(g) == node_id for g in self.backends), max_ticks=50)

    def propose(self, group_id: int, command: bytes) -> Proposed:
        leader = self.leader(group_id)
        if leader is None:
            raise DriverError(f"group {group_id} has no leader")
        proposed = self.host(leader).propose(GroupId(group_id), command)
        self.process(leader)
        return proposed

    def applied_everywhere(self, group_id: int, command: bytes) -> bool:
        return all(command in self.commands(n.node_id, group_id) for n in self.live())

    def check_consistent(self) -> None:
        """State machine safety per group: live replicas' commands are prefixes of each
        other (the oracle in ``_apply`` already checked each index)."""
        for group_id in self.backends:
            states = sorted(
                (len(n.replicas[group_id].commands), n.node_id, n.replicas[group_id].commands)
                for n in self.live()
            )
            longest = states[-1][2]
            for length, node_id, commands in states:
                if longest[:length] != commands:
                    raise DriverError(f"node {node_id} group {group_id} diverged")

    # ------------------------------------------------------------------ faults

    def block(self, src: int, dst: int) -> None:
        self.blocked.add((NodeId(src), NodeId(dst)))

    def isolate(self, node_id: int) -> None:
        for other in self.node_ids:
            if other != node_id:
                self.block(node_id, other)
                self.block(other, node_id)

    def heal(self) -> None:
        self.blocked.clear()

    def join(self, node_id: int, group_id: int) -> None:
        """Host an empty replica of ``group_id`` on ``node_id`` with an empty configuration
        (``Node.join_group``): it learns the membership from the leader."""
        nid, gid = NodeId(node_id), GroupId(group_id)
        node = self.nodes[nid]
        node.replicas[gid] = Replica()
        node.host.add_group(
            gid, self.backends[gid], self.core_config(nid, gid), initial_conf=ConfState()
        )
        self.process(nid)

    def crash(self, node_id: int) -> None:
        nid = NodeId(node_id)
        self.nodes[nid].alive = False
        self.frames = [f for f in self.frames if nid not in (f.src, f.dst)]

    def restart(self, node_id: int) -> None:
        """Rebuild the node's host from what its groups persisted."""
        nid = NodeId(node_id)
        old = self.nodes[nid]
        replicas = {g: Replica(storage=r.storage) for g, r in old.replicas.items()}
        incarnation = old.incarnation + 1
        self.nodes[nid] = Node(
            node_id=nid,
            host=self._build_host(nid, incarnation, replicas),
            replicas=replicas,
            incarnation=incarnation,
        )
