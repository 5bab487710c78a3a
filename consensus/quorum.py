"""Quorum arithmetic for simple majorities and joint configurations (Raft §6).

Pure functions over plain mappings, shared by both backends and property-tested against a
brute-force oracle in ``tests/test_quorum.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from consensus.types import ConfState, Index, NodeId


class VoteResult(enum.Enum):
    PENDING = "pending"
    """Not decided yet: outstanding votes could still go either way."""
    LOST = "lost"
    WON = "won"


_UNBOUNDED = Index(2**63 - 1)
"""What an empty voter set "commits": it must never hold back a joint configuration."""


def majority(n: int) -> int:
    return n // 2 + 1


def majority_committed_index(voters: Collection[NodeId], match: Mapping[NodeId, Index]) -> Index:
    """The highest index that a majority of ``voters`` has (Raft §5.3, §5.4).

    Voters missing from ``match`` count as having nothing (index 0). An empty voter set
    returns an unbounded index so that ``min`` with the other half of a joint config works.
    """
    if not voters:
        return _UNBOUNDED
    indexes = sorted((match.get(v, Index(0)) for v in voters), reverse=True)
    return indexes[majority(len(indexes)) - 1]


def committed_index(conf: ConfState, match: Mapping[NodeId, Index]) -> Index:
    """Joint consensus needs both majorities (Raft §6): take the lower of the two."""
    incoming = majority_committed_index(conf.voters, match)
    outgoing = majority_committed_index(conf.voters_outgoing, match)
    result = min(incoming, outgoing)
    return Index(0) if result == _UNBOUNDED else result


def majority_vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Tally ``votes`` (True granted, False rejected; absent means not yet answered)."""
    if not voters:
        return VoteResult.WON  # an empty half of a joint config never blocks a decision
    granted = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if granted + missing >= need:
        return VoteResult.PENDING
    return VoteResult.LOST


def vote_result(conf: ConfState, votes: Mapping[NodeId, bool]) -> VoteResult:
    """A joint election is won only when both halves are won, lost when either is lost."""
    a = majority_vote_result(conf.voters, votes)
    b = majority_vote_result(conf.voters_outgoing, votes) if conf.joint else VoteResult.WON
    if a is VoteResult.LOST or b is VoteResult.LOST:
        return VoteResult.LOST
    if a is VoteResult.WON and b is VoteResult.WON:
        return VoteResult.WON
    return VoteResult.PENDING


def has_quorum(conf: ConfState, nodes: Collection[NodeId]) -> bool:
    """Whether ``nodes`` (e.g. the peers heard from recently) form a quorum of ``conf``."""
    present = set(nodes)
    return vote_result(conf, {v: v in present for v in conf.all_nodes()}) is VoteResult.WON
