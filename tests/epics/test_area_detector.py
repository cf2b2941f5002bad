"""The ``area_detector`` source type: EpicsCameraSource against the simulated IOC serving areaDetector PV names."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from cam_server.camera.sources.base import CameraOffline
from cam_server.camera.sources.epics import EpicsCameraSource
from cam_server.common.errors import InvalidConfig
from tests.epics.frames import assert_pattern, read_frame, resize_live

PAIRING_SLACK = 3  # counter values an image may be paired off by when CA coalesced queued events (see below)


def test_frames_shape_dtype_pattern_and_pulse_ids(start_ioc, connected):
    # 1100 columns: the gradient goes above 32767, so the int16 wire type of a uint16 camera must not wrap.
    ioc = start_ioc(width=1100, height=40, rate=20, pv_names="area_detector")
    source = connected(ioc.camera_config())
    assert source.connected and source.geometry() == (1100, 40)
    assert source.status == f"Camera with prefix {ioc.prefix} is online (1100x40)"
    frames = [read_frame(source) for _ in range(6)]
    for frame in frames:
        assert frame.image.dtype == np.uint16
        assert_pattern(frame.image, 1100, 40)
        assert int(frame.image[0, -1]) == 1099 * 32
    # The IOC posts cam1:ArrayCounter_RBV = n just before image n, whose pixel [0, 0] holds n; the two are separate
    # CA monitors and an image takes the latest counter seen. When the client falls behind (a loaded machine), the
    # IOC's flow control replaces queued events by newer ones, so an image can meet a counter a step or two ahead:
    # the ids stay increasing and close to the image's own counter (they match exactly when nothing is late).
    offsets = [f.pulse_id - int(f.image[0, 0]) for f in frames]
    assert all(abs(offset) <= PAIRING_SLACK for offset in offsets), offsets
    pulse_ids = [f.pulse_id for f in frames]
    assert pulse_ids == sorted(set(pulse_ids))
    assert source.stats["clipped_frames"] == 0


def test_live_resize(start_ioc, connected):
    ioc = start_ioc(width=320, height=240, pv_names="area_detector")
    source = connected(ioc.camera_config())
    assert_pattern(read_frame(source).image, 320, 240)

    frame = resize_live(ioc, source, 200, 100)  # image1:ArraySize0_RBV / ArraySize1_RBV are monitored
    assert frame.pulse_id == int(frame.image[0, 0])


def test_acquire_value_and_unused_pvs_do_not_decide_online(start_ioc, connected, caplog):
    # An IOC without cam1:ColorMode / cam1:DataType, not acquiring (cam1:Acquire = Done): the camera is online.
    caplog.set_level(logging.INFO, logger="cam_server.camera.sources.epics")
    ioc = start_ioc(width=32, height=8, pv_names="area_detector", unused_pvs=False)
    ioc.command("offline")
    source = connected(ioc.camera_config(connection_timeout=2.0))
    assert source.connected and source.geometry() == (32, 8)
    assert (f"{ioc.prefix}:cam1:ColorMode, {ioc.prefix}:cam1:DataType not connected (monitored but unused"
            in caplog.text)
    assert source.status == f"Camera with prefix {ioc.prefix} is online (32x8)"
    ioc.command("online")  # acquisition starts: frames flow
    frame = read_frame(source)
    assert_pattern(frame.image, 32, 8)
    assert frame.pulse_id == int(frame.image[0, 0])


@pytest.mark.usefixtures("epics_client_env")
def test_nonexistent_prefix_is_offline():
    prefix = f"NOSUCH{time.monotonic_ns()}:AD"
    source = EpicsCameraSource({"source": prefix, "source_type": "area_detector", "connection_timeout": 1.0})
    with pytest.raises(CameraOffline) as info:
        source.connect()
    assert str(info.value) == f"Camera with prefix {prefix} is offline"
    assert source.last_error == str(info.value)
    assert not source.connected and source.read(0.05) is None


@pytest.mark.unit
def test_pulse_id_pairing_rules():
    # No IOC: the monitor callbacks are fed directly, in the orders Channel Access could deliver them.
    source = EpicsCameraSource({"source": "NO:SUCH:AD", "source_type": "area_detector"})
    source._width, source._height = 2, 1
    image = np.zeros(2, dtype=np.uint16)
    timestamps = iter(range(100, 200))

    def deliver(counter: int | None = None) -> int | None:
        """Post a counter value (if any) then an image; the pulse id of the frame read back (None: dropped)."""
        if counter is not None:
            source._on_counter(value=counter)
        source._on_picture(value=image.copy(), timestamp=float(next(timestamps)))
        frame = source.read(0.05)
        return None if frame is None else frame.pulse_id

    assert deliver() is None  # before the first counter value: no pulse id to give it, dropped
    assert deliver(5) == 5
    assert deliver() == 6  # the counter has not moved (late or stopped): the previous id + 1, not a repeat
    assert deliver() == 7
    assert deliver(8) == 8  # it moved: its value again, no lasting offset
    assert deliver(11) == 11  # a jump (frames the IOC skipped) is taken as it is
    assert deliver(0) == 0  # the counter went down: a reset by the user, taken as it is
    assert deliver() == 1
    assert source.stats["no_pulse_id"] == 1 and source.stats["received"] == 7


@pytest.mark.unit
def test_epics_source_type_has_no_pulse_id():
    source = EpicsCameraSource({"source": "NO:SUCH:CAM", "source_type": "epics"})
    source._width, source._height = 2, 1
    source._on_picture(value=np.arange(2, dtype=np.uint16), timestamp=1.0)
    assert source.read(0.05).pulse_id is None


@pytest.mark.unit
def test_unknown_source_type_is_named():
    with pytest.raises(InvalidConfig, match="'source_type' must be one of epics, area_detector, bsread, got 'gige'"):
        EpicsCameraSource({"source": "P", "source_type": "gige"})
