"""``pipeline_server``: run the pipeline REST server (README "Running the servers")."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from cam_server.cli import serve

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Pipeline processing server")
    parser.add_argument("-c", "--cam_server", default="http://localhost:8888", help="Cam server rest api address.")
    serve.add_listen_arguments(parser, 8889, "Server port")
    parser.add_argument("-b", "--base", default="configuration/pipeline_config",
                        help="(Pipeline) Configuration base directory")
    parser.add_argument("-g", "--background_base", default="configuration/background_config",
                        help="Background (.npy) directory")
    parser.add_argument("--file_folder", default=None,
                        help="Confine FILE output to this directory (relative 'file' names are taken from it); "
                             "default: anywhere, relative to the working directory")
    parser.add_argument("--max_instances", type=int, default=None,
                        help="Most pipeline instances running at once (each is a process); more are refused with "
                             "429 (default: 100)")
    serve.add_trailing_arguments(parser, "User processing scripts directory")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.file_folder is not None and not args.file_folder.strip():
        parser.error("--file_folder must name a directory")
    if args.max_instances is not None and args.max_instances < 1:
        parser.error("--max_instances must be at least 1")
    serve.configure_logging(args.log_level)

    from cam_server.client.cam_client import CamClient
    from cam_server.pipeline.server.backgrounds import BackgroundStore
    from cam_server.pipeline.server.manager import PipelineManager
    from cam_server.pipeline.server.saved_configs import SavedConfigs
    from cam_server.rest.pipeline_app import create_pipeline_app

    manager = PipelineManager(CamClient(args.cam_server), SavedConfigs(args.base),
                              BackgroundStore(args.background_base), args.user_scripts_base,
                              args.hostname, file_folder=args.file_folder)
    if args.max_instances is not None:
        manager.max_instances = args.max_instances
    serve.warm_up_in_background(manager.warm_up)
    app = create_pipeline_app(manager)
    log.info("pipeline server on %s:%s (camera server %s, configs %s)", args.interface, args.port, args.cam_server,
             args.base)
    serve.run(app, args, manager.close, "pipeline server")


if __name__ == "__main__":
    main()
