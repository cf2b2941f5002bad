"""Which output an instance sends to: a bsread stream (:class:`OutputStream`) or an HDF5 file (:class:`FileOutput`).

Worker pipelines with ``output_stream`` (set by the server from ``output_pipeline``) connect to a fan-in
pipeline, which binds PULL: their output is therefore PUSH, also when ``mode`` was left at its PUB default
(a PUB socket cannot talk to a PULL socket, nothing would ever arrive).
"""

from __future__ import annotations

import zmq

from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.file_output import FileOutput
from cam_server.pipeline.instance.stream_output import OutputStream
from cam_server.pipeline.instance_spec import InstanceSpec


def channel_selection(config: PipelineConfig) -> tuple[list[str] | None, frozenset[str]]:
    """``include`` (None: all channels) and ``exclude`` of a config, in the form ``filter_output`` takes."""
    return config.include, frozenset(config.exclude or ())


def output_config(config: PipelineConfig) -> PipelineConfig:
    """The config the output socket is built from (``output_stream`` + PUB → PUSH, blocking)."""
    if config.output_stream and config.mode == "PUB":
        return config.model_copy(update={"mode": "PUSH", "block": True})
    return config


def open_output(spec: InstanceSpec, context: zmq.Context | None = None) -> OutputStream | FileOutput:
    """Open the instance's output for its config (``mode`` PUB / PUSH / FILE)."""
    config = spec.config
    if config.mode == "FILE":
        return FileOutput(config, instance=spec.instance_id, folder=spec.file_folder,
                          protected=spec.protected_folders).open()
    return OutputStream(spec.output_endpoint, output_config(config), context=context,
                        image_bytes=spec.camera_frame_bytes).open()
