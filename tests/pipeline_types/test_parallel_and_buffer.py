"""processing_threads (output strictly in pulse-id order) and buffer_size (frames kept until a client connects),
through the real servers."""

from __future__ import annotations

from tests.helpers.procs import wait_until
from tests.helpers.streams import connect, receive, values
from tests.pipeline_types.helpers import PULL, TestCamera, pulse_ids, write_script

JITTER = """
    import time

    def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
        time.sleep(0.002 * ((pulse_id * 7) % 5))  # later frames often finish first
        return {"pid": pulse_id}
"""


def test_processing_threads_keep_pulse_id_order(client, servers):
    write_script(servers.scripts, "jitter.py", JITTER)
    with TestCamera(rate=150) as camera:
        _, stream = client.create_instance_from_config({"input_stream": camera.address, "function": "jitter",
                                                        "processing_threads": 3, "input_queue_size": 20,
                                                        "input_catch_up_after": 0})
        messages = receive(connect(stream), 60, skip=1)
    pids = pulse_ids(messages)
    assert pids == list(range(pids[0], pids[0] + 60))  # strictly in order, none lost
    assert all(values(m)["pid"] == m.data.pulse_id for m in messages)


def test_buffer_size_keeps_frames_produced_before_the_first_client(client, servers):
    with TestCamera(rate=100) as camera:
        # input_queue_size 20 (default 8 for a live pipeline), in order (no catching up): no frame may be lost to a
        # stall of a loaded machine
        instance_id, stream = client.create_instance_from_config(
            {"input_stream": camera.address, "function": "transparent", "mode": "PUSH", "queue_size": 1,
             "buffer_size": 30, "no_client_timeout": 0, "input_queue_size": 20,
             "input_catch_up_after": 0})
        wait_until(lambda: client.get_instance_info(instance_id)["statistics"]["frames_in"] >= 40, 10,
                   "frames while no client is connected")
        messages = receive(connect(stream, mode=PULL, queue_size=1), 30)
    pids = pulse_ids(messages)
    # the first 30 messages are the oldest frames, consecutive, from before the client connected
    assert pids == list(range(pids[0], pids[0] + 30))
    assert pids[-1] < camera.pulse_id - 10
