"""The meta group's state machine: catalog, descriptors, validation, encoding, snapshots."""

from __future__ import annotations

from collections import Counter

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import GroupId, NodeId
from shardb.placement import (
    CreateTable,
    DropTable,
    MergeRanges,
    MetaCommand,
    MetaErrorCode,
    MetaState,
    NodeDown,
    NodeJoined,
    PkType,
    SetLeaseholder,
    SetReplicas,
    SplitRange,
    WireError,
    decode_command,
    encode_command,
)


def create(name: str = "t", split_points: tuple[int | str, ...] = (), **kw: object) -> CreateTable:
    pk_type = kw.pop("pk_type", PkType.INTEGER)
    assert isinstance(pk_type, PkType)
    rf = kw.pop("replication_factor", 3)
    assert isinstance(rf, int)
    return CreateTable(
        name=name,
        schema_sql=f"CREATE TABLE {name}(id INTEGER PRIMARY KEY, v TEXT)",
        pk_column="id",
        pk_type=pk_type,
        backend="raft",
        split_points=split_points,
        replication_factor=rf,
    )


def cluster(n: int = 3) -> MetaState:
    state = MetaState()
    for i in range(1, n + 1):
        assert state.apply(NodeJoined(node_id=NodeId(i), address=f"10.0.0.{i}:7000")).ok
    return state


# --------------------------------------------------------------------------- create / drop


def test_create_table_cuts_ranges_at_split_points() -> None:
    """N split points give N + 1 ranges that tile the key space, each its own group."""
    state = cluster(3)
    result = state.apply(create(split_points=(10, 20, 30)))
    assert result.ok
    rmap = state.range_map("t")
    assert [(r.start_key, r.end_key) for r in rmap.ranges] == [
        (None, 10),
        (10, 20),
        (20, 30),
        (30, None),
    ]
    assert [r.group_id for r in rmap.ranges] == [GroupId(2), GroupId(3), GroupId(4), GroupId(5)]
    assert all(r.epoch == 1 and r.backend == "raft" for r in rmap.ranges)
    assert state.table("t") is not None


def test_create_table_spreads_replicas_and_leaders() -> None:
    """Initial replicas are on distinct nodes, even per node (within 1); leader hints too."""
    state = cluster(5)
    state.apply(create(split_points=tuple(range(100, 1000, 100))))
    ranges = state.ranges()
    assert all(len(set(r.replicas)) == 3 for r in ranges)
    per_node = Counter(n for r in ranges for n in r.replicas)
    assert max(per_node.values()) - min(per_node.values()) <= 1
    leaders = Counter(state.leader_hint(r.range_id) for r in ranges)
    assert max(leaders.values()) - min(leaders.values()) <= 1
    assert all(state.leader_hint(r.range_id) in r.replicas for r in ranges)


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (create(split_points=(20, 10)), MetaErrorCode.INVALID),
        (create(split_points=(10, 10)), MetaErrorCode.INVALID),
        (create(split_points=("a",)), MetaErrorCode.INVALID),
        (create(split_points=(True,)), MetaErrorCode.INVALID),
        (create(split_points=(1 << 63,)), MetaErrorCode.INVALID),
        (create(split_points=(1,), pk_type=PkType.TEXT), MetaErrorCode.INVALID),
        (create(replication_factor=4), MetaErrorCode.NOT_ENOUGH_NODES),
        (create(replication_factor=0), MetaErrorCode.INVALID),
        (create(name=""), MetaErrorCode.INVALID),
    ],
)
def test_create_table_validation(command: CreateTable, code: MetaErrorCode) -> None:
    """Bad CreateTable commands are refused with a clear code and change nothing."""
    state = cluster(3)
    before = state.snapshot()
    result = state.apply(command)
    assert result.error is code and result.message
    assert state.snapshot() == before


def test_create_existing_table_is_refused() -> None:
    state = cluster(3)
    assert state.apply(create()).ok
    assert state.apply(create()).error is MetaErrorCode.TABLE_EXISTS


