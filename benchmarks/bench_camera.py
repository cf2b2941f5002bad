"""Camera server throughput and CPU (run on demand: ``.venv/bin/python benchmarks/bench_camera.py``).

Measures, through a real camera server process:

* the simulation camera configured at 100 Hz, 1280x960 and 2560x2160: frames/s received by a subscriber and the
  CPU of the camera instance process (target: holds 100 Hz at 1280x960 with under half a core);
* a bsread-source camera relaying a 100 Hz 2560x2160 uint16 stream sent by another process: frames relayed,
  pulse-id gaps (drops) and relay CPU (target: no drops, < 30 % of one core), beside a raw pyzmq PULL→PUB relay
  of the same stream measured in the same run.

Each case is repeated (``--repeats``) and reported as min / median; CPU is user+system time of the relaying or
generating process over the measuring window, in % of one core.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import requests
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cam_server.bsread import PUSH, SUB, Sender, Source  # noqa: E402
from cam_server.client.cam_client import CamClient  # noqa: E402

RELAY_W, RELAY_H, RELAY_RATE = 2560, 2160, 100.0
CASES = ("simulation", "relay", "raw")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- helper processes ---------------------------------------------------------------------------------------
def upstream_sender(port: int, seconds: float, sent: mp.Value) -> None:
    """PUSH 2560x2160 uint16 frames at 100 Hz (pulse ids from 0) for ``seconds``."""
    frames = [np.full((RELAY_H, RELAY_W), i, dtype=np.uint16) for i in range(4)]
    sender = Sender(port=port, address="tcp://127.0.0.1", mode=PUSH, block=True, queue_size=4, send_timeout=1000)
    sender.open()
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        due = start + k / RELAY_RATE
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if sender.send({"image": frames[k % 4], "energy": float(k)}, pulse_id=k, timestamp=time.time()):
            k += 1
            sent.value = k
    sender.close()


def raw_relay(in_port: int, out_port: int) -> None:
    """Baseline: PULL → PUB forwarding of the multipart messages with pyzmq, no decoding."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 10)
    pull.connect(f"tcp://127.0.0.1:{in_port}")
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 10)
    pub.bind(f"tcp://127.0.0.1:{out_port}")
    while True:
        pub.send_multipart(pull.recv_multipart(copy=False), copy=False)


# --- measuring ----------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure(address: str, pid: int, seconds: float, warmup: float = 1.0) -> dict[str, float]:
    """Subscribe to ``address`` and return frames/s, pulse-id gaps and the CPU of process ``pid``."""
    with Source(address=address, mode=SUB, receive_timeout=500, queue_size=20) as stream:
        end_warmup = time.monotonic() + warmup
        while time.monotonic() < end_warmup:
            stream.receive()
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        count, gaps, last = 0, 0, None
        while time.monotonic() - t0 < seconds:
            message = stream.receive()
            if message is None:
                continue
            pulse_id = message.data.pulse_id
            if last is not None and pulse_id != last + 1:
                gaps += pulse_id - last - 1
            last = pulse_id
            count += 1
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0
    return {"fps": count / elapsed, "cpu": 100 * cpu / elapsed, "cpu_ms_per_frame": 1000 * cpu / max(count, 1),
            "gaps": gaps}


def start_server(config_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cam_server.start_camera_server", "-p", str(port), "-i",
                             "127.0.0.1", "-b", str(config_dir), "-n", "127.0.0.1"], cwd=ROOT,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(url + "/api/v1/cam", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError("camera server did not start")


def stop(proc: subprocess.Popen | mp.Process) -> None:
    if isinstance(proc, subprocess.Popen):
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    else:
        proc.terminate()
        proc.join(5)


def bench_simulation(client: CamClient, width: int, height: int, seconds: float) -> dict[str, float]:
    name = f"sim_{width}x{height}"
    client.set_camera_config(name, {"source": "sim", "source_type": "simulation", "size_x": width,
                                    "size_y": height, "frame_rate": 100})
    address = client.get_instance_stream(name)
    pid = client.get_server_info()["active_instances"][name]["pid"]
    result = measure(address, pid, seconds)
    client.stop_instance(name)
    return result


def bench_relay(client: CamClient, seconds: float) -> dict[str, float]:
    port = free_port()
    ctx = mp.get_context("spawn")
    sent = ctx.Value("q", 0)
    sender = ctx.Process(target=upstream_sender, args=(port, seconds + 4, sent), daemon=True)
    sender.start()
    client.set_camera_config("relay", {"source": f"tcp://127.0.0.1:{port}", "source_type": "bsread",
                                       "no_client_timeout": 30})
    address = client.get_instance_stream("relay")
    pid = client.get_server_info()["active_instances"]["relay"]["pid"]
    result = measure(address, pid, seconds)
    client.stop_instance("relay")
    stop(sender)
    return result


def bench_raw(seconds: float) -> dict[str, float]:
    in_port, out_port = free_port(), free_port()
    ctx = mp.get_context("spawn")
    sent = ctx.Value("q", 0)
    sender = ctx.Process(target=upstream_sender, args=(in_port, seconds + 4, sent), daemon=True)
    relay = ctx.Process(target=raw_relay, args=(in_port, out_port), daemon=True)
    sender.start()
    relay.start()
    result = measure(f"tcp://127.0.0.1:{out_port}", relay.pid, seconds)
    stop(relay)
    stop(sender)
    return result


def summarize(name: str, runs: list[dict[str, float]]) -> str:
    def stat(key: str) -> str:
        values = [r[key] for r in runs]
        return f"{min(values):7.1f} / {statistics.median(values):7.1f}"

    return f"| {name:<38} | {stat('fps')} | {stat('cpu')} | {stat('cpu_ms_per_frame')} | {stat('gaps')} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="print the raw runs as JSON too")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES),
                        help="cases to run (default: all); e.g. --cases relay raw for the relay comparison only")
    args = parser.parse_args()
    config_dir = Path(tempfile.mkdtemp(prefix="bench_camera_"))
    server, url = start_server(config_dir)
    client = CamClient(url)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        client.set_camera_config("warmup", {"source": "x", "source_type": "simulation", "size_x": 8, "size_y": 8})
        client.get_instance_stream("warmup")
        client.stop_all_instances()
        for _ in range(args.repeats):
            if "simulation" in args.cases:
                for width, height in ((1280, 960), (2560, 2160)):
                    key = f"simulation {width}x{height} @ 100 Hz"
                    results.setdefault(key, []).append(bench_simulation(client, width, height, args.seconds))
            if "relay" in args.cases:
                results.setdefault("bsread relay 2560x2160 u16 @ 100 Hz", []).append(
                    bench_relay(client, args.seconds))
            if "raw" in args.cases:
                results.setdefault("raw pyzmq relay (same stream)", []).append(bench_raw(args.seconds))
    finally:
        stop(server)
        shutil.rmtree(config_dir, ignore_errors=True)
    print(f"{args.repeats} runs of {args.seconds:g} s each; min / median; CPU = % of one core of the generating or "
          f"relaying process")
    print(f"| {'case':<38} | {'frames/s':^17} | {'CPU %':^17} | {'CPU ms/frame':^17} | {'pulse-id gaps':^17} |")
    print(f"|{'-' * 40}|{'-' * 19}|{'-' * 19}|{'-' * 19}|{'-' * 19}|")
    for name, runs in results.items():
        print(summarize(name, runs))
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
