"""The cluster of issue 14 across hosts: placement, failover of permanent instances, the managers' request overhead.

Builds :class:`tests.helpers.cluster_hosts.HostsCluster` (network namespaces on a bridge: Redis and both managers on
host ``infra``, a camera worker and a pipeline worker on each of hosts ``a``, ``b``, ``c``; needs root and a private
network namespace), then measures:

1. **placement**: ``--placements`` (60) private pipeline instances, each of its own small simulated camera, created
   through the pipeline manager one after the other (``POST /api/v1/pipeline``: placement, the camera's start
   through the camera manager, the start on the worker); min / median / p99 per placement, then the balance: the
   instances per worker and the load the workers report (``GET /api/v1/proxy/servers``). Baseline: the same create
   sent to one worker directly.
2. **failover**: ``--permanent`` (20) permanent instances, all placed on one worker (the others non-expanding while
   they are placed); that worker is killed (kill -9, with its instances) and the time is taken until the manager
   marks it dead and until every instance has streamed a message from its new host; ``--repeats`` times, a different
   worker each time (the killed one is restarted).
3. **request overhead**: ``GET`` of an instance's info and of the instance stream address through the manager
   against the same route on the worker that runs it, sequential (latency) and with ``--clients`` concurrent
   clients (req/s), ``--repeats`` times.

Every table shows min / median over the repeats and the ratio against the baseline measured in the same run.

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_cluster.py'
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers (network namespaces, cluster)

from cam_server.client.pipeline_client import PipelineClient  # noqa: E402
from cam_server.client.proxy_client import ProxyClient  # noqa: E402
from cam_server.client.rest import ErrorAnswer  # noqa: E402
from tests.helpers.cluster_hosts import HostsCluster, Server, set_workers_file, small_camera, workers_file  # noqa: E402
from tests.helpers.netns import netns_unavailable  # noqa: E402
from tests.helpers.procs import wait_until  # noqa: E402
from tests.helpers.streams import receive  # noqa: E402


def quantile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def row(name: str, samples: list[float], baseline: list[float] | None = None, unit: str = "ms") -> str:
    """A table row: min / median / p99 of ``samples`` and the medians' ratio against ``baseline``."""
    ratio = f"{statistics.median(samples) / statistics.median(baseline):.2f}" if baseline else "1.00"
    return (f"| {name} | {len(samples)} | {min(samples):.1f} {unit} | {statistics.median(samples):.1f} {unit} | "
            f"{quantile(samples, 0.99):.1f} {unit} | {ratio} |")


DIRECT_SAMPLES = 10
WARM_CAMERAS = 4
HEADER = "| what | n | min | median | p99 | ratio (median) |\n|---|---|---|---|---|---|"


# --- 1. placement ---------------------------------------------------------------------------------------------------
def bench_placement(cluster: HostsCluster, count: int) -> None:
    manager = PipelineClient(cluster.pipeline_manager.url, timeout=120)
    for managers, workers in ((cluster.camera_managers, cluster.camera_workers),
                              (cluster.pipeline_managers, cluster.pipeline_workers)):
        set_workers_file(managers[0], workers_file(w.url for w in workers.values()))
    worker = cluster.pipeline_workers[cluster.workers[0]]
    direct = PipelineClient(worker.url, timeout=120)
    # Warm-up (not measured): every worker's fork server and camera path, through the manager and directly.
    warm = [manager.create_instance_from_config(_config(f"pw{i}"))[0] for i in range(len(cluster.workers))]
    warm_direct = direct.create_instance_from_config(_config(f"pw{len(cluster.workers)}"))[0]
    for instance_id in warm:
        manager.stop_instance(instance_id)
    direct.stop_instance(warm_direct)
    baseline = []
    for i in range(DIRECT_SAMPLES):  # the same create on one worker directly, each with a camera of its own
        start = time.perf_counter()
        instance_id, _ = direct.create_instance_from_config(_config(f"pd{i}"))
        baseline.append((time.perf_counter() - start) * 1e3)
        direct.stop_instance(instance_id)
    placed: list[float] = []
    for i in range(count):
        start = time.perf_counter()
        manager.create_instance_from_config(_config(f"pc{i}"), f"placed{i}")
        placed.append((time.perf_counter() - start) * 1e3)
    print(f"\n## Placement of {count} pipeline instances (each with its own camera) on {len(cluster.workers)} workers"
          " (each create starts the camera too)")
    print(HEADER)
    print(row("create on one worker directly (baseline)", baseline))
    print(row("create through the manager (placement)", placed, baseline))
    time.sleep(3)  # a few heartbeats: the workers' reported load includes the new instances
    hosts = {iid: found["host"] for iid, found in cluster.proxy_info(cluster.pipeline_manager)["active_instances"]
             .items() if iid.startswith("placed")}
    servers = requests.get(f"{cluster.pipeline_manager.url}/api/v1/proxy/servers", timeout=10).json()
    fields = [k for k in ("load", "instances", "cpu", "memory", "tx", "rx") if isinstance(servers.get(k), list)]
    print("\n| worker | instances placed | " + " | ".join(f"reported {k}" for k in fields) + " |")
    print("|---|---|" + "---|" * len(fields))
    for index, url in enumerate(servers.get("servers", [])):
        reported = [_brief(servers[k][index]) for k in fields]
        print(f"| {cluster.role_of(url)} | {sum(h == url for h in hosts.values())} | " + " | ".join(reported) + " |")
    manager.stop_all_instances()


