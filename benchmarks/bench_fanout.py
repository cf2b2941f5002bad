"""Fanout/fanin throughput: a costly processing function on one pipeline vs. fanout to N workers + fanin.

Starts a real camera server and pipeline server, a bsread test camera (small images, --rate Hz) in this process,
and a user function that burns --burn_ms of CPU per frame in numpy. For each setup it measures the frames per
second delivered to a SUB client of the last pipeline over --seconds, and checks the fanin output order.

    .venv/bin/python benchmarks/bench_fanout.py [--rate 150] [--burn_ms 25] [--seconds 6] [--workers 2 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers (servers, test camera)

from cam_server.bsread import SUB, Source  # noqa: E402
from cam_server.client.pipeline_client import PipelineClient  # noqa: E402
from tests.helpers.servers import camera_server, pipeline_server  # noqa: E402
from tests.pipeline_types.helpers import TestCamera  # noqa: E402

BURN = """
import time

import numpy as np

_a = np.linspace(0.0, 1.0, 4096)
_b = np.empty_like(_a)


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    end = time.thread_time() + parameters.get("burn_ms", 25) / 1000.0
    while time.thread_time() < end:  # CPU time of this thread: the same cost whatever else runs
        np.sqrt(_a, out=_b)
    return {"pid": pulse_id, "total": int(image.sum())}
"""


def measure(stream: str, seconds: float) -> tuple[float, int, bool]:
    """(frames/s, frames, in strict pulse-id order) at a SUB client after 1 s of warm-up."""
    with Source(address=stream, mode=SUB, receive_timeout=200, queue_size=1000) as rx:
        deadline = time.monotonic() + 30
        while rx.receive() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing received from {stream}")
        warm = time.monotonic() + 1.0
        while time.monotonic() < warm:
            rx.receive()
        pids: list[int] = []
        start = time.monotonic()
        while (now := time.monotonic()) - start < seconds:
            message = rx.receive()
            if message is not None:
                pids.append(message.data.pulse_id)
        elapsed = now - start
    ordered = all(b > a for a, b in zip(pids, pids[1:], strict=False))
    return len(pids) / elapsed, len(pids), ordered


def run_single(client: PipelineClient, camera: str, burn_ms: float, seconds: float) -> tuple[float, int, bool]:
    _, stream = client.create_instance_from_config({"input_stream": camera, "function": "burn", "burn_ms": burn_ms})
    try:
        return measure(stream, seconds)
    finally:
        client.stop_all_instances()


def run_fanout(client: PipelineClient, camera: str, burn_ms: float, seconds: float, workers: int,
               ) -> tuple[float, int, bool]:
    client.create_instance_from_config({"pipeline_type": "fanin", "pid_buffer": 4 * workers}, instance_id="b_fanin")
    stream = client.get_instance_stream("b_fanin")
    client.create_instance_from_config({"pipeline_type": "fanout", "input_stream": camera}, instance_id="b_fanout")
    for i in range(workers):
        client.create_instance_from_config({"input_pipeline": "b_fanout", "input_mode": "PULL",
                                            "output_pipeline": "b_fanin", "function": "burn", "burn_ms": burn_ms},
                                           instance_id=f"b_worker{i}")
    try:
        return measure(stream, seconds)
    finally:
        client.stop_all_instances()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=150.0, help="camera frame rate (Hz)")
    parser.add_argument("--burn_ms", type=float, default=25.0, help="CPU ms per frame of the function")
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement time per setup")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, TestCamera(rate=args.rate) as camera:
        base = Path(tmp)
        with camera_server(base) as cam, pipeline_server(base, cam.url) as pipe:
            (base / "user_scripts" / "burn.py").write_text(BURN)
            client = PipelineClient(pipe.url)
            rows = [("1 pipeline", *run_single(client, camera.address, args.burn_ms, args.seconds))]
            for n in args.workers:
                rows.append((f"fanout -> {n} workers -> fanin",
                             *run_fanout(client, camera.address, args.burn_ms, args.seconds, n)))
    single = rows[0][1]
    print(f"camera {args.rate:.0f} Hz, {args.burn_ms:.0f} ms CPU per frame, {os.cpu_count()} cores, "
          f"{args.seconds:.0f} s per setup")
    print("| setup | delivered frames/s | frames | in order | vs 1 pipeline |\n|---|---|---|---|---|")
    for name, rate, frames, ordered in rows:
        print(f"| {name} | {rate:.1f} | {frames} | {'yes' if ordered else 'NO'} | {rate / single:.2f}x |")


if __name__ == "__main__":
    main()
