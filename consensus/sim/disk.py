"""A simulated per-node disk with the storage contract of ``consensus.api.Ready``.

Writes land in an unsynced buffer, in order, one record per ``write()`` (like one SQLite
transaction per Ready). ``sync()`` makes everything written so far durable. ``crash()``
keeps a prefix of the unsynced records (the OS may have flushed some of them already) and
loses the rest; ``load()`` hands the durable state back as ``PersistedState`` for a restart.
The node itself always reads its own writes (``entry``, ``snapshot_index``): a running
process sees the page cache, only a crash reveals what never reached the platter.

Within one record the order is: ``truncate_from``, ``entries`` (insert or overwrite by
index), ``snapshot`` (entries at or below its index are dropped; an older snapshot than the
one held is ignored), ``hard_state``. This is the contract the SQLite store implements too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.api import PersistedState, Ready
from consensus.types import Entry, HardState, Index, Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskWrite:
    """The persistent part of one Ready."""

    hard_state: HardState | None = None
    truncate_from: Index | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None

    @classmethod
    def from_ready(cls, ready: Ready) -> DiskWrite:
        return cls(
            hard_state=ready.hard_state,
            truncate_from=ready.truncate_from,
            entries=ready.entries,
            snapshot=ready.snapshot,
        )

    def is_empty(self) -> bool:
        return (
            self.hard_state is None
            and self.truncate_from is None
            and not self.entries
            and self.snapshot is None
        )


@dataclass(slots=True)
class _Image:
    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: dict[Index, Entry] = field(default_factory=dict)
    last_index: int = 0
    """Upper bound on the highest index in ``entries`` (truncation scans down from it)."""

    def copy(self) -> _Image:
        return _Image(
            hard_state=self.hard_state,
            snapshot=self.snapshot,
            entries=dict(self.entries),
            last_index=self.last_index,
        )

    def apply(self, write: DiskWrite) -> None:
        if write.truncate_from is not None:
            for index in range(write.truncate_from, self.last_index + 1):
                self.entries.pop(Index(index), None)
            self.last_index = min(self.last_index, write.truncate_from - 1)
        for entry in write.entries:
            self.entries[entry.index] = entry
            if entry.index > self.last_index:
                self.last_index = entry.index
        snap = write.snapshot
        if snap is not None and (
            self.snapshot is None or snap.meta.index >= self.snapshot.meta.index
        ):
            self.snapshot = snap
            for index in [i for i in self.entries if i <= snap.meta.index]:
                del self.entries[index]
        if write.hard_state is not None:
            self.hard_state = write.hard_state


@dataclass(slots=True)
class DiskStats:
    writes: int = 0
    syncs: int = 0
    lost_writes: int = 0
    """Unsynced records thrown away by crashes."""


class SimDisk:
    """One node's durable consensus state: hard state, log and snapshot."""

    __slots__ = ("_durable", "_pending", "_view", "stats")

    def __init__(self) -> None:
        self._durable = _Image()
        self._view = _Image()
        self._pending: list[DiskWrite] = []
        self.stats = DiskStats()

    # ------------------------------------------------------------------ writes

    def write(self, ready: Ready) -> DiskWrite | None:
        """Buffer the persistent part of ``ready``; durable only after ``sync()``."""
        record = DiskWrite.from_ready(ready)
        if record.is_empty():
            return None
        self._view.apply(record)
        self._pending.append(record)
        self.stats.writes += 1
        return record

    def sync(self) -> None:
        for record in self._pending:
            self._durable.apply(record)
        self._pending.clear()
        self.stats.syncs += 1

    @property
    def unsynced_writes(self) -> int:
        return len(self._pending)

    def crash(self, *, keep: int = 0) -> int:
        """Lose every unsynced record except the first ``keep``; return how many were lost."""
        keep = max(0, min(keep, len(self._pending)))
        for record in self._pending[:keep]:
            self._durable.apply(record)
        lost = len(self._pending) - keep
        self._pending.clear()
        self._view = self._durable.copy()
        self.stats.lost_writes += lost
        return lost

    # ------------------------------------------------------------------ reads

    def load(self) -> PersistedState:
        """The durable state only, as a restarting core needs it."""
        image = self._durable
        floor = image.snapshot.meta.index if image.snapshot is not None else 0
        entries = tuple(image.entries[i] for i in sorted(image.entries) if i > floor)
        return PersistedState(hard_state=image.hard_state, snapshot=image.snapshot, entries=entries)

    def entry(self, index: Index) -> Entry | None:
        """The entry this node has written at ``index`` (synced or not)."""
        return self._view.entries.get(index)

    @property
    def snapshot(self) -> Snapshot | None:
        return self._view.snapshot

    @property
    def snapshot_index(self) -> Index:
        snap = self._view.snapshot
        return snap.meta.index if snap is not None else Index(0)

    @property
    def hard_state(self) -> HardState:
        return self._view.hard_state
