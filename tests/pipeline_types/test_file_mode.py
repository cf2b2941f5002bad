"""mode 'FILE': HDF5 output with layout DEFAULT / FLAT, localtime, change, records; complete on stop."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import requests

from cam_server.client.pipeline_client import PipelineClient
from cam_server.pipeline.instance.file_output import FileOutputError, resolve_output_file
from tests.helpers.procs import wait_until
from tests.helpers.servers import pipeline_server
from tests.pipeline_types.helpers import TestCamera, wait_finished, write_script


def _pids_consecutive(pids) -> bool:
    return list(pids) == list(range(int(pids[0]), int(pids[0]) + len(pids)))


def test_records_default_layout_store(client, servers):
    path = servers.data / "store_default.h5"
    with TestCamera(rate=100) as camera:
        instance_id, _ = client.create_instance_from_config(
            {"pipeline_type": "store", "input_stream": camera.address, "mode": "FILE", "file": str(path),
             "records": 12})
        info = wait_finished(client, instance_id)
    assert info["exit_code"] == 0 and info["last_error"] is None
    with h5py.File(path, "r") as f:
        assert f["general/records"][()] == 12 and f["general/records_requested"][()] == 12
        assert f["general/instance"][()].decode() == instance_id
        images = f["data/image/data"][:]
        pids = f["data/image/pulse_id"][:]
        assert images.shape == (12, 24, 32) and images.dtype == np.uint16
        np.testing.assert_array_equal(images, np.broadcast_to(camera.image, images.shape))
        assert _pids_consecutive(pids)
        np.testing.assert_array_equal(f["data/counter/data"][:], pids)  # counter channel == pulse id
        assert f["data/image/is_valid"][:].all()
        assert (f["data/image/timestamp"][:] == f["data/image/global_timestamp"][:]).all()  # localtime default


def test_flat_layout_without_localtime_with_a_user_function(client, servers):
    write_script(servers.scripts, "file_values.py", """
        def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
            return {"total": int(image.sum()), "pid_copy": pulse_id, "label": f"p{pulse_id}"}
    """)
    path = servers.data / "flat.h5"
    with TestCamera(rate=100) as camera:
        instance_id, _ = client.create_instance_from_config(
            {"input_stream": camera.address, "function": "file_values", "mode": "FILE", "file": str(path),
             "layout": "FLAT", "localtime": False, "records": 8})
        info = wait_finished(client, instance_id)
    assert info["exit_code"] == 0
    with h5py.File(path, "r") as f:
        pids = f["pulse_id"][:]
        assert len(pids) == 8 and _pids_consecutive(pids)
        np.testing.assert_array_equal(f["pid_copy"][:], pids)
        assert (f["total"][:] == int(camera.image.sum())).all()
        assert [x.decode() for x in f["label"][:]] == [f"p{p}" for p in pids]
        assert "timestamp" not in f["channel_info/total"] and f["channel_info/total/is_valid"][:].all()
        assert "data" not in f  # FLAT: channels at the root


def test_stop_instance_closes_a_complete_file_and_change_stores_new_shapes(client, servers):
    path = servers.data / "change.h5"
    with TestCamera(rate=100) as camera:
        instance_id, _ = client.create_instance_from_config(
            {"input_stream": camera.address, "function": "transparent", "mode": "FILE", "file": str(path),
             "change": True, "processing_threads": 2})
        wait_until(lambda: client.get_instance_info(instance_id)["statistics"]["frames_out"] >= 5, 10, "rows")
        client.set_instance_config(instance_id, {"image_region_of_interest": [0, 8, 0, 4]})
        wait_until(lambda: client.get_instance_info(instance_id)["statistics"]["frames_out"] >= 30, 10, "rows")
        client.stop_instance(instance_id)
    info = client.get_server_info()["finished_instances"][instance_id]
    assert info["exit_code"] == 0
    written = info["statistics"]["frames_out"]
    with h5py.File(path, "r") as f:
        n = f["general/records"][()]
        assert n == written  # every frame the instance sent is in the file
        index = f["data/image/data_index"][:]
        assert len(index) == n and set(index.tolist()) == {0, 1}
        assert f["data/image/data"].shape[1:] == (24, 32) and f["data/image/data_1"].shape[1:] == (4, 8)
        first_small = int(np.argmax(index == 1))
        assert (index[:first_small] == 0).all() and (index[first_small:] == 1).all()
        assert _pids_consecutive(f["data/image/pulse_id"][:])  # in order even with processing_threads
        np.testing.assert_array_equal(f["data/image/data_1"][first_small], camera.image[:4, :8])


def test_without_change_a_new_shape_is_an_error(client, servers):
    path = servers.data / "nochange.h5"
    with TestCamera(rate=100) as camera:
        instance_id, _ = client.create_instance_from_config(
            {"input_stream": camera.address, "function": "transparent", "mode": "FILE", "file": str(path)})
        wait_until(lambda: client.get_instance_info(instance_id)["statistics"]["frames_out"] >= 3, 10, "rows")
        client.set_instance_config(instance_id, {"image_region_of_interest": [0, 8, 0, 4]})
        info = wait_finished(client, instance_id)
    assert info["exit_code"] == 2
    assert "channel 'image': format changed from uint16[24, 32] to uint16[4, 8]" in info["last_error"]
    with h5py.File(path, "r") as f:  # still a valid file with the rows written before
        assert f["general/records"][()] >= 3


def test_existing_file_is_not_overwritten(client, servers):
    path = servers.data / "exists.h5"
    path.write_bytes(b"keep me")
    write_script(servers.scripts, "one_value.py", "def process(parameters):\n    return {'v': 1}\n")
    # Refused when the instance is created (issue 11 item 8), not an instance ending with exit code 1 after a 200.
    with pytest.raises(ValueError, match="already exists .*FILE output never overwrites"):
        client.create_instance_from_config(
            {"pipeline_type": "custom", "function": "one_value", "mode": "FILE", "file": str(path)})
    assert path.read_bytes() == b"keep me"


@pytest.mark.unit
def test_relative_file_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_output_file("run1/out.h5") == str(tmp_path / "run1" / "out.h5")
    assert resolve_output_file("/abs/out.h5") == "/abs/out.h5"
    with pytest.raises(FileOutputError, match="needs a 'file' name"):
        resolve_output_file("  ")


@pytest.mark.unit
def test_file_folder_confines_paths(tmp_path):
    folder = tmp_path / "data"
    (folder / "runs").mkdir(parents=True)
    (folder / "escape").symlink_to(tmp_path)  # a link inside that leads out
    assert resolve_output_file("runs/a.h5", str(folder)) == str(folder / "runs" / "a.h5")
    assert resolve_output_file(str(folder / "b.h5"), str(folder)) == str(folder / "b.h5")
    for outside in ("../a.h5", "/tmp/a.h5", "runs/../../a.h5", "escape/a.h5", ".", str(folder)):
        with pytest.raises(FileOutputError, match="is outside the folder this server writes to"):
            resolve_output_file(outside, str(folder))


def test_server_with_file_folder_writes_inside_and_refuses_outside(servers, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    with pipeline_server(tmp_path, servers.camera.url, extra_args=["--file_folder", str(folder)]) as pipe:
        write_script(pipe.scripts, "one_value.py", "def process(parameters):\n    return {'v': 1}\n")
        client = PipelineClient(pipe.url)
        base = {"pipeline_type": "custom", "function": "one_value", "mode": "FILE", "records": 3}
        outside = tmp_path / "outside.h5"
        for bad in (str(outside), "../outside.h5"):
            response = requests.post(f"{pipe.url}/api/v1/pipeline", json={**base, "file": bad})
            assert response.status_code == 400
            body = response.json()
            assert body["state"] == "error" and "is outside the folder this server writes to" in body["status"]
        assert not outside.exists()
        assert not client.get_server_info()["active_instances"]  # nothing was started
        instance_id, _ = client.create_instance_from_config({**base, "file": "run/inside.h5"})
        info = wait_finished(client, instance_id)
        assert info["exit_code"] == 0, info["last_error"]
        with h5py.File(folder / "run" / "inside.h5", "r") as f:
            assert f["general/records"][()] == 3


@pytest.mark.unit
def test_file_folder_with_tilde_is_the_home_folder(tmp_path, monkeypatch):
    # "--file_folder=~/data" reaches the server unexpanded when quoted (or from a service file)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "..")
    assert resolve_output_file("a.h5", "~/data") == str(tmp_path.resolve() / "data" / "a.h5")
    assert resolve_output_file("a.h5", "~/data/") == str(tmp_path.resolve() / "data" / "a.h5")
