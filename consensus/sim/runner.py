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

Membership changes (the ``membership`` profile) move the goalposts: spare nodes (ids after
the initial members) start outside the group and may join, members may be removed. The
phases therefore judge against the configuration of the current leader: fault budgets count
its voters, and convergence and the durability checks cover its members only.

``SimConfig.core_factory`` replaces the backend's core class, which is how
``tests/sim/test_broken_variants.py`` shows the checkers catch deliberately broken cores.
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

from consensus.api import (
    CoreConfig,
    CoreFactory,
    Logger,
    MembershipChange,
    Proposed,
    ReadMode,
    Role,
    Status,
)
from consensus.backends import Backend, core_factory
from consensus.sim.checkers import TRAITS, InvariantViolation, SafetyChecker
from consensus.sim.faults import Churn, ChurnMoment, FaultInjector, FaultKind, FaultProfile
from consensus.sim.kv import Op
from consensus.sim.linearizability import Outcome, check_history
from consensus.sim.network import SimNetwork
from consensus.sim.node import CrashPoint, CrashTrigger, SimNode
from consensus.sim.operator import Operator
from consensus.sim.workload import ClientOp, ReadPath, Workload, WorkloadConfig
from consensus.types import ConfState, Index, Message, NodeId, Term

_TICK = 0
_DELIVER = 1
_CALL = 2
_FAULT = 3
_RESTART = 4
_CHURN = 5
_RECONNECT = 6

_DEFAULT_MIN_DELAY_US = 200
_DEFAULT_MAX_DELAY_US = 3_000
_DEFAULT_ELECTION_TIMEOUT_TICKS = 10
_DEFAULT_MAX_MSG_BYTES = 2_048

