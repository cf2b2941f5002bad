"""What the answers and request bodies of both servers look like, as pydantic models for ``/openapi.json``.

Why models that the answers are not run through: the handlers build plain dicts (:func:`~.envelope.ok`) and
FastAPI sends them exactly as before. A route declares ``response_model=documented(Model)``: the document shows
``Model``, the answer is neither validated nor re-serialised by it (no dropped keys, no reordering, no cost on
large answers). The tests validate real answers against these models, so the document stays true.

Request bodies are read by our own code (:func:`~.envelope.json_body`: size limit, our messages and status codes),
never by FastAPI, so FastAPI does not know them; :class:`JsonBodies` declares them in the document from their
models (the config models are the ones the servers validate with).

Every error is the envelope ``{"state": "error", "status": message}`` (:func:`errors`), also FastAPI's own
validation errors (422), whose default ``HTTPValidationError`` schema does not describe our answer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import Schema
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, SkipValidation
from pydantic.json_schema import models_json_schema

from cam_server.camera.config import CameraConfig
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.server.backgrounds import BACKGROUND_DTYPES
from cam_server.rest.request_schemas import FINITE, NAME_PATTERN, body_schemas, document_parameters

REF = "#/components/schemas/"

Pair = Annotated[list[int], Field(min_length=2, max_length=2)]


def documented(model: type[BaseModel]) -> Any:
    """``response_model=`` of a route answering a dict: documented as ``model``, sent as the handler built it."""
    return SerializeAsAny[SkipValidation[model]]  # type: ignore[valid-type]


# --- the envelope ---------------------------------------------------------------------------------------------
class OkAnswer(BaseModel):
    """A success: ``state`` "ok", ``status`` a message for people, and the route's own field (if any)."""

    state: Literal["ok"]
    status: str = Field(description="what was done, for people")


class ErrorAnswer(BaseModel):
    """Every failure, 4xx or 5xx: PSI's clients raise ``ValueError(status)`` when ``state`` is not "ok"."""

    state: Literal["error"]
    status: str = Field(description="what went wrong, naming the field, name or limit at fault")


_ERRORS = {
    400: "Invalid name, config, body or parameter",
    404: "Unknown camera, pipeline, instance, background, group or script (or no scripts folder)",
    409: "Clashes with the current state (id in use, read-only instance, alias taken, different background, "
         "background in use or disk limit reached, a folder where a config would be written)",
    413: "Request body too large",
    422: "A query parameter of the wrong type",
    429: "Too many at once: long or blocking requests (--max_long_requests / --max_blocking_requests; Retry-After "
         "says when to try again) or pipeline instances (--max_instances)",
    503: "A camera, stream or the camera server cannot be reached",
}


