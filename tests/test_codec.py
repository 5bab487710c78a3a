"""The wire codec: type-driven msgpack for message bodies, envelopes and frames.

Claims: every supported field type round-trips exactly; registration is explicit and
refuses duplicates and unsupported types; decoding untrusted input (random objects, random
bytes, corrupted frames) fails only with ``CodecError``; batches split at the frame limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import sys
import types
import typing
from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import codec
from consensus.codec import (
    PROTOCOL_VERSION,
    Auth,
    Batch,
    BodyRegistry,
    CodecError,
    DecodeError,
    EncodeError,
    FrameKind,
    Hello,
    ProtocolVersionMismatch,
    RegistrationError,
    Reject,
    decode_frame,
    decode_frame_bytes,
    decode_message,
    decode_message_bytes,
    encode_batch_frames,
    encode_frame,
    encode_message,
    message_to_wire,
    register_default_bodies,
)
from consensus.types import (
    ConfState,
    Entry,
    EntryKind,
    GroupId,
    Index,
    Message,
    NodeId,
    SnapshotMeta,
    Term,
)

INT64 = (-(1 << 63), (1 << 63) - 1)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


@dataclass(frozen=True, slots=True, kw_only=True)
class Append:
    term: Term
    prev_index: Index
    entries: tuple[Entry, ...]
    commit: Index
    reject: bool
    hint: int
    note: str
    color: Color
    mode: Mode
    conf: ConfState
    snapshot: SnapshotMeta | None
    pair: tuple[NodeId, bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Empty:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked:
    value: int

    def __post_init__(self) -> None:
        if self.value == 13:
            raise RuntimeError("unlucky")


def make_registry() -> BodyRegistry:
    reg = BodyRegistry()
    reg.register(1, Append)
    reg.register(2, Ping)
    reg.register(3, Empty)
    reg.register(4, Checked)
    return reg


REG = make_registry()

ids = st.integers(0, INT64[1])
node_ids = ids.map(NodeId)
node_tuples = st.lists(node_ids, max_size=4).map(lambda xs: tuple(sorted(xs)))
confs = st.builds(ConfState, voters=node_tuples, voters_outgoing=node_tuples, learners=node_tuples)
entries = st.builds(
    Entry,
    index=ids.map(Index),
    term=ids.map(Term),
    kind=st.sampled_from(EntryKind),
    data=st.binary(max_size=32),
    accepted_ballot=ids.map(Term),
)
appends = st.builds(
    Append,
    term=ids.map(Term),
    prev_index=ids.map(Index),
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=ids.map(Index),
    reject=st.booleans(),
    hint=st.integers(*INT64),
    note=st.text(max_size=20),
    color=st.sampled_from(Color),
    mode=st.sampled_from(Mode),
    conf=confs,
    snapshot=st.none()
    | st.builds(SnapshotMeta, index=ids.map(Index), term=ids.map(Term), conf=confs),
    pair=st.tuples(node_ids, st.binary(max_size=8)),
)
bodies = appends | st.builds(Ping, seq=st.integers(*INT64)) | st.just(Empty())
messages = st.builds(Message, group_id=ids.map(GroupId), src=node_ids, dst=node_ids, body=bodies)

# Anything msgpack can carry, including types no frame uses (floats, maps, huge ints).
msgpack_objects = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=25,
)


def ping(seq: int = 1, *, src: int = 1, dst: int = 2) -> Message:
    return Message(group_id=GroupId(7), src=NodeId(src), dst=NodeId(dst), body=Ping(seq=seq))


def wire(msg: Message) -> list[object]:
    return message_to_wire(msg, registry=REG)


# --------------------------------------------------------------------------- round trips


@given(messages)
def test_every_supported_field_type_round_trips(msg: Message) -> None:
    """Ints, NewType ids, bools, str, bytes, enums (int and str valued), nested dataclasses,
    variable and fixed tuples and optionals decode to an equal message."""
    assert decode_message_bytes(encode_message(msg, registry=REG), registry=REG) == msg


@given(messages)
def test_encoding_is_deterministic(msg: Message) -> None:
    """Equal messages encode to identical bytes, so recorded traffic replays bit for bit."""
    again = decode_message_bytes(encode_message(msg, registry=REG), registry=REG)
    assert encode_message(again, registry=REG) == encode_message(msg, registry=REG)


def test_decode_accepts_tuples_from_a_use_list_false_unpacker() -> None:
    msg = ping(5)
    obj = msgpack.unpackb(encode_message(msg, registry=REG), use_list=False, raw=False)
    assert decode_message(obj, registry=REG) == msg


def test_envelope_wire_shape_is_group_src_dst_tag_body() -> None:
    assert wire(ping(9, src=3, dst=4)) == [7, 3, 4, 2, [9]]


# --------------------------------------------------------------------------- registration


def test_duplicate_tag_is_refused() -> None:
    reg = BodyRegistry()
    reg.register(1, Ping)
    with pytest.raises(RegistrationError, match="tag 1"):
        reg.register(1, Empty)


def test_duplicate_class_is_refused() -> None:
    reg = BodyRegistry()
    reg.register(1, Ping)
    with pytest.raises(RegistrationError, match="already registered"):
        reg.register(2, Ping)


@dataclass(frozen=True, kw_only=True)
class HasFloat:
    x: float


@dataclass(frozen=True, kw_only=True)
class HasDict:
    x: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class HasList:
    x: list[int]


@dataclass(frozen=True, kw_only=True)
class HasUnion:
    x: int | str


@dataclass(kw_only=True)
class NotFrozen:
    x: int


class FloatEnum(enum.Enum):
    A = 1.5


@dataclass(frozen=True, kw_only=True)
class HasFloatEnum:
    x: FloatEnum


@pytest.mark.parametrize(
    "cls", [HasFloat, HasDict, HasList, HasUnion, NotFrozen, HasFloatEnum, int]
)
def test_unsupported_body_types_are_refused_at_registration(cls: type) -> None:
    with pytest.raises(RegistrationError):
        BodyRegistry().register(1, cls)


def test_failed_registration_leaves_registry_unchanged() -> None:
    reg = BodyRegistry()
    with pytest.raises(RegistrationError):
        reg.register(1, HasFloat)
    reg.register(1, Ping)
    assert reg.tags() == (1,)


def test_negative_or_non_int_tag_is_refused() -> None:
    with pytest.raises(RegistrationError):
        BodyRegistry().register(-1, Ping)
    with pytest.raises(RegistrationError):
        BodyRegistry().register(True, Ping)


# --------------------------------------------------------------------------- encode misuse


def test_encoding_an_unregistered_body_is_a_local_error() -> None:
    msg = Message(group_id=GroupId(1), src=NodeId(1), dst=NodeId(2), body=HasFloat(x=1.0))
    with pytest.raises(EncodeError, match="not registered"):
        encode_message(msg, registry=REG)


@pytest.mark.parametrize("bad", [True, "1", 1 << 63, -(1 << 63) - 1])
def test_encoding_a_wrongly_typed_or_out_of_range_field_is_a_local_error(bad: object) -> None:
    """Checked on the sender, so a bug never reaches a peer as a frame it must refuse."""
    with pytest.raises(EncodeError):
        encode_message(ping(bad), registry=REG)  # type: ignore[arg-type]


def test_encoding_a_negative_node_id_is_a_local_error() -> None:
    with pytest.raises(EncodeError):
        encode_message(ping(src=-1), registry=REG)


# --------------------------------------------------------------------------- decode errors


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        ([7, 1, 2, 99, [1]], "unknown tag"),
        ([7, 1, 2, "2", [1]], "non-int tag"),
        ([7, 1, 2, 2, [1, 2]], "extra field"),
        ([7, 1, 2, 2, []], "missing field"),
        ([7, 1, 2, 2, [True]], "bool in an int field"),
        ([7, 1, 2, 2, [1.0]], "float in an int field"),
        ([7, 1, 2, 2, [1 << 63]], "int above int64"),
        ([7, -1, 2, 2, [1]], "negative node id"),
        ([(1 << 64) - 1, 1, 2, 2, [1]], "group id above int64"),
        ([7, 1, 2, 2, [1], 0], "extra envelope element"),
        ([7, 1, 2, 2], "short envelope"),
        ({"a": 1}, "map instead of array"),
        ([7, 1, 2, 2, {"seq": 1}], "map body"),
        ([7, 1, 2, 4, [13]], "body constructor raises"),
        (None, "nil"),
    ],
)
def test_malformed_messages_raise_decode_error(obj: object, why: str) -> None:
    with pytest.raises(DecodeError):
        decode_message(obj, registry=REG)


def test_enum_fields_reject_unknown_values_and_bools() -> None:
    """Color.RED has value 1; a peer's ``true`` must not decode as it (bool == 1 in Python)."""
    good = wire(
        Message(
            group_id=GroupId(1),
            src=NodeId(1),
            dst=NodeId(2),
            body=Append(
                term=Term(1),
                prev_index=Index(0),
                entries=(),
                commit=Index(0),
                reject=False,
                hint=0,
                note="",
                color=Color.RED,
                mode=Mode.FAST,
                conf=ConfState(),
                snapshot=None,
                pair=(NodeId(1), b""),
            ),
        )
    )
    decode_message(good, registry=REG)
    body = good[4]
    assert isinstance(body, list)
    for color in (True, 3, "red"):
        bad = [*good[:4], [*body[:7], color, *body[8:]]]
        with pytest.raises(DecodeError):
            decode_message(bad, registry=REG)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(msgpack_objects)
