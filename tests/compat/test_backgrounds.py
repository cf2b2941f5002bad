"""Pipeline background routes PSI's clients call (psi-interface.md section 1): listing, PNG and image_bytes reads of
stored files, and the uploads (a pickled body read by the restricted unpickler, JSON). No route here asks a camera,
so the pipeline app runs in this process (``apps``); backgrounds collected from a camera stream are read in
test_backgrounds_collected.py."""

from __future__ import annotations

import http.client
import json
import os
import pickle
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from cam_server.client.pipeline_client import PipelineClient
from cam_server.pipeline.server.backgrounds import MAX_IMAGE_BYTES_BODY, MAX_LIST_BODY, MAX_LIST_VALUES
from tests.compat.backgrounds import error_message, payload
from tests.helpers.apps import LocalApp, LocalApps

pytestmark = pytest.mark.unit

API = "/api/v1/pipeline"


@pytest.fixture(scope="module")
def app(apps: LocalApps) -> LocalApp:
    """The pipeline app (its backgrounds folder is ``app.backgrounds``)."""
    return apps.pipeline


@pytest.fixture(scope="module")
def client(app: LocalApp) -> PipelineClient:
    return PipelineClient(app.url)


def _put(app: LocalApp, name: str, body: bytes, **kwargs) -> httpx.Response:
    return app.http.put(f"{API}/background/{name}/image_bytes", content=body, **kwargs)


def _stored(app: LocalApp, name: str) -> Path:
    return app.backgrounds / f"{name}.npy"


# --- listing -----------------------------------------------------------------------------------------------------
def test_backgrounds_of_a_camera_are_its_own_sorted(app: LocalApp, client: PipelineClient) -> None:
    own = ["cam_a_20200101_000000_000002", "cam_a_20200101_000000_000001", "cam_a_20190101_120000_000000"]
    others = ["cam_a_2_20300101_000000_000000", "cam_ab_20300101_000000_000000", "cam_20300101_000000_000000"]
    for name in own + others:
        np.save(_stored(app, name), np.zeros((2, 3)))
    assert client.get_backgrounds("cam_a") == sorted(own)
    assert client.get_backgrounds("cam_a_2") == ["cam_a_2_20300101_000000_000000"]
    assert client.get_backgrounds("cam") == ["cam_20300101_000000_000000"]
    response = app.http.get(f"{API}/camera/cam_a/backgrounds")
    assert response.status_code == 200 and response.json()["background_ids"] == sorted(own)


def test_unknown_camera_has_an_empty_list_and_a_bad_name_is_refused(app: LocalApp,
                                                                    client: PipelineClient) -> None:
    # Decision: the store lists files and does not ask the camera server, so an unknown camera has no backgrounds.
    assert client.get_backgrounds("no_such_camera") == []
    message = error_message(app.http.get(f"{API}/camera/..x/backgrounds"), 400)
    assert message.startswith("Invalid camera name '..x'")


# --- reading -----------------------------------------------------------------------------------------------------
def test_unknown_background_is_404(app: LocalApp, client: PipelineClient) -> None:
    for route in ("image", "image_bytes"):
        response = app.http.get(f"{API}/background/no_such_background/{route}")
        assert error_message(response, 404) == "Background 'no_such_background' does not exist."
    with pytest.raises(ValueError, match="Background 'no_such_background' does not exist."):
        client.get_background_image("no_such_background")
    with pytest.raises(ValueError, match="Background 'no_such_background' does not exist."):
        client.get_background_image_bytes("no_such_background")
    assert "Invalid background id" in error_message(app.http.get(f"{API}/background/a%2F..%2Fb/image_bytes"), 400)


def test_a_stored_file_that_is_not_2d_is_refused(app: LocalApp) -> None:
    np.save(_stored(app, "flat_background"), np.arange(5.0))
    message = error_message(app.http.get(f"{API}/background/flat_background/image_bytes"), 400)
    assert message == "Background 'flat_background' is not a 2-D numeric image (shape [5], dtype float64)."


