"""bsread channel types, channel specs and per-channel value readers / serializers (spec sections 4, 6, 7, 9).

Readers turn one value frame into what the Python receiver returns (numpy views over the frame for raw
channels, so a received image is never copied). Serializers turn a Python/numpy value into one value frame,
converted to the channel's declared type and byte order; a C-contiguous array that already has the right dtype
is handed on as-is (zero copy), so the caller must not modify it after sending.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cam_server.bsread.compression import (
    BITSHUFFLE_LZ4,
    LZ4,
    NONE,
    compress_bitshuffle_lz4,
    decompress_bitshuffle_lz4,
    decompress_lz4,
    normalize_compression,
)

NATIVE_ENCODING = sys.byteorder  # "little" on x86
DEFAULT_TYPE = "float64"

# type name -> numpy dtype code without byte order (bool and string travel as bytes)
TYPE_CODES: dict[str, str] = {
    "bool": "u1", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4",
    "int64": "i8", "uint64": "u8", "float32": "f4", "float64": "f8", "string": "u1",
}
NUMERIC_TYPES = frozenset(TYPE_CODES) - {"bool", "string"}
_DTYPE_TO_TYPE = {np.dtype(code).newbyteorder("="): name for name, code in TYPE_CODES.items()
                  if name in NUMERIC_TYPES}
_PREFIX = {"little": "<", "big": ">"}

Reader = Callable[[memoryview], Any]
Serializer = Callable[[Any], Any]


class ChannelError(ValueError):
    """A value or channel definition that cannot be encoded/decoded (the text names the channel)."""


def channel_dtype(type_name: str, encoding: str) -> np.dtype:
    """numpy dtype of one element: byte-order prefix + type code (``bool``/``string`` → ``u1``)."""
    return np.dtype(_PREFIX.get(encoding, "<") + TYPE_CODES[type_name])


@dataclass(frozen=True)
class ChannelSpec:
    """One channel of a data header, with the spec's defaults resolved.

    ``type`` is lower-cased (absent → ``float64``); ``shape`` is ``None`` when the header has no shape;
    ``encoding`` is ``little`` unless the header says ``big``; ``compression`` is ``none``, ``bitshuffle_lz4``,
    ``lz4`` or the unknown name. ``header`` is the channel's JSON object exactly as received/sent.
    """

    name: str
    type: str = DEFAULT_TYPE
    shape: tuple[int, ...] | None = None
    encoding: str = "little"
    compression: str = NONE
    header: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def known_type(self) -> bool:
        return self.type in TYPE_CODES

    @property
    def dtype(self) -> np.dtype:
        """Element dtype in the channel's byte order (raises KeyError for an unknown type)."""
        return channel_dtype(self.type, self.encoding)

    @property
    def numpy_shape(self) -> tuple[int, ...] | None:
        """numpy shape of one value (reversed bsread shape); ``None`` when the header has no shape."""
        return None if self.shape is None else tuple(reversed(self.shape))

    @classmethod
    def from_header(cls, entry: Mapping[str, Any]) -> ChannelSpec:
        """Parse one data-header channel object; raises :class:`ChannelError` if it has no usable name/shape."""
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ChannelError(f"data header channel without a name: {entry!r}")
        type_name = entry.get("type")
        type_name = DEFAULT_TYPE if type_name is None else str(type_name).lower()
        shape = entry.get("shape")
        if shape is not None:
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ChannelError(f"channel {entry['name']!r}: shape must be a list of ints >= 0, got {shape!r}")
            shape = tuple(shape)
        encoding = "big" if entry.get("encoding") == "big" else "little"
        return cls(name=str(entry["name"]), type=type_name, shape=shape, encoding=encoding,
                   compression=normalize_compression(entry.get("compression")), header=dict(entry))


# ----------------------------------------------------------------------------------------------------------
# Derivation of a channel from a value (Python sender with check_data=True, spec section 6)