def errors(*codes: int, text_route: bool = False) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: the error envelope for ``codes`` and for any other status (500: unexpected).

    ``text_route``: the route answers text when it succeeds; FastAPI would file a ``model`` under that media type,
    so the envelope is referenced as JSON (its schema is in the document through the other routes).
    """
    error: dict[str, Any] = ({"content": {"application/json": {"schema": {"$ref": REF + ErrorAnswer.__name__}}}}
                             if text_route else {"model": ErrorAnswer})
    answers: dict[int | str, dict[str, Any]] = {code: {**error, "description": _ERRORS[code]} for code in codes}
    answers["default"] = {**error, "description": "Any other error (500: unexpected, with its cause)"}
    return answers


PNG: dict[int | str, dict[str, Any]] = {200: {"description": "The image as PNG", "content": {
    "image/png": {"schema": {"type": "string", "format": "binary"}}}}}


# --- request bodies ---------------------------------------------------------------------------------------------
class JsonBodies:
    """The JSON request bodies of one app, declared in its OpenAPI document from their models.

    :meth:`declare` gives a route's ``openapi_extra`` (a reference to the model's schema) and remembers the model;
    :meth:`install` adds the schemas of all declared models to the document's components.
    """

    def __init__(self) -> None:
        self._models: dict[str, type[BaseModel]] = {}
        self._schemas: dict[str, dict[str, Any]] = {}

    def declare(self, model: type[BaseModel] | str, description: str,
                other_content: dict[str, Any] | None = None) -> dict[str, Any]:
        """``openapi_extra`` of a route whose JSON body is ``model`` (``other_content``: more media types); a name
        of :data:`BODY_SCHEMAS` (a request body as the server checks it, see :func:`body_schemas`) or a model."""
        if isinstance(model, str):
            self._schemas[model] = body_schemas()[model]
            name = model
        else:
            self._models[model.__name__] = model
            name = model.__name__
        content = {"application/json": {"schema": {"$ref": REF + name}}, **(other_content or {})}
        return {"requestBody": {"required": True, "description": description, "content": content}}

    def install(self, app: FastAPI) -> None:
        """Make ``app.openapi()`` also hold the declared models (and the models they use) as components."""
        _, top = models_json_schema([(m, "validation") for m in self._models.values()], ref_template=REF + "{model}")
        # Written as FastAPI writes its own components (through its OpenAPI models), so that a model also used
        # in an answer gives the same schema both ways.
        ours = {name: jsonable_encoder(Schema(**schema), by_alias=True, exclude_none=True)
                for name, schema in top.get("$defs", {}).items()}
        generate = app.openapi  # FastAPI's, which generates the document once and keeps it

        ours.update(self._schemas)

        def openapi() -> dict[str, Any]:
            document = generate()
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in ours.items():
                if components.setdefault(name, schema) != schema:
                    raise RuntimeError(f"two different schemas named {name} in the OpenAPI document")
            document_parameters(document)
            return document

        app.openapi = openapi  # type: ignore[method-assign]


_NAME_SCHEMA = {"pattern": NAME_PATTERN, "maxLength": 200}  # documented, not validated: our code checks bodies
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": FINITE}}


class BackgroundList(BaseModel):
    """``POST /api/v1/pipeline/background``: a background as a nested list (PSI's ``set_background``)."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(description="the background id to store it under", json_schema_extra=_NAME_SCHEMA)
    data: list[Any] = Field(description="2-D nested list of finite numbers: rows of pixels, all of one length",
                            json_schema_extra=_ROWS)


class ImageBytesBody(BaseModel):
    """A background as ``GET .../image_bytes`` answers it (JSON, or pickled protocol 0 as PSI's client sends it)."""

    model_config = ConfigDict(extra="forbid")

    bytes: str = Field(description="base64 of the pixels, C order, little-endian: height * width values of dtype",
                       json_schema_extra={"pattern": _BASE64})
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] = Field(
        description="[height, width]")
    dtype: Literal[BACKGROUND_DTYPES] = Field(description="numpy dtype name")  # type: ignore[valid-type]
    width: int = Field(None, description="if given, must equal shape[1]")  # type: ignore[assignment]
    height: int = Field(None, description="if given, must equal shape[0]")  # type: ignore[assignment]
    encoding: Literal["base64"] = None  # type: ignore[assignment]
    byteorder: Literal["little"] = None  # type: ignore[assignment]
    pulse_id: Any = Field(None, description="ignored")
    timestamp: Any = Field(None, description="ignored")


# --- answers of both servers ------------------------------------------------------------------------------------
class VersionAnswer(OkAnswer):
    version: str = Field(description="cam_server's version")


class ConfigNamesAnswer(OkAnswer):
    config_names: list[str] = Field(description="names of the saved configs (cameras / pipelines)")


class LogsAnswer(OkAnswer):
    logs: list[Annotated[list[str], Field(min_length=4, max_length=4)]] = Field(
        description="[time, logger, level, message] per record, newest last")


_BROKEN = ("entry → why it is not usable (a folder, not UTF-8, not valid JSON, an invalid config, ...): left out "
           "of the list beside it; DELETE of that name moves it aside into the folder's broken/ subfolder")


class ScriptsAnswer(OkAnswer):
    scripts: list[str] = Field(description="file names in the user scripts folder")
    broken: dict[str, str] = Field(description=_BROKEN)


class ScriptAnswer(OkAnswer):
    script: str = Field(description="the script's source text")


class ScriptNameAnswer(OkAnswer):
    script_name: str = Field(description="the file name saved or deleted")


class CamerasAnswer(OkAnswer):
    cameras: list[str]


class GroupsAnswer(OkAnswer):
    groups: dict[str, list[str]] = Field(description="group → names of its cameras / pipelines")


class StreamAnswer(OkAnswer):
    stream: str = Field(description="bsread stream address: tcp://host:port (or ipc://path)")


class CameraStreamAnswer(StreamAnswer):
    reservation: str | None = Field(None, description="with ?reserve=true: the id of the reservation that holds the "
                                    "camera (no end for lack of clients) until DELETE .../reservation/<id>, or 30 s")
    frame_bytes: int | None = Field(None, description="with ?reserve=true (and in the shared-memory answer): bytes of "
                                    "one image of the camera (0: not known yet); a pipeline server bounds its new "
                                    "instance's send queue with it")