# --- PUT image_bytes ---------------------------------------------------------------------------------------------
def test_put_keeps_the_dtype_and_accepts_json(app: LocalApp, client: PipelineClient) -> None:
    array = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    assert client.set_background_image_bytes("uint16_background", payload(array)) == "uint16_background"
    stored = np.load(_stored(app, "uint16_background"))
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, array)
    # JSON body of the same dict (by content type, or recognised by its '{').
    as_int32 = array.astype(np.int32)
    response = app.http.put(f"{API}/background/json_background/image_bytes", json=payload(as_int32))
    assert response.json()["background_id"] == "json_background"
    body = json.dumps(payload(as_int32 + 1)).encode()
    response = _put(app, "json_background_2", body, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200 and response.json()["status"] == "Background json_background_2 saved."
    np.testing.assert_array_equal(np.load(_stored(app, "json_background")), as_int32)
    np.testing.assert_array_equal(np.load(_stored(app, "json_background_2")), as_int32 + 1)
    # What the camera server's image_bytes answers (pulse_id, timestamp, ...) is accepted as it is.
    camera_like = payload(array, width=4, height=3, encoding="base64", byteorder="little", pulse_id=7, timestamp=1.5)
    assert client.set_background_image_bytes("camera_like", camera_like) == "camera_like"


def test_pickle_naming_a_global_is_refused_and_not_run(app: LocalApp, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    response = _put(app, "exploit_background", pickle.dumps(Exploit(), protocol=0))
    # os.system is posix.system on Linux (the module pickle records).
    assert "refuses global posix.system" in error_message(response, 400)
    inside = pickle.dumps({"bytes": Exploit(), "shape": [1, 1], "dtype": "uint8"}, protocol=0)
    assert "refuses global posix.system" in error_message(_put(app, "exploit_background", inside), 400)
    handmade = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    assert error_message(_put(app, "exploit_background", handmade), 400).startswith(
        "The restricted unpickler refuses global os.system")
    numpy_pickle = pickle.dumps(np.zeros((2, 2)), protocol=0)  # a plain numpy array needs globals too
    assert "refuses global numpy" in error_message(_put(app, "exploit_background", numpy_pickle), 400)
    assert not marker.exists()
    assert not _stored(app, "exploit_background").exists()


def test_malformed_or_abusive_pickles_are_refused(app: LocalApp) -> None:
    good = pickle.dumps(payload(np.zeros((2, 2), dtype=np.uint8)), protocol=0)
    assert error_message(_put(app, "bad_pickle", good[:-20]), 400).startswith("Malformed pickle:")
    assert error_message(_put(app, "bad_pickle", b"this is not a pickle"), 400).startswith("Malformed pickle:")
    assert error_message(_put(app, "bad_pickle", good + b"junk"), 400) == \
        "Malformed pickle: 4 bytes after the end (STOP) of the pickle."
    assert error_message(_put(app, "bad_pickle", b""), 400) == "Malformed pickle: the body is empty."
    bomb = pickle.dumps(list(range(5000)), protocol=0)
    assert "more than 1000 opcodes" in error_message(_put(app, "bad_pickle", bomb), 400)
    nested: list = []
    for _ in range(100):
        nested = [nested]
    nested_pickle = pickle.dumps(nested, protocol=0)
    assert "nested deeper than 32 levels" in error_message(_put(app, "bad_pickle", nested_pickle), 400)
    not_a_dict = pickle.dumps(["bytes", "shape", "dtype"], protocol=0)
    assert error_message(_put(app, "bad_pickle", not_a_dict), 400) == (
        "Invalid background image: expected a dict with keys bytes, shape, dtype, not list.")
    assert not _stored(app, "bad_pickle").exists()


def test_invalid_image_bytes_dicts_are_refused(app: LocalApp) -> None:
    array = np.arange(6, dtype=np.uint16).reshape(2, 3)

    def refused(payload: dict, name: str = "invalid_background") -> str:
        return error_message(_put(app, name, pickle.dumps(payload, protocol=0)), 400)

    assert refused({**payload(array), "shape": [3, 3]}) == (
        "Invalid background image: 'bytes' holds 12 bytes but shape [3, 3] of uint16 needs 18.")
    assert refused({**payload(array), "dtype": "float64"}) == (
        "Invalid background image: 'bytes' holds 12 bytes but shape [2, 3] of float64 needs 48.")
    assert "shape [2, 3, 1] must be [height, width]" in refused({**payload(array), "shape": [2, 3, 1]})
    assert "shape [0, 3] must be [height, width]" in refused({**payload(array), "shape": [0, 3]})
    assert "shape [2.0, 3] must be" in refused({**payload(array), "shape": [2.0, 3]})
    for dtype in ("object", ">u2", "bool", "complex128", "V8"):
        assert f"dtype {dtype!r} is not one of uint8" in refused({**payload(array), "dtype": dtype})
    assert "'bytes' is not valid base64" in refused({**payload(array), "bytes": "not base64!"})
    assert "'bytes' must be a base64 string, not list" in refused({**payload(array), "bytes": [1, 2]})
    assert refused({"bytes": "", "shape": [1, 1]}) == "Invalid background image: missing key(s) dtype."
    assert refused({**payload(array), "extra": 1, "code": "x"}) == (
        "Invalid background image: unknown key(s) code, extra.")
    assert refused({**payload(array), "width": 4}) == "Invalid background image: 'width' is 4, expected 3."
    nan = np.array([[1.0, np.nan]])
    assert refused(payload(nan)) == "Invalid background: it contains NaN or infinite values."
    assert error_message(_put(app, "..bad", pickle.dumps(payload(array), protocol=0)), 400).startswith(
        "Invalid background id '..bad'")
    assert not _stored(app, "invalid_background").exists()


def test_json_put_with_many_values_is_refused(app: LocalApp) -> None:
    body = json.dumps({**payload(np.zeros((1, 1), dtype=np.uint8)), "extra": [0] * 1000}).encode()
    response = _put(app, "many_values", body, headers={"Content-Type": "application/json"})
    assert error_message(response, 413).startswith("Request body has too many values")
    response = _put(app, "many_values", b"[1, 2]", headers={"Content-Type": "application/json"})
    assert error_message(response, 400) == "Request body must be a JSON object, not an array."


def _declared_too_large(app: LocalApp, method: str, path: str, declared: int) -> tuple[int, dict]:
    """Send headers declaring ``declared`` body bytes and only a few of them: the server must answer at once."""
    parts = urlsplit(app.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    try:
        connection.putrequest(method, f"{API}{path}")
        connection.putheader("Content-Length", str(declared))
        connection.endheaders(b"(dp0\n")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_oversized_bodies_are_refused_with_413(app: LocalApp) -> None:
    status, body = _declared_too_large(app, "PUT", "/background/huge/image_bytes", MAX_IMAGE_BYTES_BODY + 1)
    assert status == 413 and body == {"state": "error", "status": (
        f"Request body too large: {MAX_IMAGE_BYTES_BODY + 1} bytes (at most {MAX_IMAGE_BYTES_BODY}).")}
    status, body = _declared_too_large(app, "POST", "/background", MAX_LIST_BODY + 1)
    assert status == 413 and body["status"].startswith(f"Request body too large: {MAX_LIST_BODY + 1} bytes")
    assert not _stored(app, "huge").exists()


# --- POST /background (JSON nested list) -------------------------------------------------------------------------
def test_set_background_from_a_list_is_stored_as_float64(app: LocalApp, client: PipelineClient) -> None:
    array = np.array([[1, 2, 3], [4, 5, 65535]], dtype=np.uint16)
    assert client.set_background("list_background", array) == "list_background"
    stored = np.load(_stored(app, "list_background"))
    assert stored.dtype == np.float64
    np.testing.assert_array_equal(stored, array.astype(np.float64))
    image = client.get_background_image_bytes("list_background")
    assert image["dtype"] == "float64" and image["shape"] == [2, 3]
    assert client.set_background("list_background_2", [[0.5, 1.5], [2.5, -3.0]]) == "list_background_2"
    np.testing.assert_array_equal(np.load(_stored(app, "list_background_2")), [[0.5, 1.5], [2.5, -3.0]])
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
def test_set_background_refuses_bad_data(app: LocalApp, body: dict, message: str) -> None:
    response = app.http.post(f"{API}/background", json=body)
    assert error_message(response, 400).startswith(message)
    assert not _stored(app, "x_bg").exists()


def test_set_background_refuses_non_finite_and_too_many_values(app: LocalApp) -> None:
    response = app.http.post(f"{API}/background", content=b'{"filename": "x_bg", "data": [[NaN, 1]]}',
                             headers={"Content-Type": "application/json"})
    assert "NaN is not a JSON value" in error_message(response, 400)
    # a valid JSON number that overflows to inf: refused when the body is read (no request value is ever inf)
    response = app.http.post(f"{API}/background", content=b'{"filename": "x_bg", "data": [[1, 1e400]]}')
    assert "the number 1e400 is too large" in error_message(response, 400)
    body = b'{"filename": "x_bg", "data": [[' + b"0," * (MAX_LIST_VALUES + 8) + b"0]]}"
    response = app.http.post(f"{API}/background", content=body)
    assert error_message(response, 413).startswith("Request body has too many values")
    assert not _stored(app, "x_bg").exists()


def test_background_is_a_reserved_pipeline_name(client: PipelineClient) -> None:
    with pytest.raises(ValueError, match="Invalid pipeline name 'background': reserved by the REST API"):
        client.save_pipeline_config("background", {"camera_name": "simulation"})


def test_routes_are_in_the_openapi_schema(app: LocalApp) -> None:
    paths = app.http.get("/openapi.json").json()["paths"]
    assert set(paths[f"{API}/background/{{background_name}}/image_bytes"]) == {"get", "put"}
    assert "image/png" in paths[f"{API}/background/{{background_name}}/image"]["get"]["responses"]["200"]["content"]
    assert "post" in paths[f"{API}/background"] and "get" in paths[f"{API}/camera/{{camera_name}}/backgrounds"]
