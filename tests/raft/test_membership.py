"""Raft membership details: the CONFIG entry format shared with Multi-Paxos
(``consensus.membership``), a node with an empty configuration, and the hand-off by a
leader removed from the configuration (Raft thesis §4.2.2, §3.10)."""

from __future__ import annotations

import pytest
from support.cluster import Cluster

from consensus.api import ChangeKind, ChangeOp, MembershipChange, Role
from consensus.membership import ConfEntryError
from consensus.raft import RaftCore
from consensus.raft.conf import decode_conf_entry, encode_conf_entry
from consensus.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    RequestVote,
    TimeoutNow,
)
from consensus.types import ConfState, Entry, EntryKind, Index, NodeId, Term
from raft.helpers import env, flush, make_leader, new_core, sent


def op(kind: ChangeKind, node: int) -> ChangeOp:
    return ChangeOp(kind=kind, node=NodeId(node))


def test_config_entry_bytes_are_unchanged_by_the_move_to_the_shared_module() -> None:
    """Raft's on-disk and on-wire CONFIG format is exactly what it was before it moved to
    consensus.membership: msgpack [ops, voters, voters_outgoing, learners]."""
    change = MembershipChange(
        ops=(op(ChangeKind.ADD_VOTER, 4), op(ChangeKind.REMOVE, 1), op(ChangeKind.ADD_LEARNER, 5))
    )
    result = ConfState(
        voters=(NodeId(2), NodeId(3), NodeId(4)),
        voters_outgoing=(NodeId(1), NodeId(2), NodeId(3)),
        learners=(NodeId(5),),
    )
    data = encode_conf_entry(change, result)
    assert data.hex() == "949392000492020192010593020304930102039105"
    assert decode_conf_entry(data) == (change, result)


def test_follower_refuses_a_malformed_config_entry() -> None:
    """A CONFIG entry that does not decode (here: the old ops-only Paxos format) is never
    applied: the follower raises ConfEntryError instead of guessing a membership."""
    core = new_core(2)
    bad = Entry(
        index=Index(1),
        term=Term(1),
        kind=EntryKind.CONFIG,
        data=MembershipChange(ops=(op(ChangeKind.ADD_VOTER, 4),)).to_bytes(),
    )
    with pytest.raises(ConfEntryError):
        core.step(
            env(
                1,
                2,
                AppendEntries(
                    term=Term(1),
                    prev_index=Index(0),
                    prev_term=Term(0),
                    entries=(bad,),
                    commit=Index(0),
                ),
            )
        )


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_node_with_an_empty_configuration_never_campaigns(pre_vote: bool) -> None:
    """A node that has not learned its membership (a joiner, consensus.api.CoreFactory) has
    no votes to win: neither its election timer, nor campaign(), nor a TimeoutNow makes it
    ask for votes or count itself a quorum (Raft §5.2 needs a majority of the voters)."""
    core = new_core(4, voters=(), pre_vote=pre_vote)
    for _ in range(100):
        core.tick()
    core.campaign()
    core.step(env(1, 4, TimeoutNow(term=Term(1))))
    rd = flush(core)
    assert core.status().role is Role.FOLLOWER
    assert not sent(rd, RequestVote)


# ---------------------------------------------------------------------------- removed leader


def _leader_removing_itself() -> tuple[RaftCore, Index]:
    """Leader 1 of voters 1, 2, 3 with its no-op committed proposes its own removal, then one
    more command; returns the core and the index of the configuration entry."""
    core = new_core(1)
    make_leader(core)
    for peer in (2, 3):
        core.step(env(peer, 1, AppendEntriesResponse(term=Term(1), success=True, index=Index(1))))
    flush(core)
    proposed = core.change_membership(MembershipChange(ops=(op(ChangeKind.REMOVE, 1),)))
    core.propose(b"after-removal")
    flush(core)
    return core, proposed.index


@pytest.mark.parametrize(("ahead", "behind"), [(2, 3), (3, 2)])
def test_removed_leader_hands_off_to_the_voter_with_the_longest_log(
    ahead: int, behind: int
) -> None:
    """Thesis §4.2.2 with §3.10: once its removal commits, the leader sends TimeoutNow to the
    remaining voter whose log is longest, then steps down, so the group need not wait an
    election timeout for a new leader."""
    core, conf_index = _leader_removing_itself()
    term = core.status().term
    core.step(
        env(ahead, 1, AppendEntriesResponse(term=term, success=True, index=Index(conf_index + 1)))
    )
    assert core.status().role is Role.LEADER  # one of the new voters {2, 3} is no majority
    core.step(env(behind, 1, AppendEntriesResponse(term=term, success=True, index=conf_index)))
    rd = flush(core)
    assert core.status().role is Role.FOLLOWER
    assert [dst for dst, _ in sent(rd, TimeoutNow)] == [ahead]
    assert rd.messages[-1].dst == ahead and isinstance(rd.messages[-1].body, TimeoutNow)


def test_removed_leader_hand_off_elects_a_leader_without_any_timeout() -> None:
    """End to end, with PreVote and CheckQuorum on: no node is ticked, yet the remaining
    voters have a leader of the next term right after the removal commits, and it commits."""
    c = Cluster(3, pre_vote=True, check_quorum=True)
    c.elect(1)
    c.core(1).change_membership(MembershipChange(ops=(op(ChangeKind.REMOVE, 1),)))
    c.deliver_all()
    assert c.core(1).status().role is Role.FOLLOWER
    assert any("leader_stepped_down" in line and "successor=2" in line for line in c.log_lines)
    assert c.leader() == 2 and c.core(2).status().term == 2
    c.propose(2, b"next")
    c.deliver_all()
    assert c.applied(2) == c.applied(3) == [b"next"]
