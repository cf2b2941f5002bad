"""bsread sender over ZeroMQ, API-compatible with the Python lib's ``bsread.sender.Sender`` (spec 12, 13, 16).

Differences that are improvements (spec SHOULDs): a message is fully serialised before any frame is sent and
then sent with one ``send_multipart`` (never torn); a non-blocking send decides per message (returns False when
ZeroMQ would block, nothing is sent); declared channels convert every value to the declared type/byte order.

Zero copy: large arrays go to ZeroMQ with ``copy=False`` — ZeroMQ reads the array's memory after ``send``
returns. **Rule: never modify an array after passing it to send(); give a fresh array per frame.** This module
never mutates arrays it sends (frames below ``COPY_THRESHOLD`` bytes are copied by pyzmq anyway). An array that is
a whole view of a received ``zmq.Frame`` (a relayed image) is sent as that Frame: libzmq shares the buffer, which
cut the bsread camera relay's CPU (about 1-2 % of a core at 100 Hz 2560x2160).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import zmq

from cam_server.bsread.codec import Encoder, Timestamp
from cam_server.bsread.endpoints import (
    BIND,
    CONNECT,
    PUB,
    PULL,
    PUSH,
    SUB,
    endpoint_port,
    make_endpoint,
    socket_mode,
)
from cam_server.bsread.monitor import ClientMonitor

log = logging.getLogger(__name__)

LINGER_MS = 1000
BIND_RETRY_S = 2.0
COPY_THRESHOLD = 64 * 1024

__all__ = ["Sender", "PUB", "PUSH", "PULL", "SUB", "BIND", "CONNECT"]


class Sender:
    """Sends bsread messages on one PUSH or PUB socket (bind by default)."""

    def __init__(self, queue_size: int = 10, port: int | None = 9999, address: str = "tcp://*",
                 conn_type: str = BIND, mode: int | str = PUSH, block: bool = True, start_pulse_id: int = 0,
                 data_header_compression: str | None = None, send_timeout: int | None = None,
                 data_compression: str | None = None, context: zmq.Context | None = None):
        mode = socket_mode(mode)
        if mode not in (PUSH, PUB):
            raise ValueError(f"sender mode must be PUSH ({PUSH}) or PUB ({PUB}), got {mode!r}")
        self.queue_size = queue_size
        self.port = port
        self.address = address
        self.conn_type = conn_type
        self.mode = mode
        self.block = block
        self.send_timeout = send_timeout
        self._endpoint_request = make_endpoint(address, port, conn_type)
        self._encoder = Encoder(data_compression=data_compression,
                                data_header_compression=data_header_compression, start_pulse_id=start_pulse_id)
        self._context = context
        self._socket: zmq.Socket | None = None
        self._monitor: ClientMonitor | None = None
        self._endpoint: str | None = None
        self._flags = 0 if block else int(zmq.NOBLOCK)
        self.bytes_sent = 0  # all frames of every message ZeroMQ took (statistics: total bytes, throughput)

    # -- lifecycle -----------------------------------------------------------------------------------

    def open(self, no_client_action: Callable[[], object] | None = None,
             no_client_timeout: float | None = None) -> Sender:
        """Create, configure and bind/connect the socket and start the client monitor.

        The monitor always counts clients (``client_count``); ``no_client_action`` is called when there has
        been no client for ``no_client_timeout`` seconds (default 10), and again every timeout after that.
        """
        if self._socket is not None:
            return self
        context = self._context or zmq.Context.instance()
        sock = context.socket(self.mode)
        try:
            sock.setsockopt(zmq.SNDHWM, self.queue_size)
            sock.setsockopt(zmq.RCVHWM, self.queue_size)
            sock.setsockopt(zmq.LINGER, LINGER_MS)
            if self.send_timeout is not None:
                sock.setsockopt(zmq.SNDTIMEO, int(self.send_timeout))
            sock.copy_threshold = COPY_THRESHOLD
            # Attach the monitor before bind/connect: a peer that connects at once must not be missed.
            self._monitor = ClientMonitor(sock, no_client_action, no_client_timeout,
                                          count_connects=self.conn_type == CONNECT)
            if self.conn_type == BIND:
                _bind_with_retry(sock, self._endpoint_request)
            else:
                sock.connect(self._endpoint_request)
            self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT) or self._endpoint_request
        except Exception:
            if self._monitor is not None:
                self._monitor.stop()
                self._monitor = None
            sock.close(linger=0)
            raise
        self._socket = sock
        log.info("bsread sender %s on %s", "bound" if self.conn_type == BIND else "connected", self._endpoint)
        return self

    def close(self) -> None:
        """Stop the monitor and close the socket (the context stays; see spec 1.4 on re-binding)."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Sender:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties ----------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._socket is not None

    @property
    def endpoint(self) -> str:
        """The actual endpoint (e.g. ``tcp://0.0.0.0:41234`` after binding port 0), or the requested one."""
        return self._endpoint or self._endpoint_request

    @property
    def bound_port(self) -> int | None:
        """TCP port actually bound/connected (None for ipc/inproc or before open)."""
        return endpoint_port(self._endpoint) if self._endpoint else None

    @property
    def client_count(self) -> int:
        """Connected clients as counted by the socket monitor (0 when not open)."""
        return self._monitor.client_count if self._monitor is not None else 0

    @property
    def connections(self) -> int:
        """Clients that connected since the socket was opened (those gone included)."""
        return self._monitor.connections if self._monitor is not None else 0

    @property
    def client_backlog(self) -> int:
        """Bytes waiting in the kernel for the slowest client (sampled once a second; see ``monitor.py``)."""
        return self._monitor.backlog if self._monitor is not None else 0

    @property
    def pulse_id(self) -> int:
        """Pulse id the next message gets unless ``send(pulse_id=...)`` overrides it."""
        return self._encoder.pulse_id

    @property
    def encoder(self) -> Encoder:
        return self._encoder

    # -- sending -------------------------------------------------------------------------------------

    def add_channel(self, name: str, function: Callable[[int], Any] | None = None,
                    metadata: Mapping[str, Any] | None = None) -> None:
        """Declare a channel (``metadata``: type, shape [width, height], encoding, compression, extra keys);
        ``function(pulse_id)`` gives its value when ``send()`` is called without data."""
        self._encoder.add_channel(name, metadata=metadata, function=function)

    def send(self, data: Mapping[str, Any] | None = None, timestamp: Timestamp = None, pulse_id: int | None = None,
             check_data: bool = True) -> bool:
        """Send one message; True if ZeroMQ took it, False if dropped (non-blocking and full, or send timeout).

        ``check_data`` True derives the channels from ``data`` (header rebuilt only when they change); False
        uses the declared channels. Raises ChannelError (ValueError) for a value that cannot be encoded —
        before anything is sent — and RuntimeError when the sender is not open.
        """
        sock = self._socket
        if sock is None:
            raise RuntimeError("sender is not open: call open() first")
        frames = self._encoder.encode(data, pulse_id, timestamp, check_data)
        try:
            self.bytes_sent += _send_parts(sock, frames, self._flags)
        except zmq.Again:
            return False
        return True


