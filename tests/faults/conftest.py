"""Every fault module leaves /dev/shm clean: no frame ring of a camera instance that is gone (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from cam_server.common.frame_ring import SHM_FOLDER, list_rings, parse_ring_name
from tests.helpers.procs import wait_until

LEAK_WAIT_S = 5.0  # a camera server removes a killed instance's ring when its reaper notices (every 0.5 s)


def _dead_writers() -> list[str]:
    return [name for name in list_rings() if not psutil.pid_exists(parse_ring_name(name)[2])]  # type: ignore[index]


@pytest.fixture(autouse=True, scope="module")
def no_leaked_rings() -> Iterator[None]:
    yield
    try:
        wait_until(lambda: not _dead_writers(), LEAK_WAIT_S, "rings of dead camera instances removed")
    except TimeoutError:
        pytest.fail(f"rings of dead camera instances left in {SHM_FOLDER}: {_dead_writers()}")
