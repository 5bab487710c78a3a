"""Crashing and restarting the node processes of a local cluster, for the shell's ``.crash``
and ``.restart``.

Two cases share one interface. ``shardb demo`` owns its ``LocalCluster`` (the nodes are its
children): kill and start go through that object. A cluster started by ``shardb up`` is only a
``cluster.json`` to ``shardb sql --data-dir``: its nodes belong to no living parent, so a crash
signals the recorded pid (after checking that the pid still runs that node: pids are reused)
and a restart starts the node as before and records its new pid next to the others' (the
``LocalCluster`` of a loaded layout knows only the processes it started itself, and its
``save`` would forget the rest, so ``down`` could no longer stop them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Final

# The same pid checks ``shardb down`` (``stop_recorded``) relies on; private there, see the
# report: they deserve a public name in shardb.cluster.
from shardb.cluster.local import STATE_FILE, LocalCluster, is_our_node, pid_alive

KILL_WAIT_S: Final = 10.0


class ProcessControlError(Exception):
    """A crash or restart that cannot be done (node not running, already running, ...)."""

    code = "node_control"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NodeProcesses:
    """Kill -9 and restart nodes of one local cluster (owned, or recorded in cluster.json)."""

    def __init__(self, cluster: LocalCluster, *, owned: bool) -> None:
        self.cluster = cluster
        self.owned = owned
        """True when this process started the nodes (``demo``): they are its children."""

    @classmethod
    def load(cls, root: Path) -> NodeProcesses:
        return cls(LocalCluster.load(root), owned=False)

    @property
    def allow_faults(self) -> bool:
        return self.cluster.layout.allow_faults

    @property
    def root(self) -> Path:
        return self.cluster.root

    def _check_node(self, node_id: int) -> None:
        if node_id not in self.cluster.node_ids:
            known = ", ".join(str(n) for n in self.cluster.node_ids)
            raise ProcessControlError(f"no node {node_id} in this cluster (nodes: {known})")

    def _recorded(self) -> LocalCluster:
        # Another command (an earlier restart) may have rewritten the pids since we loaded.
        return LocalCluster.load(self.root)

    def running(self, node_id: int) -> bool:
        if self.owned:
            return self.cluster.running(node_id)
        recorded = self._recorded()
        pid = recorded.layout.pids.get(node_id)
        return pid is not None and is_our_node(pid, recorded.data_dir(node_id))

    def crash(self, node_id: int) -> int:
        """SIGKILL the node (no clean shutdown, unsynced writes lost); return its old pid."""
        self._check_node(node_id)
        if self.owned:
            proc = self.cluster.procs.get(node_id)
            if proc is None or proc.poll() is not None:
                raise ProcessControlError(f"node {node_id} is not running")
            pid = proc.pid
            self.cluster.kill9(node_id)
            return pid
        recorded = self._recorded()
        recorded_pid = recorded.layout.pids.get(node_id)
        if recorded_pid is None or not is_our_node(recorded_pid, recorded.data_dir(node_id)):
            raise ProcessControlError(f"node {node_id} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(recorded_pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while pid_alive(recorded_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        pids = {n: p for n, p in recorded.layout.pids.items() if n != node_id}
        self._write_pids(recorded, pids)
        return recorded_pid

    def restart(self, node_id: int) -> int:
        """Start the node again with its data directory and ports; return its new pid."""
        self._check_node(node_id)
        if self.owned:
            if self.cluster.running(node_id):
                raise ProcessControlError(f"node {node_id} is already running")
            return self.cluster.start(node_id).pid
        recorded = self._recorded()
        old = recorded.layout.pids.get(node_id)
        if old is not None and is_our_node(old, recorded.data_dir(node_id)):
            raise ProcessControlError(f"node {node_id} is already running (pid {old})")
        others = {n: p for n, p in recorded.layout.pids.items() if n != node_id}
        proc = recorded.start(node_id)
        self._write_pids(recorded, {**others, node_id: proc.pid})
        return proc.pid

    def add_node(self, node_id: int) -> int:
        """Record node ``node_id`` (reserved by the cluster) and start it with ``--join``;
        return its pid."""
        if self.owned:
            self.cluster.add_node_spec(node_id)
            return self.cluster.start(node_id).pid
        recorded = self._recorded()
        others = dict(recorded.layout.pids)
        recorded.add_node_spec(node_id)
        proc = recorded.start(node_id)
        self._write_pids(recorded, {**others, node_id: proc.pid})
        self.cluster = recorded
        return proc.pid

    def remove_node(self, node_id: int) -> None:
        """Stop the node's process (SIGTERM, then SIGKILL after the grace time) and drop it
        from the layout."""
        self._check_node(node_id)
        if self.owned:
            if self.cluster.running(node_id):
                self.cluster.terminate(node_id)
            self.cluster.forget_node(node_id)
            self.cluster.save()
            return
        recorded = self._recorded()
        pid = recorded.layout.pids.get(node_id)
        if pid is not None and is_our_node(pid, recorded.data_dir(node_id)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + KILL_WAIT_S
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        pids = {n: p for n, p in recorded.layout.pids.items() if n != node_id}
        recorded.forget_node(node_id)
        self._write_pids(recorded, pids)
        self.cluster = recorded

    def _write_pids(self, recorded: LocalCluster, pids: dict[int, int]) -> None:
        recorded.layout.pids = dict(sorted(pids.items()))
        path = self.root / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(recorded.layout.to_json())
        tmp.replace(path)
