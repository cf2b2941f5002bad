from __future__ import annotations

import numpy as np
import pytest

from cam_server.processing.camera_transforms import (
    apply_camera_transforms,
    bin_image,
    calibrated_axes,
    camera_geometry,
)
from cam_server.processing.simulation import SimulatedBeam

pytestmark = pytest.mark.unit


def test_calibration_worked_example():
    x_axis, y_axis = calibrated_axes(400, 300, {"reference_marker": [211, 173, 1063, 793],
                                                "reference_marker_width": 30000})
    assert x_axis.dtype == np.float32 and x_axis.shape == (400,)
    assert x_axis[0] == pytest.approx(22429.58, abs=0.01)
    assert x_axis[0] > x_axis[-1]  # calibrated axes run downward
    # defaults for the missing keys: height 100 over 620 px, origin y 483
    assert y_axis[0] == pytest.approx(483 * 100 / 620, rel=1e-6)


def test_axes_without_calibration_are_pixel_indices():
    x_axis, y_axis = calibrated_axes(4, 3, None)
    np.testing.assert_array_equal(x_axis, [0, 1, 2, 3])
    assert y_axis.dtype == np.float32 and len(y_axis) == 3


def test_calibration_division_by_zero_uses_unit_pixels():
    x_axis, _ = calibrated_axes(3, 3, {"reference_marker": [5, 5, 5, 5]})
    np.testing.assert_array_equal(x_axis, [5, 4, 3])


def test_transform_order_mirror_then_rotate_then_roi():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    out = apply_camera_transforms(image, mirror_x=True, rotate=1, roi=[0, 2, 1, 2])
    np.testing.assert_array_equal(out, np.rot90(image[:, ::-1])[1:3, 0:2])
    assert out.flags.c_contiguous


def test_transforms_without_work_return_the_input():
    image = np.zeros((3, 4), dtype=np.uint16)
    assert apply_camera_transforms(image) is image


def test_camera_background_is_clamped():
    image = np.array([[5, 1]], dtype=np.uint16)
    out = apply_camera_transforms(image, background=np.array([[2, 3]], dtype=np.uint16))
    np.testing.assert_array_equal(out, [[3, 0]])


def test_binning_and_geometry():
    image = np.full((5, 7), 30000, dtype=np.uint16)
    assert bin_image(image, 3, 2).shape == (2, 2)
    assert bin_image(image, 3, 2)[0, 0] == 65535
    assert bin_image(image, 3, 2, mean=True)[0, 0] == 30000
    assert camera_geometry(1280, 960, rotate=1, binning_x=2) == (960, 640)
    assert camera_geometry(1280, 960, roi=[0, 100, 0, 50]) == (100, 50)


@pytest.mark.parametrize("dtype, saturation", [("uint16", 58981), ("int16", 32767), ("float32", 58981.5),
                                               ("uint32", 58981)])
def test_simulation_dtype_and_saturation(dtype, saturation):
    frame = SimulatedBeam(320, 240, dtype=dtype, seed=1).next_frame()
    assert frame.dtype == np.dtype(dtype) and frame.shape == (240, 320)
    assert frame.max() == pytest.approx(saturation)
    assert frame.min() >= 0


def test_simulation_statistics_and_fixed_dead_pixels():
    sim = SimulatedBeam(1280, 960, seed=4)
    first, second = sim.next_frame(), sim.next_frame()
    assert not np.array_equal(first, second)
    dead = sim.dead_pixels
    assert (first[dead] == 58981).all() and (second[dead] == 58981).all()
    alive = np.ones(first.shape, dtype=bool)
    alive[dead] = False
    corner = first[:200, :200][alive[:200, :200]]
    assert corner.max() <= 6553
    assert corner.mean() == pytest.approx(3277, rel=0.02)
    rows, cols = np.nonzero(first == 58981)
    beam = (np.abs(rows - 480) < 20) & (np.abs(cols - 640) < 60)
    assert beam.sum() > 30  # saturated elliptical core
    centre_row, centre_col = rows[beam].mean(), cols[beam].mean()
    assert 480 - 8 < centre_row < 481 and 640 - 40 < centre_col < 641


def test_simulation_raw_and_static_types():
    raw = SimulatedBeam(200, 100, image_type="raw", seed=1).next_frame()
    assert raw[40:60, 80:120].mean() < 6554  # no beam
    static = SimulatedBeam(200, 100, image_type="static_beam", seed=1)
    assert static.next_frame() is static.next_frame()
    assert not static.next_frame().flags.writeable


def test_simulation_rejects_bad_settings():
    with pytest.raises(ValueError, match="dtype"):
        SimulatedBeam(10, 10, dtype="bogus")
    with pytest.raises(ValueError, match="size"):
        SimulatedBeam(0, 10)
