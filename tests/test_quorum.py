"""Quorum arithmetic against a brute-force oracle (etcd's quorum/majority property tests).

The oracle enumerates every subset of voters: an index is committed iff some majority
subset has all reached it; an election is won iff the granted voters contain a majority,
lost iff no completion of the outstanding votes can reach one.
"""

from __future__ import annotations

from itertools import combinations

from hypothesis import given
from hypothesis import strategies as st

from consensus.quorum import (
    VoteResult,
    committed_index,
    has_quorum,
    majority_committed_index,
    majority_vote_result,
    vote_result,
)
from consensus.types import ConfState, Index, NodeId

voter_sets = st.sets(st.integers(1, 9), max_size=7).map(
    lambda s: tuple(NodeId(v) for v in sorted(s))
)
match_maps = st.dictionaries(st.integers(1, 9).map(NodeId), st.integers(0, 20).map(Index))
vote_maps = st.dictionaries(st.integers(1, 9).map(NodeId), st.booleans())


def oracle_committed(voters: tuple[NodeId, ...], match: dict[NodeId, Index]) -> int | None:
    if not voters:
        return None  # unbounded
    need = len(voters) // 2 + 1
    best = 0
    for group in combinations(voters, need):
        best = max(best, min(match.get(v, 0) for v in group))
    return best


def oracle_vote(voters: tuple[NodeId, ...], votes: dict[NodeId, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    need = len(voters) // 2 + 1
    yes = [v for v in voters if votes.get(v) is True]
    maybe = [v for v in voters if v not in votes]
    if len(yes) >= need:
        return VoteResult.WON
    if len(yes) + len(maybe) >= need:
        return VoteResult.PENDING
    return VoteResult.LOST


@given(voter_sets, match_maps)
def test_majority_committed_index_matches_oracle(
    voters: tuple[NodeId, ...], match: dict[NodeId, Index]
) -> None:
    """Reference: Raft §5.3 — an entry is committed once a majority stores it."""
    expected = oracle_committed(voters, match)
    got = majority_committed_index(voters, match)
    if expected is None:
        assert got > 2**62
    else:
        assert got == expected


@given(voter_sets, voter_sets, match_maps)
def test_joint_commit_needs_both_majorities(
    incoming: tuple[NodeId, ...], outgoing: tuple[NodeId, ...], match: dict[NodeId, Index]
) -> None:
    """Reference: Raft §6 — in C_old,new agreement needs separate majorities of both."""
    conf = ConfState(voters=incoming, voters_outgoing=outgoing)
    halves = [
        oracle_committed(incoming, match),
        oracle_committed(outgoing, match) if outgoing else None,
    ]
    bounded = [h for h in halves if h is not None]
    assert committed_index(conf, match) == (min(bounded) if bounded else 0)


@given(voter_sets, vote_maps)
def test_majority_vote_result_matches_oracle(
    voters: tuple[NodeId, ...], votes: dict[NodeId, bool]
) -> None:
    """Reference: Raft §5.2 — a candidate wins with votes from a majority."""
    assert majority_vote_result(voters, votes) is oracle_vote(voters, votes)


@given(voter_sets, voter_sets, vote_maps)
def test_joint_vote_result_matches_oracle(
    incoming: tuple[NodeId, ...], outgoing: tuple[NodeId, ...], votes: dict[NodeId, bool]
) -> None:
    """Reference: Raft §6 — elections in a joint configuration need both majorities."""
    conf = ConfState(voters=incoming, voters_outgoing=outgoing)
    a = oracle_vote(incoming, votes)
    b = oracle_vote(outgoing, votes) if outgoing else VoteResult.WON
    if VoteResult.LOST in (a, b):
        expected = VoteResult.LOST
    elif a is b is VoteResult.WON:
        expected = VoteResult.WON
    else:
        expected = VoteResult.PENDING
    assert vote_result(conf, votes) is expected


@given(voter_sets, st.sets(st.integers(1, 9).map(NodeId)))
def test_has_quorum_is_a_won_vote_of_the_present(
    voters: tuple[NodeId, ...], present: set[NodeId]
) -> None:
    conf = ConfState(voters=voters)
    expected = oracle_vote(voters, {v: v in present for v in voters}) is VoteResult.WON
    assert has_quorum(conf, present) is expected


def test_learners_never_count() -> None:
    """Reference: Raft thesis §4.2.1 — learners (non-voting members) are not in any quorum."""
    conf = ConfState(voters=(NodeId(1), NodeId(2), NodeId(3)), learners=(NodeId(4), NodeId(5)))
    assert not has_quorum(conf, {NodeId(1), NodeId(4), NodeId(5)})
    assert has_quorum(conf, {NodeId(1), NodeId(2)})
