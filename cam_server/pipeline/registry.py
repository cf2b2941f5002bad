"""The pipeline types: one table that config validation, the instance entry point and the docs read.

To add a pipeline type: write ``cam_server/pipeline/types/<name>.py`` and add one :class:`PipelineType` here.
A type on the shared receive → handle → send loop (:mod:`cam_server.pipeline.instance.loop`) gives its module a
``make_handler(spec)`` and, if it reads its input differently from a plain camera/stream input, an
``open_input(spec, context)``; a type with a loop of its own names the function that runs the whole instance
(``run``). This module imports nothing of the instance side, so the server can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TYPES_PACKAGE = "cam_server.pipeline.types"


@dataclass(frozen=True)
class PipelineType:
    name: str
    input: str  # what it reads (docs)
    sends: str  # what it sends (docs)
    module: str  # module under cam_server.pipeline.types
    run: str | None = None  # function of ``module`` running the whole instance; None: the shared loop
    needs_input: bool = True  # the config must name a camera or an input stream
    output_mode: Literal["PUB", "PUSH"] = "PUB"  # default ``mode``
    input_mode: Literal["SUB", "PULL"] = "SUB"  # default ``input_mode``
    binds_input: bool = False  # the server gives it an input address to bind (workers connect to it)
    # default ``input_queue_size``: a live pipeline works on recent frames; a writer's feed rides out its hiccups
    input_queue_size: int = 8
    # default ``input_catch_up_after`` (s): a live pipeline behind for good jumps to the newest frame; a writer's feed
    # (0) takes every frame it can hold, in order (so does any pipeline writing a file, mode FILE)
    input_catch_up_after: float = 0.1

    @property
    def module_path(self) -> str:
        return f"{TYPES_PACKAGE}.{self.module}"


PIPELINE_TYPES: dict[str, PipelineType] = {t.name: t for t in (
    PipelineType("processing", "camera / `input_stream`", "the processing function's channels", "processing"),
    # PSI's writers read a store pipeline with PULL: it PUSHes unless the config says otherwise.
    PipelineType("store", "camera / `input_stream`", "the received channels, unchanged (for a writer)", "store",
                 output_mode="PUSH", input_queue_size=20, input_catch_up_after=0.0),
    PipelineType("stream", "`input_stream` / `bsread_address` / camera",
                 "`process(stream_data, ...)` result, or pass-through", "stream"),
    PipelineType("custom", "none", "`process(parameters)` result, called in a loop", "custom",
                 run="run_custom_pipeline", needs_input=False),
    PipelineType("script", "none (the script reads what it wants)", "what the script sends", "script",
                 run="run_script_pipeline", needs_input=False),
    # fanout: forward the frames unchanged, PUSHed round-robin to the workers.
    PipelineType("fanout", "camera / `input_stream`", "the received channels, PUSHed to the workers", "store",
                 output_mode="PUSH", input_queue_size=20, input_catch_up_after=0.0),
    PipelineType("fanin", "binds PULL on its `input_stream`", "the workers' messages in pulse-id order", "fanin",
                 run="run_fanin_pipeline", needs_input=False, input_mode="PULL", binds_input=True),
)}

DEFAULT_TYPE = "processing"
# The instance process entry point, by name: the server never imports the instance side.
INSTANCE_ENTRY = "cam_server.pipeline.instance.main:run_instance"
