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

``--servers``: the whole path of issue 13 with real processes, each started on free ports:

    .venv/bin/python benchmarks/bench_pipeline.py --servers [--cases 1280x1024@100,...,2560x2160@max]
        [--baseline COMMIT] [--variants "ENV=1 --arg x cam.queue_size=4 pipe.input_queue_size=4;..."]
        [--server-args='--shared_memory off'] [--repeats 3] [--duration 10]

A case ``WxH@RATE+Nms`` runs a user function that sleeps N ms per frame before the default processing: a pipeline
slower than its camera (sleeping, so that the CPU is left to the others), where the input policy decides the latency.

An external sender process (bsread PUB on tcp, uint16 images of the case's size) → a camera server's instance of a
``bsread`` camera reading it → a pipeline server's instance with the default processing → a SUB client (this
process). "max": the sender sends the next frame as soon as the camera instance has taken the previous one (SNDHWM 1
with XPUB_NODROP: as fast as the first hop goes, and no frame waits or is lost in the sender's own queue). Each
variant is a camera + pipeline server pair, all running for the whole benchmark: ``--baseline`` runs the servers
of an older commit (unpacked with ``git archive``, its numba kernels compiled first) as the first variant; every
case runs on every variant in turn, round after round (``--repeats``), so that the load of a shared machine falls on
all alike. Columns: sender/s (frames ZeroMQ took), delivered/s, dropped % (gaps in the delivered pulse ids: frames
sent and never delivered, wherever they were lost), latency p50/p99/mean (receive time − the sender's timestamp),
where it goes: the mean latency at the camera's and at the pipeline's send (their ``latency_seconds`` histograms in
``/metrics``; the rest of the client's mean is the output hop and the client's own queue) and the pipeline's p99 at
its send (the upper bound of the histogram bucket it falls in), CPU of the camera and the pipeline instance and of
the sender and this client (100 = one core), the high-water marks of the hops (the largest of the camera's and the
pipeline's ``output_backlog``, bytes the kernel holds for the slowest client, and of the pipeline's ``input_queue``,
frames at its door, and the client's own kernel receive queue; sampled once a second, the largest of the rounds),
and the drops the instances counted in the window (the camera's ``dropped``; the pipeline's ``dropped_input`` at its
door, ``dropped_overwritten`` in the shared-memory ring, ``input_gaps`` lost before it, ``dropped_output``). Last, raw
pyzmq PUB → SUB over tcp moving one image of each size, the floor of one socket hop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARMUP_S = 1.0
SERVER_CASES = "1280x1024@100,2048x2048@100,2560x2160@100,1280x1024@max,2560x2160@max"
SLOW_FUNCTION = """import time

from cam_server.processing.default import process_image as default_processing


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    time.sleep({seconds!r})
    return default_processing(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata)
"""


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


def camera_main(address: str, width: int, height: int, rate: float | None, duration: float, sent, ready,
                hwm: int = 100) -> None:
    """Camera process: PUB the camera channels; ``rate`` None = as fast as the first hop takes them (see below);
    ``hwm``: its send queue (1 at "max")."""
    import numpy as np

    from cam_server.bsread import PUB, Sender

    frames = _frames(width, height)
    sender = Sender(address=address, port=None, mode=PUB, queue_size=hwm if rate else 1, block=False)
    for name, meta in (("width", {"type": "int64"}), ("height", {"type": "int64"}),
                       ("timestamp", {"type": "float64"}),
                       ("image", {"type": "uint16", "shape": [width, height]}),
                       ("x_axis", {"type": "float32", "shape": [width]}),
                       ("y_axis", {"type": "float32", "shape": [height]})):
        sender.add_channel(name, metadata=meta)
    sender.open()
    if not rate:
        # "max": as fast as the first hop takes them, none lost or waiting in the sender's own queue (a PUB socket
        # would drop them silently at its high-water mark, counted as sent, and the frames that pass would wait in
        # its full queue): with one message of queue, send() fails while it is full, and the frame (a new
        # timestamp) is sent once there is room.
        import zmq

        sock = sender._socket  # noqa: SLF001 - the benchmark's own sender
        sock.setsockopt(zmq.XPUB_NODROP, 1)
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
        if not sender.send(data, timestamp=now, pulse_id=pulse_id, check_data=False):
            sock.poll(100, zmq.POLLOUT)
            continue
        pulse_id += 1
        sent.value = pulse_id
        if period:
            next_time += period
            delay = next_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    time.sleep(0.5)
    sender.close()


def receive_for(client: Any, end: float, latencies: list[float], pids: list[int]) -> None:
    """Receive until ``end`` (monotonic): each message's latency (receive time − the sender's timestamp carried
    through the path, same host clock) and pulse id."""
    while time.monotonic() < end:
        message = client.receive()
        if message is None:
            continue
        now = time.time()
        data = message.data
        latencies.append(now - (data.global_timestamp + data.global_timestamp_offset * 1e-9))
        pids.append(data.pulse_id)


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
        receive_for(client, warm + duration, latencies, pids)
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


# --- the whole path with real servers (--servers) ------------------------------------------------------------------

SERVER_COLUMNS = ["variant", "size", "rate", "sender/s", "delivered/s", "dropped % (min)", "p50 ms", "p99 ms (min)",
                  "p99 ms", "mean ms", "mean at camera / pipeline send ms", "p99 at pipeline send ms ≤",
                  "cpu camera %", "cpu pipeline %", "backlog HWM: camera out MB / pipeline in / out MB / client in MB",
                  "cpu sender + client %", "camera dropped", "pipeline dropped_input", "dropped_overwritten",
                  "input_gaps", "dropped_output"]


@dataclass
class ServerVariant:
    """One camera + pipeline server pair: its label, environment (e.g. an older source tree), extra arguments and
    keys of the benchmark's camera and pipeline configs (variant words ``cam.KEY=JSON``, ``pipe.KEY=JSON``)."""

    label: str
    env: dict[str, str]
    args: list[str]
    camera: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, env: dict[str, str], words: list[str]) -> ServerVariant:
        configs: dict[str, dict[str, Any]] = {"cam": {}, "pipe": {}}
        args = []
        for word in words:
            kind, dot, rest = word.partition(".")
            if dot and kind in configs and "=" in rest:
                key, _, value = rest.partition("=")
                configs[kind][key] = json.loads(value)
            else:
                args.append(word)
        return cls(text, env, args, configs["cam"], configs["pipe"])


def baseline_tree(commit: str, folder: Path) -> dict[str, str]:
    """``commit`` of this repository unpacked into ``folder``; the environment that runs the servers from it (not from
    this tree: no working directory on sys.path)."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", commit], check=True, capture_output=True).stdout
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    env = {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(folder)}
    # Compile its numba kernels now (cached beside its sources), not in its first instance (minutes on a busy host).
    subprocess.run([sys.executable, "-c", "import cam_server.processing.default"], env={**os.environ, **env},
                   check=True)
    return env


def _sample_cpu(pids: list[int]) -> list[Any]:
    import psutil

    procs = [psutil.Process(pid) for pid in pids]
    for proc in procs:
        proc.cpu_percent(None)
    return procs


def instance_histograms(url: str, instance_id: str) -> dict[str, dict[str, float]]:
    """An instance's processing and latency histograms from its server's /metrics: per histogram its ``count``,
    ``sum`` and cumulative bucket counts (keyed by upper bound, seconds)."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=30).text
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("instance_id") != instance_id:
                continue
            for name in ("processing_seconds", "latency_seconds"):
                if not sample.name.startswith(family.name) or not family.name.endswith(name):
                    continue
                values = found.setdefault(name, {})
                suffix = sample.name[len(family.name):]
                if suffix in ("_count", "_sum"):
                    values[suffix[1:]] = sample.value
                elif suffix == "_bucket":
                    values[sample.labels["le"]] = sample.value
    return found


def histogram_window(start: dict[str, float], end: dict[str, float]) -> tuple[float, float]:
    """(mean, p99 upper bound) in ms of what a histogram counted between two reads (nan when nothing): the p99 is
    the upper bound of the bucket it falls in (buckets: ``common/histograms.py``)."""
    count = end.get("count", 0) - start.get("count", 0)
    if count <= 0:
        return float("nan"), float("nan")
    mean = 1000 * (end["sum"] - start.get("sum", 0)) / count
    bounds = sorted((float(key), key) for key in end if key not in ("count", "sum"))
    for bound, key in bounds:
        if end[key] - start.get(key, 0) >= 0.99 * count:
            return mean, 1000 * bound
    return mean, float("inf")


class BacklogSampler:
    """High-water marks over the measured window, read from the instances' info once a second (they sample once a
    second too) by a thread of its own: the camera's ``output_backlog`` (bytes the kernel holds for its slowest
    client: the pipeline's stream or its shared-memory announcements), the pipeline's ``input_queue`` (frames
    waiting at its door) and ``output_backlog`` (bytes held for the slowest client: this benchmark's); and the bytes
    waiting unread in this client's own kernel receive buffer (``ss``: the Recv-Q of its connection to ``stream``;
    on loopback the pipeline's send buffer empties into it, so this is where a client's lag sits)."""

    def __init__(self, cam_url: str, camera: str, pipe_url: str, instance_id: str, stream: str) -> None:
        import threading

        self.camera_out = self.pipeline_in = self.pipeline_out = self.client_in = 0
        self._port = stream.rsplit(":", 1)[-1]
        self._urls = (f"{cam_url}/api/v1/cam/info", f"{pipe_url}/api/v1/pipeline/instance/{instance_id}/info")
        self._camera = camera
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BacklogSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import requests

        session = requests.Session()
        while not self._stop.wait(1.0):
            try:
                camera = session.get(self._urls[0], timeout=5).json()["info"]["active_instances"][self._camera]
                pipeline = session.get(self._urls[1], timeout=5).json()["info"]["statistics"]
            except (requests.RequestException, KeyError, ValueError):
                continue
            self.camera_out = max(self.camera_out, int(camera["statistics"].get("output_backlog") or 0))
            self.pipeline_in = max(self.pipeline_in, int(pipeline.get("input_queue") or 0))
            self.pipeline_out = max(self.pipeline_out, int(pipeline.get("output_backlog") or 0))
            self.client_in = max(self.client_in, self._client_queue())

    def _client_queue(self) -> int:
        try:
            lines = subprocess.run(["ss", "-tnH", "state", "established", f"dport = :{self._port}"],
                                   capture_output=True, text=True, timeout=5).stdout.splitlines()
        except (OSError, subprocess.SubprocessError):
            return 0
        return max((int(line.split()[0]) for line in lines if line.split()), default=0)


def slow_function(pipe_url: str, milliseconds: int) -> str:
    """Upload the user function sleeping ``milliseconds`` per frame (see the module docstring); its name."""
    import requests

    name = f"bench_slow_{milliseconds}ms"
    requests.put(f"{pipe_url}/api/v1/pipeline/script/{name}/script_bytes",
                 data=SLOW_FUNCTION.format(seconds=milliseconds / 1000).encode(), timeout=30).raise_for_status()
    return name


def run_server_case(variant: ServerVariant, cam_url: str, pipe_url: str, width: int, height: int,
                    rate: float | None, duration: float, sender_hwm: int, client_hwm: int, tag: str,
                    function_ms: int = 0, client_rcvbuf: int = 0) -> dict:
    """External sender process → camera server instance (bsread camera reading it) → pipeline instance (default
    processing) → SUB client (this process); see ``--servers``."""
    import numpy as np
    import requests
    import zmq

    from cam_server.bsread import SUB, Source
    from cam_server.common.process import reserve_port

    address = f"tcp://127.0.0.1:{reserve_port()}"
    ctx = mp.get_context("spawn")
    sent, ready = ctx.Value("q", 0), ctx.Event()
    sender = ctx.Process(target=camera_main, args=(address, width, height, rate, duration + WARMUP_S + 30.0, sent,
                                                   ready, sender_hwm), daemon=True)
    sender.start()
    ready.wait(20)
    camera = f"bench_{tag}"
    config = {"name": camera, "source_type": "bsread", "source": address, "mirror_x": False, "mirror_y": False,
              "rotate": 0, "camera_calibration": None, "no_client_timeout": 0, "bsread_mode": "SUB", **variant.camera}
    requests.post(f"{cam_url}/api/v1/cam/{camera}/config", json=config, timeout=30).raise_for_status()
    function = {"function": slow_function(pipe_url, function_ms)} if function_ms else {}
    answer = requests.post(f"{pipe_url}/api/v1/pipeline", json={"camera_name": camera, "no_client_timeout": 0,
                                                                 **function, **variant.pipeline}, timeout=180).json()
    instance_id, stream = answer["instance_id"], answer["stream"]
    context = None
    if client_rcvbuf:  # SO_RCVBUF of the client's TCP connection (else the kernel autotunes it, up to tcp_rmem)
        context = zmq.Context()
        context.setsockopt(zmq.RCVBUF, client_rcvbuf)
    client = Source(address=stream, mode=SUB, receive_timeout=1000, queue_size=client_hwm, context=context)
    latencies: list[float] = []
    pids: list[int] = []
    try:
        client.connect()
        deadline = time.monotonic() + 30
        while client.receive() is None:  # wait for the first frame
            if time.monotonic() > deadline:
                raise RuntimeError(f"no frame from {stream} within 30 s")
        warm = time.monotonic() + WARMUP_S
        while time.monotonic() < warm:
            client.receive()
        cam_info = requests.get(f"{cam_url}/api/v1/cam/info", timeout=30).json()["info"]["active_instances"][camera]
        pipe_info = requests.get(f"{pipe_url}/api/v1/pipeline/instance/{instance_id}/info", timeout=30).json()["info"]
        procs = _sample_cpu([cam_info["statistics"]["pid"], pipe_info["pid"], sender.pid, os.getpid()])
        histograms_start = (instance_histograms(cam_url, camera), instance_histograms(pipe_url, instance_id))
        sent_start = sent.value
        stats_start = cam_info["statistics"], pipe_info["statistics"]
        with BacklogSampler(cam_url, camera, pipe_url, instance_id, stream) as backlog:
            receive_for(client, time.monotonic() + duration, latencies, pids)
        cpu = [proc.cpu_percent(None) for proc in procs]
        histograms_end = (instance_histograms(cam_url, camera), instance_histograms(pipe_url, instance_id))
        sent_count = sent.value - sent_start
        cam_stats = requests.get(f"{cam_url}/api/v1/cam/info", timeout=30).json()["info"]["active_instances"][camera][
            "statistics"]
        pipe_stats = requests.get(f"{pipe_url}/api/v1/pipeline/instance/{instance_id}/info",
                                  timeout=30).json()["info"]["statistics"]
    finally:
        client.disconnect()
        if context is not None:
            context.term()
        requests.delete(f"{pipe_url}/api/v1/pipeline/{instance_id}", timeout=60)
        requests.delete(f"{cam_url}/api/v1/cam/{camera}", timeout=60)
        requests.delete(f"{cam_url}/api/v1/cam/{camera}/config", timeout=60)
        sender.terminate()
        sender.join(10)
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])

    def window(name: str, server: int = 1) -> tuple[float, float]:
        return histogram_window(histograms_start[server].get(name, {}), histograms_end[server].get(name, {}))

    def delta(after: dict, before: dict, key: str) -> int:
        return int(after.get(key) or 0) - int(before.get(key) or 0)

    return {
        "variant": variant.label, "size": f"{width}x{height}",
        "rate": ("max" if not rate else f"{rate:g} Hz") + (f", function {function_ms} ms" if function_ms else ""),
        "sender/s": sent_count / duration, "delivered/s": len(pids) / duration,
        # Gaps in the delivered pulse ids (the sender numbers every frame it sends from 0): frames lost anywhere.
        "dropped %": 100.0 * (1 - len(pids) / (pids[-1] - pids[0] + 1)) if pids else float("nan"),
        "p50 ms": float(np.percentile(lat, 50)), "p99 ms": float(np.percentile(lat, 99)), "max ms": float(lat.max()),
        # Where the time goes (means): sender → the pipeline's send (its latency histogram), of which the pipeline's
        # own take → send (processing histogram); the rest of the client's mean is the output hop.
        "mean ms": float(np.mean(lat)), "at camera send ms": window("latency_seconds", 0)[0],
        "at pipeline send ms": window("latency_seconds")[0],
        "p99 at pipeline send ms <=": window("latency_seconds")[1],
        "pipeline take→send ms": window("processing_seconds")[0],
        "cpu camera %": cpu[0], "cpu pipeline %": cpu[1], "cpu sender %": cpu[2], "cpu client %": cpu[3],
        "backlog camera out MB": backlog.camera_out / 1e6, "backlog pipeline in": backlog.pipeline_in,
        "backlog pipeline out MB": backlog.pipeline_out / 1e6, "backlog client in MB": backlog.client_in / 1e6,
        "camera dropped": delta(cam_stats, stats_start[0], "dropped"),
        "pipeline dropped_input": delta(pipe_stats, stats_start[1], "dropped_input"),
        "pipeline dropped_output": delta(pipe_stats, stats_start[1], "dropped_output"),
        "pipeline dropped_overwritten": delta(pipe_stats, stats_start[1], "dropped_overwritten"),
        "pipeline input_gaps": delta(pipe_stats, stats_start[1], "input_gaps"),
    }


