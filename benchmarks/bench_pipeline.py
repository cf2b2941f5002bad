"""End-to-end pipeline benchmark: camera stream → pipeline instance → SUB client (run on demand, not in pytest).

    .venv/bin/python benchmarks/bench_pipeline.py [--duration 60] [--sizes 1280x1024,2560x2160]
        [--rates 100,max] [--threads 0] [--function default] [--transport ipc]

The camera is a separate process (bsread PUB, the six camera channels, uint16 gaussian-on-noise frames cycled
from a few pre-generated arrays) sending at the given rate or as fast as it can ("max"); it binds an ipc://
endpoint (or tcp) that the pipeline instance (a real forkserver child running ``run_instance``) reads. The client
(this process) SUBscribes to the pipeline output over tcp on 127.0.0.1. Latency = client receive time − the
camera's send timestamp carried through the pipeline (same host clock). Reported per case:
- camera/s: messages the camera offered per second (at "max" its PUB socket silently discards what the pipeline
  cannot take, so this is not a delivery rate),
- delivered/s: messages the client received per second,
- missing: gaps in the delivered pulse ids (frames lost anywhere on the path),
- sent-delivered: camera messages minus delivered ones in the window (includes frames still in flight),
- p50/p99/max latency, pipeline CPU % (all its threads, 100 = one core) and RSS at the end, and the CPU % of
  the camera and client processes (all three share the machine).
The first second is warm-up and not counted. At "max" the latency is queueing time (HWM-deep queues are full).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARMUP_S = 1.0


def _frames(width: int, height: int, count: int = 4):
    import numpy as np

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        cx, cy = width / 2 + 10 * i, height / 2 - 5 * i
        spot = 30000 * np.exp(-(((x - cx) / (width / 20)) ** 2 + ((y - cy) / (height / 20)) ** 2))
        frame = (spot + rng.integers(0, 3000, size=(height, width))).astype(np.uint16)
        frame.flags.writeable = False
        frames.append(frame)
    return frames


def camera_main(address: str, width: int, height: int, rate: float | None, duration: float, sent, ready) -> None:
    """Camera process: PUB the camera channels; ``rate`` None = as fast as possible."""
    import numpy as np

    from cam_server.bsread import PUB, Sender

    frames = _frames(width, height)
    sender = Sender(address=address, port=None, mode=PUB, queue_size=100, block=False)
    for name, meta in (("width", {"type": "int64"}), ("height", {"type": "int64"}),
                       ("timestamp", {"type": "float64"}),
                       ("image", {"type": "uint16", "shape": [width, height]}),
                       ("x_axis", {"type": "float32", "shape": [width]}),
                       ("y_axis", {"type": "float32", "shape": [height]})):
        sender.add_channel(name, metadata=meta)
    sender.open()
    x_axis = np.arange(width, dtype=np.float32)
    y_axis = np.arange(height, dtype=np.float32)
    ready.set()
    period = 1.0 / rate if rate else 0.0
    start = time.monotonic()
    next_time = start
    pulse_id = 0
    while time.monotonic() - start < duration:
        now = time.time()
        data = {"width": width, "height": height, "timestamp": now, "image": frames[pulse_id % len(frames)],
                "x_axis": x_axis, "y_axis": y_axis}
        sender.send(data, timestamp=now, pulse_id=pulse_id, check_data=False)
        pulse_id += 1
        sent.value = pulse_id
        if period:
            next_time += period
            delay = next_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    time.sleep(0.5)
    sender.close()


def run_case(width: int, height: int, rate: float | None, duration: float, threads: int, function: str | None,
             transport: str, tmpdir: str) -> dict:
    import numpy as np
    import psutil

    from cam_server.bsread import SUB, Source
    from cam_server.common.process import InstanceProcess, reserve_port
    from cam_server.pipeline.config import parse_pipeline_config
    from cam_server.pipeline.instance.main import run_instance
    from cam_server.pipeline.instance_spec import InstanceSpec

    if transport == "ipc":
        camera_address = f"ipc://{tmpdir}/camera-{width}x{height}-{rate}"
    else:
        camera_address = f"tcp://127.0.0.1:{reserve_port()}"
    ctx = mp.get_context("spawn")
    sent, ready = ctx.Value("q", 0), ctx.Event()
    camera = ctx.Process(target=camera_main, args=(camera_address, width, height, rate, duration + WARMUP_S + 1.0,
                                                    sent, ready), daemon=True)
    camera.start()
    ready.wait(20)

    port = reserve_port()
    config = parse_pipeline_config({"camera_name": "bench", "processing_threads": threads or None, "function": function,
                            "no_client_timeout": 0, "camera_timeout": 0})
    spec = InstanceSpec("bench", config, f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}", camera_address,
                        "http://127.0.0.1:1", tmpdir, tmpdir)
    instance = InstanceProcess("bench", run_instance, (spec,), preload=("cam_server.pipeline.instance.main",))
    instance.start()
    client = Source(address=spec.stream_address, mode=SUB, receive_timeout=1000, queue_size=100)
    client.connect()
    latencies: list[float] = []
    pids: list[int] = []
    proc = psutil.Process(instance.pid)
    camera_proc = psutil.Process(camera.pid)
    client_proc = psutil.Process()
    try:
        while client.receive() is None and instance.is_alive():  # wait for the first frame
            pass
        t0 = time.monotonic()
        warm = t0 + WARMUP_S
        while time.monotonic() < warm:
            client.receive()
        sent_start = sent.value
        for p in (proc, camera_proc, client_proc):
            p.cpu_percent(None)
        end = warm + duration
        while time.monotonic() < end:
            message = client.receive()
            if message is None:
                continue
            now = time.time()
            data = message.data
            latencies.append(now - (data.global_timestamp + data.global_timestamp_offset * 1e-9))
            pids.append(data.pulse_id)
        cpu = proc.cpu_percent(None)
        camera_cpu, client_cpu = camera_proc.cpu_percent(None), client_proc.cpu_percent(None)
        rss = proc.memory_info().rss
        sent_count = sent.value - sent_start
        stats = instance.info()["statistics"]
    finally:
        client.disconnect()
        instance.stop(5)
        camera.join(duration + 10)
        if camera.is_alive():
            camera.terminate()
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    expected = (pids[-1] - pids[0] + 1) if pids else 0
    return {
        "size": f"{width}x{height}", "rate": "max" if not rate else f"{rate:g} Hz", "threads": threads,
        "camera/s": sent_count / duration, "delivered/s": len(pids) / duration,
        "missing": expected - len(pids), "sent-delivered": sent_count - len(pids),
        "p50 ms": float(np.percentile(lat, 50)), "p99 ms": float(np.percentile(lat, 99)),
        "max ms": float(lat.max()), "cpu %": cpu, "rss MB": rss / 1e6,
        "camera cpu %": camera_cpu, "client cpu %": client_cpu,
        "in": stats["frames_in"], "out": stats["frames_out"], "dropped": stats["dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured per case (default 60)")
    parser.add_argument("--sizes", default="1280x1024,2560x2160")
    parser.add_argument("--rates", default="100,max", help="comma list of Hz or 'max'")
    parser.add_argument("--threads", default="0", help="comma list of processing_threads values")
    parser.add_argument("--function", default=None, help="pipeline function (default: the standard statistics)")
    parser.add_argument("--transport", choices=("ipc", "tcp"), default="ipc", help="camera → pipeline transport")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from cam_server.common.process import configure_memory

    configure_memory()  # the client receives multi-MB frames too: same allocator settings as the instance

    columns = ["size", "rate", "threads", "camera/s", "delivered/s", "missing", "sent-delivered", "p50 ms", "p99 ms",
               "max ms", "cpu %", "rss MB", "camera cpu %", "client cpu %"]
    print(f"function={args.function or 'default'} transport={args.transport} duration={args.duration:g}s "
          f"cores={os.cpu_count()}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as tmpdir:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            for rate_text in args.rates.split(","):
                rate = None if rate_text == "max" else float(rate_text)
                for threads in (int(t) for t in args.threads.split(",")):
                    row = run_case(width, height, rate, args.duration, threads, args.function, args.transport,
                                   tmpdir)
                    cells = [f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
                    print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
