"""A deterministic in-memory cluster of consensus cores, for any backend.

Builds N cores through ``consensus.backends.core_factory(backend)`` with seeded rngs and
drives them by hand: nothing happens unless a test ticks, steps or delivers. Each node's
``Ready`` is processed in the documented order: persist (into a small in-memory store kept
per node, so ``restart`` can rebuild the core from exactly what was persisted) -> send (onto
one FIFO network queue) -> apply (recorded per node) -> advance.

The state machine is a list of applied NORMAL commands; its snapshot is that list encoded
with msgpack, so ``compact`` and snapshot transfer work for any backend.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from consensus.api import (
    ConsensusCore,
    CoreConfig,
    PersistedState,
    Proposed,
    ReadState,
    Ready,
    Role,
)
from consensus.backends import core_factory
from consensus.types import (
    ConfState,
    Entry,
    EntryKind,
    GroupId,
    HardState,
    Index,
    Message,
    NodeId,
    Snapshot,
)

GROUP = GroupId(1)


class DriverError(AssertionError):
    """The cluster observed something a correct core must never do."""


class RecordingLogger:
    """A ``consensus.api.Logger`` that appends ``"<node> <event> k=v ..."`` lines to a shared
    list, in a deterministic format suitable for golden files."""

    def __init__(self, node_id: NodeId, sink: list[str], *, debug: bool = False) -> None:
        self._node_id = node_id
        self._sink = sink
        self._debug = debug

    def _record(self, event: str, kw: dict[str, Any]) -> None:
        args = " ".join(f"{k}={kw[k]}" for k in sorted(kw))
        self._sink.append(f"{self._node_id} {event}" + (f" {args}" if args else ""))

    def debug(self, event: str, **kw: Any) -> None:
        if self._debug:
            self._record(event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._record(event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._record(event, kw)


@dataclass
class MemStorage:
    """What one node has durably written."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: dict[Index, Entry] = field(default_factory=dict)
    syncs: int = 0

    def persist(self, rd: Ready) -> None:
        if rd.truncate_from is not None:
            for index in [i for i in self.entries if i >= rd.truncate_from]:
                del self.entries[index]
        for entry in rd.entries:
            self.entries[entry.index] = entry
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            for index in [i for i in self.entries if i <= rd.snapshot.meta.index]:
                del self.entries[index]
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.must_sync:
            self.syncs += 1

    def persisted_state(self) -> PersistedState:
        floor = self.snapshot.meta.index if self.snapshot is not None else 0
        return PersistedState(
            hard_state=self.hard_state,
            snapshot=self.snapshot,
            entries=tuple(self.entries[i] for i in sorted(self.entries) if i > floor),
        )


@dataclass
class Node:
    node_id: NodeId
    core: ConsensusCore
    storage: MemStorage
    alive: bool = True
    applied_index: Index = Index(0)
    state: list[tuple[int, bytes]] = field(default_factory=list)
    """(index, command) of every NORMAL entry applied: the state machine."""
    applied_entries: list[Entry] = field(default_factory=list)
    """Every entry applied since the last (re)start or snapshot restore, NOOPs included."""
    read_states: list[ReadState] = field(default_factory=list)
    readies: int = 0


def encode_state(state: list[tuple[int, bytes]]) -> bytes:
    packed: bytes = msgpack.packb([[i, d] for i, d in state])
    return packed


def decode_state(data: bytes) -> list[tuple[int, bytes]]:
    if not data:
        return []
    return [(int(i), bytes(d)) for i, d in msgpack.unpackb(data)]


