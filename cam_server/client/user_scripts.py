"""Client methods for the user scripts routes, shared by :class:`CamClient` and :class:`PipelineClient`."""

from __future__ import annotations

from urllib.parse import quote

from cam_server.client.rest import RestClient


def _script_path(script_name: str) -> str:
    return f"/script/{quote(str(script_name), safe='')}/script_bytes"


class UserScriptsMixin(RestClient):
    """``get_user_scripts``, ``get_user_script``, ``set_user_script``, ``delete_user_script``.

    Script names may be given with or without ``.py``; the server stores ``<name>.py`` and lists file names.
    """

    def get_user_scripts(self) -> list[str]:
        """File names of the scripts in the server's user scripts folder."""
        return self._get("/script")["scripts"]

    def get_user_script(self, script_name: str) -> str:
        """Source text of a user script."""
        return self._get(_script_path(script_name))["script"]

    def set_user_script(self, script_name: str, script: str | bytes) -> str:
        """Upload (create or replace) a user script; returns the stored file name. The server refuses empty
        scripts and scripts with a syntax error (the message gives the line)."""
        data = script.encode("utf-8") if isinstance(script, str) else script
        return self._request("PUT", _script_path(script_name), data=data,
                             headers={"Content-Type": "text/x-python; charset=utf-8"})["script_name"]

    def delete_user_script(self, script_name: str) -> None:
        """Delete a user script (running pipelines keep the version they loaded)."""
        self._delete(_script_path(script_name))
