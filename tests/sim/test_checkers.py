"""The incremental safety checkers, fed hand-made observations.

Reference: Raft §5.2 Figure 3 (Election Safety, Log Matching, Leader Completeness, State
Machine Safety).
"""

from __future__ import annotations

import pytest

from consensus.api import Ready, Role, Status
from consensus.sim.checkers import TRAITS, InvariantViolation, SafetyChecker
from consensus.sim.disk import SimDisk
from consensus.types import ConfState, Entry, EntryKind, GroupId, Index, NodeId, Term

N1, N2, N3 = NodeId(1), NodeId(2), NodeId(3)


def status(node: NodeId, role: Role, term: int, commit: int = 0) -> Status:
    return Status(
        node_id=node, group_id=GroupId(1), role=role, term=Term(term), leader=node,
        commit=Index(commit), applied=Index(commit), last_index=Index(commit),
        first_index=Index(1), conf=ConfState(voters=(N1, N2, N3)),
    )  # fmt: skip


def entry(index: int, term: int, data: bytes = b"") -> Entry:
    kind = EntryKind.NORMAL if data else EntryKind.NOOP
    return Entry(index=Index(index), term=Term(term), kind=kind, data=data)


def persist(checker: SafetyChecker, node: NodeId, disk: SimDisk, *entries: Entry) -> None:
    write = disk.write(Ready(entries=entries))
    assert write is not None
    checker.observe_persist(node, write, disk)


def raft() -> SafetyChecker:
    return SafetyChecker(TRAITS["raft"])


def test_two_leaders_in_one_term_violate_election_safety() -> None:
    """Raft §5.2: at most one leader can be elected in a given term."""
    checker = raft()
    checker.observe_status(N1, status(N1, Role.LEADER, 3), SimDisk())
    checker.observe_status(N1, status(N1, Role.LEADER, 3), SimDisk())
    checker.observe_status(N2, status(N2, Role.LEADER, 4), SimDisk())
    with pytest.raises(InvariantViolation) as caught:
        checker.observe_status(N3, status(N3, Role.LEADER, 3), SimDisk())
    assert caught.value.kind == "election_safety"


def test_followers_are_not_leaders() -> None:
    checker = raft()
    checker.observe_status(N1, status(N1, Role.LEADER, 3), SimDisk())
    checker.observe_status(N2, status(N2, Role.FOLLOWER, 3), SimDisk())
    checker.observe_status(N3, status(N3, Role.CANDIDATE, 3), SimDisk())
    assert checker.leaders_by_term == {3: N1}


def test_same_index_and_term_with_different_data_violates_log_matching() -> None:
    """Raft §5.3: entries with equal index and term store the same command."""
    checker = raft()
    persist(checker, N1, SimDisk(), entry(1, 1, b"a"))
    with pytest.raises(InvariantViolation) as caught:
        persist(checker, N2, SimDisk(), entry(1, 1, b"b"))
    assert caught.value.kind == "log_matching"


def test_same_index_and_term_after_different_history_violates_log_matching() -> None:
    """Raft §5.3: equal (index, term) implies the logs are identical up to there."""
    checker = raft()
    persist(checker, N1, SimDisk(), entry(1, 1, b"x"), entry(2, 3, b"c"))
    with pytest.raises(InvariantViolation):
        persist(checker, N2, SimDisk(), entry(1, 2, b"y"), entry(2, 3, b"c"))


def test_log_matching_is_off_for_paxos() -> None:
    """Paxos slots are chosen independently; the property does not apply."""
    checker = SafetyChecker(TRAITS["paxos"])
    persist(checker, N1, SimDisk(), entry(1, 1, b"x"), entry(2, 3, b"c"))
    persist(checker, N2, SimDisk(), entry(1, 2, b"y"), entry(2, 3, b"c"))


def test_different_entries_applied_at_one_index_violate_state_machine_safety() -> None:
    """Raft §5.4.3: no two servers apply different commands at the same index."""
    checker = raft()
    checker.observe_apply(N1, entry(1, 1, b"a"), Term(1))
    with pytest.raises(InvariantViolation) as caught:
        checker.observe_apply(N2, entry(1, 1, b"b"), Term(1))
    assert caught.value.kind == "state_machine_safety"


def test_applying_with_a_gap_is_caught() -> None:
    checker = raft()
    checker.observe_apply(N1, entry(1, 1, b"a"), Term(1))
    with pytest.raises(InvariantViolation):
        checker.observe_apply(N1, entry(3, 1, b"c"), Term(1))


def test_restart_resumes_after_the_snapshot() -> None:
    """A restarted node re-applies from its snapshot; repeats must match what others applied."""
    checker = raft()
    for i in (1, 2, 3):
        checker.observe_apply(N1, entry(i, 1, b"%d" % i), Term(1))
    checker.observe_restart(N1, Index(1))
    checker.observe_apply(N1, entry(2, 1, b"2"), Term(1))
    with pytest.raises(InvariantViolation):
        checker.observe_apply(N1, entry(3, 1, b"other"), Term(1))


def test_leader_missing_a_committed_entry_violates_leader_completeness() -> None:
    """Raft §5.4: a leader holds every entry committed in earlier terms."""
    checker = raft()
    checker.observe_apply(N1, entry(1, 1, b"a"), Term(1))
    checker.observe_apply(N1, entry(2, 1, b"b"), Term(1))
    good = SimDisk()
    good.write(Ready(entries=(entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 2))))
    checker.observe_status(N2, status(N2, Role.LEADER, 2), good)
    stale = SimDisk()
    stale.write(Ready(entries=(entry(1, 1, b"a"),)))
    with pytest.raises(InvariantViolation) as caught:
        checker.observe_status(N3, status(N3, Role.LEADER, 3), stale)
    assert caught.value.kind == "leader_completeness"


def test_stale_leader_of_an_older_term_is_not_held_to_newer_commits() -> None:
    """An entry committed in term 5 says nothing about the (deposed) leader of term 4."""
    checker = raft()
    checker.observe_status(N1, status(N1, Role.LEADER, 5, commit=1), SimDisk())
    checker.observe_apply(N1, entry(1, 5, b"a"), Term(5))
    checker.observe_status(N2, status(N2, Role.LEADER, 4), SimDisk())


def test_snapshots_at_one_index_must_hold_the_same_state() -> None:
    checker = raft()
    checker.observe_snapshot_taken(N1, Index(5), b"state")
    checker.observe_snapshot_applied(N2, Index(5), b"state")
    with pytest.raises(InvariantViolation):
        checker.observe_snapshot_taken(N3, Index(5), b"other")


def test_snapshot_behind_applied_index_is_caught() -> None:
    checker = raft()
    for i in (1, 2, 3):
        checker.observe_apply(N1, entry(i, 1, b"%d" % i), Term(1))
    with pytest.raises(InvariantViolation):
        checker.observe_snapshot_applied(N1, Index(2), b"old")
