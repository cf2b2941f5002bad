"""A folder of JSON files, one per named config, written atomically.

Used for camera configs, pipeline configs and (with another suffix) by the background store. A corrupt or
hand-edited file only makes *that* config fail, with a message naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cam_server.common.errors import InvalidConfig, NotFound
from cam_server.common.names import validate_name


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a config file is as readable as any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JsonConfigStore:
    """Named JSON objects stored as ``<folder>/<name>.json``."""

    def __init__(self, folder: str | Path, kind: str = "config") -> None:
        self.folder = Path(folder)
        self.kind = kind
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / f"{validate_name(name, self.kind + ' name')}.json"

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> dict[str, Any]:
        path = self.path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"{self.kind.capitalize()} '{name}' does not exist.") from None
        except (OSError, UnicodeDecodeError) as exc:  # a folder, no permission, not UTF-8 text
            raise InvalidConfig(f"{self.kind.capitalize()} '{name}' cannot be read ({path.name}: {exc}).") from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidConfig(f"{self.kind.capitalize()} '{name}' is not valid JSON ({path.name}: {exc}).") from None
        if not isinstance(value, dict):
            raise InvalidConfig(f"{self.kind.capitalize()} '{name}' must be a JSON object ({path.name}).")
        return value

    def save(self, name: str, config: dict[str, Any]) -> None:
        data = json.dumps(config, indent=2, sort_keys=False).encode("utf-8") + b"\n"
        atomic_write_bytes(self.path(name), data)

    def delete(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            raise NotFound(f"{self.kind.capitalize()} '{name}' does not exist.") from None
