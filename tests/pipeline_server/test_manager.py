"""PipelineManager semantics in-process, with a stand-in instance loop (tests/pipeline_server/targets.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from cam_server.client.cam_client import CamClient
from cam_server.common.errors import Conflict, InvalidConfig, NotFound
from cam_server.pipeline.server.backgrounds import BackgroundStore
from cam_server.pipeline.server.manager import PipelineManager
from cam_server.pipeline.server.saved_configs import SavedConfigs
from tests.helpers.procs import wait_until
from tests.pipeline_server.targets import counter_instance

CUSTOM = {"pipeline_type": "custom"}


@pytest.fixture
def manager(servers, tmp_path) -> Iterator[PipelineManager]:
    store = SavedConfigs(tmp_path / "pipelines")
    store.save("custom_pipe", {"pipeline_type": "custom", "records": 1000})
    m = PipelineManager(CamClient(servers.camera.url), store, BackgroundStore(tmp_path / "bg"), str(tmp_path),
                        "127.0.0.1", target=counter_instance)
    yield m
    m.close()
    assert m.get_info()["active_instances"] == {}


def test_generated_ids_are_unique_and_streams_differ(manager):
    created = [manager.create_instance_from_config(CUSTOM) for _ in range(4)]
    assert len({iid for iid, _, _ in created}) == 4
    assert len({stream for _, stream, _ in created}) == 4
    assert sorted(manager.get_info()["active_instances"]) == sorted(iid for iid, _, _ in created)


def test_live_config_reaches_the_instance(manager):
    iid, _, _ = manager.create_instance_from_config(CUSTOM)
    assert manager.get_instance_message(iid)["data"]["value"] == 0.0
    manager.set_instance_config(iid, {"image_threshold": 4})
    wait_until(lambda: manager.get_instance_message(iid)["data"]["value"] == 4.0, 10, "new config in the stream")
    message = manager.get_instance_message(iid)
    assert message["data"]["image"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert message["data"]["nan"] is None and message["data"]["name"] == iid


def test_crash_is_reaped_with_exit_code_and_last_error(manager):
    iid, _, _ = manager.create_instance_from_config(CUSTOM)
    manager.set_instance_config(iid, {"crash": "disk on fire"})
    wait_until(lambda: iid not in manager.get_info()["active_instances"], 10, "crashed instance reaped")
    info = manager.get_info()["finished_instances"][iid]
    assert (info["is_running"], info["exit_code"], info["last_error"]) == (False, 3, "crash requested: disk on fire")
    assert manager.get_instance_exit_code(iid) == 3
    with pytest.raises(NotFound, match="exit code 3, last error: crash requested: disk on fire"):
        manager.get_instance_info(iid)
    with pytest.raises(NotFound, match="exit code 3, last error: crash requested: disk on fire"):
        manager.get_instance_config(iid)
    # The id can be used again.
    assert manager.create_instance_from_config(CUSTOM, iid)[0] == iid


def test_records_reached_ends_the_instance(manager):
    iid, _, _ = manager.create_instance_from_config({**CUSTOM, "records": 5})
    wait_until(lambda: iid not in manager.get_info()["active_instances"], 10, "finished instance reaped")
    info = manager.get_info()["finished_instances"][iid]
    assert info["exit_code"] == 0 and info["statistics"]["frames_out"] == 5


def test_concurrent_shared_requests_start_one_instance(manager):
    streams: list[str] = []
    threads = [threading.Thread(target=lambda: streams.append(manager.get_instance_stream("custom_pipe")))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(streams) == 6 and len(set(streams)) == 1
    assert list(manager.get_info()["active_instances"]) == ["custom_pipe"]
    with pytest.raises(Conflict, match="read-only"):
        manager.set_instance_config("custom_pipe", {"image_threshold": 1})


def test_shared_instance_restarts_after_it_ended(manager):
    manager.get_instance_stream("custom_pipe")
    first_pid = manager.get_instance_info("custom_pipe")["pid"]
    manager.stop_instance("custom_pipe")
    with pytest.raises(NotFound, match="'custom_pipe' is not running any more"):
        manager.get_instance_info("custom_pipe")
    manager.get_instance_stream("custom_pipe")
    info = manager.get_instance_info("custom_pipe")
    assert info["is_running"] is True and info["pid"] != first_pid and info["read_only"] is True


def test_errors(manager):
    with pytest.raises(InvalidConfig, match="'pipeline_type'"):
        manager.create_instance_from_config({"pipeline_type": "nope"})
    with pytest.raises(NotFound, match="Pipeline 'missing' does not exist"):
        manager.create_instance_from_name("missing")
    manager.create_instance_from_config(CUSTOM, "dup")
    with pytest.raises(Conflict, match="Instance id 'dup' is already in use"):
        manager.create_instance_from_config(CUSTOM, "dup")
    with pytest.raises(Conflict, match="Cannot change pipeline_type"):
        manager.set_instance_config("dup", {"pipeline_type": "script"})
