"""Chooses the frame source class for a camera config (``source_type``)."""

from __future__ import annotations

from cam_server.bsread.address import is_stream_address
from cam_server.camera.config import EPICS_SOURCE_TYPES, CameraConfig
from cam_server.camera.sources.base import FrameSource
from cam_server.common.errors import InvalidConfig


def create_source(config: CameraConfig) -> FrameSource:
    """A new, not yet connected source for ``config``; imports only what that source type needs (EPICS is heavy)."""
    if config.source_type == "simulation":
        from cam_server.camera.sources.simulation import SimulationSource

        return SimulationSource(config)
    if config.source_type == "bsread" and is_stream_address(config.source):
        from cam_server.camera.sources.bsread_source import BsreadCameraSource

        return BsreadCameraSource(config)
    if config.source_type in (*EPICS_SOURCE_TYPES, "bsread"):  # bsread here: the PV prefix of the camera
        from cam_server.camera.sources.epics import EpicsCameraSource, configure_epics_environment

        configure_epics_environment()  # before the first PV of this process is created
        if config.source_type == "bsread":
            from cam_server.camera.sources.epics_bsread import EpicsBsreadCameraSource

            return EpicsBsreadCameraSource(config)
        return EpicsCameraSource(config.to_dict())  # source_type picks the PV names
    raise InvalidConfig(f"Invalid camera config: 'source_type' {config.source_type!r} is not supported.")
