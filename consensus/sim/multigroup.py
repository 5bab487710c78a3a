"""The deterministic simulation with many consensus groups per node (``MultiGroupHost``).

Each simulated node runs one ``MultiGroupHost`` hosting the same ``groups`` groups (all
Raft, all Multi-Paxos, or mixed: odd group ids Raft, even ones Multi-Paxos), with quiescence
on. Everything else is the single-group simulation's: one seed, the same network / crash /
skew / elections fault profiles, the same discrete-event loop over virtual time (both modes
subclass ``consensus.sim.eventloop.EventLoop``). What changes:

* **Disk**: a node persists each merged ``HostReady`` as ONE record and syncs once when
  ``must_sync`` (``HostDisk``); a crash loses the unsynced records of all groups together,
  and a restart re-adds every group from its ``PersistedState``.
* **Workload**: every group owns its own slice of the key space (``g<id>/k<i>``) and its own
  clients (the ``clients`` are dealt round-robin over the groups); requests go through the
  host API (``propose`` / ``read_index`` on a group). Clients of a group think for a
  per-group time drawn from the seed, so some groups are busy and others idle often enough to
  quiesce *during* the faults, which is what lease reads across quiesce and wake need.
* **Checkers run per group**: a ``SafetyChecker`` per group (election safety, log matching
  for Raft groups, leader completeness, state machine safety), and per group at the end:
  liveness after healing (a probe write, retried promptly, commits in every group),
  convergence, acknowledged writes survive, failed writes are absent, no duplicate applies,
  linearizability per key. The end checks run only once every group has converged at the
  same moment: no client operation outstanding, and every replica has learned and applied
  its leader's commit index, which covers the leader's whole log (else a ``convergence``
  violation, a liveness failure, once the bound passes).
* **Quiescence is checked** after convergence: every group on every node must quiesce within
  ``quiesce_timeouts`` election timeouts, and then, for a window of ``quiet_window_ticks``
  ticks, the network must carry only ``NodeHeartbeat`` messages and no host may tick a group
  core (the "quiet" check, reported in ``MultiSimResult.quiesce``).

Not (yet) in this mode: the ``membership`` operator and the ``elections`` profile's churn
of fresh leaders (its short timeouts, slow links and crash-on-vote/ack arming do apply).
``MultiSimConfig.host_factory`` replaces the host class, which is how
``tests/sim/test_multigroup.py`` shows the checkers catch a host whose LEASE->SAFE downgrade
after a wake is patched out.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consensus.api import CoreConfig, Proposed, ReadMode, Role
from consensus.backends import Backend
from consensus.host import HostConfig, NodeHeartbeat
from consensus.sim.checkers import TRAITS, SafetyChecker
from consensus.sim.eventloop import (
    RECONNECT,
    EventLoop,
    Violation,
    qualified_name,
    replay_command,
)
from consensus.sim.faults import FaultKind, FaultProfile
from consensus.sim.hostnode import GroupSpec, HostFactory, HostNode, default_host_factory
from consensus.sim.linearizability import Outcome
from consensus.sim.workload import Workload, WorkloadConfig
from consensus.types import NO_NODE, ConfState, GroupId, Index, Message, NodeId, Term

_THINK_MAX_US = (20_000, 150_000, 600_000, 2_000_000)
"""Per-group upper bound of a client's pause between operations: busy groups never idle,
slow ones quiesce between operations (a leader needs ``heartbeat_interval + 1`` idle ticks)."""


class SimBackend(enum.Enum):
    """Which backend the groups run."""

    RAFT = "raft"
    PAXOS = "paxos"
    MIXED = "mixed"
    """Odd group ids Raft, even ones Multi-Paxos."""

    def for_group(self, group_id: int) -> Backend:
        if self is SimBackend.MIXED:
            return Backend.RAFT if group_id % 2 == 1 else Backend.PAXOS
        return Backend(self.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiSimConfig:
    seed: int = 0
    groups: int = 8
    backend: str = "mixed"
    """``raft``, ``paxos`` or ``mixed``."""
    nodes: int = 3
    steps: int = 5_000
    faults: FaultProfile = FaultProfile.ALL
    clients: int | None = None
    """Clients over all groups, dealt round-robin; None: three per group (two clients of a
    group on different nodes are what turns a stale read into a visible anomaly)."""
    keys: int = 1
    """Keys per group."""
    tick_us: int = 10_000
    liveness_timeouts: int = 40
    quiesce_timeouts: int = 20
    """Bound, in election timeouts, for every group to quiesce after convergence."""
    quiet_window_ticks: int = 60
    """How long the quiet check watches the network once everything quiesced."""
    pre_vote: bool | None = None
    check_quorum: bool | None = None
    host_factory: HostFactory | None = None
    """Build hosts with this instead of ``MultiGroupHost`` (a broken variant in tests)."""

    def validate(self) -> None:
        SimBackend(self.backend)
        if self.groups < 1 or self.nodes < 1 or self.keys < 1:
            raise ValueError("groups, nodes and keys must be positive")
        if self.clients is not None and self.clients < 0:
            raise ValueError("clients must not be negative")
        if self.steps < 0 or self.liveness_timeouts < 0 or self.quiesce_timeouts < 0:
            raise ValueError("steps and timeouts must not be negative")
        if self.faults.membership and self.faults is not FaultProfile.ALL:
            raise ValueError("the membership profile is not supported with many groups yet")

    def replay_command(self) -> str:
        defaults = MultiSimConfig()
        options = []
        if self.clients is not None:
            options.append(f"--clients {self.clients}")
        if self.keys != defaults.keys:
            options.append(f"--keys {self.keys}")
        if self.liveness_timeouts != defaults.liveness_timeouts:
            options.append(f"--liveness-timeouts {self.liveness_timeouts}")
        extra = []
        if self.quiesce_timeouts != defaults.quiesce_timeouts:
            extra.append(f"quiesce_timeouts={self.quiesce_timeouts}")
        if self.quiet_window_ticks != defaults.quiet_window_ticks:
            extra.append(f"quiet_window_ticks={self.quiet_window_ticks}")
        if self.host_factory is not None:
            extra.append(f"host_factory={qualified_name(self.host_factory)}")
        return replay_command(
            self,
            config_name="MultiSimConfig",
            lead=[f"--groups {self.groups}", f"--backend {self.backend}"],
            options=options,
            extra=extra,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiSimResult:
    """Field names follow ``SimResult`` where they mean the same (summed over groups)."""

    config: MultiSimConfig
    pre_vote: bool
    check_quorum: bool
    election_timeout_ticks: int
    steps: int
    ticks: int
    """Host ticks delivered (all nodes)."""
    virtual_time_us: int
    faults: dict[str, int]
    ops: dict[str, int]
    reads: dict[str, int]
    network: dict[str, int]
    messages: dict[str, int]
    """Messages sent, by body type (``NodeHeartbeat``, ``Quiesce``, ``AppendEntries``...)."""
    disk: dict[str, int]
    """Host records written and syncs, over all nodes: one per HostReady at most."""
    lost_unsynced_writes: int
    leaders_elected: int
    """Distinct (group, term) leaderships observed."""
    snapshots: dict[str, int]
    liveness_us: int | None
    """Virtual time from healing until the probe write committed in the LAST group."""
    quiesce: dict[str, int | None]
    """``quiesce_us``: from convergence until every group quiesced on every node (None if
    never); ``quiet_window_messages`` / ``quiet_window_other``: messages sent in the quiet
    window, and those that were not ``NodeHeartbeat``; ``quiet_window_group_ticks``: group
    core ticks in the window; ``group_ticks`` / ``host_ticks_x_groups``: core ticks done vs.
    what ticking every group on every host tick would have cost; ``lease_reads_downgraded``
    is not observable from outside the host and so not reported."""
    linearizability_inconclusive: tuple[str, ...]
    violations: tuple[Violation, ...]
    digest: str

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def ok(self) -> bool:
        return not self.violations


class _GroupView:
    """``consensus.sim.workload.ClusterView`` for one group's clients."""

    def __init__(self, sim: MultiSimulation, group_id: GroupId) -> None:
        self._sim = sim
        self._gid = group_id

    @property
    def now_us(self) -> int:
        return self._sim.now_us

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return self._sim.node_ids

    def is_up(self, node: NodeId) -> bool:
        return self._sim.nodes[node].alive

    def propose(self, node: NodeId, data: bytes, handle: Any) -> Proposed:
        return self._sim.propose(node, self._gid, data, handle)

    def read(self, node: NodeId, request_id: int, key: str, mode: ReadMode, handle: Any) -> None:
        self._sim.read(node, self._gid, request_id, key, mode, handle)

    def cancel(self, node: NodeId, handle: Any) -> None:
        self._sim.nodes[node].cancel(self._gid, handle)

    def call_later(self, delay_us: int, fn: Callable[[Any], None], arg: Any) -> None:
        self._sim.call_later(delay_us, fn, arg)


