"""The node's composite state machine: the meta group's durable replica, routing by group id,
the node-service methods, and the meta split driving the SQL split.

Reference: ARCHITECTURE.md "State machine" (exactly-once apply, deterministic errors) and
"Placement driver" (descriptors live in a meta group; splits are consensus commands); Raft §7
(a snapshot carries the state at an index; restore replaces it).
"""

from __future__ import annotations

from pathlib import Path

import apsw
import msgpack
import pytest

from consensus.runtime.statemachine import StateMachine, StateMachineError
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
from shardb.placement import (
    META_GROUP_ID,
    CreateTable,
    DropTable,
    MetaCommand,
    MetaErrorCode,
    MetaResult,
    NodeJoined,
    PkType,
    SplitRange,
    encode_command,
)
from shardb.placement.descriptors import RangeDescriptor
from shardb.statemachine import (
    MetaMachine,
    RangeOverlap,
    ShardStateMachine,
    decode_meta_answer,
    decode_meta_result,
    decode_result,
    encode_meta_query,
    encode_meta_result,
    encode_split,
    encode_write,
)

from .helpers import FIRST, SCHEMA, descriptor, entries, insert, open_sm, right_half

META = META_GROUP_ID


def _setup() -> list[MetaCommand]:
    return [
        *(NodeJoined(node_id=NodeId(n), address=f"10.0.0.{n}:7000") for n in (1, 2, 3)),
        CreateTable(
            name="t", schema_sql=SCHEMA, pk_column="id", pk_type=PkType.INTEGER, backend="raft"
        ),
    ]


def _apply_meta(sm: ShardStateMachine, *commands: MetaCommand) -> list[MetaResult]:
    first = sm.applied_index(META) + 1
    out = sm.apply(META, entries(first, *(encode_command(c) for c in commands)))
    return [decode_meta_result(r) for r in out if r is not None]


def _apply(sm: ShardStateMachine, group: GroupId, command: bytes) -> dict[str, object]:
    (result,) = sm.apply(group, entries(sm.applied_index(group) + 1, command))
    assert result is not None
    return decode_result(result)


def _snap(data: bytes, index: int) -> Snapshot:
    return Snapshot(
        meta=SnapshotMeta(index=Index(index), term=Term(1), conf=ConfState()), data=data
    )


def _range(sm: ShardStateMachine) -> RangeDescriptor:
    state = sm.meta_state()
    assert state is not None
    (only,) = state.ranges()
    return only


# --------------------------------------------------------------------------- meta group


def test_shard_machine_is_a_runtime_state_machine(tmp_path: Path) -> None:
    sm: StateMachine = ShardStateMachine(tmp_path)
    sm.close()
    meta: StateMachine = MetaMachine(tmp_path / "m.db")
    meta.close()


def test_meta_apply_survives_restart(tmp_path: Path) -> None:
    """The meta state and its applied index are durable together.

    Reference: ARCHITECTURE.md "State machine" (applied index in the same transaction)."""
    sm = ShardStateMachine(tmp_path)
    assert sm.meta_state() is None and sm.meta_applied() == 0
    results = _apply_meta(sm, *_setup())
    assert all(r.ok for r in results)
    assert results[-1].ranges[0].group_id == GroupId(2)
    before = sm.meta_state()
    assert before is not None
    sm.close()
    sm = ShardStateMachine(tmp_path)
    after = sm.meta_state()
    assert after is not None and after.snapshot() == before.snapshot()
    assert sm.meta_applied() == 4 == sm.applied_index(META)
    assert (tmp_path / "meta.db").exists() and (tmp_path / "data.db").exists()


def test_meta_duplicate_entries_are_skipped(tmp_path: Path) -> None:
    """Re-delivered entries (after a restart) return None and change nothing.

    Reference: Raft thesis §3.5 (lastApplied)."""
    sm = ShardStateMachine(tmp_path)
    batch = entries(1, *(encode_command(c) for c in _setup()))
    sm.apply(META, batch)
    state = sm.meta_state()
    assert state is not None
    again = sm.apply(META, [*batch, *entries(5, encode_command(DropTable(name="t")))])
    assert again[:4] == (None, None, None, None)
    assert again[4] is not None and decode_meta_result(again[4]).retired_groups == (GroupId(2),)
    after = sm.meta_state()
    assert after is not None and after.tables() == () and sm.meta_applied() == 5


