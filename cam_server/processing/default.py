"""Default processing function and `transparent` (spec 3), plus the one-call pre-processing of step 9."""

from __future__ import annotations

from typing import Any

import numpy as np


def preprocess_frame(image: np.ndarray, x_axis: np.ndarray, y_axis: np.ndarray, parameters: dict[str, Any],
                     background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raise NotImplementedError


def process_image(image: np.ndarray, pulse_id: int, timestamp: tuple[int, int], x_axis: np.ndarray,
                  y_axis: np.ndarray, parameters: dict[str, Any], bsdata: dict | None = None) -> dict[str, Any]:
    raise NotImplementedError


def transparent(image: np.ndarray, pulse_id: int, timestamp: tuple[int, int], x_axis: np.ndarray,
                y_axis: np.ndarray, parameters: dict[str, Any], bsdata: dict | None = None) -> dict[str, Any]:
    raise NotImplementedError
