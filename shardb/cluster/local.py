"""A cluster of real shardb node processes on this machine (``shardb demo``, ``shardb up``,
the comparison benchmarks).

Each node is ``python -m shardb.cli node start ...`` with its own data directory and log file
under one root directory; ports are picked free on 127.0.0.1 (or given). The layout is written
to ``ROOT/cluster.json`` so that another command (``shardb down``, ``shardb cluster ...``) can
find the nodes, their ports and their process ids. Whoever starts a cluster stops it:
``stop()`` terminates every node (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from consensus.runtime.localhost import free_ports

STATE_FILE: Final = "cluster.json"
STOP_GRACE_S: Final = 10.0


class ClusterError(Exception):
    """A node would not start, or the cluster did not become ready in time."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    node_id: int
    peer_port: int
    client_port: int
    host: str = "127.0.0.1"
    joined: bool = False
    """Added to the running cluster (``cluster add-node``): starts with ``--join``."""

    @property
    def client_address(self) -> str:
        return f"{self.host}:{self.client_port}"


@dataclass(slots=True, kw_only=True)
class ClusterLayout:
    root: str
    cluster_id: str
    backend: str
    replication: int
    split_rows: int
    allow_faults: bool
    nodes: list[NodeSpec]
    extra_args: list[str] = field(default_factory=list)
    pids: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["pids"] = {str(k): v for k, v in self.pids.items()}
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClusterLayout:
        data: dict[str, Any] = json.loads(text)
        data["nodes"] = [NodeSpec(**n) for n in data["nodes"]]
        data["pids"] = {int(k): int(v) for k, v in data.get("pids", {}).items()}
        return cls(**data)


