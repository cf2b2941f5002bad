"""``pipeline_type: store``: forward the camera stream unprocessed (every channel, original pulse id and time),
with the pipeline's gates (paused, pid_range, downsampling, max_frame_rate) and include/exclude, so a writer can
record raw frames.

PSI's writers read a store pipeline with PULL (its ``mode`` defaults to PUSH, see ``registry.PIPELINE_TYPES``) and take
the image from the channel ``<camera_name>:FPICTURE``, so a store pipeline with a camera also sends its image
under that name."""

from __future__ import annotations

from typing import Any

from cam_server.bsread import Message
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.gates import MessageGates
from cam_server.pipeline.instance.messages import filter_output, message_timestamp
from cam_server.pipeline.instance.outcomes import Job
from cam_server.pipeline.instance.output import channel_selection
from cam_server.pipeline.instance_spec import InstanceSpec


def picture_channel(config: PipelineConfig) -> str | None:
    """``<camera_name>:FPICTURE``, the image channel PSI's writers record, for store pipelines with a camera."""
    camera = config.camera_name
    if config.pipeline_type == "store" and camera:
        return f"{camera}:FPICTURE"
    return None


class StoreHandler:
    """Per-message handler of store pipelines; the base of the stream and fan-in handlers (gates, channel
    selection, ``abort_on_error``)."""

    def __init__(self, config: PipelineConfig) -> None:
        self._gates = MessageGates()
        self.update(config)

    def update(self, config: PipelineConfig) -> None:
        self.config = config
        self._include, self._exclude = channel_selection(config)
        self._picture = picture_channel(config)

    @property
    def abort_on_error(self) -> bool:
        return self.config.abort_on_error

    def admit(self, message: Message) -> tuple[int, dict[str, Any]] | None:
        """The message's pulse id and channel values, or None when a gate holds it back."""
        pulse_id = message.data.pulse_id
        if not self._gates.passes(self.config, pulse_id):
            return None
        return pulse_id, {name: value.value for name, value in message.data.data.items()}

    def prepare(self, message: Message) -> Job | None:
        admitted = self.admit(message)
        if admitted is None:
            return None
        pulse_id, values = admitted
        if self._picture is not None and "image" in values:
            values[self._picture] = values["image"]  # the same array: no copy, it is sent twice
        values = filter_output(values, self._include, self._exclude)
        return Job(pulse_id, message_timestamp(message), lambda: values)


def make_handler(spec: InstanceSpec) -> StoreHandler:
    """Store and fanout: forward the frames unchanged (to a writer, or PUSHed to the workers)."""
    return StoreHandler(spec.config)
