"""The wire codec: msgpack for message envelopes and transport frames, never pickle.

Pure (no IO, no clock): the TCP and in-memory transports, and any tool that wants to look at
traffic, share it. Backend message bodies are frozen dataclasses; the codec derives their
encoding from their type hints once, at registration, so a backend adds a message by
declaring a dataclass and giving it a tag here, never by writing serialisation code.

Wire shapes (all msgpack arrays, positional, so every field is always present and arity is
checked):

- body:     ``[field_1, ..., field_n]`` in ``dataclasses.fields`` order
- message:  ``[group_id, src, dst, tag, body]``
- frame:    ``[PROTOCOL_VERSION, kind, payload]`` (``FrameKind``)

Two error kinds, as in h11: ``EncodeError`` is local misuse (an unregistered body, a field of
the wrong type); ``DecodeError`` is a misbehaving or incompatible peer. Decoding untrusted
input raises nothing but ``DecodeError`` (a ``CodecError``): the transport closes the
connection, the node keeps running.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import itertools
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NewType, TypeAlias

import msgpack

from consensus.types import GroupId, Index, Message, NodeId, Term

PROTOCOL_VERSION = 2
"""Bumped on any incompatible change of a frame, a hello or a registered body's fields:
bodies carry no per-field versioning, so peers of different versions refuse each other in
the hello instead of misreading each other."""

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

MAX_CLUSTER_ID_CHARS = 128
MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64
MAX_REASON_CHARS = 512


# --------------------------------------------------------------------------- errors


class CodecError(Exception):
    """Base of every error this module raises."""


class EncodeError(CodecError):
    """The caller asked to encode something the wire format cannot carry (local misuse)."""


class DecodeError(CodecError):
    """The input is not a valid encoding (a misbehaving or incompatible peer)."""


class ProtocolVersionMismatch(DecodeError):
    """A well-formed frame of another protocol version; ``peer_version`` says which."""

    def __init__(self, peer_version: int) -> None:
        self.peer_version = peer_version
        super().__init__(
            f"peer speaks protocol version {peer_version}, we speak {PROTOCOL_VERSION}"
        )


class RegistrationError(CodecError):
    """A body class or tag cannot be registered (duplicate, unsupported field type)."""


# --------------------------------------------------------------------------- field plans

_Encoder: TypeAlias = Callable[[Any], Any]
_Decoder: TypeAlias = Callable[[Any], Any]

# Ids are never negative; catching a negative id at the edge keeps it out of the cores.
_NON_NEGATIVE_INTS: tuple[object, ...] = (NodeId, GroupId, Index, Term)


def _encode_int_in(lo: int, hi: int, what: str) -> _Encoder:
    def encode(value: Any) -> Any:
        # bool is an int subclass; a bool in an int field is a bug, not a 0 or 1.
        if type(value) is bool or not isinstance(value, int):
            raise EncodeError(f"{what}: expected int, got {type(value).__name__}")
        if not lo <= value <= hi:
            raise EncodeError(f"{what}: {value} outside [{lo}, {hi}]")
        return int(value)

    return encode


def _decode_int_in(lo: int, hi: int, what: str) -> _Decoder:
    def decode(raw: Any) -> Any:
        if type(raw) is not int:
            raise DecodeError(f"{what}: expected int, got {type(raw).__name__}")
        if not lo <= raw <= hi:
            raise DecodeError(f"{what}: {raw} outside [{lo}, {hi}]")
        return raw

    return decode


def _exact(kind: type, what: str, error: type[CodecError]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise error(f"{what}: expected {kind.__name__}, got {type(value).__name__}")
        return value

    return check


def _is_sequence(raw: Any) -> bool:
    # Unpackers built with use_list=False hand out tuples; accept both.
    return type(raw) is list or type(raw) is tuple


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one dataclass (a body or a nested value such as ``Entry``) goes on the wire."""

    cls: type
    names: tuple[str, ...]
    encoders: tuple[_Encoder, ...]
    decoders: tuple[_Decoder, ...]

    def encode(self, value: Any) -> list[Any]:
        if type(value) is not self.cls:
            raise EncodeError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return [
            enc(getattr(value, name)) for name, enc in zip(self.names, self.encoders, strict=True)
        ]

    def decode(self, raw: Any) -> Any:
        if not _is_sequence(raw):
            raise DecodeError(f"{self.cls.__name__}: expected array, got {type(raw).__name__}")
        if len(raw) != len(self.names):
            raise DecodeError(
                f"{self.cls.__name__}: expected {len(self.names)} fields, got {len(raw)}"
            )
        kwargs = {
            name: dec(item) for name, dec, item in zip(self.names, self.decoders, raw, strict=True)
        }
        try:
            return self.cls(**kwargs)
        except Exception as exc:
            # A body may validate itself in __post_init__ and raise anything; bytes from a
            # peer must never take the node down, so every such failure is a DecodeError.
            raise DecodeError(f"{self.cls.__name__}: rejected by constructor: {exc!r}") from exc