def _config(camera: str) -> dict[str, Any]:
    """A pipeline of ``camera`` that runs without clients (the measurement must not race its no-client stop)."""
    return {"camera_name": camera, "no_client_timeout": 0}


def _brief(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return str(len(value))
    return str(value)


# --- 2. failover ----------------------------------------------------------------------------------------------------
def _on_one_worker(cluster: HostsCluster, role: str, ids: dict[str, str]) -> None:
    """Make ``ids`` permanent while only ``role``'s worker is expanding, so that all of them land there; then let
    every worker expand again."""
    proxy = ProxyClient(cluster.pipeline_manager.url)
    urls = [w.url for w in cluster.pipeline_workers.values()]
    target = cluster.pipeline_workers[role].url
    set_workers_file(cluster.pipeline_manager, workers_file(urls, **{u: {"expanding": False} for u in urls
                                                                      if u != target}))
    proxy.set_permanent_instances(ids)
    wait_until(lambda: all(cluster.host_of(cluster.pipeline_manager, i) == target for i in ids), 120,
               f"{len(ids)} permanent instances on {role}", interval=0.2)
    client = PipelineClient(cluster.pipeline_manager.url)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: receive(wait_until(lambda: _stream(client, i), 60, f"{i} started"), timeout=30), ids))
    set_workers_file(cluster.pipeline_manager, workers_file(urls))


def _stream(client: PipelineClient, instance_id: str) -> str | None:
    """The instance's stream address, None while the manager answers that it does not run (yet)."""
    try:
        return client.get_instance_stream(instance_id)
    except ErrorAnswer:
        return None


def bench_failover(cluster: HostsCluster, count: int, repeats: int) -> None:
    client = PipelineClient(cluster.pipeline_manager.url)
    dead: list[float] = []
    all_streaming: list[float] = []
    each_streaming: list[float] = []
    not_yet = [0]  # stream requests answered "not running" between placement and start
    for repeat in range(repeats):
        role = cluster.workers[repeat % len(cluster.workers)]
        ids = {f"perm{repeat}_{i}": f"bp{i}" for i in range(count)}
        _on_one_worker(cluster, role, ids)
        worker = cluster.pipeline_workers[role]
        pids = [client.get_instance_info(i)["pid"] for i in ids]
        start = time.monotonic()
        worker.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda w=worker: w.url not in cluster.alive_workers(cluster.pipeline_manager), 60,
                   f"{worker.name} marked dead", interval=0.05)
        dead.append(time.monotonic() - start)

        def streaming_again(instance_id: str, old: str = worker.url, begun: float = start) -> float:
            def new_stream() -> str | None:
                if cluster.host_of(cluster.pipeline_manager, instance_id) in (None, old):
                    return None
                stream = _stream(client, instance_id)
                not_yet[0] += stream is None
                return stream

            receive(wait_until(new_stream, 120, f"{instance_id} moved", interval=0.1), timeout=60)
            return time.monotonic() - begun

        with ThreadPoolExecutor(count) as pool:
            times = list(pool.map(streaming_again, ids))
        each_streaming.extend(times)
        all_streaming.append(max(times))
        ProxyClient(cluster.pipeline_manager.url).set_permanent_instances({})
        for instance_id in ids:
            with contextlib.suppress(Exception):
                client.stop_instance(instance_id)
        worker.restart()
        cluster.wait_workers_alive()
    print(f"\n## Failover: a worker with {count} permanent instances killed (kill -9), {repeats} times "
          f"(heartbeat {cluster.heartbeat} s, dead after {cluster.dead_after} s)")
    print(HEADER)
    print(row("worker marked dead", [t * 1e3 for t in dead], unit="ms"))
    print(row(f"all {count} streaming again", [t * 1e3 for t in all_streaming], [t * 1e3 for t in dead]))
    print(row("each instance streaming again", [t * 1e3 for t in each_streaming], [t * 1e3 for t in dead]))
    print(f"(ratio: against the time to mark the worker dead; {not_yet[0]} stream requests during failover were "
          "answered 'not running' before the instance had started on its new worker)")


