"""Camera ``camera_calibration``, ``mirror_x``, ``mirror_y``, ``rotate`` as seen by a pipeline (issue 5 item 10):
bsread-source cameras relaying the known upstream spot image (peak at column 30, row 10 of 48 x 32)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.streams import receive, values
from tests.user_code.conftest import CALIBRATION, GEOMETRIES
from tests.user_code.helpers import HEIGHT, SPOT_X, SPOT_Y, WIDTH, spot_image

PIXEL_X = CALIBRATION["reference_marker_width"] / WIDTH    # 0.1 units per column
PIXEL_Y = CALIBRATION["reference_marker_height"] / HEIGHT  # 0.05 units per row
ORIGIN_X, ORIGIN_Y = WIDTH // 2, HEIGHT // 2                 # marker centre, in pixels


def _com(axis: np.ndarray, profile: np.ndarray) -> float:
    profile = profile.astype(np.float64)
    return float((axis * profile).sum() / profile.sum())


def test_calibrated_axes_and_centre_of_mass(pipelines: PipelineClient) -> None:
    _, stream = pipelines.create_instance_from_config({"camera_name": "uc_calibrated"})
    out = values(receive(stream, 1)[0])
    expected_x = -(np.arange(WIDTH) - ORIGIN_X) * PIXEL_X
    expected_y = -(np.arange(HEIGHT) - ORIGIN_Y) * PIXEL_Y
    np.testing.assert_allclose(out["x_axis"], expected_x, rtol=1e-6)
    np.testing.assert_allclose(out["y_axis"], expected_y, rtol=1e-6)
    assert np.all(np.diff(out["x_axis"]) < 0) and np.all(np.diff(out["y_axis"]) < 0)  # descending
    image = spot_image()
    np.testing.assert_array_equal(out["image"], image)  # calibration changes the axes, not the pixels
    # centre of mass and fit in calibrated units: the pixel values mapped through the calibration
    assert out["x_center_of_mass"] == pytest.approx(_com(expected_x, image.sum(axis=0)), rel=1e-6)
    assert out["y_center_of_mass"] == pytest.approx(_com(expected_y, image.sum(axis=1)), rel=1e-6)
    assert out["x_fit_mean"] == pytest.approx(-(SPOT_X - ORIGIN_X) * PIXEL_X, abs=0.01)  # -0.6
    assert out["y_fit_mean"] == pytest.approx(-(SPOT_Y - ORIGIN_Y) * PIXEL_Y, abs=0.01)  # +0.3
    assert out["x_fit_standard_deviation"] == pytest.approx(3.0 * PIXEL_X, rel=0.05)


def _camera_transform(image: np.ndarray, mirror_x: bool, mirror_y: bool, rotate: int) -> np.ndarray:
    """Spec 1.1 order: mirror_x (columns reversed), mirror_y (rows reversed), rotate × 90° counter-clockwise."""
    if mirror_x:
        image = image[:, ::-1]
    if mirror_y:
        image = image[::-1, :]
    return np.rot90(image, rotate)


@pytest.mark.parametrize("camera", sorted(GEOMETRIES))
def test_mirror_and_rotate_reach_the_pipeline(pipelines: PipelineClient, camera: str) -> None:
    mirror_x, mirror_y, rotate = GEOMETRIES[camera]
    expected = _camera_transform(spot_image(), mirror_x, mirror_y, rotate)
    _, stream = pipelines.create_instance_from_config({"camera_name": camera, "function": "transparent"})
    out = values(receive(stream, 1)[0])
    np.testing.assert_array_equal(out["image"], expected)
    assert (out["height"], out["width"]) == expected.shape
    np.testing.assert_array_equal(out["x_axis"], np.arange(expected.shape[1]))
    np.testing.assert_array_equal(out["y_axis"], np.arange(expected.shape[0]))
    assert json.loads(out["processing_parameters"])["camera_name"] == camera


def test_centre_of_mass_follows_the_rotation(pipelines: PipelineClient) -> None:
    camera = "uc_mirror_y_rotate_1"
    expected = _camera_transform(spot_image(), *GEOMETRIES[camera])
    _, stream = pipelines.create_instance_from_config({"camera_name": camera})
    out = values(receive(stream, 1)[0])
    assert out["x_center_of_mass"] == pytest.approx(_com(np.arange(expected.shape[1]), expected.sum(axis=0)))
    assert out["y_center_of_mass"] == pytest.approx(_com(np.arange(expected.shape[0]), expected.sum(axis=1)))
    # mirror_y moves the spot to row 31-10 = 21 (column 30); rot90 sends (row r, column c) to (row 47-c, column r):
    # the spot ends at column 21, row 17
    assert out["x_fit_mean"] == pytest.approx(HEIGHT - 1 - SPOT_Y, abs=0.05)
    assert out["y_fit_mean"] == pytest.approx(WIDTH - 1 - SPOT_X, abs=0.05)
