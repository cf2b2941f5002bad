"""The live view in a real browser against real servers: lists, live image, overlays, ROI by mouse, errors,
recording. A screenshot of each view is kept under the test's tmp dir (path printed)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import requests

from tests.helpers.net import free_port
from tests.helpers.procs import wait_until
from tests.helpers.servers import RunningServer
from tests.helpers.streams import CameraStream

PIPE_API = "/api/v1/pipeline"
FRAME_TIMEOUT_MS = 30_000
OTHER_OVERLAYS = ("profiles", "fits", "roi", "good_region", "slices")


def create_instance(pipe: RunningServer, config: dict[str, Any], instance_id: str) -> str:
    answer = requests.post(f"{pipe.url}{PIPE_API}", params={"instance_id": instance_id}, json=config, timeout=60).json()
    assert answer["state"] == "ok", answer
    return answer["instance_id"]


@pytest.fixture
def instance(servers) -> Iterator[str]:
    """A private instance of the simulation camera (stopped afterwards if still running)."""
    _, pipe = servers
    instance_id = create_instance(pipe, {"camera_name": "simulation", "image_good_region": {},
                                         "image_slices": {"number_of_slices": 3}}, f"view_{free_port()}")
    yield instance_id
    requests.delete(f"{pipe.url}{PIPE_API}/{instance_id}", timeout=30)


def open_view(page, url: str, min_seq: int = 1) -> None:
    page.goto(url)
    wait_for_frame(page, min_seq)


def wait_for_frame(page, min_seq: int) -> int:
    """Wait until the view drew frame ``min_seq`` (or later) of its feed; returns the frame sequence number."""
    page.wait_for_function(f"Number(document.getElementById('overlay').dataset.seq || 0) >= {min_seq}",
                           timeout=FRAME_TIMEOUT_MS)
    return int(page.get_attribute("#overlay", "data-seq"))


def canvas_pixels(page, canvas_id: str) -> np.ndarray:
    """The canvas' RGBA pixels (height, width, 4), as drawn."""
    data = page.evaluate("""(id) => {
        const canvas = document.getElementById(id);
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let text = '';
        for (let i = 0; i < pixels.length; i += 0x8000) {
            text += String.fromCharCode.apply(null, pixels.subarray(i, i + 0x8000));
        }
        return {width: canvas.width, height: canvas.height, data: btoa(text)};
    }""", canvas_id)
    pixels = np.frombuffer(base64.b64decode(data["data"]), dtype=np.uint8)
    return pixels.reshape(data["height"], data["width"], 4)


def transform(page) -> dict[str, float]:
    """Image pixel → canvas: canvas = offset + image * scale (image pixel i spans [i, i + 1))."""
    return json.loads(page.get_attribute("#overlay", "data-transform"))


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    print(f"screenshot of the view: {path}")
    return path


def test_pipeline_index_lists_the_instance_and_links_to_its_view(page, servers, instance, tmp_path) -> None:
    cam, pipe = servers
    page.goto(pipe.url + "/")
    link = page.locator("#instances a.view-link", has_text=instance)
    link.wait_for(timeout=FRAME_TIMEOUT_MS)
    assert page.locator("#pipelines a.view-link", has_text="simulation_sp").count() == 1
    camera_link = page.locator("#cameras a.view-link", has_text="simulation")
    assert camera_link.get_attribute("href") == f"{cam.url}/view/simulation"
    screenshot(page, tmp_path, "pipeline_index")
    link.click()
    page.wait_for_url(f"{pipe.url}/view/{instance}")
    wait_for_frame(page, 1)


def test_camera_index_lists_cameras(page, servers, tmp_path) -> None:
    cam, _ = servers
    page.goto(cam.url + "/")
    page.locator("#cameras a.view-link", has_text="simulation").wait_for(timeout=FRAME_TIMEOUT_MS)
    screenshot(page, tmp_path, "camera_index")


