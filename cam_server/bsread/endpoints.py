"""ZeroMQ socket-type constants and endpoint strings as the bsread Python API spells them."""

from __future__ import annotations

import re

import zmq

PUSH: int = zmq.PUSH
PULL: int = zmq.PULL
PUB: int = zmq.PUB
SUB: int = zmq.SUB
BIND = "bind"
CONNECT = "connect"

_MODE_NAMES = {"push": PUSH, "pull": PULL, "pub": PUB, "sub": SUB}

_TCP_WITH_PORT = re.compile(r"^tcp://(\[[^\]]*\]|[^:/\[\]]*):(\d+|\*)$")


def make_endpoint(address: str, port: int | None, conn_type: str) -> str:
    """Endpoint for bind/connect from a bsread ``address`` and ``port``.

    ``address`` is either a base like ``tcp://*`` / ``tcp://host`` (the port is appended) or a full endpoint
    (``tcp://host:port``, ``ipc:///path``, ``inproc://name``), which wins over ``port``. Port 0 (or None) on a
    binding socket asks the OS for an ephemeral port (``tcp://host:*``); the bound port is then read back.
    """
    if conn_type not in (BIND, CONNECT):
        raise ValueError(f"conn_type must be {BIND!r} or {CONNECT!r}, got {conn_type!r}")
    if not address.startswith("tcp://"):
        if "://" not in address:
            raise ValueError(f"address must be tcp://, ipc:// or inproc://, got {address!r}")
        return address
    match = _TCP_WITH_PORT.match(address)
    if match:
        host, port_text = match.groups()
        port = None if port_text in ("*", "0") else int(port_text)
    else:
        host = address[len("tcp://"):].rstrip("/")
    if conn_type == CONNECT and (not port or host in ("*", "")):
        raise ValueError(f"cannot connect to {address!r} with port {port!r}: need a host and a port")
    return f"tcp://{host or '*'}:{port if port else '*'}"


def endpoint_port(endpoint: str) -> int | None:
    """TCP port of an endpoint such as ``tcp://0.0.0.0:41234`` (None for ipc/inproc)."""
    match = _TCP_WITH_PORT.match(endpoint)
    if not match or match.group(2) == "*":
        return None
    return int(match.group(2))


def socket_mode(mode: int | str) -> int:
    """A pyzmq socket type from an int or a name such as ``"SUB"`` / ``"pull"`` (cam_server configs use names)."""
    if isinstance(mode, str):
        try:
            return _MODE_NAMES[mode.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown socket mode {mode!r} (PUSH, PULL, PUB or SUB)") from None
    return int(mode)


def receive_mode(mode: int | str, what: str = "mode") -> int:
    """:func:`socket_mode` for a receiving socket: PULL or SUB only (``what`` names the setting in the error)."""
    try:
        value = socket_mode(mode)
    except ValueError:
        value = None
    if value not in (PULL, SUB):
        raise ValueError(f"{what} must be 'PULL' or 'SUB', got {mode!r}")
    return value


def reader_mode(sender_mode: str | None) -> int:
    """The socket that reads a stream sent in ``sender_mode``: PULL for a PUSH sender, else SUB."""
    return PULL if str(sender_mode or "").upper() == "PUSH" else SUB


def mode_name(mode: int) -> str:
    """``"SUB"``, ``"PULL"``, ... for a pyzmq socket type."""
    return next(name.upper() for name, value in _MODE_NAMES.items() if value == mode)
