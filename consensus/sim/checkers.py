"""Safety invariants checked after every simulator step, incrementally.

Each ``observe_*`` method sees one small fact (a status, a disk write, an applied entry) and
raises ``InvariantViolation`` the moment a property breaks, so a failing seed stops at the
step that broke it. Work per call is bounded by what changed, not by the history length.

Properties (Raft §5.2 Figure 3; they hold for Multi-Paxos with "term" read as "ballot"):

* **Election safety**: at most one leader per term.
* **Log matching** (Raft only, a per-backend flag): two logs holding an entry with the same
  index and term agree on it and on everything before it. Checked inductively: entries with
  equal (index, term) must carry equal data and equal predecessor terms.
* **Leader completeness**: a leader of term T holds every entry committed in a term <= T
  (above its snapshot). The commit term of an index is learned from leaders' statuses (a
  leader of term T reporting commit C committed everything <= C in some term <= T) and from
  appliers (a node applying at current term T learned the commit from a leader of term <= T).
* **State machine safety**: no two nodes apply different entries at one index, and each node
  applies a gap-free ascending sequence. Snapshots taken or installed at the same index must
  carry the same state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from consensus.api import Role, Status
from consensus.sim.disk import DiskWrite, SimDisk
from consensus.types import Entry, EntryKind, Index, NodeId, Term


class InvariantViolation(Exception):
    """A safety property broke; ``kind`` names it."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


def require(condition: bool, kind: str, message: str) -> None:
    """Check an invariant; unlike ``assert`` this survives ``python -O``."""
    if not condition:
        raise InvariantViolation(kind, message)


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendTraits:
    """Which properties apply to a backend, and how entries are compared."""

    log_matching: bool
    """Raft's Log Matching property; Multi-Paxos logs have holes and per-slot values."""
    compare_terms: bool = True
    """Compare ``Entry.term`` (the value's identity, ADR 0002) besides kind and data."""
    leader_completeness: bool = True
    joins_with_empty_conf: bool = True
    """Spare nodes start with an empty ``ConfState`` and learn the membership from the
    leader (``consensus.api.CoreFactory``). Turn off for a backend that cannot do that (yet):
    its spares then start with the bootstrap configuration, of which they are not members.
    ``tests/sim/test_operator.py`` ties this to the backend's interaction script
    ``join_empty_conf.txt`` being xfail or not."""


TRAITS: dict[str, BackendTraits] = {
    "raft": BackendTraits(log_matching=True),
    "paxos": BackendTraits(log_matching=False),
}


def _describe(entry: Entry) -> str:
    return f"({entry.index}, term {entry.term}, {entry.kind.name}, {entry.data!r})"


