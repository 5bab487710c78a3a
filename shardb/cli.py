"""The ``shardb`` command line (typer).

Commands are plain sync functions; data goes to stdout, progress and logs to stderr, and
read-style commands take ``--json``. Add a command with ``@app.command()`` here, or build a
sub-app (``typer.Typer()``) in its own module and mount it with ``app.add_typer(sub,
name=...)``.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consensus.sim import FaultProfile, SimConfig, SimResult, run
from consensus.sim.multigroup import MultiSimConfig, MultiSimResult, SimBackend, run_multi
from shardb.server.process import node_app
from shardb.surface.cli import cluster_app, demo, down, sql, up
from shardb.workload_cli import bench_app, workload_app

app = typer.Typer(
    name="shardb",
    help="shardb: a sharded SQL database whose shards are Raft or Multi-Paxos groups.",
    no_args_is_help=True,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell.
    add_completion=True,
)


app.add_typer(node_app, name="node")
app.command()(demo)
app.command()(up)
app.command()(down)
app.command()(sql)
app.add_typer(cluster_app, name="cluster")
app.add_typer(workload_app, name="workload")
app.add_typer(bench_app, name="bench")


@app.callback()
def _root() -> None:
    """shardb: a sharded SQL database whose shards are Raft or Multi-Paxos groups."""


def _merge(total: dict[str, int], part: dict[str, int]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={counts[k]}" for k in sorted(counts)) or "-"


@app.command()
def sim(
    backend: Annotated[
        SimBackend, typer.Option(help="Consensus backend to simulate (mixed needs --groups).")
    ] = SimBackend.RAFT,
    groups: Annotated[
        int | None,
        typer.Option(min=1, help="Groups per node, each node driving a MultiGroupHost."),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="How many consecutive seeds to run.")] = 1,
    first_seed: Annotated[int, typer.Option(help="First seed of the range.")] = 0,
    seed: Annotated[
        int | None, typer.Option(help="Run exactly this one seed (overrides the range).")
    ] = None,
    faults: Annotated[FaultProfile, typer.Option(help="Fault profile.")] = FaultProfile.ALL,
    steps: Annotated[int, typer.Option(min=0, help="Events in the fault phase, per seed.")] = 5_000,
    nodes: Annotated[int, typer.Option(min=1, max=9, help="Nodes in the group.")] = 3,
    clients: Annotated[
        int | None, typer.Option(min=1, help="Concurrent clients [default: 3, or 3 per group].")
    ] = None,
    keys: Annotated[
        int | None, typer.Option(min=1, help="Keys (per group) [default: 3, or 1 per group].")
    ] = None,
    liveness_timeouts: Annotated[
        int,
        typer.Option(min=0, help="Election timeouts a write may take to commit after healing."),
    ] = 40,
    pre_vote: Annotated[
        bool | None,
        typer.Option("--pre-vote/--no-pre-vote", help="Force PreVote on/off (default: per seed)."),
    ] = None,
    check_quorum: Annotated[
        bool | None,
        typer.Option(
            "--check-quorum/--no-check-quorum", help="Force CheckQuorum on/off (default: per seed)."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    trace: Annotated[
        bool, typer.Option(help="Print every core log event to stderr (for replaying a seed).")
    ] = False,
) -> None:
    """Run deterministic cluster simulations with fault injection and safety checkers.

    Exits with status 1 if any seed violated a property, printing the command that
    replays each failing seed exactly.
    """
    if groups is None and backend is SimBackend.MIXED:
        raise typer.BadParameter("--backend mixed needs --groups", param_hint="--backend")
    seed_list = [seed] if seed is not None else list(range(first_seed, first_seed + seeds))
    err = Console(stderr=True)
    sink = (lambda line: err.print(line, markup=False, highlight=False)) if trace else None
    results: list[SimResult | MultiSimResult] = []
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]sim {task.fields[backend]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("seed {task.fields[seed]}"),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=trace,
    ) as progress:
        task = progress.add_task(
            "sim", total=len(seed_list), backend=backend.value, seed="-", failed=0
        )
        failed = 0
        for current in seed_list:
            progress.update(task, seed=current)
            result: SimResult | MultiSimResult
            if groups is not None:
                result = run_multi(
                    MultiSimConfig(
                        seed=current,
                        groups=groups,
                        backend=backend.value,
                        nodes=nodes,
                        steps=steps,
                        faults=faults,
                        clients=clients,
                        keys=1 if keys is None else keys,
                        liveness_timeouts=liveness_timeouts,
                        pre_vote=pre_vote,
                        check_quorum=check_quorum,
                    )
                )
            else:
                config = SimConfig(
                    seed=current,
                    backend=backend.value,
                    nodes=nodes,
                    steps=steps,
                    faults=faults,
                    clients=3 if clients is None else clients,
                    keys=3 if keys is None else keys,
                    liveness_timeouts=liveness_timeouts,
                    pre_vote=pre_vote,
                    check_quorum=check_quorum,
                )
                result = run(config, trace=sink)
            results.append(result)
            failed += 0 if result.ok else 1
            progress.update(task, advance=1, failed=failed)
    elapsed = time.perf_counter() - started
    summary = _summarize(results, elapsed)
    if json_output:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_summary(summary)
    if summary["violations"]:
        raise typer.Exit(code=1)


def _summarize(results: list[SimResult | MultiSimResult], elapsed_s: float) -> dict[str, Any]:
    faults: dict[str, int] = {}
    ops: dict[str, int] = {}
    reads: dict[str, int] = {}
    network: dict[str, int] = {}
    snapshots: dict[str, int] = {}
    for result in results:
        _merge(snapshots, result.snapshots)
        _merge(faults, result.faults)
        _merge(ops, result.ops)
        _merge(reads, result.reads)
        _merge(network, result.network)
    total_steps = sum(r.steps for r in results)
    liveness = [r.liveness_us for r in results if r.liveness_us is not None]
    config = results[0].config
    multi = [r for r in results if isinstance(r, MultiSimResult)]
    extra: dict[str, Any] = {}
    if multi:
        quiesce_us = [r.quiesce["quiesce_us"] for r in multi]
        extra = {
            "groups": multi[0].config.groups,
            "quiesce": {
                "quiesce_us_max": max((t for t in quiesce_us if t is not None), default=None),
                **{
                    key: sum(r.quiesce.get(key) or 0 for r in multi)
                    for key in (
                        "quiet_window_messages",
                        "quiet_window_other",
                        "quiet_window_group_ticks",
                        "group_ticks",
                        "host_ticks_x_groups",
                        "quiesce_messages",
                        "unquiesce_messages",
                    )
                },
            },
        }
    return {
        **extra,
        "backend": config.backend,
        "faults_profile": config.faults.value,
        "nodes": config.nodes,
        "steps_per_seed": config.steps,
        "seeds_run": len(results),
        "seeds_failed": [r.seed for r in results if not r.ok],
        "steps": total_steps,
        "ticks": sum(r.ticks for r in results),
        "virtual_time_us": sum(r.virtual_time_us for r in results),
        "faults": faults,
        "ops": ops,
        "reads": reads,
        "network": network,
        "snapshots": snapshots,
        "lost_unsynced_writes": sum(r.lost_unsynced_writes for r in results),
        "liveness_us_max": max(liveness) if liveness else None,
        "linearizability_inconclusive": [
            {"seed": r.seed, "keys": list(r.linearizability_inconclusive)}
            for r in results
            if r.linearizability_inconclusive
        ],
        "violations": [
            {
                "seed": v.seed,
                "kind": v.kind,
                "step": v.step,
                "time_us": v.time_us,
                "message": v.message,
                "replay": v.replay,
            }
            for r in results
            for v in r.violations
        ],
        "digests": {str(r.seed): r.digest for r in results},
        "elapsed_s": round(elapsed_s, 3),
        "steps_per_second": round(total_steps / elapsed_s) if elapsed_s > 0 else None,
    }


def _print_summary(summary: dict[str, Any]) -> None:
    out = Console()
    table = Table(title="shardb sim", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    failed = summary["seeds_failed"]
    table.add_row("backend", summary["backend"])
    table.add_row("faults profile", summary["faults_profile"])
    table.add_row("nodes", str(summary["nodes"]))
    if "groups" in summary:
        table.add_row("groups per node", str(summary["groups"]))
        quiesce = summary["quiesce"]
        table.add_row("quiesce", _fmt_counts({k: v for k, v in quiesce.items() if v is not None}))
    table.add_row("seeds run", str(summary["seeds_run"]))
    table.add_row("seeds failed", f"[red]{len(failed)}[/red]" if failed else "0")
    table.add_row("steps", str(summary["steps"]))
    table.add_row("ticks", str(summary["ticks"]))
    table.add_row("virtual time", f"{summary['virtual_time_us'] / 1e6:.1f} s")
    table.add_row("faults injected", _fmt_counts(summary["faults"]))
    table.add_row("lost unsynced writes", str(summary["lost_unsynced_writes"]))
    table.add_row("ops", _fmt_counts(summary["ops"]))
    table.add_row("reads ok by path", _fmt_counts(summary["reads"]))
    table.add_row("messages", _fmt_counts(summary["network"]))
    table.add_row("snapshots", _fmt_counts(summary["snapshots"]))
    liveness = summary["liveness_us_max"]
    table.add_row("liveness (max)", "-" if liveness is None else f"{liveness / 1000:.0f} ms")
    table.add_row("violations", str(len(summary["violations"])))
    table.add_row("steps per second", str(summary["steps_per_second"]))
    table.add_row("elapsed", f"{summary['elapsed_s']:.2f} s")
    out.print(table)
    for entry in summary["linearizability_inconclusive"]:
        out.print(
            f"[yellow]seed {entry['seed']}: linearizability search budget exhausted on keys "
            f"{entry['keys']} (not a verdict)[/yellow]"
        )
    for violation in summary["violations"]:
        # soft_wrap: a replay command must stay one copy-pasteable line.
        out.print(
            f"[red]FAILED seed {violation['seed']}[/red] {escape('[' + violation['kind'] + ']')} "
            f"step {violation['step']}, t={violation['time_us']}us",
            highlight=False,
            soft_wrap=True,
        )
        out.print(violation["message"], markup=False, highlight=False, soft_wrap=True)
        out.print(f"  replay: {violation['replay']}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point (``shardb``)."""
    app()


if __name__ == "__main__":
    main()
