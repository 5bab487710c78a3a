"""State machine safety across elections, partitions, crashes, restarts and compaction.

Raft §5.4.3 (State Machine Safety) and Paxos Made Simple §2.2 ("only a single value is
chosen") say the same thing on our interface: every entry handed out in
``Ready.committed_entries`` at an index is identical -- (index, term, kind, data) -- on every
replica. ``CheckedCluster`` checks it on every Ready; these tests drive both backends through
seeded fault schedules. A failure names backend and seed; ``run_chaos(backend, seed)``
replays it exactly.
"""

from __future__ import annotations

import random

import pytest

from consensus.types import NodeId

from .harness import CheckedCluster

SEEDS = (1, 2, 3, 4, 5, 6)


def run_chaos(backend: str, seed: int, steps: int = 160) -> CheckedCluster:
    rng = random.Random(f"chaos/{seed}")
    c = CheckedCluster(
        5,
        backend=backend,
        seed=seed,
        election_timeout_ticks=6,
        max_msg_bytes=200,
        max_snapshot_chunk_bytes=48,
        # Odd seeds run without PreVote/pre-check and CheckQuorum: more duelling candidates.
        pre_vote=seed % 2 == 0,
        check_quorum=seed % 2 == 0,
    )
    down: NodeId | None = None
    for step in range(steps):
        roll = rng.random()
        leader = c.leader()
        if leader is not None:
            c.leader_terms.add(int(c.core(leader).status().term))
        if step == steps // 2 and leader is not None and down is None:
            down = leader  # at least one leader change per run, whatever the seed
            c.crash(down)
        elif roll < 0.35 and leader is not None:
            c.try_propose(leader, b"s%d-%d" % (seed, step))
        elif roll < 0.45:
            # A partition: one node, or a minority pair, cut off from everyone else.
            c.heal()
            c.isolate(rng.randint(1, 5))
            if rng.random() < 0.5:
                c.isolate(rng.randint(1, 5))
        elif roll < 0.55:
            c.heal()
        elif roll < 0.60 and down is None:
            down = NodeId(rng.randint(1, 5))
            c.crash(down)
        elif roll < 0.67 and down is not None:
            c.restart(down)
            down = None
        elif roll < 0.72:
            target = c.nodes[NodeId(rng.randint(1, 5))]
            if target.alive:
                target.core.campaign()
        elif roll < 0.76:
            target = c.nodes[NodeId(rng.randint(1, 5))]
            if target.alive and target.applied_index > target.core.status().first_index:
                c.compact(target.node_id)
        c.tick_all()
        for _ in range(rng.randint(5, 40)):
            c.process_all()
            if not c.deliver_random(rng, drop=0.05, duplicate=0.03):
                break
    # Heal everything: the group must converge, and a new proposal must commit everywhere.
    c.heal()
    if down is not None:
        c.restart(down)
    for _ in range(10):
        leader = c.wait_for_leader()
        if c.try_propose(leader, b"final") is not None:
            break
        c.run(5)
    for _ in range(60):
        c.run(1)
        commits = {c.commit_index(n) for n in c.nodes}
        applied = {node.applied_index for node in c.nodes.values()}
        if len(commits) == 1 and applied == commits and b"final" in c.applied(1):
            break
    return c


@pytest.mark.parametrize("seed", SEEDS)
def test_committed_entries_identical_under_faults(backend: str, seed: int) -> None:
    """Raft §5.4.3 / Paxos Made Simple §2.2: across elections, partitions, crashes with
    restarts from PersistedState, compaction and lossy, reordering, duplicating delivery,
    no two replicas apply different entries at one index; once healed, all replicas apply the
    same history, including a fresh proposal."""
    c = run_chaos(backend, seed)
    c.check_replicas_identical()
    reference = c.nodes[NodeId(1)].state
    for node_id, node in sorted(c.nodes.items()):
        assert node.state == reference, f"node {node_id} state differs (seed {seed})"
    assert b"final" in c.applied(1), f"the healed group made no progress (seed {seed})"
    # The run must have exercised what it claims to: leader changes and many commits.
    assert len(c.chosen) >= 20
    assert len(c.leader_terms) >= 2, "expected at least one leader change"