class LocalCluster:
    """Start, stop, kill, pause and restart the node processes of one local cluster."""

    def __init__(self, layout: ClusterLayout) -> None:
        self.layout = layout
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def create(
        cls,
        root: Path,
        nodes: int = 3,
        *,
        backend: str = "raft",
        replication: int = 3,
        split_rows: int = 0,
        allow_faults: bool = False,
        cluster_id: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> LocalCluster:
        if nodes < 1:
            raise ClusterError("a cluster needs at least one node")
        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * nodes)
        layout = ClusterLayout(
            root=str(root),
            cluster_id=cluster_id or f"local-{os.getpid()}-{int(time.time())}",
            backend=backend,
            replication=min(replication, nodes),
            split_rows=split_rows,
            allow_faults=allow_faults,
            nodes=[
                NodeSpec(node_id=i + 1, peer_port=ports[i], client_port=ports[nodes + i])
                for i in range(nodes)
            ],
            extra_args=list(extra_args),
        )
        return cls(layout)

    @classmethod
    def load(cls, root: Path) -> LocalCluster:
        path = root / STATE_FILE
        try:
            return cls(ClusterLayout.from_json(path.read_text()))
        except FileNotFoundError:
            raise ClusterError(f"no cluster in {root} (no {STATE_FILE})") from None

    # ----------------------------------------------------------------- layout

    @property
    def root(self) -> Path:
        return Path(self.layout.root)

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(n.node_id for n in self.layout.nodes)

    def spec(self, node_id: int) -> NodeSpec:
        for node in self.layout.nodes:
            if node.node_id == node_id:
                return node
        raise ClusterError(f"no node {node_id} in this cluster")

    @property
    def client_addresses(self) -> dict[int, tuple[str, int]]:
        return {n.node_id: (n.host, n.client_port) for n in self.layout.nodes}

    @property
    def address_list(self) -> list[str]:
        return [n.client_address for n in self.layout.nodes]

    def data_dir(self, node_id: int) -> Path:
        return self.root / f"node{node_id}"

    def log_path(self, node_id: int) -> Path:
        return self.root / f"node{node_id}.log"

    def save(self) -> None:
        self.layout.pids = {n: p.pid for n, p in self.procs.items() if p.poll() is None}
        path = self.root / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.layout.to_json())
        tmp.replace(path)

    def command(self, node_id: int) -> list[str]:
        me = self.spec(node_id)
        founders = [n for n in self.layout.nodes if not n.joined]
        if me.joined:
            # Any other node will do; the node asks them in order.
            others = [n.client_address for n in self.layout.nodes if n.node_id != node_id]
            membership = ["--join", ",".join(others)]
        else:
            peers = ",".join(f"{n.node_id}={n.host}:{n.peer_port}" for n in founders)
            clients = ",".join(f"{n.node_id}={n.client_address}" for n in founders)
            membership = ["--peers", peers, "--clients", clients]
        command = [
            sys.executable,
            "-m",
            "shardb.cli",
            "node",
            "start",
            "--id",
            str(node_id),
            "--listen",
            f"{me.host}:{me.peer_port}",
            "--client",
            me.client_address,
            *membership,
            "--data-dir",
            str(self.data_dir(node_id)),
            "--cluster-id",
            self.layout.cluster_id,
            "--backend",
            self.layout.backend,
            "--replication",
            str(self.layout.replication),
            "--split-rows",
            str(self.layout.split_rows),
        ]
        if self.layout.allow_faults:
            command.append("--allow-faults")
        return [*command, *self.layout.extra_args]

    def add_node_spec(self, node_id: int) -> NodeSpec:
        """Record a new node (its id reserved by the cluster) with fresh loopback ports; it
        starts with ``--join`` (``start``). The caller saves the layout."""
        if node_id in self.node_ids:
            raise ClusterError(f"node {node_id} is already in this cluster")
        peer_port, client_port = free_ports(2)
        spec = NodeSpec(node_id=node_id, peer_port=peer_port, client_port=client_port, joined=True)
        self.layout.nodes.append(spec)
        return spec

    def forget_node(self, node_id: int) -> None:
        """Drop a removed node from the layout (its data directory stays, for inspection);
        the caller saves the layout."""
        self.spec(node_id)
        self.layout.nodes = [n for n in self.layout.nodes if n.node_id != node_id]
        self.layout.pids.pop(node_id, None)
        self.procs.pop(node_id, None)

    # ----------------------------------------------------------------- processes

    def start(self, node_id: int) -> subprocess.Popen[bytes]:
        running = self.procs.get(node_id)
        if running is not None and running.poll() is None:
            raise ClusterError(f"node {node_id} is already running (pid {running.pid})")
        with open(self.log_path(node_id), "ab") as log:
            proc = subprocess.Popen(
                self.command(node_id),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # a Ctrl-C in the shell must not hit the nodes
            )
        self.procs[node_id] = proc
        self.save()
        return proc

    def start_all(self) -> None:
        for node_id in self.node_ids:
            self.start(node_id)

    def running(self, node_id: int) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the log tail of any node that exited."""
        for node_id, proc in sorted(self.procs.items()):
            if proc.poll() is not None:
                tail = self.log_tail(node_id)
                raise ClusterError(f"node {node_id} exited with {proc.returncode}:\n{tail}")

    def log_tail(self, node_id: int, lines: int = 20) -> str:
        try:
            text = self.log_path(node_id).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill9(self, node_id: int) -> None:
        proc = self.procs.pop(node_id, None)
        if proc is None:
            raise ClusterError(f"node {node_id} is not running")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.save()

    def pause(self, node_id: int) -> None:
        self._signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self._signal(node_id, signal.SIGCONT)

    def _signal(self, node_id: int, signum: signal.Signals) -> None:
        proc = self.procs.get(node_id)
        if proc is None or proc.poll() is not None:
            raise ClusterError(f"node {node_id} is not running")
        proc.send_signal(signum)

    def terminate(self, node_id: int, *, grace_s: float = STOP_GRACE_S) -> int | None:
        proc = self.procs.pop(node_id, None)
        if proc is None:
            return None
        code = _stop(proc, grace_s)
        self.save()
        return code

    def stop(self, *, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every node this object started (paused ones are resumed first so that they
        can exit cleanly)."""
        procs, self.procs = self.procs, {}
        for proc in procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in procs.values():
            _stop(proc, grace_s)
        if self.root.exists():
            self.save()


def stop_recorded(root: Path, *, grace_s: float = STOP_GRACE_S) -> list[int]:
    """``shardb down``: stop the processes recorded in ``ROOT/cluster.json`` (started by
    another command). Returns the node ids that were running."""
    cluster = LocalCluster.load(root)
    stopped: list[int] = []
    for node_id, pid in sorted(cluster.layout.pids.items()):
        if is_our_node(pid, cluster.data_dir(node_id)):
            for signum in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    break
            stopped.append(node_id)
    deadline = time.monotonic() + grace_s
    for node_id in stopped:
        pid = cluster.layout.pids[node_id]
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    cluster.layout.pids = {}
    path = root / STATE_FILE
    path.write_text(cluster.layout.to_json())
    return stopped


def is_our_node(pid: int, data_dir: Path) -> bool:
    """The pid still runs a node with this data dir (pids are reused by the OS)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return str(data_dir).encode() in cmdline


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) still answers kill 0.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=30)
