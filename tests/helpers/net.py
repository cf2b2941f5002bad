"""Test helpers for ports and the loopback-only network namespace."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interfaces() -> list[str]:
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return [ln.split(":")[0].strip() for ln in lines]


def require_loopback_netns() -> None:
    """Skip (or fail, with CAM_SERVER_REQUIRE_NETNS=1) unless only 'lo' exists.

    EPICS Channel Access also sends packets to the host's own non-loopback addresses whatever its address
    list says, so EPICS tests run only inside a private network namespace with loopback alone.
    """
    found = interfaces()
    if found == ["lo"]:
        return
    reason = f"EPICS tests need a loopback-only network namespace; /proc/net/dev lists {found}"
    if os.environ.get("CAM_SERVER_REQUIRE_NETNS") == "1":
        pytest.fail(reason + " (CAM_SERVER_REQUIRE_NETNS=1)")
    pytest.skip(reason)


EPICS_ENV = {
    "EPICS_CA_AUTO_ADDR_LIST": "NO",
    "EPICS_CA_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
    "EPICS_PVA_AUTO_ADDR_LIST": "NO",
    "EPICS_PVA_ADDR_LIST": "127.0.0.1",
    "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
    "EPICS_PVAS_BEACON_ADDR_LIST": "127.0.0.1",
    "EPICS_CA_MAX_ARRAY_BYTES": "40000000",
}
