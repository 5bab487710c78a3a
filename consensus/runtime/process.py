"""One node as a real OS process: ``shardb node start``.

Layout of ``--data-dir``: ``log.db`` (the consensus log of every group, ``consensus.storage``),
``data.db`` (the state machine), ``node.pid`` (the PID file, held under an exclusive
``flock`` while the process runs, so a second process on the same directory is refused at
once with the holder's pid; the log store's exclusive SQLite lock backs this up).

A brand-new, empty data dir is initialised. A data dir holding ``data.db`` but no ``log.db``
is refused: a node that lost its log forgot its votes and promises, and could vote twice in
one term (Raft §5.2).

Exit status: 0 after a clean shutdown (SIGTERM / SIGINT), 2 when the log is corrupt (the
location is logged and nothing is served), 3 when the data dir is in use, 1 for anything
else that stops the start. Logs go to stderr through structlog: a console renderer on a
terminal, JSON lines otherwise, every line bound with ``node_id``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, TextIO

import structlog
import trio
import typer

from consensus.runtime.layout import DATA_FILE, LOG_FILE, PID_FILE
from consensus.storage import CorruptRecord, StorageCorrupt, StoreLocked
from consensus.types import NodeId

# The node's modules are imported when a node starts, not when the CLI loads: ``shardb``'s
# other commands stay fast and independent of the runtime.
if TYPE_CHECKING:
    from consensus.runtime.node import NodeConfig

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_CORRUPT: Final = 2
EXIT_IN_USE: Final = 3


class DataDirInUse(Exception):
    pass


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def parse_peers(text: str) -> dict[NodeId, tuple[str, int]]:
    peers: dict[NodeId, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, sep, address = item.partition("=")
        if not sep or not node.strip().isdigit() or int(node) <= 0:
            raise typer.BadParameter(f"expected ID=HOST:PORT, got {item!r}")
        peers[NodeId(int(node))] = parse_address(address.strip())
    return peers


def configure_logging(node_id: int, *, stream: TextIO | None = None, level: str = "info") -> None:
    out = stream or sys.stderr
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if out.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(node_id=node_id)


@contextmanager
def hold_pid_file(data_dir: Path) -> Iterator[None]:
    """Hold ``node.pid`` under an exclusive, non-blocking flock; released at exit (also by
    the kernel when the process dies, so a ``kill -9`` leaves no stale lock)."""
    path = data_dir / PID_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DataDirInUse(
                f"{data_dir} is in use by another node process (pid {holder})"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


async def serve(config: NodeConfig, client_address: tuple[str, int]) -> None:
    from consensus.runtime.node import open_node
    from consensus.runtime.server import open_client_server

    log = structlog.get_logger("consensus.runtime.process")
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_node(config) as node, open_client_server(node, *client_address) as bound:
            log.info(
                "node_ready",
                listen=list(node.listen_address or ()),
                client=list(bound),
                groups=len(node.group_ids()),
                pid=os.getpid(),
            )
            async for signum in signals:
                log.info("shutdown_requested", signal=signal.Signals(signum).name)
                break


def run_node(
    *,
    node_id: int,
    listen: tuple[str, int],
    client: tuple[str, int],
    peers: dict[NodeId, tuple[str, int]],
    data_dir: Path,
    cluster_id: str,
    tick_interval_ms: int = 10,
    election_timeout_ticks: int = 20,
    snapshot_interval_entries: int = 10_000,
    fsync: bool = True,
    log_level: str = "info",
    serve_node: Callable[[NodeConfig, tuple[str, int]], Awaitable[None]] | None = None,
) -> int:
    """Run one node until SIGTERM/SIGINT; returns the process exit status. ``serve_node``
    replaces the key-value node (``serve``) with an application's, e.g. shardb's database
    node: same data dir lock, logging, recovery errors and exit codes."""
    from consensus.runtime.node import NodeConfig

    configure_logging(node_id, level=log_level)
    log = structlog.get_logger("consensus.runtime.process")
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with hold_pid_file(data_dir):
            has_log = (data_dir / LOG_FILE).exists()
            if not has_log and (data_dir / DATA_FILE).exists():
                log.error("log_missing", data_dir=str(data_dir), detail="data.db without log.db")
                return EXIT_FAILED
            config = NodeConfig(
                node_id=NodeId(node_id),
                cluster_id=cluster_id,
                data_dir=data_dir,
                listen_host=listen[0],
                listen_port=listen[1],
                peers={n: a for n, a in peers.items() if n != node_id},
                create=not has_log,
                tick_interval_ms=tick_interval_ms,
                election_timeout_ticks=election_timeout_ticks,
                snapshot_interval_entries=snapshot_interval_entries,
                fsync=fsync,
            )
            try:
                trio.run(serve_node or serve, config, client)
            except BaseExceptionGroup as group:
                # A nursery wraps what its tasks raised; report the one underlying cause.
                raise _single_cause(group) from group
    except DataDirInUse as exc:
        log.error("data_dir_in_use", error=str(exc))
        return EXIT_IN_USE
    except StoreLocked as exc:
        log.error("data_dir_in_use", error=str(exc))
        return EXIT_IN_USE
    except CorruptRecord as exc:
        log.error(
            "log_corrupt",
            table=exc.table,
            group_id=int(exc.group_id),
            index=exc.index,
            error=str(exc),
            path=str(data_dir / LOG_FILE),
        )
        return EXIT_CORRUPT
    except StorageCorrupt as exc:
        log.error("log_corrupt", error=str(exc), path=str(data_dir / LOG_FILE))
        return EXIT_CORRUPT
    except Exception as exc:
        log.error("node_start_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        return EXIT_FAILED
    log.info("node_exited")
    return EXIT_OK


def _single_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group


node_app = typer.Typer(help="Run a shardb node as a real process.", no_args_is_help=True)


@node_app.command("start")
def start(
    node_id: Annotated[int, typer.Option("--id", min=1, help="This node's id.")],
    listen: Annotated[str, typer.Option(help="HOST:PORT for node-to-node traffic.")],
    client: Annotated[str, typer.Option(help="HOST:PORT for clients and admin.")],
    data_dir: Annotated[Path, typer.Option(help="Directory for log.db, data.db, node.pid.")],
    cluster_id: Annotated[str, typer.Option(help="Cluster identity checked on every link.")],
    peers: Annotated[str, typer.Option(help="ID=HOST:PORT,... of every node (self allowed).")] = "",
    tick_ms: Annotated[int, typer.Option(min=1, help="Milliseconds per logical tick.")] = 10,
    election_ticks: Annotated[int, typer.Option(min=2, help="Election timeout in ticks.")] = 20,
    snapshot_every: Annotated[
        int, typer.Option(min=1, help="Compact a group's log every N applied entries.")
    ] = 10_000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run one node until SIGTERM or SIGINT."""
    code = run_node(
        node_id=node_id,
        listen=parse_address(listen),
        client=parse_address(client),
        peers=parse_peers(peers),
        data_dir=data_dir,
        cluster_id=cluster_id,
        tick_interval_ms=tick_ms,
        election_timeout_ticks=election_ticks,
        snapshot_interval_entries=snapshot_every,
        log_level=log_level,
    )
    raise typer.Exit(code=code)
