"""One scenario run on a real cluster: start it, lay out the tables, run the phases with the
fault timeline, sample the nodes, check, stop. Returns one JSON-ready record.

Equal terms for a comparison come from what this module fixes per run: a fresh cluster of
fresh processes and data directories; tables split at the same keys (quantiles of the
workload's own key set, so each range gets an equal share of keys whatever the key format);
every random stream seeded from the scenario seed and the phase index only, so both backends
see the same key and operation sequence; the same client timeouts and connection layout.

Measurement window: node counters, CPU time and commit indices are taken at the start of the
first run phase and at the end of the last, so load phases and cluster start-up are not in
them. A load phase of a YCSB workload inserts its records with multi-row INSERTs of
``load_batch`` rows, each batch within one range (a batch crossing ranges would be a
multi-range write); its rows per second are reported as such.
"""

from __future__ import annotations

import functools
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import trio

from consensus.runtime.client import Client, ClientError, open_client
from shardb.client.aio import open_connection
from shardb.client.errors import Error
from shardb.cluster import LocalCluster, wait_ready
from shardb.workload.history import (
    HistoryRecorder,
    KvWorkload,
    RegisterOp,
    RegisterTable,
    RegisterWorkload,
    check_linearizable,
    record_history,
)
from shardb.workload.outcome import OpResult, Outcome
from shardb.workload.pacing import Metrics, PhaseResult, TrioClock, run_phase
from shardb.workload.scenario import PhaseKind, PhaseSpec, Scenario, ycsb_properties
from shardb.workload.ycsb import (
    CoreWorkload,
    CoreWorkloadConfig,
    UserTable,
    YcsbOp,
    build_key_name,
)

from .environment import load_average
from .executor import (
    DEFAULT_TIMEOUT_S,
    LoadBatch,
    RangeIndex,
    SqlExecutor,
    open_pool,
)
from .faults import ClusterView, FaultRunner
from .procstat import ProcessLedger, per_committed_entry, process_cpu_seconds
from .timeline import BUCKET_S, NS_PER_S, OpTimeline, fault_costs

DEFAULT_REGISTER_KEYS: Final = 5
DEFAULT_KV_KEYS: Final = 1000
SETUP_TIMEOUT_S: Final = 60.0
SPLITS_PER_STATEMENT: Final = 64

Progress = Callable[[str, float, float | None], None]
"""``progress(description, completed, total)``; total None = unknown."""


