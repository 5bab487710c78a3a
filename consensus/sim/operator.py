"""A simulated operator that changes membership and moves leadership during a run.

Now and then it asks the leader (as an operator tool would, from the cluster's status) to
add a spare as a learner, promote a learner, remove a voter (never leaving fewer than
``min_voters``) or transfer leadership to a random voter. Requests the core refuses
(``NotLeader``, ``ProposalDropped``: a change still pending, a transfer in flight, a leader
that has not yet committed in its term) are counted and simply tried again later, as a
real operator would. Removed nodes keep running with their state, so a removed server that
never learned of its removal gets to disrupt elections (Raft thesis §4.2.3) and can be
added again later.

Reference: Raft thesis §4 (membership changes, learners §4.2.1), §3.10 (leadership
transfer); Paxos Made Simple §3 and PMMC §3 (reconfiguration through the log).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from consensus.api import (
    ChangeKind,
    ChangeOp,
    MembershipChange,
    NotLeader,
    ProposalDropped,
    Proposed,
    Status,
)
from consensus.types import NodeId


class OperatorView(Protocol):
    """The slice of the simulation the operator acts on."""

    @property
    def node_ids(self) -> tuple[NodeId, ...]: ...

    def leader_status(self) -> Status | None:
        """The status of the live node leading in the highest term, if any."""
        ...

    def change_membership(self, node: NodeId, change: MembershipChange) -> Proposed: ...
    def transfer_leadership(self, node: NodeId, target: NodeId) -> None: ...
    def call_later(self, delay_us: int, fn: Callable[[Any], None], arg: Any) -> None: ...


@dataclass(slots=True)
class OperatorStats:
    changes_proposed: int = 0
    changes_refused: int = 0
    transfers_requested: int = 0
    transfers_refused: int = 0
    transfers_completed: int = 0
    """A transfer target became leader in a later term before any other node did."""

    def as_dict(self) -> dict[str, int]:
        return {
            "changes_proposed": self.changes_proposed,
            "changes_refused": self.changes_refused,
            "transfers_requested": self.transfers_requested,
            "transfers_refused": self.transfers_refused,
            "transfers_completed": self.transfers_completed,
        }


class Operator:
    def __init__(
        self,
        cluster: OperatorView,
        rng: random.Random,
        *,
        interval_us: tuple[int, int],
        min_voters: int = 3,
        transfer_ratio: float = 0.35,
    ) -> None:
        self._cluster = cluster
        self._rng = rng
        self._interval_us = interval_us
        self._min_voters = min_voters
        self._transfer_ratio = transfer_ratio
        self._pending_transfer: tuple[NodeId, int] | None = None
        self.active = False
        self.stats = OperatorStats()

    def start(self) -> None:
        self.active = True
        self._cluster.call_later(self._interval(), self._wake, None)

    def stop(self) -> None:
        self.active = False

    def note_leader(self, node: NodeId, term: int) -> None:
        """A node became leader in ``term`` (called by the simulation)."""
        pending = self._pending_transfer
        if pending is None or term <= pending[1]:
            return
        if node == pending[0]:
            self.stats.transfers_completed += 1
        self._pending_transfer = None

    def _interval(self) -> int:
        low, high = self._interval_us
        return self._rng.randint(low, high)

    def _wake(self, _: Any) -> None:
        if not self.active:
            return
        self._act()
        self._cluster.call_later(self._interval(), self._wake, None)

    def _act(self) -> None:
        status = self._cluster.leader_status()
        if status is None:
            return
        rng = self._rng
        voters = status.conf.voters
        if rng.random() < self._transfer_ratio and len(voters) > 1:
            target = rng.choice([v for v in voters if v != status.node_id] or list(voters))
            self.stats.transfers_requested += 1
            try:
                self._cluster.transfer_leadership(status.node_id, target)
            except (NotLeader, ProposalDropped):
                self.stats.transfers_refused += 1
                return
            self._pending_transfer = (target, int(status.term))
            return
        change = self._choose_change(status)
        if change is None:
            return
        self.stats.changes_proposed += 1
        try:
            self._cluster.change_membership(status.node_id, change)
        except (NotLeader, ProposalDropped):
            self.stats.changes_refused += 1

    def _choose_change(self, status: Status) -> MembershipChange | None:
        conf = status.conf
        if conf.joint:
            return None
        rng = self._rng
        members = set(conf.all_nodes())
        outsiders = [n for n in self._cluster.node_ids if n not in members]
        options: list[ChangeOp] = []
        for learner in conf.learners:
            progress = status.progress.get(learner)
            caught_up = progress is not None and progress.match >= status.commit
            # A careful operator promotes a learner once it caught up (thesis §4.2.1); now
            # and then promote a lagging one anyway, which a correct core must survive.
            if caught_up or rng.random() < 0.25:
                options.append(ChangeOp(kind=ChangeKind.ADD_VOTER, node=learner))
        options.extend(ChangeOp(kind=ChangeKind.ADD_LEARNER, node=n) for n in outsiders)
        if len(conf.voters) > self._min_voters:
            options.extend(ChangeOp(kind=ChangeKind.REMOVE, node=v) for v in conf.voters)
        if not options:
            return None
        return MembershipChange(ops=(rng.choice(options),))
