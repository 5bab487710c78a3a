"""``shardb bench compare``: one scenario on each backend, interleaved, repeated; medians.

Runs go A B A B ... (for each sweep variant, for each repetition, each backend in turn) so
that slow drifts of a shared machine (other work, thermal state, page cache) hit both
backends alike rather than all of one backend's runs. Every run starts a fresh cluster in a
fresh directory with the same scenario seed; the backend is the only difference.

A summary statistic is the median over repetitions with the spread (min..max) beside it:
with three repetitions the median ignores one outlier run, and the spread shows how far to
trust a difference.
"""

from __future__ import annotations

import datetime
import shlex
import shutil
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import trio

from shardb.workload.scenario import Scenario, ScenarioError, load_scenario

from .environment import git_info, machine_info
from .runner import Progress, RunOptions, run_scenario_async, with_duration, with_load

RESULTS_VERSION: Final = 1
SCENARIO_DIR: Final = Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios"
BACKENDS: Final = ("raft", "paxos")


def resolve_scenario(name_or_path: str) -> Path:
    """A scenario file path, or the name of a built-in one (``benchmarks/scenarios/NAME.toml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for directory in (Path.cwd() / "benchmarks" / "scenarios", SCENARIO_DIR):
        candidate = directory / f"{name_or_path.removesuffix('.toml')}.toml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
    raise ScenarioError(
        f"no scenario file or built-in scenario {name_or_path!r} (built in: {', '.join(known)})"
    )


def variants(scenario: Scenario) -> tuple[Scenario, ...]:
    """The sweep's combinations other than the backend (compare sets that itself)."""
    sweep = tuple((k, v) for k, v in scenario.sweep if k != "backend")
    return replace(scenario, sweep=sweep).expand()


@dataclass(frozen=True, slots=True, kw_only=True)
class CompareOptions:
    out_dir: Path
    repetitions: int = 3
    backends: tuple[str, ...] = BACKENDS
    duration_s: float | None = None
    """Override the run phases' total duration (faults scale with it)."""
    clients: int | None = None
    """Override every run phase's clients."""
    target: float | None = None
    """Override every run phase's open-loop target (ops/s)."""
    work_dir: Path | None = None
    """Where clusters live while running (default: a temporary directory, removed)."""
    keep_clusters: bool = False
    run_options: RunOptions | None = None
    """Template for each run (its ``root`` is replaced per run)."""
    command: str = ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_")


async def compare_async(
    scenario_file: Path,
    options: CompareOptions,
    *,
    log: Callable[[str], None] = lambda _: None,
    progress: Progress = lambda *_: None,
    on_run: Callable[[int, int, dict[str, Any]], None] = lambda *_: None,
) -> dict[str, Any]:
    """Run the comparison and return the results document (also written to ``out_dir``)."""
    scenario = load_scenario(scenario_file)
    if options.duration_s is not None:
        scenario = with_duration(scenario, options.duration_s)
    scenario = with_load(scenario, clients=options.clients, target=options.target)
    plan = [
        (variant, repetition, backend)
        for variant in variants(scenario)
        for repetition in range(1, options.repetitions + 1)
        for backend in options.backends
    ]
    options.out_dir.mkdir(parents=True, exist_ok=True)
    base_dir = options.work_dir or Path(tempfile.mkdtemp(prefix="shardb-bench-"))
    template = options.run_options or RunOptions(root=base_dir)
    results: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "command": options.command or shlex.join(sys.argv),
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "file": str(scenario_file),
            "text": scenario_file.read_text(encoding="utf-8"),
            "faults": [
                {"at_s": f.at_s, "kind": f.kind.value, "heal_after_s": f.heal_after_s}
                for f in scenario.faults
            ],
        },
        "config": {
            "repetitions": options.repetitions,
            "backends": list(options.backends),
            "duration_s": options.duration_s,
            "clients": options.clients,
            "target": options.target,
            "order": [f"{v.name}/{b}#{r}" for v, r, b in plan],
            "client_timeout_s": template.timeout_s,
            "load_batch": template.load_batch,
            "node_args": list(template.node_args),
        },
        "git": git_info(),
        "machine": machine_info(),
        "started_at": _now(),
        "runs": [],
    }
    try:
        for number, (variant, repetition, backend) in enumerate(plan, 1):
            run_scenario = replace(variant, cluster=replace(variant.cluster, backend=backend))
            root = base_dir / f"{number:03d}-{_slug(variant.name)}-{backend}-{repetition}"
            log(f"run {number}/{len(plan)}: {variant.name} on {backend}, repetition {repetition}")
            run_options = replace(template, root=root, progress=progress, log=log)
            try:
                record = await run_scenario_async(run_scenario, run_options)
            except Exception as exc:  # one failed run must not lose the others
                record = {
                    "scenario": variant.name,
                    "backend": backend,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-4000:],
                    "node_logs": _log_tails(root),
                }
                log(f"run {number} failed: {record['error']}")
            record["variant"] = variant.name
            record["variant_params"] = _variant_params(variant)
            record["repetition"] = repetition
            record["order"] = number
            results["runs"].append(record)
            on_run(number, len(plan), record)
            if not options.keep_clusters:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if options.work_dir is None and not options.keep_clusters:
            shutil.rmtree(base_dir, ignore_errors=True)
    results["finished_at"] = _now()
    results["machine"]["load_average_end"] = machine_info()["load_average"]
    results["summary"] = summarize(results["runs"])
    return results


