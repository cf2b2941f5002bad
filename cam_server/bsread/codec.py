"""bsread message encoder and decoder, sans I/O (no ZeroMQ here): frames in, frames out.

Encoder: (pulse_id, global timestamp, channel values) → list of frames (bytes or numpy arrays; a large
C-contiguous array of the right dtype is handed on as-is — zero copy — so the caller must not modify it after
sending). The data header JSON and its MD5 are cached and rebuilt only when the channel definitions change.

Decoder: one per connection. It implements the Python receiver's algorithm (spec section 11): it remembers the
last hash and channel readers, never raises for bad input, and drops bad messages with a logged reason
(``decode`` returns None, ``last_drop_reason`` says why). Raw channel values are numpy views over the frame
buffers (read-only when the frames are read-only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cam_server.bsread.channels import (
    ChannelError,
    ChannelSpec,
    Reader,
    Serializer,
    declared_header,
    derive_type_shape,
    derived_header,
    make_reader,
    make_serializer,
)
from cam_server.bsread.compression import (
    BITSHUFFLE_LZ4,
    NONE,
    CompressionError,
    compress_data_header,
    decompress_data_header,
    normalize_compression,
)
from cam_server.bsread.message import Message, MessageData, Statistics, Value

log = logging.getLogger(__name__)

MAIN_HTYPE = "bsr_m-1.1"
DATA_HTYPE = "bsr_d-1.1"
_TIMESTAMP_PACK = {"little": struct.Struct("<qq"), "big": struct.Struct(">qq")}
_TIMESTAMP_READ = {"little": struct.Struct("<QQ"), "big": struct.Struct(">QQ")}
_EMPTY = b""

Timestamp = tuple[int, int] | list[int] | float | int | None


def split_timestamp(timestamp: Timestamp) -> tuple[int, int]:
    """(sec, ns) from a ``(sec, ns)`` pair (verbatim) or float Unix seconds (truncated, as the Python lib)."""
    if timestamp is None:
        timestamp = time.time()
    if isinstance(timestamp, (tuple, list)):
        if len(timestamp) != 2:
            raise ValueError(f"timestamp must be (sec, ns) or float seconds, got {timestamp!r}")
        sec, ns = timestamp
        return int(sec), int(ns)
    sec = int(timestamp)
    return sec, int((timestamp - sec) * 1e9)


def data_header_bytes(channels: Iterable[Mapping[str, Any]]) -> bytes:
    """Frame-1 JSON text exactly as the Python lib writes it (default separators)."""
    return json.dumps({"htype": DATA_HTYPE, "channels": list(channels)}).encode("utf-8")


class Encoder:
    """Turns channel values into bsread frames, caching the data header between messages.

    Two ways to define channels, as the Python ``Sender``:
    - declared (``add_channel`` + ``encode(..., check_data=False)``): the header comes from the metadata and
      every value is converted to the declared type and byte order; the header is never rebuilt unless
      channels are added;
    - derived (``encode(..., check_data=True)``): the channel list is exactly the keys of ``values``, types
      and shapes derived from the values (spec section 6); the header is rebuilt only when that list of
      definitions differs from the previous message's.
    """

    def __init__(self, data_compression: str | None = None, data_header_compression: str | None = None,
                 start_pulse_id: int = 0):
        if data_compression is not None and normalize_compression(data_compression) not in (NONE, BITSHUFFLE_LZ4):
            raise ValueError(f"unsupported data_compression {data_compression!r} (use bitshuffle_lz4)")
        if data_header_compression is not None and normalize_compression(data_header_compression) not in (
                NONE, BITSHUFFLE_LZ4):
            raise ValueError(f"unsupported data_header_compression {data_header_compression!r} "
                             f"(use none or bitshuffle_lz4)")
        self.data_compression = data_compression
        self.pulse_id = int(start_pulse_id)  # pulse id of the next message unless one is given
        self.data_header_compression = data_header_compression
        self._dh_mode = normalize_compression(data_header_compression)
        self._declared: list[tuple[str, dict[str, Any], Callable[[int], Any] | None]] = []
        self._specs: list[ChannelSpec] = []
        self._serializers: list[Serializer] = []
        self._derived_key: tuple | None = None
        self._header_frame: bytes = b""
        self._hash = ""
        self._main_prefix = ""
        self._rebuild([])

    # -- channel definitions --------------------------------------------------------------------------

    def add_channel(self, name: str, metadata: Mapping[str, Any] | None = None,
                    function: Callable[[int], Any] | None = None) -> None:
        """Declare a channel (metadata: ``type``, ``shape`` (bsread order, ``[width, height]`` for images),
        ``encoding``, ``compression`` and any extra keys, which go into the data header verbatim)."""
        entry = declared_header(name, metadata, self.data_compression)
        ChannelSpec.from_header(entry)  # validate shape early
        self._declared = [d for d in self._declared if d[0] != name] + [(name, entry, function)]
        self._rebuild([d[1] for d in self._declared])

    def set_channels(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Replace all channel definitions by data-header entries (each needs ``name``)."""
        self._declared = [(str(e["name"]), dict(e), None) for e in entries]
        self._rebuild([d[1] for d in self._declared])

    @property
    def channels(self) -> tuple[ChannelSpec, ...]:
        """Channel definitions of the current data header."""
        return tuple(self._specs)

    @property
    def hash(self) -> str:
        """MD5 hex of the current frame 1 (changes exactly when frame 1 changes)."""
        return self._hash

    @property
    def data_header(self) -> bytes:
        """Current frame 1 bytes (compressed when ``data_header_compression`` is bitshuffle_lz4)."""
        return self._header_frame

    def _rebuild(self, entries: list[dict[str, Any]]) -> None:
        specs = [ChannelSpec.from_header(e) for e in entries]
        serializers = [make_serializer(s) for s in specs]
        frame = compress_data_header(data_header_bytes(entries), self._dh_mode)
        self._specs, self._serializers, self._header_frame = specs, serializers, frame
        self._derived_key = None  # _derive sets it again when the header came from values
        self._hash = hashlib.md5(frame).hexdigest()
        dh = ""
        if self.data_header_compression is not None:
            dh = f'"dh_compression": {json.dumps(self.data_header_compression)}, '
        self._main_prefix = f'{{"htype": "{MAIN_HTYPE}", {dh}"hash": "{self._hash}", "pulse_id": '

    def _derive(self, values: Mapping[str, Any]) -> None:
        """Rebuild the header from values only if the derived definitions differ from the current ones."""
        key = tuple(_signature(name, v) for name, v in values.items())
        if key == self._derived_key:
            return
        compression = self.data_compression
        entries = [derived_header(name, v, compression) for name, v in values.items()]
        self._declared = [(e["name"], e, None) for e in entries]
        self._rebuild(entries)
        self._derived_key = key

    # -- encoding -------------------------------------------------------------------------------------

    def encode(self, values: Mapping[str, Any] | None, pulse_id: int | None = None, timestamp: Timestamp = None,
               check_data: bool = True) -> list[Any]:
        """Frames of one message: main header, data header, then value + timestamp frame per channel.

        ``pulse_id`` None uses the running counter (``start_pulse_id``, then +1 per message); a given pulse id
        is used and the count continues from it (spec section 12). ``timestamp``: ``(sec, ns)`` or float
        seconds (default now).

        ``values`` None: each declared channel's ``function(pulse_id)`` gives its value. A declared channel
        missing from ``values`` (check_data False) is sent as a missing value (two empty frames).
        Raises :class:`~cam_server.bsread.channels.ChannelError` (a ValueError) for a value that cannot be
        encoded, before anything is sent.
        """
        sec, ns = split_timestamp(timestamp)
        pulse_id = self.pulse_id if pulse_id is None else int(pulse_id)
        if values is None:
            values = {name: (fn(pulse_id) if fn is not None else None) for name, _, fn in self._declared}
        if check_data:
            self._derive(values)
        main = f'{self._main_prefix}{pulse_id}, "global_timestamp": {{"sec": {sec}, "ns": {ns}}}}}'
        frames: list[Any] = [main.encode(), self._header_frame]
        ts_little = ts_big = None
        get = values.get
        for spec, serialize in zip(self._specs, self._serializers, strict=True):
            value = get(spec.name)
            if value is None:
                frames += (_EMPTY, _EMPTY)
                continue
            frames.append(serialize(value))
            if spec.encoding == "big":
                if ts_big is None:
                    ts_big = _TIMESTAMP_PACK["big"].pack(sec, ns)
                frames.append(ts_big)
            else:
                if ts_little is None:
                    ts_little = _TIMESTAMP_PACK["little"].pack(sec, ns)
                frames.append(ts_little)
        self.pulse_id = pulse_id + 1
        return frames


