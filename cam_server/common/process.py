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

Isolation (issue 11): each instance runs in a session (and process group) of its own, and the server does not
depend on the fork server once an instance runs. A fork server that dies (a user script can kill it with
``os.kill(os.getppid(), 9)``) ends no instance: the server notices (the status pipe closes while the instance's
pidfd says it lives), keeps tracking the instance by its pidfd, takes its exit code from shared memory (the instance
writes it as it ends) and starts a new fork server for new instances. Stopping an instance also ends every process
it started: the instance ends its descendants as it exits (and, when its server is gone, the members of its group
and the processes on its ports), and the server, after the grace period, kills what is left of the group, of the
descendants it saw when it asked for the stop, and any process that kept one of the instance's sockets (a ``fork``
child that left the group and the tree with ``setsid`` and a second fork).
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from cam_server.common.histograms import InstanceHistograms
from cam_server.common.pipe_queue import PipeQueue

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
    # Health (issue 10 item 5): what the instance is doing and how its source behaves.
    "state",           # code of the instance's state: an index into INSTANCE_STATES (snapshot() shows the name)
    "reconnects",      # reconnections to the source after it was lost (or its settings changed)
    "source_restarts",  # restarts of the source seen in its data (pulse ids started again from below)
    "last_input_time",  # wall clock of the last frame/message received (last_frame_time: the last one sent)
    # --- pipeline side of issue 10 (faults): state, drops by reason, queues, memory limit ---
    "waiting_since",     # wall clock since when it waits for the camera server (0: not waiting)
    "dropped_input",     # of "dropped": the oldest of a full input queue, skipped to catch up, merge frames w/o data
    "dropped_gates",     # of "dropped": held back on purpose (paused, pid_range, downsampling, max_frame_rate, ...)
    "dropped_output",    # of "dropped": not sent (full queue or send timeout, full buffer, enforce_pid)
    "input_queue",       # frames received and waiting to be processed (sampled about once a second)
    "output_queue",      # messages waiting in the output buffer (buffer_size; sampled about once a second)
    "output_queue_max",  # the most messages the output buffer held at once
    "output_backlog",    # bytes waiting in the kernel for the slowest stream client (sampled once a second)
    "memory_limit",      # bytes of RSS at which the instance is ended (0: no limit)
    "input_gaps",        # pulse ids missing from the input stream: lost before the instance (a sender's full queue)
    # --- issue 13: frames through shared memory (common/frame_ring.py) ---
    "dropped_overwritten",  # of "dropped": frames of a shared-memory ring overwritten before the reader was done
    "input_path",        # how frames arrive: an index into INPUT_PATHS (snapshot() shows the name)
    "send_queue",        # messages the stream queues per client (SNDHWM: queue_size; the default bounded in bytes)
    "frame_bytes",       # camera instances: bytes of one image (the source's size at start, then each new layout)
)
_INDEX = {name: i for i, name in enumerate(STAT_FIELDS)}
COUNTED_REPORT_WAIT_S = 0.1  # the longest a reader waits for a report the child counted but had not written yet
_INT_FIELDS = frozenset({"frames_in", "frames_out", "dropped", "errors", "clients", "bytes_out", "frame_width",
                         "frame_height", "reconnects", "source_restarts", "dropped_input", "dropped_gates",
                         "dropped_output", "input_queue", "output_queue", "output_queue_max", "output_backlog",
                         "memory_limit", "input_gaps", "dropped_overwritten", "send_queue",
                         "frame_bytes"})
# statistics.input_path: none yet (and camera instances), the bsread stream, or a camera's shared-memory ring.
INPUT_PATHS = ("", "bsread", "shared_memory")

# The states an instance reports in ``statistics.state`` (SharedStats.set_state; shared memory holds the index):
#   starting                  the process runs, its source / stream are being set up (0: the initial value)
#   streaming                 frames arrive (the last one less than RATE_STALE_S ago)
#   waiting for source        connected, but nothing arrived for RATE_STALE_S (an idle or stalled upstream)
#   reconnecting              the connection to the source is lost (or is being replaced); reconnects counts returns
#   stopping                  the instance is ending (stop request, no clients, end condition)
#   waiting for camera server a pipeline whose camera server does not answer (pipeline side)
INSTANCE_STATES = ("starting", "streaming", "waiting for source", "reconnecting", "stopping",
                   "waiting for camera server")
STATE_CODES = {name: code for code, name in enumerate(INSTANCE_STATES)}
# Rates only change on events: a reader shows a rate (and its throughput) as 0 once the stamp of its last event is
# older than this. rate field → (wall-clock stamp of its last event, its throughput field or None).
RATE_STALE_S = 2.0
# An instance whose server is gone ends within moments (its loop is woken). One whose main thread is stuck where no
# wake-up reaches (a user function blocked in a C call) ends itself this long after the server's end, the way it would
# have ended (its processes, exit code EXIT_ORPHANED); should even that not run, the kernel ends it ORPHAN_KILL_S later.
ORPHAN_GRACE_S = 10.0
ORPHAN_KILL_S = 5.0
ORPHAN_CLOSING_S = 60.0  # more time for one that is ending on its own, only slowly (state "stopping": a file closing)
EXIT_ORPHANED = 1
# The child's watcher thread and its main thread (as it ends) may both ask whether the server is gone: one reads the
# pipe (a second read of a stop request already taken would block).
_SERVER_GONE_LOCK = threading.Lock()
RESERVATION_SLOTS = 32  # stream reservations held until released, at once per instance (InstanceControl)
# Ids of those reservations, unique in this (server) process: an id never releases another instance's reservation.
_RESERVATION_IDS = itertools.count(1)
RATE_STAMPS = {"rate": ("last_frame_time", "throughput"), "rate_in": ("last_input_time", None)}


