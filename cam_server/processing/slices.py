"""Slices of the good region and coupling (spec 3.5)."""

from __future__ import annotations

import numpy as np

from cam_server.processing.good_region import GoodRegion


def axis_index(axis: np.ndarray, value: float) -> int:
    raise NotImplementedError


def slice_channels(region: GoodRegion | None, number_of_slices: int = 1, scale: float = 2.0,
                   orientation: str = "vertical") -> dict:
    raise NotImplementedError