class ReleaseAnswer(OkAnswer):
    released: bool = Field(description="the reservation held the camera until now (false: it had expired, was "
                           "released already, or was made on an instance that has ended since)")


class SharedMemoryOffer(BaseModel):
    ring: str = Field(description="name of the camera instance's frame ring in /dev/shm, without its generation")
    announce: str = Field(description="ipc:// address of the announcements (bsread, image as a missing value)")
    host_id: str = Field(description="who shares this shared memory: use it only if your own host_id is the same")


class SharedMemoryAnswer(CameraStreamAnswer):
    shared_memory: SharedMemoryOffer | None = Field(
        description="where a pipeline on this host reads the frames in place; null: not offered (server option "
                    "--shared_memory off)")


class ImageBytes(BaseModel):
    """Raw pixels of an image (PSI's ``get_camera_array`` decodes ``bytes`` with ``dtype`` and ``shape``)."""

    model_config = ConfigDict(extra="allow")

    bytes: str = Field(description="base64 of the pixels, C order, little-endian")
    dtype: str = Field(description="numpy dtype name")
    shape: Pair = Field(description="[height, width] (numpy order)")
    width: int
    height: int
    encoding: Literal["base64"]
    byteorder: Literal["little"]
    pulse_id: int | None = Field(None, description="camera images only")
    timestamp: float | None = Field(None, description="camera images only: seconds")


class ImageAnswer(OkAnswer):
    image: ImageBytes


# --- instance and server info -----------------------------------------------------------------------------------
class Statistics(BaseModel):
    """An instance's statistics: the keys PSI's tools read, and our counters beside them (read when asked)."""

    model_config = ConfigDict(extra="allow")

    total_bytes: int = Field(description="data bytes sent")
    clients: int = Field(description="connected stream clients")
    throughput: float = Field(description="bytes per second sent")
    time: str = Field(description="when these statistics were read, 'YYYY-MM-DD HH:MM:SS' (local time)")
    rx: str = Field(description="'<rate>Hz - <count>' of frames received")
    tx: str = Field(description="'<rate>Hz - <count>' of messages sent")
    pid: int | None = Field(description="the instance process")
    cpu: float | None = Field(description="percent of one core")
    memory: int | None = Field(description="RSS bytes")
    frame_shape: Pair | None = Field(description="[height, width] of the last image; null before the first")
    # Ours (absent while the instance's process is being started).
    frames_in: int | None = None
    frames_out: int | None = None
    dropped: int | None = Field(None, description="frames dropped: dropped_input + dropped_gates + dropped_output "
                                                  "+ dropped_overwritten")
    errors: int | None = Field(None, description="frames whose processing failed")
    rate: float | None = Field(None, description="messages per second sent, smoothed")
    rate_in: float | None = Field(None, description="frames per second received, smoothed")
    bytes_out: int | None = None
    last_frame_time: float | None = Field(None, description="Unix time of the last message sent (0: none yet)")
    start_time: float | None = Field(None, description="Unix time the instance loop started (0: not yet)")
    cpu_percent: float | None = Field(None, description="percent of one core (read at most once a second)")
    memory_rss: int | None = Field(None, description="resident bytes, including pages shared with the fork server "
                                                     "and the other instances (read at most once a second)")
    memory_pss: int | None = Field(None, description="proportional set size: the instance's own memory, shared "
                                                     "pages counted at their share (read at most every 5 s)")
    state: str | None = Field(None, description="starting, streaming, waiting for source, reconnecting, stopping, "
                                                "waiting for camera server")
    reconnects: int | None = Field(None, description="reconnections to the source after it was lost (or replaced)")
    source_restarts: int | None = Field(None, description="restarts of the source seen in its pulse ids")
    last_input_time: float | None = Field(None, description="Unix time of the last frame received (0: none yet)")
    # Faults and staleness (pipeline instances; docs/reliability.md).
    waiting_since: str | None = Field(None, description="since when it waits for the camera server, "
                                                        "'YYYY-MM-DD HH:MM:SS' (null: not waiting)")
    dropped_input: int | None = Field(None, description="of dropped: the oldest frames of a full input queue "
                                                        "(input_queue_size), frames skipped to catch up "
                                                        "(input_catch_up_after), bsread merge frames without data")
    dropped_gates: int | None = Field(None, description="of dropped: held back on purpose (paused, pid_range, "
                                                        "downsampling, max_frame_rate, empty image, function None)")
    dropped_output: int | None = Field(None, description="of dropped: not sent (full queue or send timeout, full "
                                                         "buffer, enforce_pid)")
    input_queue: int | None = Field(None, description="frames waiting to be processed (sampled once a second)")
    output_queue: int | None = Field(None, description="messages in the output buffer (buffer_size; sampled)")
    output_queue_max: int | None = Field(None, description="the most messages the output buffer held")
    output_backlog: int | None = Field(None, description="the most bytes the kernel holds for one client (stream "
                                                         "clients; a camera's local pipelines: their shared-memory "
                                                         "announcements; sampled once a second; about 0 while all "
                                                         "keep up)")
    send_queue: int | None = Field(None, description="messages the stream queues per client at most (queue_size; "
                                                     "the default 10 bounded to 32 MiB of images when the image "
                                                     "size is known at start: a camera whose source reports it, "
                                                     "simulation or EPICS, and a pipeline reading such a camera; "
                                                     "0: no stream, e.g. FILE output)")
    frame_bytes: int | None = Field(None, description="camera instances: bytes of one image (the size the source "
                                                      "reports at start, then that of each new layout; 0: not known "
                                                      "yet, e.g. a bsread camera before its first frame)")
    memory_limit: int | None = Field(None, description="RSS bytes at which the instance is ended (0: no limit)")
    input_gaps: int | None = Field(None, description="pulse ids missing from the input stream (not counting "
                                                     "dropped_input): lost before the instance, e.g. by the camera's "
                                                     "send queue, which ZeroMQ does not report; also ids a source "
                                                     "skips by design")
    dropped_overwritten: int | None = Field(None, description="of dropped: frames of the camera's shared-memory ring "
                                                              "overwritten before the pipeline was done with them")
    input_path: str | None = Field(None, description="how frames arrive: 'shared_memory' (a camera on this host, "
                                                     "read in place), 'bsread' (the stream); null: none yet")


