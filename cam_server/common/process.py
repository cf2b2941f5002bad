"""Instance processes: one OS process per camera stream or pipeline instance.

Why processes: an instance that crashes, leaks or blocks in C code (EPICS, a user script) must never take the
server down, and image processing must use more than one core. The parent talks to the child through:

* a stop pipe: to ask for a stop the parent writes a byte to it and closes its write end, so the child's read end
  becomes readable (by end-of-file also when the server dies; not with the ``fork`` start method, where the child
  holds a copy of the write end: there the PID check of :meth:`InstanceControl.should_stop` notices). A pipe,
  not a ``multiprocessing.Event``: a thread waiting on an Event in a child that then exits leaves the Event's
  condition waiting for a wake-up acknowledgement that never comes, and the parent's next ``set()`` hangs for ever;
* a config queue (live config changes; the child takes the newest one),
* an error queue (the child reports failures with a readable message),
* :class:`SharedStats`, counters in shared memory the child updates per frame and the parent reads on demand,
  so statistics never cost a message between processes.

Children start with the ``forkserver`` method: fast (modules preloaded once in a clean server process that
never holds an EPICS Channel Access context or threads of ours) and safe, unlike a plain fork of the
multi-threaded REST server.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

log = logging.getLogger(__name__)

STAT_FIELDS = (
    "frames_in",       # messages/frames received or generated
    "frames_out",      # messages sent
    "dropped",         # frames dropped (full queue, filters that discard, unmatched merges, ...)
    "errors",          # processing errors (frames that failed)
    "clients",         # connected stream clients (as counted by the sender's socket monitor)
    "rate",            # output messages per second, smoothed
    "last_frame_time",  # wall clock of the last output message
    "start_time",      # wall clock when the instance loop started
    "bytes_out",       # bytes of the messages sent (all frames of each multipart message)
    "throughput",      # bytes sent per second, smoothed like the rate
    "rate_in",         # messages received per second, smoothed
    "frame_width",     # shape of the received images (0: none yet; a change of data header updates it)
    "frame_height",
)
_INDEX = {name: i for i, name in enumerate(STAT_FIELDS)}
_INT_FIELDS = frozenset({"frames_in", "frames_out", "dropped", "errors", "clients", "bytes_out", "frame_width",
                         "frame_height"})

_CONTEXT: Any = None
# Config acknowledgements (InstanceControl.config_applied / config_refused): outcomes of InstanceProcess.wait_config.
CONFIG_APPLIED, CONFIG_REFUSED, CONFIG_PENDING, CONFIG_ENDED = "applied", "refused", "pending", "ended"
MAX_REPORT_CHARS = 4000  # an error report or refusal reason longer than this is cut (it is shown in answers)
_ACK_HANDLED, _ACK_REFUSED, _ACK_STATUS = 0, 1, 2  # the slots of InstanceControl._acks


def process_context(preload: Sequence[str] = ()) -> Any:
    """The multiprocessing context used for all instances (created once per server process)."""
    global _CONTEXT
    if _CONTEXT is None:
        method = os.environ.get("CAM_SERVER_START_METHOD", "forkserver")
        _CONTEXT = mp.get_context(method)
        if method == "forkserver" and preload:
            _CONTEXT.set_forkserver_preload(list(preload))
    return _CONTEXT


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def configure_memory() -> None:
    """Keep freed large buffers in the heap (glibc), in every instance process.

    Every frame is a fresh multi-MB ZeroMQ message; with the default thresholds each one is a new mmap (or heap
    top that gets trimmed) whose pages fault in again: about 1 ms per 10 MB, per frame.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc: the defaults are fine, only slower for large frames
        log.debug("mallopt not available")


class SharedStats:
    """Per-instance counters in shared memory (lock-free: one writer, the instance)."""

    def __init__(self, ctx: Any) -> None:
        self._values = ctx.RawArray("d", len(STAT_FIELDS))

    def add(self, name: str, n: float = 1) -> None:
        self._values[_INDEX[name]] += n

    def set(self, name: str, value: float) -> None:
        self._values[_INDEX[name]] = value

    def get(self, name: str) -> float:
        return self._values[_INDEX[name]]

    def snapshot(self) -> dict[str, float]:
        values = list(self._values)
        out: dict[str, float] = {}
        for name, value in zip(STAT_FIELDS, values, strict=True):
            out[name] = int(value) if name in _INT_FIELDS else value
        return out


