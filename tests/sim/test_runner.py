"""Whole simulation runs: determinism, replay commands, fault accounting and end checks.

Reference: FoundationDB / TigerBeetle deterministic simulation testing: one seed fixes the
run, a failure replays bit for bit.
"""

from __future__ import annotations

import pytest

from consensus.sim import FaultProfile, SimConfig, run
from consensus.sim.runner import Simulation, Violation

pytest.importorskip("consensus.raft")


def test_same_seed_replays_the_same_event_trace() -> None:
    """Two runs of one config produce the identical trace digest and result."""
    config = SimConfig(seed=11, backend="raft", faults=FaultProfile.ALL, steps=1_500)
    first, second = run(config), run(config)
    assert first.digest == second.digest
    assert first == second


def test_different_seeds_give_different_runs() -> None:
    one = run(SimConfig(seed=1, faults=FaultProfile.ALL, steps=800))
    two = run(SimConfig(seed=2, faults=FaultProfile.ALL, steps=800))
    assert one.digest != two.digest


def test_healthy_cluster_serves_every_kind_of_operation() -> None:
    """Without faults every path works: writes, CAS, log reads, ReadIndex and lease reads."""
    result = run(SimConfig(seed=3, faults=FaultProfile.NONE, steps=3_000))
    assert result.ok, [str(v) for v in result.violations]
    assert result.faults == {}
    assert result.ops["ok"] > 100
    assert all(result.reads[path] > 0 for path in ("log", "safe", "lease"))
    assert result.liveness_us is not None
    assert result.network["dropped_loss"] == result.network["dropped_partition"] == 0


def test_fault_profiles_inject_only_their_kinds() -> None:
    network = run(SimConfig(seed=5, faults=FaultProfile.NETWORK, steps=3_000)).faults
    crash = run(SimConfig(seed=5, faults=FaultProfile.CRASH, steps=3_000)).faults
    skew = run(SimConfig(seed=5, faults=FaultProfile.SKEW, steps=500)).faults
    assert network and not {"crash", "restart", "skew"} & network.keys()
    assert "crash" in crash or "crash_mid_ready" in crash
    assert not {"partition", "lossy", "heal"} & crash.keys()
    assert skew == {"skew": 3}


def test_crashes_lose_unsynced_writes_yet_stay_safe() -> None:
    """Crash faults really throw writes away, and the checkers still find nothing wrong."""
    results = [run(SimConfig(seed=s, faults=FaultProfile.CRASH, steps=3_000)) for s in range(4)]
    assert sum(r.lost_unsynced_writes for r in results) > 0
    assert sum(r.snapshots["installed"] for r in results) > 0  # lagging nodes caught up
    assert sum(r.faults.get("restart", 0) for r in results) > 0
    assert all(r.ok for r in results), [str(v) for r in results for v in r.violations]


def test_five_node_cluster_runs() -> None:
    result = run(SimConfig(seed=9, nodes=5, faults=FaultProfile.ALL, steps=2_000))
    assert result.ok, [str(v) for v in result.violations]
    assert result.ops["ok"] > 0


def test_replay_command_names_every_non_default_setting() -> None:
    config = SimConfig(seed=1234, backend="raft", faults=FaultProfile.ALL, steps=5000, nodes=3)
    assert config.replay_command() == (
        "shardb sim --backend raft --seed 1234 --faults all --steps 5000 --nodes 3"
    )
    assert "--clients 7" in SimConfig(clients=7).replay_command()


def test_violation_message_carries_seed_and_replay() -> None:
    violation = Violation(
        kind="linearizability", message="stale read", seed=42, step=7, time_us=99,
        replay=SimConfig(seed=42).replay_command(),
    )  # fmt: skip
    text = str(violation)
    assert "seed 42" in text
    assert "shardb sim --backend raft --seed 42" in text


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError):
        Simulation(SimConfig(backend="zab"))


def test_liveness_violation_is_reported_with_replay() -> None:
    """A write that cannot commit within the bound after healing is a violation."""
    config = SimConfig(seed=4, faults=FaultProfile.NONE, steps=300, liveness_timeouts=0)
    result = run(config)
    assert [v.kind for v in result.violations] == ["liveness"]
    assert result.violations[0].replay == config.replay_command()
    assert result.liveness_us is None


def test_protocol_options_come_from_the_seed_unless_fixed() -> None:
    """PreVote/CheckQuorum vary across seeds (to expose paths CheckQuorum masks)."""
    drawn = {
        (r.pre_vote, r.check_quorum) for r in (run(SimConfig(seed=s, steps=50)) for s in range(16))
    }
    assert len(drawn) > 1
    fixed = run(SimConfig(seed=0, steps=50, pre_vote=False, check_quorum=False))
    assert (fixed.pre_vote, fixed.check_quorum) == (False, False)
    assert "--no-pre-vote --no-check-quorum" in fixed.config.replay_command()
