"""``camera_server``: run the camera REST server (README "Running the servers", Camera server)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from cam_server.cli import serve
from cam_server.common.frame_ring import DEFAULT_SLOTS

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Camera acquisition server")
    serve.add_listen_arguments(parser, 8888, "Server cam_port")
    parser.add_argument("-b", "--base", default="configuration/camera_config",
                        help="(Camera) Configuration base directory")
    serve.add_trailing_arguments(parser, "User scripts directory (served under /api/v1/cam/script)")
    serve.add_limit_arguments(parser)
    serve.add_access_arguments(parser)
    serve.add_shared_memory_argument(parser, DEFAULT_SLOTS)
    serve.add_http_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    serve.configure_logging(args.log_level)

    from cam_server.camera.manager import CameraInstanceManager
    from cam_server.camera.store import CameraConfigStore
    from cam_server.common.scripts_store import ScriptStore
    from cam_server.rest.auth import api_token
    from cam_server.rest.camera_app import create_camera_app

    hostname = serve.stream_hostname(args)
    manager = CameraInstanceManager(CameraConfigStore(args.base), hostname=hostname,
                                    max_blocking=args.max_blocking_requests,
                                    stream_interface=serve.stream_interface(args),
                                    shared_memory=args.shared_memory == "on",
                                    shared_memory_slots=args.shared_memory_slots)
    serve.warm_up_in_background(manager.warm_up)
    app = create_camera_app(manager, ScriptStore(args.user_scripts_base), max_long_requests=args.max_long_requests,
                            api_token=api_token(args.api_token))
    log.info("camera server on %s:%s (configs %s, stream host %s, streams on %s)", args.interface, args.port,
             args.base, hostname, serve.stream_interface(args))
    serve.run(app, args, manager.close, "camera server")


if __name__ == "__main__":
    main()
