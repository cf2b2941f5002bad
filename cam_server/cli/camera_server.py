"""``camera_server``: run the camera REST server (README "Running the servers", Camera server)."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Sequence

import uvicorn

log = logging.getLogger(__name__)

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Camera acquisition server")
    parser.add_argument("-p", "--port", type=int, default=8888, help="Server cam_port")
    parser.add_argument("-i", "--interface", default="0.0.0.0", help="Hostname interface to bind to")
    parser.add_argument("-b", "--base", default="configuration/camera_config",
                        help="(Camera) Configuration base directory")
    parser.add_argument("-u", "--user_scripts_base", default="configuration/user_scripts",
                        help="User scripts directory (served under /api/v1/cam/script)")
    parser.add_argument("-n", "--hostname", default="localhost",
                        help="Hostname to use when returning the stream address.")
    parser.add_argument("--log_level", default="WARNING", choices=LOG_LEVELS, help="Log level to use.")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from cam_server.camera.manager import CameraInstanceManager
    from cam_server.camera.store import CameraConfigStore
    from cam_server.common.scripts_store import ScriptStore
    from cam_server.rest.camera_app import create_camera_app

    manager = CameraInstanceManager(CameraConfigStore(args.base), hostname=args.hostname)
    threading.Thread(target=manager.warm_up, name="forkserver-warm-up", daemon=True).start()
    app = create_camera_app(manager, ScriptStore(args.user_scripts_base))
    log.info("camera server on %s:%s (configs %s, stream host %s)", args.interface, args.port, args.base,
             args.hostname)
    try:
        # uvicorn handles SIGINT/SIGTERM by finishing the requests in flight and returning here.
        uvicorn.run(app, host=args.interface, port=args.port, log_level=args.log_level.lower(),
                    timeout_graceful_shutdown=5)
    finally:
        manager.close()
        log.info("camera server stopped")


if __name__ == "__main__":
    main()