def test_create_table_counts_only_live_nodes() -> None:
    """Replicas are placed on live nodes only; too few live nodes is an error."""
    state = cluster(4)
    state.apply(NodeDown(node_id=NodeId(2)))
    assert state.apply(create(split_points=(1, 2, 3))).ok
    assert all(NodeId(2) not in r.replicas for r in state.ranges())
    state.apply(NodeDown(node_id=NodeId(3)))
    assert state.apply(create("u")).error is MetaErrorCode.NOT_ENOUGH_NODES


def test_drop_table_retires_its_groups() -> None:
    state = cluster(3)
    state.apply(create("a", (5,)))
    state.apply(create("b"))
    result = state.apply(DropTable(name="a"))
    assert result.ok and result.retired_groups == (GroupId(2), GroupId(3))
    assert [r.table for r in state.ranges()] == ["b"]
    assert state.apply(DropTable(name="a")).error is MetaErrorCode.UNKNOWN_TABLE


def test_group_ids_are_never_reused() -> None:
    """A dropped table's group ids are not handed out again (old messages stay harmless)."""
    state = cluster(3)
    state.apply(create("a", (5,)))
    state.apply(DropTable(name="a"))
    state.apply(create("b"))
    (only,) = state.ranges()
    assert only.group_id == GroupId(4) and only.range_id == 3


# --------------------------------------------------------------------------- split


def test_split_gives_right_half_a_new_group_and_bumps_both_epochs() -> None:
    """Split is metadata only: same replicas, new group id for the right, epochs + 1."""
    state = cluster(3)
    state.apply(create(split_points=(100,)))
    result = state.apply(SplitRange(range_id=1, epoch=1, split_key=50))
    assert result.ok
    left, right = result.ranges
    assert (left.range_id, left.start_key, left.end_key, left.epoch) == (1, None, 50, 2)
    assert (right.range_id, right.start_key, right.end_key, right.epoch) == (3, 50, 100, 2)
    assert left.group_id == GroupId(2) and right.group_id == GroupId(4)
    assert left.replicas == right.replicas
    rmap = state.range_map("t")
    assert rmap.lookup(49).range_id == 1 and rmap.lookup(50).range_id == 3
    # The right half's leader hint is the replica leading the fewest ranges (spread).
    assert state.leader_hint(3) != state.leader_hint(1)
    assert state.leader_hint(3) in state.range(3).replicas  # type: ignore[union-attr]


def test_split_text_table() -> None:
    state = cluster(3)
    state.apply(create(split_points=("m",), pk_type=PkType.TEXT))
    assert state.apply(SplitRange(range_id=2, epoch=1, split_key="t")).ok
    assert state.range_map("t").lookup("zz").start_key == "t"


@pytest.mark.parametrize(
    ("range_id", "epoch", "key", "code"),
    [
        (9, 1, 5, MetaErrorCode.UNKNOWN_RANGE),
        (2, 7, 150, MetaErrorCode.STALE_EPOCH),
        (2, 1, 100, MetaErrorCode.BAD_SPLIT_KEY),
        (2, 1, 99, MetaErrorCode.BAD_SPLIT_KEY),
        (1, 1, 100, MetaErrorCode.BAD_SPLIT_KEY),
        (1, 1, "x", MetaErrorCode.BAD_SPLIT_KEY),
        (1, 1, False, MetaErrorCode.BAD_SPLIT_KEY),
    ],
)
def test_split_validation(range_id: int, epoch: int, key: int | str, code: MetaErrorCode) -> None:
    """Unknown range, stale epoch, a key on the start boundary, outside the range or of the
    wrong type: refused, state unchanged."""
    state = cluster(3)
    state.apply(create(split_points=(100,)))
    before = state.snapshot()
    result = state.apply(SplitRange(range_id=range_id, epoch=epoch, split_key=key))
    assert result.error is code and result.message
    assert state.snapshot() == before


# --------------------------------------------------------------------------- merge


