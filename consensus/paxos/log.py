"""An acceptor's log: slot -> accepted entry, with holes, above an optional snapshot.

Unlike a Raft log, a Paxos acceptor may hold slot 7 without slot 6 (an Accept was lost, or a
new leader's recovery has not reached it yet), so the log is a mapping, not a list. Slots at
or below the snapshot index are chosen, applied and dropped.
"""

from __future__ import annotations

from consensus.types import Entry, Index, Snapshot


class PaxosLog:
    def __init__(self, snapshot: Snapshot | None, entries: tuple[Entry, ...]) -> None:
        self.snapshot = snapshot
        self._entries: dict[int, Entry] = {}
        self._last = self.snapshot_index
        for entry in entries:
            if entry.index > self.snapshot_index:
                self.put(entry)

    @property
    def snapshot_index(self) -> Index:
        return self.snapshot.meta.index if self.snapshot is not None else Index(0)

    @property
    def first_index(self) -> Index:
        return Index(self.snapshot_index + 1)

    @property
    def last_index(self) -> Index:
        """Highest slot holding a value (or the snapshot index when there is none)."""
        return Index(self._last)

    def get(self, slot: int) -> Entry | None:
        return self._entries.get(slot)

    def put(self, entry: Entry) -> None:
        self._entries[entry.index] = entry
        self._last = max(self._last, entry.index)

    def run(self, start: int, stop: int, max_bytes: int) -> list[Entry]:
        """Contiguous entries from ``start`` up to ``stop`` inclusive, ending at the first
        hole or once ``max_bytes`` is reached; never empty if ``start`` is present (an entry
        larger than the limit still travels alone, as in etcd)."""
        out: list[Entry] = []
        size = 0
        slot = start
        while slot <= stop:
            entry = self._entries.get(slot)
            if entry is None:
                break
            size += entry.size_bytes()
            if out and size > max_bytes:
                break
            out.append(entry)
            slot += 1
        return out

    def above(self, start: int, max_bytes: int) -> tuple[list[Entry], Index]:
        """Accepted entries at slots >= ``start`` in slot order, paged by ``max_bytes``.
        Returns the page and the slot to continue from (0 when the page is the last)."""
        slots = sorted(s for s in self._entries if s >= start)
        out: list[Entry] = []
        size = 0
        for slot in slots:
            entry = self._entries[slot]
            size += entry.size_bytes()
            if out and size > max_bytes:
                return out, Index(slot)
            out.append(entry)
        return out, Index(0)

    def compact(self, snapshot: Snapshot) -> None:
        """Drop every slot at or below the snapshot: they are chosen and applied."""
        self.snapshot = snapshot
        index = snapshot.meta.index
        for slot in [s for s in self._entries if s <= index]:
            del self._entries[slot]
        self._last = max(self._last, index)