def test_random_objects_decode_or_raise_codec_error(obj: object) -> None:
    """Fuzz: any unpacked msgpack object either decodes or raises CodecError, never
    another exception (TypeError, KeyError, ...) that would kill a connection task."""
    for decode in (
        lambda o: decode_message(o, registry=REG),
        lambda o: decode_frame(o, registry=REG),
        lambda o: decode_frame([PROTOCOL_VERSION, FrameKind.BATCH, [o]], registry=REG),
        lambda o: decode_frame([PROTOCOL_VERSION, FrameKind.HELLO, o], registry=REG),
        lambda o: decode_message([7, 1, 2, 1, o], registry=REG),
    ):
        with contextlib.suppress(CodecError):
            decode(obj)


msgpack_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.binary(max_size=4),
)
small_msgpack = msgpack_leaves | st.lists(msgpack_leaves, max_size=3)


@st.composite
def envelope_shaped(draw: st.DrawFn) -> object:
    """Objects shaped like an Append envelope with random leaves, to reach the field
    decoders that purely random objects rarely get past the envelope check to."""
    body = draw(st.lists(small_msgpack, min_size=12, max_size=12))
    return [draw(msgpack_leaves), 1, 2, 1, body]


@settings(max_examples=200)
@given(envelope_shaped())
def test_envelope_shaped_random_objects_decode_or_raise_codec_error(obj: object) -> None:
    with contextlib.suppress(CodecError):
        decode_message(obj, registry=REG)


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode_frame_bytes(data, registry=REG)


