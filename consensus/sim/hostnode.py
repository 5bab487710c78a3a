"""One simulated server running a ``MultiGroupHost`` with many groups, each with a KV replica.

The node carries out each ``HostReady`` in the order ``consensus.host`` prescribes, for all
groups at once: persist every group's Ready as ONE disk record (``HostDisk``), sync once if
``must_sync`` -> send every message -> apply each group's snapshot and committed entries ->
``advance`` -> answer the reads that are applied -> compact. Crash points and triggers are
those of ``consensus.sim.node.SimNode`` (a trigger matches if any group's Ready matches), and
a crash loses the unsynced records of every group together. A restart builds a fresh host
and re-adds every group from its durable ``PersistedState``.

Client requests name a group; their outcomes come back through the group's ``on_complete``
callback exactly as with ``SimNode``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consensus.api import CoreConfig, Logger, PersistedState, Proposed, ReadMode, Ready
from consensus.backends import Backend
from consensus.host import HostConfig, HostReady, MultiGroupHost
from consensus.sim.checkers import InvariantViolation, SafetyChecker, require
from consensus.sim.hostdisk import HostDisk
from consensus.sim.kv import ApplyResult, KVStore
from consensus.sim.linearizability import Outcome
from consensus.sim.node import (
    CompactionPolicy,
    CompleteFn,
    CrashPoint,
    CrashTrigger,
    NullLogger,
)
from consensus.types import ConfState, Entry, EntryKind, GroupId, Index, Message, NodeId

HostFactory = Callable[[HostConfig, random.Random, Logger], MultiGroupHost]
"""Builds the host (``MultiGroupHost`` itself, or a deliberately broken subclass in tests)."""


def default_host_factory(config: HostConfig, rng: random.Random, logger: Logger) -> MultiGroupHost:
    return MultiGroupHost(config, rng=rng, logger=logger)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSpec:
    """One group every node hosts: its id, backend, core config (node id filled in per
    node) and the checker and completion callback the simulation gives it."""

    group_id: GroupId
    backend: Backend
    core_config: CoreConfig
    checker: SafetyChecker
    on_complete: CompleteFn


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


@dataclass(slots=True)
class GroupReplica:
    """A node's volatile per-group state: its KV replica and the requests it waits on."""

    kv: KVStore = field(default_factory=KVStore)
    applied: Index = Index(0)
    waiters: dict[Index, list[_Waiter]] = field(default_factory=dict)
    reads: dict[int, _Read] = field(default_factory=dict)
    compact_at: Index = Index(0)


