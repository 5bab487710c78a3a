"""The meta group's membership and node lifecycle: learners, SetMembers, node ids,
decommissioning and removal, and their wire and snapshot compatibility."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from consensus.types import GroupId, NodeId
from shardb.placement import (
    CreateTable,
    MergeRanges,
    MetaErrorCode,
    MetaState,
    NodeJoined,
    PkType,
    SetReplicas,
    SplitRange,
    WireError,
    decode_command,
    encode_command,
)
from shardb.placement.descriptors import RangeDescriptor
from shardb.placement.meta import (
    FORMAT_VERSION,
    DecommissionNode,
    MetaCommand,
    MetaResult,
    RemoveNode,
    ReserveNodeId,
    SetMembers,
)
from shardb.placement.wire import from_plain, pack, to_plain, unpack
from shardb.statemachine import (
    decode_meta_result,
    descriptor_from_wire,
    descriptor_to_wire,
    encode_meta_result,
)


def _n(*ids: int) -> tuple[NodeId, ...]:
    return tuple(NodeId(i) for i in ids)


def _cluster(n: int = 4) -> MetaState:
    state = MetaState()
    for i in range(1, n + 1):
        joined = NodeJoined(node_id=NodeId(i), address=f"10.0.0.{i}:7000", peer_address=f"p{i}")
        assert state.apply(joined).ok
    return state


def _table(state: MetaState, rf: int = 3, split_points: tuple[int, ...] = ()) -> None:
    create = CreateTable(
        name="t",
        schema_sql="CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        pk_column="id",
        pk_type=PkType.INTEGER,
        backend="raft",
        split_points=split_points,
        replication_factor=rf,
    )
    assert state.apply(create).ok


def _only_range(state: MetaState) -> RangeDescriptor:
    (only,) = state.ranges()
    return only


def _roundtrip(state: MetaState) -> MetaState:
    restored = MetaState.restore(state.snapshot())
    assert restored.snapshot() == state.snapshot()
    return restored


# --------------------------------------------------------------------------- learners


def test_set_members_records_voters_and_learners_and_bumps_the_epoch() -> None:
    """A move's first step adds a learner; meta records it (sorted) at a new epoch."""
    state = _cluster()
    _table(state)
    rng = _only_range(state)
    result = state.apply(
        SetMembers(
            range_id=rng.range_id,
            epoch=rng.epoch,
            voters=(NodeId(3), NodeId(1), NodeId(2)),
            learners=(NodeId(4),),
        )
    )
    assert result.ok
    (updated,) = result.ranges
    assert updated.replicas == (1, 2, 3) and updated.learners == (4,)
    assert updated.epoch == rng.epoch + 1
    assert _roundtrip(state).range(rng.range_id) == updated


@pytest.mark.parametrize(
    ("voters", "learners", "code"),
    [
        ((), (4,), MetaErrorCode.BAD_REPLICAS),
        ((1, 2), (2,), MetaErrorCode.BAD_REPLICAS),
        ((1, 1), (), MetaErrorCode.BAD_REPLICAS),
        ((1,), (4, 4), MetaErrorCode.BAD_REPLICAS),
        ((1, 2), (9,), MetaErrorCode.UNKNOWN_NODE),
        ((9,), (), MetaErrorCode.UNKNOWN_NODE),
    ],
)
def test_bad_members_are_refused_and_change_nothing(
    voters: tuple[int, ...], learners: tuple[int, ...], code: MetaErrorCode
) -> None:
    """Voters non-empty, no node twice or in both roles, every node known."""
    state = _cluster()
    _table(state)
    rng = _only_range(state)
    before = state.snapshot()
    command = SetMembers(
        range_id=rng.range_id,
        epoch=rng.epoch,
        voters=tuple(NodeId(n) for n in voters),
        learners=tuple(NodeId(n) for n in learners),
    )
    assert state.apply(command).error is code
    assert state.snapshot() == before


def test_set_members_with_an_old_epoch_is_stale() -> None:
    """Optimistic concurrency as for every descriptor change."""
    state = _cluster()
    _table(state)
    rng = _only_range(state)
    stale = SetMembers(range_id=rng.range_id, epoch=rng.epoch - 1, voters=(NodeId(1),))
    assert state.apply(stale).error is MetaErrorCode.STALE_EPOCH


