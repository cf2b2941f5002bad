"""``pipeline_type: store``: forward the camera stream unprocessed (every channel, original pulse id and time),
with the pipeline's gates (paused, pid_range, downsampling, max_frame_rate) and include/exclude, so a writer can
record raw frames."""

from __future__ import annotations

from typing import Any

from cam_server.bsread import Message
from cam_server.pipeline.gates import Downsampler, FrameRateLimiter, PidDecision, pid_range_decision
from cam_server.pipeline.outcomes import FinishInstance, Job
from cam_server.pipeline.processing_pipeline import filter_output, message_timestamp


class StoreHandler:
    def __init__(self, config: dict[str, Any]) -> None:
        self._downsampler = Downsampler()
        self._rate_limiter = FrameRateLimiter()
        self.update(config)

    def update(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        include = config.get("include")
        self._include = list(include) if include is not None else None
        self._exclude = frozenset(config.get("exclude") or ())

    @property
    def abort_on_error(self) -> bool:
        return self.config.get("abort_on_error", True) is not False

    def prepare(self, message: Message) -> Job | None:
        config, pulse_id = self.config, message.data.pulse_id
        if config.get("paused"):
            return None
        decision = pid_range_decision(config.get("pid_range"), pulse_id)
        if decision is PidDecision.FINISH:
            raise FinishInstance(f"pulse id {pulse_id} is past the pid_range stop {config['pid_range'][1]}")
        if decision is PidDecision.DROP:
            return None
        if not self._downsampler.passes(config.get("downsampling")):
            return None
        if not self._rate_limiter.passes(config.get("max_frame_rate")):
            return None
        values = {name: value.value for name, value in message.data.data.items()}
        values = filter_output(values, self._include, self._exclude)
        return Job(pulse_id, message_timestamp(message), lambda: values)
