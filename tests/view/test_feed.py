"""The live view's WebSocket without a browser (the ``websockets`` client): one shared subscription per stream,
frames at the view's rate, refused requests answered, recordings only while their view is open."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from tests.helpers.net import free_port
from tests.helpers.procs import wait_until

PIPE_API = "/api/v1/pipeline"


@contextmanager
def open_view(url: str, name: str, **view: Any) -> Iterator[ClientConnection]:
    with connect(url.replace("http://", "ws://") + f"/view/{name}/ws", max_size=None) as socket:
        socket.send(json.dumps({"type": "view", "width": 320, "height": 240, **view}))
        yield socket


def frames(socket: ClientConnection, seconds: float, ack: bool = True) -> tuple[list[dict], list[dict]]:
    """(frame headers, text messages) received in ``seconds``, acknowledging each frame."""
    headers, texts = [], []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            message = socket.recv(timeout=left)
        except TimeoutError:
            break
        if isinstance(message, bytes):
            headers.append(json.loads(message[4:4 + struct.unpack("<I", message[:4])[0]]))
            if ack:
                socket.send(json.dumps({"type": "ack"}))
        else:
            texts.append(json.loads(message))
    return headers, texts


def final_status(socket: ClientConnection, timeout: float = 10.0) -> dict:
    """The view's status once it says "error" or "stopped" (read as soon as it comes, not after a fixed time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, texts = frames(socket, 0.2)
        status = [t["status"] for t in texts if t["type"] == "status"]
        if status and status[-1]["state"] in ("error", "stopped"):
            return status[-1]
    raise TimeoutError(f"no error status from the view within {timeout} s")


@pytest.fixture
def instance(servers) -> Iterator[str]:
    _, pipe = servers
    instance_id = f"feed_{free_port()}"
    answer = requests.post(f"{pipe.url}{PIPE_API}", params={"instance_id": instance_id}, timeout=60,
                           json={"camera_name": "simulation"}).json()
    assert answer["state"] == "ok", answer
    yield instance_id
    requests.delete(f"{pipe.url}{PIPE_API}/{instance_id}", timeout=30)


def test_three_views_share_one_subscription(servers, instance) -> None:
    _, pipe = servers
    with ExitStack() as stack:
        views = [stack.enter_context(open_view(pipe.url, instance)) for _ in range(3)]
        with ThreadPoolExecutor(len(views)) as pool:  # all three at once: the same 3 s for each
            received = list(pool.map(lambda view: frames(view, 3.0)[0], views))
        assert all(len(r) >= 10 for r in received), [len(r) for r in received]
        info = requests.get(f"{pipe.url}{PIPE_API}/instance/{instance}/info", timeout=10).json()["info"]
        assert info["statistics"]["clients"] == 1  # the views' one feed (the 10 Hz camera: no resubscribing)
        # The same frames for all of them (one feed), each with the instance's values.
        assert {h["pulse_id"] for h in received[0]} & {h["pulse_id"] for h in received[1]}
        assert "x_center_of_mass" in received[0][-1]["values"]


def test_a_view_gets_frames_at_its_own_rate_and_only_when_it_acknowledged(servers, instance) -> None:
    _, pipe = servers
    with open_view(pipe.url, instance, rate=2) as slow:
        headers, _ = frames(slow, 3.0)
        assert 4 <= len(headers) <= 8, len(headers)
    with open_view(pipe.url, instance) as lazy:
        headers, _ = frames(lazy, 1.5, ack=False)  # never acknowledges: one frame, then one per ACK_TIMEOUT
        assert 1 <= len(headers) <= 2, len(headers)


def test_bad_requests_are_answered_and_the_view_stays_open(servers, instance) -> None:
    _, pipe = servers
    with open_view(pipe.url, instance) as view:
        frames(view, 0.5)
        for bad in ({"type": "view", "rate": -1}, {"type": "nonsense"}, {"type": "record", "n": 0}, [1, 2]):
            view.send(json.dumps(bad))
        view.send("{not json")
        _, texts = frames(view, 1.0)
        errors = [t["message"] for t in texts if t["type"] == "error"]
        assert len(errors) == 5, texts
        assert any("rate" in e for e in errors) and any("record" in e for e in errors)
        view.send(json.dumps({"type": "probe", "x": 5, "y": 6}))
        _, texts = frames(view, 1.0)
        probe = next(t for t in texts if t["type"] == "probe")
        assert probe["x"] == 5 and probe["y"] == 6 and isinstance(probe["value"], int)


def test_unknown_names_show_an_error(servers) -> None:
    cam, pipe = servers
    for url in (pipe.url, cam.url):
        with open_view(url, "no_such_thing") as view:
            assert "no_such_thing" in final_status(view)["error"]
    assert requests.get(f"{pipe.url}/view/bad%20name", timeout=10).status_code == 400


def test_a_recording_is_downloadable_until_its_view_closes(servers, instance) -> None:
    _, pipe = servers
    with open_view(pipe.url, instance) as view:
        view.send(json.dumps({"type": "record", "n": 2}))

        def done() -> dict | None:
            _, texts = frames(view, 0.3)
            return next((t for t in texts if t["type"] == "record" and t["state"] == "done"), None)

        finished = wait_until(done, 20, "the recording")
        url = pipe.url + finished["url"]
        assert requests.get(url, timeout=10).status_code == 200
    wait_until(lambda: requests.get(url, timeout=10).status_code == 404, 10, "the recording to be deleted")
