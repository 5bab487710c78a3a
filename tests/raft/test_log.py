"""Property tests of the in-memory Raft log against a brute-force list oracle.

The oracle is a plain list of terms for indexes ``offset+1 .. offset+len`` plus the
snapshot (offset, term) pair, and a dict standing in for disk that receives exactly what
``take_unstable`` hands out. Every query of ``RaftLog`` is compared with the obvious
brute-force answer after every operation.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from consensus.invariants import InvariantViolation
from consensus.raft.log import RaftLog
from consensus.types import Entry, Index, Term


def entry(index: int, term: int, size: int = 0) -> Entry:
    return Entry(index=Index(index), term=Term(term), data=b"x" * size)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = RaftLog()
        self.offset = 0
        self.offset_term = 0
        self.terms: list[int] = []  # terms of offset+1 ..
        self.disk: dict[int, int] = {}  # index -> term, what storage holds
        self.committed = 0
        self.handed_out: tuple[Index | None, tuple[Entry, ...]] | None = None

    # ---------------------------------------------------------------- oracle helpers

    @property
    def last(self) -> int:
        return self.offset + len(self.terms)

    def oracle_term(self, i: int) -> int | None:
        if i == self.offset:
            return self.offset_term
        if i < self.offset or i > self.last:
            return None
        return self.terms[i - self.offset - 1]

    # ---------------------------------------------------------------- rules

    @rule(data=st.data())
    def maybe_append(self, data: st.DataObject) -> None:
        prev = data.draw(
            st.integers(min_value=max(self.offset, self.committed), max_value=self.last + 1)
        )
        prev_term_known = self.oracle_term(prev)
        lie = data.draw(st.booleans())
        prev_term = (prev_term_known or 0) + (1 if lie or prev_term_known is None else 0)
        base = prev_term_known or 0
        increments = data.draw(st.lists(st.integers(min_value=0, max_value=2), max_size=6))
        terms = []
        t = base
        for inc in increments:
            t += inc
            terms.append(t)
        entries = [entry(prev + 1 + k, terms[k]) for k in range(len(terms))]
        expected_ok = prev_term_known is not None and prev_term_known == prev_term
        result = self.log.maybe_append(Index(prev), Term(prev_term), entries, Index(self.committed))
        if not expected_ok:
            assert result is None
            return
        assert result == prev + len(entries)
        # Oracle: overwrite from the first entry that differs; keep everything else.
        for e in entries:
            pos = e.index - self.offset - 1
            if pos < len(self.terms) and self.terms[pos] == e.term:
                continue
            del self.terms[pos:]
            self.terms.extend(x.term for x in entries[e.index - entries[0].index :])
            break

    @precondition(lambda self: self.handed_out is None)
    @rule()
    def take(self) -> None:
        """A Ready is built; storage writes it later (other rules may run in between)."""
        self.handed_out = self.log.take_unstable()

    @precondition(lambda self: self.handed_out is not None)
    @rule()
    def write_and_advance(self) -> None:
        assert self.handed_out is not None
        truncate, entries = self.handed_out
        self.handed_out = None
        if truncate is not None:
            for i in [i for i in self.disk if i >= truncate]:
                del self.disk[i]
        for e in entries:
            self.disk[e.index] = e.term
        if entries:
            self.log.persisted_to(entries[-1].index)

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        self.committed = data.draw(st.integers(min_value=self.committed, max_value=self.last))

    @precondition(lambda self: self.log.persisted > self.offset)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        to = data.draw(st.integers(min_value=self.offset + 1, max_value=self.log.persisted))
        self.log.compact(Index(to))
        term = self.oracle_term(to)
        assert term is not None
        self.terms = self.terms[to - self.offset :]
        self.offset, self.offset_term = to, term
        self.committed = max(self.committed, to)
        for i in [i for i in self.disk if i <= to]:
            del self.disk[i]

    @rule(index=st.integers(min_value=0, max_value=40), term=st.integers(min_value=0, max_value=20))
    def restore(self, index: int, term: int) -> None:
        if index < self.committed:
            return
        self.log.restore(Index(index), Term(term))
        self.offset, self.offset_term, self.terms = index, term, []
        self.committed = index
        self.disk = {}

    # ---------------------------------------------------------------- invariants

    @invariant()
    def bounds_match(self) -> None:
        assert self.log.first_index == self.offset + 1
        assert self.log.last_index == self.last
        assert self.log.snapshot_index == self.offset

    @invariant()
    def term_lookup_matches(self) -> None:
        for i in range(max(0, self.offset - 2), self.last + 3):
            assert self.log.term(i) == self.oracle_term(i), i

    @invariant()
    def persisted_prefix_is_on_disk(self) -> None:
        # Everything the log claims durable is on "disk" with the same term.
        for i in range(self.offset + 1, self.log.persisted + 1):
            assert self.disk.get(i) == self.oracle_term(i), i

    @invariant()
    def conflict_search_matches(self) -> None:
        if not self.terms:
            return
        probe = [entry(i, self.oracle_term(i) or 0) for i in range(self.offset + 1, self.last + 1)]
        assert self.log.find_conflict(probe) == 0
        assert self.log.find_conflict([*probe, entry(self.last + 1, 99)]) == self.last + 1
        mid = self.offset + 1 + len(self.terms) // 2
        changed = [e if e.index != mid else entry(mid, e.term + 1) for e in probe]
        assert self.log.find_conflict(changed) == mid

    @invariant()
    def term_runs_match(self) -> None:
        for i in range(self.offset + 1, self.last + 1):
            t = self.oracle_term(i)
            first = i
            while first - 1 > self.offset and self.oracle_term(first - 1) == t:
                first -= 1
            assert self.log.first_index_of_term(i) == first
        for t in sorted({*self.terms, self.offset_term, 0, 99}):
            for at_most in (self.offset, (self.offset + self.last) // 2, self.last):
                want = None
                for i in range(min(at_most, self.last), self.offset - 1, -1):
                    if self.oracle_term(i) == t:
                        want = i
                        break
                assert self.log.last_index_of_term(t, at_most) == want


LogMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestLogAgainstOracle = LogMachine.TestCase


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=20),
    max_bytes=st.integers(min_value=1, max_value=400),
)
def test_slice_respects_max_bytes_but_returns_at_least_one(
    sizes: list[int], max_bytes: int
) -> None:
    """A replication message carries at most max_msg_bytes of entries, yet always at least
    one entry, so a single oversized entry still makes progress."""
    log = RaftLog()
    log.append([entry(i + 1, 1, size) for i, size in enumerate(sizes)])
    got = log.slice(1, len(sizes), max_bytes=max_bytes)
    assert len(got) >= 1
    assert [e.index for e in got] == list(range(1, len(got) + 1))
    total = sum(e.size_bytes() for e in got)
    assert len(got) == 1 or total <= max_bytes
    if len(got) < len(sizes):
        assert total + sizes[len(got)] + 24 > max_bytes


@given(
    ours=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    theirs=st.tuples(st.integers(0, 5), st.integers(0, 5)),
)
def test_up_to_date_compares_last_term_then_index(
    ours: tuple[int, int], theirs: tuple[int, int]
) -> None:
    """Reference: Raft §5.4.1: compare last terms; if equal, the longer log is more up to
    date."""
    n, t = ours
    log = RaftLog(snapshot_index=Index(0), snapshot_term=Term(0))
    log.append([entry(i, t) for i in range(1, n + 1)])
    last_term = t if n else 0
    their_index, their_term = theirs
    expected = (their_term, their_index) >= (last_term, n)
    assert log.is_up_to_date(their_index, their_term) == expected


def test_conflict_at_or_below_commit_is_an_invariant_violation() -> None:
    """Reference: Raft §5.4.3: a committed entry can never be overwritten; a leader asking
    for it is a bug, surfaced loudly rather than silently diverging."""
    log = RaftLog()
    log.append([entry(1, 1), entry(2, 1)])
    with pytest.raises(InvariantViolation):
        log.maybe_append(Index(1), Term(1), [entry(2, 2)], committed=Index(2))


def test_truncation_of_persisted_entries_is_reported_to_storage() -> None:
    """Overwriting an already persisted suffix must tell storage to delete it, and the
    overwritten entries no longer count as persisted."""
    log = RaftLog()
    log.append([entry(1, 1), entry(2, 1), entry(3, 1)])
    _, written = log.take_unstable()
    log.persisted_to(written[-1].index)
    assert log.persisted == 3
    log.append([entry(2, 2)])
    assert log.persisted == 1
    truncate, entries = log.take_unstable()
    assert truncate == 2
    assert [(e.index, e.term) for e in entries] == [(2, 2)]
