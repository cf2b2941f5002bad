"""The routes of the live view, the same on both servers (design: docs/live_view.md).

* ``GET /``: what this server can show (cameras; saved pipelines and running instances), each linked to its view.
* ``GET /view/<name>``: the view page of a camera (camera server) or an instance (pipeline server).
* ``WS /view/<name>/ws``: frames and status to the page, the page's requests back.
* ``GET /view/<name>/recording/<token>``: the HDF5 file a view recorded.
* ``GET /view/static/<file>``: the page's scripts and styles, served from this package (no CDN, no build step).

Controls (threshold, ROI, ...) are not routes of their own: the page calls the existing REST API.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import logging
import time
from contextlib import suppress
from importlib import resources
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from cam_server.camera.render import COLORMAPS, colormap_lut
from cam_server.common.errors import CamServerError, NotFound
from cam_server.common.names import validate_name
from cam_server.rest.view.feed import FeedHub, StreamFeed
from cam_server.rest.view.frames import ViewRequest, ViewRequestError, probe
from cam_server.rest.view.record import Recording
from cam_server.rest.view.targets import CameraTarget, PipelineTarget

log = logging.getLogger(__name__)

STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".png": "image/png"}
TICK = 0.02            # seconds between checks for a new frame / status of one view
ACK_TIMEOUT = 2.0      # a frame not acknowledged by then is taken as lost: the next one is sent anyway
_view_ids = itertools.count(1)


def _static_files() -> dict[str, bytes]:
    folder = resources.files("cam_server.rest.view") / "static"
    return {entry.name: entry.read_bytes() for entry in folder.iterdir()
            if entry.is_file() and any(entry.name.endswith(ext) for ext in STATIC_TYPES)}


def _page(template: bytes, config: dict[str, Any], title: str) -> HTMLResponse:
    """A page with its configuration as JSON inside it (``</`` escaped, so no name can end the script)."""
    text = template.decode().replace("__TITLE__", html.escape(title))
    text = text.replace("__CONFIG__", json.dumps(config).replace("</", "<\\/"))
    return HTMLResponse(text, headers={"Cache-Control": "no-cache"})


def install_view_routes(app: FastAPI, target: CameraTarget | PipelineTarget) -> None:
    """The live view routes of one server; ``target`` says what its names are (cameras or instances)."""
    static = _static_files()
    static["colormaps.json"] = json.dumps({name: colormap_lut(name).tolist() for name in COLORMAPS}).encode()
    hub = FeedHub(target.open_stream, target.status)
    recordings: dict[str, Recording] = {}
    index_config: dict[str, Any] = {"kind": target.kind, "api": target.api}
    if isinstance(target, PipelineTarget):
        index_config["camera_server"] = target.manager.cam_client.get_address()

    @app.get("/", response_class=HTMLResponse, summary="Live view: the cameras / instances of this server",
             include_in_schema=False)
    def view_index() -> HTMLResponse:
        return _page(static["index.html"], index_config, f"cam_server {target.kind} server")

    @app.get("/view/static/{file_name}", summary="Live view: scripts and styles", include_in_schema=False)
    def view_static(file_name: str) -> Response:
        content = static.get(file_name)
        if content is None:
            raise NotFound(f"No file '{file_name}' in the view's static files.")
        media = "application/json" if file_name.endswith(".json") else STATIC_TYPES[file_name[file_name.rfind("."):]]
        return Response(content, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/view/{name}", response_class=HTMLResponse, summary="Live view of a camera / instance",
             include_in_schema=False)
    def view_page(name: str) -> HTMLResponse:
        validate_name(name, "camera name" if target.kind == "camera" else "instance id")
        return _page(static["view.html"], {**index_config, "name": name}, f"{name} - cam_server live view")

    @app.get("/view/{name}/recording/{token}", summary="Live view: download a recording", include_in_schema=False)
    def view_recording(name: str, token: str) -> FileResponse:
        recording = recordings.get(token)
        if recording is None or recording.name != name or recording.state != "done":
            raise NotFound(f"No finished recording '{token}' of '{name}' (it is deleted when its view closes).")
        return FileResponse(recording.path, media_type="application/x-hdf5", filename=recording.file_name)

    @app.websocket("/view/{name}/ws")
    async def view_socket(websocket: WebSocket, name: str) -> None:
        await websocket.accept()
        view_id = next(_view_ids)
        try:
            validate_name(name, "name")
        except CamServerError as exc:
            await websocket.send_json({"type": "status", "status": {"state": "error", "error": str(exc)}})
            await websocket.close()
            return
        feed = await run_in_threadpool(hub.acquire, name, view_id)
        session = _ViewSession(websocket, feed, view_id, target, name, recordings)
        try:
            await session.run()
        finally:
            await run_in_threadpool(session.discard_recordings)
            await run_in_threadpool(hub.release, name, view_id)


class _ViewSession:
    """One open view: sends the newest frame when the browser has drawn the previous one and the view's frame
    period has passed, the status when it changes, and answers the browser's requests."""

    def __init__(self, websocket: WebSocket, feed: StreamFeed, view_id: int, target: CameraTarget | PipelineTarget,
                 name: str, recordings: dict[str, Recording]) -> None:
        self.websocket = websocket
        self.feed = feed
        self.view_id = view_id
        self.target = target
        self.name = name
        self.recordings = recordings
        self.own_recordings: list[Recording] = []
        self.request = ViewRequest()
        self.send_lock = asyncio.Lock()
        self.sent_seq = -1
        self.sent_at = 0.0
        self.acked = True
        self.status_seq = -1
        self.recording: Recording | None = None
        self.record_sent: dict[str, Any] | None = None
        feed.set_rate(view_id, self.request.rate)

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        try:
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            with suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await sender

    async def _send(self, message: dict[str, Any] | bytes) -> None:
        async with self.send_lock:
            if isinstance(message, bytes):
                await self.websocket.send_bytes(message)
            else:
                await self.websocket.send_text(json.dumps(message, allow_nan=False, default=str))

    async def _send_loop(self) -> None:
        while True:
            seq, status = self.feed.status()
            if seq != self.status_seq:
                self.status_seq = seq
                await self._send({"type": "status", "status": status})
            await self._send_recording_progress()
            frame = self.feed.frame
            now = time.monotonic()
            # Due a little early: the feed reads at the same rate, and waiting a full period after the last send
            # would beat with it (every other frame late).
            if (frame is not None and frame.seq != self.sent_seq and now - self.sent_at >= 0.8 * self.request.period
                    and (self.acked or now - self.sent_at > ACK_TIMEOUT)):
                data = await run_in_threadpool(self.feed.render, frame, self.request)
                await self._send(data)
                self.sent_seq, self.sent_at, self.acked = frame.seq, now, False
            await asyncio.sleep(TICK)

    async def _send_recording_progress(self) -> None:
        if self.recording is None:
            return
        progress = self.recording.progress()
        if progress != self.record_sent:
            self.record_sent = progress
            if progress["state"] == "done":
                progress["url"] = f"/view/{self.name}/recording/{progress['token']}"
            await self._send(progress)

    async def _receive_loop(self) -> None:
        while True:
            text = await self.websocket.receive_text()
            try:
                message = json.loads(text)
                if not isinstance(message, dict):
                    raise ViewRequestError("a view message must be a JSON object")
                await self._handle(message)
            except (ValueError, CamServerError) as exc:
                await self._send({"type": "error", "message": str(exc)})

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ack":
            self.acked = True
        elif kind == "view":
            self.request = ViewRequest.from_message(message)
            self.feed.set_rate(self.view_id, self.request.rate)
            self.sent_seq, self.acked, self.sent_at = -1, True, 0.0  # the current frame again, for the new view
        elif kind == "probe":
            frame = self.feed.frame
            x, y = message.get("x"), message.get("y")
            if frame is not None and isinstance(x, int) and isinstance(y, int):
                await self._send(probe(frame, x, y))
        elif kind == "record":
            await self._start_recording(message.get("n"))
        elif kind == "record_cancel":
            if self.recording is not None:
                self.recording.cancel()
        else:
            raise ViewRequestError(f"unknown view message type {kind!r}")

    async def _start_recording(self, n: Any) -> None:
        if self.recording is not None and self.recording.state == "running":
            raise ViewRequestError("a recording is already running in this view")
        stream = await run_in_threadpool(self.target.open_stream, self.name, False)
        recording = Recording(self.name, stream.address, n)
        self.recording = recording
        self.own_recordings.append(recording)
        self.recordings[recording.token] = recording

    def discard_recordings(self) -> None:
        for recording in self.own_recordings:
            self.recordings.pop(recording.token, None)
            recording.discard()
