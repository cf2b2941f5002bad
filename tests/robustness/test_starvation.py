"""Slow requests cannot starve the REST API (issue 11 item 1): long waits run apart, de-duplicated, are cancelled
when their clients give up, and are bounded (429 beyond the bound); info and the instance routes stay quick.

Was: 45 ``GET .../image?timeout=30`` of a camera without frames, or 45 ``POST .../background?n_images=10000``
of a slow camera, each from a client that gave up after a few seconds, kept running in the server's thread pool
(40 threads) and ``GET info`` waited for minutes.

Real servers with small bounds (``--max_long_requests 4 --max_blocking_requests 4``) and their own cameras:
``silent_<k>``, bsread cameras whose source address has no sender (no frame ever), and ``slow``, a simulated
camera at 1 frame per second. The measured latencies are printed (``-s``); the issue's 100 ms is the goal under
normal load (benchmarks/bench_starvation.py), the assertions allow 1 s because two shared cores are noisy.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from cam_server.cli import camera_server as camera_server_cli
from cam_server.cli import pipeline_server as pipeline_server_cli
from cam_server.common.limits import Gate, TooBusy
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until
from tests.helpers.servers import RunningServer, camera_server, pipeline_server, write_config_dir

CAM = "/api/v1/cam"
PIPE = "/api/v1/pipeline"
SLOW_REQUESTS = 45
GIVE_UP_S = 2.0  # the slow clients' own timeout
QUICK_BOUND_S = 1.0  # asserted for info / instance routes during a burst (the goal is 100 ms)
RECOVERY_BOUND_S = 3.0  # abandoned work stopped (long_requests back to 0) after the last client gave up
LIMIT = 4
SILENT = [f"silent_{k}" for k in range(6)]
LIMIT_ARGS = ["--max_long_requests", str(LIMIT), "--max_blocking_requests", str(LIMIT)]


@dataclass
class Limited:
    camera: RunningServer
    pipeline: RunningServer
    backgrounds: Path


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    tmp = tmp_path_factory.mktemp("starvation")
    configs = write_config_dir(tmp / "camera_configs")
    for name in SILENT:  # nothing ever sends to these addresses
        (configs / f"{name}.json").write_text(json.dumps(
            {"name": name, "source_type": "bsread", "source": f"tcp://127.0.0.1:{free_port()}"}))
    (configs / "slow.json").write_text(json.dumps(
        {"name": "slow", "source_type": "simulation", "source": "simulation", "size_x": 64, "size_y": 48,
         "frame_rate": 1}))
    with camera_server(tmp, config_dir=configs, extra_args=LIMIT_ARGS) as cam, \
            pipeline_server(tmp, cam.url, extra_args=LIMIT_ARGS) as pipe:
        yield Limited(cam, pipe, tmp / "background_config")


def long_requests(server: RunningServer, api: str) -> dict:
    return requests.get(f"{server.url}{api}/info", timeout=10).json()["info"].get("long_requests", {})


class Burst:
    """``SLOW_REQUESTS`` clients sending the same slow request at once, each giving up after ``give_up`` s."""

    def __init__(self, method: str, url: str, n: int = SLOW_REQUESTS, give_up: float = GIVE_UP_S) -> None:
        self.outcomes: list[object] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._one, args=(method, url, give_up), daemon=True)
                        for _ in range(n)]
        for thread in self.threads:
            thread.start()

    def _one(self, method: str, url: str, give_up: float) -> None:
        try:
            outcome: object = requests.request(method, url, timeout=give_up).status_code
        except requests.Timeout:
            outcome = "gave up"
        with self._lock:
            self.outcomes.append(outcome)

    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self) -> float:
        """Wait for every client to give up; returns when the last one did (perf_counter)."""
        for thread in self.threads:
            thread.join(60)
        return time.perf_counter()


def poll_while(burst: Burst, urls: list[str], sample: str | None = None) -> tuple[list[float], list[dict]]:
    """GET each of ``urls`` in turn while the burst runs: every latency (s), and the ``long_requests`` info of the
    ``sample`` info route each time."""
    latencies: list[float] = []
    samples: list[dict] = []
    while burst.running():
        for url in urls:
            start = time.perf_counter()
            response = requests.get(url, timeout=30)
            latencies.append(time.perf_counter() - start)
            assert response.status_code == 200, response.text
            if url == sample:
                samples.append(response.json()["info"].get("long_requests", {}))
        time.sleep(0.02)
    return latencies, samples


def wait_recovered(server: RunningServer, api: str, since: float) -> float:
    """Seconds from ``since`` until no long request runs and no client waits."""
    wait_until(lambda: long_requests(server, api) | {"limit": 0, "cancelled": 0, "refused": 0}
               == {"running": 0, "clients": 0, "limit": 0, "cancelled": 0, "refused": 0},
               RECOVERY_BOUND_S, "the abandoned long requests to stop", interval=0.02)
    return time.perf_counter() - since


def report(what: str, latencies: list[float], recovery: float) -> None:
    ordered = sorted(latencies)
    print(f"\n{what}: {len(ordered)} quick requests during the burst, p50 {ordered[len(ordered) // 2] * 1e3:.1f} ms, "
          f"max {ordered[-1] * 1e3:.1f} ms; abandoned work stopped {recovery:.2f} s after the last client gave up")


def waiting_client(server: RunningServer, method: str, path: str) -> socket.socket:
    """A client that sends ``method path`` and waits for the answer until the test closes its socket (gives up)."""
    host, port = server.url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=10)
    client.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode())
    return client


def assert_refused(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["state"] == "error" and f"at most {LIMIT}" in body["status"], body
    assert response.headers["Retry-After"] == "1"


def test_frame_waits_of_a_silent_camera_do_not_starve_the_camera_server(limited: Limited) -> None:
    cam = limited.camera.url
    before = long_requests(limited.camera, CAM)
    burst = Burst("GET", f"{cam}{CAM}/silent_0/image?timeout=30")
    latencies, samples = poll_while(burst, [f"{cam}{CAM}/info"], sample=f"{cam}{CAM}/info")
    gave_up = burst.join()
    assert burst.outcomes == ["gave up"] * SLOW_REQUESTS  # nobody got an answer: there is no frame
    assert max(latencies) < QUICK_BOUND_S, sorted(latencies)[-5:]
    recovery = wait_recovered(limited.camera, CAM, gave_up)
    report("camera server, 45 x GET image of a silent camera", latencies, recovery)
    # One wait for the camera, however many clients: never more than one job, several clients on it.
    assert max(s["running"] for s in samples) == 1, samples
    assert max(s["clients"] for s in samples) > 1, samples
    after = long_requests(limited.camera, CAM)
    assert after["cancelled"] == before["cancelled"] + 1 and after["refused"] == before["refused"]


def test_background_collections_of_a_slow_camera_do_not_starve_the_pipeline_server(limited: Limited) -> None:
    pipe = limited.pipeline.url
    created = requests.post(f"{pipe}{PIPE}", json={"camera_name": "slow"}, timeout=60).json()
    assert created["state"] == "ok", created
    instance = f"{pipe}{PIPE}/instance/{created['instance_id']}"
    before = long_requests(limited.pipeline, PIPE)

    burst = Burst("POST", f"{pipe}{PIPE}/camera/slow/background?n_images=10000")
    latencies, samples = poll_while(burst, [f"{pipe}{PIPE}/info", f"{instance}/info", instance, f"{instance}/config"],
                                    sample=f"{pipe}{PIPE}/info")
    gave_up = burst.join()
    assert burst.outcomes == ["gave up"] * SLOW_REQUESTS
    assert max(latencies) < QUICK_BOUND_S, sorted(latencies)[-5:]
    recovery = wait_recovered(limited.pipeline, PIPE, gave_up)
    report("pipeline server, 45 x POST background n_images=10000 of a 1 Hz camera", latencies, recovery)
    assert max(s["running"] for s in samples) == 1, samples
    assert max(s["clients"] for s in samples) > 1, samples
    after = long_requests(limited.pipeline, PIPE)
    assert after["cancelled"] == before["cancelled"] + 1
    assert not list(limited.backgrounds.glob("slow_*.npy"))  # cancelled: nothing saved
    requests.delete(f"{pipe}{PIPE}/{created['instance_id']}", timeout=30)


def test_more_frame_waits_than_the_limit_are_refused_but_joining_one_is_not(limited: Limited) -> None:
    cam = limited.camera.url
    waits = [waiting_client(limited.camera, "GET", f"{CAM}/{name}/image_bytes?timeout=30") for name in SILENT[1:5]]
    wait_until(lambda: long_requests(limited.camera, CAM)["running"] == LIMIT, 10, f"{LIMIT} frame waits")

    assert_refused(requests.get(f"{cam}{CAM}/{SILENT[5]}/image_bytes?timeout=30", timeout=10))
    assert_refused(requests.get(f"{cam}{CAM}/{SILENT[5]}/is_online", timeout=10))
    # A request for a camera whose wait runs joins it (never refused) and answers at its own timeout.
    joined = requests.get(f"{cam}{CAM}/{SILENT[1]}/image_bytes?timeout=0.5", timeout=10)
    assert joined.status_code == 503, joined.text
    assert joined.json() == {"state": "error", "status": f"No image from camera '{SILENT[1]}' within 0.5 s"}
    assert requests.get(f"{cam}{CAM}/info", timeout=10).json()["info"]["long_requests"]["refused"] >= 2

    for wait in waits:
        wait.close()
    wait_recovered(limited.camera, CAM, time.perf_counter())
    assert requests.get(f"{cam}{CAM}/{SILENT[5]}/is_online", timeout=10).status_code == 200  # room again


def test_more_background_collections_than_the_limit_are_refused(limited: Limited) -> None:
    pipe = limited.pipeline.url
    waits = [waiting_client(limited.pipeline, "POST", f"{PIPE}/camera/slow/background?n_images={n}")
             for n in range(9990, 9990 + LIMIT)]  # different n_images: different collections
    wait_until(lambda: long_requests(limited.pipeline, PIPE)["running"] == LIMIT, 20, f"{LIMIT} collections")

    assert_refused(requests.post(f"{pipe}{PIPE}/camera/slow/background?n_images=5", timeout=10))
    for wait in waits:
        wait.close()
    wait_recovered(limited.pipeline, PIPE, time.perf_counter())
    assert not list(limited.backgrounds.glob("slow_*.npy"))


def test_a_message_wait_is_cancelled_when_its_client_goes(limited: Limited) -> None:
    pipe = limited.pipeline.url
    created = requests.post(f"{pipe}{PIPE}", json={"camera_name": "slow", "paused": True}, timeout=60).json()
    assert created["state"] == "ok", created
    instance_id = created["instance_id"]
    before = long_requests(limited.pipeline, PIPE)
    clients = [waiting_client(limited.pipeline, "GET", f"{PIPE}/instance/{instance_id}/message") for _ in range(3)]
    wait_until(lambda: long_requests(limited.pipeline, PIPE)["clients"] == 3, 10, "three clients on one wait")
    assert long_requests(limited.pipeline, PIPE)["running"] == 1
    for client in clients:
        client.close()
    wait_recovered(limited.pipeline, PIPE, time.perf_counter())
    assert long_requests(limited.pipeline, PIPE)["cancelled"] == before["cancelled"] + 1
    requests.delete(f"{pipe}{PIPE}/{instance_id}", timeout=30)


def test_geometry_of_a_silent_camera_answers_at_its_timeout(limited: Limited) -> None:
    start = time.perf_counter()
    response = requests.get(f"{limited.camera.url}{CAM}/{SILENT[2]}/geometry?timeout=0.5", timeout=30)
    assert response.status_code == 503 and time.perf_counter() - start < 10
    assert response.json() == {"state": "error", "status": f"No image from camera '{SILENT[2]}' within 0.5 s"}
    wait_recovered(limited.camera, CAM, time.perf_counter())  # the last client left: the wait stopped


def test_calls_to_a_hung_camera_server_are_bounded(tmp_path: Path) -> None:
    # A camera server that accepts connections (the kernel's backlog) and never answers.
    hung = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    hung_url = f"http://127.0.0.1:{hung.getsockname()[1]}"
    with pipeline_server(tmp_path, hung_url, extra_args=["--max_blocking_requests", "2"]) as pipe:
        url = pipe.url

        def blocking() -> dict:
            return requests.get(f"{url}{PIPE}/info", timeout=10).json()["info"]["blocking_requests"]

        blocked = [waiting_client(pipe, "GET", f"{PIPE}/camera") for _ in range(2)]  # each holds a server thread
        try:
            wait_until(lambda: blocking()["running"] == 2, 10, "two blocked camera server calls")
            refused = requests.get(f"{url}{PIPE}/camera", timeout=10)
            assert refused.status_code == 429, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["status"].startswith("Server busy: 2 blocking requests"), refused.json()
            start = time.perf_counter()
            assert blocking() == {"running": 2, "limit": 2, "refused": 1}
            assert time.perf_counter() - start < QUICK_BOUND_S
        finally:
            hung.close()  # the waiting connections are reset: the server threads blocked on them end
            for client in blocked:
                client.close()
        wait_until(lambda: blocking()["running"] == 0, 10, "the blocked calls to end")


@pytest.mark.unit
def test_the_gate_bounds_holders_and_lets_a_holder_enter_again() -> None:
    gate = Gate(2, "instance starts")
    entered, leave = threading.Event(), threading.Event()
    outcome: list[object] = []

    def hold() -> None:
        with gate:
            entered.set()
            leave.wait(10)

    def third() -> None:
        try:
            with gate:
                outcome.append("entered")
        except TooBusy as exc:
            outcome.append(exc)

    with gate:
        with gate:  # the same thread again (an input pipeline started first) takes no second place
            assert gate.info() == {"running": 1, "limit": 2, "refused": 0}
        holder = threading.Thread(target=hold)
        holder.start()
        assert entered.wait(10)
        refused = threading.Thread(target=third)
        refused.start()
        refused.join()
        leave.set()
        holder.join()
    (error,) = outcome
    assert isinstance(error, TooBusy) and error.status_code == 429 and error.headers == {"Retry-After": "1"}
    assert str(error).startswith("Server busy: 2 instance starts run already (at most 2)")
    with pytest.raises(RuntimeError), gate:  # a failure inside gives the place back
        raise RuntimeError
    assert gate.info() == {"running": 0, "limit": 2, "refused": 1}


@pytest.mark.unit
@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_the_limits_are_positive_integers(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    for parser in (camera_server_cli.build_parser(), pipeline_server_cli.build_parser()):
        for option in ("--max_long_requests", "--max_blocking_requests"):
            with pytest.raises(SystemExit):
                parser.parse_args([option, value])
            assert f"argument {option}: " in capsys.readouterr().err
    args = camera_server_cli.build_parser().parse_args([])
    assert (args.max_long_requests, args.max_blocking_requests) == (32, 16)