def state_name(code: float) -> str:
    """The name of a state code as stored in shared memory (an unknown code reads as "unknown")."""
    index = int(code)
    return INSTANCE_STATES[index] if 0 <= index < len(INSTANCE_STATES) else "unknown"


_CONTEXT: Any = None
# Config acknowledgements (InstanceControl.config_applied / config_refused): outcomes of InstanceProcess.wait_config.
CONFIG_APPLIED, CONFIG_REFUSED, CONFIG_PENDING, CONFIG_ENDED = "applied", "refused", "pending", "ended"
MAX_REPORT_CHARS = 4000  # an error report or refusal reason longer than this is cut (it is shown in answers)
MAX_PENDING_REPORTS = 200  # reports an instance keeps while the server reads none (per frame ones): the oldest go
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


def freeze_gc() -> None:
    """Leave every object alive now (the modules the fork server preloaded, an instance's set-up) out of all later
    garbage collections (``gc.freeze``): called by an instance at its start and again once it is set up.

    Why: a full collection walks every tracked object; with numpy, scipy and numba loaded that is ~140 000 objects and
    ~65 ms (measured here), a stall in the middle of the frame stream whenever it happens. It also writes to each
    object's header, which copies the fork server's pages into the instance (more unique memory): frozen objects are
    never touched. Cyclic garbage among frozen objects is never collected: an object of the set-up that a live change
    replaces (a camera's source: :func:`refreeze_gc`; a pipeline's first user module, reloaded) would stay.
    """
    gc.freeze()


def refreeze_gc() -> None:
    """After a live change replaced objects of the set-up (frozen, see :func:`freeze_gc`): collect what is garbage
    now (one full collection, ~65 ms, at a moment without frames) and freeze the rest again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class SharedStats:
    """Per-instance counters in shared memory (lock-free: one writer, the instance)."""

    def __init__(self, ctx: Any) -> None:
        self._values = ctx.RawArray("d", len(STAT_FIELDS))
        self._view: memoryview | None = None  # reader side: all fields in one copy (not pickled to the child)

    def __getstate__(self) -> dict[str, Any]:
        return {"_values": self._values, "_view": None}

    def add(self, name: str, n: float = 1) -> None:
        self._values[_INDEX[name]] += n

    def set(self, name: str, value: float) -> None:
        self._values[_INDEX[name]] = value

    def get(self, name: str) -> float:
        return self._values[_INDEX[name]]

    def set_state(self, state: str) -> None:
        """Report the instance's state, one of :data:`INSTANCE_STATES` (a KeyError names a state that is not)."""
        self._values[_INDEX["state"]] = STATE_CODES[state]

    def state(self) -> str:
        return state_name(self._values[_INDEX["state"]])

    def snapshot(self) -> dict[str, Any]:
        """Every field; ``state`` by name, and rates whose last event is older than RATE_STALE_S as 0 (a stalled
        instance must not show its last rate for ever, whatever its loop is blocked in)."""
        if self._view is None:
            self._view = memoryview(self._values).cast("B").cast("d")
        values = self._view.tolist()
        out: dict[str, Any] = {}
        for name, value in zip(STAT_FIELDS, values, strict=True):
            out[name] = int(value) if name in _INT_FIELDS else value
        out["state"] = state_name(out["state"])
        path = int(out["input_path"])
        out["input_path"] = INPUT_PATHS[path] if 0 < path < len(INPUT_PATHS) else None
        now = time.time()
        for rate, (stamp, throughput) in RATE_STAMPS.items():
            if out[rate] and now - out[stamp] > RATE_STALE_S:
                out[rate] = 0.0
                if throughput is not None:
                    out[throughput] = 0.0
        return out


class RateMeter:
    """Smoothed events-per-second (and bytes-per-second), updated per event without allocation."""

    def __init__(self, stats: SharedStats, field: str = "rate", window: float = 1.0,
                 throughput_field: str | None = "throughput") -> None:
        self._stats, self._field, self._window = stats, field, window
        self._throughput_field = throughput_field
        self._stamp_field = RATE_STAMPS[field][0] if field in RATE_STAMPS else None  # wall clock of the last event
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
        if self._stamp_field != "last_frame_time":
            self._stats.set("last_frame_time", time.time())
        if bytes_total:
            self._stats.set("bytes_out", bytes_total)
            self._bytes += bytes_total - self._bytes_total
            self._bytes_total = bytes_total
        self.tick()

    def tick(self) -> None:
        self._count += 1
        if self._stamp_field is not None:
            self._stats.set(self._stamp_field, time.time())
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


USAGE_MAX_AGE_S = 1.0  # cpu and RSS of a process are read at most this often (info routes answer from the cache)
PSS_MAX_AGE_S = 5.0    # PSS reads /proc/<pid>/smaps_rollup, which walks every mapping: at most this often


