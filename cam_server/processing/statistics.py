"""Profile statistics: profiles, min/max, centre of mass, FWHM and gaussian fit (spec 3.1-3.3)."""

from __future__ import annotations

import numpy as np


def profiles(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x_profile, y_profile) = (column sums, row sums)."""
    raise NotImplementedError


def min_max(image: np.ndarray) -> tuple[np.generic, np.generic]:
    raise NotImplementedError


def center_of_mass_and_rms(axis: np.ndarray, profile: np.ndarray) -> tuple[float, float]:
    raise NotImplementedError


def fwhm(axis: np.ndarray, profile: np.ndarray) -> float:
    raise NotImplementedError


def gauss_fit(axis: np.ndarray, profile: np.ndarray) -> tuple[np.ndarray, float, float, float, float]:
    """(curve, offset, amplitude, mean, std)."""
    raise NotImplementedError
