"""``pipeline_type: custom``: no input; a user function produces every message.

The script named by ``function`` defines ``process(parameters) -> dict | None``. The instance calls it in a loop
(at most ``max_frame_rate`` times per second; back to back without it) and sends what it returns; None sends
nothing for that call. Each call gets the next pulse id (0, 1, 2, ...) and the wall-clock time of the call as the
message timestamp. ``paused`` stops calling it. The shared instance loop does the rest (live config, include /
exclude, records, processing_threads, output modes, error handling with ``abort_on_error``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from cam_server.bsread import Wakeup
from cam_server.common.errors import InvalidConfig
from cam_server.common.process import InstanceControl
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.loop import InstanceLoop
from cam_server.pipeline.instance.messages import call_user_function
from cam_server.pipeline.instance.outcomes import EXIT_OK, Job
from cam_server.pipeline.instance.output import channel_selection, open_output
from cam_server.pipeline.instance.user_code import load_function, user_parameters
from cam_server.pipeline.instance_spec import InstanceSpec

log = logging.getLogger(__name__)

CUSTOM_FUNCTION = "process"
CUSTOM_FUNCTION_ARGS = 1  # parameters
MAX_WAIT_S = 0.2  # the loop must see stop requests and config changes at least this often
PAUSED_WAIT_S = 0.1


def load_custom_function(name: str | None, scripts_folder: str | None, reload: bool = False) -> Callable[..., Any]:
    if not name:
        raise InvalidConfig("pipeline_type 'custom' needs 'function': a script defining process(parameters) "
                            "that returns the dict of channels to send")
    return load_function(str(name), scripts_folder, CUSTOM_FUNCTION, reload=reload, n_args=CUSTOM_FUNCTION_ARGS)


class CallTimer:
    """The custom pipeline's "input": ``receive()`` returns the call time when the next call is due (None
    while it is not, after waiting at most MAX_WAIT_S), so ``max_frame_rate`` throttles the calls."""

    def __init__(self, config: PipelineConfig) -> None:
        self._next = time.monotonic()
        self._wakeup = Wakeup()
        self.update_config(config)

    def interrupt(self) -> None:
        """From any thread: end the current wait; every later :meth:`receive` returns None at once."""
        self._wakeup.set()

    def update_config(self, config: PipelineConfig) -> None:
        rate = config.max_frame_rate
        self._period = 1.0 / rate if rate and rate > 0 else 0.0
        self._paused = config.paused

    def connect(self) -> None:
        self._next = time.monotonic()

    def close(self) -> None:
        pass

    def receive(self) -> float | None:
        if self._wakeup.is_set():
            return None
        if self._paused:
            self._wakeup.wait(PAUSED_WAIT_S)
            return None
        if self._period:
            wait = self._next - time.monotonic()
            if wait > 0 and (self._wakeup.wait(min(wait, MAX_WAIT_S)) or self._next > time.monotonic()):
                return None
            # never catch up with a burst after a slow call: the next call is one period from now at the earliest
            self._next = max(self._next + self._period, time.monotonic())
        return time.time()


class CustomHandler:
    """Turns each due call into a :class:`Job` that runs the user function (see :class:`loop.Handler`)."""

    def __init__(self, config: PipelineConfig, scripts_folder: str | None) -> None:
        self._scripts_folder = scripts_folder
        self._function_name = config.function
        self._function = load_custom_function(self._function_name, scripts_folder, config.reload)
        self._pulse_id = 0
        self._set_config(config)

    def _set_config(self, config: PipelineConfig) -> None:
        self.config = config
        self._parameters = user_parameters(config)
        self._include, self._exclude = channel_selection(config)

    def update(self, config: PipelineConfig) -> None:
        name, reload = config.function, config.reload
        if reload or name != self._function_name:
            self._function = load_custom_function(name, self._scripts_folder, reload)
            self._function_name = name
        self._set_config(config)

    @property
    def abort_on_error(self) -> bool:
        return self.config.abort_on_error

    def prepare(self, call_time: float) -> Job:
        pulse_id = self._pulse_id
        self._pulse_id += 1
        sec = int(call_time)
        timestamp = (sec, int((call_time - sec) * 1e9))
        function, parameters, include, exclude = self._function, self._parameters, self._include, self._exclude

        def compute() -> dict[str, Any] | None:
            return call_user_function(function, (parameters,), "Custom function", pulse_id, include, exclude)

        return Job(pulse_id, timestamp, compute)


def run_custom_pipeline(control: InstanceControl, spec: InstanceSpec) -> int:
    """Call the user function until the instance should end (stop, no clients, records); exit code 0."""
    config = spec.config
    handler = CustomHandler(config, spec.scripts_folder)  # load errors end the instance before any socket opens
    context = zmq.Context(io_threads=1)
    output = open_output(spec, context)
    timer = CallTimer(config)
    try:
        loop = InstanceLoop(control, handler, timer, output, config.processing_threads)  # type: ignore[arg-type]
        loop.run()
    finally:
        output.close()
        context.destroy(linger=1000)
    return EXIT_OK
