"""Pipeline background routes PSI's clients call (psi-interface.md section 1), against real camera + pipeline servers:
listing, PNG and image_bytes reads, and the uploads (a pickled body read by the restricted unpickler, JSON)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from cam_server.camera.render import render_png
from cam_server.client.pipeline_client import PipelineClient
from cam_server.pipeline.server.backgrounds import MAX_IMAGE_BYTES_BODY, MAX_LIST_BODY, MAX_LIST_VALUES
from tests.helpers.servers import ServerPair

API = "/api/v1/pipeline"


@pytest.fixture(scope="module")
def client(servers: ServerPair) -> Iterator[PipelineClient]:
    """One client for the module (``collected`` is module-wide too)."""
    c = PipelineClient(servers.url)
    yield c
    c.stop_all_instances()


@pytest.fixture(scope="module")
def collected(client: PipelineClient) -> str:
    """A background collected from the simulation camera (float64 mean of 2 images)."""
    return client.collect_background("simulation", 2)


def _error(response: requests.Response, status: int) -> str:
    """The envelope message of an error answer with HTTP ``status``."""
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["state"] == "error" and isinstance(body["status"], str) and body["status"]
    return body["status"]


def _put(servers: ServerPair, name: str, body: bytes, **kwargs) -> requests.Response:
    return requests.put(f"{servers.url}{API}/background/{name}/image_bytes", data=body, timeout=30, **kwargs)


def _payload(array: np.ndarray, **extra) -> dict:
    """The dict PSI's client sends back (what GET image_bytes answers): base64 bytes, shape, dtype."""
    return {"bytes": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii"),
            "shape": list(array.shape), "dtype": array.dtype.name, **extra}


def _stored(servers: ServerPair, name: str) -> Path:
    return servers.backgrounds / f"{name}.npy"


# --- listing -----------------------------------------------------------------------------------------------------
def test_backgrounds_of_a_camera_are_its_own_sorted(servers: ServerPair, client: PipelineClient) -> None:
    own = ["cam_a_20200101_000000_000002", "cam_a_20200101_000000_000001", "cam_a_20190101_120000_000000"]
    others = ["cam_a_2_20300101_000000_000000", "cam_ab_20300101_000000_000000", "cam_20300101_000000_000000"]
    for name in own + others:
        np.save(_stored(servers, name), np.zeros((2, 3)))
    assert client.get_backgrounds("cam_a") == sorted(own)
    assert client.get_backgrounds("cam_a_2") == ["cam_a_2_20300101_000000_000000"]
    assert client.get_backgrounds("cam") == ["cam_20300101_000000_000000"]
    response = requests.get(f"{servers.url}{API}/camera/cam_a/backgrounds", timeout=10)
    assert response.status_code == 200 and response.json()["background_ids"] == sorted(own)


def test_unknown_camera_has_an_empty_list_and_a_bad_name_is_refused(servers: ServerPair,
                                                                    client: PipelineClient) -> None:
    # Decision: the store lists files and does not ask the camera server, so an unknown camera has no backgrounds.
    assert client.get_backgrounds("no_such_camera") == []
    message = _error(requests.get(f"{servers.url}{API}/camera/..x/backgrounds", timeout=10), 400)
    assert message.startswith("Invalid camera name '..x'")


# --- reading -----------------------------------------------------------------------------------------------------
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
    assert _error(bad, 400).startswith("Unknown colormap 'rainbow'")
    assert "Invalid scale -1.0" in _error(requests.get(f"{servers.url}{API}/background/{collected}/image",
                                                       params={"scale": -1}, timeout=10), 400)


def test_unknown_background_is_404(servers: ServerPair, client: PipelineClient) -> None:
    for route in ("image", "image_bytes"):
        response = requests.get(f"{servers.url}{API}/background/no_such_background/{route}", timeout=10)
        assert _error(response, 404) == "Background 'no_such_background' does not exist."
    with pytest.raises(ValueError, match="Background 'no_such_background' does not exist."):
        client.get_background_image("no_such_background")
    with pytest.raises(ValueError, match="Background 'no_such_background' does not exist."):
        client.get_background_image_bytes("no_such_background")
    assert "Invalid background id" in _error(requests.get(f"{servers.url}{API}/background/a%2F..%2Fb/image_bytes",
                                                          timeout=10), 400)


