"""``pipeline_type: script``: a user script replaces the whole instance loop (see script_runner and
docs/pipeline_types.md for the ``run(stop_event, parameters, sender[, context])`` interface).

The script runs in the instance's main thread. A watcher thread connects it to the server: it sets ``stop_event``
on a stop request, when no client was connected for ``no_client_timeout`` or when ``records`` were sent, takes
live config changes (``parameters`` always shows the newest), and keeps the client count current. Every
``sender.send`` goes through the instance's output (PUB / PUSH / FILE, include / exclude, enforce_pid, records)
and updates the statistics.

Exit codes: 0 when ``run`` returns; 1 when the script cannot be loaded (missing, syntax error, no ``run``);
2 when ``run`` raises (the error names the script line).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import zmq

from cam_server.common.errors import InvalidConfig
from cam_server.common.process import InstanceControl, RateMeter
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.file_output import FileOutput
from cam_server.pipeline.instance.loop import AbortInstance
from cam_server.pipeline.instance.messages import filter_output
from cam_server.pipeline.instance.outcomes import EXIT_OK
from cam_server.pipeline.instance.output import channel_selection, open_output
from cam_server.pipeline.instance.stream_output import OutputStream
from cam_server.pipeline.instance.user_code import UserScriptError, user_parameters
from cam_server.pipeline.instance_spec import InstanceSpec
from cam_server.pipeline.types.script_runner import load_script, run_script

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.05


class ScriptHost:
    """The instance side of a running script: stop event, live parameters, sending with statistics."""

    def __init__(self, control: InstanceControl, output: OutputStream | FileOutput, config: PipelineConfig) -> None:
        self.control = control
        self.output = output
        self.stop_event = threading.Event()
        self.end_reason = ""
        self._rate = RateMeter(control.stats)
        self._apply(config)
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="script-watcher", daemon=True)

    def _apply(self, config: PipelineConfig) -> None:
        self.config = config
        self._parameters = user_parameters(config)  # one atomic swap: the script sees the old or the new dict
        self._include, self._exclude = channel_selection(config)

    def parameters(self) -> Mapping[str, Any]:
        """The current config as the script's ``parameters`` read it (a plain dict)."""
        return self._parameters

    def start(self) -> None:
        self.control.stats.set("start_time", time.time())
        self.control.on_stop(lambda: self._stop("stop requested"))  # the script's stop_event is set at once
        self._watcher.start()

    def close(self) -> None:
        self._done.set()
        self.stop_event.set()
        self._watcher.join(2)

    def _stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.end_reason = reason
            log.info("stopping script: %s", reason)
            self.stop_event.set()

    def _watch(self) -> None:
        control, output = self.control, self.output
        while not self._done.wait(WATCH_INTERVAL_S):
            if control.should_stop():
                self._stop("stop requested")
            config = control.poll_config()
            if config is not None:
                if config.function != self.config.function or config.reload:
                    control.config_refused(f"the script of a running 'script' pipeline cannot change (function "
                                           f"{self.config.function!r}): create a new instance to run another one")
                    continue
                self._apply(config)
                output.update_config(config)
                control.config_applied()
                log.info("config updated")
            control.stats.set("clients", output.client_count)
            if output.no_clients:
                self._stop("no clients connected")

    def send(self, data: dict[str, Any], pulse_id: int, timestamp: tuple[int, int]) -> bool:
        """``sender.send`` of the script: False when the output dropped the message; a value the output cannot
        carry raises UserScriptError with ``abort_on_error`` (the script may catch it), else returns False."""
        stats = self.control.stats
        stats.add("frames_in")
        data = filter_output(data, self._include, self._exclude)
        try:
            sent = self.output.send(data, pulse_id, timestamp)
        except ValueError as exc:
            stats.add("errors")
            message = f"Cannot send pulse id {pulse_id}: {exc}"
            self.control.report_error(message)
            if self.config.abort_on_error:
                raise UserScriptError(message) from None
            return False
        if sent:
            self._rate.sent(self.output.bytes_sent)
        else:
            stats.add("dropped")
        if self.output.finished:
            self._stop(f"{self.output.records} records sent")
        return sent


def run_script_pipeline(control: InstanceControl, spec: InstanceSpec) -> int:
    """Load the script (errors → exit 1), run it until it returns (exit 0) or raises (reported, exit 2)."""
    config = spec.config
    name = config.function
    if not name:
        raise InvalidConfig("pipeline_type 'script' needs 'function': the script defining "
                            "run(stop_event, parameters, sender)")
    load_script(name, spec.scripts_folder, reload=config.reload)
    context = zmq.Context(io_threads=1)
    output = open_output(spec, context)
    host = ScriptHost(control, output, config)
    host.start()
    try:
        run_script(name, spec.scripts_folder, host.stop_event, host.parameters, host.send,
                   client_count=lambda: output.client_count, instance_id=spec.instance_id)
    except UserScriptError as exc:
        control.report_error(str(exc))
        raise AbortInstance(str(exc)) from None
    finally:
        host.close()
        output.close()
        context.destroy(linger=1000)
    log.info("script returned%s", f" ({host.end_reason})" if host.end_reason else "")
    return EXIT_OK
