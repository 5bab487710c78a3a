"""Whole runs on real node processes: a comparison producing its report files, and a register
run through a leader kill whose history the linearizability checker accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shardb.bench.runner import RunOptions, run_scenario
from shardb.workload.scenario import parse_scenario
from shardb.workload_cli import _standalone

pytestmark = pytest.mark.timeout(240)

TINY = """
name = "tiny"
description = "A seconds-long YCSB A comparison on one node."
seed = 3

[cluster]
nodes = 1
ranges = 2

[[phases]]
kind = "load"
workload = "ycsb-a"
clients = 2
properties = { recordcount = 120, fieldcount = 2, fieldlength = 10 }

[[phases]]
kind = "run"
workload = "ycsb-a"
duration_s = 1.5
clients = 4
properties = { recordcount = 120, fieldcount = 2, fieldlength = 10, operationcount = 0 }

[checks]
row_count = { usertable = 120 }
"""


def test_a_short_comparison_runs_end_to_end_and_writes_the_report(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["bench", "compare", "--scenario", str(scenario), "--repetitions", "1",
            "--out", str(out)]  # fmt: skip
    result = runner.invoke(_standalone(), args)
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "report.md", "latency_percentiles.png", "timeseries.png",
            "throughput_vs_clients.png"} <= names  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert [(r["backend"], r["repetition"]) for r in runs] == [("raft", 1), ("paxos", 1)]
    for run in runs:
        assert run["error"] is None
        assert run["run"]["ok"] > 0
        assert run["nodes"]["committed_entries"] > 0
        assert run["nodes"]["per_entry"]["fsyncs"] is not None
        # Reported even on one node, where nothing crosses the network (the leader-kill run
        # below checks a 3-node cluster's bytes).
        assert run["nodes"]["per_entry"]["bytes"] == 0
        assert run["checks"] == [
            {"name": "row_count usertable", "passed": True, "detail": "120 rows, expected 120"}
        ]
    assert results["machine"]["nproc"] >= 1
    assert set(results["summary"]["tiny"]) == {"raft", "paxos"}
    report = (out / "report.md").read_text()
    assert "| throughput (ops/s) |" in report
    assert "| bytes sent / committed entry |" in report
    assert "![timeseries.png](timeseries.png)" in report
    assert (out / "timeseries.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


LEADER_KILL = """
name = "kill"
seed = 11

[cluster]
nodes = 3
ranges = 2

[[phases]]
kind = "run"
workload = "register"
duration_s = 6
clients = 4
properties = { keys = 4 }

[[faults]]
at_s = 2
kind = "kill_leader"
range = 1
heal_after_s = 2

[checks]
linearizable = true
no_lost_writes = true
"""


def test_register_history_through_a_leader_kill_is_linearizable(tmp_path: Path) -> None:
    """Reads, writes and CAS through the SQL gateways while range 1's leader is killed -9 and
    restarted: the recorded history (with unknown outcomes) passes the checker, no
    acknowledged write is lost, and the window is measured against a new leader."""
    record = run_scenario(
        parse_scenario(LEADER_KILL), RunOptions(root=tmp_path / "c", timeout_s=3.0)
    )
    (fault,) = record["faults"]
    assert fault["error"] is None
    assert fault["kind"] == "kill_leader" and len(fault["nodes"]) == 1
    assert fault["healed_ns"] is not None
    (cost,) = record["fault_costs"]
    assert cost["unavailability_s"] is not None and cost["unavailability_s"] > 0
    assert record["nodes"]["incarnations"][str(fault["nodes"][0])] == 2
    (check,) = record["checks"]
    assert check["passed"], check
    assert record["run"]["labels"]["write"]["ok"] > 0
    assert record["run"]["labels"]["cas"]["ok"] > 0
    # Bytes come from each node's transport counters in its ``stats`` reply: every entry is
    # appended to two followers, so a committed entry costs at least its payload twice.
    assert record["nodes"]["per_entry"]["bytes"] > 2 * 8


RESTART_THEN_SKEW = """
name = "restart-skew"
seed = 12

[cluster]
nodes = 3
ranges = 1

[[phases]]
kind = "run"
workload = "register"
duration_s = 4
clients = 2
properties = { keys = 2 }

[[faults]]
at_s = 0.5
kind = "restart"
node = 3
heal_after_s = 0.5

[[faults]]
at_s = 1.05
kind = "clock_skew"
node = 3
skew_ms = 50
"""


def test_a_fault_right_after_a_restart_heal_reaches_the_restarted_node(tmp_path: Path) -> None:
    """A fault planned 50 ms after a restart heal (lagging-replica's clock skew under
    ``--duration``) waits for the node to answer and is applied, not refused because the node
    was still importing (~2 s from spawn to listening on this machine)."""
    record = run_scenario(
        parse_scenario(RESTART_THEN_SKEW), RunOptions(root=tmp_path / "c", timeout_s=3.0)
    )
    restart, skew = record["faults"]
    assert restart["error"] is None and restart["healed_ns"] is not None
    assert skew["kind"] == "clock_skew"
    assert skew["error"] is None, skew
    assert record["nodes"]["incarnations"]["3"] == 2


def test_nofsync_durability_runs_nodes_whose_log_never_fsyncs(tmp_path: Path) -> None:
    """``durability = "nofsync"`` starts the nodes with ``--unsafe-no-fsync``: the same run,
    with the consensus log's fsyncs per committed entry at zero (what durability costs is
    the difference to an fsync run)."""
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY.replace("nodes = 1\n", 'nodes = 1\ndurability = "nofsync"\n'))
    out = tmp_path / "run.json"
    args = ["workload", "run", "--scenario", str(scenario), "--backend", "raft",
            "--root", str(tmp_path / "root"), "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(_standalone(), args)
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["cluster"]["durability"] == "nofsync"
    assert record["error"] is None
    assert record["nodes"]["committed_entries"] > 0
    assert record["nodes"]["per_entry"]["fsyncs"] == 0
