"""One simulated server: a pure core, its ``SimDisk`` and its replica of the KV store.

A node carries out each Ready strictly in the order of ``consensus.api``: persist (sync if
``must_sync``) -> send -> apply (snapshot, committed entries) -> answer read states that
are applied -> advance. A crash can be armed to strike between the write and the sync,
between persist and send or between send and apply, which is where a real process dies with
half its work done; it can wait for a Ready that casts a vote or acknowledges entries
(``CrashTrigger``), the moments where a forgotten write does damage.

Client requests enter through ``propose`` and ``read``; their outcome comes back through
the ``on_complete`` callback once the entry at the proposal's index is applied (success iff
it carries the proposal's term, ``consensus.api.Proposed``), or as "unknown" when the node
crashes or a snapshot skips over the index.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from consensus.api import (
    ConsensusCore,
    CoreConfig,
    CoreFactory,
    Logger,
    PersistedState,
    Proposed,
    ReadMode,
    Ready,
)
from consensus.sim.checkers import InvariantViolation, SafetyChecker, require
from consensus.sim.disk import SimDisk
from consensus.sim.kv import ApplyResult, KVStore
from consensus.sim.linearizability import Outcome
from consensus.types import ConfState, Entry, EntryKind, Index, Message, NodeId, Term


class CrashPoint(enum.Enum):
    BEFORE_SYNC = "before_sync"
    """Written but not synced, and no message left."""
    AFTER_PERSIST = "after_persist"
    """Persisted (and synced if asked) but no message left."""
    AFTER_SEND = "after_send"
    """Messages left but nothing applied."""


class CrashTrigger(enum.Enum):
    """Which Ready an armed crash point waits for."""

    ANY = "any"
    VOTE = "vote"
    """A Ready that changes term or vote (Raft) / the promised ballot (Paxos): the narrow
    window where a forgotten vote lets a node vote twice in one term (Raft §5.2)."""
    ACK = "ack"
    """A Ready that writes entries and sends messages: a follower acknowledging an append,
    where an acknowledgement of something not durable lets a commit be lost (Figure 2)."""


_K = TypeVar("_K", bound=int)

CompleteFn = Callable[[Any, Outcome, ApplyResult | None], None]
"""``on_complete(handle, outcome, result)``; ``result`` only with ``Outcome.OK``."""


@dataclass(slots=True)
class _Waiter:
    handle: Any
    term: int
    data: bytes


@dataclass(slots=True)
class _Read:
    handle: Any
    key: str
    index: Index | None = None


class NullLogger:
    """Discards core log events: the simulator's hot path cannot afford formatting them."""

    def debug(self, event: str, **kw: Any) -> None:
        return None

    def info(self, event: str, **kw: Any) -> None:
        return None

    def warning(self, event: str, **kw: Any) -> None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactionPolicy:
    """Compact after a random number of applied entries in [min, max] (per node, re-drawn)."""

    min_entries: int = 10
    max_entries: int = 60


