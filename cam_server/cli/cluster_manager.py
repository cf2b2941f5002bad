"""``camera_manager`` / ``pipeline_manager``: the cluster's managers (docs/cluster.md).

They answer the whole REST API of a single camera / pipeline server, placing instances on the workers registered
in Redis, plus PSI's ``/api/v1/proxy`` routes. Several managers of one kind may serve side by side on one Redis.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cam_server.cli import serve

log = logging.getLogger(__name__)


def _common(parser: argparse.ArgumentParser, port: int) -> None:
    serve.add_listen_arguments(parser, port, "Manager port")
    parser.add_argument("--redis", required=True, help="Redis of the cluster: redis://HOST:PORT/DB")
    parser.add_argument("--servers", type=Path, default=None,
                        help="The workers file (servers.json, psi-interface.md §4); without it every registered "
                             "worker is enabled and expanding")
    parser.add_argument("--dead_after", type=float, default=3.0,
                        help="Seconds without a heartbeat after which a worker is dead (default 3.0)")
    parser.add_argument("--log_level", default="WARNING", choices=serve.LOG_LEVELS, help="Log level to use.")
    parser.add_argument("--api_token", default=None,
                        help="API token clients must send with POST, PUT and DELETE (default: the environment "
                             "variable CAM_SERVER_API_TOKEN; none: anyone who reaches the port may change things)")
    parser.add_argument("--worker_token", default=None,
                        help="API token of the workers, sent with every call to them (default: the environment "
                             "variable CAM_SERVER_API_TOKEN)")


def camera_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Camera manager of a cluster of camera workers")
    _common(parser, 8888)
    parser.add_argument("-b", "--base", default="configuration/camera_config",
                        help="(Camera) Configuration base directory")
    parser.add_argument("-u", "--user_scripts_base", default="configuration/user_scripts",
                        help="User scripts directory")
    return parser


def pipeline_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Pipeline manager of a cluster of pipeline workers")
    parser.add_argument("-c", "--cam_server", default="http://localhost:8888", help="Camera manager address.")
    _common(parser, 8889)
    parser.add_argument("-b", "--base", default="configuration/pipeline_config",
                        help="(Pipeline) Configuration base directory")
    parser.add_argument("-g", "--background_base", default="configuration/background_config",
                        help="Background (.npy) directory")
    parser.add_argument("-u", "--user_scripts_base", default="configuration/user_scripts",
                        help="User processing scripts directory")
    return parser


def with_token(app: Any, token: str | None) -> Any:
    """``app`` behind the servers' bearer-token check of mutating requests (both of its apps), if a token is set."""
    from cam_server.rest.auth import BearerTokenAuth, api_token

    token = api_token(token)
    return BearerTokenAuth(app, token=token) if token else app


def camera_main(argv: Sequence[str] | None = None) -> None:
    args = camera_parser().parse_args(argv)
    serve.configure_logging(args.log_level)

    from cam_server.camera.manager import CameraInstanceManager
    from cam_server.camera.store import CameraConfigStore
    from cam_server.cluster.manager import ClusterManager
    from cam_server.cluster.manager_app import create_camera_manager_app
    from cam_server.cluster.state import ClusterState
    from cam_server.common.scripts_store import ScriptStore
    from cam_server.rest.camera_app import create_camera_app

    store = CameraConfigStore(args.base)
    local = create_camera_app(CameraInstanceManager(store, hostname="localhost"), ScriptStore(args.user_scripts_base))
    cm = ClusterManager(ClusterState(args.redis, "camera"), args.dead_after, args.servers, args.worker_token)
    app = with_token(create_camera_manager_app(cm, store, local), args.api_token)
    cm.start_monitor()
    log.info("camera manager on %s:%s (configs %s, redis %s)", args.interface, args.port, args.base, args.redis)
    serve.run(app, args, cm.close, "camera manager")


def pipeline_main(argv: Sequence[str] | None = None) -> None:
    args = pipeline_parser().parse_args(argv)
    serve.configure_logging(args.log_level)

    from cam_server.client.cam_client import CamClient
    from cam_server.cluster.manager import ClusterManager
    from cam_server.cluster.manager_app import create_pipeline_manager_app
    from cam_server.cluster.state import ClusterState
    from cam_server.pipeline.server.backgrounds import BackgroundStore
    from cam_server.pipeline.server.manager import PipelineManager
    from cam_server.pipeline.server.saved_configs import SavedConfigs
    from cam_server.rest.pipeline_app import create_pipeline_app

    manager = PipelineManager(CamClient(args.cam_server), SavedConfigs(args.base),
                              BackgroundStore(args.background_base), args.user_scripts_base, "localhost")
    local = create_pipeline_app(manager)
    cm = ClusterManager(ClusterState(args.redis, "pipeline"), args.dead_after, args.servers, args.worker_token)
    app = with_token(create_pipeline_manager_app(cm, manager, local), args.api_token)
    cm.start_monitor()
    log.info("pipeline manager on %s:%s (camera manager %s, configs %s, redis %s)", args.interface, args.port,
             args.cam_server, args.base, args.redis)
    serve.run(app, args, cm.close, "pipeline manager")