_ELECTIONS_TIMEOUT_TICKS = (3, 4, 5, 10)
"""Election timeouts the elections profile draws from: a few ticks, against message delays
of up to a tick or more, so that candidates collide and votes split (Raft §5.2)."""
_ELECTIONS_MAX_DELAY_US = (3_000, 12_000, 30_000)
_ELECTIONS_MAX_MSG_BYTES = (1, 128, 2_048)
"""Small pages make a new leader re-replicate an old suffix in several messages, so a
follower can hold an old-term entry without the new leader's no-op (Raft §5.4.2)."""


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
    election_timeout_ticks: int | None = None
    """None: 10, or drawn from the seed (a short one) by the ``elections`` profile."""
    spares: int | None = None
    """Nodes outside the group at the start, for the operator to add. None: drawn from the
    seed (1 or 2) by the ``membership`` profile, else 0."""
    liveness_timeouts: int = 40
    """Bound, in election timeouts, for a write to commit once everything is healed."""
    pre_vote: bool | None = None
    """``CoreConfig.pre_vote`` for every node; None draws it from the seed (mostly on)."""
    check_quorum: bool | None = None
    """``CoreConfig.check_quorum``; None draws it from the seed (mostly on). Without it
    lease reads fall back to ReadIndex and a deposed leader lingers, which exposes read
    paths that CheckQuorum would otherwise mask."""
    core_factory: CoreFactory | None = None
    """Build cores with this instead of the backend's class (a deliberately broken variant
    in tests); ``backend`` still selects the backend's traits."""

    def validate(self) -> None:
        Backend(self.backend)
        if self.nodes < 1 or self.clients < 1 or self.keys < 1:
            raise ValueError("nodes, clients and keys must be positive")
        if self.steps < 0 or self.liveness_timeouts < 0:
            raise ValueError("steps and liveness_timeouts must not be negative")
        if self.spares is not None and self.spares < 0:
            raise ValueError("spares must not be negative")
        if self.election_timeout_ticks is not None and self.election_timeout_ticks < 2:
            raise ValueError("election_timeout_ticks must be at least 2")

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
        # Not (yet) options of the CLI: spelled as the SimConfig fields to set.
        extra = []
        if self.election_timeout_ticks is not None:
            extra.append(f"election_timeout_ticks={self.election_timeout_ticks}")
        if self.spares is not None:
            extra.append(f"spares={self.spares}")
        if self.core_factory is not None:
            factory = self.core_factory
            name = getattr(factory, "__qualname__", type(factory).__qualname__)
            extra.append(f"core_factory={getattr(factory, '__module__', '?')}.{name}")
        if extra:
            parts.append(f"# with SimConfig({', '.join(extra)})")
        return " ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class _ArmedChurn:
    term: Term
    commit: Index
    moment: ChurnMoment
    churn: Churn


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
    election_timeout_ticks: int
    max_msg_bytes: int
    spares: int
    """Further settings in effect (drawn from the seed by some profiles)."""
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
    leaders_elected: int
    """Distinct (term, leader) pairs observed."""
    membership: dict[str, int]
    """Operator activity: changes proposed / refused / committed, transfers requested /
    refused / completed."""
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
    """One run. Implements ``consensus.sim.workload.ClusterView`` for the clients and
    ``consensus.sim.operator.OperatorView`` for the operator."""

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
        node_seeds = [root.getrandbits(64) for _ in range(config.nodes)]
        options_rng = random.Random(root.getrandbits(64))
        profile_rng = random.Random(root.getrandbits(64))
        operator_rng = random.Random(root.getrandbits(64))
        drawn_pre_vote = options_rng.random() < 0.75
        drawn_check_quorum = options_rng.random() < 0.75
        self.pre_vote = drawn_pre_vote if config.pre_vote is None else config.pre_vote
        self.check_quorum = (
            drawn_check_quorum if config.check_quorum is None else config.check_quorum
        )
        faults = config.faults
        self.election_timeout_ticks = _DEFAULT_ELECTION_TIMEOUT_TICKS
        self._calm_max_delay_us = _DEFAULT_MAX_DELAY_US
        self.max_msg_bytes = _DEFAULT_MAX_MSG_BYTES
        if faults.elections:
            self.election_timeout_ticks = profile_rng.choice(_ELECTIONS_TIMEOUT_TICKS)
            self._calm_max_delay_us = profile_rng.choice(_ELECTIONS_MAX_DELAY_US)
            self.max_msg_bytes = profile_rng.choice(_ELECTIONS_MAX_MSG_BYTES)
        if config.election_timeout_ticks is not None:
            self.election_timeout_ticks = config.election_timeout_ticks
        drawn_spares = profile_rng.randint(1, 2) if faults.membership else 0
        self.spares = drawn_spares if config.spares is None else config.spares

        self.traits = TRAITS[config.backend]
        self._members = tuple(NodeId(i) for i in range(1, config.nodes + 1))
        self._ids = tuple(NodeId(i) for i in range(1, config.nodes + self.spares + 1))
        node_seeds += [root.getrandbits(64) for _ in range(self.spares)]
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
        self._leader_of_term: dict[Term, NodeId] = {}
        self._armed_churn: dict[NodeId, _ArmedChurn] = {}
        self._isolated_leader: tuple[NodeId, int] | None = None
        self._isolations = 0
        self._latest_leader_term = Term(-1)
        bootstrap = ConfState(voters=self._members)
        self._latest_conf = bootstrap
        """The configuration of the leader of the highest term seen so far."""

        self.checker = SafetyChecker(self.traits)
        self.network = SimNetwork(
            self._ids,
            net_rng,
            min_delay_us=_DEFAULT_MIN_DELAY_US,
            max_delay_us=self._calm_max_delay_us,
        )
        self.injector = FaultInjector(faults, fault_rng)
        self.workload = Workload(
            self, workload_rng, WorkloadConfig(clients=config.clients, keys=config.keys)
        )
        election_timeout_us = self.election_timeout_ticks * config.tick_us
        self.operator = Operator(
            self,
            operator_rng,
            interval_us=(election_timeout_us, 4 * election_timeout_us),
        )
        factory = (
            config.core_factory if config.core_factory is not None else core_factory(config.backend)
        )
        # A spare joins with an empty configuration and learns the membership from the
        # leader, unless the backend cannot do that yet (BackendTraits).
        spare_conf = ConfState() if self.traits.joins_with_empty_conf else bootstrap
        self.nodes: dict[NodeId, SimNode] = {}
        self._tick_interval: dict[NodeId, int] = {}
        base_config = CoreConfig(
            node_id=self._ids[0],
            election_timeout_ticks=self.election_timeout_ticks,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            # Small limits so that chunked snapshots, paged replication and a full
            # inflight window happen in every run, not only under heavy load.
            max_msg_bytes=self.max_msg_bytes,
            max_inflight_msgs=8,
            max_snapshot_chunk_bytes=256,
        )
        drift = base_config.lease_clock_drift_ratio
        for node_id, node_seed in zip(self._ids, node_seeds, strict=True):
            logger: Logger | None = None
            if trace is not None:
                logger = TraceLogger(trace, lambda: self._now, node_id)
            self.nodes[node_id] = SimNode(
                node_id,
                factory=factory,
                config=dataclasses.replace(base_config, node_id=node_id),
                initial_conf=bootstrap if node_id in self._members else spare_conf,
                rng=random.Random(node_seed),
                checker=self.checker,
                on_complete=self.workload.complete,
                logger=logger,
            )
            interval = config.tick_us
            if faults.skew:
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
        if sim_node.alive:
            self._after_proposal(sim_node)
        return proposed

    def read(self, node: NodeId, request_id: int, key: str, mode: ReadMode, handle: Any) -> None:
        sim_node = self.nodes[node]
        sim_node.read(request_id, key, mode, handle)
        self._after(sim_node, sim_node.drain(self._send))

    def cancel(self, node: NodeId, handle: Any) -> None:
        self.nodes[node].cancel(handle)

    def call_later(self, delay_us: int, fn: Callable[[Any], None], arg: Any) -> None:
        self._push(self._now + delay_us, _CALL, fn, arg)

    # ------------------------------------------------------------------ OperatorView

    def leader_status(self) -> Status | None:
        best: Status | None = None
        for node in self.nodes.values():
            if node.core is None:
                continue
            status = node.core.status()
            if status.role is Role.LEADER and (best is None or status.term > best.term):
                best = status
        return best

    def change_membership(self, node: NodeId, change: MembershipChange) -> Proposed:
        sim_node = self.nodes[node]
        proposed = sim_node.live_core().change_membership(change)
        self._after(sim_node, sim_node.drain(self._send))
        return proposed

    def transfer_leadership(self, node: NodeId, target: NodeId) -> None:
        sim_node = self.nodes[node]
        sim_node.live_core().transfer_leadership(target)
        self._after(sim_node, sim_node.drain(self._send))

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
        elif kind == _CHURN:
            digest.update(b"%d l %d\n" % (time_us, a))
            term, churn = b
            self._churn(self.nodes[a], term, churn)
        elif kind == _RECONNECT:
            digest.update(b"%d n %d\n" % (time_us, a))
            if self._in_fault_phase and self._isolated_leader == (a, b):
                self._isolated_leader = None
                self.network.reconnect(a)
                self.injector.record(FaultKind.RECONNECT)

    def _after(self, node: SimNode, crash_now: bool) -> None:
        """Checks after ``node`` processed its Readys (or crash it at an armed point)."""
        if crash_now:
            # A crash aimed at a vote or an ack comes straight back, still inside the
            # election, where a vote that did not survive the crash could be cast twice
            # (Raft §5.2), or an acknowledged entry be missing from a voter.
            self._crash(node, bounce=node.crash_on is not CrashTrigger.ANY)
            return
        core = node.core
        # Role, term and commit only change together with a Ready (a new leader appends
        # its no-op, a commit hands out entries), so a step without one needs no check.
        if core is not None and node.readies != self._checked_readies.get(node.id):
            self._checked_readies[node.id] = node.readies
            status = core.status()
            self.checker.observe_status(node.id, status, node.disk)
            if status.role is Role.LEADER:
                self._note_leader(node, status)
            armed = self._armed_churn.get(node.id)
            if armed is not None and armed.moment is ChurnMoment.COMMIT:
                term, commit, churn = armed.term, armed.commit, armed.churn
                if status.term != term or status.role is not Role.LEADER:
                    del self._armed_churn[node.id]
                elif status.commit > commit:
                    del self._armed_churn[node.id]
                    self._churn(node, term, churn)

    def _note_leader(self, node: SimNode, status: Status) -> None:
        if status.term >= self._latest_leader_term:
            self._latest_leader_term = status.term
            self._latest_conf = status.conf
        if status.term in self._leader_of_term:
            return
        self._leader_of_term[status.term] = node.id
        self.operator.note_leader(node.id, int(status.term))
        if not self._in_fault_phase:
            return
        election_timeout_us = self.election_timeout_ticks * self.config.tick_us
        churn = self.injector.churn(
            self.config.tick_us, election_timeout_us, self.network.max_delay_us
        )
        if churn is None:
            return
        match churn.moment:
            case ChurnMoment.ELECTED:
                self._churn(node, status.term, churn)
            case ChurnMoment.DELAY:
                self._push(self._now + churn.delay_us, _CHURN, node.id, (status.term, churn))
            case ChurnMoment.PROPOSAL | ChurnMoment.COMMIT:
                self._armed_churn[node.id] = _ArmedChurn(
                    term=status.term, commit=status.commit, moment=churn.moment, churn=churn
                )

    def _after_proposal(self, node: SimNode) -> None:
        armed = self._armed_churn.get(node.id)
        if armed is None or armed.moment is not ChurnMoment.PROPOSAL:
            return
        del self._armed_churn[node.id]
        self._churn(node, armed.term, armed.churn)

    # ------------------------------------------------------------------ faults

    def _churn(self, node: SimNode, term: Term, churn: Churn) -> None:
        """Strike a leader shortly after it took office, if it still leads that term."""
        core = node.core
        if core is None or not self._in_fault_phase:
            return
        status = core.status()
        if status.role is not Role.LEADER or status.term != term:
            return
        if churn.kind is FaultKind.LEADER_ISOLATED:
            previous = self._isolated_leader
            if previous is not None:
                # One isolated leader at a time: the previous one comes back now to compete
                # with the leaders elected meanwhile (Raft Figure 8's turn-taking).
                self.network.reconnect(previous[0])
                self.injector.record(FaultKind.RECONNECT)
            self._isolations += 1
            self._isolated_leader = (node.id, self._isolations)
            self.network.isolate(node.id)
            self._push(self._now + churn.away_us, _RECONNECT, node.id, self._isolations)
        else:
            self._crash(node, down_us=churn.away_us)
        self.injector.record(churn.kind)

    def _voters_down(self) -> int:
        conf = self._latest_conf
        voters = set(conf.voters) | set(conf.voters_outgoing)
        return sum(1 for v in voters if v in self.nodes and not self.nodes[v].alive)

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
            case (
                FaultKind.CRASH
                | FaultKind.CRASH_MID_READY
                | FaultKind.CRASH_ON_VOTE
                | FaultKind.CRASH_ON_ACK
            ):
                live = [n for n in ids if self.nodes[n].alive]
                voters = len(self._latest_conf.voters)
                # Up to a bare majority of the voters down at once: enough to stall
                # progress, which a correct protocol survives, while restarts keep the run
                # moving.
                if not live or self._voters_down() >= voters // 2 + 1:
                    return
                victim = self.nodes[rng.choice(live)]
                if kind is FaultKind.CRASH:
                    self._crash(victim)
                elif kind is FaultKind.CRASH_MID_READY:
                    victim.crash_at = rng.choice((CrashPoint.AFTER_PERSIST, CrashPoint.AFTER_SEND))
                    victim.crash_on = CrashTrigger.VOTE if rng.random() < 0.5 else CrashTrigger.ANY
                else:
                    # Mostly after the send: the vote or ack is out, what it promised may not
                    # be durable; the other points check that nothing leaks before a sync.
                    victim.crash_at = rng.choice(
                        (
                            CrashPoint.BEFORE_SYNC,
                            CrashPoint.AFTER_PERSIST,
                            CrashPoint.AFTER_SEND,
                            CrashPoint.AFTER_SEND,
                        )
                    )
                    victim.crash_on = (
                        CrashTrigger.VOTE if kind is FaultKind.CRASH_ON_VOTE else CrashTrigger.ACK
                    )
            case _:
                return
        self.injector.record(kind)

    def _calm_network(self, *, max_delay_us: int | None = None) -> None:
        self.network.set_conditions(
            min_delay_us=_DEFAULT_MIN_DELAY_US,
            max_delay_us=self._calm_max_delay_us if max_delay_us is None else max_delay_us,
            loss_rate=0.0,
            dup_rate=0.0,
        )

    def _crash(self, node: SimNode, *, bounce: bool = False, down_us: int | None = None) -> None:
        unsynced = node.disk.unsynced_writes
        # Half the crashes lose every unsynced write; the others keep a random prefix, as
        # an OS that flushed part of its page cache would.
        keep = self._rng.randint(0, unsynced) if unsynced and self._rng.random() < 0.5 else 0
        self._lost_writes += node.crash(keep_unsynced=keep)
        self._trace_digest.update(b"%d x %d %d\n" % (self._now, node.id, keep))
        if down_us is None:
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
            # Both cores name their own invariant failures so (raft.invariants, paxos.core).
            kind = "core_invariant" if type(exc).__name__ == "InvariantViolation" else "exception"
            self._violate(
                kind,
                f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno} in {where.name})",
            )
        return SimResult(
            config=self.config,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            steps=self._steps,
            ticks=self._ticks,
            election_timeout_ticks=self.election_timeout_ticks,
            max_msg_bytes=self.max_msg_bytes,
            spares=self.spares,
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
            leaders_elected=len(self._leader_of_term),
            membership={
                **self.operator.stats.as_dict(),
                "changes_committed": self.checker.config_changes_committed,
            },
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
        if self.config.faults.membership:
            self.operator.start()
        self._in_fault_phase = True
        if self.injector.active:
            self._push(
                self._now + self.injector.next_interval_ticks() * self.config.tick_us, _FAULT, None
            )
        while self._steps < self.config.steps and self._heap:
            self._step_once()
        self._in_fault_phase = False

    def _budget_us(self) -> int:
        return self.config.liveness_timeouts * self.election_timeout_ticks * self.config.tick_us

    def _liveness_phase(self) -> int | None:
        self.network.heal()
        # Liveness is owed only under the timing assumption "broadcast time << election
        # timeout" (Raft §5.6), which the elections profile's long delays deliberately break.
        self._calm_network(max_delay_us=_DEFAULT_MAX_DELAY_US)
        for node in self.nodes.values():
            node.crash_at = None
            node.crash_on = CrashTrigger.ANY
            if not node.alive:
                self._restart(node)
        self.workload.stop()
        self.operator.stop()
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

    def _current_members(self) -> list[SimNode]:
        """The nodes of the current leader's configuration (voters and learners)."""
        status = self.leader_status()
        conf = status.conf if status is not None else self._latest_conf
        return [self.nodes[n] for n in conf.all_nodes() if n in self.nodes]

    def _converged(self, probe: ClientOp) -> bool:
        nodes = self._current_members()
        if not nodes:
            return False
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
                states = ", ".join(f"n{n.id} applied {n.applied}" for n in self._current_members())
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
        members = [n for n in self._current_members() if n.alive]
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
                missing = [n.id for n in members if not n.kv.has_applied(op.client, op.seq)]
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