@settings(max_examples=150)
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_corrupted_frames_decode_or_raise_codec_error(
    batch: list[Message], data: st.DataObject
) -> None:
    """Flip, drop and truncate bytes of a valid BATCH frame."""
    frame = bytearray(encode_frame(Batch(messages=tuple(batch)), registry=REG))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "truncate"]))
        if action == "flip":
            frame[pos] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del frame[pos]
        else:
            del frame[pos:]
        if not frame:
            break
    with contextlib.suppress(CodecError):
        decode_frame_bytes(bytes(frame), registry=REG)


def test_invalid_utf8_and_trailing_bytes_are_decode_errors() -> None:
    with pytest.raises(DecodeError):
        decode_frame_bytes(b"\xa2\xff\xfe")  # str of 2 bytes, not UTF-8
    with pytest.raises(DecodeError):
        decode_frame_bytes(encode_frame(Reject(reason="x")) + b"\x00")


# --------------------------------------------------------------------------- frames


def test_frames_round_trip() -> None:
    hello = Hello(cluster_id="c1", node_id=NodeId(3), nonce=b"n" * 16, auth=True)
    batch = Batch(messages=(ping(1), ping(2, src=2, dst=1)))
    for frame in (hello, Auth(mac=b"m" * 32), batch, Reject(reason="cluster_id_mismatch")):
        assert decode_frame_bytes(encode_frame(frame, registry=REG), registry=REG) == frame