class ProcessUsage:
    """cpu (percent of one core) and memory (RSS, PSS) of one process, read from the OS at most every ``max_age``
    seconds (PSS every ``pss_max_age``) and served from memory in between.

    Why: every ``GET .../info`` used to read /proc for each instance; under many concurrent readers those reads
    were most of the route's cost. A reader that finds the figures older than ``max_age`` refreshes them under the
    lock; readers arriving meanwhile wait for that one refresh instead of each making their own (the lock is only
    ever held for the /proc reads, never by instance starts or stops). ``refreshes`` / ``pss_refreshes`` count the
    reads made (for tests and benchmarks). PSS counts the pages shared with the fork server and the sibling
    instances at their share only: the instance's own memory, unlike RSS.
    """

    def __init__(self, pid: int | None = None, max_age: float = USAGE_MAX_AGE_S,
                 pss_max_age: float = PSS_MAX_AGE_S, pss: bool = True) -> None:
        self._ps: psutil.Process | None
        try:
            self._ps = psutil.Process(pid)
            self._ps.cpu_percent(None)  # the first cpu figure is measured from here
        except psutil.Error:
            self._ps = None
        self._max_age, self._pss_max_age, self._with_pss = max_age, pss_max_age, pss
        self._lock = threading.Lock()
        self._stamp = self._pss_stamp = -float("inf")  # time.monotonic() of the last reads
        self._figures: dict[str, Any] = {"cpu_percent": None, "memory_rss": None, "memory_pss": None}
        self.refreshes = 0
        self.pss_refreshes = 0

    def read(self) -> dict[str, Any]:
        """``{"cpu_percent", "memory_rss", "memory_pss"}`` (None when the process is gone or unreadable); the
        same dict object until the next refresh: do not change it."""
        now = time.monotonic()
        if now - self._stamp < self._max_age or self._ps is None:
            return self._figures
        with self._lock:
            now = time.monotonic()
            if now - self._stamp >= self._max_age:  # nobody refreshed while we waited for the lock
                self._refresh(now)
        return self._figures

    def _refresh(self, now: float) -> None:
        figures = dict(self._figures)
        assert self._ps is not None
        try:
            with self._ps.oneshot():
                figures["cpu_percent"] = self._ps.cpu_percent(None)
                figures["memory_rss"] = self._ps.memory_info().rss
            self.refreshes += 1
            if self._with_pss and now - self._pss_stamp >= self._pss_max_age:
                self._pss_stamp = now
                self.pss_refreshes += 1
                try:
                    figures["memory_pss"] = self._ps.memory_full_info().pss
                except (psutil.AccessDenied, AttributeError):  # no smaps access / not Linux: no PSS
                    figures["memory_pss"] = None
        except psutil.Error:  # gone: no figures (is_running says why)
            figures = {"cpu_percent": None, "memory_rss": None, "memory_pss": None}
        self._figures = figures  # one assignment: readers see the old or the new figures, never a mix
        self._stamp = now