def test_merge_folds_right_into_left() -> None:
    state = cluster(3)
    state.apply(create(split_points=(100, 200)))
    result = state.apply(
        MergeRanges(left_range_id=1, left_epoch=1, right_range_id=2, right_epoch=1)
    )
    assert result.ok and result.retired_groups == (GroupId(3),)
    (merged,) = result.ranges
    assert (merged.range_id, merged.start_key, merged.end_key, merged.epoch) == (1, None, 200, 2)
    assert state.range(2) is None and state.leader_hint(2) is None
    assert [r.range_id for r in state.range_map("t").ranges] == [1, 3]


@pytest.mark.parametrize(
    ("left", "right", "code"),
    [
        (1, 3, MetaErrorCode.NOT_ADJACENT),
        (2, 1, MetaErrorCode.NOT_ADJACENT),
        (1, 1, MetaErrorCode.NOT_ADJACENT),
        (3, 4, MetaErrorCode.NOT_ADJACENT),
        (1, 9, MetaErrorCode.UNKNOWN_RANGE),
    ],
)
def test_merge_validation(left: int, right: int, code: MetaErrorCode) -> None:
    """Only a range and its right neighbour in the same table can merge."""
    state = cluster(3)
    state.apply(create(split_points=(100, 200)))
    state.apply(create("u"))
    before = state.snapshot()
    result = state.apply(
        MergeRanges(left_range_id=left, left_epoch=1, right_range_id=right, right_epoch=1)
    )
    assert result.error is code
    assert state.snapshot() == before


def test_merge_requires_same_replicas() -> None:
    """The left group must already hold the right's rows on every node: same replica set."""
    state = cluster(4)
    state.apply(create(split_points=(100,)))
    assert state.range(1).replicas != state.range(2).replicas  # type: ignore[union-attr]  # both exist
    result = state.apply(
        MergeRanges(left_range_id=1, left_epoch=1, right_range_id=2, right_epoch=1)
    )
    assert result.error is MetaErrorCode.REPLICAS_DIFFER


def test_merge_with_stale_epoch_is_refused() -> None:
    state = cluster(3)
    state.apply(create(split_points=(100, 200)))
    state.apply(SplitRange(range_id=2, epoch=1, split_key=150))
    result = state.apply(
        MergeRanges(left_range_id=1, left_epoch=1, right_range_id=2, right_epoch=1)
    )
    assert result.error is MetaErrorCode.STALE_EPOCH


# ------------------------------------------------------------------ replicas, leaders, nodes


def test_set_replicas_bumps_epoch_and_drops_stale_leader_hint() -> None:
    state = cluster(4)
    state.apply(create())
    (r,) = state.ranges()
    leader = state.leader_hint(r.range_id)
    assert leader is not None
    new = tuple(sorted({*r.replicas, NodeId(4)} - {leader}))
    result = state.apply(SetReplicas(range_id=r.range_id, epoch=1, replicas=new))
    assert result.ok and result.ranges[0].replicas == new and result.ranges[0].epoch == 2
    assert state.leader_hint(r.range_id) is None


@pytest.mark.parametrize(
    ("replicas", "code"),
    [
        ((), MetaErrorCode.BAD_REPLICAS),
        ((1, 1, 2), MetaErrorCode.BAD_REPLICAS),
        ((1, 2, 9), MetaErrorCode.UNKNOWN_NODE),
    ],
)
def test_set_replicas_validation(replicas: tuple[int, ...], code: MetaErrorCode) -> None:
    """Replicas must be distinct, known nodes; never an empty group."""
    state = cluster(3)
    state.apply(create())
    cmd = SetReplicas(range_id=1, epoch=1, replicas=tuple(NodeId(n) for n in replicas))
    assert state.apply(cmd).error is code


def test_leaseholder_hint_needs_a_replica_and_keeps_epoch() -> None:
    state = cluster(4)
    state.apply(create())
    (r,) = state.ranges()
    outsider = NodeId(4) if NodeId(4) not in r.replicas else NodeId(1)
    assert state.apply(SetLeaseholder(range_id=1, node_id=outsider)).error is (
        MetaErrorCode.BAD_REPLICAS
    )
    assert state.apply(SetLeaseholder(range_id=1, node_id=r.replicas[-1])).ok
    assert state.leader_hint(1) == r.replicas[-1]
    assert state.range(1) == r


