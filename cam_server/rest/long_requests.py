"""Long requests run apart from the quick ones: bounded, de-duplicated, cancelled when their clients are gone.

Why: FastAPI runs plain ``def`` handlers in one thread pool (anyio's, 40 threads). Requests that wait for a frame
of a silent camera, a background of 10000 images or a message of a paused pipeline held those threads for as long
as they waited, also after their clients had given up, and ``GET info`` then waited minutes for a thread.

How: a route with long work is an ``async`` handler that calls :meth:`LongRequests.run`.

* The work runs in a thread of its own (at most ``limit`` at once, ``--max_long_requests``), never in the thread
  pool that answers the quick routes. Daemon threads: a job that cannot be interrupted (an online check, a camera
  start) never delays the server's exit.
* Work is keyed (``("frame", camera)``, ``("background", camera, n_images)``, ...): a request whose key runs
  already joins that job and gets its result; 45 clients waiting for the same camera cost one thread.
* The handler awaits the job and every :data:`POLL_S` asks ``request.is_disconnected()``. A request leaves the job
  when its client is gone or its own ``timeout`` passed (then it answers ``timeout_error``); when the last one
  leaves, the job is cancelled: its ``keep_waiting()`` turns False and the work stops at its next check (the
  stream waits check every 0.2 s) with :class:`~cam_server.common.limits.Cancelled`.
* A new job while ``limit`` jobs run (cancelled ones count until they have stopped) is refused at once:
  429 :class:`~cam_server.common.limits.TooBusy` with ``Retry-After``. Joining a running job is never refused.

The bookkeeping is guarded by a lock (one app may be served from more than one event loop, as tests do), and a
job's end is noticed in its worker thread, so the count of running jobs is right even when nobody waits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import Request

from cam_server.common.errors import SourceUnavailable
from cam_server.common.limits import DEFAULT_MAX_LONG, RETRY_AFTER_S, Cancelled, TooBusy

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_S = 0.2  # how often a waiting request checks whether its client is still there
JOB_WAIT_CAP_S = 120.0  # the longest a job waits for one frame or message, however long its clients wait
QUICK_THREADS = 40  # anyio's default thread pool size: kept for the quick routes


def set_thread_pool_size(blocking: int) -> None:
    """Size the thread pool of the plain ``def`` handlers (anyio's, of the running event loop: call it from the
    app's lifespan): :data:`QUICK_THREADS` for the quick routes plus ``blocking`` for the bounded blocking ones
    (the managers' ``blocking`` gate), so that blocking requests at their bound leave the quick ones all of theirs.
    """
    anyio.to_thread.current_default_thread_limiter().total_tokens = QUICK_THREADS + blocking


class LongJob:
    """One piece of long work and the requests waiting for it; the work gets it and checks :meth:`keep_waiting`."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.waiters = 0
        self.future: Future[Any] = Future()
        self._cancelled = threading.Event()

    def keep_waiting(self) -> bool:
        """False once every request waiting for this job has gone (the work should stop)."""
        return not self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()


class LongRequests:
    """The long work of one server: at most ``limit`` jobs at once, keyed, each cancelled when nobody waits."""

    def __init__(self, limit: int = DEFAULT_MAX_LONG, name: str = "server") -> None:
        if limit < 1:
            raise ValueError(f"max long requests must be at least 1, not {limit}")
        self.limit = limit
        self._name = name
        self._lock = threading.Lock()
        self._joinable: dict[Hashable, LongJob] = {}  # running jobs that still have waiters
        self._running = 0  # jobs submitted and not yet ended (cancelled ones too, until they stop)
        self._clients = 0
        self._closed = False
        self.cancelled = 0
        self.refused = 0

    def info(self) -> dict[str, Any]:
        """For the server info: jobs ``running`` now (a cancelled one until it has stopped), ``clients`` waiting
        for them, the ``limit``, and since the start how many jobs were ``cancelled`` and requests ``refused``."""
        with self._lock:
            return {"running": self._running, "clients": self._clients, "limit": self.limit,
                    "cancelled": self.cancelled, "refused": self.refused}

    async def run(self, request: Request, key: Hashable, work: Callable[[LongJob], T], timeout: float | None = None,
                  timeout_error: Callable[[], Exception] | None = None) -> T:
        """``work(job)``'s result, run apart (or joined, when ``key`` runs already). After ``timeout`` seconds
        (None: as long as the work takes) this request raises ``timeout_error()`` and leaves the job; a client
        that disconnects leaves it too (:class:`Cancelled`, which nobody reads)."""
        job = self._enter(key, work)
        deadline = None if timeout is None else time.monotonic() + timeout
        result = asyncio.wrap_future(job.future)
        try:
            while True:
                step = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                if step <= 0:
                    raise timeout_error() if timeout_error else SourceUnavailable(f"No result within {timeout:g} s.")
                done, _ = await asyncio.wait((result,), timeout=step)
                if done:
                    return result.result()
                if await request.is_disconnected():
                    raise Cancelled(f"{request.method} {request.url.path}: the client has gone.")
        finally:
            self._leave(job)
            if not result.done():  # its exception (or result) is then read by nobody: not an asyncio warning
                result.add_done_callback(_ignore)

    def close(self) -> None:
        """Cancel every job and stop accepting new ones (server shutdown); does not wait for the work to stop."""
        with self._lock:
            self._closed = True
            jobs = list(self._joinable.values())
            self._joinable.clear()
        for job in jobs:
            job.cancel()

    # --- internals ------------------------------------------------------------------------------------------
    def _enter(self, key: Hashable, work: Callable[[LongJob], Any]) -> LongJob:
        start = False
        with self._lock:
            job = self._joinable.get(key)
            if job is None:
                if self._closed:
                    raise Cancelled("The server is shutting down.")
                if self._running >= self.limit:
                    self.refused += 1
                    raise TooBusy(f"Server busy: {self._running} long requests run already (at most {self.limit}; "
                                  f"waits for a frame, message, background or online check); try again in "
                                  f"{RETRY_AFTER_S} s.")
                job = LongJob(key)
                self._joinable[key] = job
                self._running += 1
                start = True
            job.waiters += 1
            self._clients += 1
        if start:
            threading.Thread(target=self._work, args=(job, work), name=f"{self._name}-long {key}",
                             daemon=True).start()
        return job

    def _work(self, job: LongJob, work: Callable[[LongJob], Any]) -> None:
        """In the job's thread: run the work, then the bookkeeping, then hand the outcome to the waiting requests."""
        try:
            outcome, failed = work(job), False
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the requests waiting for it
            outcome, failed = exc, True
        with self._lock:
            self._running -= 1
            if self._joinable.get(job.key) is job:
                del self._joinable[job.key]
        if failed:
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)

    def _leave(self, job: LongJob) -> None:
        with self._lock:
            job.waiters -= 1
            self._clients -= 1
            if job.waiters or job.future.done() or self._joinable.get(job.key) is not job:
                return
            del self._joinable[job.key]  # nobody waits: cancel, and a new request for the key starts afresh
            self.cancelled += 1
        log.info("long request %s cancelled: no client waits for it any more", job.key)
        job.cancel()


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