class _PlanCompiler:
    """Turns type hints into encoder/decoder closures; remembers nested dataclasses."""

    def __init__(self, plans: dict[type, _Plan]) -> None:
        self._plans = plans
        self._in_progress: set[type] = set()

    def plan(self, cls: type) -> _Plan:
        existing = self._plans.get(cls)
        if existing is not None:
            return existing
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise RegistrationError(f"{cls!r} is not a dataclass")
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise RegistrationError(f"{cls.__name__} must be a frozen dataclass")
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:
            raise RegistrationError(f"{cls.__name__}: cannot resolve type hints: {exc}") from exc
        names: list[str] = []
        encoders: list[_Encoder] = []
        decoders: list[_Decoder] = []
        if cls in self._in_progress:
            raise RegistrationError(f"{cls.__name__} contains itself; cannot be encoded")
        self._in_progress.add(cls)
        try:
            for f in dataclasses.fields(cls):
                if not f.init:
                    raise RegistrationError(f"{cls.__name__}.{f.name}: init=False fields")
                what = f"{cls.__name__}.{f.name}"
                enc, dec = self._field(hints[f.name], what)
                names.append(f.name)
                encoders.append(enc)
                decoders.append(dec)
        finally:
            self._in_progress.discard(cls)
        plan = _Plan(cls, tuple(names), tuple(encoders), tuple(decoders))
        self._plans[cls] = plan
        return plan

    def _field(self, hint: Any, what: str) -> tuple[_Encoder, _Decoder]:
        if isinstance(hint, NewType):
            if hint in _NON_NEGATIVE_INTS:
                return _encode_int_in(0, INT64_MAX, what), _decode_int_in(0, INT64_MAX, what)
            return self._field(hint.__supertype__, what)
        if hint is bool:
            return _exact(bool, what, EncodeError), _exact(bool, what, DecodeError)
        if hint is int:
            return (
                _encode_int_in(INT64_MIN, INT64_MAX, what),
                _decode_int_in(INT64_MIN, INT64_MAX, what),
            )
        if hint is str:
            return _exact(str, what, EncodeError), _exact(str, what, DecodeError)
        if hint is bytes:
            return _exact(bytes, what, EncodeError), _exact(bytes, what, DecodeError)
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return self._enum(hint, what)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            nested = self.plan(hint)
            return nested.encode, nested.decode
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is tuple:
            return self._tuple(args, what)
        if origin is typing.Union or origin is types.UnionType:
            return self._optional(args, what)
        raise RegistrationError(f"{what}: unsupported field type {hint!r}")

    def _enum(self, cls: type[enum.Enum], what: str) -> tuple[_Encoder, _Decoder]:
        by_value: dict[tuple[type, object], enum.Enum] = {}
        for member in cls:
            value = member.value
            if type(value) not in (int, str):
                raise RegistrationError(f"{what}: enum {cls.__name__} values must be int or str")
            if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
                raise RegistrationError(f"{what}: enum {cls.__name__} value out of range")
            # Keyed by (type, value) so that True never decodes as a member whose value is 1.
            by_value[(type(value), value)] = member

        def encode(value: Any) -> Any:
            if not isinstance(value, cls):
                raise EncodeError(f"{what}: expected {cls.__name__}, got {type(value).__name__}")
            return value.value

        def decode(raw: Any) -> Any:
            if type(raw) not in (int, str):
                raise DecodeError(f"{what}: expected {cls.__name__} value")
            member = by_value.get((type(raw), raw))
            if member is None:
                raise DecodeError(f"{what}: {raw!r} is not a {cls.__name__}")
            return member

        return encode, decode

    def _tuple(self, args: tuple[Any, ...], what: str) -> tuple[_Encoder, _Decoder]:
        if len(args) == 2 and args[1] is Ellipsis:
            item_enc, item_dec = self._field(args[0], f"{what}[]")

            def encode_var(value: Any) -> Any:
                if type(value) is not tuple:
                    raise EncodeError(f"{what}: expected tuple, got {type(value).__name__}")
                return [item_enc(item) for item in value]

            def decode_var(raw: Any) -> Any:
                if not _is_sequence(raw):
                    raise DecodeError(f"{what}: expected array, got {type(raw).__name__}")
                return tuple(item_dec(item) for item in raw)

            return encode_var, decode_var
        if not args or Ellipsis in args:
            raise RegistrationError(f"{what}: unsupported tuple type")
        parts = [self._field(arg, f"{what}[{i}]") for i, arg in enumerate(args)]
        encs = tuple(p[0] for p in parts)
        decs = tuple(p[1] for p in parts)

        def encode_fixed(value: Any) -> Any:
            if type(value) is not tuple or len(value) != len(encs):
                raise EncodeError(f"{what}: expected a {len(encs)}-tuple")
            return [enc(item) for enc, item in zip(encs, value, strict=True)]

        def decode_fixed(raw: Any) -> Any:
            if not _is_sequence(raw) or len(raw) != len(decs):
                raise DecodeError(f"{what}: expected an array of {len(decs)}")
            return tuple(dec(item) for dec, item in zip(decs, raw, strict=True))

        return encode_fixed, decode_fixed

    def _optional(self, args: tuple[Any, ...], what: str) -> tuple[_Encoder, _Decoder]:
        others = [a for a in args if a is not type(None)]
        if len(others) != 1 or len(args) != 2:
            raise RegistrationError(f"{what}: only `X | None` unions are supported")
        inner_enc, inner_dec = self._field(others[0], what)

        def encode(value: Any) -> Any:
            return None if value is None else inner_enc(value)

        def decode(raw: Any) -> Any:
            return None if raw is None else inner_dec(raw)

        return encode, decode


