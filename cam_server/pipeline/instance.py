"""Entry point of a pipeline instance process: ``run_instance(channel, spec)``, started by the manager in a
forkserver child.

Exit codes: 0 finished normally (stop requested, records reached, pid_range stop, no clients), 1 failed to start or
run (bad config, unreachable camera, unexpected error), 2 aborted on a processing error (``abort_on_error``).
Every non-zero exit reports its reason through ``channel.report_error`` first.

Pipeline types are separate modules; this file only picks the runner (``PIPELINE_RUNNERS``): processing, store,
stream and fanout run the shared loop here; custom, script and fanin have their own runners.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

import zmq

from cam_server.common.errors import CamServerError
from cam_server.common.process import InstanceChannel, configure_memory
from cam_server.pipeline.input import StreamInput
from cam_server.pipeline.instance_spec import InstanceSpec
from cam_server.pipeline.loop import AbortInstance, InstanceLoop
from cam_server.pipeline.outcomes import EXIT_ABORTED, EXIT_FAILURE, EXIT_OK
from cam_server.pipeline.outputs import open_output

log = logging.getLogger(__name__)

ZMQ_IO_THREADS = 2

# pipeline_type → "module:function" running that type: ``function(channel, spec) -> exit code``. Types built on
# the shared receive → handle → send loop use run_stream_pipeline; a type with its own loop (script, fanin, ...)
# adds its own runner here. Imported lazily so an instance loads only what its type needs.
PIPELINE_RUNNERS: dict[str, str] = {
    "processing": "cam_server.pipeline.instance:run_stream_pipeline",
    "store": "cam_server.pipeline.instance:run_stream_pipeline",
    "stream": "cam_server.pipeline.instance:run_stream_pipeline",
    "fanout": "cam_server.pipeline.instance:run_stream_pipeline",
    "custom": "cam_server.pipeline.custom_pipeline:run_custom_pipeline",
    "script": "cam_server.pipeline.script_pipeline:run_script_pipeline",
    "fanin": "cam_server.pipeline.fanin_pipeline:run_fanin_pipeline",
}


def make_handler(spec: InstanceSpec) -> Any:
    """The per-message handler of a stream-in/stream-out pipeline type (see :class:`loop.Handler`)."""
    config = spec.config
    pipeline_type = config.get("pipeline_type") or "processing"
    if pipeline_type == "processing":
        from cam_server.pipeline.processing_pipeline import ProcessingHandler

        return ProcessingHandler(config, spec.background_folder, spec.scripts_folder)
    if pipeline_type in ("store", "fanout"):  # fanout: forward the frames unchanged to the workers (PUSH)
        from cam_server.pipeline.store_pipeline import StoreHandler

        return StoreHandler(config)
    if pipeline_type == "stream":
        from cam_server.pipeline.stream_pipeline import StreamHandler

        return StreamHandler(config, spec.scripts_folder)
    raise CamServerError(f"pipeline_type {pipeline_type!r} has no message handler")


def pipeline_runner(pipeline_type: str) -> Callable[[InstanceChannel, InstanceSpec], int]:
    target = PIPELINE_RUNNERS.get(pipeline_type)
    if target is None:
        raise CamServerError(f"pipeline_type {pipeline_type!r} is not supported yet (supported: "
                             f"{', '.join(PIPELINE_RUNNERS)})")
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def _configure_threads() -> None:
    """One OpenMP thread per instance (bitshuffle): instances already run in parallel (bsread.md section 18)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_stream_pipeline(channel: InstanceChannel, spec: InstanceSpec) -> int:
    """Camera/stream in → handler → bsread out, until the loop ends (exit code 0) or raises."""
    config = spec.config
    handler = make_handler(spec)
    # Two ZeroMQ I/O threads: receiving a large frame and sending the previous one are both memory copies done
    # by I/O threads; with one thread they would serialise.
    context = zmq.Context(io_threads=ZMQ_IO_THREADS)
    if config.get("pipeline_type") == "stream":  # input_stream, bsread_address or camera (stream_pipeline.py)
        from cam_server.pipeline.stream_pipeline import StreamPipelineInput

        source = StreamPipelineInput(spec, context=context)
    else:
        source = StreamInput(spec.camera_stream, config, spec.cam_server_url, context=context)
    if (config.get("pipeline_type") or "processing") == "processing":
        from cam_server.pipeline.merge_input import MergedInput

        source = MergedInput(source, config)  # bsread_address: frames paired with bsread data by pulse id
    output = open_output(spec, context)  # PUB / PUSH stream or FILE (outputs.py)
    try:
        source.connect()
        loop = InstanceLoop(channel, handler, source, output, config.get("processing_threads") or 0)
        loop.run()
    finally:
        source.close()
        output.close()
        context.destroy(linger=1000)  # also closes a socket a stuck output thread still holds
    return EXIT_OK


def run_instance(channel: InstanceChannel, spec: InstanceSpec) -> None:
    """Run one pipeline instance until it should end; exits the process with the code described above."""
    _configure_threads()
    configure_memory()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{spec.instance_id}] %(name)s: "
                                                   "%(message)s")
    try:
        code = pipeline_runner(spec.config.get("pipeline_type") or "processing")(channel, spec)
    except AbortInstance as exc:
        log.error("aborted: %s", exc)  # already reported by the loop
        code = EXIT_ABORTED
    except CamServerError as exc:
        channel.report_error(str(exc))
        log.error("%s", exc)
        code = EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - never die without telling the server why
        log.exception("instance failed")
        channel.report_error(f"Pipeline instance failed: {type(exc).__name__}: {exc}")
        code = EXIT_FAILURE
    if code != EXIT_OK:
        raise SystemExit(code)
