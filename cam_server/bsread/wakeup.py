"""A latch another thread can set to end a blocking receive at once.

A receive loop blocked in ``recv`` only sees a stop request at its next message or timeout (one camera frame, up to
the receive timeout). :class:`Wakeup` is a pipe: :class:`~cam_server.bsread.receiver.Source` polls its read end
together with the ZeroMQ socket, so :meth:`Wakeup.set` from any thread makes the receive return ``None`` now.
Once set it stays set (every later receive returns at once): it signals an end, not an event to consume.
"""

from __future__ import annotations

import os
import select


class Wakeup:
    """A thread-safe, set-once latch with a pollable file descriptor."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._set = False

    def fileno(self) -> int:
        """The read end: readable once :meth:`set` was called (for ``zmq.Poller`` / ``select``)."""
        return self._read_fd

    def set(self) -> None:
        """Wake every current and later wait; safe from any thread and more than once."""
        if self._set:
            return
        self._set = True
        try:
            os.write(self._write_fd, b"\0")
        except (BlockingIOError, OSError):  # pipe full (cannot happen with one byte) or already closed
            pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None) -> bool:
        """Sleep up to ``timeout`` seconds or until set; True when set."""
        if self._set:
            return True
        poller = select.poll()  # not select(): it refuses descriptors >= 1024
        try:
            poller.register(self._read_fd, select.POLLIN)
            poller.poll(None if timeout is None else max(timeout, 0.0) * 1000.0)
        except (OSError, ValueError):  # closed meanwhile
            pass
        return self._set

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._read_fd = self._write_fd = -1

    def __del__(self) -> None:
        if getattr(self, "_read_fd", -1) >= 0:
            self.close()