# --------------------------------------------------------------------------- registry


class BodyRegistry:
    """The explicit map between wire tags and message body classes.

    Tags are stable wire ids: never reuse or renumber one without bumping
    ``PROTOCOL_VERSION``. Registering a tag or a class twice is an error, so two backends
    can never silently claim the same id.
    """

    def __init__(self) -> None:
        self._by_tag: dict[int, _Plan] = {}
        self._tag_of: dict[type, int] = {}
        self._plans: dict[type, _Plan] = {}
        self._compiler = _PlanCompiler(self._plans)

    def register(self, tag: int, cls: type) -> None:
        if type(tag) is not int or not 0 <= tag <= INT64_MAX:
            raise RegistrationError(f"tag must be a non-negative int, got {tag!r}")
        if tag in self._by_tag:
            other = self._by_tag[tag].cls.__qualname__
            raise RegistrationError(f"tag {tag} is already registered to {other}")
        if cls in self._tag_of:
            raise RegistrationError(f"{cls!r} is already registered as tag {self._tag_of[cls]}")
        plan = self._compiler.plan(cls)
        self._by_tag[tag] = plan
        self._tag_of[cls] = tag

    def tag_of(self, cls: type) -> int | None:
        return self._tag_of.get(cls)

    def class_of(self, tag: int) -> type | None:
        plan = self._by_tag.get(tag)
        return None if plan is None else plan.cls

    def tags(self) -> tuple[int, ...]:
        return tuple(sorted(self._by_tag))

    def nested_classes(self) -> tuple[type, ...]:
        """Dataclasses that travel only inside registered bodies (``Entry``, ...)."""
        return tuple(
            sorted(
                (cls for cls in self._plans if cls not in self._tag_of),
                key=lambda c: (c.__module__, c.__qualname__),
            )
        )

    def encode_body(self, body: object) -> tuple[int, list[Any]]:
        tag = self._tag_of.get(type(body))
        if tag is None:
            raise EncodeError(f"body type {type(body).__qualname__} is not registered")
        return tag, self._by_tag[tag].encode(body)

    def decode_body(self, tag: Any, raw: Any) -> object:
        if type(tag) is not int:
            raise DecodeError(f"body tag must be an int, got {type(tag).__name__}")
        plan = self._by_tag.get(tag)
        if plan is None:
            raise DecodeError(f"unknown body tag {tag}")
        result: object = plan.decode(raw)
        return result


