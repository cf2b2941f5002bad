"""A one-way queue between a server and one instance process, over a pipe, with no named semaphores.

Why not ``multiprocessing.Queue``: each one creates three POSIX named semaphores (``/dev/shm/sem.mp-*``) whose names
must stay until the child has opened them (fork server and spawn start methods). Python's resource tracker removes
them after a SIGKILL of the instance, but a SIGKILL of the whole process group (systemd's last resort when a unit
will not stop) takes the tracker too, and the files stay for good (6 per instance). Here one process puts and the
other gets, so each side needs only a lock for its own threads; a pipe and an in-process lock leave nothing behind.

As with ``multiprocessing.Queue``, :meth:`PipeQueue.put_nowait` never blocks: the caller pickles (and so sees what
cannot be sent), a feeder thread writes (a full pipe, 64 KiB unread, stalls that thread, not the caller), and a
process that ends first lets the feeder write what it queued, for :data:`FLUSH_AT_EXIT_S` at most. Once each side
dropped the end it does not use (:meth:`PipeQueue.keep`), the death of the other side reads as end-of-file, or
fails a write, instead of leaving a reader waiting for ever.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import weakref
from multiprocessing import util
from multiprocessing.reduction import ForkingPickler
from typing import Any, Literal

log = logging.getLogger(__name__)

FLUSH_AT_EXIT_S = 2.0  # a process that ends waits this long at most for its feeder to write what it queued


class _Feed:
    """The putting side's buffer and feeder thread (apart from the queue, so that collecting the queue only tells the
    feeder to finish, as ``multiprocessing.Queue`` does, and never waits for it)."""

    def __init__(self, max_pending: int | None) -> None:
        self.pending: collections.deque[Any] = collections.deque(maxlen=max_pending)  # pickles
        self.ready = threading.Condition(threading.Lock())
        self.closed = False
        self.thread: threading.Thread | None = None
        self.overflowed = 0  # objects dropped because max_pending were waiting
        self.broken = False  # the other side is gone: objects put are dropped (nobody would read them)

    def put(self, data: Any, writer: Any, owner: PipeQueue) -> None:
        with self.ready:
            if self.closed:
                raise ValueError("queue is closed")
            if self.broken:
                return
            if len(self.pending) == self.pending.maxlen:
                self.overflowed += 1  # the oldest goes (deque maxlen)
            self.pending.append(data)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, args=(writer,), name="pipe-queue-feeder", daemon=True)
                self.thread.start()
                util.Finalize(owner, self.finish, exitpriority=10)  # collected or process exit: finish, no wait
                util.Finalize(self.thread, _join, args=(weakref.ref(self.thread),), exitpriority=-5)  # exit: wait
            self.ready.notify()

    def _run(self, writer: Any) -> None:
        """Feeder thread: write the pending objects in order until finished and empty (or the pipe broke)."""
        while True:
            with self.ready:
                while not self.pending and not self.closed:
                    self.ready.wait()
                if not self.pending:  # finished and everything written
                    break
                data = self.pending.popleft()
            try:
                writer.send_bytes(data)
            except (OSError, ValueError):  # the other side is gone (or this end closed): nothing more can go
                with self.ready:
                    self.broken = True
                    self.pending.clear()
                break
        _close_quietly(writer)

    def finish(self, drop: bool = False) -> None:
        """No more objects; the feeder writes the pending ones (``drop``: drops them) and ends."""
        with self.ready:
            self.closed = True
            if drop:
                self.pending.clear()
            self.ready.notify()


def _join(thread_ref: weakref.ref[threading.Thread]) -> None:
    thread = thread_ref()
    if thread is not None and thread.is_alive():
        thread.join(FLUSH_AT_EXIT_S)


def _close_quietly(end: Any) -> None:
    if end is not None:
        try:
            end.close()
        except OSError:
            pass


class PipeQueue:
    """Objects from the process that puts to the process that gets (pickled), in order. ``max_pending``: at most
    this many wait to be written (a reader that does not read): the oldest is dropped (:attr:`overflowed`)."""

    def __init__(self, ctx: Any, max_pending: int | None = None) -> None:
        self._reader, self._writer = ctx.Pipe(duplex=False)
        self._max_pending = max_pending
        self._reset_local()
        util.register_after_fork(self, PipeQueue._reset_local)  # fork start method: no inherited lock or feeder

    def _reset_local(self) -> None:
        self._read_lock = threading.Lock()
        self._feed = _Feed(self._max_pending)

    def __getstate__(self) -> dict[str, Any]:
        return {"_reader": self._reader, "_writer": self._writer, "_max_pending": self._max_pending}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_local()

    def keep(self, role: Literal["put", "get"]) -> None:
        """Close this process's end of the other role, once the other process has its own (after the start)."""
        if role == "put":
            with self._read_lock:
                self._reader, reader = None, self._reader
            _close_quietly(reader)
        else:
            self._writer, writer = None, self._writer
            _close_quietly(writer)

    @property
    def overflowed(self) -> int:
        return self._feed.overflowed

    # -- putting side ------------------------------------------------------------------------------------------

    def put_nowait(self, obj: Any) -> None:
        """Queue ``obj`` for the other process and return (the feeder thread writes it). Raises what pickling
        raises, and ValueError once closed or flushed."""
        if self._writer is None:
            raise ValueError("this process does not put to this queue")
        self._feed.put(ForkingPickler.dumps(obj), self._writer, self)

    def flush(self, timeout: float | None = None) -> None:
        """Stop taking objects and wait (up to ``timeout``) until the feeder wrote what was queued."""
        self._feed.finish()
        thread = self._feed.thread
        if thread is not None:
            thread.join(timeout)

    # -- getting side ------------------------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Any:
        """The next object, waiting up to ``timeout`` (None: for ever); raises ``queue.Empty`` when none came,
        ``EOFError`` when the putting side is gone, ``OSError`` / ``ValueError`` once closed here."""
        with self._read_lock:
            if self._reader is None:
                raise ValueError("queue is closed")
            if not self._reader.poll(timeout):
                raise queue.Empty
            return self._reader.recv()

    def get_nowait(self) -> Any:
        return self.get(0)

    def close(self) -> None:
        """Release this process's ends (objects not written yet are dropped)."""
        self._feed.finish(drop=True)
        if self._feed.thread is None:  # else the feeder closes the writer as it ends
            self._writer, writer = None, self._writer
            _close_quietly(writer)
        with self._read_lock:
            self._reader, reader = None, self._reader
        _close_quietly(reader)
