"""``bsread`` cameras named by a PV prefix: the simulated IOC publishes its own stream (``--pv-names bsread``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import numpy as np
import pytest

from cam_server.camera.config import parse_camera_config
from cam_server.camera.sources.base import CameraOffline, RawFrame
from cam_server.camera.sources.bsread_source import BsreadCameraSource
from cam_server.camera.sources.epics_bsread import EpicsBsreadCameraSource
from cam_server.camera.sources.factory import create_source
from cam_server.common.errors import InvalidConfig
from tests.epics.frames import assert_pattern
from tests.helpers.procs import wait_until


@pytest.fixture
def open_source() -> Iterator[Callable[[dict], EpicsBsreadCameraSource]]:
    """Create (through the factory, as a camera instance does) and connect a source; closed at teardown."""
    with ExitStack() as sources:
        def open_(config: dict) -> EpicsBsreadCameraSource:
            source = create_source(parse_camera_config(config))
            assert isinstance(source, EpicsBsreadCameraSource)
            return sources.enter_context(source)

        yield open_


def read_frame(source: EpicsBsreadCameraSource, timeout: float = 10.0) -> RawFrame:
    try:
        return wait_until(lambda: source.read(0.5), timeout, f"a frame from {source.prefix}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status: {source.status}; dropped: {source.dropped}") from None


@pytest.mark.parametrize("flat", [False, True], ids=["2d", "1d"])
def test_frames_from_the_cameras_own_stream(start_ioc, open_source, flat: bool):
    ioc = start_ioc(width=300, height=40, rate=20, pv_names="bsread", camera_name="prefix_cam", bsread_flat=flat)
    source = open_source(ioc.camera_config())
    assert source.image_channel == "prefix_cam:FPICTURE"
    assert source.stream.address == ioc.stream_address and source.geometry() == (300, 40)
    frames = [read_frame(source) for _ in range(4)]
    for frame in frames:
        assert frame.image.dtype == np.uint16
        assert_pattern(frame.image, 300, 40)
        assert frame.pulse_id == int(frame.image[0, 0])  # the IOC sends frame n with pulse id n
    pulse_ids = [f.pulse_id for f in frames]
    assert pulse_ids == sorted(set(pulse_ids))
    if flat:  # a 1-D image follows P:WIDTH / P:HEIGHT: longer ones are truncated, shorter ones dropped
        import epics

        ioc.command("extra 7")
        published = int(epics.caget(f"{ioc.prefix}:FRAME", timeout=2.0))  # later frames carry 7 pixels more
        frame = wait_until(lambda: (f := source.read(0.5)) is not None and f.pulse_id > published and f, 10,
                           "a frame published after 'extra 7'")
        assert_pattern(frame.image, 300, 40)
        ioc.command("extra -1")
        dropped = source.dropped
        wait_until(lambda: source.read(0.2) is None and source.dropped > dropped, 10, "short frames dropped")
    else:  # a 2-D image is used as it is
        ioc.command("resize 120 30")
        frame = wait_until(lambda: (f := source.read(0.5)) is not None and f.image.shape == (30, 120) and f, 10,
                           "a frame with the new shape")
        assert_pattern(frame.image, 120, 30)
        assert source.geometry() == (120, 30)


def test_offline_and_not_initialized_messages(start_ioc, open_source):
    prefix = f"NOSUCH{time.monotonic_ns()}:BS"
    with pytest.raises(CameraOffline) as info:
        open_source({"name": "cam", "source": prefix, "source_type": "bsread", "connection_timeout": 1.0})
    assert str(info.value) == f"Camera with prefix {prefix} is offline"

    ioc = start_ioc(width=16, height=8, pv_names="bsread")
    ioc.command("status BUSY")
    with pytest.raises(CameraOffline) as info:
        open_source(ioc.camera_config())
    assert str(info.value) == f"Camera with prefix {ioc.prefix} is not initialized - Status BUSY"


def test_bsreadconfig_without_an_address_is_a_clear_error(start_ioc, open_source):
    ioc = start_ioc(width=16, height=8, pv_names="bsread")
    ioc.command("bsreadconfig")
    config = ioc.camera_config()
    source = create_source(parse_camera_config(config))
    with pytest.raises(CameraOffline) as info:
        source.connect()
    assert str(info.value) == (f"Camera with prefix {ioc.prefix} has no bsread stream address: "
                               f"{ioc.prefix}:BSREADCONFIG is empty")
    assert source.read(0.05) is None and not source.control.connected  # the CA channels are released

    ioc.command("bsreadconfig localhost:9999")
    with pytest.raises(CameraOffline) as info:
        source.connect()
    assert str(info.value) == (f"Camera with prefix {ioc.prefix} has no bsread stream address: "
                               f"{ioc.prefix}:BSREADCONFIG reads 'localhost:9999', not an address like "
                               f"tcp://host:port")

    ioc.command(f"bsreadconfig {ioc.stream_address}")  # a connect after the fix reads the PV again
    assert_pattern(read_frame(open_source(config)).image, 16, 8)


def test_factory_tells_the_two_forms_apart():
    address = parse_camera_config({"name": "a", "source": "tcp://127.0.0.1:9999", "source_type": "bsread"})
    assert isinstance(create_source(address), BsreadCameraSource)
    prefix = parse_camera_config({"name": "p", "source": "X:CAM", "source_type": "bsread", "bsread_mode": "SUB"})
    source = create_source(prefix)
    assert isinstance(source, EpicsBsreadCameraSource) and source.image_channel == "p:FPICTURE"
    with pytest.raises(InvalidConfig, match=r"needs its 'name': the image is the stream channel <name>:FPICTURE"):
        EpicsBsreadCameraSource(parse_camera_config({"source": "X:CAM", "source_type": "bsread"}))
