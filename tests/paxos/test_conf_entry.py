"""The shared CONFIG entry format and whole-configuration quorum rules
(``consensus.membership``), used by both backends."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.api import ChangeKind, ChangeOp, ConsensusError, MembershipChange
from consensus.membership import (
    ConfEntryError,
    decode_conf_entry,
    encode_conf_entry,
    is_quorum,
    tally,
    validate_conf,
)
from consensus.quorum import VoteResult, has_quorum, vote_result
from consensus.types import ConfState, NodeId

ids = st.lists(st.integers(min_value=1, max_value=40), unique=True).map(
    lambda xs: tuple(NodeId(x) for x in sorted(xs))
)


@st.composite
def confs(draw: st.DrawFn) -> ConfState:
    voters = draw(ids.filter(bool))
    outgoing = draw(ids)
    learners = tuple(n for n in draw(ids) if n not in voters)
    return ConfState(voters=voters, voters_outgoing=outgoing, learners=learners)


changes = st.lists(
    st.builds(
        ChangeOp,
        kind=st.sampled_from(list(ChangeKind)),
        node=st.integers(min_value=1, max_value=40).map(NodeId),
    ),
    max_size=4,
).map(lambda ops: MembershipChange(ops=tuple(ops)))


@given(changes, confs())
def test_entry_round_trips_the_ops_and_the_resulting_configuration(
    change: MembershipChange, conf: ConfState
) -> None:
    """Decoding gives back exactly what was encoded: the change for the application and the
    resulting configuration every node adopts as written."""
    assert decode_conf_entry(encode_conf_entry(change, conf)) == (change, conf)


def test_entry_is_msgpack_ops_then_the_resulting_configuration() -> None:
    """The documented layout: [ops, voters, voters_outgoing, learners]."""
    change = MembershipChange(ops=(ChangeOp(kind=ChangeKind.ADD_LEARNER, node=NodeId(4)),))
    result = ConfState(voters=(NodeId(1), NodeId(2)), learners=(NodeId(4),))
    assert msgpack.unpackb(encode_conf_entry(change, result)) == [[[1, 4]], [1, 2], [], [4]]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used by msgpack
        MembershipChange(ops=(ChangeOp(kind=ChangeKind.ADD_VOTER, node=NodeId(4)),)).to_bytes(),
        msgpack.packb([[], [1, 2], []]),
        msgpack.packb([[[9, 4]], [1], [], []]),  # unknown change kind
        msgpack.packb([[[0]], [1], [], []]),
        msgpack.packb([[], [], [], []]),  # no voters
        msgpack.packb([[], [2, 1], [], []]),  # not ascending
        msgpack.packb([[], [1, 1], [], []]),  # duplicate
        msgpack.packb([[], [0, 1], [], []]),  # node id 0 is "nobody"
        msgpack.packb([[], [1, 2], [], [2]]),  # a voter and a learner at once
        msgpack.packb([[], [True], [], []]),
        msgpack.packb([[], "1", [], []]),
    ],
)
def test_malformed_entries_are_refused_with_a_clear_error(data: bytes) -> None:
    """A malformed entry (corrupt, from a misbehaving peer, or the old ops-only Paxos format)
    raises ConfEntryError -- a ConsensusError -- instead of being applied."""
    with pytest.raises(ConfEntryError) as info:
        decode_conf_entry(data)
    assert isinstance(info.value, ConsensusError)
    assert "CONFIG" in str(info.value) or "voter" in str(info.value) or "node" in str(info.value)


def test_a_joint_voter_may_be_a_learner_of_the_incoming_configuration() -> None:
    """Raft §6: a voter demoted to learner keeps voting in the outgoing half while it is
    listed as a learner, so that overlap is valid."""
    validate_conf(
        ConfState(
            voters=(NodeId(1), NodeId(2)),
            voters_outgoing=(NodeId(1), NodeId(2), NodeId(3)),
            learners=(NodeId(3),),
        )
    )


def test_encoding_refuses_a_configuration_without_voters() -> None:
    with pytest.raises(ConfEntryError):
        encode_conf_entry(MembershipChange(ops=()), ConfState())


def test_an_empty_configuration_is_never_won_and_never_a_quorum() -> None:
    """A node that has not learned its membership (a joiner) has no votes to win:
    consensus.quorum treats an empty voter set as won (right for the empty half of a
    non-joint configuration), so the cores tally whole configurations with ``tally`` and
    ``is_quorum``, which never count a configuration without voters."""
    me = NodeId(4)
    empty = ConfState()
    assert vote_result(empty, {me: True}) is VoteResult.WON  # why the wrapper exists
    assert has_quorum(empty, [me])
    assert tally(empty, {me: True}) is VoteResult.LOST
    assert not is_quorum(empty, [me])
    assert not is_quorum(ConfState(learners=(me,)), [me])


@given(confs(), st.lists(st.integers(min_value=1, max_value=40)))
def test_non_empty_configurations_tally_like_the_quorum_module(
    conf: ConfState, granted: list[int]
) -> None:
    votes = {NodeId(n): True for n in granted}
    assert tally(conf, votes) is vote_result(conf, votes)
    assert is_quorum(conf, list(votes)) is has_quorum(conf, list(votes))


def test_membership_module_is_pure() -> None:
    """consensus/membership.py is part of the pure core: no IO, clock, threads or global
    randomness (the same AST walk as tests/test_layering.py)."""
    from test_layering import violations

    path = Path(__file__).resolve().parents[2] / "consensus" / "membership.py"
    assert violations(path) == []