DEFAULT_REGISTRY = BodyRegistry()
"""The process-wide registry the transports use unless given another."""


def register_body(tag: int, cls: type, *, registry: BodyRegistry | None = None) -> None:
    (registry or DEFAULT_REGISTRY).register(tag, cls)


# The stable wire tags of both backends' messages: (tag, module, class name), ascending by
# tag. Raft owns 1-99, Multi-Paxos 101-199; 200+ is free for future kinds. Fill in a row when
# a backend adds a message; `register_default_bodies` refuses to run while a message
# dataclass a backend module exports is missing here, so nothing goes unencodable silently.
BodyTable: TypeAlias = tuple[tuple[int, str, str], ...]

_RAFT = "consensus.raft.messages"
_PAXOS = "consensus.paxos.messages"

DEFAULT_BODY_TABLE: BodyTable = (
    (1, _RAFT, "RequestVote"),
    (2, _RAFT, "RequestVoteResponse"),
    (3, _RAFT, "AppendEntries"),
    (4, _RAFT, "AppendEntriesResponse"),
    (5, _RAFT, "Heartbeat"),
    (6, _RAFT, "HeartbeatResponse"),
    (7, _RAFT, "InstallSnapshot"),
    (8, _RAFT, "InstallSnapshotResponse"),
    (9, _RAFT, "TimeoutNow"),
    (101, _PAXOS, "PreCheck"),
    (102, _PAXOS, "PreCheckResponse"),
    (103, _PAXOS, "Prepare"),
    (104, _PAXOS, "Promise"),
    (105, _PAXOS, "Nack"),
    (106, _PAXOS, "Accept"),
    (107, _PAXOS, "Learn"),
    (108, _PAXOS, "Accepted"),
    (109, _PAXOS, "Heartbeat"),
    (110, _PAXOS, "HeartbeatAck"),
    (111, _PAXOS, "InstallSnapshot"),
    (112, _PAXOS, "InstallSnapshotResponse"),
    (113, _PAXOS, "TimeoutNow"),
    (201, "consensus.host", "NodeHeartbeat"),
    (202, "consensus.host", "Quiesce"),
    (203, "consensus.host", "Unquiesce"),
)

DEFAULT_BODY_MODULES: tuple[str, ...] = (_RAFT, _PAXOS)


