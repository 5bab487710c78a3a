"""Membership changes for Raft: the transition rules, the CONFIG entry format, and the
history of configurations by log index.

**When a configuration takes effect: when it is appended** (Raft thesis §4.1), not when it
is committed or applied. Every server, leader or follower, uses the latest configuration in
its log, committed or not; a follower that truncates a conflicting suffix rolls back to the
configuration in force before it (``ConfHistory.truncate_from``). We chose this over etcd's
apply-time rule because it is what the paper proves safe, it needs no cooperation from the
application, and the decisions (quorums, who campaigns) then depend on the log alone, which
the core already holds. Two rules make it safe:

- one change at a time: a leader refuses a new change while the latest configuration entry
  is not committed (thesis §4.1), and a joint configuration counts as pending until the
  leader has appended the entry that leaves it;
- Ongaro's fix for single-server changes (raft-dev, 2015, "bug in single-server membership
  changes"): a leader must have committed an entry of its own term before it proposes a
  change, so a change of an older leader that this leader's log does not know about can no
  longer be in the way.

A change that alters more than one voter enters a joint configuration (§6: decisions need
a majority of both the old and the new voters); the leader appends an entry with no
operations to leave it once the joint entry commits.

**Entry format** (shared with Multi-Paxos, ``consensus.membership``): a CONFIG entry's
``data`` is msgpack ``[ops, voters, voters_outgoing, learners]``: ``ops`` as in
``MembershipChange.to_bytes`` (for the application's benefit; ``[]`` means "leave the joint
configuration") followed by the *resulting* configuration. The core adopts the resulting
configuration as written, so a node that joins with an empty bootstrap configuration and
replays the log from the start ends up with exactly the leader's membership.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.api import ChangeKind, MembershipChange
from consensus.invariants import require
from consensus.membership import ConfEntryError, decode_conf_entry, encode_conf_entry
from consensus.types import NO_NODE, ConfState, Index, NodeId

__all__ = [
    "ConfChangeError",
    "ConfEntryError",
    "ConfHistory",
    "apply_change",
    "decode_conf_entry",
    "encode_conf_entry",
    "leave_joint",
]


class ConfChangeError(Exception):
    """The requested change cannot be applied to the current configuration."""


def apply_change(conf: ConfState, change: MembershipChange) -> ConfState:
    """The configuration that results from proposing ``change`` under ``conf``."""
    if not change.ops:
        if not conf.joint:
            raise ConfChangeError("an empty membership change has no effect")
        return leave_joint(conf)
    if conf.joint:
        raise ConfChangeError("the group is still in a joint configuration")
    voters = set(conf.voters)
    learners = set(conf.learners)
    seen: set[NodeId] = set()
    for op in change.ops:
        if op.node == NO_NODE:
            raise ConfChangeError("node id 0 is reserved")
        if op.node in seen:
            raise ConfChangeError(f"node {op.node} appears twice in one change")
        seen.add(op.node)
        match op.kind:
            case ChangeKind.ADD_VOTER:
                if op.node in voters:
                    raise ConfChangeError(f"node {op.node} is already a voter")
                learners.discard(op.node)
                voters.add(op.node)
            case ChangeKind.ADD_LEARNER:
                if op.node in learners:
                    raise ConfChangeError(f"node {op.node} is already a learner")
                voters.discard(op.node)
                learners.add(op.node)
            case ChangeKind.REMOVE:
                if op.node not in voters and op.node not in learners:
                    raise ConfChangeError(f"node {op.node} is not a member")
                voters.discard(op.node)
                learners.discard(op.node)
    if not voters:
        raise ConfChangeError("a configuration needs at least one voter")
    new_voters = tuple(sorted(voters))
    changed_voters = set(conf.voters) ^ voters
    if len(changed_voters) <= 1:
        # At most one voter differs: any majority of the old and any majority of the new
        # configuration intersect, so no joint phase is needed (thesis §4.1).
        return ConfState(voters=new_voters, learners=tuple(sorted(learners)))
    # A voter demoted to learner keeps voting in the outgoing half until the joint phase ends
    # and is listed as a learner of the incoming configuration meanwhile.
    return ConfState(
        voters=new_voters, voters_outgoing=conf.voters, learners=tuple(sorted(learners))
    )


def leave_joint(conf: ConfState) -> ConfState:
    require(conf.joint, "only a joint configuration can be left")
    return ConfState(
        voters=conf.voters,
        learners=tuple(n for n in conf.learners if n not in conf.voters),
    )


@dataclass(frozen=True, slots=True)
class _ConfAt:
    index: Index
    conf: ConfState


class ConfHistory:
    """Configurations by the index of the entry that introduced them (append-time rule).

    The first item is the base: the configuration of the last snapshot, or the bootstrap
    configuration at index 0. Compaction folds older items into the base, so the
    configuration at any index from the snapshot on stays known (for SnapshotMeta.conf).
    """

    def __init__(self, index: Index, conf: ConfState) -> None:
        self._items: list[_ConfAt] = [_ConfAt(index, conf)]

    @property
    def current(self) -> ConfState:
        return self._items[-1].conf

    @property
    def current_index(self) -> Index:
        """Index of the entry that introduced the current configuration."""
        return self._items[-1].index

    def at(self, index: int) -> ConfState:
        require(index >= self._items[0].index, f"configuration at {index} was compacted away")
        found = self._items[0].conf
        for item in self._items:
            if item.index > index:
                break
            found = item.conf
        return found

    def append(self, index: Index, conf: ConfState) -> None:
        require(index > self._items[-1].index, "configurations are appended in log order")
        self._items.append(_ConfAt(index, conf))

    def truncate_from(self, index: int) -> None:
        """Forget configurations introduced at ``index`` or later (their entries were
        overwritten by the leader's log, §5.3)."""
        while len(self._items) > 1 and self._items[-1].index >= index:
            self._items.pop()
        require(self._items[-1].index < index, "cannot truncate the base configuration")

    def compact(self, index: Index) -> None:
        base = 0
        for n, item in enumerate(self._items):
            if item.index <= index:
                base = n
        self._items = [_ConfAt(index, self._items[base].conf), *self._items[base + 1 :]]

    def reset(self, index: Index, conf: ConfState) -> None:
        self._items = [_ConfAt(index, conf)]
