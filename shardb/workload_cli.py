"""``shardb workload run`` and ``shardb bench compare|report`` (typer sub-apps).

Mounted in ``shardb.cli`` with::

    app.add_typer(workload_app, name="workload")
    app.add_typer(bench_app, name="bench")
"""

from __future__ import annotations

import datetime
import json
import shlex
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from shardb.bench.compare import CompareOptions, compare, resolve_scenario
from shardb.bench.plots import render_plots
from shardb.bench.report import fmt, render_markdown, rich_table
from shardb.bench.runner import BenchError, RunOptions, run_scenario, with_duration
from shardb.cluster import ClusterError
from shardb.workload.scenario import (
    CheckSpec,
    ClusterSpec,
    PhaseKind,
    PhaseSpec,
    Scenario,
    ScenarioError,
    load_scenario,
)
from shardb.workload.ycsb import WorkloadConfigError, load_properties

workload_app = typer.Typer(help="Run workloads (YCSB, register, kv) against a cluster.",
                           no_args_is_help=True)  # fmt: skip
bench_app = typer.Typer(help="Compare Raft and Multi-Paxos on the same scenario.",
                        no_args_is_help=True)  # fmt: skip

_err = Console(stderr=True)


class _Bars:
    """A run counter and a bar for the current phase, on stderr."""

    def __init__(self, progress: Progress, runs: int) -> None:
        self.progress = progress
        self.runs: TaskID = progress.add_task("runs", total=runs)
        self.phase: TaskID = progress.add_task("starting", total=None)

    def update(self, description: str, completed: float, total: float | None) -> None:
        self.progress.update(self.phase, description=description, completed=completed,
                             total=total)  # fmt: skip

    def run_done(self, number: int, total: int, record: dict[str, Any]) -> None:
        del total, record
        self.progress.update(self.runs, completed=number)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
    )


def _log(message: str) -> None:
    _err.print(f"[dim]{message}[/dim]", highlight=False)


# ---------------------------------------------------------------------------------------------
# shardb workload run


def _adhoc_scenario(
    *,
    workload: str,
    property_files: list[str],
    overrides: list[str],
    nodes: int,
    ranges: int,
    backend: str,
    clients: int,
    target: float | None,
    duration: float,
    load: bool,
    seed: int,
    consistency: str,
    check: bool,
) -> Scenario:
    if workload == "ycsb":
        props = load_properties(property_files or ["workloada"], overrides)
    else:
        props = dict(o.split("=", 1) for o in overrides)
    properties = tuple(sorted(props.items()))
    phases = []
    if load and workload == "ycsb":
        phases.append(PhaseSpec(kind=PhaseKind.LOAD, workload="ycsb", clients=clients,
                                properties=properties))  # fmt: skip
    phases.append(
        PhaseSpec(
            kind=PhaseKind.RUN,
            workload=workload,
            clients=clients,
            duration_s=duration,
            target=target,
            properties=tuple(sorted({**props, "operationcount": "0"}.items()))
            if workload == "ycsb"
            else properties,
            consistency=consistency,
        )
    )
    checks = (
        CheckSpec(linearizable=check, no_lost_writes=check) if workload != "ycsb" else CheckSpec()
    )
    return Scenario(
        name=f"adhoc-{workload}",
        seed=seed,
        cluster=ClusterSpec(nodes=nodes, ranges=ranges, backend=backend),
        phases=tuple(phases),
        checks=checks,
    )


