"""REST latency of the pipeline server: create + stop of an instance, sequential and with concurrent clients.

Starts a real camera server and pipeline server (``tests.helpers.servers``: loopback, free ports, temporary config
copy), then measures
``POST /api/v1/pipeline`` (create, incl. the camera server call and the process start) and
``DELETE /api/v1/pipeline/<id>`` (stop, incl. joining the process). Prints a table with p50/p99 in ms.

    .venv/bin/python benchmarks/bench_pipeline_rest.py [--n 40] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers (servers)

from tests.helpers.servers import camera_server, pipeline_server  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


CONFIG: dict = {"camera_name": "simulation"}


def create_stop(session: requests.Session, url: str, create: list[float], stop: list[float],
                both: list[float]) -> None:
    t0 = time.perf_counter()
    r = session.post(f"{url}/api/v1/pipeline", json=CONFIG, timeout=60)
    t1 = time.perf_counter()
    body = r.json()
    if body.get("state") != "ok":
        raise RuntimeError(body)
    r = session.delete(f"{url}/api/v1/pipeline/{body['instance_id']}", timeout=60)
    t2 = time.perf_counter()
    if r.json().get("state") != "ok":
        raise RuntimeError(r.json())
    create.append((t1 - t0) * 1e3)
    stop.append((t2 - t1) * 1e3)
    both.append((t2 - t0) * 1e3)


def row(name: str, values: list[float]) -> str:
    return (f"| {name:<34} | {len(values):>4} | {percentile(values, 0.5):>8.1f} | {percentile(values, 0.99):>8.1f} "
            f"| {statistics.mean(values):>8.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="create+stop cycles per client")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--config", default=json.dumps(CONFIG), help="pipeline config of the created instances")
    args = parser.parse_args()
    CONFIG.clear()
    CONFIG.update(json.loads(args.config))

    with tempfile.TemporaryDirectory(prefix="bench_pipeline_rest_") as tmp, \
            camera_server(Path(tmp), log_level="WARNING") as cam, \
            pipeline_server(Path(tmp), cam.url, log_level="WARNING") as pipe:
        pipe_url = pipe.url
        session = requests.Session()
        # Keep the camera running (its stream is shared by all instances) and warm everything up.
        keep = session.post(f"{pipe_url}/api/v1/pipeline", json={"camera_name": "simulation",
                                                                  "no_client_timeout": 0}, timeout=60).json()
        for _ in range(3):
            create_stop(session, pipe_url, [], [], [])

        seq: tuple[list[float], list[float], list[float]] = ([], [], [])
        for _ in range(args.n):
            create_stop(session, pipe_url, *seq)

        conc: tuple[list[float], list[float], list[float]] = ([], [], [])
        errors: list[Exception] = []

        def client() -> None:
            s = requests.Session()
            try:
                for _ in range(args.n):
                    create_stop(s, pipe_url, *conc)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
        session.delete(f"{pipe_url}/api/v1/pipeline/{keep['instance_id']}", timeout=60)

        print(f"config: {json.dumps(CONFIG)}\n")
        print("| operation (ms)                     |    n |      p50 |      p99 |     mean |")
        print("|------------------------------------|------|----------|----------|----------|")
        print(row("create, sequential", seq[0]))
        print(row("stop, sequential", seq[1]))
        print(row("create+stop, sequential", seq[2]))
        print(row(f"create, {args.clients} concurrent clients", conc[0]))
        print(row(f"stop, {args.clients} concurrent clients", conc[1]))
        print(row(f"create+stop, {args.clients} concurrent clients", conc[2]))
        total = args.clients * args.n
        print(f"\nconcurrent throughput: {total / wall:.1f} create+stop cycles/s "
              f"(sequential: {1000 / statistics.mean(seq[2]):.1f}/s)")


if __name__ == "__main__":
    main()
