"""The FastAPI apps of the two managers: every route of a single camera / pipeline server plus ``/api/v1/proxy``.

A manager is two apps behind one dispatcher (:class:`Dispatch`): the single server's own app on the manager's
config folders answers what needs no instance (configs, aliases, groups, backgrounds, scripts, version, logs,
metrics), and the cluster app answers every route that starts, reads or stops an instance, by placing it on a
worker (:mod:`cam_server.cluster.placement`) and forwarding to the worker that runs it. Configs, backgrounds and
user scripts go to the worker with each start. So ``CamClient`` and ``PipelineClient`` work unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
import requests
from fastapi import Depends, FastAPI, Query, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cam_server.camera.store import CameraConfigStore
from cam_server.client.proxy_client import PROXY
from cam_server.cluster.manager import ClusterManager, WorkerError
from cam_server.cluster.placement import Request as Placing
from cam_server.cluster.placement import host_of
from cam_server.cluster.state import InstanceRecord
from cam_server.common.errors import CamServerError, Conflict, NotFound, SourceUnavailable
from cam_server.common.scripts_store import ScriptStore
from cam_server.common.usage import server_usage
from cam_server.pipeline.config import expand_config
from cam_server.pipeline.server.manager import PipelineManager
from cam_server.rest.camera_app import API as CAMERA_API
from cam_server.rest.envelope import error_response, install_error_handlers, json_body, ok, ok_response
from cam_server.rest.pipeline_app import API as PIPELINE_API
from cam_server.rest.server_routes import LOGS
from cam_server.version import __version__

CAM, PIPE = CAMERA_API, PIPELINE_API
_CAM_FIXED = {"info", "aliases", "groups", "script", "version", "config_names"}
_PIPE_FIXED = {"info", "groups", "camera", "background", "instance", "script", "version", "config_names"}


class Dispatch:
    """ASGI: requests ``is_cluster(method, path)`` picks go to ``cluster``, the rest (and the lifespan) to
    ``local``."""

    def __init__(self, cluster: ASGIApp, local: ASGIApp, is_cluster: Callable[[str, str], bool]) -> None:
        self.cluster, self.local, self.is_cluster = cluster, local, is_cluster

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.is_cluster(scope.get("method", "GET"), scope["path"]):
            await self.cluster(scope, receive, send)
        else:
            await self.local(scope, receive, send)


def _view(path: str) -> bool:
    return path == "/" or path.startswith("/view")


def camera_routes_to_cluster(method: str, path: str) -> bool:
    """Which camera routes start, read or stop an instance (the cluster app's), the others are the local app's."""
    if path.startswith(PROXY) or _view(path) or path == f"{CAM}/info" or (path == CAM and method == "DELETE"):
        return True
    match = re.fullmatch(rf"{CAM}/([^/]+)(/[^/]+)?(/[^/]+)?", path)
    if match is None or match.group(1) in _CAM_FIXED:
        return False
    if match.group(3) is not None:  # only DELETE .../reservation/<id> has three parts
        return match.group(2) == "/reservation" and method == "DELETE"
    rest = match.group(2)
    return ((rest is None and method in ("GET", "DELETE")) or (rest == "/config" and method in ("POST", "DELETE"))
            or rest in ("/image", "/image_bytes", "/geometry", "/shared_memory"))


def pipeline_routes_to_cluster(method: str, path: str) -> bool:
    """Which pipeline routes start, read or stop an instance (the cluster app's)."""
    if path.startswith(PROXY) or _view(path) or path == f"{PIPE}/info" or path.startswith(f"{PIPE}/instance/"):
        return True
    if path == PIPE:
        return method in ("POST", "DELETE")
    match = re.fullmatch(rf"{PIPE}/([^/]+)", path)
    return match is not None and match.group(1) not in _PIPE_FIXED and method in ("POST", "DELETE")


def _raw(response: requests.Response) -> Response:
    """A worker's answer passed on as it is (status, body, content type)."""
    return Response(content=response.content, status_code=response.status_code,
                    media_type=response.headers.get("content-type"))


def _cluster_app(title: str) -> FastAPI:
    app = FastAPI(title=title, version=__version__, redirect_slashes=False)
    install_error_handlers(app)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_: Request, exc: redis.RedisError) -> Response:
        return error_response(503, f"The cluster's Redis cannot be used: {exc}")

    @app.api_route("/", methods=["GET"], include_in_schema=False)
    @app.api_route("/view/{rest:path}", methods=["GET"], include_in_schema=False)
    def no_view() -> Response:
        return error_response(404, "The live view is served by the workers (GET /api/v1/proxy/info names them), "
                                   "not by the manager.")

    return app


def install_manager_routes(app: FastAPI, cm: ClusterManager, root: str, what: str, stopped_all: str,
                           stop_instance: Callable[[str], Any]) -> None:
    """``DELETE <root>`` (every instance of every worker), ``GET <root>/info`` (aggregated) and the proxy routes."""

    @app.delete(root)
    def stop_all_instances() -> dict[str, Any]:
        cm.stop_all()
        return ok(stopped_all)

    @app.get(f"{root}/info")
    def get_server_info() -> Response:
        """The running instances of every alive worker (each with its ``host``) and the manager's own version,
        cpu and memory."""
        merged, answers, _ = cm.merged_info(("active_instances", "finished_instances"))
        return ok_response(f"{what} manager info.", info={**merged, **server_usage(), "workers": list(answers)})

    install_proxy_routes(app, cm, stop_instance)


def install_proxy_routes(app: FastAPI, cm: ClusterManager, stop_instance: Callable[[str], Any]) -> None:
    """``/api/v1/proxy``: PSI's manager routes (psi-interface.md §4) plus ``/proxy/lost``."""

    @app.get(f"{PROXY}/servers")
    def get_servers() -> dict[str, Any]:
        return ok("Servers.", **cm.servers_info())

    @app.get(f"{PROXY}/status")
    def get_status() -> dict[str, Any]:
        return ok("Status.", servers=cm.status_info())

    @app.get(f"{PROXY}/info")
    def get_info() -> dict[str, Any]:
        return ok("Cluster info.", info=cm.info())

    @app.get(f"{PROXY}/lost")
    def get_lost() -> dict[str, Any]:
        return ok("Instances lost with their worker.", lost=cm.state.lost())

    @app.get(f"{PROXY}/version")
    def get_version() -> dict[str, Any]:
        return ok("Version.", version=__version__)

    @app.get(f"{PROXY}/config")
    def get_config() -> dict[str, Any]:
        return ok("Workers file.", config=cm.state.servers_file() or {})

    @app.post(f"{PROXY}/config")
    def set_config(config: dict = Depends(json_body)) -> dict[str, Any]:
        cm.set_servers_file(config)
        return ok("Workers file saved.", config=cm.state.servers_file())

    @app.get(f"{PROXY}/permanent")
    def get_permanent() -> dict[str, Any]:
        return ok("Permanent instances.", permanent_instances=cm.state.permanent())

    @app.post(f"{PROXY}/permanent")
    def set_permanent(config: dict = Depends(json_body)) -> dict[str, Any]:
        cm.set_permanent(config)
        cm.ensure_permanent()
        return ok("Permanent instances saved.", permanent_instances=cm.state.permanent())

    # By index or URL (a URL has slashes: the /txt route first).
    @app.get(f"{PROXY}/server/logs/{{index:path}}/txt")
    def get_server_logs_txt(index: str) -> Response:
        return _raw(cm.call("GET", cm.worker_url(index), f"{LOGS}/txt", root="", timeout=10))

    @app.get(f"{PROXY}/server/logs/{{index:path}}")
    def get_server_logs(index: str) -> Response:
        return _raw(cm.call("GET", cm.worker_url(index), LOGS, root="", timeout=10))

    @app.delete(f"{PROXY}/server/{{server:path}}")
    def stop_server_instances(server: str) -> dict[str, Any]:
        url = cm.worker_url(server)
        return ok(f"Instances of {url} stopped.", instances=cm.stop_worker(url))

    @app.delete(f"{PROXY}/{{instance_id}}")
    def delete_instance(instance_id: str) -> dict[str, Any]:
        stop_instance(instance_id)
        return ok(f"Instance {instance_id} stopped.")


def for_kind(config: dict[str, Any], kind: str) -> dict[str, Any]:
    """A permanent instance streams whether or not anybody reads it: no client timeout (0 disables it)."""
    return {**config, "no_client_timeout": 0} if kind == "permanent" else config


# --- camera manager ---------------------------------------------------------------------------------------------
def create_camera_manager_app(cm: ClusterManager, store: CameraConfigStore, local: ASGIApp) -> ASGIApp:
    """The camera manager: ``local`` (the camera app on the manager's config folder) for configs, the cluster for
    streams, images and instance info."""
    app = _cluster_app("cam_server camera manager")

    def running(camera: str, kind: str | None = None, newer_than: float = 0.0) -> tuple[InstanceRecord, bool]:
        """The camera's record, placed and started if needed; True when this call started it."""
        started = []

        def start(worker: str) -> InstanceRecord:
            record_kind = kind or _camera_kind(camera)
            config = for_kind(store.load(camera).to_dict(), record_kind)
            port = cm.pinned_port(Placing(camera, camera), worker)  # "name:port" in the workers file
            cm.call_ok("POST", worker, f"/{camera}/config", json={**config, "port": port} if port else config)
            stream = cm.call_ok("GET", worker, f"/{camera}")["stream"]
            started.append(worker)
            return InstanceRecord(camera, worker, stream, config, record_kind, name=camera)

        record = cm.place(Placing(camera, camera), start, existing=lambda r: r.started_at > newer_than)
        return record, bool(started)

    def stream_answer(name: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """The worker's answer to the stream request of camera ``name`` (``params``: e.g. ``reserve``), the camera
        placed and started if needed: placed anew when its worker died during the request (a failover)."""
        camera = store.resolve(name)
        for attempt in range(2):
            record, started = running(camera)
            if started and not params:
                return {"stream": record.stream}
            try:
                answer = worker_stream(record, camera, params)
            except SourceUnavailable:
                if attempt or cm.alive(record.host):
                    raise
                continue  # its worker was declared dead meanwhile: the next running() places the camera anew
            if answer["stream"] != record.stream:
                record.stream = answer["stream"]
                cm.state.put_instance(record)
            return answer
        raise AssertionError("unreachable")

    def worker_stream(record: InstanceRecord, camera: str, params: dict[str, str] | None) -> dict[str, Any]:
        try:  # the worker restarts a camera that stopped for lack of clients, and reserves the stream for us
            return cm.call_ok("GET", record.host, f"/{camera}", params=params)
        except WorkerError as exc:
            if exc.status_code != 404:
                raise
            cm.call_ok("POST", record.host, f"/{camera}/config",
                       json=for_kind(store.load(camera).to_dict(), record.kind))
            return cm.call_ok("GET", record.host, f"/{camera}", params=params)

    def stream_of(name: str) -> str:
        return str(stream_answer(name)["stream"])

    def _camera_kind(camera: str) -> str:
        return "permanent" if camera in cm.state.permanent().values() else "camera"

    def restart_permanent(_: str, name: str) -> None:
        running(store.resolve(name), "permanent", newer_than=time.time())

    cm.restart_permanent = restart_permanent

    def stop_camera(name: str) -> None:
        try:
            camera = store.resolve(name)
        except NotFound:
            camera = name
        try:
            cm.stop(camera)
        except NotFound:
            raise NotFound(f"Camera instance '{name}' is not running.") from None

    install_manager_routes(app, cm, CAM, "Camera", "All camera instances have been stopped.", stop_camera)

    @app.get(f"{CAM}/{{camera_name}}")
    def get_instance_stream(camera_name: str, reserve: bool = False) -> dict[str, Any]:
        if not reserve:
            return ok(f"Stream address for camera '{camera_name}'.", stream=stream_of(camera_name))
        answer = stream_answer(camera_name, {"reserve": "true"})
        return ok(f"Stream address for camera '{camera_name}', reserved until released.", stream=answer["stream"],
                  reservation=answer.get("reservation"), frame_bytes=answer.get("frame_bytes", 0))

    @app.delete(f"{CAM}/{{camera_name}}/reservation/{{reservation}}")
    def release_stream(camera_name: str, reservation: str) -> Any:
        """Released on the worker that runs the camera (a camera that moved or ended: nothing held any more)."""
        camera = store.resolve(camera_name)
        record = cm.state.instance(camera)
        if record is None:
            return ok("The camera is not running: nothing was held.", released=False)
        return _raw(cm.call("DELETE", record.host, f"/{camera}/reservation/{reservation}"))

    @app.delete(f"{CAM}/{{camera_name}}")
    def stop_instance(camera_name: str) -> dict[str, Any]:
        stop_camera(camera_name)
        return ok(f"Camera '{camera_name}' stopped.")

    @app.post(f"{CAM}/{{camera_name}}/config")
    def set_camera_config(camera_name: str, body: dict = Depends(json_body)) -> dict[str, Any]:
        parsed = store.save(camera_name, body)
        camera = parsed.name or camera_name
        config = parsed.to_dict()
        record = cm.state.instance(camera)
        if record is not None and cm.alive(record.host):  # the running instance follows it, on its worker
            record.config = for_kind(config, record.kind)
            cm.call_ok("POST", record.host, f"/{camera}/config", json=record.config)
            cm.state.put_instance(record)
        return ok(f"Camera '{camera_name}' configuration saved.", config=config)

    @app.delete(f"{CAM}/{{camera_name}}/config")
    def delete_camera_config(camera_name: str) -> dict[str, Any]:
        camera = store.entry(camera_name)
        if cm.state.instance(camera) is not None:
            cm.stop(camera)
        camera, moved = store.remove(camera)
        if moved is not None:
            return ok(f"Camera '{camera}' was a broken entry: moved aside to {moved}.")
        return ok(f"Camera '{camera}' configuration deleted.")

    @app.get(f"{CAM}/{{camera_name}}/{{what}}")
    def camera_image(camera_name: str, what: str, request: Request) -> Response:
        camera = store.resolve(camera_name)
        stream_of(camera)
        record = cm.state.instance(camera)
        if record is None:
            raise NotFound(f"Camera instance '{camera_name}' is not running.")
        return _raw(cm.call("GET", record.host, f"/{camera}/{what}", params=dict(request.query_params)))

    return Dispatch(app, local, camera_routes_to_cluster)


# --- pipeline manager -------------------------------------------------------------------------------------------
def create_pipeline_manager_app(cm: ClusterManager, local_manager: PipelineManager, local: ASGIApp) -> ASGIApp:
    """The pipeline manager: ``local`` (the pipeline app on the manager's folders) for saved configs,
    backgrounds, scripts; the cluster for instances."""
    app = _cluster_app("cam_server pipeline manager")
    cameras = cm.state.of_kind("camera")
    scripts = ScriptStore(local_manager.scripts_folder)

    def lost_or_missing(iid: str) -> NotFound:
        lost = cm.state.lost().get(iid)
        if lost is not None:
            return NotFound(f"Instance '{iid}' was lost: {lost['cause']}.")
        return NotFound(f"Instance '{iid}' is not running and there is no saved pipeline of that name.")

    def push_assets(worker: str, config: dict[str, Any]) -> None:
        """The background and user script the config names, sent to the worker before the start."""
        config = expand_config(config)  # also the README spelling "background_id"
        background = config.get("image_background")
        if background:
            try:
                image = local_manager.get_background_image(background)
            except CamServerError:
                image = None  # the worker's answer tells
            if image is not None:
                payload = {"bytes": base64.b64encode(image.tobytes()).decode("ascii"), "shape": list(image.shape),
                           "dtype": image.dtype.name}
                cm.call_ok("PUT", worker, f"/background/{background}/image_bytes", json=payload)
        function = config.get("function")
        if isinstance(function, str) and "/" not in function:
            for name in (function, f"{function}.py"):
                try:
                    path = scripts.path(name)
                except CamServerError:
                    continue
                if path.is_file():
                    cm.call_ok("PUT", worker, f"/script/{path.name}/script_bytes", data=path.read_bytes())
                    break

    def resolve(config: dict[str, Any]) -> dict[str, Any]:
        """``input_pipeline`` / ``output_pipeline`` as ``input_stream`` / ``output_stream`` (starting them)."""
        config = dict(config)
        source = config.pop("input_pipeline", None)
        if source:
            record = shared_by_name(source)
            config["input_stream"] = record.stream
            if record.config.get("mode") == "PUSH" and config.get("input_mode", "SUB") == "SUB":
                config["input_mode"] = "PULL"
        target = config.pop("output_pipeline", None)
        if target:
            record = shared_by_name(target)
            if not record.config.get("input_stream"):
                raise Conflict(f"output_pipeline '{target}' has no input address (it must be a 'fanin' pipeline).")
            config["output_stream"] = record.config["input_stream"]
        return config

    def camera_host(config: dict[str, Any]) -> str | None:
        camera = config.get("camera_name")
        record = cameras.instance(camera) if camera else None
        return host_of(record.host) if record else None

    def start_private(config: dict[str, Any], iid: str, kind: str, name: str | None = None,
                      newer_than: float | None = None) -> InstanceRecord:
        expand_config(config)  # a bad config is refused here, before anything starts

        def start(worker: str) -> InstanceRecord:
            resolved = for_kind(resolve(config), kind)
            push_assets(worker, resolved)
            answer = cm.call_ok("POST", worker, "", params={"instance_id": iid}, json=resolved)
            return InstanceRecord(iid, worker, answer["stream"], answer["config"], kind, name=name)

        existing = None if newer_than is None else (lambda r: r.started_at > newer_than)
        return cm.place(Placing(iid, name, config.get("camera_name")), start, camera_host(config), existing)

    def shared_by_name(name: str) -> InstanceRecord:
        """The shared instance of saved pipeline ``name`` (id = name), started if needed."""
        record = cm.state.instance(name)
        if record is not None and cm.alive(record.host):
            return record
        config = local_manager.get_pipeline_config(name)

        def start(worker: str) -> InstanceRecord:
            resolved = resolve(config)
            push_assets(worker, resolved)
            cm.call_ok("POST", worker, f"/{name}/config", json=resolved)
            stream = cm.call_ok("GET", worker, f"/instance/{name}")["stream"]
            expanded = cm.call_ok("GET", worker, f"/instance/{name}/config")["config"]
            return InstanceRecord(name, worker, stream, expanded, "shared", name=name)

        return cm.place(Placing(name, name, config.get("camera_name")), start, camera_host(config))

    def restart_permanent(iid: str, name: str) -> None:
        start_private(local_manager.get_pipeline_config(name), iid, "permanent", name, newer_than=time.time())

    cm.restart_permanent = restart_permanent

    def on_worker(iid: str) -> str:
        """The worker that runs (or ran, and remembers) instance ``iid``."""
        record = cm.state.instance(iid)
        host = record.host if record is not None else cm.state.ended_on(iid)
        if host is None or not cm.alive(host):
            raise lost_or_missing(iid)
        return host

    @app.post(PIPE)
    def create_from_config(config: dict = Depends(json_body), instance_id: str | None = Query(None),
                           ) -> dict[str, Any]:
        return created(config, instance_id)

    def created(config: dict[str, Any], instance_id: str | None, name: str | None = None) -> dict[str, Any]:
        iid = instance_id or str(uuid.uuid4())
        record = cm.state.instance(iid)
        if record is not None and cm.alive(record.host):
            try:
                running = cm.call_ok("GET", record.host, f"/instance/{iid}/exitcode")["exitcode"] is None
            except WorkerError:
                running = False
            if running:
                raise Conflict(f"Instance id '{iid}' is already in use.")
        record = start_private(config, iid, "private", name, newer_than=time.time())
        return ok(f"Pipeline instance {iid} created.", instance_id=iid, stream=record.stream, config=record.config)

    install_manager_routes(app, cm, PIPE, "Pipeline", "All pipeline instances stopped.", cm.stop)

    @app.post(f"{PIPE}/instance/")
    def get_instance_stream_from_config(config: dict = Depends(json_body)) -> dict[str, Any]:
        requested = expand_config(config)
        requested.pop("reload", None)

        def find() -> InstanceRecord | None:
            return next((r for r in cm.state.instances().values()
                         if r.kind == "shared" and r.requested == requested and cm.alive(r.host)), None)

        def start(worker: str) -> InstanceRecord:
            resolved = resolve(config)
            push_assets(worker, resolved)
            answer = cm.call_ok("POST", worker, "/instance/", json=resolved)
            return InstanceRecord(answer["instance_id"], worker, answer["stream"], answer["config"], "shared",
                                  requested=requested)

        # One claim per config (its hash): two managers asked for the same new config start one instance.
        digest = hashlib.sha256(json.dumps(requested, sort_keys=True, default=str).encode()).hexdigest()
        record = cm.place(Placing(str(uuid.uuid4()), None, config.get("camera_name")), start, camera_host(config),
                          find=find, claim=f"shared-config:{digest}")
        return ok(f"Shared pipeline instance {record.instance_id}.", instance_id=record.instance_id,
                  stream=record.stream, config=record.config)

    @app.get(f"{PIPE}/instance/{{instance_id}}")
    def get_instance_stream(instance_id: str) -> dict[str, Any]:
        record = cm.state.instance(instance_id)
        if record is None or not cm.alive(record.host):
            if instance_id not in local_manager.get_pipeline_list():
                raise lost_or_missing(instance_id)
            return ok(f"Stream address for pipeline {instance_id}.", stream=shared_by_name(instance_id).stream)
        answer = cm.call("GET", record.host, f"/instance/{instance_id}")
        if answer.status_code == 404 and record.kind == "shared" and record.name:
            cm.state.remove_instance(instance_id, record.host)
            return ok(f"Stream address for pipeline {instance_id}.", stream=shared_by_name(instance_id).stream)
        return _raw(answer)

    @app.api_route(f"{PIPE}/instance/{{instance_id}}/{{what}}", methods=["GET", "POST"])
    async def instance_route(instance_id: str, what: str, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        body = await request.body()
        headers = {"content-type": request.headers.get("content-type", "application/json")}

        def forward() -> Response:
            answer = cm.call(request.method, on_worker(instance_id), f"/instance/{instance_id}/{what}",
                             data=body or None, headers=headers, params=dict(request.query_params))
            record = cm.state.instance(instance_id)
            if request.method == "POST" and what == "config" and answer.status_code == 200 and record is not None:
                record.config = answer.json().get("config", record.config)
                cm.state.put_instance(record)
            return _raw(answer)

        return await run_in_threadpool(forward)

    @app.post(f"{PIPE}/{{name}}")
    def create_from_name(name: str, instance_id: str | None = Query(None)) -> dict[str, Any]:
        return created(local_manager.get_pipeline_config(name), instance_id, name)

    @app.delete(f"{PIPE}/{{name}}")
    def stop_instance(name: str) -> dict[str, Any]:
        cm.stop(name)
        return ok(f"Pipeline instance {name} stopped.")

    return Dispatch(app, local, pipeline_routes_to_cluster)
