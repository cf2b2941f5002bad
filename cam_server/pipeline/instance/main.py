"""Entry point of a pipeline instance process: ``run_instance(control, spec)``, started by the manager in a
forkserver child.

Exit codes: 0 finished normally (stop requested, records reached, pid_range stop, no clients), 1 failed to start or
run (bad config, unreachable camera, unexpected error), 2 aborted on a processing error (``abort_on_error``), 3 ended
by the memory limit (``memory.py``). Every non-zero exit reports its reason through ``control.report_error`` first.

Pipeline types are modules of ``cam_server.pipeline.types`` listed in ``cam_server.pipeline.registry``; this file
only picks the runner: the shared loop (with the type module's ``make_handler`` and optional ``open_input``), or
the type's own ``run`` function.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable

import zmq

from cam_server.common.errors import CamServerError
from cam_server.common.process import STATE_CODES, InstanceControl, configure_memory, freeze_gc
from cam_server.pipeline.instance.input import StreamInput
from cam_server.pipeline.instance.loop import AbortInstance, InstanceLoop
from cam_server.pipeline.instance.memory import MemoryLimitExceeded, MemoryWatchdog, memory_limit
from cam_server.pipeline.instance.outcomes import EXIT_ABORTED, EXIT_FAILURE, EXIT_MEMORY, EXIT_OK
from cam_server.pipeline.instance.output import open_output
from cam_server.pipeline.instance.user_code import allow_external_functions
from cam_server.pipeline.instance_spec import InstanceSpec
from cam_server.pipeline.registry import PIPELINE_TYPES, PipelineType

log = logging.getLogger(__name__)

ZMQ_IO_THREADS = 2
# How long a thread that wants the GIL waits for the one running Python code to give it up (CPython's default: 5 ms).
# The input's receiving thread wants it twice per frame (after its poll and its receive, which release it); against a
# loop busy in Python code it got a frame through only every few ms, far fewer than a fast camera sends (the frames
# waited in ZeroMQ's and the camera's queues instead of being dropped at the door): 0.5 ms lets it keep up.
SWITCH_INTERVAL_S = 0.0005


def _type_of(spec: InstanceSpec) -> PipelineType:
    return pipeline_type(spec.config.pipeline_type)


def pipeline_type(name: str) -> PipelineType:
    """The registry entry of ``name``; an unknown type (a config not validated by this version) is a clear error."""
    kind = PIPELINE_TYPES.get(name)
    if kind is None:
        raise CamServerError(f"pipeline_type {name!r} is not supported (supported: {', '.join(PIPELINE_TYPES)})")
    return kind


def pipeline_runner(kind: PipelineType) -> Callable[[InstanceControl, InstanceSpec], int]:
    """The function running an instance of ``kind``: its own (``run``) or the shared loop."""
    if kind.run is None:
        return run_stream_pipeline
    return getattr(importlib.import_module(kind.module_path), kind.run)


def _configure_threads() -> None:
    """One OpenMP thread per instance (bitshuffle): instances already run in parallel (bsread.md section 18); the
    receiving thread gets the GIL within :data:`SWITCH_INTERVAL_S`."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def run_stream_pipeline(control: InstanceControl, spec: InstanceSpec) -> int:
    """Camera/stream in → handler → bsread out, until the loop ends (exit code 0) or raises."""
    config = spec.config
    module = importlib.import_module(_type_of(spec).module_path)
    handler = module.make_handler(spec)
    # Two ZeroMQ I/O threads: receiving a large frame and sending the previous one are both memory copies done
    # by I/O threads; with one thread they would serialise.
    context = zmq.Context(io_threads=ZMQ_IO_THREADS)
    if hasattr(module, "open_input"):  # e.g. stream: bsread_address; processing: merged with bsread data
        source = module.open_input(spec, context)
    else:
        source = StreamInput(spec.camera_stream, config, spec.cam_server_url, context=context)
    output = open_output(spec, context)  # PUB / PUSH stream or FILE (output.py)
    try:
        loop = InstanceLoop(control, handler, source, output, config.processing_threads)  # before the input runs
        source.connect()
        freeze_gc()  # the set-up (handler, user function, sockets) is long-lived
        loop.run()
    finally:
        source.close()
        output.close()
        context.destroy(linger=1000)  # also closes a socket a stuck output thread still holds
    return EXIT_OK


def run_instance(control: InstanceControl, spec: InstanceSpec) -> None:
    """Run one pipeline instance until it should end; exits the process with the code described above."""
    _configure_threads()
    configure_memory()
    allow_external_functions(spec.allow_external_functions)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{spec.instance_id}] %(name)s: "
                                                   "%(message)s")
    limit = memory_limit(spec)
    watchdog = MemoryWatchdog(control, limit).start() if limit > 0 else None
    try:
        kind = _type_of(spec)
        if kind.run is not None:  # types with a loop of their own (custom, script, fanin) run as soon as they start
            control.stats.set("state", STATE_CODES["streaming"])
        code = pipeline_runner(kind)(control, spec)
    except MemoryLimitExceeded as exc:
        log.error("%s", exc)  # already reported by the watchdog
        code = EXIT_MEMORY
    except AbortInstance as exc:
        log.error("aborted: %s", exc)  # already reported by the loop
        code = EXIT_ABORTED
    except CamServerError as exc:
        control.report_error(str(exc))
        log.error("%s", exc)
        code = EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - never die without telling the server why
        log.exception("instance failed")
        control.report_error(f"Pipeline instance failed: {type(exc).__name__}: {exc}")
        code = EXIT_FAILURE
    finally:
        if watchdog is not None:
            watchdog.stop()
    control.stats.set("state", STATE_CODES["stopping"])
    if code != EXIT_OK:
        raise SystemExit(code)
