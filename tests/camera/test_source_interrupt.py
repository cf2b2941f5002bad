"""Every camera source's read ends when the instance is asked to stop, not at its next frame or timeout."""

import threading

import numpy as np
import pytest

from cam_server.camera.config import parse_camera_config
from cam_server.camera.sources.bsread_source import BsreadCameraSource
from cam_server.camera.sources.epics import EpicsCameraSource
from cam_server.camera.sources.simulation import SimulationSource
from tests.helpers.net import free_port

pytestmark = pytest.mark.unit

LONG = 3600.0  # a read timeout no test can wait out: only interrupt() ends these reads


def interrupted_read(source) -> object:
    """read(LONG) in this thread while another thread interrupts the source."""
    timer = threading.Timer(0.05, source.interrupt)
    timer.start()
    try:
        return source.read(LONG)
    finally:
        timer.join()


def test_simulation_read_interrupted_between_frames():
    config = parse_camera_config({"source": "simulation", "source_type": "simulation", "frame_rate": 0.0001,
                                  "size_x": 32, "size_y": 16}, "sim")
    source = SimulationSource(config)
    source.connect()
    first = source.read(LONG)  # the first frame is due at once
    assert first is not None and first.image.shape == (16, 32)
    assert interrupted_read(source) is None  # the next one is due in 10000 s
    assert source.read(LONG) is None  # stays interrupted


@pytest.mark.parametrize("connections", [1, 2])
def test_bsread_read_interrupted_while_the_stream_is_silent(connections):
    config = parse_camera_config({"source": f"tcp://127.0.0.1:{free_port()}", "source_type": "bsread",
                                  "connections": connections}, "relay")
    source = BsreadCameraSource(config)
    source.connect()
    try:
        assert interrupted_read(source) is None
        assert source.read(LONG) is None
    finally:
        source.close()


def test_epics_read_interrupted_without_frames_but_queued_frames_still_delivered():
    source = EpicsCameraSource({"source": "NO:SUCH:CAM"})  # never connected: only the frame queue is used
    assert interrupted_read(source) is None
    source._width, source._height = 2, 1
    source._on_picture(value=np.array([7, 8], dtype=np.uint16), timestamp=1.0)
    frame = source.read(LONG)
    assert frame is not None and frame.image.tolist() == [[7, 8]]
    assert source.read(LONG) is None
