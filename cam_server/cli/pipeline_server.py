"""``pipeline_server``: run the pipeline REST server (README "Running the servers")."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence

from cam_server.cli import serve

log = logging.getLogger(__name__)

DEFAULT_INSTANCE_MEMORY_LIMIT_MIB = 4096
MIB = 1024 * 1024


def _mebibytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of MiB, not {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of MiB >= 0, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Pipeline processing server")
    parser.add_argument("-c", "--cam_server", default="http://localhost:8888", help="Cam server rest api address.")
    serve.add_listen_arguments(parser, 8889, "Server port")
    parser.add_argument("-b", "--base", default="configuration/pipeline_config",
                        help="(Pipeline) Configuration base directory")
    parser.add_argument("-g", "--background_base", default="configuration/background_config",
                        help="Background (.npy) directory")
    parser.add_argument("--file_folder", default="data",
                        help="Confine FILE output to this directory (relative 'file' names are taken from it; "
                             "default: ./data of the working directory)")
    parser.add_argument("--file_folder_any", action="store_true",
                        help="Let FILE output write anywhere the server user can (relative names from the working "
                             "directory, as the reference); never inside the config, background or scripts folders")
    parser.add_argument("--background_retention", type=_positive_int, default=100, metavar="N",
                        help="Collected backgrounds kept per camera: after a collection the oldest not used by a "
                             "running instance are deleted (default: 100)")
    parser.add_argument("--background_disk_limit", type=parse_size, default="10G", metavar="SIZE",
                        help="Bytes of backgrounds the server may store, e.g. 500M, 10G (binary units); a new "
                             "background past it is refused (default: 10G)")
    parser.add_argument("--instance_memory_limit", type=_mebibytes, default=DEFAULT_INSTANCE_MEMORY_LIMIT_MIB,
                        help="RSS in MiB past which a pipeline instance is ended (exit code 3), unless its config "
                             f"sets memory_limit; 0: no limit (default {DEFAULT_INSTANCE_MEMORY_LIMIT_MIB})")
    parser.add_argument("--max_instances", type=int, default=None,
                        help="Most pipeline instances running at once (each is a process); more are refused with "
                             "429 (default: 100)")
    serve.add_trailing_arguments(parser, "User processing scripts directory")
    serve.add_limit_arguments(parser)
    serve.add_access_arguments(parser)
    serve.add_shared_memory_argument(parser)
    serve.add_http_arguments(parser)
    parser.add_argument("--cam_server_token", default=None,
                        help="API token of the camera server (default: the environment variable "
                             "CAM_SERVER_API_TOKEN).")
    parser.add_argument("--allow_external_functions", action="store_true",
                        help="Let 'function' name any .py file or importable module on this host (default: only the "
                             "built-in functions and the scripts of the user scripts directory).")
    return parser


def parse_size(text: str) -> int:
    """``10G``, ``500M``, ``1.5T``, ``64k``, ``12345`` (bytes; binary units, an optional trailing ``B``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kKmMgGtT]?)[bB]?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: a number of bytes with an optional unit k, M, G, T "
                                         "(e.g. 10G)")
    factor = 1024 ** " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * factor)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: a whole number >= 1")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.file_folder.strip():
        parser.error("--file_folder must name a directory")
    if args.max_instances is not None and args.max_instances < 1:
        parser.error("--max_instances must be at least 1")
    serve.configure_logging(args.log_level)

    from cam_server.client.cam_client import CamClient
    from cam_server.pipeline.file_path import FileOutputError, check_file_folder
    from cam_server.pipeline.server.backgrounds import BackgroundStore
    from cam_server.pipeline.server.manager import PipelineManager, protected_folders
    from cam_server.pipeline.server.saved_configs import SavedConfigs
    from cam_server.rest.auth import api_token
    from cam_server.rest.pipeline_app import create_pipeline_app

    configs = SavedConfigs(args.base)
    backgrounds = BackgroundStore(args.background_base, retention=args.background_retention,
                                  disk_limit=args.background_disk_limit)
    file_folder = None
    if not args.file_folder_any:
        try:
            file_folder = check_file_folder(args.file_folder,
                                            protected_folders(configs, backgrounds, args.user_scripts_base))
        except FileOutputError as exc:
            parser.error(str(exc))
    manager = PipelineManager(CamClient(args.cam_server, token=args.cam_server_token), configs, backgrounds,
                              args.user_scripts_base,
                              serve.stream_hostname(args), file_folder=file_folder,
                              stream_interface=serve.stream_interface(args),
                              allow_external_functions=args.allow_external_functions,
                              max_blocking=args.max_blocking_requests,
                              instance_memory_limit=int(args.instance_memory_limit * MIB),
                              shared_memory=args.shared_memory == "on")
    if args.max_instances is not None:
        manager.max_instances = args.max_instances
    serve.warm_up_in_background(manager.warm_up)
    app = create_pipeline_app(manager, max_long_requests=args.max_long_requests,
                              api_token=api_token(args.api_token))
    log.info("pipeline server on %s:%s (camera server %s, configs %s, FILE output %s)", args.interface, args.port,
             args.cam_server, args.base, f"in {file_folder}" if file_folder else "anywhere (--file_folder_any)")
    serve.run(app, args, manager.close, "pipeline server")


if __name__ == "__main__":
    main()
