"""fanout → N worker pipelines → fanin: every frame delivered once, in pulse-id order, by several workers."""

from __future__ import annotations

from tests.helpers.procs import wait_until
from tests.helpers.streams import connect, receive, values
from tests.pipeline_types.helpers import TestCamera, pulse_ids, write_script

WORKER = """
    import os

    def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
        return {"worker": os.getpid(), "image_sum": int(image.sum()), "counter": bsdata["counter"]}
"""
N_WORKERS = 3
N_FRAMES = 150


def test_three_workers_deliver_every_frame_once_in_order(client, servers):
    write_script(servers.scripts, "worker.py", WORKER)
    with TestCamera(rate=100) as camera:
        client.create_instance_from_config({"pipeline_type": "fanin", "pid_buffer": 20}, instance_id="fanin_t")
        fanin_stream = client.get_instance_stream("fanin_t")
        rx = connect(fanin_stream)
        client.create_instance_from_config({"pipeline_type": "fanout", "input_stream": camera.address},
                                           instance_id="fanout_t")
        assert client.get_instance_config("fanout_t")["mode"] == "PUSH"
        workers = [client.create_instance_from_config(
            {"pipeline_type": "processing", "input_pipeline": "fanout_t",
             "output_pipeline": "fanin_t", "function": "worker"}, instance_id=f"worker_{i}")[0]
            for i in range(N_WORKERS)]
        for worker in workers:
            # input_mode PULL is chosen by the server: the input pipeline pushes
            assert client.get_instance_config(worker)["input_mode"] == "PULL"
            assert client.get_instance_config(worker)["output_stream"] == \
                client.get_instance_config("fanin_t")["input_stream"]
        # wait until all workers take part, then check a window of consecutive frames
        seen: set[int] = set()
        wait_until(lambda: seen.update(values(m)["worker"] for m in receive(rx, 10)) or len(seen) == N_WORKERS,
                   20, "all workers to deliver")
        messages = receive(rx, N_FRAMES)
        stats = {w: client.get_instance_info(w)["statistics"] for w in workers}
    pids = pulse_ids(messages)
    assert pids == list(range(pids[0], pids[0] + N_FRAMES))  # every frame exactly once, in pulse-id order
    expected_sum = int(camera.image.sum())
    assert all(values(m)["image_sum"] == expected_sum and values(m)["counter"] == m.data.pulse_id
               for m in messages)
    assert len({values(m)["worker"] for m in messages}) == N_WORKERS  # the work was shared by all three
    assert all(s["frames_out"] > 0 for s in stats.values())
    assert client.get_instance_info("fanin_t")["statistics"]["errors"] == 0


def test_fanin_reorders_out_of_order_workers(client, servers):
    """Two workers with very different speeds: without reordering the output would interleave out of order."""
    with TestCamera(rate=50) as camera:
        client.create_instance_from_config({"pipeline_type": "fanin", "pid_buffer": 10}, instance_id="fanin_r")
        rx = connect(client.get_instance_stream("fanin_r"))
        # each worker reads the camera itself (SUB) and keeps only its half of the pulse ids
        for parity in (0, 1):
            write_script(servers.scripts, f"half_{parity}.py", f"""
                import time

                def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
                    if pulse_id % 2 != {parity}:
                        return None
                    if {parity} == 0:
                        time.sleep(0.03)
                    return {{"pid": pulse_id}}
            """)
            client.create_instance_from_config({"input_stream": camera.address, "output_pipeline": "fanin_r",
                                                "function": f"half_{parity}"})
        receive(rx, 10)  # both workers running
        messages = receive(rx, 40)
    pids = pulse_ids(messages)
    assert pids == sorted(pids) and len(set(pids)) == len(pids)
    assert all(values(m)["pid"] == m.data.pulse_id for m in messages)
