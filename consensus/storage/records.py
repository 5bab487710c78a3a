"""Canonical row encodings and their checksums.

Every row the store writes carries ``crc32(header || data)`` where ``header`` is the msgpack
array of the table name and every other column, with ``len(data)`` in place of the blob.
Naming the table and the key inside the checksum means a row that lands under the wrong key
(a misdirected write) fails verification just like a flipped bit. msgpack always picks the
shortest encoding of an integer, so the header is canonical. The blob is fed to crc32
separately so a large snapshot is never copied.
"""

from __future__ import annotations

import zlib

import msgpack

from consensus.types import ConfState, NodeId


def row_crc(table: str, fields: tuple[int | str | bytes, ...], data: bytes) -> tuple[int, int]:
    """The checksum of one row and the number of bytes it covers."""
    header: bytes = msgpack.packb((table, *fields, len(data)))
    return zlib.crc32(data, zlib.crc32(header)), len(header) + len(data)


def encode_conf(conf: ConfState) -> bytes:
    """msgpack of the three sorted id lists (never pickle: the file outlives the code)."""
    packed: bytes = msgpack.packb(
        (
            [int(n) for n in conf.voters],
            [int(n) for n in conf.voters_outgoing],
            [int(n) for n in conf.learners],
        )
    )
    return packed


def decode_conf(data: bytes) -> ConfState:
    """Inverse of ``encode_conf``; raises ``ValueError`` on anything it did not produce."""
    try:
        raw = msgpack.unpackb(data)
    except ValueError as exc:  # msgpack's unpack errors all derive from ValueError
        raise ValueError(f"undecodable conf: {exc}") from exc
    if not (isinstance(raw, list) and len(raw) == 3):
        raise ValueError("conf is not a 3-element array")
    parts: list[tuple[NodeId, ...]] = []
    for ids in raw:
        if not (isinstance(ids, list) and all(type(n) is int for n in ids)):
            raise ValueError("conf member list is not a list of ints")
        parts.append(tuple(NodeId(n) for n in ids))
    return ConfState(voters=parts[0], voters_outgoing=parts[1], learners=parts[2])
