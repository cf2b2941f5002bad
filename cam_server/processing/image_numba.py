"""Compiled (numba) single pass over an 8/16-bit unsigned image: both profiles, minimum and maximum.

Why: numpy needs three passes (column sums, row sums, min/max); each 16-bit reduction into a 32-bit accumulator
costs about one ``image.sum()``. One fused loop reads the frame once (32-bit column accumulators, exact up to 65536
rows, the same limit as :func:`statistics.sum_dtype`). Used by :func:`statistics.profiles_and_min_max` when numba
is available; :func:`warm_up` compiles it at import (see :mod:`gauss_numba`).
"""

from __future__ import annotations

import time

import numpy as np

from cam_server.processing.gauss_numba import _jit, numba

AVAILABLE = numba is not None
MAX_ROWS = 65536  # 32-bit column sums of 16-bit pixels stay exact
DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


@_jit
def _profiles_min_max(image: np.ndarray, x_profile: np.ndarray, y_profile: np.ndarray) -> tuple[int, int]:
    height, width = image.shape
    columns = np.zeros(width, dtype=np.uint32)
    low = image[0, 0]
    high = image[0, 0]
    for r in range(height):
        row = image[r]
        total = np.uint64(0)
        row_low = row[0]
        row_high = row[0]
        for c in range(width):
            v = row[c]
            columns[c] += np.uint32(v)
            total += np.uint64(v)
            row_low = min(row_low, v)
            row_high = max(row_high, v)
        y_profile[r] = np.int64(total)
        low = min(low, row_low)
        high = max(high, row_high)
    for c in range(width):
        x_profile[c] = np.int64(columns[c])
    return low, high


def supported(image: np.ndarray) -> bool:
    """True when :func:`profiles_min_max` handles this image (numba, 2-D uint8/uint16, not empty)."""
    return (AVAILABLE and image.ndim == 2 and image.dtype in DTYPES and image.size > 0
            and image.shape[0] <= MAX_ROWS)


def profiles_min_max(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.generic, np.generic]:
    """(x_profile int64, y_profile int64, min, max as scalars of the image dtype); see :func:`supported`."""
    height, width = image.shape
    x_profile = np.empty(width, dtype=np.int64)
    y_profile = np.empty(height, dtype=np.int64)
    low, high = _profiles_min_max(image, x_profile, y_profile)
    return x_profile, y_profile, image.dtype.type(low), image.dtype.type(high)


def warm_up() -> float:
    """Compile (or load from the cache) the kernel for C-contiguous and strided uint8/uint16 images; seconds."""
    if not AVAILABLE:
        return 0.0
    begin = time.perf_counter()
    for dtype in DTYPES:
        image = np.arange(12, dtype=dtype).reshape(3, 4)
        profiles_min_max(image)
        profiles_min_max(image[:, 1:3])  # a cropped view (good region, ROI)
    return time.perf_counter() - begin