class Replica:
    """A node's volatile state for one group: its KV replica, what it applied, and the
    client requests it waits on. ``SimNode`` has one, ``HostNode`` one per group; both feed
    it their Readys so the two modes apply, answer and compact in exactly the same way."""

    def __init__(
        self,
        node_id: NodeId,
        *,
        who: str,
        rng: random.Random,
        checker: SafetyChecker,
        on_complete: CompleteFn,
        compaction: CompactionPolicy,
        index_order: bool,
    ) -> None:
        self.kv = KVStore()
        self.applied = Index(0)
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self._node_id = node_id
        self._who = who
        """``node <id>`` or ``node <id> group <gid>``, for the messages of violations."""
        self._rng = rng
        self._checker = checker
        self._on_complete = on_complete
        self._compaction = compaction
        self._index_order = index_order
        """Complete requests in index / request id order (``HostNode``) rather than in the
        order they arrived (``SimNode``): the two differ only in rare runs, and each mode
        keeps its own so that every existing seed replays bit-for-bit."""
        self._waiters: dict[Index, list[_Waiter]] = {}
        self._reads: dict[int, _Read] = {}
        self._compact_at = Index(0)

    def _ordered(self, keys: Iterable[_K]) -> list[_K]:
        return sorted(keys) if self._index_order else list(keys)

    def restart(self, persisted: PersistedState) -> None:
        """Rebuild from ``persisted`` after the core or host was (re)built from it."""
        self.kv = KVStore()
        self.applied = Index(0)
        if persisted.snapshot is not None:
            # The state machine is volatile here (as in etcd's raftexample): it is rebuilt
            # from the durable snapshot and the committed entries the core hands out again.
            self.kv.restore(persisted.snapshot.data)
            self.applied = persisted.snapshot.meta.index
        self._checker.observe_restart(self._node_id, self.applied)
        self._schedule_compaction()

    def crash(self) -> None:
        """Every request in flight ends "unknown": the client cannot tell what happened."""
        for index in self._ordered(self._waiters):
            for waiter in self._waiters.pop(index):
                self._on_complete(waiter.handle, Outcome.UNKNOWN, None)
        for request_id in self._ordered(self._reads):
            self._on_complete(self._reads[request_id].handle, Outcome.UNKNOWN, None)
        self._reads.clear()

    # ------------------------------------------------------------------ requests

    def wait(self, proposed: Proposed, data: bytes, handle: Any) -> None:
        self._waiters.setdefault(proposed.index, []).append(
            _Waiter(handle=handle, term=proposed.term, data=data)
        )

    def wait_read(self, request_id: int, key: str, handle: Any) -> None:
        self._reads[request_id] = _Read(handle=handle, key=key)

    def cancel(self, handle: Any) -> None:
        """Forget a request its client gave up on (timeout)."""
        for request_id in [r for r, read in self._reads.items() if read.handle is handle]:
            del self._reads[request_id]

    # ------------------------------------------------------------------ Ready

    def apply(self, ready: Ready, term: Term) -> None:
        """Install the snapshot and apply the committed entries of ``ready``; ``term`` is
        the node's durable term (for the checker)."""
        snap = ready.apply_snapshot
        if snap is not None:
            self.kv.restore(snap.data)
            self.snapshots_installed += 1
            self._checker.observe_snapshot_applied(self._node_id, snap.meta.index, snap.data)
            self.applied = snap.meta.index
            for index in self._ordered(i for i in self._waiters if i <= snap.meta.index):
                # The snapshot hides which entry landed at the index.
                for waiter in self._waiters.pop(index):
                    self._on_complete(waiter.handle, Outcome.UNKNOWN, None)
            self._schedule_compaction()
        for entry in ready.committed_entries:
            self._checker.observe_apply(self._node_id, entry, term)
            result = self.kv.apply(entry.data) if entry.kind is EntryKind.NORMAL else None
            self.applied = entry.index
            waiters = self._waiters.pop(entry.index, None)
            if waiters:
                self._resolve(entry, waiters, result)
        for state in ready.read_states:
            read = self._reads.get(state.request_id)
            if read is not None:
                read.index = state.index

    def settle(self, compact: Callable[[Index, bytes], None]) -> None:
        """After ``advance``: answer the reads now applied, and compact when due."""
        self._serve_reads()
        if self.applied >= self._compact_at:
            data = self.kv.snapshot()
            compact(self.applied, data)
            self.snapshots_taken += 1
            self._checker.observe_snapshot_taken(self._node_id, self.applied, data)
            self._schedule_compaction()

    def _resolve(self, entry: Entry, waiters: list[_Waiter], result: ApplyResult | None) -> None:
        for waiter in waiters:
            if entry.term == waiter.term:
                require(
                    entry.kind is EntryKind.NORMAL and entry.data == waiter.data,
                    "proposal_identity",
                    f"{self._who}: index {entry.index} term {entry.term} was promised to "
                    f"command {waiter.data!r} but holds {entry.kind.name} {entry.data!r}",
                )
                self._on_complete(waiter.handle, Outcome.OK, result)
            else:
                self._on_complete(waiter.handle, Outcome.FAIL, None)

    def _serve_reads(self) -> None:
        if not self._reads:
            return
        done = [
            (request_id, read)
            for request_id, read in self._reads.items()
            if read.index is not None and read.index <= self.applied
        ]
        for request_id, read in done:
            del self._reads[request_id]
            value = self.kv.get(read.key)
            self._on_complete(read.handle, Outcome.OK, ApplyResult(ok=True, value=value))

    def _schedule_compaction(self) -> None:
        policy = self._compaction
        self._compact_at = Index(
            self.applied + self._rng.randint(policy.min_entries, policy.max_entries)
        )


def carry_out(
    crash_at: CrashPoint | None,
    *,
    must_sync: bool,
    sync: Callable[[], None],
    messages: Iterable[Message],
    send: Callable[[Message], None],
) -> bool:
    """The middle of a Ready, after its write: sync if ``must_sync``, then send. True if
    the armed ``crash_at`` strikes first (a Ready is never half sent: the messages leave
    only once the write is durable, ``consensus.api``)."""
    if crash_at is CrashPoint.BEFORE_SYNC:
        return True
    if must_sync:
        sync()
    if crash_at is CrashPoint.AFTER_PERSIST:
        return True
    for message in messages:
        send(message)
    return crash_at is CrashPoint.AFTER_SEND


