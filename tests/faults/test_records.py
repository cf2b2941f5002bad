"""What stays of an instance after it ended (issue 10 item 6), and of interrupted writes (item 8).

kill -9 of camera and pipeline instances: the record names the cause ("killed by signal 9 (SIGKILL)"), and an id
that is used again keeps the history of its earlier runs. Temporary files of interrupted atomic writes are removed
when a server starts. Each scenario states its bound (``*_BOUND_S``) and records the measured time.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from cam_server.common.config_store import remove_stale_temp_files
from cam_server.common.process import RATE_STALE_S, InstanceProcess, SharedStats, describe_exit
from tests.common import targets
from tests.helpers.procs import wait_until
from tests.helpers.servers import ServerPair, camera_server, pipeline_server, write_config_dir

SIGKILL_TEXT = "killed by signal 9 (SIGKILL)"
REAP_BOUND_S = 2.0  # from kill -9 of an instance to its record in finished_instances (reaper: every 0.5 s)
SMALL_CAMERA = {"source": "simulation", "source_type": "simulation", "size_x": 64, "size_y": 48, "frame_rate": 20,
                "image_type": "static_beam"}


def _wait_record(read, name: str, runs: int) -> tuple[dict, float]:
    """(the finished record of ``name`` once it holds ``runs`` runs, seconds waited)."""
    start = time.monotonic()
    record = wait_until(lambda: (r := read().get(name)) and len(r["history"]) + 1 == runs and r, REAP_BOUND_S + 10,
                        f"{runs} ended run(s) of {name}")
    return record, time.monotonic() - start


def test_killed_camera_instance_says_so_and_keeps_its_history(servers: ServerPair, record_property) -> None:
    cam = CamClient(servers.camera.url)
    cam.set_camera_config("killed_cam", SMALL_CAMERA)
    try:
        pids = []
        for run in (1, 2):
            cam.get_instance_stream("killed_cam")  # (again: the id is reused)
            pid = cam.get_server_info()["active_instances"]["killed_cam"]["pid"]
            pids.append(pid)
            os.kill(pid, signal.SIGKILL)
            record, waited = _wait_record(lambda: cam.get_server_info()["finished_instances"], "killed_cam", run)
            record_property(f"record_after_kill_{run}_s", round(waited, 3))
            print(f"camera record {waited:.3f} s after kill -9 (bound {REAP_BOUND_S} s)")
            assert waited <= REAP_BOUND_S
        assert record["exit_code"] == -9 and record["exit_reason"] == SIGKILL_TEXT and record["pid"] == pids[1]
        assert [(r["pid"], r["exit_reason"]) for r in record["history"]] == [(pids[0], SIGKILL_TEXT)]
        cam.get_instance_stream("killed_cam")  # a third run: the ended ones stay listed beside it
        info = cam.get_server_info()
        assert "killed_cam" in info["active_instances"] and info["finished_instances"]["killed_cam"]["pid"] == pids[1]
    finally:
        cam.delete_camera_config("killed_cam")


def test_killed_pipeline_instance_says_so_and_its_reused_id_keeps_the_history(servers: ServerPair,
                                                                              record_property) -> None:
    pipelines = PipelineClient(servers.url)
    config = {"camera_name": "simulation", "function": "transparent", "no_client_timeout": 0}
    try:
        pids = []
        for run in (1, 2):
            pipelines.create_instance_from_config(config, instance_id="killed_pipeline")
            pid = pipelines.get_instance_info("killed_pipeline")["statistics"]["pid"]
            pids.append(pid)
            wait_until(lambda: pipelines.get_instance_info("killed_pipeline")["is_stream_active"], 30, "streaming")
            os.kill(pid, signal.SIGKILL)
            record, waited = _wait_record(lambda: pipelines.get_server_info()["finished_instances"],
                                          "killed_pipeline", run)
            record_property(f"record_after_kill_{run}_s", round(waited, 3))
            print(f"pipeline record {waited:.3f} s after kill -9 (bound {REAP_BOUND_S} s)")
            assert waited <= REAP_BOUND_S
        pipelines.create_instance_from_config(config, instance_id="killed_pipeline")  # the id runs again
        pipelines.stop_instance("killed_pipeline")
        record, _ = _wait_record(lambda: pipelines.get_server_info()["finished_instances"], "killed_pipeline", 3)
        assert record["exit_code"] == 0 and record["exit_reason"] == "stopped on request"
        assert [(r["pid"], r["exit_code"], r["exit_reason"]) for r in record["history"]] == [
            (pids[0], -9, SIGKILL_TEXT), (pids[1], -9, SIGKILL_TEXT)]
        assert record["config"]["function"] == "transparent"  # the latest record is the full instance info
    finally:
        pipelines.stop_all_instances()


def test_an_instance_reports_why_it_ends_beside_its_last_error() -> None:
    """The hook for reasons only the instance knows (e.g. "out of memory limit"): report_exit_reason."""
    process = InstanceProcess("reasoned", targets.exit_with_reason, ("out of memory limit: RSS 5 GB > 4 GB", 1))
    process.start()
    process.wait(20)
    info = process.info()
    process.stop()
    assert info["exit_code"] == 1 and info["exit_reason"] == "out of memory limit: RSS 5 GB > 4 GB"
    assert info["last_error"] == "something went wrong"


@pytest.mark.unit
def test_exit_codes_read_as_causes() -> None:
    assert describe_exit(None) is None
    assert describe_exit(0) == "finished"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == SIGKILL_TEXT
    assert describe_exit(-15) == "killed by signal 15 (SIGTERM)"
    assert describe_exit(-200) == "killed by signal 200"


@pytest.mark.unit
def test_stale_rates_read_as_zero_and_the_state_by_name() -> None:
    """Rates only change on events; a reader of the statistics sees 0 once the last event is RATE_STALE_S old."""
    stats = SharedStats(mp.get_context("spawn"))
    assert stats.snapshot()["state"] == "starting"
    stats.set_state("waiting for source")
    now = time.time()
    for field, value in (("rate", 50.0), ("throughput", 1e6), ("rate_in", 50.0), ("last_frame_time", now),
                         ("last_input_time", now)):
        stats.set(field, value)
    fresh = stats.snapshot()
    assert (fresh["state"], fresh["rate"], fresh["throughput"], fresh["rate_in"]) == ("waiting for source", 50.0,
                                                                                      1e6, 50.0)
    stats.set("last_frame_time", now - RATE_STALE_S - 0.5)
    stats.set("last_input_time", now - RATE_STALE_S - 0.5)
    stale = stats.snapshot()
    assert (stale["rate"], stale["throughput"], stale["rate_in"]) == (0.0, 0.0, 0.0)
    with pytest.raises(KeyError):
        stats.set_state("sleeping")


# --- item 8: temporary files of interrupted writes ------------------------------------------------------------------
LEFTOVER = ".{}.k3j9x_a1.tmp"  # as atomic_write_bytes names them: .<file>.<8 random characters>.tmp


def test_leftover_temp_files_are_removed_at_server_start(tmp_path: Path) -> None:
    """Temporary files interrupted writes left in the camera configs, pipeline configs, backgrounds and scripts
    folders are gone once the servers started; the real files beside them are untouched."""
    cameras = write_config_dir(tmp_path / "cameras")
    leftovers = [cameras / LEFTOVER.format("test_camera.json")]
    config_bytes = (cameras / "test_camera.json").read_bytes()
    for path in leftovers:
        path.write_bytes(b'{"name": "test_cam')  # half a config
    with camera_server(tmp_path, config_dir=cameras) as cam:
        base = cam.base
        scripts = tmp_path / "user_scripts"
        backgrounds = tmp_path / "background_config"
        for folder in (scripts, backgrounds):
            folder.mkdir(exist_ok=True)
        pipeline_dir = tmp_path / "pipeline_source"
        pipeline_dir.mkdir()
        (pipeline_dir / "kept.json").write_text('{"camera_name": "simulation"}\n')
        placed = [pipeline_dir / LEFTOVER.format("kept.json"), scripts / LEFTOVER.format("proc.py"),
                  backgrounds / LEFTOVER.format("cam_20260101_000000_000000.npy")]
        for path in placed:
            path.write_bytes(b"partial")
        (scripts / "proc.py").write_text("x = 1\n")
        assert not (base / LEFTOVER.format("test_camera.json")).exists()  # the camera server removed its own
        assert (base / "test_camera.json").read_bytes() == config_bytes
        with pipeline_server(tmp_path, cam.url, config_dir=pipeline_dir) as pipe:
            pipe_base = pipe.base
            assert not (pipe_base / LEFTOVER.format("kept.json")).exists()
            assert (pipe_base / "kept.json").read_text() == '{"camera_name": "simulation"}\n'
            assert not (scripts / LEFTOVER.format("proc.py")).exists()
            assert not (backgrounds / LEFTOVER.format("cam_20260101_000000_000000.npy")).exists()
            assert (scripts / "proc.py").read_text() == "x = 1\n"


@pytest.mark.unit
def test_a_temp_file_of_a_write_in_progress_and_other_files_stay(tmp_path: Path) -> None:
    """Only unlocked files named like atomic_write_bytes' temporary files go: one locked by a write in progress
    (another server sharing the folder), a user's own ``.notes.tmp`` and the configs stay."""
    stale, busy = tmp_path / LEFTOVER.format("a.json"), tmp_path / LEFTOVER.format("b.json")
    other, config = tmp_path / ".notes.tmp", tmp_path / "a.json"
    for path in (stale, busy, other, config):
        path.write_text("x")
    with open(busy, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert remove_stale_temp_files(tmp_path) == [stale.name]
    assert not stale.exists() and busy.exists() and other.exists() and config.exists()
    assert remove_stale_temp_files(tmp_path / "missing") == []
