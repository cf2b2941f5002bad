"""bsread receiver over ZeroMQ, API-compatible with the Python lib's ``bsread.Source`` (spec 1, 11, 16).

Frames are received with ``recv_multipart(copy=False)`` and decoded by :class:`~cam_server.bsread.codec.Decoder`;
raw channel values are read-only numpy views over the received frames (no copy). ``receive()`` returns None on
timeout or for a dropped message (the reason is logged; ``timed_out`` tells the two apart).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from cam_server.bsread.codec import Decoder
from cam_server.bsread.endpoints import BIND, CONNECT, PUB, PULL, PUSH, SUB, make_endpoint, socket_mode
from cam_server.bsread.message import Message
from cam_server.bsread.wakeup import Wakeup

log = logging.getLogger(__name__)

LINGER_MS = 1000

__all__ = ["Source", "source", "PUB", "PULL", "PUSH", "SUB", "BIND", "CONNECT"]


class Source:
    """One PULL or SUB connection to a bsread stream.

    Give either ``host`` + ``port`` or a full ``address``/``stream`` (``tcp://host:port``, ``ipc://...``).
    ``receive_timeout`` is in milliseconds (None = block). ``config_port`` is accepted and ignored (dispatcher
    features of the Python lib are not supported). Usable as a context manager (``__enter__`` connects;
    calling ``connect()`` again is harmless). ``wakeup``: a :class:`Wakeup` another thread may set to make a
    blocked :meth:`receive` return ``None`` at once (``interrupted`` tells it from a timeout).
    """

    def __init__(self, host: str | None = None, port: int = 9999, config_port: int | None = None,
                 conn_type: str = CONNECT, mode: int | str | None = None, queue_size: int = 100,
                 receive_timeout: int | None = None, address: str | None = None, stream: str | None = None,
                 allow_lz4: bool = True, context: zmq.Context | None = None, wakeup: Wakeup | None = None):
        mode = PULL if mode is None else socket_mode(mode)
        if mode not in (PULL, SUB):
            raise ValueError(f"source mode must be PULL ({PULL}) or SUB ({SUB}), got {mode!r}")
        address = address or stream
        if address is None:
            if host is None and conn_type == CONNECT:
                raise ValueError("give host and port or a stream address (no dispatcher support)")
            host = host or "*"
            address = host if "://" in host else f"tcp://{host}"
        self.mode = mode
        self.conn_type = conn_type
        self.queue_size = queue_size
        self.receive_timeout = receive_timeout
        self.endpoint = make_endpoint(address, port, conn_type)
        self.timed_out = False
        self.interrupted = False
        self._wakeup = wakeup
        self._poller: zmq.Poller | None = None
        self._allow_lz4 = allow_lz4
        self._context = context
        self._socket: zmq.Socket | None = None
        self._decoder = Decoder(allow_lz4=allow_lz4)

    # -- lifecycle -----------------------------------------------------------------------------------

    def connect(self) -> Source:
        """Open the socket (no-op when already connected)."""
        if self._socket is not None:
            return self
        sock = (self._context or zmq.Context.instance()).socket(self.mode)
        try:
            sock.setsockopt(zmq.RCVHWM, self.queue_size)
            sock.setsockopt(zmq.SNDHWM, self.queue_size)
            sock.setsockopt(zmq.LINGER, LINGER_MS)
            if self.receive_timeout is not None:
                sock.setsockopt(zmq.RCVTIMEO, int(self.receive_timeout))
            if self.mode == SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            if self.conn_type == BIND:
                sock.bind(self.endpoint)
                self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT) or self.endpoint
            else:
                sock.connect(self.endpoint)
        except Exception:
            sock.close(linger=0)
            raise
        self._socket = sock
        self._decoder = Decoder(allow_lz4=self._allow_lz4)
        if self._wakeup is not None:
            self._poller = zmq.Poller()
            self._poller.register(sock, zmq.POLLIN)
            self._poller.register(self._wakeup.fileno(), zmq.POLLIN)
        return self

    def disconnect(self) -> None:
        """Close the socket (messages queued for it are lost)."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._poller = None

    def reconnect(self) -> Source:
        """Close and reopen the socket with a fresh decoder (header state forgotten)."""
        self.disconnect()
        return self.connect()

    close = disconnect

    def __enter__(self) -> Source:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    @property
    def is_connected(self) -> bool:
        return self._socket is not None

    @property
    def decoder(self) -> Decoder:
        return self._decoder

    @property
    def socket(self) -> zmq.Socket | None:
        """The ZeroMQ socket while connected (e.g. for a :class:`~cam_server.bsread.monitor.ConnectionWatch`)."""
        return self._socket

    # -- receiving -----------------------------------------------------------------------------------

    def receive_frames(self) -> list[zmq.Frame] | None:
        """Raw frames of the next multipart message, or None on timeout."""
        sock = self._socket
        if sock is None:
            raise RuntimeError("source is not connected: call connect() first")
        if self._poller is not None and not self._wait_readable(sock):
            return None
        try:
            frames = sock.recv_multipart(copy=False)
        except zmq.Again:
            self.timed_out = True
            return None
        self.timed_out = False
        return frames

    def poll(self, timeout: int | None = 0) -> bool:
        """True when a message can be received now (waiting up to ``timeout`` ms; None = until one comes): lets a
        reader that keeps only the newest message tell whether more are queued behind the one it took."""
        sock = self._socket
        if sock is None:
            raise RuntimeError("source is not connected: call connect() first")
        return bool(sock.poll(timeout, zmq.POLLIN))

    def _wait_readable(self, sock: zmq.Socket) -> bool:
        """Poll the socket and the wakeup together; False (and the reason in the flags) when there is no message."""
        assert self._poller is not None and self._wakeup is not None
        if self._wakeup.is_set():
            self.interrupted = True
            return False
        ready = dict(self._poller.poll(self.receive_timeout))
        if sock in ready:
            return True
        self.interrupted = self._wakeup.is_set()
        self.timed_out = not self.interrupted
        return False

    def receive(self, filter: Callable[[Message], bool] | None = None,
                handler: Callable[[Sequence[zmq.Frame]], Any] | None = None) -> Any:
        """Next message (:class:`Message`), or None on timeout or when the message was dropped.

        ``filter(message)``: messages for which it returns False are skipped (keeps receiving until one passes
        or a receive times out). ``handler(frames)``: replaces decoding; its result is returned.
        """
        while True:
            frames = self.receive_frames()
            if frames is None:
                return None
            if handler is not None:
                return handler(frames)
            message = self._decoder.decode(frames)
            if message is None or filter is None or filter(message):
                return message


def source(*args: Any, **kwargs: Any) -> Source:
    """Factory as in the Python lib: ``with source(host=..., port=..., mode=SUB) as s: s.receive()``."""
    return Source(*args, **kwargs)
