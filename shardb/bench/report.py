"""The comparison report: a markdown file and a rich table, both from a results document
(``results.json``), so a report can be rendered again from saved results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from rich.markup import escape
from rich.table import Table

NAMES: Final = {
    "throughput_ops_s": "throughput (ops/s)",
    "errors": "errors (failed ops)",
    "unknown": "unknown outcome (timeouts)",
    "retries": "gateway retries",
    "messages_per_entry": "messages / committed entry",
    "frames_per_entry": "frames / committed entry",
    "bytes_per_entry": "bytes sent / committed entry",
    "fsyncs_per_entry": "fsyncs / committed entry",
    "committed_entries": "committed entries",
    "cpu_s.total": "CPU s, all nodes",
    "cpu_s.client": "CPU s, load generator",
    "cpu_ms_per_op": "node CPU ms per successful op",
    "load.rows_per_s": "load: rows/s (multi-row INSERT)",
    "checks_failed": "checks failed",
    "failed_run": "runs that failed",
    "crashed_nodes": "nodes that crashed",
}
_LABEL_METRICS: Final = (
    ("throughput_ops_s", "ops/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("p999_ms", "p99.9 ms"),
    ("max_ms", "max ms"),
    ("errors", "errors"),
    ("unknown", "unknown"),
    ("retries", "retries"),
)


def metric_name(metric: str) -> str:
    if metric in NAMES:
        return NAMES[metric]
    head, _, tail = metric.partition(".")
    if head.startswith("fault") and head[5:].isdigit():
        what = "unavailability s" if tail == "unavailability_s" else "recovery s"
        return f"fault {head[5:]}: {what}"
    if head == "cpu_s":
        return f"CPU s, {tail}"
    for key, name in _LABEL_METRICS:
        if tail == key:
            return f"{head}: {name}"
    return metric


def ordered_metrics(metrics: Sequence[str]) -> list[str]:
    """Headline first, then per-operation rows, then cost, faults, checks."""
    present = set(metrics)
    out: list[str] = [
        m for m in ("throughput_ops_s", "errors", "unknown", "retries") if m in present
    ]
    labels = sorted({m.split(".", 1)[0] for m in present if "." in m} - {"cpu_s", "load"})
    labels = [lbl for lbl in labels if not lbl.startswith("fault")]
    for label in labels:
        out.extend(f"{label}.{key}" for key, _ in _LABEL_METRICS if f"{label}.{key}" in present)
    out.extend(
        m
        for m in (
            "load.rows_per_s",
            "committed_entries",
            "messages_per_entry",
            "frames_per_entry",
            "bytes_per_entry",
            "fsyncs_per_entry",
            "cpu_s.total",
            "cpu_ms_per_op",
            "cpu_s.client",
        )
        if m in present
    )
    out.extend(sorted(m for m in present if m.startswith("cpu_s.node")))
    out.extend(sorted(m for m in present if m.startswith("fault")))
    out.extend(m for m in ("checks_failed", "crashed_nodes", "failed_run") if m in present)
    return out


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_spread(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "-"
    if cell["n"] == 1 or cell["min"] == cell["max"]:
        return fmt(cell["median"])
    return f"{fmt(cell['median'])} [{fmt(cell['min'])}-{fmt(cell['max'])}]"


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or not a["median"]:
        return "-"
    return f"{b['median'] / a['median']:.2f}"


def comparison_rows(
    summary: dict[str, Any], backends: Sequence[str]
) -> list[tuple[str, list[str], str]]:
    """Rows of (metric name, one cell per backend, ratio of the second to the first)."""
    metrics = sorted({m for b in backends for m in summary.get(b, {})})
    rows = []
    for metric in ordered_metrics(metrics):
        cells = [summary.get(b, {}).get(metric) for b in backends]
        if all(c is None for c in cells):
            continue
        rows.append(
            (
                metric_name(metric),
                [fmt_spread(c) for c in cells],
                ratio(cells[0], cells[1]) if len(cells) == 2 else "",
            )
        )
    return rows


def rich_table(results: dict[str, Any], variant: str) -> Table:
    backends = list(results["config"]["backends"])
    reps = results["config"]["repetitions"]
    table = Table(title=escape(f"{variant}: median [min-max] of {reps} run(s) per backend"))
    table.add_column("metric", style="bold")
    for backend in backends:
        table.add_column(backend, justify="right")
    if len(backends) == 2:
        table.add_column(f"{backends[1]}/{backends[0]}", justify="right")
    for name, cells, r in comparison_rows(results["summary"].get(variant, {}), backends):
        table.add_row(name, *cells, *([r] if len(backends) == 2 else []))
    return table


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)
    return lines


def compact_log(tail: str, lines: int = 6, width: int = 240) -> str:
    """The last ``lines`` structlog JSON events of a node log, one short line each (the
    exception's traceback is left in results.json)."""
    out = []
    for line in tail.splitlines()[-lines:]:
        try:
            event = json.loads(line)
        except ValueError:
            out.append(line[:width])
            continue
        if not isinstance(event, dict):
            out.append(line[:width])
            continue
        head = f"{event.get('timestamp', '')} {event.get('event', '')}"
        rest = " ".join(
            f"{k}={v}"
            for k, v in event.items()
            if k not in ("timestamp", "event", "level", "exception", "node_id")
        )
        out.append(f"{head} {rest}"[:width])
    return "\n".join(out)


def render_markdown(results: dict[str, Any], plots: Sequence[str] = ()) -> str:
    scenario = results["scenario"]
    config = results["config"]
    machine = results["machine"]
    git = results.get("git") or {}
    backends = list(config["backends"])
    lines = [
        f"# Raft vs Multi-Paxos: {scenario['name']}",
        "",
        scenario.get("description") or "",
        "",
        "Command:",
        "",
        "```",
        results.get("command", ""),
        "```",
        "",
        f"- code: `{git.get('rev') or 'unknown'}`"
        + (" (with uncommitted changes)" if git.get("dirty") else ""),
        f"- machine: {machine.get('nproc')} CPUs, {machine.get('cpu_model')}, "
        f"{machine.get('kernel')}, Python {machine.get('python')}",
        f"- load average (1/5/15 min) at start: {machine.get('load_average')}, at end: "
        f"{machine.get('load_average_end')}",
        f"- {config['repetitions']} repetition(s) per backend, interleaved "
        f"({' '.join(backends)} {' '.join(backends)} ...), a fresh cluster per run, "
        f"same seed; started {results.get('started_at')}, finished {results.get('finished_at')}",
        "",
        "Each cell: median over repetitions, [min-max] when they differ. Latencies are from "
        "the intended start of each operation (coordinated-omission corrected under a "
        "target rate). Per-entry costs divide cluster-wide node counters by the growth of "
        "the groups' commit indices during the run phases (bytes: node-to-node transport "
        "bytes sent, every message kind, not only the entries' payload).",
        "",
    ]
    for variant, summary in results["summary"].items():
        lines += [f"## {variant}", ""]
        header = ["metric", *backends] + (
            [f"{backends[1]}/{backends[0]}"] if len(backends) == 2 else []
        )
        rows = [
            [name, *cells, *([r] if len(backends) == 2 else [])]
            for name, cells, r in comparison_rows(summary, backends)
        ]
        lines += [*_md_table(header, rows), ""]
    fault_rows = []
    for run in results["runs"]:
        costs = {c["fault"]: c for c in run.get("fault_costs", [])}
        for event in run.get("faults", []):
            cost = costs.get(event["label"], {})
            at = event.get("at_ns")
            fault_rows.append(
                [
                    str(run.get("order")),
                    run["backend"],
                    event["label"],
                    "-" if at is None else f"{at / 1e9:.2f}",
                    ",".join(str(n) for n in event.get("nodes", [])) or "-",
                    fmt(cost.get("unavailability_s")),
                    fmt(cost.get("recovery_s")),
                    event.get("error") or event.get("note") or "",
                ]
            )
    if fault_rows:
        lines += ["## Faults, per run", ""]
        lines += _md_table(
            ["run", "backend", "fault", "at s", "nodes", "unavailable s", "recovery s", "note"],
            fault_rows,
        )
        lines.append("")
    check_rows = [
        [str(run.get("order")), run["backend"], check["name"], "pass" if check["passed"] else
         "FAIL", check["detail"]]
        for run in results["runs"]
        for check in run.get("checks", [])
    ]  # fmt: skip
    if check_rows:
        lines += ["## Checks, per run", ""]
        lines += _md_table(["run", "backend", "check", "result", "detail"], check_rows)
        lines.append("")
    crashes = [
        f"- run {run.get('order')} ({run['backend']}): node {node} exited with "
        f"{info['returncode']}; last log events:\n\n```\n{compact_log(info['log_tail'])}\n```"
        for run in results["runs"]
        for node, info in sorted(run.get("crashed", {}).items())
    ]
    if crashes:
        lines += ["## Nodes that crashed", "", *crashes, ""]
    failed = [run for run in results["runs"] if run.get("error")]
    if failed:
        lines += ["## Failed runs", ""]
        for run in failed:
            lines += [f"- run {run.get('order')} ({run['backend']}): `{run['error']}`"]
        lines.append("")
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({name})" for name in plots]
        lines.append("")
    return "\n".join(lines)