def _print_run(record: dict[str, Any]) -> None:
    out = Console()
    run = record.get("run")
    if run:
        title = (
            f"{record['scenario']} on {record['backend']}: "
            f"{fmt(run['throughput_ops_s'])} ops/s over {run['duration_s']:g} s"
        )
        table = Table(title=title)
        for column in ("op", "ok", "fail", "unknown", "retries", "ops/s", "p50 ms", "p95 ms",
                       "p99 ms", "p99.9 ms", "max ms"):  # fmt: skip
            table.add_column(column, justify="left" if column == "op" else "right")
        for label, row in sorted(run["labels"].items()):
            table.add_row(
                label,
                *(str(row[k]) for k in ("ok", "fail", "unknown", "retries")),
                fmt(row["throughput_ops_s"]),
                *(fmt(row.get(k)) for k in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms")),
            )
        out.print(table)
    for phase in record.get("phases", []):
        if phase["kind"] == "load" and "rows_per_s" in phase:
            out.print(
                f"load: {phase['rows']} rows in {phase['elapsed_s']:.1f} s "
                f"({fmt(phase['rows_per_s'])} rows/s, {phase['batch_rows']} per INSERT)"
            )
    nodes = record.get("nodes")
    if nodes:
        per = nodes["per_entry"]
        out.print(
            f"per committed entry: messages {fmt(per['messages'])}, frames {fmt(per['frames'])}, "
            f"fsyncs {fmt(per['fsyncs'])}; CPU s per node: {nodes['cpu_s']}"
        )
    for cost in record.get("fault_costs", []):
        out.print(
            f"fault {cost['fault']} at {cost['at_s']:.2f} s: unavailable "
            f"{fmt(cost['unavailability_s'])} s, recovery {fmt(cost['recovery_s'])} s"
        )
    for check in record.get("checks", []):
        mark = "[green]pass[/green]" if check["passed"] else "[red]FAIL[/red]"
        out.print(f"check {check['name']}: {mark} {check['detail']}")


@workload_app.command("run")
def workload_run(
    scenario: Annotated[
        str | None, typer.Option(help="Scenario file or built-in name (benchmarks/scenarios).")
    ] = None,
    property_file: Annotated[
        list[str] | None,
        typer.Option("-P", help="YCSB property file, or workloada..workloadf (repeatable)."),
    ] = None,
    prop: Annotated[
        list[str] | None, typer.Option("-p", help="key=value property override (repeatable).")
    ] = None,
    workload: Annotated[
        str, typer.Option(help="ycsb, register or kv (without --scenario).")
    ] = "ycsb",
    nodes: Annotated[int, typer.Option(min=1, help="Nodes of the cluster started.")] = 3,
    ranges: Annotated[int, typer.Option(min=1, help="Ranges the table is split into.")] = 1,
    backend: Annotated[
        str | None, typer.Option(help="raft or paxos [default: the scenario's, or raft].")
    ] = None,
    clients: Annotated[int | None, typer.Option(min=1, help="Concurrent clients.")] = None,
    target: Annotated[
        float | None, typer.Option(min=0.001, help="Open loop at this many ops/s in total.")
    ] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="Run phase seconds.")] = None,
    load: Annotated[bool, typer.Option(help="Run the YCSB load phase first.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of every random stream.")] = 0,
    consistency: Annotated[
        str, typer.Option(help="linearizable, lease or stale.")
    ] = "linearizable",
    check: Annotated[
        bool, typer.Option(help="register/kv: check linearizability and lost writes.")
    ] = True,
    addr: Annotated[
        str | None, typer.Option(help="HOST:PORT,... of a running cluster (none is started).")
    ] = None,
    root: Annotated[
        Path | None, typer.Option(help="Directory for the cluster started (default: temporary).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the run's record as JSON here.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Run one workload: a scenario file, or YCSB-style ``-P``/``-p`` properties."""
    try:
        if scenario is not None:
            spec = load_scenario(resolve_scenario(scenario))
            if spec.sweep:
                spec = spec.expand()[0]
                _log(f"scenario has a sweep; running its first combination {spec.name}")
            if backend is not None:
                spec = replace(spec, cluster=replace(spec.cluster, backend=backend))
            if duration is not None:
                spec = with_duration(spec, duration)
        else:
            spec = _adhoc_scenario(
                workload=workload,
                property_files=property_file or [],
                overrides=prop or [],
                nodes=nodes,
                ranges=ranges,
                backend=backend or "raft",
                clients=clients or 1,
                target=target,
                duration=duration or 10.0,
                load=load and addr is None,
                seed=seed,
                consistency=consistency,
                check=check,
            )
    except (ScenarioError, WorkloadConfigError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if backend not in (None, "raft", "paxos"):
        raise typer.BadParameter("raft or paxos", param_hint="--backend")
    work = root or Path(tempfile.mkdtemp(prefix="shardb-workload-"))
    try:
        with _progress() as progress:
            bars = _Bars(progress, 1)
            options = RunOptions(
                root=work,
                addresses=tuple(a.strip() for a in addr.split(",")) if addr else (),
                log=_log,
                progress=bars.update,
            )
            record = run_scenario(spec, options)
    except (BenchError, ClusterError) as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    finally:
        if root is None:
            shutil.rmtree(work, ignore_errors=True)
    if out is not None:
        out.write_text(json.dumps(record, indent=1, sort_keys=True))
    if json_output:
        typer.echo(json.dumps(record, indent=1, sort_keys=True))
    else:
        _print_run(record)
    if any(not c["passed"] for c in record.get("checks", [])):
        raise typer.Exit(code=1)


# ---------------------------------------------------------------------------------------------
# shardb bench compare / report


def write_outputs(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.json, the plots and report.md in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    plots = render_plots(results, out_dir)
    report = out_dir / "report.md"
    report.write_text(render_markdown(results, plots))
    return [results_path, report, *(out_dir / p for p in plots)]


@bench_app.command("compare")
def bench_compare(
    scenario: Annotated[str, typer.Option(help="Built-in scenario name or a scenario file.")],
    repetitions: Annotated[int, typer.Option(min=1, help="Runs per backend.")] = 3,
    out: Annotated[
        Path | None,
        typer.Option(help="Output directory (default: benchmarks/results/compare-DATE/NAME)."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.1, help="Shorten/stretch the run phases (s, total).")
    ] = None,
    clients: Annotated[
        int | None, typer.Option(min=1, help="Override the run phases' clients.")
    ] = None,
    target: Annotated[
        float | None, typer.Option(min=0.001, help="Override the run phases' target ops/s.")
    ] = None,
    backends: Annotated[str, typer.Option(help="Comma-separated backends, in run order.")] = (
        "raft,paxos"
    ),
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Client timeout per statement (s).")
    ] = 5.0,
    work_dir: Annotated[
        Path | None, typer.Option(help="Where the clusters live (default: temporary).")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep each run's cluster directory.")] = False,
) -> None:
    """Run a scenario on each backend, interleaved, with fresh clusters; write results.json,
    report.md and PNG plots, and print the comparison table."""
    try:
        path = resolve_scenario(scenario)
        spec = load_scenario(path)
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario") from None
    chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
    if not chosen or any(b not in ("raft", "paxos") for b in chosen):
        raise typer.BadParameter("backends are raft and/or paxos", param_hint="--backends")
    today = datetime.date.today().isoformat()
    out_dir = out or Path("benchmarks") / "results" / f"compare-{today}" / spec.name
    options = CompareOptions(
        out_dir=out_dir,
        repetitions=repetitions,
        backends=chosen,
        duration_s=duration,
        clients=clients,
        target=target,
        work_dir=work_dir,
        keep_clusters=keep,
        run_options=RunOptions(root=Path("."), timeout_s=timeout),
        command=shlex.join(["shardb", *sys.argv[1:]]),
    )
    runs = len(chosen) * repetitions * max(1, _variant_count(spec))
    with _progress() as progress:
        bars = _Bars(progress, runs)
        results = compare(path, options, log=_log, progress=bars.update, on_run=bars.run_done)
    files = write_outputs(results, out_dir)
    console = Console()
    for variant in results["summary"]:
        console.print(rich_table(results, variant))
    failed = [r for r in results["runs"] if r.get("error")]
    for run in failed:
        _err.print(f"[red]run {run['order']} ({run['backend']}) failed:[/red] {run['error']}")
    console.print("wrote " + ", ".join(str(f) for f in files))
    if failed:
        raise typer.Exit(code=1)


def _variant_count(spec: Scenario) -> int:
    count = 1
    for name, values in spec.sweep:
        if name != "backend":
            count *= len(values)
    return count


@bench_app.command("report")
def bench_report(
    results: Annotated[Path, typer.Argument(help="A results.json written by bench compare.")],
) -> None:
    """Render report.md and the plots again from a saved results.json (beside it)."""
    data = json.loads(results.read_text())
    plots = render_plots(data, results.parent)
    (results.parent / "report.md").write_text(render_markdown(data, plots))
    console = Console()
    for variant in data["summary"]:
        console.print(rich_table(data, variant))


def _standalone() -> typer.Typer:
    """The two sub-apps without the rest of the CLI (``python -m shardb.workload_cli``)."""
    app = typer.Typer(no_args_is_help=True, add_completion=False)
    app.add_typer(workload_app, name="workload")
    app.add_typer(bench_app, name="bench")
    return app


if __name__ == "__main__":
    _standalone()()
