"""Default processing through a real instance process: statistics of a known gaussian, header, stats."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.procs import wait_until
from tests.helpers.streams import receive, values
from tests.pipeline_instance.harness import (
    AMPLITUDE,
    CENTER_X,
    CENTER_Y,
    HEIGHT,
    OFFSET,
    WIDTH,
    FakeCamera,
    gaussian_image,
    parameters,
    pipeline,
)


@pytest.fixture
def camera():
    with FakeCamera(rate=50) as cam:
        yield cam


def test_default_processing_statistics(tmp_path, camera):
    with pipeline(tmp_path, camera) as inst:
        rx = inst.receiver()
        messages = receive(rx, 3)
        out = values(messages[-1])
        expected = gaussian_image()
        assert list(out)[:6] == ["x_axis", "y_axis", "image", "width", "height", "timestamp"]
        assert out["width"] == WIDTH and out["height"] == HEIGHT
        np.testing.assert_array_equal(out["image"], expected)
        assert out["image"].dtype == np.uint16
        x_profile = expected.sum(axis=0, dtype=np.int64)
        y_profile = expected.sum(axis=1, dtype=np.int64)
        assert out["x_center_of_mass"] == pytest.approx((np.arange(WIDTH) * x_profile).sum() / x_profile.sum())
        assert out["y_center_of_mass"] == pytest.approx((np.arange(HEIGHT) * y_profile).sum() / y_profile.sum())
        assert out["x_fit_mean"] == pytest.approx(CENTER_X, abs=0.05)
        assert out["y_fit_mean"] == pytest.approx(CENTER_Y, abs=0.05)
        assert out["max_value"] == AMPLITUDE + OFFSET
        assert out["min_value"] == OFFSET
        np.testing.assert_array_equal(out["x_profile"], expected.sum(axis=0))
        assert out["intensity"] == int(expected.sum(dtype=np.int64))
        # pulse ids and timestamps are the camera's
        pids = [m.data.pulse_id for m in messages]
        assert pids == sorted(pids) and len(set(pids)) == 3
        assert parameters(messages[-1])["camera_name"] == "fake"
        stats = inst.stats()
        assert stats["frames_out"] >= 3 and stats["frames_in"] >= stats["frames_out"]
        wait_until(lambda: inst.stats()["clients"] == 1, 10, "the client to be counted")
        assert stats["start_time"] > 0 and stats["last_frame_time"] >= stats["start_time"]
