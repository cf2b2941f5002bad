"""Stream addresses: the ZeroMQ endpoints a bsread client connects to. One parser for the whole code base.

``tcp://host:port`` (host not empty, port 1-65535) or ``ipc://path``; no white space. ``tcp://*:port`` is a valid
address too (it is what an instance binds). No ZeroMQ here: config validation uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMES = ("tcp", "ipc")


@dataclass(frozen=True)
class StreamAddress:
    scheme: str  # "tcp" or "ipc"
    host: str | None = None  # tcp: without IPv6 brackets
    port: int | None = None  # tcp
    path: str | None = None  # ipc


def parse_stream_address(value: object) -> StreamAddress:
    """The parts of a stream address; ``ValueError`` saying what is wrong with anything else."""
    if not isinstance(value, str):
        raise ValueError(f"a stream address must be a string like tcp://host:port, not {type(value).__name__}")
    shown = value if len(value) <= 80 else value[:60] + f"... ({len(value)} characters)"
    if any(c.isspace() for c in value):
        raise ValueError(f"stream address {shown!r} contains white space")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"stream address {shown!r} must start with tcp:// or ipc://")
    if scheme == "ipc":
        if not rest:
            raise ValueError(f"stream address {shown!r} has no path (ipc://path)")
        return StreamAddress("ipc", path=rest)
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        raise ValueError(f"stream address {shown!r} must be tcp://host:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"stream address {shown!r} has an invalid port {port!r} (1-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return StreamAddress("tcp", host=host, port=int(port))


def is_stream_address(value: object) -> bool:
    """True for a valid ``tcp://host:port`` or ``ipc://path``."""
    try:
        parse_stream_address(value)
    except ValueError:
        return False
    return True


def host_and_port(stream_address: str) -> tuple[str, int]:
    """``tcp://host:port`` → ``(host, port)``; ``ValueError`` for anything else (also ``ipc://``)."""
    address = parse_stream_address(stream_address)
    if address.scheme != "tcp":
        raise ValueError(f"Invalid stream address {stream_address!r}: expected tcp://host:port")
    return address.host or "", address.port or 0


ALL_INTERFACES = ("", "*", "0.0.0.0", "::")  # interface values meaning "every interface"


def listen_endpoint(interface: str | None, port: int) -> str:
    """``tcp://<interface>:<port>``, the endpoint a stream binds: ``*`` (every interface) for None or a value of
    :data:`ALL_INTERFACES`, else the given address (IPv4) or interface name."""
    interface = (interface or "").strip()
    return f"tcp://{'*' if interface in ALL_INTERFACES else interface}:{port}"
