"""The live view: ``GET /`` (what can be viewed), ``GET /view/<name>`` (the page) and its WebSocket.

Why a package of its own inside ``rest``: the view is served by both REST apps (``install_view_routes``), keeps a
shared subscription per viewed stream in the REST process (:mod:`.feed`), renders decimated frames (:mod:`.frames`)
and records to HDF5 (:mod:`.record`); the browser side is plain JavaScript in ``static/``. Design: docs/live_view.md.
"""

from cam_server.rest.view.routes import install_view_routes
from cam_server.rest.view.targets import CameraTarget, PipelineTarget

__all__ = ["CameraTarget", "PipelineTarget", "install_view_routes"]
