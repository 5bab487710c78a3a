"""The simulator with many groups per node: each node drives a ``MultiGroupHost``.

Claims: the host's merged ``HostReady`` is persisted as one atomic disk record; runs replay
bit for bit; all-Raft, all-Paxos and mixed hosts (up to 64 groups) pass every per-group
checker and quiesce; the quiet check fails for a host that never quiesces; and a host whose
LEASE->SAFE downgrade after a wake is patched out is caught serving a stale lease read
within a fixed seed range (Raft thesis §6.4.1: a lease is only as good as the clock that
measures it, and a quiesced group's logical clock stands still).
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from consensus.api import Logger, Ready
from consensus.host import GroupReady, HostConfig, HostReady, MultiGroupHost
from consensus.sim import FaultProfile
from consensus.sim.hostdisk import HostDisk
from consensus.sim.hostnode import HostFactory
from consensus.sim.multigroup import MultiSimConfig, MultiSimResult, run_multi
from consensus.types import Entry, GroupId, HardState, Index, NodeId, Term

from . import broken

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

CI_SEEDS = range(0, 20)
CI_STEPS = 10_000
DETECTION_SEEDS = range(0, 12)
DETECTION_STEPS = 20_000


def _ready(term: int, index: int) -> Ready:
    return Ready(
        hard_state=HardState(term=Term(term), vote=NodeId(1), commit=Index(0)),
        entries=(Entry(index=Index(index), term=Term(term), data=b"x"),),
    )


def _host_ready(*groups: int, index: int) -> HostReady:
    return HostReady(
        groups=tuple(GroupReady(group_id=GroupId(g), ready=_ready(1, index)) for g in groups),
        messages=(),
        must_sync=True,
    )


def _assert_clean(result: MultiSimResult) -> None:
    assert result.ok, "\n".join(str(v) for v in result.violations)


# --------------------------------------------------------------------------- HostDisk


def test_host_disk_writes_one_record_per_host_ready() -> None:
    """Group commit: every group in a HostReady lands in ONE record, synced once."""
    disk = HostDisk([GroupId(1), GroupId(2), GroupId(3)])
    written = disk.write(_host_ready(1, 3, index=1))
    assert [gid for gid, _ in written] == [GroupId(1), GroupId(3)]
    assert disk.stats.writes == 1 and disk.unsynced_writes == 1
    disk.sync()
    assert disk.stats.syncs == 1
    assert [e.index for e in disk.load(GroupId(3)).entries] == [Index(1)]
    assert disk.load(GroupId(2)).entries == ()


def test_host_disk_crash_keeps_or_loses_a_record_for_all_its_groups() -> None:
    """A crash keeps a prefix of the unsynced host records, each whole for every group."""
    disk = HostDisk([GroupId(1), GroupId(2)])
    disk.write(_host_ready(1, 2, index=1))
    disk.write(_host_ready(2, index=2))
    disk.write(_host_ready(1, 2, index=2))
    assert disk.crash(keep=2) == 1
    assert [e.index for e in disk.load(GroupId(1)).entries] == [Index(1)]
    assert [e.index for e in disk.load(GroupId(2)).entries] == [Index(1), Index(2)]
    # The page-cache view of each group is back to its durable state.
    assert disk.group(GroupId(1)).entry(Index(2)) is None


# --------------------------------------------------------------------------- runs


def test_a_seed_replays_bit_for_bit() -> None:
    """One seed fixes the whole multi-group run: equal results and trace digests."""
    config = MultiSimConfig(seed=3, groups=4, backend="mixed", steps=3_000)
    assert run_multi(config) == run_multi(config)


@pytest.mark.parametrize("backend", ["raft", "paxos", "mixed"])
def test_every_backend_mode_passes_and_quiesces(backend: str) -> None:
    """Raft §5.2 Figure 3 per group, liveness and convergence per group, and then every
    group quiesces and only NodeHeartbeats travel."""
    result = run_multi(MultiSimConfig(seed=11, groups=6, backend=backend, steps=6_000))
    _assert_clean(result)
    assert result.ops["ok"] > 0
    assert result.quiesce["quiesce_us"] is not None
    assert result.quiesce["quiet_window_other"] == 0
    assert result.quiesce["quiet_window_group_ticks"] == 0
    assert result.messages.get("Quiesce", 0) > 0


def test_sixty_four_groups_per_node() -> None:
    """64 groups per node under every fault; one disk record per HostReady at most."""
    result = run_multi(MultiSimConfig(seed=1, groups=64, backend="mixed", steps=8_000))
    _assert_clean(result)
    assert result.quiesce["quiet_window_other"] == 0
    # One record per HostReady: far fewer records than group Readys carrying entries.
    assert result.disk["writes"] > 0
    assert result.disk["syncs"] <= result.disk["writes"]


def _never_quiescing_host(config: HostConfig, rng: random.Random, logger: Logger) -> MultiGroupHost:
    return MultiGroupHost(dataclasses.replace(config, quiesce=False), rng=rng, logger=logger)


def test_quiet_check_fails_for_a_host_that_never_quiesces() -> None:
    """The quiesce check is not vacuous: idle groups that keep ticking are reported."""
    result = run_multi(
        MultiSimConfig(
            seed=2,
            groups=3,
            steps=2_000,
            faults=FaultProfile.NONE,
            host_factory=_never_quiescing_host,
            quiesce_timeouts=3,
        )
    )
    assert [v.kind for v in result.violations] == ["quiesce"]
    assert "host_factory=" in result.violations[0].replay


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_ci_seed_range_eight_mixed_groups(seed: int) -> None:
    """faults=all with 8 mixed groups per node: no violation in any group, quiet at the end."""
    result = run_multi(MultiSimConfig(seed=seed, groups=8, backend="mixed", steps=CI_STEPS))
    _assert_clean(result)
    assert result.quiesce["quiet_window_other"] == 0


# --------------------------------------------------------------------------- broken host


def _detection_config(seed: int, factory: HostFactory | None = None) -> MultiSimConfig:
    return MultiSimConfig(
        seed=seed,
        groups=8,
        backend="mixed",
        steps=DETECTION_STEPS,
        faults=FaultProfile.NETWORK,
        host_factory=factory,
    )


def test_broken_lease_downgrade_is_caught() -> None:
    """Leases and quiescence (consensus.host): a leader quiesced while cut off keeps a lease
    its frozen clock never expired; without the LEASE->SAFE downgrade it serves a read that
    misses a write the new leader committed. The checker must find it in DETECTION_SEEDS,
    and the correct host must pass those very seeds."""
    caught: tuple[int, MultiSimResult] | None = None
    for seed in DETECTION_SEEDS:
        result = run_multi(_detection_config(seed, broken.host_without_lease_downgrade))
        if result.violations and result.violations[0].kind in SAFETY_KINDS:
            caught = (seed, result)
            break
    assert caught is not None, f"slipped through seeds {DETECTION_SEEDS}"
    seed, result = caught
    assert result.violations[0].kind == "linearizability", str(result.violations[0])
    assert "host_without_lease_downgrade" in result.violations[0].replay
    for clean_seed in range(DETECTION_SEEDS.start, seed + 1):
        _assert_clean(run_multi(_detection_config(clean_seed)))
