"""The in-memory Raft log after the last snapshot, and what of it storage still has to write.

The core keeps every entry after the last snapshot in memory (memory is bounded by
application-triggered compaction), so term lookups and conflict searches never touch
storage. Storage only persists what ``Ready`` tells it to; this class tracks that split:

- ``unstable_from``: the first index not yet handed to storage in a ``Ready``;
- ``pending_truncate``: persisted entries at or above this index must be deleted (they were
  overwritten by a conflicting suffix, §5.3, or superseded by a received snapshot, §7);
- ``persisted``: the last index storage has acknowledged through ``advance()``. The leader
  counts its own match index only up to here.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.invariants import require
from consensus.types import Entry, Index, Term

_ZERO_INDEX = Index(0)
_ZERO_TERM = Term(0)


class RaftLog:
    def __init__(
        self,
        *,
        snapshot_index: Index = _ZERO_INDEX,
        snapshot_term: Term = _ZERO_TERM,
        entries: Sequence[Entry] = (),
    ) -> None:
        self._offset = snapshot_index
        self._offset_term = snapshot_term
        self._entries: list[Entry] = []
        for i, entry in enumerate(entries):
            require(
                entry.index == snapshot_index + 1 + i,
                f"log entries must be contiguous after snapshot index {snapshot_index}",
            )
            self._entries.append(entry)
        # Everything given at construction came from storage, hence is already durable.
        self._unstable_from = Index(self.last_index + 1)
        self._pending_truncate: Index | None = None
        self._persisted = self.last_index

    # ------------------------------------------------------------------ queries

    @property
    def snapshot_index(self) -> Index:
        return self._offset

    @property
    def snapshot_term(self) -> Term:
        return self._offset_term

    @property
    def first_index(self) -> Index:
        """The lowest index still held (snapshot index + 1)."""
        return Index(self._offset + 1)

    @property
    def last_index(self) -> Index:
        return Index(self._offset + len(self._entries))

    @property
    def last_term(self) -> Term:
        term = self.term(self.last_index)
        require(term is not None, "the last index always has a known term")
        return term if term is not None else Term(0)

    @property
    def persisted(self) -> Index:
        return self._persisted

    def term(self, index: int) -> Term | None:
        """The term of the entry at ``index``; None if compacted away or beyond the end."""
        if index == self._offset:
            return self._offset_term
        if index < self._offset or index > self.last_index:
            return None
        return self._entries[index - self._offset - 1].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        require(self._offset < index <= self.last_index, f"entry {index} is not in the log")
        return self._entries[index - self._offset - 1]

    def slice(self, lo: int, hi: int, *, max_bytes: int | None = None) -> tuple[Entry, ...]:
        """Entries with ``lo <= index <= hi``; with ``max_bytes``, stop before the entry that
        would exceed it, but always return at least one entry (a single large entry must
        still make progress)."""
        require(lo > self._offset, f"slice from {lo} reaches into the snapshot")
        hi = min(hi, self.last_index)
        if lo > hi:
            return ()
        chosen = self._entries[lo - self._offset - 1 : hi - self._offset]
        if max_bytes is None:
            return tuple(chosen)
        total = 0
        for n, entry in enumerate(chosen):
            total += entry.size_bytes()
            if total > max_bytes and n > 0:
                return tuple(chosen[:n])
        return tuple(chosen)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log is at least as up to date as ours if its last term is higher, or
        equal with an index at least as high."""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index
        )

    def find_conflict(self, entries: Sequence[Entry]) -> Index:
        """The index of the first entry that is not already in the log with the same term
        (either it conflicts or it is new), or 0 if every entry is already present.

        Entries at or below the snapshot are committed, hence match (Log Matching, §5.3).
        """
        for entry in entries:
            if entry.index <= self._offset:
                continue
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return Index(0)

    def first_index_of_term(self, index: int) -> Index:
        """The first index of the run of entries having the same term as ``index``, not
        going below the first index held (the rejection hint of §5.3)."""
        term = self.term(index)
        require(term is not None, f"no term known at {index}")
        i = index
        while i - 1 > self._offset and self.term(i - 1) == term:
            i -= 1
        return Index(i)

    def last_index_of_term(self, term: int, at_most: int) -> Index | None:
        """The highest index <= ``at_most`` whose entry has exactly ``term``, if we hold one.

        Terms only grow along the log, so the backwards scan stops at the first lower term.
        """
        i = min(at_most, self.last_index)
        while i >= self._offset:
            t = self.term(i)
            if t is None or t < term:
                return None
            if t == term:
                return Index(i)
            i -= 1
        return None

    # ------------------------------------------------------------------ mutation

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` (contiguous), first truncating any suffix they overwrite."""
        if not entries:
            return
        first = entries[0].index
        for i, entry in enumerate(entries):
            require(entry.index == first + i, "appended entries must be contiguous")
        require(
            self._offset < first <= self.last_index + 1,
            f"append at {first} leaves a gap or reaches into the snapshot "
            f"(snapshot {self._offset}, last {self.last_index})",
        )
        if first <= self.last_index:
            self._truncate_from(first)
        self._entries.extend(entries)

    def maybe_append(
        self, prev_index: Index, prev_term: Term, entries: Sequence[Entry], committed: Index
    ) -> Index | None:
        """The follower side of AppendEntries (§5.3). Returns the last index the log now
        shares with the leader, or None if the consistency check on (prev_index, prev_term)
        fails.

        Only a *conflicting* suffix is truncated: a stale or duplicated message whose entries
        are all present changes nothing, so it can never shorten a longer matching log.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = Index(prev_index + len(entries))
        conflict = self.find_conflict(entries)
        if conflict:
            require(
                conflict > committed,
                f"entry {conflict} conflicts with the committed prefix (commit {committed})",
            )
            self.append(entries[conflict - entries[0].index :])
        return last_new

    def _truncate_from(self, index: Index) -> None:
        del self._entries[index - self._offset - 1 :]
        if index < self._unstable_from:
            # Storage may hold entries from `index` on: tell it to delete them.
            self._pending_truncate = (
                index if self._pending_truncate is None else min(self._pending_truncate, index)
            )
            self._unstable_from = index
        self._persisted = Index(min(self._persisted, index - 1))

    def compact(self, index: Index) -> None:
        """Drop entries up to ``index`` (covered by a snapshot the caller keeps)."""
        require(self._offset < index <= self.last_index, f"cannot compact to {index}")
        require(index <= self._persisted, f"cannot compact unpersisted entry {index}")
        term = self.term(index)
        require(term is not None, "compaction point has a term")
        self._offset_term = term if term is not None else Term(0)
        del self._entries[: index - self._offset]
        self._offset = index

    def restore(self, index: Index, term: Term) -> None:
        """Replace the whole log by a snapshot at (``index``, ``term``) received from the
        leader (§7: "discard the entire log")."""
        self._entries = []
        self._offset = index
        self._offset_term = term
        self._unstable_from = Index(index + 1)
        self._pending_truncate = Index(index + 1)
        self._persisted = index

    # ------------------------------------------------------------------ persistence

    def has_unstable(self) -> bool:
        return self._pending_truncate is not None or self._unstable_from <= self.last_index

    def take_unstable(self) -> tuple[Index | None, tuple[Entry, ...]]:
        """Hand the not-yet-written part to a ``Ready``: (truncate_from, entries)."""
        truncate = self._pending_truncate
        entries = self.slice(max(self._unstable_from, self.first_index), self.last_index)
        self._pending_truncate = None
        self._unstable_from = Index(self.last_index + 1)
        return truncate, entries

    def persisted_to(self, index: Index) -> None:
        """Storage wrote every entry handed out up to ``index``. Entries overwritten since
        they were handed out are back below ``unstable_from`` and are not counted."""
        self._persisted = Index(max(self._persisted, min(index, self._unstable_from - 1)))