def _import_if_present(module_name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only "this module does not exist yet" is tolerated; a module that exists but
        # fails to import its own dependencies is a bug to surface.
        if exc.name is not None and module_name.startswith(exc.name):
            return None
        raise


def _exported_dataclasses(module: types.ModuleType) -> list[type]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    found: list[type] = []
    for name in sorted(names):
        obj = getattr(module, name, None)
        if (
            isinstance(obj, type)
            and dataclasses.is_dataclass(obj)
            and obj.__module__ == module.__name__
        ):
            found.append(obj)
    return found


def register_default_bodies(
    *,
    registry: BodyRegistry | None = None,
    table: BodyTable = DEFAULT_BODY_TABLE,
    modules: Sequence[str] = DEFAULT_BODY_MODULES,
) -> tuple[int, ...]:
    """Register every body in ``table`` whose module exists; return the tags registered.

    Rows are applied in ascending tag order, so the result is the same in every process.
    Idempotent: a row already registered with the same class is skipped. Raises
    ``RegistrationError`` if a listed class is missing from its module, or if a module in
    ``modules`` exports a dataclass that is neither in the table nor nested inside a
    registered body.
    """
    reg = registry or DEFAULT_REGISTRY
    loaded: dict[str, types.ModuleType | None] = {}
    registered: list[int] = []
    rows = sorted(table)
    for (tag, _, _), (next_tag, _, _) in itertools.pairwise(rows):
        if tag == next_tag:
            raise RegistrationError(f"tag {tag} appears twice in the body table")
    for tag, module_name, class_name in rows:
        if module_name not in loaded:
            loaded[module_name] = _import_if_present(module_name)
        module = loaded[module_name]
        if module is None:
            continue
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type):
            raise RegistrationError(f"{module_name}.{class_name} (tag {tag}) does not exist")
        if reg.class_of(tag) is cls:
            continue
        reg.register(tag, cls)
        registered.append(tag)
    nested = set(reg.nested_classes())
    for module_name in modules:
        if module_name not in loaded:
            loaded[module_name] = _import_if_present(module_name)
        module = loaded[module_name]
        if module is None:
            continue
        missing = [
            cls.__name__
            for cls in _exported_dataclasses(module)
            if reg.tag_of(cls) is None and cls not in nested
        ]
        if missing:
            raise RegistrationError(
                f"{module_name} exports message dataclasses without a wire tag: "
                f"{', '.join(missing)}; add them to consensus.codec.DEFAULT_BODY_TABLE"
            )
    return tuple(registered)


# --------------------------------------------------------------------------- messages

_GROUP = "Message.group_id"
_enc_group = _encode_int_in(0, INT64_MAX, _GROUP)
_dec_group = _decode_int_in(0, INT64_MAX, _GROUP)
_enc_src = _encode_int_in(0, INT64_MAX, "Message.src")
_dec_src = _decode_int_in(0, INT64_MAX, "Message.src")
_enc_dst = _encode_int_in(0, INT64_MAX, "Message.dst")
_dec_dst = _decode_int_in(0, INT64_MAX, "Message.dst")


def message_to_wire(msg: Message, *, registry: BodyRegistry | None = None) -> list[Any]:
    """The msgpack-ready object for ``msg``: ``[group_id, src, dst, tag, body]``."""
    if type(msg) is not Message:
        raise EncodeError(f"expected Message, got {type(msg).__name__}")
    tag, body = (registry or DEFAULT_REGISTRY).encode_body(msg.body)
    return [_enc_group(msg.group_id), _enc_src(msg.src), _enc_dst(msg.dst), tag, body]


def encode_message(msg: Message, *, registry: BodyRegistry | None = None) -> bytes:
    packed: bytes = msgpack.packb(message_to_wire(msg, registry=registry), use_bin_type=True)
    return packed


def decode_message(obj: Any, *, registry: BodyRegistry | None = None) -> Message:
    """Decode an already-unpacked msgpack object (as produced by ``message_to_wire``)."""
    if not _is_sequence(obj) or len(obj) != 5:
        raise DecodeError("message: expected an array of 5")
    group_id, src, dst, tag, body = obj
    return Message(
        group_id=GroupId(_dec_group(group_id)),
        src=NodeId(_dec_src(src)),
        dst=NodeId(_dec_dst(dst)),
        body=(registry or DEFAULT_REGISTRY).decode_body(tag, body),
    )


