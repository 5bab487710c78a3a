"""The typer commands of the user surface, mounted on ``shardb.cli.app``:
``demo``, ``up``, ``down``, ``sql`` and the ``cluster`` sub-app.

Each is a sync function that parses flags and calls :mod:`shardb.surface.run`, which runs trio
inside and returns the exit code. That module (the client, the shell, prompt_toolkit, rich) is
imported inside the commands: every node process starts through ``shardb.cli`` too and should
not pay for the shell.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from shardb.shell.format import OutputMode


DEFAULT_HEAL_AFTER_S = 30.0
"""Mirrors ``shardb.surface.session.DEFAULT_HEAL_AFTER_MS`` (a test checks they agree)."""
USAGE_EXIT = 2


class Backend(enum.Enum):
    RAFT = "raft"
    PAXOS = "paxos"


class OutputFormat(enum.Enum):
    """``shardb.shell.OutputMode``'s values, without importing the shell to declare a flag."""

    TABLE = "table"
    VERTICAL = "vertical"
    CSV = "csv"
    TSV = "tsv"
    JSONL = "jsonl"
    JSON = "json"


class Consistency(enum.Enum):
    LINEARIZABLE = "linearizable"
    LEASE = "lease"
    STALE = "stale"


# --- shared options -------------------------------------------------------------------------

FormatOpt = Annotated[
    OutputFormat | None,
    typer.Option(
        "--format", "-F", help="Result format [default: [client] format in the config, or table]."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Results as JSON (same as --format json).")]
AddrOpt = Annotated[
    str | None,
    typer.Option(
        "--addr",
        "-a",
        help="Gateway HOST:PORT[,HOST:PORT...] [default: SHARDB_ADDR, the config file, or the "
        "local cluster's cluster.json].",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "-d",
        help="Directory of a local cluster (cluster.json) [default: SHARDB_DATA_DIR, "
        "[cluster] data_dir, or ./shardb-data].",
        show_default=False,
    ),
]
ExecuteOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--execute",
        "-e",
        help="Run SQL (and dot-commands) and exit; may be repeated.",
        show_default=False,
    ),
]
FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file", "-f", help="Run a script file and exit (- reads stdin).", show_default=False
    ),
]
ConsistencyOpt = Annotated[
    Consistency | None,
    typer.Option(help="Read consistency [default: the config's, or linearizable]."),
]
HealAfterOpt = Annotated[
    float,
    typer.Option(
        "--heal-after",
        min=0,
        help="Seconds after which a network fault (.partition, .isolate, .slow) lifts itself; "
        "0: only .heal lifts it.",
    ),
]
HistoryOpt = Annotated[
    Path | None,
    typer.Option(help="Shell history file [default: ~/.shardb_history].", show_default=False),
]


def _heal_ms(seconds: float) -> int:
    return round(seconds * 1000)


def _finish(code: int) -> None:
    raise typer.Exit(code=code)


def _mode(output_format: OutputFormat | None, json_output: bool) -> OutputFormat:
    if json_output:
        return OutputFormat.JSON
    return output_format or OutputFormat.TABLE


def _output_mode(value: OutputFormat) -> OutputMode:
    from shardb.shell.format import OutputMode

    return OutputMode(value.value)


# --- commands -------------------------------------------------------------------------------


def demo(
    nodes: Annotated[int, typer.Option(min=1, max=9, help="Nodes to start.")] = 3,
    backend: Annotated[Backend, typer.Option(help="Consensus backend of the tables.")] = (
        Backend.RAFT
    ),
    execute: ExecuteOpt = None,
    file: FileOpt = None,
    output_format: FormatOpt = None,
    json_output: JsonOpt = False,
    consistency: ConsistencyOpt = None,
    heal_after: HealAfterOpt = DEFAULT_HEAL_AFTER_S,
    history: HistoryOpt = None,
) -> None:
    """Start a throw-away local cluster with sample data (products, orders), open the shell,
    and remove everything on exit.

    With -e, -f or piped input it runs non-interactively (for CI). Node ports and progress go
    to stderr.
    """
    from shardb.surface.run import run_demo

    _finish(
        run_demo(
            nodes=nodes,
            backend=backend.value,
            execute=execute or [],
            file=file,
            mode=_output_mode(_mode(output_format, json_output)),
            consistency=(consistency or Consistency.LINEARIZABLE).value,
            heal_after_ms=_heal_ms(heal_after),
            history=history,
        )
    )


