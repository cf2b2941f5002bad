"""EpicsCameraSource against a real simulated camera IOC over Channel Access (loopback-only namespace)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cam_server.camera.sources.base import CameraOffline
from cam_server.camera.sources.epics import EpicsCameraSource
from tests.epics.frames import assert_pattern, read_frame, resize_live
from tests.helpers.procs import wait_until
from tests.ioc.camera_ioc import base_pattern


def test_uint16_frames_full_size(camera_ioc, connected):
    source = connected(camera_ioc.camera_config())
    assert source.connected
    assert source.geometry() == (1280, 1024)
    assert "online (1280x1024)" in source.status
    frames = [read_frame(source) for _ in range(8)]
    counters = []
    for frame in frames:
        assert frame.image.dtype == np.uint16
        assert_pattern(frame.image, 1280, 1024)
        assert frame.pulse_id is None and frame.extra is None
        counters.append(int(frame.image[0, 0]))
    # values above 32767 survive the int16 wire type: bottom-right pixel = 1023*16 + 1279*32
    assert int(frames[-1].image[-1, -1]) == 57296
    assert frames[-1].image.max() == 57296
    timestamps = [f.timestamp for f in frames]
    seen = f"counters {counters}, timestamps {timestamps}, stats {source.stats}, reconnects {source.reconnects}"
    assert counters == sorted(counters) and len(set(counters)) == len(counters), seen  # consecutive-ish, no repeat
    assert timestamps == sorted(timestamps)
    assert abs(timestamps[-1] - time.time()) < 60  # the PV timestamp is seconds since the Unix epoch


@pytest.mark.parametrize("ftvl", ["SHORT", "LONG", "USHORT"])
def test_uint16_camera_any_wire_type(start_ioc, connected, ftvl):
    # 1100 columns make the gradient reach 35168 > 32767, so a wrong int16 handling would show.
    ioc = start_ioc(width=1100, height=6, dtype="uint16", ftvl=ftvl)
    source = connected(ioc.camera_config())
    frame = read_frame(source)
    assert frame.image.dtype == np.uint16
    assert_pattern(frame.image, 1100, 6)
    assert int(frame.image[0, -1]) == 1099 * 32
    assert source.stats["clipped_frames"] == 0


def test_int32_values_outside_uint16_saturate(start_ioc, connected):
    # An int32 camera's gradient starts at -2**31: read as uint16 everything below 0 must become 0, not wrap.
    ioc = start_ioc(width=64, height=4, dtype="int32", ftvl="LONG")
    source = connected(ioc.camera_config(dtype="uint16"))
    frame = read_frame(source)
    assert frame.image.dtype == np.uint16
    assert not frame.image.any()
    assert source.stats["clipped_frames"] >= 1


def test_float_camera_dtype(start_ioc, connected):
    ioc = start_ioc(width=50, height=20, dtype="uint16", ftvl="SHORT")
    source = connected(ioc.camera_config(dtype="float32"))
    frame = read_frame(source)
    assert frame.image.dtype == np.float32
    assert_pattern(frame.image, 50, 20, base_pattern(50, 20, "uint16").astype(np.float32))


def test_live_resize_and_waveform_length_rules(start_ioc, connected):
    ioc = start_ioc(width=320, height=240, max_pixels=320 * 240 + 16)
    source = connected(ioc.camera_config())
    assert_pattern(read_frame(source).image, 320, 240)

    resize_live(ioc, source, 200, 100)

    ioc.command("extra 7")  # longer waveform than WIDTH*HEIGHT: truncated, image intact
    wait_until(lambda: source.read(0.5) is not None and source.stats["truncated"] > 0, 10, "a truncated frame")
    frame = read_frame(source)
    assert_pattern(frame.image, 200, 100)

    ioc.command("extra -1")  # shorter: dropped
    wait_until(lambda: source.read(0.2) is None and source.stats["short_dropped"] >= 3, 10, "short frames dropped")
    assert source.dropped >= 3  # what the camera instance adds to its "dropped" statistic
    assert source.read(0.3) is None

    ioc.command("extra 0")
    assert_pattern(read_frame(source).image, 200, 100)


def test_not_initialised_and_back_online(start_ioc, connected):
    ioc = start_ioc(width=32, height=8)
    ioc.command("offline")
    source = EpicsCameraSource(ioc.camera_config())
    with pytest.raises(CameraOffline) as info:
        source.connect()
    assert str(info.value) == f"Camera with prefix {ioc.prefix} is not initialized - Status OFFLINE"
    assert source.last_error == str(info.value)
    assert not source.connected

    ioc.command("status BUSY")
    with pytest.raises(CameraOffline, match=r"is not initialized - Status BUSY$"):
        source.connect()

    ioc.command("online")
    source.connect()  # the same source object, once the camera is initialised
    assert source.connected and source.last_error is None
    source.close()
    source = connected(ioc.camera_config())
    assert source.connected
    assert_pattern(read_frame(source).image, 32, 8)

    ioc.command("offline")  # while streaming: frames stop, the status says why
    expected = f"Camera with prefix {ioc.prefix} is not initialized - Status OFFLINE"
    wait_until(lambda: source.status == expected, 10, "the status to show the camera went offline")


@pytest.mark.usefixtures("epics_client_env")
def test_nonexistent_prefix_is_offline_within_timeout():
    prefix = f"NOSUCH{time.monotonic_ns()}:CAM"
    source = EpicsCameraSource({"source": prefix, "connection_timeout": 1.0})
    started = time.monotonic()
    with pytest.raises(CameraOffline) as info:
        source.connect()
    elapsed = time.monotonic() - started
    assert str(info.value) == f"Camera with prefix {prefix} is offline"
    assert elapsed < 4.0  # bounded by connection_timeout (1 s), generous margin for a loaded machine
    assert not source.connected
    assert source.read(0.05) is None


def test_frames_resume_after_ioc_killed_and_restarted(start_ioc, connected):
    ioc = start_ioc(width=128, height=64, rate=20)
    source = connected(ioc.camera_config())
    read_frame(source)

    ioc.kill()
    wait_until(lambda: not source.connected, 10, "the source to notice the IOC is gone")
    assert "disconnected" in source.status and ioc.prefix in source.status
    while source.read(0.1) is not None:  # frames queued before the crash
        pass
    assert source.read(0.5) is None

    restarted_at = time.time()
    ioc.start()
    frame = read_frame(source, timeout=30)
    assert_pattern(frame.image, 128, 64)
    assert source.connected
    assert frame.timestamp >= restarted_at - 1.0  # published by the new IOC, not left over from the old one
    assert "online" in source.status
    assert source.health() == (True, 1)  # the camera instance's state and reconnect count come from here


def test_a_frame_delivered_twice_at_subscription_start_is_emitted_once():
    # Channel Access may hand the same record update to a new subscription twice (initial value + posted event), the
    # first time with the previous update's timestamp: seen with a real IOC (tests/epics, 1 in 40 IOC starts) as
    # frame 1's pixels at frame 0's timestamp, then at its own 52 ms later.
    source = EpicsCameraSource({"source": "NO:SUCH:CAM"})
    source._width, source._height = 3, 2
    source._watch_for_repeats()  # what connect() and a reconnection of the image PV do
    first = np.arange(6, dtype=np.uint16)
    source._on_picture(value=first, timestamp=100.0)
    source._on_picture(value=first.copy(), timestamp=100.05)  # the repeat: its own, later timestamp
    source._on_picture(value=first + 1, timestamp=100.1)  # other pixels: a real frame
    source._on_picture(value=first + 1, timestamp=100.15)  # past the first deliveries, an identical one is a frame
    frames = [source.read(0.1) for _ in range(4)]
    assert [int(f.image[0, 0]) for f in frames[:3]] == [0, 1, 1]
    assert [f.timestamp for f in frames[:3]] == [100.05, 100.1, 100.15]  # the first took the repeat's timestamp
    assert frames[3] is None
    assert source.stats["duplicates"] == 1 and source.stats["received"] == 3 and source.dropped == 0

    source._watch_for_repeats()  # a new subscription whose repeat comes after the first delivery was read
    source._on_picture(value=first + 2, timestamp=101.0)
    assert source.read(0.1).timestamp == 101.0
    source._on_picture(value=first + 2, timestamp=101.05)
    assert source.read(0.1) is None and source.stats["duplicates"] == 2


def test_the_image_delivered_before_a_reconnection_is_not_delivered_again():
    # After a lost connection the new subscription's initial value is the record's current value: the image already
    # delivered if the camera posted nothing meanwhile (a stopped acquisition). It is not a new frame.
    source = EpicsCameraSource({"source": "NO:SUCH:CAM"})
    source._width, source._height = 3, 2
    image_pv = f"{source.prefix}:{source.names.image}"
    source._pv_connected = {image_pv: True}
    source._watch_for_repeats()
    first = np.arange(6, dtype=np.uint16)
    for value, timestamp in [(first, 100.0), (first + 1, 100.1), (first + 2, 100.2), (first + 3, 100.3)]:
        source._on_picture(value=value, timestamp=timestamp)  # past the checks of the first subscription
    assert [source.read(0.1).timestamp for _ in range(4)] == [100.0, 100.1, 100.2, 100.3]
    source._on_connection(pvname=image_pv, conn=False)
    source._on_connection(pvname=image_pv, conn=True)
    source._on_picture(value=first + 3, timestamp=100.3)  # the new subscription's initial value: the last image
    source._on_picture(value=first + 4, timestamp=100.4)  # the camera's next frame
    frame = source.read(0.1)
    assert frame.timestamp == 100.4 and int(frame.image[0, 0]) == 4
    assert source.read(0.1) is None
    assert source.stats["duplicates"] == 1 and source.stats["received"] == 5


def test_a_connect_waiting_for_an_absent_camera_ends_on_interrupt(epics_client_env: None) -> None:
    """A stop request (or the end of its server, which the instance's stop watcher reports the same way) ends a
    connect that would wait its whole ``connection_timeout`` for a camera that is not on the network (before: an
    instance whose server had died kept connecting for as long as the config said)."""
    source = EpicsCameraSource({"source": "NO:SUCH:CAMERA:FOR:THIS:TEST", "connection_timeout": 3600})
    timer = threading.Timer(0.5, source.interrupt)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(CameraOffline, match="stopped while connecting"):
            source.connect()
    finally:
        timer.join()
        source.close()
    assert time.monotonic() - started < 10  # one slice after the interrupt, not 3600 s