def _signature(name: str, value: Any) -> tuple:
    """What the derived header of a value depends on (cheap to compute per message)."""
    try:
        t, shape, encoding = derive_type_shape(value)
    except ChannelError as exc:
        raise ChannelError(f"channel {name!r}: {exc}") from None
    return name, t, tuple(shape), encoding


def encode_message(values: Mapping[str, Any], pulse_id: int, timestamp: Timestamp = None,
                   data_compression: str | None = None, data_header_compression: str | None = None) -> list[Any]:
    """One-shot encoding of a message whose channels are derived from ``values`` (see :class:`Encoder`)."""
    encoder = Encoder(data_compression=data_compression, data_header_compression=data_header_compression)
    return encoder.encode(values, pulse_id, timestamp, check_data=True)


# ----------------------------------------------------------------------------------------------------------


def _buffer(frame: Any) -> memoryview:
    """A byte memoryview of a frame given as bytes, memoryview, numpy array or ``zmq.Frame``."""
    buf = getattr(frame, "buffer", None)
    if isinstance(buf, memoryview):
        return buf
    mv = memoryview(frame)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


class _ChannelDecoder:
    __slots__ = ("spec", "read", "error", "ts")

    def __init__(self, spec: ChannelSpec, allow_lz4: bool):
        self.spec = spec
        self.ts = _TIMESTAMP_READ[spec.encoding]
        self.read: Reader | None = None
        self.error: str | None = None
        try:
            self.read = make_reader(spec, allow_lz4)
        except (ChannelError, KeyError) as exc:
            self.error = str(exc)


