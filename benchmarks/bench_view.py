"""Cost of the live view: three open views of a 2560x2160 100 Hz pipeline instance, against none, in one run.

Starts a real camera server and pipeline server (``tests.helpers.servers``), a camera process sending 2560x2160
uint16 frames at 100 Hz (``bench_pipeline.camera_main``, bsread PUB on ipc://) and a private pipeline instance
reading it (default processing). Then alternates phases of ``--duration`` seconds without views and with
``--views`` WebSocket clients (Python ``websockets``, no browser: each asks for a 1280x800 view at 10 Hz and
acknowledges every frame, as the page does), ``--repeat`` times. In every phase a client polls
``GET /api/v1/pipeline/instance/<id>/info`` at 20 Hz. Reported per phase kind, min / median over the repeats:

- info p50 / p99: latency of that REST call (ms),
- dropped: the instance's ``dropped`` counter increase,
- missed in: frames the camera sent that the instance did not receive (its PUB dropped them),
- view fps: frames per second each view received; view age: median age of a frame when it arrived (camera send
  time to the view's receive: how fresh the view is),
- REST cpu %: the pipeline server process (100 = one core), where the views' subscription and rendering run.

    .venv/bin/python benchmarks/bench_view.py [--duration 20] [--repeat 3] [--views 3] [--size 2560x2160] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers (servers)

from benchmarks.bench_pipeline import camera_main  # noqa: E402
from tests.helpers.servers import camera_server, pipeline_server  # noqa: E402

API = "/api/v1/pipeline"
INFO_PERIOD = 0.05


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def poll_info(url: str, stop: threading.Event, latencies: list[float]) -> None:
    session = requests.Session()
    while not stop.is_set():
        t0 = time.perf_counter()
        answer = session.get(url, timeout=10)
        latencies.append((time.perf_counter() - t0) * 1e3)
        if answer.status_code != 200:
            raise RuntimeError(answer.text)
        stop.wait(max(0.0, INFO_PERIOD - (time.perf_counter() - t0)))


async def one_view(url: str, stop: threading.Event, frames: list[int], index: int, ages: list[float]) -> None:
    async with websockets.connect(url, max_size=None) as socket:
        await socket.send(json.dumps({"type": "view", "width": 1280, "height": 800, "rate": 10}))
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(socket.recv(), 0.5)
            except TimeoutError:
                continue
            if isinstance(message, bytes):
                header = json.loads(message[4:4 + struct.unpack("<I", message[:4])[0]])
                frames[index] += 1
                ages.append((time.time() - header["timestamp"]) * 1e3)
                await socket.send(json.dumps({"type": "ack", "seq": header["seq"]}))


def run_views(url: str, n: int, stop: threading.Event, frames: list[int], ages: list[float]) -> None:
    async def main() -> None:
        await asyncio.gather(*(one_view(url, stop, frames, i, ages) for i in range(n)))

    asyncio.run(main())


def instance_stats(session: requests.Session, url: str) -> dict:
    return session.get(url, timeout=10).json()["info"]["statistics"]


def phase(pipe_url: str, instance_id: str, views: int, duration: float, sent, server: psutil.Process) -> dict:
    session = requests.Session()
    info_url = f"{pipe_url}{API}/instance/{instance_id}/info"
    stop = threading.Event()
    frames = [0] * views
    ages: list[float] = []
    view_thread = None
    if views:
        ws_url = pipe_url.replace("http://", "ws://") + f"/view/{instance_id}/ws"
        view_thread = threading.Thread(target=run_views, args=(ws_url, views, stop, frames, ages))
        view_thread.start()
        time.sleep(2.0)  # views connected and the feed streaming before the measured window
    latencies: list[float] = []
    before, sent_before = instance_stats(session, info_url), sent.value
    frames_before = list(frames)
    ages.clear()
    server.cpu_percent(None)
    poller = threading.Thread(target=poll_info, args=(info_url, stop, latencies))
    poller.start()
    time.sleep(duration)
    cpu = server.cpu_percent(None)
    after, sent_after = instance_stats(session, info_url), sent.value
    frames_after = list(frames)
    stop.set()
    poller.join()
    if view_thread is not None:
        view_thread.join()
    return {
        "info p50 ms": percentile(latencies, 0.5), "info p99 ms": percentile(latencies, 0.99),
        "dropped": after["dropped"] - before["dropped"],
        "missed in": (sent_after - sent_before) - (after["frames_in"] - before["frames_in"]),
        "view fps": (statistics.mean(b - a for a, b in zip(frames_before, frames_after, strict=True)) / duration
                     if views else float("nan")),
        "view age ms": percentile(ages, 0.5), "REST cpu %": cpu, "instance rate": after["rate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per phase")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--size", default="2560x2160")
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    total = args.repeat * 2 * (args.duration + 6) + 60

    with tempfile.TemporaryDirectory(prefix="bench_view_") as tmp, \
            camera_server(Path(tmp), log_level="WARNING") as cam, \
            pipeline_server(Path(tmp), cam.url, log_level="WARNING") as pipe:
        ctx = mp.get_context("spawn")
        sent, ready = ctx.Value("q", 0), ctx.Event()
        address = f"ipc://{tmp}/camera"
        camera = ctx.Process(target=camera_main, args=(address, width, height, args.rate, total, sent, ready),
                             daemon=True)
        camera.start()
        ready.wait(30)
        try:
            answer = requests.post(f"{pipe.url}{API}", params={"instance_id": "bench_view"}, timeout=60,
                                   json={"input_stream": address, "no_client_timeout": 0}).json()
            if answer["state"] != "ok":
                raise RuntimeError(answer)
            time.sleep(3.0)  # warm-up
            server = psutil.Process(pipe.pid)
            results: dict[str, list[dict]] = {"no view": [], f"{args.views} views": []}
            for _ in range(args.repeat):
                results["no view"].append(phase(pipe.url, "bench_view", 0, args.duration, sent, server))
                results[f"{args.views} views"].append(phase(pipe.url, "bench_view", args.views, args.duration,
                                                            sent, server))
        finally:
            camera.terminate()
            camera.join(10)

    columns = ["info p50 ms", "info p99 ms", "dropped", "missed in", "view fps", "view age ms", "REST cpu %",
               "instance rate"]
    print(f"{width}x{height} uint16 at {args.rate:g} Hz, {args.repeat} x {args.duration:g} s per phase kind, "
          f"min / median\n")
    print("| phase | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, rows in results.items():
        cells = []
        for column in columns:
            values = [r[column] for r in rows]
            cells.append(f"{min(values):.1f} / {statistics.median(values):.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
