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

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.api import CoreConfig, Logger, PersistedState, Proposed, ReadMode
from consensus.backends import Backend
from consensus.host import HostConfig, HostReady, MultiGroupHost
from consensus.sim.checkers import InvariantViolation, SafetyChecker
from consensus.sim.hostdisk import HostDisk
from consensus.sim.node import (
    CompactionPolicy,
    CompleteFn,
    CrashPoint,
    CrashTrigger,
    NullLogger,
    Replica,
    carry_out,
)
from consensus.types import ConfState, GroupId, Message, NodeId

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
        self._rng = rng
        policy = compaction if compaction is not None else CompactionPolicy()
        self.replicas: dict[GroupId, Replica] = {
            gid: Replica(
                node_id,
                who=f"node {node_id} group {gid}",
                rng=rng,
                checker=spec.checker,
                on_complete=spec.on_complete,
                compaction=policy,
                index_order=True,
            )
            for gid, spec in sorted(self._specs.items())
        }
        self.incarnation = 0
        self.crash_at: CrashPoint | None = None
        self.crash_on = CrashTrigger.ANY
        self.readies = 0
        self.touched: set[GroupId] = set()
        """Groups whose Readys were processed since the simulation last checked them."""
        self._host_config = host_config
        self._initial_conf = initial_conf
        self._host_factory = host_factory
        self._logger = NullLogger()
        self.start()

    @property
    def alive(self) -> bool:
        return self.host is not None

    @property
    def snapshots_taken(self) -> int:
        return sum(r.snapshots_taken for r in self.replicas.values())

    @property
    def snapshots_installed(self) -> int:
        return sum(r.snapshots_installed for r in self.replicas.values())

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
            self.replicas[gid].restart(persisted)
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
            self.replicas[gid].crash()
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
        self.replicas[group_id].wait(proposed, data, handle)
        return proposed

    def read(
        self, group_id: GroupId, request_id: int, key: str, mode: ReadMode, handle: Any
    ) -> None:
        """Raises ``NotLeader`` / ``ProposalDropped`` unchanged."""
        self.live_host().read_index(group_id, request_id, mode=mode)
        self.replicas[group_id].wait_read(request_id, key, handle)

    def cancel(self, group_id: GroupId, handle: Any) -> None:
        self.replicas[group_id].cancel(handle)

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
            if carry_out(
                crash_at,
                must_sync=host_ready.must_sync,
                sync=self.disk.sync,
                messages=(m for _dst, messages in host_ready.messages for m in messages),
                send=send,
            ):
                return True
            for group_ready in host_ready.groups:
                gid = group_ready.group_id
                self.replicas[gid].apply(group_ready.ready, self.disk.group(gid).hard_state.term)
            host.advance(host_ready)
            for group_ready in host_ready.groups:
                gid = group_ready.group_id
                self.touched.add(gid)
                self.replicas[gid].settle(functools.partial(host.compact, gid))
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