def derive_type_shape(value: Any) -> tuple[str, list[int], str]:
    """(type, bsread shape, encoding) that the Python sender derives from a value.

    Raises :class:`ChannelError` for values bsread cannot derive (bool, bool arrays, other objects).
    """
    if value is None:
        return DEFAULT_TYPE, [1], NATIVE_ENCODING
    if isinstance(value, (bool, np.bool_)):
        raise ChannelError("bool values cannot be derived; declare the channel with metadata type 'bool'")
    if isinstance(value, int):
        return "int64", [1], NATIVE_ENCODING
    if isinstance(value, float):
        return "float64", [1], NATIVE_ENCODING
    if isinstance(value, str):
        return "string", [1], NATIVE_ENCODING
    if isinstance(value, np.ndarray):
        name = _DTYPE_TO_TYPE.get(value.dtype.newbyteorder("="))
        if name is None:
            raise ChannelError(f"numpy dtype {value.dtype} is not a bsread type")
        order = value.dtype.byteorder
        encoding = "big" if order == ">" else "little" if order == "<" else NATIVE_ENCODING
        return name, list(reversed(value.shape)) if value.ndim else [1], encoding
    if isinstance(value, np.generic):
        name = _DTYPE_TO_TYPE.get(value.dtype.newbyteorder("="))
        if name is None:
            raise ChannelError(f"numpy scalar type {type(value).__name__} is not a bsread type")
        return name, [1], NATIVE_ENCODING
    if isinstance(value, list):
        if not value:
            return DEFAULT_TYPE, [0], NATIVE_ENCODING
        first, _, _ = derive_type_shape(value[0])
        return first, [len(value)], NATIVE_ENCODING
    raise ChannelError(f"values of type {type(value).__name__} cannot be sent over bsread")


def derived_header(name: str, value: Any, compression: str | None = None) -> dict[str, Any]:
    """Data-header entry derived from a value, keys in the Python lib's order name, type, shape, encoding
    [, compression]."""
    type_name, shape, encoding = derive_type_shape(value)
    entry: dict[str, Any] = {"name": name, "type": type_name, "shape": shape, "encoding": encoding}
    if compression is not None:
        entry["compression"] = compression
    return entry


def declared_header(name: str, metadata: Mapping[str, Any] | None, compression: str | None = None,
                    ) -> dict[str, Any]:
    """Data-header entry of a declared channel: the metadata keys, then ``name``, then ``encoding`` (default
    native) and ``compression`` (the sender's default) when the metadata does not set them."""
    entry = dict(metadata or {})
    entry.pop("name", None)
    entry["name"] = name
    entry.setdefault("encoding", NATIVE_ENCODING)
    if compression is not None:
        entry.setdefault("compression", compression)
    return entry


# ----------------------------------------------------------------------------------------------------------
# Readers (receiver side, spec section 11 step 4)


def _finisher(spec: ChannelSpec) -> Callable[[np.ndarray], Any]:
    """Reshape to the numpy shape and unwrap a first axis of length 1, as the Python receiver does."""
    target = spec.numpy_shape
    reshape = target is not None and spec.shape != (1,)
    size = math.prod(target) if reshape else 0
    name = spec.name

    def finish(arr: np.ndarray) -> Any:
        if reshape:
            if arr.size != size:
                raise ChannelError(f"channel {name!r}: {arr.size} elements do not fit shape {list(spec.shape)}")
            arr = arr.reshape(target)
        return arr[0] if arr.shape[0] == 1 else arr

    return finish


