"""Background store and pipeline config store on real files."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from cam_server.common.errors import InvalidConfig, InvalidName, NotFound
from cam_server.pipeline.server.backgrounds import BackgroundStore, check_n_images
from cam_server.pipeline.server.saved_configs import SavedConfigs

pytestmark = pytest.mark.unit


def test_background_ids_save_load_roundtrip(tmp_path):
    store = BackgroundStore(tmp_path)
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    bid = store.save("simulation", array)
    assert re.fullmatch(r"simulation_\d{8}_\d{6}_\d{6}", bid)
    assert (tmp_path / f"{bid}.npy").is_file()
    loaded = store.load(bid)
    assert loaded.dtype == np.float64 and np.array_equal(loaded, array)
    assert store.shape(bid) == (3, 4)
    assert store.latest("simulation") == bid


def test_ids_are_unique_and_latest_is_the_newest(tmp_path):
    store = BackgroundStore(tmp_path)
    ids = [store.save("cam", np.full((2, 2), i)) for i in range(20)]
    assert len(set(ids)) == 20
    assert store.latest("cam") == ids[-1]
    assert store.ids("cam") == sorted(ids)
    assert store.load(store.latest("cam"))[0, 0] == 19


def test_latest_is_for_exactly_that_camera_not_a_name_prefix(tmp_path):
    store = BackgroundStore(tmp_path)
    own = store.save("sim", np.zeros((2, 2)))
    store.save("sim_2", np.ones((2, 2)))
    store.save("sim2", np.ones((2, 2)))
    store.save("simulation", np.ones((2, 2)))
    assert store.latest("sim") == own
    assert store.ids("sim") == [own]
    with pytest.raises(NotFound, match="No background collected for camera 'si'"):
        store.latest("si")


def test_missing_corrupt_and_bad_ids(tmp_path):
    store = BackgroundStore(tmp_path)
    with pytest.raises(NotFound, match="Background 'cam_20260101_000000_000000' does not exist"):
        store.load("cam_20260101_000000_000000")
    (tmp_path / "cam_20260101_000000_000001.npy").write_bytes(b"not a numpy file")
    with pytest.raises(InvalidConfig, match="Background 'cam_20260101_000000_000001' is corrupt"):
        store.load("cam_20260101_000000_000001")
    with pytest.raises(InvalidName):
        store.load("../etc/passwd")
    with pytest.raises(InvalidName):
        store.save("a/b", np.zeros(2))


def test_save_is_atomic_readers_never_see_a_partial_file(tmp_path):
    store = BackgroundStore(tmp_path)
    first = store.save("cam", np.zeros((200, 200)))
    errors: list[Exception] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                assert store.load(store.latest("cam")).shape == (200, 200)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(30):
        store.save("cam", np.full((200, 200), i))
    stop.set()
    thread.join()
    assert errors == []
    assert store.ids("cam")[0] == first  # never deletes
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".npy"]  # no temp files left


def test_n_images_validation():
    assert check_n_images(None) == 10
    assert check_n_images(3) == 3
    for bad in (0, -1, 1.5, True, "3", 10**9):
        with pytest.raises(InvalidConfig, match="Invalid n_images"):
            check_n_images(bad)


def test_pipeline_config_store_saves_expanded_and_refuses_reserved_names(tmp_path):
    store = SavedConfigs(tmp_path)
    saved = store.save_config("test_pipeline", {"camera_name": "simulation", "image_threshold": 2})
    assert store.load("test_pipeline") == saved
    assert saved["image_threshold"] == 2.0 and saved["queue_size"] == 10
    for name in ("info", "camera", "instance", "../x", ""):
        with pytest.raises(InvalidName):
            store.save_config(name, {"camera_name": "simulation"})
    with pytest.raises(InvalidConfig, match="camera_name is required"):
        store.save_config("other", {})
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InvalidConfig, match="Pipeline 'broken' is not valid JSON"):
        store.load("broken")
