"""msgpack encoding of placement records, derived from their dataclass type hints.

The meta group's commands and snapshots are frozen dataclasses. Rather than hand-writing a
``to_bytes`` per class, a record is encoded as a positional msgpack array of its fields in
``dataclasses.fields`` order, and decoded by walking the class's type hints, so every field is
checked for arity and type on the way in. Never pickle: a meta snapshot crosses the network
to a lagging replica, and unpickling peer input runs arbitrary code.

Supported field types: ``int``, ``bool``, ``str``, ``bytes``, ``None``, ``NewType`` over those,
``enum.Enum`` members (by value), unions of these (``Key | None``), ``tuple[X, ...]``, fixed
``tuple[X, Y]`` and nested dataclasses.

Optional trailing fields. A field added to a record goes last, declared with ``optional(...)``
(a default plus a marker); the encoder leaves out trailing optional fields that equal their
defaults and the decoder fills in missing ones, so a record that does not use a new field is
the same bytes as before the field existed, and bytes written before it decode. Equal records
still give equal bytes.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, TypeVar

import msgpack

T = TypeVar("T")

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


class WireError(ValueError):
    """Bytes that are not a valid encoding of the expected record."""


def to_plain(value: object) -> object:
    """``value`` as msgpack-ready plain data (lists, ints, strs, bytes, bools, None)."""
    if value is None or isinstance(value, bool | int | str | bytes):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        values = [getattr(value, f.name) for f in fields]
        count = len(fields)
        while count > 0 and _is_default(fields[count - 1], values[count - 1]):
            count -= 1
        return [to_plain(v) for v in values[:count]]
    raise WireError(f"cannot encode {type(value).__name__}")


_OPTIONAL: Any = {"shardb.wire": "optional"}


def optional(default: T) -> T:
    """A dataclass field default for a field added after records were already stored or
    sent: omitted on the wire while it holds ``default`` (immutable values only)."""
    field: T = dataclasses.field(default=default, metadata=_OPTIONAL)
    return field


def _is_optional(field: dataclasses.Field[Any]) -> bool:
    return field.metadata.get("shardb.wire") == "optional"


def _is_default(field: dataclasses.Field[Any], value: object) -> bool:
    default = field.default
    return _is_optional(field) and type(value) is type(default) and value == default


def pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(to_plain(value), use_bin_type=True)
    return packed


def unpack(data: bytes) -> object:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"not msgpack: {exc}") from exc


def from_plain(cls: type[T], raw: object) -> T:
    """Rebuild a ``cls`` dataclass from ``to_plain`` output, checking every field's type."""
    value = _decode(cls, raw, cls.__name__)
    if not isinstance(value, cls):
        raise WireError(f"expected {cls.__name__}")
    return value


def _decode(hint: Any, raw: object, where: str) -> object:
    supertype = getattr(hint, "__supertype__", None)
    if supertype is not None:  # a NewType such as NodeId: decode as its base type
        return _decode(supertype, raw, where)
    if hint is type(None) or hint is None:
        if raw is not None:
            raise WireError(f"{where}: expected nil")
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        for option in typing.get_args(hint):
            try:
                return _decode(option, raw, where)
            except WireError:
                continue
        raise WireError(f"{where}: {type(raw).__name__} matches no option of {hint}")
    if origin is tuple:
        return _decode_tuple(typing.get_args(hint), raw, where)
    if hint is bool:
        if not isinstance(raw, bool):
            raise WireError(f"{where}: expected bool")
        return raw
    if hint is int:
        # bool is an int subclass in Python; a key True must not pass as the integer 1.
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise WireError(f"{where}: expected int")
        if not _INT64_MIN <= raw <= _INT64_MAX:
            raise WireError(f"{where}: int out of 64-bit range")
        return raw
    if hint is str:
        if not isinstance(raw, str):
            raise WireError(f"{where}: expected str")
        return raw
    if hint is bytes:
        if not isinstance(raw, bytes):
            raise WireError(f"{where}: expected bytes")
        return raw
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(raw)
        except ValueError as exc:
            raise WireError(f"{where}: {raw!r} is not a {hint.__name__}") from exc
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, raw, where)
    raise WireError(f"{where}: unsupported field type {hint!r}")


def _decode_tuple(args: tuple[Any, ...], raw: object, where: str) -> tuple[object, ...]:
    if not isinstance(raw, list):
        raise WireError(f"{where}: expected array")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_decode(args[0], item, f"{where}[{i}]") for i, item in enumerate(raw))
    if len(raw) != len(args):
        raise WireError(f"{where}: expected {len(args)} items, got {len(raw)}")
    pairs = enumerate(zip(args, raw, strict=True))
    return tuple(_decode(hint, item, f"{where}[{i}]") for i, (hint, item) in pairs)


def _decode_dataclass(cls: type[Any], raw: object, where: str) -> object:
    if not isinstance(raw, list):
        raise WireError(f"{where}: expected array for {cls.__name__}")
    fields = dataclasses.fields(cls)
    if len(raw) > len(fields) or not all(_is_optional(f) for f in fields[len(raw) :]):
        # Only trailing optional fields may be left out (see the module docstring).
        raise WireError(f"{where}: {cls.__name__} has {len(fields)} fields, got {len(raw)}")
    hints = typing.get_type_hints(cls)
    kwargs = {
        f.name: _decode(hints[f.name], item, f"{where}.{f.name}")
        for f, item in zip(fields, raw, strict=False)
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise WireError(f"{where}: {exc}") from exc
