"""REST latency of the pipeline server: create + stop of an instance, sequential and with concurrent clients.

Starts a real camera server and pipeline server (``tests.helpers.servers``: loopback, free ports, temporary config
copy), then measures
``POST /api/v1/pipeline`` (create, incl. the camera server call and the process start) and
``DELETE /api/v1/pipeline/<id>`` (stop, incl. joining the process). Prints a table with p50/p99 in ms.

With ``--info``: read-only throughput instead. ``--instances`` pipeline instances run (simulation camera); ``--clients``
clients read ``GET /api/v1/pipeline/info`` (and, with ``--instance-info``, an instance's ``info``) as fast as
they can for ``--seconds``; prints req/s (min / median of ``--repeats`` rounds) and p50/p99 in ms, and with ``--memory``
the PSS / RSS of each instance (issue 13). ``--variants`` compares pipeline servers started with different arguments
(HTTP parser, event loop) in the same run, interleaved; ``--floor`` adds a bare ASGI app sending the same answer
with the same stack (what the clients and uvicorn cost alone on this machine, the ceiling of any server).

    .venv/bin/python benchmarks/bench_pipeline_rest.py [--n 40] [--clients 8]
    .venv/bin/python benchmarks/bench_pipeline_rest.py --info [--clients 8] [--instances 4] [--seconds 10]
    .venv/bin/python benchmarks/bench_pipeline_rest.py --info --instances 1 --camera-size 2560x2160 --frame-rate 100 \
        --memory
    .venv/bin/python benchmarks/bench_pipeline_rest.py --info --repeats 3 \
        --variants="CAM_SERVER_INFO_CACHE_S=0 --http h11 --loop asyncio;--http h11 --loop asyncio;--http httptools"
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def read_info(url: str, clients: int, seconds: float) -> tuple[float, list[float]]:
    """``clients`` threads GET ``url`` for ``seconds``; (requests/s, latencies in ms)."""
    latencies: list[float] = []
    errors: list[Exception] = []
    stop_at = time.perf_counter() + seconds

    parts = urllib.parse.urlsplit(url)

    def client() -> None:
        # http.client on one kept-alive connection: a third of requests' own cost per request, so that the clients
        # (threads of this one process, on the same machine) measure the server more than themselves.
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine = []
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                conn.request("GET", parts.path)
                r = conn.getresponse()
                body = r.read()
                mine.append((time.perf_counter() - t0) * 1e3)
                if r.status != 200:
                    raise RuntimeError(body)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            conn.close()
        latencies.extend(mine)

    wall = _run_clients(client, clients, errors)
    return len(latencies) / wall, latencies


def _run_clients(client: Callable[[], None], count: int, errors: list[Exception]) -> float:
    """``count`` threads running ``client`` at once; the wall time they took (the first error re-raised)."""
    threads = [threading.Thread(target=client) for _ in range(count)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _create_camera(cam_url: str, args: argparse.Namespace) -> None:
    """A simulated uint16 camera of ``--camera-size`` (``bench_size``) for the instances to read."""
    width, height = (int(v) for v in args.camera_size.lower().split("x"))
    camera = {"name": "bench_size", "source": "simulation", "source_type": "simulation", "size_x": width,
              "size_y": height, "frame_rate": args.frame_rate, "dtype": "uint16", "mirror_x": False,
              "mirror_y": False, "rotate": 0, "camera_calibration": None}
    requests.post(f"{cam_url}/api/v1/cam/bench_size/config", json=camera, timeout=30).raise_for_status()
    CONFIG["camera_name"] = "bench_size"


def _report_memory(api: str) -> None:
    time.sleep(5.5)  # PSS is refreshed at most every 5 s: read one taken while streaming, not at the start
    active = requests.get(f"{api}/info", timeout=30).json()["info"]["active_instances"]
    for iid, info in active.items():
        stats = info["statistics"]
        pss, rss = stats.get("memory_pss"), stats.get("memory_rss")
        print(f"instance {iid[:8]}: PSS {pss / 2**20 if pss else float('nan'):.1f} MiB, "
              f"RSS {rss / 2**20 if rss else float('nan'):.1f} MiB, frame {stats.get('frame_shape')}")


def parse_variant(text: str) -> tuple[dict[str, str], list[str]]:
    """A variant's environment (leading ``NAME=value`` words, e.g. ``CAM_SERVER_INFO_CACHE_S=0``) and arguments."""
    words = shlex.split(text)
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


async def _bare_app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = BARE_BODY[0]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


BARE_BODY = [b""]


def _serve_bare(port: int, body: bytes) -> None:
    import uvicorn

    BARE_BODY[0] = body
    uvicorn.run(_bare_app, host="127.0.0.1", port=port, http="httptools", loop="uvloop", log_level="warning")


@contextlib.contextmanager
def _bare_server(body: bytes) -> Iterator[str]:
    """A process serving ``body`` to every request with the servers' stack: what the clients and uvicorn cost alone."""
    import multiprocessing

    from tests.helpers.net import free_port
    from tests.helpers.procs import wait_until

    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=_serve_bare, args=(port, body), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}/api/v1/pipeline/info"
    try:
        wait_until(lambda: requests.get(url, timeout=1).ok, 30, "the bare server")
        yield url
    finally:
        process.terminate()
        process.join(10)