_SNDMORE = int(zmq.SNDMORE)


def _received_frame(part: Any) -> Any:
    """The received ``zmq.Frame`` a large array is a whole view of (relayed images), else the part itself.

    Sending the Frame shares its refcounted buffer inside libzmq (zmq_msg_copy); sending the numpy view instead
    makes pyzmq wrap it in a new zero-copy message whose release goes through pyzmq's garbage-collector thread.
    """
    if not isinstance(part, np.ndarray) or part.nbytes < COPY_THRESHOLD or not part.flags.c_contiguous:
        return part
    base = part.base
    while isinstance(base, np.ndarray):
        base = base.base
    # A C-contiguous view of as many bytes as the whole buffer holds is the whole buffer.
    if isinstance(base, memoryview) and isinstance(base.obj, zmq.Frame) and base.nbytes == part.nbytes:
        return base.obj
    return part


def _send_parts(sock: zmq.Socket, parts: list[Any], flags: int) -> int:
    """``send_multipart(parts, flags, copy=False)`` with int flags (pyzmq's does enum arithmetic per part);
    returns the bytes sent (encoder frames are bytes or numpy arrays)."""
    more = flags | _SNDMORE
    last = len(parts) - 1
    send = sock.send
    size = 0
    for i, part in enumerate(parts):
        size += part.nbytes if isinstance(part, np.ndarray) else len(part)
        send(_received_frame(part), more if i < last else flags, copy=False)
    return size


def _bind_with_retry(sock: zmq.Socket, endpoint: str) -> None:
    """Bind, retrying briefly on EADDRINUSE: a just-closed socket may still hold the port (spec 1.4)."""
    deadline = time.monotonic() + BIND_RETRY_S
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