def raw_zmq_receiver(address: str, count: int, hwm: int, result) -> None:
    """The floor of one socket hop: SUB ``count`` messages of the size the sender sends, nothing else."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(address)
    sock.recv(copy=False)
    start = time.perf_counter()
    for _ in range(count):
        sock.recv(copy=False)
    result.value = count / (time.perf_counter() - start)
    sock.close(0)


def raw_zmq_floor(width: int, height: int, hwm: int, seconds: float = 3.0) -> tuple[float, float]:
    """(messages/s, GB/s) that plain pyzmq PUB → SUB over tcp on this host moves of one uint16 image of this size
    (zero-copy send, as fast as the receiver takes them; the sender drops at its high-water mark)."""
    import numpy as np
    import zmq

    from cam_server.common.process import reserve_port

    address = f"tcp://127.0.0.1:{reserve_port()}"
    frame = np.zeros((height, width), dtype=np.uint16)
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.bind(address)
    ctx = mp.get_context("spawn")
    result = ctx.Value("d", 0.0)
    count = max(50, int(seconds * 2e9 / frame.nbytes))
    receiver = ctx.Process(target=raw_zmq_receiver, args=(address, count, hwm, result), daemon=True)
    receiver.start()
    while receiver.is_alive():
        sock.send(frame, copy=False)
    receiver.join()
    sock.close(0)
    return result.value, result.value * frame.nbytes / 1e9


def servers_benchmark(args: argparse.Namespace) -> None:
    """The issue's path with real servers, every variant in interleaved rounds (see the module docstring)."""
    import statistics

    from bench_pipeline_rest import parse_variant

    from tests.helpers.servers import camera_server, pipeline_server

    cases = [(int(w), int(h), None if r == "max" else float(r), int(ms or 0))
             for w, h, r, ms in (re.fullmatch(r"(\d+)x(\d+)@(\w+)(?:\+(\d+)ms)?", c.strip()).groups()
                                 for c in args.cases.split(","))]
    rows: dict[tuple[int, int], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp, contextlib.ExitStack() as stack:
        variants = []
        if args.baseline:
            env = baseline_tree(args.baseline, Path(tmp) / "baseline")
            variants.append(ServerVariant(f"{args.baseline} (before)", env, []))
        for text in (v.strip() for v in args.variants.split(";") if v.strip()) if args.variants else ["(this tree)"]:
            variants.append(ServerVariant.parse(text, *parse_variant("" if text == "(this tree)" else text)))
        pairs = []
        for i, variant in enumerate(variants):
            folder = Path(tmp) / f"variant{i}"
            folder.mkdir()
            server_args = [*shlex.split(args.server_args), *variant.args]
            cam = stack.enter_context(camera_server(folder, env=variant.env, log_level="WARNING",
                                                    extra_args=server_args))
            pipe = stack.enter_context(pipeline_server(folder, cam.url, env=variant.env, log_level="WARNING",
                                                       extra_args=server_args))
            pairs.append((cam.url, pipe.url))
        print(f"servers: {len(variants)} variants x {args.repeats} rounds, {args.duration:g} s per case, sender HWM "
              f"{args.sender_hwm}, client RCVHWM {args.client_hwm} RCVBUF {args.client_rcvbuf or 'auto'}, "
              f"server args {args.server_args!r}, cores "
              f"{os.cpu_count()}, load average {os.getloadavg()[0]:.2f}", flush=True)
        for round_no in range(args.repeats):
            for c, (width, height, rate, function_ms) in enumerate(cases):
                for i, (variant, (cam_url, pipe_url)) in enumerate(zip(variants, pairs, strict=True)):
                    row = run_server_case(variant, cam_url, pipe_url, width, height, rate, args.duration,
                                          args.sender_hwm, args.client_hwm, f"{round_no}_{c}_{i}", function_ms,
                                          args.client_rcvbuf)
                    rows.setdefault((c, i), []).append(row)
                    print("  " + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in row.items()), flush=True)
        floors = {(w, h): raw_zmq_floor(w, h, args.sender_hwm) for w, h in {(w, h) for w, h, _, _ in cases}}
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}; median of {args.repeats} rounds (min for the "
              "latencies and the dropped share: the least disturbed round)\n")
        print("| " + " | ".join(SERVER_COLUMNS) + " |")
        print("|" + "---|" * len(SERVER_COLUMNS))
        for c in range(len(cases)):
            for i in range(len(variants)):
                runs = rows[(c, i)]

                def med(key: str, runs: list[dict] = runs) -> float:
                    return statistics.median(r[key] for r in runs)

                cells = [runs[0]["variant"], runs[0]["size"], runs[0]["rate"], f"{med('sender/s'):.0f}",
                         f"{med('delivered/s'):.0f}", f"{min(r['dropped %'] for r in runs):.1f}",
                         f"{med('p50 ms'):.1f}", f"{min(r['p99 ms'] for r in runs):.1f}", f"{med('p99 ms'):.1f}",
                         f"{med('mean ms'):.1f}", f"{med('at camera send ms'):.1f} / {med('at pipeline send ms'):.1f}",
                         f"{med('p99 at pipeline send ms <='):g}",
                         f"{med('cpu camera %'):.0f}", f"{med('cpu pipeline %'):.0f}",
                         f"{max(r['backlog camera out MB'] for r in runs):.1f} / "
                         f"{max(r['backlog pipeline in'] for r in runs)} / "
                         f"{max(r['backlog pipeline out MB'] for r in runs):.1f} / "
                         f"{max(r['backlog client in MB'] for r in runs):.1f}",
                         f"{med('cpu sender %'):.0f} + {med('cpu client %'):.0f}", f"{med('camera dropped'):.0f}",
                         f"{med('pipeline dropped_input'):.0f}", f"{med('pipeline dropped_overwritten'):.0f}",
                         f"{med('pipeline input_gaps'):.0f}", f"{med('pipeline dropped_output'):.0f}"]
                print("| " + " | ".join(cells) + " |")
        print("\n| raw pyzmq PUB → SUB (tcp, one hop) | messages/s | GB/s |\n|---|---|---|")
        for (width, height), (rate, gbps) in sorted(floors.items()):
            print(f"| {width}x{height} uint16 | {rate:.0f} | {gbps:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured per case (default 60)")
    parser.add_argument("--sizes", default="1280x1024,2560x2160")
    parser.add_argument("--rates", default="100,max", help="comma list of Hz or 'max'")
    parser.add_argument("--threads", default="0", help="comma list of processing_threads values")
    parser.add_argument("--function", default=None, help="pipeline function (default: the standard statistics)")
    parser.add_argument("--transport", choices=("ipc", "tcp"), default="ipc", help="camera → pipeline transport")
    parser.add_argument("--servers", action="store_true", help="the whole path with real camera and pipeline servers "
                        "and an external sender (see the module docstring)")
    parser.add_argument("--cases", default=SERVER_CASES, help="with --servers: comma list of WxH@rate (Hz or max)")
    parser.add_argument("--variants", default="", help="with --servers: ';'-separated server environments (leading "
                        "NAME=value words), arguments and config keys (cam.KEY=JSON, pipe.KEY=JSON), each a server "
                        "pair (default: this tree as it is)")
    parser.add_argument("--baseline", default="", help="with --servers: a commit of this repository whose servers "
                        "run as the first variant (before/after in one run)")
    parser.add_argument("--server-args", default="", help="with --servers: more arguments of every server, e.g. "
                        "--server-args='--shared_memory off'")
    parser.add_argument("--repeats", type=int, default=3, help="with --servers: rounds over cases and variants")
    parser.add_argument("--sender-hwm", type=int, default=10, help="with --servers: the external sender's SNDHWM "
                        "(bsread's default 10; also the raw pyzmq floor's)")
    parser.add_argument("--client-hwm", type=int, default=10, help="with --servers: the SUB client's RCVHWM")
    parser.add_argument("--client-rcvbuf", type=int, default=0, help="with --servers: the SUB client's SO_RCVBUF in "
                        "bytes (0: the kernel's autotuning, up to tcp_rmem's maximum)")
    args = parser.parse_args()
    # A SIGTERM (kill, a CI timeout) ends the benchmark through its clean-ups: the servers it started stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from cam_server.common.process import configure_memory

    configure_memory()  # the client receives multi-MB frames too: same allocator settings as the instance
    if args.servers:
        servers_benchmark(args)
        return

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
