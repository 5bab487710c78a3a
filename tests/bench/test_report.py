"""Rendering a comparison report again from a saved results.json (a real run's output,
tests/bench/data/results.json: a 3-node leader-kill comparison of a few seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shardb.bench.compare import run_metrics, summarize
from shardb.bench.plots import render_plots, swept_param
from shardb.bench.report import comparison_rows, fmt, fmt_spread, render_markdown
from shardb.workload_cli import _standalone

DATA = Path(__file__).parent / "data" / "results.json"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def results() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text())
    return data


def test_summary_is_recomputed_identically_from_the_runs(results: dict[str, Any]) -> None:
    assert summarize(results["runs"]) == results["summary"]


def test_run_metrics_include_fault_costs_and_per_entry_costs(results: dict[str, Any]) -> None:
    metrics = run_metrics(results["runs"][0])
    assert metrics["fault0.unavailability_s"] is not None
    assert metrics["fsyncs_per_entry"] is not None
    assert metrics["write.p99_ms"] is not None


def test_markdown_has_a_row_per_metric_with_both_backends(results: dict[str, Any]) -> None:
    report = render_markdown(results, ["timeseries.png"])
    assert report.startswith(f"# Raft vs Multi-Paxos: {results['scenario']['name']}")
    assert "| metric | raft | paxos | paxos/raft |" in report
    assert "| throughput (ops/s) |" in report
    assert "| fault 0: unavailability s |" in report
    assert "## Faults, per run" in report and "kill_leader(range=1)" in report
    assert "## Checks, per run" in report
    assert results["command"] in report
    assert "![timeseries.png](timeseries.png)" in report


def test_cells_show_the_median_and_the_spread() -> None:
    assert fmt_spread({"median": 2.0, "min": 1.5, "max": 3.25, "n": 3}) == "2 [1.50-3.25]"
    assert fmt_spread({"median": 1234.5, "min": 1234.5, "max": 1234.5, "n": 3}) == "1,234"
    assert fmt(None) == "-" and fmt(0.01234) == "0.012"
    rows = comparison_rows(
        {"raft": {"throughput_ops_s": {"median": 100.0, "min": 90.0, "max": 110.0, "n": 3}},
         "paxos": {"throughput_ops_s": {"median": 80.0, "min": 80.0, "max": 80.0, "n": 3}}},
        ["raft", "paxos"],
    )  # fmt: skip
    assert rows == [("throughput (ops/s)", ["100 [90-110]", "80"], "0.80")]


def test_bench_report_renders_the_files_again_from_results_json(tmp_path: Path) -> None:
    saved = tmp_path / "results.json"
    shutil.copy(DATA, saved)
    result = CliRunner().invoke(_standalone(), ["bench", "report", str(saved)])
    assert result.exit_code == 0, result.output
    assert "throughput (ops/s)" in result.output
    for name in ("throughput_vs_clients.png", "latency_percentiles.png", "timeseries.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert "## Faults, per run" in (tmp_path / "report.md").read_text()


def test_a_ranges_sweep_is_plotted_against_ranges(tmp_path: Path, results: dict[str, Any]) -> None:
    """Variants that differ in their number of ranges get throughput against ranges (the
    ranges sweep); the clients plot stays for everything else."""
    runs = []
    for ranges in (1, 16):
        for run in results["runs"]:
            variant = f"sweep[ranges={ranges}]"
            params = {**run["variant_params"], "ranges": ranges}
            runs.append({**run, "variant": variant, "variant_params": params})
    swept = {**results, "runs": runs, "summary": summarize(runs)}
    assert swept_param(swept) == "ranges"
    assert swept_param(results) == "clients"
    names = render_plots(swept, tmp_path)
    assert names[0] == "throughput_vs_ranges.png"
    assert (tmp_path / "throughput_vs_ranges.png").read_bytes()[:8] == PNG


def test_markdown_shows_bytes_per_committed_entry(results: dict[str, Any]) -> None:
    run = results["runs"][0]
    nodes = {**run["nodes"], "per_entry": {**run["nodes"]["per_entry"], "bytes": 812.5}}
    runs = [{**run, "nodes": nodes}]
    report = render_markdown({**results, "runs": runs, "summary": summarize(runs)})
    assert "| bytes sent / committed entry | 812 |" in report
