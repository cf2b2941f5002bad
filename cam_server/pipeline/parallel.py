"""Parallel processing with ordered output (``processing_threads``) and buffered sending (``buffer_size``).

Both are plain thread tools: numpy/scipy release the GIL in the heavy parts of the processing, so a thread
pool gives real parallelism without pickling images to other processes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class OrderedResult:
    """The outcome of one submitted job: ``value`` or ``error`` (the exception the function raised)."""

    seq: Any
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self) -> Any:
        """The value, or raise the job's exception."""
        if self.error is not None:
            raise self.error
        return self.value


class OrderedParallelProcessor:
    """Run ``function(*args)`` on ``n_workers`` threads; hand back results strictly in submission order.

    ``submit`` blocks while ``max_in_flight`` jobs (default ``2 * n_workers``) are submitted but not yet
    taken by the consumer, which bounds memory (each job holds an image). Typical use is two threads: the
    receiving loop calls ``submit``; a sending thread iterates ``results()``. A single-threaded loop must
    take ready results (``poll()``) before each ``submit`` and ``get()`` one when :attr:`full`.

    ``seq`` is an opaque tag carried to the result (e.g. the pulse id); order is the submission order.
    An exception in ``function`` becomes that job's :class:`OrderedResult` ``error``, in order.
    """

    def __init__(self, n_workers: int, function: Callable[..., Any], max_in_flight: int | None = None,
                 name: str = "processing"):
        if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 1:
            raise ValueError(f"processing_threads must be a positive integer, got {n_workers!r}")
        self.n_workers = n_workers
        self.function = function
        self.max_in_flight = max_in_flight if max_in_flight is not None else 2 * n_workers
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: dict[int, OrderedResult] = {}
        self._cond = threading.Condition()
        self._next_submit = 0
        self._next_deliver = 0
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(n_workers)]
        for worker in self._workers:
            worker.start()

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet taken by the consumer."""
        return self._next_submit - self._next_deliver

    @property
    def full(self) -> bool:
        return self.in_flight >= self.max_in_flight

    def submit(self, seq: Any, args: tuple = (), timeout: float | None = None) -> bool:
        """Queue one job; block while the in-flight window is full. False if ``timeout`` expired first."""
        with self._cond:
            if self._closed:
                raise RuntimeError("OrderedParallelProcessor is closed")
            if not self._cond.wait_for(lambda: self.in_flight < self.max_in_flight or self._closed, timeout):
                return False
            if self._closed:
                raise RuntimeError("OrderedParallelProcessor is closed")
            index = self._next_submit
            self._next_submit += 1
        self._jobs.put((index, seq, args))
        return True

    def get(self, timeout: float | None = None) -> OrderedResult | None:
        """The next result in order; None on timeout, or when closed and nothing is pending."""
        with self._cond:
            ready = self._cond.wait_for(
                lambda: self._next_deliver in self._done or (self._closed and self.in_flight == 0), timeout)
            if not ready or self._next_deliver not in self._done:
                return None
            result = self._done.pop(self._next_deliver)
            self._next_deliver += 1
            self._cond.notify_all()
            return result

    def poll(self) -> list[OrderedResult]:
        """All results that are ready now, in order (never blocks)."""
        out: list[OrderedResult] = []
        with self._cond:
            while self._next_deliver in self._done:
                out.append(self._done.pop(self._next_deliver))
                self._next_deliver += 1
            if out:
                self._cond.notify_all()
        return out

    def results(self, timeout: float | None = None) -> Iterator[OrderedResult]:
        """Yield results in order until closed and drained; with ``timeout``, also stop after that long idle."""
        while True:
            result = self.get(timeout)
            if result is None:
                return
            yield result

    def close(self, wait: bool = True, timeout: float | None = 10.0) -> None:
        """Stop accepting jobs; workers finish the queued ones (their results stay readable) and exit."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for _ in self._workers:
            self._jobs.put(_STOP)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for worker in self._workers:
                worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> OrderedParallelProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            index, seq, args = job
            try:
                result = OrderedResult(seq, self.function(*args))
            except Exception as ex:  # delivered to the consumer, in order
                result = OrderedResult(seq, error=ex)
            with self._cond:
                self._done[index] = result
                self._cond.notify_all()


class BufferedSender:
    """Send from a bounded buffer on a separate thread (config key ``buffer_size``).

    ``put(item)`` never blocks the processing loop (unless ``overflow="block"``); a thread calls
    ``send(item)`` for each buffered item in order. With a blocking PUSH sender and ``queue_size`` 1 the
    thread stalls in ``send`` until the first client connects, so the frames produced meanwhile wait here.

    When the buffer holds ``buffer_size`` items, ``overflow`` decides:
      - ``"drop_new"`` (default): the new item is dropped — the oldest frames (those produced before the
        client connected) are the ones kept, which is what ``buffer_size`` is for;
      - ``"drop_old"``: the oldest buffered item is dropped to make room (keeps the newest frames);
      - ``"block"``: ``put`` waits for room (nothing is lost; the processing loop is throttled).
    Counters: ``dropped``, ``sent``, ``errors`` (exceptions raised by ``send``; logged, the thread goes on).
    """

    def __init__(self, send: Callable[[Any], Any], buffer_size: int, overflow: str = "drop_new",
                 on_error: Callable[[BaseException], Any] | None = None, name: str = "buffered-sender"):
        if not isinstance(buffer_size, int) or isinstance(buffer_size, bool) or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive integer, got {buffer_size!r}")
        if overflow not in ("drop_new", "drop_old", "block"):
            raise ValueError(f"overflow must be 'drop_new', 'drop_old' or 'block', got {overflow!r}")
        self._send = send
        self.buffer_size = buffer_size
        self.overflow = overflow
        self._on_error = on_error
        self._queue: queue.Queue = queue.Queue(maxsize=buffer_size)
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self.dropped = 0
        self.sent = 0
        self.errors = 0
        self._put_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def put(self, item: Any, timeout: float | None = None) -> bool:
        """Buffer one item for sending; False if it (or, for ``drop_old``, an older one) was dropped."""
        if self._closing.is_set():
            raise RuntimeError("BufferedSender is closed")
        if self.overflow == "block":
            try:
                self._queue.put(item, timeout=timeout)
                return True
            except queue.Full:
                self.dropped += 1
                return False
        with self._put_lock:
            try:
                self._queue.put_nowait(item)
                return True
            except queue.Full:
                if self.overflow == "drop_new":
                    self.dropped += 1
                    return False
            try:  # drop_old: make room by discarding the oldest buffered item
                self._queue.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1
            return False

    def close(self, drain: bool = True, timeout: float | None = 10.0) -> None:
        """Stop the thread. ``drain=True`` sends what is buffered first (up to ``timeout``); else discards it."""
        self._closing.set()
        if not drain:
            self._abandon.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("BufferedSender: %d items not sent within %s s", self.pending, timeout)
            self._abandon.set()

    def __enter__(self) -> BufferedSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._abandon.is_set():
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            try:
                self._send(item)
                self.sent += 1
            except Exception as ex:
                self.errors += 1
                log.warning("BufferedSender: send failed: %s", ex)
                if self._on_error is not None:
                    try:
                        self._on_error(ex)
                    except Exception:
                        log.exception("BufferedSender: error callback failed")