class InstanceControl:
    """The child's end: what an instance loop receives to know when to stop, get configs and report."""

    def __init__(self, ctx: Any) -> None:
        self._stop_reader, self._stop_writer = ctx.Pipe(duplex=False)
        self._stopped = False  # child: the stop (or the parent's end) was seen
        self._configs = PipeQueue(ctx)  # not ctx.Queue: its named semaphores can outlive a killed group (pipe_queue)
        # Configs sent (parent) and taken (child): the per-frame check reads shared memory, not the queue's pipe.
        self._configs_sent = ctx.RawValue("q", 0)
        self._configs_taken = 0
        self._send_lock = threading.Lock()
        # Child → parent, in shared memory: the number of the last config the child handled (applied or refused), of
        # the last one it refused, the HTTP status and the reason of that refusal (UTF-8, cut to MAX_REPORT_CHARS).
        self._acks = ctx.RawArray("q", 3)
        self._refusal = ctx.RawArray("c", MAX_REPORT_CHARS + 1)
        self._errors = PipeQueue(ctx, max_pending=MAX_PENDING_REPORTS)
        # Reports sent (child, counted before each put) and taken (parent): readers drain the queue only when
        # something was sent, so an info request costs no queue syscalls.
        self._errors_sent = ctx.RawValue("q", 0)
        self._errors_taken = 0
        self.stats = SharedStats(ctx)
        self.histograms = InstanceHistograms(ctx)  # processing time and latency (GET /metrics), per frame
        # Stream reservations (parent: reserve(); child: held()): a client was handed the stream address and will
        # connect; until it does (or the reservation expires), "no clients" must not end the instance.
        self._reserved = ctx.RawValue("q", 0)  # reservations made (parent)
        self._reserved_until = ctx.RawValue("d", 0.0)  # time.monotonic() the newest one expires (system-wide clock)
        self._reservations_used = 0  # child: reservations taken up by client connections
        # Reservations held until released (reserve_until_released): one slot each, its expiry (time.monotonic(), 0:
        # free) and its id (0: cannot be released, it merged two); ids are unique in the parent process.
        self._held_until = ctx.RawArray("d", RESERVATION_SLOTS)
        self._held_ids = ctx.RawArray("q", RESERVATION_SLOTS)
        self._parent_pid = os.getpid()
        self._parent_checked = 0.0
        self._closed = False
        self._wakers: list[Callable[[], None]] = []
        self._watcher: threading.Thread | None = None
        self._server_gone: bool | None = None  # child: the verdict of server_gone(), once the stop pipe had its say
        # The exit code the child writes as it ends: the exit status when the fork server, which reads the real one,
        # is gone. NO_EXIT_CODE until then.
        self._exit_code = ctx.RawValue("i", NO_EXIT_CODE)
        self.ports: tuple[int, ...] = ()  # TCP ports the instance listens on (a leftover holding one is killed)
        self.stop_requested_at: float | None = None  # parent: when the stop was asked for
        self.before_stop: Callable[[], None] | None = None  # parent: called once, before the stop is asked for

    def __getstate__(self) -> dict[str, Any]:
        """What the child receives: never the stop pipe's write end (its end-of-file is the stop signal)."""
        state = self.__dict__.copy()
        state.update(_stop_writer=None, _wakers=[], _watcher=None, _send_lock=None, before_stop=None)
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
        else:
            self.watch()

    def watch(self) -> None:
        """Child: start the watcher thread (once): it wakes what :meth:`on_stop` registered when the stop comes, and
        when the server is gone it makes sure the instance does not outlive it (:data:`ORPHAN_GRACE_S`)."""
        if self._watcher is None and not self._stopped:
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
        if self.server_gone():
            self._end_orphan()

    def _end_orphan(self) -> None:
        """The server is gone; the instance's loop was woken and ends in moments, unless its main thread is stuck
        where no wake-up reaches. Then, :data:`ORPHAN_GRACE_S` later, this (daemon) thread ends the instance as its
        own exit would have: the exit code, its processes, the process. The kernel's default action on SIGALRM is the
        backstop for a main thread that keeps this one from running (C code holding the GIL). An instance already
        ending on its own (state ``stopping``: its loop ended, it closes its output, a large file say) gets
        :data:`ORPHAN_CLOSING_S` more first."""
        signal.setitimer(signal.ITIMER_REAL, ORPHAN_GRACE_S + ORPHAN_KILL_S)
        time.sleep(ORPHAN_GRACE_S)
        waited = ORPHAN_GRACE_S
        if self.stats.state() == "stopping":
            signal.setitimer(signal.ITIMER_REAL, ORPHAN_CLOSING_S + ORPHAN_KILL_S)
            time.sleep(ORPHAN_CLOSING_S)
            waited += ORPHAN_CLOSING_S
        log.error("the server is gone and this instance has not ended within %.0f s (stuck in its work?): ending it",
                  waited)
        self.record_exit(EXIT_ORPHANED)
        end_leftovers(self)
        logging.shutdown()
        os._exit(EXIT_ORPHANED)

    def keep_child_ends(self) -> None:
        """Child, first thing: drop its copies of the parent's ends of the queues (see :meth:`child_started`)."""
        self._configs.keep("get")
        self._errors.keep("put")

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
            except (EOFError, OSError, ValueError):  # the server is gone
                return latest
            self._configs_taken += 1

    def server_gone(self) -> bool:
        """Child, once the stop came or as it ends: True when the server is gone (its end of the stop pipe closed
        without a stop request, which can come while the server is still being torn down, or it no longer runs).
        The verdict is kept once the pipe gave one (reading it takes the stop request out of the pipe)."""
        with _SERVER_GONE_LOCK:
            if self._server_gone is not None:
                return self._server_gone
            try:
                if self._stop_reader.poll(0):
                    self._stop_reader.recv_bytes()
                    self._server_gone = False  # a stop request
                    return False
            except EOFError:
                self._server_gone = True
                return True
            except (OSError, ValueError):  # closed
                pass
            return not _running(self._parent_pid)

    def record_exit(self, code: int) -> None:
        """Child: the exit code the process is about to end with (read by the parent if the fork server is gone)."""
        self._exit_code.value = code

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
            self._errors_sent.value += 1
            self._errors.put_nowait((time.time(), message))
        except Exception:  # noqa: BLE001 - reporting must never break the loop
            log.exception("could not report error %s", message)

    def report_exit_reason(self, reason: str) -> None:
        """Say why the instance is about to end ("no clients for 10 s", "out of memory limit: ..."), just before it
        ends: the parent shows it as ``exit_reason`` (not as an error: ``last_error`` is unchanged)."""
        try:
            self._errors_sent.value += 1
            self._errors.put_nowait((time.time(), reason, EXIT_REASON))
        except Exception:  # noqa: BLE001 - reporting must never break the loop
            log.exception("could not report exit reason %s", reason)

    def clients_connected(self, count: int) -> None:
        """Child: ``count`` new client connections were seen; each takes up one pending reservation."""
        self._reservations_used = min(self._reserved.value, self._reservations_used + count)

    def held(self) -> bool:
        """Child: a client was promised the stream and has not connected yet (see :meth:`reserve`), or a reservation
        made with :meth:`reserve_until_released` is neither released nor expired."""
        now = time.monotonic()
        if self._reserved.value > self._reservations_used and now < self._reserved_until.value:
            return True
        return any(until > now for until in self._held_until)

    def flush_errors(self, timeout: float = 2.0) -> None:
        """Wait (up to ``timeout``) until the reported errors are written to the parent: before a hard exit
        (``os._exit``), which would lose what the queue's feeder thread has not written yet."""
        self._errors.flush(timeout)

    # --- parent side --------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Write to and close the stop pipe; the child sees it at once, wherever it waits.

        The byte matters with the ``fork`` start method, where sibling instances inherit copies of the write end
        and end-of-file alone would never come.
        """
        writer, self._stop_writer = self._stop_writer, None
        if self.stop_requested_at is None:
            self.stop_requested_at = time.time()
            if self.before_stop is not None and writer is not None:
                try:
                    self.before_stop()
                except Exception:  # noqa: BLE001 - the stop must happen whatever the hook does
                    log.exception("before-stop hook failed")
        if writer is not None:
            try:
                writer.send_bytes(b"stop")
            except OSError:  # the child is gone already
                pass
            writer.close()

    def reserve(self, seconds: float) -> None:
        """Parent: a client was handed the stream address; the instance must not end for lack of clients until a
        client connects (:meth:`clients_connected`) or ``seconds`` pass."""
        with self._send_lock:
            self._reserved_until.value = max(self._reserved_until.value, time.monotonic() + seconds)
            self._reserved.value += 1

    def reserve_until_released(self, seconds: float) -> int:
        """Parent: hold the instance (no end for lack of clients) until :meth:`release` of the id returned, or for
        ``seconds``; client connections do not end it (they may be anybody's).

        Up to :data:`RESERVATION_SLOTS` are held at once; one more merges into the slot that expires first (the
        later expiry of the two, released by neither id): a hold may last longer than asked, never shorter.
        """
        with self._send_lock:
            now = time.monotonic()
            reservation = next(_RESERVATION_IDS)
            until = list(self._held_until)
            slot = min(range(RESERVATION_SLOTS), key=until.__getitem__)
            if until[slot] > now:  # all in use
                self._held_ids[slot] = 0
                self._held_until[slot] = max(until[slot], now + seconds)
            else:
                self._held_ids[slot] = reservation
                self._held_until[slot] = now + seconds
            return reservation

    def release(self, reservation: int) -> bool:
        """Parent: end the hold of :meth:`reserve_until_released`'s ``reservation``; False when it had ended
        (released, expired, merged) or was never made here."""
        if reservation <= 0:
            return False
        with self._send_lock:
            for slot in range(RESERVATION_SLOTS):
                if self._held_ids[slot] == reservation:
                    self._held_ids[slot] = 0
                    held = self._held_until[slot] > time.monotonic()
                    self._held_until[slot] = 0.0
                    return held
        return False

    def child_started(self) -> None:
        """Drop the parent's copies of the child's ends once the child has its own (then a dead child reads as
        end-of-file, never as a report that does not come)."""
        self._stop_reader.close()
        self._configs.keep("put")
        self._errors.keep("get")

    def send_config(self, config: Any) -> int:
        """Queue a config for the child (pickled; see :meth:`poll_config`); returns its number (1, 2, ...)."""
        with self._send_lock:  # REST threads may send concurrently; the count must not lose an increment
            self._configs.put_nowait(config)
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

    def recorded_exit_code(self) -> int | None:
        """The exit code the child wrote as it ended (None if it did not, e.g. killed by a signal)."""
        code = self._exit_code.value
        return None if code == NO_EXIT_CODE else code

    def drain_errors(self, always: bool = False) -> list[tuple[float, str]]:
        """The reports the child sent since the last call; without ``always``, the queue is only read when the
        child counted a report that was not taken yet (one still in the child's feeder thread stays counted)."""
        out: list[tuple[float, str]] = []
        if not always and self._errors_sent.value == self._errors_taken:
            return out
        while True:
            counted = self._errors_sent.value
            try:
                # A counted report is on its way (the child's feeder thread writes it a moment after counting):
                # wait for it, so whatever the child showed after reporting (a state) is never seen without it.
                out.append(self._errors.get(timeout=COUNTED_REPORT_WAIT_S) if counted > self._errors_taken
                           else self._errors.get_nowait())
            except (queue.Empty, EOFError, OSError, ValueError):  # ValueError: queue already closed
                self._errors_taken = max(self._errors_taken, counted)  # lost with a killed child: stop waiting
                return out
            self._errors_taken += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for q in (self._configs, self._errors):
            q.close()
        self.request_stop()
        self._stop_reader.close()  # the parent's copy (already closed once the child started)


# The exit status of a forkserver child is read from a pipe: two threads polling at the moment it dies (a REST
# request, the reaper, or Process.start() of any other instance, which polls every child) would make the second
# read end-of-file and record exit code 255. One lock for all instances: reads are non-blocking, starts short.
_STATUS_LOCK = threading.Lock()
EXIT_REASON = "exit"  # marks an exit reason among the error reports


def describe_exit(exitcode: int | None) -> str | None:
    """Why a process ended, from its exit code alone: "killed by signal 9 (SIGKILL)", "exit code 1", "finished"."""
    if exitcode is None:
        return None
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"killed by signal {-exitcode}"
        return f"killed by signal {-exitcode} ({name})"
    return "finished" if exitcode == 0 else f"exit code {exitcode}"


NO_EXIT_CODE = -(2 ** 31)  # InstanceControl's exit code slot before the child wrote one
LOST_STATUS = 255  # what multiprocessing reports when the fork server's status pipe closed without a status
LEFTOVER_GRACE = 0.5  # seconds a leftover process of an instance gets between SIGTERM and SIGKILL
CREATE_TIME_MARGIN = 0.1  # seconds: process start times are counted in clock ticks
# Shared per-host daemons an instance may start (EPICS Channel Access starts caRepeater on first use): they serve
# every client on the host, not the instance, and are left alone.
SHARED_DAEMONS = frozenset({"caRepeater"})
_FORK_SERVER_MAIN = "multiprocessing.forkserver import main"


def _instance_main(target: Callable[..., Any], control: InstanceControl, *args: Any) -> None:
    """What every instance process runs: ``target(control, *args)`` in a session of its own; records the exit code
    in shared memory and ends every process the instance started before it exits."""
    try:
        os.setsid()  # own session and process group: stopped as a whole, never signalled with the server's group
    except OSError:  # already a group leader (not a forked child): keep the group it has
        pass
    freeze_gc()
    control.keep_child_ends()
    control.watch()
    code = 1
    try:
        target(control, *args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise
    finally:
        control.record_exit(code)
        end_leftovers(control)


def end_leftovers(control: InstanceControl) -> None:
    """In an instance as it ends: end every process it started (descendants; when the server is gone also those it
    will not look for: members of our group, and a process that escaped the group too — fork, setsid, fork — but
    keeps one of our ports)."""
    leftovers = descendants(os.getpid())
    if control.server_gone():
        leftovers += own_group() + port_holders(control.ports, time.time(), server=control._parent_pid)
    end_processes(leftovers, "instance exit")


def descendants(pid: int) -> list[psutil.Process]:
    """The processes below ``pid`` in the process tree: read from ``/proc/<pid>/task/*/children`` (a few small
    files, where psutil would read every process's status), else from psutil."""
    found: list[int] = []
    todo = [pid]
    try:
        while todo:
            parent = todo.pop()
            try:
                tasks = os.listdir(f"/proc/{parent}/task")
            except OSError:  # ended meanwhile
                continue
            for task in tasks:
                try:
                    with open(f"/proc/{parent}/task/{task}/children") as file:
                        children = [int(child) for child in file.read().split()]
                except FileNotFoundError:
                    if not os.path.exists(f"/proc/{parent}/task/{task}"):
                        continue  # the thread ended
                    raise  # a kernel without CONFIG_PROC_CHILDREN
                except OSError:
                    continue
                found += children
                todo += children
    except FileNotFoundError:
        try:
            return psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return []
    processes = []
    for child in found:
        try:
            processes.append(psutil.Process(child))
        except psutil.Error:
            continue
    return processes


def own_group() -> list[psutil.Process]:
    """In an instance: the other members of its process group (started by it, possibly no descendants any more)."""
    try:
        me = psutil.Process()
        born = me.create_time()
    except psutil.Error:
        return []
    return [p for p in younger_processes(born, exclude={me.pid}) if _pgid(p.pid) == me.pid]


def younger_processes(born_after: float, exclude: set[int] = frozenset()) -> list[psutil.Process]:
    """Processes started at ``born_after`` or later (with a margin of the clock's resolution), not in ``exclude``:
    the only ones that can have been started by a process that started then."""
    found = []
    for process in psutil.process_iter(["create_time"]):
        created = process.info.get("create_time")
        if process.pid not in exclude and created is not None and created >= born_after - CREATE_TIME_MARGIN:
            found.append(process)
    return found


def socket_inodes(pid: int) -> set[str]:
    """The sockets process ``pid`` holds (``socket:[inode]`` links of its file descriptors)."""
    found = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(fd.path)
            except OSError:
                continue
            if link.startswith("socket:["):
                found.add(link)
    except OSError:  # ended, or no /proc
        pass
    return found


def _running(pid: int) -> bool:
    """Process ``pid`` exists and is no zombie (a dead process its parent has not reaped yet)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def port_holders(ports: Sequence[int], born_before: float, exclude: set[int] = frozenset(),
                 server: int | None = None) -> list[psutil.Process]:
    """Processes started before ``born_before`` that listen on one of ``ports`` (TCP), except ``exclude``, this
    process and instances of ours (children of a fork server or of the ``server`` process, default: this one): a
    child that kept an ended instance's socket."""
    server = os.getpid() if server is None else server
    if not ports:
        return []
    pids = listening_pids(ports)
    holders = []
    for pid in pids - set(exclude) - {os.getpid()}:
        try:
            process = psutil.Process(pid)
            if process.create_time() > born_before or _is_instance(process, server):
                continue
        except psutil.Error:
            continue
        holders.append(process)
    return holders


def listening_pids(ports: Sequence[int]) -> set[int]:
    """Every process with a TCP socket listening on one of ``ports``, also when several share one socket (a forked
    child keeps its parent's): psutil's connection list names only one process per socket."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                lines = file.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:  # sl local_address rem_address st ... inode (LISTEN is st 0A)
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) in ports:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return set()
    pids = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                try:
                    if os.readlink(fd.path) in inodes:
                        pids.add(int(entry.name))
                        break
                except OSError:
                    continue
        except OSError:  # ended meanwhile, or not ours to look into
            continue
    return pids


def _is_instance(process: psutil.Process, server: int) -> bool:
    """A child of the ``server`` process (its fork server, or an instance with the ``fork`` start method), or a
    child of its fork server (an instance). By parentage, not by command line: a fork of an instance has the fork
    server's command line too."""
    try:
        parent = process.parent()
        if parent is None:
            return False
        if parent.pid == server:
            return True
        return parent.ppid() == server and _FORK_SERVER_MAIN in " ".join(parent.cmdline())
    except psutil.Error:
        return False


def end_processes(processes: Sequence[psutil.Process], why: str) -> list[int]:
    """SIGTERM, then (after :data:`LEFTOVER_GRACE`) SIGKILL ``processes``; returns the pids that were running.

    psutil checks each process's identity (pid and start time) before signalling it: a pid reused meanwhile is
    never hit. Shared daemons (:data:`SHARED_DAEMONS`) are left alone.
    """
    alive = []
    for process in _unique(processes):
        try:
            if process.name() in SHARED_DAEMONS or process.status() == psutil.STATUS_ZOMBIE:
                continue
            process.terminate()
        except psutil.Error:
            continue
        alive.append(process)
    if not alive:
        return []
    log.warning("%s: ending %d process(es) left behind: %s", why, len(alive), sorted(p.pid for p in alive))
    _, still = psutil.wait_procs(alive, timeout=LEFTOVER_GRACE)
    for process in still:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=LEFTOVER_GRACE)
    return [p.pid for p in alive]


def _unique(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    seen: dict[int, psutil.Process] = {}
    for process in processes:
        seen.setdefault(process.pid, process)
    return list(seen.values())


def _restart_fork_server() -> None:
    """A new fork server for new instances (after the old one died), now rather than at the next start."""
    from multiprocessing import forkserver

    try:
        forkserver.ensure_running()
    except Exception:  # noqa: BLE001 - the next start tries again
        log.exception("could not restart the fork server")


class InstanceProcess:
    """Parent-side handle of one instance process.

    ``ports``: the TCP ports the instance listens on; a process of the instance that still holds one after the
    instance ended is killed with it.
    """

    def __init__(self, instance_id: str, target: Callable[..., Any], args: tuple = (),
                 preload: Sequence[str] = (), ports: Sequence[int] = ()) -> None:
        self.instance_id = instance_id
        self._ctx = process_context(preload)
        self.control = InstanceControl(self._ctx)
        self.control.ports = tuple(ports)
        self._process = self._ctx.Process(target=_instance_main, args=(target, self.control, *args),
                                          name=f"instance-{instance_id}", daemon=True)
        self._ps: psutil.Process | None = None
        self._pidfd: int | None = None  # tracks the process itself, whatever happens to the fork server
        self._orphaned = False  # the fork server died while the instance ran
        self._signalled: int | None = None  # the signal we ended it with, if we had to
        self.usage: ProcessUsage | None = None  # cpu / memory of the process, cached (see ProcessUsage)
        self._ended = False  # known to have ended: no status lock, no select any more
        self._sentinel: int | None = None  # readable once the process ended or its fork server died (set by start)
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.reported_exit_reason: str | None = None  # what the instance said just before it ended
        self._stop_note: str | None = None  # how the parent ended it, when it had to (terminate / kill)
        self._stop_requested = False  # the parent asked a running instance to stop
        self._errors_lock = threading.Lock()
        self.created = time.time()
        # Taken when the stop is asked for (by stop(), or by whoever calls control.request_stop() first), while the
        # instance still runs and holds its sockets: what may outlive it.
        self._seen: list[psutil.Process] = []
        self._sockets: set[str] = set()
        self.control.before_stop = self._before_stop

    def _before_stop(self) -> None:
        if self._process.pid is not None and self._ps is not None and self._ps.is_running():
            self._seen = self._descendants()
            self._sockets = socket_inodes(self._process.pid)

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
            self._pidfd = os.pidfd_open(self._process.pid)
        except (OSError, AttributeError):  # already ended (the status pipe tells), or no pidfd on this system
            self._pidfd = None
        try:
            self._ps = psutil.Process(self._process.pid)
            self._ps.cpu_percent(None)
        except psutil.Error:
            self._ps = None
        self._sentinel = self._process.sentinel
        self.usage = ProcessUsage(self._process.pid)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_alive(self) -> bool:
        """True while the process runs. Cheap for readers: while the process's sentinel is not readable it runs,
        known without the status lock (which process starts hold); only a process that ended takes the lock once,
        to read its exit status, and after that its exit code is known without any call."""
        if self._ended:
            return False
        if self._sentinel is not None:
            try:
                if not select.select((self._sentinel,), (), (), 0)[0]:
                    return True
            except (OSError, ValueError):  # closed: ended and joined
                pass
        with _STATUS_LOCK:
            if self._process.is_alive():
                return True
            if (self._orphaned or self._process.exitcode == LOST_STATUS) and self._orphan_alive():
                return True
            # multiprocessing has read the status from the sentinel now (it may not be readable again): remember
            self._ended = True
        return False

    @property
    def exitcode(self) -> int | None:
        if self.is_alive():
            return None
        with _STATUS_LOCK:
            code = self._process.exitcode
            if code is None or not (self._orphaned or code == LOST_STATUS):
                return code
            if self._orphan_alive():
                return None
        recorded = self.control.recorded_exit_code()
        if recorded is not None and self._signalled is None:
            return recorded
        return -self._signalled if self._signalled is not None else code

    def _orphan_alive(self) -> bool:
        """Multiprocessing says ended with 255: the real end, or the fork server's status pipe closed (it died)
        while the instance runs on? The pidfd tells (called under the status lock)."""
        if self._pidfd is None:
            try:
                alive = self._ps is not None and self._ps.is_running() and self._ps.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                alive = False
        else:
            alive = not multiprocessing.connection.wait([self._pidfd], 0)
        if alive and not self._orphaned:
            self._orphaned = True
            log.warning("instance %s (pid %s): its fork server died; the instance runs on, new instances get a "
                        "new fork server", self.instance_id, self.pid)
            threading.Thread(target=_restart_fork_server, name="fork-server-restart", daemon=True).start()
        return alive

    def _join(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` for the end (outside the lock, so readers are not blocked); True when ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            multiprocessing.connection.wait([self._process.sentinel], timeout)
        except ValueError:  # never started
            return True
        if self.is_alive() and self._orphaned and self._pidfd is not None:  # the status pipe closed early
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            multiprocessing.connection.wait([self._pidfd], left)
        return not self.is_alive()

    def _signal(self, signum: int) -> None:
        """Signal the instance itself (by pidfd where we have one: never another process that got its pid)."""
        self._signalled = signum
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signum)
            elif self._process.pid is not None:
                os.kill(self._process.pid, signum)
        except (ProcessLookupError, OSError):  # already gone
            pass

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
        """Ask the instance to stop, then terminate and kill it if it does not; never leaves a process behind:
        what the instance started and left running (its process group, the descendants seen before, any process
        that kept one of its sockets) is ended too."""
        if not self._stop_requested and self.is_alive():  # not for a process that ended by itself (the reaper)
            self._stop_requested = True
        self.control.request_stop()  # takes the snapshot (_before_stop) if this is the first request
        if not self._join(timeout):
            log.warning("instance %s did not stop in %.1f s; terminating", self.instance_id, timeout)
            self._stop_note = f"did not stop within {timeout:g} s of the stop request"
            self._signal(signal.SIGTERM)
            if not self._join(2.0):
                self._signal(signal.SIGKILL)
                self._join(10.0)  # SIGKILL cannot be ignored; only a loaded machine delays the reaping
        self._end_leftovers()
        self._collect_errors(always=True)
        self.control.close()
        if self._pidfd is not None and not self.is_alive():
            os.close(self._pidfd)
            self._pidfd = None

    def _descendants(self) -> list[psutil.Process]:
        if self._ps is None or not self._ps.is_running():
            return []
        return descendants(self._ps.pid)

    def _end_leftovers(self) -> None:
        """After the instance ended: end the descendants seen while it ran, the members of its process group and
        the processes holding one of its sockets (fork children keep them). Without a snapshot (the instance had
        ended before anyone asked it to stop) the instance ended its descendants itself; processes still listening
        on its ports are looked for in a thread (a slower look, not in the caller's way)."""
        pid = self._process.pid
        if pid is None or self.is_alive():
            return
        server = os.getpid()
        sockets = self._sockets
        leftovers = [p for p in self._seen if p.is_running()]
        born = self._ps.create_time() if self._ps is not None else self.created
        for process in younger_processes(born, exclude={server, pid}):
            kept_socket = bool(sockets) and not socket_inodes(process.pid).isdisjoint(sockets)
            if _pgid(process.pid) == pid or (kept_socket and not _is_instance(process, server)):
                leftovers.append(process)
        if leftovers:
            end_processes(leftovers, f"instance {self.instance_id}")
        if not sockets and self.control.ports:
            stopped = self.control.stop_requested_at or time.time()
            threading.Thread(target=lambda: end_processes(port_holders(self.control.ports, stopped),
                                                          f"instance {self.instance_id}"),
                             name=f"leftovers-{self.instance_id}", daemon=True).start()

    def wait(self, timeout: float | None = None) -> None:
        self._join(timeout)

    def _collect_errors(self, always: bool = False) -> None:
        # One drain at a time: a concurrent drain (REST request vs reaper) could otherwise see the queue empty
        # while the other holds its read lock, and record no error for an instance that reported one.
        with self._errors_lock:
            for when, message, *kind in self.control.drain_errors(always):
                if kind == [EXIT_REASON]:
                    self.reported_exit_reason = message
                else:
                    self.last_error, self.last_error_time = message, when
        if (self._orphaned and self.last_error is None and not self.is_alive()
                and self.control.recorded_exit_code() is None and self._signalled is None):
            self.last_error = ("ended without an exit status: the fork server that started it had died, and it "
                               "ended by a signal")
            self.last_error_time = time.time()

    def exit_reason(self) -> str | None:
        """Why the instance ended (None while it runs): the reason it reported ("no clients for 10 s", "out of
        memory limit: ..."), else what its exit code says ("killed by signal 9 (SIGKILL)", "exit code 3"), and
        whether the server had to end it."""
        code = self.exitcode
        if code is None:
            return None
        self._collect_errors()
        if self.reported_exit_reason:
            return self.reported_exit_reason
        if self._stop_requested and code == 0:
            return "stopped on request"
        reason = describe_exit(code)
        return f"{reason}: {self._stop_note}" if self._stop_note else reason

    def info(self) -> dict[str, Any]:
        """Statistics and health, read without asking the child anything."""
        self._collect_errors()
        stats: dict[str, Any] = self.control.stats.snapshot()
        running = self.is_alive()
        if running and self.usage is not None:  # cpu / RSS at most 1 s old, PSS at most 5 s (ProcessUsage)
            stats.update(self.usage.read())
        else:
            stats.update(cpu_percent=None, memory_rss=None, memory_pss=None)
        return {
            "instance_id": self.instance_id,
            "pid": self.pid,
            "is_running": running,
            "exit_code": None if running else self.exitcode,
            "exit_reason": None if running else self.exit_reason(),
            "created": self.created,
            "statistics": stats,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
        }

    def cpu_seconds_and_rss(self) -> tuple[float, int] | None:
        """(CPU seconds, user + system, RSS bytes) of the running instance, or None (ended, not readable)."""
        if self._ps is None or not self.is_alive():
            return None
        try:
            with self._ps.oneshot():
                times = self._ps.cpu_times()
                return times.user + times.system, self._ps.memory_info().rss
        except psutil.Error:
            return None


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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]


TRIM_INTERVAL_S = 10.0  # a MemoryTrimmer's least time between trims


class MemoryTrimmer:
    """Give the heap that a burst left free back to the system, at most every ``interval`` seconds.

    :func:`configure_memory` keeps freed frame buffers in the heap (fast reuse) and so never returns them: a burst
    (a stalled client's send queue filling up with fresh multi-MB frames) would leave its peak as the process's RSS
    for good. :meth:`check` (call it from a loop's periodic work, not per frame) asks glibc how much of the heap is
    free (``mallinfo2``, itself 0.1-1 ms) once ``interval`` seconds have passed since the last look, and calls
    ``malloc_trim`` when that is more than ``slack`` bytes.

    Why every 10 s and not every second (as first): a trim also gives back the working set, the free heap a stream
    keeps reusing (the frames in flight: 5.5 MB at 1280x1024, 22 MB at 2560x2160), whose pages the next frame then
    faults in again: 1-3 ms on one frame per trim. Once a second that was one frame in a hundred at 100 Hz, a
    stream's p99; once in 10 s it is one in a thousand. A burst is back with the system within ``interval``. (A
    rule that trimmed only beyond the working set cannot be built on ``mallinfo2``: glibc counts pages it gave
    back as free all the same, so the free level says nothing about what is still resident.)
    """

    def __init__(self, interval: float = TRIM_INTERVAL_S, slack: int = 4 * 2**20) -> None:
        self.interval = interval
        self.slack = slack
        self.trims = 0
        self._next = time.monotonic() + interval
        try:
            libc = ctypes.CDLL("libc.so.6")
            self._trim = libc.malloc_trim
            self._info = libc.mallinfo2
            self._info.restype = _MallInfo2
        except (OSError, AttributeError):  # not glibc (or older than 2.33): nothing to trim
            self._trim = self._info = None

    def free_bytes(self) -> int:
        """Bytes the heap holds free (0 without glibc)."""
        return int(self._info().fordblks) if self._info is not None else 0

    def check(self, now: float, force: bool = False) -> bool:
        """Trim when due (``now``: ``time.monotonic()``; ``force``: due now, e.g. before judging a memory limit) and
        more than ``slack`` bytes are free; True when it trimmed."""
        if self._trim is None or (now < self._next and not force):
            return False
        self._next = now + self.interval
        free = self.free_bytes()
        if free <= self.slack:
            return False
        self._trim(0)
        self.trims += 1
        log.debug("malloc_trim: %.1f MB of the heap were free", free / 2**20)
        return True