def test_set_replicas_keeps_learners_that_were_not_promoted() -> None:
    """SetReplicas is SetMembers with the current learners, less those now voting."""
    state = _cluster(5)
    _table(state)
    rng = _only_range(state)
    four, five = NodeId(4), NodeId(5)
    assert state.apply(
        SetMembers(range_id=rng.range_id, epoch=rng.epoch, voters=rng.replicas, learners=_n(4, 5))
    ).ok
    result = state.apply(
        SetReplicas(
            range_id=rng.range_id, epoch=rng.epoch + 1, replicas=(NodeId(1), NodeId(2), four)
        )
    )
    (updated,) = result.ranges
    assert updated.replicas == (1, 2, 4) and updated.learners == (five,)


def test_merge_requires_no_learners_on_either_side() -> None:
    """A learner is a move in progress; a merged group must not inherit half of one."""
    state = _cluster(3)
    _table(state, split_points=(100,))
    assert state.apply(NodeJoined(node_id=NodeId(4), address="10.0.0.4:7000")).ok
    left, right = state.ranges()
    assert left.replicas == right.replicas
    result = state.apply(
        SetMembers(
            range_id=right.range_id,
            epoch=right.epoch,
            voters=right.replicas,
            learners=_n(4),
        )
    )
    right = result.ranges[0]
    merge = MergeRanges(
        left_range_id=left.range_id,
        left_epoch=left.epoch,
        right_range_id=right.range_id,
        right_epoch=right.epoch,
    )
    assert state.apply(merge).error is MetaErrorCode.REPLICAS_DIFFER
    assert state.apply(
        SetMembers(range_id=right.range_id, epoch=right.epoch, voters=right.replicas)
    ).ok
    assert state.apply(replace(merge, right_epoch=right.epoch + 1)).ok


def test_split_gives_the_right_half_the_parents_learners() -> None:
    """The right half starts on the parent's members, learners included."""
    state = _cluster()
    _table(state)
    rng = _only_range(state)
    state.apply(
        SetMembers(range_id=rng.range_id, epoch=rng.epoch, voters=rng.replicas, learners=_n(4))
    )
    result = state.apply(SplitRange(range_id=rng.range_id, epoch=rng.epoch + 1, split_key=10))
    assert [d.learners for d in result.ranges] == [(4,), (4,)]


def test_descriptor_without_learners_encodes_as_before() -> None:
    """learners is an optional trailing field: absent from the bytes while empty, so old
    snapshots decode and old descriptors are the same bytes; present when set."""
    plain = RangeDescriptor(
        range_id=1,
        table="t",
        start_key=None,
        end_key=5,
        group_id=GroupId(2),
        replicas=_n(1),
        backend="raft",
    )
    assert to_plain(plain) == [1, "t", None, 5, 2, [1], "raft", 1]
    assert "learners" not in descriptor_to_wire(plain)
    with_learner = replace(plain, learners=(NodeId(3),))
    assert to_plain(with_learner) == [1, "t", None, 5, 2, [1], "raft", 1, [3]]
    for d in (plain, with_learner):
        assert from_plain(RangeDescriptor, to_plain(d)) == d
        assert descriptor_from_wire(descriptor_to_wire(d)) == d
    with pytest.raises(WireError):
        from_plain(RangeDescriptor, [1, "t", None, 5, 2, [1]])  # a required field missing


# --------------------------------------------------------------------------- nodes


def test_node_joined_keeps_the_peer_address() -> None:
    """Other nodes add a joined node as a consensus peer at its peer address."""
    state = _cluster(2)
    info = state.node(NodeId(2))
    assert info is not None and info.peer_address == "p2" and not info.decommissioning
    assert _roundtrip(state).node(NodeId(2)) == info


def test_reserve_node_id_is_fresh_and_never_reused() -> None:
    """Ids go above every id known or reserved before, also after a node is removed."""
    state = _cluster(3)
    first = state.apply(ReserveNodeId())
    second = state.apply(ReserveNodeId())
    assert (first.node_id, second.node_id) == (4, 5)
    assert state.apply(NodeJoined(node_id=NodeId(9), address="x")).ok
    assert state.apply(RemoveNode(node_id=NodeId(9))).ok
    assert state.apply(ReserveNodeId()).node_id == 10
    assert _roundtrip(state).apply(ReserveNodeId()).node_id == 11


def test_decommission_marks_the_node_and_new_tables_avoid_it() -> None:
    """A decommissioning node is drained: CreateTable places nothing on it, and a restart
    (NodeJoined again) does not cancel the decommission."""
    state = _cluster(4)
    assert state.apply(DecommissionNode(node_id=NodeId(2))).ok
    assert state.apply(DecommissionNode(node_id=NodeId(2))).ok  # idempotent
    assert state.apply(NodeJoined(node_id=NodeId(2), address="again")).ok
    info = state.node(NodeId(2))
    assert info is not None and info.decommissioning and info.address == "again"
    _table(state)
    assert _only_range(state).replicas == (1, 3, 4)
    assert state.apply(DecommissionNode(node_id=NodeId(7))).error is MetaErrorCode.UNKNOWN_NODE


