"""Latency of the quick routes while slow requests pile up (issue 11 item 1: the goal is < 100 ms).

Starts a real camera server and pipeline server (``tests.helpers.servers``, default limits) with a camera without
frames (``silent``: a bsread source address nobody sends to) and a slow one (``slow``: simulation at 1 Hz), then
runs two bursts of ``--clients`` slow requests whose clients give up after ``--give-up`` seconds:

* camera server: ``GET /api/v1/cam/silent/image?timeout=30``, while polling ``GET /api/v1/cam/info``;
* pipeline server: ``POST /api/v1/pipeline/camera/slow/background?n_images=10000``, while polling
  ``GET /api/v1/pipeline/info`` and an instance's ``info``, stream and ``config``.

Prints p50 / p99 / max of the polled routes and how long after the last client gave up the abandoned work had
stopped (``long_requests`` back to 0 in the server info).

    .venv/bin/python benchmarks/bench_starvation.py [--clients 45] [--give-up 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers (servers)

from tests.helpers.net import free_port  # noqa: E402
from tests.helpers.servers import camera_server, pipeline_server, write_config_dir  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def burst(method: str, url: str, clients: int, give_up: float) -> list[threading.Thread]:
    def one() -> None:
        try:
            requests.request(method, url, timeout=give_up)
        except requests.Timeout:
            pass

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def measure(threads: list[threading.Thread], urls: list[str], info_url: str) -> tuple[list[float], float]:
    """Latencies (ms) of ``urls`` polled while ``threads`` run, and the seconds from the last client giving up to
    no long request running."""
    latencies: list[float] = []
    session = requests.Session()
    while any(t.is_alive() for t in threads):
        for url in urls:
            start = time.perf_counter()
            session.get(url, timeout=60).raise_for_status()
            latencies.append((time.perf_counter() - start) * 1e3)
        time.sleep(0.02)
    gave_up = time.perf_counter()
    while True:
        long = session.get(info_url, timeout=60).json()["info"]["long_requests"]
        if long["running"] == 0 and long["clients"] == 0:
            return latencies, time.perf_counter() - gave_up
        time.sleep(0.01)


def row(name: str, values: list[float], recovery: float) -> str:
    return (f"| {name:<50} | {len(values):>4} | {percentile(values, 0.5):>6.1f} | {percentile(values, 0.99):>6.1f} "
            f"| {max(values):>6.1f} | {recovery:>8.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=45, help="slow requests per burst")
    parser.add_argument("--give-up", type=float, default=2.0, help="the slow clients' timeout (s)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_starvation_") as tmp:
        folder = Path(tmp)
        configs = write_config_dir(folder / "camera_configs")
        (configs / "silent.json").write_text(json.dumps(
            {"name": "silent", "source_type": "bsread", "source": f"tcp://127.0.0.1:{free_port()}"}))
        (configs / "slow.json").write_text(json.dumps(
            {"name": "slow", "source_type": "simulation", "source": "simulation", "size_x": 64, "size_y": 48,
             "frame_rate": 1}))
        with camera_server(folder, config_dir=configs, log_level="WARNING") as cam, \
                pipeline_server(folder, cam.url, log_level="WARNING") as pipe:
            cam_api, pipe_api = f"{cam.url}/api/v1/cam", f"{pipe.url}/api/v1/pipeline"
            created = requests.post(pipe_api, json={"camera_name": "slow"}, timeout=60).json()
            instance = f"{pipe_api}/instance/{created['instance_id']}"

            threads = burst("GET", f"{cam_api}/silent/image?timeout=30", args.clients, args.give_up)
            cam_latencies, cam_recovery = measure(threads, [f"{cam_api}/info"], f"{cam_api}/info")
            threads = burst("POST", f"{pipe_api}/camera/slow/background?n_images=10000", args.clients, args.give_up)
            pipe_latencies, pipe_recovery = measure(
                threads, [f"{pipe_api}/info", f"{instance}/info", instance, f"{instance}/config"], f"{pipe_api}/info")

    print(f"{args.clients} slow requests per burst, clients give up after {args.give_up:g} s\n")
    print("| quick requests during the burst (ms)               |    n |    p50 |    p99 |    max | stop (s) |")
    print("|----------------------------------------------------|------|--------|--------|--------|----------|")
    print(row("camera: GET info (burst: GET image)", cam_latencies, cam_recovery))
    print(row("pipeline: GET info, instance routes (background)", pipe_latencies, pipe_recovery))


if __name__ == "__main__":
    main()