class HostNode:
    def __init__(
        self,
        node_id: NodeId,
        *,
        groups: Sequence[GroupSpec],
        host_config: HostConfig,
        initial_conf: ConfState,
        rng: random.Random,
        host_factory: HostFactory = default_host_factory,
        compaction: CompactionPolicy | None = None,
    ) -> None:
        self.id = node_id
        self._specs: dict[GroupId, GroupSpec] = {spec.group_id: spec for spec in groups}
        self.disk = HostDisk(self._specs)
        self.host: MultiGroupHost | None = None
        self.replicas: dict[GroupId, GroupReplica] = {}
        self.incarnation = 0
        self.crash_at: CrashPoint | None = None
        self.crash_on = CrashTrigger.ANY
        self.readies = 0
        self.touched: set[GroupId] = set()
        """Groups whose Readys were processed since the simulation last checked them."""
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self._host_config = host_config
        self._initial_conf = initial_conf
        self._rng = rng
        self._host_factory = host_factory
        self._compaction = compaction if compaction is not None else CompactionPolicy()
        self._logger = NullLogger()
        self.start()

    @property
    def alive(self) -> bool:
        return self.host is not None

    def live_host(self) -> MultiGroupHost:
        host = self.host
        if host is None:
            raise InvariantViolation("simulator", f"node {self.id} is down")
        return host

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """(Re)build the host and every group from what the disk holds durably."""
        host = self._host_factory(
            self._host_config, random.Random(self._rng.getrandbits(64)), self._logger
        )
        self.replicas = {}
        for gid in sorted(self._specs):
            spec = self._specs[gid]
            persisted = self.disk.load(gid)
            host.add_group(
                gid,
                spec.backend,
                spec.core_config,
                persisted=None if persisted == PersistedState() else persisted,
                initial_conf=self._initial_conf,
            )
            replica = GroupReplica()
            if persisted.snapshot is not None:
                # Volatile state machine, rebuilt from the durable snapshot (as SimNode).
                replica.kv.restore(persisted.snapshot.data)
                replica.applied = persisted.snapshot.meta.index
            spec.checker.observe_restart(self.id, replica.applied)
            self._schedule_compaction(replica)
            self.replicas[gid] = replica
        self.host = host
        self.incarnation += 1
        self.touched = set(self._specs)

    def crash(self, *, keep_unsynced: int = 0) -> int:
        """Drop the host and all volatile state; return the unsynced host records lost."""
        self.host = None
        self.crash_at = None
        self.crash_on = CrashTrigger.ANY
        lost = self.disk.crash(keep=keep_unsynced)
        for gid in sorted(self.replicas):
            replica = self.replicas[gid]
            complete = self._specs[gid].on_complete
            for index in sorted(replica.waiters):
                for waiter in replica.waiters.pop(index):
                    complete(waiter.handle, Outcome.UNKNOWN, None)
            for request_id in sorted(replica.reads):
                complete(replica.reads[request_id].handle, Outcome.UNKNOWN, None)
            replica.reads.clear()
        self.touched.clear()
        return lost

    # ------------------------------------------------------------------ inputs

    def tick(self, send: Callable[[Message], None]) -> bool:
        self.live_host().tick()
        return self.drain(send)

    def step(self, message: Message, send: Callable[[Message], None]) -> bool:
        self.live_host().step(message)
        return self.drain(send)

    def propose(self, group_id: GroupId, data: bytes, handle: Any) -> Proposed:
        """Raises ``NotLeader`` / ``ProposalDropped`` unchanged."""
        proposed = self.live_host().propose(group_id, data)
        self.replicas[group_id].waiters.setdefault(proposed.index, []).append(
            _Waiter(handle=handle, term=proposed.term, data=data)
        )
        return proposed

    def read(
        self, group_id: GroupId, request_id: int, key: str, mode: ReadMode, handle: Any
    ) -> None:
        """Raises ``NotLeader`` / ``ProposalDropped`` unchanged."""
        self.live_host().read_index(group_id, request_id, mode=mode)
        self.replicas[group_id].reads[request_id] = _Read(handle=handle, key=key)

    def cancel(self, group_id: GroupId, handle: Any) -> None:
        reads = self.replicas[group_id].reads
        for request_id in [r for r, read in reads.items() if read.handle is handle]:
            del reads[request_id]

    # ------------------------------------------------------------------ HostReady

    def drain(self, send: Callable[[Message], None]) -> bool:
        """Process every pending HostReady; True if an armed crash point was hit."""
        host = self.host
        while host is not None and host.has_ready():
            host_ready = host.ready()
            self.readies += 1
            crash_at = self._armed_for(host_ready) if self.crash_at is not None else None
            for gid, write in self.disk.write(host_ready):
                self._specs[gid].checker.observe_persist(self.id, write, self.disk.group(gid))
            if crash_at is CrashPoint.BEFORE_SYNC:
                return True
            if host_ready.must_sync:
                self.disk.sync()
            if crash_at is CrashPoint.AFTER_PERSIST:
                return True
            for _dst, messages in host_ready.messages:
                for message in messages:
                    send(message)
            if crash_at is CrashPoint.AFTER_SEND:
                return True
            for group_ready in host_ready.groups:
                self._apply(group_ready.group_id, group_ready.ready)
            host.advance(host_ready)
            for group_ready in host_ready.groups:
                gid = group_ready.group_id
                self.touched.add(gid)
                replica = self.replicas[gid]
                self._serve_reads(gid, replica)
                if replica.applied >= replica.compact_at:
                    data = replica.kv.snapshot()
                    host.compact(gid, replica.applied, data)
                    self.snapshots_taken += 1
                    self._specs[gid].checker.observe_snapshot_taken(self.id, replica.applied, data)
                    self._schedule_compaction(replica)
        return False

    def _armed_for(self, host_ready: HostReady) -> CrashPoint | None:
        match self.crash_on:
            case CrashTrigger.ANY:
                return self.crash_at
            case CrashTrigger.VOTE:
                for group_ready in host_ready.groups:
                    after = group_ready.ready.hard_state
                    before = self.disk.group(group_ready.group_id).hard_state
                    if after is not None and (after.term, after.vote) != (before.term, before.vote):
                        return self.crash_at
                return None
            case CrashTrigger.ACK:
                for group_ready in host_ready.groups:
                    if group_ready.ready.entries and group_ready.ready.messages:
                        return self.crash_at
                return None

    def _apply(self, gid: GroupId, ready: Ready) -> None:
        replica = self.replicas[gid]
        spec = self._specs[gid]
        checker = spec.checker
        snap = ready.apply_snapshot
        if snap is not None:
            replica.kv.restore(snap.data)
            self.snapshots_installed += 1
            checker.observe_snapshot_applied(self.id, snap.meta.index, snap.data)
            replica.applied = snap.meta.index
            for index in sorted(i for i in replica.waiters if i <= snap.meta.index):
                # The snapshot hides which entry landed at the index.
                for waiter in replica.waiters.pop(index):
                    spec.on_complete(waiter.handle, Outcome.UNKNOWN, None)
            self._schedule_compaction(replica)
        term = self.disk.group(gid).hard_state.term
        for entry in ready.committed_entries:
            checker.observe_apply(self.id, entry, term)
            result = replica.kv.apply(entry.data) if entry.kind is EntryKind.NORMAL else None
            replica.applied = entry.index
            waiters = replica.waiters.pop(entry.index, None)
            if waiters:
                self._resolve(gid, entry, waiters, result)
        for state in ready.read_states:
            read = replica.reads.get(state.request_id)
            if read is not None:
                read.index = state.index

    def _resolve(
        self, gid: GroupId, entry: Entry, waiters: list[_Waiter], result: ApplyResult | None
    ) -> None:
        complete = self._specs[gid].on_complete
        for waiter in waiters:
            if entry.term == waiter.term:
                require(
                    entry.kind is EntryKind.NORMAL and entry.data == waiter.data,
                    "proposal_identity",
                    f"node {self.id} group {gid}: index {entry.index} term {entry.term} was "
                    f"promised to command {waiter.data!r} but holds {entry.kind.name} "
                    f"{entry.data!r}",
                )
                complete(waiter.handle, Outcome.OK, result)
            else:
                complete(waiter.handle, Outcome.FAIL, None)

    def _serve_reads(self, gid: GroupId, replica: GroupReplica) -> None:
        if not replica.reads:
            return
        done = [
            (request_id, read)
            for request_id, read in replica.reads.items()
            if read.index is not None and read.index <= replica.applied
        ]
        complete = self._specs[gid].on_complete
        for request_id, read in done:
            del replica.reads[request_id]
            value = replica.kv.get(read.key)
            complete(read.handle, Outcome.OK, ApplyResult(ok=True, value=value))

    def _schedule_compaction(self, replica: GroupReplica) -> None:
        policy = self._compaction
        replica.compact_at = Index(
            replica.applied + self._rng.randint(policy.min_entries, policy.max_entries)
        )
