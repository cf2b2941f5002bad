"""A folder of JSON files, one per named config, written atomically.

Used for camera configs, pipeline configs and (with another suffix) by the background store. A corrupt or
hand-edited file only makes *that* config fail, with a message naming the file.

An atomic write goes through a temporary file ``.<name>.<random>.tmp`` beside the target, locked (``flock``) while
it is written. A write interrupted by a crash or kill -9 leaves it behind; every store removes such files of its
folder when it is created (at server start, :func:`remove_stale_temp_files`), except those still locked by a
write in progress (another server sharing the folder).

Bad entries (a directory named ``x.json``, an HDF5 or non-UTF-8 file, invalid JSON, an invalid config) are
*broken*: :meth:`JsonConfigStore.scan` lists them apart with the reason (the stores' ``broken`` field), the usable
configs work as if they were not there, and deleting a broken entry moves it aside into the folder's ``broken/``
subfolder (:func:`move_aside`): the server removes only files it wrote, never a folder or data someone else put there.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from cam_server.common.errors import CamServerError, Conflict, InvalidConfig, NotFound
from cam_server.common.names import validate_name


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what atomic_write_bytes' mkstemp names look like
log = logging.getLogger(__name__)
BROKEN_FOLDER = "broken"  # where deleting a broken entry moves it (a subfolder of the store's folder)
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a config file larger than this is not read (e.g. an HDF5 file named x.json)


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


def move_aside(path: Path) -> Path:
    """Move the entry ``path`` (a file, link or folder of any content) into ``broken/`` beside it, under its name and
    the time (``<name>.<YYYYmmdd_HHMMSS_ffffff>``); returns where it went. Conflict if that is not possible."""
    target_folder = path.parent / BROKEN_FOLDER
    try:
        target_folder.mkdir(exist_ok=True)
        target = target_folder / f"{path.name}.{datetime.now().strftime('%Y%m%d_%H%M%S_%f')}"
        while target.exists() or target.is_symlink():  # two in the same microsecond
            target = target.with_name(target.name + "_")
        os.rename(path, target)
    except FileNotFoundError:
        raise NotFound(f"{path.name} does not exist (any more).") from None
    except OSError as exc:
        raise Conflict(f"{path.name} cannot be moved aside into {target_folder}: {exc.strerror or exc}.") from None
    return target


class EntryChecker:
    """Why an entry of a store's folder cannot be used (None: it can); the answer per file is kept until the file
    changes (its stat), so listing a folder reads only the files that changed since the last listing."""

    def __init__(self, check_file: Callable[[Path], str | None]) -> None:
        self._check_file = check_file
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, ...], str | None]] = {}

    def problem(self, path: Path) -> str | None:
        """The reason ``path`` is broken, or None; FileNotFoundError if it is gone."""
        try:
            st = path.stat()
        except FileNotFoundError:
            if path.is_symlink():
                return "a symbolic link to nothing"
            raise
        except OSError as exc:
            return f"cannot be read: {exc.strerror or exc}"
        if stat.S_ISDIR(st.st_mode):
            return "a directory, not a file"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            cached = self._cache.get(path.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        reason = self._check_file(path)
        with self._lock:
            self._cache[path.name] = (key, reason)
        return reason

    def forget(self, name: str) -> None:
        """Drop what is known about the entry ``name`` (it was removed)."""
        with self._lock:
            self._cache.pop(name, None)

    def scan(self, paths: Iterable[Path], forget_others: bool = True) -> tuple[list[Path], dict[Path, str]]:
        """``paths`` split into the usable ones and the broken ones with their reasons (gone ones are skipped);
        ``forget_others``: ``paths`` are all entries of the folder, what is known of any other is dropped."""
        good: list[Path] = []
        broken: dict[Path, str] = {}
        for path in paths:
            try:
                reason = self.problem(path)
            except FileNotFoundError:
                continue
            if reason is None:
                good.append(path)
            else:
                broken[path] = reason
        if forget_others:
            with self._lock:
                seen = {p.name for p in good} | {p.name for p in broken}
                for name in [n for n in self._cache if n not in seen]:
                    del self._cache[name]
        return good, broken


class JsonConfigStore:
    """Named JSON objects stored as ``<folder>/<name>.json``.

    ``check(name, value)``: raises CamServerError if ``value`` (a JSON object read from the file) is not a valid
    config; such a file is listed as broken, like one that cannot be read.
    """

    def __init__(self, folder: str | Path, kind: str = "config",
                 check: Callable[[str, dict[str, Any]], Any] | None = None) -> None:
        self.folder = Path(folder)
        self.kind = kind
        self._check = check
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.folder)
        self._checker = EntryChecker(self._file_problem)

    def path(self, name: str) -> Path:
        return self.folder / f"{validate_name(name, self.kind + ' name')}.json"

    def _entries(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def _file_problem(self, path: Path) -> str | None:
        try:
            value = self.load(path.stem)
            if self._check is not None:
                self._check(path.stem, value)
        except CamServerError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever a hand-made file does to the parser: broken, not a 500
            return f"{self.kind.capitalize()} '{path.stem}' cannot be used ({path.name}: {type(exc).__name__}: {exc})."
        return None

    def scan(self) -> tuple[list[str], dict[str, str]]:
        """(names of the usable configs, {name: why it is broken}) — each entry is in exactly one of them."""
        good, broken = self._checker.scan(self._entries())
        return [p.stem for p in good], {p.stem: reason for p, reason in broken.items()}

    def names(self) -> list[str]:
        """The usable configs, sorted (broken entries are listed by :meth:`broken`)."""
        return self.scan()[0]

    def broken(self) -> dict[str, str]:
        """{name: reason} of the entries that are not usable configs."""
        return self.scan()[1]

    def problem(self, name: str) -> str | None:
        """Why the entry ``name`` is broken; None if it is a usable config or does not exist."""
        try:
            return self._checker.problem(self.path(name))
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> dict[str, Any]:
        path = self.path(name)
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise InvalidConfig(f"{self.kind.capitalize()} '{name}' cannot be read ({path.name}: larger than "
                                    f"{MAX_CONFIG_BYTES // (1024 * 1024)} MB, not a config).")
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
        """Write ``config`` (replacing a file of that name, also a broken one: that repairs it); Conflict if the
        name is taken by something that is not a file (a folder), which only :meth:`delete` moves aside."""
        path = self.path(name)
        data = json.dumps(config, indent=2, sort_keys=False).encode("utf-8") + b"\n"
        if path.exists() and not path.is_file():
            raise Conflict(f"{self.kind.capitalize()} '{name}' cannot be saved: {path.name} is "
                           f"{self.problem(name) or 'not a file'}. Delete it first (it is moved aside into "
                           f"{BROKEN_FOLDER}/).")
        atomic_write_bytes(path, data)

    def delete(self, name: str) -> Path | None:
        """Remove the config ``name``; a broken entry (any content, also a folder) is moved aside into ``broken/``
        instead: returns where it went (None when a usable config was deleted)."""
        path = self.path(name)
        if not path.exists() and not path.is_symlink():
            raise NotFound(f"{self.kind.capitalize()} '{name}' does not exist.")
        if self.problem(name) is not None:
            return move_aside(path)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound(f"{self.kind.capitalize()} '{name}' does not exist.") from None
        return None
