"""Storage stays intact (issue 11, items 2 and 6): FILE output confined, stores that tolerate bad entries, bounded
backgrounds.

* FILE output writes only inside the pipeline server's ``--file_folder`` (default ``./data``), anywhere only with
  ``--file_folder_any``, and never inside the server's config, background or script folders nor as a ``.json``,
  ``.npy`` or ``.py`` file or folder (which would land among a camera server's configs): 400 at creation.
* Every store (camera configs, pipeline configs, user scripts of both servers, backgrounds) lists a bad entry (a
  folder named like an entry, an HDF5 file, a non-UTF-8 file, ...) under ``broken`` with the reason, keeps working
  for everything else, and DELETE of that name moves the entry aside into ``broken/``.
* Backgrounds: ``DELETE /api/v1/pipeline/background/<id>`` (409 while an instance uses it), a retention per camera
  and a disk limit (409 past it).

Store tests run on the in-process apps (``apps``: no process); FILE and background tests on real servers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest
import requests

from cam_server.cli.pipeline_server import build_parser, parse_size
from cam_server.client.pipeline_client import PipelineClient
from cam_server.common.errors import Conflict
from cam_server.pipeline.file_path import FileOutputError, check_file_folder, resolve_output_file
from cam_server.pipeline.server.backgrounds import BackgroundStore, DiskLimitReached
from tests.helpers.apps import LocalApp, LocalApps
from tests.helpers.procs import ROOT, wait_until
from tests.helpers.servers import RunningServer, pipeline_server
from tests.pipeline_types.helpers import wait_finished, write_script

CAM = "/api/v1/cam"
PIPE = "/api/v1/pipeline"
HDF5 = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4  # the start of an HDF5 file: not UTF-8, not JSON, not .npy
SIM_CAMERA = {"source": "simulation", "source_type": "simulation", "size_x": 64, "size_y": 48, "frame_rate": 10}


def _error(response: httpx.Response | requests.Response, status: int, message: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["state"] == "error" and message in body["status"], body
    return body["status"]


def _ok(response: httpx.Response | requests.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "ok", body
    return body


# --- FILE output: where it may write ----------------------------------------------------------------------------
@pytest.mark.unit
def test_file_folder_is_the_default_and_anywhere_is_explicit():
    args = build_parser().parse_args([])
    assert args.file_folder == "data" and not args.file_folder_any  # was None: anywhere
    assert build_parser().parse_args(["--file_folder_any"]).file_folder_any


@pytest.mark.unit
@pytest.mark.parametrize(("file", "anywhere", "refused"), [
    ("run/a.h5", False, None),
    ("a.hdf5", False, None),
    ("dirx.json/out.h5", False, "names 'dirx.json'"),  # a folder named like a config
    ("h5cam.json", False, "names 'h5cam.json'"),       # an HDF5 file named like a config
    ("cam_20240101_000000_000000.npy", False, "names 'cam_20240101_000000_000000.npy'"),
    ("evil.py", False, "names 'evil.py'"),
    ("DIR.JSON/out.h5", False, "names 'DIR.JSON'"),
    ("{configs}/x.h5", False, "is outside the folder this server writes to"),
    ("{configs}/x.h5", True, "inside the server's pipeline config folder"),
    ("{configs}/sub/dirx.json/out.h5", True, "inside the server's pipeline config folder"),
    ("{backgrounds}/x.h5", True, "inside the server's background folder"),
    ("{scripts}/x.h5", True, "inside the server's user scripts folder"),
    ("{data}/link_to_configs/x.h5", True, "inside the server's pipeline config folder"),  # a link leading in
    ("link_to_configs/x.h5", False, "is outside the folder this server writes to"),
    ("{elsewhere}/dirx.json/out.h5", True, "names 'dirx.json'"),  # e.g. a camera server's config folder
    ("{elsewhere}/run/a.h5", True, None),
])
def test_file_output_paths(tmp_path, file, anywhere, refused):
    folders = {name: tmp_path / name for name in ("configs", "backgrounds", "scripts", "data", "elsewhere")}
    for folder in folders.values():
        folder.mkdir()
    (folders["data"] / "link_to_configs").symlink_to(folders["configs"])
    protected = {"pipeline config": str(folders["configs"]), "background": str(folders["backgrounds"]),
                 "user scripts": str(folders["scripts"])}
    file = file.format(**{name: str(folder) for name, folder in folders.items()})
    folder = None if anywhere else str(folders["data"])
    if refused is None:
        path = resolve_output_file(file, folder, protected)
        assert path.startswith(str(folders["elsewhere"] if anywhere else folders["data"]))
    else:
        with pytest.raises(FileOutputError, match=re.escape(refused)):
            resolve_output_file(file, folder, protected)


@pytest.mark.unit
def test_a_file_folder_inside_a_protected_folder_is_refused(tmp_path):
    protected = {"background": str(tmp_path / "backgrounds")}
    with pytest.raises(FileOutputError, match="inside the background folder"):
        check_file_folder(str(tmp_path / "backgrounds" / "data"), protected)
    assert check_file_folder(str(tmp_path / "data"), protected) == str(tmp_path / "data")


def test_server_refuses_to_start_with_its_file_folder_among_its_configs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cam_server.start_pipeline_server", "-b", str(tmp_path / "configs"),
                           "-g", str(tmp_path / "bg"), "-u", str(tmp_path / "scripts"),
                           "--file_folder", str(tmp_path / "configs" / "data")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "inside the pipeline config folder" in done.stderr, done.stderr


def test_default_server_confines_file_output_to_its_data_folder(servers, client):
    """The shared server runs with its --file_folder (servers.data): elsewhere is a 400 when created or saved."""
    base = {"pipeline_type": "custom", "function": "one_value", "mode": "FILE", "records": 2}
    write_script(servers.scripts, "one_value.py", "def process(parameters):\n    return {'v': 1}\n")
    cases = [(str(servers.camera.base / "dirx.json" / "out.h5"), "is outside the folder this server writes to"),
             (str(servers.pipeline.base / "out.h5"), "is outside the folder this server writes to"),
             ("dirx.json/out.h5", "names 'dirx.json'")]
    for file, message in cases:
        _error(requests.post(f"{servers.url}{PIPE}", json={**base, "file": file}, timeout=30), 400, message)
        _error(requests.post(f"{servers.url}{PIPE}/file_pipeline/config", json={**base, "file": file}, timeout=30),
               400, message)
    assert not (servers.camera.base / "dirx.json").exists() and not (servers.data / "dirx.json").exists()
    assert "file_pipeline" not in client.get_pipelines()
    instance_id, _ = client.create_instance_from_config({**base, "file": "storage/inside.h5"})
    assert wait_finished(client, instance_id)["exit_code"] == 0
    with h5py.File(servers.data / "storage" / "inside.h5", "r") as f:
        assert f["general/records"][()] == 2


BACKGROUND_SIZE = 128 + 48 * 64 * 8  # test_camera: 64 x 48, stored as float64
BACKGROUND_LIMIT = 6 * BACKGROUND_SIZE + 100  # 6 backgrounds' worth of disk


@pytest.fixture(scope="module")
def options_pipeline(servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A pipeline server with the storage options of this module: FILE output anywhere (outside its own folders),
    3 backgrounds per camera in at most :data:`BACKGROUND_LIMIT` bytes (one server for both: each start costs)."""
    args = ["--file_folder_any", "--background_retention", "3", "--background_disk_limit", str(BACKGROUND_LIMIT)]
    with pipeline_server(tmp_path_factory.mktemp("options"), servers.camera.url, extra_args=args) as pipe:
        yield pipe


