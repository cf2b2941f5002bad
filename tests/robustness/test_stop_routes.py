"""A trailing or encoded ``/`` never reaches a "stop all" route (real servers with a running camera instance)."""

from __future__ import annotations

import requests

from tests.helpers.servers import ServerPair

CAM = "/api/v1/cam"
PIPE = "/api/v1/pipeline"


def test_trailing_or_encoded_slash_does_not_stop_every_instance(servers: ServerPair) -> None:
    # Was a 307 redirect to the collection route: DELETE /api/v1/cam/%2F stopped every camera instance.
    assert requests.get(f"{servers.camera.url}{CAM}/simulation", timeout=30).json()["state"] == "ok"
    for path in (f"{CAM}/", f"{CAM}/%2F", f"{PIPE}/", f"{PIPE}/%2F"):
        url = servers.camera.url if path.startswith(CAM) else servers.pipeline.url
        response = requests.delete(url + path, timeout=30, allow_redirects=False)
        assert response.status_code == 404, response.text
        body = response.json()
        assert body["state"] == "error"
        assert "is not a route of this server (see /docs). Names cannot contain '/'" in body["status"], body
    info = requests.get(f"{servers.camera.url}{CAM}/info", timeout=10).json()["info"]
    assert "simulation" in info["active_instances"]
    requests.delete(f"{servers.camera.url}{CAM}/simulation", timeout=30)
