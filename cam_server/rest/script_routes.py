"""User script routes, the same on both servers (``/api/v1/pipeline/script...`` and ``/api/v1/cam/script...``).

* ``GET  <api>/script`` → ``scripts``: file names in the scripts folder; ``broken``: {file name: reason} of the
  ``*.py`` entries that are not usable scripts (DELETE moves such an entry aside).
* ``GET  <api>/script/<name>/script_bytes`` → ``script``: the source text.
* ``PUT`` or ``POST <api>/script/<name>/script_bytes`` with the source as the raw request body → ``script_name``.
* ``DELETE <api>/script/<name>/script_bytes``.

Must be installed before a server's ``<api>/{name}`` routes, which would otherwise take ``script`` as a name.
The name segment is matched as a path so that a name with ``/`` gets a clear "Invalid script name" answer
instead of a bare 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from cam_server.common.errors import NotFound
from cam_server.common.scripts_store import MAX_SCRIPT_BYTES, ScriptStore
from cam_server.rest.envelope import ok, read_limited
from cam_server.rest.schemas import ScriptAnswer, ScriptNameAnswer, ScriptsAnswer, documented, errors

_SCRIPT_BODY = {"requestBody": {"required": True, "content": {
    "text/x-python": {"schema": {"type": "string"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def install_script_routes(app: FastAPI, api: str, store: ScriptStore | None) -> None:
    """Serve ``store`` under ``<api>/script``; with ``store`` None every route answers 404 (no folder configured)."""

    def the_store() -> ScriptStore:
        if store is None:
            raise NotFound("This server has no user scripts folder (start it with -u USER_SCRIPTS_BASE).")
        return store

    @app.get(f"{api}/script", summary="List the user scripts (and the broken entries of the folder)",
             response_model=documented(ScriptsAnswer), responses=errors(404))
    def get_user_scripts() -> dict[str, Any]:
        scripts, broken = the_store().scan()
        return ok("List of user scripts.", scripts=scripts, broken=broken)

    @app.get(f"{api}/script/{{script_name:path}}/script_bytes", summary="Source of a user script",
             response_model=documented(ScriptAnswer), responses=errors(400, 404))
    def get_user_script(script_name: str) -> dict[str, Any]:
        return ok(f"Script {script_name}.", script=the_store().load(script_name))

    async def upload(script_name: str, request: Request) -> dict[str, Any]:
        data = await read_limited(request, MAX_SCRIPT_BYTES)
        saved = await run_in_threadpool(the_store().save, script_name, data)
        return ok(f"Script {saved} saved.", script_name=saved)

    for method in ("PUT", "POST"):
        app.add_api_route(f"{api}/script/{{script_name:path}}/script_bytes", upload, methods=[method],
                          summary="Upload a user script (the request body is the Python source)",
                          openapi_extra=_SCRIPT_BODY, name=f"set_user_script_{method.lower()}",
                          response_model=documented(ScriptNameAnswer), responses=errors(400, 404, 409, 413))

    @app.delete(f"{api}/script/{{script_name:path}}/script_bytes", summary="Delete a user script (a broken entry: "
                "moved aside)", response_model=documented(ScriptNameAnswer), responses=errors(400, 404, 409))
    def delete_user_script(script_name: str) -> dict[str, Any]:
        deleted, moved = the_store().remove(script_name)
        if moved is not None:
            return ok(f"Script {deleted} was a broken entry: moved aside to {moved}.", script_name=deleted)
        return ok(f"Script {deleted} deleted.", script_name=deleted)
