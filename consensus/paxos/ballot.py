"""Ballots: ``(round, node_id)`` pairs packed into one ``Term`` integer.

Paxos Made Simple §2.2 needs proposal numbers that are totally ordered and never reused by two
proposers. A ballot is the pair ``(round, node_id)`` compared lexicographically; packing it as
``round << 16 | node_id`` keeps that order under plain integer comparison, so the ballot fits
the shared ``Term`` type, ``HardState.term`` and the storage ``epoch`` column unchanged.
Ballot 0 means "no ballot". Node ids must therefore be below 65536 (checked at start-up).
"""

from __future__ import annotations

from consensus.types import NodeId, Term

NODE_BITS = 16
MAX_NODE_ID = (1 << NODE_BITS) - 1
NO_BALLOT = Term(0)


def make_ballot(round_: int, node: NodeId) -> Term:
    if not 0 < node <= MAX_NODE_ID:
        raise ValueError(f"node id {node} does not fit in a ballot (1..{MAX_NODE_ID})")
    if round_ < 0:
        raise ValueError("ballot round must be non-negative")
    return Term((round_ << NODE_BITS) | node)


def ballot_round(ballot: Term) -> int:
    return ballot >> NODE_BITS


def ballot_node(ballot: Term) -> NodeId:
    return NodeId(ballot & MAX_NODE_ID)


def format_ballot(ballot: Term) -> str:
    return f"{ballot_round(ballot)}.{ballot_node(ballot)}"
