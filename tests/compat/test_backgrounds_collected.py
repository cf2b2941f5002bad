"""Pipeline background routes PSI's clients call (psi-interface.md section 1) on a background the pipeline server
collected from a camera stream (the shared camera + pipeline servers): image_bytes, PNG, and putting it back."""

from __future__ import annotations

import base64
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from cam_server.camera.render import render_png
from cam_server.client.pipeline_client import PipelineClient
from tests.compat.backgrounds import error_message, payload
from tests.helpers.servers import ServerPair

API = "/api/v1/pipeline"


@pytest.fixture(scope="module")
def collected(servers: ServerPair) -> str:
    """A background collected from the simulation camera (float64 mean of 2 images)."""
    return PipelineClient(servers.url).collect_background("simulation", 2)


def _stored(servers: ServerPair, name: str) -> Path:
    return servers.backgrounds / f"{name}.npy"


def _put(servers: ServerPair, name: str, body: bytes) -> requests.Response:
    return requests.put(f"{servers.url}{API}/background/{name}/image_bytes", data=body, timeout=30)


def test_image_bytes_of_a_collected_background(servers: ServerPair, client: PipelineClient, collected: str) -> None:
    array = np.load(_stored(servers, collected))
    image = client.get_background_image_bytes(collected)
    assert image["shape"] == list(array.shape) and image["dtype"] == "float64" == array.dtype.name
    assert image["width"] == array.shape[1] and image["height"] == array.shape[0]
    decoded = np.frombuffer(base64.b64decode(image["bytes"]), dtype=image["dtype"]).reshape(image["shape"])
    np.testing.assert_array_equal(decoded, array)
    assert collected in client.get_backgrounds("simulation")


def test_png_is_rendered_as_the_camera_image(servers: ServerPair, client: PipelineClient, collected: str) -> None:
    array = np.load(_stored(servers, collected))
    response = requests.get(f"{servers.url}{API}/background/{collected}/image", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "PNG" and picture.size == (array.shape[1], array.shape[0])
    assert response.content == render_png(array)
    options = {"scale": 0.5, "min_value": 1000.0, "max_value": 20000.0, "colormap": "jet"}
    png = client.get_background_image(collected, **options)
    assert png == render_png(array, **options)
    assert Image.open(io.BytesIO(png)).size == (round(array.shape[1] * 0.5), round(array.shape[0] * 0.5))
    bad = requests.get(f"{servers.url}{API}/background/{collected}/image", params={"colormap": "rainbow"}, timeout=10)
    assert error_message(bad, 400).startswith("Unknown colormap 'rainbow'")
    assert "Invalid scale -1.0" in error_message(requests.get(f"{servers.url}{API}/background/{collected}/image",
                                                              params={"scale": -1}, timeout=10), 400)


def test_round_trip_get_put_get(servers: ServerPair, client: PipelineClient, collected: str) -> None:
    image = client.get_background_image_bytes(collected)
    assert client.set_background_image_bytes("copied_background", image) == "copied_background"
    copy = client.get_background_image_bytes("copied_background")
    assert (copy["bytes"], copy["shape"], copy["dtype"]) == (image["bytes"], image["shape"], image["dtype"])
    np.testing.assert_array_equal(np.load(_stored(servers, "copied_background")), np.load(_stored(servers, collected)))
    # The same image again is accepted (idempotent); a different one under an existing id is refused.
    again = _put(servers, "copied_background", pickle.dumps(image, protocol=0))
    assert again.status_code == 200 and again.json() == {
        "state": "ok", "status": "Background copied_background already holds this image (unchanged).",
        "background_id": "copied_background"}
    other = payload(np.ones(tuple(image["shape"]), dtype=np.float64))
    response = _put(servers, "copied_background", pickle.dumps(other, protocol=0))
    assert error_message(response, 409).startswith("Background 'copied_background' already exists with a different "
                                                   "image")
    np.testing.assert_array_equal(np.load(_stored(servers, "copied_background")), np.load(_stored(servers, collected)))
