"""Throughput of cam_server.bsread vs raw pyzmq moving the same bytes (run on demand, not part of pytest).

    .venv/bin/python benchmarks/bench_bsread.py [--repeats 5] [--quick]

Each case runs a sender and a receiver in separate processes (PUSH → PULL, blocking, so nothing is dropped).
The sender streams warm-up frames and then N frames of one uint16 image (camera-like
content: a Gaussian spot on a noisy background, so bitshuffle_lz4 compresses realistically); the receiver
timestamps each group and touches the decoded image. bsread cases send the camera's declared channel layout
(width, height, timestamp, image); raw cases send ``[small header, image]`` with ``send_multipart(copy=False)``.
Each case runs ``repeats`` times (fresh processes, cases interleaved round by round so load from other processes
hits raw and bsread alike). Reported: frames/s and MB/s (uncompressed image bytes) as min / median over the
runs, and the ratio of the median to raw pyzmq's median for the same size and transport.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARMUP = 20
SIZES = [(480, 640), (1024, 1280), (2160, 2560)]


@dataclass(frozen=True)
class Case:
    kind: str  # "raw", "bsread", "bsread+bslz4"
    shape: tuple[int, int]
    transport: str
    frames: int

    @property
    def label(self) -> str:
        return f"{self.shape[1]}x{self.shape[0]}"


def _image(shape: tuple[int, int]):
    import numpy as np

    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    spot = 3000 * np.exp(-(((x - w / 2) / (w / 8)) ** 2 + ((y - h / 2) / (h / 8)) ** 2))
    noise = np.random.default_rng(0).poisson(20, size=shape)
    return (spot + noise).astype(np.uint16)


def _endpoint(case: Case, tmp: str, port: int) -> str:
    return f"tcp://127.0.0.1:{port}" if case.transport == "tcp" else f"ipc://{tmp}/bench-{case.kind}.ipc"


def _sender(case: Case, endpoint: str, repeats: int, done) -> None:
    import zmq

    image = _image(case.shape)
    total = WARMUP + repeats * case.frames
    if case.kind == "raw":
        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 10)
        sock.bind(endpoint)
        header = b'{"pulse_id": 0}'
        for _ in range(total):
            sock.send_multipart([header, image], copy=False)
        done.wait(600)
        sock.close(linger=0)
        return
    from cam_server.bsread import Sender

    compression = "bitshuffle_lz4" if case.kind.endswith("bslz4") else None
    host, _, port = endpoint.rpartition(":")
    sender = Sender(address=endpoint if case.transport == "ipc" else host, port=int(port) if port.isdigit() else None,
                    data_compression=compression)
    sender.add_channel("width", metadata={"type": "int64", "compression": None})
    sender.add_channel("height", metadata={"type": "int64", "compression": None})
    sender.add_channel("timestamp", metadata={"type": "float64", "compression": None})
    sender.add_channel("image", metadata={"type": "uint16", "shape": [case.shape[1], case.shape[0]]})
    with sender:
        data = {"width": case.shape[1], "height": case.shape[0], "timestamp": 0.0, "image": image}
        for _ in range(total):
            data["timestamp"] = time.time()
            sender.send(data, check_data=False)
        done.wait(600)  # queued frames must reach the receiver before the socket closes


def _receiver(case: Case, endpoint: str, repeats: int, results, done) -> None:
    import numpy as np
    import zmq

    group_times = []
    if case.kind == "raw":
        sock = zmq.Context.instance().socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, 100)
        sock.connect(endpoint)

        def receive():
            frames = sock.recv_multipart(copy=False)
            return np.frombuffer(frames[1].buffer, np.uint16).reshape(case.shape)
    else:
        from cam_server.bsread import Source

        src = Source(address=endpoint, receive_timeout=60000).connect()

        def receive():
            return src.receive().data.data["image"].value

    for _ in range(WARMUP):
        receive()
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(case.frames):
            image = receive()
        group_times.append(time.perf_counter() - start)
        assert image.shape == case.shape and int(image[0, 0]) >= 0
    results.put(group_times)
    done.set()


def run_case(case: Case, repeats: int, port: int) -> list[float]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        endpoint = _endpoint(case, tmp, port)
        results, done = ctx.Queue(), ctx.Event()
        sender = ctx.Process(target=_sender, args=(case, endpoint, repeats, done))
        sender.start()
        time.sleep(0.2)  # let the sender bind before the receiver connects
        receiver = ctx.Process(target=_receiver, args=(case, endpoint, repeats, results, done))
        receiver.start()
        times = results.get(timeout=600)
        receiver.join(30)
        sender.join(30)
        for proc in (sender, receiver):
            if proc.is_alive():
                proc.terminate()
        return [case.frames / t for t in times]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_cases(quick: bool) -> list[Case]:
    scale = 0.3 if quick else 1.0

    def n(shape, budget):
        return max(20, min(3000, int(budget * scale / (shape[0] * shape[1] * 2))))

    cases = []
    for transport in ("tcp", "ipc"):
        for shape in SIZES:
            cases.append(Case("raw", shape, transport, n(shape, 1.2e9)))
            cases.append(Case("bsread", shape, transport, n(shape, 1.2e9)))
            cases.append(Case("bsread+bslz4", shape, transport, n(shape, 6.0e8)))
        cases.append(Case("raw", (2048, 2048), transport, n((2048, 2048), 1.2e9)))
        cases.append(Case("bsread+bslz4", (2048, 2048), transport, n((2048, 2048), 6.0e8)))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller groups (for a fast sanity run)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cases = build_cases(args.quick)
    fps: dict[Case, list[float]] = {case: [] for case in cases}
    # Rounds interleave the cases (raw next to bsread), so load bursts from other processes hit both alike.
    for round_no in range(args.repeats):
        for case in cases:
            fps[case] += run_case(case, 1, _free_port())
        print(f"  round {round_no + 1}/{args.repeats} done", file=sys.stderr)
    raw_median = {(c.shape, c.transport): statistics.median(fps[c]) for c in cases if c.kind == "raw"}
    header = f"{'image':>10} {'transport':>9} {'kind':>13} {'N':>5} {'fps min':>9} {'fps med':>9} " \
             f"{'MB/s min':>9} {'MB/s med':>9} {'vs raw':>7}"
    print(f"{args.repeats} runs per case; N frames per run; MB/s of uncompressed image bytes")
    print(header)
    print("-" * len(header))
    for case in cases:
        mb = case.shape[0] * case.shape[1] * 2 / 1e6
        fmin, fmed = min(fps[case]), statistics.median(fps[case])
        ratio = fmed / raw_median[(case.shape, case.transport)]
        print(f"{case.label:>10} {case.transport:>9} {case.kind:>13} {case.frames:>5} {fmin:>9.0f} {fmed:>9.0f} "
              f"{fmin * mb:>9.0f} {fmed * mb:>9.0f} {ratio:>7.2f}")


if __name__ == "__main__":
    main()
