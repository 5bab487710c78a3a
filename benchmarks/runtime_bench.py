"""End-to-end benchmark of the node runtime: real node processes, real TCP, durable storage.

Questions: how many durable writes per second does one consensus group commit with C
concurrent closed-loop clients; what latency does a single client see; does throughput hold
when the load is spread over G groups; and what does a node pay for many idle groups?

The script starts 3 key-value node processes (``consensus.runtime.process``) on 127.0.0.1,
each with its own data dir (``log.db`` in WAL with ``synchronous=FULL``, so every commit is
fsynced), creates G groups of the chosen backend with all three nodes as voters, and then
runs C clients spread over one or more client *processes* (so the client's CPU is visible
apart from the nodes'). Each client sends one ``put`` at a time to the group ``client % G``
and waits for the answer (closed loop). Clients warm up first (elections, connections,
leader hints), then every process measures the same wall-clock window. Per-process latency
histograms (``hdrh``, microseconds) are merged in the parent.

From the nodes' ``stats`` endpoint it reads, over the measured window, fsyncs and frames sent,
summed over all three nodes and divided by committed writes; from ``/proc/<pid>/stat`` the CPU
seconds of every node and client process.

Modes::

    # 1 group x 64 clients, 1 client (latency), 64 groups x 64 clients, both backends
    .venv/bin/python benchmarks/runtime_bench.py --backend raft --groups 1 --clients 64 --seconds 10
    .venv/bin/python benchmarks/runtime_bench.py --backend both --suite --seconds 10
    # 1,000 idle groups per node for 30 s: CPU% per node
    .venv/bin/python benchmarks/runtime_bench.py --backend raft --idle-groups 1000 --seconds 30

``--profile DIR`` runs ``py-spy record`` (dev extra) on every node during the measured window
and writes one collapsed-stack file per node (``DIR/<backend>-g<G>-c<C>-node<N>.txt``; feed it
to any flame graph tool; ``--profile-idle`` samples idle threads too). Every process the script
starts is stopped when it ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio
from hdrh.histogram import HdrHistogram

from consensus.runtime.client import ClientError, open_client
from consensus.runtime.localhost import free_ports

CLUSTER = "bench"
NODES = (1, 2, 3)
CLK_TCK = os.sysconf("SC_CLK_TCK")
LATENCY_MAX_US = 60_000_000
VALUE = b"v" * 64
REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """Child processes import this checkout (not whatever the venv's editable install
    points at)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, LATENCY_MAX_US, 3)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all its threads) from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    # After the command name: state is field 3, utime 14, stime 15 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --------------------------------------------------------------------------- processes


class Cluster:
    """Three node processes; ``stop`` terminates (then kills) every one it started."""

    def __init__(
        self, root: Path, *, log_level: str, tick_ms: int, election_ticks: int | None = None
    ) -> None:
        self.root = root
        ports = free_ports(2 * len(NODES))
        self.peer_ports = dict(zip(NODES, ports[: len(NODES)], strict=True))
        self.client_ports = dict(zip(NODES, ports[len(NODES) :], strict=True))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.log_level = log_level
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks

    @property
    def addresses(self) -> dict[int, tuple[str, int]]:
        return {n: ("127.0.0.1", p) for n, p in self.client_ports.items()}

    def start(self) -> None:
        peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in sorted(self.peer_ports.items()))
        for node in NODES:
            command = [
                sys.executable,
                "-c",
                # The runtime's own key-value node (consensus.runtime.process), not shardb's
                # database node that `shardb node start` runs: this measures the consensus
                # runtime, whose groups take KV puts without any SQL range set-up.
                "import sys; from consensus.runtime.process import node_app; node_app()",
                "--id",
                str(node),
                "--listen",
                f"127.0.0.1:{self.peer_ports[node]}",
                "--client",
                f"127.0.0.1:{self.client_ports[node]}",
                "--peers",
                peers,
                "--data-dir",
                str(self.root / f"node{node}"),
                "--cluster-id",
                CLUSTER,
                "--tick-ms",
                str(self.tick_ms),
                *(
                    ["--election-ticks", str(self.election_ticks)]
                    if self.election_ticks is not None
                    else []
                ),
                "--log-level",
                self.log_level,
            ]
            with open(self.root / f"node{node}.log", "ab") as log:
                self.procs[node] = subprocess.Popen(
                    command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=_env()
                )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def check_alive(self) -> None:
        for node, proc in self.procs.items():
            if proc.poll() is not None:
                log = (self.root / f"node{node}.log").read_text(errors="replace")[-4000:]
                raise RuntimeError(f"node {node} exited with {proc.returncode}:\n{log}")


