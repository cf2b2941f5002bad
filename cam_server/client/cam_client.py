"""``CamClient``: Python client of the camera server REST API (README "CamClient")."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import numpy as np

from cam_server.client.user_scripts import UserScriptsMixin


class CamClient(UserScriptsMixin):
    """Wraps the camera server's REST API; every error raises ``ValueError`` with the server's message."""

    def __init__(self, address: str = "http://sf-daqsync-01:8888/", timeout: float = 30.0,
                 token: str | None = None) -> None:
        """:param address: Address of the cam API, e.g. http://localhost:10000
        :param token: the server's API token (default: the environment variable CAM_SERVER_API_TOKEN, if set)"""
        super().__init__(address, "/api/v1/cam", timeout=timeout, token=token)

    def get_server_info(self) -> dict[str, Any]:
        """Return the info of the cam server instance (administrative): {"active_instances": {...}, ...}."""
        return self._get("/info")["info"]

    def get_cameras(self) -> list[str]:
        """List existing cameras."""
        return self._get("")["cameras"]

    def get_camera_config(self, camera_name: str) -> dict[str, Any]:
        """Return the cam configuration."""
        return self._get(f"/{camera_name}/config")["config"]

    def set_camera_config(self, camera_name: str, configuration: dict[str, Any]) -> dict[str, Any]:
        """Set config on camera; returns the actual applied config."""
        return self._post(f"/{camera_name}/config", json=configuration)["config"]

    def delete_camera_config(self, camera_name: str) -> dict[str, Any]:
        """Delete config of camera (stops its instance if it runs); returns the server response."""
        return self._delete(f"/{camera_name}/config")

    def get_camera_geometry(self, camera_name: str, timeout: float | None = None) -> list[int]:
        """Get cam geometry: [width, height] (``timeout``: how long the server waits for a frame, if it needs one)."""
        return self._get(f"/{camera_name}/geometry", params=_params(timeout=timeout))["geometry"]

    def get_camera_image(self, camera_name: str, scale: float | None = None, min_value: float | None = None,
                         max_value: float | None = None, colormap: str | None = None,
                         timeout: float | None = None) -> bytes:
        """Return the cam image in PNG format (the response content)."""
        params = _params(scale=scale, min_value=min_value, max_value=max_value, colormap=colormap, timeout=timeout)
        return self._get_raw(f"/{camera_name}/image", params=params).content

    def get_camera_image_bytes(self, camera_name: str, timeout: float | None = None) -> dict[str, Any]:
        """Return the cam image bytes: {"bytes": base64, "dtype", "shape": [height, width], ...}."""
        return self._get(f"/{camera_name}/image_bytes", params=_params(timeout=timeout))["image"]

    def get_camera_array(self, camera_name: str, timeout: float | None = None) -> np.ndarray:
        """The next cam image as a numpy array ([height, width], in the camera's dtype), from ``image_bytes``."""
        return decode_image_bytes(self.get_camera_image_bytes(camera_name, timeout=timeout))

    def is_camera_online(self, camera_name: str) -> bool:
        """Whether the camera can stream now; checked without starting its stream. Unknown camera: ValueError."""
        return bool(self._get(f"/{quote(camera_name, safe='')}/is_online")["online"])

    def get_instance_stream(self, camera_name: str) -> str:
        """Get the camera stream address (starts the camera instance if needed)."""
        answer = self._get(f"/{camera_name}")
        if "stream" not in answer:  # e.g. "info": a fixed route of the camera server, not a camera
            raise ValueError(f"Camera '{camera_name}' has no stream on the camera server (not a camera name).")
        return answer["stream"]

    def reserve_instance_stream(self, camera_name: str) -> tuple[str, str | None]:
        """The camera stream address and the id of a reservation that keeps the camera from stopping for lack of
        clients until :meth:`release_stream` (its client connected) or 30 s pass; None from a server without
        reservations (it ignores ``reserve``)."""
        answer = self.reserve_camera_stream(camera_name)
        return answer["stream"], answer.get("reservation")

    def reserve_camera_stream(self, camera_name: str) -> dict[str, Any]:
        """:meth:`reserve_instance_stream`'s whole answer: ``stream``, ``reservation`` and ``frame_bytes`` (bytes of
        one image; 0 or missing: not known)."""
        answer = self._get(f"/{camera_name}", params={"reserve": "true"})
        if "stream" not in answer:
            raise ValueError(f"Camera '{camera_name}' has no stream on the camera server (not a camera name).")
        return answer

    def release_stream(self, camera_name: str, reservation: str) -> bool:
        """Release a reservation of :meth:`reserve_instance_stream`; False when it had ended already."""
        return bool(self._delete(f"/{camera_name}/reservation/{reservation}").get("released"))

    def stop_instance(self, camera_name: str) -> dict[str, Any]:
        """Stop the camera."""
        return self._delete(f"/{camera_name}")

    def stop_all_instances(self) -> dict[str, Any]:
        """Stop all the cameras on the server."""
        return self._delete("")

    # --- additions: aliases and groups -------------------------------------------------------------------------
    def get_camera_aliases(self) -> dict[str, str]:
        """alias → camera name."""
        return self._get("/aliases")["aliases"]

    def get_camera_groups(self) -> dict[str, list[str]]:
        """group → camera names."""
        return self._get("/groups")["groups"]

    def get_cameras_in_group(self, group: str) -> list[str]:
        """Camera names of one group."""
        return self._get(f"/groups/{group}")["cameras"]


def decode_image_bytes(payload: dict[str, Any]) -> np.ndarray:
    """The array of an ``image_bytes`` answer (``bytes``: base64 of the C-order array; ``dtype``; ``shape``)."""
    data = bytearray(base64.b64decode(payload["bytes"]))  # a bytearray: the array is writable, without a copy
    return np.frombuffer(data, dtype=np.dtype(payload["dtype"])).reshape(payload["shape"])


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
