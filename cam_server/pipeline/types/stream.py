"""``pipeline_type: stream``: any bsread stream in → a user function → bsread out (no image processing).

Input, first match wins: ``input_stream`` (also what ``input_pipeline`` resolves to) read with ``input_mode``;
``bsread_address`` read with ``bsread_mode`` (PULL by default); the camera of ``camera_name``. Reading
``bsread_channels`` from a dispatcher is not supported (no dispatcher here): the instance fails with a clear error.

The function is ``process(stream_data, pulse_id, timestamp, parameters)`` of the user script named by
``function`` (``stream_data``: channel name → value of the received message, ``timestamp``: (sec, ns)); it
returns the dict to send, or None to send nothing for that message. Without ``function`` the message is passed
through unchanged. The pipeline's gates (paused, pid_range, downsampling, max_frame_rate), include/exclude,
processing_threads and the output options apply as for processing pipelines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

from cam_server.bsread import Message
from cam_server.common.errors import InvalidConfig
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.input import StreamInput
from cam_server.pipeline.instance.messages import call_user_function, message_timestamp
from cam_server.pipeline.instance.outcomes import Job
from cam_server.pipeline.instance.user_code import load_function, user_parameters
from cam_server.pipeline.instance_spec import InstanceSpec
from cam_server.pipeline.types.merge import default_bsread_mode
from cam_server.pipeline.types.store import StoreHandler

log = logging.getLogger(__name__)

STREAM_FUNCTION = "process"
STREAM_FUNCTION_ARGS = 4  # stream_data, pulse_id, timestamp, parameters
PASS_THROUGH_NAMES = (None, "", "pass_through", "transparent")


def pass_through(stream_data: dict[str, Any], pulse_id: int, timestamp: tuple[int, int],
                 parameters: dict[str, Any]) -> dict[str, Any]:
    """The built-in stream function: send the received channels unchanged."""
    return stream_data


def resolve_stream_function(name: str | None, scripts_folder: str | None, reload: bool = False,
                            ) -> Callable[..., Any]:
    """``function`` → callable; raises UserScriptError naming the script, line and problem."""
    if name in PASS_THROUGH_NAMES:
        return pass_through
    return load_function(str(name), scripts_folder, STREAM_FUNCTION, reload=reload, n_args=STREAM_FUNCTION_ARGS)


class StreamHandler(StoreHandler):
    """Per-message handler of stream pipelines (see :class:`cam_server.pipeline.instance.loop.Handler`): a store handler
    whose values go through the stream function."""

    def __init__(self, config: PipelineConfig, scripts_folder: str | None) -> None:
        self._scripts_folder = scripts_folder
        self._function_name: Any = object()
        self._function: Callable[..., Any] = pass_through
        super().__init__(config)

    def update(self, config: PipelineConfig) -> None:
        """Take a new config; the function is (re)loaded when its name changes or ``reload`` is true (then
        ``reload`` is reset, as for processing pipelines). Raises on a bad function; the old one stays."""
        name, reload = config.function, config.reload
        if reload or name != self._function_name:
            self._function = resolve_stream_function(name, self._scripts_folder, reload=reload)
            self._function_name = name
        super().update(config)
        self._parameters = user_parameters(config)

    def prepare(self, message: Message) -> Job | None:
        admitted = self.admit(message)
        if admitted is None:
            return None
        pulse_id, stream_data = admitted
        timestamp = message_timestamp(message)
        function, parameters, include, exclude = self._function, self._parameters, self._include, self._exclude

        def compute() -> dict[str, Any] | None:
            return call_user_function(function, (stream_data, pulse_id, timestamp, parameters), "Stream function",
                                      pulse_id, include, exclude)

        return Job(pulse_id, timestamp, compute)


def stream_input_config(config: PipelineConfig) -> PipelineConfig:
    """The config :class:`StreamInput` reads (``input_stream`` / ``input_mode``) for a stream pipeline."""
    if config.input_stream:
        return config
    address = config.bsread_address
    if address:
        mode = config.bsread_mode or default_bsread_mode(address)
        return config.model_copy(update={"input_stream": address, "input_mode": mode})
    if config.camera_name:
        return config
    if config.bsread_channels:
        raise InvalidConfig("Stream pipeline: reading bsread_channels from the dispatcher is not supported; "
                            "give bsread_address (or input_stream / input_pipeline)")
    raise InvalidConfig("Stream pipeline has no input: set input_stream, input_pipeline, bsread_address or "
                        "camera_name")


class StreamPipelineInput(StreamInput):
    """:class:`StreamInput` that maps ``bsread_address`` / ``bsread_mode`` onto the input, also on live updates."""

    def __init__(self, spec: InstanceSpec, context: zmq.Context | None = None) -> None:
        config = stream_input_config(spec.config)
        address = None if config.input_stream else spec.camera_stream
        super().__init__(address, config, spec.cam_server_url, context=context)

    def update_config(self, config: PipelineConfig) -> None:
        super().update_config(stream_input_config(config))


def make_handler(spec: InstanceSpec) -> StreamHandler:
    return StreamHandler(spec.config, spec.scripts_folder)


def open_input(spec: InstanceSpec, context: zmq.Context) -> StreamPipelineInput:
    """``input_stream``, ``bsread_address`` or the camera (see the module docstring)."""
    return StreamPipelineInput(spec, context=context)
