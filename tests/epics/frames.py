"""Helpers for tests that read frames from an EpicsCameraSource."""

from __future__ import annotations

import numpy as np

from cam_server.camera.sources.base import RawFrame
from cam_server.camera.sources.epics import EpicsCameraSource
from tests.helpers.procs import wait_until
from tests.ioc.camera_ioc import base_pattern
from tests.ioc.process import CameraIoc


def read_frame(source: EpicsCameraSource, timeout: float = 10.0) -> RawFrame:
    try:
        frame = wait_until(lambda: source.read(0.5), timeout, f"a frame from {source.prefix}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status: {source.status}; stats: {source.stats}; "
                             f"PVs: {list(source._pvs.values())}") from None
    assert isinstance(frame, RawFrame)
    return frame


def assert_pattern(image: np.ndarray, width: int, height: int, expected: np.ndarray | None = None) -> None:
    """Everything but the counter pixel [0, 0] is the IOC's gradient fold(r*16 + c*32)."""
    expected = base_pattern(width, height, image.dtype) if expected is None else expected
    assert image.shape == (height, width)
    assert image.flags.c_contiguous
    assert np.array_equal(image.reshape(-1)[1:], expected.reshape(-1)[1:])


def resize_live(ioc: CameraIoc, source: EpicsCameraSource, width: int, height: int) -> RawFrame:
    """Resize the IOC's camera; checks the source follows (pattern, geometry, no old-shape frame after a new one)
    and returns the first frame of the new shape."""
    ioc.command(f"resize {width} {height}")
    frame = wait_until(lambda: (f := source.read(0.5)) is not None and f.image.shape == (height, width) and f, 10,
                       "a frame with the new shape")
    assert_pattern(frame.image, width, height)
    assert source.geometry() == (width, height)
    assert all(read_frame(source).image.shape == (height, width) for _ in range(3))
    return frame