class InstanceInfo(BaseModel):
    """Info of a running instance: our fields (process, errors) and the ones PSI's tools read."""

    model_config = ConfigDict(extra="allow")

    instance_id: str
    pid: int | None
    is_running: bool
    exit_code: int | None = Field(description="null while running")
    exit_reason: str | None = Field(None, description="why it ended: 'killed by signal 9 (SIGKILL)', 'no clients "
                                                      "for 10 s', 'stopped on request', ...; null while running")
    created: float = Field(description="Unix time")
    statistics: Statistics
    last_error: str | None
    last_error_time: float | None = Field(description="Unix time")
    stream_address: str
    is_stream_active: bool = Field(description="the process runs and streams")
    last_start_time: str = Field(description="'YYYY-MM-DD HH:MM:SS' (local time)")


class CameraInstanceInfo(InstanceInfo):
    camera_name: str
    camera_geometry: Pair | None = Field(description="[width, height] of the last image sent; null before the first")
    config: CameraConfig


class EndedRun(BaseModel):
    """An earlier run of an id, in brief (``history`` of a finished instance)."""

    model_config = ConfigDict(extra="allow")

    pid: int | None
    created: float | None = Field(description="Unix time")
    ended: float | None = Field(description="Unix time")
    exit_code: int | None
    exit_reason: str | None
    last_error: str | None
    last_error_time: float | None


class EndedCamera(BaseModel):
    """How a camera instance that ended by itself (no clients, crash) ended."""

    model_config = ConfigDict(extra="allow")

    exit_code: int | None
    exit_reason: str | None = Field(None, description="e.g. 'no clients for 10 s', 'killed by signal 9 (SIGKILL)'")
    last_error: str | None
    last_error_time: float | None
    ended: float = Field(description="Unix time")
    pid: int | None = None
    created: float | None = Field(None, description="Unix time")
    history: list[EndedRun] = Field([], description="earlier runs of this camera, oldest first (at most 9)")


class LongRequestsInfo(BaseModel):
    """Long requests (waits for a frame, message, background, online check), run apart from the quick ones."""

    running: int = Field(description="jobs running now (a cancelled one until it has stopped)")
    clients: int = Field(description="requests waiting for them (several may share one job)")
    limit: int = Field(description="at most this many jobs at once (--max_long_requests); more: 429")
    cancelled: int = Field(description="jobs cancelled since the start because every client had gone")
    refused: int = Field(description="requests refused (429) since the start")


