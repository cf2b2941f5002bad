"""Issue 14 across hosts: managers in front of workers on other hosts (network namespaces on a bridge).

One cluster for the module (:class:`tests.helpers.cluster_hosts.HostsCluster`): Redis and two pairs of managers on
host ``infra``; a camera worker and a pipeline worker on each of hosts ``a``, ``b`` and ``c``. The tests run in
order, the destructive ones last: placement rules (pinning, co-location, cameras listed, the camera's host,
disabled and non-expanding workers), a pipeline on ``a`` reading a camera on ``b`` over the bridge, two managers
answering alike, managers killed and restarted, then failover of a permanent instance when its worker is killed
(kill -9) and when its host's link is cut, each measured against the bound and printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from cam_server.client.proxy_client import ProxyClient
from tests.helpers.cluster_hosts import (
    HostsCluster,
    Server,
    elapsed_since,
    set_workers_file,
    small_camera,
    wait_moved,
    workers_file,
)
from tests.helpers.procs import wait_until
from tests.helpers.streams import connect, receive, values

HEARTBEAT_S = 0.5
DEAD_AFTER_S = 2.0
DEAD_BOUND_S = DEAD_AFTER_S + 2.0  # marked dead: the TTL plus one manager check and a heartbeat's slack
FAILOVER_BOUND_S = DEAD_BOUND_S + 10.0  # streaming again from the new host: dead + placement + start + first frame

CAMERAS = ["cam_b", "cam_colo", "cam_list", "cam_stream", "cam_x1", "cam_x2", "cam_x3", "cam_pin", "cam_perm"]
PIPELINES = {"pipe_ab": {"camera_name": "cam_b"},
             "pipe_perm": {"camera_name": "cam_perm", "no_client_timeout": 0}}  # runs without clients, as in production


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostsCluster]:
    with HostsCluster(tmp_path_factory.mktemp("cluster_hosts"), cameras={n: small_camera(n) for n in CAMERAS},
                      pipelines=PIPELINES, heartbeat=HEARTBEAT_S, dead_after=DEAD_AFTER_S,
                      second_managers=True) as running:
        yield running


@pytest.fixture
def pipelines(cluster: HostsCluster) -> Iterator[PipelineClient]:
    """The first pipeline manager's client; every test starts on default workers files and ends with no private or
    shared instance (permanent ones stay: the failover tests build on them)."""
    for managers, workers in ((cluster.camera_managers, cluster.camera_workers),
                              (cluster.pipeline_managers, cluster.pipeline_workers)):
        set_workers_file(managers[0], workers_file(w.url for w in workers.values()))
    client = PipelineClient(cluster.pipeline_manager.url)
    yield client
    permanent = set(ProxyClient(cluster.pipeline_manager.url).get_permanent_instances())
    for instance_id in cluster.proxy_info(cluster.pipeline_manager)["active_instances"]:
        if instance_id not in permanent:
            client.stop_instance(instance_id)


@pytest.fixture
def cameras(cluster: HostsCluster) -> CamClient:
    return CamClient(cluster.camera_manager.url)


def pin(cluster: HostsCluster, kind: str, role: str, names: list[str], **entry: Any) -> None:
    """Workers file of ``kind`` (``camera``/``pipeline``): every worker enabled and expanding, the one on host
    ``role`` with ``instances`` = ``names`` (and ``entry``'s other fields)."""
    managers, workers = ((cluster.camera_managers, cluster.camera_workers) if kind == "camera"
                         else (cluster.pipeline_managers, cluster.pipeline_workers))
    urls = [w.url for w in workers.values()]
    set_workers_file(managers[0], workers_file(urls, **{workers[role].url: {"instances": names, **entry}}))


def place(cluster: HostsCluster, client: PipelineClient, config: dict[str, Any], instance_id: str | None = None,
          ) -> str:
    """Start a private pipeline instance through the manager; the host role (``a``, ``b``, ...) it runs on."""
    instance_id, _ = client.create_instance_from_config(config, instance_id)
    return cluster.role_of(cluster.host_of(cluster.pipeline_manager, instance_id) or "nowhere")


def active_on(worker: Server, route: str = "pipeline") -> dict[str, Any]:
    """The instances a worker itself says it runs (asked directly, not through a manager): id → info."""
    return requests.get(f"{worker.url}/api/v1/{route}/info", timeout=5).json()["info"]["active_instances"]


def instance_pids(cluster: HostsCluster) -> dict[str, int]:
    """Instance id / camera name → pid of every instance, as the workers themselves say (asked directly)."""
    found = {}
    for workers, route in ((cluster.camera_workers, "cam"), (cluster.pipeline_workers, "pipeline")):
        for worker in workers.values():
            found.update({name: info["pid"] for name, info in active_on(worker, route).items()})
    return found


# --- registration ---------------------------------------------------------------------------------------------
def test_workers_register_with_heartbeats(cluster: HostsCluster) -> None:
    for manager, workers in ((cluster.camera_manager, cluster.camera_workers),
                             (cluster.pipeline_manager, cluster.pipeline_workers)):
        servers = cluster.proxy_info(manager)["servers"]
        assert set(servers) == {w.url for w in workers.values()}
        now = time.time()
        for url, server in servers.items():
            assert server["alive"] is True, url
            assert now - 2 * HEARTBEAT_S - 1.0 < server["last_heartbeat"] <= now + 0.5, url
    status = requests.get(f"{cluster.pipeline_manager.url}/api/v1/proxy/status", timeout=5).json()
    assert set(status["servers"]) == {w.url for w in cluster.pipeline_workers.values()}


# --- placement across hosts -------------------------------------------------------------------------------------
def test_pipeline_on_host_a_reads_camera_on_host_b(cluster: HostsCluster, pipelines: PipelineClient,
                                                   cameras: CamClient) -> None:
    """Pinning both ways: the camera on b (camera workers file), the pipeline on a (pipeline workers file); the
    pipeline's frames cross the bridge from b to a."""
    pin(cluster, "camera", "b", ["cam_b"])
    pin(cluster, "pipeline", "a", ["pipe_ab"])
    stream = pipelines.get_instance_stream("pipe_ab")  # the shared instance of the saved pipeline
    a, b = cluster.network["a"], cluster.network["b"]
    assert cluster.host_of(cluster.pipeline_manager, "pipe_ab") == cluster.pipeline_workers["a"].url
    assert stream.startswith(f"tcp://{a.address}:")
    assert cluster.host_of(cluster.camera_manager, "cam_b") == cluster.camera_workers["b"].url
    camera_stream = cameras.get_instance_stream("cam_b")
    assert camera_stream.startswith(f"tcp://{b.address}:")

    message = values(receive(stream, timeout=20)[0])
    assert message["image"].shape == (48, 64) and message["width"] == 64
    assert "x_center_of_mass" in message
    camera_port = camera_stream.rsplit(":", 1)[1]
    connections = b.run(["ss", "-Htn", "state", "established", f"( sport = :{camera_port} )"]).stdout
    assert f"{a.address}:" in connections, f"no connection from host a to the camera on b:\n{connections}"


def test_pipelines_of_one_camera_run_together(cluster: HostsCluster, pipelines: PipelineClient) -> None:
    """A worker already running a pipeline of the same camera comes before the camera's own host."""
    pin(cluster, "camera", "a", ["cam_colo"])
    pin(cluster, "pipeline", "b", ["colo1"])
    assert place(cluster, pipelines, {"camera_name": "cam_colo"}, "colo1") == "b"
    assert place(cluster, pipelines, {"camera_name": "cam_colo"}) == "b"
    assert place(cluster, pipelines, {"camera_name": "cam_colo"}) == "b"


def test_worker_listing_the_camera_gets_its_pipelines(cluster: HostsCluster, pipelines: PipelineClient) -> None:
    """A worker naming the camera in ``cameras`` comes before the camera's own host."""
    pin(cluster, "camera", "a", ["cam_list"])
    urls = [w.url for w in cluster.pipeline_workers.values()]
    set_workers_file(cluster.pipeline_manager,
                     workers_file(urls, **{cluster.pipeline_workers["c"].url: {"cameras": ["cam_list"]}}))
    assert place(cluster, pipelines, {"camera_name": "cam_list"}) == "c"


def test_pipeline_goes_to_the_host_of_its_camera_stream(cluster: HostsCluster, pipelines: PipelineClient,
                                                        cameras: CamClient) -> None:
    pin(cluster, "camera", "b", ["cam_stream"])
    camera_stream = cameras.get_instance_stream("cam_stream")
    assert camera_stream.startswith(f"tcp://{cluster.network['b'].address}:")
    assert place(cluster, pipelines, {"camera_name": "cam_stream"}) == "b"


def test_disabled_and_non_expanding_workers_get_only_their_pins(cluster: HostsCluster,
                                                                pipelines: PipelineClient) -> None:
    workers = cluster.pipeline_workers
    set_workers_file(cluster.pipeline_manager, workers_file(
        [w.url for w in workers.values()],
        **{workers["a"].url: {"expanding": False, "instances": ["pinned_a"]}, workers["b"].url: {"enabled": False}}))
    placed = [place(cluster, pipelines, {"camera_name": name}) for name in ("cam_x1", "cam_x2", "cam_x3")]
    assert placed == ["c", "c", "c"]
    assert place(cluster, pipelines, {"camera_name": "cam_pin"}, "pinned_a") == "a"


# --- managers -----------------------------------------------------------------------------------------------------
def _answers(manager: Server, kind: str) -> dict[str, Any]:
    """What a client sees of the cluster through ``manager``, the parts that do not change from one moment to the
    next: where each instance runs and its stream (as the proxy and the instance's own route say), the workers
    file, permanent instances, status and saved names."""
    def get(path: str) -> Any:
        answer = requests.get(f"{manager.url}{path}", timeout=10)
        assert answer.status_code == 200, (path, answer.text)
        return answer.json()

    info = get("/api/v1/proxy/info")["info"]["active_instances"]
    streams = {iid: (get(f"/api/v1/pipeline/instance/{iid}") if kind == "pipeline" else get(f"/api/v1/cam/{iid}"))
               ["stream"] for iid in info}
    return {
        "hosts": {iid: found["host"] for iid, found in info.items()},
        "streams": streams,
        "info_streams": {iid: found["stream_address"] for iid, found in info.items()},
        "config": get("/api/v1/proxy/config"),
        "permanent": get("/api/v1/proxy/permanent"),
        "status": get("/api/v1/proxy/status")["servers"],
        "names": get("/api/v1/pipeline" if kind == "pipeline" else "/api/v1/cam"),
    }


def settled(cluster: HostsCluster) -> None:
    """Wait until ``/proxy/status`` (the workers' heartbeat records, one beat behind) lists what runs."""
    for manager in (cluster.camera_manager, cluster.pipeline_manager):
        def listed(m: Server = manager) -> bool:
            status = requests.get(f"{m.url}/api/v1/proxy/status", timeout=5).json()["servers"]
            return ({iid for ids in status.values() for iid in ids or ()}
                    == set(cluster.proxy_info(m)["active_instances"]))

        wait_until(listed, 5, f"{manager.name}'s status listing every running instance")


def test_two_managers_give_the_same_answers(cluster: HostsCluster, pipelines: PipelineClient) -> None:
    pin(cluster, "camera", "b", ["cam_b"])
    pin(cluster, "pipeline", "a", ["pipe_ab"])
    pipelines.get_instance_stream("pipe_ab")
    place(cluster, pipelines, {"camera_name": "cam_x1"})
    settled(cluster)
    for kind, managers in (("pipeline", cluster.pipeline_managers), ("camera", cluster.camera_managers)):
        first, second = (_answers(m, kind) for m in managers)
        assert first == second, kind
        assert first["hosts"], kind
    second_client = PipelineClient(cluster.pipeline_managers[1].url)
    assert second_client.get_instance_stream("pipe_ab") == pipelines.get_instance_stream("pipe_ab")


def test_managers_killed_and_restarted_lose_nothing(cluster: HostsCluster, pipelines: PipelineClient) -> None:
    """kill -9 of both first managers: restarted, they answer the same at once, and no process on any worker host
    started or ended (the instances were never restarted). Clients stay connected to both pipelines throughout."""
    pin(cluster, "pipeline", "a", ["pipe_ab"])
    private, stream = pipelines.create_instance_from_config({"camera_name": "cam_x2"})
    with connect(pipelines.get_instance_stream("pipe_ab")) as shared_client, connect(stream) as private_client:
        receive(shared_client)
        receive(private_client)
        settled(cluster)
        before = {kind: _answers(m, kind) for kind, m in (("pipeline", cluster.pipeline_manager),
                                                          ("camera", cluster.camera_manager))}
        assert {"pipe_ab", private} <= set(before["pipeline"]["hosts"])
        pids = cluster.worker_pids()
        ours = instance_pids(cluster)
        assert {"pipe_ab", private, "cam_b", "cam_x2"} <= set(ours)
        for manager in (cluster.pipeline_manager, cluster.camera_manager):
            manager.kill()
        start = time.monotonic()
        for manager in (cluster.camera_manager, cluster.pipeline_manager):
            manager.start()
        for manager in (cluster.camera_manager, cluster.pipeline_manager):
            manager.wait_ready()
        after = {kind: _answers(m, kind) for kind, m in (("pipeline", cluster.pipeline_manager),
                                                         ("camera", cluster.camera_manager))}
        print(f"managers restarted and answering in {elapsed_since(start)} s")
        for kind, answers in before.items():
            for key, value in answers.items():
                assert after[kind][key] == value, (kind, key)
        assert instance_pids(cluster) == ours  # every instance still runs in the same process
        started = set(cluster.worker_pids()) - set(pids)
        assert not started, f"processes started on the workers' hosts: {started}"
        assert values(receive(shared_client, timeout=10)[0])["width"] == 64
        receive(private_client, timeout=10)


# --- failover (destructive: last) -------------------------------------------------------------------------------
def _permanent_running(cluster: HostsCluster, instance_id: str) -> str:
    """Wait until the permanent instance runs and streams; its host role."""
    host = wait_until(lambda: cluster.host_of(cluster.pipeline_manager, instance_id), 30, f"{instance_id} placed")
    stream = PipelineClient(cluster.pipeline_manager.url).get_instance_stream(instance_id)
    receive(stream, timeout=20)
    return cluster.role_of(host)


def _measure_failover(cluster: HostsCluster, instance_id: str, role: str, start: float,
                      record_property: Any, what: str) -> tuple[str, dict[str, float]]:
    """After ``role``'s pipeline worker was lost at ``start``: wait until the manager marks it dead, places
    ``instance_id`` elsewhere and a message arrives from the new stream. Prints and records the times."""
    manager = cluster.pipeline_manager
    dead_url = cluster.pipeline_workers[role].url
    wait_until(lambda: dead_url not in cluster.alive_workers(manager), FAILOVER_BOUND_S, f"{dead_url} marked dead")
    dead = elapsed_since(start)
    new_host = wait_moved(cluster, manager, instance_id, dead_url, FAILOVER_BOUND_S)
    moved = elapsed_since(start)
    stream = PipelineClient(manager.url).get_instance_stream(instance_id)
    assert stream.startswith(f"tcp://{cluster.network[cluster.role_of(new_host)].address}:")
    receive(stream, timeout=max(1.0, FAILOVER_BOUND_S - elapsed_since(start)))
    times = {"dead_s": dead, "placed_s": moved, "streaming_s": elapsed_since(start)}
    print(f"failover after {what}: {times} (bounds: dead {DEAD_BOUND_S} s, streaming {FAILOVER_BOUND_S} s)")
    for key, value in times.items():
        record_property(f"{what}_{key}", value)
    assert dead <= DEAD_BOUND_S
    assert times["streaming_s"] <= FAILOVER_BOUND_S
    return cluster.role_of(new_host), times


def test_permanent_instance_fails_over_when_its_worker_is_killed(cluster: HostsCluster, pipelines: PipelineClient,
                                                                 record_property: Any) -> None:
    """kill -9 of a pipeline worker and its instance processes: the permanent instance streams again from another
    host within the bound and stays there; the private instance beside it is reported lost with its host and a
    cause. (The worker stays dead: the next test cuts a link with two pipeline workers left.)"""
    proxy = ProxyClient(cluster.pipeline_manager.url)
    proxy.set_permanent_instances({"perm1": "pipe_perm"})
    role = _permanent_running(cluster, "perm1")
    private, _ = pipelines.create_instance_from_config({"camera_name": "cam_perm"}, "private1")  # co-located
    assert cluster.host_of(cluster.pipeline_manager, private) == cluster.pipeline_workers[role].url
    instance_pids = [pipelines.get_instance_info(i)["pid"] for i in ("perm1", private)]

    worker = cluster.pipeline_workers[role]
    start = time.monotonic()
    worker.kill()
    for pid in instance_pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    new_role, _ = _measure_failover(cluster, "perm1", role, start, record_property, "worker_killed")
    assert new_role != role

    lost = requests.get(f"{cluster.pipeline_manager.url}/api/v1/proxy/lost", timeout=5).json()["lost"]
    assert lost[private]["host"] == worker.url and lost[private]["cause"]
    assert "perm1" not in lost

    time.sleep(3 * HEARTBEAT_S)  # a few heartbeats with the manager: nothing may move again or start twice
    running = {r: set(active_on(w)) for r, w in cluster.pipeline_workers.items() if r != role}
    assert [r for r, ids in running.items() if "perm1" in ids] == [new_role], running
    assert cluster.host_of(cluster.pipeline_manager, "perm1") == cluster.pipeline_workers[new_role].url


def test_permanent_instance_fails_over_when_its_host_link_is_cut(cluster: HostsCluster, pipelines: PipelineClient,
                                                                 record_property: Any) -> None:
    """The host's cable is pulled (its veth down): its workers stop heartbeating and the permanent instance moves
    (with its camera, when that ran there too); when the cable is back the host's workers return, and the copy left
    running behind the cut is stopped: perm1 runs on exactly one worker."""
    role = _permanent_running(cluster, "perm1")
    host = cluster.network[role]
    start = time.monotonic()
    host.link_down()
    try:
        new_role, _ = _measure_failover(cluster, "perm1", role, start, record_property, "link_cut")
    finally:
        host.link_up()
    assert new_role != role
    cluster.wait_workers_alive()

    def runs_once() -> bool:
        running = [r for r, w in cluster.pipeline_workers.items() if w.proc and w.proc.poll() is None
                   and "perm1" in active_on(w)]
        return running == [new_role]

    wait_until(runs_once, 10, "perm1 running on its new host alone after the old one came back")
    assert cluster.host_of(cluster.pipeline_manager, "perm1") == cluster.pipeline_workers[new_role].url
    receive(pipelines.get_instance_stream("perm1"), timeout=10)
