"""Leader-side bookkeeping for linearizable reads: ReadIndex (Raft thesis §6.4) and the
heartbeat rounds that confirm leadership for it and for the lease (§6.4.1).

Every heartbeat broadcast is a numbered *round* (``Heartbeat.context``, starting at 1; the
request ids chosen by clients are never put on the wire, since they may repeat and 0 means
"no context"). A follower echoes the round it answers. Once a quorum has answered round
``r``, the leader knows it was still leader when it sent round ``r``, which confirms every
read recorded before ``r`` was sent, and starts a lease at the tick ``r`` was sent.
Acknowledgements are cumulative: answering round ``r`` also answers every earlier round of
the same term, because heartbeats are sent in order over one leadership.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consensus.api import ReadState
from consensus.quorum import committed_index
from consensus.types import ConfState, Index, NodeId

MAX_TRACKED_ROUNDS = 1024
"""Send ticks kept for unconfirmed rounds. Forgetting an old round only forgoes the lease it
would have started; reads waiting on it are released by any later confirmed round."""


@dataclass(frozen=True, slots=True)
class _PendingRead:
    request_id: int
    index: Index
    round: int


class ReadOnly:
    def __init__(self) -> None:
        self._next_round = 1
        self._sent_tick: dict[int, int] = {}
        self._acked: dict[NodeId, int] = {}
        self._confirmed = 0
        self._pending: list[_PendingRead] = []

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def new_round(self, tick: int) -> int:
        number = self._next_round
        self._next_round += 1
        self._sent_tick[number] = tick
        if len(self._sent_tick) > MAX_TRACKED_ROUNDS:
            del self._sent_tick[min(self._sent_tick)]
        return number

    def add_read(self, request_id: int, index: Index, round_: int) -> None:
        self._pending.append(_PendingRead(request_id, index, round_))

    def ack(self, peer: NodeId, round_: int) -> bool:
        """Record ``peer``'s answer to ``round_``; True if it answered a newer round than
        before (only then can ``confirm`` release anything new)."""
        if round_ > self._acked.get(peer, 0):
            self._acked[peer] = round_
            return True
        return False

    def confirm(self, conf: ConfState, self_id: NodeId) -> tuple[list[ReadState], int | None]:
        """Release what a quorum has confirmed: the reads now safe to answer, and the send
        tick of the newest confirmed round (None if no new round was confirmed or its send
        tick was forgotten)."""
        acked: Mapping[NodeId, Index] = {
            **{peer: Index(r) for peer, r in self._acked.items()},
            self_id: Index(self._next_round - 1),
        }
        confirmed = int(committed_index(conf, acked))
        if confirmed <= self._confirmed:
            return [], None
        self._confirmed = confirmed
        released = [r for r in self._pending if r.round <= confirmed]
        self._pending = [r for r in self._pending if r.round > confirmed]
        tick = self._sent_tick.get(confirmed)
        for number in [n for n in self._sent_tick if n <= confirmed]:
            del self._sent_tick[number]
        return [ReadState(request_id=r.request_id, index=r.index) for r in released], tick

    def reset(self) -> None:
        """A new leadership starts: nothing of the previous one confirms anything now.
        Round numbers keep growing so that late answers from an earlier leadership of this
        node can never be mistaken for answers to a new round."""
        self._sent_tick.clear()
        self._acked.clear()
        self._confirmed = self._next_round - 1
        self._pending.clear()
