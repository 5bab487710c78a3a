"""The simulator catches real bugs: deliberately broken cores (``tests/sim/broken.py``) are
detected by the checkers within a fixed seed range, and the unbroken cores pass those very
seeds.

Each variant runs the detection seeds in order and stops at the first seed that reports a
safety violation; the seed range is part of the claim. If a change to the simulator makes a
variant slip through the whole range, the simulator lost power: make it produce the
situation again (see the ``elections`` profile in ``consensus.sim.faults``) rather than
widening the range or special-casing the bug.

References: Raft §5.2 (one vote per term), §5.4.2 and Figure 8 (no commit by counting
replicas of an older term's entry), Figure 2 (persist before answering); Paxos Made Simple
§2.2-§2.3 (promises, quorums, choosing the highest-ballot accepted value).
"""

from __future__ import annotations

import functools

import pytest

from consensus.api import CoreFactory
from consensus.sim import FaultProfile, SimConfig, SimResult, run

from . import broken

STEPS = 3_000
DETECTION_SEEDS = range(0, 120)
"""The CI seed range for detection: seed s runs a 5-node group when s % 3 == 2."""

SAFETY_KINDS = frozenset(
    {
        "election_safety",
        "log_matching",
        "leader_completeness",
        "state_machine_safety",
        "lost_write",
        "failed_write_applied",
        "duplicate_apply",
        "linearizability",
        "proposal_identity",
        "core_invariant",
    }
)
"""Violations that mean "a safety property broke" (not liveness or convergence)."""


def name_of(factory: CoreFactory) -> str:
    return str(getattr(factory, "__name__", factory))


def nodes_for(seed: int) -> int:
    return 5 if seed % 3 == 2 else 3


def config(backend: str, seed: int, factory: CoreFactory | None = None) -> SimConfig:
    return SimConfig(
        seed=seed,
        backend=backend,
        nodes=nodes_for(seed),
        steps=STEPS,
        faults=FaultProfile.ALL,
        core_factory=factory,
    )


def first_catch(backend: str, factory: CoreFactory) -> tuple[int, SimResult] | None:
    for seed in DETECTION_SEEDS:
        result = run(config(backend, seed, factory))
        if result.violations and result.violations[0].kind in SAFETY_KINDS:
            return seed, result
    return None


@functools.cache
def unbroken(backend: str, seed: int) -> SimResult:
    return run(config(backend, seed))


def assert_caught_and_unbroken_passes(
    backend: str, factory: CoreFactory, expected: frozenset[str]
) -> None:
    caught = first_catch(backend, factory)
    assert caught is not None, (
        f"{name_of(factory)} slipped through seeds {DETECTION_SEEDS.start}.."
        f"{DETECTION_SEEDS.stop - 1}"
    )
    seed, result = caught
    violation = result.violations[0]
    assert violation.kind in expected, str(violation)
    assert f"broken.{name_of(factory)}" in violation.replay
    for earlier in range(DETECTION_SEEDS.start, seed + 1):
        clean = unbroken(backend, earlier)
        assert clean.ok, "\n".join(str(v) for v in clean.violations)


def test_raft_commit_by_counting_an_older_term_is_caught() -> None:
    """Raft §5.4.2, Figure 8: a leader that commits an entry of an earlier term by counting
    replicas can lose it to a leader of an intermediate term."""
    assert_caught_and_unbroken_passes(
        "raft",
        broken.RaftCommitByCounting,
        frozenset({"leader_completeness", "state_machine_safety", "lost_write"}),
    )


def test_raft_double_vote_is_caught() -> None:
    """Raft §5.2: each server votes for at most one candidate per term; otherwise two
    leaders can be elected in one term."""
    assert_caught_and_unbroken_passes("raft", broken.RaftDoubleVote, frozenset({"election_safety"}))


def test_raft_ack_before_persist_is_caught() -> None:
    """Raft Figure 2: term, vote and log are on stable storage before answering RPCs; a
    crash that forgets an acknowledged entry or vote loses committed data or splits a term."""
    assert_caught_and_unbroken_passes(
        "raft", broken.RaftAckBeforePersist, SAFETY_KINDS - {"core_invariant"}
    )


def test_paxos_accepting_a_lower_ballot_after_a_promise_is_caught() -> None:
    """Paxos Made Simple §2.3: an acceptor that promised n accepts nothing numbered below n;
    otherwise a deposed leader and the new one choose different values for one slot."""
    assert_caught_and_unbroken_passes("paxos", broken.PaxosAcceptLowerBallot, SAFETY_KINDS)


def test_paxos_choosing_without_a_quorum_is_caught() -> None:
    """Paxos Made Simple §2.2: a value is chosen only when a majority of acceptors accepted
    it; a minority's value can be missed by the next leader's phase 1."""
    assert_caught_and_unbroken_passes(
        "paxos",
        broken.PaxosChosenWithoutQuorum,
        frozenset({"leader_completeness", "state_machine_safety", "lost_write", "core_invariant"}),
    )


def test_paxos_leader_ignoring_accepted_values_is_caught() -> None:
    """Paxos Made Simple §2.2 (P2c) and §3: a new leader must re-propose the highest-ballot
    value its promises report; replacing it with a no-op loses chosen values."""
    assert_caught_and_unbroken_passes(
        "paxos",
        broken.PaxosIgnoreRecovered,
        frozenset({"leader_completeness", "state_machine_safety", "lost_write", "core_invariant"}),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "factory"),
    [
        ("raft", broken.RaftCommitByCounting),
        ("raft", broken.RaftDoubleVote),
        ("raft", broken.RaftAckBeforePersist),
        ("paxos", broken.PaxosAcceptLowerBallot),
        ("paxos", broken.PaxosChosenWithoutQuorum),
        ("paxos", broken.PaxosIgnoreRecovered),
    ],
)
def test_detection_rate_over_the_whole_range(backend: str, factory: CoreFactory) -> None:
    """Soak: the share of detection seeds that catch each variant (printed with -s)."""
    caught = []
    for seed in DETECTION_SEEDS:
        result = run(config(backend, seed, factory))
        if result.violations and result.violations[0].kind in SAFETY_KINDS:
            caught.append((seed, result.violations[0].kind))
    print(f"{name_of(factory)}: {len(caught)}/{len(DETECTION_SEEDS)} {caught}")
    assert caught
