"""bsread value and data-header compressions (spec sections 9 and 10), sans I/O.

``bitshuffle_lz4`` is the HDF5 bitshuffle filter layout: a 12-byte big-endian header (uncompressed byte count,
block size in bytes) followed by the ``bitshuffle`` package's LZ4 block stream. ``lz4`` is the Java/Rust format
(4-byte size + one raw LZ4 block); we decode it but never send it to Python consumers.

OpenMP: the ``bitshuffle`` package spins one OpenMP thread per core; with a sender and a receiver on a 2-core
machine that is 7x slower than one thread per process (spec section 18), so ``OMP_NUM_THREADS`` defaults to 1
here, *before* the package (and its bundled libgomp) is loaded.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import struct  # noqa: E402

import bitshuffle  # noqa: E402
import lz4.block  # noqa: E402
import numpy as np  # noqa: E402

NONE = "none"
BITSHUFFLE_LZ4 = "bitshuffle_lz4"
LZ4 = "lz4"

BSLZ4_HEADER = struct.Struct(">QI")
_BLOCK_LEN = struct.Struct(">I")
_LZ4_SIZE = {"little": struct.Struct("<i"), "big": struct.Struct(">i")}
_UNSIGNED = {1: np.dtype("u1"), 2: np.dtype("u2"), 4: np.dtype("u4"), 8: np.dtype("u8")}
MAX_LZ4_SIZE = 2**31 - 1


class CompressionError(ValueError):
    """A compressed frame is malformed (the message text says what is wrong)."""


def normalize_compression(name: object) -> str:
    """Map a header's ``compression`` / ``dh_compression`` to ``none``, ``bitshuffle_lz4``, ``lz4`` or the
    lowercased unknown name (absent, ``null`` and ``"none"`` all mean no compression)."""
    if name is None:
        return NONE
    return str(name).lower()


def default_block_elements(elem_size: int) -> int:
    """Block size in elements used by every bsread sender: ``max(128, floor(8192 / s / 8) * 8)``."""
    return max(128, (8192 // elem_size // 8) * 8)


def compress_bitshuffle_lz4(data: np.ndarray) -> bytes:
    """Encode a C-contiguous array (any 1-, 2-, 4- or 8-byte dtype, either byte order) as a bitshuffle_lz4 frame.

    The element bytes are shuffled as they lie in memory, so a big-endian array shuffles big-endian bytes.
    """
    elem_size = data.dtype.itemsize
    if elem_size not in _UNSIGNED:
        raise CompressionError(f"bitshuffle_lz4 needs an element size of 1, 2, 4 or 8 bytes, got {elem_size}")
    block = default_block_elements(elem_size)
    header = BSLZ4_HEADER.pack(data.nbytes, block * elem_size)
    if data.size == 0:
        return header
    flat = data.reshape(-1).view(_UNSIGNED[elem_size])
    if data.size < 8:  # no LZ4 block at all: the leftover elements follow raw
        return header + flat.tobytes()
    body = bitshuffle.compress_lz4(flat, block)
    return b"".join((header, body.data))


def _check_bitshuffle_stream(buf: memoryview, n_elems: int, block_elems: int, elem_size: int) -> None:
    """Walk the block length prefixes so the C decoder can never read past the frame."""
    pos = BSLZ4_HEADER.size
    end = buf.nbytes
    n_full, rest = divmod(n_elems, block_elems)
    n_blocks = n_full + (1 if rest - rest % 8 > 0 else 0)
    unpack = _BLOCK_LEN.unpack_from
    for _ in range(n_blocks):
        if pos + 4 > end:
            raise CompressionError(f"bitshuffle_lz4 frame truncated at byte {pos} (expected {n_blocks} blocks)")
        pos += 4 + unpack(buf, pos)[0]
    leftover = (n_elems % 8) * elem_size
    if pos + leftover != end:
        raise CompressionError(f"bitshuffle_lz4 frame has {end} bytes, its block structure needs {pos + leftover}")


def decompress_bitshuffle_lz4(buf: memoryview, elem_size: int) -> np.ndarray:
    """Decode a bitshuffle_lz4 frame into a 1-D array of unsigned ints of ``elem_size`` bytes.

    The caller re-views the result with the channel dtype. A zero-length header gives an empty array.
    """
    if elem_size not in _UNSIGNED:
        raise CompressionError(f"bitshuffle_lz4 needs an element size of 1, 2, 4 or 8 bytes, got {elem_size}")
    if buf.nbytes < BSLZ4_HEADER.size:
        raise CompressionError(f"bitshuffle_lz4 frame of {buf.nbytes} bytes is shorter than its 12-byte header")
    n_bytes, block_bytes = BSLZ4_HEADER.unpack_from(buf, 0)
    dtype = _UNSIGNED[elem_size]
    if n_bytes % elem_size:
        raise CompressionError(f"bitshuffle_lz4 length {n_bytes} is not a multiple of the element size {elem_size}")
    if n_bytes == 0:
        return np.empty(0, dtype)
    block_elems, odd = divmod(block_bytes, elem_size)
    if odd or block_elems <= 0 or block_elems % 8:
        raise CompressionError(f"bitshuffle_lz4 block size {block_bytes} bytes is invalid for element size {elem_size}")
    n_elems = n_bytes // elem_size
    _check_bitshuffle_stream(buf, n_elems, block_elems, elem_size)
    if n_elems < 8:
        return np.frombuffer(buf, dtype, offset=BSLZ4_HEADER.size)
    stream = np.frombuffer(buf, np.uint8, offset=BSLZ4_HEADER.size)
    try:
        return bitshuffle.decompress_lz4(stream, (n_elems,), dtype, block_elems)
    except Exception as exc:  # the extension raises RuntimeError / ValueError on corrupt LZ4 data
        raise CompressionError(f"bitshuffle_lz4 data is corrupt: {exc}") from exc


def compress_lz4(data: bytes | memoryview, encoding: str = "big") -> bytes:
    """Java/Rust ``lz4`` format: int32 size in ``encoding`` byte order + one raw LZ4 block (used by tests)."""
    raw = bytes(data)
    return _LZ4_SIZE[encoding].pack(len(raw)) + lz4.block.compress(raw, store_size=False)


def decompress_lz4(buf: memoryview, encoding: str = "big") -> bytes:
    """Decode the Java/Rust ``lz4`` format (size in the channel's byte order; big-endian for data headers)."""
    if buf.nbytes < 4:
        raise CompressionError(f"lz4 frame of {buf.nbytes} bytes is shorter than its 4-byte size")
    size = _LZ4_SIZE.get(encoding, _LZ4_SIZE["little"]).unpack_from(buf, 0)[0]
    if size < 0:
        raise CompressionError(f"lz4 frame declares a negative size {size}")
    if size == 0:
        return b""
    try:
        out = lz4.block.decompress(buf[4:], uncompressed_size=size)
    except Exception as exc:  # lz4.block.LZ4BlockError
        raise CompressionError(f"lz4 data is corrupt: {exc}") from exc
    if len(out) != size:
        raise CompressionError(f"lz4 data decoded to {len(out)} bytes, header says {size}")
    return out


def compress_data_header(text: bytes, dh_compression: str) -> bytes:
    """Frame 1 for a given ``dh_compression`` (``none`` or ``bitshuffle_lz4``; we never send ``lz4``)."""
    if dh_compression == NONE:
        return text
    if dh_compression == BITSHUFFLE_LZ4:
        return compress_bitshuffle_lz4(np.frombuffer(text, np.uint8))
    raise CompressionError(f"unsupported data header compression {dh_compression!r} (use none or bitshuffle_lz4)")


def decompress_data_header(buf: memoryview, dh_compression: str, allow_lz4: bool = True) -> bytes:
    """Frame 1 bytes → JSON text bytes; raises :class:`CompressionError` for unknown or corrupt data."""
    if dh_compression == NONE:
        return bytes(buf)
    if dh_compression == BITSHUFFLE_LZ4:
        return decompress_bitshuffle_lz4(buf, 1).tobytes()
    if dh_compression == LZ4 and allow_lz4:
        return decompress_lz4(buf, "big")
    raise CompressionError(f"unsupported dh_compression {dh_compression!r}")
