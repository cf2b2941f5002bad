"""Python client of the pipeline server REST API (README "PipelineClient"): what users call."""

from __future__ import annotations

import os
import pickle
from typing import Any
from urllib.parse import quote

from cam_server.bsread import Message, source
from cam_server.bsread.endpoints import reader_mode
from cam_server.bsread.wait import next_message
from cam_server.client.user_scripts import UserScriptsMixin

# How long get_instance_message waits for a message, and how often an idle wait checks that deadline (ms).
MESSAGE_TIMEOUT = 10.0
_RECEIVE_POLL_MS = 200


def _seg(name: str) -> str:
    """A path segment, quoted so that a bad name reaches the server (and gets its clear error) intact."""
    return quote(str(name), safe="")


class PipelineClient(UserScriptsMixin):
    """Wrapper around the pipeline server REST API; every error raises ``ValueError`` with the server's message."""

    def __init__(self, address: str = "http://sf-daqsync-01:8889/", timeout: float = 30.0,
                 token: str | None = None) -> None:
        """:param address: Address of the pipeline API, e.g. http://localhost:8889
        :param token: the server's API token (default: the environment variable CAM_SERVER_API_TOKEN, if set)"""
        super().__init__(address, "/api/v1/pipeline", timeout=timeout, token=token)

    @staticmethod
    def _instance_params(instance_id: str | None) -> dict[str, str]:
        return {"instance_id": instance_id} if instance_id is not None else {}

    def get_pipelines(self) -> list[str]:
        """List existing pipelines (saved configs)."""
        return self._get("")["pipelines"]

    def get_pipeline_config(self, pipeline_name: str) -> dict[str, Any]:
        """Return the saved pipeline configuration."""
        return self._get(f"/{_seg(pipeline_name)}/config")["config"]

    def save_pipeline_config(self, pipeline_name: str, configuration: dict[str, Any]) -> dict[str, Any]:
        """Save a pipeline config (validated and completed with defaults); returns the saved config."""
        return self._post(f"/{_seg(pipeline_name)}/config", json=configuration)["config"]

    def delete_pipeline_config(self, pipeline_name: str) -> None:
        """Delete a saved pipeline config."""
        self._delete(f"/{_seg(pipeline_name)}/config")

    def get_pipeline_groups(self) -> dict[str, list[str]]:
        """Saved pipelines by group: {group: [pipeline names]} (pipelines without ``group`` are not listed)."""
        return self._get("/groups")["groups"]

    def create_instance_from_config(self, configuration: dict[str, Any], instance_id: str | None = None,
                                    ) -> tuple[str, str]:
        """Create a private instance from ``configuration``; returns (instance_id, stream address)."""
        body = self._post("", json=configuration, params=self._instance_params(instance_id))
        return body["instance_id"], body["stream"]

    def create_instance_from_name(self, pipeline_name: str, instance_id: str | None = None) -> tuple[str, str]:
        """Create a private instance of a saved pipeline; returns (instance_id, stream address)."""
        body = self._post(f"/{_seg(pipeline_name)}", params=self._instance_params(instance_id))
        return body["instance_id"], body["stream"]

    def get_instance_stream(self, instance_id: str) -> str:
        """Stream of the instance; a saved pipeline of that name is started as a shared (read-only) instance."""
        return self._get(f"/instance/{_seg(instance_id)}")["stream"]

    def get_instance_stream_from_config(self, configuration: dict[str, Any]) -> tuple[str, str]:
        """A shared (read-only) instance of ``configuration``, reused when one with the same full config runs;
        returns (instance_id, stream address)."""
        body = self._post("/instance/", json=configuration)
        return body["instance_id"], body["stream"]

    def get_instance_config(self, instance_id: str) -> dict[str, Any]:
        """Return the instance configuration."""
        return self._get(f"/instance/{_seg(instance_id)}/config")["config"]

    def set_instance_config(self, instance_id: str, configuration: dict[str, Any]) -> dict[str, Any]:
        """Change (incrementally) the config of a private instance; returns the complete applied config."""
        return self._post(f"/instance/{_seg(instance_id)}/config", json=configuration)["config"]

    def get_instance_info(self, instance_id: str) -> dict[str, Any]:
        """Return the info of a running instance (stream, config, read_only, statistics, pid, last error, ...)."""
        return self._get(f"/instance/{_seg(instance_id)}/info")["info"]

    def get_instance_message(self, instance_id: str, timeout: float = MESSAGE_TIMEOUT) -> Message:
        """One message of a processing instance's stream, as a bsread message object (``m.data.pulse_id``,
        ``m.data.data[name].value``), read straight from the stream as PSI's client does.

        Only ``processing`` pipelines: any other type raises ``ValueError("Cannot get message from '<type>' pipeline
        type.")`` (a store pipeline's PUSH consumer would lose the message we took). Raises ``ValueError`` when the
        instance writes a FILE (no stream) or no message arrives within ``timeout`` seconds.
        """
        config = self.get_instance_config(instance_id)
        pipeline_type = config.get("pipeline_type") or "processing"
        if pipeline_type != "processing":
            raise ValueError(f"Cannot get message from '{pipeline_type}' pipeline type.")
        mode = str(config.get("mode") or "PUB").upper()
        if mode == "FILE":
            raise ValueError(f"Instance '{instance_id}' writes to a file (mode FILE) and has no stream to read.")
        stream = self.get_instance_stream(instance_id)
        with source(stream=stream, mode=reader_mode(mode), receive_timeout=_RECEIVE_POLL_MS) as rx:
            message = next_message(rx, timeout)
        if message is None:
            raise ValueError(f"No message from instance '{instance_id}' ({stream}) within {timeout:g} s.")
        return message

    def get_cameras(self) -> list[str]:
        """List the cameras available on the camera server."""
        return self._get("/camera")["cameras"]

    def collect_background(self, camera_name: str, n_images: int | None = None) -> str:
        """Collect (average ``n_images``, default 10) a background of the camera; returns the background id."""
        params = {"n_images": n_images} if n_images is not None else {}
        return self._post(f"/camera/{_seg(camera_name)}/background", params=params)["background_id"]

    def get_latest_background(self, camera_name: str) -> str:
        """Return the id of the latest background collected for the camera."""
        return self._get(f"/camera/{_seg(camera_name)}/background")["background_id"]

    def get_backgrounds(self, camera_name: str) -> list[str]:
        """Ids of all backgrounds of the camera, sorted (oldest first); empty if it has none."""
        return self._get(f"/camera/{_seg(camera_name)}/backgrounds")["background_ids"]

    def get_background_image(self, background_name: str, scale: float | None = None, min_value: float | None = None,
                             max_value: float | None = None, colormap: str | None = None) -> bytes:
        """The background rendered as PNG bytes (options as the camera server's ``get_camera_image``)."""
        params = {k: v for k, v in (("scale", scale), ("min_value", min_value), ("max_value", max_value),
                                    ("colormap", colormap)) if v is not None}
        return self._get_raw(f"/background/{_seg(background_name)}/image", params=params).content

    def get_background_image_bytes(self, background_name: str) -> dict[str, Any]:
        """The background pixels: {"bytes": base64 of the C-order array, "shape": [height, width], "dtype", ...}."""
        return self._get(f"/background/{_seg(background_name)}/image_bytes")["image"]

    def set_background_image_bytes(self, background_name: str, img: dict[str, Any]) -> str:
        """Store ``img`` (a dict as :meth:`get_background_image_bytes` returns) as background ``background_name``;
        returns its id. Sent as PSI's client sends it: the dict pickled with protocol 0 (the server reads it with a
        restricted unpickler). An existing id is only accepted again with the same image."""
        body = pickle.dumps(img, protocol=0)
        return self._request("PUT", f"/background/{_seg(background_name)}/image_bytes", data=body)["background_id"]

    def set_background(self, filename: str, data: Any) -> str:
        """Store ``data`` (a 2-D numpy array or nested list of numbers) as background ``filename`` (float64 on the
        server); returns its id."""
        values = data.tolist() if hasattr(data, "tolist") else data
        return self._post("/background", json={"filename": filename, "data": values})["background_id"]

    def delete_background(self, background_name: str) -> None:
        """Delete a background (refused while a running instance uses it; a broken entry is moved aside)."""
        self._delete(f"/background/{_seg(background_name)}")

    def get_all_backgrounds(self) -> dict[str, Any]:
        """Every background of the server: {"background_ids", "broken" {id: reason}, "disk_usage", "disk_limit"
        (bytes), "retention" (collected backgrounds kept per camera)}."""
        body = self._get("/background")
        return {key: body[key] for key in ("background_ids", "broken", "disk_usage", "disk_limit", "retention")}

    def get_server_info(self) -> dict[str, Any]:
        """Server info: "active_instances" {id: info} of the running instances, "version", "cpu", "memory",
        "finished_instances". For administrators."""
        return self._get("/info")["info"]

    def get_instance_exit_code(self, instance_id: str) -> int | None:
        """None while the instance runs, its process exit code once it ended or was stopped."""
        return self._get(f"/instance/{_seg(instance_id)}/exitcode")["exitcode"]

    def is_instance_running(self, instance_id: str) -> bool:
        """True when the instance is among the server's running instances."""
        return instance_id in self.get_server_info()["active_instances"]

    def stop_instance(self, instance_id: str) -> None:
        """Stop the instance."""
        self._delete(f"/{_seg(instance_id)}")

    def stop_all_instances(self) -> None:
        """Stop all the instances on the server."""
        self._delete("")

    def set_function_script(self, instance_id: str, script: str) -> dict[str, Any]:
        """Make ``script`` the processing function of a private instance, live (``reload: true``).

        ``script`` is a local ``.py`` file, uploaded as the user script of its file name, or the name of a script
        already on the server. Returns the instance config (``reload`` is false again once applied).
        """
        if os.path.isfile(script):
            with open(script, "rb") as f:
                name = self.set_user_script(os.path.basename(script), f.read())
        elif os.sep in script or "/" in script:
            raise ValueError(f"Script file {script} does not exist.")
        else:
            name = script if script.endswith(".py") else script + ".py"
            if name not in self.get_user_scripts():
                raise ValueError(f"{script} is neither a local file nor a user script on the server.")
        return self.set_instance_config(instance_id, {"function": name.removesuffix(".py"), "reload": True})
