"""REST API of the pipeline server (README "Pipeline server API"), on top of :class:`PipelineManager`.

Handlers that block (process start/stop, camera server calls, stream reads) are plain ``def`` so FastAPI runs them
in its threadpool and concurrent clients do not wait for each other. Fixed path segments (``info``, ``camera``,
``instance``, ``script``) are declared before the ``{pipeline_name}`` routes and are refused as pipeline names.
``version`` and ``config_names`` are GET routes, which no ``{pipeline_name}`` route answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cam_server import __version__
from cam_server.common.log_ring import LogRing, install_log_ring
from cam_server.common.scripts_store import ScriptStore
from cam_server.pipeline.manager import PipelineManager
from cam_server.rest.envelope import install_error_handlers, json_body, ok
from cam_server.rest.script_routes import install_script_routes
from cam_server.rest.server_routes import install_server_routes

API = "/api/v1/pipeline"
_JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


def create_pipeline_app(manager: PipelineManager, logs: LogRing | None = None) -> FastAPI:
    """The FastAPI application serving ``/api/v1/pipeline`` (OpenAPI at /docs and /openapi.json) and the log
    records of ``logs`` (default: the root logger's ring, installed if needed)."""
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Server shutdown (SIGTERM/SIGINT): uvicorn re-raises the signal after this, so stop instances here.
        await run_in_threadpool(manager.close)

    # No slash redirects: DELETE /api/v1/pipeline/ (or an instance id that is an encoded "/") must not become
    # "stop all instances".
    app = FastAPI(title="cam_server pipeline server", version=__version__, lifespan=lifespan, redirect_slashes=False,
                  description="Create, configure and stop image-processing pipeline instances.")
    install_error_handlers(app)

    # --- fixed paths first ----------------------------------------------------------------------------------
    @app.get(API, summary="List saved pipelines")
    def get_pipelines() -> dict[str, Any]:
        return ok("List of pipelines.", pipelines=manager.get_pipeline_list())

    @app.post(API, summary="Create a private instance from a config", openapi_extra=_JSON_BODY)
    def create_from_config(config: dict = Depends(json_body),
                           instance_id: str | None = Query(None, description="requested unique instance id"),
                           ) -> dict[str, Any]:
        iid, stream, expanded = manager.create_instance_from_config(config, instance_id)
        return ok(f"Pipeline instance {iid} created.", instance_id=iid, stream=stream, config=expanded)

    @app.delete(API, summary="Stop all instances")
    def stop_all() -> dict[str, Any]:
        manager.stop_all_instances()
        return ok("All pipeline instances stopped.")

    @app.get(f"{API}/info", summary="Server info: active instances with config and statistics")
    def get_info() -> dict[str, Any]:
        return ok("Pipeline manager info.", info=manager.get_info())

    @app.get(f"{API}/camera", summary="List the cameras of the camera server")
    def get_cameras() -> dict[str, Any]:
        return ok("List of cameras.", cameras=manager.get_camera_list())

    @app.post(f"{API}/camera/{{camera_name}}/background", summary="Collect a background for the camera")
    def collect_background(camera_name: str, n_images: int | None = Query(None, description="images to average"),
                           ) -> dict[str, Any]:
        background_id = manager.collect_background(camera_name, n_images)
        return ok(f"Background collected for camera {camera_name}.", background_id=background_id)

    @app.get(f"{API}/camera/{{camera_name}}/background", summary="Latest background of the camera")
    def get_latest_background(camera_name: str) -> dict[str, Any]:
        return ok(f"Latest background for camera {camera_name}.",
                  background_id=manager.get_latest_background(camera_name))

    @app.get(f"{API}/instance/{{instance_id}}", summary="Instance stream (starts the shared instance if needed)")
    def get_instance_stream(instance_id: str) -> dict[str, Any]:
        return ok(f"Stream address for pipeline {instance_id}.", stream=manager.get_instance_stream(instance_id))

    @app.get(f"{API}/instance/{{instance_id}}/info", summary="Instance info")
    def get_instance_info(instance_id: str) -> dict[str, Any]:
        return ok(f"Pipeline instance {instance_id} info.", info=manager.get_instance_info(instance_id))

    @app.get(f"{API}/instance/{{instance_id}}/config", summary="Instance config")
    def get_instance_config(instance_id: str) -> dict[str, Any]:
        return ok(f"Pipeline instance {instance_id} config.", config=manager.get_instance_config(instance_id))

    @app.post(f"{API}/instance/{{instance_id}}/config", summary="Change the config of a private instance (incremental)",
              openapi_extra=_JSON_BODY)
    def set_instance_config(instance_id: str, config: dict = Depends(json_body)) -> dict[str, Any]:
        return ok(f"Pipeline instance {instance_id} config changed.",
                  config=manager.set_instance_config(instance_id, config))

    @app.get(f"{API}/instance/{{instance_id}}/message", summary="One message of the instance stream, as JSON")
    def get_instance_message(instance_id: str) -> Response:
        message = manager.get_instance_message(instance_id)
        body = ok(f"Message from pipeline instance {instance_id}.", message=message["data"],
                  pulse_id=message["pulse_id"], global_timestamp=message["global_timestamp"])
        # Serialised directly: FastAPI's generic encoder walks every pixel of a large image list far slower.
        return Response(json.dumps(body, allow_nan=False), media_type="application/json")

    # User scripts (scripts folder -u): /script, /script/<name>/script_bytes (see rest/script_routes.py).
    install_script_routes(app, API, ScriptStore(manager.scripts_folder))
    # /version, /config_names and /api/v1/logs (see rest/server_routes.py).
    install_server_routes(app, API, manager.get_pipeline_list, logs or install_log_ring())

    # --- named pipelines and instance ids -------------------------------------------------------------------
    @app.post(f"{API}/{{pipeline_name}}", summary="Create a private instance of a saved pipeline")
    def create_from_name(pipeline_name: str, instance_id: str | None = Query(None)) -> dict[str, Any]:
        iid, stream, expanded = manager.create_instance_from_name(pipeline_name, instance_id)
        return ok(f"Pipeline instance {iid} created.", instance_id=iid, stream=stream, config=expanded)

    @app.get(f"{API}/{{pipeline_name}}/config", summary="Saved pipeline config")
    def get_pipeline_config(pipeline_name: str) -> dict[str, Any]:
        return ok(f"Pipeline {pipeline_name} config.", config=manager.get_pipeline_config(pipeline_name))

    @app.post(f"{API}/{{pipeline_name}}/config", summary="Save a pipeline config", openapi_extra=_JSON_BODY)
    def save_pipeline_config(pipeline_name: str, config: dict = Depends(json_body)) -> dict[str, Any]:
        return ok(f"Pipeline {pipeline_name} config saved.",
                  config=manager.save_pipeline_config(pipeline_name, config))

    @app.delete(f"{API}/{{pipeline_name}}/config", summary="Delete a saved pipeline config")
    def delete_pipeline_config(pipeline_name: str) -> dict[str, Any]:
        manager.delete_pipeline_config(pipeline_name)
        return ok(f"Pipeline {pipeline_name} config deleted.")

    @app.delete(f"{API}/{{instance_id}}", summary="Stop an instance")
    def stop_instance(instance_id: str) -> dict[str, Any]:
        manager.stop_instance(instance_id)
        return ok(f"Pipeline instance {instance_id} stopped.")

    return app