def unpack(data: bytes) -> Any:
    """Unpack exactly one msgpack object from untrusted ``data``; only ``DecodeError``."""
    if type(data) is not bytes:
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # ValueError covers ExtraData, FormatError, StackError, invalid UTF-8 and
        # out-of-limit lengths; TypeError covers unhashable map keys.
        raise DecodeError(f"malformed msgpack: {exc!r}") from exc


def decode_message_bytes(data: bytes, *, registry: BodyRegistry | None = None) -> Message:
    return decode_message(unpack(data), registry=registry)


# --------------------------------------------------------------------------- frames


class FrameKind(enum.IntEnum):
    """The ``kind`` slot of a frame. New kinds take new numbers; old ones are never reused."""

    HELLO = 1
    """First frame on every connection, from both ends."""
    AUTH = 2
    """HMAC answer to the peer's hello nonce; only when both ends require auth."""
    BATCH = 3
    """Messages from one node to one peer, written together (one per peer per loop)."""
    REJECT = 4
    """Why the sender is about to close the connection (best effort, for the peer's log)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    cluster_id: str
    node_id: NodeId
    nonce: bytes
    """Fresh random bytes; the peer's AUTH frame must cover them (no replay)."""
    auth: bool
    """Whether the sender requires HMAC authentication; both ends must agree."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth:
    mac: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    reason: str


Frame: TypeAlias = Hello | Auth | Batch | Reject

_packer_header = msgpack.Packer(use_bin_type=True)


def _frame_bytes(kind: FrameKind, payload: Any) -> bytes:
    packed: bytes = msgpack.packb([PROTOCOL_VERSION, int(kind), payload], use_bin_type=True)
    return packed


def encode_frame(frame: Frame, *, registry: BodyRegistry | None = None) -> bytes:
    match frame:
        case Hello(cluster_id=cluster_id, node_id=node_id, nonce=nonce, auth=auth):
            _check_hello_fields(cluster_id, node_id, nonce, auth, EncodeError)
            return _frame_bytes(FrameKind.HELLO, [cluster_id, int(node_id), nonce, auth])
        case Auth(mac=mac):
            if type(mac) is not bytes:
                raise EncodeError("Auth.mac must be bytes")
            return _frame_bytes(FrameKind.AUTH, [mac])
        case Batch(messages=messages):
            return _frame_bytes(
                FrameKind.BATCH, [message_to_wire(m, registry=registry) for m in messages]
            )
        case Reject(reason=reason):
            if type(reason) is not str:
                raise EncodeError("Reject.reason must be str")
            return _frame_bytes(FrameKind.REJECT, [reason[:MAX_REASON_CHARS]])
    raise EncodeError(f"not a frame: {type(frame).__name__}")


def encode_batch_frames(
    messages: Iterable[Message],
    *,
    max_frame_bytes: int,
    registry: BodyRegistry | None = None,
) -> tuple[list[tuple[bytes, int]], list[Message]]:
    """Pack ``messages`` into as few BATCH frames of at most ``max_frame_bytes`` as possible,
    keeping their order. Returns ``(frames, oversized)`` where each frame comes with the
    number of messages in it. A message too large for any frame on its own is left out and
    returned, so the caller can count it dropped (both protocols tolerate loss) instead of
    sending a frame every peer would refuse.
    """
    header_size = len(_frame_header(0)) + 8  # array headers grow by at most 4 bytes
    frames: list[tuple[bytes, int]] = []
    oversized: list[Message] = []
    pending: list[bytes] = []
    pending_size = header_size
    for msg in messages:
        packed = encode_message(msg, registry=registry)
        if header_size + len(packed) > max_frame_bytes:
            oversized.append(msg)
            continue
        if pending and pending_size + len(packed) > max_frame_bytes:
            frames.append((_frame_header(len(pending)) + b"".join(pending), len(pending)))
            pending, pending_size = [], header_size
        pending.append(packed)
        pending_size += len(packed)
    if pending:
        frames.append((_frame_header(len(pending)) + b"".join(pending), len(pending)))
    return frames, oversized


def _frame_header(count: int) -> bytes:
    # A frame is [version, kind, [m1, ..., mn]]: msgpack is concatenative, so the header
    # followed by the already-packed messages is byte-for-byte what packb would produce.
    return b"".join(
        (
            _packer_header.pack_array_header(3),
            _packer_header.pack(PROTOCOL_VERSION),
            _packer_header.pack(int(FrameKind.BATCH)),
            _packer_header.pack_array_header(count),
        )
    )


def _check_hello_fields(
    cluster_id: Any, node_id: Any, nonce: Any, auth: Any, error: type[CodecError]
) -> None:
    if type(cluster_id) is not str or not 0 < len(cluster_id) <= MAX_CLUSTER_ID_CHARS:
        raise error(f"hello: cluster id must be 1..{MAX_CLUSTER_ID_CHARS} characters")
    if type(node_id) is not int or not 0 < node_id <= INT64_MAX:
        raise error("hello: node id must be a positive int")
    if type(nonce) is not bytes or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise error(f"hello: nonce must be {MIN_NONCE_BYTES}..{MAX_NONCE_BYTES} bytes")
    if type(auth) is not bool:
        raise error("hello: auth flag must be a bool")


def decode_frame(obj: Any, *, registry: BodyRegistry | None = None) -> Frame:
    """Decode an already-unpacked frame. The version is checked first, so a peer of another
    version gets ``ProtocolVersionMismatch`` whatever the rest of its frame looks like."""
    if not _is_sequence(obj) or len(obj) < 1:
        raise DecodeError("frame: expected an array")
    version = obj[0]
    if type(version) is not int:
        raise DecodeError("frame: version must be an int")
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionMismatch(version)
    if len(obj) != 3:
        raise DecodeError("frame: expected [version, kind, payload]")
    kind, payload = obj[1], obj[2]
    if type(kind) is not int:
        raise DecodeError("frame: kind must be an int")
    if not _is_sequence(payload):
        raise DecodeError("frame: payload must be an array")
    if kind == FrameKind.HELLO:
        if len(payload) != 4:
            raise DecodeError("hello: expected 4 fields")
        cluster_id, node_id, nonce, auth = payload
        _check_hello_fields(cluster_id, node_id, nonce, auth, DecodeError)
        return Hello(cluster_id=cluster_id, node_id=NodeId(node_id), nonce=nonce, auth=auth)
    if kind == FrameKind.AUTH:
        if len(payload) != 1 or type(payload[0]) is not bytes or len(payload[0]) > 64:
            raise DecodeError("auth: expected [mac]")
        return Auth(mac=payload[0])
    if kind == FrameKind.BATCH:
        return Batch(messages=tuple(decode_message(m, registry=registry) for m in payload))
    if kind == FrameKind.REJECT:
        if len(payload) != 1 or type(payload[0]) is not str:
            raise DecodeError("reject: expected [reason]")
        return Reject(reason=payload[0][:MAX_REASON_CHARS])
    raise DecodeError(f"frame: unknown kind {kind}")


def decode_frame_bytes(data: bytes, *, registry: BodyRegistry | None = None) -> Frame:
    return decode_frame(unpack(data), registry=registry)


__all__ = [
    "DEFAULT_BODY_MODULES",
    "DEFAULT_BODY_TABLE",
    "DEFAULT_REGISTRY",
    "PROTOCOL_VERSION",
    "Auth",
    "Batch",
    "BodyRegistry",
    "BodyTable",
    "CodecError",
    "DecodeError",
    "EncodeError",
    "Frame",
    "FrameKind",
    "Hello",
    "ProtocolVersionMismatch",
    "RegistrationError",
    "Reject",
    "decode_frame",
    "decode_frame_bytes",
    "decode_message",
    "decode_message_bytes",
    "encode_batch_frames",
    "encode_frame",
    "encode_message",
    "message_to_wire",
    "register_body",
    "register_default_bodies",
    "unpack",
]
