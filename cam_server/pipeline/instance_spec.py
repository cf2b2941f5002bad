"""What the pipeline server hands to an instance process (picklable, so it crosses the forkserver boundary)."""

from __future__ import annotations

from dataclasses import dataclass

from cam_server.pipeline.config import PipelineConfig


@dataclass
class InstanceSpec:
    """Everything ``cam_server.pipeline.instance.main.run_instance(control, spec)`` needs to run one pipeline."""

    instance_id: str
    config: PipelineConfig       # the validated config (parse_pipeline_config), inputs/outputs resolved
    output_endpoint: str         # where the instance binds its output, e.g. "tcp://*:41234"
    stream_address: str          # what clients connect to, e.g. "tcp://<hostname>:41234"
    camera_stream: str | None    # camera stream address resolved via CamClient.get_instance_stream(camera)
    cam_server_url: str          # to re-request the camera stream after camera_timeout
    background_folder: str
    scripts_folder: str
    file_folder: str | None = None  # FILE output confined to this folder (pipeline server --file_folder)
    protected_folders: dict[str, str] | None = None  # {what: folder} FILE output never writes in (file_path.py)
    memory_limit: int = 0  # bytes of RSS (server --instance_memory_limit) unless config.memory_limit says; 0: none
    stream_interface: str | None = None  # where bound inputs listen (a fan-in's input_stream); None: everywhere
    allow_external_functions: bool = False  # `function` may name any .py path or importable module
    shared_memory: bool = False  # a camera on this host may hand frames through shared memory (server option)
    camera_frame_bytes: int = 0  # bytes of one camera image when the instance starts (0: not known): bounds the output
