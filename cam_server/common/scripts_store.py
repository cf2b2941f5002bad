"""The user scripts folder (``-u`` of both servers): Python files that pipelines load as processing functions.

Both servers serve the same routes (``.../script``, ``.../script/<name>/script_bytes``) from this one store.

Names: a script is the file ``<folder>/<name>.py``. A name may be given with or without the ``.py`` suffix
(``my_proc`` and ``my_proc.py`` are the same script); listings return the file names, with the suffix. Names
follow :func:`validate_name` (no paths, no hidden files). Uploads must be non-empty UTF-8 Python source that
compiles, so a syntax error is reported at upload (with its line) instead of when a pipeline loads the script.
Writes are atomic: a pipeline (re)loading a script while it is uploaded sees the old or the new file, never half.

A ``*.py`` entry that is not what an upload would accept (a folder, not UTF-8, a syntax error, too large) is listed
apart as broken with the reason; deleting it moves it aside into ``broken/`` (see ``config_store``).
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from cam_server.common.config_store import (
    BROKEN_FOLDER,
    EntryChecker,
    atomic_write_bytes,
    move_aside,
    remove_stale_temp_files,
)
from cam_server.common.errors import CamServerError, Conflict, InvalidConfig, NotFound
from cam_server.common.names import validate_name

log = logging.getLogger(__name__)

SUFFIX = ".py"
MAX_SCRIPT_BYTES = 4 * 1024 * 1024


class ScriptTooLarge(CamServerError):
    status_code = 413


def script_file_name(name: object) -> str:
    """``name`` as the script's file name (``.py`` appended when missing); raises InvalidName for unsafe names."""
    validate_name(name, "script name")
    assert isinstance(name, str)
    return name if name.endswith(SUFFIX) else name + SUFFIX


def check_script(file_name: str, data: bytes) -> str:
    """The script text, if ``data`` is a non-empty UTF-8 Python source that compiles; else a clear 400 error."""
    if len(data) > MAX_SCRIPT_BYTES:
        raise ScriptTooLarge(f"Script {file_name} is too large: {len(data)} bytes (at most {MAX_SCRIPT_BYTES}).")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CamServerError(f"Script {file_name} is not UTF-8 text: {exc}") from None
    if not text.strip():
        raise CamServerError(f"Script {file_name} is empty: upload the Python source as the request body.")
    try:
        ast.parse(text, filename=file_name)
    except SyntaxError as exc:
        line = f": {_excerpt(exc.text.strip())}" if exc.text and exc.text.strip() else ""
        raise CamServerError(f"Syntax error in script {file_name} line {exc.lineno}: {exc.msg}{line}") from None
    except ValueError as exc:  # e.g. null bytes in the source
        raise CamServerError(f"Script {file_name} is not valid Python source: {exc}") from None
    return text


def _excerpt(text: str, limit: int = 200) -> str:
    """The start of a script's line for a message (a 200k-character line is not echoed back whole)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class ScriptStore:
    """``<folder>/<name>.py`` files; the folder is created on the first upload (not when a server starts)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        remove_stale_temp_files(self.folder)  # of uploads a crash interrupted
        self._checker = EntryChecker(self._file_problem)

    def path(self, name: str) -> Path:
        return self.folder / script_file_name(name)

    @staticmethod
    def _file_problem(path: Path) -> str | None:
        try:
            script_file_name(path.name)
            if path.stat().st_size > MAX_SCRIPT_BYTES:
                raise ScriptTooLarge(f"Script {path.name} is too large: {path.stat().st_size} bytes "
                                     f"(at most {MAX_SCRIPT_BYTES}).")
            check_script(path.name, path.read_bytes())
        except CamServerError as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot be read: {exc.strerror or exc}"
        return None

    def scan(self) -> tuple[list[str], dict[str, str]]:
        """(file names of the usable scripts, {file name: why it is broken}), sorted; hidden files are not listed."""
        if not self.folder.is_dir():
            return [], {}
        entries = sorted(p for p in self.folder.glob(f"*{SUFFIX}") if not p.name.startswith("."))
        good, broken = self._checker.scan(entries)
        return [p.name for p in good], {p.name: reason for p, reason in broken.items()}

    def names(self) -> list[str]:
        """File names of the stored scripts, sorted (hidden and temporary files are not scripts, broken ones are
        listed by :meth:`scan`)."""
        return self.scan()[0]

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> str:
        """The script's source text; NotFound names the folder."""
        path = self.path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"Script '{path.name}' does not exist in the scripts folder {self.folder}.") from None
        except OSError:
            raise InvalidConfig(f"Script '{path.name}' is broken: {self._problem(path)}.") from None
        return data.decode("utf-8", errors="replace")

    def _problem(self, path: Path) -> str | None:
        try:
            return self._checker.problem(path)
        except FileNotFoundError:
            return None

    def save(self, name: str, script: bytes | str) -> str:
        """Check and store ``script`` (replacing an existing one); returns the file name."""
        path = self.path(name)
        data = script.encode("utf-8") if isinstance(script, str) else bytes(script)
        check_script(path.name, data)
        if path.exists() and not path.is_file():
            raise Conflict(f"Script {path.name} cannot be saved: it is {self._problem(path) or 'not a file'}. "
                           f"Delete it first (it is moved aside into {BROKEN_FOLDER}/).")
        atomic_write_bytes(path, data)
        log.info("saved user script %s (%d bytes)", path, len(data))
        return path.name

    def delete(self, name: str) -> str:
        """Remove the script; returns its file name. Running pipelines keep the version they loaded."""
        return self.remove(name)[0]

    def remove(self, name: str) -> tuple[str, Path | None]:
        """Remove the script, or move a broken entry of that name aside; returns its file name and where a broken
        entry went (None: a script was deleted)."""
        path = self.path(name)
        if not path.exists() and not path.is_symlink():
            raise NotFound(f"Script '{path.name}' does not exist in the scripts folder {self.folder}.")
        if self._problem(path) is not None:
            moved = move_aside(path)
            log.info("moved broken user script entry %s aside to %s", path, moved)
            return path.name, moved
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound(f"Script '{path.name}' does not exist in the scripts folder {self.folder}.") from None
        log.info("deleted user script %s", path)
        return path.name, None
