"""A folder of JSON files, one per named config, written atomically.

Used for camera configs, pipeline configs and (with another suffix) by the background store. A corrupt or
hand-edited file only makes *that* config fail, with a message naming the file.

An atomic write goes through a temporary file ``.<name>.<random>.tmp`` beside the target, locked (``flock``) while
it is written. A write interrupted by a crash or kill -9 leaves it behind; every store removes such files of its
folder when it is created (at server start, :func:`remove_stale_temp_files`), except those still locked by a
write in progress (another server sharing the folder).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
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
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what atomic_write_bytes' mkstemp names look like
log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # "in progress" for remove_stale_temp_files; released when fd is closed
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a config file is as readable as any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: str | Path) -> list[str]:
    """Remove the temporary files interrupted atomic writes left in ``folder`` (``.*.tmp``, not locked by a write
    in progress); returns their names. A missing folder has none."""
    removed = []
    try:
        candidates = [p for p in Path(folder).glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")
                      if _TEMP_NAME.match(p.name) and p.is_file()]
    except OSError:
        return removed
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, a symlink, unreadable
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
            removed.append(path.name)
        except OSError:  # BlockingIOError: a write in progress holds it
            pass
        finally:
            os.close(fd)
    if removed:
        log.warning("removed %d temporary file(s) of interrupted writes in %s: %s", len(removed), folder,
                    ", ".join(sorted(removed)))
    return removed


class JsonConfigStore:
    """Named JSON objects stored as ``<folder>/<name>.json``."""

    def __init__(self, folder: str | Path, kind: str = "config") -> None:
        self.folder = Path(folder)
        self.kind = kind
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.folder)

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
