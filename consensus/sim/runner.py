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
import random
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
from consensus.sim.checkers import TRAITS, SafetyChecker
from consensus.sim.eventloop import (
    FIRST_MODE_EVENT,
    RECONNECT,
    EventLoop,
    qualified_name,
    replay_command,
)
from consensus.sim.eventloop import Violation as Violation  # re-exported: its old home
from consensus.sim.faults import Churn, ChurnMoment, FaultKind, FaultProfile
from consensus.sim.node import SimNode
from consensus.sim.operator import Operator
from consensus.sim.workload import ClientOp, Workload, WorkloadConfig
from consensus.types import ConfState, Index, Message, NodeId, Term

_CHURN = FIRST_MODE_EVENT


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
        defaults = SimConfig()
        options = []
        if self.clients != defaults.clients:
            options.append(f"--clients {self.clients}")
        if self.keys != defaults.keys:
            options.append(f"--keys {self.keys}")
        if self.liveness_timeouts != defaults.liveness_timeouts:
            options.append(f"--liveness-timeouts {self.liveness_timeouts}")
        extra = []
        if self.election_timeout_ticks is not None:
            extra.append(f"election_timeout_ticks={self.election_timeout_ticks}")
        if self.spares is not None:
            extra.append(f"spares={self.spares}")
        if self.core_factory is not None:
            extra.append(f"core_factory={qualified_name(self.core_factory)}")
        return replay_command(
            self,
            config_name="SimConfig",
            lead=[f"--backend {self.backend}"],
            options=options,
            extra=extra,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _ArmedChurn:
    term: Term
    commit: Index
    moment: ChurnMoment
    churn: Churn


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


class Simulation(EventLoop[SimConfig, SimNode, SimResult]):
    """One run. Implements ``consensus.sim.workload.ClusterView`` for the clients and
    ``consensus.sim.operator.OperatorView`` for the operator."""

    def __init__(self, config: SimConfig, *, trace: Callable[[str], None] | None = None) -> None:
        config.validate()
        super().__init__(config, nodes=config.nodes)
        operator_rng = random.Random(self._root.getrandbits(64))
        faults = config.faults
        if config.election_timeout_ticks is not None:
            self.election_timeout_ticks = config.election_timeout_ticks
        drawn_spares = self._profile_rng.randint(1, 2) if faults.membership else 0
        self.spares = drawn_spares if config.spares is None else config.spares

        self.traits = TRAITS[config.backend]
        self._members = tuple(NodeId(i) for i in range(1, config.nodes + 1))
        self._ids = tuple(NodeId(i) for i in range(1, config.nodes + self.spares + 1))
        node_seeds = self._node_seeds + [self._root.getrandbits(64) for _ in range(self.spares)]
        self._checked_readies: dict[NodeId, int] = {}
        self._leader_of_term: dict[Term, NodeId] = {}
        self._armed_churn: dict[NodeId, _ArmedChurn] = {}
        self._isolated_leader: tuple[NodeId, int] | None = None
        self._latest_leader_term = Term(-1)
        bootstrap = ConfState(voters=self._members)
        self._latest_conf = bootstrap
        """The configuration of the leader of the highest term seen so far."""

        self.checker = SafetyChecker(self.traits)
        self.network = self._make_network()
        self.workload = Workload(
            self, self._workload_rng, WorkloadConfig(clients=config.clients, keys=config.keys)
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
        self.nodes = {}
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
            self._draw_tick_interval(node_id, drift)

    # ------------------------------------------------------------------ ClusterView

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

    # ------------------------------------------------------------------ event loop hooks

    def _delivery_line(self, time_us: int, message: Message) -> bytes:
        return b"%d d %d %d %s\n" % (
            time_us,
            message.src,
            message.dst,
            type(message.body).__name__.encode(),
        )

    def _step_mode(self, time_us: int, kind: int, a: Any, b: Any) -> None:
        if kind != _CHURN:
            super()._step_mode(time_us, kind, a, b)
            return
        self._digest.update(b"%d l %d\n" % (time_us, a))
        term, churn = b
        self._churn(self.nodes[a], term, churn)

    def _isolation_ends(self, node_id: NodeId, isolation: int) -> bool:
        if self._isolated_leader != (node_id, isolation):
            return False
        self._isolated_leader = None
        return True

    def _observe(self, node: SimNode) -> None:
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
            self._push(self._now + churn.away_us, RECONNECT, node.id, self._isolations)
        else:
            self._crash(node, down_us=churn.away_us)
        self.injector.record(churn.kind)

    def _voters_down(self) -> int:
        conf = self._latest_conf
        voters = set(conf.voters) | set(conf.voters_outgoing)
        return sum(1 for v in voters if v in self.nodes and not self.nodes[v].alive)

    def _crash_budget_spent(self, live: int) -> bool:
        # A bare majority of the current leader's voters: membership changes move it.
        return self._voters_down() >= len(self._latest_conf.voters) // 2 + 1

    # ------------------------------------------------------------------ phases

    def _start_clients(self) -> None:
        self.workload.start()
        if self.config.faults.membership:
            self.operator.start()

    def _liveness_phase(self) -> int | None:
        self._heal_everything()
        self.workload.stop()
        self.operator.stop()
        start = self._now
        deadline = start + self._budget_us(self.config.liveness_timeouts)
        self.workload.start_probe()
        workload = self.workload
        self._step_until(lambda: workload.probe_succeeded_us is not None, deadline)
        probe_us = workload.probe_succeeded_us
        if probe_us is None:
            self._violate(
                "liveness",
                f"no write committed within {self.config.liveness_timeouts} election timeouts "
                "after healing the network and restarting every node",
            )
            return None
        return probe_us - start

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
        deadline = self._now + self._budget_us(self.config.liveness_timeouts)
        if not self._step_until(lambda: self._converged(probe), deadline):
            states = ", ".join(f"n{n.id} applied {n.applied}" for n in self._current_members())
            self._violate(
                "convergence",
                f"replicas did not converge within {self.config.liveness_timeouts} election "
                f"timeouts after the probe write committed ({states})",
            )
            return False
        return True

    def _result(self) -> SimResult:
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
            faults=self._fault_counts(),
            ops=self.workload.counts(),
            reads=self._read_counts([self.workload.history]),
            network=self._network_counts(),
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
            liveness_us=self._liveness_us,
            linearizability_inconclusive=self._inconclusive,
            violations=tuple(self._violations),
            digest=self._digest.hexdigest(),
        )

    def _end_checks(self, *, converged: bool) -> tuple[str, ...]:
        return self._check_replicas(
            self.workload.history,
            alive=[(n.id, n.kv) for n in self.nodes.values() if n.alive],
            members=[(n.id, n.kv) for n in self._current_members() if n.alive],
            converged=converged,
        )


def run(config: SimConfig, *, trace: Callable[[str], None] | None = None) -> SimResult:
    """Run one seed. ``trace`` receives every core log line (for replaying a failure)."""
    return Simulation(config, trace=trace).run()