def test_frame_is_versioned_and_tagged() -> None:
    raw = codec.unpack(encode_frame(Reject(reason="bye")))
    assert raw == [PROTOCOL_VERSION, int(FrameKind.REJECT), ["bye"]]


def test_other_protocol_version_is_reported_as_such_whatever_follows() -> None:
    with pytest.raises(ProtocolVersionMismatch) as info:
        decode_frame([PROTOCOL_VERSION + 1, "anything", {}, 4])
    assert info.value.peer_version == PROTOCOL_VERSION + 1


def test_unknown_frame_kind_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="unknown kind"):
        decode_frame([PROTOCOL_VERSION, 99, []])


@pytest.mark.parametrize(
    "payload",
    [
        ["", 1, b"n" * 16, False],  # empty cluster id
        ["c", 0, b"n" * 16, False],  # node id 0 is "nobody"
        ["c", 1, b"short", False],  # nonce too short to be a challenge
        ["c", 1, b"n" * 16, 1],  # auth flag not a bool
        ["c" * 129, 1, b"n" * 16, False],  # cluster id too long
    ],
)
def test_invalid_hello_is_a_decode_error(payload: list[object]) -> None:
    with pytest.raises(DecodeError):
        decode_frame([PROTOCOL_VERSION, FrameKind.HELLO, payload])


def test_batch_splits_at_the_frame_limit_in_order() -> None:
    msgs = [ping(i) for i in range(200)]
    frames, oversized = encode_batch_frames(msgs, max_frame_bytes=256, registry=REG)
    assert oversized == []
    assert len(frames) > 1
    assert all(len(data) <= 256 for data, _ in frames)
    decoded: list[Message] = []
    for data, count in frames:
        frame = decode_frame_bytes(data, registry=REG)
        assert isinstance(frame, Batch)
        assert len(frame.messages) == count
        decoded.extend(frame.messages)
    assert decoded == msgs


def test_single_frame_batch_equals_encode_frame() -> None:
    """The hand-assembled batch (header + pre-packed messages) is exactly msgpack's bytes."""
    msgs = [ping(i) for i in range(3)]
    frames, _ = encode_batch_frames(msgs, max_frame_bytes=1 << 20, registry=REG)
    assert frames == [(encode_frame(Batch(messages=tuple(msgs)), registry=REG), 3)]


def test_message_larger_than_a_frame_is_returned_not_framed() -> None:
    frames, oversized = encode_batch_frames([ping(1)], max_frame_bytes=10, registry=REG)
    assert frames == [] and oversized == [ping(1)]


# --------------------------------------------------------------------------- default table


def _fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: object) -> None:
    module = types.ModuleType(name)
    # Bodies' string annotations resolve in their module's namespace.
    module.Term = Term  # type: ignore[attr-defined]
    module.NodeId = NodeId  # type: ignore[attr-defined]
    for key, value in attrs.items():
        if isinstance(value, type):
            value.__module__ = name
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


def _classes() -> dict[str, type]:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Vote:
        term: Term

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Ballot:
        round: int
        node: NodeId

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Prepare:
        ballot: Ballot

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Promise:
        ballot: Ballot
        ok: bool

    return {"Vote": Vote, "Ballot": Ballot, "Prepare": Prepare, "Promise": Promise}


