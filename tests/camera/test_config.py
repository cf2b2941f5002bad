"""Camera config model and config store (no server)."""

from __future__ import annotations

import json

import pytest

from cam_server.camera.config import parse_camera_config
from cam_server.camera.store import CameraConfigStore
from cam_server.common.errors import Conflict, InvalidConfig, InvalidName, NotFound

pytestmark = pytest.mark.unit

BASE = {"source": "x", "source_type": "simulation"}


def test_defaults_in_one_place() -> None:
    config = parse_camera_config(dict(BASE), "cam").to_dict()
    assert config["name"] == "cam"
    assert config["mirror_x"] is False and config["mirror_y"] is False and config["rotate"] == 0
    assert config["camera_calibration"] is None
    assert config["protocol"] == "tcp" and config["alias"] == [] and config["group"] == []
    assert config["connections"] == 1 and config["buffer_size"] == 5
    assert config["dtype"] == "uint16" and config["no_client_timeout"] == 10 and config["queue_size"] == 10
    assert config["binning_x"] == 1 and config["roi"] is None and config["port"] is None


def test_buffer_size_follows_connections_and_extra_keys_are_kept() -> None:
    config = parse_camera_config({**BASE, "connections": 3, "my_note": {"room": 12}}).to_dict()
    assert config["buffer_size"] == 15
    assert config["my_note"] == {"room": 12}


def test_calibration_defaults_for_missing_keys() -> None:
    config = parse_camera_config({**BASE, "camera_calibration": {"reference_marker_width": 30000}})
    assert config.calibration_dict() == {"reference_marker": [0, 0, 100, 100], "reference_marker_width": 30000.0,
                                         "reference_marker_height": 100.0, "angle_horizontal": 0.0,
                                         "angle_vertical": 0.0}


@pytest.mark.parametrize(("change", "field"), [
    ({"source_type": "camera_link"}, "source_type"),
    ({"source": None}, "source"),
    ({"rotate": "left"}, "rotate"),
    ({"camera_calibration": {"angle_vertical": "steep"}}, "camera_calibration.angle_vertical"),
    ({"camera_calibration": {"reference_marker": [1, 2, 3]}}, "camera_calibration.reference_marker"),
    ({"protocol": "udp"}, "protocol"),
    ({"dtype": "complex128"}, "dtype"),
    ({"dtype": "pixels"}, "dtype"),
    ({"roi": [0, 0, 10, 10]}, "roi"),
    ({"binning_x": 0}, "binning_x"),
    ({"alias": ["../etc"]}, "alias"),
    ({"connections": 0}, "connections"),
])
def test_invalid_values_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        parse_camera_config({**BASE, **change}, "cam")
    assert f"'{field}'" in str(info.value)
    assert "cam" in str(info.value)


@pytest.mark.parametrize("source", ["tcp://127.0.0.1:9999", "ipc:///tmp/cam", "X:CAM", "XF:23ID1-BI{Diag:6}"])
def test_bsread_source_is_a_stream_address_or_a_pv_prefix(source: str) -> None:
    assert parse_camera_config({"source": source, "source_type": "bsread"}).source == source


@pytest.mark.parametrize("source", ["tcp://host", "tcp://:9999", "inproc://cam", "X CAM", 12, ["tcp://h:1"], ""])
def test_bsread_source_that_is_neither_is_named(source: object) -> None:
    expected = "'source': source must not be None or empty" if source == "" else (
        "'source' of a bsread camera must be a stream address like tcp://host:port, or the PV prefix of a camera "
        f"that publishes its own bsread stream, got {source!r}")
    with pytest.raises(InvalidConfig) as info:
        parse_camera_config({"source": source, "source_type": "bsread"}, "cam")
    assert str(info.value) == f"Invalid camera config 'cam': {expected}"


@pytest.mark.parametrize("source_type", ["epics", "area_detector"])
def test_epics_source_types_need_a_pv_prefix(source_type: str) -> None:
    assert parse_camera_config({"source": "X:CAM", "source_type": source_type}).source_type == source_type
    with pytest.raises(InvalidConfig, match=f"'source' of an {source_type} camera must be the PV prefix"):
        parse_camera_config({"source": 12, "source_type": source_type})


def test_missing_source_names_the_field() -> None:
    with pytest.raises(InvalidConfig, match="'source': field required"):
        parse_camera_config({"source_type": "simulation"})


def test_store_aliases_groups_and_resolution(tmp_path) -> None:
    store = CameraConfigStore(tmp_path)
    store.save("cam_a", {**BASE, "alias": ["A", "first"], "group": ["g1", "g2"]})
    store.save("cam_b", {**BASE, "alias": "B", "group": ["g2"]})
    assert store.names() == ["cam_a", "cam_b"]
    assert store.resolve("first") == "cam_a" and store.resolve("B") == "cam_b"
    assert store.load("A").name == "cam_a"
    assert store.aliases() == {"A": "cam_a", "first": "cam_a", "B": "cam_b"}
    assert store.groups() == {"g1": ["cam_a"], "g2": ["cam_a", "cam_b"]}
    assert store.group_cameras("g2") == ["cam_a", "cam_b"]
    with pytest.raises(NotFound, match="group 'nope'"):
        store.group_cameras("nope")
    with pytest.raises(NotFound, match="Camera 'nope' does not exist"):
        store.resolve("nope")
    # saving through an alias updates the aliased camera
    store.save("B", {**BASE, "alias": ["B"], "mirror_x": True})
    assert json.loads((tmp_path / "cam_b.json").read_text())["mirror_x"] is True
    assert not (tmp_path / "B.json").exists()
    assert store.delete("first") == "cam_a"
    assert store.aliases() == {"B": "cam_b"}


def test_store_alias_clashes(tmp_path) -> None:
    store = CameraConfigStore(tmp_path)
    store.save("cam_a", {**BASE, "alias": ["A"]})
    with pytest.raises(Conflict, match="Alias 'A' of camera 'cam_b' is already used by camera 'cam_a'"):
        store.save("cam_b", {**BASE, "alias": ["A"]})
    with pytest.raises(Conflict, match="Alias 'cam_a' of camera 'cam_b' is already the name of another camera"):
        store.save("cam_b", {**BASE, "alias": ["cam_a"]})
    assert store.names() == ["cam_a"]
    with pytest.raises(InvalidName, match="reserved"):
        store.save("info", dict(BASE))
    with pytest.raises(InvalidName):
        store.save("../x", dict(BASE))


def test_store_corrupt_file_only_breaks_that_camera(tmp_path) -> None:
    store = CameraConfigStore(tmp_path)
    store.save("good", {**BASE, "alias": ["g"]})
    (tmp_path / "bad.json").write_text("{not json")
    assert store.resolve("g") == "good"
    with pytest.raises(InvalidConfig, match="bad"):
        store.load("bad")