def test_pipeline_view_image_updates_with_values_and_controls(page, servers, instance, tmp_path) -> None:
    _, pipe = servers
    open_view(page, f"{pipe.url}/view/{instance}")
    first_seq = wait_for_frame(page, 1)
    first = canvas_pixels(page, "image")
    wait_for_frame(page, first_seq + 2)
    second = canvas_pixels(page, "image")
    assert first.shape == second.shape
    assert first[..., 3].any(), "nothing drawn"
    assert (first != second).any(), "the image did not change between two frames"
    # The side panel shows the processing values; the controls are enabled for a private instance.
    page.locator("#values tr[data-key='x_center_of_mass']").wait_for()
    page.locator("#other-values tr[data-key='slice_0_center_x']").wait_for(state="attached")
    page.wait_for_function("document.body.dataset.state === 'running'", timeout=FRAME_TIMEOUT_MS)
    assert page.locator("#threshold").is_enabled()
    assert page.locator("#controls-reason").is_hidden()
    assert page.locator("#state").inner_text() == "running"
    screenshot(page, tmp_path, "pipeline_view")


def test_camera_view_updates_and_has_no_processing_controls(page, servers, tmp_path) -> None:
    cam, _ = servers
    open_view(page, f"{cam.url}/view/simulation")
    first_seq = wait_for_frame(page, 1)
    first = canvas_pixels(page, "image")
    wait_for_frame(page, first_seq + 2)
    assert (first != canvas_pixels(page, "image")).any()
    page.locator("#controls-reason").wait_for()
    assert "camera stream" in page.locator("#controls-reason").inner_text()
    assert page.locator("#threshold").is_disabled()
    screenshot(page, tmp_path, "camera_view")


def test_read_only_instance_shows_controls_disabled_with_the_reason(page, servers, tmp_path) -> None:
    _, pipe = servers
    open_view(page, f"{pipe.url}/view/simulation_sp")  # a saved pipeline: its shared (read-only) instance
    page.wait_for_function("document.getElementById('controls-reason').textContent.includes('read-only')",
                           timeout=FRAME_TIMEOUT_MS)
    for control in ("#threshold", "#roi-draw", "#background-collect", "#averaging", "#paused"):
        assert page.locator(control).is_disabled(), control
    screenshot(page, tmp_path, "read_only_view")
    requests.delete(f"{pipe.url}{PIPE_API}/simulation_sp", timeout=30)


def gaussian_spot(width: int, height: int, x: float, y: float, sigma: float) -> np.ndarray:
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    spot = 1000 + 30000 * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma ** 2))
    return spot.astype(np.uint16)


def test_center_of_mass_cross_is_drawn_where_the_instance_says(page, servers, tmp_path) -> None:
    _, pipe = servers
    port = free_port()
    # A still beam off-centre: every frame has the same centre of mass, which the drawing must match.
    image = gaussian_spot(640, 480, 401.3, 150.6, 25.0)
    with CameraStream(image, "tcp://127.0.0.1", 10.0, 1, port=port):
        instance_id = create_instance(pipe, {"input_stream": f"tcp://127.0.0.1:{port}"}, f"com_{port}")
        try:
            open_view(page, f"{pipe.url}/view/{instance_id}")
            for name in OTHER_OVERLAYS:
                page.uncheck(f"[data-overlay='{name}']")
            message = requests.get(f"{pipe.url}{PIPE_API}/instance/{instance_id}/message", timeout=30).json()
            wait_for_frame(page, int(page.get_attribute("#overlay", "data-seq")) + 1)
            data = message["message"]
            x_px = np.interp(data["x_center_of_mass"], data["x_axis"], np.arange(len(data["x_axis"])))
            y_px = np.interp(data["y_center_of_mass"], data["y_axis"], np.arange(len(data["y_axis"])))
            t = transform(page)
            expected_x = t["ox"] + (x_px + 0.5) * t["scale"]
            expected_y = t["oy"] + (y_px + 0.5) * t["scale"]
            # The real drawing: magenta pixels of the overlay canvas (the only overlay left on).
            rgba = canvas_pixels(page, "overlay").astype(int)
            magenta = (rgba[..., 0] > 200) & (rgba[..., 1] < 80) & (rgba[..., 2] > 200) & (rgba[..., 3] > 200)
            assert magenta.sum() > 20, "no centre-of-mass cross drawn"
            column = int(np.argmax(magenta.sum(axis=0)))  # the vertical line of the cross
            row = int(np.argmax(magenta.sum(axis=1)))     # the horizontal line
            assert abs(column + 0.5 - expected_x) <= 1.0, (column, expected_x)
            assert abs(row + 0.5 - expected_y) <= 1.0, (row, expected_y)
            screenshot(page, tmp_path, "center_of_mass_view")
        finally:
            requests.delete(f"{pipe.url}{PIPE_API}/{instance_id}", timeout=30)