def compare(scenario_file: Path, options: CompareOptions, **kwargs: Any) -> dict[str, Any]:
    return trio.run(lambda: compare_async(scenario_file, options, **kwargs))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _variant_params(variant: Scenario) -> dict[str, Any]:
    run = [p for p in variant.phases if p.kind.value == "run"]
    return {
        "nodes": variant.cluster.nodes,
        "ranges": variant.cluster.ranges,
        "clients": run[0].clients if run else None,
        "target": run[0].target if run else None,
    }


def _log_tails(root: Path, lines: int = 30) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(root.glob("node*.log")):
        try:
            out[path.stem] = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            continue
    return out


# ---------------------------------------------------------------------------------------------
# Summary: medians and spread over repetitions


def spread(values: Iterable[float | None]) -> dict[str, Any] | None:
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


def run_metrics(record: dict[str, Any]) -> dict[str, float | None]:
    """The flat metrics of one run that the summary takes medians of."""
    out: dict[str, float | None] = {}
    run = record.get("run")
    if run:
        out["throughput_ops_s"] = run["throughput_ops_s"]
        out["errors"] = run["fail"]
        out["unknown"] = run["unknown"]
        out["retries"] = run["retries"]
        for label, row in sorted(run["labels"].items()):
            out[f"{label}.throughput_ops_s"] = row["throughput_ops_s"]
            for key in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"):
                out[f"{label}.{key}"] = row.get(key)
            out[f"{label}.errors"] = row["fail"]
            out[f"{label}.unknown"] = row["unknown"]
            out[f"{label}.retries"] = row["retries"]
    for phase in record.get("phases", []):
        if phase["kind"] == "load" and "rows_per_s" in phase:
            out["load.rows_per_s"] = phase["rows_per_s"]
    nodes = record.get("nodes")
    if nodes:
        for key, value in sorted(nodes["per_entry"].items()):
            out[f"{key}_per_entry"] = value
        cpu = nodes["cpu_s"]
        out["cpu_s.total"] = sum(cpu.values())
        if "client_cpu_s" in nodes:
            out["cpu_s.client"] = nodes["client_cpu_s"]
        ok = run["ok"] if run else 0
        out["cpu_ms_per_op"] = 1000 * sum(cpu.values()) / ok if ok else None
        for node, seconds in sorted(cpu.items()):
            out[f"cpu_s.node{node}"] = seconds
        out["committed_entries"] = nodes["committed_entries"]
    for index, cost in enumerate(record.get("fault_costs", [])):
        out[f"fault{index}.unavailability_s"] = cost["unavailability_s"]
        out[f"fault{index}.recovery_s"] = cost["recovery_s"]
    if "crashed" in record:
        out["crashed_nodes"] = len(record["crashed"])
    checks = record.get("checks")
    if checks is not None:
        out["checks_failed"] = sum(1 for c in checks if not c["passed"])
    out["failed_run"] = 1.0 if record.get("error") else 0.0
    return out


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{variant: {backend: {metric: spread}}}`` over the repetitions."""
    grouped: dict[str, dict[str, list[dict[str, float | None]]]] = {}
    for record in runs:
        grouped.setdefault(record["variant"], {}).setdefault(record["backend"], []).append(
            run_metrics(record)
        )
    out: dict[str, Any] = {}
    for variant, backends in grouped.items():
        out[variant] = {}
        for backend, rows in backends.items():
            names = sorted({name for row in rows for name in row})
            out[variant][backend] = {name: spread(row.get(name) for row in rows) for name in names}
    return out
