"""One real camera server and one real pipeline server shared by the pipeline-server tests (fast suite)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.servers import RunningServer, camera_server, pipeline_server


@dataclass
class Servers:
    camera: RunningServer
    pipeline: RunningServer
    backgrounds: Path

    @property
    def url(self) -> str:
        return self.pipeline.url


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("pipeline_servers")
    with camera_server(tmp) as cam, pipeline_server(tmp, cam.url) as pipe:
        yield Servers(cam, pipe, tmp / "background_config")


@pytest.fixture
def client(servers: Servers) -> Iterator[PipelineClient]:
    c = PipelineClient(servers.url)
    yield c
    c.stop_all_instances()
