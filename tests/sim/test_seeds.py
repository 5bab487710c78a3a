"""A fixed range of simulation seeds per backend with every fault enabled (``faults=all``:
network faults, crashes, clock skew, leadership churn, membership changes and leadership
transfers) must show zero violations.

Each seed is its own test, so a failure names the backend and seed; its message holds the
exact replay command. The default range costs about a minute per backend on two cores; the
``slow`` soak runs many more seeds (``pytest -m slow tests/sim/test_seeds.py``).
Reference: Raft §5.2 Figure 3 (the safety properties the checkers assert) and §8
(linearizable client interaction); Paxos Made Simple §2 (the same properties, read with
ballots for terms).
"""

from __future__ import annotations

import pytest

from consensus.sim import FaultProfile, SimConfig, run

BACKENDS = ("raft", "paxos")
STEPS = 5_000
THREE_NODE_SEEDS = range(0, 160)
FIVE_NODE_SEEDS = range(1_000, 1_030)
SOAK_THREE_NODE_SEEDS = range(160, 1_000)
SOAK_FIVE_NODE_SEEDS = range(1_030, 1_200)


def cases(three: range, five: range) -> list[object]:
    return [
        pytest.param(backend, nodes, seed, id=f"{backend}-n{nodes}-seed{seed}")
        for backend in BACKENDS
        for nodes, seeds in ((3, three), (5, five))
        for seed in seeds
    ]


def check_seed(backend: str, nodes: int, seed: int) -> None:
    config = SimConfig(
        seed=seed, backend=backend, nodes=nodes, steps=STEPS, faults=FaultProfile.ALL
    )
    result = run(config)
    assert result.ok, "\n".join(str(v) for v in result.violations)
    assert result.ops["ok"] > 0


@pytest.mark.parametrize(("backend", "nodes", "seed"), cases(THREE_NODE_SEEDS, FIVE_NODE_SEEDS))
def test_seed_shows_no_violation(backend: str, nodes: int, seed: int) -> None:
    """Election safety, log matching (Raft), leader completeness, state machine safety,
    durability of acknowledged writes, linearizability, liveness after healing and
    convergence of the current members, under faults=all."""
    check_seed(backend, nodes, seed)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "nodes", "seed"), cases(SOAK_THREE_NODE_SEEDS, SOAK_FIVE_NODE_SEEDS)
)
def test_soak_seed_shows_no_violation(backend: str, nodes: int, seed: int) -> None:
    """The same claims over a longer seed range (excluded by default)."""
    check_seed(backend, nodes, seed)
