"""Simulated clients: puts, gets and compare-and-sets on a few keys, with a recorded history.

Each client has at most one operation outstanding. It sends to the node it believes leads;
``NotLeader`` sends it to the hint (or a random node) after a short delay, as does a node
that is down (connection refused). A write, a CAS or a read "through the log" is proposed as
a command and succeeds when the proposing node applies the entry at ``Proposed.index`` with
``Proposed.term``; it fails definitely if another entry lands there or if no node ever
accepted it; it is "unknown" when the node crashes, a snapshot hides the index, or the client
times out. Other reads use ``read_index`` in SAFE or LEASE mode and are served from the
node's state machine once it has applied the read index.

A *probe* client is used after the fault phase to measure liveness: it writes until one
write succeeds, retrying after ``retry_us`` (never ``think_us``) when an attempt fails or
times out.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from consensus.api import NotLeader, ProposalDropped, Proposed, ReadMode
from consensus.sim.kv import ApplyResult, Command, Op
from consensus.sim.linearizability import Operation, Outcome
from consensus.types import NO_NODE, NodeId


class ReadPath(enum.Enum):
    LOG = "log"
    """Proposed as a command (every write, and some reads)."""
    SAFE = "safe"
    """``read_index`` with ``ReadMode.SAFE``."""
    LEASE = "lease"
    """``read_index`` with ``ReadMode.LEASE``."""


@dataclass(slots=True, kw_only=True)
class ClientOp:
    """One operation in the history; mutable until it completes."""

    id: int
    client: int
    seq: int
    op: Op
    key: str
    value: int | None = None
    expected: int | None = None
    path: ReadPath = ReadPath.LOG
    invoke_us: int
    complete_us: int | None = None
    outcome: Outcome | None = None
    result: int | bool | None = None
    proposed: bool = False
    """Some node accepted it into its log: from then on it may take effect."""
    node: NodeId = NO_NODE
    attempts: int = 0

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def command(self) -> Command:
        return Command(
            client=self.client,
            seq=self.seq,
            op=self.op,
            key=self.key,
            value=self.value,
            expected=self.expected,
        )

    def to_operation(self) -> Operation:
        outcome = self.outcome if self.outcome is not None else Outcome.UNKNOWN
        return Operation(
            id=self.id,
            client=self.client,
            op=self.op,
            key=self.key,
            value=self.value,
            expected=self.expected,
            invoke_us=self.invoke_us,
            complete_us=self.complete_us if outcome is not Outcome.UNKNOWN else None,
            outcome=outcome,
            result=self.result,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadConfig:
    clients: int = 3
    keys: int = 3
    put_weight: int = 4
    get_weight: int = 4
    cas_weight: int = 2
    log_read_weight: int = 1
    safe_read_weight: int = 2
    lease_read_weight: int = 2
    think_us: tuple[int, int] = (1, 20_000)
    """Pause between a completion and the client's next invocation (strictly positive, so
    one client's operations never share a timestamp)."""
    retry_us: tuple[int, int] = (2_000, 15_000)
    timeout_us: tuple[int, int] = (50_000, 300_000)
    """Per-operation client timeout, drawn per operation. Short ones make clients leave a
    deposed leader quickly, which is what exposes stale reads and lost writes."""
    key_prefix: str = "k"
    """Keys are ``f"{key_prefix}{i}"``: the multi-group simulation gives each group its own
    slice of the key space (``g3/k0``), as a range maps keys to one group."""


class ClusterView(Protocol):
    """The slice of the simulation the clients act on."""

    @property
    def now_us(self) -> int: ...

    @property
    def node_ids(self) -> tuple[NodeId, ...]: ...

    def is_up(self, node: NodeId) -> bool: ...
    def propose(self, node: NodeId, data: bytes, handle: Any) -> Proposed: ...
    def read(
        self, node: NodeId, request_id: int, key: str, mode: ReadMode, handle: Any
    ) -> None: ...
    def cancel(self, node: NodeId, handle: Any) -> None: ...
    def call_later(self, delay_us: int, fn: Callable[[Any], None], arg: Any) -> None: ...


@dataclass(slots=True)
class _Client:
    id: int
    leader_guess: NodeId
    probe: bool = False
    current: ClientOp | None = None
    next_seq: int = 1


