"""Applying a ``MembershipChange`` to a ``ConfState`` (pure, deterministic).

Only the proposing leader applies a change, under the configuration of the new slot; it writes
the result into the CONFIG entry (``consensus.membership.encode_conf_entry``) and every node
adopts that result as written, never re-applying the ops.
"""

from __future__ import annotations

from consensus.api import ChangeKind, MembershipChange
from consensus.types import ConfState, NodeId


def apply_change(conf: ConfState, change: MembershipChange) -> ConfState:
    """The configuration after ``change``.

    Multi-Paxos switches configurations at a slot boundary (see the package docstring), so
    several voters may change in one entry and no joint configuration is needed:
    ``voters_outgoing`` is carried through untouched (empty unless bootstrapped joint).
    """
    voters = set(conf.voters)
    learners = set(conf.learners)
    for op in change.ops:
        node = NodeId(op.node)
        match op.kind:
            case ChangeKind.ADD_VOTER:
                voters.add(node)
                learners.discard(node)
            case ChangeKind.ADD_LEARNER:
                voters.discard(node)
                learners.add(node)
            case ChangeKind.REMOVE:
                voters.discard(node)
                learners.discard(node)
    return ConfState(
        voters=tuple(sorted(voters)),
        voters_outgoing=conf.voters_outgoing,
        learners=tuple(sorted(learners)),
    )
