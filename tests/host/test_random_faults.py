"""Randomized faults against many groups of both backends on 3 hosts: partitions, one-way
cuts, message loss, crashes and restarts from persisted state, under a proposal workload
and quiescence. Safety is checked on every apply (the driver's per-group oracle: no two
replicas ever apply different entries at one index, Raft §5.4.3 / PMS §3); liveness after
healing: every group elects, commits and quiesces again within a bound.

A failure names its seed; replay with ``pytest tests/host/test_random_faults.py -k <seed>``.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from consensus.api import ConsensusError
from consensus.types import GroupId

from .driver import HostCluster

GROUPS = {g: ("raft" if g % 2 else "paxos") for g in range(1, 9)}
FAULT_TICKS = 250


def chaos(c: HostCluster, rng: random.Random) -> None:
    down: set[int] = set()
    counter = 0
    for _ in range(FAULT_TICKS):
        roll = rng.random()
        if roll < 0.03:
            c.isolate(rng.randint(1, 3))
        elif roll < 0.06:
            src, dst = rng.sample([1, 2, 3], 2)
            c.block(src, dst)
        elif roll < 0.12:
            c.heal()
        elif roll < 0.14 and not down:
            victim = rng.randint(1, 3)
            c.crash(victim)
            down.add(victim)
        elif roll < 0.20 and down:
            back = down.pop()
            c.restart(back)
        for _ in range(rng.randint(0, 3)):
            g = rng.choice(sorted(GROUPS))
            leader = c.leader(g)
            if leader is None:
                continue
            counter += 1
            # Not leader any more, a transfer, a limit: a client would retry elsewhere.
            with contextlib.suppress(ConsensusError):
                c.host(leader).propose(GroupId(g), f"w{counter}".encode())
            c.process(leader)
        c.run(1)
    for node in sorted(down):
        c.restart(node)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_faults_keep_groups_safe_and_live(seed: int) -> None:
    c = HostCluster(groups=GROUPS, seed=seed, loss=0.03)
    chaos(c, random.Random(seed))
    c.heal()
    c.loss = 0.0
    c.run_until(lambda: all(c.leader(g) is not None for g in GROUPS), max_ticks=200)
    for g in GROUPS:
        c.propose(g, f"final{g}".encode())
    c.run_until(
        lambda: all(c.applied_everywhere(g, f"final{g}".encode()) for g in GROUPS),
        max_ticks=100,
    )
    c.run_until(c.all_quiesced, max_ticks=100)
    c.check_consistent()
    for g in GROUPS:
        histories = {tuple(c.commands(n, g)) for n in (1, 2, 3)}
        assert len(histories) == 1, f"group {g} differs across replicas (seed {seed})"
