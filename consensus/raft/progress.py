"""What the leader knows about each follower's log (Raft Figure 2 ``nextIndex``/
``matchIndex``), with etcd's three replication states.

- PROBE: the leader does not know where the follower's log diverges; it sends one append at
  a time and waits for the answer (each rejection moves ``next`` back, §5.3).
- REPLICATE: the follower is known to match up to ``match``; the leader streams appends
  optimistically (pipelining), at most ``max_inflight_msgs`` unacknowledged at once.
- SNAPSHOT: the entries the follower needs were compacted; the leader sends the snapshot in
  chunks (§7) and sends no appends until the follower reports it installed.
"""

from __future__ import annotations

import enum
from collections import deque

from consensus.invariants import require
from consensus.types import Index


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each unacknowledged append, oldest first, bounded by ``capacity``.

    Acks are cumulative (an ack for index i acknowledges every message ending at or below i),
    so freeing is a prefix pop.
    """

    def __init__(self, capacity: int) -> None:
        require(capacity >= 1, "inflight capacity must be positive")
        self._capacity = capacity
        self._last_indexes: deque[Index] = deque()

    @property
    def count(self) -> int:
        return len(self._last_indexes)

    def full(self) -> bool:
        return len(self._last_indexes) >= self._capacity

    def add(self, last_index: Index) -> None:
        require(not self.full(), "cannot add to a full inflight window")
        require(
            not self._last_indexes or self._last_indexes[-1] <= last_index,
            "inflight appends must be sent in index order",
        )
        self._last_indexes.append(last_index)

    def free_le(self, index: Index) -> None:
        while self._last_indexes and self._last_indexes[0] <= index:
            self._last_indexes.popleft()

    def free_first_one(self) -> None:
        if self._last_indexes:
            self._last_indexes.popleft()

    def reset(self) -> None:
        self._last_indexes.clear()


class Progress:
    __slots__ = (
        "inflights",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "sent_commit",
        "snapshot_offset",
        "state",
    )

    def __init__(self, *, next_index: Index, max_inflight: int) -> None:
        self.match = Index(0)
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = Index(0)
        """Index of the snapshot being sent while in SNAPSHOT."""
        self.snapshot_offset = 0
        """Bytes of that snapshot the follower has confirmed."""
        self.recent_active = True
        """Heard from within the current election timeout (CheckQuorum, thesis §6.2). A new
        peer starts active so that adding it cannot make the leader step down at once."""
        self.inflights = Inflights(max_inflight)
        self.sent_commit = Index(0)
        """Highest commit index a message already sent lets the follower reach: what an
        append or heartbeat carried, capped by the log it proves the follower holds (the
        follower commits min(leader commit, last new entry), Raft §5.3)."""

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # The follower either installed the snapshot or the attempt failed; in both cases
            # resume right after what it would now hold.
            self.next = Index(max(self.match + 1, self.pending_snapshot + 1))
        else:
            self.next = Index(self.match + 1)
        self._forget_unconfirmed_commit()
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = Index(0)
        self.snapshot_offset = 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.next = Index(self.match + 1)
        self._forget_unconfirmed_commit()
        self.state = ProgressState.REPLICATE
        self.probe_sent = False
        self.pending_snapshot = Index(0)
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: Index) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_offset = 0
        self.probe_sent = False
        self.inflights.reset()

    def maybe_update(self, index: Index) -> bool:
        """A follower acknowledged matching up to ``index``; False if that is old news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = Index(max(self.next, index + 1))
        return updated

    def sent_entries(self, last_index: Index) -> None:
        """An append ending at ``last_index`` left for this follower."""
        if self.state is ProgressState.REPLICATE:
            # Pipelining: assume it will be accepted and carry on from there.
            self.next = Index(last_index + 1)
            self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def sent_commit_through(self, index: Index) -> None:
        """A message that lets the follower commit through ``index`` left."""
        self.sent_commit = Index(max(self.sent_commit, index))

    def can_bump_commit(self, commit: Index) -> bool:
        """Whether telling the follower ``commit`` now could advance its commit index past
        what we already told it (etcd's ``CanBumpCommit``): an empty append proves the
        follower's log only through ``next - 1``, so that caps what it may commit."""
        return min(commit, self.next - 1) > self.sent_commit

    def move_next_back(self, next_index: Index) -> None:
        """A rejection moved ``next`` back (§5.3): what we sent above it was refused."""
        self.next = next_index
        self._forget_unconfirmed_commit()

    def _forget_unconfirmed_commit(self) -> None:
        # Messages beyond ``next - 1`` may have been lost or refused, so the commit index
        # they carried may never have reached the follower.
        self.sent_commit = Index(min(self.sent_commit, self.next - 1))

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def label(self) -> str:
        return self.state.value
