"""The deterministic simulation with many consensus groups per node (``MultiGroupHost``).

Each simulated node runs one ``MultiGroupHost`` hosting the same ``groups`` groups (all
Raft, all Multi-Paxos, or mixed: odd group ids Raft, even ones Multi-Paxos), with quiescence
on. Everything else is the single-group simulation's (``consensus.sim.runner``): one seed,
the same network / crash / skew / elections fault profiles, a discrete-event loop over
virtual time. What changes:

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
  liveness after healing (a probe write commits in every group), convergence, acknowledged
  writes survive, failed writes are absent, no duplicate applies, linearizability per key.
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
import hashlib
import heapq
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consensus.api import CoreConfig, Proposed, ReadMode, Role
from consensus.backends import Backend
from consensus.host import HostConfig, NodeHeartbeat
from consensus.sim.checkers import TRAITS, InvariantViolation, SafetyChecker
from consensus.sim.faults import FaultInjector, FaultKind, FaultProfile
from consensus.sim.hostnode import GroupSpec, HostFactory, HostNode, default_host_factory
from consensus.sim.kv import Op
from consensus.sim.linearizability import Outcome, check_history
from consensus.sim.network import SimNetwork
from consensus.sim.node import CrashPoint, CrashTrigger
from consensus.sim.runner import Violation
from consensus.sim.workload import ReadPath, Workload, WorkloadConfig
from consensus.types import ConfState, GroupId, Message, NodeId, Term

_TICK = 0
_DELIVER = 1
_CALL = 2
_FAULT = 3
_RESTART = 4
_RECONNECT = 5

_MIN_DELAY_US = 200
_MAX_DELAY_US = 3_000
_ELECTION_TIMEOUT_TICKS = 10
_MAX_MSG_BYTES = 2_048
_ELECTIONS_TIMEOUT_TICKS = (3, 4, 5, 10)
_ELECTIONS_MAX_DELAY_US = (3_000, 12_000, 30_000)
_ELECTIONS_MAX_MSG_BYTES = (1, 128, 2_048)
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
        parts = [
            "shardb sim",
            f"--groups {self.groups}",
            f"--backend {self.backend}",
            f"--seed {self.seed}",
            f"--faults {self.faults.value}",
            f"--steps {self.steps}",
            f"--nodes {self.nodes}",
        ]
        if self.clients is not None:
            parts.append(f"--clients {self.clients}")
        if self.keys != MultiSimConfig().keys:
            parts.append(f"--keys {self.keys}")
        if self.liveness_timeouts != MultiSimConfig().liveness_timeouts:
            parts.append(f"--liveness-timeouts {self.liveness_timeouts}")
        if self.pre_vote is not None:
            parts.append("--pre-vote" if self.pre_vote else "--no-pre-vote")
        if self.check_quorum is not None:
            parts.append("--check-quorum" if self.check_quorum else "--no-check-quorum")
        extra = []
        if self.quiesce_timeouts != MultiSimConfig().quiesce_timeouts:
            extra.append(f"quiesce_timeouts={self.quiesce_timeouts}")
        if self.quiet_window_ticks != MultiSimConfig().quiet_window_ticks:
            extra.append(f"quiet_window_ticks={self.quiet_window_ticks}")
        if self.host_factory is not None:
            factory = self.host_factory
            name = getattr(factory, "__qualname__", type(factory).__qualname__)
            extra.append(f"host_factory={getattr(factory, '__module__', '?')}.{name}")
        if extra:
            parts.append(f"# with MultiSimConfig({', '.join(extra)})")
        return " ".join(parts)


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


class MultiSimulation:
    def __init__(self, config: MultiSimConfig) -> None:
        config.validate()
        self.config = config
        root = random.Random(config.seed)
        net_rng = random.Random(root.getrandbits(64))
        fault_rng = random.Random(root.getrandbits(64))
        workload_rng = random.Random(root.getrandbits(64))
        self._rng = random.Random(root.getrandbits(64))
        node_seeds = [root.getrandbits(64) for _ in range(config.nodes)]
        options_rng = random.Random(root.getrandbits(64))
        profile_rng = random.Random(root.getrandbits(64))
        drawn_pre_vote = options_rng.random() < 0.75
        drawn_check_quorum = options_rng.random() < 0.75
        self.pre_vote = drawn_pre_vote if config.pre_vote is None else config.pre_vote
        self.check_quorum = (
            drawn_check_quorum if config.check_quorum is None else config.check_quorum
        )
        faults = config.faults
        self.election_timeout_ticks = _ELECTION_TIMEOUT_TICKS
        self._calm_max_delay_us = _MAX_DELAY_US
        max_msg_bytes = _MAX_MSG_BYTES
        if faults.elections:
            self.election_timeout_ticks = profile_rng.choice(_ELECTIONS_TIMEOUT_TICKS)
            self._calm_max_delay_us = profile_rng.choice(_ELECTIONS_MAX_DELAY_US)
            max_msg_bytes = profile_rng.choice(_ELECTIONS_MAX_MSG_BYTES)

        self._ids = tuple(NodeId(i) for i in range(1, config.nodes + 1))
        self._group_ids = tuple(GroupId(g) for g in range(1, config.groups + 1))
        sim_backend = SimBackend(config.backend)
        self.backends = {gid: sim_backend.for_group(gid) for gid in self._group_ids}
        self._heap: list[tuple[int, int, int, Any, Any]] = []
        self._seq = 0
        self._now = 0
        self._steps = 0
        self._ticks = 0
        self._in_fault_phase = False
        self._violations: list[Violation] = []
        self._digest = hashlib.blake2b(digest_size=16)
        self._lost_writes = 0
        self._checked_readies: dict[NodeId, int] = {}
        self._leaderships: set[tuple[GroupId, Term]] = set()
        self._messages: dict[str, int] = {}
        self._quiet_watch: dict[str, int] | None = None
        self._isolations = 0

        self.checkers = {
            gid: SafetyChecker(TRAITS[self.backends[gid].value]) for gid in self._group_ids
        }
        self.network = SimNetwork(
            self._ids,
            net_rng,
            min_delay_us=_MIN_DELAY_US,
            max_delay_us=self._calm_max_delay_us,
            max_in_flight=10_000 * config.groups,
        )
        self.injector = FaultInjector(faults, fault_rng)
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
            max_msg_bytes=max_msg_bytes,
            max_inflight_msgs=8,
            max_snapshot_chunk_bytes=256,
        )
        bootstrap = ConfState(voters=self._ids)
        factory = config.host_factory if config.host_factory is not None else default_host_factory
        self.nodes: dict[NodeId, HostNode] = {}
        self._tick_interval: dict[NodeId, int] = {}
        drift = base_core.lease_clock_drift_ratio
        for node_id, node_seed in zip(self._ids, node_seeds, strict=True):
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
            interval = config.tick_us
            if faults.skew:
                bound = drift / 2 * 0.9
                interval = round(config.tick_us * (1 + self._rng.uniform(-bound, bound)))
                self.injector.record(FaultKind.SKEW)
            self._tick_interval[node_id] = interval

    # ------------------------------------------------------------------ for the clients

    @property
    def now_us(self) -> int:
        return self._now

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return self._ids

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

    def call_later(self, delay_us: int, fn: Callable[[Any], None], arg: Any) -> None:
        self._push(self._now + delay_us, _CALL, fn, arg)

    # ------------------------------------------------------------------ event loop

    def _push(self, time_us: int, kind: int, a: Any, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_us, self._seq, kind, a, b))

    def _send(self, message: Message) -> None:
        kind = type(message.body).__name__
        self._messages[kind] = self._messages.get(kind, 0) + 1
        if self._quiet_watch is not None:
            self._quiet_watch[kind] = self._quiet_watch.get(kind, 0) + 1
        for due in self.network.send(message, self._now):
            self._push(due, _DELIVER, message)

    def _schedule_tick(self, node: HostNode, *, first: bool) -> None:
        interval = self._tick_interval[node.id]
        delay = self._rng.randint(1, interval) if first else interval
        self._push(self._now + delay, _TICK, node.id, node.incarnation)

    def _step_once(self) -> None:
        time_us, _, kind, a, b = heapq.heappop(self._heap)
        self._now = time_us
        self._steps += 1
        digest = self._digest
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
                b"%d d %d %d %d %s\n"
                % (
                    time_us,
                    message.src,
                    message.dst,
                    message.group_id,
                    type(message.body).__name__.encode(),
                )
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
        elif kind == _RECONNECT:
            digest.update(b"%d n %d\n" % (time_us, a))
            if self._in_fault_phase and self._isolations == b:
                self.network.reconnect(a)
                self.injector.record(FaultKind.RECONNECT)

    def _after(self, node: HostNode, crash_now: bool) -> None:
        """Per-group checks after ``node`` processed its HostReadys (or crash it now)."""
        if crash_now:
            self._crash(node, bounce=node.crash_on is not CrashTrigger.ANY)
            return
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

    def _inject_fault(self) -> None:
        kind = self.injector.choose()
        rng = self._rng
        ids = list(self._ids)
        net = self.network
        self._digest.update(b"%d f %s\n" % (self._now, kind.value.encode()))
        match kind:
            case FaultKind.PARTITION:
                if len(ids) < 2:
                    return
                if rng.random() < 0.5 and self._isolate_quiesced_leader():
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
                if rng.random() < 0.7 and self._isolate_quiesced_leader():
                    return
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
                down = len(ids) - len(live)
                # Up to a bare majority down at once (as the single-group simulation).
                if not live or down >= len(ids) // 2 + 1:
                    return
                victim = self.nodes[rng.choice(live)]
                if kind is FaultKind.CRASH:
                    self._crash(victim)
                elif kind is FaultKind.CRASH_MID_READY:
                    victim.crash_at = rng.choice((CrashPoint.AFTER_PERSIST, CrashPoint.AFTER_SEND))
                    victim.crash_on = CrashTrigger.VOTE if rng.random() < 0.5 else CrashTrigger.ANY
                else:
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
            self._now + away_ticks * self.config.tick_us, _RECONNECT, node_id, self._isolations
        )
        self.injector.record(FaultKind.QUIESCED_LEADER_ISOLATED)
        return True

    def _calm_network(self, *, max_delay_us: int | None = None) -> None:
        self.network.set_conditions(
            min_delay_us=_MIN_DELAY_US,
            max_delay_us=self._calm_max_delay_us if max_delay_us is None else max_delay_us,
            loss_rate=0.0,
            dup_rate=0.0,
        )

    def _crash(self, node: HostNode, *, bounce: bool = False) -> None:
        unsynced = node.disk.unsynced_writes
        keep = self._rng.randint(0, unsynced) if unsynced and self._rng.random() < 0.5 else 0
        self._lost_writes += node.crash(keep_unsynced=keep)
        self._digest.update(b"%d x %d %d\n" % (self._now, node.id, keep))
        down_us = 1 if bounce else self.injector.down_us(self.config.tick_us)
        self._push(self._now + down_us, _RESTART, node.id)

    def _restart(self, node: HostNode) -> None:
        node.start()
        self.injector.record(FaultKind.RESTART)
        self._schedule_tick(node, first=True)
        self._after(node, node.drain(self._send))

    # ------------------------------------------------------------------ phases

    def run(self) -> MultiSimResult:
        liveness_us: int | None = None
        quiesce: dict[str, int | None] = {}
        inconclusive: tuple[str, ...] = ()
        try:
            self._fault_phase()
            liveness_us = self._liveness_phase()
            converged = liveness_us is not None and self._convergence_phase()
            inconclusive = self._end_checks(converged=converged)
            if converged:
                quiesce = self._quiet_phase()
        except InvariantViolation as violation:
            self._violate(violation.kind, violation.message)
        except Exception as exc:  # a core or the host crashed: a finding, with a replay
            where = traceback.extract_tb(exc.__traceback__)[-1]
            kind = "core_invariant" if type(exc).__name__ == "InvariantViolation" else "exception"
            self._violate(
                kind,
                f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno} in {where.name})",
            )
        group_ticks = 0
        host_ticks = 0
        for node in self.nodes.values():
            if node.host is not None:
                stats = node.host.statistics()
                group_ticks += stats.group_ticks
                host_ticks += stats.ticks
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
            faults=dict(sorted(self.injector.counts.items())),
            ops=self._op_counts(),
            reads=self._read_counts(),
            network={
                "sent": self.network.stats.sent,
                "delivered": self.network.stats.delivered,
                "duplicated": self.network.stats.duplicated,
                "dropped_loss": self.network.stats.dropped_loss,
                "dropped_partition": self.network.stats.dropped_partition,
                "dropped_overflow": self.network.stats.dropped_overflow,
            },
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
            liveness_us=liveness_us,
            quiesce=quiesce,
            linearizability_inconclusive=inconclusive,
            violations=tuple(self._violations),
            digest=self._digest.hexdigest(),
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
        for gid in self._group_ids:
            self.workloads[gid].start()
        self._in_fault_phase = True
        if self.injector.active:
            self._push(
                self._now + self.injector.next_interval_ticks() * self.config.tick_us, _FAULT, None
            )
        while self._steps < self.config.steps and self._heap:
            self._step_once()
        self._in_fault_phase = False

    def _budget_us(self, timeouts: int) -> int:
        return timeouts * self.election_timeout_ticks * self.config.tick_us

    def _liveness_phase(self) -> int | None:
        self.network.heal()
        self._calm_network(max_delay_us=_MAX_DELAY_US)
        for node in self.nodes.values():
            node.crash_at = None
            node.crash_on = CrashTrigger.ANY
            if not node.alive:
                self._restart(node)
        for gid in self._group_ids:
            self.workloads[gid].stop()
        start = self._now
        deadline = start + self._budget_us(self.config.liveness_timeouts)
        for gid in self._group_ids:
            self.workloads[gid].start_probe()
        while self._heap and self._heap[0][0] <= deadline and not self._probes_done():
            self._step_once()
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

    def _converged(self, gid: GroupId) -> bool:
        probe = self.workloads[gid].probe_op
        if probe is None:
            return False
        nodes = list(self.nodes.values())
        if not all(n.alive for n in nodes):
            return False
        replicas = [n.replicas[gid] for n in nodes]
        applied = replicas[0].applied
        if any(r.applied != applied for r in replicas):
            return False
        if not all(r.kv.has_applied(probe.client, probe.seq) for r in replicas):
            return False
        image = replicas[0].kv.snapshot()
        return all(r.kv.snapshot() == image for r in replicas[1:])

    def _convergence_phase(self) -> bool:
        deadline = self._now + self._budget_us(self.config.liveness_timeouts)
        pending = list(self._group_ids)
        while pending:
            pending = [gid for gid in pending if not self._converged(gid)]
            if not pending:
                break
            if not self._heap or self._heap[0][0] > deadline:
                self._violate(
                    "convergence",
                    f"groups {pending} did not converge within {self.config.liveness_timeouts} "
                    "election timeouts after their probe writes committed",
                )
                return False
            self._step_once()
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

    def _quiet_phase(self) -> dict[str, int | None]:
        """Every group quiesces within the bound, then only NodeHeartbeats travel."""
        start = self._now
        deadline = start + self._budget_us(self.config.quiesce_timeouts)
        while not self._all_quiesced():
            if not self._heap or self._heap[0][0] > deadline:
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
            self._step_once()
        quiesce_us = self._now - start
        ticks_before = self._group_ticks()
        watch: dict[str, int] = {}
        self._quiet_watch = watch
        window_end = self._now + self.config.quiet_window_ticks * self.config.tick_us
        while self._heap and self._heap[0][0] <= window_end:
            self._step_once()
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

    def _quiesced(self, node: HostNode, gid: GroupId) -> bool:
        return node.host is not None and node.host.is_quiesced(gid)

    def _group_ticks(self) -> int:
        return sum(n.host.statistics().group_ticks for n in self.nodes.values() if n.host)

    def _end_checks(self, *, converged: bool) -> tuple[str, ...]:
        inconclusive: list[str] = []
        nodes = [n for n in self.nodes.values() if n.alive]
        for gid in self._group_ids:
            for node in nodes:
                kv = node.replicas[gid].kv
                if kv.duplicates:
                    client, seq = kv.duplicates[0]
                    self._violate(
                        "duplicate_apply",
                        f"group {gid}: node {node.id} applied client {client} seq {seq} twice",
                    )
            history = self.workloads[gid].history
            for op in history:
                if op.path is not ReadPath.LOG:
                    continue
                if op.outcome is Outcome.OK and converged:
                    missing = [
                        n.id for n in nodes if not n.replicas[gid].kv.has_applied(op.client, op.seq)
                    ]
                    if missing:
                        self._violate(
                            "lost_write",
                            f"group {gid}: acknowledged {op.to_operation().describe()} is "
                            f"missing on nodes {missing}",
                        )
                elif op.outcome is Outcome.FAIL:
                    holders = [
                        n.id for n in nodes if n.replicas[gid].kv.has_applied(op.client, op.seq)
                    ]
                    if holders:
                        self._violate(
                            "failed_write_applied",
                            f"group {gid}: {op.to_operation().describe()} was reported failed "
                            f"but nodes {holders} applied it",
                        )
            result = check_history(op.to_operation() for op in history)
            for failure in result.failures:
                self._violate("linearizability", f"group {gid}: {failure.counterexample}")
            inconclusive.extend(result.inconclusive)
        return tuple(inconclusive)

    def _op_counts(self) -> dict[str, int]:
        counts = {outcome.value: 0 for outcome in Outcome}
        for workload in self.workloads.values():
            for key, value in workload.counts().items():
                counts[key] += value
        return counts

    def _read_counts(self) -> dict[str, int]:
        counts = {path.value: 0 for path in ReadPath}
        for workload in self.workloads.values():
            for op in workload.history:
                if op.op is Op.GET and op.outcome is Outcome.OK:
                    counts[op.path.value] += 1
        return counts


def run_multi(config: MultiSimConfig) -> MultiSimResult:
    """Run one seed with ``config.groups`` groups per node."""
    return MultiSimulation(config).run()
