"""A pipeline cluster on loopback: redis-server, a camera manager with one camera worker, a pipeline manager with
two pipeline workers (all stopped by PID).

The pipeline server's client tests run unchanged against the manager; then co-location with the camera's
pipelines, ``input_pipeline`` resolved across workers, backgrounds and scripts sent with the start, and last a
worker killed -9: its permanent pipeline restarts on the other worker, its private one is reported lost.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
import redis
import requests

from cam_server.client.pipeline_client import PipelineClient
from cam_server.client.proxy_client import ProxyClient
from tests.helpers.cluster import (
    Proc,
    redis_server,
    registered,
    start_camera_manager,
    start_pipeline_manager,
    start_worker,
    wait_ready,
)
from tests.helpers.procs import stop_pid, wait_until
from tests.helpers.streams import receive, values
from tests.pipeline_server.test_rest import (  # noqa: F401 - collected here, against the manager
    test_cameras,
    test_client_create_from_name_returns_id_and_stream,
    test_client_stop_all_instances,
    test_get_instance_message_refuses_store_pipelines,
    test_private_instance_lifecycle,
    test_rest_envelopes_and_create_with_custom_instance_id,
    test_shared_instance_is_read_only_and_named_after_the_pipeline,
    test_structural_changes_of_a_running_instance_are_refused,
)

DEAD_AFTER = 1.5


@dataclass
class PipelineCluster:
    redis: Proc
    camera_manager: Proc
    manager: Proc
    workers: list[Proc]
    camera_workers: list[Proc]
    second_manager: Proc

    @property
    def url(self) -> str:
        """The pipeline manager (what the imported tests call ``servers.url``)."""
        return self.manager.url


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineCluster]:
    """Overrides the root conftest's ``servers`` (its ``client`` fixture then talks to the pipeline manager)."""
    tmp = tmp_path_factory.mktemp("pipeline_cluster")
    with redis_server(tmp) as rds:
        extra = ["--dead_after", str(DEAD_AFTER)]
        beat = ["--heartbeat", "0.3"]
        cam = start_camera_manager(tmp, rds.url, extra=extra, wait=False)
        cams = [start_worker(tmp, "camera", rds.url, f"camera_worker_{i}", extra=beat, wait=False) for i in (1, 2)]
        manager = start_pipeline_manager(tmp, rds.url, cam.url, extra=extra, wait=False)
        second = start_pipeline_manager(tmp, rds.url, cam.url, "pipeline_manager_b", extra=extra, wait=False)
        pipes = [start_worker(tmp, "pipeline", rds.url, f"pipeline_worker_{i}", cam_url=cam.url, extra=beat,
                              wait=False) for i in (1, 2)]
        procs = [cam, *cams, manager, second, *pipes]
        running = PipelineCluster(rds, cam, manager, pipes, cams, second)
        try:
            wait_ready(*procs)
            wait_until(lambda: all(registered(rds.url, "pipeline", w.url) for w in pipes)
                       and all(registered(rds.url, "camera", w.url) for w in cams), 20, "workers registered")
            # Each worker's first instance waits for its fork server: once per worker (both at once), not in a
            # test's timeouts.
            def warm_up(worker: Proc) -> None:
                warm = PipelineClient(worker.url)
                iid, _ = warm.create_instance_from_config({"camera_name": "simulation"})
                warm.get_instance_message(iid, timeout=90)
                warm.stop_instance(iid)

            with ThreadPoolExecutor(2) as pool:
                list(pool.map(warm_up, running.workers))
            yield running
        finally:
            for proc in reversed(procs):
                stop_pid(proc.proc)


def _hosts(cluster: PipelineCluster) -> dict[str, str]:
    return {iid: info["host"] for iid, info in ProxyClient(cluster.url).get_instances_info().items()}


def test_pipelines_of_one_camera_share_a_worker(servers: PipelineCluster, client: PipelineClient) -> None:
    first, _ = client.create_instance_from_config({"camera_name": "simulation"})
    others = [client.create_instance_from_config({"camera_name": "simulation", "image_threshold": i})[0]
              for i in (1, 2)]
    hosts = _hosts(servers)
    assert {hosts[i] for i in (first, *others)} == {hosts[first]}  # rule 2: same camera, same worker