def test_a_stored_file_that_is_not_2d_is_refused(servers: ServerPair) -> None:
    np.save(_stored(servers, "flat_background"), np.arange(5.0))
    message = _error(requests.get(f"{servers.url}{API}/background/flat_background/image_bytes", timeout=10), 400)
    assert message == "Background 'flat_background' is not a 2-D numeric image (shape [5], dtype float64)."


# --- PUT image_bytes ---------------------------------------------------------------------------------------------
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
    other = _payload(np.ones(tuple(image["shape"]), dtype=np.float64))
    response = _put(servers, "copied_background", pickle.dumps(other, protocol=0))
    assert _error(response, 409).startswith("Background 'copied_background' already exists with a different image")
    np.testing.assert_array_equal(np.load(_stored(servers, "copied_background")), np.load(_stored(servers, collected)))


def test_put_keeps_the_dtype_and_accepts_json(servers: ServerPair, client: PipelineClient) -> None:
    array = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    assert client.set_background_image_bytes("uint16_background", _payload(array)) == "uint16_background"
    stored = np.load(_stored(servers, "uint16_background"))
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, array)
    # JSON body of the same dict (by content type, or recognised by its '{').
    as_int32 = array.astype(np.int32)
    assert requests.put(f"{servers.url}{API}/background/json_background/image_bytes", json=_payload(as_int32),
                        timeout=10).json()["background_id"] == "json_background"
    body = json.dumps(_payload(as_int32 + 1)).encode()
    response = _put(servers, "json_background_2", body, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200 and response.json()["status"] == "Background json_background_2 saved."
    np.testing.assert_array_equal(np.load(_stored(servers, "json_background")), as_int32)
    np.testing.assert_array_equal(np.load(_stored(servers, "json_background_2")), as_int32 + 1)
    # What the camera server's image_bytes answers (pulse_id, timestamp, ...) is accepted as it is.
    camera_like = _payload(array, width=4, height=3, encoding="base64", byteorder="little", pulse_id=7, timestamp=1.5)
    assert client.set_background_image_bytes("camera_like", camera_like) == "camera_like"


def test_pickle_naming_a_global_is_refused_and_not_run(servers: ServerPair, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    response = _put(servers, "exploit_background", pickle.dumps(Exploit(), protocol=0))
    # os.system is posix.system on Linux (the module pickle records).
    assert "refuses global posix.system" in _error(response, 400)
    inside = pickle.dumps({"bytes": Exploit(), "shape": [1, 1], "dtype": "uint8"}, protocol=0)
    assert "refuses global posix.system" in _error(_put(servers, "exploit_background", inside), 400)
    handmade = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    assert _error(_put(servers, "exploit_background", handmade), 400).startswith(
        "The restricted unpickler refuses global os.system")
    numpy_pickle = pickle.dumps(np.zeros((2, 2)), protocol=0)  # a plain numpy array needs globals too
    assert "refuses global numpy" in _error(_put(servers, "exploit_background", numpy_pickle), 400)
    assert not marker.exists()
    assert not _stored(servers, "exploit_background").exists()


def test_malformed_or_abusive_pickles_are_refused(servers: ServerPair) -> None:
    good = pickle.dumps(_payload(np.zeros((2, 2), dtype=np.uint8)), protocol=0)
    assert _error(_put(servers, "bad_pickle", good[:-20]), 400).startswith("Malformed pickle:")
    assert _error(_put(servers, "bad_pickle", b"this is not a pickle"), 400).startswith("Malformed pickle:")
    assert _error(_put(servers, "bad_pickle", good + b"junk"), 400) == \
        "Malformed pickle: 4 bytes after the end (STOP) of the pickle."
    assert _error(_put(servers, "bad_pickle", b""), 400) == "Malformed pickle: the body is empty."
    bomb = pickle.dumps(list(range(5000)), protocol=0)
    assert "more than 1000 opcodes" in _error(_put(servers, "bad_pickle", bomb), 400)
    nested: list = []
    for _ in range(100):
        nested = [nested]
    assert "nested deeper than 32 levels" in _error(_put(servers, "bad_pickle", pickle.dumps(nested, protocol=0)), 400)
    not_a_dict = pickle.dumps(["bytes", "shape", "dtype"], protocol=0)
    assert _error(_put(servers, "bad_pickle", not_a_dict), 400) == (
        "Invalid background image: expected a dict with keys bytes, shape, dtype, not list.")
    assert not _stored(servers, "bad_pickle").exists()


def test_invalid_image_bytes_dicts_are_refused(servers: ServerPair) -> None:
    array = np.arange(6, dtype=np.uint16).reshape(2, 3)

    def refused(payload: dict, name: str = "invalid_background") -> str:
        return _error(_put(servers, name, pickle.dumps(payload, protocol=0)), 400)

    assert refused({**_payload(array), "shape": [3, 3]}) == (
        "Invalid background image: 'bytes' holds 12 bytes but shape [3, 3] of uint16 needs 18.")
    assert refused({**_payload(array), "dtype": "float64"}) == (
        "Invalid background image: 'bytes' holds 12 bytes but shape [2, 3] of float64 needs 48.")
    assert "shape [2, 3, 1] must be [height, width]" in refused({**_payload(array), "shape": [2, 3, 1]})
    assert "shape [0, 3] must be [height, width]" in refused({**_payload(array), "shape": [0, 3]})
    assert "shape [2.0, 3] must be" in refused({**_payload(array), "shape": [2.0, 3]})
    for dtype in ("object", ">u2", "bool", "complex128", "V8"):
        assert f"dtype {dtype!r} is not one of uint8" in refused({**_payload(array), "dtype": dtype})
    assert "'bytes' is not valid base64" in refused({**_payload(array), "bytes": "not base64!"})
    assert "'bytes' must be a base64 string, not list" in refused({**_payload(array), "bytes": [1, 2]})
    assert refused({"bytes": "", "shape": [1, 1]}) == "Invalid background image: missing key(s) dtype."
    assert refused({**_payload(array), "extra": 1, "code": "x"}) == (
        "Invalid background image: unknown key(s) code, extra.")
    assert refused({**_payload(array), "width": 4}) == "Invalid background image: 'width' is 4, expected 3."
    nan = np.array([[1.0, np.nan]])
    assert refused(_payload(nan)) == "Invalid background: it contains NaN or infinite values."
    assert _error(_put(servers, "..bad", pickle.dumps(_payload(array), protocol=0)), 400).startswith(
        "Invalid background id '..bad'")
    assert not _stored(servers, "invalid_background").exists()


def test_json_put_with_many_values_is_refused(servers: ServerPair) -> None:
    body = json.dumps({**_payload(np.zeros((1, 1), dtype=np.uint8)), "extra": [0] * 1000}).encode()
    response = _put(servers, "many_values", body, headers={"Content-Type": "application/json"})
    assert _error(response, 413).startswith("Request body has too many values")
    response = _put(servers, "many_values", b"[1, 2]", headers={"Content-Type": "application/json"})
    assert _error(response, 400) == "Request body must be a JSON object, not an array."


def _declared_too_large(servers: ServerPair, method: str, path: str, declared: int) -> tuple[int, dict]:
    """Send headers declaring ``declared`` body bytes and only a few of them: the server must answer at once."""
    parts = urlsplit(servers.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest(method, f"{API}{path}")
        connection.putheader("Content-Length", str(declared))
        connection.endheaders(b"(dp0\n")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_oversized_bodies_are_refused_with_413(servers: ServerPair) -> None:
    status, body = _declared_too_large(servers, "PUT", "/background/huge/image_bytes", MAX_IMAGE_BYTES_BODY + 1)
    assert status == 413 and body == {"state": "error", "status": (
        f"Request body too large: {MAX_IMAGE_BYTES_BODY + 1} bytes (at most {MAX_IMAGE_BYTES_BODY}).")}
    status, body = _declared_too_large(servers, "POST", "/background", MAX_LIST_BODY + 1)
    assert status == 413 and body["status"].startswith(f"Request body too large: {MAX_LIST_BODY + 1} bytes")
    assert not _stored(servers, "huge").exists()


# --- POST /background (JSON nested list) -------------------------------------------------------------------------
def test_set_background_from_a_list_is_stored_as_float64(servers: ServerPair, client: PipelineClient) -> None:
    array = np.array([[1, 2, 3], [4, 5, 65535]], dtype=np.uint16)
    assert client.set_background("list_background", array) == "list_background"
    stored = np.load(_stored(servers, "list_background"))
    assert stored.dtype == np.float64
    np.testing.assert_array_equal(stored, array.astype(np.float64))
    image = client.get_background_image_bytes("list_background")
    assert image["dtype"] == "float64" and image["shape"] == [2, 3]
    assert client.set_background("list_background_2", [[0.5, 1.5], [2.5, -3.0]]) == "list_background_2"
    np.testing.assert_array_equal(np.load(_stored(servers, "list_background_2")), [[0.5, 1.5], [2.5, -3.0]])
    # The same values again: accepted; other values: refused.
    assert client.set_background("list_background_2", [[0.5, 1.5], [2.5, -3.0]]) == "list_background_2"
    with pytest.raises(ValueError, match="Background 'list_background_2' already exists with a different image"):
        client.set_background("list_background_2", [[0, 0], [0, 0]])


@pytest.mark.parametrize(("body", "message"), [
    ({"filename": "x_bg", "data": [[1, 2], [3]]}, "Invalid background data: rows must all have the same length"),
    ({"filename": "x_bg", "data": [[1, 2], "ab"]}, "Invalid background data: expected a non-empty list of rows"),
    ({"filename": "x_bg", "data": [1, 2, 3]}, "Invalid background data: expected a non-empty list of rows"),
    ({"filename": "x_bg", "data": []}, "Invalid background data: expected a non-empty list of rows"),
    ({"filename": "x_bg", "data": [[]]}, "Invalid background data: expected a 2-D array of numbers, got shape [1, 0]"),
    ({"filename": "x_bg", "data": [[[1]]]}, "Invalid background data: expected a 2-D array of numbers, got shape"),
    ({"filename": "x_bg", "data": [["a", "b"]]}, "Invalid background data: values must be numbers"),
    ({"filename": "x_bg", "data": [[True, False]]}, "Invalid background data: values must be numbers"),
    ({"filename": "x_bg", "data": [[None, 1]]}, "Invalid background data: values must be numbers"),
    ({"filename": "x_bg", "data": [[10 ** 30, 1]]}, "Invalid background data: values must be numbers"),
    ({"filename": "x_bg", "data": [[1e308, 1e308]], "more": 1}, "Invalid background: the body must be"),
    ({"data": [[1]]}, "Invalid background: the body must be"),
    ({"filename": "../x_bg", "data": [[1]]}, "Invalid background id '../x_bg'"),
    ({"filename": 5, "data": [[1]]}, "Invalid background id 5"),
])
def test_set_background_refuses_bad_data(servers: ServerPair, body: dict, message: str) -> None:
    response = requests.post(f"{servers.url}{API}/background", json=body, timeout=10)
    assert _error(response, 400).startswith(message)
    assert not _stored(servers, "x_bg").exists()


def test_set_background_refuses_non_finite_and_too_many_values(servers: ServerPair) -> None:
    response = requests.post(f"{servers.url}{API}/background", data=b'{"filename": "x_bg", "data": [[NaN, 1]]}',
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert "NaN is not a JSON value" in _error(response, 400)
    response = requests.post(f"{servers.url}{API}/background", data=b'{"filename": "x_bg", "data": [[1, 1e400]]}',
                             timeout=10)  # a valid JSON number that overflows to inf
    assert _error(response, 400) == "Invalid background: it contains NaN or infinite values."
    body = b'{"filename": "x_bg", "data": [[' + b"0," * (MAX_LIST_VALUES + 8) + b"0]]}"
    response = requests.post(f"{servers.url}{API}/background", data=body, timeout=60)
    assert _error(response, 413).startswith("Request body has too many values")
    assert not _stored(servers, "x_bg").exists()


def test_background_is_a_reserved_pipeline_name(client: PipelineClient) -> None:
    with pytest.raises(ValueError, match="Invalid pipeline name 'background': reserved by the REST API"):
        client.save_pipeline_config("background", {"camera_name": "simulation"})


def test_routes_are_in_the_openapi_schema(servers: ServerPair) -> None:
    paths = requests.get(f"{servers.url}/openapi.json", timeout=10).json()["paths"]
    assert set(paths[f"{API}/background/{{background_name}}/image_bytes"]) == {"get", "put"}
    assert "image/png" in paths[f"{API}/background/{{background_name}}/image"]["get"]["responses"]["200"]["content"]
    assert "post" in paths[f"{API}/background"] and "get" in paths[f"{API}/camera/{{camera_name}}/backgrounds"]