class BenchError(Exception):
    """The scenario cannot be run as asked (unsupported option, cluster failure, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    root: Path
    """Directory for the cluster's data and logs (created; one per run)."""
    addresses: tuple[str, ...] = ()
    """Gateways of an existing cluster: no cluster is started, and no fault can be run."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    """Per statement, client failover and gateway retries included."""
    load_batch: int = 100
    load_timeout_s: float = 30.0
    """Per load statement: loading is not measured for latency, only for rows/s, and a
    timed-out batch must be retried rather than leave the table short."""
    load_attempts: int = 5
    drain_s: float = 2.0
    sample_interval_s: float = 1.0
    node_args: tuple[str, ...] = ()
    """Extra ``shardb node start`` arguments (e.g. ``--tick-ms``), the same for every run."""
    log: Callable[[str], None] = lambda _: None
    progress: Progress = lambda *_: None


# ---------------------------------------------------------------------------------------------
# Tables and keys


@dataclass(slots=True)
class TableSetup:
    name: str
    create_sql: str
    keys: list[str]
    """The keys the workload will use, for choosing split points and probes."""
    pk: str


def _phase_rng(scenario: Scenario, index: int) -> random.Random:
    # Only the scenario seed and the phase's position: the backend must not change the stream.
    return random.Random(scenario.seed * 1_000_003 + index)


def _ycsb_config(phase: PhaseSpec) -> CoreWorkloadConfig:
    return CoreWorkloadConfig.from_properties(ycsb_properties(phase))


def _props(phase: PhaseSpec) -> dict[str, str]:
    return dict(phase.properties)


def table_for_phase(phase: PhaseSpec) -> TableSetup:
    if phase.workload.startswith("ycsb"):
        config = _ycsb_config(phase)
        table = UserTable.for_config(config)
        first = config.insert_start
        count = config.insert_count if config.insert_count >= 0 else config.record_count
        keys = [
            build_key_name(n, config.zero_padding, config.ordered_inserts)
            for n in range(first, first + max(count, 1))
        ]
        return TableSetup(table.name, table.create_sql(), keys, "ycsb_key")
    props = _props(phase)
    if phase.workload == "register":
        count = int(props.get("keys", DEFAULT_REGISTER_KEYS))
        return TableSetup("register", RegisterTable("register").create_sql(),
                          [f"r{i}" for i in range(count)], "k")  # fmt: skip
    count = int(props.get("keys", DEFAULT_KV_KEYS))
    return TableSetup("kv", RegisterTable("kv").create_sql(), [f"kv{i}" for i in range(count)], "k")


def split_points(keys: Sequence[str], ranges: int) -> list[str]:
    """``ranges - 1`` split keys at the quantiles of ``keys`` (fewer if there are fewer
    distinct keys): each range then holds an equal share of the keys."""
    distinct = sorted(set(keys))
    parts = max(1, min(ranges, len(distinct)))
    return [distinct[i * len(distinct) // parts] for i in range(1, parts)]


def _quote(key: str) -> str:
    return "'" + key.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------
# Sources


class ListSource:
    """A fixed list of operations (load batches)."""

    def __init__(self, ops: Sequence[LoadBatch]) -> None:
        self._ops = list(ops)
        self._next = 0

    def next_operation(self) -> LoadBatch | None:
        if self._next >= len(self._ops):
            return None
        op = self._ops[self._next]
        self._next += 1
        return op

    def complete(self, op: LoadBatch, outcome: Outcome) -> None:
        del op, outcome

    @property
    def taken(self) -> int:
        return self._next


def load_batches(inserts: Sequence[YcsbOp], ranges: RangeIndex, size: int) -> list[LoadBatch]:
    """Group inserts by range, cut into batches of ``size``, and interleave the ranges so that
    concurrent loaders write to different groups."""
    by_range: dict[int, list[YcsbOp]] = {}
    for op in inserts:
        by_range.setdefault(ranges.range_of(op.key), []).append(op)
    per_range = [
        [LoadBatch(rows=tuple(ops[i : i + size])) for i in range(0, len(ops), max(1, size))]
        for _, ops in sorted(by_range.items())
    ]
    out: list[LoadBatch] = []
    for i in range(max((len(b) for b in per_range), default=0)):
        out.extend(batches[i] for batches in per_range if i < len(batches))
    return out


# ---------------------------------------------------------------------------------------------
# Sampling nodes


def node_counters(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """The counters of one ``stats`` reply: the node's, with the transport's ``bytes_sent``
    beside them (None when the node did not answer). A node without transport statistics in
    its reply (an older build) counts 0 bytes rather than failing the run."""
    if not stats or not isinstance(stats.get("node"), dict):
        return None
    transport = stats.get("transport")
    sent = transport.get("bytes_sent", 0) if isinstance(transport, dict) else 0
    return {**stats["node"], "bytes_sent": sent}


class NodeSampler:
    """Counters (``stats``), CPU time (/proc) and commit indices (``status``) of every node."""

    def __init__(
        self,
        admin: Client,
        nodes: Sequence[int],
        pid_of: Callable[[int], int | None],
        *,
        processes: bool,
    ) -> None:
        self.admin = admin
        self.nodes = list(nodes)
        self.pid_of = pid_of
        self.processes = processes
        """The nodes are local processes (CPU from /proc); else counters only."""
        self.ledger = ProcessLedger()
        self._seen_pids: set[int] = set()
        self._baseline_done = False

    async def _call(self, node: int, op: str) -> dict[str, Any] | None:
        try:
            return await self.admin.call(node, op, {}, deadline=trio.current_time() + 1.0)
        except ClientError:
            return None

    async def sample(self) -> None:
        for node in self.nodes:
            pid = self.pid_of(node)
            if pid is None and self.processes:
                continue  # down (killed, not restarted yet): nothing to sample
            stats = await self._call(node, "stats")
            counters = node_counters(stats)
            key = pid if pid is not None else -node
            fresh = self._baseline_done and key not in self._seen_pids
            self._seen_pids.add(key)
            self.ledger.observe(
                node,
                key,
                counters=counters,
                cpu_s=process_cpu_seconds(pid) if pid is not None else None,
                fresh=fresh,
            )
        self._baseline_done = True

    async def commits(self) -> dict[int, int]:
        """Per group, the highest commit index any live node reports."""
        out: dict[int, int] = {}
        for node in self.nodes:
            status = await self._call(node, "status")
            for g in (status or {}).get("groups", []):
                group = int(g["group"])
                out[group] = max(out.get(group, 0), int(g["commit"]))
        return out

    async def run_periodically(self, interval_s: float) -> None:
        while True:
            await trio.sleep(interval_s)
            await self.sample()


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(slots=True)
class _RunState:
    scenario: Scenario
    options: RunOptions
    addresses: list[str]
    cluster: LocalCluster | None
    admin: Client
    clock: TrioClock = field(default_factory=TrioClock)
    tables: dict[str, RangeIndex] = field(default_factory=dict)
    histories: dict[str, HistoryRecorder] = field(default_factory=dict)
    timeline: OpTimeline = field(default_factory=OpTimeline)
    run_start_ns: int | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def _cluster_for(
    scenario: Scenario, options: RunOptions
) -> AsyncIterator[tuple[LocalCluster | None, list[str], dict[int, tuple[str, int]]]]:
    spec = scenario.cluster
    if options.addresses:
        yield None, list(options.addresses), {}
        return
    # nofsync: the same cluster with its consensus logs never fsynced, to measure what
    # durability costs (never a configuration to run data on).
    durability_args = ["--unsafe-no-fsync"] if spec.durability == "nofsync" else []
    cluster = LocalCluster.create(
        options.root,
        spec.nodes,
        backend=spec.backend,
        replication=spec.replicas_per_range,
        allow_faults=True,
        cluster_id=f"bench-{scenario.name}-{spec.backend}-{time.time_ns()}",
        extra_args=[*durability_args, *options.node_args],
    )
    try:
        cluster.start_all()
        await wait_ready(cluster, timeout_s=SETUP_TIMEOUT_S)
        yield cluster, cluster.address_list, cluster.client_addresses
    finally:
        cluster.stop()


async def _node_addresses(addresses: Sequence[str]) -> dict[int, tuple[str, int]]:
    async with open_connection(list(addresses)) as conn:
        meta = await conn.meta()
    out: dict[int, tuple[str, int]] = {}
    for node in meta["nodes"]:
        host, _, port = str(node["address"]).rpartition(":")
        out[int(node["node_id"])] = (host, int(port))
    return out


async def run_scenario_async(scenario: Scenario, options: RunOptions) -> dict[str, Any]:
    """Run ``scenario`` once (no sweep: expand it first) and return its record."""
    if scenario.sweep:
        raise BenchError("expand the scenario's sweep first (Scenario.expand)")
    if options.addresses and scenario.faults:
        raise BenchError("faults need a cluster this command starts (drop --addr)")
    started = time.monotonic()
    record: dict[str, Any] = {
        "scenario": scenario.name,
        "backend": scenario.cluster.backend,
        "seed": scenario.seed,
        "cluster": {
            "nodes": scenario.cluster.nodes,
            "ranges": scenario.cluster.ranges,
            "replication": scenario.cluster.replicas_per_range,
            "durability": scenario.cluster.durability,
        },
        "load_average_before": load_average(),
        "error": None,
    }
    options.root.mkdir(parents=True, exist_ok=True)
    async with _cluster_for(scenario, options) as (cluster, addresses, node_map):
        if not node_map:
            node_map = await _node_addresses(addresses)
        async with open_client(node_map, timeout_s=10.0) as admin:
            state = _RunState(scenario, options, addresses, cluster, admin)
            await _setup_tables(state)
            record["tables"] = {
                name: list(index.range_ids) for name, index in sorted(state.tables.items())
            }
            sampler = NodeSampler(
                admin,
                sorted(node_map),
                lambda n: cluster.procs[n].pid if cluster and cluster.running(n) else None,
                processes=cluster is not None,
            )
            await _run_phases(state, sampler, record)
            record["checks"] = await _run_checks(state)
            if cluster is not None:
                record["crashed"] = _crashed_nodes(cluster)
    record["phases"] = state.phases
    record["load_average_after"] = load_average()
    record["wall_s"] = time.monotonic() - started
    return record


def _crashed_nodes(cluster: LocalCluster) -> dict[str, Any]:
    """Nodes that exited on their own (a fault's kill -9 removes its process from
    ``cluster.procs``, so whatever exited and is still listed died unasked)."""
    out: dict[str, Any] = {}
    for node, proc in sorted(cluster.procs.items()):
        code = proc.poll()
        if code is not None:
            out[str(node)] = {"returncode": code, "log_tail": cluster.log_tail(node, 40)}
    return out


def run_scenario(scenario: Scenario, options: RunOptions) -> dict[str, Any]:
    return trio.run(run_scenario_async, scenario, options)


async def _setup_tables(state: _RunState) -> None:
    ranges = state.scenario.cluster.ranges
    setups: dict[str, TableSetup] = {}
    for phase in state.scenario.phases:
        setup = table_for_phase(phase)
        setups.setdefault(setup.name, setup)
    async with open_connection(state.addresses, timeout=SETUP_TIMEOUT_S) as conn:
        for name, setup in sorted(setups.items()):
            await conn.execute(setup.create_sql)
            points = split_points(setup.keys, ranges)
            # Each cut is two consensus rounds plus a new group's first election, so a
            # many-range layout is split in statements that each fit the client deadline.
            for at in range(0, len(points), SPLITS_PER_STATEMENT):
                chunk = points[at : at + SPLITS_PER_STATEMENT]
                await conn.execute(
                    f"ALTER TABLE {name} SPLIT AT VALUES "
                    + ", ".join(f"({_quote(k)})" for k in chunk)
                )
            meta = await conn.meta()
            mine = sorted(
                (r for r in meta["ranges"] if r["table"] == name),
                key=lambda r: (r["start_key"] is not None, r["start_key"] or ""),
            )
            index = RangeIndex([r["start_key"] for r in mine], [int(r["range_id"]) for r in mine])
            state.tables[name] = index
            # Every range must serve before the clock starts: one linearizable read of a key
            # in each (the client retries while a new group elects its first leader).
            probes: dict[int, str] = {}
            for key in sorted(set(setup.keys)):
                probes.setdefault(index.range_of(key), key)
            for _, key in sorted(probes.items()):
                await conn.execute(f"SELECT * FROM {name} WHERE {setup.pk} = ?", (key,))
            state.options.log(f"table {name}: ranges {list(index.range_ids)}")


async def _ticker(
    state: _RunState, label: str, start_ns: int, total_s: float | None, count: Callable[[], int]
) -> None:
    while True:
        elapsed = (state.clock.now_ns() - start_ns) / NS_PER_S
        if total_s is None:
            state.options.progress(label, float(count()), None)
        else:
            state.options.progress(label, min(elapsed, total_s), total_s)
        await trio.sleep(0.5)


async def _run_phases(state: _RunState, sampler: NodeSampler, record: dict[str, Any]) -> None:
    scenario = state.scenario
    run_phases = [p for p in scenario.phases if p.kind is PhaseKind.RUN]
    end_ns = 0
    fault_runner: FaultRunner | None = None
    commits_before: dict[int, int] = {}
    client_cpu_before = 0.0
    async with trio.open_nursery() as nursery:
        for index, phase in enumerate(scenario.phases):
            if phase.kind is PhaseKind.RUN and state.run_start_ns is None:
                # The measurement window and the fault timeline start here.
                await sampler.sample()
                commits_before = await sampler.commits()
                state.run_start_ns = state.clock.now_ns()
                client_cpu_before = process_cpu_seconds(os.getpid()) or 0.0
                nursery.start_soon(sampler.run_periodically, state.options.sample_interval_s)
                if scenario.faults:
                    if state.cluster is None:
                        raise BenchError("faults need a local cluster")
                    fault_runner = FaultRunner(
                        ClusterView(state.cluster, state.admin),
                        start_ns=state.run_start_ns,
                        now_ns=state.clock.now_ns,
                        log=state.options.log,
                    )
                    nursery.start_soon(fault_runner.run, scenario.faults)
            await _run_one_phase(state, index, phase)
        if state.run_start_ns is not None:
            end_ns = state.clock.now_ns() - state.run_start_ns
        nursery.cancel_scope.cancel()
    faults_record = [] if fault_runner is None else [e.as_dict() for e in fault_runner.events]
    if state.run_start_ns is None:
        return
    # The load generator shares the machine: its CPU is part of the picture.
    client_cpu_s = (process_cpu_seconds(os.getpid()) or 0.0) - client_cpu_before
    await sampler.sample()
    commits_after = await sampler.commits()
    committed = sum(
        max(0, commits_after.get(g, 0) - commits_before.get(g, 0)) for g in commits_after
    )
    counters = sampler.ledger.node_counters()
    record["faults"] = faults_record
    record["fault_costs"] = fault_costs(state.timeline, faults_record, end_ns)
    record["nodes"] = {
        "counters": {str(n): c for n, c in sorted(counters.items())},
        "cpu_s": {
            str(n): round(s, 3) for n, s in sorted(sampler.ledger.node_cpu_seconds().items())
        },
        "incarnations": {str(n): c for n, c in sampler.ledger.incarnations().items()},
        "committed_entries": committed,
        "per_entry": per_committed_entry(counters, committed),
        "client_cpu_s": round(client_cpu_s, 3),
    }
    buckets = state.timeline.buckets(end_ns)
    record["timeline"] = {"bucket_s": BUCKET_S, **buckets}
    merged = Metrics()
    duration = 0.0
    for phase_record, phase in zip(
        [p for p in state.phases if p["kind"] == "run"], run_phases, strict=True
    ):
        merged.merge(Metrics.from_dict(phase_record["metrics"]))
        duration += phase.duration_s or 0.0
    record["run"] = _summarize(merged, duration)


def _summarize(metrics: Metrics, duration_s: float) -> dict[str, Any]:
    summary = metrics.summary()
    ok = sum(int(row["ok"]) for row in summary.values())
    per_label = {
        label: {**row, "throughput_ops_s": int(row["ok"]) / duration_s if duration_s else 0.0}
        for label, row in summary.items()
    }
    return {
        "duration_s": duration_s,
        "ok": ok,
        "fail": sum(int(row["fail"]) for row in summary.values()),
        "unknown": sum(int(row["unknown"]) for row in summary.values()),
        "retries": sum(int(row["retries"]) for row in summary.values()),
        "throughput_ops_s": ok / duration_s if duration_s else 0.0,
        "labels": per_label,
        "metrics": metrics.to_dict(),
    }


async def _run_one_phase(state: _RunState, index: int, phase: PhaseSpec) -> None:
    scenario = state.scenario
    options = state.options
    setup = table_for_phase(phase)
    ranges = state.tables[setup.name]
    rng = _phase_rng(scenario, index)
    label = f"{scenario.cluster.backend} {phase.kind.value} {phase.workload}"
    options.log(f"phase {index}: {label}, {phase.clients} clients")
    start_ns = state.run_start_ns if state.run_start_ns is not None else state.clock.now_ns()
    duration_ns = None if phase.duration_s is None else round(phase.duration_s * NS_PER_S)
    extra: dict[str, Any] = {}
    loading = phase.kind is PhaseKind.LOAD
    timeout_s = max(options.timeout_s, options.load_timeout_s) if loading else options.timeout_s
    async with open_pool(
        state.addresses, phase.clients, consistency=phase.consistency, timeout_s=timeout_s
    ) as pool:
        executor = SqlExecutor(
            pool,
            state.clock,
            timeline=state.timeline if phase.kind is PhaseKind.RUN else None,
            start_ns=start_ns,
            ranges=ranges,
        )
        result: PhaseResult
        async with trio.open_nursery() as nursery:
            phase_start = state.clock.now_ns()
            if phase.workload.startswith("ycsb"):
                config = _ycsb_config(phase)
                workload = CoreWorkload(config, rng=rng)
                table = workload.table
                if phase.kind is PhaseKind.LOAD:
                    inserts = []
                    while (op := workload.next_insert()) is not None:
                        inserts.append(op)
                    batches = load_batches(inserts, ranges, options.load_batch)
                    source = ListSource(batches)
                    nursery.start_soon(
                        _ticker, state, label, phase_start, None, lambda: source.taken
                    )

                    rows_ok = 0

                    async def load(batch: LoadBatch, client: int) -> OpResult:
                        nonlocal rows_ok
                        result = await executor.load_batch(
                            table, batch, client, attempts=options.load_attempts
                        )
                        if result.outcome is Outcome.OK:
                            rows_ok += len(batch.rows)
                        return result

                    result = await run_phase(
                        source=source, execute=load, clock=state.clock, clients=phase.clients
                    )
                    elapsed_s = (result.end_ns - result.start_ns) / NS_PER_S
                    extra = {
                        "rows": len(inserts),
                        "batch_rows": options.load_batch,
                        "rows_per_s": rows_ok / elapsed_s if elapsed_s > 0 else 0.0,
                    }
                else:

                    async def ycsb(op: YcsbOp, client: int) -> OpResult:
                        return await executor.ycsb(table, op, client)

                    nursery.start_soon(
                        _ticker, state, label, phase_start, phase.duration_s, lambda: 0
                    )
                    result = await run_phase(
                        source=workload,
                        execute=ycsb,
                        clock=state.clock,
                        clients=phase.clients,
                        target_ops_s=phase.target,
                        duration_ns=duration_ns,
                        drain_ns=round(options.drain_s * NS_PER_S),
                    )
            else:
                if phase.kind is PhaseKind.LOAD:
                    raise BenchError(f"a load phase needs a ycsb workload, not {phase.workload}")
                props = _props(phase)
                register_table = RegisterTable(setup.name)
                source_r: RegisterWorkload | KvWorkload
                if phase.workload == "register":
                    source_r = RegisterWorkload(
                        keys=len(setup.keys),
                        rng=rng,
                        read_proportion=float(props.get("read_proportion", 0.5)),
                        write_proportion=float(props.get("write_proportion", 0.3)),
                        cas_proportion=float(props.get("cas_proportion", 0.2)),
                        worker=index,
                    )
                else:
                    source_r = KvWorkload(
                        keys=len(setup.keys),
                        rng=rng,
                        distribution=props.get("distribution", "uniform"),
                        worker=index,
                    )
                recorder = state.histories.setdefault(setup.name, HistoryRecorder())

                async def register(op: RegisterOp, client: int) -> OpResult:
                    return await executor.register(register_table, op, client)

                # Phases run one after another, so client numbers may repeat across phases:
                # a cut-off operation is completed as unknown before the next phase starts.
                recorded = record_history(register, recorder, state.clock.now_ns)
                nursery.start_soon(_ticker, state, label, phase_start, phase.duration_s, lambda: 0)
                result = await run_phase(
                    source=source_r,
                    execute=recorded,
                    clock=state.clock,
                    clients=phase.clients,
                    target_ops_s=phase.target,
                    duration_ns=duration_ns,
                    drain_ns=round(options.drain_s * NS_PER_S),
                )
            nursery.cancel_scope.cancel()
    elapsed_s = (result.end_ns - result.start_ns) / NS_PER_S
    summary = result.metrics.summary()
    ok = sum(int(row["ok"]) for row in summary.values())
    state.phases.append(
        {
            "index": index,
            "kind": phase.kind.value,
            "workload": phase.workload,
            "clients": phase.clients,
            "target": phase.target,
            "consistency": phase.consistency,
            "duration_s": phase.duration_s,
            "elapsed_s": elapsed_s,
            "started": result.started,
            "cut_off": result.cut_off,
            "throughput_ops_s": ok / (phase.duration_s or elapsed_s or math.inf),
            "summary": summary,
            "metrics": result.metrics.to_dict(),
            **extra,
        }
    )


async def _run_checks(state: _RunState) -> list[dict[str, Any]]:
    checks = state.scenario.checks
    out: list[dict[str, Any]] = []
    async with open_connection(state.addresses, timeout=SETUP_TIMEOUT_S) as conn:
        for table, expected in checks.row_count:
            try:
                rows = (await conn.execute(f"SELECT count(*) FROM {table}")).rows
                value = rows[0][0] if rows else None
                actual = value if isinstance(value, int) else -1
                out.append(
                    {
                        "name": f"row_count {table}",
                        "passed": actual == expected,
                        "detail": f"{actual} rows, expected {expected}",
                    }
                )
            except Error as exc:
                out.append({"name": f"row_count {table}", "passed": False, "detail": str(exc)})
        if not (checks.linearizable or checks.no_lost_writes):
            return out
        for name, recorder in sorted(state.histories.items()):
            entries = recorder.entries()
            final: dict[str, int | None] | None = None
            detail_extra = ""
            if checks.no_lost_writes:
                final = {}
                try:
                    for key in sorted({e.key for e in entries}):
                        rows = (
                            await conn.execute(f"SELECT v FROM {name} WHERE k = ?", (key,))
                        ).rows
                        value = rows[0][0] if rows else None
                        final[key] = value if isinstance(value, int) else None
                except Error as exc:
                    final = None
                    detail_extra = f"; final reads failed: {exc}"
            report = await trio.to_thread.run_sync(
                functools.partial(check_linearizable, entries, final_values=final)
            )
            counts = {o.value: sum(1 for e in entries if e.outcome is o) for o in Outcome}
            out.append(
                {
                    "name": f"linearizable {name}"
                    + (" + no lost writes" if final is not None else ""),
                    "passed": report.linearizable and not detail_extra,
                    "detail": report.summary().splitlines()[0]
                    + f" (ok {counts['ok']}, fail {counts['fail']}, "
                    f"unknown {counts['unknown']})" + detail_extra,
                    "inconclusive": list(report.inconclusive),
                    "counterexample": "\n".join(f.explanation for f in report.failures)[:4000],
                }
            )
    return out


def with_duration(scenario: Scenario, duration_s: float) -> Scenario:
    """The scenario with its run phases shortened or stretched to ``duration_s`` in total, and
    its fault times scaled by the same factor (so a fault at 1/3 stays at 1/3)."""
    total = scenario.run_duration_s
    if total <= 0:
        return scenario
    factor = duration_s / total
    phases = tuple(
        replace(p, duration_s=(p.duration_s or 0) * factor) if p.kind is PhaseKind.RUN else p
        for p in scenario.phases
    )
    faults = tuple(
        replace(
            f,
            at_s=f.at_s * factor,
            heal_after_s=None if f.heal_after_s is None else f.heal_after_s * factor,
        )
        for f in scenario.faults
    )
    return replace(scenario, phases=phases, faults=faults)


def with_load(
    scenario: Scenario, *, clients: int | None = None, target: float | None = None
) -> Scenario:
    """The scenario with every run phase's clients and/or open-loop target replaced."""
    phases = tuple(
        replace(
            p,
            clients=p.clients if clients is None else clients,
            target=p.target if target is None else target,
        )
        if p.kind is PhaseKind.RUN
        else p
        for p in scenario.phases
    )
    return replace(scenario, phases=phases)