class BlockingRequestsInfo(BaseModel):
    """Requests that hold a server thread for seconds (instance starts, camera server calls)."""

    running: int = Field(description="running now")
    limit: int = Field(description="at most this many at once (--max_blocking_requests); more: 429")
    refused: int = Field(description="requests refused (429) since the start")


class ServerUsage(BaseModel):
    """The server process itself."""

    model_config = ConfigDict(extra="allow")

    version: str
    cpu: float = Field(description="percent of one core since the previous call (0.0 the first time)")
    memory: int = Field(description="RSS bytes")
    long_requests: LongRequestsInfo
    blocking_requests: BlockingRequestsInfo


class CameraServerInfo(ServerUsage):
    active_instances: dict[str, CameraInstanceInfo] = Field(description="camera → its running instance")
    finished_instances: dict[str, EndedCamera] = Field(description="camera → how its last instance ended, and "
                                                                   "its earlier runs (also while it runs again)")


class CameraServerInfoAnswer(OkAnswer):
    info: CameraServerInfo


class PipelineInstanceInfo(InstanceInfo):
    camera_name: str | None
    read_only: bool = Field(description="a shared instance, whose config cannot be changed")
    config: PipelineConfig = Field(description="the full config, every default filled in")


class FinishedPipelineInstance(PipelineInstanceInfo):
    """The last info of an ended instance, and how the earlier runs of its id ended."""

    ended: float | None = Field(None, description="Unix time")
    history: list[EndedRun] = Field([], description="earlier runs of this id, oldest first (at most 9)")


class PipelineServerInfo(ServerUsage):
    active_instances: dict[str, PipelineInstanceInfo] = Field(description="instance id → info (running ones)")
    finished_instances: dict[str, FinishedPipelineInstance] = Field(
        description="instance id → last info of its last ended run, with the earlier runs (also while the id runs "
                    "again); the id whose run ended longest ago first")


class PipelineServerInfoAnswer(OkAnswer):
    info: PipelineServerInfo


# --- camera server answers --------------------------------------------------------------------------------------
class CameraListAnswer(CamerasAnswer):
    broken: dict[str, str] = Field(description=_BROKEN)


class AliasesAnswer(OkAnswer):
    aliases: dict[str, str] = Field(description="alias → camera")


class CameraConfigAnswer(OkAnswer):
    config: CameraConfig = Field(description="the full config, every default filled in")


class OnlineAnswer(OkAnswer):
    online: bool = Field(description="status says why")


class GeometryAnswer(OkAnswer):
    geometry: Pair = Field(description="[width, height] of the camera's images")


# --- pipeline server answers ------------------------------------------------------------------------------------
class PipelinesAnswer(OkAnswer):
    pipelines: list[str] = Field(description="saved pipelines")
    broken: dict[str, str] = Field(description=_BROKEN)


class InstanceAnswer(OkAnswer):
    instance_id: str
    stream: str = Field(description="bsread stream address of the instance")
    config: PipelineConfig = Field(description="the full config, every default filled in")


class PipelineInstanceInfoAnswer(OkAnswer):
    info: PipelineInstanceInfo


class ExitCodeAnswer(OkAnswer):
    exitcode: int | None = Field(description="null while the instance runs, then its process exit code")


class PipelineConfigAnswer(OkAnswer):
    config: PipelineConfig = Field(description="the full config, every default filled in")


class BackgroundIdAnswer(OkAnswer):
    background_id: str


class BackgroundIdsAnswer(OkAnswer):
    background_ids: list[str] = Field(description="sorted, oldest first")
    broken: dict[str, str] = Field(description=_BROKEN)


class BackgroundsAnswer(BackgroundIdsAnswer):
    """Every background of the server and its storage bounds (pipeline_server options)."""

    disk_usage: int = Field(description="bytes of the .npy files in the background folder")
    disk_limit: int = Field(description="bytes the server may store (--background_disk_limit): a background that "
                                        "would pass it is refused with 409")
    retention: int = Field(description="collected backgrounds kept per camera (--background_retention): the oldest "
                                       "not in use are deleted after a new collection")


class MessageAnswer(OkAnswer):
    message: dict[str, Any] = Field(description="channel → value (images as nested lists)")
    pulse_id: int
    global_timestamp: Annotated[list[int | None], Field(min_length=2, max_length=2)] = Field(
        description="[seconds, nanoseconds]")
