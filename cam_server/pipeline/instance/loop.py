"""The receive → handle → send loop every stream-in/stream-out pipeline type shares.

It owns config polling, statistics, error reporting, the end conditions (stop request, no clients, records,
pid_range stop) and the optional thread pool (``processing_threads``): frames are prepared in order, computed
in parallel (numpy releases the GIL) and sent in their original order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from cam_server.bsread import Message
from cam_server.common.process import STATE_CODES, InstanceControl, RateMeter
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.input import RATE_STALE_S, StreamInput
from cam_server.pipeline.instance.outcomes import FinishInstance, FrameOverwritten, Job, ProcessingError
from cam_server.pipeline.instance.stream_output import OutputStream

log = logging.getLogger(__name__)

ERROR_REPORT_INTERVAL_S = 1.0
HOUSEKEEPING_S = 1.0  # how often queue fill levels and the clients' backlog are copied to the statistics
STREAMING, STOPPING = STATE_CODES["streaming"], STATE_CODES["stopping"]


class Handler(Protocol):
    def update(self, config: PipelineConfig) -> None: ...
    def prepare(self, message: Message) -> Job | None: ...
    @property
    def abort_on_error(self) -> bool: ...


class AbortInstance(Exception):  # noqa: N818 - control flow carrying the error message
    """A processing error with abort_on_error: the instance ends with exit code 2."""


class _ErrorReporter:
    """Reports errors to the parent without flooding it (a failing frame at 100 Hz): at most one report per
    second, the first one at once; ``force`` for the final error of an aborting instance."""

    def __init__(self, control: InstanceControl) -> None:
        self._control = control
        self._last = -ERROR_REPORT_INTERVAL_S
        self._suppressed = 0

    def __call__(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < ERROR_REPORT_INTERVAL_S:
            self._suppressed += 1
            return
        if self._suppressed:
            message = f"{message} (and {self._suppressed} more errors)"
        self._last, self._suppressed = now, 0
        log.error("%s", message)
        self._control.report_error(message)


class InstanceLoop:
    """Runs until the instance should end; :meth:`run` returns normally for a normal end (exit code 0)."""

    def __init__(self, control: InstanceControl, handler: Handler, source: StreamInput, output: OutputStream,
                 processing_threads: int | None = None) -> None:
        self.control = control
        self.handler = handler
        self.source = source
        self.output = output
        self.stats = control.stats
        self.histograms = control.histograms  # GET /metrics: processing time and end-to-end latency per frame
        self.rate = RateMeter(control.stats)
        self.rate_in = RateMeter(control.stats, "rate_in", throughput_field=None)
        self.report = _ErrorReporter(control)
        self.threads = processing_threads or 0  # None or 0: frames are computed in the receiving thread
        self._ended = threading.Event()  # set by the output thread when the instance should end
        self.end_reason = ""
        # Frames dropped before the output, one counter per thread that drops (no shared read-modify-write):
        self._dropped_prepare = 0  # by the receiving thread (gates)
        self._dropped_compute = 0  # by the thread that finishes jobs (functions returning None)
        interrupt = getattr(source, "interrupt", None)
        if interrupt is not None:  # a stop request ends the wait for the next frame at once
            control.on_stop(interrupt)
        # An input that counts received frames and shows its state itself (StreamInput: its receiving thread).
        attach = getattr(source, "attach", None)
        self._input_counts = attach is not None
        if attach is not None:
            attach(control.stats, control.report_error)
        self._next_housekeeping = 0.0

    # -- main loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        self.stats.set("send_queue", getattr(self.output, "send_queue", 0))  # fixed when the output opened
        self.stats.set("start_time", time.time())
        if not self._input_counts:
            self.stats.set("state", STREAMING)
        try:
            if self.threads:
                self._run_parallel()
            else:
                self._loop(self._finish_job_now)
        finally:
            interrupt = getattr(self.source, "interrupt", None)
            if interrupt is not None:  # the input thread must not show its state any more
                interrupt()
            self.stats.set("state", STOPPING)
            self._update_dropped()
        log.info("instance finished: %s", self.end_reason)

    def _loop(self, dispatch: Callable[[Job], bool]) -> None:
        """Receive and prepare messages in order; ``dispatch(job)`` computes/sends them (True = end)."""
        control, stats, source, output = self.control, self.stats, self.source, self.output
        while True:
            if control.should_stop():
                self.end_reason = "stop requested"
                return
            if self._ended.is_set():
                return
            config = control.poll_config()
            if config is not None:
                self._apply_config(config)
            if time.monotonic() >= self._next_housekeeping:
                self._housekeeping()
            stats.set("clients", output.client_count)
            if output.no_clients:
                self.end_reason = "no clients connected"
                return
            message = source.receive()
            if message is None:  # receive timeout (about 1 s)
                if self._ended.is_set():
                    return
                self._update_dropped()
                self.rate.expire(RATE_STALE_S)  # the rate meters only update on messages
                if not self._input_counts:
                    self.rate_in.expire(RATE_STALE_S)
                continue
            received = time.time()
            if not self._input_counts:
                stats.add("frames_in")
                self.rate_in.tick()
            if isinstance(message, Message) and message.data.format_changed:  # custom pipelines get call times
                self._note_frame_shape(message)
            try:
                job = self.handler.prepare(message)
            except FinishInstance as finish:
                self.end_reason = str(finish)
                return
            if job is None:
                self._dropped_prepare += 1
                self._update_dropped()
                continue
            job.received = received
            lease = getattr(getattr(message, "data", None), "lease", None)  # a frame read in place (shared memory)
            if lease is not None:
                job.compute = lease.guard(job.compute)  # checked after use: an overwritten frame is dropped
            if dispatch(job):
                return

    def _finish_job_now(self, job: Job) -> bool:
        return self._finish_job(job, job.compute)

    # -- parallel processing --------------------------------------------------------------------------

    def _run_parallel(self) -> None:
        """Frames are computed by a thread pool and sent by one output thread in message order, as soon as
        each is ready (sending never waits for the next camera frame)."""
        executor = ThreadPoolExecutor(self.threads, thread_name_prefix="processing")
        results: queue.Queue[tuple[Job, Future] | None] = queue.Queue(maxsize=2 * self.threads)
        failure: list[BaseException] = []

        def send_in_order() -> None:
            try:
                while (item := results.get()) is not None:
                    job, future = item
                    if self._finish_job(job, future.result):
                        break
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread (AbortInstance, bugs)
                failure.append(exc)
            self._ended.set()

        def dispatch(job: Job) -> bool:
            item = (job, executor.submit(job.compute))
            while not self._ended.is_set():
                try:
                    results.put(item, timeout=0.1)
                    return False
                except queue.Full:
                    continue
            return True

        sender = threading.Thread(target=send_in_order, name="output-order", daemon=True)
        sender.start()
        try:
            self._loop(dispatch)
        finally:
            while sender.is_alive():  # let the output thread send what is pending, then end it
                try:
                    results.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            sender.join()
            executor.shutdown(wait=True, cancel_futures=True)
        if failure:
            raise failure[0]

    def _observe(self, job: Job) -> None:
        """A frame was sent: its processing time (receive → send) and end-to-end latency (its global timestamp →
        send) into the shared histograms (a few hundred ns, no allocation)."""
        now = time.time()
        histograms = self.histograms
        if job.received:
            histograms.processing.observe(now - job.received)
        seconds, nanoseconds = job.timestamp
        if seconds > 0:
            latency = now - seconds - nanoseconds * 1e-9
            histograms.latency.observe(latency if latency > 0.0 else 0.0)

    def _update_dropped(self) -> None:
        """``dropped`` and its parts: ``dropped_gates`` (held back on purpose: gates, empty images, functions
        returning None), ``dropped_output`` (the output: full queue or send timeout, full buffer, enforce_pid) and
        ``dropped_input`` (the input: the oldest frames of a full input queue, those skipped to catch up, bsread merge
        frames without data) and ``dropped_overwritten`` (a shared-memory input: frames overwritten in the camera's
        ring before their use ended)."""
        stats, source = self.stats, self.source
        gates = self._dropped_prepare + self._dropped_compute
        output = self.output.dropped
        inputs = getattr(source, "dropped", 0) + getattr(source, "dropped_backlog", 0)
        overwritten = getattr(source, "dropped_overwritten", 0)  # shared-memory input: slots reused too early
        stats.set("dropped_gates", gates)
        stats.set("dropped_output", output)
        stats.set("dropped_input", inputs)
        stats.set("dropped_overwritten", overwritten)
        stats.set("dropped", gates + output + inputs + overwritten)

    def _housekeeping(self) -> None:
        """About once a second: queue fill levels and the slowest client's backlog (not worth a look per frame)."""
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        stats, output = self.stats, self.output
        stats.set("input_queue", getattr(self.source, "queued", 0))
        stats.set("output_queue", getattr(output, "queued", 0))
        stats.set("output_queue_max", getattr(output, "queued_max", 0))
        stats.set("output_backlog", getattr(output, "client_backlog", 0))
        self._update_dropped()

    def _note_frame_shape(self, message: Message) -> None:
        """The received image's shape for the statistics (``frame_shape``), read from a new data header."""
        spec = message.data.channel("image")
        shape = spec.numpy_shape if spec is not None else None
        height, width = shape if shape is not None and len(shape) == 2 else (0, 0)
        self.stats.set("frame_height", height)
        self.stats.set("frame_width", width)

    def _apply_config(self, config: PipelineConfig) -> None:
        """Apply a live config completely, or refuse it (the previous one keeps running): either way the server,
        which waits for the answer, hears it (``config_applied`` / ``config_refused`` with the reason)."""
        try:
            self.handler.update(config)
        except Exception as exc:  # noqa: BLE001 - a bad live config keeps the previous one running
            log.warning("config update refused: %s", exc)
            self.control.config_refused(str(exc), getattr(exc, "status_code", 400))
            return
        self.source.update_config(config)
        self.output.update_config(config)
        self.control.config_applied()
        log.info("config updated")

    # -- one finished frame ---------------------------------------------------------------------------

    def _finish_job(self, job: Job, result: Callable[[], dict[str, Any] | None]) -> bool:
        """Send a job's values; True when the instance should end (records reached)."""
        stats = self.stats
        try:
            values = result()
            if values is None:
                self._dropped_compute += 1
                return False
            sent = self.output.send(values, job.pulse_id, job.timestamp)
        except FrameOverwritten:  # counted by the input (dropped_overwritten)
            self._update_dropped()
            return False
        except (ProcessingError, ValueError) as exc:
            stats.add("errors")
            message = str(exc) if isinstance(exc, ProcessingError) else f"Cannot send pulse id {job.pulse_id}: {exc}"
            abort = self.handler.abort_on_error
            self.report(message, force=abort)
            if abort:
                raise AbortInstance(message) from exc
            return False
        if sent:
            self.rate.sent(self.output.bytes_sent)
            self._observe(job)
        self._update_dropped()
        if self.output.finished:
            self.end_reason = f"{self.output.records} records sent"
            return True
        return False
