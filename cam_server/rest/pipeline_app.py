"""REST API of the pipeline server (README "Pipeline server API"), on top of :class:`PipelineManager`.

Handlers that block (process start/stop, camera server calls) are plain ``def`` so FastAPI runs them in its
threadpool and concurrent clients do not wait for each other; the slow ones among them (instance starts, camera
server calls) are bounded by the manager's ``blocking`` gate (429 beyond it), and the pool has that many threads
more than anyio's default, so the quick routes always find one. Waits for a stream (a background collection, one
instance message) are long requests (:mod:`cam_server.rest.long_requests`): run apart, de-duplicated, cancelled
when their clients are gone, at most ``max_long_requests`` at once. Fixed path segments (``info``, ``camera``,
``instance``, ``script``, ``background``) are declared before the ``{pipeline_name}`` routes and are refused as
pipeline names.
``version``, ``config_names`` and ``groups`` are GET routes, which no ``{pipeline_name}`` route answers.
Each route's answer, errors and request body are typed in the OpenAPI document by :mod:`cam_server.rest.schemas`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cam_server.camera.render import check_render_options, image_bytes_payload, render_png
from cam_server.common.errors import CamServerError, SourceUnavailable
from cam_server.common.log_ring import LogRing, install_log_ring
from cam_server.common.names import validate_name
from cam_server.common.safe_pickle import safe_loads
from cam_server.common.scripts_store import ScriptStore
from cam_server.pipeline.server.backgrounds import (
    MAX_IMAGE_BYTES_BODY,
    MAX_LIST_BODY,
    MAX_LIST_VALUES,
    array_from_image_bytes,
    array_from_list,
    check_n_images,
)
from cam_server.pipeline.server.manager import MESSAGE_TIMEOUT, PipelineManager
from cam_server.rest.auth import install_auth
from cam_server.rest.cached import CachedAnswers, CachedReads, info_reads
from cam_server.rest.envelope import (
    BodyTooLarge,
    install_error_handlers,
    json_body,
    ok,
    ok_response,
    parse_json_object,
    read_limited,
)
from cam_server.rest.long_requests import DEFAULT_MAX_LONG, JOB_WAIT_CAP_S, LongRequests, set_thread_pool_size
from cam_server.rest.metrics import install_metrics
from cam_server.rest.schemas import (
    PNG,
    BackgroundIdAnswer,
    BackgroundIdsAnswer,
    BackgroundList,
    BackgroundsAnswer,
    CamerasAnswer,
    ExitCodeAnswer,
    GroupsAnswer,
    ImageAnswer,
    ImageBytesBody,
    InstanceAnswer,
    JsonBodies,
    MessageAnswer,
    OkAnswer,
    PipelineConfigAnswer,
    PipelineInstanceInfoAnswer,
    PipelinesAnswer,
    PipelineServerInfoAnswer,
    StreamAnswer,
    documented,
    errors,
)
from cam_server.rest.script_routes import install_script_routes
from cam_server.rest.server_routes import install_server_routes
from cam_server.rest.view import PipelineTarget, install_view_routes
from cam_server.version import __version__

API = "/api/v1/pipeline"
_PICKLED = {"application/octet-stream": {"schema": {
    "type": "string", "format": "binary", "description": "pickle (protocol 0, as PSI's client sends) of the dict"}}}
_NEW_CONFIG = "A pipeline config: only its input (usually camera_name) is needed, every other key has a default."
_CONFIG_CHANGE = "Only the keys to change (merged into dict-valued parameters); null returns a key to its default."
# An image_bytes dict has a handful of values; its base64 string holds no ',', '[' or '{'.
_IMAGE_BYTES_JSON_VALUES = 64


def create_pipeline_app(manager: PipelineManager, logs: LogRing | None = None,
                        max_long_requests: int = DEFAULT_MAX_LONG, api_token: str | None = None) -> FastAPI:
    """The FastAPI application serving ``/api/v1/pipeline`` (OpenAPI at /docs and /openapi.json) and the log
    records of ``logs`` (default: the root logger's ring, installed if needed); at most ``max_long_requests``
    background collections / message waits run at once. With ``api_token``, POST, PUT and DELETE need it
    (rest/auth.py)."""
    jobs = LongRequests(max_long_requests, "pipeline")
    answers = CachedAnswers(lambda: manager.changes)  # the info routes' encoded answers (rest/cached.py)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        set_thread_pool_size(manager.blocking.limit)
        yield
        jobs.close()
        # Server shutdown (SIGTERM/SIGINT): uvicorn re-raises the signal after this, so stop instances here.
        await run_in_threadpool(manager.close)

    # No slash redirects: DELETE /api/v1/pipeline/ (or an instance id that is an encoded "/") must not become
    # "stop all instances".
    app = FastAPI(title="cam_server pipeline server", version=__version__, lifespan=lifespan, redirect_slashes=False,
                  description="Create, configure and stop image-processing pipeline instances.")
    install_error_handlers(app)
    bodies = JsonBodies()

    # --- fixed paths first ----------------------------------------------------------------------------------
    @app.get(API, summary="List saved pipelines (and the broken entries of the config folder)",
             response_model=documented(PipelinesAnswer), responses=errors())
    def get_pipelines() -> dict[str, Any]:
        pipelines, broken = manager.config_store.scan()
        return ok("List of pipelines.", pipelines=pipelines, broken=broken)

    @app.post(API, summary="Create a private instance from a config", response_model=documented(InstanceAnswer),
              responses=errors(400, 404, 409, 413, 429, 503),
              openapi_extra=bodies.declare("PipelineConfigBody", _NEW_CONFIG))
    def create_from_config(config: dict = Depends(json_body),
                           instance_id: str | None = Query(None, description="requested unique instance id"),
                           ) -> dict[str, Any]:
        iid, stream, expanded = manager.create_instance_from_config(config, instance_id)
        return ok(f"Pipeline instance {iid} created.", instance_id=iid, stream=stream, config=expanded)

    @app.delete(API, summary="Stop all instances", response_model=documented(OkAnswer), responses=errors())
    def stop_all() -> dict[str, Any]:
        manager.stop_all_instances()
        return ok("All pipeline instances stopped.")

    def server_info() -> bytes:
        return ok_response("Pipeline manager info.", info={**manager.get_info(), "long_requests": jobs.info(),
                                                           "blocking_requests": manager.blocking.info()}).body

    @app.get(f"{API}/info", summary="Server info: running instances with their info, version, cpu, memory",
             response_model=documented(PipelineServerInfoAnswer), responses=errors())
    async def get_info() -> Response:
        return Response(await answers.get(None, server_info), media_type="application/json")

    @app.get(f"{API}/groups", summary="Saved pipelines by group (the configs' 'group' key)",
             response_model=documented(GroupsAnswer), responses=errors())
    def get_pipeline_groups() -> dict[str, Any]:
        return ok("Pipeline groups.", groups=manager.get_pipeline_groups())

    @app.get(f"{API}/camera", summary="List the cameras of the camera server", response_model=documented(CamerasAnswer),
             responses=errors(429, 503))
    def get_cameras() -> dict[str, Any]:
        return ok("List of cameras.", cameras=manager.get_camera_list())

    # A long request: run apart; clients asking for the same camera and n_images share one collection.
    @app.post(f"{API}/camera/{{camera_name}}/background", summary="Collect a background for the camera",
              response_model=documented(BackgroundIdAnswer), responses=errors(400, 404, 409, 422, 429, 503))
    async def collect_background(camera_name: str, request: Request,
                                 n_images: int | None = Query(None, description="images to average"),
                                 ) -> dict[str, Any]:
        validate_name(camera_name, "camera name")
        n = check_n_images(n_images)
        background_id = await jobs.run(
            request, ("background", camera_name, n),
            lambda job: manager.collect_background(camera_name, n, keep_waiting=job.keep_waiting))
        return ok(f"Background collected for camera {camera_name}.", background_id=background_id)

    @app.get(f"{API}/camera/{{camera_name}}/background", summary="Latest background of the camera",
             response_model=documented(BackgroundIdAnswer), responses=errors(400, 404))
    def get_latest_background(camera_name: str) -> dict[str, Any]:
        return ok(f"Latest background for camera {camera_name}.",
                  background_id=manager.get_latest_background(camera_name))

    @app.get(f"{API}/camera/{{camera_name}}/backgrounds", summary="Background ids of the camera, sorted",
             response_model=documented(BackgroundIdsAnswer), responses=errors(400))
    def get_backgrounds(camera_name: str) -> dict[str, Any]:
        return ok(f"Backgrounds of camera {camera_name}.", background_ids=manager.get_background_ids(camera_name),
                  broken=manager.background_store.broken(camera_name))

    @app.get(API + "/background", summary="Every background id, the broken entries and the storage bounds",
             response_model=documented(BackgroundsAnswer), responses=errors())
    def get_all_backgrounds() -> dict[str, Any]:
        return ok("Backgrounds.", **manager.get_background_list())

    @app.post(API + "/background", summary="Store a background given as a JSON nested list",
              response_model=documented(BackgroundIdAnswer), responses=errors(400, 409, 413),
              openapi_extra=bodies.declare(BackgroundList, "The background id and its pixels."))
    async def set_background(request: Request) -> dict[str, Any]:
        raw = await read_limited(request, MAX_LIST_BODY)

        def store() -> tuple[str, bool]:
            _refuse_many_values(raw.count(b","), MAX_LIST_VALUES + 8, f"a background has at most {MAX_LIST_VALUES}")
            name, array = _list_background(parse_json_object(raw))
            return name, manager.save_background(name, array)

        name, written = await run_in_threadpool(store)
        return ok(_saved(name, written), background_id=name)

    # Backgrounds by id (":path" so that a name with "/" gets a clear "Invalid background id" answer, not a bare 404).
    @app.get(API + "/background/{background_name:path}/image", summary="Background as PNG (as the camera's /image)",
             response_class=Response, responses={**PNG, **errors(400, 404, 422)})
    def get_background_image(background_name: str, scale: float | None = None, min_value: float | None = None,
                             max_value: float | None = None, colormap: str = "gray") -> Response:
        check_render_options(scale, min_value, max_value, colormap)
        png = render_png(manager.get_background_image(background_name), scale=scale, min_value=min_value,
                         max_value=max_value, colormap=colormap)
        return Response(content=png, media_type="image/png")

    @app.get(API + "/background/{background_name:path}/image_bytes", summary="Background pixels (base64, C order)",
             response_model=documented(ImageAnswer), responses=errors(400, 404))
    def get_background_image_bytes(background_name: str) -> dict[str, Any]:
        image = image_bytes_payload(manager.get_background_image(background_name))
        return ok(f"Background {background_name}.", image=image)

    @app.delete(API + "/background/{background_name:path}",
                summary="Delete a background (409 while an instance uses it)",
                response_model=documented(BackgroundIdAnswer), responses=errors(400, 404, 409))
    def delete_background(background_name: str) -> dict[str, Any]:
        # ":path" so that a name with "/" gets a clear 400; but DELETE of a background's image routes is a 405.
        if background_name.endswith(("/image", "/image_bytes")):
            allowed = "GET, PUT" if background_name.endswith("/image_bytes") else "GET"
            raise StarletteHTTPException(405, headers={"Allow": allowed})
        moved = manager.delete_background(background_name)
        if moved is not None:
            return ok(f"Background {background_name} was a broken entry: moved aside to {moved}.",
                      background_id=background_name)
        return ok(f"Background {background_name} deleted.", background_id=background_name)

    @app.put(API + "/background/{background_name:path}/image_bytes", summary="Store a background from image bytes",
             response_model=documented(BackgroundIdAnswer), responses=errors(400, 409, 413),
             openapi_extra=bodies.declare(ImageBytesBody, "The image_bytes dict of a background, as JSON or pickled.",
                                          _PICKLED))
    async def set_background_image_bytes(background_name: str, request: Request) -> dict[str, Any]:
        validate_name(background_name, "background id")
        raw = await read_limited(request, MAX_IMAGE_BYTES_BODY)
        content_type = request.headers.get("content-type", "")

        def store() -> bool:
            array = array_from_image_bytes(_image_bytes_body(raw, content_type))
            return manager.save_background(background_name, array)

        written = await run_in_threadpool(store)
        return ok(_saved(background_name, written), background_id=background_name)

    # Trailing slash (PSI's client): distinct from POST {API}/{pipeline_name}, which never matches it.
    @app.post(f"{API}/instance/", summary="Stream of a shared (read-only) instance of a config, reused if running",
              response_model=documented(InstanceAnswer), responses=errors(400, 404, 409, 413, 429, 503),
              openapi_extra=bodies.declare("PipelineConfigBody", _NEW_CONFIG))
    def get_instance_stream_from_config(config: dict = Depends(json_body)) -> dict[str, Any]:
        iid, stream, expanded = manager.get_instance_stream_from_config(config)
        return ok(f"Shared pipeline instance {iid}.", instance_id=iid, stream=stream, config=expanded)

    @app.get(f"{API}/instance/{{instance_id}}", summary="Instance stream (starts the shared instance if needed)",
             response_model=documented(StreamAnswer), responses=errors(400, 404, 409, 429, 503))
    def get_instance_stream(instance_id: str) -> dict[str, Any]:
        return ok(f"Stream address for pipeline {instance_id}.", stream=manager.get_instance_stream(instance_id))

    @app.get(f"{API}/instance/{{instance_id}}/info", summary="Instance info",
             response_model=documented(PipelineInstanceInfoAnswer), responses=errors(400, 404))
    async def get_instance_info(instance_id: str) -> Response:
        def build() -> bytes:
            return ok_response(f"Pipeline instance {instance_id} info.",
                               info=manager.get_instance_info(instance_id)).body

        return Response(await answers.get(instance_id, build), media_type="application/json")

    @app.get(f"{API}/instance/{{instance_id}}/exitcode", summary="Exit code: null while running, then the code",
             response_model=documented(ExitCodeAnswer), responses=errors(400, 404))
    def get_instance_exit_code(instance_id: str) -> dict[str, Any]:
        return ok(f"Pipeline instance {instance_id} exit code.",
                  exitcode=manager.get_instance_exit_code(instance_id))

    @app.get(f"{API}/instance/{{instance_id}}/config", summary="Instance config",
             response_model=documented(PipelineConfigAnswer), responses=errors(400, 404))
    def get_instance_config(instance_id: str) -> dict[str, Any]:
        return ok(f"Pipeline instance {instance_id} config.", config=manager.get_instance_config(instance_id))

    @app.post(f"{API}/instance/{{instance_id}}/config", summary="Change the config of a private instance (incremental)",
              response_model=documented(PipelineConfigAnswer), responses=errors(400, 404, 409, 413, 429, 503),
              openapi_extra=bodies.declare("PipelineConfigChange", _CONFIG_CHANGE))
    def set_instance_config(instance_id: str, config: dict = Depends(json_body)) -> dict[str, Any]:
        return ok(f"Pipeline instance {instance_id} config changed.",
                  config=manager.set_instance_config(instance_id, config))

    # A long request: run apart; clients asking for a message of the same instance share one wait.
    @app.get(f"{API}/instance/{{instance_id}}/message", summary="One message of the instance stream, as JSON",
             response_model=documented(MessageAnswer), responses=errors(400, 404, 409, 429, 503))
    async def get_instance_message(instance_id: str, request: Request) -> Response:
        message = await jobs.run(
            request, ("message", instance_id),
            lambda job: manager.get_instance_message(instance_id, JOB_WAIT_CAP_S, keep_waiting=job.keep_waiting),
            timeout=MESSAGE_TIMEOUT, timeout_error=lambda: SourceUnavailable(
                f"No message from instance '{instance_id}' in {MESSAGE_TIMEOUT:.0f} s."))
        body = ok(f"Message from pipeline instance {instance_id}.", message=message["data"],
                  pulse_id=message["pulse_id"], global_timestamp=message["global_timestamp"])
        # Serialised directly: FastAPI's generic encoder walks every pixel of a large image list far slower.
        text = await run_in_threadpool(json.dumps, body, allow_nan=False)
        return Response(text, media_type="application/json")

    # User scripts (scripts folder -u): /script, /script/<name>/script_bytes (see rest/script_routes.py).
    install_script_routes(app, API, ScriptStore(manager.scripts_folder))
    # /version, /config_names and /api/v1/logs (see rest/server_routes.py).
    install_server_routes(app, API, manager.get_pipeline_list, logs or install_log_ring())

    # --- named pipelines and instance ids -------------------------------------------------------------------
    # POST and DELETE share their path (one resource in the document): ``name`` is a saved pipeline for POST, an
    # instance id for DELETE.
    @app.post(f"{API}/{{name}}", summary="Create a private instance of the saved pipeline 'name'",
              response_model=documented(InstanceAnswer), responses=errors(400, 404, 409, 429, 503))
    def create_from_name(name: str, instance_id: str | None = Query(None)) -> dict[str, Any]:
        iid, stream, expanded = manager.create_instance_from_name(name, instance_id)
        return ok(f"Pipeline instance {iid} created.", instance_id=iid, stream=stream, config=expanded)

    @app.get(f"{API}/{{pipeline_name}}/config", summary="Saved pipeline config",
             response_model=documented(PipelineConfigAnswer), responses=errors(400, 404))
    def get_pipeline_config(pipeline_name: str) -> dict[str, Any]:
        return ok(f"Pipeline {pipeline_name} config.", config=manager.get_pipeline_config(pipeline_name))

    @app.post(f"{API}/{{pipeline_name}}/config", summary="Save a pipeline config",
              response_model=documented(PipelineConfigAnswer), responses=errors(400, 404, 413, 429, 503),
              openapi_extra=bodies.declare("PipelineConfigBody", _NEW_CONFIG))
    def save_pipeline_config(pipeline_name: str, config: dict = Depends(json_body)) -> dict[str, Any]:
        return ok(f"Pipeline {pipeline_name} config saved.",
                  config=manager.save_pipeline_config(pipeline_name, config))

    @app.delete(f"{API}/{{pipeline_name}}/config",
                summary="Delete a saved pipeline config (a broken entry: moved aside)",
                response_model=documented(OkAnswer), responses=errors(400, 404, 409))
    def delete_pipeline_config(pipeline_name: str) -> dict[str, Any]:
        moved = manager.delete_pipeline_config(pipeline_name)
        if moved is not None:
            return ok(f"Pipeline {pipeline_name} was a broken entry: moved aside to {moved}.")
        return ok(f"Pipeline {pipeline_name} config deleted.")

    @app.delete(f"{API}/{{name}}", summary="Stop the instance 'name' (an instance id)",
                response_model=documented(OkAnswer), responses=errors(400, 404))
    def stop_instance(name: str) -> dict[str, Any]:
        manager.stop_instance(name)
        return ok(f"Pipeline instance {name} stopped.")

    bodies.install(app)
    # The live view: GET /, /view/<instance_id> and its WebSocket (see rest/view/routes.py).
    install_view_routes(app, PipelineTarget(manager))
    # GET /metrics (Prometheus) and the REST request counters (see rest/metrics.py).
    # Before the metrics: the cached info answers (rest/cached.py) are counted and timed too.
    app.add_middleware(CachedReads, answers=answers,
                       reads=info_reads(app.routes, f"{API}/info", f"{API}/instance/", "/info"))
    install_metrics(app, "pipeline", manager.metrics_instances)
    install_auth(app, api_token)
    return app


def _image_bytes_body(raw: bytes, content_type: str) -> Any:
    """The dict of a PUT image_bytes body: JSON (by content type, or a body starting with '{', which no pickle does),
    else a pickle read by the restricted unpickler, never by ``pickle.loads``."""
    if content_type.split(";")[0].strip().lower() == "application/json" or raw.lstrip()[:1] == b"{":
        count = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        _refuse_many_values(count, _IMAGE_BYTES_JSON_VALUES, "an image_bytes dict has a handful")
        return parse_json_object(raw)
    return safe_loads(raw)


def _list_background(body: dict[str, Any]) -> tuple[str, Any]:
    """``(filename, array)`` of a ``POST /background`` body ``{"filename": str, "data": nested list}``."""
    unknown = sorted(k for k in body if k not in ("filename", "data"))
    if unknown or "filename" not in body or "data" not in body:
        raise CamServerError('Invalid background: the body must be {"filename": name, "data": nested list of numbers}'
                             + (f"; unknown key(s) {', '.join(unknown)[:200]}" if unknown else "") + ".")
    name = validate_name(body["filename"], "background id")
    return name, array_from_list(body["data"])


def _refuse_many_values(count: int, limit: int, what: str) -> None:
    """Refuse (413) a JSON body of about ``count`` values (counted in its text) before parsing it: parsed, each value
    costs tens of bytes of Python objects, far more than its text."""
    if count > limit:
        raise BodyTooLarge(f"Request body has too many values (~{count}; {what}).")


def _saved(name: str, written: bool) -> str:
    return f"Background {name} saved." if written else f"Background {name} already holds this image (unchanged)."
