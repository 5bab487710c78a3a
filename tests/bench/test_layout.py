"""How a run lays out keys: split points, range lookup, load batches, scenario overrides."""

from __future__ import annotations

import pytest

from shardb.bench.compare import resolve_scenario, variants
from shardb.bench.executor import LoadBatch, RangeIndex, batch_insert_statement
from shardb.bench.runner import load_batches, split_points, with_duration, with_load
from shardb.workload.scenario import ScenarioError, load_scenario, parse_scenario
from shardb.workload.ycsb import OpKind, UserTable, YcsbOp


def test_split_points_give_each_range_an_equal_share_of_the_keys() -> None:
    keys = [f"r{i}" for i in range(8)]
    assert split_points(keys, 4) == ["r2", "r4", "r6"]
    assert split_points(keys, 1) == []
    assert split_points(["a", "b"], 4) == ["b"]  # never more ranges than distinct keys


def test_range_index_maps_keys_to_the_range_holding_them() -> None:
    index = RangeIndex([None, "r2", "r4"], [1, 2, 3])
    assert [index.range_of(k) for k in ("a", "r1", "r2", "r3", "r4", "z")] == [1, 1, 2, 2, 3, 3]
    assert index.range_ids == (1, 2, 3)


def _insert(key: str) -> YcsbOp:
    return YcsbOp(kind=OpKind.INSERT, key=key, keynum=0, values=(("field0", "v"),))


def test_load_batches_stay_within_one_range_and_interleave_ranges() -> None:
    index = RangeIndex([None, "m"], [1, 2])
    inserts = [_insert(k) for k in ("a", "n", "b", "o", "c", "p", "d")]
    batches = load_batches(inserts, index, 2)
    assert [[op.key for op in b.rows] for b in batches] == [
        ["a", "b"], ["n", "o"], ["c", "d"], ["p"]
    ]  # fmt: skip
    assert all(len({index.range_of(op.key) for op in b.rows}) == 1 for b in batches)


def test_batch_insert_statement_is_one_multi_row_insert() -> None:
    table = UserTable("usertable", ("field0",))
    statement = batch_insert_statement(table, LoadBatch(rows=(_insert("a"), _insert("b"))))
    assert statement.sql == (
        "INSERT INTO usertable (ycsb_key, field0) VALUES (?, ?), (?, ?) "
        "ON CONFLICT (ycsb_key) DO NOTHING"
    )
    assert statement.params == ("a", "v", "b", "v")


def test_with_duration_scales_faults_with_the_run_phases() -> None:
    scenario = load_scenario(resolve_scenario("leader-kill"))
    short = with_duration(scenario, 15)
    assert short.run_duration_s == pytest.approx(15)
    assert short.faults[0].at_s == pytest.approx(5)
    assert short.faults[0].heal_after_s == pytest.approx(2.5)


def test_with_load_overrides_only_run_phases() -> None:
    scenario = load_scenario(resolve_scenario("steady-ycsb-a"))
    changed = with_load(scenario, clients=4, target=50.0)
    assert [(p.kind.value, p.clients, p.target) for p in changed.phases] == [
        ("load", 16, None),
        ("run", 4, 50.0),
    ]


def test_variants_expand_every_sweep_but_the_backend() -> None:
    scenario = load_scenario(resolve_scenario("clients-sweep"))
    names = [v.name for v in variants(scenario)]
    assert names[0] == "clients-sweep[clients=1]"
    assert len(names) == 8
    plain = parse_scenario(
        'name = "x"\n[[phases]]\nkind = "run"\nworkload = "kv"\nduration_s = 1\n'
        '[sweep]\nbackend = ["raft", "paxos"]\n'
    )
    assert [v.name for v in variants(plain)] == ["x"]


def test_resolve_scenario_names_the_built_ins_when_it_fails() -> None:
    with pytest.raises(ScenarioError, match="steady-ycsb-a"):
        resolve_scenario("no-such-scenario")