def test_remove_node_is_refused_while_a_range_lists_it() -> None:
    """A node still a voter or a learner of some range cannot be forgotten."""
    state = _cluster(4)
    _table(state)
    rng = _only_range(state)
    assert state.apply(RemoveNode(node_id=NodeId(1))).error is MetaErrorCode.NODE_IN_USE
    state.apply(
        SetMembers(range_id=rng.range_id, epoch=rng.epoch, voters=rng.replicas, learners=_n(4))
    )
    before = state.snapshot()
    assert state.apply(RemoveNode(node_id=NodeId(4))).error is MetaErrorCode.NODE_IN_USE
    assert state.snapshot() == before
    assert state.apply(RemoveNode(node_id=NodeId(9))).error is MetaErrorCode.UNKNOWN_NODE


def test_removed_node_is_forgotten_and_cannot_rejoin_under_its_id() -> None:
    """Its old replicas may still be remembered elsewhere; a new node reserves a new id."""
    state = _cluster(4)
    _table(state)
    assert state.apply(DecommissionNode(node_id=NodeId(4))).ok
    assert state.apply(RemoveNode(node_id=NodeId(4))).ok
    assert state.node(NodeId(4)) is None and state.removed_nodes() == (4,)
    rejoin = NodeJoined(node_id=NodeId(4), address="x")
    assert state.apply(rejoin).error is MetaErrorCode.NODE_REMOVED
    restored = _roundtrip(state)
    assert restored.removed_nodes() == (4,)
    assert restored.apply(rejoin).error is MetaErrorCode.NODE_REMOVED


def test_new_commands_round_trip_through_the_wire() -> None:
    """Every new command encodes to the versioned msgpack form and decodes back equal."""
    commands: list[MetaCommand] = [
        SetMembers(range_id=3, epoch=2, voters=(NodeId(1),), learners=(NodeId(2),)),
        SetMembers(range_id=3, epoch=2, voters=(NodeId(1),)),
        ReserveNodeId(),
        DecommissionNode(node_id=NodeId(4)),
        RemoveNode(node_id=NodeId(4)),
        NodeJoined(node_id=NodeId(1), address="a", peer_address="b"),
        NodeJoined(node_id=NodeId(1), address="a"),
    ]
    for command in commands:
        assert decode_command(encode_command(command)) == command
    # A NodeJoined without a peer address is the bytes it was before the field existed.
    old = pack([FORMAT_VERSION, "node_joined", [1, "a", 0]])
    assert encode_command(NodeJoined(node_id=NodeId(1), address="a")) == old


def test_meta_result_carries_the_reserved_node_id() -> None:
    """The reserved id reaches the caller through the meta group's result encoding."""
    state = _cluster(2)
    result = state.apply(ReserveNodeId())
    decoded = decode_meta_result(encode_meta_result(result))
    assert decoded == result and decoded.node_id == 3
    assert decode_meta_result(encode_meta_result(MetaResult())).node_id is None


def test_snapshot_from_before_node_ids_were_allocated_restores() -> None:
    """An older snapshot (no node counter, no removed nodes, NodeInfo without the new
    fields) decodes; the counter starts above every known id."""
    state = _cluster(3)
    _table(state)
    snapshot: Any = unpack(state.snapshot())
    version, image = snapshot
    assert version == FORMAT_VERSION and len(image) == 7  # removed_nodes left out: empty
    image = image[:6]  # the image as it was: no node counter
    image[3] = [node[:4] for node in image[3]]  # NodeInfo as it was: no new fields
    restored = MetaState.restore(pack([FORMAT_VERSION, image]))
    assert restored.nodes() == tuple(replace(n, peer_address="") for n in state.nodes())
    assert restored.apply(ReserveNodeId()).node_id == 4


def test_snapshot_with_a_removed_node_still_known_is_refused() -> None:
    """A node cannot be both removed and known: such bytes are not a state."""
    state = _cluster(2)
    assert state.apply(RemoveNode(node_id=NodeId(2))).ok
    snapshot: Any = unpack(state.snapshot())
    version, image = snapshot
    image[7] = [1]
    with pytest.raises(WireError, match="removed node"):
        MetaState.restore(pack([version, image]))
