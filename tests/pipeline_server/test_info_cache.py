"""The info routes' cached answers (rest/cached.py) and the servers' HTTP stack (issue 13 item 3).

A cached answer is reused for at most ``INFO_TTL_S`` and never after a change made through this server or of its
instance table; the fast stack (httptools, uvloop) is what the servers run by default.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from cam_server.cli import pipeline_server, serve
from cam_server.client.pipeline_client import PipelineClient
from cam_server.rest.cached import INFO_TTL_S


def _get(url: str) -> bytes:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    return response.content


def _fresh_pair(url: str) -> tuple[bytes, bytes]:
    """Two answers of ``url`` read well within one cache lifetime (retried if the machine stalled between them)."""
    for _ in range(20):
        start = time.monotonic()
        first, second = _get(url), _get(url)
        if time.monotonic() - start < INFO_TTL_S / 2:
            return first, second
    pytest.skip("two requests never fit into half a cache lifetime on this machine")


def test_info_answers_are_reused_briefly_and_follow_every_change_at_once(servers, client: PipelineClient):
    api = f"{servers.url}/api/v1/pipeline"
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation", "my_param": 1})
    try:
        assert instance_id in client.get_server_info()["active_instances"]  # the create made the cache stale
        first, second = _fresh_pair(f"{api}/info")
        assert first == second  # the same encoded answer ("time" of the statistics included)
        time.sleep(INFO_TTL_S * 1.5)
        assert _get(f"{api}/info") != first  # a newer one after its lifetime

        one, two = _fresh_pair(f"{api}/instance/{instance_id}/info")
        assert one == two
        client.set_instance_config(instance_id, {"my_param": 2})  # any other request: cached answers are stale
        assert client.get_instance_info(instance_id)["config"]["my_param"] == 2
        assert client.get_server_info()["active_instances"][instance_id]["config"]["my_param"] == 2
    finally:
        client.stop_instance(instance_id)
    assert instance_id not in client.get_server_info()["active_instances"]
    with pytest.raises(ValueError, match="not running"):
        client.get_instance_info(instance_id)


def test_camera_server_info_is_reused_briefly_and_follows_a_new_stream_at_once(servers):
    cam = servers.camera.url
    requests.delete(f"{cam}/api/v1/cam/test_camera", timeout=10)  # not streaming (404 if it was not)
    info_url = f"{cam}/api/v1/cam/info"
    first, second = _fresh_pair(info_url)
    assert first == second
    assert "test_camera" not in json.loads(first)["info"]["active_instances"]
    assert requests.get(f"{cam}/api/v1/cam/test_camera", timeout=30).json()["state"] == "ok"  # a GET that starts it
    try:
        assert "test_camera" in json.loads(_get(info_url))["info"]["active_instances"]
    finally:
        requests.delete(f"{cam}/api/v1/cam/test_camera", timeout=10)
    assert "test_camera" not in json.loads(_get(info_url))["info"]["active_instances"]


def test_cached_info_requests_are_counted_by_route(servers, client: PipelineClient):
    def count() -> float:
        text = requests.get(f"{servers.url}/metrics", timeout=10).text
        line = next((ln for ln in text.splitlines() if ln.startswith("cam_server_http_requests_total{")
                     and 'route="/api/v1/pipeline/info"' in ln and 'status="200"' in ln), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = count()
    for _ in range(5):
        _get(f"{servers.url}/api/v1/pipeline/info")
    assert count() == before + 5


def test_servers_run_httptools_and_uvloop(servers):
    for server in (servers.camera, servers.pipeline):
        assert "HTTP httptools, event loop uvloop" in server.log_text()


@pytest.mark.unit
def test_http_stack_choices():
    assert serve.http_stack() == ("httptools", "uvloop")
    assert serve.http_stack("h11", "asyncio") == ("h11", "asyncio")
    args = pipeline_server.build_parser().parse_args(["--http", "h11", "--loop", "asyncio"])
    assert (args.http, args.loop) == ("h11", "asyncio")
    assert pipeline_server.build_parser().parse_args([]).http == "auto"


@pytest.mark.unit
def test_cached_answers_are_bounded_and_built_once_per_change():
    import asyncio

    from cam_server.rest.cached import CachedAnswers

    version = [0]
    builds: list[str] = []
    answers = CachedAnswers(lambda: version[0], ttl=60, max_entries=2)

    def build(key: str) -> bytes:
        builds.append(key)
        if key.startswith("missing"):
            raise LookupError(key)
        return key.encode()

    async def scenario() -> None:
        assert await asyncio.gather(*(answers.get("a", lambda: build("a")) for _ in range(5))) == [b"a"] * 5
        assert builds == ["a"]  # concurrent requests wait for the one build
        version[0] += 1  # an instance started or left: built again
        assert await answers.get("a", lambda: build("a")) == b"a" and builds == ["a", "a"]
        answers.forget()  # another request finished: built again
        assert answers.fresh("a") is None
        for i in range(10):  # unknown ids (a 404 each) leave no unbounded state behind
            with pytest.raises(LookupError):
                await answers.get(f"missing{i}", lambda i=i: build(f"missing{i}"))
        assert len(answers._locks) <= 2  # noqa: SLF001 - the bound is the point
        for key in "bcd":
            await answers.get(key, lambda key=key: build(key))
        assert len(answers._answers) <= 2  # noqa: SLF001

    asyncio.run(scenario())


@pytest.mark.unit
def test_any_request_but_a_cached_read_drops_the_cached_answers():
    """A cached read is sent from the cache without reaching the app; any other request, a ``GET`` too (a refused
    one raises the blocking-request counters the info shows), drops every cached answer."""
    import asyncio

    from cam_server.rest.cached import CachedAnswers, CachedReads

    answers = CachedAnswers(lambda: 0, ttl=60)
    handled: list[str] = []

    async def app(scope, receive, send) -> None:
        handled.append(f"{scope['method']} {scope['path']}")

    async def sent(message) -> None:
        pass

    reads = CachedReads(app, answers, lambda path: ("info", "/info") if path == "/info" else None)

    async def scenario() -> None:
        await answers.get("info", lambda: b"{}")
        await reads({"type": "http", "method": "GET", "path": "/info"}, None, sent)  # sent from the cache
        assert handled == [] and answers.fresh("info") == b"{}"
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
            await answers.get("info", lambda: b"{}")
            await reads({"type": "http", "method": method, "path": "/camera"}, None, sent)
            assert answers.fresh("info") is None, method
        assert len(handled) == 5

    asyncio.run(scenario())
