"""The discrete-event skeleton both simulation modes share.

``consensus.sim.runner.Simulation`` (one group of ``SimNode``s) and
``consensus.sim.multigroup.MultiSimulation`` (``HostNode``s hosting many groups) run the same
loop: a heap ordered by ``(virtual time in µs, sequence number)``, random generators derived
in a fixed order from ``random.Random(seed)``, ticks with per-node clock skew, message
delivery through ``SimNetwork``, the network and crash faults of ``FaultInjector``, and the
phases fault -> liveness -> convergence -> end checks. ``EventLoop`` holds all of that once;
each mode supplies what really differs through the hooks marked "mode" below (how it
observes a node after a Ready, how it starts its clients, which faults it redirects, what
it checks at the end and how it assembles its result).

The order of random draws and of events is part of the replay contract: every seed must
produce the same ``digest`` as before any refactoring, so change nothing here without
comparing digests over a range of seeds.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from consensus.invariants import InvariantViolation as CoreInvariantViolation
from consensus.sim.checkers import InvariantViolation
from consensus.sim.faults import FaultInjector, FaultKind, FaultProfile
from consensus.sim.kv import KVStore, Op
from consensus.sim.linearizability import Outcome, check_history
from consensus.sim.network import SimNetwork
from consensus.sim.node import CrashPoint, CrashTrigger
from consensus.sim.workload import ClientOp, ReadPath
from consensus.types import Message, NodeId

TICK = 0
DELIVER = 1
CALL = 2
FAULT = 3
RESTART = 4
RECONNECT = 5
FIRST_MODE_EVENT = 6
"""Event kinds from here on belong to a mode (``EventLoop._step_mode``)."""

MIN_DELAY_US = 200
MAX_DELAY_US = 3_000
ELECTION_TIMEOUT_TICKS = 10
MAX_MSG_BYTES = 2_048

ELECTIONS_TIMEOUT_TICKS = (3, 4, 5, 10)
"""Election timeouts the elections profile draws from: a few ticks, against message delays
of up to a tick or more, so that candidates collide and votes split (Raft §5.2)."""
ELECTIONS_MAX_DELAY_US = (3_000, 12_000, 30_000)
ELECTIONS_MAX_MSG_BYTES = (1, 128, 2_048)
"""Small pages make a new leader re-replicate an old suffix in several messages, so a
follower can hold an old-term entry without the new leader's no-op (Raft §5.4.2)."""


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


def replay_command(
    config: LoopConfig,
    *,
    config_name: str,
    lead: Sequence[str],
    options: Sequence[str],
    extra: Sequence[str],
) -> str:
    """The one command that replays a run: ``shardb sim``, the mode's ``lead`` options, the
    options every run names, the mode's ``options`` and then the protocol options; fields
    that are not (yet) options of the CLI follow as ``# with <config_name>(<extra>)``."""
    parts = [
        "shardb sim",
        *lead,
        f"--seed {config.seed}",
        f"--faults {config.faults.value}",
        f"--steps {config.steps}",
        f"--nodes {config.nodes}",
        *options,
    ]
    if config.pre_vote is not None:
        parts.append("--pre-vote" if config.pre_vote else "--no-pre-vote")
    if config.check_quorum is not None:
        parts.append("--check-quorum" if config.check_quorum else "--no-check-quorum")
    if extra:
        parts.append(f"# with {config_name}({', '.join(extra)})")
    return " ".join(parts)


def qualified_name(factory: object) -> str:
    """``module.qualname`` of a factory (a function or a class), for a replay command."""
    name = getattr(factory, "__qualname__", type(factory).__qualname__)
    return f"{getattr(factory, '__module__', '?')}.{name}"


class LoopConfig(Protocol):
    """What the loop reads of ``SimConfig`` / ``MultiSimConfig``."""

    @property
    def seed(self) -> int: ...
    @property
    def steps(self) -> int: ...
    @property
    def nodes(self) -> int: ...
    @property
    def faults(self) -> FaultProfile: ...
    @property
    def tick_us(self) -> int: ...
    @property
    def liveness_timeouts(self) -> int: ...
    @property
    def pre_vote(self) -> bool | None: ...
    @property
    def check_quorum(self) -> bool | None: ...
    def replay_command(self) -> str: ...


class _Disk(Protocol):
    @property
    def unsynced_writes(self) -> int: ...


class LoopNode(Protocol):
    """What the loop needs of ``SimNode`` / ``HostNode``."""

    crash_at: CrashPoint | None
    crash_on: CrashTrigger

    @property
    def id(self) -> NodeId: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def alive(self) -> bool: ...
    @property
    def disk(self) -> _Disk: ...
    def start(self) -> None: ...
    def crash(self, *, keep_unsynced: int = 0) -> int: ...
    def tick(self, send: Callable[[Message], None]) -> bool: ...
    def step(self, message: Message, send: Callable[[Message], None]) -> bool: ...
    def drain(self, send: Callable[[Message], None]) -> bool: ...