class RateMeter:
    """Smoothed events-per-second (and bytes-per-second), updated per event without allocation."""

    def __init__(self, stats: SharedStats, field: str = "rate", window: float = 1.0,
                 throughput_field: str | None = "throughput") -> None:
        self._stats, self._field, self._window = stats, field, window
        self._throughput_field = throughput_field
        self._count = 0
        self._bytes = 0
        self._bytes_total = 0
        self._since = self._last = time.monotonic()

    def sent(self, bytes_total: int = 0) -> None:
        """One message sent: counts it in ``frames_out``, stamps ``last_frame_time`` and ticks the rate.

        ``bytes_total`` is the output's running count of bytes sent (``Sender.bytes_sent``): a running total, not
        a per-message size, so that a buffered output, which sends later in its own thread, is counted right.
        """
        self._stats.add("frames_out")
        self._stats.set("last_frame_time", time.time())
        if bytes_total:
            self._stats.set("bytes_out", bytes_total)
            self._bytes += bytes_total - self._bytes_total
            self._bytes_total = bytes_total
        self.tick()

    def tick(self) -> None:
        self._count += 1
        now = self._last = time.monotonic()
        elapsed = now - self._since
        if elapsed >= self._window:
            self._stats.set(self._field, self._count / elapsed)
            if self._throughput_field is not None:
                self._stats.set(self._throughput_field, self._bytes / elapsed)
            self._count, self._bytes, self._since = 0, 0, now

    def expire(self, stale: float) -> None:
        """Zero the rate (and throughput) when no event came for ``stale`` seconds: they only update on events."""
        now = time.monotonic()
        if now - self._last > stale:
            self._stats.set(self._field, 0.0)
            if self._throughput_field is not None:
                self._stats.set(self._throughput_field, 0.0)
            self._count, self._bytes, self._since = 0, 0, now


