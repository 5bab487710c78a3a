"""Builders shared by the storage tests."""

from __future__ import annotations

from collections.abc import Callable

from consensus.storage import SQLiteLogStore
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

CLUSTER = "test-cluster"
NODE = NodeId(1)
CONF = ConfState(voters=(NodeId(1), NodeId(2), NodeId(3)))
G1, G2, G3 = GroupId(1), GroupId(2), GroupId(3)

OpenStore = Callable[..., SQLiteLogStore]


def entry(
    index: int,
    term: int,
    data: bytes | None = None,
    *,
    kind: EntryKind = EntryKind.NORMAL,
    ballot: int = 0,
) -> Entry:
    return Entry(
        index=Index(index),
        term=Term(term),
        kind=kind,
        data=f"cmd-{index}-{term}".encode() if data is None else data,
        accepted_ballot=Term(ballot),
    )


def snapshot(index: int, term: int, data: bytes = b"image", conf: ConfState = CONF) -> Snapshot:
    return Snapshot(meta=SnapshotMeta(index=Index(index), term=Term(term), conf=conf), data=data)
