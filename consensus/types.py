"""Value types shared by every consensus backend, the host, storage and the simulator.

Everything here is immutable and pure. Ids are ``NewType`` over ``int`` so that mixing a
node id with a log index is a type error, yet they cost nothing at run time and encode
as plain integers on the wire and on disk.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

NodeId = NewType("NodeId", int)
GroupId = NewType("GroupId", int)
Index = NewType("Index", int)
# A Raft term, or a Multi-Paxos ballot packed into one integer (see ``consensus.paxos``).
# Storage keeps it in the ``epoch`` column of the log.
Term = NewType("Term", int)

NO_NODE = NodeId(0)
"""Node ids start at 1; 0 means "nobody" (no vote, no known leader)."""


class EntryKind(enum.Enum):
    """What a log entry carries. The value is the on-disk and on-wire code."""

    NORMAL = 0
    """An application command (opaque bytes for the state machine)."""
    NOOP = 1
    """Appended by a new leader (Raft §5.4.2, §8) or fills a hole (Paxos Made Simple §3)."""
    CONFIG = 2
    """A membership change; ``data`` is an encoded ``ConfState`` transition."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One log slot.

    ``term`` is the entry's identity: the Raft term, or for Multi-Paxos the ballot of the
    proposal that first carried the value. A new Paxos leader that re-proposes a recovered
    value keeps its ``term`` and only raises ``accepted_ballot``, so a client holding
    ``Proposed(index, term)`` still recognises its command when it is chosen later.
    """

    index: Index
    term: Term
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""
    accepted_ballot: Term = Term(0)
    """Multi-Paxos only: the ballot in which this acceptor accepted the value (Paxos Made
    Simple §2.3: phase 1 picks the value with the highest *accepted* ballot). Raft: 0."""

    def size_bytes(self) -> int:
        """Approximate wire size, used for every byte limit in the cores."""
        return len(self.data) + 24


@dataclass(frozen=True, slots=True, kw_only=True)
class HardState:
    """What must be durable before a node may speak again.

    Raft: ``term`` and ``vote`` (Raft Figure 2, "persistent state on all servers") plus the
    commit index, which is only an optimisation on restart and needs no fsync of its own.
    Multi-Paxos: ``term`` is the promised ballot (Paxos Made Simple §2.3), ``vote`` unused.
    """

    term: Term = Term(0)
    vote: NodeId = NO_NODE
    commit: Index = Index(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfState:
    """A group's membership.

    ``voters_outgoing`` is non-empty only while in a joint configuration (Raft §6): decisions
    then need a majority of ``voters`` *and* of ``voters_outgoing``. Learners receive the log
    but never vote and never count toward a quorum. Tuples are kept sorted so that two equal
    configurations compare and encode equally.
    """

    voters: tuple[NodeId, ...] = ()
    voters_outgoing: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()

    @property
    def joint(self) -> bool:
        return bool(self.voters_outgoing)

    def all_nodes(self) -> tuple[NodeId, ...]:
        return tuple(sorted(set(self.voters) | set(self.voters_outgoing) | set(self.learners)))

    def is_voter(self, node: NodeId) -> bool:
        return node in self.voters or node in self.voters_outgoing


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMeta:
    index: Index
    term: Term
    conf: ConfState


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A state machine image at ``meta.index``; the log up to that index is not needed."""

    meta: SnapshotMeta
    data: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """The common envelope: every backend's messages travel inside one of these.

    ``body`` is a backend message (a frozen dataclass from ``consensus.raft.messages`` or
    ``consensus.paxos.messages``). The envelope is what the host routes on and what the
    transport frames; the body is opaque to both.
    """

    group_id: GroupId
    src: NodeId
    dst: NodeId
    body: object