# --- 3. request overhead --------------------------------------------------------------------------------------------
def _latencies(url: str, n: int) -> list[float]:
    session = requests.Session()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        answer = session.get(url, timeout=10)
        out.append((time.perf_counter() - start) * 1e3)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {url}: {answer.status_code} {answer.text[:300]}")
    return out


def _throughput(url: str, clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            session.get(url, timeout=10).raise_for_status()
            done[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def bench_overhead(cluster: HostsCluster, repeats: int, n: int, clients: int, seconds: float) -> None:
    client = PipelineClient(cluster.pipeline_manager.url)
    instance_id, _ = client.create_instance_from_config(_config("pw0"), "overhead")
    worker: Server = cluster.pipeline_workers[cluster.role_of(cluster.host_of(cluster.pipeline_manager,
                                                                               instance_id) or "")]
    routes = {"instance info": f"/api/v1/pipeline/instance/{instance_id}/info",
              "instance stream": f"/api/v1/pipeline/instance/{instance_id}"}
    print(f"\n## Request overhead of the manager ({n} sequential requests and {clients} clients for {seconds} s, "
          f"{repeats} repeats; medians of each repeat)")
    print("| route | via | latency min | latency median | req/s min | req/s median | latency ratio | "
          "req/s ratio |\n|---|---|---|---|---|---|---|---|")
    for name, path in routes.items():
        measured: dict[str, tuple[list[float], list[float]]] = {}
        for via, base in (("worker (baseline)", worker.url), ("manager", cluster.pipeline_manager.url)):
            latency = [statistics.median(_latencies(base + path, n)) for _ in range(repeats)]
            rate = [_throughput(base + path, clients, seconds) for _ in range(repeats)]
            measured[via] = (latency, rate)
        base_latency, base_rate = measured["worker (baseline)"]
        for via, (latency, rate) in measured.items():
            print(f"| {name} | {via} | {min(latency):.2f} ms | {statistics.median(latency):.2f} ms | {min(rate):.0f} | "
                  f"{statistics.median(rate):.0f} | {statistics.median(latency) / statistics.median(base_latency):.2f}"
                  f" | {statistics.median(rate) / statistics.median(base_rate):.2f} |")
    client.stop_instance(instance_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--placements", type=int, default=60)
    parser.add_argument("--permanent", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per repeat")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="of each throughput repeat")
    parser.add_argument("--logs", type=Path, default=None, help="keep the servers' logs in this folder")
    parser.add_argument("--only", choices=("placement", "failover", "overhead"), action="append",
                        help="run only these parts (repeatable)")
    args = parser.parse_args()
    reason = netns_unavailable()
    if reason:
        print(f"bench_cluster needs network namespaces: {reason}", file=sys.stderr)
        return 2
    cameras = {f"pc{i}": small_camera(f"pc{i}", (32, 24), 2) for i in range(args.placements)}
    cameras.update({f"pd{i}": small_camera(f"pd{i}", (32, 24), 2) for i in range(DIRECT_SAMPLES)})
    cameras.update({f"pw{i}": small_camera(f"pw{i}", (32, 24), 2) for i in range(WARM_CAMERAS)})
    cameras.update({f"bc{i}": small_camera(f"bc{i}", (32, 24), 2) for i in range(args.permanent)})
    pipelines = {f"bp{i}": {"camera_name": f"bc{i}", "no_client_timeout": 0} for i in range(args.permanent)}
    parts: dict[str, Callable[[HostsCluster], None]] = {
        "placement": lambda c: bench_placement(c, args.placements),
        "failover": lambda c: bench_failover(c, args.permanent, args.repeats),
        "overhead": lambda c: bench_overhead(c, args.repeats, args.requests, args.clients, args.seconds),
    }
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp, \
            HostsCluster(args.logs or Path(tmp), cameras=cameras, pipelines=pipelines, grace=15) as cluster:
        print(f"cluster: infra {cluster.infra.address}, workers "
              + ", ".join(f"{h.role} {h.address}" for h in cluster.worker_hosts()) + f" ({os.cpu_count()} cores)")
        for name, part in parts.items():
            if not args.only or name in args.only:
                part(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
