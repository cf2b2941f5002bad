"""Camera backgrounds: versioned ``.npy`` files that are never deleted, and their collection from a camera stream.

Why never deleted: each output message names the background id it was processed with (``processing_parameters``),
so the id must stay resolvable forever. Ids are ``<camera>_<YYYYmmdd_HHMMSS_ffffff>``, which sort by time.
"""

from __future__ import annotations

import io
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from cam_server.common.config_store import atomic_write_bytes
from cam_server.common.errors import InvalidConfig, NotFound, SourceUnavailable
from cam_server.common.names import validate_name

log = logging.getLogger(__name__)

_STAMP = r"\d{8}_\d{6}_\d{6}"
_STAMP_FORMAT = "%Y%m%d_%H%M%S_%f"
DEFAULT_N_IMAGES = 10
MAX_N_IMAGES = 10_000


class BackgroundStore:
    """``<folder>/<camera>_<timestamp>.npy``; saves are atomic, ids unique, nothing is ever deleted."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, background_id: str) -> Path:
        return self.folder / f"{validate_name(background_id, 'background id')}.npy"

    def save(self, camera: str, array: np.ndarray) -> str:
        """Store ``array`` as the newest background of ``camera`` and return its id."""
        validate_name(camera, "camera name")
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        stamp = datetime.now()
        while True:  # two saves in the same microsecond must not share an id
            background_id = f"{camera}_{stamp.strftime(_STAMP_FORMAT)}"
            if not self.path(background_id).exists():
                break
            stamp = datetime.fromtimestamp(stamp.timestamp() + 1e-6)
        atomic_write_bytes(self.path(background_id), buffer.getvalue())
        log.info("saved background %s %s %s", background_id, array.shape, array.dtype)
        return background_id

    def load(self, background_id: str, mmap: bool = False) -> np.ndarray:
        """The background array; NotFound if there is no such id, InvalidConfig if the file is unreadable."""
        path = self.path(background_id)
        if not path.is_file():
            raise NotFound(f"Background '{background_id}' does not exist.")
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt file
            raise InvalidConfig(f"Background '{background_id}' is corrupt ({path.name}: {exc}).") from None

    def shape(self, background_id: str) -> tuple[int, ...]:
        """Shape without reading the pixels (memory-mapped)."""
        return tuple(self.load(background_id, mmap=True).shape)

    def ids(self, camera: str) -> list[str]:
        """All background ids of exactly ``camera`` (not of cameras whose name merely starts with it), oldest first."""
        validate_name(camera, "camera name")
        pattern = re.compile(rf"^{re.escape(camera)}_{_STAMP}$")
        return sorted(p.stem for p in self.folder.glob(f"{glob_escape(camera)}_*.npy") if pattern.match(p.stem))

    def latest(self, camera: str) -> str:
        found = self.ids(camera)
        if not found:
            raise NotFound(f"No background collected for camera '{camera}'.")
        return found[-1]


def glob_escape(text: str) -> str:
    """Escape glob wildcards (names may not contain them today, but the store must not depend on that)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def check_n_images(n_images: Any) -> int:
    if n_images is None:
        return DEFAULT_N_IMAGES
    if isinstance(n_images, bool) or not isinstance(n_images, int) or not 0 < n_images <= MAX_N_IMAGES:
        raise InvalidConfig(f"Invalid n_images {n_images!r}: must be an integer between 1 and {MAX_N_IMAGES}.")
    return n_images


def average_stream_images(stream_address: str, n_images: int, timeout: float = 10.0) -> np.ndarray:
    """Subscribe to a camera stream and return the float64 mean of the next ``n_images`` images.

    ``timeout`` is the longest wait for any single image; a camera that stops sending images raises
    SourceUnavailable.
    """
    from cam_server.bsread import SUB, source  # lazy: the bsread layer is only needed when collecting
    from cam_server.bsread.wait import next_message
    from cam_server.utils import get_host_port_from_stream_address

    host, port = get_host_port_from_stream_address(stream_address)
    total: np.ndarray | None = None
    count = 0
    with source(host=host, port=port, mode=SUB, receive_timeout=200) as stream:
        while count < n_images:
            message = next_message(stream, timeout, accept=_has_image)
            if message is None:
                raise SourceUnavailable(f"No image from camera stream {stream_address} in {timeout:.0f} s "
                                        f"(got {count} of {n_images}).")
            image = message.data.data["image"].value
            if total is None:
                total = np.zeros(image.shape, dtype=np.float64)
            elif total.shape != image.shape:
                log.info("camera image shape changed %s -> %s while collecting; restarting", total.shape, image.shape)
                total = np.zeros(image.shape, dtype=np.float64)
                count = 0
            np.add(total, image, out=total)
            count += 1
    assert total is not None
    total /= count
    return total


def _has_image(message: Any) -> bool:
    image = message.data.data.get("image")
    return image is not None and image.value is not None and np.size(image.value) > 0