class DropMessage(Exception):
    """Internal: the message is dropped for the given reason."""


class Decoder:
    """Decodes the frames of one connection's messages (spec section 11).

    ``allow_lz4`` (default True) additionally decodes the Java/Rust ``lz4`` channel and data-header compression,
    which the Python receiver rejects (it yields None / drops the message); set it False for exact Python
    behaviour.
    """

    def __init__(self, allow_lz4: bool = True):
        self.allow_lz4 = allow_lz4
        self.last_hash: str | None = None
        self.last_drop_reason: str | None = None
        self.statistics = Statistics()
        self._channels: list[_ChannelDecoder] = []
        self._specs: tuple[ChannelSpec, ...] = ()
        self._data_header: dict[str, Any] | None = None
        self._warned: set[tuple[str, str]] = set()

    def reset(self) -> None:
        """Forget the header state (after a reconnect)."""
        self.last_hash = None
        self._channels, self._specs, self._data_header = [], (), None

    def decode(self, frames: Sequence[Any]) -> Message | None:
        """Decode one multipart message; None (with a logged reason) when it must be dropped."""
        try:
            buffers = [_buffer(f) for f in frames]
            size = sum(b.nbytes for b in buffers)
            stats = self.statistics
            stats.messages_received += 1
            stats.total_bytes_received += size
            stats.bytes_received = size
            data = self._decode(buffers)
        except DropMessage as exc:
            return self._drop(str(exc))
        except Exception as exc:  # never raise for bad input
            log.exception("bsread decoder failed on a message")
            return self._drop(f"unexpected decoder error: {exc!r}")
        self.last_drop_reason = None
        return Message(data=data, statistics=Statistics(stats.messages_received, stats.total_bytes_received,
                                                        stats.bytes_received))

    def _drop(self, reason: str) -> None:
        self.last_drop_reason = reason
        log.warning("bsread message dropped: %s", reason)
        return None

    def _warn_channel(self, name: str, reason: str) -> None:
        if (name, reason) not in self._warned:
            self._warned.add((name, reason))
            log.warning("bsread channel %r gives None: %s", name, reason)

    def _decode(self, buffers: list[memoryview]) -> MessageData:
        if not buffers:
            raise DropMessage("empty message")
        main = _parse_main_header(buffers[0])
        pulse_id, hash_ = main["pulse_id"], main["hash"]
        sec, ns = _global_timestamp(main)
        format_changed = False
        if len(buffers) > 1 and hash_ != self.last_hash:
            self.last_hash = hash_  # before parsing, as the Python receiver (spec 5.2)
            header = self._parse_data_header(buffers[1], main.get("dh_compression"))
            self._warned.clear()
            self._data_header = header
            channels = header["channels"]
            self._channels = [self._channel_decoder(entry) for entry in channels]
            self._specs = tuple(c.spec for c in self._channels)
            if not channels:
                return MessageData(pulse_id=pulse_id, global_timestamp=sec, global_timestamp_offset=ns,
                                   hash=hash_, format_changed=False, data={}, channels=(),
                                   data_header=header, htype=main.get("htype"))
            format_changed = True
        values = self._decode_values(buffers)
        return MessageData(pulse_id=pulse_id, global_timestamp=sec, global_timestamp_offset=ns, hash=hash_,
                           format_changed=format_changed, data=values, channels=self._specs,
                           data_header=self._data_header, htype=main.get("htype"))

    def _parse_data_header(self, buf: memoryview, dh_compression: Any) -> dict[str, Any]:
        try:
            text = decompress_data_header(buf, normalize_compression(dh_compression), self.allow_lz4)
        except CompressionError as exc:
            raise DropMessage(f"data header: {exc}") from exc
        try:
            header = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DropMessage(f"data header is not valid JSON: {exc}") from exc
        if not isinstance(header, dict) or not isinstance(header.get("channels"), list):
            raise DropMessage("data header has no 'channels' list")
        return header

    def _channel_decoder(self, entry: Any) -> _ChannelDecoder:
        try:
            spec = ChannelSpec.from_header(entry)
        except ChannelError as exc:
            name = entry.get("name") if isinstance(entry, dict) else None
            if name is None:
                raise DropMessage(f"data header: {exc}") from exc
            spec = ChannelSpec(name=str(name), type="<invalid>", header=dict(entry))
            decoder = _ChannelDecoder(spec, self.allow_lz4)
            decoder.error = str(exc)
            return decoder
        return _ChannelDecoder(spec, self.allow_lz4)

    def _decode_values(self, buffers: list[memoryview]) -> dict[str, Value]:
        channels = self._channels
        n_pairs = (len(buffers) - 1) // 2  # an odd trailing value frame counts as a pair without timestamp
        if n_pairs > len(channels):
            raise DropMessage(f"{n_pairs} value/timestamp frame pairs but the data header has {len(channels)} "
                              f"channels")
        values: dict[str, Value] = {}
        for i in range(n_pairs):
            channel = channels[i]
            name = channel.spec.name
            buf = buffers[2 + 2 * i]
            if buf.nbytes == 0:
                values[name] = Value(None, None, None)
                continue
            value = None
            if channel.read is None:
                self._warn_channel(name, channel.error or "unusable channel")
            else:
                try:
                    value = channel.read(buf)
                except Exception as exc:  # any failure gives None for this channel only
                    self._warn_channel(name, str(exc))
            ts_index = 3 + 2 * i
            ts = buffers[ts_index] if ts_index < len(buffers) else None
            if ts is None or ts.nbytes == 0:
                values[name] = Value(value, None, None)
                continue
            if ts.nbytes < 16 or ts.nbytes % 8:
                raise DropMessage(f"channel {name!r}: timestamp frame of {ts.nbytes} bytes (need 16)")
            t_sec, t_ns = channel.ts.unpack_from(ts, 0)
            values[name] = Value(value, t_sec, t_ns)
        return values


