"""The camera tests use the shared pair's camera server (``servers``, root conftest): the bundled cameras plus
``test_camera`` (:data:`tests.helpers.servers.TEST_CAMERA`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cam_server.client.cam_client import CamClient
from tests.helpers.servers import RunningServer, ServerPair


@pytest.fixture(scope="module")
def server(servers: ServerPair) -> RunningServer:
    """The shared camera server."""
    return servers.camera


@pytest.fixture()
def client(server: RunningServer) -> Iterator[CamClient]:
    """A CamClient of the shared camera server; every camera instance is stopped after the test."""
    cam = CamClient(server.url)
    yield cam
    cam.stop_all_instances()
