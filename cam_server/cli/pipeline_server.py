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
    serve.add_trailing_arguments(parser, "User processing scripts directory")
    serve.add_access_arguments(parser)
    parser.add_argument("--cam_server_token", default=None,
                        help="API token of the camera server (default: the environment variable "
                             "CAM_SERVER_API_TOKEN).")
    parser.add_argument("--allow_external_functions", action="store_true",
                        help="Let 'function' name any .py file or importable module on this host (default: only the "
                             "built-in functions and the scripts of the user scripts directory).")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.file_folder is not None and not args.file_folder.strip():
        parser.error("--file_folder must name a directory")
    serve.configure_logging(args.log_level)

    from cam_server.client.cam_client import CamClient
    from cam_server.pipeline.server.backgrounds import BackgroundStore
    from cam_server.pipeline.server.manager import PipelineManager
    from cam_server.pipeline.server.saved_configs import SavedConfigs
    from cam_server.rest.auth import api_token
    from cam_server.rest.pipeline_app import create_pipeline_app

    manager = PipelineManager(CamClient(args.cam_server, token=args.cam_server_token), SavedConfigs(args.base),
                              BackgroundStore(args.background_base), args.user_scripts_base,
                              serve.stream_hostname(args), file_folder=args.file_folder,
                              stream_interface=serve.stream_interface(args),
                              allow_external_functions=args.allow_external_functions)
    serve.warm_up_in_background(manager.warm_up)
    app = create_pipeline_app(manager, api_token=api_token(args.api_token))
    log.info("pipeline server on %s:%s (camera server %s, configs %s)", args.interface, args.port, args.cam_server,
             args.base)
    serve.run(app, args, manager.close, "pipeline server")


if __name__ == "__main__":
    main()