def test_node_down_and_rejoin() -> None:
    state = cluster(3)
    assert state.apply(NodeDown(node_id=NodeId(2))).ok
    assert [n.alive for n in state.nodes()] == [True, False, True]
    assert state.apply(NodeJoined(node_id=NodeId(2), address="new:1")).ok
    assert state.nodes()[1].alive and state.nodes()[1].address == "new:1"
    assert state.apply(NodeDown(node_id=NodeId(7))).error is MetaErrorCode.UNKNOWN_NODE
    assert state.apply(NodeJoined(node_id=NodeId(0), address="x")).error is MetaErrorCode.INVALID


# --------------------------------------------------------------------------- encoding and snapshots

ALL_COMMANDS: list[MetaCommand] = [
    create(split_points=(1, 2)),
    create(split_points=("a", "b"), pk_type=PkType.TEXT),
    DropTable(name="t"),
    SplitRange(range_id=1, epoch=3, split_key=-5),
    SplitRange(range_id=1, epoch=3, split_key="k"),
    MergeRanges(left_range_id=1, left_epoch=2, right_range_id=3, right_epoch=4),
    SetReplicas(range_id=1, epoch=2, replicas=(NodeId(1), NodeId(4))),
    SetLeaseholder(range_id=1, node_id=NodeId(4)),
    NodeJoined(node_id=NodeId(3), address="h:1", capacity_bytes=10),
    NodeDown(node_id=NodeId(3)),
]


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: type(c).__name__)
def test_command_encoding_round_trips(command: MetaCommand) -> None:
    """Every command survives msgpack encoding unchanged."""
    assert decode_command(encode_command(command)) == command


@pytest.mark.parametrize(
    "raw",
    [
        [1, "no_such_command", []],
        [2, "drop_table", ["t"]],
        [1, "drop_table", []],
        [1, "drop_table", [7]],
        [1, "split_range", [1, 1, True]],
        [1, "split_range", [1, 1, None]],
        "not a list",
    ],
)
def test_decode_rejects_malformed_commands(raw: object) -> None:
    """Wrong version, tag, arity or field type is a WireError, never a half-built command."""
    with pytest.raises(WireError):
        decode_command(msgpack.packb(raw))


def test_undecodable_entry_is_refused_identically() -> None:
    """A garbage log entry yields the same MALFORMED result on every replica."""
    a, b = cluster(3), cluster(3)
    for data in (b"\xc1", msgpack.packb([1, "drop_table", [1]])):
        assert a.apply_encoded(data) == b.apply_encoded(data)
        assert a.apply_encoded(data).error is MetaErrorCode.MALFORMED


def test_snapshot_round_trip() -> None:
    """restore(snapshot()) reproduces the state, and continues identically."""
    state = cluster(4)
    state.apply(create(split_points=(10, 20)))
    state.apply(create("u", ("m",), pk_type=PkType.TEXT))
    state.apply(SplitRange(range_id=1, epoch=1, split_key=5))
    copy = MetaState.restore(state.snapshot())
    assert copy.snapshot() == state.snapshot()
    assert copy.ranges() == state.ranges() and copy.tables() == state.tables()
    nxt = SplitRange(range_id=2, epoch=1, split_key=15)
    assert copy.apply(nxt) == state.apply(nxt)
    assert copy.snapshot() == state.snapshot()


def test_restore_rejects_a_snapshot_that_does_not_tile() -> None:
    """A snapshot whose ranges leave a gap is refused rather than routed by."""
    state = cluster(3)
    state.apply(create(split_points=(10, 20)))
    version, image = msgpack.unpackb(state.snapshot())
    image[4] = image[4][:1] + image[4][2:]  # drop the middle range
    with pytest.raises(WireError):
        MetaState.restore(msgpack.packb([version, image]))
    with pytest.raises(WireError):
        MetaState.restore(b"\x93\x01")


# --------------------------------------------------------------------------- determinism

