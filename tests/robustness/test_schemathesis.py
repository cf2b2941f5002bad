"""schemathesis over both servers' OpenAPI documents with every check (``--checks all``): bounded, seeded, against
real servers on throwaway config folders.

What it proves: no request makes a server fail (5xx), every answer has the status, media type, headers and body
the document declares, requests the document calls valid are accepted and invalid ones refused (so the request
schemas of :mod:`cam_server.rest.request_schemas` say what the servers check), a created resource can be read back
and a deleted one is gone, and no answer takes longer than the document's own bounds.

Configuration, each with its reason (nothing else is excluded or relaxed):

* The user-script uploads (``PUT``/``POST .../script/{script_name}/script_bytes``) are not fuzzed: they install code
  that pipeline instances of the same run would execute on the test machine.
* 503 is accepted from the operations whose document declares it (a camera whose source is offline, a stream that
  sends nothing, an instance busy with a frame): it is the documented answer for a source the server cannot
  reach, which fuzzing creates (EPICS cameras with made-up PV prefixes). Every other 5xx fails.
* The two background uploads may refuse a body the document calls valid (400): its pixels must fill the declared
  shape (rows of one length, base64 of height * width values, or a pickle), which JSON Schema cannot say.
* Those operations wait for a camera by design (its start, up to 20 s, then a frame, up to the request's
  ``timeout`` of at most 120 s): their response time limit is that bound; every other operation has the default
  limit of ``--checks all`` (10 s).

The pipeline server confines FILE output to a folder of the test (``--file_folder``) and runs at most
:data:`MAX_INSTANCES` instances (``--max_instances``), so that fuzzed configs cannot write elsewhere nor start a
process per request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from cam_server.camera.manager import MAX_FRAME_TIMEOUT, START_TIMEOUT
from tests.helpers.procs import stop_pid
from tests.helpers.servers import camera_server, pipeline_server

SEED = 11
MAX_EXAMPLES = 30  # per operation and phase
MAX_TIME = 50  # seconds of generation per server (requests in flight then finish)
MAX_INSTANCES = 6
NOT_FUZZED = r"^(PUT|POST) .*/script/\{script_name\}/script_bytes$"
# Bodies whose validity JSON Schema cannot say (rows of one length; base64 that fills the declared shape; a pickle).
PIXELS = ("POST /api/v1/pipeline/background", "PUT /api/v1/pipeline/background/{background_name}/image_bytes")
WAITS = START_TIMEOUT + MAX_FRAME_TIMEOUT + 10  # the longest an operation that waits for a camera may take
RUN_TIMEOUT = MAX_TIME + WAITS + 120  # the whole run of one server, however it goes


def _config(document: dict[str, Any], path: Path) -> Path:
    """The schemathesis configuration (TOML) for one server's document, written to ``path``."""
    lines = [f"seed = {SEED}", "workers = 1", f"max-time = {MAX_TIME}", "",
             "[generation]", f"max-examples = {MAX_EXAMPLES}", "deterministic = true", 'database = "none"', "",
             "[[operations]]", f"include-name-regex = {json.dumps(NOT_FUZZED)}", "enabled = false"]
    for route, operations in document["paths"].items():
        for method, operation in operations.items():
            if "503" not in operation.get("responses", {}):
                continue
            lines += ["", "[[operations]]", f"include-name = {json.dumps(f'{method.upper()} {route}')}",
                      'checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]',
                      f"checks.max_response_time = {WAITS}"]
    for name in PIXELS:
        if name.partition(" ")[2] in document["paths"]:
            lines += ["", "[[operations]]", f"include-name = {json.dumps(name)}",
                      'checks.positive_data_acceptance.expected-statuses = '
                      '["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]']
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Run:
    """One schemathesis run against one server, started in the background."""

    proc: subprocess.Popen
    log: Path
    start: float

    def finish(self) -> tuple[int, str, float]:
        """Wait for the run (bounded): (exit code, its report, seconds since it started)."""
        try:
            code = self.proc.wait(max(1.0, self.start + RUN_TIMEOUT - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop_pid(self.proc)
            code = -1
        return code, self.log.read_text(errors="replace"), time.monotonic() - self.start


def _start(url: str, tmp_path: Path, name: str) -> Run:
    """schemathesis against the server at ``url``, in the background."""
    document = requests.get(f"{url}/openapi.json", timeout=30).json()
    config = _config(document, tmp_path / f"{name}.toml")
    log = tmp_path / f"{name}.log"
    command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run",
               f"{url}/openapi.json", "--checks", "all", "--request-timeout", str(WAITS + 10), "--no-color",
               "--report", "junit", "--report-dir", str(tmp_path / f"{name}-report")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Run(proc, log, time.monotonic())


@pytest.fixture(scope="module")
def fuzzed_servers(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("schemathesis")
    data = tmp_path / "data"
    for folder in (data, tmp_path / "camera", tmp_path / "pipeline"):
        folder.mkdir()
    with camera_server(tmp_path / "camera") as cam, \
            pipeline_server(tmp_path / "pipeline", cam.url, extra_args=["--file_folder", str(data),
                                                                        "--max_instances", str(MAX_INSTANCES)]) as pipe:
        yield cam, pipe, tmp_path


@pytest.fixture(scope="module")
def runs(fuzzed_servers) -> Iterator[dict[str, Run]]:
    """Both servers fuzzed at the same time (each run is bounded by its own ``max-time``, most of it spent waiting
    for answers): the module takes one run's time, not two."""
    cam, pipe, tmp_path = fuzzed_servers
    started = {"camera": _start(cam.url, tmp_path, "camera"), "pipeline": _start(pipe.url, tmp_path, "pipeline")}
    try:
        yield started
    finally:
        for run in started.values():
            stop_pid(run.proc)


@pytest.mark.timeout(2 * RUN_TIMEOUT + 120)
@pytest.mark.parametrize("server", ["camera", "pipeline"])
def test_schemathesis_all_checks_pass(fuzzed_servers, runs: dict[str, Run], server: str, record_property) -> None:
    cam, pipe, _ = fuzzed_servers
    url = cam.url if server == "camera" else pipe.url
    code, report, seconds = runs[server].finish()
    record_property(f"schemathesis_{server}_seconds", round(seconds, 1))
    summary = report[report.find("SUMMARY"):] if "SUMMARY" in report else report[-3000:]
    print(summary)
    assert code == 0, f"schemathesis failed against the {server} server:\n{report[-20000:]}"
    # The server is healthy afterwards.
    api = "/api/v1/cam" if server == "camera" else "/api/v1/pipeline"
    assert requests.get(f"{url}{api}/info", timeout=10).json()["state"] == "ok"