def test_anywhere_still_never_writes_into_the_server_folders(servers, options_pipeline, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    pipe = options_pipeline
    write_script(pipe.scripts, "one_value.py", "def process(parameters):\n    return {'v': 1}\n")
    backgrounds = pipe.base.parent / "background_config"
    base = {"pipeline_type": "custom", "function": "one_value", "mode": "FILE", "records": 2}
    refused = [(pipe.base / "dirx.json" / "out.h5", "inside the server's pipeline config folder"),
               (pipe.base / "out.h5", "inside the server's pipeline config folder"),
               (backgrounds / "cam_20240101_000000_000000.h5", "inside the server's background folder"),
               (pipe.scripts / "out.h5", "inside the server's user scripts folder"),
               (servers.camera.base / "dirx.json" / "out.h5", "names 'dirx.json'"),
               (servers.camera.base / "h5cam.json", "names 'h5cam.json'")]
    for file, message in refused:
        _error(requests.post(f"{pipe.url}{PIPE}", json={**base, "file": str(file)}, timeout=30), 400, message)
    assert not (pipe.base / "dirx.json").exists() and not (servers.camera.base / "dirx.json").exists()
    assert not (servers.camera.base / "h5cam.json").exists()
    client = PipelineClient(pipe.url)
    assert not client.get_server_info()["active_instances"]
    instance_id, _ = client.create_instance_from_config({**base, "file": str(elsewhere / "run" / "a.h5")})
    assert wait_finished(client, instance_id)["exit_code"] == 0
    assert (elsewhere / "run" / "a.h5").is_file()


# --- stores tolerate bad entries --------------------------------------------------------------------------------
@dataclass
class Store:
    """One store as its REST API shows it."""

    app: Callable[[LocalApps], LocalApp]
    folder: Callable[[LocalApps], Path]
    suffix: str
    listing: str          # GET route of the list
    key: str              # list field of the usable entries
    entry: str            # route of one entry: DELETE (and the save route for "save")
    save: tuple[str, str, Callable[[str], dict]]  # (method, route, request kwargs for a name): store a good entry
    broken_name: str      # the name of the bad entry (for backgrounds: newer than any good one)
    good_name: str
    listed: Callable[[str], str] = lambda name: name  # an entry's name in the list


def _background(name: str) -> dict:
    return {"json": {"filename": name, "data": [[1.0, 2.0], [3.0, 4.0]]}}


STORES = {
    "camera configs": Store(
        app=lambda a: a.camera, folder=lambda a: a.camera.base, suffix=".json", listing=CAM, key="cameras",
        entry=CAM + "/{}/config", save=("POST", CAM + "/{}/config", lambda n: {"json": SIM_CAMERA}),
        broken_name="dirx", good_name="other_camera"),
    "pipeline configs": Store(
        app=lambda a: a.pipeline, folder=lambda a: a.pipeline.base, suffix=".json", listing=PIPE, key="pipelines",
        entry=PIPE + "/{}/config", broken_name="dirx", good_name="other_pipeline",
        save=("POST", PIPE + "/{}/config", lambda n: {"json": {"camera_name": "simulation"}})),
    "pipeline scripts": Store(
        app=lambda a: a.pipeline, folder=lambda a: a.pipeline.base.parent / "user_scripts", suffix=".py",
        listing=PIPE + "/script", key="scripts", entry=PIPE + "/script/{}/script_bytes",
        save=("PUT", PIPE + "/script/{}/script_bytes", lambda n: {"content": b"def f():\n    return 1\n"}),
        broken_name="dirx", good_name="other_script", listed=lambda name: name + ".py"),
    "camera scripts": Store(
        app=lambda a: a.camera, folder=lambda a: a.camera.base.parent / "camera_user_scripts", suffix=".py",
        listing=CAM + "/script", key="scripts", entry=CAM + "/script/{}/script_bytes",
        save=("PUT", CAM + "/script/{}/script_bytes", lambda n: {"content": b"def f():\n    return 1\n"}),
        broken_name="dirx", good_name="other_script", listed=lambda name: name + ".py"),
    "backgrounds": Store(
        app=lambda a: a.pipeline, folder=lambda a: a.pipeline.backgrounds, suffix=".npy",
        listing=PIPE + "/camera/simulation/backgrounds", key="background_ids", entry=PIPE + "/background/{}",
        save=("POST", PIPE + "/background", _background), broken_name="simulation_29991231_235959_999999",
        good_name="simulation_20240101_000000_000000"),
}


def _folder_with_a_file(path: Path) -> None:
    path.mkdir()
    (path / "out.h5").write_bytes(HDF5)


def _npy_3d(path: Path) -> None:
    with path.open("wb") as f:
        np.save(f, np.zeros((2, 3, 4)))


def _npy_truncated(path: Path) -> None:
    with path.open("wb") as f:
        np.save(f, np.zeros((40, 40)))
    path.write_bytes(path.read_bytes()[:-100])


# bad entry → (how to make it, the reason given for it in each store: a fragment, or one for all stores)
BAD_ENTRIES: dict[str, tuple[Callable[[Path], object], str | dict[str, str]]] = {
    "a folder": (_folder_with_a_file, "a directory, not a file"),
    "an empty folder": (lambda p: p.mkdir(), "a directory, not a file"),
    "an HDF5 file": (lambda p: p.write_bytes(HDF5), {".json": "cannot be read", ".py": "is not UTF-8 text",
                                                     ".npy": "not a readable numpy (.npy) file"}),
    "non-UTF-8 text": (lambda p: p.write_bytes(b'{"source": "caf\xe9"}\n'),
                       {".json": "'utf-8' codec can't decode", ".py": "is not UTF-8 text", ".npy": "not a readable"}),
    "a dangling link": (lambda p: p.symlink_to(p.parent / "nowhere"), "a symbolic link to nothing"),
}
NPY_ONLY = {"a 3-D array": (_npy_3d, "not a 2-D numeric image (shape [2, 3, 4]"),
            "a truncated array": (_npy_truncated, "truncated: 100 bytes of its pixels are missing")}
CASES = [(store, bad) for store in STORES for bad in BAD_ENTRIES] + [("backgrounds", bad) for bad in NPY_ONLY]


def _still_works(apps: LocalApps, store_name: str) -> None:
    """What must keep working beside a bad entry, beyond its own store's list, save and delete."""
    cam, pipe = apps.camera.http, apps.pipeline.http
    if store_name == "camera configs":
        assert _ok(cam.get(CAM + "/aliases"))["aliases"] == {"sim": "simulation"}
        assert _ok(cam.get(CAM + "/groups"))["groups"] == {"simulated": ["simulation"]}
        assert _ok(cam.get(CAM + "/sim/config"))["config"]["name"] == "simulation"
        assert _ok(cam.get(CAM + "/config_names"))["config_names"] == ["simulation"]
    elif store_name == "pipeline configs":
        assert "simulation_sp" in _ok(pipe.get(PIPE + "/config_names"))["config_names"]
        assert _ok(pipe.get(PIPE + "/simulation_sp/config"))["config"]["camera_name"] == "simulation"
        _ok(pipe.get(PIPE + "/groups"))
    elif store_name == "backgrounds":
        _ok(pipe.post(PIPE + "/background", **_background("copied_background")))
        assert _ok(pipe.get(PIPE + "/background/copied_background/image_bytes"))["image"]["shape"] == [2, 2]
        _ok(pipe.delete(PIPE + "/background/copied_background"))


@pytest.mark.unit
@pytest.mark.parametrize(("store_name", "bad"), CASES)
def test_a_bad_entry_is_listed_as_broken_and_the_store_keeps_working(apps, store_name, bad):
    store = STORES[store_name]
    make, reasons = {**BAD_ENTRIES, **NPY_ONLY}[bad]
    reason = reasons if isinstance(reasons, str) else reasons[store.suffix]
    http = store.app(apps).http
    folder = store.folder(apps)
    folder.mkdir(exist_ok=True)
    entry = folder / (store.broken_name + store.suffix)
    make(entry)
    try:
        # listed apart, with the reason; the usable entries as before
        listing = _ok(http.get(store.listing))
        assert store.listed(store.broken_name) not in listing[store.key]
        assert reason in listing["broken"][store.listed(store.broken_name)], listing["broken"]
        # the rest works: another entry is saved, listed, read and deleted
        method, route, kwargs = store.save
        _ok(http.request(method, route.format(store.good_name), **kwargs(store.good_name)))
        listing = _ok(http.get(store.listing))
        assert store.listed(store.good_name) in listing[store.key]
        if store_name == "backgrounds":  # the broken one is newer, but never the latest
            assert _ok(http.get(PIPE + "/camera/simulation/background"))["background_id"] == store.good_name
        _ok(http.delete(store.entry.format(store.good_name)))
        _still_works(apps, store_name)
        if entry.is_dir():  # nothing is written over a folder: 409 with what to do
            _error(http.request(method, route.format(store.broken_name), **kwargs(store.broken_name)), 409,
                   "moved aside")
        # DELETE moves it aside, whatever it is
        moved = _ok(http.delete(store.entry.format(store.broken_name)))["status"]
        assert "was a broken entry: moved aside to" in moved and f"{folder / 'broken'}" in moved
    finally:
        gone = not entry.exists() and not entry.is_symlink()
        if not gone:  # leave the folder as it was for the next case
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    assert gone, f"{entry} is still there"
    aside = list((folder / "broken").iterdir())
    try:
        assert len(aside) == 1 and aside[0].name.startswith(entry.name + ".")
        assert aside[0].is_dir() == bad.endswith("folder")
        if bad == "a folder":
            assert (aside[0] / "out.h5").read_bytes() == HDF5  # moved, not deleted: it is not the server's
    finally:
        shutil.rmtree(folder / "broken")
    listing = _ok(http.get(store.listing))
    assert store.listed(store.broken_name) not in listing["broken"]
    assert store.listed(store.broken_name) not in listing[store.key]
    _error(http.delete(store.entry.format(store.broken_name)), 404, "does not exist")


@pytest.mark.unit
def test_an_invalid_config_is_broken_too_and_saving_it_repairs_it(apps):
    """A readable JSON object that is no valid config: broken (with the validation error), deleted or fixed by
    saving a good config over it (a file the server may replace, unlike a folder)."""
    http = apps.camera.http
    path = apps.camera.base / "hand_edited.json"
    path.write_text('{"source_type": "no such type"}')
    try:
        listing = _ok(http.get(CAM))
        assert "hand_edited" not in listing["cameras"] and "source_type" in listing["broken"]["hand_edited"]
        _error(http.get(CAM + "/hand_edited/config"), 400, "source_type")
        _ok(http.post(CAM + "/hand_edited/config", json=SIM_CAMERA))
        listing = _ok(http.get(CAM))
        assert "hand_edited" in listing["cameras"] and listing["broken"] == {}
        assert _ok(http.delete(CAM + "/hand_edited/config"))["status"] == "Camera 'hand_edited' configuration deleted."
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.unit
def test_a_bad_entry_does_not_block_the_pipeline_server_reading_its_camera(apps):
    """The pipeline server asks the camera server for cameras and aliases: a broken camera entry is not among them."""
    (apps.camera.base / "dirx.json").mkdir()
    try:
        pipe = apps.pipeline.http
        assert _ok(pipe.get(PIPE + "/camera"))["cameras"] == ["simulation"]
        _ok(pipe.post(PIPE + "/storage_check/config", json={"camera_name": "sim"}))
        _ok(pipe.delete(PIPE + "/storage_check/config"))
    finally:
        (apps.camera.base / "dirx.json").rmdir()


# --- backgrounds: delete, retention, disk limit -----------------------------------------------------------------
@pytest.mark.unit
def test_retention_keeps_backgrounds_in_use_and_deletes_the_oldest_others(tmp_path):
    store = BackgroundStore(tmp_path, retention=3)
    ids = [store.save("cam", np.full((2, 2), float(i))) for i in range(5)]
    assert store.prune("cam", in_use={ids[0]}) == [ids[1], ids[2]]  # ids[0] is in use: kept, and counted
    assert store.ids("cam") == [ids[0], ids[3], ids[4]]
    store.save("other", np.zeros((2, 2)))
    assert store.prune("cam") == [] and len(store.ids("other")) == 1  # within the retention: nothing to do


@pytest.mark.unit
def test_disk_limit_refuses_what_does_not_fit(tmp_path):
    one = 128 + 4 * 4 * 8  # a 4 x 4 float64 background: header + pixels
    store = BackgroundStore(tmp_path, disk_limit=2 * one + 10)
    store.save("cam", np.zeros((4, 4)))
    assert store.save_as("named", np.ones((4, 4)))
    assert store.disk_usage() == 2 * one
    with pytest.raises(DiskLimitReached, match=r"holds 512 bytes of backgrounds and this server may store at most "
                                               r"522 bytes \(pipeline_server --background_disk_limit\)"):
        store.save("cam", np.zeros((4, 4)))
    with pytest.raises(DiskLimitReached):
        store.save_as("another", np.zeros((4, 4)))
    assert issubclass(DiskLimitReached, Conflict)  # a 409
    store.save_as("named", np.ones((4, 4)))  # the same again writes nothing: no refusal
    store.delete("named")
    store.save("cam", np.zeros((4, 4)))


@pytest.mark.unit
@pytest.mark.parametrize(("text", "size"), [("10G", 10 * 1024**3), ("500M", 500 * 1024**2), ("1.5k", 1536),
                                            ("64kB", 65536), ("12345", 12345), ("0", 0)])
def test_disk_limit_sizes(text, size):
    assert parse_size(text) == size
    assert build_parser().parse_args(["--background_disk_limit", text]).background_disk_limit == size


def test_backgrounds_are_deleted_kept_in_use_and_bounded(options_pipeline):
    """A pipeline server keeping 3 backgrounds per camera in at most 6 backgrounds' worth of disk."""
    limit = BACKGROUND_LIMIT
    pipe = options_pipeline
    client = PipelineClient(pipe.url)
    folder = pipe.base.parent / "background_config"
    # retention: the 4th collection deletes the oldest
    ids = [client.collect_background("test_camera", 1) for _ in range(4)]
    assert client.get_backgrounds("test_camera") == ids[1:]
    assert not (folder / f"{ids[0]}.npy").exists()
    # in use: kept by retention, refused by DELETE while the instance runs
    in_use = ids[1]
    instance_id, _ = client.create_instance_from_config(
        {"camera_name": "test_camera", "image_background": in_use, "image_background_enable": True})
    ids += [client.collect_background("test_camera", 1) for _ in range(2)]
    assert client.get_backgrounds("test_camera") == [in_use, ids[4], ids[5]]
    _error(requests.delete(f"{pipe.url}{PIPE}/background/{in_use}", timeout=30), 409,
           f"Background '{in_use}' is used by running instance(s) {instance_id}")
    # ... also when a live change names it
    other, _ = client.create_instance_from_config({"camera_name": "test_camera"})
    client.set_instance_config(other, {"image_background": ids[5]})
    _error(requests.delete(f"{pipe.url}{PIPE}/background/{ids[5]}", timeout=30), 409, other)
    client.stop_instance(instance_id)
    client.stop_instance(other)
    client.delete_background(in_use)
    assert client.get_backgrounds("test_camera") == [ids[4], ids[5]]
    _error(requests.get(f"{pipe.url}{PIPE}/background/{in_use}/image_bytes", timeout=30), 404, "does not exist")
    # the disk limit: uploads fill it, then uploads and collections are refused (a collection at once)
    uploaded = 0
    while True:
        response = requests.post(f"{pipe.url}{PIPE}/background", timeout=30, json={
            "filename": f"upload_{uploaded}", "data": np.zeros((48, 64)).tolist()})
        if response.status_code != 200:
            break
        uploaded += 1
    assert uploaded == 4  # 2 collected + 4 uploaded = 6 fit
    _error(response, 409, "Background disk limit reached")
    listing = client.get_all_backgrounds()
    assert listing["disk_usage"] == 6 * BACKGROUND_SIZE <= listing["disk_limit"] == limit
    assert listing["retention"] == 3 and listing["broken"] == {}
    assert sorted(listing["background_ids"]) == sorted([ids[4], ids[5], *(f"upload_{i}" for i in range(4))])
    _error(requests.post(f"{pipe.url}{PIPE}/camera/test_camera/background", params={"n_images": 1}, timeout=30),
           409, "Background disk limit reached")
    client.delete_background("upload_0")
    new = client.collect_background("test_camera", 1)
    assert client.get_backgrounds("test_camera") == [ids[4], ids[5], new]
    assert sum(p.stat().st_size for p in folder.glob("*.npy")) <= limit


def test_background_delete_errors(client, servers):
    cases = [("no_such_background", 404, "Background 'no_such_background' does not exist"),
             ("..%2Fetc", 400, "Invalid background id"),
             ("a/b", 400, "Invalid background id")]
    for name, status, message in cases:
        _error(requests.delete(f"{servers.url}{PIPE}/background/{name}", timeout=30), status, message)
    wait_until(lambda: requests.get(f"{servers.url}{PIPE}/info", timeout=30).status_code == 200, 5, "healthy")