async def wait_serving(cluster: Cluster, timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        async with open_client(cluster.addresses, timeout_s=2) as client:
            for node in NODES:
                while True:
                    cluster.check_alive()
                    try:
                        await client.status(node)
                        break
                    except ClientError:
                        await trio.sleep(0.05)


async def create_groups(cluster: Cluster, backend: str, groups: int, first: int = 1) -> None:
    """Create groups first..groups on every node (a few concurrent creators: each creation
    is one fsynced transaction per node)."""
    async with open_client(cluster.addresses, timeout_s=60) as client:
        limiter = trio.CapacityLimiter(16)

        async def create(group: int) -> None:
            async with limiter:
                await client.create_group(group, backend, list(NODES))

        async with trio.open_nursery() as nursery:
            for group in range(first, groups + 1):
                nursery.start_soon(create, group)


async def wait_writable(
    cluster: Cluster, groups: int, first: int = 1, timeout_s: float = 120.0
) -> None:
    """One acknowledged write per group: every group has a leader and the client knows it."""
    with trio.fail_after(timeout_s):
        async with open_client(cluster.addresses, timeout_s=timeout_s) as client:
            limiter = trio.CapacityLimiter(64)

            async def touch(group: int) -> None:
                async with limiter:
                    while True:
                        try:
                            await client.put(group, b"warmup", b"1")
                            return
                        except ClientError:
                            # Lost / timed out while groups still elect: try again (the
                            # fail_after above bounds the whole warm-up).
                            await trio.sleep(0.05)

            async with trio.open_nursery() as nursery:
                for group in range(first, groups + 1):
                    nursery.start_soon(touch, group)


async def node_stats(cluster: Cluster) -> dict[int, dict[str, Any]]:
    async with open_client(cluster.addresses, timeout_s=10) as client:
        return {n: (await client.stats(n))["node"] for n in NODES}


async def leaders(cluster: Cluster) -> dict[int, int]:
    """group -> number of groups each node leads."""
    counts = dict.fromkeys(NODES, 0)
    async with open_client(cluster.addresses, timeout_s=10) as client:
        for node in NODES:
            for g in (await client.status(node))["groups"]:
                if g["role"] == "leader":
                    counts[node] += 1
    return counts


# --------------------------------------------------------------------------- client worker


async def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One client process: ``clients`` closed loops, measuring in [start_at, end_at)."""
    addresses = {int(n): (h, p) for n, (h, p) in spec["addresses"].items()}
    histogram = _histogram()
    counts = {"ok": 0, "errors": 0}
    errors: dict[str, int] = {}
    start_at: float = spec["start_at"]
    end_at: float = spec["end_at"]
    groups: int = spec["groups"]

    async with open_client(addresses, timeout_s=10) as client:

        async def loop(client_index: int) -> None:
            group = client_index % groups + 1
            key = f"k{client_index}".encode()
            while True:
                t0 = time.time()
                if t0 >= end_at:
                    return
                try:
                    await client.put(group, key, VALUE)
                except ClientError as exc:
                    if t0 >= start_at:
                        counts["errors"] += 1
                        errors[exc.code] = errors.get(exc.code, 0) + 1
                    continue
                t1 = time.time()
                if t0 >= start_at and t1 < end_at:
                    counts["ok"] += 1
                    histogram.record_value(max(1, int((t1 - t0) * 1e6)))

        async with trio.open_nursery() as nursery:
            for index in spec["client_indexes"]:
                nursery.start_soon(loop, index)
    return {
        "ok": counts["ok"],
        "errors": counts["errors"],
        "error_codes": errors,
        "histogram": base64.b64encode(histogram.encode()).decode("ascii"),
        "cpu_s": cpu_seconds(os.getpid()),
    }


def worker_main() -> None:
    spec = json.loads(sys.stdin.read())
    result = trio.run(run_worker, spec)
    sys.stdout.write(json.dumps(result))


# --------------------------------------------------------------------------- one run


@dataclass(slots=True, kw_only=True)
class Result:
    backend: str
    groups: int
    clients: int
    client_procs: int
    seconds: float
    writes: int = 0
    errors: int = 0
    writes_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    fsyncs_per_write: float = 0.0
    frames_per_write: float = 0.0
    node_cpu_s: dict[int, float] = field(default_factory=dict)
    node_cpu_pct: dict[int, float] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    leaders: dict[int, int] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    node_stats_delta: dict[int, dict[str, int]] = field(default_factory=dict)
    """Per node, the change of every numeric ``stats`` counter over the window (``*_max``
    counters: their value at the end of the window)."""


@contextlib.contextmanager
def profilers(
    cluster: Cluster, out: Path | None, tag: str, seconds: float, *, idle: bool = False
) -> Iterator[None]:
    procs: list[subprocess.Popen[bytes]] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        for node, proc in cluster.procs.items():
            procs.append(
                subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(proc.pid),
                        "--duration",
                        str(max(1, int(seconds))),
                        "--rate",
                        "200",
                        "--nonblocking",
                        "--threads",
                        *(["--idle"] if idle else []),
                        "--format",
                        "raw",
                        "-o",
                        str(out / f"{tag}-node{node}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    try:
        yield
    finally:
        for p in procs:
            try:
                p.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_load(args: argparse.Namespace, backend: str, groups: int, clients: int) -> Result:
    root = Path(tempfile.mkdtemp(prefix="shardb-bench-", dir=args.dir))
    cluster = Cluster(
        root, log_level=args.log_level, tick_ms=args.tick_ms, election_ticks=args.election_ticks
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        cluster.start()
        trio.run(wait_serving, cluster)
        trio.run(create_groups, cluster, backend, groups)
        trio.run(wait_writable, cluster, groups)
        procs = max(1, min(args.client_procs, clients))
        now = time.time()
        start_at = now + args.warmup + 0.5 * procs
        end_at = start_at + args.seconds
        for i in range(procs):
            spec = {
                "addresses": {str(n): list(a) for n, a in cluster.addresses.items()},
                "groups": groups,
                "client_indexes": list(range(i, clients, procs)),
                "start_at": start_at,
                "end_at": end_at,
            }
            worker = subprocess.Popen(
                [sys.executable, __file__, "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_env(),
            )
            assert worker.stdin is not None
            worker.stdin.write(json.dumps(spec).encode())
            worker.stdin.close()
            workers.append(worker)
        time.sleep(max(0.0, start_at - time.time()))
        before = trio.run(node_stats, cluster)
        cpu_before = {n: cpu_seconds(p.pid) for n, p in cluster.procs.items()}
        tag = f"{backend}-g{groups}-c{clients}"
        with profilers(cluster, args.profile, tag, args.seconds, idle=args.profile_idle):
            time.sleep(max(0.0, end_at - time.time()))
        cpu_after = {n: cpu_seconds(p.pid) for n, p in cluster.procs.items()}
        after = trio.run(node_stats, cluster)
        outputs = []
        for worker in workers:
            assert worker.stdout is not None
            out = worker.stdout.read()
            worker.wait(timeout=60)
            if worker.returncode != 0:
                raise RuntimeError(f"client process failed with {worker.returncode}")
            outputs.append(json.loads(out))
        lead = trio.run(leaders, cluster)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    histogram = _histogram()
    result = Result(
        backend=backend,
        groups=groups,
        clients=clients,
        client_procs=len(workers),
        seconds=args.seconds,
    )
    for o in outputs:
        histogram.decode_and_add(base64.b64decode(o["histogram"]))
        result.writes += o["ok"]
        result.errors += o["errors"]
        result.client_cpu_s += o["cpu_s"]
        for code, n in o["error_codes"].items():
            result.error_codes[code] = result.error_codes.get(code, 0) + n
    result.writes_per_s = result.writes / args.seconds
    result.p50_ms = histogram.get_value_at_percentile(50) / 1000
    result.p99_ms = histogram.get_value_at_percentile(99) / 1000
    result.max_ms = histogram.get_max_value() / 1000
    writes = max(1, result.writes)
    result.fsyncs_per_write = sum(after[n]["fsyncs"] - before[n]["fsyncs"] for n in NODES) / writes
    result.frames_per_write = (
        sum(after[n]["frames_sent"] - before[n]["frames_sent"] for n in NODES) / writes
    )
    result.node_cpu_s = {n: round(cpu_after[n] - cpu_before[n], 2) for n in NODES}
    result.node_cpu_pct = {n: round(100 * result.node_cpu_s[n] / args.seconds, 1) for n in NODES}
    result.leaders = lead
    result.node_stats_delta = _delta(before, after)
    return result


def run_idle(args: argparse.Namespace, backend: str, groups: int) -> Result:
    root = Path(tempfile.mkdtemp(prefix="shardb-bench-", dir=args.dir))
    cluster = Cluster(
        root, log_level=args.log_level, tick_ms=args.tick_ms, election_ticks=args.election_ticks
    )
    try:
        cluster.start()
        trio.run(wait_serving, cluster)
        # In waves: a thousand groups electing at once keep every node's loop busier than
        # real time (the host ticks each awake group, ~9 us a tick), so ticks pile up and
        # nobody converges. A wave elects, takes a write and quiesces before the next.
        for first in range(1, groups + 1, args.wave):
            last = min(groups, first + args.wave - 1)
            trio.run(create_groups, cluster, backend, last, first)
            trio.run(wait_writable, cluster, last, first)
            cluster.check_alive()
            print(f"groups {first}..{last} writable", file=sys.stderr, flush=True)
        # Let every group go quiet (quiescence needs a few idle ticks after the last write).
        time.sleep(args.warmup)
        before = trio.run(node_stats, cluster)
        cpu_before = {n: cpu_seconds(p.pid) for n, p in cluster.procs.items()}
        with profilers(
            cluster, args.profile, f"{backend}-idle{groups}", args.seconds, idle=args.profile_idle
        ):
            time.sleep(args.seconds)
        cpu_after = {n: cpu_seconds(p.pid) for n, p in cluster.procs.items()}
        after = trio.run(node_stats, cluster)
        lead = trio.run(leaders, cluster)
        cluster.check_alive()
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result = Result(backend=backend, groups=groups, clients=0, client_procs=0, seconds=args.seconds)
    result.node_cpu_s = {n: round(cpu_after[n] - cpu_before[n], 2) for n in NODES}
    result.node_cpu_pct = {n: round(100 * result.node_cpu_s[n] / args.seconds, 2) for n in NODES}
    result.fsyncs_per_write = float(sum(after[n]["fsyncs"] - before[n]["fsyncs"] for n in NODES))
    result.frames_per_write = float(
        sum(after[n]["frames_sent"] - before[n]["frames_sent"] for n in NODES)
    )
    result.leaders = lead
    result.node_stats_delta = _delta(before, after)
    return result


def _delta(
    before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]
) -> dict[int, dict[str, int]]:
    # Maxima are not additive: report their value at the end of the window instead.
    return {
        n: {
            k: int(after[n][k]) if k.endswith("_max") else int(after[n][k]) - int(v)
            for k, v in before[n].items()
            if isinstance(v, int) and not isinstance(v, bool)
        }
        for n in NODES
    }


def render(results: list[Result]) -> str:
    lines = [
        "| backend | groups | clients | writes/s | p50 ms | p99 ms | max ms | fsyncs/write "
        "| frames/write | node CPU s (1/2/3) | node CPU ms/write | client CPU s | errors "
        "| term changes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu = "/".join(f"{r.node_cpu_s[n]:.1f}" for n in NODES)
        # Elections (Raft terms, Paxos ballots) during the window, summed over the nodes:
        # 0 means the leaders stayed put.
        terms = sum(r.node_stats_delta.get(n, {}).get("term_changes", 0) for n in NODES)
        if r.clients == 0:
            pct = "/".join(f"{r.node_cpu_pct[n]:.2f}%" for n in NODES)
            lines.append(
                f"| {r.backend} | {r.groups} idle | 0 | - | - | - | - | "
                f"{r.fsyncs_per_write:.0f} total | {r.frames_per_write:.0f} total | "
                f"{cpu} ({pct}) | - | - | - | {terms} |"
            )
            continue
        lines.append(
            f"| {r.backend} | {r.groups} | {r.clients} | {r.writes_per_s:,.0f} | {r.p50_ms:.2f} "
            f"| {r.p99_ms:.2f} | {r.max_ms:.1f} | {r.fsyncs_per_write:.3f} "
            f"| {r.frames_per_write:.3f} | {cpu} "
            f"| {1000 * sum(r.node_cpu_s.values()) / max(1, r.writes):.2f} "
            f"| {r.client_cpu_s:.1f} | {r.errors} | {terms} |"
        )
    return "\n".join(lines)


def main() -> None:
    if "--worker" in sys.argv[1:]:
        worker_main()
        return
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the finally blocks stop the nodes.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("raft", "paxos", "both"), default="raft")
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--client-procs", type=int, default=1, help="client processes")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--suite", action="store_true", help="1x64, 1x1, 64x64 (ignores --groups/--clients)"
    )
    parser.add_argument("--idle-groups", type=int, default=0, help="idle mode: N groups")
    parser.add_argument("--wave", type=int, default=100, help="idle mode: groups per wave")
    parser.add_argument("--tick-ms", type=int, default=10)
    parser.add_argument(
        "--election-ticks", type=int, default=None, help="node election timeout (node default)"
    )
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output directory")
    parser.add_argument(
        "--profile-idle", action="store_true", help="py-spy --idle: wall time, not CPU"
    )
    parser.add_argument("--dir", default=None, help="parent of the temporary data dirs")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and node logs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = ("raft", "paxos") if args.backend == "both" else (args.backend,)
    results: list[Result] = []
    for backend in backends:
        if args.idle_groups:
            results.append(run_idle(args, backend, args.idle_groups))
        elif args.suite:
            for groups, clients in ((1, 64), (1, 1), (64, 64)):
                results.append(run_load(args, backend, groups, clients))
                print(render(results[-1:]), file=sys.stderr, flush=True)
        else:
            results.append(run_load(args, backend, args.groups, args.clients))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(render(results))


if __name__ == "__main__":
    main()
