"""Pre-processing parameters seen on the output stream: threshold, ROI, background, rotation, averaging, copy,
processing_parameters."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from tests.helpers.streams import receive, values
from tests.pipeline_instance.harness import HEIGHT, OFFSET, WIDTH, FakeCamera, gaussian_image, parameters, pipeline

EXPECTED = gaussian_image()


@pytest.fixture(scope="module")
def camera():
    with FakeCamera(rate=50) as cam:
        yield cam


def one_output(tmp_path, camera, skip: int = 1, **config):
    with pipeline(tmp_path, camera, **config) as inst:
        return values(receive(inst.receiver(), 1, skip=skip)[0])


@pytest.mark.parametrize("threshold", [150.5, 150])
def test_image_threshold_float_and_int(tmp_path, camera, threshold):
    out = one_output(tmp_path, camera, image_threshold=threshold)
    # decision of the processing layer: the float is used as given, pixel < 150.5 → 0 (and < 150 for the int)
    source = EXPECTED
    expected = np.where(source < threshold, 0, source)
    np.testing.assert_array_equal(out["image"], expected)
    assert out["min_value"] == 0


def test_image_threshold_below_one_keeps_pixels_at_or_above(tmp_path, camera):
    out = one_output(tmp_path, camera, image_threshold=0.5)
    np.testing.assert_array_equal(out["image"], EXPECTED)  # every pixel >= OFFSET > 0.5


def test_region_of_interest_crops_image_and_axes(tmp_path, camera):
    out = one_output(tmp_path, camera, image_region_of_interest=[10, 20, 5, 30])
    np.testing.assert_array_equal(out["image"], EXPECTED[5:35, 10:30])
    np.testing.assert_array_equal(out["x_axis"], np.arange(10, 30, dtype=np.float32))
    np.testing.assert_array_equal(out["y_axis"], np.arange(5, 35, dtype=np.float32))
    assert (out["width"], out["height"]) == (20, 30)
    assert len(out["x_profile"]) == 20 and len(out["y_profile"]) == 30


def test_region_of_interest_is_clamped(tmp_path, camera):
    out = one_output(tmp_path, camera, image_region_of_interest=[75, 20, 0, 500])
    np.testing.assert_array_equal(out["image"], EXPECTED[:, 60:80])
    assert out["x_axis"][0] == 60


def _save_background(tmp_path, array, name="bg1"):
    folder = tmp_path / "backgrounds"
    folder.mkdir(exist_ok=True)
    np.save(folder / f"{name}.npy", array)
    return name


def test_background_subtraction_clamps_at_zero(tmp_path, camera):
    bg = np.full((HEIGHT, WIDTH), 150.0)  # saved as float: the instance casts it to uint16
    name = _save_background(tmp_path, bg)
    out = one_output(tmp_path, camera, image_background=name, image_background_enable=True)
    expected = np.where(EXPECTED >= 150, EXPECTED - 150, 0).astype(np.uint16)
    assert out["image"].dtype == np.uint16
    np.testing.assert_array_equal(out["image"], expected)


def test_background_signed_keeps_negatives(tmp_path, camera):
    name = _save_background(tmp_path, np.full((HEIGHT, WIDTH), 150, dtype=np.uint16))
    out = one_output(tmp_path, camera, image_background=name, image_background_enable="signed")
    assert out["image"].dtype == np.int32
    np.testing.assert_array_equal(out["image"], EXPECTED.astype(np.int32) - 150)
    assert out["min_value"] == OFFSET - 150


def test_background_passive_goes_to_the_function(tmp_path, camera):
    name = _save_background(tmp_path, np.full((HEIGHT, WIDTH), 7, dtype=np.uint16))
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "passive.py").write_text(
        "def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):\n"
        "    bg = parameters['background_data']\n"
        "    return {'image': image, 'bg_sum': int(bg.sum()), 'bg_dtype': str(bg.dtype),\n"
        "            'ok': parameters['image_background_ok']}\n")
    out = one_output(tmp_path, camera, image_background=name, image_background_enable="passive",
                     function="passive.py")
    np.testing.assert_array_equal(out["image"], EXPECTED)  # not subtracted
    assert out["bg_sum"] == 7 * WIDTH * HEIGHT
    assert out["bg_dtype"] == "uint16"
    assert out["ok"] == 1


def test_background_passive_not_in_processing_parameters(tmp_path, camera):
    name = _save_background(tmp_path, np.full((HEIGHT, WIDTH), 7, dtype=np.uint16))
    with pipeline(tmp_path, camera, image_background=name, image_background_enable="passive") as inst:
        params = parameters(receive(inst.receiver(), 1, skip=1)[0])
    assert "background_data" not in params
    assert params["image_background"] == name and params["image_background_ok"] is True


def test_background_of_wrong_shape_aborts_with_clear_error(tmp_path, camera):
    name = _save_background(tmp_path, np.zeros((10, 10), dtype=np.uint16))
    with pipeline(tmp_path, camera, image_background=name, image_background_enable=True) as inst:
        assert inst.wait_exit() == 2
        info = inst.info()
    assert "Invalid background_image size" in info["last_error"]
    assert info["statistics"]["errors"] == 1


def test_missing_background_fails_start(tmp_path, camera):
    with pipeline(tmp_path, camera, image_background="nope", image_background_enable=True) as inst:
        assert inst.wait_exit() == 1
        assert "Background 'nope' not found" in inst.info()["last_error"]


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_rotation_ortho_rotates_image_and_axes(tmp_path, camera, angle):
    out = one_output(tmp_path, camera, rotation={"angle": angle, "mode": "ortho"})
    turns = angle // 90
    np.testing.assert_array_equal(out["image"], np.rot90(EXPECTED, turns))
    x, y = np.arange(WIDTH, dtype=np.float32), np.arange(HEIGHT, dtype=np.float32)
    expected_axes = {1: (y, x[::-1]), 2: (x[::-1], y[::-1]), 3: (y[::-1], x)}[turns]
    np.testing.assert_array_equal(out["x_axis"], expected_axes[0])
    np.testing.assert_array_equal(out["y_axis"], expected_axes[1])
    assert (out["width"], out["height"]) == (out["image"].shape[1], out["image"].shape[0])


def test_rotation_interpolated_keeps_shape_and_axes(tmp_path, camera):
    out = one_output(tmp_path, camera, rotation={"angle": 30, "order": 1, "mode": "0.0"})
    expected = scipy.ndimage.rotate(EXPECTED, 30, reshape=False, order=1, mode="constant", cval=0.0)
    np.testing.assert_array_equal(out["image"], expected)
    assert out["image"].dtype == np.uint16
    np.testing.assert_array_equal(out["x_axis"], np.arange(WIDTH, dtype=np.float32))


def test_averaging_positive_emits_every_nth_frame_as_float(tmp_path, camera):
    with pipeline(tmp_path, camera, averaging=3) as inst:
        messages = receive(inst.receiver(), 3, skip=1)
    pids = [m.data.pulse_id for m in messages]
    assert [b - a for a, b in zip(pids, pids[1:], strict=False)] == [3, 3]
    image = values(messages[0])["image"]
    assert image.dtype == np.float64
    np.testing.assert_array_equal(image, EXPECTED.astype(np.float64))


def test_averaging_negative_emits_every_frame(tmp_path, camera):
    with pipeline(tmp_path, camera, averaging=-4) as inst:
        messages = receive(inst.receiver(), 4, skip=1)
    pids = [m.data.pulse_id for m in messages]
    assert [b - a for a, b in zip(pids, pids[1:], strict=False)] == [1, 1, 1]
    assert values(messages[-1])["image"].dtype == np.float64


def test_copy_gives_the_same_output(tmp_path, camera):
    out = one_output(tmp_path, camera, copy=True, image_threshold=150)
    np.testing.assert_array_equal(out["image"], np.where(EXPECTED < 150, 0, EXPECTED))


def test_transparent_function(tmp_path, camera):
    out = one_output(tmp_path, camera, function="transparent")
    assert list(out) == ["x_axis", "y_axis", "image", "width", "height", "timestamp", "processing_parameters"]


def test_processing_parameters_are_the_expanded_config(tmp_path, camera):
    with pipeline(tmp_path, camera, image_threshold=5, image_good_region={"threshold": 0.5},
                  my_key="hello") as inst:
        params = parameters(receive(inst.receiver(), 1, skip=1)[0])
        config = inst.config
    assert list(params)[:7] == ["image_background_enable", "image_background", "image_threshold",
                                "image_region_of_interest", "image_good_region", "image_slices", "pipeline_type"]
    assert params["image_threshold"] == 5
    assert params["image_good_region"] == {"threshold": 0.5, "gfscale": 1.8}
    assert params["my_key"] == "hello"
    assert params["camera_name"] == "fake"
    for key in ("no_client_timeout", "queue_size", "mode", "block"):
        assert params[key] == config[key]


def test_good_region_and_slices_channels_are_produced(tmp_path, camera):
    out = one_output(tmp_path, camera, image_good_region={"threshold": 0.3},
                     image_slices={"number_of_slices": 3, "orientation": "vertical"})
    assert out["gr_x_fit_mean"] == pytest.approx(30.0, abs=0.5)
    assert out["gr_y_fit_mean"] == pytest.approx(40.0, abs=0.5)
    assert out["slice_amount"] == 3
    assert "slice_2_center_x" in out


def test_passive_background_is_stored_once_per_config_not_per_frame(tmp_path):
    """Processing threads share the live parameters dict: a frame writing into it while another thread
    serialises it (processing_parameters) fails with "dictionary changed size during iteration"."""
    from cam_server.pipeline.config import parse_pipeline_config
    from cam_server.pipeline.types.processing_parameters import ParameterBuilder
    from cam_server.processing.default import preprocess_frame

    background = np.full((HEIGHT, WIDTH), 7, dtype=np.uint16)
    name = _save_background(tmp_path, background)
    live = ParameterBuilder(str(tmp_path / "backgrounds"), str(tmp_path)).build(
        parse_pipeline_config({"camera_name": "fake", "image_background": name, "image_background_enable": "passive"}))
    np.testing.assert_array_equal(live.parameters["background_data"], background)
    before = dict(live.parameters)
    image = EXPECTED.copy()
    axes = np.arange(WIDTH, dtype=np.float32), np.arange(HEIGHT, dtype=np.float32)
    preprocess_frame(image, *axes, live.parameters, live.background)
    assert live.parameters == before and live.parameters["background_data"] is before["background_data"]