def test_meta_gap_is_a_contract_violation(tmp_path: Path) -> None:
    sm = ShardStateMachine(tmp_path)
    with pytest.raises(StateMachineError):
        sm.apply(META, entries(2, encode_command(DropTable(name="t"))))
    assert sm.meta_applied() == 0


def test_malformed_and_invalid_meta_commands_are_error_results(tmp_path: Path) -> None:
    """Undecodable bytes and a command that fails validation are the same error result on
    every replica; the entries still count as applied."""
    sm = ShardStateMachine(tmp_path)
    out = sm.apply(META, entries(1, b"\xc1", msgpack.packb([1, "nope", []]), b""))
    codes = [decode_meta_result(r).error for r in out if r is not None]
    assert codes == [MetaErrorCode.MALFORMED] * 3
    (invalid,) = _apply_meta(sm, DropTable(name="missing"))
    assert invalid.error is MetaErrorCode.UNKNOWN_TABLE and invalid.message
    assert sm.meta_applied() == 4


def test_noop_and_config_entries_only_advance_applied(tmp_path: Path) -> None:
    sm = ShardStateMachine(tmp_path)
    _apply_meta(sm, *_setup())
    before = sm.meta_state()
    out = sm.apply(
        META,
        [
            Entry(index=Index(5), term=Term(2), kind=EntryKind.NOOP),
            Entry(index=Index(6), term=Term(2), kind=EntryKind.CONFIG, data=b"conf"),
        ],
    )
    assert out == (None, None)
    after = sm.meta_state()
    assert before is not None and after is not None
    assert after.snapshot() == before.snapshot() and sm.meta_applied() == 6


