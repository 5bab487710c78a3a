"""Per-process CPU time and node counter deltas, across kills and restarts.

CPU seconds come from ``/proc/<pid>/stat`` (``utime + stime``, every thread of the process:
the node's apply and storage worker threads included), in clock ticks of ``SC_CLK_TCK``.

A node's ``stats`` counters live in its process: a kill -9 loses them and a restart starts
from zero. ``ProcessLedger`` therefore keeps one *incarnation* per (node, pid): the first
sample seen (or zeros for a process that started during the measurement) and the last one.
A node's delta over a run is the sum over its incarnations of ``last - first``; what a killed
process did between its last sample and its death is lost, which the sampling interval bounds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

COUNTERS: Final = (
    "messages_sent",
    "messages_received",
    "frames_sent",
    "fsyncs",
    "batches_persisted",
    "entries_committed",
    "entries_applied",
    "proposals",
    "reads",
    "readys",
    "loops",
    "term_changes",
    "messages_dropped",
    "bytes_sent",
)
"""Monotonic ``stats`` counters summed over a run (gauges and maxima are not deltas).
``bytes_sent`` is the transport's (BATCH frames as written to the sockets, handshakes not
counted), merged into the node's counters by the sampler."""


def clock_ticks_per_second() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def parse_proc_stat(text: str, ticks_per_s: int) -> float:
    """CPU seconds (user + system) from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may hold spaces or ``)``, so fields are
    counted after the LAST ``)``: utime and stime are fields 14 and 15 of proc(5).
    """
    try:
        rest = text[text.rindex(")") + 2 :].split()
        # rest[0] is field 3 (state), so field n is rest[n - 3].
        utime, stime = int(rest[11]), int(rest[12])
    except (ValueError, IndexError):
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}") from None
    return (utime + stime) / ticks_per_s


def process_cpu_seconds(pid: int, *, proc: Path = Path("/proc")) -> float | None:
    """CPU seconds used so far by ``pid``, or None if it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return parse_proc_stat(text, clock_ticks_per_second())


def counter_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """``after - before`` for every counter in ``COUNTERS`` (missing counts as 0)."""
    return {name: int(after.get(name, 0)) - int(before.get(name, 0)) for name in COUNTERS}


@dataclass(slots=True)
class _Incarnation:
    first_counters: dict[str, int]
    last_counters: dict[str, int]
    first_cpu_s: float
    last_cpu_s: float


@dataclass(slots=True)
class ProcessLedger:
    """Samples of each node process's counters and CPU time during one measurement."""

    _incarnations: dict[tuple[int, int], _Incarnation] = field(default_factory=dict)

    def observe(
        self,
        node_id: int,
        pid: int,
        *,
        counters: Mapping[str, int] | None,
        cpu_s: float | None,
        fresh: bool = False,
    ) -> None:
        """Record one sample. ``fresh``: the process started during the measurement, so its
        first sample counts from zero (what it did before this sample belongs to the run)."""
        key = (node_id, pid)
        now_counters = {n: int(counters.get(n, 0)) for n in COUNTERS} if counters else None
        inc = self._incarnations.get(key)
        if inc is None:
            zero = dict.fromkeys(COUNTERS, 0)
            first_counters = zero if fresh or now_counters is None else now_counters
            inc = self._incarnations[key] = _Incarnation(
                first_counters=first_counters,
                last_counters=now_counters or first_counters,
                first_cpu_s=0.0 if fresh or cpu_s is None else cpu_s,
                last_cpu_s=cpu_s or 0.0,
            )
            return
        if now_counters is not None:
            inc.last_counters = now_counters
        if cpu_s is not None:
            inc.last_cpu_s = cpu_s

    def node_counters(self) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        for (node_id, _pid), inc in sorted(self._incarnations.items()):
            delta = counter_delta(inc.first_counters, inc.last_counters)
            total = out.setdefault(node_id, dict.fromkeys(COUNTERS, 0))
            for name in COUNTERS:
                total[name] += delta[name]
        return out

    def node_cpu_seconds(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for (node_id, _pid), inc in sorted(self._incarnations.items()):
            out[node_id] = out.get(node_id, 0.0) + max(0.0, inc.last_cpu_s - inc.first_cpu_s)
        return out

    def incarnations(self) -> dict[int, int]:
        """Processes seen per node (2 or more after a restart)."""
        out: dict[int, int] = {}
        for node_id, _pid in sorted(self._incarnations):
            out[node_id] = out.get(node_id, 0) + 1
        return out


def per_committed_entry(
    counters: Mapping[int, Mapping[str, int]], committed_entries: int
) -> dict[str, float | None]:
    """Cluster-wide messages, frames, bytes sent and fsyncs per committed log entry.

    ``committed_entries`` counts each entry of each group once (the growth of the group's
    commit index), whereas counters are summed over every node: so 3 replicas each fsyncing
    once per entry give 3.0 fsyncs per entry. Bytes are every node-to-node byte sent (the
    leader's appends to each follower, their replies, heartbeats, elections), not only the
    entries' payload.
    """
    totals = {name: sum(c.get(name, 0) for c in counters.values()) for name in COUNTERS}
    if committed_entries <= 0:
        return {"messages": None, "frames": None, "bytes": None, "fsyncs": None}
    return {
        "messages": totals["messages_sent"] / committed_entries,
        "frames": totals["frames_sent"] / committed_entries,
        "bytes": totals["bytes_sent"] / committed_entries,
        "fsyncs": totals["fsyncs"] / committed_entries,
    }
