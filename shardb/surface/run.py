"""What ``shardb demo / up / down / sql / cluster ...`` do, as sync functions returning an exit
code (``shardb.cli`` only parses arguments and calls these).

Exit codes follow ``shardb sql``'s (:class:`shardb.shell.ExitCode`): 0 ok, 1 an SQL or admin
error, 2 usage (bad flags, bad config, an unsupported command), 3 the cluster is unavailable
(unreachable, no leader, did not start). Results go to ``out`` (stdout); progress, hints and
errors to ``err`` (stderr), so ``shardb cluster ranges --json > ranges.json`` is just data.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO, cast

import structlog
import trio

from consensus.types import GroupId, NodeId
from shardb.cluster import ClusterError, LocalCluster, stop_recorded, wait_ready
from shardb.cluster.local import STATE_FILE, is_our_node
from shardb.placement.descriptors import start_order
from shardb.shell import (
    DEFAULT_HISTORY_PATH,
    ExitCode,
    FormatOptions,
    OutputMode,
    Rows,
    classify_error,
    render_result,
    run_script,
    run_shell,
)
from shardb.shell.session import Cell
from shardb.surface.config import (
    ConfigError,
    FileConfig,
    Target,
    load_file,
    resolve_data_dir,
    resolve_target,
)
from shardb.surface.dataset import load_demo_data
from shardb.surface.processes import NodeProcesses
from shardb.surface.session import DEFAULT_HEAL_AFTER_MS, ClusterSession, open_session

READY_TIMEOUT_S: Final = 60.0
RANGE_COLUMNS: Final = (
    "range_id",
    "table",
    "start_key",
    "end_key",
    "group_id",
    "replicas",
    "backend",
    "epoch",
    "leader",
)
STATUS_COLUMNS: Final = (
    "node_id",
    "group",
    "backend",
    "role",
    "term",
    "leader",
    "commit",
    "applied",
    "last_index",
)


# --- plumbing -------------------------------------------------------------------------------


class _CurrentStderr(io.TextIOBase):
    """Whatever ``sys.stderr`` is when a line is written (not when logging was configured):
    a command run in-process (tests, embedding) may swap stderr between invocations."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def quiet_logs(stream: TextIO | None = None) -> None:
    """Library warnings to stderr, nothing below warning: stdout is for data only."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=stream or cast(TextIO, _CurrentStderr())),
    )


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP become SIGINT, which trio turns into ``KeyboardInterrupt`` at a safe
    point: the caller's ``finally`` then stops the nodes it started instead of leaving them
    running after a ``kill`` or a closed terminal."""

    def forward(signum: int, frame: object) -> None:
        del signum, frame
        os.kill(os.getpid(), signal.SIGINT)

    previous = {
        signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def terminate_with(cleanup: Callable[[], None]) -> Iterator[None]:
    """On SIGTERM or SIGHUP run ``cleanup`` and exit at once (status 128 + signal).

    For the interactive shell, which waits for a key in a worker thread: trio can deliver an
    interrupt to the main task only once that thread returns, i.e. after the next key press,
    which after a ``kill`` or a closed terminal never comes. So the handler itself stops the
    nodes, instead of unwinding to a ``finally``.
    """

    def handler(signum: int, frame: object) -> None:
        del frame
        cleanup()
        os._exit(128 + signum)

    previous = {
        signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _say(err: TextIO, text: str) -> None:
    err.write(text + "\n")
    err.flush()


def _fail(err: TextIO, error: BaseException) -> int:
    """Report a database/cluster error; re-raise anything else (a bug)."""
    classified = classify_error(error)
    if classified is None:
        raise error
    _say(err, f"shardb: Error ({classified.code}): {classified.message}")
    return int(classified.exit_code)


def _cell(value: object) -> Cell:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or isinstance(value, int | float | str | bytes):
        return value
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def render(rows: Rows, mode: OutputMode, out: TextIO) -> None:
    render_result(rows, out, FormatOptions(mode=mode))
    out.flush()


def _recorded_addresses(root: Path) -> list[str] | None:
    try:
        return LocalCluster.load(root).address_list
    except ClusterError:
        return None


@dataclass(slots=True, kw_only=True)
class ClientOptions:
    """The flags every command that talks to a cluster shares (None: not given)."""

    address: str | None = None
    data_dir: Path | None = None
    format: OutputMode | None = None
    json: bool = False
    consistency: str | None = None
    timeout_s: float = 10.0
    trace: bool = False
    heal_after_ms: int = DEFAULT_HEAL_AFTER_MS
    env: Mapping[str, str] | None = None
    file: FileConfig = field(default_factory=FileConfig)

    def mode(self) -> OutputMode:
        if self.json:
            return OutputMode.JSON
        return self.format or self.file.format or OutputMode.TABLE

    def target(self) -> Target:
        local = resolve_data_dir(self.data_dir, self.file, self.env)
        return resolve_target(
            self.address,
            self.data_dir,
            self.file,
            self.env,
            cluster_addresses=_recorded_addresses(local),
        )


def _processes(target: Target) -> NodeProcesses | None:
    if target.data_dir is None or not (target.data_dir / STATE_FILE).exists():
        return None
    return NodeProcesses.load(target.data_dir)


def with_session(
    options: ClientOptions,
    body: Callable[[ClusterSession], Awaitable[int]],
    *,
    err: TextIO,
) -> int:
    """Resolve the cluster, connect, run ``body``; map failures to exit codes."""
    quiet_logs(err)
    try:
        options.file = load_file(options.env)
        target = options.target()
        processes = _processes(target)
    except ConfigError as error:
        _say(err, f"shardb: {error.message}")
        return int(ExitCode.USAGE)
    consistency = options.consistency or options.file.consistency or "linearizable"

    async def main() -> int:
        try:
            async with open_session(
                list(target.addresses),
                consistency=consistency,
                timeout_s=options.timeout_s,
                trace=options.trace,
                processes=processes,
                heal_after_ms=options.heal_after_ms,
            ) as session:
                return await body(session)
        except Exception as error:
            classified = classify_error(error)
            if classified is None:
                raise
            where = ", ".join(target.addresses)
            _say(err, f"shardb: {classified.message} (cluster at {where}, from {target.source})")
            return int(classified.exit_code)

    try:
        return trio.run(main)
    except KeyboardInterrupt:
        return 130


# --- sql ------------------------------------------------------------------------------------


async def run_input(
    session: ClusterSession,
    *,
    execute: Sequence[str],
    file: Path | None,
    mode: OutputMode,
    history: Path | None,
    out: TextIO,
    err: TextIO,
    stdin: TextIO,
) -> int:
    """``-e`` statements, else ``-f FILE`` (``-`` is stdin), else piped stdin as a script, else
    the interactive shell on the terminal."""
    options = FormatOptions(mode=mode)
    if execute:
        for number, text in enumerate(execute, start=1):
            source = "-e" if len(execute) == 1 else f"-e#{number}"
            code = await run_script(session, text, out, err, options=options, source=source)
            if code != ExitCode.OK:
                return code
        return int(ExitCode.OK)
    if file is not None:
        if str(file) == "-":
            text, source = stdin.read(), "<stdin>"
        else:
            try:
                text, source = file.read_text(encoding="utf-8"), str(file)
            except (OSError, UnicodeDecodeError) as error:
                _say(err, f"shardb: cannot read {file}: {error}")
                return int(ExitCode.USAGE)
        return await run_script(session, text, out, err, options=options, source=source)
    if not stdin.isatty():
        return await run_script(session, stdin.read(), out, err, options=options, source="<stdin>")
    return await run_shell(session, options=options, history_path=history or DEFAULT_HISTORY_PATH)


def run_sql(
    options: ClientOptions,
    *,
    execute: Sequence[str] = (),
    file: Path | None = None,
    history: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """``shardb sql``."""
    stdout, stderr, stdinput = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    if execute and file is not None:
        _say(stderr, "shardb: give -e or -f, not both")
        return int(ExitCode.USAGE)

    async def body(session: ClusterSession) -> int:
        return await run_input(
            session,
            execute=execute,
            file=file,
            mode=options.mode(),
            history=history,
            out=stdout,
            err=stderr,
            stdin=stdinput,
        )

    return with_session(options, body, err=stderr)


# --- demo -----------------------------------------------------------------------------------


def run_demo(
    *,
    nodes: int,
    backend: str,
    execute: Sequence[str] = (),
    file: Path | None = None,
    mode: OutputMode = OutputMode.TABLE,
    consistency: str = "linearizable",
    heal_after_ms: int = DEFAULT_HEAL_AFTER_MS,
    history: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """``shardb demo``: a throw-away cluster with sample data, the shell, then a clean up."""
    stdout, stderr, stdinput = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    if execute and file is not None:
        _say(stderr, "shardb: give -e or -f, not both")
        return int(ExitCode.USAGE)
    quiet_logs(stderr)
    root = Path(tempfile.mkdtemp(prefix="shardb-demo-"))
    cluster = LocalCluster.create(
        root / "cluster",
        nodes,
        backend=backend,
        allow_faults=True,
        cluster_id=f"demo-{root.name.removeprefix('shardb-demo-')}",
    )

    async def main() -> int:
        _say(stderr, f"starting {nodes} {backend} nodes in {cluster.root} ...")
        cluster.start_all()
        await wait_ready(cluster, timeout_s=READY_TIMEOUT_S)
        processes = NodeProcesses(cluster, owned=True)
        async with open_session(
            cluster.address_list,
            consistency=consistency,
            processes=processes,
            heal_after_ms=heal_after_ms,
        ) as session:
            await load_demo_data(session.execute, progress=lambda line: _say(stderr, line))
            await session.meta()
            ports = ", ".join(f"n{n.node_id}={n.client_address}" for n in cluster.layout.nodes)
            _say(stderr, f"demo cluster ready: {ports} (removed on exit)")
            _say(
                stderr,
                "try: SELECT category, count(*) FROM products GROUP BY category; "
                "SHOW RANGES FROM TABLE orders; .help; .isolate n1",
            )
            return await run_input(
                session,
                execute=execute,
                file=file,
                mode=mode,
                history=history,
                out=stdout,
                err=stderr,
                stdin=stdinput,
            )

    def cleanup() -> None:
        cluster.stop(grace_s=5.0)
        shutil.rmtree(root, ignore_errors=True)

    try:
        with terminate_with(cleanup):
            return trio.run(main)
    except KeyboardInterrupt:
        _say(stderr, "interrupted")
        return 130
    except ClusterError as error:
        _say(stderr, f"shardb: the demo cluster did not start: {error}")
        return int(ExitCode.UNAVAILABLE)
    except Exception as error:
        return _fail(stderr, error)
    finally:
        # Also after Ctrl-C and errors: no node outlives the demo, no temp dir is left.
        cleanup()


# --- up / down ------------------------------------------------------------------------------


def _running_nodes(cluster: LocalCluster) -> list[int]:
    return [
        node_id
        for node_id, pid in sorted(cluster.layout.pids.items())
        if is_our_node(pid, cluster.data_dir(node_id))
    ]


def _nodes_rows(cluster: LocalCluster) -> Rows:
    return Rows(
        columns=("node_id", "client", "peer", "pid", "log"),
        rows=tuple(
            (
                n.node_id,
                n.client_address,
                f"{n.host}:{n.peer_port}",
                cluster.layout.pids.get(n.node_id),
                str(cluster.log_path(n.node_id)),
            )
            for n in cluster.layout.nodes
        ),
    )


def run_up(
    *,
    nodes: int | None,
    data_dir: Path | None,
    backend: str,
    replication: int,
    split_rows: int,
    allow_faults: bool,
    mode: OutputMode,
    timeout_s: float = READY_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``shardb up``: start (or resume) a persistent local cluster and leave it running."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    quiet_logs(stderr)
    try:
        root = resolve_data_dir(data_dir, load_file(env), env).resolve()
    except ConfigError as error:
        _say(stderr, f"shardb: {error.message}")
        return int(ExitCode.USAGE)
    if (root / STATE_FILE).exists():
        cluster = LocalCluster.load(root)
        running = _running_nodes(cluster)
        if running:
            _say(
                stderr,
                f"shardb: the cluster in {root} is already running (nodes "
                f"{', '.join(map(str, running))}); stop it with shardb down --data-dir {root}",
            )
            return int(ExitCode.SQL_ERROR)
        if nodes is not None and nodes != len(cluster.layout.nodes):
            _say(
                stderr,
                f"shardb: the cluster in {root} has {len(cluster.layout.nodes)} nodes; start it "
                "as it is, then use shardb cluster add-node / remove-node",
            )
            return int(ExitCode.USAGE)
        _say(stderr, f"resuming the {cluster.layout.backend} cluster in {root} ...")
    else:
        cluster = LocalCluster.create(
            root,
            3 if nodes is None else nodes,
            backend=backend,
            replication=replication,
            split_rows=split_rows,
            allow_faults=allow_faults,
        )
        _say(stderr, f"starting {len(cluster.layout.nodes)} {backend} nodes in {root} ...")
    try:
        with terminate_as_interrupt():
            cluster.start_all()
            trio.run(lambda: wait_ready(cluster, timeout_s=timeout_s))
    except (ClusterError, KeyboardInterrupt) as error:
        cluster.stop(grace_s=5.0)
        if isinstance(error, KeyboardInterrupt):
            _say(stderr, "interrupted; nodes stopped")
            return 130
        _say(stderr, f"shardb: the cluster did not start: {error}")
        return int(ExitCode.UNAVAILABLE)
    render(_nodes_rows(cluster), mode, stdout)
    addresses = ",".join(cluster.address_list)
    _say(
        stderr,
        f"cluster up; connect: shardb sql --data-dir {root}  (or SHARDB_ADDR={addresses}); "
        f"stop: shardb down --data-dir {root}",
    )
    return int(ExitCode.OK)


def run_down(
    *,
    data_dir: Path | None,
    mode: OutputMode,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``shardb down``: stop the nodes ``shardb up`` recorded in the data dir (data stays)."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:
        root = resolve_data_dir(data_dir, load_file(env), env).resolve()
    except ConfigError as error:
        _say(stderr, f"shardb: {error.message}")
        return int(ExitCode.USAGE)
    try:
        stopped = stop_recorded(root)
    except ClusterError as error:
        _say(stderr, f"shardb: {error}")
        return int(ExitCode.SQL_ERROR)
    if mode is OutputMode.JSON:
        render(Rows(columns=("stopped",), rows=tuple((n,) for n in stopped)), mode, stdout)
    if stopped:
        _say(stderr, f"stopped nodes {', '.join(map(str, stopped))}; data kept in {root}")
    else:
        _say(stderr, f"no node of the cluster in {root} was running")
    return int(ExitCode.OK)


# --- cluster ... ----------------------------------------------------------------------------


def ranges_rows(meta: Mapping[str, Any], table: str | None) -> Rows:
    return Rows(
        columns=RANGE_COLUMNS,
        rows=tuple(
            tuple(_cell(descriptor.get(column)) for column in RANGE_COLUMNS)
            for descriptor in sorted(meta.get("ranges", []), key=_key_order)
            if table is None or descriptor.get("table") == table
        ),
    )


def _key_order(descriptor: Mapping[str, Any]) -> tuple[str, tuple[int, Any]]:
    """Table, then key order (the unbounded first range first), as SHOW RANGES lists
    them: range ids do not follow keys (a multi-key split cuts right to left)."""
    return (str(descriptor.get("table")), start_order(descriptor.get("start_key")))


def nodes_rows(meta: Mapping[str, Any]) -> Rows:
    replicas: dict[int, int] = {}
    leaders: dict[int, int] = {}
    for descriptor in meta.get("ranges", []):
        for node in descriptor.get("replicas", []):
            replicas[int(node)] = replicas.get(int(node), 0) + 1
        leader = descriptor.get("leader")
        if leader:
            leaders[int(leader)] = leaders.get(int(leader), 0) + 1
    return Rows(
        columns=("node_id", "address", "alive", "replicas", "leaders"),
        rows=tuple(
            (
                int(n["node_id"]),
                _cell(n.get("address")),
                _cell(n.get("alive")),
                replicas.get(int(n["node_id"]), 0),
                leaders.get(int(n["node_id"]), 0),
            )
            for n in sorted(meta.get("nodes", []), key=lambda n: int(n["node_id"]))
        ),
    )


async def status_rows(session: ClusterSession, err: TextIO) -> tuple[Rows, int]:
    """One row per (node, hosted group) from each node's ``status``; returns the rows and how
    many nodes answered. An unreachable node gets one row with role ``unreachable``."""
    meta = await session.meta()
    rows: list[tuple[Cell, ...]] = []
    answered = 0
    for node in sorted(meta.get("nodes", []), key=lambda n: int(n["node_id"])):
        node_id = int(node["node_id"])
        try:
            status = await session.status(node_id)
        except Exception as error:
            classified = classify_error(error)
            if classified is None:
                raise
            _say(err, f"node {node_id}: {classified.message}")
            rows.append((node_id, None, None, "unreachable", None, None, None, None, None))
            continue
        answered += 1
        if status.get("failure"):
            _say(err, f"node {node_id} has failed: {status['failure']}")
        for group in sorted(status.get("groups", []), key=lambda g: int(g["group"])):
            rows.append((node_id, *(_cell(group.get(column)) for column in STATUS_COLUMNS[1:])))
    return Rows(columns=STATUS_COLUMNS, rows=tuple(rows)), answered


def _key(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def cluster_command(
    options: ClientOptions,
    what: str,
    *,
    table: str | None = None,
    keys: Sequence[str] = (),
    group: int = 0,
    node: int = 0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``shardb cluster status|nodes|ranges|split|transfer-leader``."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    mode = options.mode()

    async def body(session: ClusterSession) -> int:
        try:
            match what:
                case "status":
                    rows, answered = await status_rows(session, stderr)
                    render(rows, mode, stdout)
                    if answered == 0:
                        return int(ExitCode.UNAVAILABLE)
                case "nodes":
                    render(nodes_rows(await session.meta()), mode, stdout)
                case "ranges":
                    meta = await session.meta()
                    if table is not None and table not in {t["name"] for t in meta["tables"]}:
                        _say(stderr, f"shardb: Error (unknown_table): no such table: {table}")
                        return int(ExitCode.SQL_ERROR)
                    render(ranges_rows(meta, table), mode, stdout)
                case "split":
                    if table is None or not keys:
                        raise ValueError("split needs a table and at least one key")
                    name = '"' + table.replace('"', '""') + '"'
                    values = ", ".join("(?)" for _ in keys)
                    await session.execute(
                        f"ALTER TABLE {name} SPLIT AT VALUES {values}", [_key(k) for k in keys]
                    )
                    render(ranges_rows(await session.meta(), table), mode, stdout)
                case "transfer-leader":
                    message = await session.transfer_leader(GroupId(group), NodeId(node))
                    _say(stdout, message)
                case _:
                    raise ValueError(f"unknown cluster command {what!r}")
        except Exception as error:
            return _fail(stderr, error)
        return int(ExitCode.OK)

    return with_session(options, body, err=stderr)


# --- membership -----------------------------------------------------------------------------

JOIN_HINT: Final = (
    "add-node starts a node process of a local cluster (shardb up --data-dir DIR); on another "
    "machine run: shardb node start --join {addr} --listen HOST:PORT --client HOST:PORT "
    "--data-dir DIR"
)


def membership_command(
    options: ClientOptions,
    what: str,
    *,
    node: int = 0,
    timeout_s: float = 600.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``shardb cluster add-node`` / ``remove-node NODE``."""
    stdout, stderr = out or sys.stdout, err or sys.stderr

    async def add(session: ClusterSession) -> int:
        processes = session.processes
        if processes is None:
            _say(stderr, "shardb: " + JOIN_HINT.format(addr=session.address))
            return int(ExitCode.USAGE)
        reply = await session.admin("join", {})
        node_id = int(reply["node_id"])
        pid = await trio.to_thread.run_sync(processes.add_node, node_id)
        address = processes.cluster.spec(node_id).client_address
        _say(stderr, f"node {node_id} starting at {address} (pid {pid}) ...")
        with trio.move_on_after(timeout_s):
            while True:
                meta = await session.meta()
                if any(int(n["node_id"]) == node_id and n.get("alive") for n in meta["nodes"]):
                    _say(
                        stdout,
                        f"node {node_id} joined at {address}; the placement driver moves "
                        "replicas to it",
                    )
                    return int(ExitCode.OK)
                await trio.sleep(0.2)
        _say(stderr, f"shardb: node {node_id} did not join within {timeout_s:g} s")
        return int(ExitCode.UNAVAILABLE)

    async def remove(session: ClusterSession) -> int:
        state = await session.admin("decommission", {"node": node, "action": "start"})
        _say(stderr, f"draining node {node}: {state['replicas']} range replicas to move ...")
        last = None
        with trio.move_on_after(timeout_s):
            while state["replicas"] or state["meta_member"]:
                shown = (state["replicas"], state["meta_member"])
                if shown != last:
                    last = shown
                    meta_note = ", meta group member" if state["meta_member"] else ""
                    _say(stderr, f"  node {node}: {state['replicas']} replicas left{meta_note}")
                await trio.sleep(0.5)
                state = await session.admin("decommission", {"node": node, "action": "status"})
        if state["replicas"] or state["meta_member"]:
            _say(
                stderr,
                f"shardb: node {node} still holds {state['replicas']} replicas after "
                f"{timeout_s:g} s; it stays decommissioning (run remove-node again to wait)",
            )
            return int(ExitCode.UNAVAILABLE)
        await session.admin("decommission", {"node": node, "action": "remove"})
        processes = session.processes
        if processes is not None and node in processes.cluster.node_ids:
            await trio.to_thread.run_sync(processes.remove_node, node)
            _say(stdout, f"node {node} drained, removed from the cluster and stopped")
        else:
            _say(stdout, f"node {node} drained and removed from the cluster; stop its process")
        return int(ExitCode.OK)

    async def body(session: ClusterSession) -> int:
        try:
            return await (add(session) if what == "add-node" else remove(session))
        except Exception as error:
            return _fail(stderr, error)

    return with_session(options, body, err=stderr)