def test_failed_meta_batch_leaves_memory_as_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MetaState applies in place; when the batch's write fails, the replica goes back to
    the last committed state instead of running ahead of its file."""
    machine = MetaMachine(tmp_path / "meta.db")
    machine.apply(META, entries(1, *(encode_command(c) for c in _setup())))

    def failing(applied: Index, state: bytes) -> None:
        raise apsw.IOError("disk went away")

    monkeypatch.setattr(machine, "_write", failing)
    with pytest.raises(apsw.IOError):
        machine.apply(META, entries(5, encode_command(DropTable(name="t"))))
    state = machine.state()
    assert state is not None and state.table("t") is not None
    assert machine.applied_index(META) == 4
    query = decode_meta_answer(machine.query(META, encode_meta_query()))[1]
    assert query.table("t") is not None


def test_meta_result_round_trip() -> None:
    descriptor = right_half(
        RangeDescriptor(
            range_id=1,
            table="t",
            start_key=None,
            end_key="m",
            group_id=GroupId(2),
            replicas=(NodeId(1), NodeId(2)),
            backend="paxos",
        ),
        "c",
        9,
    )
    ok = MetaResult(ranges=(descriptor,), retired_groups=(GroupId(3), GroupId(4)))
    failed = MetaResult(error=MetaErrorCode.STALE_EPOCH, message="range 1 moved on")
    assert decode_meta_result(encode_meta_result(ok)) == ok
    assert decode_meta_result(encode_meta_result(failed)) == failed
    for junk in (b"\xc1", msgpack.packb([1]), msgpack.packb({"ok": True, "error": "stale_epoch"})):
        with pytest.raises(ValueError):
            decode_meta_result(junk)


def test_meta_query_round_trip(tmp_path: Path) -> None:
    """The meta read answers the applied index and the whole state; a bad query is an
    error answer, which decode_meta_answer refuses."""
    sm = ShardStateMachine(tmp_path)
    _apply_meta(sm, *_setup())
    applied, state = decode_meta_answer(sm.query(META, encode_meta_query()))
    local = sm.meta_state()
    assert local is not None
    assert applied == 4 and state.snapshot() == local.snapshot()
    bad = sm.query(META, b"\x90")
    with pytest.raises(ValueError, match="malformed query"):
        decode_meta_answer(bad)


def test_meta_state_is_a_copy(tmp_path: Path) -> None:
    """The node service may hold the state it got while applies continue."""
    sm = ShardStateMachine(tmp_path)
    _apply_meta(sm, *_setup())
    copy = sm.meta_state()
    assert copy is not None
    copy.apply(DropTable(name="t"))
    again = sm.meta_state()
    assert again is not None and again.table("t") is not None


def test_meta_snapshot_restore_round_trip(tmp_path: Path) -> None:
    """A replica restored from a snapshot has the same state and applied index, durably.

    Reference: Raft §7."""
    source = ShardStateMachine(tmp_path / "a")
    _apply_meta(source, *_setup())
    data = source.snapshot(META)
    target = ShardStateMachine(tmp_path / "b")
    target.restore(META, _snap(data, 4))
    assert target.snapshot(META) == data
    target.close()
    target = ShardStateMachine(tmp_path / "b")
    assert target.snapshot(META) == data and target.meta_applied() == 4
    with pytest.raises(StateMachineError):
        target.restore(META, _snap(data, 5))
    with pytest.raises(StateMachineError):
        target.restore(META, _snap(b"junk", 4))
    target.drop_group(META)
    assert target.meta_state() is None and target.meta_applied() == 0


# --------------------------------------------------------------------------- routing


def test_routing_by_group_id(tmp_path: Path) -> None:
    """Group 1 is the meta group, a registered range is SQL, anything else is refused."""
    sm = ShardStateMachine(tmp_path)
    _apply_meta(sm, *_setup())
    rng = _range(sm)
    sm.register_range(rng, SCHEMA)
    assert _apply(sm, rng.group_id, insert(5))["ok"]
    assert sm.applied_index(rng.group_id) == FIRST and sm.meta_applied() == 4
    # A meta command sent to the SQL group is just a malformed SQL command there.
    assert _apply(sm, rng.group_id, encode_command(DropTable(name="t")))["code"] == "malformed"
    state = sm.meta_state()
    assert state is not None and state.table("t") is not None
    unknown = GroupId(9)
    assert sm.applied_index(unknown) == 0
    for call in (
        lambda: sm.apply(unknown, entries(1, insert(1))),
        lambda: sm.query(unknown, b""),
        lambda: sm.snapshot(unknown),
    ):
        with pytest.raises(StateMachineError, match="nor a SQL range registered"):
            call()


def test_reserved_group_ids_cannot_be_ranges(tmp_path: Path) -> None:
    sm = ShardStateMachine(tmp_path)
    _apply_meta(sm, *_setup())
    rng = _range(sm)
    for reserved in (0, 1):
        with pytest.raises(StateMachineError):
            sm.register_range(
                RangeDescriptor(
                    range_id=rng.range_id,
                    table="t",
                    start_key=None,
                    end_key=None,
                    group_id=GroupId(reserved),
                    replicas=rng.replicas,
                    backend="raft",
                ),
                SCHEMA,
            )
    assert sm.hosted_ranges() == ()


def test_register_range_is_idempotent_and_listed(tmp_path: Path) -> None:
    sm = ShardStateMachine(tmp_path)
    _apply_meta(sm, *_setup())
    rng = _range(sm)
    assert sm.register_range(rng, SCHEMA) == rng
    assert sm.register_range(rng, SCHEMA) == rng
    assert sm.hosted_ranges() == (rng,)


# --------------------------------------------------------------------------- splits


def _split_through_meta(sm: ShardStateMachine, key: int) -> tuple[RangeDescriptor, ...]:
    """What the node service does: SplitRange in the meta group, then the parent group's
    split naming the right descriptor the meta group allocated."""
    parent = _range(sm) if len(sm.hosted_ranges()) == 1 else sm.hosted_ranges()[-1]
    (result,) = _apply_meta(
        sm, SplitRange(range_id=parent.range_id, epoch=parent.epoch, split_key=key)
    )
    assert result.ok, result
    left, right = result.ranges
    split = _apply(sm, parent.group_id, encode_split(key, parent.epoch, left.epoch, right))
    assert split["ok"], split
    return left, right


def test_meta_split_then_range_split_registers_the_new_group(tmp_path: Path) -> None:
    """The descriptor the meta group's SplitRange allocates is accepted by the parent group,
    which registers it: the node service finds it among the hosted ranges, also after a
    restart, and both sides then agree with the meta group."""
    sm = ShardStateMachine(tmp_path)
    _apply_meta(sm, *_setup())
    sm.register_range(_range(sm), SCHEMA)
    for key in (10, 60):
        _apply(sm, GroupId(2), insert(key))
    left, right = _split_through_meta(sm, 50)
    assert sm.hosted_ranges() == (left, right)
    sm.close()
    sm = ShardStateMachine(tmp_path)
    state = sm.meta_state()
    assert state is not None
    assert sm.hosted_ranges() == (left, right) == state.ranges()
    assert _apply(sm, right.group_id, insert(70, epoch=right.epoch))["ok"]
    assert _apply(sm, left.group_id, insert(75, epoch=left.epoch))["code"] == "out_of_range"
    assert sm.range_stats(right.group_id).rows == 2
    assert sm.range_stats(left.group_id).rows == 1


def test_new_replica_restores_a_range_it_never_had(tmp_path: Path) -> None:
    """A node added to a range by a membership change gets a snapshot: restore registers the
    range from the descriptor and schema it carries, and it applies on from there.

    Reference: Raft §7 (InstallSnapshot to a follower with no log)."""
    source = ShardStateMachine(tmp_path / "a")
    _apply_meta(source, *_setup())
    source.register_range(_range(source), SCHEMA)
    for key in (10, 60, 80):
        _apply(source, GroupId(2), insert(key))
    _, right = _split_through_meta(source, 50)
    _apply(source, right.group_id, insert(70, epoch=right.epoch))
    data = source.snapshot(right.group_id)
    target = ShardStateMachine(tmp_path / "b")
    target.restore(right.group_id, _snap(data, source.applied_index(right.group_id)))
    assert target.hosted_ranges() == (right,)
    assert target.snapshot(right.group_id) == data
    assert _apply(target, right.group_id, insert(90, epoch=right.epoch))["ok"]
    assert target.range_stats(right.group_id).rows == 4
    with pytest.raises(RangeOverlap):
        target.register_range(
            RangeDescriptor(
                range_id=99,
                table="t",
                start_key=40,
                end_key=None,
                group_id=GroupId(99),
                replicas=right.replicas,
                backend="raft",
            ),
            SCHEMA,
        )


def test_range_stats_counts_rows_and_estimates_bytes(tmp_path: Path) -> None:
    """rows is exact; approx_bytes is within a small factor of the payload written."""
    sm = ShardStateMachine(tmp_path)
    _apply_meta(sm, *_setup())
    rng = _range(sm)
    sm.register_range(rng, SCHEMA)
    assert sm.range_stats(rng.group_id).rows == 0
    sql = "INSERT INTO t(id, name, data) VALUES (?, ?, ?)"
    commands = [encode_write("t", sql, (k * 7, f"n{k}", b"x" * 200), 1) for k in range(1000)]
    sm.apply(rng.group_id, entries(FIRST, *commands))
    stats = sm.range_stats(rng.group_id)
    assert stats.rows == 1000
    assert 200 * 1000 <= stats.approx_bytes <= 2 * 210 * 1000
    with pytest.raises(StateMachineError):
        sm.range_stats(GroupId(42))


def test_range_stats_of_a_text_keyed_range(tmp_path: Path) -> None:
    """TEXT keys sample from the start of the range; only the range's rows count."""
    schema = "CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT NOT NULL, score REAL, data BLOB)"
    sm = open_sm(tmp_path / "sm.db", descriptor(2, None, "m"), schema=schema)
    sm.apply(GroupId(2), entries(FIRST, *(insert(f"k{i:03}", "n" * 50) for i in range(300))))
    assert sm.apply(GroupId(2), entries(FIRST + 300, insert("z")))[0] is not None
    stats = sm.range_stats(GroupId(2))
    assert stats.rows == 300
    assert 300 * 54 <= stats.approx_bytes <= 300 * 54 + 300 * 20