def test_two_managers_asked_for_one_shared_config_start_one_instance(servers: PipelineCluster,
                                                                     client: PipelineClient) -> None:
    config = {"camera_name": "simulation", "image_threshold": 17}
    urls = [servers.url, servers.second_manager.url] * 4
    with ThreadPoolExecutor(len(urls)) as pool:
        answers = list(pool.map(lambda url: PipelineClient(url).get_instance_stream_from_config(config), urls))
    assert len(set(answers)) == 1  # (instance id, stream): one placement, claimed on the config's hash
    iid = answers[0][0]
    other = PipelineClient(servers.second_manager.url)
    assert set(other.get_server_info()["active_instances"]) == set(client.get_server_info()["active_instances"]) \
        == {iid}
    assert other.get_instance_config(iid) == client.get_instance_config(iid)
    # /proxy/status reads the workers' records, which monitor rounds rewrite (the instance list of the test before
    # may still be there): both managers show the same one, with this instance, once a round has seen it.
    statuses = (ProxyClient(servers.second_manager.url).get_status_info, ProxyClient(servers.url).get_status_info)
    wait_until(lambda: (s := [status() for status in statuses])[0] == s[1]
               and any(iid in (ids or []) for ids in s[0].values()), 15, "both managers' status with the instance")


def test_input_pipeline_is_resolved_across_workers(servers: PipelineCluster, client: PipelineClient) -> None:
    proxy = ProxyClient(servers.url)
    other = next(w.url for w in servers.workers if w.url != servers.workers[0].url)
    try:
        proxy.set_config({servers.workers[0].url: {"instances": ["simulation_sp"], "expanding": False}})
        iid, _ = client.create_instance_from_config({"input_pipeline": "simulation_sp", "pipeline_type": "stream",
                                                     "camera_name": None})
        hosts = _hosts(servers)
        assert hosts["simulation_sp"] == servers.workers[0].url and hosts[iid] == other
        config = client.get_instance_config(iid)
        assert config["input_stream"] == client.get_instance_stream("simulation_sp")
        (received,) = receive(client.get_instance_stream(iid), timeout=20)
        assert values(received)["width"] == 1280
    finally:
        proxy.set_config({})


def test_output_pipeline_is_resolved_across_workers(servers: PipelineCluster, client: PipelineClient) -> None:
    proxy = ProxyClient(servers.url)
    first, second = (w.url for w in servers.workers)
    try:
        proxy.set_config({first: {"instances": ["fanin_c"]}, second: {"instances": ["sender_c"]}})
        client.create_instance_from_config({"pipeline_type": "fanin"}, instance_id="fanin_c")
        client.create_instance_from_config({"camera_name": "simulation", "output_pipeline": "fanin_c"},
                                           instance_id="sender_c")
        assert _hosts(servers)["fanin_c"] == first and _hosts(servers)["sender_c"] == second
        fanin_input = client.get_instance_config("fanin_c")["input_stream"]
        assert client.get_instance_config("sender_c")["output_stream"] == fanin_input
        (received,) = receive(client.get_instance_stream("fanin_c"), timeout=20)
        assert values(received)["width"] == 1280 and "x_center_of_mass" in values(received)
    finally:
        proxy.set_config({})


def test_background_and_script_go_with_the_start(servers: PipelineCluster, client: PipelineClient) -> None:
    background = np.full((960, 1280), 7.0)
    client.set_background("simulation_bg_test", background)
    client.set_user_script("cluster_fn", "def process_image(image, pulse_id, timestamp, x_axis, y_axis, "
                                            "parameters, bsdata=None):\n    return {'cluster_value': 42.0}\n")
    try:
        iid, _ = client.create_instance_from_config({"camera_name": "simulation", "function": "cluster_fn",
                                                     "background_id": "simulation_bg_test"})  # README spelling
        message = client.get_instance_message(iid)
        assert message.data.data["cluster_value"].value == 42.0
        host = _hosts(servers)[iid]
        assert "simulation_bg_test" in requests.get(f"{host}/api/v1/pipeline/background", timeout=5).json()[
            "background_ids"]
    finally:
        client.stop_all_instances()
        client.delete_user_script("cluster_fn")
        client.delete_background("simulation_bg_test")


def test_a_permanent_instance_that_cannot_start_backs_off(servers: PipelineCluster) -> None:
    proxy = ProxyClient(servers.url)
    try:
        assert proxy.set_permanent_instances({"broken": "no_such_pipeline"}) == {"broken": "no_such_pipeline"}
        backoff = redis.Redis.from_url(servers.redis.url).pttl("cam_server:pipeline:backoff:broken")
        assert 0 < backoff <= 2000  # tried once, not again (by any manager) for 2 s
        assert "broken" not in proxy.get_instances_info()
    finally:
        proxy.set_permanent_instances({})


CRASHING = """
def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    raise RuntimeError("a permanent instance in a crash loop")
"""


