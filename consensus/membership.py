"""Membership facts shared by both backends: the CONFIG entry format and the quorum rules
of a whole configuration (pure, deterministic).

**CONFIG entry format.** A CONFIG entry's ``data`` is msgpack ``[ops, voters,
voters_outgoing, learners]``: ``ops`` as in ``MembershipChange.to_bytes`` (for the
application's benefit; ``[]`` is Raft's "leave the joint configuration") followed by the
*resulting* configuration, each id list ascending. Every backend adopts the resulting
configuration as written and never recomputes it from the ops. Why: a node that joins with
an empty bootstrap configuration (``consensus.api.CoreFactory``) learns the log from a
leader; replaying ops on top of its own base would give it a different membership than the
group's (it once concluded ``voters=(4)`` and elected itself with a quorum of one). With the
result in the entry, the configuration after slot/index ``s`` is a function of the entry at
``s`` alone, identical on every node.

The transition rules stay with each backend (Raft's joint consensus in
``consensus.raft.conf``; Multi-Paxos' slot-boundary switch in ``consensus.paxos.membership``):
the proposer computes the result under its rules and writes it here.

**A configuration without voters wins nothing.** ``consensus.quorum`` treats an empty voter
set as won, which is right for the empty half of a non-joint configuration but wrong for a
whole configuration: a node that has not learned its membership yet (a joiner) has no votes
to win. ``tally`` and ``is_quorum`` are what the cores use for whole configurations.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from typing import Any

import msgpack

from consensus.api import ChangeKind, ChangeOp, ConsensusError, MembershipChange
from consensus.quorum import VoteResult, has_quorum, vote_result
from consensus.types import NO_NODE, ConfState, NodeId


class ConfEntryError(ConsensusError, ValueError):
    """A CONFIG entry (or the configuration it would carry) is malformed: corrupt storage,
    a misbehaving peer, or a bug in the proposer. Never silently applied."""


def validate_conf(conf: ConfState) -> None:
    """Raise ``ConfEntryError`` unless ``conf`` is a configuration a group can run under.

    Rules: at least one voter; node ids positive; every id list strictly ascending (so equal
    configurations encode equally, see ``ConfState``); learners are not incoming voters (a
    voter demoted in a joint configuration may be a learner while it still votes in the
    outgoing half, Raft §6).
    """
    if not conf.voters:
        raise ConfEntryError("a configuration needs at least one voter")
    for name, ids in (
        ("voters", conf.voters),
        ("voters_outgoing", conf.voters_outgoing),
        ("learners", conf.learners),
    ):
        if any(n == NO_NODE or n < 0 for n in ids):
            raise ConfEntryError(f"{name} {list(ids)} holds an invalid node id")
        if any(a >= b for a, b in itertools.pairwise(ids)):
            raise ConfEntryError(f"{name} {list(ids)} is not strictly ascending")
    both = sorted(set(conf.voters) & set(conf.learners))
    if both:
        raise ConfEntryError(f"nodes {both} are both voters and learners")


def encode_conf_entry(change: MembershipChange, result: ConfState) -> bytes:
    """The ``data`` of the CONFIG entry that applies ``change`` and leads to ``result``."""
    validate_conf(result)
    packed: bytes = msgpack.packb(
        [
            [[op.kind.value, int(op.node)] for op in change.ops],
            [int(n) for n in result.voters],
            [int(n) for n in result.voters_outgoing],
            [int(n) for n in result.learners],
        ]
    )
    return packed


def decode_conf_entry(data: bytes) -> tuple[MembershipChange, ConfState]:
    """The change and the resulting configuration of a CONFIG entry; ``ConfEntryError`` if
    ``data`` is not a well-formed entry (including one written in another format)."""
    try:
        raw = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ConfEntryError(f"CONFIG entry is not msgpack: {exc}") from exc
    if not isinstance(raw, list) or len(raw) != 4:
        raise ConfEntryError("CONFIG entry must be [ops, voters, voters_outgoing, learners]")
    ops_raw, voters, outgoing, learners = raw
    if not isinstance(ops_raw, list):
        raise ConfEntryError("CONFIG entry ops must be a list")
    ops: list[ChangeOp] = []
    for op in ops_raw:
        if not isinstance(op, list) or len(op) != 2 or not all(_is_int(x) for x in op):
            raise ConfEntryError(f"CONFIG entry op {op!r} must be [kind, node]")
        try:
            kind = ChangeKind(op[0])
        except ValueError as exc:
            raise ConfEntryError(f"CONFIG entry op has unknown kind {op[0]}") from exc
        ops.append(ChangeOp(kind=kind, node=NodeId(op[1])))
    conf = ConfState(
        voters=_ids("voters", voters),
        voters_outgoing=_ids("voters_outgoing", outgoing),
        learners=_ids("learners", learners),
    )
    validate_conf(conf)
    return MembershipChange(ops=tuple(ops)), conf


def tally(conf: ConfState, votes: Mapping[NodeId, bool]) -> VoteResult:
    """``quorum.vote_result`` for a whole configuration: one without voters is lost."""
    if not conf.voters:
        return VoteResult.LOST
    return vote_result(conf, votes)


def is_quorum(conf: ConfState, nodes: Collection[NodeId]) -> bool:
    """``quorum.has_quorum`` for a whole configuration: no set is a quorum of no voters."""
    return bool(conf.voters) and has_quorum(conf, nodes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids(name: str, value: Any) -> tuple[NodeId, ...]:
    if not isinstance(value, list) or not all(_is_int(x) for x in value):
        raise ConfEntryError(f"CONFIG entry {name} must be a list of node ids")
    return tuple(NodeId(x) for x in value)
