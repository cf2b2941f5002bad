"""What a view needs of each server: where a named stream is, whether it still runs, and its status.

Why adapters: the view code is the same on both servers; the camera server views camera streams (started on
demand, like any client's request), the pipeline server views instances (a saved pipeline's name starts its
shared instance, as ``GET .../instance/<name>`` does). Only the first open may start something: once an instance
stopped, its views show that instead of starting it again.
"""

from __future__ import annotations

from typing import Any

from cam_server.camera.manager import CameraInstanceManager
from cam_server.common.errors import CamServerError, InvalidConfig, NotFound
from cam_server.pipeline.server.manager import PipelineManager
from cam_server.rest.view.feed import Stream
from cam_server.rest.view.frames import VIEW_PARAMETERS

READ_ONLY_REASON = ("a shared (read-only) instance: its parameters cannot be changed; create a private instance "
                    "to change them")
CAMERA_REASON = ("a camera stream: threshold, ROI, background and averaging are pipeline parameters (open the view "
                 "of a pipeline instance of this camera)")


def _counters(statistics: dict[str, Any]) -> dict[str, Any]:
    """The statistics a view shows, from an instance info's ``statistics``."""
    return {key: statistics.get(key) for key in ("rate", "rate_in", "dropped", "errors", "clients", "frames_in",
                                                  "frames_out")}


class PipelineTarget:
    """Views of pipeline instances (by instance id, or a saved pipeline's shared instance by its name)."""

    kind = "pipeline"
    api = "/api/v1/pipeline"

    def __init__(self, manager: PipelineManager) -> None:
        self.manager = manager

    def open_stream(self, name: str, start: bool) -> Stream:
        """The instance's stream; ``start``: a saved pipeline of that name that is not running is started."""
        if start:
            self.manager.get_instance_stream(name)
        info = self.manager.get_instance_info(name)
        config = info.get("config") or {}
        mode = str(config.get("mode") or "PUB").upper()
        if mode != "PUB":
            what = "writes to a file" if mode == "FILE" else "sends with PUSH (to one consumer)"
            raise InvalidConfig(f"Instance '{name}' {what}: only PUB streams can be viewed without taking messages "
                                "from their consumers.")
        return Stream(info["stream_address"], lambda: self._alive(name))

    def _alive(self, name: str) -> bool:
        try:
            return self.manager.get_instance_exit_code(name) is None
        except CamServerError:
            return False

    def status(self, name: str) -> dict[str, Any]:
        """What the view shows of the instance: state, counters, its parameters, why controls are disabled."""
        try:
            info = self.manager.get_instance_info(name)
        except NotFound as exc:
            return {"state": "stopped", "error": str(exc), "controls": "the instance is not running"}
        config = info.get("config") or {}
        reason = None
        if info.get("read_only"):
            reason = READ_ONLY_REASON
        elif config.get("pipeline_type", "processing") != "processing":
            reason = f"a '{config.get('pipeline_type')}' pipeline: the processing parameters do not apply"
        return {"state": "running" if info.get("is_running") else "starting", "error": None, "kind": self.kind,
                "read_only": bool(info.get("read_only")), "camera_name": info.get("camera_name"),
                "pipeline_type": config.get("pipeline_type"), "last_error": info.get("last_error"),
                "controls": reason, "config": {k: config.get(k) for k in VIEW_PARAMETERS},
                **_counters(info.get("statistics") or {})}


class CameraTarget:
    """Views of camera streams by camera name (or alias)."""

    kind = "camera"
    api = "/api/v1/cam"

    def __init__(self, manager: CameraInstanceManager) -> None:
        self.manager = manager

    def _running(self, name: str) -> bool:
        return self.manager.store.resolve(name) in self.manager.running()

    def open_stream(self, name: str, start: bool) -> Stream:
        """The camera's stream; ``start``: its instance is started if needed (as a stream request does)."""
        if not start and not self._running(name):
            raise NotFound(f"Camera '{name}' is not streaming any more (reload the page to start it).")
        instance = self.manager.get_instance(name)
        return Stream(instance.local_address, instance.process.is_alive)

    def status(self, name: str) -> dict[str, Any]:
        """What the view shows of the camera's instance: state and counters (no processing controls)."""
        if not self._running(name):
            return {"state": "stopped", "error": f"Camera '{name}' is not streaming.", "controls": CAMERA_REASON}
        info = self.manager.get_instance(name).info()
        return {"state": "running" if info.get("is_running") else "starting", "error": None, "kind": self.kind,
                "read_only": True, "camera_name": info.get("camera_name"), "last_error": info.get("last_error"),
                "controls": CAMERA_REASON, **_counters(info.get("statistics") or {})}
