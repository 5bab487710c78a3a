"""Membership changes and leadership transfer under faults, and the elections profile.

Reference: Raft thesis §4 (membership changes; learners §4.2.1; disruptive removed servers
§4.2.3) and §3.10 (leadership transfer); Paxos Made Simple §3 (reconfiguration through the
log); Raft §5.2 and Figure 8 (what the leadership churn is for).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.api import Role
from consensus.sim import TRAITS, FaultProfile, SimConfig, Simulation, run

JOIN_EMPTY_CONF = (
    Path(__file__).parent.parent / "interaction" / "testdata" / "paxos" / "join_empty_conf.txt"
)


@pytest.mark.parametrize("backend", ["raft", "paxos"])
def test_operator_changes_membership_and_transfers_leadership_safely(backend: str) -> None:
    """Raft thesis §4.1 / PMS §3: learners join, get promoted, voters leave, leadership
    moves, and every safety checker and the end-of-run checks stay green throughout."""
    results = [
        run(SimConfig(seed=seed, backend=backend, faults=FaultProfile.MEMBERSHIP, steps=3_000))
        for seed in range(3)
    ]
    assert all(r.ok for r in results), [str(v) for r in results for v in r.violations]
    total = {k: sum(r.membership[k] for r in results) for k in results[0].membership}
    assert total["changes_committed"] >= 3, total
    assert total["transfers_completed"] >= 1, total
    assert all(r.spares in (1, 2) for r in results)


def test_spares_join_with_an_empty_configuration_and_catch_up() -> None:
    """A Raft node that starts with an empty ConfState learns the membership from the
    leader (conf entries or snapshot) and ends up applying the same state as the others."""
    for seed in range(6):
        sim = Simulation(SimConfig(seed=seed, faults=FaultProfile.MEMBERSHIP, steps=4_000))
        result = sim.run()
        assert result.ok, [str(v) for v in result.violations]
        leader = sim.leader_status()
        assert leader is not None
        spares = [n for n in sim.node_ids if n > sim.config.nodes]
        joined = [n for n in spares if n in leader.conf.all_nodes()]
        if joined:
            node = sim.nodes[joined[0]]
            assert node.core is not None
            assert node.core.status().conf == leader.conf
            assert node.kv.snapshot() == sim.nodes[leader.node_id].kv.snapshot()
            return
    pytest.fail("no spare joined the group in seeds 0..5")


def test_removed_voters_are_left_out_of_convergence() -> None:
    """The end-of-run checks judge the current leader's members; a removed voter that stops
    receiving the log is not a convergence failure."""
    for seed in range(10):
        sim = Simulation(SimConfig(seed=seed, faults=FaultProfile.MEMBERSHIP, steps=4_000))
        result = sim.run()
        assert result.ok, [str(v) for v in result.violations]
        leader = sim.leader_status()
        assert leader is not None
        removed = [n for n in range(1, sim.config.nodes + 1) if n not in leader.conf.voters]
        if removed:
            return
    pytest.fail("no voter was removed in seeds 0..9")


def test_paxos_joiners_use_empty_conf_once_the_core_supports_it() -> None:
    """Tripwire: paxos spares start with the bootstrap configuration only while PaxosCore
    mishandles an empty one (the interaction script is xfail). When that script passes,
    turn ``joins_with_empty_conf`` on for paxos in ``consensus.sim.checkers.TRAITS``."""
    xfail = JOIN_EMPTY_CONF.read_text().startswith("# xfail:")
    assert TRAITS["paxos"].joins_with_empty_conf is not xfail
    assert TRAITS["raft"].joins_with_empty_conf


@pytest.mark.parametrize("backend", ["raft", "paxos"])
def test_elections_profile_churns_leadership(backend: str) -> None:
    """Raft §5.2: short election timeouts against long message delays and leaders struck
    soon after taking office give many more elections than a calm run, with targeted
    crashes right after votes and acknowledgements."""
    calm = run(SimConfig(seed=1, backend=backend, faults=FaultProfile.NONE, steps=3_000))
    churned = [
        run(SimConfig(seed=s, backend=backend, faults=FaultProfile.ELECTIONS, steps=3_000))
        for s in range(1, 4)
    ]
    assert all(r.ok for r in churned), [str(v) for r in churned for v in r.violations]
    assert sum(r.leaders_elected for r in churned) > 3 * calm.leaders_elected
    kinds = {k for r in churned for k in r.faults}
    assert {"leader_isolated", "crash_on_vote"} <= kinds, kinds
    assert all(r.election_timeout_ticks in (3, 4, 5, 10) for r in churned)


def test_leader_status_picks_the_highest_term_leader() -> None:
    sim = Simulation(SimConfig(seed=3, faults=FaultProfile.NONE, steps=500))
    sim.run()
    status = sim.leader_status()
    assert status is not None and status.role is Role.LEADER
