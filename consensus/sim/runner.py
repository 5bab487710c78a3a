"""The deterministic cluster simulation: one seed, one thread, checkers after every step.

A discrete-event loop over a heap ordered by ``(virtual time in µs, sequence number)``.
Everything random — network delays and losses, faults, clock skew, the workload, every
core's election timeouts — comes from generators derived in a fixed order from
``random.Random(seed)``, so a seed and a ``SimConfig`` fix the whole run: the event trace
digest in ``SimResult.digest`` is identical on every replay (FoundationDB's and
TigerBeetle's simulation testing).

A run has three phases:

1. **Faults** for ``config.steps`` events: the workload runs, the fault profile strikes.
2. **Liveness**: heal the network, restart every crashed node, stop the workload, and require
   a new write (the *probe*) to commit within ``liveness_timeouts`` election timeouts.
3. **Convergence**: every node applies the same prefix and holds the same state.

Then the end-of-run checks: acknowledged writes are in every replica, definitely failed
ones in none, nothing is applied twice, and the client history is linearizable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consensus.api import CoreConfig, Logger, Proposed, ReadMode
from consensus.backends import Backend, core_factory
from consensus.sim.checkers import TRAITS, InvariantViolation, SafetyChecker
from consensus.sim.faults import FaultInjector, FaultKind, FaultProfile
from consensus.sim.kv import Op
from consensus.sim.linearizability import Outcome, check_history
from consensus.sim.network import SimNetwork
from consensus.sim.node import CrashPoint, SimNode
from consensus.sim.workload import ClientOp, ReadPath, Workload, WorkloadConfig
from consensus.types import ConfState, Message, NodeId

_TICK = 0
_DELIVER = 1
_CALL = 2
_FAULT = 3
_RESTART = 4

_DEFAULT_MIN_DELAY_US = 200
_DEFAULT_MAX_DELAY_US = 3_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    seed: int = 0
    backend: str = "raft"
    nodes: int = 3
    steps: int = 5_000
    """Events processed in the fault phase."""
    faults: FaultProfile = FaultProfile.ALL
    clients: int = 3
    keys: int = 3
    tick_us: int = 10_000
    election_timeout_ticks: int = 10
    liveness_timeouts: int = 40
    """Bound, in election timeouts, for a write to commit once everything is healed."""
    pre_vote: bool | None = None
    """``CoreConfig.pre_vote`` for every node; None draws it from the seed (mostly on)."""
    check_quorum: bool | None = None
    """``CoreConfig.check_quorum``; None draws it from the seed (mostly on). Without it
    lease reads fall back to ReadIndex and a deposed leader lingers, which exposes read
    paths that CheckQuorum would otherwise mask."""

    def validate(self) -> None:
        Backend(self.backend)
        if self.nodes < 1 or self.clients < 1 or self.keys < 1:
            raise ValueError("nodes, clients and keys must be positive")
        if self.steps < 0 or self.liveness_timeouts < 0:
            raise ValueError("steps and liveness_timeouts must not be negative")

    def replay_command(self) -> str:
        """The one command that replays this run exactly."""
        parts = [
            "shardb sim",
            f"--backend {self.backend}",
            f"--seed {self.seed}",
            f"--faults {self.faults.value}",
            f"--steps {self.steps}",
            f"--nodes {self.nodes}",
        ]
        defaults = SimConfig()
        if self.clients != defaults.clients:
            parts.append(f"--clients {self.clients}")
        if self.keys != defaults.keys:
            parts.append(f"--keys {self.keys}")
        if self.liveness_timeouts != defaults.liveness_timeouts:
            parts.append(f"--liveness-timeouts {self.liveness_timeouts}")
        if self.pre_vote is not None:
            parts.append("--pre-vote" if self.pre_vote else "--no-pre-vote")
        if self.check_quorum is not None:
            parts.append("--check-quorum" if self.check_quorum else "--no-check-quorum")
        return " ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    kind: str
    message: str
    seed: int
    step: int
    time_us: int
    replay: str

    def __str__(self) -> str:
        return (
            f"[{self.kind}] seed {self.seed}, step {self.step}, t={self.time_us}us: "
            f"{self.message}\n  replay: {self.replay}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    """Everything here is a function of the config: two runs compare equal."""

    config: SimConfig
    pre_vote: bool
    check_quorum: bool
    """The protocol options in effect (drawn from the seed unless the config fixed them)."""
    steps: int
    """Events processed in all phases."""
    ticks: int
    """Node ticks delivered (all nodes)."""
    virtual_time_us: int
    faults: dict[str, int]
    ops: dict[str, int]
    """Client operations by outcome (ok / fail / unknown)."""
    reads: dict[str, int]
    """Successful reads by path (log / safe / lease)."""
    network: dict[str, int]
    lost_unsynced_writes: int
    snapshots: dict[str, int]
    """Compactions taken and snapshots installed from a leader, over all nodes."""
    liveness_us: int | None
    """Virtual time from healing to the first committed probe write."""
    linearizability_inconclusive: tuple[str, ...]
    violations: tuple[Violation, ...]
    digest: str
    """Digest of the event trace: equal for equal configs."""

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def ok(self) -> bool:
        return not self.violations


class TraceLogger:
    """Forwards core log events with virtual time and node id to ``sink`` (for replays)."""

    def __init__(self, sink: Callable[[str], None], clock: Callable[[], int], node: NodeId) -> None:
        self._sink = sink
        self._clock = clock
        self._node = node

    def _emit(self, level: str, event: str, kw: dict[str, Any]) -> None:
        fields = " ".join(f"{k}={kw[k]}" for k in sorted(kw))
        self._sink(f"{self._clock():>12}us n{self._node} {level:<7} {event} {fields}")

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, kw)


class Simulation:
    """One run. Implements ``consensus.sim.workload.ClusterView`` for the clients."""

    def __init__(self, config: SimConfig, *, trace: Callable[[str], None] | None = None) -> None:
        config.validate()
        self.config = config
        root = random.Random(config.seed)
        # Derive every generator in a fixed order so each consumer's stream is independent
        # of how much the others draw.
        net_rng = random.Random(root.getrandbits(64))
        fault_rng = random.Random(root.getrandbits(64))
        workload_rng = random.Random(root.getrandbits(64))
        self._rng = random.Random(root.getrandbits(64))
        node_rngs = [random.Random(root.getrandbits(64)) for _ in range(config.nodes)]
        options_rng = random.Random(root.getrandbits(64))
        drawn_pre_vote = options_rng.random() < 0.75
        drawn_check_quorum = options_rng.random() < 0.75
        self.pre_vote = drawn_pre_vote if config.pre_vote is None else config.pre_vote
        self.check_quorum = (
            drawn_check_quorum if config.check_quorum is None else config.check_quorum
        )

        self._ids = tuple(NodeId(i) for i in range(1, config.nodes + 1))
        self._heap: list[tuple[int, int, int, Any, Any]] = []
        self._seq = 0
        self._now = 0
        self._steps = 0
        self._ticks = 0
        self._in_fault_phase = False
        self._violations: list[Violation] = []
        self._trace_digest = hashlib.blake2b(digest_size=16)
        self._lost_writes = 0
        self._checked_readies: dict[NodeId, int] = {}

        self.checker = SafetyChecker(TRAITS[config.backend])
        self.network = SimNetwork(
            self._ids,
            net_rng,
            min_delay_us=_DEFAULT_MIN_DELAY_US,
            max_delay_us=_DEFAULT_MAX_DELAY_US,
        )
        self.injector = FaultInjector(config.faults, fault_rng)
        self.workload = Workload(
            self, workload_rng, WorkloadConfig(clients=config.clients, keys=config.keys)
        )
        factory = core_factory(config.backend)
        conf = ConfState(voters=self._ids)
        self.nodes: dict[NodeId, SimNode] = {}
        self._tick_interval: dict[NodeId, int] = {}
        base_config = CoreConfig(
            node_id=self._ids[0],
            election_timeout_ticks=config.election_timeout_ticks,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            # Small limits so that chunked snapshots, paged replication and a full
            # inflight window happen in every run, not only under heavy load.
            max_msg_bytes=2_048,
            max_inflight_msgs=8,
            max_snapshot_chunk_bytes=256,
        )
        drift = base_config.lease_clock_drift_ratio
        for node_id, node_rng in zip(self._ids, node_rngs, strict=True):
            logger: Logger | None = None
            if trace is not None:
                logger = TraceLogger(trace, lambda: self._now, node_id)
            self.nodes[node_id] = SimNode(
                node_id,
                factory=factory,
                config=dataclasses.replace(base_config, node_id=node_id),
                initial_conf=conf,
                rng=node_rng,
                checker=self.checker,
                on_complete=self.workload.complete,
                logger=logger,
            )
            interval = config.tick_us
            if config.faults.skew:
                # Half the drift bound each way keeps the fastest/slowest ratio within the
                # bound the lease assumes (CoreConfig.lease_clock_drift_ratio).
                bound = drift / 2 * 0.9
                interval = round(config.tick_us * (1 + self._rng.uniform(-bound, bound)))
                self.injector.record(FaultKind.SKEW)
            self._tick_interval[node_id] = interval

    # ------------------------------------------------------------------ ClusterView

    @property
    def now_us(self) -> int:
        return self._now

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return self._ids

    def is_up(self, node: NodeId) -> bool:
        sim_node = self.nodes.get(node)
        return sim_node is not None and sim_node.alive

    def propose(self, node: NodeId, data: bytes, handle: Any) -> Proposed:
        sim_node = self.nodes[node]
        proposed = sim_node.propose(data, handle, self._send)
        self._after(sim_node, sim_node.drain(self._send))
        return proposed

    def read(self, node: NodeId, request_id: int, key: str, mode: ReadMode, handle: Any) -> None:
        sim_node = self.nodes[node]
        sim_node.read(request_id, key, mode, handle)
        self._after(sim_node, sim_node.drain(self._send))

    def cancel(self, node: NodeId, handle: Any) -> None:
        self.nodes[node].cancel(handle)

    def call_later(self, delay_us: int, fn: Callable[[Any], None], arg: Any) -> None:
        self._push(self._now + delay_us, _CALL, fn, arg)

    # ------------------------------------------------------------------ event loop

    def _push(self, time_us: int, kind: int, a: Any, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_us, self._seq, kind, a, b))

    def _send(self, message: Message) -> None:
        for due in self.network.send(message, self._now):
            self._push(due, _DELIVER, message)

    def _schedule_tick(self, node: SimNode, *, first: bool) -> None:
        interval = self._tick_interval[node.id]
        delay = self._rng.randint(1, interval) if first else interval
        self._push(self._now + delay, _TICK, node.id, node.incarnation)

    def _step_once(self) -> None:
        time_us, _, kind, a, b = heapq.heappop(self._heap)
        self._now = time_us
        self._steps += 1
        digest = self._trace_digest
        if kind == _TICK:
            node = self.nodes[a]
            digest.update(b"%d t %d\n" % (time_us, a))
            if node.incarnation != b or not node.alive:
                return
            self._schedule_tick(node, first=False)
            self._ticks += 1
            self._after(node, node.tick(self._send))
        elif kind == _DELIVER:
            message: Message = a
            digest.update(
                b"%d d %d %d %s\n"
                % (time_us, message.src, message.dst, type(message.body).__name__.encode())
            )
            if not self.network.arrive(message):
                return
            target = self.nodes.get(message.dst)
            if target is None or not target.alive:
                return
            self._after(target, target.step(message, self._send))
        elif kind == _CALL:
            digest.update(b"%d c %s\n" % (time_us, a.__name__.encode()))
            a(b)
        elif kind == _FAULT:
            if self._in_fault_phase:
                self._inject_fault()
                self._push(
                    self._now + self.injector.next_interval_ticks() * self.config.tick_us,
                    _FAULT,
                    None,
                )
        elif kind == _RESTART:
            digest.update(b"%d r %d\n" % (time_us, a))
            node = self.nodes[a]
            if not node.alive:
                self._restart(node)

    def _after(self, node: SimNode, crash_now: bool) -> None:
        """Checks after ``node`` processed its Readys (or crash it at an armed point)."""
        if crash_now:
            # A crash aimed at a vote comes straight back, still inside the election, where
            # a vote that did not survive the crash could be cast twice (Raft §5.2).
            self._crash(node, bounce=node.crash_on_vote)
            return
        core = node.core
        # Role, term and commit only change together with a Ready (a new leader appends
        # its no-op, a commit hands out entries), so a step without one needs no check.
        if core is not None and node.readies != self._checked_readies.get(node.id):
            self._checked_readies[node.id] = node.readies
            self.checker.observe_status(node.id, core.status(), node.disk)

    # ------------------------------------------------------------------ faults

    def _inject_fault(self) -> None:
        kind = self.injector.choose()
        rng = self._rng
        ids = list(self._ids)
        net = self.network
        self._trace_digest.update(b"%d f %s\n" % (self._now, kind.value.encode()))
        match kind:
            case FaultKind.PARTITION:
                if len(ids) < 2:
                    return
                rng.shuffle(ids)
                cut = rng.randint(1, len(ids) - 1)
                net.heal()
                net.partition([ids[:cut], ids[cut:]])
            case FaultKind.ONE_WAY:
                if len(ids) < 2:
                    return
                src, dst = rng.sample(ids, 2)
                net.cut_one_way(src, dst)
            case FaultKind.BRIDGE:
                if len(ids) < 3:
                    return
                node, peer = rng.sample(ids, 2)
                net.heal()
                net.bridge(node, peer)
            case FaultKind.ISOLATE:
                net.isolate(rng.choice(ids))
            case FaultKind.HEAL:
                net.heal()
            case FaultKind.LOSSY:
                net.set_conditions(loss_rate=rng.uniform(0.01, 0.3), dup_rate=rng.uniform(0, 0.2))
            case FaultKind.SLOW:
                net.set_conditions(max_delay_us=self.config.tick_us * rng.randint(1, 5))
            case FaultKind.CALM:
                self._calm_network()
            case FaultKind.CRASH | FaultKind.CRASH_MID_READY:
                live = [n for n in ids if self.nodes[n].alive]
                down = len(ids) - len(live)
                # Up to a bare majority down at once: enough to stall progress, which a
                # correct protocol survives, while restarts keep the run moving.
                if not live or down >= len(ids) // 2 + 1:
                    return
                victim = self.nodes[rng.choice(live)]
                if kind is FaultKind.CRASH:
                    self._crash(victim)
                else:
                    victim.crash_at = rng.choice((CrashPoint.AFTER_PERSIST, CrashPoint.AFTER_SEND))
                    victim.crash_on_vote = rng.random() < 0.5
            case _:
                return
        self.injector.record(kind)

    def _calm_network(self) -> None:
        self.network.set_conditions(
            min_delay_us=_DEFAULT_MIN_DELAY_US,
            max_delay_us=_DEFAULT_MAX_DELAY_US,
            loss_rate=0.0,
            dup_rate=0.0,
        )

    def _crash(self, node: SimNode, *, bounce: bool = False) -> None:
        unsynced = node.disk.unsynced_writes
        # Half the crashes lose every unsynced write; the others keep a random prefix, as
        # an OS that flushed part of its page cache would.
        keep = self._rng.randint(0, unsynced) if unsynced and self._rng.random() < 0.5 else 0
        self._lost_writes += node.crash(keep_unsynced=keep)
        self._trace_digest.update(b"%d x %d %d\n" % (self._now, node.id, keep))
        down_us = 1 if bounce else self.injector.down_us(self.config.tick_us)
        self._push(self._now + down_us, _RESTART, node.id)

    def _restart(self, node: SimNode) -> None:
        node.start()
        self.injector.record(FaultKind.RESTART)
        self._schedule_tick(node, first=True)
        self._after(node, node.drain(self._send))

    # ------------------------------------------------------------------ phases

    def run(self) -> SimResult:
        liveness_us: int | None = None
        inconclusive: tuple[str, ...] = ()
        try:
            self._fault_phase()
            liveness_us = self._liveness_phase()
            converged = liveness_us is not None and self._convergence_phase()
            inconclusive = self._end_checks(converged=converged)
        except InvariantViolation as violation:
            self._violate(violation.kind, violation.message)
        except Exception as exc:  # a core crashed: that is a finding, with a replay
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self._violate(
                "exception",
                f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno} in {where.name})",
            )
        return SimResult(
            config=self.config,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            steps=self._steps,
            ticks=self._ticks,
            virtual_time_us=self._now,
            faults=dict(sorted(self.injector.counts.items())),
            ops=self.workload.counts(),
            reads=self._read_counts(),
            network={
                "sent": self.network.stats.sent,
                "delivered": self.network.stats.delivered,
                "duplicated": self.network.stats.duplicated,
                "dropped_loss": self.network.stats.dropped_loss,
                "dropped_partition": self.network.stats.dropped_partition,
                "dropped_overflow": self.network.stats.dropped_overflow,
            },
            lost_unsynced_writes=self._lost_writes,
            snapshots={
                "taken": sum(n.snapshots_taken for n in self.nodes.values()),
                "installed": sum(n.snapshots_installed for n in self.nodes.values()),
            },
            liveness_us=liveness_us,
            linearizability_inconclusive=inconclusive,
            violations=tuple(self._violations),
            digest=self._trace_digest.hexdigest(),
        )

    def _violate(self, kind: str, message: str) -> None:
        self._violations.append(
            Violation(
                kind=kind,
                message=message,
                seed=self.config.seed,
                step=self._steps,
                time_us=self._now,
                replay=self.config.replay_command(),
            )
        )

    def _fault_phase(self) -> None:
        for node in self.nodes.values():
            self._schedule_tick(node, first=True)
        self.workload.start()
        self._in_fault_phase = True
        if self.injector.active:
            self._push(
                self._now + self.injector.next_interval_ticks() * self.config.tick_us, _FAULT, None
            )
        while self._steps < self.config.steps and self._heap:
            self._step_once()
        self._in_fault_phase = False

    def _budget_us(self) -> int:
        return (
            self.config.liveness_timeouts * self.config.election_timeout_ticks * self.config.tick_us
        )

    def _liveness_phase(self) -> int | None:
        self.network.heal()
        self._calm_network()
        for node in self.nodes.values():
            node.crash_at = None
            node.crash_on_vote = False
            if not node.alive:
                self._restart(node)
        self.workload.stop()
        start = self._now
        deadline = start + self._budget_us()
        self.workload.start_probe()
        workload = self.workload
        while workload.probe_succeeded_us is None and self._heap and self._heap[0][0] <= deadline:
            self._step_once()
        if workload.probe_succeeded_us is None:
            self._violate(
                "liveness",
                f"no write committed within {self.config.liveness_timeouts} election timeouts "
                "after healing the network and restarting every node",
            )
            return None
        return workload.probe_succeeded_us - start

    def _converged(self, probe: ClientOp) -> bool:
        nodes = list(self.nodes.values())
        applied = nodes[0].applied
        if any(n.applied != applied or not n.alive for n in nodes):
            return False
        if not all(n.kv.has_applied(probe.client, probe.seq) for n in nodes):
            return False
        image = nodes[0].kv.snapshot()
        return all(n.kv.snapshot() == image for n in nodes[1:])

    def _convergence_phase(self) -> bool:
        probe = self.workload.probe_op
        if probe is None:
            return False
        deadline = self._now + self._budget_us()
        while not self._converged(probe):
            if not self._heap or self._heap[0][0] > deadline:
                states = ", ".join(f"n{n.id} applied {n.applied}" for n in self.nodes.values())
                self._violate(
                    "convergence",
                    f"replicas did not converge within {self.config.liveness_timeouts} election "
                    f"timeouts after the probe write committed ({states})",
                )
                return False
            self._step_once()
        return True

    def _end_checks(self, *, converged: bool) -> tuple[str, ...]:
        nodes = [n for n in self.nodes.values() if n.alive]
        for node in nodes:
            if node.kv.duplicates:
                client, seq = node.kv.duplicates[0]
                self._violate(
                    "duplicate_apply", f"node {node.id} applied client {client} seq {seq} twice"
                )
        for op in self.workload.history:
            if op.path is not ReadPath.LOG:
                continue
            if op.outcome is Outcome.OK and converged:
                missing = [n.id for n in nodes if not n.kv.has_applied(op.client, op.seq)]
                if missing:
                    self._violate(
                        "lost_write",
                        f"acknowledged {op.to_operation().describe()} is missing on nodes "
                        f"{missing}",
                    )
            elif op.outcome is Outcome.FAIL:
                holders = [n.id for n in nodes if n.kv.has_applied(op.client, op.seq)]
                if holders:
                    self._violate(
                        "failed_write_applied",
                        f"{op.to_operation().describe()} was reported failed but nodes "
                        f"{holders} applied it",
                    )
        result = check_history(op.to_operation() for op in self.workload.history)
        for failure in result.failures:
            self._violate("linearizability", failure.counterexample)
        return result.inconclusive

    def _read_counts(self) -> dict[str, int]:
        counts = {path.value: 0 for path in ReadPath}
        for op in self.workload.history:
            if op.op is Op.GET and op.outcome is Outcome.OK:
                counts[op.path.value] += 1
        return counts


def run(config: SimConfig, *, trace: Callable[[str], None] | None = None) -> SimResult:
    """Run one seed. ``trace`` receives every core log line (for replaying a failure)."""
    return Simulation(config, trace=trace).run()