class SafetyChecker:
    __slots__ = (
        "_applied",
        "_commit_term",
        "_committed",
        "_config_changes",
        "_lc_progress",
        "_leader_commit_seen",
        "_leaders",
        "_log_ids",
        "_max_committed",
        "_snapshots",
        "traits",
    )

    def __init__(self, traits: BackendTraits) -> None:
        self.traits = traits
        self._leaders: dict[Term, NodeId] = {}
        self._log_ids: dict[tuple[Index, Term], tuple[EntryKind, bytes, Term | None]] = {}
        self._committed: dict[Index, Entry] = {}
        self._commit_term: dict[Index, Term] = {}
        self._max_committed = Index(0)
        self._leader_commit_seen = Index(0)
        self._applied: dict[NodeId, Index] = {}
        self._lc_progress: dict[NodeId, tuple[Term, Index]] = {}
        self._snapshots: dict[Index, tuple[NodeId, bytes]] = {}
        self._config_changes = 0

    # ------------------------------------------------------------------ queries

    @property
    def leaders_by_term(self) -> dict[Term, NodeId]:
        return dict(self._leaders)

    @property
    def max_committed(self) -> Index:
        return self._max_committed

    def committed_entry(self, index: Index) -> Entry | None:
        return self._committed.get(index)

    @property
    def config_changes_committed(self) -> int:
        """Distinct CONFIG entries some node applied."""
        return self._config_changes

    # ------------------------------------------------------------------ observations

    def observe_status(self, node: NodeId, status: Status, disk: SimDisk) -> None:
        """Call after ``node`` finished processing its Readys."""
        if status.role is not Role.LEADER:
            return
        term = status.term
        holder = self._leaders.setdefault(term, node)
        require(
            holder == node,
            "election_safety",
            f"nodes {holder} and {node} both became leader in term {term}",
        )
        if status.commit > self._leader_commit_seen:
            for i in range(self._leader_commit_seen + 1, status.commit + 1):
                index = Index(i)
                known = self._commit_term.get(index)
                if known is None or term < known:
                    self._commit_term[index] = term
            self._leader_commit_seen = status.commit
        if self.traits.leader_completeness:
            self._check_leader_completeness(node, term, disk)

    def _check_leader_completeness(self, node: NodeId, term: Term, disk: SimDisk) -> None:
        seen_term, checked = self._lc_progress.get(node, (Term(-1), Index(0)))
        if seen_term != term:
            checked = Index(0)
        start = max(checked, disk.snapshot_index) + 1
        for i in range(start, self._max_committed + 1):
            index = Index(i)
            want = self._committed.get(index)
            commit_term = self._commit_term.get(index)
            if want is None or commit_term is None or commit_term > term:
                # Not known committed in a term <= ours yet: revisit from here next time.
                break
            have = disk.entry(index)
            require(
                have is not None and self._same(have, want),
                "leader_completeness",
                f"node {node} leads term {term} but its log has "
                f"{_describe(have) if have else 'nothing'} at index {index}, where "
                f"{_describe(want)} was committed by term {commit_term}",
            )
            checked = index
        self._lc_progress[node] = (term, checked)

    def observe_persist(self, node: NodeId, write: DiskWrite, disk: SimDisk) -> None:
        """Call right after ``disk.write`` returned ``write`` for ``node``."""
        if not self.traits.log_matching:
            return
        snap = disk.snapshot
        for entry in write.entries:
            prev_index = entry.index - 1
            prev_term: Term | None
            if prev_index == 0:
                prev_term = Term(0)
            elif snap is not None and prev_index == snap.meta.index:
                prev_term = snap.meta.term
            else:
                prev = disk.entry(Index(prev_index))
                prev_term = prev.term if prev is not None else None
            key = (entry.index, entry.term)
            known = self._log_ids.get(key)
            if known is None:
                self._log_ids[key] = (entry.kind, entry.data, prev_term)
                continue
            kind, data, known_prev = known
            require(
                kind is entry.kind and data == entry.data,
                "log_matching",
                f"node {node} wrote {_describe(entry)} but another node holds "
                f"({entry.index}, term {entry.term}, {kind.name}, {data!r})",
            )
            if prev_term is not None and known_prev is not None:
                require(
                    prev_term == known_prev,
                    "log_matching",
                    f"node {node} holds ({entry.index}, term {entry.term}) after an entry of "
                    f"term {prev_term}, another node after term {known_prev}",
                )
            elif known_prev is None and prev_term is not None:
                self._log_ids[key] = (kind, data, prev_term)

    def observe_apply(self, node: NodeId, entry: Entry, current_term: Term) -> None:
        last = self._applied.get(node, Index(0))
        require(
            entry.index == last + 1,
            "state_machine_safety",
            f"node {node} applied index {entry.index} right after {last} (gap or repeat)",
        )
        self._applied[node] = entry.index
        want = self._committed.get(entry.index)
        if want is None:
            self._committed[entry.index] = entry
            if entry.kind is EntryKind.CONFIG:
                self._config_changes += 1
            if entry.index > self._max_committed:
                self._max_committed = entry.index
        else:
            require(
                self._same(entry, want),
                "state_machine_safety",
                f"node {node} applied {_describe(entry)} where another node applied "
                f"{_describe(want)}",
            )
        known = self._commit_term.get(entry.index)
        if known is None or current_term < known:
            self._commit_term[entry.index] = current_term

    def observe_snapshot_applied(self, node: NodeId, index: Index, data: bytes) -> None:
        last = self._applied.get(node, Index(0))
        require(
            index >= last,
            "state_machine_safety",
            f"node {node} installed a snapshot at {index} behind its applied index {last}",
        )
        self._applied[node] = index
        if index > self._max_committed:
            self._max_committed = index
        self.observe_snapshot_taken(node, index, data)

    def observe_snapshot_taken(self, node: NodeId, index: Index, data: bytes) -> None:
        digest = hashlib.blake2b(data, digest_size=16).digest()
        known = self._snapshots.setdefault(index, (node, digest))
        require(
            known[1] == digest,
            "state_machine_safety",
            f"node {node}'s state at index {index} differs from node {known[0]}'s",
        )

    def observe_restart(self, node: NodeId, applied: Index) -> None:
        """A restarted node resumes applying after its durable snapshot."""
        self._applied[node] = applied
        self._lc_progress.pop(node, None)

    def _same(self, a: Entry, b: Entry) -> bool:
        if a.kind is not b.kind or a.data != b.data:
            return False
        return not self.traits.compare_terms or a.term == b.term