node_ids = st.integers(min_value=1, max_value=6).map(NodeId)
keys = st.integers(min_value=-50, max_value=50)


def draw_command(data: st.DataObject, state: MetaState) -> MetaCommand:
    """A command aimed mostly at what exists (real range ids, current epochs, neighbours) so
    splits and merges often succeed, with stale or wrong ones mixed in. Draws only primitives:
    building a strategy per step is what makes stateful hypothesis tests slow."""
    ranges = state.ranges()
    kinds = ["create", "drop", "join", "down"]
    if ranges:
        kinds += ["split", "split", "replicas", "leader", "merge", "merge"]
    kind = data.draw(st.sampled_from(kinds))
    if kind == "create":
        points = data.draw(st.lists(keys, max_size=4))
        return create(data.draw(st.sampled_from(["a", "b"])), tuple(sorted(set(points))))
    if kind == "drop":
        return DropTable(name=data.draw(st.sampled_from(["a", "b"])))
    if kind == "join":
        return NodeJoined(node_id=data.draw(node_ids), address="h:1")
    if kind == "down":
        return NodeDown(node_id=data.draw(node_ids))

    def epoch(current: int) -> int:
        return current if data.draw(st.integers(0, 3)) else data.draw(st.integers(1, 3))

    r = ranges[data.draw(st.integers(0, len(ranges) - 1))]
    if kind == "split":
        return SplitRange(range_id=r.range_id, epoch=epoch(r.epoch), split_key=data.draw(keys))
    if kind == "replicas":
        replicas = tuple(data.draw(st.lists(node_ids, min_size=1, max_size=4)))
        return SetReplicas(range_id=r.range_id, epoch=epoch(r.epoch), replicas=replicas)
    if kind == "leader":
        return SetLeaseholder(range_id=r.range_id, node_id=data.draw(node_ids))
    # merge: usually r and its right neighbour (which may not share its replicas).
    ordered = state.range_map(r.table).ranges
    position = ordered.index(r)
    right = ordered[position + 1] if position + 1 < len(ordered) else ordered[0]
    if not data.draw(st.integers(0, 4)):
        right = ranges[data.draw(st.integers(0, len(ranges) - 1))]
    return MergeRanges(
        left_range_id=r.range_id,
        left_epoch=epoch(r.epoch),
        right_range_id=right.range_id,
        right_epoch=epoch(right.epoch),
    )


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_replicas_applying_the_same_log_agree(data: st.DataObject) -> None:
    """Replicas applying the same committed bytes reach identical states and results, even one
    that restarts from a snapshot midway; every table's ranges always tile its key space."""
    length = data.draw(st.integers(min_value=0, max_value=40), label="length")
    restore_at = data.draw(st.integers(min_value=0, max_value=40), label="restore_at")
    a, b = cluster(3), cluster(3)
    for i in range(length):
        entry = encode_command(draw_command(data, a))
        if i == restore_at:
            b = MetaState.restore(b.snapshot())
        assert a.apply_encoded(entry) == b.apply_encoded(entry)
        for table in a.tables():
            a.range_map(table.name)  # raises RangeMapError if the tiling broke
        assert all(len(set(r.replicas)) == len(r.replicas) for r in a.ranges())
    assert a.snapshot() == b.snapshot()


def test_table_options_are_set_replaced_and_removed_by_command() -> None:
    """Secondary indexes live in the catalog as table options, so every gateway knows them."""
    from shardb.placement import SetTableOption

    state = cluster()
    assert state.apply(create()).ok
    sql = "CREATE INDEX t_v ON t(v)"
    assert state.apply(SetTableOption(table="t", key="index:t_v", value=sql)).ok
    table = state.table("t")
    assert table is not None and table.options == (("index:t_v", sql),)
    command = SetTableOption(table="t", key="index:t_v", value=None)
    assert decode_command(encode_command(command)) == command
    assert state.apply(command).ok
    table = state.table("t")
    assert table is not None and table.options == ()
    missing = state.apply(SetTableOption(table="nope", key="k", value="v"))
    assert missing.error is MetaErrorCode.UNKNOWN_TABLE