class SimNode:
    def __init__(
        self,
        node_id: NodeId,
        *,
        factory: CoreFactory,
        config: CoreConfig,
        initial_conf: ConfState,
        rng: random.Random,
        checker: SafetyChecker,
        on_complete: CompleteFn,
        logger: Logger | None = None,
        compaction: CompactionPolicy = CompactionPolicy(),
    ) -> None:
        self.id = node_id
        self.disk = SimDisk()
        self.replica = Replica(
            node_id,
            who=f"node {node_id}",
            rng=rng,
            checker=checker,
            on_complete=on_complete,
            compaction=compaction,
            index_order=False,
        )
        self.core: ConsensusCore | None = None
        self.incarnation = 0
        self.crash_at: CrashPoint | None = None
        """Armed by the fault injector: crash at this point of the next matching Ready."""
        self.crash_on = CrashTrigger.ANY
        """Which Ready ``crash_at`` waits for."""
        self.readies = 0
        """Readys processed so far: a step that processed none changed nothing observable."""
        self._factory = factory
        self._config = config
        self._initial_conf = initial_conf
        self._rng = rng
        self._checker = checker
        self._logger: Logger = logger if logger is not None else NullLogger()
        self.start()

    @property
    def alive(self) -> bool:
        return self.core is not None

    @property
    def kv(self) -> KVStore:
        return self.replica.kv

    @property
    def applied(self) -> Index:
        return self.replica.applied

    @property
    def snapshots_taken(self) -> int:
        return self.replica.snapshots_taken

    @property
    def snapshots_installed(self) -> int:
        return self.replica.snapshots_installed

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """(Re)build the core from what the disk holds durably."""
        persisted = self.disk.load()
        fresh = persisted == PersistedState()
        self.core = self._factory(
            self._config,
            rng=random.Random(self._rng.getrandbits(64)),
            persisted=None if fresh else persisted,
            initial_conf=self._initial_conf,
            logger=self._logger,
        )
        self.incarnation += 1
        self.replica.restart(persisted)

    def crash(self, *, keep_unsynced: int = 0) -> int:
        """Drop the core and the volatile state; return the unsynced writes lost."""
        self.core = None
        self.crash_at = None
        self.crash_on = CrashTrigger.ANY
        lost = self.disk.crash(keep=keep_unsynced)
        self.replica.crash()
        return lost

    def live_core(self) -> ConsensusCore:
        core = self.core
        if core is None:
            raise InvariantViolation("simulator", f"node {self.id} is down")
        return core

    # ------------------------------------------------------------------ inputs

    def tick(self, send: Callable[[Message], None]) -> bool:
        self.live_core().tick()
        return self.drain(send)

    def step(self, message: Message, send: Callable[[Message], None]) -> bool:
        self.live_core().step(message)
        return self.drain(send)

    def propose(self, data: bytes, handle: Any, send: Callable[[Message], None]) -> Proposed:
        """Raises ``NotLeader`` / ``ProposalDropped`` from the core unchanged."""
        proposed = self.live_core().propose(data)
        self.replica.wait(proposed, data, handle)
        return proposed

    def read(self, request_id: int, key: str, mode: ReadMode, handle: Any) -> None:
        """Raises ``NotLeader`` / ``ProposalDropped`` from the core unchanged."""
        self.live_core().read_index(request_id, mode=mode)
        self.replica.wait_read(request_id, key, handle)

    def cancel(self, handle: Any) -> None:
        """Forget a request its client gave up on (timeout)."""
        self.replica.cancel(handle)

    # ------------------------------------------------------------------ Ready

    def drain(self, send: Callable[[Message], None]) -> bool:
        """Process every pending Ready; True if an armed crash point was hit (crash now)."""
        core = self.core
        while core is not None and core.has_ready():
            ready = core.ready()
            self.readies += 1
            crash_at = self._armed_for(ready) if self.crash_at is not None else None
            write = self.disk.write(ready)
            if write is not None:
                self._checker.observe_persist(self.id, write, self.disk)
            if carry_out(
                crash_at,
                must_sync=ready.must_sync,
                sync=self.disk.sync,
                messages=ready.messages,
                send=send,
            ):
                return True
            self.replica.apply(ready, self.disk.hard_state.term)
            core.advance(ready)
            self.replica.settle(core.compact)
        return False

    def _armed_for(self, ready: Ready) -> CrashPoint | None:
        """The armed crash point if ``ready`` is the kind of Ready it waits for."""
        match self.crash_on:
            case CrashTrigger.ANY:
                return self.crash_at
            case CrashTrigger.VOTE:
                after = ready.hard_state
                before = self.disk.hard_state
                if after is None or (after.term, after.vote) == (before.term, before.vote):
                    return None
                return self.crash_at
            case CrashTrigger.ACK:
                return self.crash_at if ready.entries and ready.messages else None
