"""Placement rules one by one (psi-interface.md §4, then measured load), which manager routes go to workers, and the
back-off of a permanent instance in a crash loop."""

from __future__ import annotations

import pytest

from cam_server.cluster.manager import (
    PERMANENT_RETRY_MAX_S,
    PERMANENT_RETRY_S,
    PERMANENT_STABLE_S,
    crash_loop_delay,
)
from cam_server.cluster.manager_app import camera_routes_to_cluster, pipeline_routes_to_cluster
from cam_server.cluster.placement import NoWorker, Request, load, pinned_port_of, place
from cam_server.cluster.state import InstanceRecord

pytestmark = pytest.mark.unit

A, B, C = "http://10.0.0.1:8889", "http://10.0.0.2:8889", "http://10.0.0.3:8889"


def workers(**cpu: float) -> dict[str, dict]:
    """Alive workers A, B, C with the given cpu percent (default 0)."""
    return {url: {"alive": True, "cpu": cpu.get(name, 0.0), "tx": 0, "rx": 0}
            for name, url in (("a", A), ("b", B), ("c", C))}


def pipeline(iid: str, host: str, camera: str) -> InstanceRecord:
    return InstanceRecord(iid, host, "tcp://x:1", {"camera_name": camera}, "private")


def test_pinned_wins_even_on_a_worker_that_is_not_expanding() -> None:
    servers = {A: {"expanding": False, "instances": ["my_pipe:9000"]}}
    request = Request("id1", "my_pipe", "cam")
    assert place(request, workers(a=90), servers, [pipeline("p", B, "cam")]) == (A, "pinned")
    assert pinned_port_of(request, servers, A) == 9000
    assert place(Request("my_pipe"), workers(), servers, [])[0] == A  # pinned by instance id too


def test_same_camera_before_listed_cameras_and_load() -> None:
    servers = {C: {"cameras": ["cam"]}}
    records = [pipeline("p", B, "cam"), pipeline("q", A, "other")]
    assert place(Request("new", None, "cam"), workers(b=80), servers, records) == (B, "same camera")


def test_listed_camera_before_the_camera_host() -> None:
    servers = {C: {"cameras": ["cam"]}}
    assert place(Request("new", None, "cam"), workers(c=80), servers, [], camera_host="10.0.0.1") == (
        C, "camera listed")


def test_camera_host_before_least_loaded() -> None:
    assert place(Request("new", None, "cam"), workers(a=80), None, [], camera_host="10.0.0.1") == (A, "camera host")


def test_least_loaded_by_measured_cpu_and_network_not_just_count() -> None:
    records = [pipeline(f"p{i}", A, f"c{i}") for i in range(3)]  # A runs 3 idle instances
    assert place(Request("new"), workers(b=60, c=30), None, records) == (A, "least loaded")
    busy_net = workers()
    busy_net[A]["tx"] = 250e6  # 2 Gbit/s out: as busy as two cores
    assert place(Request("new"), busy_net, None, [])[0] != A
    assert load(busy_net[A], 0) == pytest.approx(2.0)
    assert place(Request("new"), workers(), None, records)[0] != A  # equal cpu: fewer instances wins


def test_disabled_dead_and_not_expanding_workers_get_nothing() -> None:
    state = workers()
    state[C]["alive"] = False
    servers = {A: {"enabled": False}, B: {"expanding": False}}
    with pytest.raises(NoWorker):
        place(Request("new"), state, servers, [])
    assert place(Request("new"), state, {A: {"enabled": False}}, [])[0] == B
    assert place(Request("new"), workers(), {A: {"enabled": False, "instances": ["new"]}}, [])[0] != A


@pytest.mark.parametrize(("method", "path", "cluster"), [
    ("GET", "/api/v1/cam", False), ("DELETE", "/api/v1/cam", True), ("GET", "/api/v1/cam/info", True),
    ("GET", "/api/v1/cam/aliases", False), ("GET", "/api/v1/cam/simulation", True),
    ("GET", "/api/v1/cam/simulation/config", False), ("POST", "/api/v1/cam/simulation/config", True),
    ("GET", "/api/v1/cam/simulation/image", True), ("GET", "/api/v1/cam/simulation/is_online", False),
    ("GET", "/api/v1/proxy/status", True), ("GET", "/view/simulation", True), ("GET", "/metrics", False),
])
def test_camera_routes_to_cluster(method: str, path: str, cluster: bool) -> None:
    assert camera_routes_to_cluster(method, path) is cluster


@pytest.mark.parametrize(("method", "path", "cluster"), [
    ("GET", "/api/v1/pipeline", False), ("POST", "/api/v1/pipeline", True), ("GET", "/api/v1/pipeline/info", True),
    ("POST", "/api/v1/pipeline/instance/", True), ("GET", "/api/v1/pipeline/instance/x/info", True),
    ("POST", "/api/v1/pipeline/simulation_sp", True), ("DELETE", "/api/v1/pipeline/x", True),
    ("GET", "/api/v1/pipeline/simulation_sp/config", False), ("GET", "/api/v1/pipeline/background", False),
    ("POST", "/api/v1/pipeline/camera/simulation/background", False), ("GET", "/api/v1/pipeline/groups", False),
])
def test_pipeline_routes_to_cluster(method: str, path: str, cluster: bool) -> None:
    assert pipeline_routes_to_cluster(method, path) is cluster


def test_a_crash_loop_backs_off_doubling_to_the_cap_and_a_long_run_resets_it() -> None:
    """The back-off of a permanent instance that keeps ending early (judged once per run, whatever time passes while
    it waits: a judged run that has waited 32 s is no long run)."""
    last, delays = None, []
    for run in range(8):
        delay = crash_loop_delay(last, float(run), ran=1.0)
        assert crash_loop_delay({"delay": delay, "run": float(run)}, float(run), ran=PERMANENT_STABLE_S + 40) is None
        delays.append(delay)
        last = {"delay": delay, "run": float(run)}
    assert delays == [PERMANENT_RETRY_S * 2**i for i in range(5)] + [PERMANENT_RETRY_MAX_S] * 3  # 2 … 32, then 60
    assert crash_loop_delay(last, 99.0, ran=PERMANENT_STABLE_S) == 0.0  # a run that lasted: at once
    assert crash_loop_delay(None, 100.0, ran=1.0) == PERMANENT_RETRY_S  # (its history cleared) afresh
