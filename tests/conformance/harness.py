"""A checked, backend-agnostic cluster for the conformance suite.

``CheckedCluster`` is the shared in-memory driver (``tests/support/cluster.py``) with checks
that run on **every** ``Ready`` of every node, whatever the test is doing:

* **State machine safety** (Raft §5.4.3; Paxos Made Simple §2.2 "only a single value is
  chosen"): the first entry any node applies at an index fixes that index's identity
  ``(term, kind, data)``; every other application there, on any node, in any incarnation,
  and every snapshot a node restores from, must agree.
* **must_sync** (``consensus.api`` step 1): a Ready that changes the term/ballot or the vote,
  or carries entries, a truncation or a snapshot, must ask for an fsync.
* **No acknowledgement before durability** (Raft Figure 2 "respond after persisting";
  Paxos Made Simple §2.3): a message that acknowledges a vote, a promise or log entries must
  be backed by what the node's storage holds once the same Ready has been persisted. The
  driver persists before it sends, so an ack whose backing state only arrives in a later
  Ready is caught here. This is the one place that reads backend message bodies, through the
  small ``ACK_CHECKS`` table below: everything else in the suite uses only the public interface.
* **Limits**: a message body with ``entries`` carries at most ``max_msg_bytes`` of them unless
  it carries a single entry; a body with a snapshot ``meta`` and ``data`` carries at most
  ``max_snapshot_chunk_bytes``.

It also keeps a digest of every Ready (determinism) and counts delivered messages by kind
(message-count measurements). A failure raises ``ConformanceViolation`` naming the seed.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

# pytest puts tests/ on sys.path (tests/ itself is not a package), as for tests/raft.
from support.cluster import Cluster, MemStorage, Node, decode_state

from consensus.api import (
    ChangeKind,
    ChangeOp,
    CoreConfig,
    MembershipChange,
    NotLeader,
    ProposalDropped,
    Proposed,
    Ready,
    Role,
)
from consensus.types import (
    Entry,
    EntryKind,
    HardState,
    Index,
    Message,
    NodeId,
    SnapshotMeta,
)

BACKENDS = ("raft", "paxos")

Identity = tuple[int, int, EntryKind, bytes]
"""What makes two log entries the same value (ADR 0002): (index, term, kind, data);
``accepted_ballot`` is per-acceptor Paxos bookkeeping and deliberately left out."""


class ConformanceViolation(AssertionError):
    """A core broke a property every backend must keep."""


def identity(entry: Entry) -> Identity:
    return (int(entry.index), int(entry.term), entry.kind, entry.data)


def _covers(storage: MemStorage, index: int) -> bool:
    """Whether ``storage`` durably holds log position ``index`` (entry or snapshot)."""
    snap = storage.snapshot
    if snap is not None and snap.meta.index >= index:
        return True
    return index <= 0 or Index(index) in storage.entries


# ------------------------------------------------------------------ acknowledgement table
#
# For each backend: which message bodies acknowledge persisted state, and what storage must
# hold for them to be honest. Each checker returns an error string or None.


def _raft_ack(msg: Message, storage: MemStorage) -> str | None:
    from consensus.raft.messages import (
        AppendEntriesResponse,
        InstallSnapshotResponse,
        RequestVoteResponse,
    )

    body = msg.body
    hs = storage.hard_state
    match body:
        case RequestVoteResponse(granted=True, pre_vote=False):
            if hs.term != body.term or hs.vote != msg.dst:
                return f"vote for {msg.dst} in term {body.term} sent before it was persisted"
        case AppendEntriesResponse(success=True):
            if hs.term < body.term:
                return f"append ack in term {body.term} before the term was persisted"
            if not _covers(storage, body.index):
                return f"append ack up to {body.index} before the entries were persisted"
        case InstallSnapshotResponse(done=True):
            if not _covers(storage, body.index):
                return f"snapshot ack at {body.index} before the snapshot was persisted"
        case _:
            pass
    return None


def _paxos_ack(msg: Message, storage: MemStorage) -> str | None:
    from consensus.paxos.messages import (
        Accepted,
        HeartbeatAck,
        InstallSnapshotResponse,
        Promise,
    )

    body = msg.body
    hs = storage.hard_state
    match body:
        case Promise():
            if hs.term < body.ballot:
                return f"promise of ballot {body.ballot} sent before it was persisted"
            for entry in body.entries:
                held = storage.entries.get(entry.index)
                if held is None or identity(held) != identity(entry):
                    return f"promise reports slot {entry.index} that is not persisted"
        case Accepted() | HeartbeatAck():
            if hs.term < body.ballot:
                return f"acceptance at ballot {body.ballot} before the promise was persisted"
            floor = storage.snapshot.meta.index if storage.snapshot is not None else 0
            for slot in range(max(floor, hs.commit) + 1, body.accepted_through + 1):
                held = storage.entries.get(Index(slot))
                if held is None or held.accepted_ballot != body.ballot:
                    return (
                        f"acceptance through {body.accepted_through} at ballot {body.ballot} "
                        f"but slot {slot} is not persisted at that ballot"
                    )
        case InstallSnapshotResponse(done=True):
            if not _covers(storage, body.snapshot_index):
                return f"snapshot ack at {body.snapshot_index} before it was persisted"
        case _:
            pass
    return None


ACK_CHECKS: dict[str, Callable[[Message, MemStorage], str | None]] = {
    "raft": _raft_ack,
    "paxos": _paxos_ack,
}


# ------------------------------------------------------------------ generic Ready checks


def must_sync_problem(rd: Ready, persisted_before: HardState) -> str | None:
    """Why ``rd`` needed ``must_sync`` but lacks it (``persisted_before`` is the HardState
    storage held before this Ready), or None."""
    if rd.must_sync:
        return None
    hs = rd.hard_state
    if hs is not None and (hs.term != persisted_before.term or hs.vote != persisted_before.vote):
        return "term/ballot or vote changed without must_sync"
    if rd.entries:
        return f"{len(rd.entries)} entries without must_sync"
    if rd.truncate_from is not None:
        return "log truncation without must_sync"
    if rd.snapshot is not None:
        return "snapshot without must_sync"
    return None


def limit_problem(msg: Message, cfg: CoreConfig) -> str | None:
    """Size limits, read off any body that carries entries or a snapshot chunk."""
    body = msg.body
    entries = getattr(body, "entries", None)
    if isinstance(entries, tuple) and len(entries) > 1:
        size = sum(e.size_bytes() for e in entries if isinstance(e, Entry))
        if size > cfg.max_msg_bytes:
            return f"{type(body).__name__} carries {size} > max_msg_bytes={cfg.max_msg_bytes}"
    meta = getattr(body, "meta", None)
    data = getattr(body, "data", None)
    if (
        isinstance(meta, SnapshotMeta)
        and isinstance(data, bytes)
        and len(data) > cfg.max_snapshot_chunk_bytes
    ):
        return f"snapshot chunk of {len(data)} > {cfg.max_snapshot_chunk_bytes} bytes"
    return None


# ------------------------------------------------------------------ the cluster


class CheckedCluster(Cluster):
    def __init__(self, n: int = 3, *, backend: str, seed: int = 0, **kw: Any) -> None:
        self.chosen: dict[int, Identity] = {}
        """index -> identity of the value every node must apply there."""
        self.history: dict[NodeId, dict[int, Identity]] = {}
        """Per node, across restarts: everything it ever applied."""
        self.digest = hashlib.sha256()
        self.kinds_delivered: Counter[str] = Counter()
        self.entries_delivered = 0
        """Log entries carried by delivered messages (any body with an ``entries`` tuple)."""
        self.readies_seen: list[tuple[NodeId, Ready]] = []
        """With ``keep_readies``: every Ready processed, in order."""
        self.persisted_before: list[HardState] = []
        """With ``keep_readies``: the node's persisted HardState before each of those."""
        self.keep_readies = False
        self.leader_terms: set[int] = set()
        """Terms (ballots) in which a leader was observed; tests fill it in."""
        super().__init__(n, backend=backend, seed=seed, **kw)
        self._ack_check = ACK_CHECKS[backend]

    def fail(self, what: str) -> ConformanceViolation:
        return ConformanceViolation(f"[backend={self.backend} seed={self.seed}] {what}")

    # -------------------------------------------------------------- driving, with checks

    def process(self, node_id: int) -> None:
        node = self.nodes[NodeId(node_id)]
        if not node.alive:
            return
        cfg = self.config(node.node_id)
        while node.core.has_ready():
            rd = node.core.ready()
            if rd.is_empty() and not rd.must_sync:
                raise self.fail(f"node {node_id}: has_ready() was True but the Ready is empty")
            node.readies += 1
            self.digest.update(repr((int(node.node_id), rd)).encode())
            if self.keep_readies:
                self.readies_seen.append((node.node_id, rd))
                self.persisted_before.append(node.storage.hard_state)
            problem = must_sync_problem(rd, node.storage.hard_state)
            if problem is not None:
                raise self.fail(f"node {node_id}: {problem}")
            node.storage.persist(rd)
            for message in rd.messages:
                problem = self._ack_check(message, node.storage) or limit_problem(message, cfg)
                if problem is not None:
                    raise self.fail(f"node {node_id} -> {message.dst}: {problem}")
                self._send(message)
            self._apply(node, rd)
            node.core.advance(rd)

    def _apply(self, node: Node, rd: Ready) -> None:
        if rd.apply_snapshot is not None:
            for index, data in decode_state(rd.apply_snapshot.data):
                known = self.chosen.get(index)
                if known is not None and (known[2], known[3]) != (EntryKind.NORMAL, data):
                    raise self.fail(
                        f"node {node.node_id} restored a snapshot that disagrees at {index}"
                    )
        super()._apply(node, rd)
        seen = self.history.setdefault(node.node_id, {})
        for entry in rd.committed_entries:
            ident = identity(entry)
            first = self.chosen.setdefault(int(entry.index), ident)
            if first != ident:
                raise self.fail(
                    f"node {node.node_id} applied {ident} at {entry.index}, "
                    f"but {first} was applied there before"
                )
            seen[int(entry.index)] = ident

    def deliver_one(self) -> bool:
        if self.network:
            head = self.network[0]
            node = self.nodes.get(head.dst)
            if node is not None and node.alive and (head.src, head.dst) not in self.blocked:
                self.kinds_delivered[type(head.body).__name__] += 1
                entries = getattr(head.body, "entries", None)
                if isinstance(entries, tuple):
                    self.entries_delivered += len(entries)
        return super().deliver_one()

    def deliver_random(self, rng: random.Random, *, drop: float, duplicate: float) -> bool:
        """Deliver one in-flight message chosen at random (reordering), sometimes dropping or
        duplicating it. Returns False if nothing was in flight."""
        if not self.network:
            return False
        message = self.network.pop(rng.randrange(len(self.network)))
        roll = rng.random()
        if roll < drop:
            return True
        if roll < drop + duplicate:
            self.network.append(message)
        self.network.insert(0, message)
        return self.deliver_one()

    # -------------------------------------------------------------- conveniences

    def settle(self, ticks: int = 3) -> None:
        """Deliver everything, then a few heartbeat rounds so that commit points spread."""
        self.deliver_all()
        self.run(ticks)

    def wait_for_leader(self, max_ticks: int = 200) -> NodeId:
        for _ in range(max_ticks):
            leader = self.leader()
            if leader is not None and self._leader_is_settled(leader):
                return leader
            self.run(1)
        raise self.fail(f"no leader within {max_ticks} ticks")

    def _leader_is_settled(self, leader: NodeId) -> bool:
        status = self.core(leader).status()
        return all(
            n.core.status().leader == leader
            for nid, n in self.nodes.items()
            if n.alive and nid in status.conf.voters and not self._cut_off(nid, leader)
        )

    def _cut_off(self, a: NodeId, b: NodeId) -> bool:
        return (a, b) in self.blocked or (b, a) in self.blocked

    def commit_index(self, node_id: int) -> int:
        return int(self.core(node_id).status().commit)

    def committed_at(self, index: int) -> Identity | None:
        return self.chosen.get(index)

    def proposal_succeeded(self, proposed: Proposed) -> bool | None:
        """True if the entry committed at ``proposed.index`` is ours, False if another is,
        None if nothing is known to be committed there yet."""
        chosen = self.chosen.get(int(proposed.index))
        if chosen is None:
            return None
        return chosen[1] == int(proposed.term)

    def try_propose(self, node_id: int, command: bytes) -> Proposed | None:
        try:
            return self.propose(node_id, command)
        except (NotLeader, ProposalDropped):
            return None

    def leaders(self) -> list[NodeId]:
        return [
            nid
            for nid, n in sorted(self.nodes.items())
            if n.alive and n.core.status().role is Role.LEADER
        ]

    def check_replicas_identical(self) -> None:
        """Every node's applications, over all its incarnations, agree with the first value
        applied at each index anywhere: committed entries are identical on every replica."""
        for node_id, seen in sorted(self.history.items()):
            for index, ident in seen.items():
                if self.chosen[index] != ident:
                    raise self.fail(f"node {node_id} disagrees at {index}")


def change(*ops: tuple[ChangeKind, int]) -> MembershipChange:
    return MembershipChange(ops=tuple(ChangeOp(kind=k, node=NodeId(n)) for k, n in ops))


def commit_change(c: CheckedCluster, leader: int, ch: MembershipChange) -> Proposed:
    """Propose a membership change at ``leader`` and run until every live node knows it."""
    proposed = c.core(leader).change_membership(ch)
    c.process(leader)
    c.settle()
    if c.proposal_succeeded(proposed) is not True:
        raise c.fail(f"membership change {ch} did not commit")
    return proposed


def new_leader_other_than(c: CheckedCluster, old: int, max_ticks: int = 200) -> NodeId:
    """Tick and deliver until some node other than ``old`` leads (``old`` may be cut off)."""
    for _ in range(max_ticks):
        c.run(1)
        leaders = [n for n in c.leaders() if n != old]
        if leaders:
            return leaders[-1]
    raise c.fail(f"no leader other than {old} within {max_ticks} ticks")
