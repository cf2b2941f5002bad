"""What the camera and pipeline server commands share: common arguments, logging, running the app."""

from __future__ import annotations

import argparse
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from cam_server.bsread.address import ALL_INTERFACES
from cam_server.common.limits import DEFAULT_MAX_BLOCKING, DEFAULT_MAX_LONG
from cam_server.common.log_ring import install_log_ring

log = logging.getLogger(__name__)

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def add_listen_arguments(parser: argparse.ArgumentParser, port: int, port_help: str) -> None:
    """``-p/--port`` and ``-i/--interface`` (the help texts are the README's, as is the option order)."""
    parser.add_argument("-p", "--port", type=int, default=port, help=port_help)
    parser.add_argument("-i", "--interface", default="0.0.0.0", help="Hostname interface to bind to")


def add_trailing_arguments(parser: argparse.ArgumentParser, scripts_help: str) -> None:
    """``-u``, ``-n`` and ``--log_level``, the same on both servers."""
    parser.add_argument("-u", "--user_scripts_base", default="configuration/user_scripts", help=scripts_help)
    parser.add_argument("-n", "--hostname", default=None,
                        help="Hostname to use when returning the stream address (default: this host's name; the "
                             "stream interface when streams listen on one address).")
    parser.add_argument("--log_level", default="WARNING", choices=LOG_LEVELS, help="Log level to use.")


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max_long_requests`` and ``--max_blocking_requests`` (README "Request limits"), the same on both servers."""
    parser.add_argument("--max_long_requests", type=_at_least_one, default=DEFAULT_MAX_LONG,
                        help="Most waits for a frame, message, background or online check that run at once (requests "
                             "for the same camera share one; more are refused with 429)")
    parser.add_argument("--max_blocking_requests", type=_at_least_one, default=DEFAULT_MAX_BLOCKING,
                        help="Most instance starts (and, on the pipeline server, calls to the camera server) that run "
                             "at once (more are refused with 429)")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (a clear message otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


_at_least_one = at_least(1)


def add_access_arguments(parser: argparse.ArgumentParser) -> None:
    """Where instance streams listen and who may change things, the same on both servers (after the others)."""
    parser.add_argument("--stream_interface", default=None,
                        help="Interface the instance streams listen on (default: the -i interface; 0.0.0.0: all).")
    parser.add_argument("--api_token", default=None,
                        help="API token: POST, PUT and DELETE requests need 'Authorization: Bearer <token>' "
                             "(default: the environment variable CAM_SERVER_API_TOKEN). Without one, anyone who can "
                             "reach the port can change configs and run code through user scripts.")


def add_shared_memory_argument(parser: argparse.ArgumentParser, slots: int | None = None) -> None:
    """``--shared_memory on|off``, the same on both servers, and on the camera server ``--shared_memory_slots``
    (docs/shared_memory.md)."""
    parser.add_argument("--shared_memory", choices=("on", "off"), default="on",
                        help="Frames between a camera and the pipelines on the same host through shared memory "
                             "(the bsread stream stays for everyone else); off: always the bsread stream.")
    if slots is not None:
        parser.add_argument("--shared_memory_slots", type=at_least(2), default=slots,
                            help="Frames each camera's shared-memory ring holds (a slower reader loses older ones).")


HTTP_IMPLEMENTATIONS = ("auto", "httptools", "h11")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    """``--http`` and ``--loop``: uvicorn's HTTP parser and event loop (README "Running the servers"). The default
    ``auto`` is the fast stack, ``httptools`` and ``uvloop`` (dependencies; about twice h11 + asyncio's requests/s on
    the info routes), falling back to h11 / asyncio where they are not installed; the others are there to compare."""
    parser.add_argument("--http", default="auto", choices=HTTP_IMPLEMENTATIONS,
                        help="HTTP protocol implementation (default auto: httptools when installed, else h11)")
    parser.add_argument("--loop", default="auto", choices=EVENT_LOOPS,
                        help="Event loop (default auto: uvloop when installed, else asyncio)")


def http_stack(http: str = "auto", loop: str = "auto") -> tuple[str, str]:
    """The (HTTP implementation, event loop) uvicorn runs for these choices: ``auto`` resolved as uvicorn does."""
    import importlib.util

    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return http, loop


def stream_interface(args: argparse.Namespace) -> str:
    """The interface instance streams bind to: ``--stream_interface``, else the server's ``-i``; a network interface
    name (``eth0``) as its IPv4 address, so that it also serves as the host of the stream addresses."""
    value = (args.stream_interface if args.stream_interface is not None else args.interface).strip()
    if value in ALL_INTERFACES:
        return value
    import psutil

    for address in psutil.net_if_addrs().get(value, ()):
        if address.family == socket.AF_INET:
            return address.address
    return value  # an address, or a host name (ZeroMQ resolves it)


def stream_hostname(args: argparse.Namespace) -> str:
    """The host name in the stream addresses the server hands out: ``-n``, else the stream interface when streams
    listen on one address (a client could not reach them under another name), else this host's name."""
    if args.hostname:
        return args.hostname
    interface = stream_interface(args)
    return socket.gethostname() if interface in ALL_INTERFACES else interface


def configure_logging(level: str) -> None:
    """The console log, and the ring of recent records the server serves at ``/api/v1/logs``."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_ring()


WARMED_UP = threading.Event()  # set once the fork server is warm (a cluster worker registers only then)


def warm_up_in_background(warm_up: Callable[[], Any]) -> None:
    """Start the instance fork server while the REST app starts, so the first instance starts quickly."""

    def run() -> None:
        try:
            warm_up()
        finally:
            WARMED_UP.set()

    threading.Thread(target=run, name="forkserver-warm-up", daemon=True).start()


def run(app: Any, args: argparse.Namespace, close: Callable[[], Any], what: str) -> None:
    """Serve ``app`` on ``args.interface:args.port`` until SIGINT/SIGTERM, then ``close()`` the instances."""
    http, loop = http_stack(getattr(args, "http", "auto"), getattr(args, "loop", "auto"))
    log.info("%s: HTTP %s, event loop %s", what, http, loop)
    try:
        # uvicorn handles SIGINT/SIGTERM by finishing the requests in flight and returning here.
        # No per-message deflate: the live view's frames are already 8-bit and binned; compressing them would cost
        # the server's event loop (and so every REST answer) more than the bytes it saves on a local network.
        uvicorn.run(app, host=args.interface, port=args.port, log_level=args.log_level.lower(),
                    timeout_graceful_shutdown=5, ws_per_message_deflate=False, http=http, loop=loop)
    finally:
        close()
        log.info("%s stopped", what)
