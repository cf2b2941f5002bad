"""The shared-memory input's check after use (pipeline/instance/shm_input.py): output views of a slot are copied
before they leave, a frame overwritten while in use never leaves and is counted, then frames are copied."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from cam_server.common.frame_ring import RingReader, RingWriter, ring_base
from cam_server.pipeline.config import parse_pipeline_config
from cam_server.pipeline.instance.outcomes import FrameOverwritten, ProcessingError
from cam_server.pipeline.instance.shm_input import FrameLease, SharedMemoryInput, camera_input
from cam_server.pipeline.instance_spec import InstanceSpec

pytestmark = pytest.mark.unit


def _spec(server_switch: bool = True, **config: object) -> InstanceSpec:
    return InstanceSpec("shm-test", parse_pipeline_config({"camera_name": "cam", **config}), "tcp://*:1",
                        "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "http://127.0.0.1:1", "/tmp", "/tmp",
                        shared_memory=server_switch)


@pytest.fixture
def ring() -> Iterator[tuple[RingWriter, RingReader]]:
    writer = RingWriter(ring_base(os.getpid(), f"input-{uuid.uuid4().hex[:8]}", os.getpid()), slots=2)
    writer.write(np.zeros((4, 4), np.uint16))
    yield writer, RingReader(writer.base, writer.generation)
    writer.close()


def test_output_views_of_the_slot_are_copied(ring) -> None:
    writer, reader = ring
    slot, seq = writer.write(np.full((4, 4), 7, np.uint16))
    lease = reader.lease(slot, seq)
    view = reader.image(lease, np.dtype(np.uint16), (4, 4))
    counter = SharedMemoryInput(_spec())
    compute = FrameLease(reader, lease, counter).guard(lambda: {"image": view, "row": view[0], "sum": 112})
    values = compute()
    assert not reader.contains(values["image"]) and not reader.contains(values["row"])
    np.testing.assert_array_equal(values["image"], 7)
    assert values["sum"] == 112 and counter.dropped_overwritten == 0


@pytest.mark.parametrize("fails", [False, True], ids=["results", "error"])
def test_frame_overwritten_in_use_never_leaves(ring, fails: bool) -> None:
    writer, reader = ring
    slot, seq = writer.write(np.full((4, 4), 1, np.uint16))
    lease = reader.lease(slot, seq)
    counter = SharedMemoryInput(_spec())

    def compute() -> dict:
        writer.write(np.full((4, 4), 2, np.uint16))  # the camera goes round the ring meanwhile
        writer.write(np.full((4, 4), 3, np.uint16))
        if fails:
            raise ProcessingError("garbage in, garbage out")
        return {"total": 16}

    with pytest.raises(FrameOverwritten):
        FrameLease(reader, lease, counter).guard(compute)()
    assert counter.dropped_overwritten == 1


def test_a_real_error_of_a_frame_still_in_place_is_an_error(ring) -> None:
    writer, reader = ring
    slot, seq = writer.write(np.ones((4, 4), np.uint16))

    def compute() -> dict:
        raise ProcessingError("a real error")

    counter = SharedMemoryInput(_spec())
    with pytest.raises(ProcessingError):
        FrameLease(reader, reader.lease(slot, seq), counter).guard(compute)()
    assert counter.dropped_overwritten == 0


def test_camera_input_takes_shared_memory_only_for_a_camera_with_the_switch_on() -> None:
    assert isinstance(camera_input(_spec()), SharedMemoryInput)
    assert not isinstance(camera_input(_spec(server_switch=False)), SharedMemoryInput)
    assert not isinstance(camera_input(_spec(input_stream="tcp://127.0.0.1:3")), SharedMemoryInput)
    for off in (False, "off"):
        assert not isinstance(camera_input(_spec(**{"shared_memory": off})), SharedMemoryInput)
    assert isinstance(camera_input(_spec(**{"shared_memory": True})), SharedMemoryInput)


def test_server_switches() -> None:
    from cam_server.cli import camera_server, pipeline_server

    assert camera_server.build_parser().parse_args([]).shared_memory == "on"
    camera = camera_server.build_parser().parse_args(["--shared_memory", "off", "--shared_memory_slots", "3"])
    assert (camera.shared_memory, camera.shared_memory_slots) == ("off", 3)
    assert pipeline_server.build_parser().parse_args(["--shared_memory", "off"]).shared_memory == "off"
    with pytest.raises(SystemExit):
        camera_server.build_parser().parse_args(["--shared_memory_slots", "1"])  # a ring needs 2 slots