def _parse_main_header(buf: memoryview) -> dict[str, Any]:
    try:
        main = json.loads(bytes(buf))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DropMessage(f"main header is not valid JSON: {exc}") from exc
    if not isinstance(main, dict):
        raise DropMessage("main header is not a JSON object")
    if "pulse_id" not in main:
        raise DropMessage("main header has no pulse_id")
    if "hash" not in main:
        raise DropMessage("main header has no hash")
    pulse_id = main["pulse_id"]
    if not isinstance(pulse_id, int) or isinstance(pulse_id, bool):
        raise DropMessage(f"main header pulse_id is not an integer: {pulse_id!r}")
    main["hash"] = str(main["hash"])
    return main


def _global_timestamp(main: dict[str, Any]) -> tuple[int | None, int | None]:
    gt = main.get("global_timestamp")
    if gt is None:
        return None, None
    if not isinstance(gt, dict):
        raise DropMessage(f"main header global_timestamp is not an object: {gt!r}")
    sec = gt.get("sec", gt.get("epoch"))
    if sec is None:
        raise DropMessage("main header global_timestamp has neither sec nor epoch")
    if "ns" not in gt:
        raise DropMessage("main header global_timestamp has no ns")
    ns = gt["ns"]
    # Stricter than the Python receiver (docs/bsread.md): a non-numeric time would make every consumer fail on
    # int(sec) / sec + ns * 1e-9 later, ending a camera or pipeline instance over one bad message.
    for key, value in (("sec", sec), ("ns", ns)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DropMessage(f"main header global_timestamp {key} is not a number: {value!r}")
    return sec, ns


__all__ = ["Decoder", "Encoder", "encode_message", "split_timestamp", "data_header_bytes"]
