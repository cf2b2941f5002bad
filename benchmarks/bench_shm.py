"""Shared memory vs the bsread stream between a camera and a pipeline on one host (issue 13 item 1; run on demand).

    .venv/bin/python benchmarks/bench_shm.py [--duration 10] [--repeats 3] [--sizes 2560x2160]
        [--rates 100,max] [--cases shm,shm+stream,bsread]

Real processes: an external bsread sender (PUB, the six camera channels, uint16 frames cycled from a few
pre-generated arrays) at the given rate or as fast as it can ("max") → a camera server (a bsread camera relaying it)
→ two pipeline servers on that camera server, one with ``--shared_memory on`` and one with ``off`` → a SUB client
(this process) on the pipeline's output. Cases, interleaved in every repeat:

- ``shm``: the pipeline reads the frames in place from the camera's ring; nobody reads the camera's bsread stream,
  so the camera does not encode or send it;
- ``shm+stream``: the same, plus one more client (a separate process) draining the camera's bsread stream: what
  encoding and sending the stream costs the camera beside the ring;
- ``bsread``: the pipeline reads the camera's bsread stream (``--shared_memory off``), as before issue 13.

Per case: delivered/s (messages the client received), missing (gaps in the delivered pulse ids: frames lost
anywhere), p50/p99 latency (client receive time − the sender's timestamp, carried through), CPU of the camera and
the pipeline instance (percent of one core, from their CPU times over the window, and CPU milliseconds per frame
each of them took in: comparable also when a loaded machine starves them of frames), the pipeline's own counters.
Each cell of the table is min / median over the repeats; the ratio column compares medians with ``bsread`` of the
same run. ``raw pyzmq`` moves the same bytes once through a PUB/SUB tcp socket (one process to another, one
timestamp frame + the image bytes) at the same rate: the floor of one socket hop.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_pipeline import _frames, receive_for  # noqa: E402 - the same frames and measure of latency

WARMUP_S = 2.0
PYTHON = sys.executable


def sender_main(address: str, width: int, height: int, rate: float | None, sent: Any, ready: Any,
                stop: Any) -> None:
    """The external camera: bsread PUB of the camera channels; ``rate`` None = as fast as possible."""
    import numpy as np

    from cam_server.bsread import PUB, Sender

    frames = _frames(width, height)
    sender = Sender(address=address, port=None, mode=PUB, queue_size=10, block=False)
    for name, meta in (("width", {"type": "int64"}), ("height", {"type": "int64"}), ("timestamp", {"type": "float64"}),
                       ("image", {"type": "uint16", "shape": [width, height]}),
                       ("x_axis", {"type": "float32", "shape": [width]}),
                       ("y_axis", {"type": "float32", "shape": [height]})):
        sender.add_channel(name, metadata=meta)
    sender.open()
    x_axis, y_axis = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    ready.set()
    period = 1.0 / rate if rate else 0.0
    next_time = time.monotonic()
    pulse_id = 0
    while not stop.is_set():
        now = time.time()
        sender.send({"width": width, "height": height, "timestamp": now, "image": frames[pulse_id % len(frames)],
                     "x_axis": x_axis, "y_axis": y_axis}, timestamp=now, pulse_id=pulse_id, check_data=False)
        pulse_id += 1
        sent.value = pulse_id
        if period:
            next_time = pace(next_time, period)
    sender.close()


def pace(next_time: float, period: float) -> float:
    """Sleep until the next send time (``period`` after ``next_time``); a sender behind schedule starts anew."""
    next_time += period
    delay = next_time - time.monotonic()
    if delay > 0:
        time.sleep(delay)
        return next_time
    return time.monotonic()


def drain_main(address: str, stop: Any) -> None:
    """A client of the camera's bsread stream that takes everything and looks at nothing."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVTIMEO, 200)
    sock.connect(address)
    while not stop.is_set():
        try:
            sock.recv_multipart(copy=False)
        except zmq.Again:
            pass
    sock.close(0)


