"""Simulated beam camera image model (processing spec section 4).

Per frame: ``trunc(clip(exp(−(v²+u²)) + 0.1·U[0,1) + D, 0, 0.9) · 65535)`` with moving coordinate ranges u (rows,
±100) and v (columns, ±20) and a fixed dead-pixel map D. Made cheap by three observations:

* the beam is separable, exp(−(u²+v²)) = exp(−u²)·exp(−v²), and only a small block around the centre rises above
  one count, so it is evaluated as an outer product on that block only;
* the noise is drawn as raw 16-bit random words and scaled with an integer multiply-high to 0..6553 counts
  (= trunc(0.1·U·65535) up to the 1/65536 quantisation), which is ~2x cheaper than float random numbers;
* dead pixels and the saturation clip only touch the beam block and 100 pixels.

Decision (issue): frames are generated directly in the configured dtype, so declared and generated types agree
(no int16 wrap-around): integer dtypes are clipped to their range (int16 saturates at 32767), float dtypes keep
the scaled float values (saturation 58981.5).
"""

from __future__ import annotations

import numpy as np

NOISE = 0.1
DEAD_PIXELS = 100
ROW_HALF_RANGE = 100.0
COLUMN_HALF_RANGE = 20.0
FULL_SCALE = 65535.0
SATURATION = 0.9 * FULL_SCALE  # 58981.5 -> 58981 in integer dtypes
BEAM_CUTOFF = 0.5 / FULL_SCALE  # exp(-u²) below this never adds a count
IMAGE_TYPES = ("beam", "raw", "static_beam", "static_raw")
# Defaults of a simulated camera (its config leaves size and image type unset).
DEFAULT_SIZE_X = 1280
DEFAULT_SIZE_Y = 960
DEFAULT_IMAGE_TYPE = "beam"


class SimulatedBeam:
    """Frames of a moving gaussian beam with uniform noise and fixed dead pixels; see the module docstring."""

    def __init__(self, size_x: int = DEFAULT_SIZE_X, size_y: int = DEFAULT_SIZE_Y, dtype: str = "uint16",
                 image_type: str | None = DEFAULT_IMAGE_TYPE, seed: int | None = None) -> None:
        self.width = int(size_x)
        self.height = int(size_y)
        if self.width < 1 or self.height < 1:
            raise ValueError(f"Invalid simulation size {size_x}x{size_y}: must be positive")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise ValueError(f"Invalid simulation dtype {dtype!r}") from exc
        if self.dtype.kind not in "uif":
            raise ValueError(f"Invalid simulation dtype {dtype!r}: must be an integer or float type")
        self.image_type = image_type or DEFAULT_IMAGE_TYPE
        self.beam = self.image_type not in ("raw", "static_raw")
        self.static = self.image_type in ("static_beam", "static_raw")
        self.rng = np.random.default_rng(seed)
        rows = self.rng.integers(0, self.height, DEAD_PIXELS)
        cols = self.rng.integers(0, self.width, DEAD_PIXELS)
        self.dead_pixels = (rows, cols)
        self._row_steps = np.linspace(0.0, 1.0, self.height)  # u = start + (end - start)·step
        self._col_steps = np.linspace(0.0, 1.0, self.width)
        self._integer = self.dtype.kind in "ui"
        if self._integer:
            info = np.iinfo(self.dtype)
            self.saturation = int(min(int(SATURATION), info.max))
            self._work = np.empty(self.height * self.width, dtype=np.uint32)
        else:
            self.saturation = float(SATURATION)
            self._work = None
        self._static_frame: np.ndarray | None = None

    # -- noise -------------------------------------------------------------------------------------------------
    def _noise_uint16(self) -> np.ndarray:
        """Uniform 0..6553 counts (trunc(0.1·U·65535)) as a fresh C-contiguous uint16 (H, W) array."""
        count = self.height * self.width
        # random_raw fills 64-bit words straight from the bit generator (much faster than rng.bytes).
        words = self.rng.bit_generator.random_raw((count + 3) // 4).view(np.uint16)[:count]
        work = self._work
        np.multiply(words, np.uint32(int(NOISE * 65536) + 1), out=work, dtype=np.uint32)
        # The high 16 bits of each product are the scaled value: take them through a uint16 view (little end).
        high = work.view(np.uint16)[1::2] if np.little_endian else work.view(np.uint16)[0::2]
        out = np.empty((self.height, self.width), dtype=np.uint16)
        np.copyto(out.reshape(-1), high)
        return out

    def _noise_float(self) -> np.ndarray:
        float_type = np.float32 if self.dtype == np.float32 else np.float64
        out = self.rng.random((self.height, self.width), dtype=float_type)
        out *= NOISE * FULL_SCALE
        return out

    # -- beam --------------------------------------------------------------------------------------------------
    def _add_beam(self, frame: np.ndarray, offsets: np.ndarray) -> None:
        """Add exp(−u²)·exp(−v²)·65535 on the block where it is at least half a count, saturating."""
        r1, r2, r3, r4 = offsets
        u = (-ROW_HALF_RANGE + r1) + (2 * ROW_HALF_RANGE + r2 - r1) * self._row_steps
        v = (-COLUMN_HALF_RANGE + r3) + (2 * COLUMN_HALF_RANGE + r4 - r3) * self._col_steps
        limit = float(np.sqrt(-np.log(BEAM_CUTOFF)))
        rows = np.flatnonzero(np.abs(u) < limit)
        cols = np.flatnonzero(np.abs(v) < limit)
        if rows.size == 0 or cols.size == 0:
            return
        r0, r1_ = rows[0], rows[-1] + 1
        c0, c1 = cols[0], cols[-1] + 1
        beam = np.multiply.outer(np.exp(-u[r0:r1_] ** 2), np.exp(-v[c0:c1] ** 2) * FULL_SCALE)
        block = frame[r0:r1_, c0:c1]
        beam += block  # noise + beam in float64
        np.minimum(beam, SATURATION, out=beam)
        block[...] = beam  # float -> dtype truncates toward zero, as the model's cast does

    def _generate(self) -> np.ndarray:
        offsets = self.rng.random(4)  # r1, r2 (rows), r3, r4 (columns), in that order
        if self._integer:
            frame = self._noise_uint16()
            if self.beam:
                self._add_beam(frame, offsets)
            frame[self.dead_pixels] = int(SATURATION)
            return self._to_integer_dtype(frame)
        frame = self._noise_float()
        if self.beam:
            self._add_beam(frame, offsets)
        frame[self.dead_pixels] = SATURATION
        return frame if frame.dtype == self.dtype else frame.astype(self.dtype)

    def _to_integer_dtype(self, frame: np.ndarray) -> np.ndarray:
        if self.dtype == np.uint16:
            return frame
        if self.dtype == np.int16:  # clip to the int16 range and reinterpret: no copy
            np.minimum(frame, self.saturation, out=frame)
            return frame.view(np.int16)
        if self.saturation < int(SATURATION):  # narrower types (uint8, int8) saturate at their maximum
            np.minimum(frame, self.saturation, out=frame)
        return frame.astype(self.dtype)

    def next_frame(self) -> np.ndarray:
        """A new (H, W) frame in ``dtype``; static image types return the same read-only array every time."""
        if self.static:
            if self._static_frame is None:
                self._static_frame = self._generate()
                self._static_frame.flags.writeable = False
            return self._static_frame
        return self._generate()
