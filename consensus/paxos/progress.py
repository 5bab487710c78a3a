"""What a Multi-Paxos leader tracks about each peer it replicates to."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from consensus.types import Index


class PeerState(enum.Enum):
    PROBE = "probe"
    """One message at a time until the peer answers (after report_unreachable)."""
    REPLICATE = "replicate"
    """Pipelined Accepts up to ``max_inflight_msgs``."""
    SNAPSHOT = "snapshot"
    """Sending snapshot chunks; phase 2 traffic to this peer waits."""


@dataclass(slots=True)
class Progress:
    next: Index
    """Next slot to send."""
    match: Index = Index(0)
    """Peer's ``accepted_through``: every slot up to here is accepted at our ballot or chosen."""
    commit: Index = Index(0)
    """Peer's reported commit point."""
    voted_through: Index = Index(0)
    """Slots up to here already counted as this peer's votes."""
    inflight: int = 0
    state: PeerState = PeerState.REPLICATE
    recent_active: bool = False
    last_heartbeat_match: Index = Index(-1)
    """``match`` at the previous heartbeat ack: no progress between two acks means loss."""
    snapshot_index: Index = Index(0)
    snapshot_offset: int = 0
    snapshot_stalled: bool = False
