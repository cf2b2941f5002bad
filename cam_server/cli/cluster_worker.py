"""``camera_worker`` / ``pipeline_worker``: a camera or pipeline server of a cluster (docs/cluster.md).

Every argument of ``camera_server`` / ``pipeline_server`` (the pipeline worker's ``-c`` is the camera MANAGER)
plus ``--redis`` (required), ``--advertise`` and ``--heartbeat``. Workers have no config folders of their own:
they run on fresh temporary folders, and the managers send configs, backgrounds and scripts with each start.
"""

from __future__ import annotations

import argparse
import logging
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cam_server.bsread.address import ALL_INTERFACES
from cam_server.cli import camera_server, pipeline_server, serve

log = logging.getLogger(__name__)


def cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", required=True, help="Redis of the cluster: redis://HOST:PORT/DB")
    parser.add_argument("--advertise", default=None,
                        help="URL this worker registers (default: http://<-n or -i or this host's name>:<port>); "
                             "the stream addresses it hands out use its host")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="Seconds between heartbeats (default 1.0)")


def advertised(args: argparse.Namespace) -> str:
    """``--advertise``, else built from ``-n`` / ``-i`` (this host's name when listening on all interfaces)."""
    if args.advertise:
        return args.advertise.rstrip("/")
    host = args.hostname or (socket.gethostname() if args.interface in ALL_INTERFACES else args.interface)
    return f"http://{host}:{args.port}"


def run_worker(kind: str, argv: Sequence[str] | None, build_parser: Callable[[], argparse.ArgumentParser],
               main: Callable[[Sequence[str]], None], folders: dict[str, str]) -> None:
    """Parse the server's arguments plus the cluster's, start the heartbeat, run the server on temporary
    ``folders`` (option → subfolder), deregister when it stops."""
    import sys

    from cam_server.cluster.state import ClusterState
    from cam_server.cluster.worker import Heartbeat
    from cam_server.rest.auth import api_token

    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argparse.ArgumentParser(add_help=False)
    cluster_arguments(extra)
    cluster, rest = extra.parse_known_args(argv)
    parser = build_parser()
    parser.prog = f"{kind}_worker"
    cluster_arguments(parser)
    args = parser.parse_args(argv)  # all of them, for --help and errors
    url = advertised(args)
    hostname = args.hostname or urlsplit(url).hostname
    local_host = "127.0.0.1" if args.interface in ALL_INTERFACES else args.interface
    with tempfile.TemporaryDirectory(prefix=f"cam_server_{kind}_worker_") as tmp:
        server_argv = [*rest, "-n", hostname]
        for option, sub in folders.items():
            (Path(tmp) / sub).mkdir()
            server_argv += [option, str(Path(tmp) / sub)]
        heartbeat = Heartbeat(ClusterState(cluster.redis, kind), url, f"http://{local_host}:{args.port}",
                              cluster.heartbeat, api_token(args.api_token), ready=serve.WARMED_UP)
        heartbeat.start()
        logging.getLogger("uvicorn.access").addFilter(HeartbeatAccessFilter(local_host, heartbeat.root))
        try:
            main(server_argv)
        finally:
            heartbeat.stop()


class HeartbeatAccessFilter(logging.Filter):
    """Leaves the heartbeat's own ``GET <root>/info`` (every beat) out of the access log and the log ring."""

    def __init__(self, local_host: str, root_url: str) -> None:
        super().__init__()
        self.local_host = local_host
        self.path = urlsplit(root_url).path + "/info"

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and args[1] == "GET" and args[2] == self.path:
            return not str(args[0]).startswith(f"{self.local_host}:")
        return True


def camera_main(argv: Sequence[str] | None = None) -> None:
    run_worker("camera", argv, camera_server.build_parser, camera_server.main,
               {"-b": "camera_config", "-u": "user_scripts"})


def pipeline_main(argv: Sequence[str] | None = None) -> None:
    run_worker("pipeline", argv, pipeline_server.build_parser, pipeline_server.main,
               {"-b": "pipeline_config", "-g": "background_config", "-u": "user_scripts"})
