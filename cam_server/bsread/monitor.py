"""Client counting and the "no clients" action of a sender socket (spec section 13, mflow semantics).

A background thread reads the sender socket's ZeroMQ monitor events with a 100 ms timeout. Binding sockets
count ``EVENT_ACCEPTED`` +1; connecting sockets (which never see an accept) count ``EVENT_CONNECTED`` +1 instead —
the Python lib counts only accepts, so its connecting senders fire the action while data flows, a quirk we do
not copy. ``EVENT_DISCONNECTED`` −1, ``EVENT_CLOSED`` resets to 0. While the count is 0 for longer than
``timeout`` the action is called, and then again every ``timeout`` seconds.

Backlog: each connect/accept event carries the connection's file descriptor; once a second the thread asks the
kernel how many bytes wait unsent (or unread, for ipc) on each (``TIOCOUTQ``), and :attr:`ClientMonitor.backlog` is
the largest: about 0 while every client keeps up, a full socket buffer for a client that falls behind. ZeroMQ itself
says nothing about its per-client queues (PUB drops silently at the high-water mark; libzmq's pipe statistics are a
draft API that pyzmq's builds do not have), so this is what a sender can know of a slow client.
"""

from __future__ import annotations

import fcntl
import logging
import struct
import termios
import threading
import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)

POLL_MS = 100
BACKLOG_INTERVAL_S = 1.0
_OUTQ = getattr(termios, "TIOCOUTQ", None)  # == SIOCOUTQ on Linux: unsent bytes of a socket


class ClientMonitor:
    """Counts the peers of one socket; optionally calls ``action`` while there are none."""

    def __init__(self, socket: zmq.Socket, action: Callable[[], object] | None = None,
                 timeout: float | None = None, count_connects: bool = False):
        self._socket = socket
        self._monitor = socket.get_monitor_socket()
        self._action = action
        self._timeout = 10.0 if timeout is None else float(timeout)
        self._plus_event = zmq.EVENT_CONNECTED if count_connects else zmq.EVENT_ACCEPTED
        self._count = 0
        self.connections = 0  # every client that connected, those gone included
        self._fds: set[int] = set()  # the connections' file descriptors (ZeroMQ's; only ever queried)
        self.backlog = 0  # bytes waiting in the kernel for the slowest connection (sampled)
        self._backlog_at = 0.0
        self._zero_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bsread-client-monitor", daemon=True)
        self._thread.start()

    @property
    def client_count(self) -> int:
        return self._count

    def stop(self) -> None:
        """Detach from the socket (call from the socket's owner thread) and end the thread."""
        self._stop.set()
        try:
            self._socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self._thread.join(timeout=2)

    def _run(self) -> None:
        monitor = self._monitor
        poller = zmq.Poller()
        poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                try:
                    if poller.poll(POLL_MS):
                        event = recv_monitor_message(monitor)
                        self._on_event(event["event"], event.get("value"))
                except zmq.ZMQError as exc:
                    if self._stop.is_set():
                        break
                    log.warning("client monitor error: %s", exc)
                    time.sleep(POLL_MS / 1000)
                self._check()
        finally:
            monitor.close(linger=0)

    def _on_event(self, event: int, value: int | None = None) -> None:
        if event == self._plus_event:
            self._count += 1
            self.connections += 1
            if value is not None:
                self._fds.add(value)
        elif event == zmq.EVENT_DISCONNECTED:
            self._count = max(0, self._count - 1)
            self._fds.discard(value)  # type: ignore[arg-type]
        elif event == zmq.EVENT_CLOSED:
            self._count = 0
            self._fds.clear()

    def _sample_backlog(self) -> None:
        now = time.monotonic()
        if now - self._backlog_at < BACKLOG_INTERVAL_S:
            return
        self._backlog_at = now
        self.backlog = max((_unsent_bytes(fd) for fd in list(self._fds)), default=0)

    def _check(self) -> None:
        if _OUTQ is not None:
            self._sample_backlog()
        if self._count > 0:
            self._zero_since = None
            return
        now = time.monotonic()
        if self._zero_since is None:
            self._zero_since = now
        elif self._action is not None and now - self._zero_since > self._timeout:
            self._zero_since = now
            try:
                self._action()
            except Exception:  # the action must never kill the monitor
                log.exception("no_client_action failed")


def _unsent_bytes(fd: int) -> int:
    """Bytes the kernel holds for the peer of socket ``fd`` (0 when it cannot tell, e.g. the fd is gone)."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, _OUTQ, b"\0\0\0\0"))[0]  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError):
        return 0


class ConnectionWatch:
    """Whether a connecting socket (a receiver's SUB/PULL) lost its peer, and how often it connected again.

    No thread: :meth:`poll` drains the socket's monitor events without blocking, so the owner calls it when it
    wants to know (e.g. on an idle receive). ZeroMQ reconnects by itself after its peer went away; the events are
    the only way to see it. Create and :meth:`close` it in the thread that owns the socket (the monitor socket
    itself may then be polled from any one thread).

    The watch starts on a socket that is already connecting, so it may miss the first connection: the socket
    counts as connected until a disconnection is seen, and a reconnection is a connection after a disconnection.
    """

    def __init__(self, socket: zmq.Socket) -> None:
        self._socket = socket
        self._monitor = socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.connected = True  # no disconnection seen since the last connection (or since the start)
        self.reconnects = 0  # connections made after a disconnection

    def poll(self) -> bool:
        """Read the pending events; returns :attr:`connected`."""
        while self._monitor is not None:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            except zmq.ZMQError:  # zmq.Again: no more events (or the monitor is gone)
                break
            if event == zmq.EVENT_CONNECTED:
                if not self.connected:
                    self.reconnects += 1
                self.connected = True
            elif event == zmq.EVENT_DISCONNECTED:
                self.connected = False
        return self.connected

    def close(self) -> None:
        if self._monitor is None:
            return
        try:
            self._socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
        self._monitor = None