class Cluster:
    def __init__(
        self,
        n: int = 3,
        *,
        backend: str = "raft",
        seed: int = 0,
        voters: Iterable[int] | None = None,
        learners: Iterable[int] = (),
        ids: Iterable[int] | None = None,
        debug_log: bool = False,
        **config: Any,
    ) -> None:
        """``n`` nodes with ids 1..n (or ``ids``); ``voters`` (default: all) and ``learners``
        form the bootstrap configuration; ``config`` overrides ``CoreConfig`` fields."""
        self.backend = backend
        self.factory = core_factory(backend)
        self.seed = seed
        self.config_overrides = config
        self.debug_log = debug_log
        node_ids = [NodeId(i) for i in (ids if ids is not None else range(1, n + 1))]
        voter_ids = [NodeId(v) for v in (voters if voters is not None else node_ids)]
        self.initial_conf = ConfState(
            voters=tuple(sorted(voter_ids)), learners=tuple(sorted(NodeId(x) for x in learners))
        )
        self.log_lines: list[str] = []
        self.network: list[Message] = []
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.delivered = 0
        self.nodes: dict[NodeId, Node] = {}
        for node_id in node_ids:
            self.nodes[node_id] = self._build(node_id, MemStorage(), self.initial_conf)

    # ------------------------------------------------------------------ construction

    def config(self, node_id: NodeId) -> CoreConfig:
        return dataclasses.replace(
            CoreConfig(node_id=node_id, group_id=GROUP), **self.config_overrides
        )

    def _build(self, node_id: NodeId, storage: MemStorage, conf: ConfState) -> Node:
        # One rng per node and incarnation, derived from the seed: runs replay exactly.
        incarnation = self.nodes[node_id].readies if node_id in self.nodes else 0
        rng = random.Random(f"{self.seed}/{node_id}/{incarnation}")
        core = self.factory(
            self.config(node_id),
            rng=rng,
            persisted=storage.persisted_state(),
            initial_conf=conf,
            logger=RecordingLogger(node_id, self.log_lines, debug=self.debug_log),
        )
        node = Node(node_id=node_id, core=core, storage=storage)
        snap = storage.snapshot
        if snap is not None:
            node.state = decode_state(snap.data)
            node.applied_index = snap.meta.index
        return node

    def add_node(self, node_id: int) -> Node:
        """A new, empty node that learns the membership from the leader."""
        nid = NodeId(node_id)
        node = self._build(nid, MemStorage(), ConfState())
        self.nodes[nid] = node
        return node

    # ------------------------------------------------------------------ access

    def core(self, node_id: int) -> ConsensusCore:
        return self.nodes[NodeId(node_id)].core

    def applied(self, node_id: int) -> list[bytes]:
        """Commands (NORMAL entries) applied by ``node_id``, in order."""
        return [d for _, d in self.nodes[NodeId(node_id)].state]

    def read_states(self, node_id: int) -> list[ReadState]:
        return self.nodes[NodeId(node_id)].read_states

    def leader(self) -> NodeId | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, NodeId] | None = None
        for node_id, node in sorted(self.nodes.items()):
            if not node.alive:
                continue
            st = node.core.status()
            if st.role is Role.LEADER and (best is None or st.term > best[0]):
                best = (st.term, node_id)
        return best[1] if best is not None else None

    def propose(self, node_id: int, command: bytes) -> Proposed:
        proposed = self.core(node_id).propose(command)
        self.process(node_id)
        return proposed

    # ------------------------------------------------------------------ driving

    def process(self, node_id: int) -> None:
        """Drain ``node_id``'s Readys: persist -> send -> apply -> advance."""
        node = self.nodes[NodeId(node_id)]
        if not node.alive:
            return
        while node.core.has_ready():
            rd = node.core.ready()
            node.readies += 1
            node.storage.persist(rd)
            for message in rd.messages:
                self._send(message)
            self._apply(node, rd)
            node.core.advance(rd)

    def process_all(self) -> None:
        for node_id in sorted(self.nodes):
            self.process(node_id)

    def _apply(self, node: Node, rd: Ready) -> None:
        if rd.apply_snapshot is not None:
            node.state = decode_state(rd.apply_snapshot.data)
            node.applied_index = rd.apply_snapshot.meta.index
            node.applied_entries = []
        for entry in rd.committed_entries:
            if entry.index != node.applied_index + 1:
                raise DriverError(
                    f"node {node.node_id} applied {entry.index} after {node.applied_index}"
                )
            node.applied_index = entry.index
            node.applied_entries.append(entry)
            if entry.kind is EntryKind.NORMAL:
                node.state.append((int(entry.index), entry.data))
        node.read_states.extend(rd.read_states)

    def _send(self, message: Message) -> None:
        if (message.src, message.dst) in self.blocked:
            return
        self.network.append(message)

    def deliver_one(self) -> bool:
        """Deliver the oldest in-flight message (dropping it if its path is cut or its
        destination is down). Returns False if the network was empty."""
        if not self.network:
            return False
        message = self.network.pop(0)
        node = self.nodes.get(message.dst)
        if node is None or not node.alive or (message.src, message.dst) in self.blocked:
            return True
        self.delivered += 1
        node.core.step(message)
        self.process(message.dst)
        return True

    def deliver_all(self, *, max_messages: int = 100_000) -> int:
        """Process and deliver until nothing is in flight; returns messages delivered."""
        start = self.delivered
        self.process_all()
        for _ in range(max_messages):
            if not self.deliver_one():
                return self.delivered - start
        raise DriverError(f"network did not quiesce within {max_messages} messages")

    def take_messages(self) -> list[Message]:
        """Remove and return everything in flight (for tests that reorder or inspect)."""
        self.process_all()
        taken, self.network = self.network, []
        return taken

    def inject(self, message: Message) -> None:
        """Deliver one specific message now (e.g. a duplicate or a stale one)."""
        node = self.nodes[message.dst]
        node.core.step(message)
        self.process(message.dst)

    def tick(self, node_id: int, ticks: int = 1) -> None:
        node = self.nodes[NodeId(node_id)]
        for _ in range(ticks):
            if node.alive:
                node.core.tick()
        self.process(node_id)

    def tick_all(self, ticks: int = 1) -> None:
        """Tick every live node ``ticks`` times (no delivery in between)."""
        for _ in range(ticks):
            for node_id in sorted(self.nodes):
                if self.nodes[node_id].alive:
                    self.nodes[node_id].core.tick()
            self.process_all()

    def run(self, ticks: int) -> None:
        """``ticks`` rounds of: tick everyone once, then deliver everything."""
        for _ in range(ticks):
            self.tick_all()
            self.deliver_all()

    # ------------------------------------------------------------------ faults

    def drop(self, src: int, dst: int) -> None:
        """Cut the one-way path src -> dst (until ``heal``)."""
        self.blocked.add((NodeId(src), NodeId(dst)))

    def isolate(self, node_id: int) -> None:
        nid = NodeId(node_id)
        for other in self.nodes:
            if other != nid:
                self.blocked.add((nid, other))
                self.blocked.add((other, nid))

    def heal(self) -> None:
        self.blocked.clear()

    def crash(self, node_id: int) -> None:
        """Stop the node; its in-memory state is lost, its storage survives."""
        nid = NodeId(node_id)
        self.nodes[nid].alive = False
        self.network = [m for m in self.network if m.dst != nid and m.src != nid]

    def restart(self, node_id: int) -> Node:
        """Rebuild the core from what it persisted, as a real restart would."""
        nid = NodeId(node_id)
        old = self.nodes[nid]
        node = self._build(nid, old.storage, self.initial_conf)
        node.readies = old.readies
        self.nodes[nid] = node
        return node

    # ------------------------------------------------------------------ conveniences

    def elect(self, node_id: int) -> NodeId:
        """Have ``node_id`` campaign and deliver until quiet; it must end up leader."""
        self.core(node_id).campaign()
        self.deliver_all()
        leader = self.leader()
        if leader != node_id:
            raise DriverError(f"node {node_id} campaigned but the leader is {leader}")
        return leader

    def compact(self, node_id: int, index: int | None = None) -> Snapshot | None:
        """Snapshot node ``node_id``'s state machine at ``index`` (default: applied)."""
        node = self.nodes[NodeId(node_id)]
        at = Index(node.applied_index if index is None else index)
        data = encode_state([(i, d) for i, d in node.state if i <= at])
        node.core.compact(at, data)
        self.process(node_id)
        return node.storage.snapshot

    def check_consistent(self) -> None:
        """Safety (§5.4.3 State Machine Safety): applied states are prefixes of each other."""
        states = sorted((len(node.state), node.node_id, node.state) for node in self.nodes.values())
        longest = states[-1][2]
        for length, node_id, state in states:
            if longest[:length] != state:
                raise DriverError(f"node {node_id} applied a different history")
