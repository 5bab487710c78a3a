"""Deliberately broken cores: each overrides the smallest internal piece of RaftCore or
PaxosCore that carries one safety rule, so the simulator can show that it catches the bug.

These are test fixtures, never used outside ``tests/sim/test_broken_variants.py``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from consensus.api import Logger, Ready
from consensus.host import HostConfig, MultiGroupHost
from consensus.paxos import PaxosCore, ballot_node
from consensus.paxos.messages import Accept
from consensus.quorum import committed_index
from consensus.raft import RaftCore
from consensus.raft.messages import RequestVote
from consensus.types import NO_NODE, Entry, EntryKind, Index, Message, NodeId

# --------------------------------------------------------------------------- Raft


class RaftCommitByCounting(RaftCore):
    """(a) Commits the highest index a quorum holds even if its entry is from an older term:
    the rule Raft §5.4.2 / Figure 8 forbids."""

    def _maybe_commit(self) -> bool:
        match = {node: pr.match for node, pr in self._progress.items()}
        candidate = committed_index(self._confs.current, match)
        if candidate <= self._commit:
            return False
        old = self._commit
        self._commit_to(candidate)
        self._after_leader_commit(old)
        return True


class RaftDoubleVote(RaftCore):
    """(b) Grants a vote in a term where it already voted for another candidate: breaks
    "each server will vote for at most one candidate in a given term" (Raft §5.2)."""

    def _on_request_vote(self, src: NodeId, m: RequestVote) -> None:
        if not m.pre_vote and self._vote not in (NO_NODE, src):
            self._vote = NO_NODE
            self._leader = NO_NODE
        super()._on_request_vote(src, m)


class RaftAckBeforePersist(RaftCore):
    """(c) Never asks for an fsync before votes and append acknowledgements leave (Raft
    Figure 2: "updated on stable storage before responding to RPCs"). Only snapshots are
    synced, so the disk is flushed now and then and a crash loses the recent past."""

    def ready(self) -> Ready:
        rd = super().ready()
        if rd.must_sync and rd.snapshot is None:
            rd = replace(rd, must_sync=False)
            self._outstanding = rd
        return rd


# --------------------------------------------------------------------------- Multi-Paxos


class PaxosAcceptLowerBallot(PaxosCore):
    """(d) Accepts values of a ballot lower than the one it promised: the promise of
    Paxos Made Simple §2.3 ("never accept a proposal numbered less than n") is broken."""

    def step(self, message: Message) -> None:
        body = message.body
        if (
            isinstance(body, Accept)
            and ballot_node(body.ballot) == message.src
            and body.ballot < self._promised
        ):
            self._on_accept(message.src, body)
            return
        super().step(message)


class PaxosChosenWithoutQuorum(PaxosCore):
    """(e) Treats a slot as chosen once one acceptor besides the leader accepted it: a
    quorum only in groups of at most three, so 5-node groups choose on a minority
    (PMS §2.2: a value is chosen when a majority of acceptors accepted it)."""

    def _maybe_commit(self) -> None:
        target = self._commit
        while True:
            voters = self._accepts.get(target + 1)
            if voters is None or len(voters) < 2:
                break
            target = Index(target + 1)
        if target > self._commit:
            self._commit_to(target)


class PaxosIgnoreRecovered(PaxosCore):
    """(f) A new leader ignores the values its promises reported and proposes no-ops in
    their slots instead of the highest-ballot accepted value (PMS §2.2 / §3)."""

    def _become_leader(self) -> None:
        ballot = self._ballot
        self._recovered = {
            slot: Entry(index=Index(slot), term=ballot, kind=EntryKind.NOOP, accepted_ballot=ballot)
            for slot in self._recovered
        }
        super()._become_leader()


__all__ = [
    "PaxosAcceptLowerBallot",
    "PaxosChosenWithoutQuorum",
    "PaxosIgnoreRecovered",
    "RaftAckBeforePersist",
    "RaftCommitByCounting",
    "RaftDoubleVote",
]


# --------------------------------------------------------------------------- host


class HostWithoutLeaseDowngrade(MultiGroupHost):
    """Serves LEASE reads as LEASE even while the group is quiesced or just woke: the
    downgrade ``consensus.host`` makes because a quiesced core's lease clock stood still."""

    def _lease_clock_stood_still(self, group: Any) -> bool:
        return False


def host_without_lease_downgrade(
    config: HostConfig, rng: random.Random, logger: Logger
) -> MultiGroupHost:
    return HostWithoutLeaseDowngrade(config, rng=rng, logger=logger)
