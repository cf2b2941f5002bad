"""The README's pipeline examples, verbatim except for the server address and ``bsread`` → ``cam_server.bsread``."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cam_server.client.pipeline_client import PipelineClient

QUICK_START = '''
from cam_server import PipelineClient
from cam_server.utils import get_host_port_from_stream_address
from bsread import source, SUB

# Create a pipeline client.
client = PipelineClient()

# Define the camera name you want to read. This should be the same camera you are streaming in screen panel.
camera_name = "simulation"

# Format of the instance id when screen_panel creates a pipeline.
pipeline_instance_id = camera_name + "_sp1"

# Get the stream for the pipelie instance.
stream_address = client.get_instance_stream(pipeline_instance_id)

# Extract the stream host and port from the stream_address.
stream_host, stream_port = get_host_port_from_stream_address(stream_address)

# Open connection to the stream. When exiting the 'with' section, the source disconnects by itself.
with source(host=stream_host, port=stream_port, mode=SUB) as input_stream:
    input_stream.connect()

    # Read one message.
    message = input_stream.receive()

    # Print out the received stream data - dictionary.
    print("Dictionary with data:\\n", message.data.data)

    # Print out the X center of mass.
    print("X center of mass: ", message.data.data["x_center_of_mass"].value)
'''

BASIC_PIPELINE = '''
from cam_server import PipelineClient
from cam_server.utils import get_host_port_from_stream_address
from bsread import source, SUB

# Initialize the client.
pipeline_client = PipelineClient()

# Setup the pipeline config. Use the simulation camera as the pipeline source.
pipeline_config = {"camera_name": "simulation"}

# Create a new pipeline with the provided configuration. Stream address in format tcp://hostname:port.
instance_id, pipeline_stream_address = pipeline_client.create_instance_from_config(pipeline_config)

# Extract the stream hostname and port from the stream address.
pipeline_host, pipeline_port = get_host_port_from_stream_address(pipeline_stream_address)

# Subscribe to the stream.
with source(host=pipeline_host, port=pipeline_port, mode=SUB) as stream:
    # Receive next message.
    data = stream.receive()

image_width = data.data.data["width"].value
image_height = data.data.data["height"].value
image_bytes = data.data.data["image"].value

print("Image size: %d x %d" % (image_width, image_height))
print("Image data: %s" % image_bytes)
'''

WITH_BACKGROUND = '''
from cam_server import PipelineClient

camera_name = "simulation"

# Initialize the client.
pipeline_client = PipelineClient()

# Collect the background for the given camera.
background_id = pipeline_client.collect_background(camera_name)

# Setup the pipeline config. Use the simulation camera as the pipeline source, and the collected background.
pipeline_config = {"camera_name": camera_name,
                   "background_id": background_id}

# Create a new pipeline with the provided configuration. Stream address in format tcp://hostname:port.
instance_id, pipeline_stream_address = pipeline_client.create_instance_from_config(pipeline_config)

# TODO: Continue as in the example above.
'''

READ_CAMERA_STREAM = '''
from cam_server import PipelineClient
from cam_server.utils import get_host_port_from_stream_address
from bsread import source, SUB

# Define the camera name you want to read.
camera_name = "simulation"

# First create the pipeline for the selected camera.
client = PipelineClient()
instance_id, stream_address = client.create_instance_from_config({"camera_name": camera_name})

# Extract the stream host and port from the stream_address.
stream_host, stream_port = get_host_port_from_stream_address(stream_address)

# Check if your instance is running on the server.
if instance_id not in client.get_server_info()["active_instances"]:
    raise ValueError("Requested pipeline is not running.")

# Open connection to the stream. When exiting the 'with' section, the source disconnects by itself.
with source(host=stream_host, port=stream_port, mode=SUB) as input_stream:
    input_stream.connect()

    # Read one message.
    message = input_stream.receive()

    # Print out the received stream data - dictionary.
    print("Dictionary with data:\\n", message.data.data)

    # Print out the X center of mass.
    print("X center of mass: ", message.data.data["x_center_of_mass"].value)
'''

MODIFY_PIPELINE = '''
from cam_server import PipelineClient

# Initialize the pipeline client.
pipeline_client = PipelineClient()

# Print the list of available pipelines.
print(pipeline_client.get_pipelines())

# TODO: Put the name of the pipeline you want to modify.
pipeline_to_modify = "test_pipeline"

# Retrieve the camera config.
pipeline_config = pipeline_client.get_pipeline_config(pipeline_to_modify)

# Change the image threshold.
pipeline_config["image_threshold"] = 0.5
# Change the image region of interest.
pipeline_config["image_region_of_interest"] = [0, 100, 0, 100]

# Save the camera configuration.
pipeline_client.save_pipeline_config(pipeline_to_modify, pipeline_config)

# You can also save the same (or another) config under a different camera name.
pipeline_client.save_pipeline_config("pipeline_to_delete", pipeline_config)

# And also delete camera configs.
pipeline_client.delete_pipeline_config("pipeline_to_delete")
'''

SINGLE_MESSAGE = '''
from cam_server import PipelineClient

# Instantiate the pipeline client.
pipeline_client = PipelineClient()

# Name of the camera we want to get a message from.
camera_name = "simulation"
# Screen panel defines the instance name as: [CAMERA_NAME]_sp1
instance_name = camera_name + "_sp1"

# Get the data.
data = pipeline_client.get_instance_message(instance_name)
'''

SAVE_TO_H5 = '''
from bsread import h5, SUB
from cam_server import PipelineClient

camera_name = "simulation"
file_name = "output.h5"
n_messages = 10

client = PipelineClient()

instance_id, stream_address = client.create_instance_from_config({"camera_name": camera_name})

# The output file 'output.h5' has 10 images from the simulation camera stream.
h5.receive(source=stream_address, file_name=file_name, mode=SUB, n_messages=n_messages)
'''


def run_example(code: str, url: str) -> dict:
    """Execute an example with only the address and the bsread import changed; returns its variables."""
    code = code.replace("from bsread import", "from cam_server.bsread import")
    code = code.replace("PipelineClient()", f"PipelineClient({url!r})")
    assert "PipelineClient(" in code
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, "<README example>", "exec"), namespace)  # noqa: S102 - our own fixed example text
    return namespace


@pytest.fixture
def screen_panel(client: PipelineClient) -> str:
    """What screen_panel does before the quick-start examples: a private instance named <camera>_sp1."""
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation"}, "simulation_sp1")
    return instance_id


def test_quick_start(servers, screen_panel, capsys):
    ns = run_example(QUICK_START, servers.url)
    assert 600 < ns["message"].data.data["x_center_of_mass"].value < 680
    assert "X center of mass: " in capsys.readouterr().out


def test_basic_pipeline(servers, client, capsys):
    ns = run_example(BASIC_PIPELINE, servers.url)
    assert (ns["image_width"], ns["image_height"]) == (1280, 960)
    assert ns["image_bytes"].shape == (960, 1280)
    assert "Image size: 1280 x 960" in capsys.readouterr().out


def test_pipeline_with_background(servers, client):
    ns = run_example(WITH_BACKGROUND, servers.url)
    config = client.get_instance_config(ns["instance_id"])
    assert config["image_background"] == ns["background_id"] and config["image_background_enable"] is True
    message = client.get_instance_message(ns["instance_id"])
    # Background subtracted: the noise floor (~3300 counts on average) is mostly gone.
    assert np.median(message.data.data["image"].value) < 1000


def test_read_stream_by_camera_name(servers, client):
    ns = run_example(READ_CAMERA_STREAM, servers.url)
    assert ns["message"].data.data["intensity"].value > 0


def test_modify_pipeline_config(servers, client):
    client.save_pipeline_config("test_pipeline", {"camera_name": "simulation"})
    run_example(MODIFY_PIPELINE, servers.url)
    config = client.get_pipeline_config("test_pipeline")
    assert config["image_threshold"] == 0.5 and config["image_region_of_interest"] == [0, 100, 0, 100]
    assert "pipeline_to_delete" not in client.get_pipelines()
    client.delete_pipeline_config("test_pipeline")


def test_single_message(servers, screen_panel):
    ns = run_example(SINGLE_MESSAGE, servers.url)
    data = ns["data"]  # a bsread message, as PSI's client returns it
    assert data.data.data["width"].value == 1280 and data.data.data["image"].value.shape == (960, 1280)
    assert 600 < data.data.data["x_center_of_mass"].value < 680 and data.data.pulse_id > 0


def test_save_stream_to_h5(servers, client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_example(SAVE_TO_H5, servers.url)
    with h5py.File(tmp_path / "output.h5") as f:
        assert f["data/image/data"].shape == (10, 960, 1280)
        pulse_ids = f["data/image/pulse_id"][:]
        assert len(pulse_ids) == 10 and np.all(np.diff(pulse_ids) > 0)