def raw_sender_main(address: str, nbytes: int, rate: float | None, ready: Any, stop: Any) -> None:
    import struct

    import zmq

    payload = os.urandom(1024) * (nbytes // 1024) + os.urandom(nbytes % 1024)
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 10)
    sock.bind(address)
    ready.set()
    period = 1.0 / rate if rate else 0.0
    next_time = time.monotonic()
    pulse_id = 0
    while not stop.is_set():
        try:
            sock.send_multipart([struct.pack("<qd", pulse_id, time.time()), payload], copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        pulse_id += 1
        if period:
            next_time = pace(next_time, period)
    sock.close(linger=1000)
    zmq.Context.instance().term()  # the image is sent without a copy: let the I/O thread finish with it


# --- servers ------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    from cam_server.common.process import reserve_port

    return reserve_port()


def _start_server(module: str, args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    import requests

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        proc = subprocess.Popen([PYTHON, "-m", module, "-p", str(port), "-i", "127.0.0.1", "-n", "127.0.0.1",
                                 "--log_level", "WARNING", *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + ("/api/v1/cam" if "camera" in module else "/api/v1/pipeline"), timeout=1).ok:
                return proc, url
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"{module} did not start: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


# --- one case -----------------------------------------------------------------------------------------------------
def run_case(case: str, pipelines: dict[str, str], camera_url: str, duration: float, ctx: Any) -> dict[str, Any]:
    import numpy as np

    from cam_server.bsread import SUB, Source
    from cam_server.client.cam_client import CamClient
    from cam_server.client.pipeline_client import PipelineClient

    client = PipelineClient(pipelines["bsread" if case == "bsread" else "shm"])
    instance_id, stream = client.create_instance_from_config({"camera_name": "bench", "no_client_timeout": 0})
    drain_stop = ctx.Event()
    drain = None
    if case == "shm+stream":
        drain = ctx.Process(target=drain_main, args=(CamClient(camera_url).get_instance_stream("bench"), drain_stop),
                            daemon=True)
        drain.start()
    source = Source(address=stream, mode=SUB, receive_timeout=1000, queue_size=100).connect()
    try:
        deadline = time.monotonic() + 60
        while source.receive() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{case}: no message from the pipeline")
        warm = time.monotonic() + WARMUP_S
        while time.monotonic() < warm:
            source.receive()
        pipeline_pid = client.get_instance_info(instance_id)["pid"]
        cameras = CamClient(camera_url)
        camera_pid = cameras.get_server_info()["active_instances"]["bench"]["pid"]
        cpu0 = (_cpu_seconds(camera_pid), _cpu_seconds(pipeline_pid))
        stats0 = client.get_instance_info(instance_id)["statistics"]
        camera0 = cameras.get_server_info()["active_instances"]["bench"]["statistics"]
        latencies, pids = [], []
        start = time.monotonic()
        end = start + duration
        receive_for(source, end, latencies, pids)
        elapsed = time.monotonic() - start
        cpu1 = (_cpu_seconds(camera_pid), _cpu_seconds(pipeline_pid))
        stats = client.get_instance_info(instance_id)["statistics"]
        camera1 = cameras.get_server_info()["active_instances"]["bench"]["statistics"]
    finally:
        source.disconnect()
        client.stop_instance(instance_id)
        if drain is not None:
            drain_stop.set()
            drain.join(5)
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    expected = (pids[-1] - pids[0] + 1) if pids else 0
    return {"delivered/s": len(pids) / elapsed, "missing %": 100 * (expected - len(pids)) / max(expected, 1),
            "p50 ms": float(np.percentile(lat, 50)), "p99 ms": float(np.percentile(lat, 99)),
            "camera cpu %": 100 * (cpu1[0] - cpu0[0]) / elapsed, "pipeline cpu %": 100 * (cpu1[1] - cpu0[1]) / elapsed,
            # CPU per frame: comparable also when a loaded machine starves the processes of frames
            "camera ms/frame": 1000 * (cpu1[0] - cpu0[0]) / max(1, camera1["frames_in"] - camera0["frames_in"]),
            "pipeline ms/frame": 1000 * (cpu1[1] - cpu0[1]) / max(1, stats["frames_in"] - stats0["frames_in"]),
            "dropped": stats["dropped"] - stats0["dropped"],
            "overwritten": stats.get("dropped_overwritten", 0) - stats0.get("dropped_overwritten", 0),
            "path": stats.get("input_path")}


def run_raw(nbytes: int, rate: float | None, duration: float, ctx: Any) -> dict[str, Any]:
    import struct

    import numpy as np
    import zmq

    address = f"tcp://127.0.0.1:{_free_port()}"
    ready, stop = ctx.Event(), ctx.Event()
    sender = ctx.Process(target=raw_sender_main, args=(address, nbytes, rate, ready, stop), daemon=True)
    sender.start()
    ready.wait(20)
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVHWM, 10)
    sock.setsockopt(zmq.RCVTIMEO, 1000)
    sock.connect(address)
    latencies, pids = [], []
    try:
        warm = time.monotonic() + WARMUP_S
        start = 0.0
        while True:
            try:
                parts = sock.recv_multipart(copy=False)
            except zmq.Again:
                continue
            now = time.monotonic()
            if now < warm:
                continue
            if not start:
                start, end = now, now + duration
            if now >= end:
                break
            pulse_id, stamp = struct.unpack("<qd", parts[0].bytes)
            latencies.append(time.time() - stamp)
            pids.append(pulse_id)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        sender.join(5)
        sock.close(0)
    lat = np.array(latencies) * 1000
    expected = pids[-1] - pids[0] + 1
    return {"delivered/s": len(pids) / elapsed, "missing %": 100 * (expected - len(pids)) / expected,
            "p50 ms": float(np.percentile(lat, 50)), "p99 ms": float(np.percentile(lat, 99))}


# --- the run ------------------------------------------------------------------------------------------------------
def _cell(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)} / {format(statistics.median(values), fmt)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="2560x2160")
    parser.add_argument("--rates", default="100,max")
    parser.add_argument("--cases", default="shm,shm+stream,bsread")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM stops the servers too (finally)
    ctx = mp.get_context("spawn")
    cases = args.cases.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench_shm_"))
    results: dict[str, list[dict[str, Any]]] = {}
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        for rate_text in args.rates.split(","):
            rate = None if rate_text == "max" else float(rate_text)
            sender_address = f"tcp://127.0.0.1:{_free_port()}"
            cameras = tmp / f"cameras-{size}-{rate_text}"
            cameras.mkdir()
            (cameras / "bench.json").write_text(json.dumps({
                "name": "bench", "source": sender_address, "source_type": "bsread", "bsread_mode": "SUB",
                "no_client_timeout": 30}))
            sent, ready, stop = ctx.Value("q", 0), ctx.Event(), ctx.Event()
            sender = ctx.Process(target=sender_main, args=(sender_address, width, height, rate, sent, ready, stop),
                                 daemon=True)
            sender.start()
            ready.wait(30)
            camera, camera_url = _start_server("cam_server.start_camera_server",
                                               ["-b", str(cameras), "-u", str(tmp / "cu")], tmp / "camera.log")
            servers = [camera]
            try:
                pipelines = {}
                for name, switch in (("shm", "on"), ("bsread", "off")):
                    base = tmp / f"{name}-{size}-{rate_text}"
                    proc, url = _start_server("cam_server.start_pipeline_server",
                                              ["-c", camera_url, "-b", str(base / "p"), "-g", str(base / "g"),
                                               "-u", str(base / "u"), "--file_folder_any", "--shared_memory",
                                               switch], tmp / f"pipeline-{name}.log")
                    servers.append(proc)
                    pipelines[name] = url
                for repeat in range(args.repeats):
                    for case in cases:
                        key = f"{size} @ {rate_text}: {case}"
                        result = run_case(case, pipelines, camera_url, args.duration, ctx)
                        results.setdefault(key, []).append(result)
                        print(f"[{repeat + 1}/{args.repeats}] {key}: " + ", ".join(
                            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()),
                            flush=True)
                    key = f"{size} @ {rate_text}: raw pyzmq"
                    results.setdefault(key, []).append(run_raw(width * height * 2, rate, args.duration, ctx))
                    print(f"[{repeat + 1}/{args.repeats}] {key}: {results[key][-1]}", flush=True)
            finally:
                for proc in reversed(servers):
                    _stop(proc)
                stop.set()
                sender.join(5)
    print("\ncell = min / median over", args.repeats, "repeats; x = median / median of bsread (same size and rate)\n")
    print("| case | delivered/s | missing % | p50 ms | p99 ms | CPU camera % | CPU pipeline % | camera ms/frame |"
          " pipeline ms/frame | camera+pipeline ms/frame x | path |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, runs in results.items():
        row = [key, _cell([r["delivered/s"] for r in runs], ".1f"), _cell([r["missing %"] for r in runs], ".1f"),
               _cell([r["p50 ms"] for r in runs], ".1f"), _cell([r["p99 ms"] for r in runs], ".1f")]
        if "camera cpu %" in runs[0]:
            def per_frame(rs: list[dict[str, Any]]) -> float:
                return statistics.median(r["camera ms/frame"] + r["pipeline ms/frame"] for r in rs)

            base = results.get(key.rsplit(":", 1)[0] + ": bsread")
            ratio = per_frame(runs) / per_frame(base) if base else None
            row += [_cell([r["camera cpu %"] for r in runs], ".0f"), _cell([r["pipeline cpu %"] for r in runs], ".0f"),
                    _cell([r["camera ms/frame"] for r in runs], ".2f"),
                    _cell([r["pipeline ms/frame"] for r in runs], ".2f"),
                    f"{ratio:.2f}" if ratio else "", str(runs[-1]["path"])]
        else:
            row += ["", "", "", "", "", "one socket hop"]
        print("| " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
