"""One real camera server and one real pipeline server for the pipeline-type tests, plus a client per test."""

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
    scripts: Path  # the pipeline server's user scripts folder (-u)
    data: Path     # a folder for FILE outputs

    @property
    def url(self) -> str:
        return self.pipeline.url


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("pipeline_types")
    data = tmp / "data"
    data.mkdir()
    with camera_server(tmp) as cam, pipeline_server(tmp, cam.url) as pipe:
        yield Servers(cam, pipe, pipe.scripts, data)


@pytest.fixture
def client(servers: Servers) -> Iterator[PipelineClient]:
    c = PipelineClient(servers.url)
    yield c
    c.stop_all_instances()
