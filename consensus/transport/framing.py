"""Reading frames off a byte stream.

``FrameDecoder`` is the Sans-IO half (h11's ``receive_data`` / ``next_event`` pull API): feed
it bytes, pull whole frames. ``FrameReader`` drives it from a trio ``ReceiveStream``. Both
bound memory by the maximum frame size: the streaming ``msgpack.Unpacker`` is built with
``max_buffer_size = max_frame_bytes``, and the reader never asks the stream for more bytes
than the room left, so a frame larger than the limit can never complete and is reported as
``FrameTooLarge`` instead of growing the buffer.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack
import trio

from consensus.codec import BodyRegistry, CodecError, Frame, decode_frame

DEFAULT_MAX_FRAME_BYTES = 16 << 20
DEFAULT_RECEIVE_CHUNK_BYTES = 64 << 10


class FramingError(Exception):
    """The peer sent something that is not a valid frame; the connection must close."""


class FrameTooLarge(FramingError):
    pass


class MalformedFrame(FramingError):
    pass


class FrameDecoder:
    """Incremental frame decoder over a streaming ``msgpack.Unpacker``."""

    def __init__(
        self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, registry: BodyRegistry | None
    ) -> None:
        if max_frame_bytes < 64:
            raise ValueError("max_frame_bytes must be at least 64")
        self.max_frame_bytes = max_frame_bytes
        self._registry = registry
        self._unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=True, use_list=True, max_buffer_size=max_frame_bytes
        )
        self._fed = 0
        self._frame_start = 0
        self._failed: FramingError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received since the end of the last complete frame. Measured from our own
        count, not the unpacker's buffer: the unpacker consumes container headers (and keeps
        already-parsed elements) of a frame it has not finished."""
        return self._fed - self._frame_start

    @property
    def room(self) -> int:
        """How many more bytes may be fed before the current frame is declared too large."""
        return self.max_frame_bytes - self.buffered_bytes

    def feed(self, data: bytes | bytearray) -> None:
        if self._failed is not None:
            raise self._failed
        if len(data) > self.room:
            self._fail(
                FrameTooLarge(
                    f"frame exceeds {self.max_frame_bytes} bytes "
                    f"({self.buffered_bytes} buffered, {len(data)} more arriving)"
                )
            )
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            self._fail(FrameTooLarge(f"frame exceeds {self.max_frame_bytes} bytes"))
        self._fed += len(data)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None if more bytes are needed."""
        if self._failed is not None:
            raise self._failed
        try:
            obj: Any = self._unpacker.unpack()
        except msgpack.OutOfData:
            if self.room <= 0:
                self._fail(FrameTooLarge(f"frame exceeds {self.max_frame_bytes} bytes"))
            return None
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # FormatError, StackError, invalid UTF-8, over-limit lengths (ValueError);
            # unhashable map keys (TypeError).
            self._fail(MalformedFrame(f"malformed msgpack: {exc!r}"))
        self._frame_start = self._unpacker.tell()
        try:
            return decode_frame(obj, registry=self._registry)
        except CodecError as exc:
            self._fail(MalformedFrame(str(exc)), cause=exc)

    def _fail(self, error: FramingError, *, cause: BaseException | None = None) -> NoReturn:
        # Once a frame is bad the stream position is meaningless; stay failed.
        self._failed = error
        raise error from cause


class FrameReader:
    """Reads frames from a trio stream; one per connection (it owns the stream's buffer)."""

    def __init__(
        self,
        stream: trio.abc.ReceiveStream,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        registry: BodyRegistry | None = None,
        receive_chunk_bytes: int = DEFAULT_RECEIVE_CHUNK_BYTES,
    ) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(max_frame_bytes=max_frame_bytes, registry=registry)
        self._chunk = receive_chunk_bytes
        self.bytes_received = 0

    async def receive_frame(self) -> Frame | None:
        """The next frame; None when the peer closed cleanly between frames.

        Raises ``FrameTooLarge`` / ``MalformedFrame`` for a bad frame or a stream that ends
        mid-frame, and whatever the stream raises (``trio.BrokenResourceError``, ...).
        """
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                return frame
            data = await self._stream.receive_some(max(1, min(self._chunk, self._decoder.room)))
            if not data:
                if self._decoder.buffered_bytes:
                    raise MalformedFrame(
                        f"connection closed mid-frame ({self._decoder.buffered_bytes} bytes)"
                    )
                return None
            self.bytes_received += len(data)
            self._decoder.feed(data)
