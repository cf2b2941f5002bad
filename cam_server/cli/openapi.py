"""The OpenAPI documents of both servers, as committed in ``docs/`` (``python3 dev.py openapi`` writes them).

Why committed: a reader (or a client generator) gets the typed REST API without starting a server, and a test
compares them with the apps' own documents, so a change of a route or a model shows up in review.

The apps are built in-process with managers on empty temporary folders: the documents depend only on the routes
and the models, so nothing is started and no camera server is needed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cam_server.camera.manager import CameraInstanceManager
from cam_server.camera.store import CameraConfigStore
from cam_server.client.cam_client import CamClient
from cam_server.common.log_ring import LogRing
from cam_server.common.scripts_store import ScriptStore
from cam_server.pipeline.server.backgrounds import BackgroundStore
from cam_server.pipeline.server.manager import PipelineManager
from cam_server.pipeline.server.saved_configs import SavedConfigs
from cam_server.rest.camera_app import create_camera_app
from cam_server.rest.pipeline_app import create_pipeline_app

CAMERA_FILE = "openapi-camera.json"
PIPELINE_FILE = "openapi-pipeline.json"


def documents() -> dict[str, dict[str, Any]]:
    """File name → the OpenAPI document its server serves at ``/openapi.json``."""
    with tempfile.TemporaryDirectory(prefix="cam_server_openapi_") as tmp:
        folder = Path(tmp)
        camera = CameraInstanceManager(CameraConfigStore(folder / "camera_config"))
        pipeline = PipelineManager(CamClient("http://localhost:8888"), SavedConfigs(folder / "pipeline_config"),
                                   BackgroundStore(folder / "background_config"), str(folder / "user_scripts"),
                                   "localhost")
        try:
            return {
                CAMERA_FILE: create_camera_app(camera, ScriptStore(folder / "user_scripts"), LogRing()).openapi(),
                PIPELINE_FILE: create_pipeline_app(pipeline, LogRing()).openapi(),
            }
        finally:
            camera.close()
            pipeline.close()


def render(document: dict[str, Any]) -> str:
    """The committed form: pretty-printed, keys sorted, so that regenerating an unchanged API changes nothing."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the OpenAPI documents of both servers")
    parser.add_argument("folder", nargs="?", default="docs", help="where to write them (default: docs)")
    folder = Path(parser.parse_args(argv).folder)
    for name, document in documents().items():
        path = folder / name
        path.write_text(render(document), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