class MultiSimulation(EventLoop[MultiSimConfig, HostNode, MultiSimResult]):
    def __init__(self, config: MultiSimConfig) -> None:
        config.validate()
        super().__init__(config, nodes=config.nodes)
        self._ids = tuple(NodeId(i) for i in range(1, config.nodes + 1))
        self._group_ids = tuple(GroupId(g) for g in range(1, config.groups + 1))
        sim_backend = SimBackend(config.backend)
        self.backends = {gid: sim_backend.for_group(gid) for gid in self._group_ids}
        self._leaderships: set[tuple[GroupId, Term]] = set()
        self._messages: dict[str, int] = {}
        self._quiet_watch: dict[str, int] | None = None
        self._quiesce: dict[str, int | None] = {}

        self.checkers = {
            gid: SafetyChecker(TRAITS[self.backends[gid].value]) for gid in self._group_ids
        }
        self.network = self._make_network(max_in_flight=10_000 * config.groups)
        workload_rng = self._workload_rng
        total_clients = 3 * config.groups if config.clients is None else config.clients
        self.workloads: dict[GroupId, Workload] = {}
        for index, gid in enumerate(self._group_ids):
            clients = total_clients // config.groups + (
                1 if index < total_clients % config.groups else 0
            )
            think_max = workload_rng.choice(_THINK_MAX_US)
            self.workloads[gid] = Workload(
                _GroupView(self, gid),
                random.Random(workload_rng.getrandbits(64)),
                WorkloadConfig(
                    clients=clients,
                    keys=config.keys,
                    key_prefix=f"g{gid}/k",
                    think_us=(1, think_max),
                ),
            )
        self.host_config_base = HostConfig(node_id=self._ids[0], quiesce=True)
        base_core = CoreConfig(
            node_id=self._ids[0],
            election_timeout_ticks=self.election_timeout_ticks,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            max_msg_bytes=self.max_msg_bytes,
            max_inflight_msgs=8,
            max_snapshot_chunk_bytes=256,
        )
        bootstrap = ConfState(voters=self._ids)
        factory = config.host_factory if config.host_factory is not None else default_host_factory
        self.nodes = {}
        drift = base_core.lease_clock_drift_ratio
        for node_id, node_seed in zip(self._ids, self._node_seeds, strict=True):
            specs = [
                GroupSpec(
                    group_id=gid,
                    backend=self.backends[gid],
                    core_config=dataclasses.replace(base_core, node_id=node_id, group_id=gid),
                    checker=self.checkers[gid],
                    on_complete=self.workloads[gid].complete,
                )
                for gid in self._group_ids
            ]
            self.nodes[node_id] = HostNode(
                node_id,
                groups=specs,
                host_config=dataclasses.replace(self.host_config_base, node_id=node_id),
                initial_conf=bootstrap,
                rng=random.Random(node_seed),
                host_factory=factory,
            )
            self._draw_tick_interval(node_id, drift)

    # ------------------------------------------------------------------ for the clients

    def propose(self, node: NodeId, gid: GroupId, data: bytes, handle: Any) -> Proposed:
        host_node = self.nodes[node]
        proposed = host_node.propose(gid, data, handle)
        self._after(host_node, host_node.drain(self._send))
        return proposed

    def read(
        self, node: NodeId, gid: GroupId, request_id: int, key: str, mode: ReadMode, handle: Any
    ) -> None:
        host_node = self.nodes[node]
        host_node.read(gid, request_id, key, mode, handle)
        self._after(host_node, host_node.drain(self._send))

    # ------------------------------------------------------------------ event loop hooks

    def _send(self, message: Message) -> None:
        kind = type(message.body).__name__
        self._messages[kind] = self._messages.get(kind, 0) + 1
        if self._quiet_watch is not None:
            self._quiet_watch[kind] = self._quiet_watch.get(kind, 0) + 1
        super()._send(message)

    def _delivery_line(self, time_us: int, message: Message) -> bytes:
        return b"%d d %d %d %d %s\n" % (
            time_us,
            message.src,
            message.dst,
            message.group_id,
            type(message.body).__name__.encode(),
        )

    def _observe(self, node: HostNode) -> None:
        """Per-group checks of the groups whose Readys ``node`` processed."""
        host = node.host
        if host is None or not node.touched:
            return
        touched = sorted(node.touched)
        node.touched.clear()
        for gid in touched:
            status = host.status(gid)
            self.checkers[gid].observe_status(node.id, status, node.disk.group(gid))
            if status.role is Role.LEADER:
                self._leaderships.add((gid, status.term))

    # ------------------------------------------------------------------ faults

    def _fault_instead(self, kind: FaultKind) -> bool:
        rate = 0.5 if kind is FaultKind.PARTITION else 0.7
        return self._rng.random() < rate and self._isolate_quiesced_leader()

    def _crash_budget_spent(self, live: int) -> bool:
        return len(self._ids) - live >= len(self._ids) // 2 + 1

    def _isolate_quiesced_leader(self) -> bool:
        """Cut off the node that leads the most quiesced groups until its peers have
        suspected it (``node_dead_ticks``) and elected new leaders, then bring it back; True
        if some node leads a quiesced group."""
        best: tuple[int, NodeId] | None = None
        for node in self.nodes.values():
            host = node.host
            if host is None:
                continue
            led = sum(
                1
                for gid in self._group_ids
                if host.is_quiesced(gid) and host.status(gid).role is Role.LEADER
            )
            if led and (best is None or led > best[0]):
                best = (led, node.id)
        if best is None:
            return False
        node_id = best[1]
        self._isolations += 1
        self.network.isolate(node_id)
        dead_ticks = self.host_config_base.node_dead_ticks
        away_ticks = dead_ticks + self._rng.randint(2, 6) * self.election_timeout_ticks
        self._push(
            self._now + away_ticks * self.config.tick_us, RECONNECT, node_id, self._isolations
        )
        self.injector.record(FaultKind.QUIESCED_LEADER_ISOLATED)
        return True

    # ------------------------------------------------------------------ phases

    def _start_clients(self) -> None:
        for gid in self._group_ids:
            self.workloads[gid].start()

    def _liveness_phase(self) -> int | None:
        self._heal_everything()
        for gid in self._group_ids:
            self.workloads[gid].stop()
        start = self._now
        deadline = start + self._budget_us(self.config.liveness_timeouts)
        for gid in self._group_ids:
            self.workloads[gid].start_probe()
        self._step_until(self._probes_done, deadline)
        stuck = [gid for gid in self._group_ids if self.workloads[gid].probe_succeeded_us is None]
        if stuck:
            self._violate(
                "liveness",
                f"no write committed in groups {stuck} within {self.config.liveness_timeouts} "
                "election timeouts after healing the network and restarting every node",
            )
            return None
        done = [self.workloads[gid].probe_succeeded_us for gid in self._group_ids]
        return max(t for t in done if t is not None) - start

    def _probes_done(self) -> bool:
        return all(w.probe_succeeded_us is not None for w in self.workloads.values())

    def _leader_commit(self, gid: GroupId) -> Index | None:
        """The commit index of ``gid``'s leader, if every live node names the same live
        leader and that leader has committed its whole log (no write left over from the
        fault phase still on its way to a quorum); else None."""
        statuses = []
        for node in self.nodes.values():
            host = node.host
            if host is None:
                return None
            statuses.append(host.status(gid))
        leader = statuses[0].leader
        if leader == NO_NODE or any(st.leader != leader for st in statuses):
            return None
        status = next((st for st in statuses if st.node_id == leader), None)
        if status is None or status.role is not Role.LEADER:
            return None
        if status.commit != status.last_index:
            return None
        return status.commit

    def _converged(self, gid: GroupId) -> bool:
        """Every node is up, the group's clients have nothing outstanding (so nothing new
        can be proposed or acknowledged), and every replica has learned and applied the
        leader's commit index, which covers the leader's whole log, with the same state."""
        probe = self.workloads[gid].probe_op
        if probe is None or self.workloads[gid].outstanding:
            return False
        commit = self._leader_commit(gid)
        if commit is None:
            return False
        for node in self.nodes.values():
            host = node.host
            if host is None or host.status(gid).commit != commit:
                return False
        replicas = [n.replicas[gid] for n in self.nodes.values()]
        if any(r.applied != commit for r in replicas):
            return False
        if not all(r.kv.has_applied(probe.client, probe.seq) for r in replicas):
            return False
        image = replicas[0].kv.snapshot()
        return all(r.kv.snapshot() == image for r in replicas[1:])

    def _unconverged(self) -> list[GroupId]:
        return [gid for gid in self._group_ids if not self._converged(gid)]

    def _convergence_phase(self) -> bool:
        """Drive the simulation until every group has converged AT ONCE, so that the end
        checks, which run right after, see each group in a converged state: a group found
        converged earlier may since have committed a leftover write on its leader only.
        Not converging within the bound is a liveness failure of its own."""
        deadline = self._now + self._budget_us(self.config.liveness_timeouts)
        if not self._step_until(lambda: not self._unconverged(), deadline):
            self._violate(
                "convergence",
                f"groups {self._unconverged()} did not converge within "
                f"{self.config.liveness_timeouts} election timeouts after their probe writes "
                "committed (every replica applying the leader's whole committed log)",
            )
            return False
        return True

    def _all_quiesced(self) -> bool:
        for node in self.nodes.values():
            host = node.host
            if host is None:
                return False
            for gid in self._group_ids:
                if not host.is_quiesced(gid):
                    return False
        return True

    def _final_phase(self, *, converged: bool) -> None:
        if converged:
            self._quiesce = self._quiet_phase()

    def _quiet_phase(self) -> dict[str, int | None]:
        """Every group quiesces within the bound, then only NodeHeartbeats travel."""
        start = self._now
        deadline = start + self._budget_us(self.config.quiesce_timeouts)
        if not self._step_until(self._all_quiesced, deadline):
            awake = {
                int(node.id): [int(g) for g in self._group_ids if not self._quiesced(node, g)]
                for node in self.nodes.values()
            }
            self._violate(
                "quiesce",
                f"groups still awake {self.config.quiesce_timeouts} election timeouts "
                f"after convergence (node: groups): {awake}",
            )
            return {"quiesce_us": None}
        quiesce_us = self._now - start
        ticks_before = self._group_ticks()
        watch: dict[str, int] = {}
        self._quiet_watch = watch
        window_end = self._now + self.config.quiet_window_ticks * self.config.tick_us
        self._step_until(lambda: False, window_end)
        self._quiet_watch = None
        group_ticks = self._group_ticks() - ticks_before
        heartbeat = NodeHeartbeat.__name__
        other = {kind: n for kind, n in sorted(watch.items()) if kind != heartbeat}
        if other or group_ticks or not self._all_quiesced():
            self._violate(
                "quiet",
                f"after every group quiesced, {self.config.quiet_window_ticks} ticks carried "
                f"{other} besides NodeHeartbeats and {group_ticks} group core ticks",
            )
        return {
            "quiesce_us": quiesce_us,
            "quiet_window_messages": sum(watch.values()),
            "quiet_window_other": sum(other.values()),
            "quiet_window_group_ticks": group_ticks,
        }

    def _result(self) -> MultiSimResult:
        group_ticks = 0
        host_ticks = 0
        for node in self.nodes.values():
            if node.host is not None:
                stats = node.host.statistics()
                group_ticks += stats.group_ticks
                host_ticks += stats.ticks
        quiesce = self._quiesce
        quiesce.setdefault("quiesce_us", None)
        quiesce["group_ticks"] = group_ticks
        quiesce["host_ticks_x_groups"] = host_ticks * self.config.groups
        quiesce["quiesce_messages"] = self._messages.get("Quiesce", 0)
        quiesce["unquiesce_messages"] = self._messages.get("Unquiesce", 0)
        return MultiSimResult(
            config=self.config,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            election_timeout_ticks=self.election_timeout_ticks,
            steps=self._steps,
            ticks=self._ticks,
            virtual_time_us=self._now,
            faults=self._fault_counts(),
            ops=self._op_counts(),
            reads=self._read_counts(w.history for w in self.workloads.values()),
            network=self._network_counts(),
            messages=dict(sorted(self._messages.items())),
            disk={
                "writes": sum(n.disk.stats.writes for n in self.nodes.values()),
                "syncs": sum(n.disk.stats.syncs for n in self.nodes.values()),
            },
            lost_unsynced_writes=self._lost_writes,
            leaders_elected=len(self._leaderships),
            snapshots={
                "taken": sum(n.snapshots_taken for n in self.nodes.values()),
                "installed": sum(n.snapshots_installed for n in self.nodes.values()),
            },
            liveness_us=self._liveness_us,
            quiesce=quiesce,
            linearizability_inconclusive=self._inconclusive,
            violations=tuple(self._violations),
            digest=self._digest.hexdigest(),
        )

    def _quiesced(self, node: HostNode, gid: GroupId) -> bool:
        return node.host is not None and node.host.is_quiesced(gid)

    def _group_ticks(self) -> int:
        return sum(n.host.statistics().group_ticks for n in self.nodes.values() if n.host)

    def _end_checks(self, *, converged: bool) -> tuple[str, ...]:
        inconclusive: list[str] = []
        nodes = [n for n in self.nodes.values() if n.alive]
        for gid in self._group_ids:
            replicas = [(n.id, n.replicas[gid].kv) for n in nodes]
            inconclusive.extend(
                self._check_replicas(
                    self.workloads[gid].history,
                    alive=replicas,
                    members=replicas,
                    converged=converged,
                    prefix=f"group {gid}: ",
                )
            )
        return tuple(inconclusive)

    def _op_counts(self) -> dict[str, int]:
        counts = {outcome.value: 0 for outcome in Outcome}
        for workload in self.workloads.values():
            for key, value in workload.counts().items():
                counts[key] += value
        return counts


def run_multi(config: MultiSimConfig) -> MultiSimResult:
    """Run one seed with ``config.groups`` groups per node."""
    return MultiSimulation(config).run()