def test_default_bodies_register_from_the_table_in_tag_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cls = _classes()
    _fake_module(monkeypatch, "fake_raft_msgs", Vote=cls["Vote"])
    _fake_module(
        monkeypatch,
        "fake_paxos_msgs",
        Ballot=cls["Ballot"],
        Prepare=cls["Prepare"],
        Promise=cls["Promise"],
    )
    table = (
        (102, "fake_paxos_msgs", "Promise"),
        (1, "fake_raft_msgs", "Vote"),
        (101, "fake_paxos_msgs", "Prepare"),
        (5, "not_written_yet_msgs", "Anything"),
    )
    modules = ("fake_raft_msgs", "fake_paxos_msgs", "not_written_yet_msgs")
    reg = BodyRegistry()
    done = register_default_bodies(registry=reg, table=table, modules=modules)
    assert done == (1, 101, 102)
    assert reg.class_of(101) is cls["Prepare"]
    # Ballot travels only inside Prepare/Promise, so it needs no tag.
    assert reg.tag_of(cls["Ballot"]) is None
    # Idempotent: a second call registers nothing and raises nothing.
    assert register_default_bodies(registry=reg, table=table, modules=modules) == ()
    msg = Message(
        group_id=GroupId(1),
        src=NodeId(1),
        dst=NodeId(2),
        body=cls["Promise"](ballot=cls["Ballot"](round=3, node=NodeId(1)), ok=True),
    )
    assert decode_message_bytes(encode_message(msg, registry=reg), registry=reg) == msg


def test_exported_message_missing_from_the_table_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cls = _classes()
    _fake_module(monkeypatch, "fake_raft_msgs", Vote=cls["Vote"], Prepare=cls["Prepare"])
    with pytest.raises(RegistrationError, match="Prepare"):
        register_default_bodies(
            registry=BodyRegistry(),
            table=((1, "fake_raft_msgs", "Vote"),),
            modules=("fake_raft_msgs",),
        )


def test_table_row_naming_a_missing_class_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_module(monkeypatch, "fake_raft_msgs")
    with pytest.raises(RegistrationError, match="does not exist"):
        register_default_bodies(
            registry=BodyRegistry(),
            table=((1, "fake_raft_msgs", "Vote"),),
            modules=("fake_raft_msgs",),
        )


def test_table_with_a_repeated_tag_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = _classes()
    _fake_module(monkeypatch, "fake_raft_msgs", Vote=cls["Vote"], Prepare=cls["Prepare"])
    with pytest.raises(RegistrationError, match="twice"):
        register_default_bodies(
            registry=BodyRegistry(),
            table=((1, "fake_raft_msgs", "Vote"), (1, "fake_raft_msgs", "Prepare")),
            modules=(),
        )


def strategy_for(hint: object) -> st.SearchStrategy[object]:
    """Values of a supported field type, within the wire's ranges (a tiny mirror of the
    codec's type rules, used to round-trip the real backends' bodies)."""
    if isinstance(hint, typing.NewType):
        return st.integers(0, INT64[1]).map(hint)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(*INT64)
    if hint is str:
        return st.text(max_size=8)
    if hint is bytes:
        return st.binary(max_size=8)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return st.builds(
            hint, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(hint)}
        )
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args[-1] is Ellipsis:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if typing.get_origin(hint) is tuple:
        return st.tuples(*(strategy_for(a) for a in args))
    return st.none() | strategy_for(next(a for a in args if a is not type(None)))


DEFAULT_REG = BodyRegistry()
register_default_bodies(registry=DEFAULT_REG)


@pytest.mark.parametrize(
    "tag", DEFAULT_REG.tags() or [pytest.param(0, marks=pytest.mark.skip("no backend yet"))]
)
@settings(max_examples=30)
@given(data=st.data())
def test_every_backend_message_round_trips(tag: int, data: st.DataObject) -> None:
    cls = DEFAULT_REG.class_of(tag)
    body = data.draw(strategy_for(cls))
    msg = Message(group_id=GroupId(3), src=NodeId(1), dst=NodeId(2), body=body)
    assert (
        decode_message_bytes(encode_message(msg, registry=DEFAULT_REG), registry=DEFAULT_REG) == msg
    )


def test_default_table_covers_every_backend_message() -> None:
    """Guard for the real backends: fails as soon as consensus.raft.messages or
    consensus.paxos.messages exports a message dataclass without a row in
    consensus.codec.DEFAULT_BODY_TABLE (the error names what to add)."""
    register_default_bodies(registry=BodyRegistry())