def info_benchmark(args: argparse.Namespace) -> None:
    """Every variant (a pipeline server started with its own environment and arguments, e.g.
    ``CAM_SERVER_INFO_CACHE_S=0 --http h11 --loop asyncio``) in
    interleaved rounds: per round and variant the instances are created, the routes read, the instances stopped; so
    that the machine's load (shared with others) falls on all variants alike. Ratios are against the first variant."""
    variants = [v.strip() for v in args.variants.split(";")] if args.variants else [""]
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_rest_") as tmp, contextlib.ExitStack() as stack:
        for i in range(len(variants)):
            (Path(tmp) / f"variant{i}").mkdir()
        cam = stack.enter_context(camera_server(Path(tmp) / "camera", log_level="WARNING"))
        if args.camera_size:
            _create_camera(cam.url, args)
        pipes = []
        for i, variant in enumerate(variants):
            env, extra = parse_variant(variant)
            pipes.append(stack.enter_context(pipeline_server(
                Path(tmp) / f"variant{i}", cam.url, env=env, log_level="WARNING",
                extra_args=[*shlex.split(args.server_args), *extra])))
        print(f"config: {json.dumps(CONFIG)}, {args.instances} instances, {args.clients} clients, "
              f"{args.seconds:g} s x {args.repeats} rounds, server args {args.server_args!r}, "
              f"load average {os.getloadavg()[0]:.2f}\n")
        routes = ["info"] + (["instance info"] if args.instance_info else [])
        results: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
        floor: str | None = None
        for round_no in range(args.repeats):
            for i, pipe in enumerate(pipes):
                api = f"{pipe.url}/api/v1/pipeline"
                ids = [requests.post(api, json={**CONFIG, "no_client_timeout": 0}, timeout=60).json()["instance_id"]
                       for _ in range(args.instances)]
                time.sleep(args.settle)  # streaming, and the first cpu figures are in
                urls = [f"{api}/info"] + ([f"{api}/instance/{ids[0]}/info"] if args.instance_info and ids else [])
                for route, url in zip(routes, urls, strict=False):
                    read_info(url, args.clients, 1.0)  # warm-up
                    rate, lat = read_info(url, args.clients, args.seconds)
                    results.setdefault((i, route), []).append((rate, percentile(lat, 0.5), percentile(lat, 0.99)))
                if args.memory and round_no == 0 and i == 0:
                    _report_memory(api)
                if floor is None and args.floor:  # the same answer from a bare ASGI app: the stack's ceiling
                    floor = stack.enter_context(_bare_server(requests.get(urls[0], timeout=30).content))
                for iid in ids:
                    requests.delete(f"{api}/{iid}", timeout=60)
            if floor is not None:
                read_info(floor, args.clients, 1.0)
                rate, lat = read_info(floor, args.clients, args.seconds)
                results.setdefault((len(variants), "info"), []).append(
                    (rate, percentile(lat, 0.5), percentile(lat, 0.99)))
        print(f"load average at the end {os.getloadavg()[0]:.2f}\n")
        print("| variant (server args) | route | req/s min | req/s median | ratio (median) | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        for route in routes:
            base = _median([r[0] for r in results[(0, route)]])
            labels = [*variants, "floor: a bare ASGI app sending the same bytes (uvicorn, httptools, uvloop)"]
            for i, variant in enumerate(labels):
                rows = results.get((i, route))
                if rows is None:
                    continue
                rates = [r[0] for r in rows]
                print(f"| {variant or '(default)'} | {route} | {min(rates):.0f} | {_median(rates):.0f} | "
                      f"{_median(rates) / base:.2f} | {_median([r[1] for r in rows]):.2f} | "
                      f"{_median([r[2] for r in rows]):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="create+stop cycles per client")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--config", default=json.dumps(CONFIG), help="pipeline config of the created instances")
    parser.add_argument("--info", action="store_true", help="measure GET .../info throughput instead")
    parser.add_argument("--instance-info", action="store_true", help="with --info: also an instance's info route")
    parser.add_argument("--instances", type=int, default=4, help="with --info: running instances")
    parser.add_argument("--seconds", type=float, default=10.0, help="with --info: seconds per route")
    parser.add_argument("--camera-size", default="", help="with --info: a simulated uint16 camera WxH to read, "
                        "e.g. 2560x2160")
    parser.add_argument("--frame-rate", type=float, default=10.0, help="with --camera-size: its frame rate")
    parser.add_argument("--settle", type=float, default=2.0, help="with --info: seconds before measuring")
    parser.add_argument("--variants", default="", help="with --info: ';'-separated pipeline server environments "
                        "(leading NAME=value words) and argument sets "
                        "to compare in interleaved rounds, e.g. --variants='--http h11 --loop asyncio;--http "
                        "httptools --loop uvloop' (ratios against the first)")
    parser.add_argument("--server-args", default="", help="more arguments for every pipeline server")
    parser.add_argument("--repeats", type=int, default=3, help="with --info: rounds over the variants")
    parser.add_argument("--floor", action="store_true", help="with --info: also a bare ASGI app sending the same "
                        "answer, each round (the clients' and uvicorn's own ceiling on this machine)")
    parser.add_argument("--memory", action="store_true", help="with --info: PSS / RSS of the first variant's "
                        "instances (adds 5.5 s)")
    args = parser.parse_args()
    CONFIG.clear()
    CONFIG.update(json.loads(args.config))
    if args.info:
        info_benchmark(args)
        return

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

        wall = _run_clients(client, args.clients, errors)
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
