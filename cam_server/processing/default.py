"""The default processing function, ``transparent`` (spec 3) and the one-call pre-processing of spec 2 step 9.

Cost model: profiles and min/max are the only full-frame work (one compiled pass for 8/16-bit unsigned images,
else two 32-bit reductions and two SIMD min/max passes); everything else works on 1-D profiles. All gaussian fits
of a frame (x, y and the good region's x, y) are solved in one call, the slice fits in a second one.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cam_server.processing import good_region as gr
from cam_server.processing import slices as sl
from cam_server.processing.gauss_fit import fit_channels, fit_many
from cam_server.processing.preprocess import (
    apply_roi,
    apply_threshold,
    background_mode,
    bin_for_pipeline,
    rotate_axes_ortho,
    rotate_image,
    rotation_settings,
    subtract_background,
)
from cam_server.processing.statistics import center_of_mass_and_rms, fwhm, profiles_min_max

PASSIVE_BACKGROUND_KEY = "background_data"


def preprocess_frame(image: np.ndarray, x_axis: np.ndarray, y_axis: np.ndarray, parameters: dict[str, Any],
                     background: np.ndarray | None = None, *,
                     in_place: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spec 2 step 9 in order: binning, background, rotation, ROI, threshold.

    Also does the ortho axis remap of step 5 (so callers must not call ``rotate_axes_ortho`` themselves), after
    the binning of the axes, so that they keep matching the binned and rotated image (docs/processing.md).
    With a "passive" background the array is stored in ``parameters["background_data"]`` for the processing
    function. The input image is never modified unless ``in_place`` (then a writable input may be reused); at
    most one full-frame copy is made.
    """
    image, x_axis, y_axis = bin_for_pipeline(image, x_axis, y_axis, parameters.get("binning_x") or 1,
                                             parameters.get("binning_y") or 1,
                                             bool(parameters.get("binning_mean")))
    owned = in_place
    mode = background_mode(parameters.get("image_background_enable"))
    if mode == "passive":
        # Pipelines store it once per config (pipeline/types/processing_parameters.py); writing the shared dict per
        # frame would race with other processing threads serialising it (json.dumps: "dictionary changed size").
        if background is not None and parameters.get(PASSIVE_BACKGROUND_KEY) is not background:
            parameters[PASSIVE_BACKGROUND_KEY] = background
    elif mode is not None and background is not None:
        image = subtract_background(image, background, "signed" if mode == "signed" else True,
                                    in_place=owned)
        owned = True
    angle, order, rotation_mode = rotation_settings(parameters.get("rotation"))
    if angle:
        if rotation_mode == "ortho":
            x_axis, y_axis = rotate_axes_ortho(x_axis, y_axis, angle)
        image = rotate_image(image, angle, order, rotation_mode)
        owned = True
    image, x_axis, y_axis = apply_roi(image, x_axis, y_axis, parameters.get("image_region_of_interest"))
    image = apply_threshold(image, parameters.get("image_threshold"), in_place=owned)
    return image, x_axis, y_axis


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def processing_parameters_json(parameters: dict[str, Any]) -> str:
    """JSON of the live parameters without the passive background array (spec 3.7)."""
    if PASSIVE_BACKGROUND_KEY in parameters:
        parameters = {k: v for k, v in parameters.items() if k != PASSIVE_BACKGROUND_KEY}
    return json.dumps(parameters, default=_json_default)


def _timestamp_float(timestamp: Any) -> float:
    if isinstance(timestamp, (tuple, list)):
        sec, ns = timestamp
        return float(sec) + float(ns) * 1e-9
    return float(timestamp)


def _base_channels(image: np.ndarray, timestamp: Any, x_axis: np.ndarray, y_axis: np.ndarray,
                   parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "x_axis": x_axis,
        "y_axis": y_axis,
        "image": image,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "timestamp": _timestamp_float(timestamp),
    }


def process_image(image: np.ndarray, pulse_id: int, timestamp: tuple[int, int], x_axis: np.ndarray,
                  y_axis: np.ndarray, parameters: dict[str, Any], bsdata: dict | None = None) -> dict[str, Any]:
    """The standard statistics (spec 3.1) plus good region (3.4) and slices (3.5) when configured."""
    if image.ndim != 2:
        raise ValueError(f"Invalid image: expected a 2-D array, got shape {image.shape}")
    if len(x_axis) != image.shape[1] or len(y_axis) != image.shape[0]:
        raise ValueError(f"Invalid axis passed: x_axis {len(x_axis)} / y_axis {len(y_axis)} for an image of "
                         f"{image.shape[1]}x{image.shape[0]}")
    x_profile, y_profile, low, high = profiles_min_max(image)

    region = None
    region_config = parameters.get("image_good_region")
    if region_config is not None:
        threshold, gfscale = gr.settings(region_config)
        region = gr.find_good_region(image, x_axis, y_axis, x_profile, y_profile, threshold, gfscale)
    problems = [(x_axis, x_profile), (y_axis, y_profile)]
    if region is not None:
        problems += [(region.x_axis, region.x_profile), (region.y_axis, region.y_profile)]
    fits = fit_many(problems)
    if region is not None:
        region.x_fit, region.y_fit = fits[2], fits[3]

    out = _base_channels(image, timestamp, x_axis, y_axis, parameters)
    out["min_value"] = low
    out["max_value"] = high
    out["x_profile"] = x_profile
    out["y_profile"] = y_profile
    out["intensity"] = x_profile.sum()
    out["x_fwhm"] = fwhm(x_axis, x_profile)
    out["y_fwhm"] = fwhm(y_axis, y_profile)
    out["processing_parameters"] = processing_parameters_json(parameters)
    out["x_center_of_mass"], out["x_rms"] = center_of_mass_and_rms(x_axis, x_profile)
    out["y_center_of_mass"], out["y_rms"] = center_of_mass_and_rms(y_axis, y_profile)
    out.update(fit_channels("x", fits[0]))
    out.update(fit_channels("y", fits[1]))

    if region_config is not None:
        out.update(gr.good_region_channels(region))
        slices_config = parameters.get("image_slices")
        if slices_config is not None:
            number, scale, orientation = sl.settings(slices_config)
            out.update(sl.slice_channels(region, number, scale, orientation))
    return out


def transparent(image: np.ndarray, pulse_id: int, timestamp: tuple[int, int], x_axis: np.ndarray,
                y_axis: np.ndarray, parameters: dict[str, Any], bsdata: dict | None = None) -> dict[str, Any]:
    """Pass-through (spec 3.6): axes, image, size, timestamp and processing_parameters only."""
    out = _base_channels(image, timestamp, x_axis, y_axis, parameters)
    out["processing_parameters"] = processing_parameters_json(parameters)
    return out


FUNCTIONS = {"default": process_image, "transparent": transparent}
