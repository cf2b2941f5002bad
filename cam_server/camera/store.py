"""Camera configs on disk (one JSON file per camera) with alias resolution and groups.

Aliases are alternative names of a camera and must be unique across cameras and must not shadow a camera
name, so that a name always resolves to exactly one camera. The alias/group index is rebuilt only when a
config file changes (checked by modification times), so resolving a name costs a directory listing.

A bad entry (a folder named ``x.json``, a file that is not a valid camera config) is listed by :meth:`broken` with
the reason and left out of the names, aliases and groups; deleting it moves it aside (``JsonConfigStore.delete``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from cam_server.camera.config import CameraConfig, parse_camera_config
from cam_server.common.config_store import JsonConfigStore
from cam_server.common.errors import CamServerError, Conflict, InvalidConfig, InvalidName, NotFound
from cam_server.common.names import validate_name

log = logging.getLogger(__name__)

# Path segments of the REST API that cannot be camera names or aliases.
RESERVED_NAMES = frozenset({"info", "aliases", "groups", "script", "version", "config_names"})


class CameraConfigStore:
    """Named camera configs in ``folder``; names may be given as a camera name or one of its aliases."""

    def __init__(self, folder: str | Path) -> None:
        self._files = JsonConfigStore(folder, kind="camera", check=lambda name, raw: parse_camera_config(raw, name))
        self.folder = self._files.folder
        self._lock = threading.RLock()
        self._index_key: tuple | None = None
        self._aliases: dict[str, str] = {}
        self._groups: dict[str, list[str]] = {}

    # --- index --------------------------------------------------------------------------------------------
    def _stamp(self) -> tuple:
        stamps = []
        for path in sorted(self.folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                stamps.append((path.stem, path.stat().st_mtime_ns))
            except FileNotFoundError:
                continue
        return tuple(stamps)

    def _index(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        with self._lock:
            key = self._stamp()
            if key != self._index_key:
                aliases: dict[str, str] = {}
                groups: dict[str, list[str]] = {}
                for name in self._files.names():  # the valid configs only
                    try:
                        raw = self._files.load(name)
                    except CamServerError as exc:
                        log.warning("skipping camera config %s: %s", name, exc)
                        continue
                    for alias in _names_list(raw.get("alias")):
                        if alias in aliases and aliases[alias] != name:
                            log.warning("alias %r of camera %s already used by camera %s; ignored",
                                        alias, name, aliases[alias])
                            continue
                        aliases[alias] = name
                    for group in _names_list(raw.get("group")):
                        groups.setdefault(group, []).append(name)
                self._aliases, self._groups, self._index_key = aliases, groups, key
            return self._aliases, self._groups

    # --- queries ------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The cameras with a valid config (:meth:`broken` lists the others)."""
        return self._files.names()

    def broken(self) -> dict[str, str]:
        """{entry name: why it is not a usable camera config} (unreadable, not JSON, invalid, a folder, ...)."""
        return self._files.broken()

    def scan(self) -> tuple[list[str], dict[str, str]]:
        """(:meth:`names`, :meth:`broken`) from one listing of the folder."""
        return self._files.scan()

    def resolve(self, name: str) -> str:
        """The camera name ``name`` refers to (itself or the camera it is an alias of); NotFound otherwise
        (InvalidConfig for an entry of that name that is not a file, e.g. a folder)."""
        validate_name(name, "camera name")
        if self._files.exists(name):
            return name
        camera = self._index()[0].get(name)
        if camera is None or not self._files.exists(camera):
            problem = self._files.problem(name)
            if problem is not None:
                raise InvalidConfig(f"Camera '{name}' is broken ({self._files.path(name).name}: {problem}); "
                                    "deleting its config moves it aside.")
            raise NotFound(f"Camera '{name}' does not exist.")
        return camera

    def exists(self, name: str) -> bool:
        try:
            self.resolve(name)
        except NotFound:
            return False
        return True

    def load(self, name: str) -> CameraConfig:
        """The validated config of the camera ``name`` (or alias); InvalidConfig names the broken field."""
        camera = self.resolve(name)
        return parse_camera_config(self._files.load(camera), camera)

    def aliases(self) -> dict[str, str]:
        """alias → camera name."""
        return dict(self._index()[0])

    def groups(self) -> dict[str, list[str]]:
        """group → camera names."""
        return {g: list(c) for g, c in self._index()[1].items()}

    def group_cameras(self, group: str) -> list[str]:
        validate_name(group, "group name")
        cameras = self._index()[1].get(group)
        if cameras is None:
            raise NotFound(f"Camera group '{group}' does not exist.")
        return list(cameras)

    # --- changes ------------------------------------------------------------------------------------------
    def save(self, name: str, config: dict[str, Any]) -> CameraConfig:
        """Validate and store ``config`` as camera ``name`` (an alias saves the camera it names)."""
        validate_name(name, "camera name")
        if name in RESERVED_NAMES:
            raise InvalidName(f"Invalid camera name '{name}': reserved by the REST API.")
        with self._lock:
            aliases = self._index()[0]
            camera = aliases.get(name, name) if not self._files.exists(name) else name
            parsed = parse_camera_config(config, camera)
            self._check_aliases(camera, parsed, aliases)
            data = dict(config)
            data["name"] = camera
            self._files.save(camera, data)
            self._index_key = None
            return parsed

    def _check_aliases(self, camera: str, parsed: CameraConfig, aliases: dict[str, str]) -> None:
        names, broken = self._files.scan()
        existing = set(names) | set(broken)
        for alias in parsed.alias:
            if alias in RESERVED_NAMES:
                raise InvalidName(f"Invalid alias '{alias}' of camera '{camera}': reserved by the REST API.")
            if alias != camera and alias in existing:
                raise Conflict(f"Alias '{alias}' of camera '{camera}' is already the name of another camera.")
            owner = aliases.get(alias)
            if owner is not None and owner != camera and self._files.exists(owner):
                raise Conflict(f"Alias '{alias}' of camera '{camera}' is already used by camera '{owner}'.")
        owner = aliases.get(camera)
        if owner is not None and owner != camera and self._files.exists(owner):
            raise Conflict(f"Camera name '{camera}' is already an alias of camera '{owner}'.")

    def delete(self, name: str) -> str:
        """Delete the camera ``name`` (or the camera of alias ``name``); returns the camera name."""
        return self.remove(name)[0]

    def entry(self, name: str) -> str:
        """The camera ``name`` refers to, as :meth:`resolve`, or ``name`` itself for a broken entry of that name."""
        try:
            return self.resolve(name)
        except (NotFound, InvalidConfig):
            if self._files.problem(name) is None:
                raise
            return name

    def remove(self, name: str) -> tuple[str, Path | None]:
        """Delete the camera ``name`` (or of alias ``name``), or move the broken entry ``name`` aside; returns the
        camera name and where a broken entry went (None: a valid config was deleted)."""
        with self._lock:
            camera = self.entry(name)
            moved = self._files.delete(camera)
            self._index_key = None
            return camera, moved


def _names_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []
