"""``pipeline_server``: run the pipeline REST server (README "Running the servers")."""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Sequence

import uvicorn

log = logging.getLogger(__name__)

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Pipeline processing server")
    parser.add_argument("-c", "--cam_server", default="http://0.0.0.0:8888", help="Cam server rest api address.")
    parser.add_argument("-p", "--port", type=int, default=8889, help="Server port")
    parser.add_argument("-i", "--interface", default="0.0.0.0", help="Hostname interface to bind to")
    parser.add_argument("-b", "--base", default="configuration/pipeline_config",
                        help="(Pipeline) Configuration base directory")
    parser.add_argument("-g", "--background_base", default="configuration/background_config",
                        help="Background (.npy) directory")
    parser.add_argument("-u", "--user_scripts_base", default="configuration/user_scripts",
                        help="User processing scripts directory")
    parser.add_argument("-n", "--hostname", default=None,
                        help="Hostname to use when returning the stream address (default: this host's name).")
    parser.add_argument("--log_level", default="WARNING", choices=LOG_LEVELS, help="Log level to use.")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from cam_server.client.cam_client import CamClient
    from cam_server.pipeline.backgrounds import BackgroundStore
    from cam_server.pipeline.manager import PipelineManager
    from cam_server.pipeline.store import PipelineConfigStore
    from cam_server.rest.pipeline_app import create_pipeline_app

    manager = PipelineManager(CamClient(args.cam_server), PipelineConfigStore(args.base),
                              BackgroundStore(args.background_base), args.user_scripts_base,
                              args.hostname or socket.gethostname())
    import threading

    threading.Thread(target=manager.warm_up, name="forkserver-warm-up", daemon=True).start()
    app = create_pipeline_app(manager)
    log.info("pipeline server on %s:%s (camera server %s, configs %s)", args.interface, args.port, args.cam_server,
             args.base)
    try:
        # uvicorn handles SIGINT/SIGTERM by finishing the requests in flight and returning here.
        uvicorn.run(app, host=args.interface, port=args.port, log_level=args.log_level.lower(),
                    timeout_graceful_shutdown=5)
    finally:
        manager.close()
        log.info("pipeline server stopped")


if __name__ == "__main__":
    main()
