"""Multi-Paxos message bodies; they travel inside ``consensus.types.Message`` envelopes.

Every body is a frozen, slotted, kw-only dataclass of wire-friendly fields only (ints, bools,
bytes, enums, ``Entry``, ``SnapshotMeta`` and tuples of these) so that a generic msgpack codec
can encode it. ``ballot`` is always the sender's ballot for this exchange (``Term``-packed, see
``consensus.paxos.ballot``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from consensus.types import Entry, Index, SnapshotMeta, Term


class NackReason(enum.Enum):
    HIGHER_BALLOT = 0
    """The acceptor promised a higher ballot (Paxos Made Simple §2.3)."""
    LEASE = 1
    """The acceptor heard from a live leader within an election timeout and protects its
    lease (check_quorum semantics)."""
    BEHIND = 2
    """The acceptor compacted slots the candidate asked about: the candidate is too far behind
    to learn them from a promise and should catch up from a leader instead."""
    NOT_MEMBER = 3
    """The candidate is not a voter in a configuration the acceptor has committed beyond the
    candidate's commit point: it was removed and does not know it yet."""


# ----------------------------------------------------------------------- election (phase 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class PreCheck:
    """Would you promise ``ballot``? Nothing is persisted (the analogue of Raft's PreVote)."""

    ballot: Term
    commit: Index


@dataclass(frozen=True, slots=True, kw_only=True)
class PreCheckResponse:
    ballot: Term
    granted: bool
    promised: Term
    """The responder's promised ballot, so a refused candidate picks a higher round later."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepare:
    """Phase 1a for every slot at or above ``from_slot`` (PMS §3: one phase 1 for all
    instances). Re-sent with the same ballot and a higher ``from_slot`` to fetch the next page
    of a promise."""

    ballot: Term
    from_slot: Index
    transfer: bool = False
    """Sent on a leader's request (TimeoutNow): acceptors skip the lease check."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Promise:
    """Phase 1b: the acceptor promised ``ballot`` and reports its accepted values."""

    ballot: Term
    from_slot: Index
    entries: tuple[Entry, ...]
    """Accepted values in [from_slot, next_slot) with their ``accepted_ballot``."""
    next_slot: Index
    """0 when the report is complete; otherwise the page ended here: ask again from it."""
    commit: Index


@dataclass(frozen=True, slots=True, kw_only=True)
class Nack:
    """Refusal of any request carrying ``ballot``."""

    ballot: Term
    promised: Term
    reason: NackReason
    commit: Index


# ----------------------------------------------------------------------- steady state (phase 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    """Phase 2a for a contiguous run of slots; ``commit`` piggybacks the commit point."""

    ballot: Term
    entries: tuple[Entry, ...]
    commit: Index


@dataclass(frozen=True, slots=True, kw_only=True)
class Learn:
    """Chosen values for a lagging node (catch-up): every entry is at or below ``commit``."""

    ballot: Term
    entries: tuple[Entry, ...]
    commit: Index


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """Phase 2b for the slots [from_slot, to_slot] of one Accept or Learn."""

    ballot: Term
    from_slot: Index
    to_slot: Index
    commit: Index
    accepted_through: Index
    """Every slot in (commit, accepted_through] is accepted at ``ballot``: what the leader
    need not resend."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    ballot: Term
    commit: Index
    round: int
    """Leader-local round number, echoed back; read barriers and the lease count it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatAck:
    ballot: Term
    round: int
    commit: Index
    accepted_through: Index


# ----------------------------------------------------------------------- catch-up and transfer


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot:
    ballot: Term
    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshotResponse:
    ballot: Term
    snapshot_index: Index
    next_offset: int
    done: bool
    commit: Index


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """Leadership transfer: start phase 1 now, skipping the pre-check."""

    ballot: Term


PaxosMessage = (
    PreCheck
    | PreCheckResponse
    | Prepare
    | Promise
    | Nack
    | Accept
    | Learn
    | Accepted
    | Heartbeat
    | HeartbeatAck
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)