def make_reader(spec: ChannelSpec, allow_lz4: bool = True) -> Reader:
    """Function value frame → decoded value for one channel; raises :class:`ChannelError` (or
    :class:`~cam_server.bsread.compression.CompressionError`) when the channel or the frame is unusable."""
    name = spec.name
    if not spec.known_type:
        raise ChannelError(f"channel {name!r}: unknown type {spec.type!r}")
    compression = spec.compression
    if compression not in (NONE, BITSHUFFLE_LZ4) and not (compression == LZ4 and allow_lz4):
        raise ChannelError(f"channel {name!r}: unsupported compression {compression!r}")
    dtype = spec.dtype
    itemsize = dtype.itemsize

    def raw_bytes(buf: memoryview) -> memoryview | bytes | np.ndarray:
        if compression == NONE:
            return buf
        if compression == BITSHUFFLE_LZ4:
            out = decompress_bitshuffle_lz4(buf, itemsize)
            if out.size == 0:
                raise ChannelError(f"channel {name!r}: bitshuffle_lz4 frame holds no data")
            return out
        return decompress_lz4(buf, spec.encoding)

    if spec.type == "string":
        def read_string(buf: memoryview) -> str:
            data = raw_bytes(buf)
            try:
                return str(data if not isinstance(data, np.ndarray) else data.data, "utf-8")
            except UnicodeDecodeError as exc:
                raise ChannelError(f"channel {name!r}: string is not valid UTF-8 ({exc})") from exc
        return read_string

    finish = _finisher(spec)

    def read_array(buf: memoryview) -> Any:
        data = raw_bytes(buf)
        if isinstance(data, np.ndarray):
            arr = data.view(dtype)
        else:
            n = len(data) if isinstance(data, bytes) else data.nbytes
            if n % itemsize:
                raise ChannelError(f"channel {name!r}: {n} bytes is not a multiple of {spec.type} size {itemsize}")
            if n == 0:
                raise ChannelError(f"channel {name!r}: lz4 frame holds no data")
            arr = np.frombuffer(data, dtype)
        return finish(arr)

    return read_array


# ----------------------------------------------------------------------------------------------------------
# Serializers (sender side)

_STRUCT_CODES = {"int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
                 "int64": "q", "uint64": "Q", "float32": "f", "float64": "d", "bool": "B"}


def make_serializer(spec: ChannelSpec) -> Serializer:
    """Function value → value frame (bytes or a C-contiguous numpy array) for one declared channel.

    Every value is converted to the declared type and byte order (spec section 6, the SHOULD that the Python
    lib does not follow); ``None`` is handled by the caller. Raises :class:`ChannelError` for values that do
    not fit (wrong element count for a declared shape, strings on numeric channels, ints out of range).
    """
    name = spec.name
    if not spec.known_type:
        raise ChannelError(f"channel {name!r}: cannot send unknown type {spec.type!r}")
    compression = spec.compression
    if compression not in (NONE, BITSHUFFLE_LZ4):
        raise ChannelError(f"channel {name!r}: cannot send compression {compression!r} (none or bitshuffle_lz4)")
    compressed = compression == BITSHUFFLE_LZ4

    if spec.type == "string":
        def serialize_string(value: Any) -> Any:
            if isinstance(value, str):
                data = value.encode("utf-8")
            elif isinstance(value, (bytes, bytearray, memoryview)):
                data = bytes(value)
            else:
                data = str(value).encode("utf-8")
            return compress_bitshuffle_lz4(np.frombuffer(data, np.uint8)) if compressed else data
        return serialize_string

    dtype = spec.dtype
    packer = struct.Struct(_PREFIX[spec.encoding] + _STRUCT_CODES[spec.type])
    is_bool = spec.type == "bool"
    is_float = dtype.kind == "f"
    size = math.prod(spec.shape) if spec.shape is not None else None

    def to_array(value: Any) -> np.ndarray:
        if isinstance(value, (str, bytes)):
            raise ChannelError(f"channel {name!r}: cannot send {type(value).__name__} as {spec.type}")
        try:
            arr = np.not_equal(value, 0).astype(np.uint8) if is_bool else np.ascontiguousarray(value, dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ChannelError(f"channel {name!r}: cannot convert {type(value).__name__} to {spec.type}: "
                               f"{exc}") from exc
        if size is not None and arr.size != size:
            raise ChannelError(f"channel {name!r}: value has {arr.size} elements, declared shape "
                               f"{list(spec.shape)} needs {size}")
        return arr

    def serialize_number(value: Any) -> Any:
        if not compressed and size in (None, 1) and type(value) in (int, float):
            if is_bool:
                return b"\x01" if value else b"\x00"
            if is_float or type(value) is int:
                try:
                    return packer.pack(value)
                except struct.error as exc:
                    raise ChannelError(f"channel {name!r}: {value!r} does not fit {spec.type}") from exc
        arr = to_array(value)
        if compressed:
            return compress_bitshuffle_lz4(arr)
        return arr if arr.ndim else arr.reshape(1)

    return serialize_number
