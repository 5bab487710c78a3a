"""Real node processes on 127.0.0.1 (``python -m shardb.cli node start``), for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from consensus.runtime import ClientError, open_client
from consensus.runtime.localhost import free_ports

CLUSTER = "proc-test"


class ProcCluster:
    """Starts, kills and restarts node processes; ``kill_all`` is the fixture finalizer."""

    def __init__(
        self, tmp_path: Path, node_ids: tuple[int, ...], *extra_args: str, kv: bool = True
    ) -> None:
        """``kv``: bare runtime nodes with the key-value state machine (``--kv``); False runs
        shardb database nodes (SQL on the client port)."""
        self.kv = kv
        self.tmp_path = tmp_path
        self.node_ids = node_ids
        self.extra_args = list(extra_args)
        ports = free_ports(2 * len(node_ids))
        self.peer_ports = dict(zip(node_ids, ports[: len(node_ids)], strict=True))
        self.client_ports = dict(zip(node_ids, ports[len(node_ids) :], strict=True))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.all_procs: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> dict[int, tuple[str, int]]:
        return {n: ("127.0.0.1", port) for n, port in self.client_ports.items()}

    def data_dir(self, node_id: int) -> Path:
        return self.tmp_path / f"node{node_id}"

    def log_path(self, node_id: int) -> Path:
        return self.tmp_path / f"node{node_id}.log"

    def log_text(self, node_id: int) -> str:
        return self.log_path(node_id).read_text(errors="replace")

    def command(
        self,
        node_id: int,
        *,
        data_dir: Path | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
    ) -> list[str]:
        peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in sorted(self.peer_ports.items()))
        clients = ",".join(f"{n}=127.0.0.1:{p}" for n, p in sorted(self.client_ports.items()))
        return [
            sys.executable,
            "-m",
            "shardb.cli",
            "node",
            "start",
            "--id",
            str(node_id),
            "--listen",
            f"127.0.0.1:{peer_port or self.peer_ports[node_id]}",
            "--client",
            f"127.0.0.1:{client_port or self.client_ports[node_id]}",
            "--peers",
            peers,
            "--data-dir",
            str(data_dir or self.data_dir(node_id)),
            "--cluster-id",
            CLUSTER,
            *(["--kv"] if self.kv else ["--clients", clients]),
            *self.extra_args,
        ]

    def spawn(self, command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.all_procs.append(proc)
        return proc

    def start(self, node_id: int) -> subprocess.Popen[bytes]:
        proc = self.spawn(self.command(node_id), self.log_path(node_id))
        self.procs[node_id] = proc
        return proc

    async def wait_serving(self, node_id: int, timeout_s: float = 30.0) -> None:
        """Until the node answers ``status`` on its client port."""
        with trio.fail_after(timeout_s):
            async with open_client({node_id: self.addresses[node_id]}, timeout_s=2) as client:
                while True:
                    proc = self.procs[node_id]
                    if proc.poll() is not None:
                        log = self.log_text(node_id)
                        raise AssertionError(f"node {node_id} exited {proc.returncode}:\n{log}")
                    try:
                        await client.status(node_id)
                        return
                    except ClientError:
                        await trio.sleep(0.05)

    async def start_all(self) -> None:
        for node_id in self.node_ids:
            self.start(node_id)
        for node_id in self.node_ids:
            await self.wait_serving(node_id)

    def kill9(self, node_id: int) -> None:
        proc = self.procs.pop(node_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    async def terminate(self, node_id: int) -> int:
        proc = self.procs.pop(node_id)
        proc.send_signal(signal.SIGTERM)
        return await trio.to_thread.run_sync(lambda: proc.wait(timeout=30))

    def kill_all(self) -> None:
        for proc in self.all_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