def test_a_permanent_instance_in_a_crash_loop_backs_off_longer_each_time(servers: PipelineCluster,
                                                                         client: PipelineClient) -> None:
    """It starts, its function fails at the first frame (abort_on_error: exit code 2): started again after 2 s, then
    4 s, ... (before: at every monitor round that found it gone, every 2-3 s for ever). The back-offs are read where
    the managers keep them (Redis), the starts from its records."""
    proxy = ProxyClient(servers.url)
    store = redis.Redis.from_url(servers.redis.url, decode_responses=True)
    client.set_user_script("crash_fn", CRASHING)
    client.save_pipeline_config("crashing", {"camera_name": "simulation", "function": "crash_fn"})
    starts: list[float] = []
    delays: list[tuple[float, float]] = []  # (delay, the run it was for)
    try:
        proxy.set_permanent_instances({"crash_perm": "crashing"})
        deadline = time.monotonic() + 16
        while time.monotonic() < deadline:
            record = store.hget("cam_server:pipeline:instances", "crash_perm")
            if record and (started := json.loads(record)["started_at"]) not in starts:
                starts.append(started)
            judged = store.get("cam_server:pipeline:restarts:crash_perm")
            if judged and (delay := tuple(json.loads(judged).values())) not in delays:
                delays.append(delay)
            time.sleep(0.05)
    finally:
        proxy.set_permanent_instances({})
        client.delete_pipeline_config("crashing")
        client.delete_user_script("crash_fn")
    print(f"\ncrash loop: {len(starts)} starts in 16 s, back-offs {delays}")
    assert [delay for delay, _ in delays][:2] == [2.0, 4.0], delays  # doubling, one per early end
    assert all(later == 2 * earlier for (earlier, _), (later, _) in itertools.pairwise(delays)), delays
    assert [run for _, run in delays] == starts[:len(delays)], (delays, starts)  # each run judged once, in order
    assert len(starts) == len(delays) or len(starts) == len(delays) + 1, (delays, starts)  # never started early


def test_killed_worker_restarts_permanent_and_reports_private_lost(servers: PipelineCluster,
                                                                   client: PipelineClient) -> None:
    proxy = ProxyClient(servers.url)
    proxy.set_permanent_instances({"perm_sp": "simulation_sp"})
    try:
        wait_until(lambda: "perm_sp" in proxy.get_instances_info(), 20, "permanent pipeline started")
        host = _hosts(servers)["perm_sp"]
        assert client.get_instance_config("perm_sp")["no_client_timeout"] == 0  # streams without clients too
        private, _ = client.create_instance_from_config({"camera_name": "simulation"})  # same camera: same worker
        assert _hosts(servers)[private] == host
        worker = next(w for w in servers.workers if w.url == host)
        os.kill(worker.pid, signal.SIGKILL)
        started = time.monotonic()
        new_host = wait_until(lambda: (h := _hosts(servers).get("perm_sp")) not in (None, host) and h, 30,
                              "permanent pipeline restarted elsewhere")
        message = client.get_instance_message("perm_sp")
        took = time.monotonic() - started
        print(f"\nkilled pipeline worker: permanent pipeline streaming again on {new_host} {took:.2f} s after "
              f"kill -9 (dead_after {DEAD_AFTER} s)")
        assert message.data.data["width"].value == 1280
        lost = proxy.get_lost_instances()
        assert lost[private]["host"] == host and f"worker {host} stopped heartbeating" in lost[private]["cause"]
        with pytest.raises(ValueError, match=f"Instance '{private}' was lost: worker {host} stopped heartbeating"):
            client.get_instance_info(private)
        assert proxy.get_status_info()[host] is None
    finally:
        proxy.set_permanent_instances({})


def test_camera_worker_killed_the_pipeline_follows_its_camera(servers: PipelineCluster,
                                                              client: PipelineClient) -> None:
    """Pipeline on one host, camera on another: the camera's worker dies, the camera manager places the camera
    again, and the pipeline (camera_timeout 1 s) asks it for the new stream on its own."""
    cameras = ProxyClient(servers.camera_manager.url)
    iid, _ = client.create_instance_from_config({"camera_name": "simulation", "camera_timeout": 1})
    client.get_instance_message(iid)
    host = cameras.get_instances_info()["simulation"]["host"]
    worker = next(w for w in servers.camera_workers if w.url == host)
    os.kill(worker.pid, signal.SIGKILL)
    started = time.monotonic()
    time.sleep(0.2)  # what was in flight before the kill
    message = client.get_instance_message(iid, timeout=30)
    took = time.monotonic() - started
    print(f"\nkilled camera worker: the pipeline received again {took:.2f} s after kill -9 (camera on "
          f"{cameras.get_instances_info()['simulation']['host']}, dead_after {DEAD_AFTER} s, camera_timeout 1 s)")
    assert message.data.data["width"].value == 1280
    assert cameras.get_instances_info()["simulation"]["host"] != host
    assert iid in client.get_server_info()["active_instances"]