def up(
    nodes: Annotated[
        int | None, typer.Option(min=1, max=9, help="Nodes to start [default: 3].")
    ] = None,
    data_dir: DataDirOpt = None,
    backend: Annotated[Backend, typer.Option(help="Default backend of new tables.")] = (
        Backend.RAFT
    ),
    replication: Annotated[int, typer.Option(min=1, help="Replicas per range.")] = 3,
    split_rows: Annotated[
        int, typer.Option(min=0, help="Split a range past this many rows (0: never).")
    ] = 0,
    allow_faults: Annotated[
        bool,
        typer.Option("--allow-faults", help="Accept fault injection (shell .partition, .crash)."),
    ] = False,
    output_format: FormatOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Start a persistent local cluster of real node processes (or resume a stopped one) and
    leave it running; prints each node's ports, pid and log file."""
    from shardb.surface.run import run_up

    _finish(
        run_up(
            nodes=nodes,
            data_dir=data_dir,
            backend=backend.value,
            replication=replication,
            split_rows=split_rows,
            allow_faults=allow_faults,
            mode=_output_mode(_mode(output_format, json_output)),
        )
    )


def down(
    data_dir: DataDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Stop the local cluster started by shardb up (its data stays in the data dir)."""
    from shardb.surface.run import run_down

    _finish(run_down(data_dir=data_dir, mode=_output_mode(_mode(None, json_output))))


def sql(
    address: Annotated[
        str | None,
        typer.Argument(
            metavar="[ADDR]",
            help="Gateway HOST:PORT[,HOST:PORT...] [default: SHARDB_ADDR, [client] address in "
            "the config file, or the local cluster in --data-dir].",
            show_default=False,
        ),
    ] = None,
    execute: ExecuteOpt = None,
    file: FileOpt = None,
    data_dir: DataDirOpt = None,
    output_format: FormatOpt = None,
    json_output: JsonOpt = False,
    consistency: ConsistencyOpt = None,
    trace: Annotated[bool, typer.Option("--trace", help="Print each statement's trace.")] = False,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per statement.")] = 10.0,
    heal_after: HealAfterOpt = DEFAULT_HEAL_AFTER_S,
    history: HistoryOpt = None,
) -> None:
    """The SQL shell. -e runs statements, -f a script, piped stdin runs as a script.

    Exit codes: 0 ok, 1 SQL error, 2 usage, 3 cluster unavailable.
    """
    from shardb.surface.run import ClientOptions, run_sql

    options = ClientOptions(
        address=address,
        data_dir=data_dir,
        format=None if output_format is None else _output_mode(output_format),
        json=json_output,
        consistency=None if consistency is None else consistency.value,
        timeout_s=timeout,
        trace=trace,
        heal_after_ms=_heal_ms(heal_after),
    )
    _finish(run_sql(options, execute=execute or [], file=file, history=history))


# --- cluster ... ----------------------------------------------------------------------------

cluster_app = typer.Typer(
    help="Inspect and operate a running cluster (results on stdout; --json for scripts).",
    no_args_is_help=True,
)


def _cluster(
    address: str | None,
    data_dir: Path | None,
    output_format: OutputFormat | None,
    json_output: bool,
    what: str,
    **kwargs: Any,
) -> None:
    from shardb.surface.run import ClientOptions, cluster_command

    options = ClientOptions(
        address=address,
        data_dir=data_dir,
        format=None if output_format is None else _output_mode(output_format),
        json=json_output,
    )
    _finish(cluster_command(options, what, **kwargs))


@cluster_app.command("status")
def cluster_status(
    address: AddrOpt = None,
    data_dir: DataDirOpt = None,
    output_format: FormatOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Every node's consensus groups: role, term, leader, commit and applied index."""
    _cluster(address, data_dir, output_format, json_output, "status")


@cluster_app.command("nodes")
def cluster_nodes(
    address: AddrOpt = None,
    data_dir: DataDirOpt = None,
    output_format: FormatOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Nodes with their address, liveness, replicas and leaderships."""
    _cluster(address, data_dir, output_format, json_output, "nodes")


@cluster_app.command("ranges")
def cluster_ranges(
    table: Annotated[str | None, typer.Option(help="Only this table's ranges.")] = None,
    address: AddrOpt = None,
    data_dir: DataDirOpt = None,
    output_format: FormatOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Key ranges with their group, replicas, backend, epoch and leader."""
    _cluster(address, data_dir, output_format, json_output, "ranges", table=table)


@cluster_app.command("split")
def cluster_split(
    table: Annotated[str, typer.Argument(help="Table to split.")],
    keys: Annotated[list[str], typer.Argument(help="Primary keys to split at.")],
    address: AddrOpt = None,
    data_dir: DataDirOpt = None,
    output_format: FormatOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """ALTER TABLE TABLE SPLIT AT VALUES (KEY), ...; prints the table's ranges after."""
    _cluster(address, data_dir, output_format, json_output, "split", table=table, keys=keys)


@cluster_app.command("transfer-leader")
def cluster_transfer_leader(
    group: Annotated[int, typer.Argument(min=1, help="Consensus group id.")],
    node: Annotated[int, typer.Argument(min=1, help="Node that should lead it.")],
    address: AddrOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Ask GROUP's leader to hand leadership to NODE."""
    _cluster(address, data_dir, None, False, "transfer-leader", group=group, node=node)


@cluster_app.command("add-node")
def cluster_add_node(
    address: AddrOpt = None,
    data_dir: DataDirOpt = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the node to join.")
    ] = 120.0,
) -> None:
    """Start a new node of a local cluster (shardb up) and join it to the running cluster;
    the placement driver then moves replicas to it."""
    from shardb.surface.run import ClientOptions, membership_command

    options = ClientOptions(address=address, data_dir=data_dir)
    _finish(membership_command(options, "add-node", timeout_s=timeout))


@cluster_app.command("remove-node")
def cluster_remove_node(
    node: Annotated[int, typer.Argument(min=1, help="Node to remove.")],
    address: AddrOpt = None,
    data_dir: DataDirOpt = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the node to be drained.")
    ] = 600.0,
) -> None:
    """Decommission NODE: move its replicas (and meta group membership) to other nodes, then
    forget it and stop its process (local cluster)."""
    from shardb.surface.run import ClientOptions, membership_command

    options = ClientOptions(address=address, data_dir=data_dir)
    _finish(membership_command(options, "remove-node", node=node, timeout_s=timeout))
