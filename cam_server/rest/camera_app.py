"""REST API of the camera server (README "Camera server API") plus aliases, groups and raw image bytes.

Every answer is the JSON envelope (``state``, ``status``, one specific field) except ``/image`` (PNG). Quick
work runs in FastAPI's thread pool (plain ``def`` handlers). Waits for a frame (``image``, ``image_bytes``,
``geometry`` of a non-simulated camera) and online checks are long requests (:mod:`cam_server.rest.long_requests`):
run apart, one per camera however many clients wait, cancelled when their clients are gone, at most
``max_long_requests`` at once. Instance starts stay in the thread pool, bounded by the manager's ``blocking`` gate;
the pool has that many threads more than anyio's default, so the quick routes always find one.
Fixed paths (``/info``, ``/aliases``, ``/groups``, ``/script``, ``/version``,
``/config_names``) are declared before ``/{camera_name}`` so they are never taken as camera names.
Each route's answer, errors and request body are typed in the OpenAPI document by :mod:`cam_server.rest.schemas`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from cam_server.camera.manager import FRAME_TIMEOUT, MAX_FRAME_TIMEOUT, CameraInstanceManager
from cam_server.camera.render import check_render_options, image_bytes_payload, render_png
from cam_server.common.errors import CamServerError
from cam_server.common.log_ring import LogRing, install_log_ring
from cam_server.common.scripts_store import ScriptStore
from cam_server.common.usage import server_usage
from cam_server.processing.camera_transforms import camera_geometry
from cam_server.rest.auth import install_auth
from cam_server.rest.cached import CachedAnswers, CachedReads, info_reads
from cam_server.rest.envelope import install_error_handlers, json_body, ok, ok_response
from cam_server.rest.long_requests import DEFAULT_MAX_LONG, LongRequests, set_thread_pool_size
from cam_server.rest.metrics import install_metrics
from cam_server.rest.schemas import (
    PNG,
    AliasesAnswer,
    CameraConfigAnswer,
    CameraListAnswer,
    CamerasAnswer,
    CameraServerInfoAnswer,
    CameraStreamAnswer,
    GeometryAnswer,
    GroupsAnswer,
    ImageAnswer,
    JsonBodies,
    OkAnswer,
    OnlineAnswer,
    ReleaseAnswer,
    SharedMemoryAnswer,
    documented,
    errors,
)
from cam_server.rest.script_routes import install_script_routes
from cam_server.rest.server_routes import install_server_routes
from cam_server.rest.view import CameraTarget, install_view_routes
from cam_server.version import __version__

API = "/api/v1/cam"


def create_camera_app(manager: CameraInstanceManager, scripts: ScriptStore | None = None,
                      logs: LogRing | None = None, max_long_requests: int = DEFAULT_MAX_LONG,
                      api_token: str | None = None) -> FastAPI:
    """The FastAPI app serving ``manager`` (instances are stopped when the app shuts down), the user scripts
    folder ``scripts`` (``-u``; without one the script routes answer 404), the log records of ``logs`` (default:
    the root logger's ring, installed if needed); at most ``max_long_requests`` frame waits / online checks run at
    once. With ``api_token``, POST, PUT and DELETE need it (rest/auth.py)."""
    jobs = LongRequests(max_long_requests, "camera")
    answers = CachedAnswers(lambda: manager.changes)  # the info route's encoded answer (rest/cached.py)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        set_thread_pool_size(manager.blocking.limit)
        yield
        jobs.close()
        await run_in_threadpool(manager.close)

    # No slash redirects: DELETE /api/v1/cam/ (or a name that is an encoded "/") must not become "stop all cameras".
    app = FastAPI(title="cam_server camera server", version=__version__, lifespan=lifespan, redirect_slashes=False,
                  description="Cameras as bsread streams: configs, streams, images.")
    install_error_handlers(app)
    bodies = JsonBodies()
    store = manager.store

    @app.get(API, summary="List the cameras (and the broken entries of the config folder)",
             response_model=documented(CameraListAnswer), responses=errors())
    def get_cameras() -> dict[str, Any]:
        cameras, broken = store.scan()
        return ok("List of cameras.", cameras=cameras, broken=broken)

    @app.delete(API, summary="Stop all camera instances", response_model=documented(OkAnswer), responses=errors())
    def stop_all_instances() -> dict[str, Any]:
        manager.stop_all_instances()
        return ok("All camera instances have been stopped.")

    @app.get(f"{API}/info", summary="Server info: running instances with their info, version, cpu, memory",
             response_model=documented(CameraServerInfoAnswer), responses=errors())
    async def get_server_info() -> Response:
        return Response(await answers.get(None, server_info), media_type="application/json")

    def server_info() -> bytes:
        return ok_response("Camera manager info.", info={**manager.info(), **server_usage(),
                                                         "long_requests": jobs.info(),
                                                         "blocking_requests": manager.blocking.info()}).body

    @app.get(f"{API}/aliases", summary="Camera aliases", response_model=documented(AliasesAnswer),
             responses=errors())
    def get_aliases() -> dict[str, Any]:
        return ok("Camera aliases.", aliases=store.aliases())

    @app.get(f"{API}/groups", summary="Camera groups", response_model=documented(GroupsAnswer), responses=errors())
    def get_groups() -> dict[str, Any]:
        return ok("Camera groups.", groups=store.groups())

    @app.get(f"{API}/groups/{{group}}", summary="Cameras of a group", response_model=documented(CamerasAnswer),
             responses=errors(400, 404))
    def get_group(group: str) -> dict[str, Any]:
        return ok(f"Cameras of group '{group}'.", cameras=store.group_cameras(group))

    # User scripts (-u): /script, /script/<name>/script_bytes (see rest/script_routes.py), before /{camera_name}.
    install_script_routes(app, API, scripts)
    # /version, /config_names and /api/v1/logs (see rest/server_routes.py), before /{camera_name}.
    install_server_routes(app, API, store.names, logs or install_log_ring())

    @app.get(f"{API}/{{camera_name}}", summary="Stream address of a camera (starts its instance if needed)",
             response_model=documented(CameraStreamAnswer), responses=errors(400, 404, 429, 503))
    def get_instance_stream(camera_name: str, reserve: bool = False) -> dict[str, Any]:
        """The camera does not stop for lack of clients until a client connects; with ``reserve=true`` until the
        ``reservation`` of the answer is released (``DELETE .../reservation/<id>``; both: at most 30 s)."""
        if not reserve:
            return ok(f"Stream address for camera '{camera_name}'.", stream=manager.get_instance_stream(camera_name))
        stream, reservation, frame_bytes = manager.reserve_stream(camera_name)
        return ok(f"Stream address for camera '{camera_name}', reserved until released.", stream=stream,
                  reservation=reservation, frame_bytes=frame_bytes)

    @app.delete(f"{API}/{{camera_name}}/reservation/{{reservation}}", summary="Release a stream reservation (its "
                "client connected)", response_model=documented(ReleaseAnswer), responses=errors(400, 404))
    def release_stream(camera_name: str, reservation: str) -> dict[str, Any]:
        released = manager.release_stream(camera_name, reservation)
        return ok(f"Reservation {reservation} of camera '{camera_name}' "
                  + ("released." if released else "had ended already."), released=released)

    @app.delete(f"{API}/{{camera_name}}", summary="Stop a camera's instance", response_model=documented(OkAnswer),
                responses=errors(400, 404))
    def stop_instance(camera_name: str) -> dict[str, Any]:
        manager.stop_instance(camera_name)
        return ok(f"Camera '{camera_name}' stopped.")

    @app.get(f"{API}/{{camera_name}}/config", summary="Camera config",
             response_model=documented(CameraConfigAnswer), responses=errors(400, 404))
    def get_camera_config(camera_name: str) -> dict[str, Any]:
        return ok(f"Camera '{camera_name}' configuration.", config=store.load(camera_name).to_dict())

    @app.post(f"{API}/{{camera_name}}/config", summary="Save a camera config (a running instance follows it)",
              response_model=documented(CameraConfigAnswer), responses=errors(400, 409, 413),
              openapi_extra=bodies.declare("CameraConfigBody", "The whole camera config (it replaces the saved one)."))
    async def set_camera_config(camera_name: str, request: Request) -> dict[str, Any]:
        body = await json_body(request)

        def save() -> dict[str, Any]:
            parsed = store.save(camera_name, body)
            manager.config_changed(parsed.name or camera_name, parsed)
            return parsed.to_dict()

        config = await run_in_threadpool(save)
        return ok(f"Camera '{camera_name}' configuration saved.", config=config)

    @app.delete(f"{API}/{{camera_name}}/config", summary="Delete a camera config (stops its instance; a broken entry: "
                "moved aside)", response_model=documented(OkAnswer), responses=errors(400, 404, 409))
    def delete_camera_config(camera_name: str) -> dict[str, Any]:
        camera = store.entry(camera_name)
        manager.stop_if_running(camera)
        camera, moved = store.remove(camera)
        if moved is not None:
            return ok(f"Camera '{camera}' was a broken entry: moved aside to {moved}.")
        return ok(f"Camera '{camera}' configuration deleted.")

    # Long requests: run apart, keyed by camera (image, image_bytes and geometry share one wait for a frame).
    async def next_frame(request: Request, camera_name: str, timeout: float) -> tuple[Any, dict[str, Any]]:
        timeout = _timeout(timeout)
        return await jobs.run(
            request, ("frame", camera_name),
            lambda job: manager.get_frame(camera_name, MAX_FRAME_TIMEOUT, keep_waiting=job.keep_waiting),
            timeout=timeout, timeout_error=lambda: manager.no_frame_error(camera_name, timeout))

    @app.get(f"{API}/{{camera_name}}/is_online", summary="Is the camera online (without starting its stream)",
             response_model=documented(OnlineAnswer), responses=errors(400, 404, 429))
    async def is_camera_online(camera_name: str, request: Request) -> dict[str, Any]:
        online, reason = await jobs.run(request, ("online", camera_name), lambda _: manager.is_online(camera_name))
        return ok(reason, online=online)

    @app.get(f"{API}/{{camera_name}}/shared_memory",
             summary="Stream address and the shared-memory path of a camera's frames (starts its instance if needed)",
             response_model=documented(SharedMemoryAnswer), responses=errors(400, 404, 429, 503))
    def get_shared_memory(camera_name: str, reserve: bool | None = None) -> dict[str, Any]:
        """Reserves the stream as ``GET .../<camera>`` does (``reserve=true``: held until released, the answer's
        ``reservation``); ``reserve=false``: not reserved again (a pipeline instance whose server reserved it)."""
        return ok(f"Stream and shared memory of camera '{camera_name}'.",
                  **manager.get_shared_memory(camera_name, reserve))

    @app.get(f"{API}/{{camera_name}}/geometry", summary="[width, height] of the camera's images",
             response_model=documented(GeometryAnswer), responses=errors(400, 404, 422, 429, 503))
    async def get_camera_geometry(camera_name: str, request: Request, timeout: float = FRAME_TIMEOUT,
                                  ) -> dict[str, Any]:
        config = await run_in_threadpool(store.load, camera_name)
        if config.source_type == "simulation":
            from cam_server.camera.sources.simulation import simulation_geometry

            width, height = simulation_geometry(config)
            geometry = camera_geometry(width, height, rotate=config.rotate, binning_x=config.binning_x,
                                       binning_y=config.binning_y, roi=config.roi)
        else:
            image, _ = await next_frame(request, camera_name, timeout)
            geometry = (image.shape[1], image.shape[0])
        return ok(f"Geometry of camera '{camera_name}'.", geometry=[int(geometry[0]), int(geometry[1])])

    @app.get(f"{API}/{{camera_name}}/image", summary="The next image of the camera as PNG", response_class=Response,
             responses={**PNG, **errors(400, 404, 422, 429, 503)})
    async def get_camera_image(camera_name: str, request: Request, scale: float | None = None,
                               min_value: float | None = None, max_value: float | None = None,
                               colormap: str = "gray", timeout: float = FRAME_TIMEOUT) -> Response:
        check_render_options(scale, min_value, max_value, colormap)
        image, _ = await next_frame(request, camera_name, timeout)
        png = await run_in_threadpool(lambda: render_png(image, scale=scale, min_value=min_value,
                                                         max_value=max_value, colormap=colormap))
        return Response(content=png, media_type="image/png")

    @app.get(f"{API}/{{camera_name}}/image_bytes", summary="The next image of the camera: raw pixels (base64)",
             response_model=documented(ImageAnswer), responses=errors(400, 404, 422, 429, 503))
    async def get_camera_image_bytes(camera_name: str, request: Request, timeout: float = FRAME_TIMEOUT,
                                     ) -> dict[str, Any]:
        image, header = await next_frame(request, camera_name, timeout)
        payload = await run_in_threadpool(image_bytes_payload, image, header)
        return ok(f"Image of camera '{camera_name}'.", image=payload)

    bodies.install(app)
    # The live view: GET /, /view/<camera_name> and its WebSocket (see rest/view/routes.py).
    install_view_routes(app, CameraTarget(manager))
    # GET /metrics (Prometheus) and the REST request counters (see rest/metrics.py).
    # Before the metrics: the cached info answers (rest/cached.py) are counted and timed too.
    app.add_middleware(CachedReads, answers=answers, reads=info_reads(app.routes, f"{API}/info"))
    install_metrics(app, "camera", manager.metrics_instances)
    install_auth(app, api_token)
    return app


def _timeout(value: float) -> float:
    """The wait for a frame (query ``timeout``, seconds)."""
    if not 0 < value <= MAX_FRAME_TIMEOUT:
        raise CamServerError(f"Invalid timeout {value}: must be > 0 and <= {MAX_FRAME_TIMEOUT:g} seconds.")
    return value
