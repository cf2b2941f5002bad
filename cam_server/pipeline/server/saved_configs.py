"""Saved pipeline configs: a :class:`JsonConfigStore` that only accepts valid configs, stored expanded.

Configs are also expanded when read: a file written by hand (e.g. only ``{"camera_name": ...}``) or by an older
version reads back complete, like a saved one; an invalid file is an :class:`InvalidConfig` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cam_server.common.config_store import JsonConfigStore
from cam_server.common.errors import CamServerError, InvalidConfig, InvalidName
from cam_server.common.names import validate_name
from cam_server.pipeline.config import expand_config

log = logging.getLogger(__name__)

# Path segments of the REST API that follow /api/v1/pipeline/ and so cannot be pipeline names.
RESERVED_NAMES = frozenset({"info", "camera", "instance", "script", "background", "groups"})


def validate_pipeline_name(name: object) -> str:
    """A pipeline name that is safe as a file name and not one of the REST API's fixed path segments."""
    validate_name(name, "pipeline name")
    assert isinstance(name, str)
    if name in RESERVED_NAMES:
        reserved = ", ".join(sorted(RESERVED_NAMES))
        raise InvalidName(f"Invalid pipeline name {name!r}: reserved by the REST API ({reserved})")
    return name


class SavedConfigs(JsonConfigStore):
    """``<folder>/<pipeline name>.json``; :meth:`save` validates and stores the expanded config, returned as saved."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder, kind="pipeline")

    def load(self, name: str) -> dict[str, Any]:
        """The saved config, expanded (every parameter present, missing ones defaulted)."""
        config = super().load(name)
        try:
            return expand_config(config)
        except InvalidConfig as exc:
            raise InvalidConfig(f"Pipeline '{name}' ({self.path(name).name}) is not a valid config: {exc}") from None

    def save_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        validate_pipeline_name(name)
        expanded = expand_config(config)
        self.save(name, expanded)
        return expanded

    def groups(self) -> dict[str, list[str]]:
        """group → saved pipelines whose config names it in ``group`` (a name or a list of names), for PSI's
        ``get_pipeline_groups``; pipelines without a group are not listed, an unreadable config is skipped."""
        groups: dict[str, list[str]] = {}
        for name in self.names():
            try:
                group = self.load(name).get("group")
            except CamServerError as exc:
                log.warning("skipping pipeline config %s in the groups: %s", name, exc)
                continue
            names = [group] if isinstance(group, str) else group if isinstance(group, list) else []
            for g in names:
                if isinstance(g, str) and g:
                    groups.setdefault(g, []).append(name)
        return groups
