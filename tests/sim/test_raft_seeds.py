"""A fixed range of simulation seeds with every fault enabled must show zero violations.

Each seed is its own test, so a failure names the seed; its message holds the exact replay
command. Add a backend to ``BACKENDS`` once it passes (one line).
Reference: Raft §5.2 Figure 3 (the safety properties the checkers assert) and §8
(linearizable client interaction).
"""

from __future__ import annotations

import importlib.util

import pytest

from consensus.sim import FaultProfile, SimConfig, run

BACKENDS = ["raft"]
STEPS = 5_000
THREE_NODE_SEEDS = range(0, 200)
FIVE_NODE_SEEDS = range(1_000, 1_040)

CASES = [
    pytest.param(backend, nodes, seed, id=f"{backend}-n{nodes}-seed{seed}")
    for backend in BACKENDS
    for nodes, seeds in ((3, THREE_NODE_SEEDS), (5, FIVE_NODE_SEEDS))
    for seed in seeds
]


@pytest.mark.parametrize(("backend", "nodes", "seed"), CASES)
def test_seed_shows_no_violation(backend: str, nodes: int, seed: int) -> None:
    """Election safety, log matching, leader completeness, state machine safety, durability
    of acknowledged writes, linearizability and liveness after healing, under faults=all."""
    if importlib.util.find_spec(f"consensus.{backend}") is None:
        pytest.skip(f"backend {backend} not built")
    config = SimConfig(
        seed=seed, backend=backend, nodes=nodes, steps=STEPS, faults=FaultProfile.ALL
    )
    result = run(config)
    assert result.ok, "\n".join(str(v) for v in result.violations)
    assert result.ops["ok"] > 0