class Workload:
    def __init__(self, cluster: ClusterView, rng: random.Random, config: WorkloadConfig) -> None:
        self._cluster = cluster
        self._rng = rng
        self._config = config
        self._keys = tuple(f"{config.key_prefix}{i}" for i in range(config.keys))
        self._clients = [
            _Client(id=i, leader_guess=rng.choice(cluster.node_ids)) for i in range(config.clients)
        ]
        self._last_value: dict[str, int | None] = {}
        self._next_value = 1
        self._next_op_id = 1
        self.history: list[ClientOp] = []
        self.active = False
        self.probe_started_us: int | None = None
        self.probe_succeeded_us: int | None = None
        self.probe_op: ClientOp | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self.active = True
        for client in self._clients:
            self._cluster.call_later(self._think(), self._wake, client)

    def stop(self) -> None:
        """No new operations; outstanding ones still complete or time out."""
        self.active = False

    def start_probe(self) -> None:
        client = _Client(
            id=len(self._clients), leader_guess=self._rng.choice(self._cluster.node_ids), probe=True
        )
        self._clients.append(client)
        self.probe_started_us = self._cluster.now_us
        self._wake(client)

    @property
    def outstanding(self) -> int:
        """Operations invoked and not yet resolved (each has a client timeout pending)."""
        return sum(1 for client in self._clients if client.current is not None)

    def counts(self) -> dict[str, int]:
        counts = {outcome.value: 0 for outcome in Outcome}
        for op in self.history:
            outcome = op.outcome if op.outcome is not None else Outcome.UNKNOWN
            counts[outcome.value] += 1
        return counts

    # ------------------------------------------------------------------ client loop

    def _think(self) -> int:
        low, high = self._config.think_us
        return self._rng.randint(low, high)

    def _retry_delay(self) -> int:
        low, high = self._config.retry_us
        return self._rng.randint(low, high)

    def _wake(self, client: _Client) -> None:
        if client.current is not None:
            return
        if client.probe:
            if self.probe_succeeded_us is not None:
                return
        elif not self.active:
            return
        op = self._new_op(client)
        client.current = op
        self.history.append(op)
        if client.probe:
            self.probe_op = op
        self._attempt(op)
        low, high = self._config.timeout_us
        self._cluster.call_later(self._rng.randint(low, high), self._timeout, op)

    def _new_op(self, client: _Client) -> ClientOp:
        rng = self._rng
        cfg = self._config
        if client.probe:
            kind = Op.PUT
        else:
            kind = rng.choices(
                (Op.PUT, Op.GET, Op.CAS), (cfg.put_weight, cfg.get_weight, cfg.cas_weight)
            )[0]
        key = self._keys[0] if client.probe else rng.choice(self._keys)
        op = ClientOp(
            id=self._next_op_id,
            client=client.id,
            seq=client.next_seq,
            op=kind,
            key=key,
            invoke_us=self._cluster.now_us,
        )
        self._next_op_id += 1
        client.next_seq += 1
        if kind is Op.GET:
            op.path = rng.choices(
                (ReadPath.LOG, ReadPath.SAFE, ReadPath.LEASE),
                (cfg.log_read_weight, cfg.safe_read_weight, cfg.lease_read_weight),
            )[0]
        else:
            op.value = self._next_value
            self._next_value += 1
        if kind is Op.CAS:
            # Mostly the freshest value seen, so that a fair share of swaps succeed.
            last = self._last_value.get(key)
            value = self._next_value - 1
            op.expected = last if rng.random() < 0.8 else rng.choice((None, value - 1))
        return op

    def _attempt(self, op: ClientOp) -> None:
        if op.done:
            return
        client = self._clients[op.client]
        cluster = self._cluster
        target = client.leader_guess
        if not cluster.is_up(target):
            client.leader_guess = self._rng.choice(cluster.node_ids)
            cluster.call_later(self._retry_delay(), self._attempt, op)
            return
        op.node = target
        op.attempts += 1
        try:
            if op.path is ReadPath.LOG:
                cluster.propose(target, op.command().encode(), op)
                op.proposed = True
            else:
                mode = ReadMode.SAFE if op.path is ReadPath.SAFE else ReadMode.LEASE
                cluster.read(target, op.id, op.key, mode, op)
        except NotLeader as refused:
            hint = refused.leader_hint
            client.leader_guess = (
                hint if hint != NO_NODE and hint != target else self._rng.choice(cluster.node_ids)
            )
            cluster.call_later(self._retry_delay(), self._attempt, op)
        except ProposalDropped:
            cluster.call_later(self._retry_delay(), self._attempt, op)

    def _timeout(self, op: ClientOp) -> None:
        if op.done:
            return
        if self._cluster.is_up(op.node):
            self._cluster.cancel(op.node, op)
        # A node that does not answer may be a deposed leader cut off from the majority:
        # like a real client, try elsewhere (and so meet the new leader's writes).
        self._clients[op.client].leader_guess = self._rng.choice(self._cluster.node_ids)
        # Never accepted by any log: it cannot take effect, so it failed definitely.
        self.complete(op, Outcome.UNKNOWN if op.proposed else Outcome.FAIL, None)

    def complete(self, op: ClientOp, outcome: Outcome, result: ApplyResult | None) -> None:
        """Called by nodes (and timeouts) when ``op`` resolves; later calls are ignored."""
        if op.done:
            return
        op.outcome = outcome
        now = self._cluster.now_us
        if outcome is not Outcome.UNKNOWN:
            op.complete_us = now
        if outcome is Outcome.OK and result is not None:
            if op.op is Op.GET:
                op.result = result.value
                self._last_value[op.key] = result.value
            elif op.op is Op.CAS:
                op.result = result.ok
                self._last_value[op.key] = op.value if result.ok else result.value
            else:
                self._last_value[op.key] = op.value
        client = self._clients[op.client]
        if client.current is op:
            client.current = None
        if client.probe:
            if outcome is Outcome.OK:
                self.probe_succeeded_us = now
                return
            # The probe measures how soon the healed cluster commits a write, so it retries
            # promptly: a think-time pause (up to seconds for slow groups) would be charged
            # to the liveness budget although the group was ready long before.
            self._cluster.call_later(self._retry_delay(), self._wake, client)
            return
        self._cluster.call_later(self._think(), self._wake, client)
