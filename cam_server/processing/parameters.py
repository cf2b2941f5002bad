"""Defaults of the processing parameter blocks, without numpy: the processing functions fill missing entries with
them, and the pipeline config model (``cam_server.pipeline.config``) uses them as its defaults, so both agree and
the pipeline server can read them without loading the numerical modules."""

from __future__ import annotations

# image_good_region (spec 3.4)
GOOD_REGION_THRESHOLD = 0.3
GOOD_REGION_GFSCALE = 1.8
# image_slices (spec 3.5)
SLICES_NUMBER = 1
SLICES_SCALE = 2.0
SLICES_ORIENTATION = "vertical"
# rotation (spec 2 step 9.3): angle in degrees, spline order, fill mode ("0.0": constant fill with 0)
ROTATION_ANGLE = 0.0
ROTATION_ORDER = 1
ROTATION_MODE = "0.0"
