"""Where a FILE output may write: the ``file`` setting resolved (and confined) without importing h5py.

Kept apart from :mod:`cam_server.pipeline.instance.file_output` so the pipeline server can refuse a bad path when an
instance is created, without loading HDF5 into the server process.

Two rules keep the servers' own folders intact, whatever the server options: a FILE output never writes inside a
*protected* folder (the pipeline server's config, background and user scripts folders), and never names a file or
folder with the suffix of a store's entries (``.json``, ``.npy``, ``.py``), so it cannot put a folder or an HDF5 file
among the configs of a camera server either, whose folders the pipeline server does not know.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cam_server.common.errors import CamServerError

# Entries of the stores (camera and pipeline configs, backgrounds, user scripts): never a FILE output's name.
STORE_SUFFIXES = (".json", ".npy", ".py")


class FileOutputError(CamServerError):
    """A FILE output problem: bad settings, unwritable file, or channels of a message that could not be written."""


def resolve_output_file(file: str, folder: str | None = None, protected: Mapping[str, str] | None = None) -> str:
    """Absolute path of the ``file`` setting (existing files are never overwritten: ``file_output.FileWriter``).

    With ``folder`` (the server's ``--file_folder``, by default ``./data``): relative paths are taken from it, and a
    path that resolves outside it (absolute elsewhere, ``..``, a symbolic link leading out) is refused, so REST
    clients cannot write anywhere the server user can. Without ``folder`` (``--file_folder_any``, as the reference):
    ``~`` expanded, relative paths taken from the working directory of the pipeline server (instances inherit it),
    absolute paths used as given. Either way a path inside one of the ``protected`` folders ({what: folder}) or
    naming a ``.json``, ``.npy`` or ``.py`` file or folder is refused.
    """
    if not isinstance(file, str) or not file.strip():
        raise FileOutputError(f"FILE output needs a 'file' name, got {file!r}")
    if folder is None:
        path = os.path.abspath(os.path.expanduser(file.strip()))
        below = os.path.realpath(path)
    else:
        root = os.path.realpath(os.path.expanduser(folder))
        path = os.path.realpath(os.path.join(root, os.path.expanduser(file.strip())))
        if os.path.commonpath([root, path]) != root or path == root:
            raise FileOutputError(f"FILE output 'file' {file!r} is outside the folder this server writes to "
                                  f"({root}); give a path inside it or relative to it")
        below = os.path.relpath(path, root)
    for what, protected_folder in (protected or {}).items():
        if _inside(path, protected_folder):
            raise FileOutputError(f"FILE output 'file' {file!r} is inside the server's {what} folder "
                                  f"({os.path.realpath(protected_folder)}): FILE output never writes there")
    for part in below.split(os.sep):
        if part.lower().endswith(STORE_SUFFIXES):
            raise FileOutputError(f"FILE output 'file' {file!r} names {part!r}: FILE output (HDF5) never writes a "
                                  f"file or folder ending in {', '.join(STORE_SUFFIXES)}, the configs, backgrounds "
                                  "and scripts of the servers; use e.g. .h5")
    return path


def check_file_folder(folder: str, protected: Mapping[str, str]) -> str:
    """The absolute ``--file_folder``; FileOutputError if it is (inside) one of the ``protected`` folders."""
    absolute = os.path.abspath(os.path.expanduser(folder))
    for what, protected_folder in protected.items():
        if _inside(absolute, protected_folder):
            raise FileOutputError(f"--file_folder {folder} is inside the {what} folder {protected_folder}: FILE "
                                  "output never writes there")
    return absolute


def _inside(path: str, folder: str) -> bool:
    """``path`` (resolved: symbolic links followed) is ``folder`` or below it."""
    real, root = os.path.realpath(path), os.path.realpath(os.path.expanduser(folder))
    return os.path.commonpath([root, real]) == root


def check_output_target(path: str) -> None:
    """What can be checked before an instance writes the resolved ``path``, so that a bad target is refused when the
    instance is created instead of ending it (exit code 1) after the server answered 200: the file must not exist
    (FILE output never overwrites), and its nearest existing folder must be a folder the server may write to (the
    instance creates the missing ones)."""
    if os.path.lexists(path):
        kind = "a folder" if os.path.isdir(path) else "a file"
        raise FileOutputError(f"FILE output: {path} already exists ({kind}; FILE output never overwrites): choose a "
                              "new file name")
    existing = os.path.dirname(path)
    while existing and not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise FileOutputError(f"FILE output: cannot create {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FileOutputError(f"FILE output: cannot create {path}: the folder {existing} is not writable")
