"""Camera backgrounds: versioned ``.npy`` files, and their collection from a camera stream.

Each output message names the background id it was processed with (``processing_parameters``), so a background is
never replaced: ids of collected backgrounds are ``<camera>_<YYYYmmdd_HHMMSS_ffffff>``, which sort by time; uploaded
backgrounds (PSI's ``set_background_image_bytes`` / ``set_background``) are stored under the name the client gives,
and an existing name is never overwritten with different pixels.

Storage is bounded: a background is deleted on request (``DELETE /api/v1/pipeline/background/<id>``, refused while
a running instance uses it), each camera keeps at most ``retention`` collected backgrounds (the oldest not in use are
deleted after a new collection), and the folder may hold at most ``disk_limit`` bytes of backgrounds (a new one that
would pass it is refused, :class:`DiskLimitReached`). A ``.npy`` entry that is not a readable 2-D numeric array (a
folder, another kind of file) is listed as broken, never handed out as the latest, and moved aside when deleted.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from cam_server.common.config_store import EntryChecker, atomic_write_bytes, move_aside, remove_stale_temp_files
from cam_server.common.errors import CamServerError, Conflict, InvalidConfig, NotFound, SourceUnavailable
from cam_server.common.limits import Cancelled
from cam_server.common.names import validate_name

log = logging.getLogger(__name__)

_STAMP = r"\d{8}_\d{6}_\d{6}"
_STAMP_FORMAT = "%Y%m%d_%H%M%S_%f"
DEFAULT_N_IMAGES = 10
DEFAULT_RETENTION = 100  # collected backgrounds kept per camera (pipeline_server --background_retention)
DEFAULT_DISK_LIMIT = 10 * 1024 ** 3  # bytes of backgrounds a server may store (--background_disk_limit)
MAX_N_IMAGES = 10_000
# Uploads: an image_bytes body (base64, pickled or JSON) of up to 256 MB (a 12k x 8k uint16 image fits), and a JSON
# nested list of up to 256 MB and 4096 x 4096 values (parsed, a list costs ~30 bytes of Python objects per value).
MAX_IMAGE_BYTES_BODY = 256 * 1024 * 1024
MAX_LIST_BODY = 256 * 1024 * 1024
MAX_LIST_VALUES = 4096 * 4096
# Plain numeric dtypes an uploaded background may have (stored as given, native little-endian byte order).
BACKGROUND_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                     "float16", "float32", "float64")
_PAYLOAD_KEYS = ("bytes", "shape", "dtype")
# Also in what the image_bytes routes answer (width, height, encoding, byteorder; a camera's also pulse_id, timestamp).
_PAYLOAD_OPTIONAL_KEYS = ("width", "height", "encoding", "byteorder", "pulse_id", "timestamp")


class DiskLimitReached(Conflict):
    """A new background would pass the server's ``--background_disk_limit`` (409: the request clashes with what
    is stored; deleting backgrounds makes room)."""


class BackgroundStore:
    """``<folder>/<camera>_<timestamp>.npy``; saves are atomic, ids unique, storage bounded (``retention`` collected
    backgrounds per camera, ``disk_limit`` bytes in all)."""

    def __init__(self, folder: str | Path, retention: int = DEFAULT_RETENTION,
                 disk_limit: int = DEFAULT_DISK_LIMIT) -> None:
        if retention < 1 or disk_limit < 0:
            raise ValueError(f"retention must be >= 1 and disk_limit >= 0, got {retention} and {disk_limit}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.folder)  # of saves a crash interrupted
        self.retention = retention
        self.disk_limit = disk_limit
        self._named_lock = threading.Lock()  # writes: the disk limit check and the write are one step
        self._checker = EntryChecker(self._file_problem)

    def path(self, background_id: str) -> Path:
        return self.folder / f"{validate_name(background_id, 'background id')}.npy"

    def save(self, camera: str, array: np.ndarray) -> str:
        """Store ``array`` as the newest background of ``camera`` and return its id."""
        validate_name(camera, "camera name")
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        with self._named_lock:
            self._check_space(buffer.tell())
            stamp = datetime.now()
            while True:  # two saves in the same microsecond must not share an id
                background_id = f"{camera}_{stamp.strftime(_STAMP_FORMAT)}"
                path = self.path(background_id)
                if not path.exists() and not path.is_symlink():
                    break
                stamp = datetime.fromtimestamp(stamp.timestamp() + 1e-6)
            atomic_write_bytes(path, buffer.getvalue())
        log.info("saved background %s %s %s", background_id, array.shape, array.dtype)
        return background_id

    # --- storage bounds ---------------------------------------------------------------------------------------
    def disk_usage(self) -> int:
        """Bytes of the ``.npy`` files in the folder (broken ones too: they take the disk as well)."""
        total = 0
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.name.endswith(".npy"):
                    try:
                        if entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
        return total

    def _check_space(self, size: int) -> None:
        """DiskLimitReached if ``size`` more bytes would pass the disk limit (``size`` 0: is it passed already)."""
        used = self.disk_usage()
        if used + size > self.disk_limit or (size == 0 and used >= self.disk_limit):
            raise DiskLimitReached(
                f"Background disk limit reached: the background folder holds {_size(used)} of backgrounds and this "
                f"server may store at most {_size(self.disk_limit)} (pipeline_server --background_disk_limit); "
                f"{'a new background' if size == 0 else f'this background ({_size(size)})'} does not fit. Delete "
                "backgrounds (DELETE /api/v1/pipeline/background/<id>) or raise the limit.")

    def check_space(self) -> None:
        """DiskLimitReached if the folder already holds the limit (before collecting a background for nothing)."""
        self._check_space(0)

    def delete(self, background_id: str) -> Path | None:
        """Delete the background; a broken entry of that name (a folder, not a numpy file) is moved aside into
        ``broken/`` instead: returns where it went (None: a background was deleted). NotFound if there is none."""
        path = self.path(background_id)
        if not path.exists() and not path.is_symlink():
            raise NotFound(f"Background '{background_id}' does not exist.")
        if self.problem(background_id) is not None:
            moved = move_aside(path)
            self._checker.forget(path.name)
            log.info("moved broken background entry %s aside to %s", path, moved)
            return moved
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound(f"Background '{background_id}' does not exist.") from None
        self._checker.forget(path.name)
        log.info("deleted background %s", background_id)
        return None

    def prune(self, camera: str, in_use: Collection[str] = ()) -> list[str]:
        """Delete the oldest collected backgrounds of ``camera`` beyond :attr:`retention`, except those ``in_use``
        (they are kept, and counted); returns the deleted ids."""
        ids = self.ids(camera)
        excess = len(ids) - self.retention
        deleted = []
        for background_id in ids:
            if len(deleted) >= excess:
                break
            if background_id in in_use:
                continue
            try:
                self.delete(background_id)
            except CamServerError as exc:  # removed meanwhile, or cannot be: the next collection tries again
                log.warning("retention: could not delete background %s: %s", background_id, exc)
                continue
            deleted.append(background_id)
        if deleted:
            log.info("retention (%d per camera): deleted backgrounds %s", self.retention, ", ".join(deleted))
        return deleted

    # --- broken entries ---------------------------------------------------------------------------------------
    @staticmethod
    def _file_problem(path: Path) -> str | None:
        """Why the regular file ``path`` is not a usable background (None: it is one)."""
        try:
            validate_name(path.stem, "background id")
            with open(path, "rb") as f:  # the header only
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = npy_format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = npy_format.read_array_header_2_0(f)
                else:
                    return f"a numpy (.npy) file of version {version}, not 1.0 or 2.0"
                data_start = f.tell()
        except CamServerError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - any decoding failure means it is no numpy file we can use
            return f"not a readable numpy (.npy) file: {_brief(exc)}"
        if len(shape) != 2 or dtype.kind not in "biuf":
            return f"not a 2-D numeric image (shape {list(shape)}, dtype {dtype})"
        missing = data_start + math.prod(shape) * dtype.itemsize - path.stat().st_size
        if missing > 0:
            return f"truncated: {missing} bytes of its pixels are missing"
        return None

    def problem(self, background_id: str) -> str | None:
        """Why the entry ``background_id`` is broken; None if it is a usable background or does not exist."""
        try:
            return self._checker.problem(self.path(background_id))
        except FileNotFoundError:
            return None

    def scan(self) -> tuple[list[str], dict[str, str]]:
        """(every usable background id, {id: why that entry is broken}), sorted."""
        entries = sorted(p for p in self.folder.glob("*.npy") if not p.name.startswith("."))
        good, broken = self._checker.scan(entries)
        return [p.stem for p in good], {p.stem: reason for p, reason in broken.items()}

    def save_as(self, background_id: str, array: np.ndarray) -> bool:
        """Store ``array`` under exactly ``background_id``; True if written, False if that background already holds
        the same array (an idempotent re-upload). Different pixels under an existing id raise Conflict: messages
        processed with the old background name it, so it must not change."""
        path = self.path(background_id)
        with self._named_lock:
            if path.exists() or path.is_symlink():
                problem = self.problem(background_id)
                if problem is not None:
                    raise Conflict(f"Background '{background_id}' exists but is broken ({problem}); delete it first "
                                   "(it is moved aside), or use a new name.")
                old = self.load(background_id)
                if old.dtype == array.dtype and np.array_equal(old, array):
                    return False
                raise Conflict(f"Background '{background_id}' already exists with a different image ({list(old.shape)} "
                               f"{old.dtype}); backgrounds are never replaced, use a new name.")
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            self._check_space(buffer.tell())
            atomic_write_bytes(path, buffer.getvalue())
        log.info("saved background %s %s %s", background_id, array.shape, array.dtype)
        return True

    def load(self, background_id: str, mmap: bool = False) -> np.ndarray:
        """The background array; NotFound if there is no such id, InvalidConfig if the file is unreadable."""
        path = self.path(background_id)
        if not path.is_file():
            problem = self.problem(background_id)
            if problem is not None:
                raise InvalidConfig(f"Background '{background_id}' is broken ({path.name}: {problem}).")
            raise NotFound(f"Background '{background_id}' does not exist.")
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt file
            raise InvalidConfig(f"Background '{background_id}' is corrupt ({path.name}: {exc}).") from None

    def image(self, background_id: str) -> np.ndarray:
        """The background as a 2-D image (InvalidConfig for a file of another shape, e.g. copied in by hand)."""
        array = self.load(background_id)
        if array.ndim != 2 or array.dtype.kind not in "biuf":
            raise InvalidConfig(f"Background '{background_id}' is not a 2-D numeric image "
                                f"(shape {list(array.shape)}, dtype {array.dtype}).")
        return array

    def shape(self, background_id: str) -> tuple[int, ...]:
        """Shape without reading the pixels (memory-mapped)."""
        return tuple(self.load(background_id, mmap=True).shape)

    def ids(self, camera: str) -> list[str]:
        """All background ids of exactly ``camera`` (not of cameras whose name merely starts with it), oldest first;
        broken entries are left out (:meth:`broken`)."""
        return self._camera_scan(camera)[0]

    def broken(self, camera: str) -> dict[str, str]:
        """{id: why it is broken} of the entries named like a background of exactly ``camera``."""
        return self._camera_scan(camera)[1]

    def _camera_scan(self, camera: str) -> tuple[list[str], dict[str, str]]:
        validate_name(camera, "camera name")
        pattern = re.compile(rf"^{re.escape(camera)}_{_STAMP}$")
        entries = sorted(p for p in self.folder.glob(f"{glob_escape(camera)}_*.npy") if pattern.match(p.stem))
        good, broken = self._checker.scan(entries, forget_others=False)
        return [p.stem for p in good], {p.stem: reason for p, reason in broken.items()}

    def latest(self, camera: str) -> str:
        found = self.ids(camera)
        if not found:
            raise NotFound(f"No background collected for camera '{camera}'.")
        return found[-1]


def glob_escape(text: str) -> str:
    """Escape glob wildcards (names may not contain them today, but the store must not depend on that)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _size(n: int) -> str:
    """Bytes for people: 10.0 GB, 512.0 MB, 42 bytes (binary units)."""
    for unit, factor in (("TB", 1024 ** 4), ("GB", 1024 ** 3), ("MB", 1024 ** 2), ("kB", 1024)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


def check_n_images(n_images: Any) -> int:
    if n_images is None:
        return DEFAULT_N_IMAGES
    if isinstance(n_images, bool) or not isinstance(n_images, int) or not 0 < n_images <= MAX_N_IMAGES:
        raise InvalidConfig(f"Invalid n_images {n_images!r}: must be an integer between 1 and {MAX_N_IMAGES}.")
    return n_images


def array_from_image_bytes(payload: Any) -> np.ndarray:
    """The array of an image_bytes dict ``{"bytes": base64 of the C-order pixels, "shape": [height, width],
    "dtype": name}`` (what ``GET .../image_bytes`` answers), checked strictly: it comes from a request body."""
    if not isinstance(payload, dict):
        raise InvalidConfig(f"Invalid background image: expected a dict with keys {', '.join(_PAYLOAD_KEYS)}, "
                            f"not {type(payload).__name__}.")
    missing = [k for k in _PAYLOAD_KEYS if k not in payload]
    unknown = sorted(str(k) for k in payload if k not in _PAYLOAD_KEYS and k not in _PAYLOAD_OPTIONAL_KEYS)
    if missing or unknown:
        raise InvalidConfig("Invalid background image: " + "; ".join(
            ([f"missing key(s) {', '.join(missing)}"] if missing else [])
            + ([f"unknown key(s) {', '.join(unknown)[:200]}"] if unknown else [])) + ".")
    dtype = _background_dtype(payload["dtype"])
    shape = _shape(payload["shape"])
    for key, expected in (("height", shape[0]), ("width", shape[1]), ("encoding", "base64"), ("byteorder", "little")):
        if key in payload and (type(payload[key]) is not type(expected) or payload[key] != expected):  # true != 1
            raise InvalidConfig(f"Invalid background image: '{key}' is {_brief(payload[key])}, expected {expected!r}.")
    encoded = payload["bytes"]
    if not isinstance(encoded, (str, bytes)):
        raise InvalidConfig(f"Invalid background image: 'bytes' must be a base64 string, not {type(encoded).__name__}.")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidConfig(f"Invalid background image: 'bytes' is not valid base64 ({exc}).") from None
    expected_size = math.prod(shape) * dtype.itemsize
    if len(raw) != expected_size:
        raise InvalidConfig(f"Invalid background image: 'bytes' holds {len(raw)} bytes but shape {list(shape)} of "
                            f"{dtype.name} needs {expected_size}.")
    return _finite(np.frombuffer(raw, dtype=dtype).reshape(shape))


def array_from_list(data: Any) -> np.ndarray:
    """A rectangular 2-D nested list of numbers as a float64 background (the mean a collected background is too)."""
    if not isinstance(data, list) or not data or not all(isinstance(row, list) for row in data):
        raise InvalidConfig("Invalid background data: expected a non-empty list of rows (lists of numbers).")
    try:
        array = np.array(data)
    except (ValueError, TypeError) as exc:  # numpy refuses ragged lists
        raise InvalidConfig(f"Invalid background data: rows must all have the same length ({_brief(exc)}).") from None
    if array.ndim != 2 or 0 in array.shape:
        raise InvalidConfig(f"Invalid background data: expected a 2-D array of numbers, got shape {list(array.shape)}.")
    if array.dtype.kind not in "iuf":  # strings, booleans, nested objects, huge integers
        raise InvalidConfig(f"Invalid background data: values must be numbers (got {array.dtype.kind!r} data: "
                            f"{_brief(array.flat[0])}, ...).")
    return _finite(array.astype(np.float64))


def _background_dtype(value: Any) -> np.dtype:
    if not isinstance(value, str) or value not in BACKGROUND_DTYPES:
        raise InvalidConfig(f"Invalid background image: dtype {_brief(value)} is not one of "
                            f"{', '.join(BACKGROUND_DTYPES)}.")
    return np.dtype(value)


def _shape(value: Any) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)):
        raise InvalidConfig(f"Invalid background image: shape {_brief(value)} must be [height, width], two positive "
                            "integers.")
    return int(value[0]), int(value[1])