def test_roi_drawn_with_the_mouse_changes_the_instance(page, servers, instance, tmp_path) -> None:
    _, pipe = servers
    open_view(page, f"{pipe.url}/view/{instance}")
    page.wait_for_function("document.body.dataset.state === 'running'", timeout=FRAME_TIMEOUT_MS)
    t = transform(page)
    box = page.locator("#overlay").bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + t["ox"] + x * t["scale"], box["y"] + t["oy"] + y * t["scale"]

    page.click("#roi-draw")
    page.mouse.move(*at(200, 100))
    page.mouse.down()
    page.mouse.move(*at(500, 300), steps=5)
    page.mouse.move(*at(800, 600), steps=5)
    page.mouse.up()

    def roi() -> list[int] | None:
        config = requests.get(f"{pipe.url}{PIPE_API}/instance/{instance}/config", timeout=10).json()["config"]
        return config["image_region_of_interest"]

    drawn = wait_until(roi, 10, "the ROI drawn with the mouse in the instance config")
    expected = [200, 600, 100, 500]  # [offset_x, size_x, offset_y, size_y]
    assert all(abs(a - b) <= 2 for a, b in zip(drawn, expected, strict=True)), drawn
    # The view follows: the next frames are the ROI.
    page.wait_for_function(f"document.getElementById('roi-text').textContent === '[{', '.join(map(str, drawn))}]'",
                           timeout=FRAME_TIMEOUT_MS)
    screenshot(page, tmp_path, "roi_view")


def test_a_stopped_instance_is_shown_as_an_error_not_a_frozen_image(page, servers, instance, tmp_path) -> None:
    _, pipe = servers
    open_view(page, f"{pipe.url}/view/{instance}")
    page.wait_for_function("document.body.dataset.state === 'running'", timeout=FRAME_TIMEOUT_MS)
    assert requests.delete(f"{pipe.url}{PIPE_API}/{instance}", timeout=30).json()["state"] == "ok"
    page.wait_for_function("['stopped', 'error'].includes(document.body.dataset.state)", timeout=FRAME_TIMEOUT_MS)
    banner = page.locator("#banner")
    banner.wait_for()
    assert instance in banner.inner_text()
    assert "not running" in banner.inner_text()
    assert "stale" in (page.get_attribute("#image", "class") or "")
    screenshot(page, tmp_path, "stopped_view")


def test_record_frames_to_hdf5(page, servers, instance, tmp_path) -> None:
    _, pipe = servers
    open_view(page, f"{pipe.url}/view/{instance}")
    page.fill("#record-n", "3")
    with page.expect_download(timeout=FRAME_TIMEOUT_MS) as download:
        page.click("#record")
    path = tmp_path / "recording.h5"
    download.value.save_as(str(path))
    with h5py.File(path) as f:
        assert f.attrs["n_messages"] == 3
        assert f["data/image/data"].shape[0] == 3
        assert f["data/x_center_of_mass/data"].shape[0] == 3
    assert "recorded 3 frames" in page.locator("#record-message").inner_text()


def test_controls_change_the_instance_through_the_rest_api(page, servers, instance) -> None:
    _, pipe = servers
    open_view(page, f"{pipe.url}/view/{instance}")
    page.wait_for_function("document.body.dataset.state === 'running'", timeout=FRAME_TIMEOUT_MS)

    def config() -> dict[str, Any]:
        return requests.get(f"{pipe.url}{PIPE_API}/instance/{instance}/config", timeout=10).json()["config"]

    page.fill("#threshold", "100")
    page.click("#threshold-apply")
    wait_until(lambda: config()["image_threshold"] == 100, 10, "the threshold")
    page.fill("#averaging", "3")
    page.click("#averaging-apply")
    wait_until(lambda: config()["averaging"] == 3, 10, "the averaging")
    page.check("#paused")
    wait_until(lambda: config()["paused"] is True, 10, "the pause")
    page.uncheck("#paused")
    wait_until(lambda: config()["paused"] is False, 10, "the resume")
    page.fill("#background-n", "2")
    page.click("#background-collect")
    background = wait_until(lambda: config()["image_background"], 30, "the collected background")
    assert background.startswith("simulation")
    page.wait_for_function("!document.getElementById('background-enable').disabled", timeout=FRAME_TIMEOUT_MS)
    page.check("#background-enable")
    wait_until(lambda: config()["image_background_enable"] is True, 10, "the background enabled")
