"""``ShardStateMachine``: the one state machine a shardb node hands to ``open_node``.

A node hosts the meta group (``META_GROUP_ID``) and many SQL range groups; the runtime applies
all of them to one ``StateMachine``. This object routes by group id: the meta group to a
``MetaMachine`` (``data_dir/meta.db``), registered SQL groups to a ``SqlStateMachine``
(``data_dir/data.db``), anything else is a ``StateMachineError``. Two files, because the two
states have nothing in common but the thread they are applied on: the meta state is rewritten
whole per batch, the SQL file holds user tables.

The extra methods are for the node service, which calls them through
``Node.call_state_machine`` (the state machine's single thread, serialised with apply):
``register_range`` before creating a range's consensus group (it starts seeded, at
``SEED_INDEX``), ``hosted_ranges`` to find ranges registered here but not yet hosted (a split
registers its right half when it applies, also after a crash), ``retired_groups`` to find
groups a merge retired here (their consensus groups can be removed), ``meta_state`` /
``meta_applied`` for the local meta replica, and ``range_stats`` for size-based splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from consensus.api import Logger
from consensus.runtime.layout import DATA_FILE
from consensus.runtime.statemachine import StateMachineError
from consensus.types import Entry, GroupId, Index, Snapshot
from shardb.placement.descriptors import RangeDescriptor
from shardb.placement.meta import FIRST_USER_GROUP_ID, META_GROUP_ID, MetaState
from shardb.statemachine.machine import RangeStats, SqlStateMachine
from shardb.statemachine.metamachine import MetaMachine

META_FILE: Final = "meta.db"
"""The meta group's replicated state, next to ``DATA_FILE`` (user data)."""


class ShardStateMachine:
    """The meta group and the SQL range groups of one node. Synchronous; one thread at a
    time (the runtime's state machine thread)."""

    def __init__(self, data_dir: Path, *, logger: Logger | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._meta = MetaMachine(data_dir / META_FILE, logger=logger)
        try:
            self._sql = SqlStateMachine(data_dir / DATA_FILE, logger=logger)
        except BaseException:
            self._meta.close()
            raise
        self._closed = False

    def _machine(self, group_id: GroupId) -> MetaMachine | SqlStateMachine:
        if group_id == META_GROUP_ID:
            return self._meta
        if self._sql.hosts(group_id):
            return self._sql
        raise StateMachineError(
            f"group {group_id} is neither the meta group ({META_GROUP_ID}) nor a SQL range "
            "registered on this node (register_range first)"
        )

    # ----------------------------------------------------------------------- StateMachine

    def apply(self, group_id: GroupId, entries: Sequence[Entry]) -> tuple[bytes | None, ...]:
        return self._machine(group_id).apply(group_id, entries)

    def applied_index(self, group_id: GroupId) -> Index:
        # 0 for a group not registered (yet): the runtime asks about every group it hosts,
        # and a new replica's group exists before its first snapshot registers the range.
        if group_id == META_GROUP_ID:
            return self._meta.applied_index(group_id)
        return self._sql.applied_index(group_id)

    def snapshot(self, group_id: GroupId) -> bytes:
        return self._machine(group_id).snapshot(group_id)

    def restore(self, group_id: GroupId, snapshot: Snapshot) -> None:
        # A SQL snapshot carries its descriptor and schema, so it registers a range this
        # node never had (a replica added by a membership change).
        machine = self._meta if group_id == META_GROUP_ID else self._sql
        machine.restore(group_id, snapshot)

    def query(self, group_id: GroupId, query: bytes) -> bytes:
        return self._machine(group_id).query(group_id, query)

    def drop_group(self, group_id: GroupId) -> None:
        if group_id == META_GROUP_ID:
            self._meta.drop_group(group_id)
        else:
            self._sql.drop_group(group_id)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._sql.close()
            finally:
                self._meta.close()

    # ----------------------------------------------------------------------- node service

    def register_range(self, descriptor: RangeDescriptor, schema_sql: str) -> RangeDescriptor:
        """Host ``descriptor``'s range here, empty, at applied ``SEED_INDEX`` (idempotent: a
        registered range keeps and returns its current descriptor). Raises ``RangeOverlap``
        while a live range on this node still covers some of its keys (the right half of a
        split the parent has not applied yet), ``TableRefused`` for a table the SQL machine
        cannot host, ``GroupRetired`` for a group a merge retired here."""
        if descriptor.group_id < FIRST_USER_GROUP_ID:
            raise StateMachineError(
                f"group {descriptor.group_id} is reserved; SQL ranges start at "
                f"{FIRST_USER_GROUP_ID}"
            )
        return self._sql.register_group(descriptor.group_id, descriptor, schema_sql)

    def hosted_ranges(self) -> tuple[RangeDescriptor, ...]:
        """Current descriptors of the live SQL ranges (table not dropped, not merged away),
        by group id."""
        return self._sql.live_descriptors()

    def retired_groups(self) -> tuple[GroupId, ...]:
        """SQL groups a merge retired on this node, ascending: tombstones whose consensus
        group can be removed (``drop_group`` then deletes only their bookkeeping)."""
        return self._sql.retired_group_ids()

    def meta_state(self) -> MetaState | None:
        """A copy of the local meta replica's state; None if it never applied anything."""
        return self._meta.state()

    def meta_applied(self) -> Index:
        return self._meta.applied_index(META_GROUP_ID)

    def range_stats(self, group_id: GroupId) -> RangeStats:
        """See ``SqlStateMachine.range_stats`` (exact row count, sampled bytes)."""
        if not self._sql.hosts(group_id):
            raise StateMachineError(f"group {group_id} is not a SQL range on this node")
        return self._sql.range_stats(group_id)


__all__ = ["META_FILE", "ShardStateMachine"]
