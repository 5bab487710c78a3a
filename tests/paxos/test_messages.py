"""Every Multi-Paxos message body is wire-safe: it round-trips through the msgpack codec."""

from __future__ import annotations

import dataclasses

import pytest

from consensus import codec
from consensus.paxos import make_ballot, messages
from consensus.paxos.messages import (
    Accept,
    Accepted,
    Heartbeat,
    HeartbeatAck,
    InstallSnapshot,
    InstallSnapshotResponse,
    Learn,
    Nack,
    NackReason,
    PreCheck,
    PreCheckResponse,
    Prepare,
    Promise,
    TimeoutNow,
)
from consensus.types import ConfState, Entry, EntryKind, Index, NodeId, SnapshotMeta

from .harness import envelope

B = make_ballot(3, NodeId(2))
E = (
    Entry(index=Index(4), term=B, kind=EntryKind.CONFIG, data=b"\x01", accepted_ballot=B),
    Entry(index=Index(5), term=B, kind=EntryKind.NOOP, accepted_ballot=B),
)
META = SnapshotMeta(index=Index(3), term=B, conf=ConfState(voters=(NodeId(1), NodeId(2))))

SAMPLES = [
    PreCheck(ballot=B, commit=Index(1)),
    PreCheckResponse(ballot=B, granted=True, promised=B),
    Prepare(ballot=B, from_slot=Index(2), transfer=True),
    Promise(ballot=B, from_slot=Index(2), entries=E, next_slot=Index(6), commit=Index(1)),
    Nack(ballot=B, promised=B, reason=NackReason.NOT_MEMBER, commit=Index(1)),
    Accept(ballot=B, entries=E, commit=Index(3)),
    Learn(ballot=B, entries=E, commit=Index(5)),
    Accepted(
        ballot=B, from_slot=Index(4), to_slot=Index(5), commit=Index(3), accepted_through=Index(5)
    ),
    Heartbeat(ballot=B, commit=Index(3), round=7),
    HeartbeatAck(ballot=B, round=7, commit=Index(3), accepted_through=Index(5)),
    InstallSnapshot(ballot=B, meta=META, offset=16, data=b"chunk", done=False),
    InstallSnapshotResponse(
        ballot=B, snapshot_index=Index(3), next_offset=21, done=True, commit=Index(3)
    ),
    TimeoutNow(ballot=B),
]


def test_samples_cover_every_message() -> None:
    exported = {
        obj
        for obj in vars(messages).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == messages.__name__
    }
    assert exported == {type(s) for s in SAMPLES}


@pytest.mark.parametrize("body", SAMPLES, ids=lambda b: type(b).__name__)
def test_message_round_trips_through_the_codec(body: object) -> None:
    codec.register_default_bodies()
    message = envelope(2, 1, body)  # type: ignore[arg-type]
    assert codec.decode_message_bytes(codec.encode_message(message)) == message
