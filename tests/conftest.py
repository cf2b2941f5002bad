"""What every test folder shares: ONE camera + pipeline server pair, and the ``unit`` marker's rule.

Servers
    ``server_pair`` (session) starts a real camera server and a real pipeline server once
    (:func:`tests.helpers.servers.server_pair`: the bundled configuration plus ``test_camera``). Test modules take
    it through ``servers`` (module scope), which starts every module on a pair with no instance running and, at
    the module's end, stops its instances and fails the module if it left saved camera or pipeline configs behind
    (they are deleted then): sharing one pair must never make one module depend on another. ``client`` is a
    PipelineClient of the pair that stops every pipeline instance after its test. A module that needs a server
    of its own (other options, a server it kills, a fresh log) starts it with the same helpers.

In-process apps
    ``apps`` (module scope): the camera and pipeline REST apps built in this process
    (:func:`tests.helpers.apps.local_apps`), for answers that need no instance process (bad requests, validation).

Fork server
    Instances a test starts in this process (the pipeline instance harness, the in-process apps' managers) fork from
    the pytest process's fork server, which preloads :data:`FORK_SERVER_PRELOAD` (set before any of them starts).

Unit tests
    A module whose tests start no process of ours (servers, instances, IOCs, our command-line programs) says so
    with ``pytestmark = pytest.mark.unit`` (a single such test among process tests: ``@pytest.mark.unit``):
    ``python3 dev.py test -m unit`` runs those alone in seconds, ``-m "not unit"`` the rest. A unit test that starts
    such a process anyway fails at that moment (:func:`_forbid_our_processes`); tools like ``python -c`` or ruff
    are fine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cam_server.camera.manager import PRELOAD as CAMERA_PRELOAD
from cam_server.client.pipeline_client import PipelineClient
from cam_server.common.process import process_context
from cam_server.pipeline.registry import DEFAULT_TYPE, INSTANCE_ENTRY, PIPELINE_TYPES
from cam_server.pipeline.server.manager import PRELOAD as PIPELINE_PRELOAD
from tests.helpers.apps import LocalApps, local_apps
from tests.helpers.servers import ServerPair
from tests.helpers.servers import server_pair as start_server_pair

_CONSOLE_SCRIPTS = {"camera_server", "pipeline_server", "cam-record", "cam-server-demo",  # pyproject [project.scripts]
                    "camera_worker", "pipeline_worker", "camera_manager", "pipeline_manager", "cam-server-cluster"}
_unit_test_running: list[str] = []  # the node id of the unit test being run, if one is

FORK_SERVER_PRELOAD = (*CAMERA_PRELOAD, *PIPELINE_PRELOAD, INSTANCE_ENTRY.partition(":")[0],
                       PIPELINE_TYPES[DEFAULT_TYPE].module_path, "scipy.ndimage")
"""What the fork server of the pytest process preloads: everything the instances tests start here import (the
pipeline harness, the in-process apps' camera and pipeline managers, tests/common's targets). The first
``process_context`` call fixes the preload for the whole session; without this the first module to start an
instance (tests/common) fixed none, and every later pipeline instance imported numpy, scipy and the compiled
kernels itself (seconds per test instead of a tenth)."""
process_context(FORK_SERVER_PRELOAD)  # no process yet: the fork server starts with the first instance


@pytest.fixture(scope="session")
def server_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPair]:
    """The one camera + pipeline server pair of the session (take it through ``servers``)."""
    with start_server_pair(tmp_path_factory.mktemp("server_pair")) as pair:
        yield pair


@pytest.fixture(scope="module")
def servers(server_pair: ServerPair, request: pytest.FixtureRequest) -> Iterator[ServerPair]:
    """The shared pair for one test module: no instance runs when the module starts, none when it ends, and the
    module removes every saved config it created."""
    server_pair.stop_all_instances()
    before = server_pair.saved_configs()
    yield server_pair
    server_pair.stop_all_instances()
    left = server_pair.saved_configs() - before
    if left:
        server_pair.delete_saved_configs(left)
        pytest.fail(f"{request.node.nodeid} left saved configs on the shared servers: {sorted(left)}")


@pytest.fixture
def client(servers: ServerPair) -> Iterator[PipelineClient]:
    """A PipelineClient of the shared pair; every pipeline instance is stopped after the test."""
    pipelines = PipelineClient(servers.url)
    yield pipelines
    pipelines.stop_all_instances()


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApps]:
    """The camera and pipeline apps in this process, on copies of the bundled configuration, for one module."""
    with local_apps(tmp_path_factory.mktemp("apps")) as both:
        yield both


def _our_process(event: str, args: tuple) -> str | None:
    """What ``event`` (a Python audit event) starts when it starts a process of ours, else None: Python running a
    module or a script (servers, the demo, IOCs), one of our console scripts, or a pipeline or camera instance (a
    forkserver child, or a fork). Tools a unit test may run (``python -c``, ruff, lint-imports) are not ours."""
    if event == "subprocess.Popen":
        argv = [str(a) for a in args[1]] if isinstance(args[1], list | tuple) else [str(args[1])]
        if Path(argv[0]).name in _CONSOLE_SCRIPTS:
            return f"the program {' '.join(argv)}"
        if argv[0] == sys.executable and len(argv) > 1 and argv[1] != "-c":
            return f"the program {' '.join(argv)}"
    elif event == "socket.connect" and isinstance(args[1], str) and os.path.basename(args[1]).startswith("listener-"):
        return "an instance process (a forkserver child)"
    elif event in ("os.fork", "os.forkpty"):
        return "a forked process"
    return None


def _forbid_our_processes(event: str, args: tuple) -> None:
    """Audit hook: a unit test that starts a process of ours fails right there, naming the process."""
    if _unit_test_running and (what := _our_process(event, args)):
        raise RuntimeError(f"{_unit_test_running[0]} is marked unit but starts {what}: unit tests start no process "
                           "of ours (remove the unit mark, or the process)")


sys.addaudithook(_forbid_our_processes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Watch unit tests (setup, call, teardown) for processes of ours."""
    if item.get_closest_marker("unit") is None:
        return (yield)
    _unit_test_running.append(item.nodeid)
    try:
        return (yield)
    finally:
        _unit_test_running.clear()
