"""The instance's memory limit: a watchdog thread ends the instance when its RSS passes the limit.

The limit is the config's ``memory_limit`` (MiB; 0: none), else the pipeline server's ``--instance_memory_limit``
(:attr:`InstanceSpec.memory_limit <cam_server.pipeline.instance_spec.InstanceSpec.memory_limit>`, bytes).

Why a watchdog and not ``RLIMIT_AS``: numpy, OpenBLAS, numba and ZeroMQ reserve much more address space than they
use, so an address-space limit fails allocations (a ``MemoryError`` anywhere, or a crash in C code) long before the
memory is used. RSS is what the machine runs out of. It is read once a second (one read of ``/proc``), never per
frame: a user function that keeps every frame (say 30 MB/s) passes the limit by about a second's growth at most.
Free heap beyond a few MB is given back every 10 s, and before an RSS over the limit is judged
(:class:`~cam_server.common.process.MemoryTrimmer`).

Ending: the reason is reported (``out of memory limit: RSS 1.21 GiB > limit 1.00 GiB``), the main thread is
interrupted (:class:`MemoryLimitExceeded` raised between two bytecodes, so the loop's cleanup runs: sockets closed, a
FILE output's file complete) and the process exits with :data:`EXIT_MEMORY`; should it still run
:data:`GRACE_S` later (stuck in C code), it exits at once (``os._exit``) with the same code.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
import time
from typing import Any

import psutil

from cam_server.common.process import InstanceControl, MemoryTrimmer
from cam_server.pipeline.instance.outcomes import EXIT_MEMORY
from cam_server.pipeline.instance_spec import InstanceSpec

log = logging.getLogger(__name__)

MIB = 1024 * 1024
CHECK_INTERVAL_S = 1.0
GRACE_S = 3.0
_SIGNAL = signal.SIGUSR2  # only simulated (_thread.interrupt_main): how the watchdog reaches the main thread


class MemoryLimitExceeded(BaseException):  # noqa: N818 - BaseException: a user's `except Exception` must not keep it
    """Raised in the instance's main thread when the watchdog found the RSS over the limit."""


def memory_limit(spec: InstanceSpec) -> int:
    """The limit in bytes (0: none): the config's ``memory_limit`` (MiB) if given, else the server's."""
    mib = spec.config.memory_limit
    if mib is None:
        return max(0, int(spec.memory_limit))
    return int(mib * MIB)


def format_bytes(n: float) -> str:
    """``1.21 GiB``, ``512.0 MiB``: sizes in the messages of the memory limit."""
    if n >= 1024 * MIB:
        return f"{n / (1024 * MIB):.2f} GiB"
    return f"{n / MIB:.1f} MiB"


class MemoryWatchdog:
    """Ends the instance when its RSS passes ``limit`` bytes (see the module docstring). Start it from the main
    thread (it installs the signal handler that raises :class:`MemoryLimitExceeded` there)."""

    def __init__(self, control: InstanceControl, limit: int) -> None:
        self.control = control
        self.limit = limit
        self.exceeded: str | None = None  # the reason, once the limit was passed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watchdog", daemon=True)

    def start(self) -> MemoryWatchdog:
        try:
            signal.signal(_SIGNAL, self._raise_in_main)
        except ValueError:  # not the main thread (run_instance called from a thread): the hard exit alone remains
            log.warning("memory limit: not in the main thread, an instance past its limit exits without cleanup")
        self.control.stats.set("memory_limit", self.limit)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _raise_in_main(self, signum: int, frame: Any) -> None:
        if self.exceeded is not None:  # not a stray SIGUSR2 from outside
            raise MemoryLimitExceeded(self.exceeded)

    def _run(self) -> None:
        process = psutil.Process()
        # Heap that a burst left free (a slow client's queue, a backlog) goes back to the system (every 10 s, see
        # MemoryTrimmer), and at once before an RSS over the limit is judged: the limit is on memory in use.
        trimmer = MemoryTrimmer()
        while not self._stop.wait(CHECK_INTERVAL_S):
            trimmer.check(time.monotonic())
            try:
                rss = process.memory_info().rss
                if rss > self.limit and trimmer.check(time.monotonic(), force=True):
                    rss = process.memory_info().rss
            except psutil.Error:  # cannot happen for ourselves; never let the watchdog die of it
                continue
            if rss > self.limit:
                self._end(rss)
                return

    def _end(self, rss: int) -> None:
        self.exceeded = f"out of memory limit: RSS {format_bytes(rss)} > limit {format_bytes(self.limit)}"
        log.error("%s; ending the instance", self.exceeded)
        self.control.report_error(self.exceeded)
        _thread.interrupt_main(_SIGNAL)
        if self._stop.wait(GRACE_S):  # the main thread ended the instance in time
            return
        log.error("instance did not end within %.0f s of passing its memory limit; exiting now", GRACE_S)
        self.control.flush_errors()
        os._exit(EXIT_MEMORY)