def _finite(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidConfig("Invalid background: it contains NaN or infinite values.")
    return array


def _brief(value: Any) -> str:
    """A short description for error messages (request values can be huge or deeply nested)."""
    if isinstance(value, (list, tuple)) and len(value) <= 4 and all(isinstance(v, _SCALAR) for v in value):
        text = repr(value)
    elif isinstance(value, (list, tuple, dict)):
        text = f"a {type(value).__name__} of {len(value)} items"
    else:
        text = repr(value) if isinstance(value, _SCALAR) else str(value)
    return text if len(text) <= 80 else text[:80] + "..."


_SCALAR = (str, bytes, int, float, type(None))


def average_stream_images(stream_address: str, n_images: int, timeout: float = 10.0,
                          keep_waiting: Callable[[], bool] | None = None) -> np.ndarray:
    """Subscribe to a camera stream and return the float64 mean of the next ``n_images`` images.

    ``timeout`` is the longest wait for any single image; a camera that stops sending images raises
    SourceUnavailable. ``keep_waiting`` (checked every 0.2 s while no image comes): False raises Cancelled.
    """
    from cam_server.bsread import SUB, source  # lazy: the bsread layer is only needed when collecting
    from cam_server.bsread.address import host_and_port
    from cam_server.bsread.wait import next_message

    host, port = host_and_port(stream_address)
    total: np.ndarray | None = None
    count = 0
    with source(host=host, port=port, mode=SUB, receive_timeout=200) as stream:
        while count < n_images:
            message = next_message(stream, timeout, accept=_has_image, alive=keep_waiting)
            if keep_waiting is not None and not keep_waiting():  # also between images of a camera that sends
                raise Cancelled(f"Background collection from {stream_address} cancelled after {count} of "
                                f"{n_images} images: no client waits any more.")
            if message is None:
                raise SourceUnavailable(f"No image from camera stream {stream_address} in {timeout:.0f} s "
                                        f"(got {count} of {n_images}).")
            image = message.data.array("image")  # 2-D also for an image one pixel high
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
