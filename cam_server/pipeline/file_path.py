"""Where a FILE output may write: the ``file`` setting resolved (and confined) without importing h5py.

Kept apart from :mod:`cam_server.pipeline.instance.file_output` so the pipeline server can refuse a bad path when an
instance is created, without loading HDF5 into the server process.
"""

from __future__ import annotations

import os

from cam_server.common.errors import CamServerError


class FileOutputError(CamServerError):
    """A FILE output problem: bad settings, unwritable file, or channels of a message that could not be written."""


def resolve_output_file(file: str, folder: str | None = None) -> str:
    """Absolute path of the ``file`` setting (existing files are never overwritten: ``file_output.FileWriter``).

    Without ``folder`` (the default, as the reference): ``~`` expanded, relative paths taken from the working
    directory of the pipeline server (instances inherit it), absolute paths used as given. With ``folder`` (the
    server's ``--file_folder``): relative paths are taken from it, and a path that resolves outside it (absolute
    elsewhere, ``..``, a symbolic link leading out) is refused, so REST clients cannot write anywhere the server
    user can.
    """
    if not isinstance(file, str) or not file.strip():
        raise FileOutputError(f"FILE output needs a 'file' name, got {file!r}")
    if folder is None:
        return os.path.abspath(os.path.expanduser(file.strip()))
    root = os.path.realpath(os.path.expanduser(folder))
    path = os.path.realpath(os.path.join(root, os.path.expanduser(file.strip())))
    if os.path.commonpath([root, path]) != root or path == root:
        raise FileOutputError(f"FILE output 'file' {file!r} is outside the folder this server writes to "
                              f"({root}); give a path inside it or relative to it")
    return path


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