class InstanceControl:
    """The child's end: what an instance loop receives to know when to stop, get configs and report."""

    def __init__(self, ctx: Any) -> None:
        self._stop_reader, self._stop_writer = ctx.Pipe(duplex=False)
        self._stopped = False  # child: the stop (or the parent's end) was seen
        self._configs = ctx.Queue()
        # Configs sent (parent) and taken (child): the per-frame check reads shared memory, not the queue's pipe.
        self._configs_sent = ctx.RawValue("q", 0)
        self._configs_taken = 0
        self._send_lock = threading.Lock()
        # Child → parent, in shared memory: the number of the last config the child handled (applied or refused), of
        # the last one it refused, the HTTP status and the reason of that refusal (UTF-8, cut to MAX_REPORT_CHARS).
        self._acks = ctx.RawArray("q", 3)
        self._refusal = ctx.RawArray("c", MAX_REPORT_CHARS + 1)
        self._errors = ctx.Queue()
        self.stats = SharedStats(ctx)
        self._parent_pid = os.getpid()
        self._parent_checked = 0.0
        self._closed = False
        self._wakers: list[Callable[[], None]] = []
        self._watcher: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        """What the child receives: never the stop pipe's write end (its end-of-file is the stop signal)."""
        state = self.__dict__.copy()
        state.update(_stop_writer=None, _wakers=[], _watcher=None, _send_lock=None)
        return state

    # --- child side ---------------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True when the parent asked us to stop, or the server process is gone (never outlive the server).

        The stop pipe reports both (end-of-file); the PID check (at most once a second; with forkserver the OS
        parent is the fork server) is a backstop should the write end ever leak into another process.
        """
        if self._stopped:
            return True
        if self._watcher is None and self._stop_seen(0):  # with a watcher thread, it sets _stopped: no syscall
            return True
        now = time.monotonic()
        if now - self._parent_checked > 1.0:
            self._parent_checked = now
            if not psutil.pid_exists(self._parent_pid):
                return True
        return False

    def on_stop(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` from a watcher thread as soon as the parent asks to stop.

        A loop blocked in a receive or a sleep would otherwise see :meth:`should_stop` only at its next frame or
        timeout; ``wake`` (e.g. :meth:`Wakeup.set <cam_server.bsread.Wakeup.set>`) ends that wait now.
        """
        self._wakers.append(wake)
        if self._stopped:
            wake()
        elif self._watcher is None:
            self._watcher = threading.Thread(target=self._watch_stop, name="stop-watcher", daemon=True)
            self._watcher.start()

    def _stop_seen(self, timeout: float | None) -> bool:
        try:
            seen = self._stop_reader.poll(timeout)
        except (OSError, EOFError, ValueError):  # closed: nobody can ask us anything any more
            seen = True
        if seen:
            self._stopped = True
        return seen

    def _watch_stop(self) -> None:
        self._stop_seen(None)
        for wake in list(self._wakers):
            try:
                wake()
            except Exception:  # noqa: BLE001 - a failing waker must not hide the stop from the others
                log.exception("stop waker %r failed", wake)

    def poll_config(self) -> Any:
        """The newest config sent by the parent since the last call, or None (cheap when there is none): what the
        parent sent (a camera config dict, a pipeline instance's validated ``PipelineConfig``)."""
        if self._configs_sent.value == self._configs_taken:
            return None
        latest = None
        while True:
            try:
                latest = self._configs.get_nowait()
            except queue.Empty:  # also when a config is counted but still on its way (the queue's feeder thread)
                return latest
            except (EOFError, OSError):
                return latest
            self._configs_taken += 1

    def config_applied(self) -> None:
        """The configs taken so far (the newest one) now run."""
        self._acks[_ACK_HANDLED] = self._configs_taken

    def config_refused(self, reason: str, status_code: int = 400) -> None:
        """The newest config taken was not applied (the previous one still runs), because of ``reason``
        (``status_code``: what the server answers, e.g. 404 for a function that does not exist)."""
        self._refusal.value = _cut(reason).encode("utf-8", "replace")[:MAX_REPORT_CHARS].replace(b"\0", b" ")
        self._acks[_ACK_STATUS] = status_code
        self._acks[_ACK_REFUSED] = self._configs_taken
        self._acks[_ACK_HANDLED] = self._configs_taken

    def report_error(self, message: str) -> None:
        message = _cut(message)
        try:
            self._errors.put_nowait((time.time(), message))
        except Exception:  # noqa: BLE001 - reporting must never break the loop
            log.exception("could not report error %s", message)

    # --- parent side --------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Write to and close the stop pipe; the child sees it at once, wherever it waits.

        The byte matters with the ``fork`` start method, where sibling instances inherit copies of the write end
        and end-of-file alone would never come.
        """
        writer, self._stop_writer = self._stop_writer, None
        if writer is not None:
            try:
                writer.send_bytes(b"stop")
            except OSError:  # the child is gone already
                pass
            writer.close()

    def child_started(self) -> None:
        """Drop the parent's copy of the child's end once the child has its own."""
        self._stop_reader.close()

    def send_config(self, config: Any) -> int:
        """Queue a config for the child (pickled; see :meth:`poll_config`); returns its number (1, 2, ...)."""
        with self._send_lock:  # REST threads may send concurrently; the count must not lose an increment
            self._configs.put(config)
            self._configs_sent.value += 1
            return self._configs_sent.value

    def refusal_status(self) -> int:
        """The HTTP status of the last refusal (see :meth:`config_refused`)."""
        return int(self._acks[_ACK_STATUS]) or 400

    def config_outcome(self, number: int) -> tuple[str, str | None]:
        """What became of config ``number`` so far: (CONFIG_APPLIED | CONFIG_REFUSED | CONFIG_PENDING, the refusal
        reason or None). Only for children that acknowledge every config they take (pipeline instances)."""
        if self._acks[_ACK_HANDLED] < number:
            return CONFIG_PENDING, None
        if self._acks[_ACK_REFUSED] == number:
            return CONFIG_REFUSED, self._refusal.value.decode("utf-8", "replace")
        return CONFIG_APPLIED, None  # (a newer config handled since counts as this one applied and replaced)

    def drain_errors(self) -> list[tuple[float, str]]:
        out = []
        while True:
            try:
                out.append(self._errors.get_nowait())
            except (queue.Empty, EOFError, OSError, ValueError):  # ValueError: queue already closed
                return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for q in (self._configs, self._errors):
            q.close()
            q.cancel_join_thread()
        self.request_stop()
        self._stop_reader.close()  # the parent's copy (already closed once the child started)


# The exit status of a forkserver child is read from a pipe: two threads polling at the moment it dies (a REST
# request, the reaper, or Process.start() of any other instance, which polls every child) would make the second
# read end-of-file and record exit code 255. One lock for all instances: reads are non-blocking, starts short.
_STATUS_LOCK = threading.Lock()


class InstanceProcess:
    """Parent-side handle of one instance process."""

    def __init__(self, instance_id: str, target: Callable[..., Any], args: tuple = (),
                 preload: Sequence[str] = ()) -> None:
        self.instance_id = instance_id
        self._ctx = process_context(preload)
        self.control = InstanceControl(self._ctx)
        self._process = self._ctx.Process(target=target, args=(self.control, *args), name=f"instance-{instance_id}",
                                          daemon=True)
        self._ps: psutil.Process | None = None
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self._errors_lock = threading.Lock()
        self.created = time.time()

    def start(self) -> None:
        if self._ctx.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()  # slow the first time: not under the status lock
        try:
            with _STATUS_LOCK:  # Process.start() polls the status of every child started before
                self._process.start()
        except BaseException:
            self.control.close()  # the stop pipe and queues of a process that never ran
            raise
        self.control.child_started()
        try:
            self._ps = psutil.Process(self._process.pid)
            self._ps.cpu_percent(None)
        except psutil.Error:
            self._ps = None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_alive(self) -> bool:
        with _STATUS_LOCK:
            return self._process.is_alive()

    @property
    def exitcode(self) -> int | None:
        with _STATUS_LOCK:
            return self._process.exitcode

    def _join(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` for the end (outside the lock, so readers are not blocked); True when ended."""
        try:
            multiprocessing.connection.wait([self._process.sentinel], timeout)
        except ValueError:  # never started
            return True
        return not self.is_alive()

    def update_config(self, config: Any) -> int:
        """Send the instance a live config change (see :meth:`InstanceControl.poll_config`); returns its number
        for :meth:`wait_config`."""
        return self.control.send_config(config)

    def wait_config(self, number: int, timeout: float) -> tuple[str, str | None]:
        """Wait up to ``timeout`` s for the instance to apply or refuse config ``number``: (outcome, reason), the
        outcome one of CONFIG_APPLIED, CONFIG_REFUSED (reason: why), CONFIG_PENDING (no answer in time) or
        CONFIG_ENDED (it ended first). Only for children that acknowledge every config they take."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            outcome = self.control.config_outcome(number)
            if outcome[0] != CONFIG_PENDING:
                return outcome
            if not self.is_alive():
                return CONFIG_ENDED, None
            if time.monotonic() >= deadline:
                return outcome
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def stop(self, timeout: float = 3.0) -> None:
        """Ask the instance to stop, then terminate and kill it if it does not; never leaves a process behind."""
        self.control.request_stop()
        if not self._join(timeout):
            log.warning("instance %s did not stop in %.1f s; terminating", self.instance_id, timeout)
            self._process.terminate()
            if not self._join(2.0):
                self._process.kill()
                self._join(2.0)
        self._collect_errors()
        self.control.close()

    def wait(self, timeout: float | None = None) -> None:
        self._join(timeout)

    def _collect_errors(self) -> None:
        # One drain at a time: a concurrent drain (REST request vs reaper) could otherwise see the queue empty
        # while the other holds its read lock, and record no error for an instance that reported one.
        with self._errors_lock:
            for when, message in self.control.drain_errors():
                self.last_error, self.last_error_time = message, when

    def info(self) -> dict[str, Any]:
        """Statistics and health, read without asking the child anything."""
        self._collect_errors()
        stats: dict[str, Any] = self.control.stats.snapshot()
        cpu = rss = None
        if self._ps is not None and self.is_alive():
            try:
                cpu = self._ps.cpu_percent(None)
                rss = self._ps.memory_info().rss
            except psutil.Error:
                pass
        stats.update(cpu_percent=cpu, memory_rss=rss)
        return {
            "instance_id": self.instance_id,
            "pid": self.pid,
            "is_running": self.is_alive(),
            "exit_code": self.exitcode,
            "created": self.created,
            "statistics": stats,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
        }


def _cut(message: str) -> str:
    """``message`` cut to MAX_REPORT_CHARS (an exception message can be megabytes: it would travel to every
    info answer)."""
    message = str(message)
    if len(message) <= MAX_REPORT_CHARS:
        return message
    return message[:MAX_REPORT_CHARS - 50] + f"... (cut: {len(message)} characters)"


def reserve_port(host: str = "0.0.0.0", exclude: set[int] | None = None) -> int:
    """A TCP port free right now (the OS picks it), not in ``exclude``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not exclude or port not in exclude:
            return port
    raise RuntimeError("could not find a free port")
