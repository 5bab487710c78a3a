"""YCSB CoreWorkload: standard mixes, properties files, key streams, and the SQL mapping.

Reference: Cooper et al., "Benchmarking Cloud Serving Systems with YCSB", SoCC 2010, §4
(core workloads A-F) and YCSB's ``workloads/workload[a-f]`` property files.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from consensus.types import GroupId, NodeId
from shardb.placement.descriptors import RangeDescriptor, RangeMap
from shardb.sql import Catalog, RouteKind, analyze, analyze_script, apply_ddl, route
from shardb.workload import (
    CoreWorkload,
    CoreWorkloadConfig,
    OpKind,
    Outcome,
    UserTable,
    WorkloadConfigError,
    builtin_workload,
    load_properties,
    parse_override,
    parse_properties,
)

# YCSB's published mixes: (read, update, insert, scan, read-modify-write), distribution.
STANDARD = {
    "a": ({OpKind.READ: 0.5, OpKind.UPDATE: 0.5}, "zipfian"),
    "b": ({OpKind.READ: 0.95, OpKind.UPDATE: 0.05}, "zipfian"),
    "c": ({OpKind.READ: 1.0}, "zipfian"),
    "d": ({OpKind.READ: 0.95, OpKind.INSERT: 0.05}, "latest"),
    "e": ({OpKind.SCAN: 0.95, OpKind.INSERT: 0.05}, "zipfian"),
    "f": ({OpKind.READ: 0.5, OpKind.READ_MODIFY_WRITE: 0.5}, "zipfian"),
}


def _workload(props: dict[str, str], seed: int = 1) -> CoreWorkload:
    return CoreWorkload(CoreWorkloadConfig.from_properties(props), rng=random.Random(seed))


@pytest.mark.parametrize("name", sorted(STANDARD))
def test_standard_workload_mix_within_tolerance(name: str) -> None:
    """Cooper et al. §4: workloads A-F issue their operation kinds in the published ratios
    (4 sigma), on the published request distribution."""
    mix, distribution = STANDARD[name]
    draws = 4000
    props = builtin_workload(name) | {"recordcount": "500", "operationcount": str(draws)}
    config = CoreWorkloadConfig.from_properties(props)
    assert config.request_distribution == distribution
    workload = CoreWorkload(config, rng=random.Random(11))
    counts: Counter[OpKind] = Counter()
    while (op := workload.next_operation()) is not None:
        counts[op.kind] += 1
        workload.complete(op, Outcome.OK)
    assert sum(counts.values()) == draws
    assert set(counts) <= set(mix)
    for kind, p in mix.items():
        sigma = math.sqrt(draws * p * (1 - p))
        assert abs(counts[kind] - draws * p) <= 4 * sigma + 1e-9, (kind, counts)


def test_properties_file_format() -> None:
    """Java properties: comments, '=', ':' and space separators, continuations, escapes."""
    text = "\n".join(
        [
            "# comment",
            "! also a comment",
            "recordcount=100",
            "  operationcount : 200",
            "table usertable",
            "fieldnameprefix = f\\",
            "    ld",
            "weird\\=key=a\\tb\\u0041",
            "empty=",
        ]
    )
    props = parse_properties(text)
    assert props == {
        "recordcount": "100",
        "operationcount": "200",
        "table": "usertable",
        "fieldnameprefix": "fld",
        "weird=key": "a\tbA",
        "empty": "",
    }


def test_property_files_then_overrides_later_wins(tmp_path: Path) -> None:
    """-P files are merged in order and -p key=value overrides win, as in YCSB; -P may name
    a standard workload without the file."""
    first = tmp_path / "one.properties"
    first.write_text("recordcount=10\nfieldcount=3\n")
    second = tmp_path / "two.properties"
    second.write_text("recordcount=20\n")
    props = load_properties(["workloadb", first, second], ["fieldcount=4", "x = y"])
    assert props["readproportion"] == "0.95"
    assert props["recordcount"] == "20"
    assert props["fieldcount"] == "4"
    assert props["x"] == "y"
    with pytest.raises(WorkloadConfigError, match="not found"):
        load_properties([tmp_path / "missing"])
    with pytest.raises(WorkloadConfigError, match="key=value"):
        parse_override("novalue")


def test_unknown_properties_are_listed_not_fatal() -> None:
    """Real YCSB files carry settings for other workloads and bindings (workload D has
    filterproportion): they are reported, not rejected."""
    config = CoreWorkloadConfig.from_properties(
        builtin_workload("d") | {"filterproportion": "0", "threadcount": "8"}
    )
    assert config.ignored == ("filterproportion",)


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"recordcount": "ten"}, "recordcount must be an integer"),
        ({"readproportion": "1.5"}, "readproportion must be in"),
        ({"requestdistribution": "pareto"}, "requestdistribution must be one of"),
        ({"insertstart": "10", "insertcount": "1000"}, "exceeds recordcount"),
        ({"table": "user table"}, "SQL identifier"),
        ({"readproportion": "0", "updateproportion": "0"}, "every operation proportion"),
        ({"minscanlength": "10", "maxscanlength": "5"}, "minscanlength"),
    ],
)
def test_bad_properties_name_the_property(props: dict[str, str], message: str) -> None:
    with pytest.raises(WorkloadConfigError, match=message):
        CoreWorkloadConfig.from_properties(props)


def test_load_phase_inserts_every_record_once() -> None:
    """The load phase inserts records insertstart..insertstart+insertcount-1 with full rows;
    hashed order scatters them, ordered inserts with zero padding sort by number."""
    workload = _workload({"recordcount": "50", "fieldcount": "3", "fieldlength": "7"})
    load = workload.load_phase()
    ops = []
    while (op := load.next_operation()) is not None:
        ops.append(op)
    assert [op.keynum for op in ops] == list(range(50))
    assert len({op.key for op in ops}) == 50
    assert all(op.kind is OpKind.INSERT for op in ops)
    assert all([name for name, _ in op.values] == ["field0", "field1", "field2"] for op in ops)
    assert all(len(value) == 7 for op in ops for _, value in op.values)
    assert [op.key for op in ops] != sorted(op.key for op in ops)

    ordered = _workload({"recordcount": "20", "insertorder": "ordered", "zeropadding": "4"})
    keys = [op.key for op in iter(ordered.next_insert, None)]
    assert keys[:3] == ["user0000", "user0001", "user0002"]
    assert keys == sorted(keys)


def test_run_phase_reads_only_acknowledged_records() -> None:
    """YCSB's AcknowledgedCounter: a read never targets a record whose insert has not been
    acknowledged; once acknowledged, new records are read (workload D favours them)."""
    props = builtin_workload("d") | {"recordcount": "100", "operationcount": "0"}
    workload = _workload(props, seed=3)
    pending = []
    for _ in range(2000):
        op = workload.next_operation()
        assert op is not None
        if op.kind is OpKind.INSERT:
            pending.append(op)
        else:
            assert op.keynum <= workload.acknowledged_limit
    assert workload.acknowledged_limit == 99
    for op in pending:
        workload.complete(op, Outcome.FAIL)  # acknowledged whatever the outcome, like YCSB
    assert workload.acknowledged_limit == 99 + len(pending)
    reads = [workload.next_operation() for _ in range(500)]
    assert any(op is not None and op.keynum >= 100 for op in reads)


def test_operation_count_ends_the_run_stream() -> None:
    workload = _workload({"recordcount": "10", "operationcount": "7"})
    assert len(list(iter(workload.next_operation, None))) == 7


def test_read_one_field_and_write_all_fields() -> None:
    """readallfields=false reads one random field; writeallfields=true updates every field."""
    props = {
        "recordcount": "10",
        "fieldcount": "4",
        "readallfields": "false",
        "writeallfields": "true",
        "readproportion": "0.5",
        "updateproportion": "0.5",
    }
    workload = _workload(props)
    ops = [op for op in iter(workload.next_operation, None)]
    reads = [op for op in ops if op.kind is OpKind.READ]
    updates = [op for op in ops if op.kind is OpKind.UPDATE]
    assert reads and all(len(op.fields) == 1 for op in reads)
    assert updates and all(len(op.values) == 4 for op in updates)


# --- SQL mapping ----------------------------------------------------------------------------


def _catalog(create_sql: str) -> Catalog:
    catalog = Catalog()
    for statement in analyze_script(create_sql, catalog):
        catalog = apply_ddl(catalog, statement)
    return catalog


def _ranges(table: str, splits: list[str]) -> RangeMap:
    bounds: list[str | None] = [None, *splits, None]
    return RangeMap.build(
        table,
        [
            RangeDescriptor(
                range_id=i + 1,
                table=table,
                start_key=bounds[i],
                end_key=bounds[i + 1],
                group_id=GroupId(10 + i),
                replicas=(NodeId(1), NodeId(2), NodeId(3)),
                backend="raft",
            )
            for i in range(len(bounds) - 1)
        ],
    )


def test_every_operation_is_sql_the_gateway_routes() -> None:
    """Each YCSB operation's SQL passes shardb's analyzer and routes as intended: point
    reads/updates/inserts to one range, scans as a key range, read-modify-write as a point
    SELECT then a point UPDATE."""
    props = {
        "recordcount": "200",
        "fieldcount": "3",
        "readproportion": "0.2",
        "updateproportion": "0.2",
        "insertproportion": "0.2",
        "scanproportion": "0.2",
        "readmodifywriteproportion": "0.2",
        "maxscanlength": "20",
        "operationcount": "300",
    }
    workload = _workload(props)
    table = workload.table
    catalog = _catalog(table.create_sql())
    ranges = _ranges("usertable", ["user3", "user6"])
    expected = {
        OpKind.READ: [RouteKind.POINT],
        OpKind.UPDATE: [RouteKind.POINT],
        OpKind.INSERT: [RouteKind.POINT],
        OpKind.SCAN: [RouteKind.RANGE],
        OpKind.READ_MODIFY_WRITE: [RouteKind.POINT, RouteKind.POINT],
    }
    seen = set()
    for op in iter(workload.next_operation, None):
        statements = table.statements(op)
        kinds = [route(analyze(s.sql, catalog), s.params, ranges).kind for s in statements]
        assert kinds == expected[op.kind], (op, statements)
        seen.add(op.kind)
        workload.complete(op, Outcome.OK)
    assert seen == set(OpKind)


def test_sql_behaves_as_ycsb_operations_on_sqlite() -> None:
    """Run the generated SQL on SQLite (each shard's engine): the load inserts every row,
    an update changes the chosen field, a scan returns scan_length rows from the start key
    in key order."""
    props = {"recordcount": "30", "fieldcount": "2", "fieldlength": "5", "operationcount": "0"}
    workload = _workload(props)
    table = UserTable.for_config(workload.config)
    db = sqlite3.connect(":memory:")
    db.execute(table.create_sql())
    for insert in iter(workload.next_insert, None):
        for statement in table.statements(insert):
            db.execute(statement.sql, statement.params)
    assert db.execute("SELECT COUNT(*) FROM usertable").fetchone() == (30,)
    keys = sorted(row[0] for row in db.execute("SELECT ycsb_key FROM usertable"))

    update_props = props | {"readproportion": "0", "updateproportion": "1"}
    updates = _workload(update_props, seed=9)
    update = updates.next_operation()
    assert update is not None and update.kind is OpKind.UPDATE
    ((column, value),) = update.values
    (statement,) = table.statements(update)
    assert db.execute(statement.sql, statement.params).rowcount == 1
    assert db.execute(
        f"SELECT {column} FROM usertable WHERE ycsb_key = ?", (update.key,)
    ).fetchone() == (value,)

    scan_props = props | {"readproportion": "0", "scanproportion": "1", "maxscanlength": "5"}
    scans = _workload(scan_props, seed=4)
    scan = scans.next_operation()
    assert scan is not None and scan.kind is OpKind.SCAN
    (statement,) = table.statements(scan)
    rows = db.execute(statement.sql, statement.params).fetchall()
    start = keys.index(scan.key)
    assert [row[0] for row in rows] == keys[start : start + scan.scan_length]
    assert all(len(row) == 3 for row in rows)
