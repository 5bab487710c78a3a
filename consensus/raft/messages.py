"""Raft message bodies (Raft Figure 2, plus PreVote, heartbeats, chunked snapshots and
TimeoutNow from the Raft thesis).

Each body travels inside a ``consensus.types.Message`` envelope. Every body carries the
sender's ``term``: ``RaftCore.step`` applies the term rules of §5.1 once, for every kind,
before any role-specific handler sees the message. Fields are only ints, bools, bytes,
``Entry``/``SnapshotMeta`` and tuples of these so that the generic msgpack codec
(``consensus.codec``) can derive their encoding from the type hints.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.types import Entry, Index, SnapshotMeta, Term

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "RaftBody",
    "RequestVote",
    "RequestVoteResponse",
    "TimeoutNow",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote:
    """A vote request (§5.2) or, with ``pre_vote``, a pre-vote (thesis §9.6).

    A pre-vote carries the term the sender *would* campaign in (its term + 1) without having
    bumped its own term. ``transfer`` marks an election started by TimeoutNow (thesis §3.10):
    voters then skip the CheckQuorum lease check, since the old leader asked for it.
    """

    term: Term
    pre_vote: bool = False
    transfer: bool = False
    last_log_index: Index
    last_log_term: Term


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse:
    term: Term
    pre_vote: bool = False
    granted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries:
    """Replicate ``entries`` after (``prev_index``, ``prev_term``) (§5.3)."""

    term: Term
    prev_index: Index
    prev_term: Term
    entries: tuple[Entry, ...] = ()
    commit: Index


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntriesResponse:
    """Accept: ``index`` is the last index the follower now matches with the leader.

    Reject: ``index`` is the rejected ``prev_index``; ``conflict_term`` is the follower's term
    at that index (0 if its log is too short) and ``conflict_index`` the first index the
    follower holds with that term (or its last index + 1 if too short), so the leader can
    skip a whole term per round trip instead of one entry (§5.3, "optimization").
    """

    term: Term
    success: bool
    index: Index
    conflict_term: Term = Term(0)
    conflict_index: Index = Index(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Leader liveness (§5.2) and commit propagation. ``commit`` is at most what the follower
    is known to match, so a follower never commits an entry it has not been shown to hold.
    ``context`` numbers the heartbeat round (0 = none): ReadIndex and the lease are confirmed
    by quorum acknowledgements of a round (thesis §6.4)."""

    term: Term
    commit: Index
    context: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse:
    term: Term
    context: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot:
    """One chunk of the leader's snapshot (§7): bytes ``[offset, offset + len(data))``."""

    term: Term
    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshotResponse:
    """``offset``: bytes of snapshot ``index`` the follower has assembled so far (the next
    chunk it wants). ``reject``: the chunk did not start there. ``done``: the follower holds
    the snapshot (restored it, or already had everything up to ``index`` committed)."""

    term: Term
    index: Index
    offset: int
    reject: bool = False
    done: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """Leadership transfer (thesis §3.10): start an election now, skipping PreVote."""

    term: Term


RaftBody = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)
