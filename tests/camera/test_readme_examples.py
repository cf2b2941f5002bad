"""The README camera examples, verbatim except for the server address and the bsread import."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest

from cam_server.client.cam_client import CamClient
from tests.helpers.servers import TEST_CAMERA, RunningServer, camera_server, write_config_dir

GET_SIMULATION_STREAM = '''
from cam_server import CamClient
from cam_server.utils import get_host_port_from_stream_address
from cam_server.bsread import source, SUB

# Initialize the client.
camera_client = CamClient(ADDRESS)

# Get stream address of simulation camera. Stream address in format tcp://hostname:port.
camera_stream_address = camera_client.get_instance_stream("simulation")

# Extract the stream hostname and port from the stream address.
camera_host, camera_port = get_host_port_from_stream_address(camera_stream_address)

# Subscribe to the stream.
with source(host=camera_host, port=camera_port, mode=SUB) as stream:
    # Receive next message.
    data = stream.receive()

image_width = data.data.data["width"].value
image_height = data.data.data["height"].value
image_bytes = data.data.data["image"].value

print("Image size: %d x %d" % (image_width, image_height))
print("Image data: %s" % image_bytes)
'''

MODIFY_CAMERA_CONFIG = '''
from cam_server import CamClient

# Initialize the camera client.
cam_client = CamClient(ADDRESS)

# Print the list of available cameras.
print(cam_client.get_cameras())

# TODO: Put the name of the camera you want to modify.
camera_to_modify = "test_camera"

# Retrieve the camera config.
camera_config = cam_client.get_camera_config(camera_to_modify)

# Change the mirror_x setting.
camera_config["mirror_x"] = False
# Change the camera_calibration setting.
camera_config["camera_calibration"] = {
    "reference_marker": [ 0, 0, 100, 100 ],
    "reference_marker_width": 100.0,
    "reference_marker_height": 100.0,
    "angle_horizontal": 0.0,
    "angle_vertical": 0.0
}

# Save the camera configuration.
cam_client.set_camera_config(camera_to_modify, camera_config)

# You can also save the same (or another) config under a different camera name.
cam_client.set_camera_config("camera_to_delete", camera_config)

# And also delete camera configs.
cam_client.delete_camera_config("camera_to_delete")
'''

CREATE_CAMERA = '''
from cam_server import CamClient

# Initialize the camera client.
cam_client = CamClient(ADDRESS)

# Specify the desired camera config.
camera_config = {
  "name": "camera_example_3",
  "source": "EPICS:CAM1:EXAMPLE",
  "source_type": "epics",
  "mirror_x": False,
  "mirror_y": False,
  "rotate": 0,

  "camera_calibration": {
    "reference_marker": [ 0, 0, 100, 100 ],
    "reference_marker_width": 100.0,
    "reference_marker_height": 100.0,
    "angle_horizontal": 0.0,
    "angle_vertical": 0.0
  }
}

# Specify the new camera name.
new_camera_name = "new_camera_name"

# Save the camera configuration.
cam_client.set_camera_config(new_camera_name, camera_config)

# In case you need to, delete the camera config you just added.
# cam_client.cam_client.delete_camera_config(new_camera_name)
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The README copies test_camera's config to another name: that needs a test_camera without aliases."""
    tmp = tmp_path_factory.mktemp("readme_server")
    configs = write_config_dir(tmp / "configs", {**TEST_CAMERA, "alias": []})
    with camera_server(tmp, config_dir=configs) as running:
        yield running


def run_example(code: str, address: str) -> dict:
    namespace: dict = {}
    exec(compile(textwrap.dedent(code).replace("ADDRESS", repr(address)), "<README example>", "exec"), namespace)
    return namespace


def test_get_the_simulation_camera_stream(server, capsys: pytest.CaptureFixture) -> None:
    namespace = run_example(GET_SIMULATION_STREAM, server.url)
    assert "Image size: 1280 x 960" in capsys.readouterr().out
    assert namespace["image_bytes"].shape == (960, 1280)
    CamClient(server.url).stop_all_instances()


def test_modifying_camera_config(server, capsys: pytest.CaptureFixture) -> None:
    client = CamClient(server.url)
    original = client.get_camera_config("test_camera")
    try:
        run_example(MODIFY_CAMERA_CONFIG, server.url)
        assert "['simulation', 'test_camera']" in capsys.readouterr().out
        config = client.get_camera_config("test_camera")
        assert config["mirror_x"] is False
        assert config["camera_calibration"]["reference_marker"] == [0, 0, 100, 100]
        assert "camera_to_delete" not in client.get_cameras()
    finally:
        client.set_camera_config("test_camera", original)


def test_create_a_new_camera(server) -> None:
    client = CamClient(server.url)
    run_example(CREATE_CAMERA, server.url)
    config = client.get_camera_config("new_camera_name")
    assert config["name"] == "new_camera_name"  # stored under the requested name
    assert config["source"] == "EPICS:CAM1:EXAMPLE" and config["source_type"] == "epics"
    client.delete_camera_config("new_camera_name")
    assert client.get_cameras() == ["simulation", "test_camera"]
