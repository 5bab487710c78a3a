"""A simulated node disk for a ``MultiGroupHost``: one record per ``HostReady``.

The runtime writes the merged ``HostReady`` of all its groups in ONE storage transaction and
fsyncs once if any group asked for it (``consensus.host``: group commit). The simulated disk
mirrors that: ``write(host_ready)`` appends one record covering every group it touches,
``sync()`` makes every record so far durable, and ``crash(keep=n)`` keeps the first ``n``
unsynced records and loses the rest *for all groups at once* -- a transaction is atomic, so a
crash never keeps one group's half of a record and drops another's.

Each group's image is a plain ``SimDisk`` (so the single-group storage contract of
``tests/test_storage_contract.py`` is the contract of every group here too); this class only
decides which of their unsynced writes survive, by counting per group how many of the kept
host records touched it.
"""

from __future__ import annotations

from collections.abc import Iterable

from consensus.api import PersistedState
from consensus.host import HostReady
from consensus.sim.disk import DiskStats, DiskWrite, SimDisk
from consensus.types import GroupId


class HostDisk:
    """One node's durable state for every group it hosts."""

    __slots__ = ("_disks", "_pending", "stats")

    def __init__(self, group_ids: Iterable[GroupId]) -> None:
        self._disks: dict[GroupId, SimDisk] = {gid: SimDisk() for gid in sorted(group_ids)}
        self._pending: list[tuple[GroupId, ...]] = []
        """Unsynced host records: the groups each one wrote, in write order."""
        self.stats = DiskStats()

    def group(self, group_id: GroupId) -> SimDisk:
        """The image of one group (reads see unsynced writes, as the page cache does)."""
        return self._disks[group_id]

    # ------------------------------------------------------------------ writes

    def write(self, host_ready: HostReady) -> list[tuple[GroupId, DiskWrite]]:
        """Buffer the persistent part of every group's Ready as ONE record."""
        written: list[tuple[GroupId, DiskWrite]] = []
        for group_ready in host_ready.groups:
            record = self._disks[group_ready.group_id].write(group_ready.ready)
            if record is not None:
                written.append((group_ready.group_id, record))
        if written:
            self._pending.append(tuple(gid for gid, _ in written))
            self.stats.writes += 1
        return written

    def sync(self) -> None:
        """One fsync for all groups."""
        for gid in sorted({gid for record in self._pending for gid in record}):
            self._disks[gid].sync()
        self._pending.clear()
        self.stats.syncs += 1

    @property
    def unsynced_writes(self) -> int:
        return len(self._pending)

    def crash(self, *, keep: int = 0) -> int:
        """Lose every unsynced host record except the first ``keep``; return how many were
        lost. A record survives or vanishes for all of its groups together."""
        keep = max(0, min(keep, len(self._pending)))
        kept_per_group: dict[GroupId, int] = {}
        for record in self._pending[:keep]:
            for gid in record:
                kept_per_group[gid] = kept_per_group.get(gid, 0) + 1
        for gid, disk in self._disks.items():
            disk.crash(keep=kept_per_group.get(gid, 0))
        lost = len(self._pending) - keep
        self._pending.clear()
        self.stats.lost_writes += lost
        return lost

    # ------------------------------------------------------------------ reads

    def load(self, group_id: GroupId) -> PersistedState:
        """The durable state of one group, as its restarting core needs it."""
        return self._disks[group_id].load()
