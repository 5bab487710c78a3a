"""The replicated KV state machine: exactly-once apply, snapshots, deterministic results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consensus.runtime.statemachine import (
    KVStateMachine,
    StateMachineError,
    decode_result,
    encode_cas,
    encode_delete,
    encode_get,
    encode_put,
)
from consensus.types import (
    ConfState,
    Entry,
    EntryKind,
    GroupId,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)

G1 = GroupId(1)
G2 = GroupId(2)


def normal(index: int, data: bytes, term: int = 1) -> Entry:
    return Entry(index=Index(index), term=Term(term), data=data)


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[KVStateMachine]:
    machine = KVStateMachine(tmp_path / "data.db")
    yield machine
    machine.close()


def test_commands_return_their_results(sm: KVStateMachine) -> None:
    results = sm.apply(
        G1,
        [
            normal(1, encode_put(b"k", b"v1")),
            normal(2, encode_get(b"k")),
            normal(3, encode_cas(b"k", b"wrong", b"x")),
            normal(4, encode_cas(b"k", b"v1", b"v2")),
            normal(5, encode_delete(b"k")),
            normal(6, encode_delete(b"k")),
            normal(7, encode_cas(b"k", None, b"new")),
        ],
    )
    decoded = [decode_result(r) for r in results if r is not None]
    assert decoded == [
        {"ok": True},
        {"ok": True, "value": b"v1"},
        {"ok": False, "value": b"v1"},
        {"ok": True, "value": b"v2"},
        {"ok": True, "existed": True},
        {"ok": True, "existed": False},
        {"ok": True, "value": b"new"},
    ]
    assert sm.applied_index(G1) == 7
    assert decode_result(sm.query(G1, encode_get(b"k"))) == {"ok": True, "value": b"new"}


def test_groups_are_isolated(sm: KVStateMachine) -> None:
    sm.apply(G1, [normal(1, encode_put(b"k", b"one"))])
    sm.apply(G2, [normal(1, encode_put(b"k", b"two")), normal(2, encode_put(b"j", b"x"))])
    assert sm.get(G1, b"k") == b"one"
    assert sm.get(G2, b"k") == b"two"
    assert (sm.applied_index(G1), sm.applied_index(G2)) == (1, 2)


def test_redelivered_entries_are_skipped(sm: KVStateMachine) -> None:
    """Cores re-deliver committed entries after a restart; each applies exactly once."""
    sm.apply(
        G1,
        [
            normal(i, encode_cas(b"n", None if i == 1 else b"%d" % (i - 1), b"%d" % i))
            for i in range(1, 6)
        ],
    )
    results = sm.apply(
        G1,
        [normal(i, encode_cas(b"n", b"%d" % (i - 1), b"%d" % i)) for i in range(3, 8)],
    )
    assert results[:3] == (None, None, None)
    assert [decode_result(r)["ok"] for r in results[3:] if r is not None] == [True, True]
    assert sm.get(G1, b"n") == b"7"
    assert sm.applied_index(G1) == 7


def test_a_gap_in_the_entry_stream_is_refused(sm: KVStateMachine) -> None:
    sm.apply(G1, [normal(1, encode_put(b"a", b"1"))])
    with pytest.raises(StateMachineError, match="jumps"):
        sm.apply(G1, [normal(3, encode_put(b"a", b"3"))])
    with pytest.raises(StateMachineError, match="gap"):
        sm.apply(G1, [normal(2, encode_put(b"a", b"2")), normal(4, encode_put(b"a", b"4"))])
    assert sm.applied_index(G1) == 1


def test_noop_and_config_entries_only_advance_the_applied_index(sm: KVStateMachine) -> None:
    results = sm.apply(
        G1,
        [
            Entry(index=Index(1), term=Term(1), kind=EntryKind.NOOP),
            Entry(index=Index(2), term=Term(1), kind=EntryKind.CONFIG, data=b"\x01\x02"),
        ],
    )
    assert results == (None, None)
    assert sm.applied_index(G1) == 2
    assert sm.items(G1) == []


def test_malformed_commands_are_deterministic_errors_that_still_apply(sm: KVStateMachine) -> None:
    """ARCHITECTURE.md, "State machine": a deterministic error is the same on every replica
    and the entry still counts as applied."""
    results = sm.apply(G1, [normal(1, b"\xc1"), normal(2, b"\x92\xa3put\x01")])
    for raw in results:
        assert raw is not None
        result = decode_result(raw)
        assert result["ok"] is False and "malformed" in result["error"]
    assert sm.applied_index(G1) == 2


def test_apply_and_applied_index_commit_together(tmp_path: Path) -> None:
    """A batch that fails halfway leaves neither its rows nor its applied index behind."""

    class FailingOnBoom(KVStateMachine):
        def _execute(self, group_id: GroupId, data: bytes) -> bytes:
            result = super()._execute(group_id, data)
            if data == encode_put(b"boom", b"!"):
                raise OSError("disk went away mid-transaction")
            return result

    path = tmp_path / "data.db"
    sm = FailingOnBoom(path)
    sm.apply(G1, [normal(1, encode_put(b"a", b"1"))])
    with pytest.raises(OSError):
        sm.apply(G1, [normal(2, encode_put(b"b", b"2")), normal(3, encode_put(b"boom", b"!"))])
    sm.close()
    reopened = KVStateMachine(path)
    try:
        assert reopened.applied_index(G1) == 1
        assert reopened.items(G1) == [(b"a", b"1")]
    finally:
        reopened.close()


def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "data.db"
    sm = KVStateMachine(path)
    sm.apply(G1, [normal(1, encode_put(b"a", b"1")), normal(2, encode_put(b"b", b"2"))])
    sm.close()
    again = KVStateMachine(path)
    try:
        assert again.applied_index(G1) == 2
        assert again.items(G1) == [(b"a", b"1"), (b"b", b"2")]
    finally:
        again.close()


def test_snapshot_restores_elsewhere_and_is_canonical(tmp_path: Path) -> None:
    """Equal states give equal snapshot bytes; restore replaces state and applied index."""
    a = KVStateMachine(tmp_path / "a.db")
    b = KVStateMachine(tmp_path / "b.db")
    try:
        a.apply(G1, [normal(1, encode_put(b"y", b"2")), normal(2, encode_put(b"x", b"1"))])
        b.apply(G1, [normal(1, encode_put(b"stale", b"0"))])
        data = a.snapshot(G1)
        meta = SnapshotMeta(index=Index(2), term=Term(1), conf=ConfState(voters=(NodeId(1),)))
        b.restore(G1, Snapshot(meta=meta, data=data))
        assert b.items(G1) == [(b"x", b"1"), (b"y", b"2")]
        assert b.applied_index(G1) == 2
        assert b.snapshot(G1) == data
        bad_meta = SnapshotMeta(index=Index(3), term=Term(1), conf=ConfState())
        with pytest.raises(StateMachineError):
            b.restore(G1, Snapshot(meta=bad_meta, data=data))
    finally:
        a.close()
        b.close()
