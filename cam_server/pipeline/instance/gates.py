"""Per-message decisions that drop frames before any pixel is touched (spec processing.md section 2, steps 3, 7).

Each gate is a tiny object with state that survives config updates where it should (downsampling counter,
last processed time), so a live change does not restart counting.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import Enum

from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.outcomes import FinishInstance


class PidDecision(Enum):
    PASS = 0
    DROP = 1
    FINISH = 2


def pid_range_decision(pid_range: Sequence[int] | None, pulse_id: int) -> PidDecision:
    """``pid_range = [start, stop]``: start <= 0 disables output, pulses before start are dropped and a pulse
    after a positive stop finishes the instance."""
    if not pid_range:
        return PidDecision.PASS
    start = int(pid_range[0])
    stop = int(pid_range[1]) if len(pid_range) > 1 and pid_range[1] is not None else 0
    if start <= 0:
        return PidDecision.DROP
    if stop > 0 and pulse_id > stop:
        return PidDecision.FINISH
    if pulse_id < start:
        return PidDecision.DROP
    return PidDecision.PASS


class Downsampler:
    """``downsampling = N``: the first message passes, then exactly one out of every N (README; the reference's
    one out of N+1 is a quirk we do not copy). 0, 1 and None pass everything."""

    def __init__(self) -> None:
        self._skipped: int | None = None  # messages dropped since the last one passed; None: none passed yet

    def passes(self, factor: int | None) -> bool:
        if not factor or factor <= 1:
            self._skipped = None
            return True
        if self._skipped is None or self._skipped >= factor - 1:
            self._skipped = 0
            return True
        self._skipped += 1
        return False


class FrameRateLimiter:
    """``max_frame_rate`` (Hz): a frame passes only if 1/rate seconds passed since the last frame that passed."""

    def __init__(self) -> None:
        self._last: float | None = None

    def passes(self, max_frame_rate: float | None, now: float | None = None) -> bool:
        if not max_frame_rate or max_frame_rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        if self._last is not None and now - self._last < 1.0 / max_frame_rate:
            return False
        self._last = now
        return True


def in_pid_range(pid_range: Sequence[int] | None, pulse_id: int) -> bool:
    """False for a pulse ``pid_range`` drops; raises :class:`FinishInstance` past its stop (the instance ends)."""
    decision = pid_range_decision(pid_range, pulse_id)
    if decision is PidDecision.FINISH:
        raise FinishInstance(f"pulse id {pulse_id} is past the pid_range stop {pid_range[1]}")  # type: ignore[index]
    return decision is not PidDecision.DROP


class MessageGates:
    """paused, pid_range, downsampling and max_frame_rate for one message, in that order (processing.md 2)."""

    def __init__(self) -> None:
        self._downsampler = Downsampler()
        self._rate_limiter = FrameRateLimiter()

    def passes(self, config: PipelineConfig, pulse_id: int) -> bool:
        """False when the message is dropped; raises :class:`FinishInstance` past the pid_range stop."""
        if config.paused:
            return False
        if not in_pid_range(config.pid_range, pulse_id):
            return False
        if not self._downsampler.passes(config.downsampling):
            return False
        return self._rate_limiter.passes(config.max_frame_rate)
