"""Scenario files: parsing into frozen specs, validation errors, sweeps, shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardb.workload import (
    CoreWorkloadConfig,
    FaultKind,
    PhaseKind,
    ScenarioError,
    load_scenario,
    parse_scenario,
    ycsb_properties,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios"
SHIPPED = [
    "steady-ycsb-a", "steady-ycsb-b", "clients-sweep", "ranges-sweep", "leader-kill",
    "minority-partition", "partial-partition", "slow-follower", "wan-delay", "lagging-replica",
]  # fmt: skip

BASE = """
name = "t"
[cluster]
nodes = 3
ranges = 2
[[phases]]
kind = "run"
workload = "register"
duration_s = 30
clients = 4
"""


def test_shipped_scenarios_parse() -> None:
    """Every built-in comparison in benchmarks/scenarios is valid and named for its file."""
    assert sorted(p.stem for p in SCENARIOS.glob("*.toml")) == sorted(SHIPPED)
    for stem in SHIPPED:
        scenario = load_scenario(SCENARIOS / f"{stem}.toml")
        assert scenario.name == stem
        assert scenario.description
        assert all(len(v.phases) == len(scenario.phases) for v in scenario.expand())


def test_full_scenario_becomes_frozen_specs() -> None:
    scenario = parse_scenario(
        """
        name = "demo"
        seed = 9
        [cluster]
        nodes = 5
        ranges = 4
        backend = "paxos"
        durability = "nofsync"
        [[phases]]
        kind = "load"
        workload = "ycsb-a"
        clients = 8
        properties = { recordcount = 500, readallfields = false }
        [[phases]]
        kind = "run"
        workload = "register"
        duration_s = 60
        clients = 4
        target = 250.5
        consistency = "lease"
        properties = { keys = 3 }
        [[faults]]
        at_s = 40
        kind = "slow_link"
        links = [[1, 2], [2, 3]]
        delay_ms = 30
        [[faults]]
        at_s = 10
        kind = "partition"
        groups = [[1, 2], [3, 4, 5]]
        heal_after_s = 5
        [checks]
        linearizable = true
        no_lost_writes = true
        row_count = { usertable = 500 }
        """
    )
    assert scenario.seed == 9
    assert (scenario.cluster.nodes, scenario.cluster.ranges) == (5, 4)
    assert (scenario.cluster.backend, scenario.cluster.durability) == ("paxos", "nofsync")
    assert scenario.cluster.replicas_per_range == 3
    load, run = scenario.phases
    assert load.kind is PhaseKind.LOAD and load.duration_s is None
    config = CoreWorkloadConfig.from_properties(ycsb_properties(load))
    assert config.record_count == 500 and not config.read_all_fields
    assert config.update_proportion == 0.5  # from the standard workload A
    assert run.target == 250.5 and run.consistency == "lease"
    assert run.properties == (("keys", "3"),)
    # Faults are sorted by time.
    assert [f.kind for f in scenario.faults] == [FaultKind.PARTITION, FaultKind.SLOW_LINK]
    assert scenario.faults[0].arg("groups") == ((1, 2), (3, 4, 5))
    assert scenario.faults[1].arg("delay_ms") == 30
    assert scenario.faults[1].heal_after_s is None
    assert scenario.checks.row_count == (("usertable", 500),)
    with pytest.raises(AttributeError):
        scenario.seed = 1  # type: ignore[misc]  # frozen


def test_sweep_expands_every_combination_in_order() -> None:
    scenario = parse_scenario(BASE + '[sweep]\nbackend = ["raft", "paxos"]\nclients = [1, 8]\n')
    variants = scenario.expand()
    assert [v.name for v in variants] == [
        "t[backend=raft,clients=1]",
        "t[backend=raft,clients=8]",
        "t[backend=paxos,clients=1]",
        "t[backend=paxos,clients=8]",
    ]
    assert [(v.cluster.backend, v.phases[0].clients) for v in variants] == [
        ("raft", 1), ("raft", 8), ("paxos", 1), ("paxos", 8),
    ]  # fmt: skip
    assert all(not v.sweep for v in variants)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("bogus = 1\n", r"phases\[0\]: unknown key\(s\): bogus"),
        ("[checks]\nlinearizble = true\n", r"checks: unknown key\(s\): linearizble"),
        ('[[faults]]\nat_s = 30\nkind = "restart"\nnode = 1\n', "at or after the end"),
        (
            '[[faults]]\nat_s = 20\nkind = "restart"\nnode = 1\nheal_after_s = 15\n',
            "after the run phases end",
        ),
        ('[[faults]]\nat_s = 5\nkind = "pause_node"\nnode = 4\n', "node 4 is not in the cluster"),
        ('[[faults]]\nat_s = 5\nkind = "pause_node"\n', "faults\\[0\\].node: is required"),
        ('[[faults]]\nat_s = 5\nkind = "kill_leader"\nrange = 3\n', "range 3 does not exist"),
        (
            '[[faults]]\nat_s = 5\nkind = "kill_leader"\nnode = 1\n',
            "not an argument of kill_leader",
        ),
        ('[[faults]]\nat_s = 5\nkind = "meteor"\n', "kind: must be one of"),
        (
            '[[faults]]\nat_s = 5\nkind = "partition"\ngroups = [[1, 2], [2, 3]]\n',
            "more than one group",
        ),
        ('[[faults]]\nat_s = 5\nkind = "partition"\nlinks = [[1, 1]]\n', "two different node ids"),
        ('[[faults]]\nat_s = 5\nkind = "partition"\n', "exactly one of groups, links, isolate"),
        ('[[faults]]\nat_s = 5\nkind = "clock_skew"\nnode = 2\nskew_ms = 0\n', "non-zero"),
        ('[[faults]]\nat_s = 5\nkind = "slow_link"\nnode = 2\n', "delay_ms: is required"),
        ("[sweep]\nseed = [1, 2]\n", "cannot sweep"),
        (
            '[sweep]\nnodes = [3, 2]\n[[faults]]\nat_s = 5\nkind = "restart"\nnode = 3\n',
            "node 3 is not in the cluster",
        ),
    ],
)
def test_invalid_scenarios_say_where_and_why(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(BASE + extra, source="bad.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\n', "at least one \\[\\[phases\\]\\]"),
        ("bogus = 1\n" + BASE, r"<top>: unknown key\(s\): bogus"),
        (
            'name = "x"\n[[phases]]\nkind = "run"\nworkload = "register"\n',
            "duration_s: is required",
        ),
        (
            'name = "x"\n[[phases]]\nkind = "load"\nworkload = "ycsb-a"\nduration_s = 3\n',
            "load phase runs until",
        ),
        (
            'name = "x"\n[[phases]]\nkind = "run"\nworkload = "tpcc"\nduration_s = 3\n',
            "workload: must be one of",
        ),
        (
            'name = "x"\n[[phases]]\nkind = "run"\nworkload = "ycsb-a"\nduration_s = 3\n'
            "properties = { readproportion = 2 }\n",
            "readproportion must be in",
        ),
        (
            'name = "x"\n[[phases]]\nkind = "run"\nworkload = "ycsb-a"\nduration_s = 3\n'
            "properties = { readproportoin = 0.5 }\n",
            "unknown YCSB propert",
        ),
        (
            'name = "x"\n[[phases]]\nkind = "run"\nworkload = "register"\nduration_s = 3\n'
            "properties = { keys = 0 }\n",
            "positive integer",
        ),
        (
            'name = "x"\n[[phases]]\nkind = "run"\nworkload = "ycsb-a"\nduration_s = 3\n'
            "[checks]\nlinearizable = true\n",
            "needs a run phase with a register or kv",
        ),
        ('name = "x"\n[cluster]\nnodes = 2\nbackend = "zab"\n', "backend: must be one of"),
        ('name = "x"\n[cluster]\nnodes = 2\nreplication = 3\n', "replicas need at least"),
        (
            'name = "x"\n[[phases]]\nkind = "run"\nworkload = "kv"\nduration_s = 3\nclients = 0\n',
            "clients: must be >= 1",
        ),
        ("name = [", "not valid TOML"),
    ],
)
def test_invalid_phases_and_clusters(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text)
