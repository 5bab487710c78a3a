"""Frame reading: streaming decode with a hard size bound (brief: partial reads, oversized
and garbage frames)."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from consensus.codec import Batch, Frame, Hello, Reject, encode_frame
from consensus.transport import FrameDecoder, FrameReader, FrameTooLarge, MalformedFrame
from consensus.types import NodeId

from .helpers import REGISTRY, ping

FRAMES: list[Frame] = [
    Hello(cluster_id="c", node_id=NodeId(1), nonce=b"x" * 16, auth=False),
    Batch(messages=(ping(1, 2, 1), ping(1, 2, 2, b"p" * 300))),
    Reject(reason="bye"),
]
WIRE = b"".join(encode_frame(f, registry=REGISTRY) for f in FRAMES)


async def test_frames_fed_one_byte_at_a_time_still_decode() -> None:
    """A lockstep stream hands the reader exactly one byte per receive_some."""
    send, recv = trio.testing.lockstep_stream_one_way_pair()
    reader = FrameReader(recv, registry=REGISTRY, max_frame_bytes=4096)

    async def feed() -> None:
        for byte in WIRE:
            await send.send_all(bytes([byte]))
        await send.aclose()

    got = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        while (frame := await reader.receive_frame()) is not None:
            got.append(frame)
    assert got == FRAMES
    assert reader.bytes_received == len(WIRE)


@given(st.lists(st.integers(0, len(WIRE)), max_size=20))
def test_any_split_of_the_byte_stream_yields_the_same_frames(cuts: list[int]) -> None:
    decoder = FrameDecoder(registry=REGISTRY, max_frame_bytes=4096)
    bounds = [0, *sorted(cuts), len(WIRE)]
    got = []
    for lo, hi in itertools.pairwise(bounds):
        decoder.feed(WIRE[lo:hi])
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
    assert got == FRAMES
    assert decoder.buffered_bytes == 0


def test_frame_exactly_at_the_limit_is_accepted_one_byte_over_is_not() -> None:
    frame = encode_frame(Batch(messages=(ping(1, 2, 0, b"z" * 500),)), registry=REGISTRY)
    exact = FrameDecoder(registry=REGISTRY, max_frame_bytes=len(frame))
    exact.feed(frame)
    assert isinstance(exact.next_frame(), Batch)
    short = FrameDecoder(registry=REGISTRY, max_frame_bytes=len(frame) - 1)
    with pytest.raises(FrameTooLarge):
        short.feed(frame)


async def test_oversized_frame_is_refused_without_buffering_past_the_limit() -> None:
    """The reader asks the stream for at most the room left, so memory stays bounded even
    if the peer streams a frame that claims gigabytes."""
    send, recv = trio.testing.memory_stream_one_way_pair()
    reader = FrameReader(recv, registry=REGISTRY, max_frame_bytes=1024)
    # bin 32 header announcing 1 GiB inside a frame array.
    await send.send_all(b"\x93\x01\x03\x91\xc6\x40\x00\x00\x00" + b"\x00" * 5000)
    with pytest.raises(FrameTooLarge):
        await reader.receive_frame()
    assert reader.bytes_received <= 1024


async def test_garbage_bytes_are_a_malformed_frame() -> None:
    send, recv = trio.testing.memory_stream_one_way_pair()
    reader = FrameReader(recv, registry=REGISTRY)
    await send.send_all(b"\xc1 this is not msgpack")
    with pytest.raises(MalformedFrame):
        await reader.receive_frame()


async def test_well_formed_msgpack_that_is_not_a_frame_is_malformed() -> None:
    send, recv = trio.testing.memory_stream_one_way_pair()
    reader = FrameReader(recv, registry=REGISTRY)
    await send.send_all(b"\x92\x01\x03" + b"\x93\x01\x63\x90")  # [1, 3] then unknown kind 99
    with pytest.raises(MalformedFrame):
        await reader.receive_frame()


async def test_decoder_stays_failed_after_an_error() -> None:
    decoder = FrameDecoder(registry=REGISTRY)
    decoder.feed(b"\xc1")
    with pytest.raises(MalformedFrame):
        decoder.next_frame()
    with pytest.raises(MalformedFrame):
        decoder.feed(encode_frame(Reject(reason="late")))


async def test_eof_between_frames_is_clean_and_mid_frame_is_malformed() -> None:
    send, recv = trio.testing.memory_stream_one_way_pair()
    reader = FrameReader(recv, registry=REGISTRY)
    await send.send_all(WIRE[:-1])
    await send.aclose()
    assert await reader.receive_frame() == FRAMES[0]
    assert await reader.receive_frame() == FRAMES[1]
    with pytest.raises(MalformedFrame, match="mid-frame"):
        await reader.receive_frame()

    send2, recv2 = trio.testing.memory_stream_one_way_pair()
    reader2 = FrameReader(recv2, registry=REGISTRY)
    await send2.send_all(encode_frame(FRAMES[2]))
    await send2.aclose()
    assert await reader2.receive_frame() == FRAMES[2]
    assert await reader2.receive_frame() is None


def test_version_mismatch_is_kept_as_the_cause() -> None:
    decoder = FrameDecoder(registry=REGISTRY)
    decoder.feed(b"\x93\x63\x01\x90")  # version 99
    with pytest.raises(MalformedFrame) as info:
        decoder.next_frame()
    assert "version 99" in str(info.value.__cause__)
