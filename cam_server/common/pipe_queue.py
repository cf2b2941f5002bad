"""A one-way queue between a server and one instance process, over a pipe, with no named semaphores.

Why not ``multiprocessing.Queue``: each one creates three POSIX named semaphores (``/dev/shm/sem.mp-*``) whose names
must stay until the child has opened them (fork server and spawn start methods). Python's resource tracker removes
them after a SIGKILL of the instance, but a SIGKILL of the whole process group (systemd's last resort when a unit
will not stop) takes the tracker too, and the files stay for good (6 per instance). Here one process puts and the
other gets, so each side needs only a lock for its own threads; a pipe and an in-process lock leave nothing behind.

As with ``multiprocessing.Queue``, :meth:`PipeQueue.put_nowait` never blocks: a feeder thread pickles and writes
(a full pipe, 64 KiB unread, stalls that thread, not the caller), and :meth:`PipeQueue.flush` waits until it wrote
everything (before a hard exit).
"""

from __future__ import annotations

import collections
import queue
import threading
from multiprocessing import util
from typing import Any

FLUSH_AT_EXIT_S = 10.0  # a process that ends waits this long at most for its feeder to write what it queued


class _Feed:
    """What the putting side shares with its feeder thread (not the queue itself, so that the queue can be
    collected while the exit hook still knows the feed)."""

    def __init__(self) -> None:
        self.pending: collections.deque[Any] = collections.deque()
        self.ready = threading.Condition(threading.Lock())
        self.closed = False
        self.thread: threading.Thread | None = None

    def run(self, writer: Any) -> None:
        """Feeder thread: write the pending objects in order until closed and empty (or the pipe broke)."""
        while True:
            with self.ready:
                while not self.pending and not self.closed:
                    self.ready.wait()
                if not self.pending:  # closed and everything written
                    break
                obj = self.pending.popleft()
            try:
                writer.send(obj)
            except (OSError, ValueError):  # the other side is gone (or this end closed): nothing more can go
                with self.ready:
                    self.pending.clear()
                break
        PipeQueue.close_quietly(writer)

    def finish(self, timeout: float | None, drop: bool = False) -> None:
        """No more objects; wait (up to ``timeout``) until the feeder wrote the pending ones (``drop``: drop them)."""
        with self.ready:
            self.closed = True
            if drop:
                self.pending.clear()
            self.ready.notify()
            thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


class PipeQueue:
    """Objects from the process that puts to the process that gets (pickled). Unbounded; FIFO per putting thread."""

    def __init__(self, ctx: Any) -> None:
        self._reader, self._writer = ctx.Pipe(duplex=False)
        self._reset_local()
        util.register_after_fork(self, PipeQueue._reset_local)  # fork start method: no inherited lock or feeder

    def _reset_local(self) -> None:
        self._read_lock = threading.Lock()
        self._feed = _Feed()

    def __getstate__(self) -> dict[str, Any]:
        return {"_reader": self._reader, "_writer": self._writer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_local()

    # -- putting side ------------------------------------------------------------------------------------------

    def put_nowait(self, obj: Any) -> None:
        """Queue ``obj`` for the other process; returns at once (the feeder thread writes it)."""
        feed = self._feed
        with feed.ready:
            if feed.closed:
                raise ValueError("queue is closed")
            feed.pending.append(obj)
            if feed.thread is None:
                feed.thread = threading.Thread(target=feed.run, args=(self._writer,), name="pipe-queue-feeder",
                                               daemon=True)
                feed.thread.start()
                # Like multiprocessing.Queue: a process that ends (its exit hooks) first lets the feeder write.
                util.Finalize(self, feed.finish, args=(FLUSH_AT_EXIT_S,), exitpriority=10)
            feed.ready.notify()

    put = put_nowait

    def flush(self, timeout: float | None = None) -> None:
        """Stop taking objects and wait (up to ``timeout``) until the feeder wrote what was queued."""
        self._feed.finish(timeout)

    # -- getting side ------------------------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Any:
        """The next object, waiting up to ``timeout`` (None: for ever); raises ``queue.Empty`` when none came, and
        ``EOFError`` / ``OSError`` when the other side's end is closed."""
        with self._read_lock:
            if not self._reader.poll(timeout):
                raise queue.Empty
            return self._reader.recv()

    def get_nowait(self) -> Any:
        return self.get(0)

    def close(self) -> None:
        """Release this process's ends (objects not written yet are dropped)."""
        feed = self._feed
        feed.finish(0, drop=True)
        if feed.thread is None:
            self.close_quietly(self._writer)
        self.close_quietly(self._reader)

    @staticmethod
    def close_quietly(end: Any) -> None:
        try:
            end.close()
        except OSError:
            pass
