"""``pipeline_type: processing``: one camera message → one processed message (processing.md section 2).

The work is split in two so it can run in parallel (``processing_threads``):
* :meth:`ProcessingHandler.prepare` — the sequential, stateful part in message order: pause, pid_range,
  downsampling, empty image, ortho axes, averaging, copy, max_frame_rate;
* the returned :class:`Job`'s ``compute`` — pre-processing, the function and include/exclude, which only reads
  its own frame and the live parameters of that moment.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import zmq

from cam_server.bsread import Message
from cam_server.common.errors import InvalidConfig
from cam_server.pipeline.config import PipelineConfig, roi_problem
from cam_server.pipeline.instance.gates import Downsampler, FrameRateLimiter, in_pid_range
from cam_server.pipeline.instance.messages import filter_output, message_timestamp
from cam_server.pipeline.instance.outcomes import Job, ProcessingError
from cam_server.pipeline.instance.shm_input import camera_input
from cam_server.pipeline.instance_spec import InstanceSpec
from cam_server.pipeline.types.merge_input import MergedInput
from cam_server.pipeline.types.processing_parameters import LiveParameters, ParameterBuilder
from cam_server.processing.default import preprocess_frame
from cam_server.processing.preprocess import Averager

log = logging.getLogger(__name__)

CAMERA_CHANNELS = frozenset({"width", "height", "timestamp", "image", "x_axis", "y_axis"})


def _value(message: Message, name: str) -> Any:
    entry = message.data.data.get(name)
    return None if entry is None else entry.value


def _bad_image(message: Message, image: Any) -> Job:
    """A frame whose image is not 2-D: an error of that frame (counted and reported by the loop like any failed
    frame), never a silent drop."""
    pulse_id = message.data.pulse_id
    shape = list(getattr(image, "shape", ()))

    def fail() -> None:
        raise ProcessingError(f"Image at pulse id {pulse_id} has shape {shape}: a 2-D image is expected")

    return Job(pulse_id, message_timestamp(message), fail)


def _axis(message: Message, name: str, size: int) -> np.ndarray:
    """The message's axis as a 1-D array of ``size`` (a one-element axis is received as a scalar), else pixel
    indices."""
    axis = message.data.array(name)
    if isinstance(axis, np.ndarray) and axis.shape == (size,):
        return axis
    return np.arange(size, dtype=np.float32)


class ProcessingHandler:
    """Turns camera messages into output values with the live parameters (swapped atomically on update)."""

    def __init__(self, config: PipelineConfig, background_folder: str, scripts_folder: str) -> None:
        self._builder = ParameterBuilder(background_folder, scripts_folder)
        self._downsampler = Downsampler()
        self._rate_limiter = FrameRateLimiter()
        self._averager: Averager | None = None
        self._last_image: np.ndarray | None = None  # the last image received (its shape checks a new ROI)
        self.live: LiveParameters = self._builder.build(config)
        self._sync_averager()

    def update(self, config: PipelineConfig) -> None:
        """Apply a new config (background, function, averaging, ... are re-derived); raises on a bad config
        and then keeps the previous one."""
        live = self._builder.build(config)
        if self._last_image is not None:  # the geometry is known: the ROI must start inside the image
            height, width = self._last_image.shape
            problem = roi_problem(live.parameters, width, height)
            if problem:
                raise InvalidConfig(f"{problem} (the images received)")
        self.live = live
        self._sync_averager()

    @property
    def abort_on_error(self) -> bool:
        return self.live.config.abort_on_error

    def _sync_averager(self) -> None:
        n = self.live.config.averaging
        if not n:
            self._averager = None
        elif self._averager is None or self._averager.n != n:
            self._averager = Averager(n)

    # -- sequential part ------------------------------------------------------------------------------

    def prepare(self, message: Message) -> Job | None:
        """Steps 3-7 for one message: a :class:`Job`, or None when the frame is dropped.

        Raises :class:`FinishInstance` when the pid_range stop is passed.
        """
        live = self.live
        config = live.config
        pulse_id = message.data.pulse_id
        if live.paused:
            return None
        if config.pid_range and not in_pid_range(config.pid_range, pulse_id):
            return None
        if not self._downsampler.passes(config.downsampling):
            return None
        image = _value(message, "image")
        if not isinstance(image, np.ndarray) or image.size == 0:
            return None
        if image.ndim != 2:
            image = message.data.array("image")  # 2-D again: an image one pixel high is received as a row
            if not isinstance(image, np.ndarray) or image.ndim != 2:
                return _bad_image(message, image)
        self._last_image = image  # a reference (no copy): its shape checks a new ROI
        x_axis = _value(message, "x_axis")
        y_axis = _value(message, "y_axis")
        if not isinstance(x_axis, np.ndarray) or x_axis.ndim != 1:
            x_axis = _axis(message, "x_axis", image.shape[1])
        if not isinstance(y_axis, np.ndarray) or y_axis.ndim != 1:
            y_axis = _axis(message, "y_axis", image.shape[0])
        # Step 5 (ortho axis remap) is done by preprocess_frame together with the image rotation.
        owned = False  # True when `image` is our own array, which pre-processing may then modify in place
        if self._averager is not None:
            image = self._averager.add(image)
            if image is None:
                return None
            owned = True
        elif config.copy_image:
            image = image.copy()
            owned = True
        if not self._rate_limiter.passes(config.max_frame_rate):
            return None
        timestamp = message_timestamp(message)
        bsdata = {name: value.value for name, value in message.data.data.items() if name not in CAMERA_CHANNELS}
        merged = getattr(message, "merged", None)  # bsread merge (merge_input.MergedMessage): data of this pulse id
        if merged:
            bsdata.update(merged)

        def compute() -> dict[str, Any] | None:
            return self.compute(live, image, x_axis, y_axis, pulse_id, timestamp, bsdata, owned, merged)

        return Job(pulse_id, timestamp, compute)

    # -- parallelisable part --------------------------------------------------------------------------

    @staticmethod
    def compute(live: LiveParameters, image: np.ndarray, x_axis: np.ndarray, y_axis: np.ndarray, pulse_id: int,
                timestamp: tuple[int, int], bsdata: dict[str, Any], owned: bool = False,
                merged: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Steps 9-11: pre-processing, function, include/exclude; raises :class:`ProcessingError`.

        ``merged`` (bsread merge) channels are added to the output under their own names, unless the function
        returned a channel of the same name."""
        parameters = live.parameters
        try:
            image, x_axis, y_axis = preprocess_frame(image, x_axis, y_axis, parameters, live.background,
                                                      in_place=owned)
        except Exception as exc:  # noqa: BLE001 - any failure of a frame is reported with its reason
            raise ProcessingError(f"Pre-processing failed at pulse id {pulse_id}: {exc}") from exc
        try:
            values = live.function(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata)
        except Exception as exc:  # noqa: BLE001 - user functions can raise anything
            raise ProcessingError(f"Processing function failed at pulse id {pulse_id}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        if values is None:  # the function chose to send nothing for this frame
            return None
        if not isinstance(values, dict):
            raise ProcessingError(f"Processing function returned {type(values).__name__}, expected a dict")
        if merged:
            values = {**values, **{name: v for name, v in merged.items() if name not in values}}
        return filter_output(values, live.include, live.exclude)


def make_handler(spec: InstanceSpec) -> ProcessingHandler:
    return ProcessingHandler(spec.config, spec.background_folder, spec.scripts_folder)


def open_input(spec: InstanceSpec, context: zmq.Context) -> MergedInput:
    """The camera (through shared memory when it is on this host: ``shm_input.py``) or input stream, paired with
    bsread data by pulse id when ``bsread_address`` is set."""
    return MergedInput(camera_input(spec, context), spec.config)
