"""The camera's and a pipeline's send queues are bounded in bytes, and a burst's memory goes back to the system
(issue 10, soak; the pipeline's since issue 13).

A client that stops reading makes ZeroMQ keep every frame queued for it (frames are sent without a copy): with the
default ``queue_size`` of 100 messages a 1280x1024 uint16 camera held 262 MB per stalled client, and glibc kept the
freed heap afterwards. The test stalls a real client on a real camera instance and reads the instance's RSS; what
ZeroMQ drops silently shows as ``input_gaps`` where it arrives (a pipeline's input).
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
import requests
import zmq

from cam_server.bsread.queues import (
    DEFAULT_SEND_QUEUE,
    MIN_SEND_QUEUE,
    SEND_QUEUE_BYTES,
    send_queue_size,
)
from cam_server.camera.config import parse_camera_config
from cam_server.camera.manager import CameraInstanceManager
from cam_server.camera.store import CameraConfigStore
from cam_server.common.process import MemoryTrimmer
from cam_server.pipeline.config import parse_pipeline_config
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until

SIDE = 1024
FRAME_BYTES = SIDE * SIDE * 2  # uint16
BIG_CAMERA = {"source": "simulation", "source_type": "simulation", "size_x": SIDE, "size_y": SIDE, "frame_rate": 50,
              "no_client_timeout": 0}
STALL_S = 4.0  # the stalled client's time: 200 frames at 50 Hz, 400 MB were they all kept
TRIM_BOUND_S = 15.0  # after the client left, the RSS is back near its level before within this (trims: every 10 s)


@pytest.mark.unit
def test_send_queue_size_bounds_the_default_in_bytes_and_keeps_another_count() -> None:
    assert parse_camera_config({"source": "s", "source_type": "simulation"}, "c").queue_size == 10  # (reference: 100)
    assert parse_pipeline_config({"camera_name": "c"}).queue_size == DEFAULT_SEND_QUEUE == 10
    assert send_queue_size(10, 2560 * 2160 * 2) == SEND_QUEUE_BYTES // (2560 * 2160 * 2) == 3
    assert send_queue_size(10, 1280 * 1024 * 2) == 10  # 12 would fit the budget: the default count
    assert send_queue_size(10, 64 * 48 * 2) == 10  # small frames: the default count
    assert send_queue_size(10, 0) == 10  # size unknown yet
    assert send_queue_size(10, 10**9) == MIN_SEND_QUEUE
    assert send_queue_size(100, 1280 * 1024 * 2) == 100  # a count other than the default is the user's choice
    assert send_queue_size(3, 10**9) == 3


@pytest.mark.unit
def test_the_trimmer_trims_at_most_every_interval_unless_forced() -> None:
    """Each trim also gives back the working set (the frames in flight), which the next frame faults in again: at
    most one trim per interval (10 s), so that this is one frame in a thousand at 100 Hz, not one in a hundred."""
    trimmer = MemoryTrimmer(interval=10.0, slack=0)
    garbage = [bytes(1000) for _ in range(10_000)]  # 10 MB of small blocks, freed into the heap
    del garbage
    start = time.monotonic()
    assert trimmer.free_bytes() > 0
    assert not trimmer.check(start)  # not due before its first interval
    assert trimmer.check(start + 10.0)
    assert not trimmer.check(start + 15.0)  # 5 s later: not again
    assert trimmer.check(start + 15.0, force=True)  # forced (a memory limit to judge): at once
    assert not trimmer.check(start + 20.0) and trimmer.check(start + 25.0)  # the interval counts from the last
    assert trimmer.trims == 3
    assert not MemoryTrimmer(interval=10.0, slack=2**40).check(start + 10.0)  # less free than the slack


def test_a_stalled_client_holds_at_most_the_send_queue_budget(tmp_path: Path, record_property) -> None:
    store = CameraConfigStore(tmp_path / "cameras")
    store.save("big", BIG_CAMERA)
    manager = CameraInstanceManager(store)
    context = zmq.Context()
    try:
        address = manager.get_instance_stream("big")
        process = psutil.Process(manager.info()["active_instances"]["big"]["pid"])
        wait_until(lambda: manager.info()["active_instances"]["big"]["statistics"]["frames_out"] >= 50, 20,
                   "the camera to stream")
        before = process.memory_info().rss
        stalled = context.socket(zmq.SUB)
        stalled.setsockopt(zmq.RCVHWM, 1)
        stalled.setsockopt(zmq.RCVBUF, 65536)
        stalled.subscribe(b"")
        stalled.connect(address)
        peak, backlog, end = before, 0, time.monotonic() + STALL_S
        while time.monotonic() < end:
            peak = max(peak, process.memory_info().rss)
            backlog = max(backlog, manager.info()["active_instances"]["big"]["statistics"]["output_backlog"])
            time.sleep(0.05)
        stalled.close(linger=0)
        assert backlog >= 65536, backlog  # its lag shows in the camera's info (the kernel's bytes for it)
        growth = peak - before
        record_property("stalled_client_growth_mb", round(growth / 2**20, 1))
        print(f"camera RSS {before / 2**20:.1f} MB, +{growth / 2**20:.1f} MB with a stalled client "
              f"(budget {SEND_QUEUE_BYTES / 2**20:.0f} MB; unbounded: 100 frames = {100 * FRAME_BYTES / 2**20:.0f} MB)")
        assert SEND_QUEUE_BYTES / 2 <= growth <= SEND_QUEUE_BYTES + 4 * FRAME_BYTES  # filled, and held at the bound
        left = time.monotonic()
        wait_until(lambda: process.memory_info().rss <= before + 3 * FRAME_BYTES, TRIM_BOUND_S,
                   "the freed send queue to go back to the system")
        record_property("trimmed_after_s", round(time.monotonic() - left, 3))
        print(f"back to {process.memory_info().rss / 2**20:.1f} MB {time.monotonic() - left:.2f} s after it left")
    finally:
        context.term()
        manager.close()


def _images_held_for_a_stalled_client(config: dict, image_bytes: int, messages: int = 12) -> int:
    """Send ``messages`` fresh images of ``image_bytes`` through a pipeline output opened knowing that size (as the
    pipeline server tells it) to a client that never reads; the images ZeroMQ still holds then (sent without a
    copy: alive until every client took them)."""
    import gc
    import weakref

    import numpy as np

    from cam_server.pipeline.instance.stream_output import OutputStream

    port = free_port()
    output = OutputStream(f"tcp://127.0.0.1:{port}", parse_pipeline_config({"camera_name": "c", **config}),
                          image_bytes=image_bytes).open()
    context = zmq.Context()
    stalled = context.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 65536)
    stalled.subscribe(b"")
    held: list[weakref.ref] = []
    try:
        stalled.connect(f"tcp://127.0.0.1:{port}")
        wait_until(lambda: output.client_count == 1, 10, "the client to connect")
        time.sleep(0.5)  # its subscription arrives after the connection (a message sent before is not for it)
        for pulse_id in range(1, messages + 1):
            image = np.zeros(image_bytes, np.uint8)
            held.append(weakref.ref(image))
            output.send({"image": image}, pulse_id, time.time())
            del image
        time.sleep(0.5)  # ZeroMQ's I/O thread writes what the kernel takes and drops the rest (PUB)
        gc.collect()
        assert output.client_count == 1
        return sum(ref() is not None for ref in held)
    finally:
        output.close()
        context.destroy(linger=0)


@pytest.mark.unit
def test_a_pipelines_default_send_queue_is_bounded_by_the_camera_image_size() -> None:
    image_bytes = 8 * 2**20  # the budget holds 4; the default 10 would pin 80 MB
    bounded = _images_held_for_a_stalled_client({}, image_bytes)
    assert 3 <= bounded <= SEND_QUEUE_BYTES // image_bytes + 1, bounded  # + the one the I/O thread is writing
    chosen = _images_held_for_a_stalled_client({"queue_size": 20}, image_bytes)  # kept as configured
    assert chosen >= 10, chosen


@pytest.mark.unit
def test_input_gaps_count_the_pulse_ids_missing_from_the_input() -> None:
    """What a sender dropped shows where it arrives: a pipeline's input counts the pulse ids missing between two
    messages (``input_gaps``); a jump back (a restarted source) starts afresh."""
    import multiprocessing

    from cam_server.bsread import PUSH, Sender
    from cam_server.common.process import SharedStats
    from cam_server.pipeline.instance.input import StreamInput

    port = free_port()
    config = parse_pipeline_config({"input_stream": f"tcp://127.0.0.1:{port}", "input_mode": "PULL"})
    stats = SharedStats(multiprocessing.get_context("spawn"))
    source = StreamInput(config.input_stream, config, receive_timeout_ms=200)
    source.attach(stats, lambda message: None)
    pulse_ids = [1, 2, 5, 6, 10, 3, 4]  # 2 + 3 missing, then a restart from below
    try:
        with Sender(port=port, address="tcp://127.0.0.1", mode=PUSH, send_timeout=5000) as sender:
            source.connect()
            for pulse_id in pulse_ids:
                assert sender.send({"value": float(pulse_id)}, pulse_id=pulse_id)
            received = []
            deadline = time.monotonic() + 10
            while len(received) < len(pulse_ids) and time.monotonic() < deadline:
                message = source.receive()
                if message is not None:
                    received.append(message.data.pulse_id)
    finally:
        source.close()
    assert received == pulse_ids
    assert stats.get("input_gaps") == 5


def test_the_servers_instances_report_their_send_queue(servers) -> None:
    """Through the servers (configs stored with every default filled in): a 2048x2048 uint16 camera queues 4 frames
    of 8 MiB per client at the default queue_size, and so does a pipeline of it at its default (the camera server
    tells the pipeline server the image size as it reserves the stream), also one that leaves the image out (which
    channels go is not known when the stream opens); a pipeline's explicit queue_size is kept."""
    from cam_server.client import CamClient, PipelineClient

    cameras, pipelines = CamClient(servers.camera.url), PipelineClient(servers.url)
    cameras.set_camera_config("big_queue", {"source": "simulation", "source_type": "simulation", "size_x": 2048,
                                            "size_y": 2048, "frame_rate": 1, "image_type": "static_beam",
                                            "no_client_timeout": 0})
    try:
        config = {"camera_name": "big_queue", "no_client_timeout": 0}
        default_id, _ = pipelines.create_instance_from_config(config)
        chosen_id, _ = pipelines.create_instance_from_config({**config, "queue_size": 20})
        no_image_id, _ = pipelines.create_instance_from_config({**config, "exclude": ["image"]})
        bounded = SEND_QUEUE_BYTES // (2048 * 2048 * 2)
        expected = (bounded, bounded, 20, bounded)
        answer = cameras.reserve_camera_stream("big_queue")
        assert answer["frame_bytes"] == 2048 * 2048 * 2 and answer["reservation"]
        shared = requests.get(f"{servers.camera.url}/api/v1/cam/big_queue/shared_memory", params={"reserve": "false"},
                              timeout=10).json()
        assert shared["frame_bytes"] == 2048 * 2048 * 2
        assert cameras.release_stream("big_queue", answer["reservation"])

        def send_queues() -> tuple:
            camera = cameras.get_server_info()["active_instances"].get("big_queue", {}).get("statistics", {})
            return (camera.get("send_queue"), *(pipelines.get_instance_info(i)["statistics"].get("send_queue")
                                                for i in (default_id, chosen_id, no_image_id)))

        seen: list[tuple] = []
        try:
            wait_until(lambda: seen.append(send_queues()) or seen[-1] == expected, 30, "send queues", interval=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"send queues (camera, pipeline, pipeline queue_size 20, pipeline without image): "
                                 f"{seen[-1] if seen else None}, expected {expected} ({exc})") from exc
    finally:
        pipelines.stop_all_instances()
        cameras.delete_camera_config("big_queue")  # stops its instance too