C = TypeVar("C", bound=LoopConfig)
N = TypeVar("N", bound=LoopNode)
R = TypeVar("R")


class EventLoop(ABC, Generic[C, N, R]):
    """State and steps common to both modes; ``run`` drives the phases."""

    nodes: dict[NodeId, N]
    network: SimNetwork

    def __init__(self, config: C, *, nodes: int) -> None:
        self.config = config
        root = random.Random(config.seed)
        # Derive every generator in a fixed order so each consumer's stream is independent
        # of how much the others draw. A mode draws its own further generators from
        # ``self._root`` after these.
        self._root = root
        self._net_rng = random.Random(root.getrandbits(64))
        self._fault_rng = random.Random(root.getrandbits(64))
        self._workload_rng = random.Random(root.getrandbits(64))
        self._rng = random.Random(root.getrandbits(64))
        self._node_seeds = [root.getrandbits(64) for _ in range(nodes)]
        options_rng = random.Random(root.getrandbits(64))
        self._profile_rng = random.Random(root.getrandbits(64))
        drawn_pre_vote = options_rng.random() < 0.75
        drawn_check_quorum = options_rng.random() < 0.75
        self.pre_vote = drawn_pre_vote if config.pre_vote is None else config.pre_vote
        self.check_quorum = (
            drawn_check_quorum if config.check_quorum is None else config.check_quorum
        )
        self.election_timeout_ticks = ELECTION_TIMEOUT_TICKS
        self._calm_max_delay_us = MAX_DELAY_US
        self.max_msg_bytes = MAX_MSG_BYTES
        if config.faults.elections:
            profile_rng = self._profile_rng
            self.election_timeout_ticks = profile_rng.choice(ELECTIONS_TIMEOUT_TICKS)
            self._calm_max_delay_us = profile_rng.choice(ELECTIONS_MAX_DELAY_US)
            self.max_msg_bytes = profile_rng.choice(ELECTIONS_MAX_MSG_BYTES)

        self._ids: tuple[NodeId, ...] = ()
        self._heap: list[tuple[int, int, int, Any, Any]] = []
        self._seq = 0
        self._now = 0
        self._steps = 0
        self._ticks = 0
        self._in_fault_phase = False
        self._violations: list[Violation] = []
        self._digest = hashlib.blake2b(digest_size=16)
        self._lost_writes = 0
        self._isolations = 0
        self._tick_interval: dict[NodeId, int] = {}
        self._liveness_us: int | None = None
        self._inconclusive: tuple[str, ...] = ()
        self.injector = FaultInjector(config.faults, self._fault_rng)

    def _make_network(self, *, max_in_flight: int = 10_000) -> SimNetwork:
        return SimNetwork(
            self._ids,
            self._net_rng,
            min_delay_us=MIN_DELAY_US,
            max_delay_us=self._calm_max_delay_us,
            max_in_flight=max_in_flight,
        )

    def _draw_tick_interval(self, node_id: NodeId, drift: float) -> None:
        interval = self.config.tick_us
        if self.config.faults.skew:
            # Half the drift bound each way keeps the fastest/slowest ratio within the
            # bound the lease assumes (CoreConfig.lease_clock_drift_ratio).
            bound = drift / 2 * 0.9
            interval = round(self.config.tick_us * (1 + self._rng.uniform(-bound, bound)))
            self.injector.record(FaultKind.SKEW)
        self._tick_interval[node_id] = interval

    # ------------------------------------------------------------------ for the clients

    @property
    def now_us(self) -> int:
        return self._now

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return self._ids

    def call_later(self, delay_us: int, fn: Callable[[Any], None], arg: Any) -> None:
        self._push(self._now + delay_us, CALL, fn, arg)

    # ------------------------------------------------------------------ event loop

    def _push(self, time_us: int, kind: int, a: Any, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_us, self._seq, kind, a, b))

    def _send(self, message: Message) -> None:
        for due in self.network.send(message, self._now):
            self._push(due, DELIVER, message)

    def _schedule_tick(self, node: N, *, first: bool) -> None:
        interval = self._tick_interval[node.id]
        delay = self._rng.randint(1, interval) if first else interval
        self._push(self._now + delay, TICK, node.id, node.incarnation)

    def _push_fault(self) -> None:
        self._push(
            self._now + self.injector.next_interval_ticks() * self.config.tick_us, FAULT, None
        )

    def _step_once(self) -> None:
        time_us, _, kind, a, b = heapq.heappop(self._heap)
        self._now = time_us
        self._steps += 1
        digest = self._digest
        if kind == TICK:
            node = self.nodes[a]
            digest.update(b"%d t %d\n" % (time_us, a))
            if node.incarnation != b or not node.alive:
                return
            self._schedule_tick(node, first=False)
            self._ticks += 1
            self._after(node, node.tick(self._send))
        elif kind == DELIVER:
            message: Message = a
            digest.update(self._delivery_line(time_us, message))
            if not self.network.arrive(message):
                return
            target = self.nodes.get(message.dst)
            if target is None or not target.alive:
                return
            self._after(target, target.step(message, self._send))
        elif kind == CALL:
            digest.update(b"%d c %s\n" % (time_us, a.__name__.encode()))
            a(b)
        elif kind == FAULT:
            if self._in_fault_phase:
                self._inject_fault()
                self._push_fault()
        elif kind == RESTART:
            digest.update(b"%d r %d\n" % (time_us, a))
            node = self.nodes[a]
            if not node.alive:
                self._restart(node)
        elif kind == RECONNECT:
            digest.update(b"%d n %d\n" % (time_us, a))
            if self._in_fault_phase and self._isolation_ends(a, b):
                self.network.reconnect(a)
                self.injector.record(FaultKind.RECONNECT)
        else:
            self._step_mode(time_us, kind, a, b)

    def _after(self, node: N, crash_now: bool) -> None:
        """Checks after ``node`` processed its Readys (or crash it at an armed point)."""
        if crash_now:
            # A crash aimed at a vote or an ack comes straight back, still inside the
            # election, where a vote that did not survive the crash could be cast twice
            # (Raft §5.2), or an acknowledged entry be missing from a voter.
            self._crash(node, bounce=node.crash_on is not CrashTrigger.ANY)
            return
        self._observe(node)

    def _step_until(self, done: Callable[[], bool], deadline_us: int) -> bool:
        """Process events until ``done()`` (True), or until none is left at or before
        ``deadline_us`` (False)."""
        while not done():
            if not self._heap or self._heap[0][0] > deadline_us:
                return False
            self._step_once()
        return True

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
                if self._fault_instead(kind):
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
                if self._fault_instead(kind):
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
                # Up to a bare majority down at once: enough to stall progress, which a
                # correct protocol survives, while restarts keep the run moving.
                if not live or self._crash_budget_spent(len(live)):
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
            min_delay_us=MIN_DELAY_US,
            max_delay_us=self._calm_max_delay_us if max_delay_us is None else max_delay_us,
            loss_rate=0.0,
            dup_rate=0.0,
        )

    def _crash(self, node: N, *, bounce: bool = False, down_us: int | None = None) -> None:
        unsynced = node.disk.unsynced_writes
        # Half the crashes lose every unsynced write; the others keep a random prefix, as
        # an OS that flushed part of its page cache would.
        keep = self._rng.randint(0, unsynced) if unsynced and self._rng.random() < 0.5 else 0
        self._lost_writes += node.crash(keep_unsynced=keep)
        self._digest.update(b"%d x %d %d\n" % (self._now, node.id, keep))
        if down_us is None:
            down_us = 1 if bounce else self.injector.down_us(self.config.tick_us)
        self._push(self._now + down_us, RESTART, node.id)

    def _restart(self, node: N) -> None:
        node.start()
        self.injector.record(FaultKind.RESTART)
        self._schedule_tick(node, first=True)
        self._after(node, node.drain(self._send))

    # ------------------------------------------------------------------ phases

    def run(self) -> R:
        try:
            self._fault_phase()
            self._liveness_us = self._liveness_phase()
            converged = self._liveness_us is not None and self._convergence_phase()
            self._inconclusive = self._end_checks(converged=converged)
            self._final_phase(converged=converged)
        except InvariantViolation as violation:
            self._violate(violation.kind, violation.message)
        except Exception as exc:  # a core or a host crashed: that is a finding, with a replay
            where = traceback.extract_tb(exc.__traceback__)[-1]
            # Both cores report broken invariants with consensus.invariants.InvariantViolation.
            kind = "core_invariant" if isinstance(exc, CoreInvariantViolation) else "exception"
            self._violate(
                kind,
                f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno} in {where.name})",
            )
        return self._result()

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
        self._start_clients()
        self._in_fault_phase = True
        if self.injector.active:
            self._push_fault()
        while self._steps < self.config.steps and self._heap:
            self._step_once()
        self._in_fault_phase = False

    def _budget_us(self, timeouts: int) -> int:
        return timeouts * self.election_timeout_ticks * self.config.tick_us

    def _heal_everything(self) -> None:
        """Start of the liveness phase: heal the network, disarm and restart every node."""
        self.network.heal()
        # Liveness is owed only under the timing assumption "broadcast time << election
        # timeout" (Raft §5.6), which the elections profile's long delays deliberately break.
        self._calm_network(max_delay_us=MAX_DELAY_US)
        for node in self.nodes.values():
            node.crash_at = None
            node.crash_on = CrashTrigger.ANY
            if not node.alive:
                self._restart(node)

    def _check_replicas(
        self,
        history: Sequence[ClientOp],
        *,
        alive: Sequence[tuple[NodeId, KVStore]],
        members: Sequence[tuple[NodeId, KVStore]],
        converged: bool,
        prefix: str = "",
    ) -> tuple[str, ...]:
        """The end-of-run checks of one group: nothing applied twice on a live replica,
        acknowledged writes on every live member (once converged), failed writes on no
        live replica, and a linearizable history; returns the inconclusive keys."""
        for node_id, kv in alive:
            if kv.duplicates:
                client, seq = kv.duplicates[0]
                self._violate(
                    "duplicate_apply",
                    f"{prefix}node {node_id} applied client {client} seq {seq} twice",
                )
        for op in history:
            if op.path is not ReadPath.LOG:
                continue
            if op.outcome is Outcome.OK and converged:
                missing = [n for n, kv in members if not kv.has_applied(op.client, op.seq)]
                if missing:
                    self._violate(
                        "lost_write",
                        f"{prefix}acknowledged {op.to_operation().describe()} is missing on "
                        f"nodes {missing}",
                    )
            elif op.outcome is Outcome.FAIL:
                holders = [n for n, kv in alive if kv.has_applied(op.client, op.seq)]
                if holders:
                    self._violate(
                        "failed_write_applied",
                        f"{prefix}{op.to_operation().describe()} was reported failed but "
                        f"nodes {holders} applied it",
                    )
        result = check_history(op.to_operation() for op in history)
        for failure in result.failures:
            self._violate("linearizability", f"{prefix}{failure.counterexample}")
        return result.inconclusive

    # ------------------------------------------------------------------ result parts

    def _fault_counts(self) -> dict[str, int]:
        return dict(sorted(self.injector.counts.items()))

    def _network_counts(self) -> dict[str, int]:
        stats = self.network.stats
        return {
            "sent": stats.sent,
            "delivered": stats.delivered,
            "duplicated": stats.duplicated,
            "dropped_loss": stats.dropped_loss,
            "dropped_partition": stats.dropped_partition,
            "dropped_overflow": stats.dropped_overflow,
        }

    @staticmethod
    def _read_counts(histories: Iterable[Sequence[ClientOp]]) -> dict[str, int]:
        """Successful reads by path (log / safe / lease)."""
        counts = {path.value: 0 for path in ReadPath}
        for history in histories:
            for op in history:
                if op.op is Op.GET and op.outcome is Outcome.OK:
                    counts[op.path.value] += 1
        return counts

    # ------------------------------------------------------------------ mode hooks

    @abstractmethod
    def _delivery_line(self, time_us: int, message: Message) -> bytes:
        """The digest line of a delivery (mode: a multi-group one names the group)."""

    def _step_mode(self, time_us: int, kind: int, a: Any, b: Any) -> None:
        """Handle an event kind from ``FIRST_MODE_EVENT`` on (mode)."""
        raise ValueError(f"unknown event kind {kind}")

    def _isolation_ends(self, node_id: NodeId, isolation: int) -> bool:
        """Whether a scheduled reconnect of ``node_id`` still ends the latest isolation."""
        return self._isolations == isolation

    def _fault_instead(self, kind: FaultKind) -> bool:
        """Mode: strike a more targeted fault in place of a PARTITION or ISOLATE; True if
        it did (it records itself)."""
        return False

    @abstractmethod
    def _crash_budget_spent(self, live: int) -> bool:
        """Mode: whether enough voters are down that no further crash may strike."""

    @abstractmethod
    def _observe(self, node: N) -> None:
        """Mode: check ``node`` after it processed its Readys."""

    @abstractmethod
    def _start_clients(self) -> None:
        """Mode: start the workload (and operator) at the start of the fault phase."""

    @abstractmethod
    def _liveness_phase(self) -> int | None: ...

    @abstractmethod
    def _convergence_phase(self) -> bool: ...

    @abstractmethod
    def _end_checks(self, *, converged: bool) -> tuple[str, ...]: ...

    def _final_phase(self, *, converged: bool) -> None:
        """Mode: a further phase after the end checks."""
        return None

    @abstractmethod
    def _result(self) -> R: ...
